"""Fixes from an audit of ``payfm evaluate``: a block-rate budget the top tie group alone exceeds (an isotonic
calibration's plateau at 1.0), a report written as one set, and ``evaluate_models`` given one model name."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from rich.console import Console

from payfm.cli.evaluate import comparison_table
from payfm.errors import ConfigError
from payfm.evaluation import PROTECTION, EvaluationError, Preset, compare, evaluate_predictions
from payfm.evaluation import report as report_module
from payfm.evaluation.metrics import (
    binary_counts,
    counts_sorted,
    over_budget,
    point_at_block_rate,
    precision_at_block_rate,
)
from payfm.evaluation.pipeline import evaluate_models, model_list
from payfm.evaluation.report import render_html, replace_together, write_report
from payfm.evaluation.thresholds import choose, note
from payfm.events.workspace import Workspace


def _plateau(n: int = 2000, top: int = 60, seed: int = 0) -> pa.Table:
    """Predictions whose top score (1.0) ties ``top`` charges, 3% of them: over a 1% budget."""
    rng = np.random.default_rng(seed)
    score = rng.uniform(0.0, 0.9, n)
    score[:top] = 1.0
    y = (rng.uniform(size=n) < 0.02).astype(np.int64)
    y[:top] = np.r_[np.ones(top - 3, dtype=np.int64), np.zeros(3, dtype=np.int64)]  # 57 of 60 fraud
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return pa.table(
        {
            "charge_id": [f"ch_{i}" for i in range(n)],
            "created": [t0 + dt.timedelta(minutes=i) for i in range(n)],
            "score": score,
            "is_fraud": y,
            "mature": np.ones(n, dtype=bool),
            "scenario": ["card_testing" if v else None for v in y],
            "amount_usd": rng.integers(100, 50_000, n),
            "channel": rng.choice(["ecommerce", "card_present"], n).tolist(),
            "merchant_id": rng.choice(["m1", "m2", "m3"], n).tolist(),
            "merchant_country": ["US"] * n,
            "card_fingerprint": [f"card_{i % 700}" for i in range(n)],
        }
    )


# 1. a budget the top tie group alone exceeds


def test_the_budget_point_takes_the_top_tie_group_when_it_alone_exceeds_the_budget() -> None:
    y = [1, 1, 1, 0] + [0] * 96
    s = [1.0] * 4 + list(np.linspace(0.5, 0.0, 96))  # 4% of charges tie at the top
    p = precision_at_block_rate(y, s, 0.01)
    assert (p.threshold, p.flagged, p.caught, p.precision, p.block_rate) == (1.0, 4, 3, 0.75, 0.04)
    assert over_budget(p, 0.01) and not over_budget(p, 0.04)
    # within the budget nothing changes: the lowest threshold flagging at most the budget, ties together
    p = precision_at_block_rate(y, s, 0.05)
    assert (p.flagged, p.threshold, over_budget(p, 0.05)) == (5, 0.5, False)


def test_a_zero_weight_top_group_of_a_bootstrap_resample_is_passed_over() -> None:
    # a resample drew none of the charges scored 0.9; the next group (0.8) alone exceeds the budget
    y, s = np.array([1.0, 0, 1, 0, 0, 0]), np.array([0.9, 0.9, 0.8, 0.8, 0.1, 0.1])
    w = np.array([0.0, 0, 1, 1, 1, 1])
    p = point_at_block_rate(counts_sorted(y, s, w), 0.1)
    assert (p.threshold, p.flagged, p.precision) == (0.8, 2, 0.5)


def test_a_tied_top_score_over_budget_still_gives_precision_slices_and_a_note() -> None:
    r = evaluate_predictions(_plateau(), name="gbdt", bootstrap=30)
    at = r.at_block_rate["1%"]
    assert (at.threshold, at.flagged, at.precision) == (1.0, 60, 57 / 60)
    row = compare([r])[0]
    assert row.precision_at_1pct_block == 57 / 60 and row.block_rate_at_1pct_block == 0.03
    assert np.isfinite(r.intervals["precision_at_block_rate_1%"].low)
    protect = r.slice_threshold
    assert protect.point == at
    assert protect.note == (
        "the top score 1.0000 ties 60 charges (3.00% of charges > the 1% budget): a threshold cannot split "
        "them, so all are blocked"
    )
    assert sum(s.flagged for s in r.slices["scenario"]) == 60
    assert sum(s.caught for s in r.slices["scenario"]) == 57
    assert [p.note for p in r.operating_points[1:]] == ["", ""]


def test_the_report_explains_every_slice_threshold_and_the_top_tie() -> None:
    page = render_html([evaluate_predictions(_plateau(), name="gbdt", bootstrap=0)])
    titles = re.findall(r"<h3>([^<]*)</h3>", page)
    assert titles and all("ties 60 charges (3.00% of charges &gt; the 1% budget)" in t for t in titles)
    assert "0.950 (top tie: 3.00% blocked)" in page
    # the terminal table of `payfm evaluate` and `payfm demo` marks it alike
    with Console(width=200, record=True) as console:
        console.print(comparison_table([evaluate_predictions(_plateau(), name="gbdt", bootstrap=0)], "t"))
    assert "0.950 (top tie: 3.00% blocked)" in console.export_text()
    assert "gbdt, maximize protection: the top score 1.0000 ties 60 charges" in page
    # a fixed threshold no score reaches flags nothing, and says so instead of a bare "threshold -"
    r = evaluate_predictions(_plateau(), name="gbdt", bootstrap=0, thresholds=[Preset("prod", "fixed", 1.5)])
    titles = re.findall(r"<h3>([^<]*)</h3>", render_html([r]))
    why = "at prod (threshold -; no charge scores at or above 1.5: nothing is flagged)"
    assert titles and all(t.endswith(why) for t in titles)


def test_a_budget_the_scores_honour_has_no_note() -> None:
    c = binary_counts([1, 0, 0, 0], [0.9, 0.5, 0.4, 0.3])
    p = choose(Preset("quarter", "block_rate", 0.25), c)
    assert (p.flagged, note(Preset("quarter", "block_rate", 0.25), p)) == (1, "")
    assert note(PROTECTION, choose(PROTECTION, c)).startswith("the top score 0.9000 ties 1 charges (25.00%")


# 2. the report's files replace the old set together


def _old_report(out: Path) -> None:
    out.mkdir()
    (out / "report.json").write_text("old json")
    (out / "report.html").write_text("old html")


def test_an_interrupted_report_leaves_the_old_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = evaluate_predictions(_plateau(), name="gbdt", bootstrap=0)
    out = tmp_path / "r"
    _old_report(out)
    real_replace = os.replace
    calls: list[str] = []

    def interrupted(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append(Path(dst).name)
        if len(calls) == 2:  # Ctrl-C after the first file of the set was renamed into place
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(report_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report([r], out)
    monkeypatch.setattr(report_module.os, "replace", real_replace)
    assert (out / "report.json").read_text() == "old json"
    assert (out / "report.html").read_text() == "old html"
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]  # no temporaries left
    # interrupted while the page is rendered: nothing was written yet
    monkeypatch.setattr(report_module, "render_html", lambda *_a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_report([r], out)
    assert (out / "report.json").read_text() == "old json"


def test_a_failed_rename_restores_the_old_set_and_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "r"
    _old_report(out)
    (out / "new.html").mkdir()  # a folder where the second file goes: its rename fails
    (out / "new.html" / "x").write_text("")
    with pytest.raises(ConfigError, match=r"The report cannot be written to '.*r': "):
        replace_together({out / "report.json": b"new json", out / "new.html": b"new html"})
    assert (out / "report.json").read_text() == "old json"
    assert sorted(p.name for p in out.iterdir()) == ["new.html", "report.html", "report.json"]


def test_ctrl_c_during_the_renames_is_held_until_the_set_is_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r"
    _old_report(out)
    real_replace = os.replace

    def ctrl_c_then_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst).name == "report.json":
            signal.raise_signal(signal.SIGINT)
        real_replace(src, dst)

    monkeypatch.setattr(report_module.os, "replace", ctrl_c_then_replace)
    # Ctrl-C's handler as in a terminal: a process a shell starts in the background has SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            replace_together({out / "report.json": b"new json", out / "report.html": b"new html"})
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (out / "report.json").read_text() == "new json"
    assert (out / "report.html").read_text() == "new html"


def test_write_report_replaces_both_files(tmp_path: Path) -> None:
    out = tmp_path / "r"
    _old_report(out)
    paths = write_report([evaluate_predictions(_plateau(), name="gbdt", bootstrap=0)], out)
    assert paths.json.read_text().startswith("{") and paths.html.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]


# 3. evaluate_models given one model name


def test_evaluate_models_takes_one_model_name(tmp_path: Path) -> None:
    from payfm.features.catalog import feature_set
    from payfm.registry.store import Registry
    from payfm.training.models.linear import LogisticModel

    ws = Workspace.open(tmp_path / "ws", create=True)
    fset = feature_set("tiny")
    X = np.random.default_rng(0).normal(size=(50, len(fset.names)))
    lr = LogisticModel(calibration="none").fit(X, (X[:, 0] > 0).astype(int), feature_names=fset.names)
    Registry(ws).register(lr, name="fraud-lr", task="fraud", fset=fset)
    # past the registry (it said "No registered model 'f'"): the empty event log is what stops it
    with pytest.raises(EvaluationError, match="The event log holds no charges"):
        evaluate_models(ws, "fraud-lr@1", "2023-02-15", out_dir=tmp_path / "r")


def test_model_list_refuses_what_is_not_a_model_reference() -> None:
    assert model_list("fraud-gbdt") == ["fraud-gbdt"] and model_list(("a", "b")) == ["a", "b"]
    assert model_list(["b", "a", "b"]) == ["b", "a"]  # given twice: evaluated once (it was a duplicate row)
    with pytest.raises(EvaluationError, match=r"model_refs of evaluate_models must be .* Got int\."):
        model_list(3)  # type: ignore[arg-type]
    with pytest.raises(EvaluationError, match=r"Got a sequence holding int, str\."):
        model_list(["a", 1])  # type: ignore[list-item]


# A second audit (twenty-fifth session): the bootstrap turned off, a fixed preset without a threshold, card
# precision@k on the part-days at a window's edges, resamples that could not be used.


def test_the_bootstrap_turned_off_gives_the_breakdowns_no_interval() -> None:
    from payfm.evaluation.synthetic import synthetic_predictions

    r = evaluate_predictions(synthetic_predictions(20_000, seed=0), name="m", bootstrap=0, seed=0)
    rows = [row for dim in r.slices.values() for row in dim]
    assert rows and all(np.isnan(row.recall_low) and np.isnan(row.recall_high) for row in rows)
    on = evaluate_predictions(synthetic_predictions(20_000, seed=0), name="m", bootstrap=50, seed=0)
    fraud_rows = [row for dim in on.slices.values() for row in dim if row.fraud >= 20]
    # with resamples, a real interval around the recall (a single draw would have low == high, off it)
    assert fraud_rows and all(row.recall_low <= row.recall <= row.recall_high for row in fraud_rows)
    assert any(row.recall_low < row.recall_high for row in fraud_rows)


@pytest.mark.parametrize("value", [float("nan"), -0.1])
def test_a_fixed_preset_needs_a_threshold_that_is_a_score(value: float) -> None:
    with pytest.raises(EvaluationError, match=r"fixed threshold of preset 'prod' must be a score >= 0"):
        Preset("prod", "fixed", value)
    with pytest.raises(EvaluationError, match="fixed threshold"):
        Preset("prod", "fixed")  # forgotten: NaN would flag every charge


def _days_table(first_day_sliver: bool) -> pa.Table:
    """Two whole days of 300 charges each (10 frauds a day, ranked first), plus one charge at 23:59 the day
    before: the sliver a model's test period starts with."""
    rows = []
    for day in (2, 3):
        for i in range(300):
            t = dt.datetime(2026, 3, day, 0, 0, tzinfo=dt.UTC) + dt.timedelta(minutes=4 * i)
            rows.append((t, 1 if i < 10 else 0, 0.9 if i < 10 else 0.1, f"fp_{day}_{i}"))
    if first_day_sliver:
        rows.append((dt.datetime(2026, 3, 1, 23, 59, tzinfo=dt.UTC), 0, 0.05, "fp_sliver"))
    n = len(rows)
    return pa.table(
        {
            "charge_id": [f"ch_{i}" for i in range(n)],
            "created": pa.array([r[0] for r in rows], pa.timestamp("us", tz="UTC")),
            "score": [r[2] for r in rows],
            "is_fraud": [r[1] for r in rows],
            "mature": [True] * n,
            "scenario": pa.array([None] * n, pa.string()),
            "amount_usd": [1000] * n,
            "channel": ["ecommerce"] * n,
            "merchant_id": ["m"] * n,
            "merchant_country": ["US"] * n,
            "card_fingerprint": [r[3] for r in rows],
        }
    )


