"""Loading a shared online state into Redis once, whichever serving process starts first.

Under a namespace ``ns``, ``{ns}:warm`` says the state was loaded, and from which event log (the loading
process's :attr:`LoadLock.owner`: a workspace's identity and its log's, checked by the servers that find it
loaded, :mod:`payfm.serving.shared_state`), and ``{ns}:warming`` is the lock of the one process loading it:
taken with SET NX under a token naming its holder (host, pid, since when) and a short TTL
(:data:`LOCK_TTL_S`) that a heartbeat thread renews while the holder lives, through the build and the write
(a holder killed frees it within seconds), extended before every pipeline of the load by compare-and-expire
(:meth:`LoadLock.keep`, which raises if the lock was lost: it expired while the process stalled and another
process took it), released by compare-and-delete (a process whose lock expired cannot release another's)
and released when the load fails. A load first deletes what the namespace holds
(:meth:`LoadLock.start_writing`: keys left by an earlier partial load or by servers of an earlier version),
so the state is the loaded one. The other processes wait for the marker, saying for whom. A Redis that fails
meanwhile is one line naming the URL and what was under way (:func:`redis_errors`). Used by the features'
:class:`~payfm.features.redis_store.RedisStore` and the embedders' :class:`~payfm.fm.online_state.RedisState`.

A serving process also says which namespaces it serves from (:class:`Presence`): a key ``{ns}:live:{id}``
each, with a short TTL that a daemon thread renews, so `payfm serve state drop` can refuse a namespace that
a running server reads (:func:`live_servers`), whether or not a registered model names it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any

from payfm.errors import ConfigError

log = logging.getLogger(__name__)

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def is_redis_url(spec: str) -> bool:
    """``spec`` names a Redis server (redis://, rediss:// or unix://)."""
    return spec.startswith(REDIS_SCHEMES)


# Seconds before a connection attempt, and then any read or write, to Redis gives up (redis-py waits forever
# by default: a Redis that stops answering without closing its connections hung every request and /healthz).
# The URL's own ``socket_connect_timeout`` and ``socket_timeout`` (``redis://h:6379/0?socket_timeout=2``) win.
CONNECT_TIMEOUT_S = 5.0
SOCKET_TIMEOUT_S = 10.0


def redis_client(url: str) -> Any:
    """A redis-py client of ``url`` (not yet connected), with timeouts (:data:`SOCKET_TIMEOUT_S`). A
    redis:// or rediss:// URL's path is its database, a number (``redis://host:6379/3``): redis-py takes any
    other path (``/abc``, ``/3/x``, a typo) for database 0, silently, and a server would load or read another
    database than meant."""
    import urllib.parse

    import redis

    from payfm.errors import ConfigError, scrubbed, shown_url

    if url.startswith(("redis://", "rediss://")):
        path = urllib.parse.urlsplit(url).path
        if path not in ("", "/") and not (path[1:].isascii() and path[1:].isdigit()):
            # (a password with an unencoded '/' ends the host early: the path holds the rest of it)
            raise ConfigError(
                f"The Redis URL {shown_url(url)!r}: expected its path to be the database number "
                f"(redis://host:6379/3) or none (database 0). Got {scrubbed(repr(path), url)}."
            )
    return redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=SOCKET_TIMEOUT_S
    )  # (redis-py: the URL's query string overrides these)


def connected(url: str, what: str) -> Any:
    """A redis-py client of ``url`` (:func:`redis_client`), pinged; else a one-line :class:`ConfigError`
    that names ``what`` ("The Redis online store") and the URL without its password (nor the driver's text
    of it: :func:`payfm.errors.scrubbed`). A query argument redis-py's connection does not take
    (``?PASSWORD=x``: the names are lower case) raised a TypeError at the first command, a traceback."""
    import re

    import redis

    from payfm.errors import scrubbed, shown_url

    try:
        client = redis_client(url)
        client.ping()
    except TypeError as e:
        unknown = re.search(r"unexpected keyword argument '([^']*)'", str(e))
        if unknown is None:
            raise
        raise ConfigError(
            f"{what} URL {shown_url(url)!r}: expected query arguments redis-py takes, in lower case "
            f"(socket_timeout, socket_connect_timeout, health_check_interval, password...). Got "
            f"{scrubbed(unknown.group(1), url)!r}."
        ) from None
    except (redis.RedisError, ValueError) as e:
        raise ConfigError(f"{what} at {shown_url(url)!r} is not reachable: {scrubbed(str(e), url)}") from None
    return client


