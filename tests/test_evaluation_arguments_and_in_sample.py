"""Found by a review of `payfm evaluate` and its library: a negative seed crashed after all the scoring with
numpy's traceback; wrong parameter types and values reached the internals (an AttributeError about
'total_seconds', keys "200%" and "0%", a dollar-curve message naming no column); and a window in the gap
between a model's validation and test periods was called in-sample. Each is refused up front, naming the
parameter, or warned about only where the window overlaps what the model saw."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.evaluation import EvaluationError, evaluate_predictions
from payfm.evaluation.baseline import window_predictions
from payfm.evaluation.bootstrap import bootstrap
from payfm.evaluation.metrics import roc_auc_from
from payfm.evaluation.pipeline import evaluate_models, in_sample
from payfm.evaluation.synthetic import synthetic_predictions
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.registry import Registry
from payfm.synth import WorldConfig, generate_world
from payfm.training.models import model_class

PREDS = synthetic_predictions(3000, seed=0)
DAY = timedelta(days=1)


# ---- the seed ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True, "0"])
def test_evaluate_predictions_refuses_a_seed_numpy_does_not_take(seed: Any) -> None:
    with pytest.raises(
        EvaluationError, match=r"The 'seed' of evaluate_predictions must be an integer in \[0, "
    ):
        evaluate_predictions(PREDS, name="m", bootstrap=5, seed=seed)


def test_the_bootstrap_refuses_a_negative_seed_naming_it() -> None:
    with pytest.raises(EvaluationError, match=r"The 'seed' of bootstrap must be an integer .* Got -1\."):
        bootstrap({"auc": roc_auc_from}, [0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], resamples=5, seed=-1)


def test_the_largest_seed_is_taken() -> None:
    assert evaluate_predictions(PREDS, name="m", bootstrap=5, seed=2**32 - 1).seed == 2**32 - 1


@pytest.mark.parametrize("bad", [-1, 2.5, None])
def test_evaluate_predictions_refuses_a_bootstrap_that_is_no_count(bad: Any) -> None:
    with pytest.raises(EvaluationError, match=r"The 'bootstrap' of evaluate_predictions .* integer >= 0"):
        evaluate_predictions(PREDS, name="m", bootstrap=bad)


# ---- rates -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("param", "value", "shown"),
    [
        ("fpr_levels", (2.0,), "2.0"),
        ("fpr_levels", (0.01, 1.0), "1.0"),
        ("fpr_levels", (float("nan"),), "nan"),
        ("block_rates", (0.0,), "0.0"),
        ("block_rates", (-0.01,), "-0.01"),
        ("block_rates", 0.01, "0.01"),  # one rate, not a sequence of them
        ("block_rates", ("1%",), "'1%'"),
    ],
)
def test_a_rate_outside_zero_one_is_refused_naming_the_parameter(param: str, value: Any, shown: str) -> None:
    with pytest.raises(EvaluationError) as err:
        evaluate_predictions(PREDS, name="m", bootstrap=0, **{param: value})
    message = str(err.value)
    assert message.startswith(f"The '{param}' of evaluate_predictions must be a sequence of rates in (0, 1)")
    assert f"Got {shown}" in message


def test_rates_inside_zero_one_keep_their_keys() -> None:
    r = evaluate_predictions(PREDS, name="m", bootstrap=0, fpr_levels=(0.005,), block_rates=[0.02])
    assert list(r.recall_at_fpr) == ["0.5%"] and list(r.at_block_rate) == ["2%"]


# ---- amounts -----------------------------------------------------------------------------------------------
def _with_amounts(values: list[Any], kind: pa.DataType | None = None) -> pa.Table:
    amounts = PREDS["amount_usd"].to_pylist()
    mature = PREDS["mature"].to_pylist()
    rows = [i for i, m in enumerate(mature) if m]
    for i, v in zip(rows, values, strict=False):
        amounts[i] = v
    column = PREDS.column_names.index("amount_usd")
    return PREDS.set_column(column, "amount_usd", pa.array(amounts, kind or pa.int64()))


def test_null_negative_and_non_finite_amounts_are_counted_naming_the_column() -> None:
    evaluated = sum(PREDS["mature"].to_pylist())
    with pytest.raises(EvaluationError) as err:
        evaluate_predictions(_with_amounts([None, None, -5]), name="m", bootstrap=0)
    assert str(err.value) == (
        "The 'amount_usd' column of the predictions of 'm' must hold a finite, non-negative amount "
        f"(US cents) for every charge with a mature label. Got 2 null, 1 negative (of {evaluated:,} charges)."
    )
    with pytest.raises(EvaluationError, match=r"'amount_usd' .* Got 1 not finite \(of "):
        evaluate_predictions(_with_amounts([float("inf")], pa.float64()), name="m", bootstrap=0)


def test_an_immature_charges_missing_amount_is_not_evaluated_so_not_refused() -> None:
    amounts = PREDS["amount_usd"].to_pylist()
    immature = [i for i, m in enumerate(PREDS["mature"].to_pylist()) if not m]
    assert immature
    for i in immature:
        amounts[i] = None
    preds = PREDS.set_column(PREDS.column_names.index("amount_usd"), "amount_usd", pa.array(amounts))
    assert evaluate_predictions(preds, name="m", bootstrap=0).immature == len(immature)


# ---- evaluate_models and payfm evaluate --------------------------------------------------------------------
class World:
    def __init__(self, ws: Workspace, first: datetime) -> None:
        self.ws, self.first = ws, first


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A 30-day world and a model registered as `payfm train` registers one: training days 0-10, validation
    days 12-16, test from day 20 (the gaps, days 10-12 and 16-20, unused)."""
    ws = Workspace.open(tmp_path_factory.mktemp("review") / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=6000, days=30, seed=3, fraud_rate=0.03)), "replace")
    con = ws.connect()
    try:
        [(first,)] = con.execute("SELECT min(created) FROM charges").fetchall()
    finally:
        con.close()
    fs = tiny_set()
    X = np.random.default_rng(0).normal(size=(200, len(fs.names)))
    m = model_class("lr")(calibration="none").fit(X, (X[:, 0] > 0).astype(int), feature_names=fs.names)
    bounds = {"train": (0, 10), "val": (12, 16), "test": (20, 30)}
    window = {
        f"{part}_{edge}": (first + days * DAY).isoformat()
        for part, (a, b) in bounds.items()
        for edge, days in (("start", a), ("end", b))
    }
    Registry(ws).register(m, name="fraud-lr", task="fraud", fset=fs, data_window=window)
    return World(ws, first)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"seed": -1}, r"The 'seed' of evaluate_models must be an integer in \[0, 4294967295\]\. Got -1\."),
        (
            {"horizon": 20},
            r"The 'horizon' of evaluate_models must be None or a timedelta in \(0, 36500 days\]",
        ),
        ({"horizon": timedelta(0)}, r"The 'horizon' of evaluate_models .* Got datetime\.timedelta\(0\)\."),
        ({"bootstrap": -3}, r"The 'bootstrap' of evaluate_models .* Got -3\."),
    ],
)
def test_evaluate_models_checks_its_parameters_before_any_work(
    world: World, tmp_path: Path, kwargs: dict[str, Any], expected: str
) -> None:
    said: list[str] = []
    with pytest.raises(EvaluationError, match=expected):
        evaluate_models(world.ws, "fraud-lr", out_dir=tmp_path / "r", progress=said.append, **kwargs)
    assert said == [] and not (tmp_path / "r").exists()  # nothing scored, nothing written


