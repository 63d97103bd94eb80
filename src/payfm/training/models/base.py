"""The estimator contract every payfm model follows, and what all of them share.

``__init__`` stores keyword parameters only; :meth:`Model.fit` validates, learns (state ends in ``_``)
and returns self. :meth:`Model.predict_proba` gives calibrated probabilities, shape (n,);
:meth:`Model.predict_one` scores one feature vector (``list[float | None]`` in feature-set order, as the
online features give it) through the very same batch code. :meth:`Model.explain` gives each row's top
reasons. :meth:`Model.save` writes JSON + safe binary formats only (safetensors, LightGBM text);
:func:`load_model` reads them back.

A subclass implements ``_fit``, ``_raw`` (uncalibrated probabilities), ``_contributions`` (per-feature
contributions, (n, d)), ``_save`` and ``_load``.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from payfm.errors import PayfmError
from payfm.events.workspace import atomic_write_bytes
from payfm.training.calibration import Calibrator
from payfm.training.explain import GENERIC, Reason


class ModelError(PayfmError):
    """A model was used wrongly: unfitted, or given data of the wrong shape."""


class NotFittedError(ModelError):
    """The model has not been fitted (or loaded) yet."""


class CalibrationSkipped(UserWarning):
    """A fit asked for calibration that it could not do (no validation set, or one of a single class)."""


ArrayLike = np.ndarray | Sequence[Sequence[float | None]]

# The largest seed a fit takes: LightGBM reads its seed as a 32-bit signed integer, so 2**31 and above wrapped
# onto smaller seeds (--seed 5 and --seed 2**31 + 5 trained the same GBDT: found by a review); scikit-learn,
# numpy and torch take this range too.
MAX_TRAIN_SEED = 2**31 - 1


def is_train_seed(value: object) -> bool:
    """Whether ``value`` is a seed a fit takes: an integer (numpy's too, a bool is none) in
    [0, :data:`MAX_TRAIN_SEED`]."""
    integer = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return integer and 0 <= int(value) <= MAX_TRAIN_SEED  # type: ignore[call-overload]


def as_matrix(X: ArrayLike, who: str, n_features: int | None = None) -> np.ndarray:
    """A float32 (n, d) matrix with NaN for missing values (None in lists becomes NaN): the precision every
    model fits on (training's matrix, :func:`payfm.training.data.task_data`), so that scoring a window, the
    decision service's float64 vectors and the registered validation metrics see the same values (a logistic
    regression's scores on float64 inputs moved by a rounding error, across its isotonic calibrator's steps,
    which lie on the float32 scores it was fitted on: found by an audit). A float32 array is kept as it is,
    not copied."""
    try:
        m = X if isinstance(X, np.ndarray) and X.dtype == np.float32 else np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ModelError(
            f"{who}: expected a numeric (n, d) matrix with None/NaN for missing. Got {e}."
        ) from None
    if m.ndim != 2:
        raise ModelError(f"{who}: expected a 2-D (n, d) matrix. Got {m.ndim} dimension(s).")
    if n_features is not None and m.shape[1] != n_features:
        raise ModelError(f"{who}: expected {n_features} feature columns. Got {m.shape[1]}.")
    return m


def nan_medians(X: np.ndarray) -> np.ndarray:
    """Per column median ignoring NaN; 0 for an all-missing column."""
    out = np.zeros(X.shape[1])
    for j in range(X.shape[1]):
        col = X[:, j]
        col = col[~np.isnan(col)]
        out[j] = float(np.median(col)) if len(col) else 0.0
    return out


def balance_factor(y: np.ndarray, w: np.ndarray) -> float:
    """What the positives' weights are multiplied by so that both classes carry the same total weight (the
    ``class_weight="balanced"`` of payfm's models): by weight, not by row count (scikit-learn's "balanced"),
    so negatives sampled at 10% and weighted 10 count as the negatives they stand for. 1 with one class.

    A model fitted on the balanced weights learns odds multiplied by this factor; dividing its odds by it
    (:func:`unbalanced`) gives probabilities on the data's own scale again."""
    pos = y == 1
    total_pos, total_neg = float(w[pos].sum()), float(w[~pos].sum())
    return total_neg / total_pos if total_pos > 0 and total_neg > 0 else 1.0


