"""Models against independent references: scikit-learn's own predictions, TreeSHAP's additivity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from payfm.training.calibration import Calibrator
from payfm.training.models.forest import ForestModel
from payfm.training.models.gbdt import GBDTModel
from payfm.training.models.linear import LogisticModel
from payfm.training.scores import ScoreLevels, risk_score, risk_scores


def data(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    X[rng.random(n) < 0.3, 1] = np.nan
    y = (X[:, 0] + 0.5 * np.nan_to_num(X[:, 1]) + rng.normal(size=n) > 1.5).astype(int)
    return X, y


@pytest.mark.parametrize("class_weight", ["balanced", None])
def test_forest_array_walk_equals_scikit_learn(class_weight: str | None) -> None:
    """The default balances the classes by weight: the frauds' weights scaled to the genuine total (here
    with the weights of negatives sampled at a half), each tree's leaf probabilities then scaled back (odds
    divided by that factor), so raw scores are probabilities of the data's own rate."""
    from sklearn.ensemble import RandomForestClassifier

    X, y = data()
    w = np.where(y == 1, 1.0, 2.0)
    params = {} if class_weight == "balanced" else {"class_weight": None}
    m = ForestModel(n_estimators=15, max_depth=7, n_jobs=1, calibration="none", seed=3, **params).fit(X, y, w)
    ref_w = np.where(y == 1, w[y == 0].sum() / (y == 1).sum(), w) if class_weight else w
    ref = RandomForestClassifier(  # (max_samples: payfm's share of max_rows, all rows of a small table)
        n_estimators=15,
        max_depth=7,
        min_samples_leaf=20,
        max_features=0.15,
        n_jobs=1,
        random_state=3,
        max_samples=1.0,
    ).fit(np.where(np.isnan(X), m.medians_, X), y, sample_weight=ref_w)
    Xt, _ = data(500, 1)
    Xti = np.where(np.isnan(Xt), m.medians_, Xt)
    factor = w[y == 0].sum() / w[y == 1].sum() if class_weight else 1.0
    per_tree = [e.predict_proba(Xti)[:, 1] for e in ref.estimators_]
    expected = np.mean([p / (p + factor * (1 - p)) for p in per_tree], axis=0)
    np.testing.assert_allclose(m.predict_raw(Xt), expected, atol=1e-12)
    if class_weight:  # probabilities on the data's scale: the mean score near the (weighted) fraud rate
        rate = np.average(y, weights=w)
        assert abs(np.average(m.predict_raw(X), weights=w) - rate) < 0.25 * rate


def test_forest_path_contributions_add_up_to_the_prediction() -> None:
    X, y = data()
    m = ForestModel(n_estimators=10, n_jobs=1, calibration="none").fit(X, y)
    c = m._contributions(X[:50])
    bias = m.value_[m.roots_].mean()
    np.testing.assert_allclose(c.sum(axis=1) + bias, m.predict_raw(X[:50]), atol=1e-12)


