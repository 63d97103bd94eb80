"""Ranking metrics for fraud scores: ROC AUC, average precision, recall at a false-positive rate, and the
operating point at a block-rate budget. Pure functions over numpy arrays; they agree with scikit-learn.

A charge is *flagged* (blocked) at threshold ``t`` when ``score >= t``. Every metric is computed from the
cumulative counts at the distinct scores (:func:`binary_counts`), so tied scores always move together:
no metric ever splits a group of equal scores.

Example:
    >>> y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    >>> roc_auc(y, s)
    0.75
    >>> round(average_precision(y, s), 4)
    0.8333
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from payfm.evaluation.checks import FloatArray, binary_inputs, require_both_classes


@dataclass(frozen=True)
class Counts:
    """Cumulative weighted counts at each distinct score, highest score first.

    ``tps[i]`` / ``fps[i]``: fraudulent / legitimate weight with ``score >= thresholds[i]``.
    """

    thresholds: FloatArray
    tps: FloatArray
    fps: FloatArray
    positives: float
    negatives: float

    @property
    def flagged(self) -> FloatArray:
        return self.tps + self.fps

    @property
    def total(self) -> float:
        return self.positives + self.negatives


@dataclass(frozen=True)
class OperatingPoint:
    """What happens at one threshold: charges flagged (blocked) are those with ``score >= threshold``.

    ``precision`` is NaN when nothing is flagged; ``threshold`` is ``inf`` when the rule flags nothing.
    """

    threshold: float
    flagged: float
    caught: float  # fraudulent charges flagged (true positives)
    false_positives: float
    precision: float
    recall: float
    fpr: float
    block_rate: float


def group_ends(s: FloatArray) -> npt.NDArray[np.int64]:
    """Index of the last row of each run of equal scores in ``s`` (sorted by descending score)."""
    last = np.flatnonzero(np.diff(s)) if s.size > 1 else np.empty(0, dtype=np.int64)
    ends: npt.NDArray[np.int64] = np.r_[last, s.size - 1].astype(np.int64)
    return ends


def counts_sorted(
    y: FloatArray, s: FloatArray, w: FloatArray, ends: npt.NDArray[np.int64] | None = None
) -> Counts:
    """:class:`Counts` of arrays already sorted by descending score (the bootstrap's fast path, which
    passes the precomputed :func:`group_ends` of ``s``)."""
    idx = group_ends(s) if ends is None else ends
    tps = np.cumsum(w * y)[idx]
    fps = np.cumsum(w)[idx] - tps
    return Counts(s[idx], tps, fps, float(tps[-1]), float(fps[-1]))


def sort_by_score(y: FloatArray, s: FloatArray, w: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The arrays ordered by descending score (stable, so equal scores keep their order)."""
    order = np.argsort(-s, kind="stable")
    return y[order], s[order], w[order]


def binary_counts(
    y_true: npt.ArrayLike, y_score: npt.ArrayLike, sample_weight: npt.ArrayLike | None = None
) -> Counts:
    """Cumulative counts of fraudulent and legitimate charges at each distinct score."""
    y, s, w = binary_inputs("binary_counts", y_true, y_score, sample_weight)
    return counts_sorted(*sort_by_score(y, s, w))


def roc_auc_from(c: Counts) -> float:
    """Area under the ROC curve (trapezoids; ties count one half), as scikit-learn's ``roc_auc_score``."""
    fpr = np.r_[0.0, c.fps / c.negatives]
    tpr = np.r_[0.0, c.tps / c.positives]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def average_precision_from(c: Counts) -> float:
    """AP = sum_n (R_n - R_{n-1}) P_n over distinct thresholds, as ``average_precision_score``."""
    # zero-weight rows (bootstrap) can leave nothing flagged at the top; their recall step is zero anyway
    flagged = c.flagged
    precision = np.divide(c.tps, flagged, out=np.zeros_like(flagged), where=flagged > 0)
    recall = np.r_[0.0, c.tps / c.positives]
    return float(np.sum(np.diff(recall) * precision))