def balanced_weights(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``w`` with the positives' weights multiplied by :func:`balance_factor`."""
    out: np.ndarray = np.where(y == 1, w * balance_factor(y, w), w)
    return out


def unbalanced(p: np.ndarray, factor: float) -> np.ndarray:
    """Probabilities learned on balanced weights, back on the data's scale: odds divided by ``factor``."""
    out: np.ndarray = p / (p + factor * (1.0 - p))
    return out


class Model(ABC):
    """Base of every model. See the module docstring for the contract."""

    kind: ClassVar[str]
    # the parameters the kind takes and their types (payfm.training.models.params checks them)
    PARAMS: ClassVar[dict[str, type]] = {}
    # the value of each parameter in PARAMS when it is not given: the one place a default is written, read by
    # the fit (:meth:`setting`) and recorded by :meth:`effective_params` (a registry entry must rebuild its
    # model after a later payfm changes a default)
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    # the distributions whose code fits the kind: their versions are recorded with a registered model
    LIBRARIES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, calibration: str = "isotonic", seed: int = 0, **params: Any) -> None:
        self.calibration = calibration
        self.seed = seed
        self.params = dict(params)

    def __repr__(self) -> str:
        """For a notebook: ``GBDTModel(212 trees, 31 features, calibration 'isotonic')`` (the calibration the
        fit did: 'none' where the asked one was skipped), ``GBDTModel(not fitted, calibration 'isotonic')``.
        """
        name = type(self).__name__
        if not hasattr(self, "calibrator_"):
            return f"{name}(not fitted, calibration {self.calibration!r})"
        size = self._size()
        return (
            f"{name}({f'{size}, ' if size else ''}{len(self.feature_names_)} features, "
            f"calibration {self.calibrator_.method!r})"
        )

    def _size(self) -> str:
        """How big the fitted model is, in its own terms ("212 trees"); "" when nothing says it well."""
        return ""

    def setting(self, name: str) -> Any:
        """The value parameter ``name`` takes in a fit: the one given, else the kind's default."""
        return self.params[name] if name in self.params else self.DEFAULTS[name]

    def _recorded(self, name: str) -> Any:
        """The value of ``name`` in a fit, written into the parameters (the saved model says how it was
        fitted, and a later payfm's default does not change how it scores)."""
        return self.params.setdefault(name, self.DEFAULTS[name])

    def effective_params(self) -> dict[str, Any]:
        """Every parameter a fit uses: the defaults with the given ones (LightGBM pass-through included) over
        them. Passed back as the parameters of a new model, they fit the same model whatever the defaults
        of a later payfm."""
        return copy.deepcopy({**self.DEFAULTS, **self.params})  # (a caller's edit reaches no default)

    def fitted_facts(self) -> dict[str, Any]:
        """What the fit settled on beyond its parameters (the MLP's batch size under its adaptive default),
        recorded with a registered model (``fitted``); none by default."""
        return {}

    def library_versions(self) -> dict[str, str]:
        """The installed versions of numpy and of the libraries that fit this kind (a library's own defaults,
        LightGBM's for the parameters payfm passes through, belong to its version)."""
        from importlib.metadata import version

        return {name: version(name) for name in ("numpy", *self.LIBRARIES)}

    # ---- to implement --------------------------------------------------------------------------------------
    @abstractmethod
    def _fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        w: np.ndarray,
        X_val: np.ndarray | None,
        y_val: np.ndarray | None,
    ) -> None: ...

    @abstractmethod
    def _raw(self, X: np.ndarray) -> np.ndarray:
        """Uncalibrated probabilities, (n,)."""

    @abstractmethod
    def _contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature contributions to the score (log-odds where possible), (n, d)."""

    @abstractmethod
    def _save(self, path: Path) -> None: ...

    @abstractmethod
    def _load(self, path: Path) -> None: ...

    @staticmethod
    def search_space(trial: Any) -> dict[str, Any]:
        """Hyperparameters to try for one Optuna trial (none by default)."""
        return {}

    # ---- the contract -------------------------------------------------------------------------------------
    def fit(
        self,
        X: ArrayLike,
        y: np.ndarray | Sequence[int],
        sample_weight: np.ndarray | None = None,
        X_val: ArrayLike | None = None,
        y_val: np.ndarray | Sequence[int] | None = None,
        *,
        feature_names: Sequence[str] | None = None,
        templates: dict[str, str] | None = None,
    ) -> Self:
        """Learn from ``X`` (n, d) and 0/1 labels ``y``; calibrate on (``X_val``, ``y_val``) when given.
        A calibration that cannot be fitted (no validation set, or one of a single class) is a
        :class:`CalibrationSkipped` warning, and the model keeps its raw scores.
        The parameters are checked first, as ``payfm train --param`` checks them (a ConfigError naming the
        first one wrong): a model built in Python took any (``GBDTModel(foo=3)``, an MLP of 0 units)."""
        from payfm.training.models.params import check_params

        who = f"{type(self).__name__}.fit"
        self.params = check_params(self.kind, self.params)
        if not is_train_seed(self.seed):
            raise ModelError(
                f"{who}: expected 'seed' an integer in [0, {MAX_TRAIN_SEED}]. Got {self.seed!r}."
            )
        Xm = as_matrix(X, who)
        ya = np.asarray(y, dtype=np.float64).ravel()
        if len(ya) != len(Xm):
            raise ModelError(f"{who}: expected one label per row ({len(Xm)}). Got {len(ya)} labels.")
        if len(ya) == 0 or not np.isin(ya, (0.0, 1.0)).all() or len(np.unique(ya)) < 2:
            raise ModelError(f"{who}: expected labels 0 and 1, both present. Got values {np.unique(ya)[:5]}.")
        w = np.ones(len(ya)) if sample_weight is None else _weights(sample_weight, len(ya), who)
        Xv = yv = None
        if (X_val is None) != (y_val is None):
            given, missing = ("X_val", "y_val") if y_val is None else ("y_val", "X_val")
            raise ModelError(f"{who}: expected X_val and y_val together. Got {given} without {missing}.")
        if X_val is not None and y_val is not None:
            Xv = as_matrix(X_val, who, Xm.shape[1])
            yv = np.asarray(y_val, dtype=np.float64).ravel()
            if len(yv) != len(Xv):
                raise ModelError(f"{who}: expected one validation label per row ({len(Xv)}). Got {len(yv)}.")
        names = list(feature_names) if feature_names is not None else [f"f{j}" for j in range(Xm.shape[1])]
        if len(names) != Xm.shape[1]:
            raise ModelError(f"{who}: expected {Xm.shape[1]} feature names. Got {len(names)}.")
        if any(j >= Xm.shape[1] for j in self.params.get("categorical", ())):
            raise ModelError(
                f"{who}: expected 'categorical' column indices below {Xm.shape[1]} (the columns of X). Got "
                f"{sorted(self.params['categorical'])}."
            )
        self.feature_names_ = names
        self.medians_ = nan_medians(Xm)
        self.templates_ = dict(templates or {})
        self._fit(Xm, ya, w, Xv, yv)
        self.calibrator_ = Calibrator("none")
        if self.calibration != "none":
            if Xv is None or yv is None or len(np.unique(yv)) < 2:
                why = (
                    "no validation set (X_val, y_val) was given"
                    if yv is None
                    else f"the validation labels hold one class only ({np.unique(yv)[:2].tolist()})"
                )
                warnings.warn(
                    f"{who}: not calibrated ({self.calibration!r} was asked): {why}. The model's raw scores "
                    "are its probabilities (saved so: calibrator 'none'). Pass X_val and y_val with both "
                    "classes, or calibration='none'.",
                    CalibrationSkipped,
                    stacklevel=2,
                )
            else:
                self.calibrator_ = Calibrator(self.calibration).fit(self._raw(Xv), yv)
        return self

    def _check(self, X: ArrayLike, who: str) -> np.ndarray:
        if not hasattr(self, "calibrator_"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet: call fit(X, y) or load a saved model first."
            )
        return as_matrix(X, f"{type(self).__name__}.{who}", len(self.feature_names_))

    def predict_raw(self, X: ArrayLike) -> np.ndarray:
        """Uncalibrated probabilities, (n,)."""
        return self._raw(self._check(X, "predict_raw"))

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Calibrated probabilities of the positive class, (n,)."""
        m = self._check(X, "predict_proba")
        return self.calibrator_.transform(self._raw(m))

    def predict_one(self, vector: Sequence[float | None]) -> float:
        """The calibrated probability of one feature vector (feature-set order), by the batch path."""
        return float(self.predict_proba([list(vector)])[0])

    def explain(self, X: ArrayLike, top_k: int = 3) -> list[list[Reason]]:
        """Per row, the ``top_k`` features pushing the score up most (largest positive contributions); 0 gives
        none (a decision service's ``top_k=0``)."""
        m = self._check(X, "explain")
        if not (isinstance(top_k, numbers.Integral) and not isinstance(top_k, bool) and top_k >= 0):
            # (a negative one sliced the ranking from its end: every reason but the last)
            raise ModelError(
                f"{type(self).__name__}.explain: expected 'top_k' an integer >= 0 (0: no reasons). "
                f"Got {top_k!r}."
            )
        contrib = self._contributions(m)
        k = min(top_k, m.shape[1])
        order = np.argsort(-contrib, axis=1, kind="stable")[:, :k]
        out: list[list[Reason]] = []
        for i in range(len(m)):
            row: list[Reason] = []
            for j in order[i]:
                c = float(contrib[i, j])
                if c <= 0:
                    break
                name = self.feature_names_[j]
                v = float(m[i, j])
                row.append(
                    Reason(
                        name,
                        None if math.isnan(v) else v,
                        float(self.medians_[j]),
                        c,
                        self.templates_.get(name, GENERIC),
                    )
                )
            out.append(row)
        return out

    def explain_one(self, vector: Sequence[float | None], top_k: int = 3) -> list[Reason]:
        """The top reasons of one feature vector."""
        return self.explain([list(vector)], top_k)[0]

    # ---- persistence --------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model into directory ``path``: ``model.json`` plus the model's binary files."""
        if not hasattr(self, "calibrator_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet: nothing to save.")
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": self.kind,
            "params": self.params,
            "calibration": self.calibration,
            "seed": self.seed,
            "feature_names": self.feature_names_,
            "medians": self.medians_.tolist(),
            "calibrator": self.calibrator_.to_json(),
            "templates": self.templates_,
        }
        self._save(p)
        atomic_write_bytes(p / "model.json", json.dumps(meta, indent=1, sort_keys=True).encode())
        return p


