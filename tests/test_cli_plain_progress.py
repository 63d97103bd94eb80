"""Progress where stderr is no terminal (a log, CI): `fm evaluate` (2 minutes) and `fm pretrain` printed
nothing until they ended (found by an ML engineer running them under a job scheduler). A long stage now says
where it is in plain lines; a quick one says nothing."""

from __future__ import annotations

import pytest

from payfm.cli import render
from payfm.cli.render import _PlainProgress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_long_stage_says_where_it_is_and_a_quick_one_says_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = Clock()
    update = _PlainProgress(clock)
    update("features", 0, 4)
    clock.now = 5.0
    update("features", 4, 4)  # done in 5 s: nothing to say
    update("GBDT fits", 0, 8)
    for t, done in ((9.0, 1), (16.0, 2), (30.0, 3), (47.0, 5), (60.0, 6), (80.0, 8)):
        clock.now = t
        update("GBDT fits", done, 8)
    assert capsys.readouterr().err.splitlines() == [
        "GBDT fits: 2/8 (11 s)",  # first after 10 s,
        "GBDT fits: 5/8 (42 s)",  # then every 30 s,
        "GBDT fits: 8/8 (75 s)",  # and when it ends
    ]


def test_the_training_loop_reports_its_loss_in_plain_lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(render.time, "monotonic", clock)
    with render.loss_progress("pretraining") as update:
        update(0, 100, float("nan"))
        clock.now = 12.0
        update(40, 100, 2.5)
        clock.now = 20.0
        update(100, 100, 1.25)
    assert capsys.readouterr().err.splitlines() == [
        "pretraining: 40/100, loss 2.500 (12 s)",
        "pretraining: 100/100, loss 1.250 (20 s)",
    ]