def test_window_predictions_refuses_an_inverted_window_and_a_horizon_in_days(world: World) -> None:
    with pytest.raises(EvaluationError, match="The evaluation window must end after it starts"):
        window_predictions(world.ws, world.first + 10 * DAY, world.first + DAY)
    with pytest.raises(EvaluationError, match=r"The 'horizon' of window_predictions .* Got 7\."):
        window_predictions(world.ws, world.first, None, 7)  # type: ignore[arg-type]


def test_payfm_evaluate_refuses_a_negative_seed_as_a_usage_error(world: World) -> None:
    for seed in ("-3", str(2**32)):
        r = CliRunner().invoke(
            cli, ["-w", str(world.ws.root), "evaluate", "--model", "fraud-lr", "--seed", seed, "--no-drift"]
        )
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert f"Invalid value for '--seed': {seed} is not in the range 0<=x<=4294967295" in r.output


@pytest.mark.parametrize(
    ("window", "overlaps"),
    [
        ((17, 20), None),  # the gap between validation and test: the model saw none of it
        ((17, None), None),  # from the gap to the end of the log
        ((20, None), None),  # its held-out test period
        ((10, 12), None),  # the gap between training and validation
        ((-5, 0), None),  # before training
        ((15, 20), "validation period (validation "),
        ((9, 11), "training period (training "),
        ((0, None), "training and validation periods (training "),
        ((None, 11), "training period (training "),
    ],
)
def test_only_a_window_overlapping_training_or_validation_is_in_sample(
    world: World, window: tuple[int | None, int | None], overlaps: str | None
) -> None:
    start, end = (None if d is None else world.first + d * DAY for d in window)
    warned = in_sample(world.ws, ["fraud-lr"], start, end)
    if overlaps is None:
        assert warned == {}
    else:
        [text] = warned.values()
        assert text.startswith(f"the window overlaps fraud-lr@1's {overlaps}") and "in-sample" in text, text


