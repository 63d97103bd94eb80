"""Time splits leak nothing across periods; immature labels never train; downsampling weights are unbiased."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.registry import Registry
from payfm.synth import WorldConfig, generate_world
from payfm.training.splits import US_PER_DAY, downsample_negatives, prequential_splits, time_split


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(50, 2000),
    span_days=st.floats(40, 200),
    gap=st.floats(0, 10),
    seed=st.integers(0, 10_000),
)
def test_no_charge_of_a_later_split_before_the_gap(n: int, span_days: float, gap: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    created = rng.integers(0, int(span_days * US_PER_DAY), n)
    mature = rng.random(n) < 0.7
    s = time_split(created, mature, val_days=7, test_days=7, gap_days=gap)
    g = int(gap * US_PER_DAY)
    parts = [created[s.train], created[s.val], created[s.test]]
    for early, late in ((parts[0], parts[1]), (parts[1], parts[2]), (parts[0], parts[2])):
        if len(early) and len(late):
            assert early.max() + g < late.min() or (g == 0 and early.max() < late.min())
    assert not set(s.train) & set(s.val) and not set(s.val) & set(s.test)
    assert mature[s.train].all() and mature[s.val].all()  # only mature labels train or validate
    in_train = created < s.bounds["train"][1]
    assert s.immature["train"] == int((in_train & ~mature).sum())
    assert set(s.test) == set(np.flatnonzero(created >= s.bounds["test"][0]))  # test keeps immature rows


def test_periods_have_the_asked_lengths_and_gaps() -> None:
    created = np.arange(0, 60 * US_PER_DAY, US_PER_DAY // 24)
    s = time_split(created, np.ones(len(created), bool), val_days=10, test_days=5, gap_days=3)
    (tr0, tr1), (v0, v1), (t0, t1) = s.bounds["train"], s.bounds["val"], s.bounds["test"]
    assert (t1 - t0, v1 - v0) == (5 * US_PER_DAY, 10 * US_PER_DAY)
    assert (t0 - v1, v0 - tr1) == (3 * US_PER_DAY, 3 * US_PER_DAY)
    assert len(s.train) == -(-(tr1 - tr0) // (US_PER_DAY // 24))  # every hourly charge before the cut


def test_too_short_a_history_is_a_clear_error() -> None:
    created = np.arange(0, 20 * US_PER_DAY, US_PER_DAY)
    with pytest.raises(ConfigError, match="leave no training period"):
        time_split(created, np.ones(20, bool), val_days=7, test_days=7, gap_days=7)


def test_prequential_splits_are_the_time_splits_of_the_last_weeks_before_the_mature_end() -> None:
    """Each week is a time split that ends with it (validation and training before it, less the gaps,
    mature rows only); the weeks end at ``end_us`` (a label horizon before the as-of), not at the last row,
    whose weeks' labels are not mature yet."""
    created = np.arange(0, 70 * US_PER_DAY, US_PER_DAY // 4)
    mature = np.ones(len(created), bool)
    mature[::5] = False
    end = 60 * US_PER_DAY
    folds = prequential_splits(created, mature, weeks=4, end_us=end, val_days=7, gap_days=2)
    assert [f.bounds["test"] for f in folds] == [
        (end - k * 7 * US_PER_DAY, end - (k - 1) * 7 * US_PER_DAY) for k in (4, 3, 2, 1)
    ]  # oldest first, weekly, to the end
    for f in folds:
        assert created[f.train].max() + 2 * US_PER_DAY <= created[f.val].min()
        assert created[f.val].max() + 2 * US_PER_DAY <= created[f.test].min()
        assert mature[f.train].all() and mature[f.val].all()
        assert created[f.test].min() >= f.bounds["test"][0] and created[f.test].max() < f.bounds["test"][1]
    assert prequential_splits(created, mature, weeks=1)[0].bounds["test"][1] == created.max() + 1  # no end
    with pytest.raises(
        ConfigError,
        match=r"Prequential week 1 of 9 \(from 1970-01-05T00:00:00\+00:00\): The "
        r"time split needs more data",
    ):
        prequential_splits(created, mature, weeks=9, end_us=end + 7 * US_PER_DAY, val_days=7, gap_days=2)


def test_downsampling_keeps_positives_and_reweights_negatives() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(100_000) < 0.01).astype(int)
    idx, w = downsample_negatives(y, 0.1, seed=1)
    assert y[idx].sum() == y.sum()
    assert (w[y[idx] == 1] == 1).all() and np.allclose(w[y[idx] == 0], 10)
    assert abs(w[y[idx] == 0].sum() - (y == 0).sum()) / (y == 0).sum() < 0.02
    assert (np.diff(idx) > 0).all()
    with pytest.raises(ConfigError, match=r"in \(0, 1\]"):
        downsample_negatives(y, 0.0)