def point_at(c: Counts, i: int | None) -> OperatingPoint:
    """The operating point at index ``i`` of ``c`` (``None``: flag nothing)."""
    if i is None:
        return OperatingPoint(float("inf"), 0.0, 0.0, 0.0, float("nan"), 0.0, 0.0, 0.0)
    tp, fp = float(c.tps[i]), float(c.fps[i])
    return OperatingPoint(
        threshold=float(c.thresholds[i]),
        flagged=tp + fp,
        caught=tp,
        false_positives=fp,
        precision=tp / (tp + fp) if tp + fp > 0 else float("nan"),
        recall=tp / c.positives if c.positives > 0 else float("nan"),
        fpr=fp / c.negatives if c.negatives > 0 else float("nan"),
        block_rate=(tp + fp) / c.total,
    )


def _last_within(values: FloatArray, limit: float) -> int | None:
    # values are non-decreasing along the counts, so the last index within the limit is the lowest threshold
    n = int(np.searchsorted(values, limit * (1 + 1e-12), side="right"))
    return None if n == 0 else n - 1


def point_at_fpr(c: Counts, max_fpr: float) -> OperatingPoint:
    """The lowest threshold whose false-positive rate is at most ``max_fpr`` (so the highest recall)."""
    return point_at(c, _last_within(c.fps / c.negatives, max_fpr))


def point_at_block_rate(c: Counts, budget: float) -> OperatingPoint:
    """The lowest threshold that flags at most ``budget`` (a fraction) of all charges; when even the top
    group of tied scores flags more, that group (no threshold can block less without flagging nothing).

    Ties move together, so a threshold cannot take part of the top tie group: its own precision is then the
    expected precision of any ``budget`` share of it, and its ``block_rate`` says how far over the budget the
    cut is (:func:`over_budget`). Zero-weight groups at the top (bootstrap) are passed over.
    """
    flagged = c.flagged
    i = _last_within(flagged / c.total, budget)
    first = int(np.searchsorted(flagged, 0.0, side="right"))  # the first group with any weight
    if first < flagged.size and (i is None or i < first):
        i = first
    return point_at(c, i)


def over_budget(point: OperatingPoint, budget: float) -> bool:
    """Whether ``point`` blocks more than ``budget`` (a fraction): the top tie group alone exceeds it."""
    return point.block_rate > budget * (1 + 1e-12)


def point_at_threshold(c: Counts, threshold: float) -> OperatingPoint:
    """The operating point of the rule ``score >= threshold``."""
    n = int(np.searchsorted(-c.thresholds, -threshold, side="right"))
    return point_at(c, None if n == 0 else n - 1)


def _checked(who: str, y_true: npt.ArrayLike, y_score: npt.ArrayLike, w: npt.ArrayLike | None) -> Counts:
    y, s, ww = binary_inputs(who, y_true, y_score, w)
    require_both_classes(who, y, ww)
    return counts_sorted(*sort_by_score(y, s, ww))


def roc_auc(
    y_true: npt.ArrayLike, y_score: npt.ArrayLike, sample_weight: npt.ArrayLike | None = None
) -> float:
    """Area under the ROC curve. Raises :class:`EvaluationError` without both classes."""
    return roc_auc_from(_checked("ROC AUC", y_true, y_score, sample_weight))


def average_precision(
    y_true: npt.ArrayLike, y_score: npt.ArrayLike, sample_weight: npt.ArrayLike | None = None
) -> float:
    """Average precision (area under the step PR curve). Raises without both classes."""
    return average_precision_from(_checked("Average precision", y_true, y_score, sample_weight))


def recall_at_fpr(y_true: npt.ArrayLike, y_score: npt.ArrayLike, max_fpr: float) -> float:
    """The highest recall of a threshold rule whose false-positive rate is at most ``max_fpr``.

    0.0 when even the top group of tied scores exceeds the allowed false positives.
    """
    return point_at_fpr(_checked("Recall at FPR", y_true, y_score, None), max_fpr).recall


def precision_at_block_rate(y_true: npt.ArrayLike, y_score: npt.ArrayLike, budget: float) -> OperatingPoint:
    """Precision and recall when blocking at most ``budget`` of all charges (the lowest such threshold).

    When the top group of tied scores alone exceeds the budget, the point blocks that group: its precision is
    the expected precision of any ``budget`` share of the group, and its ``block_rate`` exceeds the budget.
    """
    return point_at_block_rate(_checked("Precision at block rate", y_true, y_score, None), budget)


