"""Defects a review of model training reproduced, each fixed: training seeds past LightGBM's 32-bit signed
range (2**31 trained the same GBDT as 0), the MLP's batch_size ignored while its effective parameters said
it, sample weights checked for their shape only, the random forest's traceback on an infinite input, split
refusals under --as-of that described the whole log, and two arguments of the Python API taken unchecked."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.registry import Registry
from payfm.synth import WorldConfig, generate_world
from payfm.training.models import ModelError, load_model, model_class
from payfm.training.splits import time_split
from payfm.training.tasks import task
from payfm.training.trainer import TrainConfig, TrainResult, prepare, register_result
from payfm.training.tuning import tune

DAY = 86_400_000_000


def problem(n: int = 300, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, (X[:, 0] + 0.5 * rng.normal(size=n) > 0.5).astype(int)


# ---- 1. the training seed is in [0, 2**31 - 1] everywhere training takes one -----------------------------
def test_a_training_seed_past_2_31_is_refused_naming_the_seed(tmp_path: Path) -> None:
    assert TrainConfig(seed=2**31 - 1).seed == 2**31 - 1
    with pytest.raises(ConfigError) as e:
        TrainConfig(seed=2**31)
    assert str(e.value) == "The 'seed' of TrainConfig must be an integer in [0, 2147483647]. Got 2147483648."
    X, y = problem()
    with pytest.raises(ModelError, match=r"GBDTModel\.fit: expected 'seed' an integer in \[0, 2147483647\]"):
        model_class("gbdt")(calibration="none", seed=2**31, n_estimators=2).fit(X, y)
    with pytest.raises(ConfigError, match=r"The 'seed' of tune must be an integer in \[0, 2147483647\]"):
        tune("lr", X, y, None, X, y, trials=1, seed=2**31)
    r = CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), "train", "--seed", str(2**31)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "Invalid value for '--seed': 2147483648 is not in the range 0<=x<=2147483647." in r.output


# ---- 2. the MLP's batch_size: honoured when given, adaptive by default, the size used recorded -------------
def _batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch sizes the MLP's training loop splits its rows into (torch.split's second argument)."""
    sizes: list[int] = []
    split = torch.split

    def spy(t: torch.Tensor, n: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(n)
        return split(t, n, *args, **kwargs)

    monkeypatch.setattr(torch, "split", spy)
    return sizes


def test_the_mlp_trains_with_the_batch_size_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    X, y = problem(3000)
    sizes = _batches(monkeypatch)
    mlp = model_class("mlp")
    small = {"hidden": 4, "epochs": 1, "calibration": "none"}
    for given in (8, 1024):
        sizes.clear()
        m = mlp(batch_size=given, **small).fit(X, y)
        assert set(sizes) == {given} and m.batch_size_ == given == m.effective_params()["batch_size"]
    # the default keeps its adaptive rule (n // 32 within [32, 1024]): the same fit as before, said as such
    sizes.clear()
    m = mlp(**small).fit(X, y)
    assert set(sizes) == {3000 // 32} and m.batch_size_ == 93 and m.fitted_facts() == {"batch_size": 93}
    assert m.effective_params()["batch_size"] is None  # rebuilds the adaptive fit, whatever the table
    rebuilt = mlp(calibration="none", **m.effective_params()).fit(X, y)
    np.testing.assert_array_equal(rebuilt.predict_raw(X[:50]), m.predict_raw(X[:50]))
    assert load_model(m.save(tmp_path / "m")).fitted_facts() == {"batch_size": 93}


def test_the_registry_records_the_batch_size_the_mlp_used(tmp_path: Path) -> None:
    fset = tiny_set()
    X, y = problem(1000, len(fset.names))
    m = model_class("mlp")(hidden=4, epochs=1, calibration="none").fit(X, y, feature_names=fset.names)
    result = TrainResult(m, "mlp", "fraud", {}, {}, {}, {}, 20.0, 0.0)
    ws = Workspace.open(tmp_path / "ws", create=True)
    entry = register_result(Registry(ws), result, fset).entry
    assert entry["fitted"] == {"batch_size": 32} and entry["effective_params"]["batch_size"] is None


# ---- 3. sample weights: finite, >= 0, a positive total ----------------------------------------------------
@pytest.mark.parametrize(
    ("weights", "got"),
    [
        (-np.ones(300), "Got 300 negative value(s), the least -1."),
        (np.full(300, np.nan), "Got 300 NaN or infinite value(s), e.g. nan."),
        (np.r_[np.inf, np.ones(299)], "Got 1 NaN or infinite value(s), e.g. inf."),
        (np.zeros(300), "Got a total of 0."),
    ],
)
def test_sample_weights_that_no_fit_can_use_are_refused_naming_them(weights: np.ndarray, got: str) -> None:
    X, y = problem()
    for kind in ("lr", "gbdt"):
        with pytest.raises(ModelError) as e:
            model_class(kind)(calibration="none").fit(X, y, weights)
        name = "LogisticModel" if kind == "lr" else "GBDTModel"
        assert str(e.value) == (
            f"{name}.fit: expected 'sample_weight' finite and >= 0 with a positive total. {got}"
        )
    some_zero = np.r_[np.zeros(10), np.ones(290)]  # (a zero among positive weights is a weight)
    assert model_class("lr")(calibration="none").fit(X, y, some_zero).predict_proba(X).shape == (300,)


# ---- 4. the random forest takes an infinity as the other models do -----------------------------------------
def test_the_forest_fits_and_scores_infinite_inputs_as_their_column_s_extremes() -> None:
    X, y = problem(400)
    Xi = X.copy()
    Xi[X[:, 0] > 1.5, 0] = np.inf  # the column's largest values, a ratio's division by 0 say
    Xi[X[:, 1] < -1.5, 1] = -np.inf
    rf = model_class("rf")(calibration="none", n_estimators=5, n_jobs=1, seed=0)
    m = rf.fit(Xi, y)  # (scikit-learn: "Input X contains infinity")
    p = m.predict_proba(Xi)
    assert np.isfinite(p).all()
    # +inf reads as a value beyond every other of its column: it scores as the largest finite one does
    big = np.array([[np.inf, 0.0, 0.0], [1e30, 0.0, 0.0], [-np.inf, -np.inf, 0.0], [-1e30, -1e30, 0.0]])
    q = m.predict_proba(big)
    assert q[0] == q[1] and q[2] == q[3]
    for kind in ("lr", "gbdt"):  # (the others took it already)
        assert np.isfinite(model_class(kind)(calibration="none").fit(Xi, y).predict_proba(big)).all()


# ---- 5. a split refused under --as-of describes the timeline up to the as-of ------------------------------
def test_the_time_split_names_the_as_of_and_the_log_up_to_it() -> None:
    created = np.arange(0, 60 * DAY, DAY // 10)  # a 60-day log
    mature = np.ones(len(created), bool)
    as_of = 19 * DAY
    with pytest.raises(ConfigError) as e:  # a 20-day horizon before an as-of 19 days into the log
        time_split(
            created, mature, val_days=10, test_days=10, gap_days=3, end_us=as_of - 20 * DAY, as_of_us=as_of
        )
    assert str(e.value) == (
        "The time split needs rows with mature labels: the log spans 19.0 days up to --as-of "
        "1970-01-20T00:00:00+00:00, and a 20-day label horizon before it leaves no mature label: use a later "
        "--as-of or a shorter --horizon-days."
    )
    as_of = 35 * DAY
    with pytest.raises(ConfigError) as e:
        time_split(
            created, mature, val_days=10, test_days=10, gap_days=3, end_us=as_of - 20 * DAY, as_of_us=as_of
        )
    assert "leave no training period in 15.0 days of charges (the log spans 35.0 days up to --as-of " in str(
        e.value
    )
    assert str(e.value).endswith(
        ", less a 20-day label horizon): use a later --as-of, shorter periods or a shorter --horizon-days."
    )
    with pytest.raises(
        ConfigError, match=r"reaches back before the first charge \(the log spans 59\.9 days\)"
    ):
        time_split(created, mature, end_us=-1)  # (without an as-of: the log's span, as before)


def test_train_under_an_early_as_of_says_the_as_of(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=2_000, days=30, seed=3, fraud_rate=0.03)), "replace")
    first = ws.connect().execute("SELECT min(created) FROM charges").fetchone()[0]
    config = TrainConfig(
        horizon_days=12, val_days=3, test_days=3, gap_days=1, as_of=first + timedelta(days=10)
    )
    with pytest.raises(ConfigError) as e:
        prepare(ws, task("fraud"), tiny_set(), config)
    said = str(e.value)
    assert "the log spans 10.0 days up to --as-of " in said and "a 12-day label horizon" in said, said


# ---- smaller: TrainConfig's foundation-model fields, explain's top_k --------------------------------------
@pytest.mark.parametrize(
    ("fields", "said"),
    [
        (
            {"foundation_model": 5},
            "The 'foundation_model' of TrainConfig must be a checkpoint's path as text",
        ),
        ({"fm_outputs": 5}, "The 'fm_outputs' of TrainConfig must be a tuple of output names"),
    ],
)
def test_train_config_names_a_foundation_model_field_of_the_wrong_type(
    fields: dict[str, Any], said: str
) -> None:
    with pytest.raises(ConfigError) as e:
        TrainConfig(**fields)
    assert str(e.value).startswith(said) and str(e.value).endswith("Got 5."), e.value


def test_explain_refuses_a_negative_top_k() -> None:
    X, y = problem()
    m = model_class("lr")(calibration="none").fit(X, y)
    with pytest.raises(ModelError) as e:
        m.explain(X[:2], top_k=-1)  # (it gave every reason but the last)
    assert str(e.value) == "LogisticModel.explain: expected 'top_k' an integer >= 0 (0: no reasons). Got -1."
    with pytest.raises(ModelError, match="'top_k'"):
        m.explain_one(list(X[0]), top_k=1.5)  # type: ignore[arg-type]
    assert m.explain(X[:2], top_k=0) == [[], []]  # (a decision service's top_k=0: no reasons)


def test_the_foundation_models_comparison_refuses_a_seed_its_fits_would_pass_the_range_with(
    tmp_path: Path,
) -> None:
    """Its GBDT fits take seeds seed .. seed + gbdt_seeds - 1: with seed 2**31 - 1 the second fit was refused
    after the embedding work and the first fit. Refused first, naming the range."""
    from payfm.fm.downstream import DownstreamConfig, evaluate_embeddings

    ws = Workspace.open(tmp_path / "ws", create=True)
    for seed, top in ((2**31 - 1, 2**31 - 3), (-1, 2**31 - 3)):
        with pytest.raises(ConfigError, match=rf"must be an integer in \[0, {top}\] \(its 3 GBDT fits"):
            evaluate_embeddings(ws, tmp_path / "no-checkpoint", DownstreamConfig(seed=seed))
    with pytest.raises(ConfigError, match=r"in \[0, 2147483647\]"):
        evaluate_embeddings(ws, tmp_path / "no-checkpoint", DownstreamConfig(seed=2**31, gbdt_seeds=1))
    with pytest.raises(ConfigError, match="no-checkpoint"):  # (a seed in range: on to the checkpoint)
        evaluate_embeddings(ws, tmp_path / "no-checkpoint", DownstreamConfig(seed=2**31 - 3))


def test_train_refuses_fm_inputs_given_twice(tmp_path: Path) -> None:
    """`fm evaluate --fm-inputs` repeats to compare models; `train --fm-inputs embedding --fm-inputs surprise`
    trained on the last one alone, silently (an FM walkthrough registered a model without the embedding)."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    args = [
        "-w",
        str(ws.root),
        "train",
        "--fm",
        "early",
        "--fm-inputs",
        "embedding",
        "--fm-inputs",
        "surprise",
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert (
        "Invalid value for '--fm-inputs': one model takes one set of inputs: give it once (both: "
        "embedding+surprise). Got embedding, surprise." in " ".join(r.output.split())
    )
    assert not (ws.root / "registry").exists() or not any((ws.root / "registry").rglob("*.json"))