@pytest.mark.parametrize("transform", ["symlog", "none"])
def test_linear_model_matches_scikit_learn_pipeline(transform: str) -> None:
    """Median imputation, the signed log (or none), a clip to the training range, standard scaling, LR."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    X, y = data()
    X[:, 0] = np.exp(2 * X[:, 0])  # a heavy tail, where the transform matters
    m = LogisticModel(calibration="none", C=0.5, transform=transform).fit(X, y)
    signed_log = (lambda a: np.sign(a) * np.log1p(np.abs(a))) if transform == "symlog" else (lambda a: a)
    seen = signed_log(SimpleImputer(strategy="median").fit_transform(X))
    lo, hi = seen.min(axis=0), seen.max(axis=0)
    ref = make_pipeline(
        SimpleImputer(strategy="median"),
        FunctionTransformer(lambda a: np.clip(signed_log(a), lo, hi)),
        StandardScaler(),
        LogisticRegression(C=0.5),
    ).fit(X, y)
    Xt, _ = data(400, 2)
    Xt[:, 0] = np.exp(2.5 * Xt[:, 0])  # some rows beyond the training range: clipped alike
    assert (Xt[:, 0] > X[:, 0].max()).any()
    np.testing.assert_allclose(m.predict_raw(Xt), ref.predict_proba(Xt)[:, 1], atol=1e-5)


def test_linear_one_hot_of_a_categorical_column() -> None:
    rng = np.random.default_rng(0)
    cat = rng.integers(0, 3, 3000).astype(float)
    X = np.column_stack([rng.normal(size=3000), cat])
    y = ((cat == 1) & (rng.random(3000) < 0.6)).astype(int)  # not monotone in the code: needs one-hot
    m = LogisticModel(calibration="none", categorical=[1]).fit(X, y)
    p = m.predict_raw(np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]]))
    assert p[1] > 0.4 and p[0] < 0.05 and p[2] < 0.05


def test_gbdt_shap_contributions_are_exact_treeshap() -> None:
    X, y = data()
    m = GBDTModel(n_estimators=40, num_threads=1, calibration="none", explanations="shap").fit(X, y)
    full = m.booster_.predict(X[:100], pred_contrib=True)
    margin = m.booster_.predict(X[:100], raw_score=True)
    np.testing.assert_allclose(m._contributions(X[:100]).sum(axis=1) + full[:, -1], margin, atol=1e-9)
    # the single-charge fast path gives the batch row's values
    for i in (0, 17, 99):
        np.testing.assert_allclose(m._contributions(X[i : i + 1])[0], full[i, :-1], atol=1e-12)
        assert m._raw(X[i : i + 1])[0] == pytest.approx(m._raw(X[:100])[i], abs=1e-12)


def _saabas_by_walking(dump: dict, x: np.ndarray) -> np.ndarray:
    """Reference: walk every dumped tree with LightGBM's numerical split rule (NaN -> default side when the
    missing type is NaN, else as 0) and credit each split's feature with the change of the node value."""
    out = np.zeros(len(x))
    for info in dump["tree_info"]:
        node = info["tree_structure"]
        while "split_feature" in node:
            f = node["split_feature"]
            v = x[f]
            if np.isnan(v) and node["missing_type"] == "NaN":
                left = node["default_left"]
            else:
                left = (0.0 if np.isnan(v) else v) <= node["threshold"]
            child = node["left_child" if left else "right_child"]
            value = child["internal_value"] if "split_feature" in child else child["leaf_value"]
            out[f] += value - node["internal_value"]
            node = child
    return out


def test_gbdt_path_contributions_equal_a_tree_walk_and_add_up_to_the_log_odds() -> None:
    X, y = data()
    m = GBDTModel(n_estimators=40, num_threads=1, calibration="none").fit(X, y)
    assert m.params["explanations"] == "path"  # the default, recorded with the fitted model
    c = m._contributions(X[:200])
    dump = m.booster_.dump_model()
    for i in range(200):
        np.testing.assert_allclose(c[i], _saabas_by_walking(dump, X[i]), atol=1e-12)
        if i % 40 == 0:  # the single-charge fast path gives the batch row's values
            np.testing.assert_allclose(m._contributions(X[i : i + 1])[0], c[i], atol=1e-12)
    roots = sum(t["tree_structure"]["internal_value"] for t in dump["tree_info"])
    margin = m.booster_.predict(X[:200], raw_score=True)
    np.testing.assert_allclose(c.sum(axis=1) + roots, margin, atol=1e-9)
    # both methods agree on the direction of the strongest feature of a clearly risky row
    shap = GBDTModel(n_estimators=40, num_threads=1, calibration="none", explanations="shap").fit(X, y)
    risky = np.array([[3.0, 2.0, 0.0, 0.0, 0.0]])
    assert m.explain(risky)[0][0].feature == shap.explain(risky)[0][0].feature == "f0"


