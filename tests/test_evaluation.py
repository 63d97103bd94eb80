"""evaluate_predictions, compare and the report over synthetic prediction tables."""

from __future__ import annotations

import dataclasses
import json
import re
import types
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from payfm.evaluation import EvaluationError, Preset, compare, evaluate_predictions
from payfm.evaluation.report import write_report
from payfm.evaluation.synthetic import synthetic_predictions


@pytest.fixture(scope="module")
def preds() -> pa.Table:
    return synthetic_predictions(20_000, seed=3)


def test_metrics_use_mature_labels_only_and_count_the_immature(preds: pa.Table) -> None:
    r = evaluate_predictions(preds, name="m", bootstrap=20)
    mature = preds.filter(preds["mature"])
    y, s = mature["is_fraud"].to_numpy(), mature["score"].to_numpy()
    assert (r.charges, r.evaluated, r.immature) == (20_000, mature.num_rows, 20_000 - mature.num_rows)
    assert r.immature == 1000
    assert r.average_precision == pytest.approx(average_precision_score(y, s))
    assert r.roc_auc == pytest.approx(roc_auc_score(y, s))
    assert r.fraud == int(y.sum()) and r.base_rate == pytest.approx(y.mean())
    assert r.fraud_usd == pytest.approx(
        mature.filter(pc.equal(mature["is_fraud"], 1))["amount_usd"].to_numpy().sum() / 100
    )


def test_scenario_recall_is_counted_at_the_first_preset_threshold(preds: pa.Table) -> None:
    r = evaluate_predictions(preds, name="m", bootstrap=50, thresholds=[Preset("prod", "fixed", 0.2)])
    mature = preds.filter(preds["mature"])
    s = mature["score"].to_numpy()
    scen = np.array(mature["scenario"].to_pylist(), dtype=object)
    rows = {row.group: row for row in r.slices["scenario"]}
    for name in ("card_testing", "friendly_fraud"):
        m = scen == name
        assert rows[name].fraud == m.sum()
        assert rows[name].recall == pytest.approx(np.mean(s[m] >= 0.2))
        assert rows[name].recall_low <= rows[name].recall <= rows[name].recall_high
    # scenarios differ in difficulty by construction
    assert rows["card_testing"].recall > rows["friendly_fraud"].recall
    assert set(r.slices) == {"scenario", "channel", "merchant_size", "merchant_country"}
    assert sum(row.charges for row in r.slices["channel"]) == r.evaluated


def test_presets_and_dollars_are_consistent(preds: pa.Table) -> None:
    r = evaluate_predictions(preds, name="m", bootstrap=0)
    protect, _, revenue = r.operating_points
    assert protect.point.block_rate <= 0.01 and revenue.point.recall >= 0.5
    mature = preds.filter(preds["mature"])
    s, y = mature["score"].to_numpy(), mature["is_fraud"].to_numpy()
    usd = mature["amount_usd"].to_numpy() / 100
    t = revenue.point.threshold
    assert revenue.legit_blocked_usd == pytest.approx(usd[(s >= t) & (y == 0)].sum())
    assert r.at_block_rate["1%"] == protect.point
    assert r.intervals == {}


def test_intervals_are_reproducible_and_bracket_the_estimates(preds: pa.Table) -> None:
    a = evaluate_predictions(preds, name="m", bootstrap=40, seed=1)
    b = evaluate_predictions(preds, name="m", bootstrap=40, seed=1)
    assert a.intervals == b.intervals
    assert set(a.intervals) == {
        "average_precision",
        "roc_auc",
        "recall_at_fpr_0.1%",
        "recall_at_fpr_1%",
        "precision_at_block_rate_1%",
    }
    ap = a.intervals["average_precision"]
    assert ap.low < a.average_precision < ap.high


