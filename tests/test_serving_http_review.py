# ruff: noqa: F811 (the tests take the imported `client` and `scorer` fixtures as arguments)
"""What a review of the HTTP layer found (2026-12-07): idle clients without a key held every place in flight
(the service shed everyone else, /healthz said ok); /healthz and /metrics ran in the thread pool that
outcomes waiting for a stalled commit held, and a stalled commit was not a 503; the access log wrote the
client's address unescaped; a body that did not parse was taken by an endpoint that reads none; a number
of 5,000 digits was "not valid JSON (ValueError)"; the score and outcome endpoints read times differently;
an empty decline code was missing on one endpoint and an error on the other."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from payfm.serving.app import Guard
from payfm.serving.metrics import ServiceMetrics
from payfm.serving.scorer import Scorer
from test_serving_outcome_input import client, dispute, error, scorer, ws  # noqa: F401 (fixtures)
from test_serving_reviews import charge


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_client_slow_to_send_its_body_holds_no_place_in_flight_and_gets_a_408() -> None:
    async def run() -> tuple[list[int], int]:
        guard = Guard(_ok, max_in_flight=1, body_timeout_s=0.3)
        statuses: list[int] = []

        async def request(body_never_comes: bool) -> None:
            sent: list[dict[str, Any]] = []
            first = True

            async def receive() -> dict[str, Any]:
                nonlocal first
                if body_never_comes and not first:
                    await asyncio.sleep(60)  # an idle client: the rest of its body never comes
                first = False
                return {
                    "type": "http.request",
                    "body": b"{" if body_never_comes else b"{}",
                    "more_body": body_never_comes,
                }

            async def send(msg: dict[str, Any]) -> None:
                sent.append(msg)

            headers = [(b"content-type", b"application/json")]
            await guard({"type": "http", "path": "/v1/disputes", "headers": headers}, receive, send)
            statuses.append(int(sent[0]["status"]))

        idle = asyncio.create_task(request(body_never_comes=True))
        await asyncio.sleep(0.05)
        in_flight_meanwhile = guard.in_flight
        await request(body_never_comes=False)  # served: the idle one holds no place (max_in_flight=1)
        await idle
        return statuses, in_flight_meanwhile

    statuses, in_flight = asyncio.run(run())
    assert statuses == [200, 408] and in_flight == 0


def test_healthz_and_metrics_answer_while_outcomes_wait_for_a_stalled_commit(
    scorer: Scorer, client: TestClient
) -> None:
    """50 outcomes wait for a commit behind a write lock another process holds on the SQLite log (more than
    the server's thread pool has threads): /healthz answers a 503 naming the stalled write, /metrics
    answers, and everything resumes once the lock is released."""
    assert client.post("/v1/charges/score", json=charge(1)).status_code == 200
    assert client.get("/healthz").status_code == 200
    path = Path(scorer.log.url.removeprefix("sqlite:///"))
    holder = sqlite3.connect(path, timeout=1)
    holder.execute("BEGIN EXCLUSIVE")
    answers: list[int] = []

    def report(i: int) -> None:
        answers.append(client.post("/v1/disputes", json=dispute(f"dp_{i}", "ch_1")).status_code)

    threads = [threading.Thread(target=report, args=(i,), daemon=True) for i in range(50)]
    try:
        for t in threads:
            t.start()
        time.sleep(3)  # the writer has waited past 2 s for its commit
        t0 = time.monotonic()
        health = client.get("/healthz")
        metrics = client.get("/metrics")
        took = time.monotonic() - t0
        assert health.status_code == 503, health.text
        [problem] = health.json()["problems"]
        assert problem.startswith("the decision log has not committed a write for "), problem
        assert metrics.status_code == 200 and "payfm_http_requests_total" in metrics.text
        assert took < 5, took  # (before: no answer until the lock was released)
        assert answers == []  # the outcomes still wait
    finally:
        holder.rollback()
        holder.close()
    for t in threads:
        t.join(40)
    assert len(answers) == 50 and set(answers) == {200}, answers
    assert client.get("/healthz").status_code == 200


def test_the_access_log_escapes_the_client_address(caplog: pytest.LogCaptureFixture) -> None:
    metrics = ServiceMetrics(lambda: {})
    guard = Guard(_ok, metrics=metrics, access_log=True)

    async def run() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(msg: dict[str, Any]) -> None:
            pass

        forged = "6.6.6.6 \x85 forged\x9b2K 4242424242424242"  # (X-Forwarded-For, trusted from a proxy)
        scope = {"type": "http", "path": "/healthz", "method": "GET", "headers": [], "client": (forged, 1)}
        await guard(scope, receive, send)

    with caplog.at_level(logging.INFO, logger="payfm.access"):
        asyncio.run(run())
    [line] = [r.getMessage() for r in caplog.records if r.name == "payfm.access"]
    assert "\x85" not in line and "\x9b" not in line and "4242424242424242" not in line, repr(line)
    assert line.startswith("6.6.6.6 "), repr(line)


def test_a_body_that_does_not_parse_is_refused_where_none_is_read(
    client: TestClient, scorer: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    reloads: list[int] = []
    monkeypatch.setattr(scorer, "reload", lambda: reloads.append(1))
    sent = {"content": b'{"x":', "headers": {"Content-Type": "application/json"}}
    err = error(client.post("/v1/admin/reload", **sent), 422)  # type: ignore[arg-type]
    assert err["message"].startswith("The body is not valid JSON (") and reloads == []
    assert error(client.request("GET", "/v1/reviews", **sent), 422)["type"] == "InvalidInput"  # type: ignore[arg-type]


def test_a_number_of_too_many_digits_is_named() -> None:
    from payfm.serving.app import _parse_body
    from payfm.serving.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"not valid JSON \(a number has more than 4300 digits\)"):
        _parse_body(b'{"amount": ' + b"2" * 5000 + b"}")


@pytest.mark.parametrize("form", ["2026-03-0{}T00:00:00z", "2026030{}T000000Z", "2026-03-0{}T00:00:00+00"])
def test_the_score_and_outcome_endpoints_read_times_alike(client: TestClient, form: str) -> None:
    scored = client.post("/v1/charges/score", json=charge(1, form.format(4)))
    assert scored.status_code == 200, scored.text
    reported = client.post("/v1/disputes", json=dispute("dp_1", "ch_1", created=form.format(5)))
    assert reported.status_code == 200, reported.text


def test_an_empty_decline_code_of_an_authorization_is_missing(client: TestClient) -> None:
    from test_serving_reviews import charge as reviewed

    sent = {k: v for k, v in reviewed(1).items() if k not in ("outcome", "decline_code")}
    assert client.post("/v1/charges/score", json=sent | {"decline_code": ""}).status_code == 200
    answer = client.post(
        "/v1/charges/ch_1/authorization", json={"outcome": "authorized", "decline_code": " "}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["decline_code"] is None and answer.json()["applied"] is True
