"""Input checks shared by the metrics: one error type; messages name who, what was expected, what came."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from payfm.errors import PayfmError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class EvaluationError(PayfmError, ValueError):
    """A metric or an evaluation cannot be computed from the data it was given."""


def binary_inputs(
    who: str, y_true: npt.ArrayLike, y_score: npt.ArrayLike, sample_weight: npt.ArrayLike | None = None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(y, score, weight)`` as float arrays after checking shapes, labels in {0, 1} and finite scores."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if y.size == 0:
        raise EvaluationError(f"{who} needs at least one charge. Got an empty array.")
    if y.shape != s.shape:
        raise EvaluationError(
            f"{who} needs as many scores as labels. Got {s.size} scores for {y.size} labels."
        )
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        raise EvaluationError(f"{who} needs labels in {{0, 1}}. Got {float(y[at])!r} at position {at}.")
    if not np.isfinite(s).all():
        at = int(np.flatnonzero(~np.isfinite(s))[0])
        raise EvaluationError(f"{who} needs finite scores. Got {float(s[at])!r} at position {at}.")
    if sample_weight is None:
        w = np.ones_like(y)
    else:
        w = np.asarray(sample_weight, dtype=np.float64).ravel()
        if w.shape != y.shape or (w < 0).any() or not np.isfinite(w).all():
            raise EvaluationError(
                f"{who} needs one finite non-negative weight per charge. Got {w.size} weights."
            )
    return y, s, w


def require_both_classes(who: str, y: FloatArray, w: FloatArray) -> None:
    """Raise unless there is weight on at least one fraudulent and one legitimate charge."""
    pos = float(np.sum(w * y))
    neg = float(np.sum(w * (1.0 - y)))
    if pos <= 0 or neg <= 0:
        raise EvaluationError(
            f"{who} needs at least one fraudulent and one legitimate charge. "
            f"Got {pos:g} fraudulent and {neg:g} legitimate."
        )


def probabilities(who: str, s: FloatArray) -> None:
    """Raise unless every score is a probability in [0, 1]."""
    if s.size and (s.min() < 0.0 or s.max() > 1.0):
        raise EvaluationError(f"{who} needs scores in [0, 1]. Got a range of [{s.min():g}, {s.max():g}].")