# Delete the lock KEYS[1] only if it still holds this process's token ARGV[1].
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Delete the marker KEYS[1] unless the lock KEYS[2] is held (a reload is under way).
_UNMARK = """
if redis.call('EXISTS', KEYS[2]) == 0 then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Extend the lock KEYS[1] by ARGV[2] seconds only if it still holds this process's token ARGV[1].
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# Set the marker KEYS[1] to ARGV[2] only if it still holds ARGV[1] (an older payfm's marker, claimed).
_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end
return 0
"""

# Seconds a load lock lives without its holder's heartbeat (renewed every third of it while the holder lives,
# through the build and the write): a holder killed (kill -9, the OOM killer) frees it within this time.
LOCK_TTL_S = 20
WAIT_SAID_EVERY_S = 30.0  # a process waiting for another's load says so at first, then this often
LEGACY_MARKER = b"1"  # the marker of a state loaded by an older payfm: it did not record whose log


def failure_types() -> tuple[type[Exception], ...]:
    """redis-py's errors of a Redis that failed, not of a statement: the connection refused or dropped, no
    answer in time, or a server that cannot write now (a replica after a failover, out of memory, its primary
    down, a slot on the move). The decision service answers them 503, a start-up one line."""
    import redis
    from redis.exceptions import MasterDownError, OutOfMemoryError, ReadOnlyError, TryAgainError

    return (
        redis.ConnectionError,
        redis.TimeoutError,
        ReadOnlyError,
        OutOfMemoryError,
        MasterDownError,
        TryAgainError,
    )


def redis_failure(e: BaseException, url: str, what: str, doing: str) -> ConfigError | None:
    """The one-line error of a Redis that failed (:func:`failure_types`) while ``doing``, naming ``what`` and
    the URL without its password; None for any other error (a bug keeps its traceback)."""
    from payfm.errors import scrubbed, shown_url

    if not isinstance(e, failure_types()):
        return None
    said = scrubbed(" ".join(str(e).split())[:200], url)
    return ConfigError(
        f"{what} at {shown_url(url)!r}: Redis failed while {doing} ({type(e).__name__}: {said}). Check that "
        "Redis is up and reachable, then start the server again."
    )


@contextmanager
def redis_errors(url: str, what: str, doing: str | list[str]) -> Iterator[None]:
    """Turn Redis failures inside the block into :func:`redis_failure`'s one line (not two chained
    tracebacks of 110-160 lines); ``doing`` may be a one-item list the block updates as it goes."""
    try:
        yield
    except Exception as e:
        failure = redis_failure(e, url, what, doing if isinstance(doing, str) else doing[0])
        if failure is None:
            raise
        raise failure from None


def client_url(client: Any) -> str:
    """A URL naming the server and database of a redis-py ``client``, without its password (for messages
    of a caller that did not keep its own)."""
    kw = client.connection_pool.connection_kwargs
    if kw.get("path"):
        return f"unix://{kw['path']}?db={kw.get('db', 0)}"
    return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def holder_token() -> bytes:
    """A load lock's token: who holds it (host, pid, since when, UTC) and a random id that makes it unique."""
    since = datetime.now(UTC).isoformat(timespec="seconds")
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": since, "id": uuid.uuid4().hex}
    return json.dumps(me, separators=(",", ":")).encode()


