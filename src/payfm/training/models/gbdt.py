"""Gradient-boosted trees (LightGBM), early-stopped on the validation period, saved in LightGBM's text format.

Explanations are per-feature contributions in log-odds, two methods (the model parameter ``explanations``,
saved with the model, so a served decision and an offline explanation always agree):

- ``"path"`` (the default): path contributions (Saabas; as the random forest, and XGBoost's
  ``approx_contribs``): each split on a charge's root-to-leaf path credits its feature with the change of the
  node value it causes. One LightGBM call gives the leaf of every tree (``pred_leaf``), then a table built
  once per model (the path of every leaf) adds them up. They add up exactly, as SHAP values do, to the
  log-odds minus the trees' root values; unlike SHAP they credit a feature by where it is split in the tree.
  About half the cost of exact TreeSHAP per charge on the trained default model (bench/bench_explain.py),
  and the gap grows with trees x depth.
- ``"shap"``: exact TreeSHAP (LightGBM's ``pred_contrib``), for offline analysis; its cost grows with
  trees x leaves x depth^2 (why the default trees are serving-sized: 15 leaves, depth <= 6). A model saved
  before the parameter existed (no ``explanations`` in its ``model.json``) keeps TreeSHAP.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0); X = rng.normal(size=(400, 3)); y = (X[:, 0] > 0).astype(int)
    >>> m = GBDTModel(n_estimators=20, calibration="none").fit(X, y)
    >>> m.explain(X[:1])[0][0].feature
    'f0'
"""

from __future__ import annotations

import ctypes
import re
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from payfm.events.workspace import atomic_write_bytes
from payfm.training.models.base import Model, ModelError

_OWN_PARAMS: dict[str, type] = {  # payfm's own names and types; other LightGBM ones pass through
    "n_estimators": int,
    "learning_rate": float,
    "num_leaves": int,
    "max_depth": int,
    "min_child_samples": int,
    "feature_fraction": float,
    "lambda_l2": float,
    "early_stopping": int,
    "num_threads": int,
    "explanations": str,
}
EXPLANATIONS = ("path", "shap")
SMALL_BATCH = 512  # below this many rows, predict on one thread: thread start-up costs more than it saves


class _FastRow:
    """LightGBM's single-row fast path: a predictor built once, then one C call per charge.

    ``predict_type`` 0 gives the probability (~10 us instead of ~50 us through ``Booster.predict``), 2 the
    leaf index of every tree, 3 the TreeSHAP contributions. Same trees, same C++ code as the batch path; a
    lock serializes callers because the fast config holds one output buffer.
    """

    def __init__(self, booster: Any, ncol: int, predict_type: int) -> None:
        import lightgbm.basic as lgb_basic

        # private but stable C-API plumbing of the lightgbm package (the module does not export it)
        _LIB = lgb_basic._LIB  # type: ignore[attr-defined]  # not re-exported, but the handle to the C API
        _c_str, _safe_call = lgb_basic._c_str, lgb_basic._safe_call
        self._lib, self._safe_call = _LIB, _safe_call
        self._handle = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(predict_type),
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(-1),  # every iteration of the (already truncated) model
                ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
                ctypes.c_int32(ncol),
                _c_str("num_threads=1"),
                ctypes.byref(self._handle),
            )
        )
        size = {0: 1, 2: booster.num_trees(), 3: ncol + 1}[predict_type]
        self._out = np.zeros(size)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._len = ctypes.c_int64()
        self._lock = threading.Lock()

    def __call__(self, row: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(row, dtype=np.float64)
        with self._lock:
            # the address as a plain int (``x`` stays alive meanwhile): ``ndarray.ctypes.data_as`` would make
            # a reference cycle per call, i.e. work for the cyclic garbage collector on every decision
            self._safe_call(
                self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                    self._handle, ctypes.c_void_p(x.ctypes.data), ctypes.byref(self._len), self._out_ptr
                )
            )
            return self._out.copy()

    def __del__(self) -> None:
        if getattr(self, "_handle", None) is not None and self._handle.value:
            self._lib.LGBM_FastConfigFree(self._handle)


