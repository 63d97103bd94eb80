"""Random forest: trained by scikit-learn, saved and served as flat node arrays (safetensors), never pickle.

Every tree's nodes are concatenated into one set of arrays (left, right, feature, threshold, value), with the
root of each tree in ``roots``. Prediction walks all (row, tree) pairs down one level per step, in numpy; the
same walk accumulates Saabas path contributions (value change at each split, credited to its feature) for
explanations.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0); X = rng.normal(size=(200, 3)); y = (X[:, 0] > 0).astype(int)
    >>> m = ForestModel(n_estimators=5, calibration="none").fit(X, y)
    >>> bool(m.predict_proba(X[:1])[0] >= 0)
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from payfm.training.models.base import (
    Model,
    balance_factor,
    balanced_weights,
    load_arrays,
    save_arrays,
    unbalanced,
)


def _depth(value: Any) -> int | None:
    """``max_depth`` as scikit-learn takes it: None grows each tree until its leaves are pure (or
    ``min_samples_leaf`` stops it)."""
    return None if value is None else int(value)


class ForestModel(Model):
    """Parameters: ``n_estimators`` (60), ``max_depth`` (10; None: no limit), ``min_samples_leaf`` (20),
    ``max_features`` (share of features per split, 0.15), ``max_rows`` (bootstrap rows per tree, 200,000),
    ``n_jobs`` (-1), ``class_weight`` ("balanced", the default: both classes carry the same total weight, the
    sample weights counted; None: the sample weights alone).

    Balanced by default: at a fraud rate of 0.2% (by weight) the weighted Gini gain of a split that isolates
    frauds is tiny, so trees of depth 10 with leaves of 20 rows spend their splits on genuine charges
    (balanced random forests, Chen, Liaw & Breiman 2004). On the demo's split the test average precision
    went from 0.198 / 0.205 to 0.286 / 0.277 (seeds 0 / 1, ``bench/bench_models.py``). Leaf values are
    scaled back to probabilities node by node (odds divided by the balance factor), so an uncalibrated
    forest's scores are probabilities too, and path contributions still add up to them."""

    kind = "rf"
    PARAMS: ClassVar[dict[str, type]] = {
        "n_estimators": int,
        "max_depth": int,
        "min_samples_leaf": int,
        "max_features": float,
        "max_rows": int,
        "n_jobs": int,
        "class_weight": str,
    }
    LIBRARIES: ClassVar[tuple[str, ...]] = ("scikit-learn",)
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "n_estimators": 60,
        "max_depth": 10,
        "min_samples_leaf": 20,
        "max_features": 0.15,
        "max_rows": 200_000,
        "n_jobs": -1,
        "class_weight": "balanced",
    }

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "max_depth": trial.suggest_int("max_depth", 4, 14),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 5, 200, log=True),
            "max_features": trial.suggest_float("max_features", 0.1, 0.6),
        }

    def _fit(
        self, X: np.ndarray, y: np.ndarray, w: np.ndarray, X_val: np.ndarray | None, y_val: np.ndarray | None
    ) -> None:
        from sklearn.ensemble import RandomForestClassifier

        rf = RandomForestClassifier(
            n_estimators=int(self.setting("n_estimators")),
            max_depth=_depth(self.setting("max_depth")),
            min_samples_leaf=int(self.setting("min_samples_leaf")),
            max_features=float(self.setting("max_features")),
            n_jobs=int(self.setting("n_jobs")),
            # each tree sees at most `max_rows` bootstrap rows: big tables train in bounded time
            max_samples=min(1.0, int(self.setting("max_rows")) / len(X)),
            random_state=self.seed,
        )
        balanced = self._recorded("class_weight") == "balanced"
        rf.fit(self._fit_matrix(X), y, sample_weight=balanced_weights(y, w) if balanced else w)
        # each node's value back on the data's scale (odds divided by the balance factor): raw scores are
        # probabilities, uncalibrated too, and path contributions still add up to them
        factor = balance_factor(y, w) if balanced else 1.0
        left, right, feat, thr, val, roots = [], [], [], [], [], []
        offset = 0
        for est in rf.estimators_:
            t = est.tree_
            n = t.node_count
            leaf = t.children_left < 0
            left.append(np.where(leaf, -1, t.children_left + offset))
            right.append(np.where(leaf, -1, t.children_right + offset))
            feat.append(np.where(leaf, 0, t.feature))
            thr.append(t.threshold)
            v = t.value[:, 0, :]
            val.append(unbalanced(v[:, 1] / np.maximum(v.sum(axis=1), 1e-300), factor))
            roots.append(offset)
            offset += n
        self.left_ = np.concatenate(left).astype(np.int64)
        self.right_ = np.concatenate(right).astype(np.int64)
        self.feature_ = np.concatenate(feat).astype(np.int64)
        self.threshold_ = np.concatenate(thr).astype(np.float64)
        self.value_ = np.concatenate(val).astype(np.float64)
        self.roots_ = np.asarray(roots, dtype=np.int64)

    def _size(self) -> str:
        return f"{len(self.roots_)} trees"

    def _impute(self, X: np.ndarray) -> np.ndarray:
        # scikit-learn compares float32 features against float64 thresholds: do the same, so the walk
        # below agrees with the fitted forest exactly. An infinity (a ratio's division by 0) becomes the
        # largest (smallest) float32: beyond every split of its column, as it was fitted (_fit_matrix).
        filled = np.where(np.isnan(X), self.medians_, X).astype(np.float32)
        big = float(np.finfo(np.float32).max)
        clipped: np.ndarray = np.clip(filled, -big, big).astype(np.float64)
        return clipped

    def _fit_matrix(self, X: np.ndarray) -> np.ndarray:
        """The matrix the forest is fitted on: :meth:`_impute`'s, with +inf (-inf) a value beyond the
        column's largest (smallest) finite one (scikit-learn refuses an infinity, and sums the matrix in
        float32, where the float32 extremes overflow), so that a split can still set it apart."""
        filled = np.where(np.isnan(X), self.medians_, X).astype(np.float64)
        finite = np.isfinite(filled)
        if finite.all():
            return self._impute(X)
        hi = np.where(finite, filled, -np.inf).max(axis=0)
        lo = np.where(finite, filled, np.inf).min(axis=0)
        hi, lo = np.where(np.isfinite(hi), hi, 0.0), np.where(np.isfinite(lo), lo, 0.0)
        big = float(np.finfo(np.float32).max) / 4  # (room left for scikit-learn's float32 sums)
        top = np.minimum(hi + np.maximum(1.0, np.abs(hi)), big)
        bottom = np.maximum(lo - np.maximum(1.0, np.abs(lo)), -big)
        beyond = np.where(filled == np.inf, top, np.where(filled == -np.inf, bottom, filled))
        out: np.ndarray = beyond.astype(np.float32).astype(np.float64)
        return out

    def _walk(self, X: np.ndarray, contrib: np.ndarray | None) -> np.ndarray:
        """Leaf node of every (row, tree), (n, T); adds path contributions to ``contrib`` (n, d) if given."""
        Xf = self._impute(X)
        n, T = len(Xf), len(self.roots_)
        rows = np.repeat(np.arange(n), T)
        nodes = np.tile(self.roots_, n)
        active = self.left_[nodes] >= 0
        while active.any():
            nd = nodes[active]
            f = self.feature_[nd]
            go_left = Xf[rows[active], f] <= self.threshold_[nd]
            nxt = np.where(go_left, self.left_[nd], self.right_[nd])
            if contrib is not None:
                np.add.at(contrib, (rows[active], f), self.value_[nxt] - self.value_[nd])
            nodes[active] = nxt
            active[active] = self.left_[nxt] >= 0
        return nodes.reshape(n, T)

    def _raw(self, X: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.value_[self._walk(X, None)].mean(axis=1)
        return out

    def _contributions(self, X: np.ndarray) -> np.ndarray:
        contrib = np.zeros(X.shape)
        self._walk(X, contrib)
        out: np.ndarray = contrib / len(self.roots_)
        return out

    def _save(self, path: Path) -> None:
        save_arrays(
            path / "forest.safetensors",
            {
                "left": self.left_,
                "right": self.right_,
                "feature": self.feature_,
                "threshold": self.threshold_,
                "value": self.value_,
                "roots": self.roots_,
            },
        )

    def _load(self, path: Path) -> None:
        a = load_arrays(path / "forest.safetensors")
        self.left_, self.right_, self.feature_ = a["left"], a["right"], a["feature"]
        self.threshold_, self.value_, self.roots_ = a["threshold"], a["value"], a["roots"]
