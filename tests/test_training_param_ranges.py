"""Values out of range are refused before any work, naming who, what was expected and what was received:
model parameters (`--param`, `TrainConfig.params`) in the ranges scikit-learn, LightGBM and torch document
(found by an audit: rf.n_estimators=0 or gbdt.num_leaves=1 ended in the library's traceback after the data
was read, mlp.hidden=0 or mlp.epochs=0 registered a model scoring every charge alike), and the days and shares
of `train`, `evaluate` and `features training-set` (NaN and infinities ended in a ValueError or OverflowError
traceback; `--downsample nan` was stored in the registry), from the command line and from `TrainConfig`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.training.models import MODEL_KINDS, model_class
from payfm.training.models.params import RANGES, check_params
from payfm.training.splits import prequential_splits, time_split
from payfm.training.trainer import TrainConfig


@pytest.fixture(scope="module")
def empty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace without a charge: a command that gets past its checks fails on the data, differently."""
    return Workspace.open(tmp_path_factory.mktemp("empty"), create=True).root


def _run(ws: Path, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["-w", str(ws), *args])
    return r.exit_code, " ".join(r.output.split())  # the console wraps long lines


# ---- model parameters -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "name", "value", "expected"),
    [
        ("rf", "n_estimators", "0", "an integer >= 1. Got 0."),
        ("rf", "max_depth", "0", "an integer >= 1, or None (no limit). Got 0."),
        ("rf", "max_features", "2.0", "a number in (0, 1]. Got 2.0."),
        ("rf", "min_samples_leaf", "0", "an integer >= 1. Got 0."),
        ("rf", "max_rows", "0", "an integer >= 1. Got 0."),
        ("rf", "n_jobs", "0", "an integer other than 0 (-1: every core). Got 0."),
        (
            "rf",
            "class_weight",
            "bal",
            "'balanced' (the default) or None (the sample weights alone). Got 'bal'.",
        ),
        ("lr", "C", "-1", "a number > 0. Got -1.0."),
        ("lr", "C", "nan", "a number > 0. Got nan."),
        ("lr", "max_iter", "0", "an integer >= 1. Got 0."),
        ("lr", "class_weight", "balance", "'balanced' or None (unweighted, the default). Got 'balance'."),
        ("lr", "categorical", [-1], "column indices >= 0. Got [-1]."),
        ("lr", "transform", "log", "'symlog' or 'none'. Got 'log'."),
        ("mlp", "transform", "None", "'symlog' or 'none'. Got 'None'."),
        ("gbdt", "learning_rate", "-1", "a number > 0. Got -1.0."),
        ("gbdt", "learning_rate", "inf", "a number > 0. Got inf."),
        ("gbdt", "num_leaves", "1", "an integer in [2, 131072]. Got 1."),
        ("gbdt", "num_leaves", "131073", "an integer in [2, 131072]. Got 131073."),
        ("gbdt", "n_estimators", "0", "an integer >= 1. Got 0."),
        ("gbdt", "feature_fraction", "0", "a number in (0, 1]. Got 0.0."),
        ("gbdt", "lambda_l2", "-0.5", "a number >= 0. Got -0.5."),
        ("gbdt", "min_child_samples", "-1", "an integer >= 0. Got -1."),
        ("gbdt", "explanations", "lime", "'path' or 'shap'. Got 'lime'."),
        ("mlp", "lr", "-1", "a number > 0. Got -1.0."),
        ("mlp", "dropout", "1.5", "a number in [0, 1). Got 1.5."),
        ("mlp", "dropout", "1", "a number in [0, 1). Got 1.0."),
        ("mlp", "hidden", "0", "an integer in [2, 8192] (the second layer has hidden // 2 units). Got 0."),
        (
            "mlp",
            "hidden",
            "1",
            "an integer in [2, 8192] (the second layer has hidden // 2 units). Got 1.",
        ),  # hidden // 2 = 0 units: a constant score, as hidden=0
        ("mlp", "epochs", "0", "an integer >= 1. Got 0."),
        (
            "mlp",
            "batch_size",
            "0",
            "an integer >= 1, or None (adaptive: 32 to 1024 rows, the default). Got 0.",
        ),
        ("mlp", "weight_decay", "-1e-5", "a number >= 0. Got -1e-05."),
        ("mlp", "num_threads", "0", "an integer >= 1. Got 0."),
    ],
)
def test_a_parameter_out_of_its_range_is_one_clear_error(
    kind: str, name: str, value: Any, expected: str
) -> None:
    with pytest.raises(ConfigError) as e:
        check_params(kind, {name: value})
    assert str(e.value) == f"{kind} parameter {name!r}: expected {expected}"