def test_an_early_end_leaves_the_too_recent_rows_out_of_every_part() -> None:
    created = np.arange(0, 60 * US_PER_DAY, US_PER_DAY // 24)
    end = 40 * US_PER_DAY
    s = time_split(created, np.ones(len(created), bool), val_days=7, test_days=7, gap_days=2, end_us=end)
    used = np.concatenate([s.train, s.val, s.test])
    assert created[used].max() < end and s.bounds["test"] == (33 * US_PER_DAY, end)
    assert s.too_recent == int((created >= end).sum()) == 20 * 24


def test_a_warm_up_leaves_the_logs_first_days_out_of_training_only() -> None:
    created = np.arange(0, 60 * US_PER_DAY, US_PER_DAY // 24)
    mature = np.ones(len(created), bool)
    plain = time_split(created, mature, val_days=10, test_days=5, gap_days=3)
    s = time_split(created, mature, val_days=10, test_days=5, gap_days=3, warm_up_days=12.5)
    assert created[s.train].min() == 12.5 * US_PER_DAY and s.bounds["train"][0] == 12.5 * US_PER_DAY
    assert s.warm_up == 12.5 * 24 == len(plain.train) - len(s.train)  # each hourly charge of the warm-up
    assert (s.bounds["val"], s.bounds["test"]) == (plain.bounds["val"], plain.bounds["test"])
    assert (list(s.val), list(s.test)) == (list(plain.val), list(plain.test))
    with pytest.raises(
        ConfigError, match=r"warm-up of 39 days leaves no training period: .* only 39\.0 days"
    ):
        time_split(created, mature, val_days=10, test_days=5, gap_days=3, warm_up_days=39)
    with pytest.raises(ConfigError, match="'warm_up_days' of the time split must be a number of days in"):
        time_split(created, mature, warm_up_days=-1)


def test_train_warm_up_days_is_recorded_with_the_model_and_said(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=20_000, days=40, seed=5, fraud_rate=0.03)), "replace")
    split = [
        "--set",
        "tiny",
        "--horizon-days",
        "10",
        "--val-days",
        "7",
        "--test-days",
        "7",
        "--gap-days",
        "3",
    ]
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "train", *split, "--warm-up-days", "4"])
    assert r.exit_code == 0, r.output
    [entry] = [v.entry for v in Registry(ws).list()]
    first = ws.connect().execute("SELECT min(created) FROM charges").fetchone()[0]
    assert entry["training"]["warm_up_days"] == 4
    assert datetime.fromisoformat(entry["data_window"]["train_start"]) == first + timedelta(days=4)
    warmed = entry["split"]["warm_up"]
    assert warmed > 1000 and f"{warmed:,} in the 4-day warm-up" in " ".join(r.output.split())
    # prequential evaluation (Python) leaves the warm-up out of each fold's fit too, and refuses one that
    # leaves a week's fit no training period
    from payfm.features.catalog import tiny_set
    from payfm.training.tasks import task
    from payfm.training.trainer import TrainConfig, prequential

    def weeks(warm_up: float) -> int:
        config = TrainConfig(horizon_days=10, val_days=7, gap_days=3, warm_up_days=warm_up)
        return len(prequential(ws, "lr", task("fraud"), tiny_set(), config, weeks=1))

    assert weeks(0) == weeks(4) == 1
    with pytest.raises(
        ConfigError, match=r"Prequential week 1 of 1 .*: The warm-up of 30 days leaves no trai"
    ):
        weeks(30)
    too_long = CliRunner().invoke(cli, ["-w", str(ws.root), "train", *split, "--warm-up-days", "12"])
    assert too_long.exit_code == 1 and "Traceback" not in too_long.output
    assert "Use a shorter --warm-up-days or a longer event log" in " ".join(too_long.output.split())
