"""Operating the decision service: Prometheus metrics at /metrics, the access log, a backend's failure
answered 503 with Retry-After (not a 500), and Redis calls that give up instead of hanging."""

# ruff: noqa: F811 (the tests take the imported `scorer` fixture as an argument)

from __future__ import annotations

import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from payfm.events.workspace import Workspace
from payfm.redis_load import redis_client
from payfm.serving.app import create_app
from payfm.serving.keys import KeyStore
from payfm.serving.scorer import Scorer
from services import REDIS_SCRATCH_URL, HeldRedis
from test_serving_http_audit import scorer  # noqa: F401 (the fixture: a tiny model and its ruleset)
from test_serving_scorer import charge, register

PAN = "4111111111111111"


@pytest.fixture()
def keyed(scorer: Scorer) -> Iterator[tuple[TestClient, dict[str, str]]]:
    keys = KeyStore(scorer.ws.root / "serving" / "keys.db")
    key = keys.create("checkout")
    with TestClient(create_app(scorer, keys, access_log=True)) as c:
        yield c, {"Authorization": f"Bearer {key}"}


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics (fetched without a key), by name and sorted labels."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def test_metrics_count_requests_by_route_decisions_by_outcome_and_name_the_model(
    scorer: Scorer, keyed: tuple[TestClient, dict[str, str]]
) -> None:
    client, auth = keyed
    outcomes = []
    for i in range(6):  # amounts over 500 USD go to review (RULES), the others are scored
        amount = 90_000 if i % 3 == 0 else 1_500
        r = client.post("/v1/charges/score", json=charge(i, amount=amount, amount_usd=amount), headers=auth)
        assert r.status_code == 200, r.text
        outcomes.append((r.json()["outcome"], r.json()["risk_level"]))
    assert client.post("/v1/charges/score", json=charge(99)).status_code == 401  # no key
    unknown = client.post(f"/v1/reviews/ch_{PAN}/close", json={"reason": "approved"}, headers=auth)
    assert unknown.status_code == 404
    assert client.get(f"/x/{PAN}", headers=auth).status_code == 404
    closed = client.post("/v1/reviews/ch_0/close", json={"reason": "approved"}, headers=auth)
    assert closed.status_code == 200, closed.text
    got = samples(client)
    assert not [name for name, _ in got if name.endswith("_created")]  # (a series per counter: noise)

    def requests(route: str, method: str, status: str) -> float:
        return got.get(
            ("payfm_http_requests_total", (("method", method), ("route", route), ("status", status))), 0.0
        )

    assert requests("/v1/charges/score", "POST", "200") == 6
    assert requests("/v1/charges/score", "POST", "401") == 1
    # a path's ids are never labels: the route's template, or "other" for a path no route has
    assert requests("/v1/reviews/{charge_id}/close", "POST", "404") == 1
    assert requests("/v1/reviews/{charge_id}/close", "POST", "200") == 1
    assert requests("other", "GET", "404") == 1
    assert not [k for k in got if any(PAN in v or "ch_0" in v for _, v in k[1])]
    for outcome, level in set(outcomes):
        key = ("payfm_decisions_total", (("outcome", outcome), ("risk_level", level or "none")))
        assert got[key] == outcomes.count((outcome, level)), key
    assert {o for o, _ in outcomes} == {"manual_review", "authorized"}
    assert got[("payfm_decision_duration_seconds_count", ())] == 6
    assert got[("payfm_reviews_closed_total", (("reason", "approved"),))] == 1
    assert got[("payfm_http_request_duration_seconds_count", (("route", "/v1/charges/score"),))] == 7
    described = scorer.bundle.describe()
    info = [k for k in got if k[0] == "payfm_model_info"]
    assert len(info) == 1 and dict(info[0][1])["model"] == described["model"]
    assert dict(info[0][1])["ruleset_version"] == str(described["ruleset_version"])
    assert got[("payfm_requests_in_flight", ())] == 0
    assert got[("payfm_health_warnings", ())] == 0


