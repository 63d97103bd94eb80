"""Probability calibration on the validation period: (centred) isotonic or Platt, stored as JSON.

An isotonic map is stored as its points (``x`` raw scores, ``y`` probabilities) and applied by linear
interpolation, clipped at the ends: maps saved before the centred fit (two points per block, a step
function) are read and applied as they were.

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


TOP_RISE = 0.1  # how far above the top block's rate, toward 1, the map goes by a raw score of 1


def _centred(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centred isotonic regression (Oron & Flournoy, 2017): the isotonic fit's blocks, each as one point, its
    rows' weighted mean raw score and its fraud rate; the map interpolates between these points.

    The isotonic fit alone is a step function: tens of thousands of distinct scores become a few dozen values,
    and the ties cost ranking (0.010-0.033 of test average precision for every payfm model on the demo's
    split, ``bench/bench_models.py``: the GBDT's 0.291 is 0.324 on its raw scores). Interpolating between
    block centres is strictly increasing inside the fitted range, so scores keep their order there, and it is
    as calibrated (a block's rows average to its rate, up to the curvature between centres). Beyond the last
    centre the map keeps the top block's rate, rising a tenth of the way to 1 by a raw score of 1: the highest
    scores, where ranking matters most, stay apart, and no charge above every validation block is called
    likelier fraud than that block's evidence says (a line on to 1 over-stated them: 0.50 for a true 0.42 in a
    reviewer's simulation). Below the first centre it stays at the lowest block's value.

    The lowest block, when no fraud of the fit fell in it, says half a fraud over its rows, not 0: a
    validation window with a few dozen frauds leaves its lowest-scored block (a fifth of the charges, on a
    small world) without one, and the fit would call them impossible (probability 0, risk score 0), frauds
    of the test window among them. Half an observation over the block's weight is the usual estimate of a
    rate never seen (Jeffreys); at most half the next block's value, so the map stays increasing there.
    Mirrored at the top: a highest block of frauds only says half a genuine charge over its rows, not
    certainty (isotonic fits often end in a block of a few frauds; at 1.0 every later charge scored above
    it would tie there).
    """
    from sklearn.isotonic import IsotonicRegression

    keep = w > 0  # rows of no weight say nothing (a block of them had no mean; at either end, NaN)
    if not keep.any():
        raise ConfigError("Isotonic calibration needs rows of positive weight. Got none.")
    p, y, w = p[keep], y[keep], w[keep]
    order = np.argsort(p, kind="stable")
    ps, ws = p[order], w[order]
    fitted = IsotonicRegression(y_min=0.0, y_max=1.0).fit(ps, y[order], sample_weight=ws).predict(ps)
    starts = np.r_[0, np.flatnonzero(np.diff(fitted) != 0) + 1]  # blocks: runs of one fitted value
    weight = np.add.reduceat(ws, starts)
    xs = np.add.reduceat(ps * ws, starts) / weight
    ys = fitted[starts].astype(np.float64)
    if ys.size > 1 and ys[0] <= 0.0:
        ys[0] = min(0.5 / max(float(weight[0]), 1.0), 0.5 * float(ys[1]))
    if ys.size > 1 and ys[-1] >= 1.0:  # the same, mirrored: a top block of frauds only is not certain fraud
        ys[-1] = 1.0 - min(0.5 / max(float(weight[-1]), 1.0), 0.5 * (1.0 - float(ys[-2])))
    if xs[-1] < 1.0 and ys[-1] < 1.0:  # above the top block: its rate, rising a tenth of the way to 1
        xs, ys = np.r_[xs, 1.0], np.r_[ys, ys[-1] + TOP_RISE * (1.0 - ys[-1])]
    return xs, ys


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
            xs, ys = _centred(p, y, w)
            self.params_ = {"x": xs.tolist(), "y": ys.tolist()}
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
