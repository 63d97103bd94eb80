"""Feature drift: the population stability index of each feature between two windows (payfm.evaluation.drift),
`payfm features drift`, and the drift section of `payfm evaluate`'s report."""

from __future__ import annotations

import html
import json
import math
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.evaluation import EvaluationError
from payfm.evaluation.drift import column_drift, feature_drift, level, window_drift
from payfm.evaluation.pipeline import evaluate_models, model_drift
from payfm.events.workspace import Workspace
from payfm.features.catalog import feature_set, tiny_set
from payfm.registry import Registry
from payfm.synth import WorldConfig, generate_world

SPLIT = ["--set", "tiny", "--horizon-days", "10", "--val-days", "7", "--test-days", "7", "--gap-days", "3"]


def test_psi_of_a_two_value_feature_is_the_formula() -> None:
    ref = np.array([0.0] * 50 + [1.0] * 50)
    cur = np.array([0.0] * 25 + [1.0] * 75)
    d = column_drift("flag", ref, cur)
    # bins 0, 1, any other value, missing; the empty ones count at the floor on both sides (no term)
    assert d.psi == pytest.approx((0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5))
    assert d.level == "major" and d.beyond == 0.0
    assert (d.reference_median, d.current_median) == (0.5, 1.0)


def test_levels_and_identical_windows() -> None:
    assert [level(x) for x in (0.0, 0.0999, 0.1, 0.2499, 0.25, 3.0)] == [
        "stable", "stable", "moderate", "moderate", "major", "major"
    ]  # fmt: skip
    x = np.random.default_rng(0).lognormal(size=10_000)
    same = column_drift("amount", x, x.copy())
    assert same.psi == 0.0 and same.level == "stable"
    # ties on the quantile edges (half zeros, as many counts are) fall in the same bin on both sides
    ties = np.where(x < np.median(x), 0.0, np.round(x * 100))
    assert column_drift("count", ties, ties[::-1].copy()).psi == 0.0


def test_psi_over_quantile_bins_is_the_formula() -> None:
    ref = np.arange(1000.0)  # deciles: 10% of the reference in each bin
    cur = np.arange(100.0)  # every value below the first edge (99.9)
    expected = (1 - 0.1) * math.log(1 / 0.1) + 9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)  # floored empty bins
    assert column_drift("x", ref, cur).psi == pytest.approx(expected)


def test_a_shifted_continuous_feature_is_major_and_its_values_beyond_the_reference_are_counted() -> None:
    rng = np.random.default_rng(1)
    ref, cur = rng.normal(size=20_000), rng.normal(loc=1.0, size=20_000)
    d = column_drift("x", ref, cur)
    assert d.level == "major"
    assert d.beyond == pytest.approx(float((cur > ref.max()).mean() + (cur < ref.min()).mean()))
    # a mild shift is moderate, noise between two samples of one distribution stable
    assert column_drift("x", ref, rng.normal(loc=0.35, size=20_000)).level == "moderate"
    assert column_drift("x", ref, rng.normal(size=20_000)).level == "stable"


def test_missing_values_and_unseen_values_have_bins_of_their_own() -> None:
    ref = np.array([1.0, 2.0, 3.0] * 100)
    cur = ref.copy()
    cur[:150] = np.nan
    d = column_drift("code", ref, cur)
    assert (d.reference_missing, d.current_missing) == (0.0, 0.5)
    assert d.psi > 0.25  # half the rows moved to the missing bin
    unseen = column_drift("code", ref, np.array([1.0, 2.0, 3.0, 7.0] * 75))
    assert unseen.beyond == 0.25 and unseen.psi > 0.25  # 7 is in no reference bin: the "other" one
    empty = column_drift("never", np.full(10, np.nan), np.array([1.0, np.nan]))
    assert empty.beyond == 1.0 and empty.reference_median is None and empty.current_median == 1.0


