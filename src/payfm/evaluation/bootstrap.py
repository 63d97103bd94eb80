"""Bootstrap confidence intervals: seeded, with a configurable number of resamples.

Each resample draws N charges with replacement (as multiplicities, so the arrays are sorted by score only
once) and recomputes the metrics; the interval is the percentile interval at ``level``. With ``groups``
(an incident id per charge: the attempts of one card-testing burst, the charges of one takeover) it draws
G incidents with replacement instead, each bringing all its charges: charges of one incident are not
independent draws, and resampling them one by one gives intervals that are too narrow. Resamples on which a
metric is undefined (for example no fraud drawn) are skipped and counted in ``Interval.resamples``.

Example:
    >>> import numpy as np
    >>> from payfm.evaluation.metrics import roc_auc, roc_auc_from
    >>> y, s = np.array([0, 0, 1, 1] * 25), np.linspace(0, 1, 100)
    >>> iv = bootstrap({"auc": roc_auc_from}, y, s, resamples=50, seed=1)["auc"]
    >>> iv.low <= roc_auc(y, s) <= iv.high
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from payfm.evaluation.checks import EvaluationError, FloatArray, binary_inputs, check_seed
from payfm.evaluation.metrics import Counts, counts_sorted, group_ends

CountsMetric = Callable[[Counts], float]


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval; ``resamples`` counts the resamples where the metric was defined."""

    low: float
    high: float
    level: float
    resamples: int


def percentile_interval(values: npt.ArrayLike, level: float) -> Interval:
    """The central ``level`` percentile interval of the finite ``values`` (NaN bounds when there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Interval(float("nan"), float("nan"), level, 0)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(v, [tail, 100.0 - tail])
    return Interval(float(low), float(high), level, int(v.size))


def _check(resamples: int, level: float) -> None:
    if resamples < 1:
        raise EvaluationError(f"The bootstrap needs resamples >= 1. Got {resamples}.")
    if not 0.0 < level < 1.0:
        raise EvaluationError(f"The bootstrap level must be in (0, 1). Got {level}.")


def bootstrap(
    metrics: Mapping[str, CountsMetric],
    y_true: npt.ArrayLike,
    y_score: npt.ArrayLike,
    *,
    resamples: int = 200,
    seed: int = 0,
    level: float = 0.95,
    groups: npt.ArrayLike | None = None,
) -> dict[str, Interval]:
    """Percentile intervals of ``metrics`` (functions of :class:`Counts`) over resampled charges, or over
    resampled ``groups`` (one integer id per charge; see the module docstring)."""
    _check(resamples, level)
    seed = check_seed(seed, "bootstrap")
    y, s, w = binary_inputs("The bootstrap", y_true, y_score)
    resample = resampler(y.size, groups)
    order = np.argsort(-s, kind="stable")
    y, s, w = y[order], s[order], w[order]
    rng = np.random.default_rng(seed)
    ends = group_ends(s)
    values = {name: np.full(resamples, np.nan) for name in metrics}
    for r in range(resamples):
        mult = resample(rng, order)
        c = counts_sorted(y, s, w * mult, ends)
        if c.positives <= 0 or c.negatives <= 0:
            continue
        for name, fn in metrics.items():
            values[name][r] = fn(c)
    return {name: percentile_interval(v, level) for name, v in values.items()}


Resampler = Callable[[np.random.Generator, "npt.NDArray[np.intp] | None"], FloatArray]


def resampler(n: int, groups: npt.ArrayLike | None = None) -> Resampler:
    """``draw(rng, order)``: one bootstrap resample of ``n`` charges as multiplicities (n,), in the charges'
    ``order`` (a permutation; None: as given). Charges are drawn with replacement, or with ``groups`` (n,
    integer ids) whole groups."""
    if groups is None:
        return lambda rng, order: np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
    g = np.asarray(groups).ravel()
    if g.shape != (n,):
        raise EvaluationError(f"The bootstrap's groups must hold one id per charge ({n}). Got {g.shape}.")
    _, inverse = np.unique(g, return_inverse=True)
    k = int(inverse.max()) + 1 if n else 0

    def draw(rng: np.random.Generator, order: npt.NDArray[np.intp] | None) -> FloatArray:
        per_group = np.bincount(rng.integers(0, k, k), minlength=k).astype(np.float64)
        out: FloatArray = per_group[inverse if order is None else inverse[order]]
        return out

    return draw


def proportion_interval(
    successes: int, trials: int, *, resamples: int = 200, rng: np.random.Generator, level: float = 0.95
) -> Interval:
    """Bootstrap interval of a proportion (a row bootstrap within the group is a binomial draw)."""
    _check(resamples, level)
    if trials == 0:
        return Interval(float("nan"), float("nan"), level, 0)
    draws = rng.binomial(trials, successes / trials, size=resamples) / trials
    return percentile_interval(draws, level)