def test_the_access_log_has_a_line_per_request_without_bodies_or_card_numbers(
    keyed: tuple[TestClient, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    client, auth = keyed
    with caplog.at_level(logging.INFO, logger="payfm.access"):
        client.post("/v1/charges/score", json=charge(1, merchant_id="m_secret_body_value"), headers=auth)
        client.post(f"/v1/reviews/{PAN}/close", json={"reason": "approved"}, headers=auth)
        client.post("/v1/refunds", json={}, headers={"Authorization": "Bearer wrong"})
    lines = [r.getMessage() for r in caplog.records if r.name == "payfm.access"]
    assert len(lines) == 3
    assert ' checkout "POST /v1/charges/score" 200 ' in lines[0] and lines[0].endswith(" B")
    assert "m_secret_body_value" not in lines[0]  # never a body
    assert '"POST /v1/reviews/[card number removed]/close" 404' in lines[1] and PAN not in lines[1]
    assert ' - "POST /v1/refunds" 401 ' in lines[2]  # no key name for a wrong key


def test_a_path_cannot_forge_an_access_log_line(
    keyed: tuple[TestClient, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a review: the path arrives decoded, so %0A wrote a line break (a forged line) into the log."""
    client, auth = keyed
    with caplog.at_level(logging.INFO, logger="payfm.access"):
        client.get(
            "/x%0A2026-12-05 payfm.access 10.0.0.9 admin %22POST /v1/admin/reload%22 200%0D%1B[2J",
            headers=auth,
        )
    [line] = [r.getMessage() for r in caplog.records if r.name == "payfm.access"]
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert '"GET /x\\n2026-12-05 payfm.access' in line and "\\r\\x1b[2J" in line


def test_a_failed_decision_log_write_is_a_503_with_retry_after_and_the_retry_is_decided(
    scorer: Scorer, keyed: tuple[TestClient, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    """Found by an SRE audit: a decision whose log write failed was a 500 without Retry-After, so clients
    did not retry, and the charge stayed counted in the features. Now 503 naming the backend, counted."""
    client, auth = keyed
    real = scorer.log.submit

    def lost(record: Any) -> Any:
        raise psycopg.OperationalError("server closed the connection unexpectedly host=db.internal")

    scorer.log.submit = lost  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="payfm.serving"):
        r = client.post("/v1/charges/score", json=charge(7), headers=auth)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    err = r.json()["error"]
    assert err["type"] == "Unavailable" and "decision log" in err["message"]
    assert "db.internal" not in err["message"]  # the driver's text stays in the server's log
    assert [x.getMessage() for x in caplog.records] == [
        "the decision log failed: OperationalError: server closed the connection unexpectedly "
        "host=db.internal"
    ]
    scorer.log.submit = real  # type: ignore[method-assign]
    again = client.post("/v1/charges/score", json=charge(7), headers=auth)
    assert again.status_code == 200 and scorer.log.get_decision("ch_7") is not None
    got = samples(client)
    assert got[("payfm_backend_errors_total", (("backend", "decision log"),))] == 1


@pytest.mark.parametrize(
    ("error", "backend"),
    [
        (sqlite3.OperationalError("database is locked"), "decision log"),
        (redis.ConnectionError("Connection reset by peer"), "shared online state"),
        (redis.ReadOnlyError("You can't write against a read only replica."), "shared online state"),
        (
            redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
            "shared online state",
        ),
        (psycopg.InterfaceError("the connection is closed"), "decision log"),
    ],
)
def test_an_outcome_failing_on_a_backend_is_a_503_not_a_500(
    scorer: Scorer, keyed: tuple[TestClient, dict[str, str]], error: Exception, backend: str
) -> None:
    client, auth = keyed

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise error

    scorer.record_outcome = failing  # type: ignore[method-assign]
    body = {"refund_id": "re_1", "charge_id": "ch_1", "created": "2026-03-01T13:00:00Z", "amount": 100}
    r = client.post("/v1/refunds", json=body | {"currency": "usd", "reason": "fraudulent"}, headers=auth)
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert r.json()["error"]["type"] == "Unavailable" and backend in r.json()["error"]["message"]


def _sqlite_error(sql: str) -> sqlite3.OperationalError:
    """A real SQLite error of ``sql``, with its result code."""
    try:
        sqlite3.connect(":memory:").execute(sql)
    except sqlite3.OperationalError as e:
        return e
    raise AssertionError(f"{sql!r} did not fail")


@pytest.mark.parametrize("redis_error", [False, True])
def test_a_driver_error_that_is_a_bug_stays_a_500_not_a_retry(
    scorer: Scorer, keyed: tuple[TestClient, dict[str, str]], redis_error: bool
) -> None:
    """A statement's fault (SQLite's "no such table", Redis's wrong type) is a bug: a 503 would have the
    client retry forever. Only the database's state (busy, locked, full, unreachable) is a 503."""
    client, auth = keyed
    error: Exception = (
        redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
        if redis_error
        else _sqlite_error("SELECT * FROM no_such_table")
    )

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise error

    scorer.record_outcome = failing  # type: ignore[method-assign]
    body = {"refund_id": "re_1", "charge_id": "ch_1", "created": "2026-03-01T13:00:00Z", "amount": 100}
    r = client.post("/v1/refunds", json=body | {"currency": "usd", "reason": "fraudulent"}, headers=auth)
    assert r.status_code == 500 and "retry-after" not in r.headers, r.text
    assert r.json()["error"]["type"] == "InternalError"


def test_sqlite_states_that_pass_are_unavailable_and_statement_faults_are_not() -> None:
    from payfm.serving.errors import backend_failure

    assert backend_failure(_sqlite_error("SELECT * FROM no_such_table")) is None
    assert backend_failure(_sqlite_error("SELEC 1")) is None
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    io = sqlite3.OperationalError("disk I/O error")
    io.sqlite_errorcode = 10 | (3 << 8)  # type: ignore[attr-defined] # SQLITE_IOERR_WRITE, an extended code
    for e in (busy, full, io):
        failure = backend_failure(e)
        assert failure is not None and failure.backend == "decision log", e


@pytest.fixture()
def silent_port() -> Iterator[int]:
    """A TCP server that accepts connections and never answers (a Redis that hangs without closing)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield server.getsockname()[1]
    stop.set()
    t.join()
    for s in held:
        s.close()
    server.close()


def test_redis_calls_give_up_after_the_default_timeout(
    silent_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("payfm.redis_load.SOCKET_TIMEOUT_S", 0.3)  # the default a URL does not override
    client = redis_client(f"redis://127.0.0.1:{silent_port}/0")
    t0 = time.perf_counter()
    with pytest.raises(redis.TimeoutError):
        client.ping()
    assert time.perf_counter() - t0 < 3


def test_a_redis_that_stops_answering_makes_healthz_and_decisions_503_not_hang(
    tmp_path: Path, redis_scratch: Any
) -> None:
    """Found by an SRE audit: with Redis hung (not closed), /healthz and every decision waited forever."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    register(ws, 1.0, "production")
    redis = HeldRedis(REDIS_SCRATCH_URL)  # (not CLIENT PAUSE: it held other test processes' clients too)
    try:
        scorer = Scorer.open(ws, state=f"{redis.url}?socket_timeout=0.4")
    except BaseException:
        redis.close()
        raise
    try:
        with TestClient(create_app(scorer, None)) as client:
            assert client.get("/healthz").status_code == 200
            t0 = time.perf_counter()
            redis.hold(at_most_s=5)  # Redis hangs: the commands sent are not answered until released
            health = client.get("/healthz")
            r = client.post("/v1/charges/score", json=charge(1))
            assert time.perf_counter() - t0 < 2.0  # each gave up after its 0.4 s timeout
            assert health.status_code == 503
            [problem] = health.json()["problems"]
            assert problem.startswith("the online state does not answer (TimeoutError: Timeout reading")
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "shared online state" in r.json()["error"]["message"]
            redis.release()  # Redis answers again
            assert client.get("/healthz").status_code == 200
            assert client.post("/v1/charges/score", json=charge(1)).status_code == 200  # the retry
    finally:
        scorer.close(snapshot=False)
        redis.close()


def test_payfm_serve_writes_the_access_log_and_serves_metrics(tmp_path: Path) -> None:
    """The command end to end: a real server, a decision, a scrape, its stderr."""
    import http.client
    import signal

    from test_serving_restart import _post, serve_process

    ws = Workspace.open(tmp_path / "ws", create=True)
    key = KeyStore(ws.root / "serving" / "keys.db").create("checkout")
    proc, port = serve_process(ws.root, stderr=tmp_path / "stderr")
    try:
        assert _post(port, key, charge(1, merchant_id="m_body_only"))[0] == 200
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            c.request("GET", "/metrics")
            scraped = c.getresponse().read().decode()
        finally:
            c.close()
        want = 'payfm_http_requests_total{method="POST",route="/v1/charges/score",status="200"} 1.0'
        assert want in scraped.splitlines()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    lines = [x for x in (tmp_path / "stderr").read_text().splitlines() if " payfm.access " in x]
    assert len(lines) >= 3  # health checks, the decision, the scrape
    [decision] = [x for x in lines if "/v1/charges/score" in x]
    assert ' checkout "POST /v1/charges/score" 200 ' in decision
    assert "m_body_only" not in (tmp_path / "stderr").read_text()


def test_a_decision_whose_commit_never_returns_is_a_503_not_a_hung_request(
    scorer: Scorer,
    keyed: tuple[TestClient, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by a review: the score endpoint awaited the decision log's commit without a timeout. An SRE
    then saw the 503s counted with no reason in the log: each is logged on one line."""
    from concurrent.futures import Future

    client, auth = keyed
    stuck: list[Future[Any]] = []

    def submit(record: Any) -> Future[Any]:
        stuck.append(Future())
        return stuck[-1]

    monkeypatch.setattr(scorer.log, "submit", submit)
    monkeypatch.setattr("payfm.serving.scorer._DURABLE_TIMEOUT_S", 0.3)
    t0 = time.perf_counter()
    r = client.post("/v1/charges/score", json=charge(3), headers=auth)
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and time.perf_counter() - t0 < 5
    assert r.json()["error"]["message"].startswith("The decision log did not commit within 0.3 s")
    assert any(
        rec.levelname == "WARNING"
        and "503 of the decision log: The decision log did not commit" in rec.message
        for rec in caplog.records
    ), caplog.text
    stuck[0].set_exception(OSError("the commit failed after all"))  # (its callbacks end the decision)


def test_each_review_route_has_its_own_label_whatever_the_charge_id() -> None:
    """GET /v1/reviews/{charge_id} was counted as `other`, and a charge id ending in /close as the closure:
    a route's label is its template, the method telling the two apart."""
    from payfm.serving.metrics import route_of

    assert route_of("/v1/reviews", "GET") == "/v1/reviews"
    assert route_of("/v1/reviews/ch_1", "GET") == "/v1/reviews/{charge_id}"
    assert route_of("/v1/reviews/x/close", "GET") == "/v1/reviews/{charge_id}"  # the review of 'x/close'
    assert route_of("/v1/reviews/x/close", "POST") == "/v1/reviews/{charge_id}/close"
    assert route_of("/v1/charges/a/b/authorization", "POST") == "/v1/charges/{charge_id}/authorization"
    assert route_of("/v1/nothing", "GET") == "other"