def test_card_precision_averages_the_whole_days_of_the_window_only() -> None:
    start = dt.datetime(2026, 3, 1, 23, 58, tzinfo=dt.UTC)  # a test period starts when its split fell
    whole = evaluate_predictions(_days_table(False), name="m", bootstrap=0, card_k=20)
    edged = evaluate_predictions(
        _days_table(True),
        name="m",
        bootstrap=0,
        card_k=20,
        window=(start, dt.datetime(2026, 3, 4, tzinfo=dt.UTC)),
    )
    # 10 fraud cards of the top 20 on each whole day: 0.5; the sliver's one charge would make it 1/3
    assert whole.card_precision.mean == pytest.approx(0.5)
    assert edged.card_precision.mean == pytest.approx(0.5)
    assert list(edged.card_precision.per_day) == ["2026-03-02", "2026-03-03"]
    # without the window the sliver is a day like any other (the Python API's own choice of window)
    assert evaluate_predictions(_days_table(True), name="m", bootstrap=0, card_k=20).card_precision.mean == (
        pytest.approx(1 / 3)
    )
    # a window shorter than a whole day keeps its part-day
    short = (dt.datetime(2026, 3, 2, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 2, 23, tzinfo=dt.UTC))
    assert evaluate_predictions(
        _days_table(False), name="m", bootstrap=0, card_k=20, window=short
    ).card_precision.mean


