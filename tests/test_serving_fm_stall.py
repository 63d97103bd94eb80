# ruff: noqa: F811 (the test takes the imported `world` fixture as an argument)
"""A foundation-model embedder's Redis calls go through the breaker the features' store uses
(payfm.redis_breaker): a stall in one fails the requests queued behind it together."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from payfm.events.workspace import Workspace
from payfm.serving.scorer import Scorer
from test_serving_fm import REDIS_URL, World, world  # noqa: F401 (world: the module's fixture)


def test_requests_behind_an_embedder_call_that_stalled_fail_with_it(
    world: World, tmp_path: Path, redis_scratch: Any
) -> None:
    """Found by a review: the embedder's Redis calls, made under the scorer's state lock as the features'
    are, did not go through the breaker (payfm.redis_breaker): with its state's Redis stalled, each queued
    request passed the features' call and then waited its own timeout on the embedder's, in turn."""
    import threading
    import time

    import redis

    from payfm.fm.online_state import RedisState

    stall_s = 1.5
    scorer = Scorer.open(Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws")), state=REDIS_URL)
    (embedder,) = scorer.bundle.embedders.values()
    store = embedder.store
    assert isinstance(store, RedisState)
    asked: list[float] = []

    class Stalled:  # a pipeline to a Redis that stopped answering: no reply within the socket timeout
        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: self

        def execute(self) -> Any:
            asked.append(time.monotonic())
            time.sleep(stall_s)
            raise redis.TimeoutError("Timeout reading from socket")

    real = store.client.pipeline
    failed: list[tuple[float, BaseException]] = []
    start = threading.Barrier(4)

    def decide(charge: dict[str, Any]) -> None:
        start.wait()
        t0 = time.monotonic()
        try:
            scorer.score(charge)
        except Exception as e:
            failed.append((time.monotonic() - t0, e))

    try:
        store.client.pipeline = lambda *args, **kwargs: Stalled()  # type: ignore[method-assign]
        threads = [threading.Thread(target=decide, args=(c,)) for c in world.live[:4]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # one request waited the timeout; the three queued behind it failed with it (before: one each)
        assert len(failed) == 4 and len(asked) == 1, (failed, asked)
        assert all(isinstance(e, redis.TimeoutError) for _, e in failed), failed
        assert max(took for took, _ in failed) < 2 * stall_s + 1, sorted(took for took, _ in failed)
        store.client.pipeline = real  # type: ignore[method-assign]
        assert scorer.score(world.live[4]).charge_id == world.live[4]["charge_id"]  # asked again: answers
    finally:
        store.client.pipeline = real  # type: ignore[method-assign]
        scorer.close(snapshot=False)