def test_infinities_are_values_beyond_every_finite_one() -> None:
    ref = np.arange(1000.0)
    cur = np.r_[np.arange(500.0), np.full(500, np.inf)]
    d = column_drift("ratio", ref, cur)
    assert math.isfinite(d.psi) and d.beyond == 0.5 and d.level == "major"
    assert d.psi == pytest.approx(column_drift("ratio", ref, np.r_[np.arange(500.0), np.full(500, 1e6)]).psi)
    assert math.isfinite(column_drift("ratio", np.r_[ref, -np.inf], cur).psi)


def test_feature_drift_ranks_the_columns_and_checks_their_shape() -> None:
    rng = np.random.default_rng(2)
    ref = np.column_stack([rng.normal(size=5000), np.arange(5000.0)])
    cur = np.column_stack([rng.normal(size=5000), np.arange(5000.0, 10_000.0)])
    out = feature_drift(ref, cur, ["noise", "count_all"])
    assert [d.feature for d in out] == ["count_all", "noise"]
    assert out[0].beyond == 1.0
    with pytest.raises(EvaluationError, match=r"two \(rows, 3\) matrices, one column per name"):
        feature_drift(ref, cur, ["a", "b", "c"])
    with pytest.raises(EvaluationError, match=r"needs rows in both windows\. Got 0 and 3"):
        column_drift("x", np.array([]), np.ones(3))


# ---- on a workspace ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    w = Workspace.open(tmp_path_factory.mktemp("drift"), create=True)
    w.write_stream(generate_world(WorldConfig(charges=20_000, days=40, seed=5, fraud_rate=0.03)), "replace")
    r = CliRunner().invoke(cli, ["-w", str(w.root), "train", *SPLIT, "--model", "gbdt"])
    assert r.exit_code == 0, r.output
    return w


def _window(ws: Workspace, key: str) -> datetime:
    return datetime.fromisoformat(Registry(ws).get("fraud-gbdt").entry["data_window"][key])


def test_a_window_against_itself_is_stable_and_a_large_one_is_sampled(ws: Workspace) -> None:
    window = (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 20, tzinfo=UTC))
    report = window_drift(ws, tiny_set(), window, window)
    assert [d.psi for d in report.features] == [0.0] * len(tiny_set().names)
    assert not report.sampled and report.reference_rows == report.current_rows > 0
    sampled = window_drift(ws, tiny_set(), window, window, max_rows=1000)
    assert sampled.sampled and sampled.reference_rows == report.reference_rows
    assert {d.feature for d in sampled.features} == set(tiny_set().names)
    # the sample is evenly spaced over the window in time order, not its first rows
    import pyarrow.parquet as pq

    from payfm.features.training_set import backfill_path

    t = pq.read_table(
        backfill_path(ws, tiny_set()), filters=[("created", ">=", window[0]), ("created", "<", window[1])]
    )
    pick = np.linspace(0, t.num_rows - 1, 1000).round().astype(np.int64)
    amounts = t.column("amount_usd").to_numpy(zero_copy_only=False).astype(np.float64)[pick]
    [amount] = [d for d in sampled.features if d.feature == "amount_usd"]
    assert amount.reference_median == amount.current_median == float(np.median(amounts))
    late = window_drift(ws, tiny_set(), window, (window[1], None), max_rows=1000)
    [count] = [d for d in late.features if d.feature == "card.count_fraud_disputes_all"]
    assert count.current_median is not None and count.reference_median is not None
    # an all-time count read later: its values lie above the earlier window's (the windows are not swapped)
    assert count.beyond > 0 and count.current_missing == 0.0


def test_window_bounds_are_read_as_evaluate_reads_them(ws: Workspace) -> None:
    a = window_drift(ws, tiny_set(), ("2026-01-05", "2026-01-20"), (date(2026, 1, 20), None))
    b = window_drift(
        ws,
        tiny_set(),
        (datetime(2026, 1, 5, 1, tzinfo=timezone(timedelta(hours=1))), datetime(2026, 1, 20, tzinfo=UTC)),
        (datetime(2026, 1, 20, tzinfo=UTC), None),
    )
    assert a.reference == b.reference == ("2026-01-05T00:00:00+00:00", "2026-01-20T00:00:00+00:00")
    assert [d.psi for d in a.features] == [d.psi for d in b.features]
    with pytest.raises(EvaluationError, match=r"The drift's reference start must be timezone-aware \(UTC\)"):
        window_drift(ws, tiny_set(), (datetime(2026, 1, 5), None), (None, None))
    with pytest.raises(EvaluationError, match=r"The drift's current window must end after it starts"):
        window_drift(ws, tiny_set(), (None, "2026-01-10"), ("2026-01-20", "2026-01-20"))


