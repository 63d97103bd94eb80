"""Each kind's defaults live in one place (``Model.DEFAULTS``), the fit reads them from there, and a fitted
model's effective parameters rebuild it after the defaults change; a calibration the fit cannot do is said."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from payfm.training.models import MODEL_KINDS, ModelError, model_class
from payfm.training.models.base import CalibrationSkipped
from payfm.training.models.params import check_params

GIVEN = {
    "lr": {"C": 0.5},
    "rf": {"n_estimators": 7, "n_jobs": 1},
    "gbdt": {"n_estimators": 25, "num_threads": 1, "max_bin": 31},  # max_bin: a LightGBM pass-through
    "mlp": {"epochs": 2, "hidden": 8},
}
# other defaults, changed together to show that the effective parameters pin every one of them
OTHERS = {
    "lr": {"max_iter": 1000, "transform": "none", "class_weight": "balanced"},
    "rf": {"max_depth": 2, "min_samples_leaf": 300, "max_features": 1.0, "class_weight": None},
    "gbdt": {"learning_rate": 0.3, "num_leaves": 3, "min_child_samples": 5, "feature_fraction": 0.3},
    "mlp": {"lr": 0.05, "dropout": 0.5, "batch_size": 64, "transform": "none"},
}


def problem(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.lognormal(size=(n, 4))
    y = (rng.random(n) < 1 / (1 + np.exp(4.0 - 1.5 * np.log(X[:, 0]) - 0.5 * X[:, 1]))).astype(int)
    return X, y


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_defaults_cover_every_parameter_and_pass_the_checks(kind: str) -> None:
    cls = model_class(kind)
    assert set(cls.DEFAULTS) == set(cls.PARAMS)
    assert check_params(kind, cls.DEFAULTS) == cls.DEFAULTS  # effective parameters go back through --param


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_effective_params_rebuild_the_model_after_the_defaults_change(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = model_class(kind)
    X, y = problem(3000, 0)
    Xv, yv = problem(1500, 1)
    Xt, _ = problem(500, 2)
    first = cls(seed=0, **GIVEN[kind]).fit(X, y, None, Xv, yv)
    effective = first.effective_params()
    assert effective == {**cls.DEFAULTS, **GIVEN[kind]}
    for value in first.effective_params().values():  # a copy: a caller's edit reaches no default
        if isinstance(value, list):
            value.append(3)
    assert (
        first.effective_params()
        == {**cls.DEFAULTS, **GIVEN[kind]}
        == {**model_class(kind).DEFAULTS, **GIVEN[kind]}
    )
    assert all(3 not in v for v in cls.DEFAULTS.values() if isinstance(v, list))
    monkeypatch.setattr(cls, "DEFAULTS", {**cls.DEFAULTS, **OTHERS[kind]})  # a later payfm's defaults
    changed = cls(seed=0, **GIVEN[kind]).fit(X, y, None, Xv, yv).predict_proba(Xt)
    assert not np.allclose(changed, first.predict_proba(Xt))  # the defaults do reach the fit
    rebuilt = cls(seed=0, **effective).fit(X, y, None, Xv, yv)
    np.testing.assert_array_equal(rebuilt.predict_proba(Xt), first.predict_proba(Xt))


def test_the_fit_reads_each_default_from_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = problem(3000, 0)
    cls = model_class("gbdt")
    monkeypatch.setattr(cls, "DEFAULTS", {**cls.DEFAULTS, "num_leaves": 2})
    m = cls(seed=0, n_estimators=5, num_threads=1, calibration="none").fit(X, y)
    assert {t["num_leaves"] for t in m.booster_.dump_model()["tree_info"]} == {2}
    assert m.effective_params()["num_leaves"] == 2
    rf = model_class("rf")
    monkeypatch.setattr(rf, "DEFAULTS", {**rf.DEFAULTS, "n_estimators": 3, "max_depth": 1})
    f = rf(seed=0, n_jobs=1, calibration="none").fit(X, y)
    assert f.left_[f.left_ >= 0].size == 3  # three stumps: one split each


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_a_calibration_that_cannot_be_fitted_is_a_warning(kind: str) -> None:
    cls = model_class(kind)
    X, y = problem(2000, 0)
    with pytest.warns(
        CalibrationSkipped, match=r"not calibrated \('isotonic' was asked\): no validation set"
    ):
        m = cls(seed=0, **GIVEN[kind]).fit(X, y)
    np.testing.assert_array_equal(m.predict_proba(X[:50]), m.predict_raw(X[:50]))
    with pytest.warns(CalibrationSkipped, match=r"the validation labels hold one class only \(\[0\.0\]\)"):
        cls(seed=0, **GIVEN[kind]).fit(X, y, None, X[:100], np.zeros(100))
    with warnings.catch_warnings():  # asked for none, or given what it needs: no warning
        warnings.simplefilter("error")
        cls(seed=0, calibration="none", **GIVEN[kind]).fit(X, y)
        cls(seed=0, **GIVEN[kind]).fit(X, y, None, X, y)


def test_validation_features_and_labels_go_together() -> None:
    cls = model_class("lr")
    X, y = problem(500, 0)
    with pytest.raises(ModelError, match=r"expected X_val and y_val together\. Got X_val without y_val\."):
        cls().fit(X, y, None, X, None)
    with pytest.raises(ModelError, match=r"expected X_val and y_val together\. Got y_val without X_val\."):
        cls().fit(X, y, None, None, y)
    with pytest.raises(ModelError, match=r"expected one validation label per row \(500\)\. Got 499\."):
        cls().fit(X, y, None, X, y[:-1])