def test_the_bounds_themselves_are_taken() -> None:
    """What each library documents as valid still is (gbdt max_depth <= 0 and early_stopping 0 are LightGBM's
    "no limit" and "none")."""
    assert check_params(
        "gbdt", {"num_leaves": 2, "max_depth": -1, "early_stopping": 0, "num_threads": 0}
    ) == {
        "num_leaves": 2,
        "max_depth": -1,
        "early_stopping": 0,
        "num_threads": 0,
    }
    assert check_params("gbdt", {"num_leaves": "131072", "feature_fraction": "1", "lambda_l2": "0"})
    assert check_params("rf", {"max_features": "1", "n_jobs": "-1", "max_depth": "1"})
    assert check_params("mlp", {"dropout": "0", "hidden": "2", "epochs": "1", "batch_size": "1"})
    assert check_params("lr", {"class_weight": "balanced", "categorical": "0,2"})
    assert check_params("lr", {"class_weight": None}) == {"class_weight": None}


def test_every_parameter_has_a_range() -> None:
    for kind in MODEL_KINDS:
        assert set(RANGES[kind]) == set(model_class(kind).PARAMS), kind


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_every_trials_draw_is_in_range(kind: str) -> None:
    """--trials draws from each kind's search space: every draw must pass the checks the given values pass."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(200):
        drawn = model_class(kind).search_space(study.ask())
        assert check_params(kind, drawn) == drawn


@pytest.mark.parametrize(
    ("model", "param", "said"),
    [
        ("rf", "rf.n_estimators=0", "rf parameter 'n_estimators': expected an integer >= 1. Got 0."),
        ("lr", "lr.C=-1", "lr parameter 'C': expected a number > 0. Got -1.0."),
        (
            "rf",
            "rf.max_depth=0",
            "rf parameter 'max_depth': expected an integer >= 1, or None (no limit). Got 0.",
        ),
        ("rf", "max_features=2.0", "rf parameter 'max_features': expected a number in (0, 1]. Got 2.0."),
        ("gbdt", "gbdt.learning_rate=-1", "gbdt parameter 'learning_rate': expected a number > 0. Got -1.0."),
        ("gbdt", "num_leaves=1", "gbdt parameter 'num_leaves': expected an integer in [2, 131072]. Got 1."),
        ("gbdt", "gbdt.n_estimators=0", "gbdt parameter 'n_estimators': expected an integer >= 1. Got 0."),
        ("mlp", "mlp.lr=-1", "mlp parameter 'lr': expected a number > 0. Got -1.0."),
        ("mlp", "mlp.dropout=1.5", "mlp parameter 'dropout': expected a number in [0, 1). Got 1.5."),
        ("mlp", "mlp.hidden=0", "mlp parameter 'hidden': expected an integer in [2, 8192]"),
        ("mlp", "mlp.epochs=0", "mlp parameter 'epochs': expected an integer >= 1. Got 0."),
        ("lr", "lr.max_iter=0", "lr parameter 'max_iter': expected an integer >= 1. Got 0."),
        (
            "mlp",
            "mlp.batch_size=0",
            "mlp parameter 'batch_size': expected an integer >= 1, or None (adaptive: 32 to 1024 rows, the "
            "default). Got 0.",
        ),
        ("all", "n_estimators=0", "parameter 'n_estimators': expected an integer >= 1. Got 0."),
    ],
)
def test_train_refuses_a_parameter_out_of_range_before_reading_data(
    empty: Path, model: str, param: str, said: str
) -> None:
    """On a workspace without charges: refused for the parameter, not for the missing data, as a usage error
    (exit status 2, as a wrong value of any other option; it was 1 for a value out of range)."""
    code, out = _run(empty, "train", "--horizon-days", "20", "--model", model, "--param", param)
    assert code == 2 and "Invalid value for '--param'" in out and said in out, out
    assert "Traceback" not in out


# ---- days and shares: command-line options --------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["train", "--horizon-days", "nan"], "--horizon-days"),
        (["train", "--horizon-days", "inf"], "--horizon-days"),
        (["train", "--horizon-days", "-5"], "--horizon-days"),
        (["train", "--horizon-days", "1e12"], "--horizon-days"),  # an OverflowError in timedelta
        (["train", "--val-days", "nan"], "--val-days"),
        (["train", "--test-days", "inf"], "--test-days"),
        (["train", "--test-days", "0"], "--test-days"),
        (["train", "--gap-days", "nan"], "--gap-days"),
        (["train", "--gap-days", "-1"], "--gap-days"),
        (["train", "--downsample", "nan"], "--downsample"),
        (["train", "--downsample", "-inf"], "--downsample"),
        (["train", "--seed", "-1"], "--seed"),  # numpy's and scikit-learn's generators refuse it
        (["evaluate", "--horizon-days", "nan"], "--horizon-days"),
        (["evaluate", "--horizon-days", "inf"], "--horizon-days"),
        (["features", "training-set", "--horizon-days", "nan"], "--horizon-days"),
        (["features", "training-set", "--horizon-days", "inf"], "--horizon-days"),
    ],
)
def test_day_and_share_options_refuse_nan_and_infinities(empty: Path, args: list[str], option: str) -> None:
    code, out = _run(empty, *args)
    assert code == 2 and f"Invalid value for '{option}'" in out, out
    assert "Traceback" not in out
    if args[-1] in ("nan", "inf", "-inf"):
        assert "expected a finite number in the range" in out and f"Got '{args[-1]}'." in out


def test_a_gap_of_zero_days_is_still_taken(empty: Path) -> None:
    code, out = _run(empty, "train", "--horizon-days", "20", "--gap-days", "0", "--downsample", "1")
    assert code == 1 and "Invalid value" not in out, out  # (it fails on the empty workspace's data instead)


# ---- days and shares: the Python API --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "said"),
    [
        (
            {"downsample": 2.0},
            "The 'downsample' of TrainConfig (the share of training negatives kept) must be",
        ),
        ({"downsample": math.nan}, "must be a number in (0, 1]. Got nan."),
        ({"downsample": 0.0}, "must be a number in (0, 1]. Got 0.0."),
        (
            {"horizon_days": math.nan},
            "The 'horizon_days' of TrainConfig must be a number of days in (0, 36500]",
        ),
        (
            {"horizon_days": math.inf},
            "The 'horizon_days' of TrainConfig must be a number of days in (0, 36500]",
        ),
        ({"horizon_days": -1}, "Got -1."),
        (
            {"val_days": math.nan},
            "The 'val_days' of TrainConfig must be a number of days in (0, 36500]. Got nan.",
        ),
        ({"test_days": math.inf}, "The 'test_days' of TrainConfig must be"),
        ({"gap_days": -1}, "The 'gap_days' of TrainConfig must be a number of days in [0, 36500]. Got -1."),
        ({"gap_days": "7"}, "The 'gap_days' of TrainConfig must be a number of days in [0, 36500]. Got '7'."),
        (
            {"warm_up_days": -1},
            "The 'warm_up_days' of TrainConfig must be a number of days in [0, 36500]. Got -1.",
        ),
        ({"trials": -1}, "The 'trials' of TrainConfig must be an integer >= 0. Got -1."),
        ({"seed": -1}, "The 'seed' of TrainConfig must be an integer in [0, 2147483647]. Got -1."),
        ({"fm_workers": 0}, "The 'fm_workers' of TrainConfig must be an integer >= 1. Got 0."),
        ({"calibration": "beta"}, "The 'calibration' of TrainConfig must be one of isotonic, platt, none."),
        ({"train_on": "approved"}, "The 'train_on' of TrainConfig must be one of all, authorized."),
    ],
)
def test_train_config_refuses_values_no_training_can_use(fields: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError) as e:
        TrainConfig(**fields)
    assert said in str(e.value)


def test_train_config_takes_its_bounds() -> None:
    cfg = TrainConfig(
        horizon_days=36_500, gap_days=0, downsample=1.0, val_days=np.float64(0.5), seed=2**31 - 1
    )
    assert cfg.gap_days == 0 and cfg.downsample == 1.0


def test_the_time_split_refuses_nan_and_infinite_days() -> None:
    created = np.arange(0, 60 * 86_400_000_000, 86_400_000_000 // 10)
    mature = np.ones(len(created), bool)
    for kwargs, who in (
        ({"val_days": math.nan}, "'val_days'"),
        ({"test_days": math.inf}, "'test_days'"),
        ({"gap_days": math.nan}, "'gap_days'"),
    ):
        with pytest.raises(ConfigError, match=f"The {who} of the time split must be a number of days"):
            time_split(created, mature, **kwargs)
    with pytest.raises(ConfigError, match=r"Prequential week 1 of 4 .*: The 'gap_days' of the time split"):
        prequential_splits(created, mature, gap_days=math.nan)


@pytest.mark.parametrize(
    "args",
    [
        ["fm", "pretrain", "--lr", "nan"],
        ["fm", "pretrain", "--until-frac", "nan"],
        ["fm", "evaluate", "--train-frac", "inf"],
        ["rules", "backtest", "x.rules", "--horizon-days", "nan"],
        ["serve", "--max-future-s", "inf"],
        ["serve", "--max-past-s", "nan"],
    ],
)
def test_every_float_option_refuses_nan_and_infinities(tmp_path: Path, args: list[str]) -> None:
    """click's FloatRange passes 'nan' (false against both bounds) and 'inf' without an upper bound."""
    result = CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), *args])
    assert result.exit_code == 2, result.output
    assert "expected a finite number" in result.output and "Traceback" not in result.output