def test_an_evaluation_in_the_gap_before_the_test_period_has_no_warning(world: World, tmp_path: Path) -> None:
    said: list[str] = []
    _, results = evaluate_models(
        world.ws,
        "fraud-lr",
        world.first + 17 * DAY,
        world.first + 20 * DAY,
        tmp_path / "gap",
        bootstrap=0,
        horizon=timedelta(days=3),
        drift=False,
        progress=said.append,
    )
    assert [r.warnings for r in results] == [(), ()]
    assert not any(m.startswith("warning:") for m in said), said
    assert json.loads((tmp_path / "gap" / "report.json").read_text())["warnings"] == []
    # a window reaching back into validation is still called in-sample
    _, results = evaluate_models(
        world.ws,
        "fraud-lr",
        world.first + 15 * DAY,
        world.first + 20 * DAY,
        tmp_path / "val",
        bootstrap=0,
        horizon=timedelta(days=3),
        drift=False,
    )
    [warning] = results[0].warnings
    assert "overlaps fraud-lr@1's validation period" in warning and "its figures are in-sample" in warning


def test_payfm_evaluate_in_the_gap_prints_no_in_sample_warning(world: World, tmp_path: Path) -> None:
    day = (world.first + 18 * DAY).date().isoformat()
    args = ["-w", str(world.ws.root), "evaluate", "--model", "fraud-lr@1", "--from", day, "--no-drift"]
    r = CliRunner(env={"COLUMNS": "400"}).invoke(
        cli, [*args, "--horizon-days", "3", "--bootstrap", "0", "--out", str(tmp_path / "cli")]
    )
    assert r.exit_code == 0, r.output
    assert "in-sample" not in r.output and "warning" not in r.output, r.output


# ---- the window, card_k and thresholds (a second review) ------------------------------------------------
def test_evaluate_predictions_takes_a_window_as_evaluate_models_does_and_refuses_a_naive_one() -> None:
    """A naive datetime failed with Python's TypeError after the whole evaluation; a date or ISO text, which
    evaluate_models takes, failed the same way. Read as every window of the library is, before any work."""
    start = PREDS["created"][1500].as_py().replace(hour=0, minute=0, second=0, microsecond=0)
    aware = evaluate_predictions(PREDS, name="m", bootstrap=0, window=(start, None))
    for same in (start.date(), start.date().isoformat()):
        got = evaluate_predictions(PREDS, name="m", bootstrap=0, window=(same, None))
        assert (got.window_start, got.card_precision) == (aware.window_start, aware.card_precision)
    with pytest.raises(
        EvaluationError, match=r"The 'window' start of evaluate_predictions must be timezone-aware \(UTC\)"
    ):
        evaluate_predictions(PREDS, name="m", bootstrap=0, window=(start.replace(tzinfo=None), None))
    with pytest.raises(
        EvaluationError, match=r"The 'window' end of evaluate_predictions must be an ISO date"
    ):
        evaluate_predictions(PREDS, name="m", bootstrap=0, window=(None, "01/03/2026"))
    with pytest.raises(EvaluationError, match=r"The 'window' of evaluate_predictions must be a pair"):
        evaluate_predictions(PREDS, name="m", bootstrap=0, window=start)  # type: ignore[arg-type]
    with pytest.raises(EvaluationError, match="must end after it starts"):
        evaluate_predictions(PREDS, name="m", bootstrap=0, window=(start, start))


@pytest.mark.parametrize("k", [2.5, 0, True, "100"])
def test_card_precision_needs_a_whole_number_of_cards(k: Any) -> None:
    """card_k=2.5 gave a card precision@k of 0.6 that meant nothing."""
    with pytest.raises(
        EvaluationError, match=r"The 'card_k' of evaluate_predictions \(cards a day\) must be"
    ):
        evaluate_predictions(PREDS, name="m", bootstrap=0, card_k=k)


@pytest.mark.parametrize("thresholds", ["maximize protection", ["maximize protection"]])
def test_thresholds_must_be_presets(thresholds: Any) -> None:
    """A preset's name where a Preset goes reached the internals as "'str' object has no attribute 'kind'"."""
    with pytest.raises(
        EvaluationError, match=r"The 'thresholds' of evaluate_predictions must be Presets .* Got"
    ):
        evaluate_predictions(PREDS, name="m", bootstrap=0, thresholds=thresholds)
