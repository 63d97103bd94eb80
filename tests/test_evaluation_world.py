"""End to end on a small synthetic world: a quick scikit-learn model and the rules baseline, evaluated and
reported by ``evaluate_models`` and ``payfm evaluate`` (the model's ``score_window`` is stubbed here)."""

from __future__ import annotations

import json
import sys
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from payfm.cli.main import cli
from payfm.evaluation import EvaluationError, evaluate_predictions
from payfm.evaluation.baseline import (
    RULE_FEATURES,
    rules_baseline_predictions,
    rules_baseline_scores,
    window_predictions,
)
from payfm.evaluation.pipeline import evaluate_models
from payfm.events.workspace import Workspace
from payfm.features.catalog import feature_set
from payfm.features.training_set import build_training_set
from payfm.registry.store import Registry
from payfm.synth import WorldConfig, generate_world
from payfm.training.models.linear import LogisticModel

FEATURES = [
    "amount_usd_log",
    "card.count_charges_1h",
    "card.count_declined_1d",
    "ip.distinct_card_fingerprint_1d",
    "card_ip_country_mismatch",
    "cvc_fail",
    "card.distinct_ip_address_1d",
    "card.count_charges_all",
]


class World(types.SimpleNamespace):
    ws: Workspace
    start: datetime
    end: datetime
    preds: pa.Table
    features: pa.Table


def _density(scores: np.ndarray) -> list[float]:
    return [float(v) for v in np.histogram(scores, bins=np.linspace(0, 1, 41), density=True)[0]]


def _matrix(t: pa.Table) -> np.ndarray:
    return np.column_stack([pc.fill_null(pc.cast(t[f], pa.float64()), 0.0).to_numpy() for f in FEATURES])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    ws = Workspace.open(tmp_path_factory.mktemp("ws"), create=True)
    ws.write_stream(generate_world(WorldConfig(charges=30_000, days=60)), "replace")
    _, ts = build_training_set(ws, feature_set("default"), horizon=timedelta(days=7))
    first = ts["created"][0].as_py()
    start, end = first + timedelta(days=40), first + timedelta(days=52)
    stamp = pa.scalar(start, pa.timestamp("us", "UTC"))
    train = ts.filter(pc.and_(pc.less(ts["created"], stamp), ts["mature"]))
    test = ts.filter(
        pc.and_(pc.greater_equal(ts["created"], stamp), pc.less(ts["created"], pa.scalar(end, stamp.type)))
    )
    model = LogisticRegression(max_iter=500).fit(_matrix(train), train["is_fraud"].to_numpy())
    con = ws.connect()
    try:
        charges = con.sql(
            "SELECT charge_id, amount_usd, channel, merchant_id, merchant_country, card_fingerprint "
            "FROM charges"
        ).to_arrow_table()
    finally:
        con.close()
    scored = pa.table(
        {
            "charge_id": test["charge_id"],
            "created": test["created"],
            "score": model.predict_proba(_matrix(test))[:, 1],
            "is_fraud": test["is_fraud"],
            "mature": test["mature"],
            "scenario": test["scenario"],
        }
    )
    preds = scored.join(charges, "charge_id", join_type="inner").sort_by([("created", "ascending")])
    # registered as "lr", held out from `start` (its scores come from the stubbed score_window below)
    fset = feature_set("tiny")
    X = np.random.default_rng(0).normal(size=(50, len(fset.names)))
    lr = LogisticModel(calibration="none").fit(X, (X[:, 0] > 0).astype(int), feature_names=fset.names)
    window = {"test_start": start.isoformat()}
    Registry(ws).register(lr, name="lr", task="fraud", fset=fset, data_window=window)
    return World(ws=ws, start=start, end=end, preds=preds, features=test)


@pytest.fixture
def stub_score_window(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def score_window(
        ws: Workspace,
        ref: str,
        start: datetime | None = None,
        end: datetime | None = None,
        horizon: timedelta | None = None,
    ) -> pa.Table:
        calls.append(ref)
        calls.append(f"from {start.isoformat() if start else None}")
        return world.preds

    module = types.ModuleType("payfm.training.predict")
    module.score_window = score_window  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "payfm.training.predict", module)
    return calls


def test_rules_baseline_scores_count_the_rules_fired(world: World) -> None:
    s = rules_baseline_scores(world.features.select(list(RULE_FEATURES)))
    f = world.features
    velocity = pc.fill_null(pc.greater(f["card.count_charges_1h"], 3), False).to_numpy(zero_copy_only=False)
    assert set(np.unique(s)) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    assert np.all(s[velocity] >= 0.25)


