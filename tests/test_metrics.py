"""Metrics against scikit-learn and hand-computed examples, including ties, weights and edge cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from payfm.evaluation.calibration import brier_score, expected_calibration_error, reliability_curve
from payfm.evaluation.checks import EvaluationError
from payfm.evaluation.curves import dollar_curve, pr_curve, score_histogram
from payfm.evaluation.curves import roc_curve as payfm_roc_curve
from payfm.evaluation.metrics import (
    average_precision,
    binary_counts,
    card_precision_at_k,
    precision_at_block_rate,
    recall_at_fpr,
    roc_auc,
)


def _data(n: int = 3000, seed: int = 0, decimals: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.05).astype(int)
    s = np.round(1 / (1 + np.exp(-(rng.normal(-3, 1, n) + 2 * y))), decimals)  # rounding makes many ties
    return y, s


def test_roc_auc_and_average_precision_match_sklearn_with_ties_and_weights() -> None:
    y, s = _data()
    w = np.random.default_rng(1).random(y.size)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert roc_auc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert average_precision(y, s, w) == pytest.approx(
        average_precision_score(y, s, sample_weight=w), abs=1e-12
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6)), min_size=2, max_size=40).filter(
        lambda rows: len({r[0] for r in rows}) == 2
    )
)
def test_property_auc_and_ap_match_sklearn_on_heavily_tied_scores(rows: list[tuple[int, int]]) -> None:
    y = np.array([r[0] for r in rows])
    s = np.array([r[1] / 6 for r in rows])
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_hand_computed_auc_and_ap() -> None:
    # order by score: 1 (0.8), 0 (0.4), 1 (0.35), 0 (0.1); AP = 1/2 * 1 + 1/2 * 2/3
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)
    # a tie between a fraud and a legitimate charge counts one half
    assert roc_auc([1, 0], [0.5, 0.5]) == 0.5


def test_curves_match_sklearn_points() -> None:
    y, s = _data(decimals=3)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    ours = payfm_roc_curve(y, s, max_points=10**6)
    np.testing.assert_allclose(ours.x, fpr, atol=1e-12)
    np.testing.assert_allclose(ours.y, tpr, atol=1e-12)
    np.testing.assert_allclose(ours.thresholds[1:], thr[1:])
    p, r, t = precision_recall_curve(y, s)
    sk = {round(float(ti), 9): (pi, ri) for pi, ri, ti in zip(p[:-1], r[:-1], t, strict=True)}
    pr = pr_curve(y, s, max_points=10**6)
    assert len(pr.thresholds) == len(sk)
    for ti, ri, pi in zip(pr.thresholds, pr.x, pr.y, strict=True):
        assert sk[round(ti, 9)] == pytest.approx((pi, ri), abs=1e-12)


def test_thinned_curves_keep_both_ends() -> None:
    y, s = _data(decimals=6)
    c = payfm_roc_curve(y, s, max_points=50)
    assert len(c.x) <= 50
    assert (c.x[0], c.y[0]) == (0.0, 0.0)
    assert (c.x[-1], c.y[-1]) == (1.0, 1.0)


def _brute_recall_at_fpr(y: np.ndarray, s: np.ndarray, max_fpr: float) -> float:
    best = 0.0
    for t in np.unique(s):
        flag = s >= t
        if np.sum(flag & (y == 0)) / np.sum(y == 0) <= max_fpr:
            best = max(best, np.sum(flag & (y == 1)) / np.sum(y == 1))
    return float(best)


@pytest.mark.parametrize("max_fpr", [0.001, 0.01, 0.1])
def test_recall_at_fpr_matches_a_brute_force_search(max_fpr: float) -> None:
    y, s = _data(n=2000, decimals=3)
    assert recall_at_fpr(y, s, max_fpr) == pytest.approx(_brute_recall_at_fpr(y, s, max_fpr))


def test_recall_at_fpr_is_zero_when_the_top_tie_group_has_too_many_false_positives() -> None:
    assert recall_at_fpr([1, 0, 0, 0], [0.9, 0.9, 0.1, 0.1], 0.1) == 0.0


def test_precision_at_block_rate_hand_computed_and_ties_never_split() -> None:
    y = [1, 1, 0, 1, 0, 0, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.8, 0.7, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    p = precision_at_block_rate(y, s, 0.2)  # 2 of 10 allowed, but 0.8 is tied: only the top 1 can be flagged
    assert (p.threshold, p.flagged, p.precision) == (0.9, 1, 1.0)
    assert p.recall == pytest.approx(1 / 3)
    p = precision_at_block_rate(y, s, 0.4)  # scores >= 0.7 flag 4 charges, 3 fraudulent
    assert (p.threshold, p.flagged, p.precision, p.recall, p.block_rate) == (0.7, 4, 0.75, 1.0, 0.4)
    # the top tie group alone exceeds the budget: no threshold honours it; the point is that group, over it
    top = precision_at_block_rate([1, 0], [0.5, 0.5], 0.1)
    assert (top.threshold, top.flagged, top.precision, top.block_rate) == (0.5, 2, 0.5, 1.0)


def test_card_precision_at_k_hand_computed() -> None:
    # day 0: cards a (max 0.9, fraud), b (0.8), c (0.7, fraud). day 1: a (0.2), d (0.95, fraud)
    y = [1, 0, 0, 0, 1, 0, 1]
    s = [0.9, 0.1, 0.8, 0.7, 0.3, 0.2, 0.95]
    day = [0, 0, 0, 0, 0, 1, 1]
    card = ["a", "a", "b", "c", "c", "a", "d"]
    cp = card_precision_at_k(y, s, day, card, k=2)
    assert cp.per_day == {"1970-01-01": 0.5, "1970-01-02": 0.5}  # top 2 {a, b}: 1 hit; {d, a}: 1 hit
    assert cp.mean == 0.5
    # k larger than the cards of a day: hits are still divided by k (Handbook)
    assert card_precision_at_k(y, s, day, card, k=4).per_day == {"1970-01-01": 0.5, "1970-01-02": 0.25}
    # the best a perfect ranking reaches: day 0 has 2 fraud cards (a, c), day 1 one (d)
    assert cp.best == (2 / 2 + 1 / 2) / 2
    assert card_precision_at_k(y, s, day, card, k=4).best == (2 / 4 + 1 / 4) / 2
    perfect = card_precision_at_k(y, [float(v) for v in y], day, card, k=2)
    assert perfect.mean == perfect.best


def test_card_precision_at_k_matches_a_per_day_brute_force() -> None:
    rng = np.random.default_rng(3)
    n = 800
    y, s = (rng.random(n) < 0.1).astype(int), rng.random(n)
    day, card = rng.integers(0, 5, n), rng.integers(0, 60, n).astype(str)
    expected = []
    for d in range(5):
        m = day == d
        best: dict[str, tuple[float, int]] = {}
        for c, sc, yy in zip(card[m], s[m], y[m], strict=True):
            old = best.get(c, (-1.0, 0))
            best[c] = (max(old[0], sc), max(old[1], yy))
        top = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:10]
        expected.append(sum(v[1] for _, v in top) / 10)
    assert card_precision_at_k(y, s, day, card, k=10).mean == pytest.approx(np.mean(expected))


def test_card_precision_at_k_shares_the_places_left_among_tied_cards() -> None:
    """Found by an audit: cards tied across the k-th place were taken in card order, so the figure
    depended on card names (string cards) or codes (order of appearance, evaluate_predictions): 0 or 1 for
    the same data. Now it is the mean over every order of the tied cards, whatever their names."""
    rng = np.random.default_rng(5)
    n = 60
    y, s = (rng.random(n) < 0.3).astype(int), rng.choice([0.2, 0.5, 0.5, 0.9], n)  # heavy ties
    day, card = rng.integers(0, 3, n), rng.integers(0, 14, n)
    k = 4
    expected = []
    for d in range(3):
        best: dict[int, tuple[float, int]] = {}
        for c, sc, yy in zip(card[day == d], s[day == d], y[day == d], strict=True):
            old = best.get(int(c), (-1.0, 0))
            best[int(c)] = (max(old[0], float(sc)), max(old[1], int(yy)))
        ranked = sorted(best.values(), key=lambda v: -v[0])
        above = [v for v in ranked if v[0] > ranked[min(k, len(ranked)) - 1][0]]
        tied = [v for v in ranked if v[0] == ranked[min(k, len(ranked)) - 1][0]]
        left = min(k, len(ranked)) - len(above)
        # every order of the tied cards: the mean number of frauds among the first `left` of them
        orders = list(itertools.permutations(range(len(tied)))) if len(tied) <= 7 else None
        assert orders is not None
        in_ties = np.mean([sum(tied[i][1] for i in o[:left]) for o in orders])
        expected.append((sum(v[1] for v in above) + in_ties) / k)
    got = card_precision_at_k(y, s, day, card, k=k)
    assert got.mean == pytest.approx(np.mean(expected))
    renamed = card_precision_at_k(
        y, s, day, [f"z{99 - c:02d}" for c in card], k=k
    )  # other names, other order
    assert renamed.per_day == pytest.approx(got.per_day)
    # three cards tied for the one place, one of them fraudulent: a third of a hit, whatever comes first
    for cards in (["a", "b", "c", "d"], ["c", "b", "a", "d"]):
        assert card_precision_at_k([1, 0, 0, 0], [0.5, 0.5, 0.5, 0.1], [0] * 4, cards, k=1).mean == 1 / 3


def test_dollar_curve_matches_brute_force_sums() -> None:
    y, s = _data(n=500, decimals=2)
    amount = np.random.default_rng(2).lognormal(4, 1, y.size)
    d = dollar_curve(y, s, amount, max_points=10**6)
    for t, caught, blocked in zip(d.thresholds, d.fraud_caught_usd, d.legit_blocked_usd, strict=True):
        assert caught == pytest.approx(amount[(s >= t) & (y == 1)].sum())
        assert blocked == pytest.approx(amount[(s >= t) & (y == 0)].sum())
    assert d.fraud_total_usd == pytest.approx(amount[y == 1].sum())


def test_reliability_and_brier_match_sklearn_and_ece_is_hand_computed() -> None:
    y, s = _data()
    r = reliability_curve(y, s, n_bins=10)
    prob_true, prob_pred = calibration_curve(y, s, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(r.fraction_positive, prob_true)
    np.testing.assert_allclose(r.mean_predicted, prob_pred)
    assert brier_score(y, s) == pytest.approx(brier_score_loss(y, s))
    # bins (0, .5] and (.5, 1]: {0.2, 0.4} with y {0, 1}: |0.5 - 0.3|; {0.9} with y 1: |1 - 0.9|
    assert expected_calibration_error([0, 1, 1], [0.2, 0.4, 0.9], n_bins=2) == pytest.approx(
        2 / 3 * 0.2 + 1 / 3 * 0.1
    )
    # a score on a bin edge goes to the lower bin, as in scikit-learn
    assert reliability_curve([0, 1], [0.5, 1.0], n_bins=2).count == [1, 1]


def test_score_histogram_densities_integrate_to_one() -> None:
    y, s = _data()
    h = score_histogram(y, s, bins=20)
    width = 1 / 20
    assert sum(h.fraud) * width == pytest.approx(1.0)
    assert sum(h.legit) * width == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("y", "s", "message"),
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "at least one fraudulent and one legitimate"),
        ([1, 1], [0.1, 0.2], "at least one fraudulent and one legitimate"),
        ([], [], "at least one charge"),
        ([0, 1], [0.1], "as many scores as labels"),
        ([0, 2], [0.1, 0.2], r"labels in \{0, 1\}\. Got 2\.0 at position 1\.$"),  # not np.float64(2.0)
        ([0, 1], [0.1, float("nan")], r"finite scores\. Got nan at position 1\.$"),
    ],
)
def test_degenerate_inputs_raise_clear_errors(y: list[int], s: list[float], message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        roc_auc(y, s)
    with pytest.raises(EvaluationError, match=message):
        average_precision(y, s)


def test_calibration_rejects_scores_outside_zero_one() -> None:
    with pytest.raises(EvaluationError, match=r"scores in \[0, 1\]. Got a range of \[0.1, 1.5\]"):
        expected_calibration_error([0, 1], [0.1, 1.5])


def test_counts_sum_to_class_totals() -> None:
    c = binary_counts([1, 0, 1, 0], [0.3, 0.3, 0.9, 0.1])
    assert c.thresholds.tolist() == [0.9, 0.3, 0.1]
    assert c.tps.tolist() == [1, 2, 2] and c.fps.tolist() == [0, 1, 2]
