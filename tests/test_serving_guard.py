"""Load shedding by the Guard middleware: requests in flight and event-loop queueing delay, and recovery."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from payfm.serving.app import Guard


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _status(guard: Guard, path: str = "/v1/charges/score") -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    headers = [(b"content-type", b"application/json")]
    await guard({"type": "http", "path": path, "headers": headers}, receive, send)
    return int(sent[0]["status"])


def test_a_saturated_event_loop_sheds_with_503_and_recovers() -> None:
    async def run() -> list[int]:
        guard = Guard(_app, max_lag_ms=100)
        out = [await _status(guard)]  # schedules a probe
        time.sleep(0.3)  # the loop is busy (a CPU-bound backlog): the probe waits behind it
        await asyncio.sleep(0)  # the probe runs and measures >= 300 ms of queueing
        out.append(await _status(guard))
        out.append(await _status(guard, "/healthz"))  # health checks are never shed
        await asyncio.sleep(0)  # a fresh probe on an idle loop: no delay
        out.append(await _status(guard))
        return out

    assert asyncio.run(run()) == [200, 503, 200, 200]


def test_requests_beyond_the_in_flight_bound_are_shed() -> None:
    async def run() -> tuple[int, int]:
        guard = Guard(_app, max_in_flight=1)
        guard.in_flight = 1  # one request is being decided
        return await _status(guard), guard.shed

    assert asyncio.run(run()) == (503, 1)


def test_a_lone_clients_slow_decision_does_not_shed_its_next_request() -> None:
    """Found by an SRE audit: one client, one request at a time, got a 503 after each decision over the
    bound (54-141 ms): the probe scheduled as a request arrived waited for that request's own decision,
    which runs in the loop, and read it as queueing."""

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        time.sleep(0.15)  # a decision that holds the loop, as the score endpoint's does
        await _app(scope, receive, send)

    async def run() -> list[int]:
        guard = Guard(slow, max_lag_ms=100)
        out = []
        for _ in range(3):
            out.append(await _status(guard))
            await asyncio.sleep(0)  # the client's next request comes later: the probe runs first
        return out

    assert asyncio.run(run()) == [200, 200, 200]