def test_evaluate_models_compares_a_model_with_the_rules_baseline(
    world: World, stub_score_window: list[str], tmp_path: Path
) -> None:
    paths, results = evaluate_models(world.ws, ["lr"], world.start, world.end, tmp_path / "r", bootstrap=30)
    assert stub_score_window == ["lr", f"from {world.start.isoformat()}"]
    lr, rules = results
    assert (lr.name, rules.name) == ("lr", "rules baseline")
    assert (lr.evaluated, lr.immature) == (rules.evaluated, rules.immature)
    assert lr.evaluated + lr.immature == world.preds.num_rows
    mature = world.preds.filter(world.preds["mature"])
    assert lr.average_precision == pytest.approx(
        average_precision_score(mature["is_fraud"].to_numpy(), mature["score"].to_numpy())
    )
    assert lr.average_precision > 3 * lr.base_rate  # the model learned something
    # the baseline scored the same charges with the rules over their own features
    expected = dict(
        zip(world.features["charge_id"].to_pylist(), rules_baseline_scores(world.features), strict=True)
    )
    mature_ids = mature["charge_id"].to_pylist()
    fired = np.array([expected[c] for c in mature_ids])
    assert rules.curves.histogram.fraud == _density(fired[mature["is_fraud"].to_numpy() == 1])
    assert paths.html.exists() and paths.json.exists()


def test_models_are_evaluated_on_their_held_out_period_unless_asked_otherwise(
    world: World, stub_score_window: list[str], tmp_path: Path
) -> None:
    said: list[str] = []
    evaluate_models(world.ws, ["lr"], out_dir=tmp_path / "a", bootstrap=0, progress=said.append)
    assert stub_score_window == ["lr", f"from {world.start.isoformat()}"]  # not the whole log
    assert any(m.startswith("window: from") and "lr@1's held-out test period" in m for m in said)
    assert not any(m.startswith("warning:") for m in said)
    said.clear()
    earlier = world.start - timedelta(days=10)
    evaluate_models(world.ws, ["lr"], earlier, out_dir=tmp_path / "b", bootstrap=0, progress=said.append)
    assert stub_score_window[-1] == f"from {earlier.isoformat()}"  # as asked, with a warning
    assert any(m.startswith("warning:") and "in-sample" in m for m in said)
    with pytest.raises(EvaluationError, match="before the held-out test period of lr@1"):
        evaluate_models(world.ws, ["lr"], None, world.start - timedelta(days=1), out_dir=tmp_path / "c")
    said.clear()
    before_log = world.start - timedelta(days=3650)
    with pytest.raises(EvaluationError, match="holds no charges"):
        evaluate_models(world.ws, ["lr"], before_log, before_log + timedelta(days=1), progress=said.append)
    assert not any(m.startswith("warning:") for m in said)  # no figures to call in-sample


def test_baseline_alone_is_evaluated_on_the_charges_of_the_window(world: World) -> None:
    population = window_predictions(world.ws, world.start, world.end, timedelta(days=7))
    assert population["charge_id"].to_pylist() == world.preds["charge_id"].to_pylist()
    assert population["is_fraud"].to_pylist() == world.preds["is_fraud"].to_pylist()
    rules = evaluate_predictions(rules_baseline_predictions(world.ws, population), name="rules", bootstrap=0)
    assert rules.charges == world.preds.num_rows
    with pytest.raises(
        EvaluationError,
        match=r"Nothing to evaluate: expected at least one model \(--model; model_refs in Python\)",
    ):
        evaluate_models(world.ws, [], baseline=False)