def test_bad_inputs_raise_clear_errors(preds: pa.Table) -> None:
    with pytest.raises(EvaluationError, match="Missing: card_fingerprint"):
        evaluate_predictions(preds.drop_columns(["card_fingerprint"]), name="m")
    all_legit = preds.set_column(3, "is_fraud", pa.array(np.zeros(preds.num_rows, dtype=np.int64)))
    with pytest.raises(
        EvaluationError,
        match=r"'m' \(1000 immature labels excluded\) needs at least one fraudulent and one legitimate",
    ):
        evaluate_predictions(all_legit, name="m")
    immature = preds.set_column(
        preds.schema.get_field_index("mature"), "mature", pa.array([False] * preds.num_rows)
    )
    with pytest.raises(
        EvaluationError, match=r"'m' has no charge with a mature label: the window's 20,000 charges"
    ) as e:
        evaluate_predictions(immature, name="m")
    # (a log shorter than the horizon has no earlier window: the horizon is what to change)
    assert str(e.value).endswith(
        "or with a shorter label horizon (--horizon-days) when the event log is shorter than it."
    )
    logits = preds.set_column(2, "score", pc.multiply(preds["score"], 3.0))
    with pytest.raises(EvaluationError, match=r"scores in \[0, 1\]"):
        evaluate_predictions(logits, name="m")


def test_compare_orders_by_average_precision_and_refuses_different_populations(preds: pa.Table) -> None:
    weak = preds.set_column(2, "score", synthetic_predictions(20_000, seed=3, separation=0.5)["score"])
    strong, worse = (evaluate_predictions(p, name=n, bootstrap=10) for p, n in ((preds, "a"), (weak, "b")))
    rows = compare([worse, strong])
    assert [row.name for row in rows] == ["a", "b"]
    assert rows[0].average_precision == strong.average_precision
    assert rows[0].recall_at_1pct_fpr == strong.recall_at_fpr["1%"]
    smaller = evaluate_predictions(preds.slice(0, 10_000), name="c", bootstrap=0)
    with pytest.raises(EvaluationError, match="same charges"):
        compare([strong, smaller])


def test_report_is_self_contained_and_json_has_the_same_numbers(preds: pa.Table, tmp_path: Path) -> None:
    weak = preds.set_column(2, "score", synthetic_predictions(20_000, seed=3, separation=0.5)["score"])
    results = [evaluate_predictions(p, name=n, bootstrap=20) for p, n in ((preds, "gbdt"), (weak, "lr"))]
    paths = write_report(results, tmp_path / "rep")
    page = paths.html.read_text()
    assert page.count("<svg") == 5  # PR+ROC, scores, reliability, dollars, scenarios
    assert not re.search(r"""(src|href)=["']?https?:""", page) and "<script" not in page
    assert "card_testing" in page and "maximize revenue" in page
    data = json.loads(paths.json.read_text())
    assert [c["name"] for c in data["comparison"]] == ["gbdt", "lr"]
    assert data["results"][0]["average_precision"] == results[0].average_precision
    assert data["results"][0]["immature"] == 1000
    # an import names no scenario: no "(none)" group (it means genuine) holding every fraud, but a note
    unnamed = preds.set_column(
        preds.schema.get_field_index("scenario"), "scenario", pa.nulls(preds.num_rows, pa.string())
    )
    page = write_report(
        [evaluate_predictions(unnamed, name="gbdt", bootstrap=0)], tmp_path / "imp"
    ).html.read_text()
    assert "name no fraud scenario" in page and "scenario: gbdt at" not in page and page.count("<svg") == 4
    assert f"{results[0].average_precision:.3f}" in page
    assert not list((tmp_path / "rep").glob(".*tmp"))  # atomic writes leave no temporary files


def test_every_result_field_is_documented() -> None:
    from payfm.evaluation import EvaluationResult

    text = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text()
    section = text.split("## `EvaluationResult`", 1)[1].split("\n## ", 1)[0]
    missing = [f.name for f in dataclasses.fields(EvaluationResult) if f"`{f.name}`" not in section]
    assert not missing, f"docs/evaluation.md does not document {missing}"


