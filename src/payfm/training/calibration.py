"""Probability calibration on the validation period: isotonic or Platt, stored as JSON.

Example:
    >>> import numpy as np
    >>> c = Calibrator("platt").fit(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]))
    >>> Calibrator.from_json(c.to_json()).transform(np.array([0.5])).shape
    (1,)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from payfm.errors import ConfigError

METHODS = ("isotonic", "platt", "none")
# Platt's sigmoid is fitted on logits of p clipped to [1e-6, 1 - 1e-6] (a model's exact 0s and 1s, a random
# forest's, would otherwise sit at +-700 and flatten the fit), and applied to logits clipped only to the
# floats inside (0, 1): the fitted sigmoid goes on beyond the fit's clip, so the most extreme raw scores keep
# their order (the fit's clip in both made them one tie, and a monotone calibration lowered AP), until the
# sigmoid itself rounds to 1.0 (z above about 37).
_FIT_EPS = 1e-6
_LOW, _HIGH = np.finfo(np.float64).tiny, np.nextafter(1.0, 0.0)


def _logit(p: np.ndarray, eps: float | None = None) -> np.ndarray:
    q = np.clip(p, _LOW, _HIGH) if eps is None else np.clip(p, eps, 1 - eps)
    out: np.ndarray = np.log(q) - np.log1p(-q)
    return out


def _floored(xs: np.ndarray, ys: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Isotonic thresholds whose lowest block, when it saw no fraud, says half a fraud in its rows, not 0.

    A validation window with a few dozen frauds leaves its lowest-scored block (a fifth of the charges, on a
    small world) without one; the fit then calls them impossible (probability 0, risk score 0), frauds of
    the test window among them. Half an observation over the block's weight is the usual estimate of a rate
    never seen (Jeffreys); at most half the next block's value, so the map stays strictly increasing there
    and orders the charges as before.
    """
    zero = np.flatnonzero(ys <= 0.0)
    if not zero.size or zero[-1] + 1 >= ys.size:  # nothing at 0, or no fraud in the whole fit
        return ys
    weight = float(w[p <= xs[zero[-1]]].sum())
    out = ys.copy()
    out[zero] = min(0.5 / max(weight, 1.0), 0.5 * float(ys[zero[-1] + 1]))
    return out


class Calibrator:
    """Maps raw model probabilities to calibrated ones. ``none`` is the identity."""

    def __init__(self, method: str = "isotonic") -> None:
        if method not in METHODS:
            raise ConfigError(f"The calibration method must be one of {', '.join(METHODS)}. Got {method!r}.")
        self.method = method
        self.params_: dict[str, list[float]] = {}

    def fit(self, p: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> Calibrator:
        p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
        w = np.ones_like(p) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y, sample_weight=w)
            xs, ys = iso.X_thresholds_.astype(np.float64), iso.y_thresholds_.astype(np.float64)
            self.params_ = {"x": xs.tolist(), "y": _floored(xs, ys, p, w).tolist()}
        elif self.method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e6).fit(_logit(p, _FIT_EPS)[:, None], y, sample_weight=w)
            self.params_ = {"a": [float(lr.coef_[0, 0])], "b": [float(lr.intercept_[0])]}
        return self

    def transform(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        if self.method == "isotonic" and self.params_:
            out: np.ndarray = np.interp(p, self.params_["x"], self.params_["y"])
            return out
        if self.method == "platt" and self.params_:
            from scipy.special import expit

            z: np.ndarray = self.params_["a"][0] * _logit(p) + self.params_["b"][0]
            res: np.ndarray = expit(z)  # (1 / (1 + exp(-z)) without overflow far out)
            return res
        clipped: np.ndarray = np.clip(p, 0.0, 1.0)
        return clipped

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params_}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibrator:
        c = cls(str(data.get("method", "none")))
        c.params_ = {k: [float(v) for v in vs] for k, vs in dict(data.get("params", {})).items()}
        return c