def test_gbdt_explanation_method_is_validated_and_saved(tmp_path: Path) -> None:
    from payfm.training.models.base import ModelError, load_model

    with pytest.raises(ModelError, match=r"'explanations' must be one of path, shap\. Got 'lime'"):
        GBDTModel(explanations="lime")
    X, y = data()
    m = GBDTModel(n_estimators=10, num_threads=1, calibration="none", explanations="shap").fit(X, y)
    loaded = load_model(m.save(tmp_path / "m"))
    shap = m.booster_.predict(X[:5], pred_contrib=True)[:, :-1]
    np.testing.assert_allclose(loaded._contributions(X[:5]), shap)


def test_gbdt_early_stops_on_validation() -> None:
    X, y = data()
    Xv, yv = data(2000, 5)
    m = GBDTModel(n_estimators=2000, learning_rate=0.3, early_stopping=10, num_threads=1).fit(
        X, y, None, Xv, yv
    )
    assert m.best_iteration_ < 300
    assert m.booster_.current_iteration() == m.best_iteration_


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_is_monotone_round_trips_and_fixes_a_skew(method: str) -> None:
    rng = np.random.default_rng(0)
    true = rng.random(20000) * 0.2
    y = (rng.random(20000) < true).astype(int)
    raw = np.sqrt(true)  # a monotone but badly calibrated score
    c = Calibrator(method).fit(raw, y)
    grid = np.linspace(0, 1, 50)
    out = c.transform(grid)
    assert (np.diff(out) >= -1e-12).all() and (out >= 0).all() and (out <= 1).all()
    np.testing.assert_array_equal(Calibrator.from_json(c.to_json()).transform(grid), out)
    assert abs(c.transform(raw).mean() - y.mean()) < 0.005 < abs(raw.mean() - y.mean())


def test_isotonic_never_calls_a_scored_charge_impossible() -> None:
    """An audit found a fifth of a small world's test charges at probability 0 (frauds among them): the
    lowest isotonic block saw no fraud in validation. It now says half a fraud over its rows."""
    rng = np.random.default_rng(1)
    raw = rng.random(10_000)
    y = ((raw > 0.3) & (rng.random(10_000) < 0.02)).astype(int)  # no fraud below 0.3
    c = Calibrator("isotonic").fit(raw, y)
    low = c.transform(np.array([0.0, 0.1, 0.29]))
    block = int((raw <= 0.3).sum())
    assert np.all(low > 0) and low[0] == pytest.approx(0.5 / block, rel=0.05)
    out = c.transform(np.sort(raw))
    assert (np.diff(out) >= 0).all() and out[-1] > 0.01  # still monotone, the rest as fitted
    # weights count as rows: downsampled negatives weighted back up make the block as large as it was
    w = np.where(y == 1, 1.0, 2.0)
    assert Calibrator("isotonic").fit(raw, y, w).transform(np.array([0.0]))[0] == pytest.approx(
        0.5 / (2 * block), rel=0.05
    )


def test_the_isotonic_floor_stays_below_the_next_block() -> None:
    """A lowest block of 2 rows would say half a fraud in 2 (0.25), above the next block (1%): capped at
    half the next block's value, the map still orders them."""
    raw = np.r_[0.1, 0.2, np.full(100, 0.5)]
    y = np.r_[0, 0, 1, np.zeros(99, dtype=int)]
    c = Calibrator("isotonic").fit(raw, y)
    low, next_block = c.transform(np.array([0.1, 0.5]))
    assert 0 < low == pytest.approx(next_block / 2) and next_block == pytest.approx(0.01)


