"""The numeric inputs of the logistic regression and the MLP: signed log, training-range clip, back-compat."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from scipy.special import expit
from sklearn.metrics import average_precision_score

from payfm.errors import ConfigError
from payfm.training.models import load_model, model_class
from payfm.training.models.scaling import Scaling, symlog

FAST = {"lr": {}, "mlp": {"epochs": 8, "hidden": 16}}


def heavy_tailed(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two counts spread over five orders of magnitude whose logs add up to the fraud log-odds, and noise:
    a linear score of the raw counts is dominated by the largest values of either."""
    rng = np.random.default_rng(seed)
    a, b = np.exp(rng.normal(2, 3, n)).round(), np.exp(rng.normal(2, 3, n)).round()
    X = np.column_stack([a, b, rng.normal(size=n)])
    y = (rng.random(n) < expit(-6.0 + 0.6 * (np.log1p(a) + np.log1p(b)))).astype(int)
    return X, y


def test_symlog_keeps_order_and_sign() -> None:
    x = np.array([-1e9, -5.0, -0.5, 0.0, 0.5, 5.0, 1e9])
    t = symlog(x)
    assert (np.diff(t) > 0).all() and (np.sign(t) == np.sign(x)).all()
    np.testing.assert_allclose(t, -symlog(-x))
    assert t[-1] == pytest.approx(np.log1p(1e9))


@pytest.mark.parametrize("kind", ["lr", "mlp"])
def test_the_signed_log_ranks_heavy_tailed_counts_better_than_raw_values(kind: str) -> None:
    X, y = heavy_tailed(8000, 0)
    Xv, yv = heavy_tailed(4000, 1)
    Xt, yt = heavy_tailed(8000, 2)
    ap = {}
    for transform in ("symlog", "none"):
        m = model_class(kind)(seed=0, transform=transform, **FAST[kind]).fit(X, y, None, Xv, yv)
        ap[transform] = average_precision_score(yt, m.predict_raw(Xt))
    assert ap["symlog"] > 0.5 and ap["symlog"] > ap["none"] + 0.08, ap  # (0.64 / 0.52 lr, 0.55 / 0.39 mlp)


@pytest.mark.parametrize("kind", ["lr", "mlp"])
@pytest.mark.parametrize("transform", ["symlog", "none"])
def test_a_value_beyond_the_training_range_scores_as_the_training_extreme(kind: str, transform: str) -> None:
    X, y = heavy_tailed(3000, 0)
    m = model_class(kind)(seed=0, transform=transform, calibration="none", **FAST[kind]).fit(X, y)
    row = np.array([[5.0, 7.0, 0.3]])
    top, far = row.copy(), row.copy()
    top[0, 0], far[0, 0] = X[:, 0].max(), X[:, 0].max() * 1e6
    bottom, below = row.copy(), row.copy()
    bottom[0, 2], below[0, 2] = X[:, 2].min(), X[:, 2].min() - 1e6
    assert m.predict_raw(far)[0] == m.predict_raw(top)[0]
    assert m.predict_raw(below)[0] == m.predict_raw(bottom)[0]
    inside = row.copy()
    inside[0, 0] = X[:, 0].max() / 2  # within the range the feature still moves the score
    assert m.predict_raw(inside)[0] != m.predict_raw(top)[0]


def test_the_scaling_is_saved_with_the_model_and_read_back(tmp_path: Path) -> None:
    X, y = heavy_tailed(3000, 0)
    m = model_class("lr")(seed=0, calibration="none").fit(X, y)
    m.save(tmp_path / "m")
    arrays = load_file(str(tmp_path / "m" / "linear.safetensors"))
    assert arrays["symlog"].tolist() == [1]
    np.testing.assert_allclose(arrays["hi"], symlog(X).max(axis=0))
    loaded = load_model(tmp_path / "m")
    Xt, _ = heavy_tailed(500, 3)
    Xt[0, 0] = 1e15
    np.testing.assert_array_equal(loaded.predict_proba(Xt), m.predict_proba(Xt))