def describe_holder(token: bytes | None) -> str:
    """Who holds a load lock, from its token: "host h pid 12 since 2026-...", or less for an older payfm's."""
    try:
        me = json.loads(token or b"")
        return f"host {me['host']} pid {me['pid']} since {me['since']}"
    except (ValueError, TypeError, KeyError):
        return "a process of an older payfm (its host and pid are not recorded)"


class LoadLock:
    """The load marker and lock of namespace ``ns``; ``what`` names the state in errors, ``url`` its Redis
    (default: the client's server and database).

    The lock lives ``ttl_s`` seconds (:data:`LOCK_TTL_S`) and a heartbeat (a daemon thread) renews it every
    third of that while this process holds it, through the build of the state and its write: a holder that
    dies frees it within seconds, and one that lives keeps it however long the load takes. Its token says
    who holds it (:func:`holder_token`); a process waiting for it says for whom, at first and every
    :data:`WAIT_SAID_EVERY_S`. :attr:`owner` is what :meth:`done` records in the marker: whose event log
    the state was loaded from (:data:`LEGACY_MARKER` when none was given, as an older payfm recorded)."""

    def __init__(self, client: Any, ns: str, what: str, *, url: str | None = None, ttl_s: int = LOCK_TTL_S):
        self.client, self.what = client, what
        self.url = url or client_url(client)
        self.ns, self.marker, self.lock = ns, f"{ns}:warm", f"{ns}:warming"
        self._release = client.register_script(_RELEASE)
        self._extend = client.register_script(_EXTEND)
        self._unmark = client.register_script(_UNMARK)
        self._claim = client.register_script(_CLAIM)
        self._token: bytes | None = None  # this process's hold on the lock
        self._ttl = max(1, int(ttl_s))
        self._beating: threading.Event | None = None  # set to stop the heartbeat of the hold
        self.owner: bytes | None = None

    def _failing(self, doing: str) -> AbstractContextManager[None]:
        return redis_errors(self.url, f"The Redis state of {self.what} ({self.ns})", doing)

    def is_loaded(self) -> bool:
        """The state was loaded (by this process or another)."""
        return bool(self.client.exists(self.marker))

    def loaded_by(self) -> bytes | None:
        """The marker: whose event log the state was loaded from (:attr:`owner` of the process that loaded
        it; :data:`LEGACY_MARKER` for an older payfm's); None when it is not loaded."""
        value: bytes | None = self.client.get(self.marker)
        return value

    def claim(self, seen: bytes, owner: bytes) -> bool:
        """Record ``owner`` in the marker if it still holds ``seen`` (an older payfm's, taken as this
        workspace's); whether it did."""
        return bool(int(self._claim(keys=[self.marker], args=[seen, owner])))

    def begin(self, timeout_s: float = 600.0) -> bool:
        """True when this process should load the state (it holds the lock, kept alive by a heartbeat until
        :meth:`done` or :meth:`release`); False when another process loaded it (waits up to ``timeout_s``
        while it does, saying for whom)."""
        deadline = time.monotonic() + timeout_s
        token, said_at = holder_token(), -math.inf
        doing = ["taking its load lock"]  # what was under way, for the one line of a failure
        with redis_errors(self.url, f"The Redis state of {self.what} ({self.ns})", doing):
            while not self.is_loaded():
                if self.client.set(self.lock, token, nx=True, ex=self._ttl):
                    self._token = token
                    if self.is_loaded():  # loaded between the check and the lock
                        self.release()
                        return False
                    self._heartbeat(token)
                    return True
                now = time.monotonic()
                if now > deadline:
                    raise ConfigError(
                        f"The Redis state of {self.what} ({self.lock}) is being loaded by another process "
                        f"({describe_holder(self.client.get(self.lock))}) and was not ready after "
                        f"{timeout_s:.0f} s."
                    )
                if now - said_at >= WAIT_SAID_EVERY_S:
                    said_at = now
                    doing[0] = f"waiting for the load of another process ({self._say_waiting()})"
                time.sleep(0.2)
        return False

    def _say_waiting(self) -> str:
        """Log whom this process waits for (:func:`describe_holder`); returns it."""
        holder, ttl = self.client.get(self.lock), self.client.ttl(self.lock)
        if holder is None:
            return "released meanwhile"  # the next round takes it or finds the state loaded
        # (a live holder's heartbeat renews it; an older payfm's lock lived as long as its whole load)
        expiry = (
            f"its lock expires in {ttl} s unless its holder renews it"
            if ttl >= 0
            else "its lock has no expiry"
        )
        log.warning(
            "waiting for the Redis state of %s (%s) at %s: %s loads it (%s)",
            self.what,
            self.ns,
            self.url,
            describe_holder(holder),
            expiry,
        )
        return describe_holder(holder)

    def _heartbeat(self, token: bytes) -> None:
        """Renew the lock every third of its TTL while this process holds it (a daemon thread)."""
        stop = self._beating = threading.Event()

        def beat() -> None:
            while not stop.wait(self._ttl / 3):
                try:
                    if not int(self._extend(keys=[self.lock], args=[token, self._ttl])):
                        return  # lost (expired while this process stalled): keep() says so
                except Exception as e:  # Redis away for a moment: the next beat tries again
                    log.warning("could not renew the load lock %s: %s: %s", self.lock, type(e).__name__, e)

        threading.Thread(target=beat, name="payfm-load-lock", daemon=True).start()

    def _stop_heartbeat(self) -> None:
        if self._beating is not None:
            self._beating.set()
            self._beating = None

    def unmark(self) -> None:
        """Forget that the state was loaded (it is stale), so that the next :meth:`begin` loads it again;
        nothing happens while another process holds the lock (it is reloading it)."""
        self._unmark(keys=[self.marker, self.lock])

    def keep(self) -> None:
        """Extend the lock (before each pipeline of the load); raises if this process no longer holds it."""
        with self._failing("writing the state (renewing its load lock)"):
            held = self._token is not None and int(
                self._extend(keys=[self.lock], args=[self._token, self._ttl])
            )
        if not held:
            self._token = None
            self._stop_heartbeat()
            raise ConfigError(
                f"The Redis state of {self.what} ({self.ns}): this process lost its load lock (it expired "
                f"after {self._ttl} s without a heartbeat: the process stalled, and another process may be "
                "loading the state); start the server again."
            )

    def start_writing(self) -> int:
        """Delete every key of the namespace but the lock, before a load writes it; returns how many."""
        self.keep()
        with self._failing("emptying the namespace before the load"):
            return unlink_namespace(self.client, self.ns, keep=self.lock)

    def done(self) -> None:
        """Mark the state loaded (recording :attr:`owner`) and release the lock."""
        self.keep()
        with self._failing("marking the state loaded"):
            self.client.set(self.marker, self.owner or LEGACY_MARKER)
        self.release()

    def release(self) -> None:
        """Release the lock if this process holds it. Never raises: a Redis that fails here (a load that
        failed on it, being given up) lets the lock expire on its own within its TTL, and the error that
        ended the load is the one to say."""
        self._stop_heartbeat()
        if self._token is not None:
            token, self._token = self._token, None
            try:
                self._release(keys=[self.lock], args=[token])
            except Exception as e:
                log.warning(
                    "could not release the load lock %s (it expires within %d s): %s: %s",
                    self.lock,
                    self._ttl,
                    type(e).__name__,
                    " ".join(str(e).split())[:200],
                )


