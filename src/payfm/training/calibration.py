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
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1 - _EPS)
    out: np.ndarray = np.log(q / (1 - q))
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
            self.params_ = {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
        elif self.method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e6).fit(_logit(p)[:, None], y, sample_weight=w)
            self.params_ = {"a": [float(lr.coef_[0, 0])], "b": [float(lr.intercept_[0])]}
        return self

    def transform(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        if self.method == "isotonic" and self.params_:
            out: np.ndarray = np.interp(p, self.params_["x"], self.params_["y"])
            return out
        if self.method == "platt" and self.params_:
            z: np.ndarray = self.params_["a"][0] * _logit(p) + self.params_["b"][0]
            res: np.ndarray = 1.0 / (1.0 + np.exp(-z))
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
