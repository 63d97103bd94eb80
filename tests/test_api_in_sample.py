"""A model evaluated or backtested on the charges it was trained or validated on says so in what the library
returns (EvaluationResult.warnings, report.json and report.html; BacktestReport.warnings), not only through
an optional progress callback or the CLI; the CLI says it once (a notebook user's audit of the library)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.evaluation.pipeline import evaluate_models
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.registry import Registry
from payfm.rules.backtest import backtest
from payfm.rules.limits import RuleError
from payfm.rules.rulesets import compile_text
from payfm.synth import WorldConfig, generate_world
from payfm.training.models import model_class
from payfm.training.predict import model_scores

IN_SAMPLE = "its figures are in-sample"
OVERLAP = "overlaps fraud-lr@1's training and validation period"


class World:
    def __init__(self, ws: Workspace, first: datetime, test_start: datetime) -> None:
        self.ws, self.first, self.test_start = ws, first, test_start


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    ws = Workspace.open(tmp_path_factory.mktemp("insample") / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=6000, days=30, seed=3, fraud_rate=0.03)), "replace")
    con = ws.connect()
    try:
        [(first,)] = con.execute("SELECT min(created) FROM charges").fetchall()
    finally:
        con.close()
    fs = tiny_set()
    X = np.random.default_rng(0).normal(size=(200, len(fs.names)))
    m = model_class("lr")(calibration="none").fit(X, (X[:, 0] > 0).astype(int), feature_names=fs.names)
    test_start = first + timedelta(days=20)
    window = {"train_start": first.isoformat(), "test_start": test_start.isoformat()}
    Registry(ws).register(m, name="fraud-lr", task="fraud", fset=fs, data_window=window)
    return World(ws, first, test_start)


def _evaluate(world: World, start: datetime, out: Path, said: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    _, results = evaluate_models(
        world.ws,
        ["fraud-lr"],
        start,
        None,
        out,
        bootstrap=0,
        horizon=timedelta(days=3),
        progress=said.append,
    )
    return [(r.name, r.warnings) for r in results]


def test_an_in_sample_evaluation_says_so_in_its_results_and_report(world: World, tmp_path: Path) -> None:
    said: list[str] = []
    [(model, warned), (baseline, none)] = _evaluate(world, world.first, tmp_path / "in", said)
    assert model == "fraud-lr" and baseline == "rules baseline" and none == ()
    [warning] = warned
    assert IN_SAMPLE in warning and "fraud-lr@1's held-out test period" in warning
    assert said.count(f"warning: {warning}") == 1  # the progress callback is told once, as before
    report = json.loads((tmp_path / "in" / "report.json").read_text())
    assert report["warnings"] == [warning]
    assert report["results"][0]["warnings"] == [warning] and report["results"][1]["warnings"] == []
    page = (tmp_path / "in" / "report.html").read_text()
    assert page.count(IN_SAMPLE) == 1 and 'class="warning"' in page
    best = report["results"][0]["card_precision"]["best"]  # what a perfect ranking reaches, in the header
    assert 0 < best <= 1 and f"card prec@100 (best {best:.3f})" in page


def test_a_held_out_evaluation_has_no_warning(world: World, tmp_path: Path) -> None:
    said: list[str] = []
    assert _evaluate(world, world.test_start, tmp_path / "out", said) == [
        ("fraud-lr", ()),
        ("rules baseline", ()),
    ]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["warnings"] == [] and IN_SAMPLE not in (tmp_path / "out" / "report.html").read_text()
    assert not any(m.startswith("warning:") for m in said)


def test_payfm_evaluate_prints_the_warning_once(world: World, tmp_path: Path) -> None:
    args = [
        "-w",
        str(world.ws.root),
        "evaluate",
        "--model",
        "fraud-lr",
        "--from",
        world.first.date().isoformat(),
    ]
    r = CliRunner(env={"COLUMNS": "400"}).invoke(
        cli, [*args, "--horizon-days", "3", "--bootstrap", "0", "--out", str(tmp_path / "cli")]
    )
    assert r.exit_code == 0, r.output
    assert " ".join(r.output.split()).count(IN_SAMPLE) == 1, r.output


def test_a_backtest_on_a_models_training_window_says_so_in_its_report(world: World) -> None:
    ruleset = compile_text(world.ws, "block if :risk_score: >= 50", "tiny")
    inside = backtest(world.ws, ruleset, tiny_set(), model="fraud-lr", start=world.first)
    assert OVERLAP in inside.warnings[0]
    held_out = backtest(world.ws, ruleset, tiny_set(), model="fraud-lr", start=world.test_start)
    assert not any("training and validation period" in w for w in held_out.warnings)
    # the same figures as with the model's scores given as a table
    table = model_scores(world.ws, "fraud-lr", world.first, None)
    given = backtest(world.ws, ruleset, tiny_set(), scores=table, start=world.first)
    assert (given.charges, given.rules[0].matched) == (inside.charges, inside.rules[0].matched)
    with pytest.raises(RuleError, match="not both"):
        backtest(world.ws, ruleset, tiny_set(), model="fraud-lr", scores=table)


def test_payfm_rules_backtest_prints_the_warning_once(world: World) -> None:
    args = [
        "rules",
        "backtest",
        "--rule",
        "block if :risk_score: >= 50",
        "--set",
        "tiny",
        "--model",
        "fraud-lr",
    ]
    r = CliRunner(env={"COLUMNS": "400"}).invoke(
        cli, ["-w", str(world.ws.root), *args, "--from", world.first.date().isoformat()]
    )
    assert r.exit_code == 0, r.output
    assert " ".join(r.output.split()).count("warning: the window " + OVERLAP) == 1, r.output
