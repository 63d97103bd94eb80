"""`Scorer` is a context manager (a notebook user's audit): the end of the block closes it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from payfm.events.workspace import Workspace
from payfm.serving.scorer import Scorer
from payfm.synth import WorldConfig, generate_world


def test_a_with_block_closes_the_scorer_even_when_it_raises(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ws.write_stream(generate_world(WorldConfig(charges=1_000, days=2, seed=3, start=start)))
    closed: list[Scorer] = []
    original = Scorer.close

    def close(self: Scorer, snapshot: bool = True) -> None:
        closed.append(self)
        original(self, snapshot)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Scorer, "close", close)
        with Scorer.open(ws) as scorer:
            assert not closed
        assert closed == [scorer]
        with pytest.raises(RuntimeError, match="boom"), Scorer.open(ws) as again:
            raise RuntimeError("boom")
        assert closed == [scorer, again]