def _weights(sample_weight: Any, n: int, who: str) -> np.ndarray:
    """``sample_weight`` as float64, one per row, finite and >= 0 with a positive total; a ModelError naming
    it otherwise (a negative weight was taken silently, NaN blamed X in scikit-learn's words, all zero ended
    in a library traceback: found by a review)."""
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ModelError(f"{who}: expected 'sample_weight' numbers, one per row. Got {e}.") from None
    if w.shape != (n,):
        raise ModelError(f"{who}: expected one sample weight per row ({n}). Got {w.shape}.")
    bad = ~np.isfinite(w)
    if bad.any():
        got = f"{int(bad.sum())} NaN or infinite value(s), e.g. {w[bad][0]}"
    elif (w < 0).any():
        got = f"{int((w < 0).sum())} negative value(s), the least {w.min():g}"
    elif not w.sum() > 0:
        got = "a total of 0"
    else:
        return w
    raise ModelError(f"{who}: expected 'sample_weight' finite and >= 0 with a positive total. Got {got}.")


def load_model(path: str | Path) -> Model:
    """Load a model saved by :meth:`Model.save` (the class comes from ``model.json``'s ``kind``)."""
    from payfm.training.models import model_class

    p = Path(path)
    try:
        meta = json.loads((p / "model.json").read_text())
    except FileNotFoundError:
        raise ModelError(f"No saved model at '{p}': expected a directory with model.json.") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"'{p / 'model.json'}' is not valid JSON ({e}).") from None
    cls = model_class(str(meta["kind"]))
    m = cls(calibration=meta["calibration"], seed=int(meta["seed"]), **meta["params"])
    m.feature_names_ = list(meta["feature_names"])
    m.medians_ = np.asarray(meta["medians"], dtype=np.float64)
    m.templates_ = dict(meta.get("templates", {}))
    m._load(p)
    m.calibrator_ = Calibrator.from_json(meta["calibrator"])
    return m


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write named arrays as safetensors, atomically."""
    from safetensors.numpy import save

    atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        out: dict[str, np.ndarray] = load_file(str(path))
    except FileNotFoundError:
        raise ModelError(f"Model file '{path}' is missing.") from None
    return out
