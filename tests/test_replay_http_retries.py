"""`payfm replay --http` as an HTTP client: a request on a kept-alive connection the service closed while it
sat idle goes again on a new connection (a review's 16 s replay stopped with "No decision service answered
(BrokenPipeError)" against a healthy server, whose 5 s keep-alive had ended while the window loaded), and a
request the service sheds (503 with Retry-After, as the API asks clients to) is tried again after the wait
it asks for (the review's replay counted it as an error and dropped the charge's authorization result)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.serving.replay import Aborted, ReplayReport, replay_http, retry_after_s
from payfm.synth import WorldConfig, generate_world

# (status, JSON body, headers) of the answer to the n-th request (from 1, /healthz included) to a path
Answer = Callable[[int, str, dict[str, Any]], tuple[int, dict[str, Any], dict[str, str]]]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    w = Workspace.open(tmp_path_factory.mktemp("replay_http") / "ws", create=True)
    w.write_stream(generate_world(WorldConfig(charges=1500, days=2, seed=11)), "replace")
    return w


def _window(ws: Workspace, hours: float) -> datetime:
    """The start of the last ``hours`` of the log."""
    last: datetime = pc.max(ws.read("charges")["created"]).as_py()
    return last - timedelta(hours=hours)


def decided(n: int, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    """What a healthy service answers: a decision to a charge, an empty object to anything else."""
    if path == "/v1/charges/score":
        return 200, {"outcome": "authorized", "ruleset_version": 1}, {}
    return 200, {}, {}


@dataclass
class Seen:
    url: str
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (path, body) answered
    connections: int = 0


@contextmanager
def _service(
    answer: Answer = decided,
    close_after: Callable[[int], bool] = lambda n: False,
    family: socket.AddressFamily = socket.AF_INET,
) -> Iterator[Seen]:
    """A stand-in decision service that keeps connections alive (HTTP/1.1, as uvicorn does). After the n-th
    request with ``close_after(n)`` it closes the connection without saying so in its answer, as a server
    whose keep-alive timeout ends does while the connection sits idle: the client learns it at its next
    request on that connection, which the service never reads."""
    seen = Seen("")
    lock = threading.Lock()

    class Service(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # (headers and body go in two writes: without this, Nagle's algorithm holds the body for the
            # client's delayed ACK, 40 ms an answer)
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with lock:
                seen.connections += 1

        def _answer(self, body: dict[str, Any]) -> None:
            with lock:
                seen.requests.append((self.path, body))
                n = len(seen.requests)
            status, payload, headers = answer(n, self.path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            self.close_connection = close_after(n)

        def do_GET(self) -> None:
            self._answer({})

        def do_POST(self) -> None:
            self._answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        address_family = family

    server = Server(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0), Service)
    host = "[::1]" if family == socket.AF_INET6 else "127.0.0.1"
    seen.url = f"http://{host}:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


def _ids(seen: Seen, path: str = "/v1/charges/score") -> list[str]:
    return [str(body["charge_id"]) for p, body in seen.requests if p == path]


def test_a_request_on_a_connection_the_service_closed_while_idle_goes_again_on_a_new_one(
    ws: Workspace,
) -> None:
    # The connection of /healthz is closed before the first event (the window loading for longer than the
    # keep-alive), and so is the one in use after every 7th request.
    with _service(close_after=lambda n: n == 1 or n % 7 == 0) as seen:
        rep = replay_http(ws, _window(ws, 3), None, seen.url, "k", authorize_after=True)
    assert not rep.errors and rep.charges > 30 and rep.authorizations == rep.charges
    answered = len(seen.requests)
    closed = 1 + answered // 7 - (answered % 7 == 0)  # (none after the last answer is met again)
    assert rep.reconnects == closed and seen.connections == closed + 1
    # each event reached the service once: a request on a closed connection is never read
    charges = _ids(seen)
    assert len(charges) == len(set(charges)) == rep.charges
    assert sum(p.endswith("/authorization") for p, _ in seen.requests) == rep.charges
    assert answered == 1 + 2 * rep.charges + rep.outcomes


def test_a_service_that_goes_away_midway_still_stops_the_replay_at_once(ws: Workspace) -> None:
    """The retry on a new connection meets a refused connection: the one-line error, without waiting."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:  # /healthz and 3 charges on one kept-alive connection, then nothing listens
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as f:
            for _ in range(4):
                length = 0
                while (line := f.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                f.read(length)
                body = b'{"outcome": "authorized", "ruleset_version": 1}'
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                conn.sendall(head + body)
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    t0 = time.monotonic()
    with pytest.raises(Aborted, match=rf"No decision service answered at http://127.0.0.1:{port} \("):
        replay_http(ws, _window(ws, 3), None, f"127.0.0.1:{port}", "k")
    assert time.monotonic() - t0 < 20  # (generous: no 30 s timeout, no retries beyond the one)
    thread.join(5)


class _Shed:
    """A service that sheds the first ``n_sheds(path, body)`` tries of each request (503 Overloaded, with
    ``Retry-After: retry_after`` unless None), then decides; ``sheds`` counts the 503s it answered."""

    OVERLOADED: ClassVar[dict[str, Any]] = {
        "error": {"type": "Overloaded", "message": "Too many requests in flight", "field": None}
    }

    def __init__(self, n_sheds: Callable[[str, dict[str, Any]], int], retry_after: str | None = "0") -> None:
        self.n_sheds, self.retry_after = n_sheds, retry_after
        self.tries: Counter[tuple[str, str]] = Counter()
        self.sheds = 0

    def __call__(self, n: int, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if path == "/healthz":
            return 200, {}, {}
        request = (path, json.dumps(body, sort_keys=True))
        self.tries[request] += 1
        if self.tries[request] <= self.n_sheds(path, body):
            self.sheds += 1
            return 503, self.OVERLOADED, {} if self.retry_after is None else {"Retry-After": self.retry_after}
        return decided(n, path, body)


def _every_5th_charge(path: str, body: dict[str, Any]) -> int:
    """Two sheds of every 5th charge's decision (by its id's hash), one of every 3rd one's result."""
    h = sum(map(ord, str(body.get("charge_id", path))))
    if path == "/v1/charges/score":
        return 2 if h % 5 == 0 else 0
    return 1 if path.endswith("/authorization") and h % 3 == 0 else 0


def test_a_request_the_service_sheds_is_tried_again_after_its_retry_after(ws: Workspace) -> None:
    shed = _Shed(_every_5th_charge)
    with _service(shed) as seen:
        rep = replay_http(ws, _window(ws, 3), None, seen.url, "k", authorize_after=True)
    assert not rep.errors and rep.charges > 30 and rep.mix == {"authorized": rep.charges}
    assert rep.authorizations == rep.charges  # no result dropped (the review's replay lost one per 503)
    assert rep.retries == shed.sheds > 10 and rep.retry_wait_s == 0.0
    results = [p for p, _ in seen.requests if p.endswith("/authorization")]
    assert len(set(results)) == rep.charges and len(results) > rep.charges  # (some were shed, then taken)


def test_the_wait_is_the_one_retry_after_asks_for(ws: Workspace) -> None:
    first: list[str] = []

    def once(path: str, body: dict[str, Any]) -> int:  # the first charge's decision is shed once
        if path == "/v1/charges/score" and not first:
            first.append(str(body["charge_id"]))
        return 1 if path == "/v1/charges/score" and body["charge_id"] == first[0] else 0

    with _service(_Shed(once, "1")) as seen:
        rep = replay_http(ws, _window(ws, 1), None, seen.url, "k")
    assert not rep.errors and (rep.retries, rep.retry_wait_s) == (1, 1.0)
    assert max(rep.latencies_ms) >= 900  # (it waited; the client saw the wait)
    assert _ids(seen).count(first[0]) == 2


def test_a_503_without_retry_after_is_this_events_error_and_one_for_good_stops_the_replay(
    ws: Workspace,
) -> None:
    # without Retry-After (a proxy with no server behind it): no retry, one error per event, as before
    def shed_one(path: str, body: dict[str, Any]) -> int:
        return 1 if path == "/v1/charges/score" and sum(map(ord, str(body["charge_id"]))) % 4 == 0 else 0

    with _service(_Shed(shed_one, None)) as seen:
        rep = replay_http(ws, _window(ws, 3), None, seen.url, "k")
    assert rep.retries == 0 and rep.errors == {
        "HTTP 503 Overloaded: Too many requests in flight": len(_ids(seen)) - rep.charges
    }
    # shed for good: three events in a row each tried 6 times, then the replay stops
    gone = r"answered HTTP 503 Overloaded: Too many requests in flight to 3 requests in a row, each tried 6"
    with _service(_Shed(lambda path, body: 10**6)) as seen, pytest.raises(Aborted, match=gone):
        replay_http(ws, _window(ws, 3), None, seen.url, "k")
    assert len(seen.requests) == 1 + 3 * 6


def test_retry_after_is_read_as_seconds_or_a_date_and_capped() -> None:
    now = datetime(2026, 10, 21, 7, 28, tzinfo=UTC)
    assert retry_after_s("0") == 0.0 and retry_after_s("2") == 2.0 and retry_after_s("86400") == 5.0
    assert retry_after_s("-3") == 0.0 and retry_after_s("nan") == 1.0 and retry_after_s("") == 1.0
    assert retry_after_s("Wed, 21 Oct 2026 07:28:03 GMT", now) == 3.0
    assert retry_after_s("Wed, 21 Oct 2026 07:27:00 GMT", now) == 0.0  # (past)
    assert retry_after_s(None) is None


def test_the_replay_summary_says_how_many_retries_and_reconnections() -> None:
    from payfm.cli.render import console
    from payfm.cli.serve import print_replay

    with console.capture() as out:
        print_replay(ReplayReport(charges=3, retries=4, retry_wait_s=2.0, reconnects=1), "Replay")
    said = out.get()
    assert (
        "Retried 4 times after the service shed a request (503 or 429 with Retry-After), waiting 2.0 s"
        in said
    )
    assert "Sent 1 request again on a new connection: the service had closed an idle one" in said


def test_the_command_replays_to_an_ipv6_address_written_as_a_url_writes_it(ws: Workspace) -> None:
    """`--http [::1]:PORT`, as `payfm serve --host ::1` says its address; the summary counts the retries."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with _service(_Shed(_every_5th_charge), close_after=lambda n: n == 1, family=socket.AF_INET6) as seen:
        assert seen.url.startswith("http://[::1]:")
        args = ["--from", _window(ws, 2).isoformat(), "--http", seen.url.removeprefix("http://")]
        r = CliRunner().invoke(cli, ["-w", str(ws.root), "replay", *args], env={"PAYFM_API_KEY": "k"})
    assert r.exit_code == 0 and "Retried " in r.output and "Sent 1 request again" in r.output, r.output
    assert "error" not in r.output and len(_ids(seen)) > 10