@dataclass(frozen=True)
class CardPrecision:
    """Card precision@k per day (Fraud Detection Handbook, section 4.2.3) and its mean over days."""

    k: int
    mean: float
    per_day: dict[str, float]  # ISO date (UTC) -> precision of that day's top k cards
    # what a perfect ranking reaches: the mean over days of min(fraud cards that day, k) / k (below 1 when a
    # day has fewer than k fraud cards, as most days of a small log do)
    best: float = 1.0


def card_precision_at_k(
    y_true: npt.ArrayLike, y_score: npt.ArrayLike, day: npt.ArrayLike, card: npt.ArrayLike, k: int = 100
) -> CardPrecision:
    """Per day, rank the cards by their highest score that day and take the top ``k``; a card counts as a
    hit when any of its charges that day is fraudulent; the day's value is hits / ``k`` (also when fewer than
    ``k`` cards were seen, as in the Handbook); the result is the mean over days with at least one charge.

    ``day`` is days since the Unix epoch (UTC); ``card`` holds card ids, or integer card codes. Cards tied
    on score across the k-th place share the places left: each counts for the share of the tie group that
    fits (the expected hits of the group in a random order), so the figure never depends on how cards are
    named or coded, as no other metric here splits a group of equal scores.
    Unlike the Handbook's simulation, cards found on earlier days are not removed from later days.

    ``best`` is what a perfect ranking reaches: with fewer than ``k`` fraud cards a day, it is below 1.

    Example:
        >>> cp = card_precision_at_k([1, 0, 0], [0.9, 0.8, 0.1], [0, 0, 0], ["a", "b", "c"], k=2)
        >>> cp.mean, cp.best
        (0.5, 0.5)
    """
    from payfm.evaluation.checks import EvaluationError, check_card_k

    k = check_card_k(k, "card_precision_at_k")
    y, s, _ = binary_inputs("Card precision@k", y_true, y_score)
    days = np.asarray(day, dtype=np.int64).ravel()
    if np.issubdtype(np.asarray(card).dtype, np.integer):
        card_code = np.asarray(card, dtype=np.int64).ravel()  # already codes (the fast path)
    else:
        card_code = np.unique(np.asarray(card, dtype=object).ravel().astype(str), return_inverse=True)[
            1
        ].ravel()
    if days.shape != y.shape or card_code.shape != y.shape:
        raise EvaluationError(
            f"Card precision@k needs one day and one card per charge. Got {days.size} days and "
            f"{card_code.size} cards for {y.size} charges."
        )
    # one row per (day, card): its highest score and whether any charge was fraudulent
    order = np.lexsort((card_code, days))
    d, c, ss, yy = days[order], card_code[order], s[order], y[order]
    starts = np.flatnonzero(np.r_[True, (np.diff(d) != 0) | (np.diff(c) != 0)])
    g_day = d[starts]
    g_score = np.maximum.reduceat(ss, starts)
    g_fraud = np.maximum.reduceat(yy, starts)
    # within each day, highest score first; cards of one score form a tie group, taken in the share that
    # fits in the day's top k (1 above the k-th place, 0 below, a fraction across it)
    rank_order = np.lexsort((-g_score, g_day))
    g_day, g_score, g_fraud = g_day[rank_order], g_score[rank_order], g_fraud[rank_order]
    day_start = np.flatnonzero(np.r_[True, np.diff(g_day) != 0])
    pos_in_day = np.arange(g_day.size) - np.repeat(day_start, np.diff(np.r_[day_start, g_day.size]))
    tie_start = np.flatnonzero(np.r_[True, (np.diff(g_day) != 0) | (np.diff(g_score) != 0)])
    tie_size = np.diff(np.r_[tie_start, g_day.size])
    taken = np.clip((k - pos_in_day[tie_start]) / tie_size, 0.0, 1.0)
    hits = np.bincount(
        np.searchsorted(g_day[day_start], g_day[tie_start]),
        weights=np.add.reduceat(g_fraud, tie_start) * taken,
        minlength=day_start.size,
    )
    per_day = {
        str(np.datetime64(int(dd), "D")): float(h) / k for dd, h in zip(g_day[day_start], hits, strict=True)
    }
    frauds = np.bincount(np.searchsorted(g_day[day_start], g_day), weights=g_fraud, minlength=day_start.size)
    best = float(np.mean(np.minimum(frauds, k)) / k)
    return CardPrecision(k, float(np.mean(hits) / k), per_day, best)