def test_risk_score_and_levels() -> None:
    assert risk_score(1e-5) == 0 and risk_score(1.0) == 100 and risk_score(0.01) == 50
    assert (np.diff(risk_scores(np.linspace(0, 1, 100))) >= 0).all()
    levels = ScoreLevels()
    assert [levels.level(s) for s in (64.9, 65, 74.9, 75)] == ["normal", "elevated", "elevated", "highest"]
    assert ScoreLevels(elevated=50, highest=90).level(60) == "elevated"
    with pytest.raises(Exception, match="elevated <= highest"):
        ScoreLevels(elevated=80, highest=70)


def test_gbdt_passes_other_lightgbm_parameters_through() -> None:
    X, y = data()
    m = GBDTModel(n_estimators=10, num_threads=1, max_depth=2, calibration="none").fit(X, y)
    assert all(t["num_leaves"] <= 4 for t in m.booster_.dump_model()["tree_info"])


def test_gbdt_saved_before_the_explanations_parameter_keeps_treeshap(tmp_path: Path) -> None:
    """A model saved without ``explanations`` was validated with TreeSHAP reasons: loading it keeps them."""
    import json

    from payfm.training.models.base import load_model

    X, y = data()
    m = GBDTModel(n_estimators=10, num_threads=1, calibration="none").fit(X, y)
    saved = m.save(tmp_path / "m")
    meta = json.loads((saved / "model.json").read_text())
    assert meta["params"]["explanations"] == "path"
    del meta["params"]["explanations"]  # as an older payfm wrote it
    (saved / "model.json").write_text(json.dumps(meta))
    old = load_model(saved)
    assert old.effective_params()["explanations"] == "shap"  # what it explains with, were it registered
    np.testing.assert_allclose(
        old._contributions(X[:5]), m.booster_.predict(X[:5], pred_contrib=True)[:, :-1]
    )


def test_gbdt_linear_trees_are_refused_they_cannot_be_explained() -> None:
    from payfm.errors import ConfigError

    X, y = data()
    for method in ("path", "shap"):  # (refused by the parameter check fit begins with, as --param is)
        with pytest.raises(
            ConfigError, match=r"'linear_tree': set by payfm \(a linear leaf's output cannot be"
        ):
            GBDTModel(n_estimators=5, num_threads=1, linear_tree=True, explanations=method).fit(X, y)


@pytest.mark.parametrize(
    ("kind", "params", "said"),
    [
        ("gbdt", {"foo": 3}, "gbdt parameter 'foo'"),
        (
            "gbdt",
            {"num_leaves": 1},
            "gbdt parameter 'num_leaves': expected an integer in [2, 131072]. Got 1.",
        ),
        ("mlp", {"hidden": 1}, "mlp parameter 'hidden'"),
        (
            "lr",
            {"categorical": [5]},
            "expected 'categorical' column indices below 4 (the columns of X). Got [5].",
        ),
    ],
)
def test_a_model_built_in_python_checks_its_parameters_when_it_fits(
    kind: str, params: dict[str, object], said: str
) -> None:
    """Found by an ML engineer's audit: GBDTModel(foo=3) was accepted, an MLP of hidden=1 fitted with a
    second layer of 0 units, LogisticModel(categorical=[5]) was an IndexError: the CLI checked them, the
    contract did not."""
    from payfm.errors import PayfmError
    from payfm.training.models import model_class

    X, y = data()
    with pytest.raises(PayfmError) as e:  # (a ConfigError, or a ModelError for X's own width)
        model_class(kind)(**params).fit(X[:, :4], y)
    assert said in str(e.value)


def test_gbdt_path_contributions_of_many_rows_come_in_bounded_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import payfm.training.models.gbdt as gbdt

    X, y = data()
    m = GBDTModel(n_estimators=30, num_threads=1, calibration="none").fit(X, y)
    whole = m._contributions(X[:500])
    monkeypatch.setattr(gbdt, "_PATH_BUDGET", 1)  # one row per chunk
    np.testing.assert_allclose(m._contributions(X[:500]), whole, atol=1e-12)
