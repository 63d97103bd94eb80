"""Requests behind a stalled Redis all get their 503 at about one timeout, however many more there are than
the worker threads (a review: 24 concurrent requests on 2 cores, whose thread pool has 6, got theirs after
10, 20, 30, 40, 50 and 58 s: each batch the pool let in began to wait for the state lock after the call in
flight failed, and asked Redis again). tests/test_redis_state_stall.py sends 6, the pool's size."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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
    ws = Workspace.open(tmp_path_factory.mktemp("stall4x"), create=True)
    ws.write_stream(generate_world(WorldConfig(charges=1_000, days=4, seed=5)), "replace")
    return ws


def test_four_times_the_thread_pool_behind_a_stalled_redis_fail_at_one_timeout(
    world: Workspace, tmp_path: Path, redis_scratch: Any
) -> None:
    import redis
    from fastapi.testclient import TestClient

    from payfm.serving.app import create_app
    from payfm.serving.keys import KeyStore

    pool = ThreadPoolExecutor()._max_workers  # asyncio.to_thread's pool: min(32, cores + 4)
    n = 4 * pool
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

    charges = _new_charges(world, n + 1, "ch_stall4x")
    answers: list[tuple[float, int]] = []
    start = threading.Barrier(n)

    def request(charge: dict[str, Any]) -> None:
        start.wait()
        t0 = time.monotonic()
        answer = http.post("/v1/charges/score", json=charge, headers={"Authorization": f"Bearer {key}"})
        answers.append((time.monotonic() - t0, answer.status_code))

    try:
        store.client.get = stalled
        with http:  # (one event loop, so one thread pool, for every request: without, one loop each)
            threads = [threading.Thread(target=request, args=(c,)) for c in charges[:n]]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
        took = sorted(t for t, _ in answers)
        assert len(answers) == n and {s for _, s in answers} == {503}, answers
        # One call asked the stalled Redis; every request that came while it waited failed with it
        # (before: one more call, and one more timeout, per batch of the pool's threads).
        assert len(asked) == 1, (len(asked), took)
        assert took[-1] < 2 * STALL_S + 1, took
        store.client.get = real_get  # Redis answers again: the next request is decided
        assert scorer.score(charges[n]).charge_id == f"ch_stall4x_{n}"
    finally:
        store.client.get = real_get
        scorer.close(snapshot=False)
