"""Requests do not queue a Redis timeout each behind the scorer's state lock (found by a review: with
redis-server stopped (SIGSTOP) for 45 s, 8 concurrent requests got their 503s after 10.0, 20.1, 30.1,
40.1 s...: each waited its own 10 s timeout in turn, holding the lock). After a call fails on the
connection, the store fails every call of the next moments at once, with the same 503; the first call after
that asks Redis again. However many more requests than worker threads there are (a review: 24 on 2 cores,
whose thread pool has 6, got theirs after 10, 20, ... 58 s: each batch the pool let in began to wait for
the state lock after the call in flight failed, and asked Redis again), all get theirs at one timeout."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
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


@dataclass
class Stalled:
    """A service on a copy of the world whose Redis reads stall ``STALL_S``, then time out (``asked``: when
    each read came); :meth:`burst` sends charges at once, :meth:`answer_again` lets Redis answer."""

    scorer: Scorer
    http: Any
    key: str
    store: Any
    real_get: Any
    asked: list[float] = field(default_factory=list)

    def burst(self, charges: list[dict[str, Any]]) -> list[tuple[float, Any]]:
        """Each of ``charges`` posted from its own thread, all at once: (seconds, response) each."""
        answers: list[tuple[float, Any]] = []
        start = threading.Barrier(len(charges))

        def request(charge: dict[str, Any]) -> None:
            start.wait()
            t0 = time.monotonic()
            headers = {"Authorization": f"Bearer {self.key}"}
            answer = self.http.post("/v1/charges/score", json=charge, headers=headers)
            answers.append((time.monotonic() - t0, answer))

        threads = [threading.Thread(target=request, args=(c,)) for c in charges]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        return answers

    def answer_again(self) -> None:
        self.store.client.get = self.real_get


@contextmanager
def stalled(world: Workspace, tmp_path: Path) -> Iterator[Stalled]:
    import redis
    from fastapi.testclient import TestClient

    from payfm.serving.app import create_app
    from payfm.serving.keys import KeyStore

    ws = Workspace.open(shutil.copytree(world.root, tmp_path / "ws"))
    scorer = Scorer.open(ws, state=REDIS_SCRATCH_URL)
    keys = KeyStore(ws.root / "serving" / "keys.db")
    store: Any = scorer.online.store
    s = Stalled(scorer, TestClient(create_app(scorer, keys)), keys.create("stall"), store, store.client.get)

    def get(*args: Any, **kwargs: Any) -> Any:  # Redis stopped: no answer within the socket timeout
        s.asked.append(time.monotonic())
        time.sleep(STALL_S)
        raise redis.TimeoutError("Timeout reading from socket")

    try:
        store.client.get = get
        yield s
    finally:
        s.answer_again()
        scorer.close(snapshot=False)


def test_requests_behind_a_stalled_redis_fail_at_the_timeout_not_one_timeout_each(
    world: Workspace, tmp_path: Path, redis_scratch: Any
) -> None:
    import redis

    charges = _new_charges(world, 8, "ch_stall")
    with stalled(world, tmp_path) as s:
        answers = s.burst(charges[:6])
        # One request waited the timeout; the five queued on the state lock behind it failed at once with it
        # (before: the k-th failed after k timeouts, 12 s for the last).
        assert len(answers) == 6 and len(s.asked) == 1, (answers, s.asked)
        assert max(took for took, _ in answers) < 2 * STALL_S + 1, sorted(took for took, _ in answers)
        for _, answer in answers:
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "1", answer.text
            error = answer.json()["error"]
            assert error["type"] == "Unavailable" and "shared online state" in error["message"]
        # A request after the failure asks Redis again (still stopped: it waits its own timeout)...
        with pytest.raises(redis.TimeoutError, match="Timeout reading from socket"):
            s.scorer.score(charges[6])
        assert len(s.asked) == 2
        s.answer_again()  # ...and once Redis answers again, the next one is decided
        assert s.scorer.score(charges[7]).charge_id == "ch_stall_7"


def test_four_times_the_thread_pool_behind_a_stalled_redis_fail_at_one_timeout(
    world: Workspace, tmp_path: Path, redis_scratch: Any
) -> None:
    pool = ThreadPoolExecutor()._max_workers  # asyncio.to_thread's pool: min(32, cores + 4)
    n = 4 * pool
    charges = _new_charges(world, n + 1, "ch_stall4x")
    with stalled(world, tmp_path) as s:
        with s.http:  # (one event loop, so one thread pool, for every request: without, one loop each)
            answers = s.burst(charges[:n])
        took = sorted(t for t, _ in answers)
        assert len(answers) == n and {a.status_code for _, a in answers} == {503}, answers
        # One call asked the stalled Redis; every request that came while it waited failed with it
        # (before: one more call, and one more timeout, per batch of the pool's threads).
        assert len(s.asked) == 1, (len(s.asked), took)
        assert took[-1] < 2 * STALL_S + 1, took
        s.answer_again()  # Redis answers again: the next request is decided
        assert s.scorer.score(charges[n]).charge_id == f"ch_stall4x_{n}"