def load_lock_of(store: object) -> LoadLock | None:
    """The :class:`LoadLock` of a shared state (a features' or an embedder's Redis store); None for a store
    in memory."""
    lock = getattr(store, "load_lock", None) or getattr(store, "_load", None)
    return lock if isinstance(lock, LoadLock) else None


def all_claimed(client: Any, ns: str, charge_ids: list[str], kind: str = "c") -> bool:
    """Every one of ``charge_ids`` has its claim ``{ns}:{kind}:{id}`` in namespace ``ns``: ``c`` a charge
    learned or counted, ``o`` an outcome counted (the id is then its claim)."""
    return all(claimed(client, ns, charge_ids, kind))


def claimed(client: Any, ns: str, charge_ids: list[str], kind: str = "c") -> list[bool]:
    """Whether each of ``charge_ids`` has its claim (:func:`all_claimed`), in one pipeline."""
    if not charge_ids:
        return []
    pipe = client.pipeline(transaction=False)
    for cid in charge_ids:
        pipe.exists(f"{ns}:{kind}:{cid}")
    return [bool(int(x)) for x in pipe.execute()]


def unlink_namespace(client: Any, ns: str, batch: int = 5_000, keep: str | None = None) -> int:
    """Delete every key of namespace ``ns`` but ``keep`` and the servers' presence keys when ``keep`` is given
    (SCAN, then UNLINK in batches); returns how many."""
    n, keys = 0, []
    spare = keep.encode() if keep is not None else None
    live = f"{ns}:live:".encode()
    for key in client.scan_iter(f"{ns}:*", count=batch):
        if key == spare or (spare is not None and key.startswith(live)):
            continue
        keys.append(key)
        if len(keys) == batch:
            n += int(client.unlink(*keys))
            keys.clear()
    return n + (int(client.unlink(*keys)) if keys else 0)


