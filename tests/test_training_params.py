"""Model parameters (`payfm train --param`, `TrainConfig.params`): checked before any work, read in the type
each parameter has, recorded with the model, kept fixed by the search; LightGBM's own parameters pass
through to the GBDT, checked against LightGBM's names and values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.registry import Registry
from payfm.synth import WorldConfig, generate_world
from payfm.training.models import model_class
from payfm.training.models.params import check_params, parse_assignment
from payfm.training.tasks import task
from payfm.training.trainer import TrainConfig, train
from payfm.training.tuning import tune

SPLIT = ["--set", "tiny", "--horizon-days", "10", "--val-days", "7", "--test-days", "7", "--gap-days", "3"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    w = Workspace.open(tmp_path_factory.mktemp("world"), create=True)
    w.write_stream(generate_world(WorldConfig(charges=20_000, days=40, seed=5, fraud_rate=0.03)), "replace")
    return w


def _run(ws: Workspace, *args: str) -> Any:
    return CliRunner().invoke(cli, ["-w", str(ws.root), "train", *SPLIT, *args])


def test_values_are_read_in_each_parameters_type() -> None:
    assert check_params("gbdt", {"n_estimators": "25", "learning_rate": "0.1", "max_bin": "63"}) == {
        "n_estimators": 25,
        "learning_rate": 0.1,
        "max_bin": 63,  # a LightGBM parameter: read as an int, a float, true/false or text
    }
    assert check_params("gbdt", {"extra_trees": "true", "boosting": "goss"}) == {
        "extra_trees": True,
        "boosting": "goss",
    }
    assert check_params("rf", {"max_features": 1}) == {"max_features": 1.0}  # an int where a float goes
    assert check_params("lr", {"C": "0.5", "categorical": "3,1"}) == {"C": 0.5, "categorical": [3, 1]}
    assert parse_assignment("gbdt.max_bin = 63") == ("gbdt", "max_bin", "63")
    assert parse_assignment("n_estimators=200") == (None, "n_estimators", "200")


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        (
            "rf",
            {"n_estimatorz": 3},
            "rf parameter 'n_estimatorz': expected one of class_weight, max_depth, max_features, max_rows, "
            "min_samples_leaf, n_estimators, n_jobs. Got 'n_estimatorz'. Did you mean 'n_estimators'?",
        ),
        ("rf", {"n_estimators": "many"}, "rf parameter 'n_estimators': expected an integer. Got 'many'."),
        ("mlp", {"epochs": 2.5}, "mlp parameter 'epochs': expected an integer. Got 2.5."),
        ("gbdt", {"num_leaves": True}, "gbdt parameter 'num_leaves': expected an integer. Got True."),
        ("gbdt", {"n_estimatorz": 3}, "Did you mean 'n_estimators'?"),
        (
            "gbdt",
            {"num_trees": 3},
            "gbdt parameter 'num_trees': LightGBM's alias of payfm's 'n_estimators'; "
            "set n_estimators instead.",
        ),
        ("gbdt", {"min_data_in_leaf": 5}, "LightGBM's alias of payfm's 'min_child_samples'"),
        (
            "gbdt",
            {"objective": "regression"},
            "gbdt parameter 'objective': set by payfm (payfm trains a binary "
            "classifier). Got objective='regression'.",
        ),
        ("gbdt", {"seed": 3}, "set by payfm (use --seed"),
        (
            "gbdt",
            {"max_bin": "lots"},
            "LightGBM refused the GBDT parameters max_bin='lots': Parameter max_bin "
            'should be of type int, got "lots".',
        ),
        (
            "gbdt",
            {"bagging_fraction": 2.0},
            "LightGBM refused the GBDT parameters bagging_fraction=2.0: Check "
            "failed: (bagging_fraction) <= (1.0).",
        ),
    ],
)
def test_a_bad_parameter_is_one_clear_error(
    kind: str, params: dict[str, Any], message: str, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError) as e:
        check_params(kind, params)
    assert message in str(e.value)
    assert capfd.readouterr().err == ""  # LightGBM's C++ prints its refusal: not here


def test_a_bad_parameter_stops_training_before_the_data_is_read(ws: Workspace, tmp_path: Path) -> None:
    stages: list[str] = []
    cfg = TrainConfig(horizon_days=10, val_days=7, test_days=7, gap_days=3, params={"gbdt": {"max_bn": 63}})
    with pytest.raises(ConfigError, match="Did you mean 'max_bin'"):
        train(ws, "gbdt", task("fraud"), tiny_set(), cfg, lambda stage, done, total: stages.append(stage))
    assert stages == []  # refused first: no stage of the task's data began


def test_a_categorical_column_past_the_feature_set_stops_training_before_the_data_is_read(
    ws: Workspace,
) -> None:
    """Found by an ML engineer's audit: lr.categorical=200 on 158 features was an IndexError traceback after
    the data was read."""
    stages: list[str] = []
    n = len(tiny_set().names)
    cfg = TrainConfig(
        horizon_days=10, val_days=7, test_days=7, gap_days=3, params={"lr": {"categorical": [0, n]}}
    )
    with pytest.raises(ConfigError) as e:
        train(ws, "lr", task("fraud"), tiny_set(), cfg, lambda stage, done, total: stages.append(stage))
    assert str(e.value) == (
        f"lr parameter 'categorical': expected indices of feature columns, 0 to {n - 1} (feature set 'tiny' "
        f"has {n} features: `payfm features list --set tiny` lists them in order). Got {n}."
    )
    assert stages == []


def test_cli_param_reaches_the_model_and_the_registry(ws: Workspace) -> None:
    r = _run(ws, "--param", "n_estimators=7", "--param", "max_bin=15", "--param", "gbdt.num_leaves=5")
    assert r.exit_code == 0, r.output
    version = Registry(ws).get("fraud-gbdt")
    assert version.entry["params"] == {"n_estimators": 7, "max_bin": 15, "num_leaves": 5}
    _, model = Registry(ws).load("fraud-gbdt", tiny_set())
    assert model.booster_.num_trees() <= 7  # early stopping may stop sooner, never later
    dump = model.booster_.dump_model()
    assert all(t["num_leaves"] <= 5 for t in dump["tree_info"])
    assert "[max_bin: 15]" in model.model_text_  # LightGBM's record of the parameters it trained with


def test_cli_param_without_a_kind_goes_to_the_kinds_that_take_it(ws: Workspace) -> None:
    r = _run(
        ws, "--model", "all", "--param", "n_estimators=9", "--param", "lr.C=0.25", "--param", "mlp.epochs=1"
    )
    assert r.exit_code == 0, r.output
    reg = Registry(ws)
    assert reg.get("fraud-rf").entry["params"] == {"n_estimators": 9}
    assert reg.get("fraud-gbdt").entry["params"] == {"n_estimators": 9}
    assert reg.get("fraud-lr").entry["params"] == {"C": 0.25}
    assert reg.get("fraud-mlp").entry["params"] == {"epochs": 1}
    # and what each fit used, defaults included, with the libraries' versions: what rebuilds the model after
    # a later payfm changes a default (tests/test_models_defaults.py rebuilds from them)
    libraries = {"rf": "scikit-learn", "gbdt": "lightgbm", "lr": "scikit-learn", "mlp": "torch"}
    for kind, given in [("rf", {"n_estimators": 9}), ("gbdt", {"n_estimators": 9}), ("lr", {"C": 0.25})]:
        entry = reg.get(f"fraud-{kind}").entry
        assert entry["effective_params"] == {**model_class(kind).DEFAULTS, **given}
        assert set(entry["libraries"]) == {"numpy", libraries[kind]}
    assert reg.get("fraud-rf").entry["effective_params"]["class_weight"] == "balanced"
    assert reg.get("fraud-mlp").entry["effective_params"]["epochs"] == 1
    assert reg.get("fraud-mlp").entry["effective_params"]["hidden"] == model_class("mlp").DEFAULTS["hidden"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--param", "n_estimators"], "'--param': expected [KIND.]NAME=VALUE, e.g. n_estimators=200"),
        (
            ["--param", "rf.max_depth=3"],
            "expected a kind this run trains (gbdt). Got 'rf' in 'rf.max_depth=3'.",
        ),
        (
            ["--model", "all", "--param", "max_bin=63"],
            "no model kind of this run takes 'max_bin' as payfm "
            "names it: write KIND.max_bin=63 (gbdt.max_bin for a LightGBM parameter).",
        ),
        (["--param", "n_estimators=lots"], "gbdt parameter 'n_estimators': expected an integer. Got 'lots'."),
        (  # checked against the feature set's columns (it was an exit 1, after the options)
            ["--model", "lr", "--param", "lr.categorical=999"],
            "lr parameter 'categorical': expected indices of feature columns, 0 to 3",
        ),
        (  # (the last one won, silently)
            ["--param", "n_estimators=50", "--param", "gbdt.n_estimators=80"],
            "gbdt.n_estimators is given twice: '50' and '80'. Expected one value.",
        ),
    ],
)
def test_cli_param_mistakes_are_one_line_errors(ws: Workspace, args: list[str], said: str) -> None:
    r = _run(ws, *args)
    assert r.exit_code == 2 and said in " ".join(r.output.split()), r.output  # a usage error, each alike
    assert "Invalid value for '--param'" in r.output and "Traceback" not in r.output


def test_a_text_parameter_takes_none_as_its_message_offers_it() -> None:
    """`--param lr.class_weight=None` was refused although the message offered None (the default)."""
    assert check_params("lr", {"class_weight": "None"}) == {"class_weight": None}
    assert check_params("lr", {"class_weight": "balanced"}) == {"class_weight": "balanced"}
    with pytest.raises(ConfigError, match=r"expected 'path' or 'shap'\. Got 'none'\."):
        check_params("gbdt", {"explanations": "none"})  # a parameter that takes no None
    for kind, name, said in (  # (a TypeError traceback when None was tried on a range of numbers)
        ("gbdt", "n_estimators", "an integer"),
        ("lr", "categorical", "column indices separated by commas"),
    ):
        with pytest.raises(ConfigError, match=f"{kind} parameter '{name}': expected {said}. Got 'None'."):
            check_params(kind, {name: "None"})


def test_an_unlimited_forest_depth_is_givable_as_scikit_learn_takes_it() -> None:
    """rf.max_depth=None (scikit-learn's own default: no limit) was refused as 'None' text; it now grows each
    tree past the default depth of 10, and 0 is still refused."""
    assert check_params("rf", {"max_depth": "None"}) == {"max_depth": None}
    assert check_params("rf", {"max_depth": None}) == {"max_depth": None}
    with pytest.raises(ConfigError, match=r"expected an integer >= 1, or None \(no limit\)\. Got 0\."):
        check_params("rf", {"max_depth": 0})
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 6))
    y = (np.sin(3 * X[:, 0]) * X[:, 1] + rng.normal(scale=0.3, size=3000) > 0.4).astype(int)

    def depth(params: dict[str, object]) -> int:
        m = model_class("rf")(n_estimators=3, min_samples_leaf=1, n_jobs=1, calibration="none", **params)
        m.fit(X, y, None, feature_names=[f"f{i}" for i in range(6)])
        deepest, level = 0, [int(r) for r in m.roots_]  # (walk the stored trees level by level)
        while level:
            level = [int(c) for n in level for c in (m.left_[n], m.right_[n]) if c >= 0]
            deepest += bool(level)
        return deepest

    assert depth({}) == 10 and depth({"max_depth": None}) > 10


def test_dart_boosting_trains_every_round_without_lightgbms_warning() -> None:
    """LightGBM has no early stopping in dart mode: it warned (a raw UserWarning) and ignored it."""
    import warnings

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 4))
    y = (X[:, 0] > 1).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = model_class("gbdt")(n_estimators=15, boosting="dart", num_threads=1).fit(
            X[:400], y[:400], None, X[400:], y[400:], feature_names=["a", "b", "c", "d"]
        )
    assert m.best_iteration_ == 15 and m.booster_.num_trees() == 15


def test_the_search_keeps_given_parameters_fixed() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 4))
    y = (X[:, 0] + rng.normal(size=1500) > 1.5).astype(np.float64)
    base = {"n_estimators": 20, "learning_rate": 0.19, "num_leaves": 9, "num_threads": 1}
    seen: list[dict[str, Any]] = []
    real = model_class("gbdt").__init__

    def spy(self: Any, **kw: Any) -> None:
        seen.append(kw)
        real(self, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_class("gbdt"), "__init__", spy)
        params, _ = tune("gbdt", X[:1000], y[:1000], None, X[1000:], y[1000:], trials=3, base_params=base)
    assert {k: params[k] for k in base} == base  # tuned around them, not over them
    assert len(seen) == 3 and all({k: kw[k] for k in base} == base for kw in seen)
    drawn = [kw for kw in seen if "max_depth" in kw]
    assert len(drawn) == 2 and all(4 <= kw["max_depth"] <= 8 for kw in drawn)  # the rest is still tuned


def test_per_feature_lightgbm_parameters_pass_through_untried() -> None:
    """One value per feature: a four-row fit on one column refused any list as long as the feature set (the
    fit itself checks them)."""
    assert check_params("gbdt", {"monotone_constraints": "1,0,-1", "max_bin_by_feature": "63,63,63"}) == {
        "monotone_constraints": "1,0,-1",
        "max_bin_by_feature": "63,63,63",
    }
    with pytest.raises(ConfigError, match="LightGBM refused"):  # the others are still tried
        check_params("gbdt", {"monotone_constraints": "1,0,-1", "bagging_fraction": 2.0})


@pytest.mark.parametrize(
    ("name", "value", "got"),
    [("monotone_constraints", "1,2", 2), ("mc", [1, 0, 0, 1], 4), ("feature_contri", 1.0, 1)],
)
def test_a_per_feature_parameter_of_the_wrong_length_is_one_error_at_the_fit(
    name: str, value: object, got: int, capfd: pytest.CaptureFixture[str]
) -> None:
    """Found by an audit: monotone_constraints=1,2 on more columns ended in LightGBM's traceback, and then
    still printed LightGBM's "[Fatal]" line on stderr before the error."""
    from payfm.training.models.base import ModelError
    from payfm.training.models.gbdt import GBDTModel

    X = np.random.default_rng(0).normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(int)
    params = check_params("gbdt", {name: value})
    with pytest.raises(ModelError, match=rf"{name}=.* was refused on 3 feature columns: .* Got {got}\.$"):
        GBDTModel(n_estimators=5, num_threads=1, calibration="none", **params).fit(X, y)
    assert "Fatal" not in capfd.readouterr().err
    for right in ("1,0,-1", [1, 0, -1], (1, 0, -1), np.array([1, 0, -1])):  # the right length fits
        ok = {"monotone_constraints": right}
        assert (
            GBDTModel(n_estimators=5, num_threads=1, calibration="none", **ok).fit(X, y).best_iteration_ == 5
        )


def test_a_metric_lightgbm_does_not_know_is_refused_before_the_data() -> None:
    """Found by an audit: metric=foo passed the four-row fit (it had no validation set) and the trainer's
    early stopping then raised a ValueError traceback."""
    with pytest.raises(ConfigError, match=r"metric='foo': early stopping .* needs an evaluation metric"):
        check_params("gbdt", {"metric": "foo"})
    assert check_params("gbdt", {"metric": "auc"}) == {"metric": "auc"}
    # without early stopping nothing stops on a metric: LightGBM ignores one it does not know, as the fit does
    assert check_params("gbdt", {"metric": "foo", "early_stopping": "0"}) == {
        "metric": "foo",
        "early_stopping": 0,
    }
    from payfm.training.models.gbdt import GBDTModel

    X = np.random.default_rng(0).normal(size=(400, 3))
    y = (X[:, 0] > 0.5).astype(int)
    m = GBDTModel(n_estimators=12, num_threads=1, calibration="none", early_stopping=0, metric="foo")
    assert m.fit(X[:300], y[:300], X_val=X[300:], y_val=y[300:]).best_iteration_ == 12  # every round


def test_the_check_works_without_a_stderr() -> None:
    """Descriptor 2 closed (a daemon): the four-row fit runs unsilenced instead of failing on dup(2)."""
    import os

    saved = os.dup(2)
    os.close(2)
    try:
        assert check_params("gbdt", {"max_bin": "63"}) == {"max_bin": 63}
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def test_validation_metrics_are_of_the_raw_scores_the_calibration_was_not_fitted_on(ws: Workspace) -> None:
    """Found by an ML engineer's audit: the validation AP and AUC were of the isotonic-calibrated scores,
    whose ties were learned on those very rows (an LR's validation AUC 0.859 raw, 0.878 calibrated)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from payfm.training.trainer import prepare, rows_of

    cfg = TrainConfig(horizon_days=10, val_days=7, test_days=7, gap_days=3, calibration="isotonic")
    [res] = train(ws, "lr", task("fraud"), tiny_set(), cfg)
    data, split = prepare(ws, task("fraud"), tiny_set(), cfg)
    Xv, yv = rows_of(data.X, split.val), data.y[split.val]
    raw = res.model.predict_raw(Xv)
    assert res.metrics["val_auc"] == pytest.approx(roc_auc_score(yv, raw), abs=1e-12)
    assert res.metrics["val_ap"] == pytest.approx(average_precision_score(yv, raw), abs=1e-12)
    calibrated = res.model.predict_proba(Xv)
    assert len(np.unique(calibrated)) < len(np.unique(raw))  # the ties the raw scores do not have


def test_a_per_feature_parameter_of_the_wrong_length_is_refused_before_any_work(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: `--model all --param gbdt.monotone_constraints=1,0` fitted the logistic regression
    and the forest first, then failed at the GBDT's fit and registered nothing. The width is known before
    any data is read (the set's features, plus a foundation model's inputs): checked there."""
    import payfm.training.trainer as trainer
    from payfm.training.models.base import ModelError

    def no_data(*args: object, **kwargs: object) -> object:
        raise AssertionError("the task's data was read")

    monkeypatch.setattr(trainer, "task_data", no_data)
    n = len(tiny_set().names)
    cfg = TrainConfig(horizon_days=10, params={"gbdt": {"monotone_constraints": "1,0"}})
    with pytest.raises(ModelError, match=rf"monotone_constraints='1,0' was refused on {n} feature columns"):
        train(ws, ["lr", "rf", "gbdt"], task("fraud"), tiny_set(), cfg)
    with pytest.raises(ModelError, match=rf"was refused on {n} feature columns"):
        trainer.prequential(ws, "gbdt", task("fraud"), tiny_set(), cfg)
    r = CliRunner().invoke(
        cli, ["-w", str(ws.root), "train", "--set", "tiny", "--model", "all", "--param", "gbdt.mc=1,0"]
    )
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"The GBDT parameter mc='1,0' was refused on {n} feature columns" in " ".join(r.output.split())
