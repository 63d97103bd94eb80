"""Requests do not queue a Redis timeout each behind the scorer's state lock (found by a review: with
redis-server stopped (SIGSTOP) for 45 s, 8 concurrent requests got their 503s after 10.0, 20.1, 30.1,
40.1 s...: each waited its own 10 s timeout in turn, holding the lock). After a call fails on the
connection, the store fails every call of the next moments at once, with the same 503; the first call after
that asks Redis again."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from payfm.events.workspace import Workspace
from payfm.serving.scorer import Scorer
from payfm.synth import WorldConfig, generate_world
from services import REDIS_SCRATCH_URL
from test_serving_redis_state import _new_charges

STALL_S = 2.0  # the socket timeout of the stalled Redis (10 s by default)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = Workspace.open(tmp_path_factory.mktemp("stall"), create=True)
    ws.write_stream(generate_world(WorldConfig(charges=1_000, days=4, seed=5)), "replace")
    return ws


def test_requests_behind_a_stalled_redis_fail_at_the_timeout_not_one_timeout_each(
    world: Workspace, tmp_path: Path, redis_scratch: Any
) -> None:
    import redis
    from fastapi.testclient import TestClient

    from payfm.serving.app import create_app
    from payfm.serving.keys import KeyStore

    ws = Workspace.open(shutil.copytree(world.root, tmp_path / "ws"))
    scorer = Scorer.open(ws, state=REDIS_SCRATCH_URL)
    keys = KeyStore(ws.root / "serving" / "keys.db")
    http, key = TestClient(create_app(scorer, keys)), keys.create("stall")
    store: Any = scorer.online.store
    real_get = store.client.get
    asked: list[float] = []

    def stalled(*args: Any, **kwargs: Any) -> Any:  # Redis stopped: no answer within the socket timeout
        asked.append(time.monotonic())
        time.sleep(STALL_S)
        raise redis.TimeoutError("Timeout reading from socket")

    charges = _new_charges(world, 8, "ch_stall")
    answers: list[tuple[float, Any]] = []
    start = threading.Barrier(6)

    def request(charge: dict[str, Any]) -> None:
        start.wait()
        t0 = time.monotonic()
        answer = http.post("/v1/charges/score", json=charge, headers={"Authorization": f"Bearer {key}"})
        answers.append((time.monotonic() - t0, answer))

    try:
        store.client.get = stalled
        threads = [threading.Thread(target=request, args=(c,)) for c in charges[:6]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # One request waited the timeout; the five queued on the state lock behind it failed at once with it
        # (before: the k-th failed after k timeouts, 12 s for the last).
        assert len(answers) == 6 and len(asked) == 1, (answers, asked)
        assert max(took for took, _ in answers) < 2 * STALL_S + 1, sorted(took for took, _ in answers)
        for _, answer in answers:
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "1", answer.text
            error = answer.json()["error"]
            assert error["type"] == "Unavailable" and "shared online state" in error["message"]
        # A request after the failure asks Redis again (still stopped: it waits its own timeout)...
        with pytest.raises(redis.TimeoutError, match="Timeout reading from socket"):
            scorer.score(charges[6])
        assert len(asked) == 2
        store.client.get = real_get  # ...and once Redis answers again, the next one is decided
        assert scorer.score(charges[7]).charge_id == "ch_stall_7"
    finally:
        store.client.get = real_get
        scorer.close(snapshot=False)