def test_the_report_and_the_cli_say_how_many_resamples_could_be_used() -> None:
    from payfm.evaluation.evaluate import resamples_text, resamples_used

    rng = np.random.default_rng(3)
    n = 400
    y = np.zeros(n, dtype=np.int64)
    y[7] = 1  # one fraud: a card resample misses it about a third of the time
    preds = _days_table(False).slice(0, n).set_column(3, "is_fraud", pa.array(y))
    preds = preds.set_column(2, "score", pa.array(rng.uniform(size=n)))
    r = evaluate_predictions(preds, name="m", bootstrap=100, seed=0)
    asked, fewest = resamples_used([r])
    assert asked == 100 and 40 < fewest < 90
    assert (
        resamples_text([r]) == f"100 resamples, of which as few as {fewest} drew both classes and were used"
    )
    assert f"as few as {fewest} drew both classes" in render_html([r], "t")
    many = evaluate_predictions(_plateau(), name="m", bootstrap=30, seed=0)
    assert resamples_text([many]) == "30 resamples"


def test_card_precision_stops_at_the_day_of_the_first_immature_label() -> None:
    """Found by a review: without --to the mature labels end mid-day, and that part-day counted as a day
    (after it only frauds are mature, which would flatter any day)."""
    table = _days_table(False)
    created = table["created"].to_pylist()
    cut = dt.datetime(2026, 3, 3, 12, tzinfo=dt.UTC)
    mature = [t < cut or y == 1 for t, y in zip(created, table["is_fraud"].to_pylist(), strict=True)]
    table = table.set_column(table.schema.get_field_index("mature"), "mature", pa.array(mature))
    r = evaluate_predictions(table, name="m", bootstrap=0, card_k=20)
    assert list(r.card_precision.per_day) == ["2026-03-02"] and r.card_precision.mean == pytest.approx(0.5)


