# ruff: noqa: F811 (the test takes the imported `world` fixture as an argument)
"""Several servers that start together on one empty Redis state (what every following server does after a
promotion, `payfm serve --follow`): one loads the embedders' state from the logs, the others wait for it.
The world and its helpers are tests/test_serving_fm.py's."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from payfm.events.workspace import Workspace
from payfm.serving.scorer import Scorer
from test_serving_fm import REDIS_URL, World, _gap, world  # noqa: F401 (world: the module's fixture)


def test_three_servers_starting_at_once_on_an_empty_redis_load_it_once_and_embed_as_one(
    world: World, tmp_path: Path, redis_scratch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a promotion every server following the workspace warms the new embedder at the same moment
    (payfm serve --follow): three start together on one empty Redis state; one loads it from the logs, the
    others wait for it, and their decisions in turn embed as the offline job does."""
    from concurrent.futures import ThreadPoolExecutor

    from payfm.fm.online_state import RedisState

    loads: list[str] = []
    real_load = RedisState.load

    def load(state: RedisState, *args: Any, **kwargs: Any) -> None:
        loads.append(state.ns)
        real_load(state, *args, **kwargs)

    monkeypatch.setattr(RedisState, "load", load)

    roots = [shutil.copytree(world.serve.root, tmp_path / n) for n in "abc"]
    for root in roots:  # (each copy's own decision log made first, as _alternate does)
        Scorer.open(Workspace.open(root)).close(snapshot=False)
    start = threading.Barrier(3)

    def opened(root: Path) -> Scorer:
        start.wait()
        return Scorer.open(Workspace.open(root), state=REDIS_URL)

    with ThreadPoolExecutor(3) as pool:
        scorers = list(pool.map(opened, roots))
    try:
        assert len(loads) == 1  # by one of them, the others waiting for it
        assert redis_scratch.exists(*redis_scratch.scan_iter("payfm:fm:*:warm")) == 1
        diffs = [_gap(world, scorers[i % 3].score(c), world.fm) for i, c in enumerate(world.live)]
        assert max(diffs) < 1e-5
    finally:
        for s in scorers:
            s.close(snapshot=False)