class GBDTModel(Model):
    """Parameters: ``n_estimators`` (max boosting rounds, 500), ``learning_rate`` (0.05), ``num_leaves``
    (15), ``max_depth`` (6), ``min_child_samples`` (50), ``feature_fraction`` (0.8), ``lambda_l2`` (1.0),
    ``early_stopping`` (rounds without validation improvement before stopping, 30), ``num_threads`` (0: all
    cores), ``explanations`` (``"path"`` or ``"shap"``, see the module docstring); any other LightGBM
    parameter (``bagging_fraction``...) is passed through."""

    kind = "gbdt"
    PARAMS: ClassVar[dict[str, type]] = _OWN_PARAMS
    LIBRARIES: ClassVar[tuple[str, ...]] = ("lightgbm",)
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "n_estimators": 500,
        "learning_rate": 0.05,
        "num_leaves": 15,
        "max_depth": 6,
        "min_child_samples": 50,
        "feature_fraction": 0.8,
        "lambda_l2": 1.0,
        "early_stopping": 30,
        "num_threads": 0,
        "explanations": "path",
    }

    def __init__(self, *, calibration: str = "isotonic", seed: int = 0, **params: Any) -> None:
        super().__init__(calibration=calibration, seed=seed, **params)
        method = params.get("explanations", self.DEFAULTS["explanations"])
        if method not in EXPLANATIONS:
            expected = ", ".join(EXPLANATIONS)
            raise ModelError(f"GBDTModel parameter 'explanations' must be one of {expected}. Got {method!r}.")

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 7, 63, log=True),
            "max_depth": trial.suggest_int("max_depth", 4, 8),
            "min_child_samples": trial.suggest_int("min_child_samples", 10, 300, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        }

    def _lgb_params(self) -> dict[str, Any]:
        # any other LightGBM parameter (max_bin, bagging_fraction...) passes through as given
        extra = {k: v for k, v in self.params.items() if k not in _OWN_PARAMS}
        return extra | {
            "objective": "binary",
            "learning_rate": float(self.setting("learning_rate")),
            "num_leaves": int(self.setting("num_leaves")),
            "max_depth": int(self.setting("max_depth")),
            "min_child_samples": int(self.setting("min_child_samples")),
            "feature_fraction": float(self.setting("feature_fraction")),
            "lambda_l2": float(self.setting("lambda_l2")),
            "num_threads": int(self.setting("num_threads")),
            "seed": self.seed,
            "deterministic": True,
            "verbosity": -1,
        }

    def _fit(
        self, X: np.ndarray, y: np.ndarray, w: np.ndarray, X_val: np.ndarray | None, y_val: np.ndarray | None
    ) -> None:
        import lightgbm as lgb

        self._recorded("explanations")  # (how it explains)
        if self.params.get("linear_tree"):
            raise ModelError(
                "GBDTModel parameter 'linear_tree' is not supported: a linear leaf's output depends on the "
                "features, which neither path contributions nor LightGBM's TreeSHAP can explain. Got True."
            )

        self._check_per_column(X.shape[1])
        train = lgb.Dataset(
            X,
            y,
            weight=w,
            feature_name=self.feature_names_ if self._safe_names() else "auto",
            free_raw_data=True,
        )
        callbacks: list[Any] = []
        valid = []
        stop = int(self.setting("early_stopping"))  # 0: every round, no metric needed to stop on
        if (
            X_val is not None
            and y_val is not None
            and len(np.unique(y_val)) == 2
            and not self._dart()
            and stop
        ):
            valid = [lgb.Dataset(X_val, y_val, reference=train)]
            callbacks.append(lgb.early_stopping(stop, verbose=False))
        try:
            booster = lgb.train(
                self._lgb_params(),
                train,
                num_boost_round=int(self.setting("n_estimators")),
                valid_sets=valid,
                callbacks=callbacks,
            )
        except lgb.basic.LightGBMError as e:  # a per-feature parameter (monotone_constraints=...) can only be
            # checked against the columns here; the others were tried before any data was read (params.py)
            why = re.sub(r" at \S+\.cpp, line \d+\s*\.?$", "", str(e).strip())
            given = ", ".join(f"{k}={v!r}" for k, v in self.params.items() if k not in _OWN_PARAMS)
            raise ModelError(
                f"LightGBM refused the GBDT parameters {given or '(the defaults)'} on {X.shape[1]} feature "
                f"columns (a per-feature parameter takes {X.shape[1]} values, one per column): {why}."
            ) from None
        best = booster.best_iteration or booster.current_iteration()
        self.best_iteration_ = int(best)
        self._set_booster(booster.model_to_string(num_iteration=best))

    def _size(self) -> str:
        return f"{self.booster_.num_trees()} trees"

    def _check_per_column(self, d: int) -> None:
        check_per_column(self.params, d)

    def _dart(self) -> bool:
        """Whether LightGBM boosts with dropout (``boosting=dart``, or an alias): it has no early stopping
        (LightGBM warns and ignores it), so every one of ``n_estimators`` rounds is trained."""
        for alias in ("boosting", "boosting_type", "boost"):
            if alias in self.params:
                return str(self.params[alias]).lower() == "dart"
        return False

    def _safe_names(self) -> bool:
        # LightGBM rejects some characters in feature names; the dotted payfm names are fine.
        return all(not any(ch in n for ch in ',:"[]{}') for n in self.feature_names_)

    def _set_booster(self, text: str) -> None:
        import lightgbm as lgb

        self.model_text_ = text
        self.booster_ = lgb.Booster(model_str=text)
        self._fast: dict[int, _FastRow] = {}
        self._paths: _LeafPaths | None = None  # built on the first explanation (at load: see _load)
        self._paths_lock = threading.Lock()

    def _explanations(self) -> str:
        # A model saved before the parameter existed was validated with TreeSHAP reasons: it keeps them.
        return str(self.params.get("explanations", "shap"))

    def _leaf_paths(self) -> _LeafPaths:
        if self._paths is None:
            with self._paths_lock:
                if self._paths is None:
                    self._paths = _LeafPaths(self.booster_)
        return self._paths

    def _fast_row(self, predict_type: int) -> _FastRow:
        if predict_type not in self._fast:
            self._fast[predict_type] = _FastRow(self.booster_, self.booster_.num_feature(), predict_type)
        return self._fast[predict_type]

    def _threads(self, n: int) -> int:
        return 1 if n < SMALL_BATCH else int(self.setting("num_threads"))

    def _raw(self, X: np.ndarray) -> np.ndarray:
        if len(X) == 1:  # the serving path: one charge
            return self._fast_row(0)(X[0])
        out = np.asarray(self.booster_.predict(X, num_threads=self._threads(len(X))), dtype=np.float64)
        return out

    def _contributions(self, X: np.ndarray) -> np.ndarray:
        if self._explanations() == "path":
            paths = self._leaf_paths()
            if len(X) == 1:
                return paths.contributions(self._fast_row(2)(X[0])[None, :])
            out_rows = []
            trees, _, depth = paths.feature.shape
            step = max(1, _PATH_BUDGET // (trees * depth))
            for lo in range(0, len(X), step):  # bounded memory: rows x trees x depth per chunk
                part = X[lo : lo + step]
                leaves = self.booster_.predict(part, pred_leaf=True, num_threads=self._threads(len(part)))
                out_rows.append(paths.contributions(np.asarray(leaves)))
            return np.concatenate(out_rows) if out_rows else np.zeros(X.shape)
        if len(X) == 1:
            return self._fast_row(3)(X[0])[None, :-1]
        c = self.booster_.predict(X, pred_contrib=True, num_threads=self._threads(len(X)))
        shap: np.ndarray = np.asarray(c)[:, :-1]  # the last column is the expected value (bias)
        return shap

    def _save(self, path: Path) -> None:
        atomic_write_bytes(path / "model.lgb.txt", self.model_text_.encode())

    def _load(self, path: Path) -> None:
        try:
            text = (path / "model.lgb.txt").read_text()
        except FileNotFoundError:
            raise ModelError(f"Model file '{path / 'model.lgb.txt'}' is missing.") from None
        self._set_booster(text)
        # A model saved before the parameter existed was validated with TreeSHAP reasons: it keeps them, and
        # says so (its effective parameters, were it registered again)
        self.params.setdefault("explanations", "shap")
        if self._explanations() == "path":  # a served model's first charge pays nothing
            self._leaf_paths()


# (rows x trees x path length) entries of a batch explanation's chunk: ~100 MB of gathered paths at most
_PATH_BUDGET = 4_000_000


class _LeafPaths:
    """Every leaf's root-to-leaf path as ``(feature, change of the node value)`` pairs, from the booster's
    model dump: ``feature[t, leaf, k]`` and ``delta[t, leaf, k]`` for the k-th split of that path (padding:
    the feature count, one column past the last feature, delta 0). Contributions + the trees' root values =
    log-odds."""

    def __init__(self, booster: Any) -> None:
        trees = booster.dump_model()["tree_info"]
        self.n_features = int(booster.num_feature())
        paths: list[list[tuple[int, list[tuple[int, float]]]]] = []
        for info in trees:
            root = info["tree_structure"]
            leaves: list[tuple[int, list[tuple[int, float]]]] = []
            if "split_feature" not in root:  # a tree of one leaf explains nothing
                leaves.append((int(root.get("leaf_index", 0)), []))
            else:
                stack: list[tuple[dict[str, Any], list[tuple[int, float]]]] = [(root, [])]
                while stack:
                    node, path = stack.pop()
                    if "split_feature" not in node:
                        leaves.append((int(node["leaf_index"]), path))
                        continue
                    for side in ("left_child", "right_child"):
                        child = node[side]
                        value = child["internal_value"] if "split_feature" in child else child["leaf_value"]
                        step = (int(node["split_feature"]), float(value) - float(node["internal_value"]))
                        stack.append((child, [*path, step]))
            paths.append(leaves)
        n_leaves = max(1, max(len(t) for t in paths))
        depth = max(1, max(len(p) for t in paths for _, p in t))
        self.feature = np.full((len(paths), n_leaves, depth), self.n_features, dtype=np.int64)
        self.delta = np.zeros((len(paths), n_leaves, depth))
        for t, leaves in enumerate(paths):
            for leaf, path in leaves:
                for k, (f, d) in enumerate(path):
                    self.feature[t, leaf, k] = f
                    self.delta[t, leaf, k] = d
        self._trees = np.arange(len(paths))

    def contributions(self, leaves: np.ndarray) -> np.ndarray:
        """(n, features) contributions of rows whose leaf in tree t is ``leaves[:, t]``."""
        idx = leaves.astype(np.int64, copy=False)
        f = self.feature[self._trees, idx]  # (n, trees, depth)
        d = self.delta[self._trees, idx]
        n = len(idx)
        width = self.n_features + 1  # the padding lands in the last column, dropped below
        slot = f + (np.arange(n) * width)[:, None, None]
        out = np.bincount(slot.ravel(), weights=d.ravel(), minlength=n * width)
        result: np.ndarray = out.reshape(n, width)[:, : self.n_features]
        return result


def check_per_column(params: dict[str, Any], d: int) -> None:
    """A LightGBM parameter of one value per feature column (``monotone_constraints``, or an alias) must
    have ``d``: refused in one line (LightGBM's own refusal printed a ``[LightGBM] [Fatal]`` line on stderr
    before its error). The trainer checks it before any work (``d`` is the feature set's width plus the
    foundation model's inputs), the model again at its fit."""
    from payfm.training.models.params import PER_COLUMN, lightgbm_names

    names = lightgbm_names()
    for key, value in params.items():
        if names.get(key, key) not in PER_COLUMN:
            continue
        n = (
            len(value.split(","))
            if isinstance(value, str)
            else len(value)
            if isinstance(value, list | tuple | np.ndarray)
            else 1
        )
        if n != d:
            raise ModelError(
                f"The GBDT parameter {key}={value!r} was refused on {d} feature columns: a per-feature "
                f"parameter takes {d} values, one per column. Got {n}."
            )
