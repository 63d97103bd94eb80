"""Logistic regression: median imputation, a signed log of numeric columns clipped to their training range
and standardized (:mod:`payfm.training.models.scaling`), one-hot of categorical columns.

Fitted with scikit-learn, then held as plain arrays (weights over the expanded design) so prediction and
explanation are one small numpy expression shared by batch and single-charge scoring.

Example:
    >>> import numpy as np
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
    >>> LogisticModel(calibration="none").fit(X, y).predict_proba(X).round(1).tolist()[0] < 0.5
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy.special import expit

from payfm.training.models.base import Model, balance_factor, balanced_weights, load_arrays, save_arrays
from payfm.training.models.scaling import Scaling

MAX_CATEGORIES = 32  # most frequent codes kept per categorical column; the rest share the all-zero row


class LogisticModel(Model):
    """Parameters: ``C`` (inverse L2 strength, default 1.0), ``categorical`` (indices of columns holding
    category codes, one-hot encoded), ``max_iter`` (default 300), ``class_weight`` ("balanced": both classes
    carry the same total weight, the sample weights counted; or None, the default),
    ``transform`` of the numeric columns ("symlog", the default, or "none")."""

    kind = "lr"
    PARAMS: ClassVar[dict[str, type]] = {
        "C": float,
        "max_iter": int,
        "class_weight": str,
        "categorical": list,
        "transform": str,
    }
    LIBRARIES: ClassVar[tuple[str, ...]] = ("scikit-learn",)
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "C": 1.0,
        "max_iter": 300,
        "class_weight": None,
        "categorical": [],
        "transform": "symlog",
    }

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {"C": trial.suggest_float("C", 1e-3, 10.0, log=True)}

    def _design(self, X: np.ndarray) -> np.ndarray:
        """(n, d) raw features -> (n, d') imputed, scaled numeric columns then one-hot columns."""
        filled = np.where(np.isnan(X), self.medians_, X)
        num = self.scaling_.apply(filled[:, self.numeric_])
        parts = [num]
        for j, cats in zip(self.categorical_, self.categories_, strict=True):
            parts.append((filled[:, j : j + 1] == cats[None, :]).astype(np.float64))
        return np.hstack(parts) if len(parts) > 1 else num

    def _fit(
        self, X: np.ndarray, y: np.ndarray, w: np.ndarray, X_val: np.ndarray | None, y_val: np.ndarray | None
    ) -> None:
        from sklearn.linear_model import LogisticRegression

        cat = sorted(int(j) for j in self.setting("categorical"))
        self.categorical_ = np.asarray(cat, dtype=np.int64)
        self.numeric_ = np.asarray([j for j in range(X.shape[1]) if j not in set(cat)], dtype=np.int64)
        filled = np.where(np.isnan(X), self.medians_, X)
        self.scaling_ = Scaling.fit(filled[:, self.numeric_], w, str(self._recorded("transform")))
        self.categories_ = []
        for j in cat:
            vals, counts = np.unique(filled[:, j], return_counts=True)
            self.categories_.append(np.sort(vals[np.argsort(-counts)][:MAX_CATEGORIES]))
        lr = LogisticRegression(C=float(self.setting("C")), max_iter=int(self.setting("max_iter")))
        balanced = self.setting("class_weight") == "balanced"
        lr.fit(self._design(X), y, sample_weight=balanced_weights(y, w) if balanced else w)
        self.coef_ = lr.coef_[0].astype(np.float64)
        # balanced, the fit learned odds times the balance factor: divided back, scores are probabilities
        self.intercept_ = float(lr.intercept_[0]) - (np.log(balance_factor(y, w)) if balanced else 0.0)

    def _margin(self, X: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._design(X) @ self.coef_ + self.intercept_
        return out

    def _raw(self, X: np.ndarray) -> np.ndarray:
        # The logistic function without overflow for very large margins (heavy-tailed features).
        out: np.ndarray = expit(self._margin(X))
        return out

    def _contributions(self, X: np.ndarray) -> np.ndarray:
        """Linear terms relative to the typical (median) charge, coef * (z(x) - z(median)), per feature."""
        diff = (self._design(X) - self._design(self.medians_[None, :])) * self.coef_
        out = np.zeros(X.shape)
        out[:, self.numeric_] = diff[:, : len(self.numeric_)]
        k = len(self.numeric_)
        for j, cats in zip(self.categorical_, self.categories_, strict=True):
            out[:, j] = diff[:, k : k + len(cats)].sum(axis=1)
            k += len(cats)
        return out

    def _save(self, path: Path) -> None:
        arrays = {
            "coef": self.coef_,
            "intercept": np.array([self.intercept_]),
            **self.scaling_.arrays(),
            "numeric": self.numeric_,
            "categorical": self.categorical_,
        }
        for i, c in enumerate(self.categories_):
            arrays[f"categories_{i}"] = c
        save_arrays(path / "linear.safetensors", arrays)

    def _load(self, path: Path) -> None:
        a = load_arrays(path / "linear.safetensors")
        self.coef_, self.intercept_ = a["coef"], float(a["intercept"][0])
        self.scaling_ = Scaling.from_arrays(a)
        self.numeric_, self.categorical_ = a["numeric"], a["categorical"]
        self.categories_ = [a[f"categories_{i}"] for i in range(len(self.categorical_))]
