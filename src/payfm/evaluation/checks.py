"""Input checks shared by the metrics: one error type; messages name who, what was expected, what came."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from payfm.errors import PayfmError
from payfm.training.splits import MAX_DAYS
from payfm.training.trainer import MAX_SEED

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class EvaluationError(PayfmError, ValueError):
    """A metric or an evaluation cannot be computed from the data it was given."""


def check_seed(seed: object, who: str) -> int:
    """``seed`` as an int in [0, :data:`~payfm.training.trainer.MAX_SEED`] (the range numpy's and
    scikit-learn's generators take; a training seed is narrower, LightGBM's [0, 2**31 - 1]); an
    :class:`EvaluationError` naming ``who`` and the parameter otherwise, before any work (numpy's own error
    came after the scoring).

    >>> check_seed(3, "evaluate_predictions")
    3
    """
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and 0 <= int(seed) <= MAX_SEED:
        return int(seed)
    raise EvaluationError(f"The 'seed' of {who} must be an integer in [0, {MAX_SEED}]. Got {seed!r}.")


def check_resamples(resamples: object, who: str) -> int:
    """``resamples`` (the ``bootstrap`` parameter: 0 turns the intervals off) as an int >= 0; an
    :class:`EvaluationError` naming ``who`` and the parameter otherwise."""
    if isinstance(resamples, numbers.Integral) and not isinstance(resamples, bool) and int(resamples) >= 0:
        return int(resamples)
    raise EvaluationError(
        f"The 'bootstrap' of {who} (resamples; 0: no intervals) must be an integer >= 0. Got {resamples!r}."
    )


def check_rates(rates: object, name: str, who: str) -> tuple[float, ...]:
    """``rates`` (``fpr_levels``, ``block_rates``: fractions, 0.01 for 1%) as a tuple of floats, each in
    (0, 1); an :class:`EvaluationError` naming ``who``, the parameter ``name`` and the first value out of
    range otherwise (a rate of 2.0 gave a key "200%", one of 0 flagged nothing).

    >>> check_rates([0.001, 0.01], "fpr_levels", "evaluate_predictions")
    (0.001, 0.01)
    >>> check_rates(np.array([0.01]), "fpr_levels", "evaluate_predictions")  # a 1-D array too
    (0.01,)
    """
    expected = f"The '{name}' of {who} must be a sequence of rates in (0, 1) (fractions: 0.01 for 1%)"
    if isinstance(rates, np.ndarray) and rates.ndim == 1:
        rates = rates.tolist()  # (Python numbers: a rate's key and message read as the caller wrote it)
    if isinstance(rates, str | bytes) or not isinstance(rates, Sequence):
        raise EvaluationError(f"{expected}. Got {rates!r}.")
    for rate in rates:
        number = isinstance(rate, numbers.Real) and not isinstance(rate, bool)
        if not (number and math.isfinite(float(rate)) and 0.0 < float(rate) < 1.0):
            raise EvaluationError(f"{expected}. Got {rate!r} in {rates!r}.")
    return tuple(float(r) for r in rates)


def check_horizon(horizon: object, who: str) -> timedelta | None:
    """``horizon`` (a label horizon: None, or a ``timedelta`` in (0, MAX_DAYS days], as ``--horizon-days``
    takes days); an :class:`EvaluationError` naming ``who`` and the parameter otherwise (a number of days
    reached ``total_seconds`` as an AttributeError).

    >>> check_horizon(timedelta(days=60), "evaluate_models")
    datetime.timedelta(days=60)
    """
    if horizon is None or (
        isinstance(horizon, timedelta) and timedelta(0) < horizon <= timedelta(days=MAX_DAYS)
    ):
        return horizon
    raise EvaluationError(
        f"The 'horizon' of {who} must be None or a timedelta in (0, {MAX_DAYS:g} days] "
        f"(timedelta(days=60)). Got {horizon!r}."
    )


def check_window(start: datetime | None, end: datetime | None) -> None:
    """Raise unless the evaluation window [start, end) (None: open) ends after it starts: an empty or
    inverted window holds no charge."""
    if start is not None and end is not None and start >= end:
        raise EvaluationError(
            f"The evaluation window must end after it starts. Got {start.isoformat()} .. {end.isoformat()}."
        )


def check_window_arg(window: object, who: str) -> tuple[datetime | None, datetime | None]:
    """``window`` (the ``window`` parameter of ``who``: a pair of bounds, each an aware datetime, a date or
    ISO text, None for open) as a pair of aware datetimes, checked by :func:`check_window`; an
    :class:`EvaluationError` naming the parameter otherwise, before any work (a naive datetime failed after
    the whole evaluation, comparing it with the charges' aware times).

    >>> check_window_arg(("2026-03-01", None), "evaluate_predictions")[0].isoformat()
    '2026-03-01T00:00:00+00:00'
    """
    from payfm.events.schema import time_bound

    if isinstance(window, str | bytes) or not isinstance(window, Sequence) or len(window) != 2:
        raise EvaluationError(
            f"The 'window' of {who} must be a pair (start, end) of datetimes, dates or ISO texts (None: "
            f"open). Got {window!r}."
        )
    start, end = (
        time_bound(b, f"The 'window' {n} of {who}", EvaluationError)
        for b, n in zip(window, ("start", "end"), strict=True)
    )
    check_window(start, end)
    return start, end


def check_card_k(k: object, who: str) -> int:
    """``k`` of card precision@k (cards a day an analyst reviews) as an int >= 1; an
    :class:`EvaluationError` naming ``who`` otherwise (2.5 cards gave a figure that meant nothing)."""
    if isinstance(k, numbers.Integral) and not isinstance(k, bool) and int(k) >= 1:
        return int(k)
    raise EvaluationError(f"The 'card_k' of {who} (cards a day) must be an integer >= 1. Got {k!r}.")


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
