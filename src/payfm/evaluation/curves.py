"""Curves over thresholds: ROC, precision-recall, dollars (fraud caught vs legitimate volume blocked) and
score distributions. Stored curves are thinned to at most ``max_points`` points for reports.

Example:
    >>> d = dollar_curve([1, 0, 1], [0.9, 0.5, 0.2], [100.0, 40.0, 10.0])
    >>> d.thresholds, d.fraud_caught_usd, d.legit_blocked_usd
    ([0.9, 0.5, 0.2], [100.0, 100.0, 110.0], [0.0, 40.0, 40.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from payfm.evaluation.checks import EvaluationError, binary_inputs, require_both_classes
from payfm.evaluation.metrics import Counts, binary_counts, counts_sorted, sort_by_score


@dataclass(frozen=True)
class Curve:
    """A curve as parallel lists: ``x[i]``, ``y[i]`` are reached at ``score >= thresholds[i]``."""

    x: list[float]
    y: list[float]
    thresholds: list[float]


@dataclass(frozen=True)
class DollarCurve:
    """Dollars at each distinct threshold, highest first: fraud caught and legitimate volume blocked."""

    thresholds: list[float]
    fraud_caught_usd: list[float]
    legit_blocked_usd: list[float]
    fraud_total_usd: float
    legit_total_usd: float


@dataclass(frozen=True)
class ScoreHistogram:
    """Score densities (each integrates to 1 over [0, 1]) of fraudulent and legitimate charges."""

    edges: list[float]
    fraud: list[float]
    legit: list[float]


def thin(n: int, max_points: int) -> npt.NDArray[np.int64]:
    """Indices of at most ``max_points`` evenly spaced points of ``n``, always keeping both ends."""
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


def roc_points(c: Counts, max_points: int = 400) -> Curve:
    """ROC curve: x = false-positive rate, y = true-positive rate, from (0, 0) (threshold ``inf``)."""
    fpr = np.r_[0.0, c.fps / c.negatives]
    tpr = np.r_[0.0, c.tps / c.positives]
    thr = np.r_[np.inf, c.thresholds]
    i = thin(fpr.size, max_points)
    return Curve(fpr[i].tolist(), tpr[i].tolist(), thr[i].tolist())


def pr_points(c: Counts, max_points: int = 400) -> Curve:
    """Precision-recall curve: x = recall, y = precision, at each distinct threshold (highest first)."""
    precision = c.tps / c.flagged
    recall = c.tps / c.positives
    i = thin(recall.size, max_points)
    return Curve(recall[i].tolist(), precision[i].tolist(), c.thresholds[i].tolist())


def roc_curve(y_true: npt.ArrayLike, y_score: npt.ArrayLike, max_points: int = 400) -> Curve:
    """ROC curve of labels and scores (see :func:`roc_points`)."""
    y, _, w = binary_inputs("ROC curve", y_true, y_score)
    require_both_classes("ROC curve", y, w)
    return roc_points(binary_counts(y_true, y_score), max_points)


def pr_curve(y_true: npt.ArrayLike, y_score: npt.ArrayLike, max_points: int = 400) -> Curve:
    """Precision-recall curve of labels and scores (see :func:`pr_points`)."""
    y, _, w = binary_inputs("PR curve", y_true, y_score)
    require_both_classes("PR curve", y, w)
    return pr_points(binary_counts(y_true, y_score), max_points)


def dollar_curve(
    y_true: npt.ArrayLike, y_score: npt.ArrayLike, amount_usd: npt.ArrayLike, max_points: int = 400
) -> DollarCurve:
    """Fraud dollars caught and legitimate dollars blocked when blocking ``score >= t``, for each distinct t.

    ``amount_usd`` is in dollars (convert cents first). The curve is the cost view of the ROC curve: each
    charge weighs its amount instead of one.
    """
    y, s, amt = binary_inputs("Dollar curve", y_true, y_score, amount_usd)
    c = counts_sorted(*sort_by_score(y, s, amt))
    i = thin(c.thresholds.size, max_points)
    return DollarCurve(
        c.thresholds[i].tolist(), c.tps[i].tolist(), c.fps[i].tolist(), c.positives, c.negatives
    )


def score_histogram(y_true: npt.ArrayLike, y_score: npt.ArrayLike, bins: int = 40) -> ScoreHistogram:
    """Densities of scores on ``bins`` equal-width bins over [0, 1], per class (empty class: all zeros)."""
    if bins < 1:
        raise EvaluationError(f"Score histogram needs bins >= 1. Got {bins}.")
    y, s, _ = binary_inputs("Score histogram", y_true, y_score)
    edges = np.linspace(0.0, 1.0, bins + 1)

    def density(v: npt.NDArray[np.float64]) -> list[float]:
        if v.size == 0:
            return [0.0] * bins
        h, _ = np.histogram(np.clip(v, 0.0, 1.0), bins=edges, density=True)
        return [float(x) for x in h]

    return ScoreHistogram(edges.tolist(), density(s[y == 1]), density(s[y == 0]))
