"""The numeric inputs of the logistic regression and the MLP: a signed log, clipped to the training range,
then standardized.

Counts, amounts, sums and ages are heavy-tailed (a merchant's charges over 30 days run from 0 to 40,000; a
card's age in seconds to 1.5M), and the all-time ones grow past their training range as the log ages (most
of the demo's test charges hold a card age above every training one). Standardized as they are, a handful
of huge values sets the scale, the rest of a column sits near its mean, and the test period's larger values
push scores far out. The signed log ``sign(x) * log1p(|x|)`` (``transform="symlog"``, the default) keeps
the order of values and the sign of z-scores and deltas while taming the tails; clipping to the range seen
in training bounds how far a later value can move a score. On the demo's default world (1M charges, the
demo's split and 10% negative sampling) the logistic regression's test average precision went from 0.021
to 0.252 and the MLP's from 0.067 to 0.142 (``bench/bench_models.py``, calibrated). ``transform="none"`` keeps
the raw values (still clipped).

Models saved before this transform hold no range and no flag: they load as untransformed and unclipped,
so they score as they did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRANSFORMS = ("symlog", "none")


def symlog(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: monotone, odd, about x near 0 and about log(x) for large x."""
    out: np.ndarray = np.sign(x) * np.log1p(np.abs(x))
    return out


@dataclass
class Scaling:
    """Per numeric column: the transform, the training range (after it) and the standardization."""

    symlog: bool
    lo: np.ndarray
    hi: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, filled: np.ndarray, w: np.ndarray | None, transform: str) -> Scaling:
        """Learn from ``filled`` (n, k): the training rows' numeric columns, missing values imputed;
        ``w`` weights the mean and standard deviation (None: equal weights)."""
        if transform not in TRANSFORMS:  # (the parameter checks refuse it first; this guards the API)
            raise ValueError(f"transform: expected one of {TRANSFORMS}. Got {transform!r}.")
        use = transform == "symlog"
        t = symlog(filled) if use else filled
        # over the finite values only (an infinite one, a ratio's division by 0, made every statistic
        # infinite or NaN); a column without any is taken as constant 0
        finite = np.isfinite(t)
        weights = (np.ones(len(t)) if w is None else w)[:, None] * finite
        total = weights.sum(axis=0)
        tf = np.where(finite, t, 0.0)
        mean = (weights * tf).sum(axis=0) / np.where(total > 0, total, 1.0)
        sd = np.sqrt((weights * (tf - mean) ** 2).sum(axis=0) / np.where(total > 0, total, 1.0))
        any_finite = finite.any(axis=0)
        lo = np.where(any_finite, np.where(finite, t, np.inf).min(axis=0), 0.0)
        hi = np.where(any_finite, np.where(finite, t, -np.inf).max(axis=0), 0.0)
        return cls(use, lo, hi, mean, np.where(sd > 0, sd, 1.0))

    def apply(self, filled: np.ndarray) -> np.ndarray:
        """(n, k) imputed numeric columns -> (n, k) transformed, clipped and standardized."""
        t = symlog(filled) if self.symlog else filled
        out: np.ndarray = (np.clip(t, self.lo, self.hi) - self.mean) / self.scale
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """Named arrays to save with the model (safetensors)."""
        return {
            "mean": self.mean,
            "scale": self.scale,
            "lo": self.lo,
            "hi": self.hi,
            "symlog": np.array([int(self.symlog)], dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> Scaling:
        """Read back :meth:`arrays`; a model saved before the transform has only ``mean`` and ``scale``."""
        mean, scale = a["mean"], a["scale"]
        lo = a.get("lo", np.full(len(mean), -np.inf))
        hi = a.get("hi", np.full(len(mean), np.inf))
        flag = a.get("symlog")
        return cls(bool(flag[0]) if flag is not None else False, lo, hi, mean, scale)
