"""End to end on a small synthetic world: two tasks through one trainer; scoring a window for evaluation."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.evaluation.checks import EvaluationError
from payfm.evaluation.pipeline import evaluate_models
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.features.training_set import load_backfill
from payfm.registry import Registry
from payfm.synth import WorldConfig, generate_world
from payfm.training.data import feature_matrix
from payfm.training.labels import fraud_labels
from payfm.training.predict import SCORE_COLUMNS, score_window
from payfm.training.splits import prequential_splits
from payfm.training.tasks import task
from payfm.training.trainer import TrainConfig, _iso, prepare, register_result, train

FS = tiny_set()
CFG = TrainConfig(horizon_days=10, val_days=7, test_days=7, gap_days=3, params={"gbdt": {"n_estimators": 60}})


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    w = Workspace.open(tmp_path_factory.mktemp("world"), create=True)
    w.write_stream(generate_world(WorldConfig(charges=30_000, days=40, seed=7, fraud_rate=0.03)), "replace")
    return w


def test_retry_success_labels_match_a_hand_computation(ws: Workspace) -> None:
    rows = ws.read("charges", ["charge_id", "created", "outcome", "retry_of"]).to_pylist()
    by_id = {r["charge_id"]: r for r in rows}
    horizon = timedelta(days=7)
    now = max(r["created"] for r in rows)
    expect: dict[str, tuple[int, bool]] = {}
    for r in rows:
        if r["outcome"] == "issuer_declined":
            expect[r["charge_id"]] = (0, r["created"] + horizon <= now)
    for r in rows:
        d = by_id.get(r["retry_of"] or "")
        ok = d and d["outcome"] == "issuer_declined" and r["outcome"] == "authorized"
        if ok and r["created"] <= d["created"] + horizon:  # type: ignore[index]  # d is set when ok
            expect[d["charge_id"]] = (1, d["created"] + horizon <= now)  # type: ignore[index]  # mature: horizon
    got = task("retry_success").labels(ws).to_pylist()
    assert {g["key"]: (g["label"], g["mature"]) for g in got} == expect
    assert 0 < sum(v[0] for v in expect.values()) < len(expect)


@pytest.mark.parametrize("name", ["fraud", "retry_success"])
def test_task_data_streams_each_backfill_row_to_its_labelled_row(
    ws: Workspace, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import payfm.training.data as data_mod

    monkeypatch.setattr(data_mod, "_READ_ROWS", 997)  # many batches, none aligned with the task's rows
    t = task(name)
    data = data_mod.task_data(ws, t, FS, horizon=timedelta(days=7))
    labels = {r["key"]: r for r in t.labels(ws, None, timedelta(days=7)).to_pylist()}
    assert data.X.dtype == np.float32 and data.X.shape == (len(labels), len(FS.names))
    feats = load_backfill(ws, FS)
    at = {c: i for i, c in enumerate(feats["charge_id"].to_pylist())}
    keys = data.table["key"].to_pylist()
    expect = feature_matrix(feats.take([at[k] for k in keys]), FS.names, np.float32)
    np.testing.assert_array_equal(data.X, expect)
    assert len(np.unique(expect[:, -1])) > 100  # rows that differ: a misplaced row would show
    created = data.table["created"].to_pylist()
    assert list(zip(created, keys, strict=True)) == sorted(zip(created, keys, strict=True))
    assert data.y.tolist() == [labels[k]["label"] for k in keys]
    assert data.mature.tolist() == [labels[k]["mature"] for k in keys]


def test_a_second_task_trains_end_to_end_with_the_same_trainer(ws: Workspace) -> None:
    t = task("retry_success")
    [res] = train(ws, "gbdt", t, FS, TrainConfig(val_days=7, test_days=7, gap_days=1))
    assert res.task == "retry_success" and res.horizon_days == 7
    declined = (
        ws.connect().sql("SELECT count(*) FROM charges WHERE outcome = 'issuer_declined'").fetchall()[0][0]
    )
    rows = res.split["rows"]
    assert 0 < rows["train"] + rows["val"] + rows["test"] <= declined  # keyed by declined charges only
    assert 0 <= res.metrics["val_ap"] <= 1
    reg = Registry(ws)
    mv = reg.register(res.model, name="retry-gbdt", task=t.name, fset=FS, extra={"horizon_days": 7})
    scored = score_window(ws, mv.ref)
    assert scored.num_rows == declined
    with pytest.raises(ConfigError, match=r"The scoring window must end after it starts\. Got 2026-02-10"):
        score_window(ws, mv.ref, "2026-02-10", "2026-02-01")  # (0 rows, silently, before)
    with pytest.raises(
        ConfigError, match=r"The 'horizon' of score_window must be a positive timedelta\. Got 20"
    ):
        score_window(ws, mv.ref, horizon=20)  # type: ignore[arg-type]
    assert set(pc.unique(scored["is_fraud"]).to_pylist()) == {0, 1}
    # evaluated, its positives are retries that succeeded, and the fraud rules baseline is no comparison
    out = ws.root / "reports" / "retry"
    args = ["-w", str(ws.root), "evaluate", "--model", mv.ref, "--bootstrap", "0", "--out", str(out)]
    r = CliRunner().invoke(cli, [*args, "--from", "2026-01-01"])
    assert r.exit_code == 0, r.output
    assert "positive: retry_success)" in r.output and " fraud)" not in r.output
    assert "rules baseline is left out: its rules flag fraud; these models predict retry_success" in r.output
    assert [m["name"] for m in json.loads((out / "report.json").read_text())["comparison"]] == [mv.ref]
    page = (out / "report.html").read_text()
    assert "positive for task &#x27;retry_success&#x27;" in page  # (HTML-escaped quotes)
    assert "fraudulent (base rate" not in page


@pytest.fixture(scope="module")
def trained(ws: Workspace) -> Registry:
    reg = Registry(ws)
    for res in train(ws, ["lr", "gbdt"], task("fraud"), FS, CFG):
        mv = register_result(reg, res, FS)
        assert mv.ref == f"fraud-{res.kind}@1" and mv.entry["horizon_days"] == 10
    return reg


def test_fraud_models_learn_and_report_immature_labels(trained: Registry) -> None:
    for name in ("fraud-lr", "fraud-gbdt"):
        mv = trained.get(name)
        m = mv.entry["metrics"]
        base_rate = m["val_positives"] / m["val_rows"]
        assert m["val_ap"] > 2 * base_rate, (name, m)
        assert mv.entry["split"]["immature_dropped"] == {
            "train": 0,
            "val": 0,
        }  # val ends a horizon before now
        # the timeline ends a horizon (10 days) before the log's end: every test label is mature
        assert m["test_immature"] == 0 and m["test_rows"] > 1000 and mv.entry["split"]["too_recent"] > 5000
        assert mv.entry["data_window"]["train_end"] < mv.entry["data_window"]["val_start"]


def test_models_of_different_horizons_are_evaluated_on_one_population(
    ws: Workspace, trained: Registry, tmp_path: Path
) -> None:
    """Found by an audit: each model's charges were labelled over its own horizon, so two models of
    different horizons had different populations and the comparison refused them after scoring both."""
    [res] = train(ws, "lr", task("fraud"), FS, replace(CFG, horizon_days=3))
    short = register_result(trained, res, FS)
    said: list[str] = []
    test_start = trained.get("fraud-lr@1").entry["data_window"]["test_start"]
    _, results = evaluate_models(
        ws, ["fraud-lr@1", short.ref], test_start, None, tmp_path / "r", bootstrap=0, progress=said.append
    )
    assert any(m.startswith("labels: over 10 days, the longest") and f"{short.ref} 3 days" in m for m in said)
    assert len({(r.evaluated, r.fraud, r.immature) for r in results}) == 1  # the baseline's too
    over_ten = score_window(ws, short.ref, datetime.fromisoformat(test_start), horizon=timedelta(days=10))
    mature = over_ten.filter(over_ten["mature"])
    assert results[1].evaluated == mature.num_rows and results[1].fraud == pc.sum(mature["is_fraud"]).as_py()
    own = score_window(
        ws, short.ref, datetime.fromisoformat(test_start)
    )  # over its own 3 days: more charges mature
    assert pc.sum(own["mature"]).as_py() > mature.num_rows
    said.clear()  # asked for: every model over the given horizon, the shorter one here
    _, results = evaluate_models(
        ws,
        ["fraud-lr@1", short.ref],
        test_start,
        None,
        tmp_path / "g",
        bootstrap=0,
        progress=said.append,
        horizon=timedelta(days=3),
    )
    assert any(m.startswith("labels: over 3 days (--horizon-days) for every model") for m in said)
    assert results[0].evaluated == pc.sum(own["mature"]).as_py() == results[1].evaluated
    retry = trained.register(
        res.model, name="retry-lr", task="retry_success", fset=FS, extra={"horizon_days": 7}
    )
    with pytest.raises(
        EvaluationError, match=r"Models of different tasks cannot be compared.*\(retry_success\)"
    ):
        evaluate_models(ws, ["fraud-lr@1", retry.ref], test_start, None, tmp_path / "x", bootstrap=0)


def test_score_window_scores_the_window_with_the_registered_model(ws: Workspace, trained: Registry) -> None:
    full = score_window(ws, "fraud-gbdt")
    assert tuple(full.column_names) == SCORE_COLUMNS
    assert full.num_rows == ws.count("charges")
    created = full["created"].to_pylist()
    start, end = created[len(created) // 2], created[3 * len(created) // 4]
    part = score_window(ws, "fraud-gbdt@1", start, end)
    got = part["created"].to_pylist()
    assert min(got) >= start and max(got) < end and part.num_rows == sum(start <= c < end for c in created)
    _, model = trained.load("fraud-gbdt", FS)
    feats = load_backfill(ws, FS)
    idx = {c: i for i, c in enumerate(feats["charge_id"].to_pylist())}
    take = [idx[c] for c in part["charge_id"].to_pylist()]
    expect = model.predict_proba(feature_matrix(feats.take(take), FS.names))
    np.testing.assert_array_equal(part["score"].to_numpy(), expect)
    labels = fraud_labels(ws.connect(), horizon=timedelta(days=10))
    assert dict(zip(full["charge_id"].to_pylist(), full["is_fraud"].to_pylist(), strict=True)) == dict(
        zip(labels["charge_id"].to_pylist(), labels["is_fraud"].to_pylist(), strict=True)
    )
    with pytest.raises(Exception, match="timezone-aware"):
        score_window(ws, "fraud-gbdt", start.replace(tzinfo=None))
    # read as payfm evaluate reads its window: a date (or ISO date text) is its midnight UTC, ISO text
    # naming no zone is UTC; other types and other text are refused
    day = start.date().isoformat()
    midnight = datetime.combine(start.date(), time(), tzinfo=UTC)
    by_text = score_window(ws, "fraud-gbdt@1", day, end.isoformat())
    assert by_text.equals(score_window(ws, "fraud-gbdt@1", midnight, end))
    assert by_text.equals(score_window(ws, "fraud-gbdt@1", start.date(), end))
    assert by_text.num_rows == sum(midnight <= c < end for c in created)  # from the day's midnight
    noon = score_window(ws, "fraud-gbdt@1", f"{day}T12:00", end)
    assert noon.equals(score_window(ws, "fraud-gbdt@1", midnight + timedelta(hours=12), end))
    with pytest.raises(ConfigError, match=r"'end' of the scoring window must be an ISO .* Got '15/02/2023'"):
        score_window(ws, "fraud-gbdt", None, "15/02/2023")
    with pytest.raises(ConfigError, match=r"must be a datetime, a date or an ISO date .* Got int"):
        score_window(ws, "fraud-gbdt", 20230215)  # type: ignore[arg-type]


def test_cli_train_registers_candidates_and_prints_a_comparison(tmp_path: Path, ws: Workspace) -> None:
    args = ["--set", "tiny", "--val-days", "7", "--test-days", "7", "--gap-days", "3"]

    def run(*more: str) -> Any:
        return CliRunner().invoke(cli, ["-w", str(ws.root), "train", *args, *more])

    r = run("--model", "lr", "--horizon-days", "10")
    assert r.exit_code == 0, r.output
    assert "validation and test" in r.output and "immature labels left out" in r.output
    assert "fitted on every charge" not in r.output
    fitted = Registry(ws).get("fraud-lr").entry["split"]["fitted"]
    assert f"fitted on {fitted:,} charges" in " ".join(r.output.split()) and fitted > 0
    assert Registry(ws).get("fraud-lr").stage == "candidate"
    r = run("--model", "lr", "--horizon-days", "10", "--downsample", "0.1", "--seed", "3")
    assert r.exit_code == 0, r.output
    entry = Registry(ws).list("fraud-lr")[-1].entry
    as_of = entry["training"].pop("as_of")
    assert entry["training"] == {
        "seed": 3,
        "calibration": "isotonic",
        "downsample": 0.1,
        "train_on": "all",
        "trials": 0,
        "mature_test": True,
        "warm_up_days": 0.0,
    }
    # the labels' as-of ("now": the log's latest event), which the test period ends a horizon before
    gap = datetime.fromisoformat(as_of) - datetime.fromisoformat(entry["data_window"]["test_end"])
    assert abs(gap - timedelta(days=10)) < timedelta(seconds=1)
    kept = entry["split"]["fitted"]
    said = " ".join(r.output.split())  # the console wraps long lines
    assert kept < fitted / 3 and f"fitted on {kept:,} charges (negatives downsampled to 10%" in said
    r = run("--model", "lr", "--fm-inputs", "surprise")
    assert r.exit_code == 2 and "--fm-inputs applies to a foundation model's outputs" in r.output
    r = run("--horizon-days", "200")
    assert r.exit_code == 1 and "with mature labels" in r.output and "shorter --horizon-days" in r.output
    assert "-" not in r.output.split("spans")[1].split("days")[0]  # no negative span
    with pytest.raises(ConfigError, match=r"must be positive\. Got -1 days"):
        task("fraud").labels(ws, horizon=timedelta(days=-1))
    r = run("--model", "lr", "--horizon-days", "10", "--train-on", "authorized")
    assert r.exit_code == 0 and re.search(r"fitted on [0-9,]+ authorized charges", r.output)
    assert Registry(ws).list("fraud-lr")[-1].entry["split"]["train_on"] == "authorized"


def test_train_on_authorized_fits_on_authorized_charges_and_tests_on_every_charge(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import payfm.training.trainer as trainer

    t = task("fraud")
    data, every = prepare(ws, t, FS, CFG)
    authorized_cfg = replace(CFG, train_on="authorized")
    _, authorized = prepare(ws, t, FS, authorized_cfg)
    outcome = np.array(data.table["outcome"].to_pylist())
    assert list(authorized.train) == [i for i in every.train if outcome[i] == "authorized"]
    assert list(authorized.val) == [i for i in every.val if outcome[i] == "authorized"]
    assert len(authorized.train) < 0.95 * len(every.train)  # the world's declined charges are left out
    np.testing.assert_array_equal(authorized.test, every.test)  # tested on every charge either way

    fitted: list[int] = []  # rows each fit saw
    real = trainer.model_class

    def recording(kind: str) -> type:
        class Recording(real(kind)):  # type: ignore[misc]
            def fit(self, X: np.ndarray, *args: object, **kwargs: object) -> object:
                fitted.append(len(X))
                return super().fit(X, *args, **kwargs)

        return Recording

    monkeypatch.setattr(trainer, "model_class", recording)
    [res] = train(ws, "lr", t, FS, authorized_cfg)
    assert res.split["train_on"] == "authorized" and res.split["rows"]["train"] == len(authorized.train)
    assert res.metrics["test_rows"] == int(data.mature[every.test].sum())
    assert fitted == [len(authorized.train)]
    weekly_cfg = replace(authorized_cfg, gap_days=3)
    weekly = trainer.prequential(ws, "lr", t, FS, weekly_cfg, weeks=2)
    # the weeks end where train's test period ends (a horizon before the as-of): every label mature
    end = trainer.labels_now_us(ws, t, data, weekly_cfg) - 10 * 86_400_000_000
    folds = prequential_splits(data.created_us, data.mature, weeks=2, end_us=end, val_days=7, gap_days=3)
    assert [r["week_end"] for r in weekly] == [_iso(f.bounds["test"][1]) for f in folds]
    assert weekly[-1]["week_end"] == _iso(end)
    assert all(r["test_immature"] == 0 and r["test_rows"] > 0 and r["val_rows"] > 0 for r in weekly)
    assert fitted[1:] == [int((outcome[f.train] == "authorized").sum()) for f in folds]  # each weekly fit

    with pytest.raises(ConfigError, match="leaves no train rows"):
        retry = TrainConfig(val_days=7, test_days=7, gap_days=1, train_on="authorized")
        train(ws, "lr", task("retry_success"), FS, retry)  # its rows are declined charges
    with pytest.raises(ConfigError, match="leaves no train rows"):
        trainer.prequential(ws, "lr", task("retry_success"), FS, retry, weeks=2)
    with pytest.raises(ConfigError, match="must be one of all, authorized"):
        prepare(ws, t, FS, replace(CFG, train_on="declined"))


def test_the_timeline_ends_a_horizon_before_the_latest_event_an_outcome_included(tmp_path: Path) -> None:
    """An export's chargebacks run months past its last charge: every charge a horizon before the latest of
    them has its final label, and training keeps it (the timeline ended a horizon before the last charge,
    dropping the whole last horizon as too recent, while the labels called those charges mature)."""
    w = Workspace.open(tmp_path / "ws", create=True)
    w.write_stream(generate_world(WorldConfig(charges=20_000, days=40, seed=3, fraud_rate=0.03)), "replace")
    _, before = prepare(w, task("fraud"), FS, CFG)
    assert before.too_recent > 1000  # the last 10 days of charges
    last = max(w.read("charges", ["created"])["created"].to_pylist())
    disputes = w.read("disputes")
    late = disputes.slice(0, 1).to_pylist()[0]
    late |= {"dispute_id": "dp_late", "created": last + timedelta(days=11)}
    w.write_stream(iter([("disputes", pa.Table.from_pylist([late], schema=disputes.schema))]), "append")
    data, after = prepare(w, task("fraud"), FS, CFG)
    assert after.too_recent == 0 and bool(data.mature.all())
    assert after.test.max() > before.test.max()  # the test period moved to the latest charges
    # a retry is a charge: retry labels are read at the last charge, and their timeline ends before it
    retries, split = prepare(w, task("retry_success"), FS, replace(CFG, horizon_days=3))
    assert len(split.test) > 0 and bool(retries.mature[split.test].all()) and split.too_recent > 0


def test_the_recorded_as_of_rebuilds_a_model_after_the_log_grew(tmp_path: Path) -> None:
    """Found by an audit: one refund dated after the log's end moved "now", the split with it, and the
    same command registered another model; the entry did not say when its labels were read."""
    w = Workspace.open(tmp_path / "ws", create=True)
    w.write_stream(generate_world(WorldConfig(charges=15_000, days=40, seed=4, fraud_rate=0.03)), "replace")
    reg = Registry(w)
    cfg = replace(CFG, params={"gbdt": {"n_estimators": 20}})
    first = register_result(reg, train(w, "gbdt", task("fraud"), FS, cfg)[0], FS)
    as_of = first.entry["training"]["as_of"]
    disputes = w.read("disputes")
    late = disputes.slice(0, 1).to_pylist()[0] | {"dispute_id": "dp_late"}
    late["created"] = datetime.fromisoformat(as_of) + timedelta(days=15)
    w.write_stream(iter([("disputes", pa.Table.from_pylist([late], schema=disputes.schema))]), "append")
    moved = register_result(reg, train(w, "gbdt", task("fraud"), FS, cfg)[0], FS)
    assert moved.entry["data_window"] != first.entry["data_window"]  # a later "now": another split
    r = CliRunner().invoke(
        cli,
        ["-w", str(w.root), "train", "--set", "tiny", "--horizon-days", "10", "--val-days", "7",
         "--test-days", "7", "--gap-days", "3", "--param", "n_estimators=20", "--as-of", as_of],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    again = reg.get("fraud-gbdt").entry
    assert again["training"]["as_of"] == as_of and again["data_window"] == first.entry["data_window"]
    assert (
        reg.get("fraud-gbdt").content_hash == first.content_hash
        and again["metrics"] == first.entry["metrics"]
    )


def test_an_as_of_ends_a_recent_test_too_and_must_lie_inside_the_log(tmp_path: Path) -> None:
    """Found by a review: with --recent-test the timeline ran past the as-of to the grown log's newest
    charges (another model), and an as-of after the log's end read every label as final."""
    w = Workspace.open(tmp_path / "ws", create=True)
    w.write_stream(generate_world(WorldConfig(charges=15_000, days=40, seed=4, fraud_rate=0.03)), "replace")
    recent = replace(CFG, mature_test=False)
    _, split = prepare(w, task("fraud"), FS, recent)
    data, _ = prepare(w, task("fraud"), FS, CFG)
    cut = datetime(2026, 1, 30, tzinfo=UTC)
    data_cut, at_cut = prepare(w, task("fraud"), FS, replace(recent, as_of=cut))
    cut_us = (cut - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert data_cut.created_us[at_cut.test].max() < cut_us < data.created_us.max()  # not past the as-of
    assert at_cut.too_recent > 0 and len(split.test) > 0
    latest = max(w.read("charges", ["created"])["created"].to_pylist())
    for as_of, why in (
        (latest + timedelta(days=400), r"must be at most 1 microsecond after the log's latest event \(2026-"),
        (datetime(2025, 1, 1, tzinfo=UTC), r"must be after the log's first charge \(2026-01-01"),
    ):
        with pytest.raises(ConfigError, match=why):
            prepare(w, task("fraud"), FS, replace(CFG, as_of=as_of))
    # the default the message names (what a model trained without --as-of records) is accepted, 1 us later not
    with pytest.raises(ConfigError) as err:
        prepare(w, task("fraud"), FS, replace(CFG, as_of=latest + timedelta(days=400)))
    m = re.search(r"the default, recorded by a model trained without --as-of, is ([^)]+)\)", str(err.value))
    assert m, str(err.value)
    default = datetime.fromisoformat(m.group(1))
    prepare(w, task("fraud"), FS, replace(CFG, as_of=default))
    with pytest.raises(ConfigError, match="must be at most 1 microsecond after"):
        prepare(w, task("fraud"), FS, replace(CFG, as_of=default + timedelta(microseconds=1)))


@pytest.mark.parametrize("name", ["fraud", "retry_success"])
def test_a_tasks_labels_take_as_of_as_text_and_name_a_wrong_horizon_or_workspace(
    ws: Workspace, name: str
) -> None:
    """A notebook's user (an API review): as_of as ISO text was an AttributeError ('str' has no attribute
    'tzinfo'), days as an int a TypeError, a path for the workspace an AttributeError."""
    t = task(name)
    cut = datetime(2026, 1, 20, tzinfo=UTC)
    assert t.labels(ws, "2026-01-20", timedelta(days=7)) == t.labels(ws, cut, timedelta(days=7))
    with pytest.raises(
        ConfigError, match=rf"The 'horizon' of the labels of task '{name}' must be a positive"
    ):
        t.labels(ws, None, 7)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=rf"The 'ws' of the labels of task '{name}' must be what Workspace"):
        t.labels(str(ws.root))  # type: ignore[arg-type]