def test_cli_prints_the_summary_and_the_report_path(
    world: World, stub_score_window: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "cli"
    args = ["-w", str(world.ws.root), "evaluate", "--model", "lr", "--from", world.start.date().isoformat()]
    result = CliRunner(env={"COLUMNS": "160"}).invoke(cli, [*args, "--out", str(out), "--bootstrap", "10"])
    assert result.exit_code == 0, result.output
    assert "rules baseline" in result.output and "recall@1% FPR" in result.output
    assert (out / "report.html").exists() and str(out / "report.html") in result.output.replace("\n", "")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    bad = CliRunner().invoke(cli, [*args, "--out", str(blocked / "report"), "--bootstrap", "10"])
    assert bad.exit_code == 1 and "cannot be created" in bad.output and "Traceback" not in bad.output
    alone = [
        "-w",
        str(world.ws.root),
        "evaluate",
        "--from",
        world.start.date().isoformat(),
        "--bootstrap",
        "5",
    ]
    for days, immature in (("2", False), ("400", True)):  # the baseline alone, its labels over the horizon
        r = CliRunner(env={"COLUMNS": "160"}).invoke(
            cli, [*alone, "--out", str(tmp_path / days), "--horizon-days", days]
        )
        if immature:  # no label matures in 400 days of this world: refused in one line
            assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        else:
            assert r.exit_code == 0 and "rules baseline" in r.output, r.output


def test_cli_rejects_a_bad_date_in_one_line(world: World) -> None:
    result = CliRunner().invoke(cli, ["-w", str(world.ws.root), "evaluate", "--from", "2026-13-01"])
    assert result.exit_code == 1
    assert "The option --from must be an ISO date" in result.output and "Traceback" not in result.output


def test_a_window_without_charges_is_refused_with_the_logs_range(
    world: World, stub_score_window: list[str], tmp_path: Path
) -> None:
    con = world.ws.connect()
    try:
        [(first, last)] = con.execute("SELECT min(created), max(created) FROM charges").fetchall()
    finally:
        con.close()
    later = last + timedelta(days=365)
    log = f"The event log's charges run from {first.isoformat()} to {last.isoformat()}"
    with pytest.raises(EvaluationError) as err:
        evaluate_models(world.ws, ["lr"], later, out_dir=tmp_path / "a", bootstrap=0)
    assert str(err.value).startswith(
        f"The evaluation window {later.isoformat()} .. the end holds no charges."
    )
    assert log in str(err.value)
    assert stub_score_window == []  # refused before any model scored the window
    with pytest.raises(EvaluationError, match="holds no charges"):  # the baseline alone, before the log
        evaluate_models(world.ws, [], None, first - timedelta(days=1), out_dir=tmp_path / "b", bootstrap=0)
    ws = str(world.ws.root)
    for args in (["--model", "lr", "--from", later.date().isoformat()], ["--from", later.date().isoformat()]):
        r = CliRunner(env={"COLUMNS": "400"}).invoke(cli, ["-w", ws, "evaluate", *args, "--bootstrap", "0"])
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert "holds no charges" in r.output and log in r.output, r.output


def test_evaluate_models_takes_iso_texts_and_dates_as_payfm_evaluate_does(
    world: World, stub_score_window: list[str], tmp_path: Path
) -> None:
    day = world.start.date() + timedelta(days=1)  # inside the held-out period: no in-sample warning
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    for start, end in (
        (day.isoformat(), (day + timedelta(days=5)).isoformat()),
        (day, day + timedelta(days=5)),
    ):
        _, results = evaluate_models(world.ws, ["lr"], start, end, tmp_path / str(start), bootstrap=0)
        assert stub_score_window[-1] == f"from {midnight.isoformat()}" and results[0].name == "lr"
    evaluate_models(
        world.ws, ["lr"], f"{day.isoformat()}T06:00:00+02:00", out_dir=tmp_path / "tz", bootstrap=0
    )
    assert stub_score_window[-1] == f"from {(midnight + timedelta(hours=4)).isoformat()}"  # in UTC
    with pytest.raises(
        EvaluationError, match=r"The evaluation start must be an ISO date or time \(2026-03-01\)\. "
    ):
        evaluate_models(world.ws, ["lr"], "2026-13-01")
    with pytest.raises(EvaluationError, match="The evaluation end must be a datetime, a date or an ISO"):
        evaluate_models(world.ws, ["lr"], None, 20260301)  # type: ignore[arg-type]
    with pytest.raises(EvaluationError, match="The evaluation start must be timezone-aware"):
        evaluate_models(world.ws, ["lr"], datetime(2026, 3, 1))  # a naive datetime is still refused


def test_on_authorized_evaluates_the_charges_that_moved_money_only(
    world: World, stub_score_window: list[str], tmp_path: Path
) -> None:
    """Found by an import audit: an export's fraud flags on declined attempts are no labels, so `payfm
    evaluate` counted those charges as genuine (all 14 "false positives" at a 1% block rate were such
    frauds). `--on authorized` leaves declined and blocked charges out, for every model and the baseline."""
    said: list[str] = []
    paths, results = evaluate_models(
        world.ws,
        ["lr"],
        world.start,
        world.end,
        tmp_path / "r",
        bootstrap=0,
        on="authorized",
        progress=said.append,
    )
    con = world.ws.connect()
    try:
        outcome = dict(con.sql("SELECT charge_id, outcome FROM charges").fetchall())
    finally:
        con.close()
    mature = world.preds.filter(world.preds["mature"])
    authorized = mature.filter(
        pa.array([outcome[c] == "authorized" for c in mature["charge_id"].to_pylist()])
    )
    left_out = world.preds.num_rows - sum(
        outcome[c] == "authorized" for c in world.preds["charge_id"].to_pylist()
    )
    assert 0 < authorized.num_rows < mature.num_rows
    lr, rules = results
    assert lr.evaluated == rules.evaluated == authorized.num_rows
    assert lr.average_precision == pytest.approx(
        average_precision_score(authorized["is_fraud"].to_numpy(), authorized["score"].to_numpy())
    )
    assert f"population: authorized charges only ({left_out:,} declined or blocked charges left out)" in said
    assert "payfm evaluation report (authorized charges only)" in paths.html.read_text()
    assert json.loads(paths.json.read_text())["population"] == "authorized"
    with pytest.raises(EvaluationError, match=r"must be one of all, authorized\. Got 'approved'"):
        evaluate_models(world.ws, ["lr"], world.start, world.end, tmp_path / "x", on="approved")


def test_evaluate_models_hands_its_window_to_card_precision(
    world: World, stub_score_window: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Card precision@k averages the window's whole days, so the pipeline must say what its window is (the
    held-out test period starts at the minute its split fell)."""
    from payfm.evaluation import pipeline

    windows: list[object] = []
    real = pipeline.evaluate_predictions

    def spy(preds: pa.Table, **kwargs: Any) -> Any:
        windows.append(kwargs.get("window"))
        return real(preds, **kwargs)

    monkeypatch.setattr(pipeline, "evaluate_predictions", spy)
    evaluate_models(world.ws, ["lr"], out_dir=tmp_path / "w", bootstrap=0)
    assert windows and all(w == (world.start, None) for w in windows)
