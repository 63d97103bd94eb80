"""Threshold presets, bootstrap intervals and breakdowns: hand-computed examples, brute-force references."""

from __future__ import annotations

import numpy as np
import pytest

from payfm.evaluation.bootstrap import bootstrap, percentile_interval, proportion_interval
from payfm.evaluation.checks import EvaluationError
from payfm.evaluation.metrics import average_precision, average_precision_from, binary_counts, roc_auc_from
from payfm.evaluation.slices import MERCHANT_SIZE_NAMES, group_labels, merchant_size, slice_table
from payfm.evaluation.thresholds import BALANCE, Preset, choose

Y = np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 0])
S = np.array([0.9, 0.8, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])


def test_protection_preset_blocks_at_most_the_budget() -> None:
    p = choose(Preset("p", "block_rate", 0.3), binary_counts(Y, S))
    assert (p.threshold, p.flagged, p.caught) == (0.8, 3, 2)


def test_balance_preset_maximizes_f1_against_a_brute_force_search() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(int)
    s = np.round(rng.random(400) * 0.6 + 0.3 * y, 2)
    f1 = {t: 2 * np.sum((s >= t) & (y == 1)) / (np.sum(s >= t) + np.sum(y == 1)) for t in np.unique(s)}
    best = max(f1.values())
    p = choose(BALANCE, binary_counts(y, s))
    assert 2 * p.precision * p.recall / (p.precision + p.recall) == pytest.approx(best)
    assert p.threshold == max(t for t, v in f1.items() if v == best)


def test_revenue_preset_is_the_highest_threshold_reaching_the_recall() -> None:
    p = choose(Preset("r", "min_recall", 0.75), binary_counts(Y, S))
    assert (p.threshold, p.recall, p.false_positives) == (0.7, 0.75, 1)
    p = choose(Preset("r", "min_recall", 1.0), binary_counts(Y, S))
    assert (p.threshold, p.recall) == (0.4, 1.0)


def test_fixed_preset_uses_the_threshold_as_is() -> None:
    p = choose(Preset("f", "fixed", 0.65), binary_counts(Y, S))
    assert (p.threshold, p.flagged, p.caught) == (0.7, 4, 3)  # the lowest score >= 0.65
    assert choose(Preset("f", "fixed", 0.95), binary_counts(Y, S)).flagged == 0


def test_presets_validate_their_values() -> None:
    with pytest.raises(EvaluationError, match=r"must be in \(0, 1\]. Got 1.5"):
        Preset("p", "block_rate", 1.5)
    with pytest.raises(EvaluationError, match="must be block_rate, max_f1, min_recall or fixed"):
        Preset("p", "best", 0.1)  # type: ignore[arg-type]


def test_bootstrap_is_seeded_and_brackets_the_point_estimate() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(3000) < 0.05).astype(int)
    s = np.clip(rng.normal(0.2 + 0.3 * y, 0.15), 0, 1)
    fns = {"ap": average_precision_from, "auc": roc_auc_from}
    a = bootstrap(fns, y, s, resamples=100, seed=7)
    b = bootstrap(fns, y, s, resamples=100, seed=7)
    c = bootstrap(fns, y, s, resamples=100, seed=8)
    assert a == b and a != c
    assert a["ap"].low < average_precision(y, s) < a["ap"].high
    assert a["ap"].resamples == 100 and a["ap"].level == 0.95


def test_bootstrap_matches_an_explicit_resampling_loop() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(300) < 0.2).astype(int)
    s = rng.random(300)
    ours = bootstrap({"ap": average_precision_from}, y, s, resamples=30, seed=3)["ap"]
    order = np.argsort(-s, kind="stable")
    ys, ss = y[order], s[order]
    draw = np.random.default_rng(3)
    values = [average_precision(ys[i], ss[i]) for i in (draw.integers(0, 300, 300) for _ in range(30))]
    expected = np.percentile(values, [2.5, 97.5])
    assert (ours.low, ours.high) == pytest.approx(tuple(expected))


def test_bootstrap_skips_resamples_without_fraud() -> None:
    iv = bootstrap(
        {"ap": average_precision_from}, [1] + [0] * 49, np.linspace(0, 1, 50), resamples=60, seed=0
    )
    assert 0 < iv["ap"].resamples < 60  # about (49/50)^50 = 36% of resamples draw no fraud


def test_interval_helpers_and_errors() -> None:
    assert percentile_interval([1.0, 2.0, 3.0, float("nan")], 0.5).resamples == 3
    assert np.isnan(proportion_interval(0, 0, rng=np.random.default_rng(0)).low)
    iv = proportion_interval(30, 100, resamples=2000, rng=np.random.default_rng(0))
    assert iv.low == pytest.approx(0.21, abs=0.02) and iv.high == pytest.approx(0.39, abs=0.02)
    with pytest.raises(EvaluationError, match=r"resamples >= 1\. Got 0"):
        bootstrap({"ap": average_precision_from}, [0, 1], [0.1, 0.2], resamples=0)


def test_slice_table_counts_and_recall_per_group() -> None:
    codes, names = group_labels(["a", "a", "b", None, "a", "b"])
    y = np.array([1.0, 1, 1, 0, 0, 0])
    flagged = np.array([True, False, True, True, True, False])
    rows = {
        r.group: r
        for r in slice_table("x", codes, names, y, flagged, rng=np.random.default_rng(0), resamples=50)
    }
    assert (rows["a"].charges, rows["a"].fraud, rows["a"].caught, rows["a"].recall) == (3, 2, 1, 0.5)
    assert rows["a"].precision == 0.5 and rows["a"].block_rate == pytest.approx(2 / 3)
    assert rows["b"].recall == 1.0 and rows["b"].recall_low == rows["b"].recall_high == 1.0
    assert np.isnan(rows["(none)"].recall) and rows["(none)"].precision == 0.0
    assert rows["a"].recall_low <= 0.5 <= rows["a"].recall_high


def test_merchant_size_buckets_by_charge_count() -> None:
    ids = ["big"] * 1000 + ["mid"] * 150 + ["tiny"] * 3
    codes, names = merchant_size(ids)
    sizes = [names[c] for c in codes]
    assert sizes[0] == MERCHANT_SIZE_NAMES[2] and sizes[1000] == MERCHANT_SIZE_NAMES[1]
    assert sizes[-1] == MERCHANT_SIZE_NAMES[0]


def test_bootstrap_by_groups_matches_an_explicit_loop_over_groups() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(300) < 0.2).astype(int)
    s = rng.random(300)
    groups = rng.integers(100, 160, 300)  # 60 incidents, ids need not start at 0
    ours = bootstrap({"ap": average_precision_from}, y, s, resamples=30, seed=4, groups=groups)["ap"]
    ids, inverse = np.unique(groups, return_inverse=True)
    draw = np.random.default_rng(4)
    values = []
    for _ in range(30):
        per_group = np.bincount(draw.integers(0, len(ids), len(ids)), minlength=len(ids))
        w = per_group[inverse].astype(float)
        if (w * y).sum() > 0 and (w * (1 - y)).sum() > 0:
            values.append(average_precision(y, s, sample_weight=w))
    assert (ours.low, ours.high) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])))
    with pytest.raises(EvaluationError, match=r"one id per charge \(300\)\. Got \(299,\)"):
        bootstrap({"ap": average_precision_from}, y, s, groups=groups[:-1])