def test_a_model_is_compared_from_its_training_window(ws: Workspace) -> None:
    test_start = _window(ws, "test_start")
    report = model_drift(ws, "fraud-gbdt", test_start, None)
    direct = window_drift(
        ws, tiny_set(), (_window(ws, "train_start"), _window(ws, "train_end")), (test_start, None)
    )
    assert [(d.feature, d.psi) for d in report.features] == [(d.feature, d.psi) for d in direct.features]
    assert report.against == "fraud-gbdt@1"
    # an all-time count only grows: read later, it is shifted, and part of it lies beyond every training value
    count_all = next(d for d in report.features if d.feature == "card.count_fraud_disputes_all")
    hour = next(d for d in report.features if d.feature == "card.count_charges_1h")
    assert count_all.psi > hour.psi
    assert count_all.current_missing == 0.0


def test_cli_drift_of_a_model_prints_the_table_and_the_json(ws: Workspace) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["-w", str(ws.root), "features", "drift", "--model", "fraud-gbdt"])
    assert r.exit_code == 0, r.output
    assert "Feature drift of set 'tiny' (fraud-gbdt@1's training window as the reference)" in r.output
    assert "of 4 features shifted (PSI >= 0.25)" in r.output
    r = runner.invoke(cli, ["-w", str(ws.root), "features", "drift", "--model", "fraud-gbdt", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["reference"] == [_window(ws, "train_start").isoformat(), _window(ws, "train_end").isoformat()]
    assert got["current"] == [_window(ws, "test_start").isoformat(), None]
    assert len(got["features"]) == 4 and sum(got["counts"].values()) == 4


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--to", "2026-02-01"], "--from is needed without --model"),
        (["--model", "fraud-gbdt", "--set", "tiny"], "--set and --model exclude each other"),
        (
            ["--from", "2027-01-01"],
            "The current window of the drift (2027-01-01T00:00:00+00:00 .. the end) holds no",
        ),
        (["--from", "2026-01-03", "--reference-to", "2025-06-01", "--set", "tiny"], "The reference window"),
        (["--from", "soon"], "The option --from must be an ISO date or time (2026-03-01). Got 'soon'."),
        (  # the shape of a date, no day of the calendar: the reason is said
            ["--from", "2026-02-30"],
            "--from must be an ISO date or time (2026-03-01). Got '2026-02-30': day is out of range for "
            "month.",
        ),
        (
            ["--from", "2026-01-10", "--to", "2026-01-05"],
            "--to must be after --from (a window is [--from, --to)). "
            "Got --from 2026-01-10T00:00:00+00:00 and --to 2026-01-05T00:00:00+00:00.",
        ),
        (
            ["--model", "fraud-gbdt", "--reference-from", "2026-01-05", "--reference-to", "2026-01-05"],
            "--reference-to must be after --reference-from",
        ),
    ],
)
def test_cli_drift_refuses_bad_windows_in_one_line(ws: Workspace, args: list[str], said: str) -> None:
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "features", "drift", *args])
    assert r.exit_code != 0 and said in r.output, r.output
    assert "Traceback" not in r.output