def live_servers(client: Any, ns: str) -> list[str]:
    """The serving processes that read namespace ``ns`` now (their :class:`Presence` keys), as
    ``host pid N``."""
    return server_names(client, list(client.scan_iter(f"{ns}:live:*", count=1_000)))


def server_names(client: Any, keys: list[bytes]) -> list[str]:
    """The ``host pid N`` of the presence ``keys`` still there, sorted."""
    values = client.mget(keys) if keys else []
    return sorted(v.decode(errors="replace") for v in values if v is not None)


class Presence:
    """The namespaces this process serves from: a key ``{ns}:live:{id}`` each (``host pid N``), set with a
    TTL of ``ttl_s`` and renewed every third of it by a daemon thread; :meth:`close` deletes them. A process
    that dies without closing is forgotten after the TTL."""

    def __init__(self, client: Any, ttl_s: int = 30) -> None:
        self.client, self.ttl_s = client, ttl_s
        self.id = uuid.uuid4().hex[:12]
        self.value = f"{socket.gethostname()} pid {os.getpid()}".encode()
        self._namespaces: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def key(self, ns: str) -> str:
        return f"{ns}:live:{self.id}"

    def serve(self, namespaces: Iterable[str]) -> None:
        """Serve from exactly ``namespaces`` now (those left are released at once); nothing after
        :meth:`close`."""
        with self._lock:
            if self._stop.is_set():
                return
            new = tuple(dict.fromkeys(namespaces))
            gone = [self.key(ns) for ns in self._namespaces if ns not in new]
            self._namespaces = new
            if gone:
                self.client.delete(*gone)
            self._renew()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="payfm-presence", daemon=True)
                self._thread.start()

    def _renew(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        for ns in self._namespaces:
            pipe.set(self.key(ns), self.value, ex=self.ttl_s)
        pipe.execute()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                with self._lock:
                    self._renew()
            except Exception as e:  # Redis away for a moment: the next round retries
                log.warning("could not renew this server's presence in Redis: %s", e)

    def close(self) -> None:
        """Stop renewing and delete this process's keys (with Redis away, they expire after the TTL)."""
        with self._lock:
            self._stop.set()
            keys = [self.key(ns) for ns in self._namespaces]
            self._namespaces = ()
        if self._thread is not None:
            self._thread.join()
        if keys:
            try:
                self.client.delete(*keys)
            except Exception as e:  # closing must not fail: the keys expire on their own
                log.warning(
                    "could not delete this server's presence in Redis (it expires in %d s): %s", self.ttl_s, e
                )
