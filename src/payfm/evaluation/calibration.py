"""Calibration of probability scores: reliability curve, expected calibration error (ECE) and Brier score.

Bins are equal-width on [0, 1] and, as in scikit-learn's ``calibration_curve(strategy="uniform")``, closed
on the right: bin ``b`` of ``n`` holds scores in ``(b/n, (b+1)/n]``, and a score of exactly 0 is in the
first bin.

Example:
    >>> round(expected_calibration_error([0, 1], [0.2, 0.6], n_bins=5), 3)
    0.3
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from payfm.evaluation.checks import EvaluationError, FloatArray, IntArray, binary_inputs, probabilities


@dataclass(frozen=True)
class Reliability:
    """The non-empty bins of a reliability curve: mean score, observed fraud rate and charges per bin."""

    n_bins: int
    mean_predicted: list[float]
    fraction_positive: list[float]
    count: list[int]


def _bins(
    who: str, y_true: npt.ArrayLike, y_score: npt.ArrayLike, n_bins: int
) -> tuple[FloatArray, FloatArray, IntArray]:
    if n_bins < 1:
        raise EvaluationError(f"{who} needs n_bins >= 1. Got {n_bins}.")
    y, s, _ = binary_inputs(who, y_true, y_score)
    probabilities(who, s)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], s, side="left").astype(np.int64)
    return y, s, ids


def reliability_curve(y_true: npt.ArrayLike, y_score: npt.ArrayLike, n_bins: int = 10) -> Reliability:
    """Per non-empty bin: mean score and fraction fraudulent (scikit-learn's ``prob_pred``, ``prob_true``)."""
    y, s, ids = _bins("Reliability curve", y_true, y_score, n_bins)
    count = np.bincount(ids, minlength=n_bins)
    sum_s = np.bincount(ids, weights=s, minlength=n_bins)
    sum_y = np.bincount(ids, weights=y, minlength=n_bins)
    nz = count > 0
    return Reliability(
        n_bins,
        (sum_s[nz] / count[nz]).tolist(),
        (sum_y[nz] / count[nz]).tolist(),
        count[nz].astype(int).tolist(),
    )


def expected_calibration_error(y_true: npt.ArrayLike, y_score: npt.ArrayLike, n_bins: int = 10) -> float:
    """ECE = sum_b (n_b / N) * |mean(y in b) - mean(score in b)| over equal-width bins."""
    r = reliability_curve(y_true, y_score, n_bins)
    n = np.asarray(r.count, dtype=np.float64)
    gap = np.abs(np.asarray(r.fraction_positive) - np.asarray(r.mean_predicted))
    return float(np.sum(n * gap) / n.sum())


def brier_score(y_true: npt.ArrayLike, y_score: npt.ArrayLike) -> float:
    """Mean squared difference between score and label (scikit-learn's ``brier_score_loss``)."""
    y, s, _ = binary_inputs("Brier score", y_true, y_score)
    probabilities("Brier score", s)
    return float(np.mean((s - y) ** 2))