def test_the_evaluation_report_holds_the_drift_from_the_training_window(
    ws: Workspace, tmp_path: Path
) -> None:
    said: list[str] = []
    paths, _ = evaluate_models(ws, ["fraud-gbdt"], out_dir=tmp_path / "r", bootstrap=0, progress=said.append)
    report: dict[str, Any] = json.loads(paths.json.read_text())
    [drift] = report["drift"]
    assert drift["against"] == "fraud-gbdt@1" and len(drift["features"]) == 4
    assert drift["current"][0] == _window(ws, "test_start").isoformat()
    expected = model_drift(ws, "fraud-gbdt", _window(ws, "test_start"), None)
    assert [f["psi"] for f in drift["features"]] == [d.psi for d in expected.features]
    page = paths.html.read_text()
    assert "Feature drift since training" in page and html.escape(expected.summary()) in page
    assert any(line.startswith("feature drift (") for line in said)
    paths, _ = evaluate_models(ws, ["fraud-gbdt"], out_dir=tmp_path / "n", bootstrap=0, drift=False)
    assert json.loads(paths.json.read_text())["drift"] == []
    assert "Not computed" in paths.html.read_text()


def test_a_drift_that_cannot_be_computed_leaves_the_rest_of_the_report(ws: Workspace, tmp_path: Path) -> None:
    """A model whose recorded training window holds no charge of this log (a world generated again), and
    one recorded with times without a zone (read as UTC, as --from reads them)."""
    from payfm.training.models import model_class

    fs = feature_set("tiny", ws.root)
    X = np.random.default_rng(0).normal(size=(200, len(fs.names)))
    m = model_class("lr")(calibration="none").fit(X, (X[:, 0] > 0).astype(int), feature_names=fs.names)
    reg = Registry(ws)
    old = {"train_start": "2020-01-01T00:00:00+00:00", "train_end": "2020-02-01T00:00:00+00:00"}
    reg.register(m, name="gone", task="fraud", fset=fs, data_window=old)
    naive = {"train_start": "2026-01-01T00:00:00", "train_end": "2026-01-10T00:00:00"}
    reg.register(m, name="naive", task="fraud", fset=fs, data_window=naive)
    said: list[str] = []
    paths, results = evaluate_models(
        ws,
        ["gone", "naive"],
        "2026-01-20",
        None,
        tmp_path / "r",
        bootstrap=0,
        horizon=timedelta(days=3),
        progress=said.append,
    )
    assert len(results) == 3  # both models and the baseline: the report stands
    left_out = "warning: the feature drift of gone@1 is left out of the report: The reference window"
    assert any(s.startswith(left_out) for s in said), said
    [drift] = json.loads(paths.json.read_text())["drift"]
    assert drift["against"] == "naive@1"
    assert drift["reference"] == ["2026-01-01T00:00:00+00:00", "2026-01-10T00:00:00+00:00"]


def test_a_model_without_a_training_window_is_left_out_and_named(ws: Workspace) -> None:
    from payfm.training.models import model_class

    fs = feature_set("tiny", ws.root)
    X = np.random.default_rng(0).normal(size=(200, len(fs.names)))
    m = model_class("lr")(calibration="none").fit(X, (X[:, 0] > 0).astype(int), feature_names=fs.names)
    Registry(ws).register(m, name="bare", task="fraud", fset=fs)
    r = CliRunner().invoke(
        cli, ["-w", str(ws.root), "features", "drift", "--model", "bare", "--from", "2026-01-20"]
    )
    assert r.exit_code != 0
    assert "bare@1's registry entry records no training window" in r.output
    r = CliRunner().invoke(
        cli,
        ["-w", str(ws.root), "features", "drift", "--model", "bare", "--from", "2026-01-20",
         "--reference-from", "2026-01-01", "--reference-to", "2026-01-10"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output  # both bounds given: no training window needed
    assert "Feature drift of set 'tiny' (features of bare@1)" in r.output
    r = CliRunner().invoke(
        cli,
        ["-w", str(ws.root), "features", "drift", "--model", "bare", "--from", "2026-01-20",
         "--reference-from", "2026-01-01", "--reference-to", "2026-01-10", "--json"],
    )  # fmt: skip
    got = json.loads(r.output)
    assert got["reference"] == ["2026-01-01T00:00:00+00:00", "2026-01-10T00:00:00+00:00"]
    assert got["current"] == ["2026-01-20T00:00:00+00:00", None] and got["against"] is None
    assert got["model"] == "bare@1"