@pytest.mark.parametrize("kind", ["lr", "mlp"])
def test_a_model_saved_before_the_transform_scores_as_it_did(kind: str, tmp_path: Path) -> None:
    """Files written before the transform hold only mean and scale: raw, unclipped standardization."""
    X, y = heavy_tailed(3000, 0)
    m = model_class(kind)(seed=0, transform="none", calibration="none", **FAST[kind]).fit(X, y)
    m.save(tmp_path / "m")
    name = "linear.safetensors" if kind == "lr" else "mlp.safetensors"
    arrays = load_file(str(tmp_path / "m" / name))
    old = {k: v for k, v in arrays.items() if k not in ("lo", "hi", "symlog")}
    save_file(old, str(tmp_path / "m" / name))
    loaded = load_model(tmp_path / "m")
    assert not loaded.scaling_.symlog and np.isinf(loaded.scaling_.hi).all()  # type: ignore[attr-defined]
    far = np.array([[5.0, 1.0, X[:, 2].max() + 8]])  # (the MLP's own z clip at 20 is further out)
    z = (far - arrays["mean"]) / arrays["scale"]  # the old formula, no clip
    if kind == "lr":
        expected = expit(z @ arrays["coef"] + arrays["intercept"][0])
        np.testing.assert_allclose(loaded.predict_raw(far), expected, rtol=1e-6)
    assert loaded.predict_raw(far)[0] != m.predict_raw(far)[0]  # the new model clips; the old one did not


def test_weighted_standardization_uses_the_weights() -> None:
    filled = np.array([[0.0], [10.0]])
    s = Scaling.fit(filled, np.array([3.0, 1.0]), "none")
    assert s.mean[0] == pytest.approx(2.5) and s.scale[0] == pytest.approx(np.sqrt(18.75))
    assert (s.lo[0], s.hi[0]) == (0.0, 10.0)


@pytest.mark.parametrize("kind", ["lr", "mlp"])
def test_an_unknown_transform_is_refused_naming_the_choices(kind: str) -> None:
    X, y = heavy_tailed(500, 0)
    with pytest.raises(ConfigError, match=r"'symlog' or 'none'\. Got 'log'"):
        model_class(kind)(transform="log").fit(X, y)


def test_balanced_weights_give_both_classes_the_same_total_weight() -> None:
    from payfm.training.models.base import balanced_weights

    y = np.array([1, 0, 0, 0, 1])
    w = np.array([1.0, 10.0, 10.0, 10.0, 2.0])  # negatives sampled at 10%, weighted back
    out = balanced_weights(y, w)
    assert out[y == 1].sum() == pytest.approx(out[y == 0].sum()) == pytest.approx(30.0)
    np.testing.assert_array_equal(out[y == 0], w[y == 0])
    assert out[4] == pytest.approx(2 * out[0])  # the positives keep their relative weights
    np.testing.assert_array_equal(balanced_weights(np.zeros(3), np.ones(3)), np.ones(3))  # one class: as is


def test_lr_class_weight_balanced_counts_the_sample_weights() -> None:
    """scikit-learn's 'balanced' counts rows; payfm's counts weight, so sampled negatives count in full."""
    from sklearn.linear_model import LogisticRegression

    X, y = heavy_tailed(3000, 0)
    w = np.where(y == 1, 1.0, 10.0)
    m = model_class("lr")(class_weight="balanced", calibration="none", transform="none").fit(X, y, w)
    design = m._design(np.asarray(X, dtype=np.float32))  # type: ignore[attr-defined]
    scaled = np.where(y == 1, w[y == 0].sum() / (y == 1).sum(), w)
    ref = LogisticRegression(max_iter=300).fit(design, y, sample_weight=scaled)
    np.testing.assert_allclose(m.coef_, ref.coef_[0], rtol=1e-4, atol=1e-6)  # type: ignore[attr-defined]
    # the balanced odds divided back by the factor: probabilities of the data's own (weighted) rate
    factor = w[y == 0].sum() / w[y == 1].sum()
    intercept = m.intercept_  # type: ignore[attr-defined]
    assert intercept == pytest.approx(ref.intercept_[0] - np.log(factor), abs=1e-4)


@pytest.mark.parametrize("kind", ["lr", "mlp"])
def test_an_infinite_training_value_does_not_poison_the_model(kind: str) -> None:
    """An infinite value (a ratio's division by 0) made every statistic of its column infinite or NaN, and
    the MLP's every score NaN; the statistics now come from the finite values, and +-inf clip to the range."""
    X, y = heavy_tailed(3000, 0)
    X[5, 0], X[6, 2] = np.inf, -np.inf
    m = model_class(kind)(seed=0, calibration="none", **FAST[kind]).fit(X, y)
    s = m.scaling_  # type: ignore[attr-defined]
    assert np.isfinite(s.mean).all() and np.isfinite(s.scale).all() and np.isfinite(s.hi).all()
    Xt, _ = heavy_tailed(200, 1)
    Xt[0, 0] = np.inf
    p = m.predict_raw(Xt)
    assert np.isfinite(p).all()
    top = Xt[:1].copy()
    top[0, 0] = np.nanmax(np.where(np.isfinite(X[:, 0]), X[:, 0], np.nan))
    assert p[0] == m.predict_raw(top)[0]  # +inf scores as the largest finite training value