def test_the_cli_says_when_resamples_could_not_be_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from payfm.cli import evaluate as cli_evaluate
    from payfm.cli.main import cli
    from payfm.evaluation.report import EvaluationReport

    rng = np.random.default_rng(3)
    y = np.zeros(400, dtype=np.int64)
    y[7] = 1
    preds = _days_table(False).slice(0, 400).set_column(3, "is_fraud", pa.array(y))
    preds = preds.set_column(2, "score", pa.array(rng.uniform(size=400)))
    few = evaluate_predictions(preds, name="m", bootstrap=100, seed=0)
    many = evaluate_predictions(_plateau(), name="m", bootstrap=30, seed=0)
    Workspace.open(tmp_path / "ws", create=True)
    paths = EvaluationReport(html=tmp_path / "r.html", json=tmp_path / "r.json")
    for result, said in ((few, "Intervals: 100 resamples, of which as few as"), (many, None)):
        monkeypatch.setattr(cli_evaluate, "evaluate_models", lambda *a, r=result, **k: (paths, [r]))
        out = CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), "evaluate", "--no-baseline"])
        assert out.exit_code == 0, out.output
        assert (said in " ".join(out.output.split())) if said else "Intervals:" not in out.output


def test_evaluate_with_nothing_to_evaluate_names_the_options(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from payfm.cli.main import cli

    Workspace.open(tmp_path / "ws", create=True)
    out = CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), "evaluate", "--no-baseline"])
    assert out.exit_code == 1
    said = " ".join(out.output.split())
    assert "Nothing to evaluate: expected at least one model (--model" in said
    assert "leave out --no-baseline" in said and "evaluate_models" not in said
