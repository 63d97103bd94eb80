"""The services some tests run against for real (Redis), or skip without: CI sets PAYFM_REQUIRE_SERVICES,
which turns the skip into a failure so that those tests always run there."""

from __future__ import annotations

import os
from contextlib import suppress
from typing import Any

import pytest

REDIS_URL = os.environ.get("PAYFM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# A database the tests that need an empty Redis may empty (FLUSHDB) before and after: never a shared one,
# and one per pytest-xdist worker (gw0: 9, gw1: 10, ...), since tests of two workers run at the same time.
# Databases 12 (tests/test_secrets_echo_urls.py empties it) and 15 (REDIS_URL) are taken: at most 3 workers
# (the Makefile's --maxprocesses), and one given URL cannot serve several.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
if _WORKER > 2 or (_WORKER and "PAYFM_TEST_REDIS_SCRATCH_URL" in os.environ):
    raise RuntimeError(
        "The Redis tests give each pytest-xdist worker a scratch database of its own (9, 10, 11): run at "
        "most 3 workers (-n 3), and no PAYFM_TEST_REDIS_SCRATCH_URL with several."
    )
REDIS_SCRATCH_URL = os.environ.get("PAYFM_TEST_REDIS_SCRATCH_URL", f"redis://127.0.0.1:6379/{9 + _WORKER}")


def require_redis(url: str = REDIS_URL) -> Any:
    """A redis-py client of ``url`` (pinged), else skip the test (fail under PAYFM_REQUIRE_SERVICES)."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError:
        if os.environ.get("PAYFM_REQUIRE_SERVICES"):
            pytest.fail(f"Redis is required (PAYFM_REQUIRE_SERVICES) but not reachable at {url}")
        pytest.skip(f"Redis not reachable at {url}; start redis-server, or see README.md, Tests")
    return client


POSTGRES_URL = os.environ.get("PAYFM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def require_postgres(url: str = POSTGRES_URL) -> None:
    """Skip the test unless PostgreSQL answers at ``url`` (fail instead under PAYFM_REQUIRE_SERVICES)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError:
        if os.environ.get("PAYFM_REQUIRE_SERVICES"):
            pytest.fail(f"PostgreSQL is required (PAYFM_REQUIRE_SERVICES) but not reachable at {url}")
        pytest.skip(f"PostgreSQL not reachable at {url}; start it or set PAYFM_TEST_POSTGRES_URL")


class Proxy:
    """A TCP proxy of a test's own to ``target_url``'s host and port (``default_port`` when it names none);
    ``url`` is ``target_url`` through it. Its connections can be held (nothing forwarded: a backend that
    hangs for this test's clients only, where ``CLIENT PAUSE`` held every client of the server, the other
    test processes' included), stranded (the open ones black-holed for good, new ones passing: a failover)
    or reset (every connection closed, new ones closed at once: the seconds a failover is down)."""

    def __init__(self, target_url: str, default_port: int) -> None:
        import socket
        import threading
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(target_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or default_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        port = self._listener.getsockname()[1]
        netloc = f"{parts.username + '@' if parts.username else ''}127.0.0.1:{port}"
        self.url = urlunsplit(parts._replace(netloc=netloc))
        self.mode = "pass"  # pass, hold or reset
        self._pairs: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._timer: threading.Timer | None = None
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def hold(self, at_most_s: float = 5.0) -> None:
        """Forward nothing on any connection, until :meth:`release` or ``at_most_s`` later (a client without
        a timeout, the bug a test looks for, then fails the test's time limit instead of hanging it)."""
        self._for("hold", at_most_s)

    def release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.mode = "pass"

    def strand(self) -> None:
        """Black-hole the open connections for good (a failover); new ones pass."""
        with self._lock:
            for pair in self._pairs:
                pair["stranded"] = True

    def reset(self, for_s: float) -> None:
        """Close every connection, and each new one at once, for ``for_s`` seconds; then pass."""
        self._for("reset", for_s)
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            self._close(pair)

    def close(self) -> None:
        self._closed.set()
        self.release()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            self._close(pair)
        self._acceptor.join(5)
        self._listener.close()

    def _for(self, mode: str, seconds: float) -> None:
        import threading

        self.release()
        self.mode = mode
        self._timer = threading.Timer(seconds, self.release)
        self._timer.daemon = True
        self._timer.start()

    @staticmethod
    def _close(pair: dict[str, Any]) -> None:
        import socket

        for s in pair["sockets"]:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self) -> None:
        import socket
        import threading

        while not self._closed.is_set():
            try:
                client = self._listener.accept()[0]
            except OSError:
                continue
            if self.mode == "reset":
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:  # (the backend not there: the client sees its connection closed)
                client.close()
                continue
            for s in (client, upstream):
                s.settimeout(0.05)
            pair = {"sockets": (client, upstream), "stranded": False}
            with self._lock:
                self._pairs.append(pair)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(pair, src, dst), daemon=True).start()

    def _pump(self, pair: dict[str, Any], src: Any, dst: Any) -> None:
        while not self._closed.is_set():
            if not self._flowing(pair):
                continue  # what comes stays in the kernel's buffers: nothing answers, nothing resets
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            while not self._flowing(pair):  # held while it was read: kept until released
                if self._closed.is_set():
                    return self._close(pair)
            try:
                dst.sendall(data)
            except OSError:
                break
        self._close(pair)

    def _flowing(self, pair: dict[str, Any]) -> bool:
        """Whether ``pair`` forwards now; else a short wait first."""
        import time

        if self.mode == "hold" or pair["stranded"]:
            time.sleep(0.02)
            return False
        return True


class HeldRedis(Proxy):
    """A :class:`Proxy` in front of the Redis of a plain ``redis://host:port/db`` URL."""

    def __init__(self, target_url: str) -> None:
        from urllib.parse import urlsplit

        target = urlsplit(target_url)
        if target.scheme != "redis" or target.query or target.password:
            raise ValueError(f"HeldRedis takes a plain redis://host:port/db URL. Got {target_url!r}.")
        super().__init__(target_url, 6379)


class PrivateRedis:
    """A redis-server of the test's own, on a free port, keeping its saves in ``folder``: it can be restarted
    for real (its run id changes, and it loads its last save: :meth:`save`), which the shared Redis of the
    other tests cannot. Skips without the ``redis-server`` program (fails under PAYFM_REQUIRE_SERVICES)."""

    def __init__(self, folder: Any) -> None:
        import shutil
        import socket

        program = shutil.which("redis-server")
        if program is None:
            if os.environ.get("PAYFM_REQUIRE_SERVICES"):
                pytest.fail("redis-server is required (PAYFM_REQUIRE_SERVICES) but not on the PATH")
            pytest.skip("redis-server is not on the PATH; install Redis, or see README.md, Tests")
        with socket.socket() as s:  # (a free port: taken again by the server at once)
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        folder.mkdir(parents=True, exist_ok=True)
        self._argv = [program, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(folder)]
        self._argv += ["--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: Any = None
        self.start()

    def start(self) -> None:
        import subprocess
        import time

        import redis

        self._proc = subprocess.Popen(self._argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)
            finally:
                client.close()

    def save(self) -> None:
        """Write the server's data to its save file (``SAVE``): what a restart loads."""
        import redis

        with redis.Redis.from_url(self.url) as client:
            client.save()

    def restart(self) -> None:
        """Stop the server without saving (what it holds since the last :meth:`save` is lost, as a crash
        loses what an RDB or an AOF did not keep), and start it again from its last save."""
        self.stop()
        self.start()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