def test_intervals_resample_cards_whole(preds: pa.Table) -> None:
    from payfm.evaluation.bootstrap import bootstrap
    from payfm.evaluation.metrics import average_precision_from
    from payfm.evaluation.slices import group_codes

    # Fraud in sprees: every fraud charge of the table moved onto one of 12 cards (a takeover's run).
    y = preds["is_fraud"].to_numpy(zero_copy_only=False)
    mature = preds["mature"].to_numpy(zero_copy_only=False)
    fraud_rows = np.flatnonzero(y == 1)
    cards = np.array(preds["card_fingerprint"].to_pylist(), dtype=object)
    cards[fraud_rows] = [f"spree_{i % 12}" for i in range(fraud_rows.size)]
    sprees = preds.set_column(
        preds.schema.get_field_index("card_fingerprint"), "card_fingerprint", pa.array(cards.tolist())
    )
    r = evaluate_predictions(sprees, name="m", bootstrap=200, seed=4)
    kept = sprees.filter(pa.array(mature))
    ys = kept["is_fraud"].to_numpy(zero_copy_only=False)
    ss = kept["score"].to_numpy(zero_copy_only=False)
    fns = {"average_precision": average_precision_from}
    by_card = bootstrap(fns, ys, ss, resamples=200, seed=4, groups=group_codes(kept["card_fingerprint"]))
    by_charge = bootstrap(fns, ys, ss, resamples=200, seed=4)
    got = r.intervals["average_precision"]
    assert (got.low, got.high) == (by_card["average_precision"].low, by_card["average_precision"].high)
    width = by_charge["average_precision"].high - by_charge["average_precision"].low
    assert got.high - got.low > 1.5 * width  # 12 sprees are 12 draws, not hundreds


def test_the_demo_and_evaluate_tables_show_a_metric_without_value_as_a_dash(
    preds: pa.Table, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import payfm.evaluation.pipeline as pipeline
    import payfm.registry.store as store
    import payfm.training.trainer as trainer
    from payfm.cli.demo import _models

    # a result whose precision at a 1% block rate has no value (NaN)
    r = evaluate_predictions(preds, name="fraud-gbdt@1", bootstrap=0)
    nan_point = dataclasses.replace(r.at_block_rate["1%"], precision=float("nan"))
    r = dataclasses.replace(r, at_block_rate={"1%": nan_point})
    # the demo's evaluation step, with training, the evaluation and the registry stubbed
    window = {"test_start": "2026-03-01T00:00:00+00:00", "test_end": "2026-03-15T00:00:00+00:00"}
    trained = types.SimpleNamespace(window=window, metrics={"val_ap": 0.3})  # (the demo promotes on val AP)
    monkeypatch.setattr(trainer, "train", lambda *_a, **_k: [trained])
    monkeypatch.setattr(trainer, "register_result", lambda *_a: types.SimpleNamespace(ref="fraud-gbdt@1"))
    monkeypatch.setattr(
        pipeline, "evaluate_models", lambda *_a, **_k: (types.SimpleNamespace(html="r.html", drift=()), [r])
    )
    monkeypatch.setattr(store, "Registry", lambda _ws: types.SimpleNamespace(promote=lambda _ref: None))
    _models(types.SimpleNamespace(), types.SimpleNamespace())  # type: ignore[arg-type]
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "fraud-gbdt@1 " in line and "│" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[4] == "-", row  # precision@1% block
    assert not re.search(r"\bnan\b", out), out
    # payfm evaluate prints the same table; every CLI table formats its numbers with one function
    from payfm.cli.evaluate import comparison_table
    from payfm.cli.render import cell, console

    with console.capture() as captured:
        console.print(comparison_table([r], "Evaluation"))
    assert (
        row.split("│")[1:-1]
        == next(line for line in captured.get().splitlines() if "fraud-gbdt@1 " in line).split("│")[1:-1]
    )
    assert (cell(float("nan")), cell(float("inf")), cell(None), cell(0.25)) == ("-", "-", "-", "0.250")
