"""Fixes from a review of ``evaluate_predictions``: column types checked before any work, a wrong label or
score located in the table given, the window and the first immature label bounding card precision@k, the
span the metrics cover in the result, the report and the CLI, and rates whose keys collide."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from rich.console import Console

import payfm.evaluation.evaluate as evaluate_module
from payfm.cli.evaluate import comparison_table
from payfm.evaluation import EvaluationError, evaluate_predictions
from payfm.evaluation.report import render_html, write_report
from payfm.evaluation.synthetic import synthetic_predictions

PREDS = synthetic_predictions(3000, seed=0)  # 14 days from 2026-03-01; the last 150 labels immature


def _with(table: pa.Table, column: str, values: Any) -> pa.Table:
    return table.set_column(table.schema.get_field_index(column), column, values)


def _mature() -> np.ndarray:
    return np.asarray(PREDS["mature"].to_numpy(zero_copy_only=False), dtype=bool)


# ---- F1: the column types, before any work ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("column", "values", "expected", "got"),
    [
        (
            "created",
            PREDS["created"].cast(pa.timestamp("us")),
            "a timestamp with a time zone",
            "timestamp[us]",
        ),
        ("mature", pa.array(_mature().astype(np.int8)), "boolean", "int8"),
        ("mature", pa.array(np.where(_mature(), "yes", "no")), "boolean", "string"),
        ("score", pa.array([str(x) for x in PREDS["score"].to_pylist()]), "numbers", "string"),
        ("is_fraud", pa.array([str(x) for x in PREDS["is_fraud"].to_pylist()]), "numbers", "string"),
    ],
)
def test_a_column_of_the_wrong_type_is_refused_before_any_work(
    column: str, values: Any, expected: str, got: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A naive ``created`` passed the checks and failed with Python's TypeError at card precision@k, after
    all the work; a ``mature`` of integers or texts failed inside Arrow."""

    def no_work(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the evaluation started before the columns were checked")

    monkeypatch.setattr(evaluate_module, "sort_by_score", no_work)
    with pytest.raises(EvaluationError) as e:
        evaluate_predictions(_with(PREDS, column, values), name="m", bootstrap=0)
    said = str(e.value)
    assert said.startswith(f"The '{column}' column of the predictions of 'm' must be {expected}"), said
    assert said.endswith(f"Got {got}."), said
    assert "\n" not in said


def test_boolean_labels_and_any_time_zone_are_taken() -> None:
    ref = evaluate_predictions(PREDS, name="m", bootstrap=0)
    flags = pa.array(PREDS["is_fraud"].to_numpy(zero_copy_only=False) == 1)
    paris = PREDS["created"].cast(pa.timestamp("us", tz="Europe/Paris"))
    got = evaluate_predictions(
        _with(_with(PREDS, "is_fraud", flags), "created", paris), name="m", bootstrap=0
    )
    assert (got.average_precision, got.card_precision) == (ref.average_precision, ref.card_precision)


# ---- F2: a wrong label or score names the column, its row in the table given and its charge_id -----------
def _immature_first() -> pa.Table:
    """The synthetic predictions with their immature rows first, as an unsorted table may have them."""
    mature = pa.array(_mature())
    return pa.concat_tables([PREDS.filter(pc.invert(mature)), PREDS.filter(mature)])


@pytest.mark.parametrize(
    ("column", "value", "got"),
    [
        ("score", float("nan"), "nan"),
        ("score", None, "null"),
        ("is_fraud", 2, "2.0"),
        ("is_fraud", None, "null"),
    ],
)
def test_a_wrong_label_or_score_names_its_column_row_and_charge(column: str, value: Any, got: str) -> None:
    """It said "Got nan at position 850": a position among the mature rows alone (row 1000 of the table
    given), naming neither the column nor the charge."""
    table = _immature_first()
    values = table[column].to_pylist()
    values[1000] = value
    kind = pa.float64() if column == "score" else pa.int64()
    charge = table["charge_id"][1000].as_py()
    assert charge == "ch_0000850" and table["mature"][1000].as_py()
    with pytest.raises(EvaluationError) as e:
        evaluate_predictions(_with(table, column, pa.array(values, kind)), name="m", bootstrap=0)
    said = str(e.value)
    assert said.startswith(f"The '{column}' column of the predictions of 'm' must hold"), said
    assert f"Got {got} at row 1000 (charge_id 'ch_0000850'; 1 wrong of the 2,850 mature rows)." in said


def test_a_wrong_score_of_an_immature_charge_is_not_evaluated() -> None:
    scores = PREDS["score"].to_pylist()
    scores[-1] = float("nan")  # the last charge's label is immature: it enters no metric
    assert not PREDS["mature"][-1].as_py()
    got = evaluate_predictions(_with(PREDS, "score", pa.array(scores)), name="m", bootstrap=0)
    assert got.average_precision == evaluate_predictions(PREDS, name="m", bootstrap=0).average_precision


# ---- F3: the window and the first immature label bound card precision@k -----------------------------------
def test_a_window_beside_the_predictions_is_refused_naming_both_spans() -> None:
    """It fell back to every row, the day of the first immature label (2026-03-14) included."""
    first, last = PREDS["created"][0].as_py().isoformat(), PREDS["created"][-1].as_py().isoformat()
    windows: list[Any] = [
        ("2025-01-01", "2025-01-05"),
        ("2026-03-15", None),
        (None, PREDS["created"][0].as_py()),
    ]
    for window in windows:
        with pytest.raises(EvaluationError) as e:
            evaluate_predictions(PREDS, name="m", bootstrap=0, window=window)
        said = str(e.value)
        assert said.startswith("The 'window' of evaluate_predictions must overlap the predictions of 'm'")
        assert f"({first} .. {last}). Got " in said, said
    said_window = "Got 2025-01-01T00:00:00+00:00 .. 2025-01-05T00:00:00+00:00."
    with pytest.raises(EvaluationError, match=re.escape(said_window)):
        evaluate_predictions(PREDS, name="m", bootstrap=0, window=windows[0])


def _early_labels() -> pa.Table:
    """Charges every 4 minutes on 2026-03-02 and 2026-03-03; the labels are immature from 2026-03-02 12:00,
    except the frauds' (labelled early): after that time they are the only mature charges."""
    start = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    n = 720
    created = [start + dt.timedelta(minutes=4 * i) for i in range(n)]
    y = np.zeros(n, dtype=np.int64)
    y[::9] = 1
    score = np.where(y == 1, 0.9, 0.1)
    mature = [t < start + dt.timedelta(hours=12) or bool(f) for t, f in zip(created, y, strict=True)]
    return pa.table(
        {
            "charge_id": [f"ch_{i}" for i in range(n)],
            "created": pa.array(created, pa.timestamp("us", tz="UTC")),
            "score": score,
            "is_fraud": y,
            "mature": mature,
            "scenario": pa.array([None] * n, pa.string()),
            "amount_usd": [1000] * n,
            "channel": ["ecommerce"] * n,
            "merchant_id": ["m"] * n,
            "merchant_country": ["US"] * n,
            "card_fingerprint": [f"fp_{i}" for i in range(n)],
        }
    )


def test_card_precision_stops_at_the_first_immature_label_without_a_whole_day() -> None:
    """No whole day comes before the first immature label (2026-03-02 12:00): card precision@k fell back to
    every mature row, the early-labelled frauds of 2026-03-03 (a day of frauds only) included."""
    r = evaluate_predictions(_early_labels(), name="m", bootstrap=0, card_k=10)
    assert list(r.card_precision.per_day) == ["2026-03-02"]
    assert r.card_precision.mean == pytest.approx(1.0)  # 20 fraud cards in the morning: the top 10 hit
    assert (r.card_precision_first_day, r.card_precision_last_day) == ("2026-03-02", "2026-03-02")


def test_a_window_shorter_than_a_day_keeps_the_days_it_touches_only() -> None:
    """A window of 12 hours on the 14 days of predictions fell back to all 14 days."""
    window: Any = ("2026-03-05T06:00:00+00:00", "2026-03-05T18:00:00+00:00")
    r = evaluate_predictions(PREDS, name="m", bootstrap=0, window=window)
    assert list(r.card_precision.per_day) == ["2026-03-05"]


def test_a_window_with_no_mature_charge_on_its_days_is_refused() -> None:
    """The mature labels end on 2026-03-10 (a gap before the immature ones of 2026-03-14); a window of the
    last hour touches 2026-03-14 alone: no day of it has a mature label for card precision@k to count."""
    gap = PREDS.filter(pa.array(~_mature() | (np.arange(3000) < 2000)))
    assert gap.filter(gap["mature"])["created"][-1].as_py().date() < dt.date(2026, 3, 14)
    window = (PREDS["created"][-1].as_py() - dt.timedelta(hours=1), None)
    with pytest.raises(
        EvaluationError, match=r"Card precision@k of 'm' needs a charge with a mature label on"
    ):
        evaluate_predictions(gap, name="m", bootstrap=0, window=window)


# ---- F4: what the metrics cover, in the result, report.json, the page and the CLI ------------------------
def test_the_result_the_report_and_the_cli_say_what_the_metrics_cover(tmp_path: Any) -> None:
    """The report's "Window" is the span of every row scored, immature ones included, while the metrics
    cover the mature rows only, and card precision@k the whole days before the first immature label."""
    r = evaluate_predictions(PREDS, name="m", bootstrap=0)
    mature = PREDS.filter(pa.array(_mature()))["created"]
    assert r.evaluated_start == mature[0].as_py().isoformat()
    assert r.evaluated_end == mature[-1].as_py().isoformat() < (r.window_end or "")
    assert (r.card_precision_first_day, r.card_precision_last_day) == ("2026-03-01", "2026-03-13")
    assert r.card_precision_last_day == max(r.card_precision.per_day)
    paths = write_report([r], tmp_path)
    saved = json.loads(paths.json.read_text())["results"][0]
    assert {k: saved[k] for k in ("window_start", "window_end", "evaluated_start", "evaluated_end")} == {
        "window_start": r.window_start,
        "window_end": r.window_end,
        "evaluated_start": r.evaluated_start,
        "evaluated_end": r.evaluated_end,
    }
    assert (saved["card_precision_first_day"], saved["card_precision_last_day"]) == (
        "2026-03-01",
        "2026-03-13",
    )
    covered = (
        f"Metrics on the charges of {str(r.evaluated_start)[:16].replace('T', ' ')} .. "
        f"{str(r.evaluated_end)[:16].replace('T', ' ')} (UTC); "
        "card precision@100 on the UTC days 2026-03-01 .. 2026-03-13"
    )
    assert covered in render_html([r])
    with Console(width=400, record=True) as console:
        console.print(comparison_table([r], "Evaluation"))
    assert covered in " ".join(console.export_text().split())  # (the caption wraps to the table's width)


# ---- Nit: rates whose keys collide ---------------------------------------------------------------------
@pytest.mark.parametrize("param", ["fpr_levels", "block_rates"])
def test_two_rates_of_one_key_are_refused_naming_both(param: str) -> None:
    """0.01 and 0.0100000001 are both "1%": the second's figures replaced the first's, silently."""
    colliding: dict[str, Any] = {param: (0.01, 0.0100000001)}
    twice: Any = (0.01, 0.01)
    with pytest.raises(EvaluationError) as e:
        evaluate_predictions(PREDS, name="m", bootstrap=0, **colliding)
    assert str(e.value) == (
        f"The '{param}' of evaluate_predictions must be rates with distinct keys (percentages of 6 "
        "significant digits). Got 0.01 and 0.0100000001, both '1%'."
    )
    same = evaluate_predictions(PREDS, name="m", bootstrap=0, **{param: twice})  # one rate twice
    assert same.recall_at_fpr or same.at_block_rate
