"""Evaluate registered models on a window of the workspace and write the report: what ``payfm evaluate``
and the demo call.

Example (needs trained models; the window's bounds are datetimes, dates or ISO texts, UTC)::

    paths, results = evaluate_models(ws, ["fraud-gbdt", "fraud-lr"], "2026-02-16", "2026-03-01")
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from payfm.evaluation.baseline import BASELINE_NAME, rules_baseline_predictions, window_predictions
from payfm.evaluation.checks import EvaluationError, check_horizon, check_resamples, check_seed, check_window
from payfm.evaluation.drift import DriftReport, window_drift
from payfm.evaluation.evaluate import EvaluationResult, evaluate_predictions
from payfm.evaluation.report import EvaluationReport, write_report
from payfm.events.outputs import output_file
from payfm.events.schema import time_bound
from payfm.events.workspace import Workspace, opened

Progress = Callable[[str], None]
# A bound of the evaluated window: an aware datetime, a date (its midnight, UTC) or an ISO date or time text
# (UTC when it names no zone), as ``payfm evaluate --from`` takes it.
WindowBound = datetime | date | str | None


def default_report_dir(ws: Workspace) -> Path:
    """``reports/<UTC timestamp>/`` in the workspace."""
    return ws.root / "reports" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def window_bound(value: WindowBound, name: str) -> datetime | None:
    """``value`` as an aware datetime (None stays None); ``name`` ("start", "end") names it in errors.

    >>> window_bound("2026-03-01", "start").isoformat(), window_bound(date(2026, 3, 1), "end").isoformat()
    ('2026-03-01T00:00:00+00:00', '2026-03-01T00:00:00+00:00')
    """
    return time_bound(value, f"The evaluation {name}", EvaluationError)


def _check_charges(ws: Workspace, start: datetime | None, end: datetime | None) -> None:
    """A window without charges evaluates nothing: an error giving the event log's range (as replays and
    backtests do), before any model scores it."""
    where, params = [], []
    for op, t in ((">=", start), ("<", end)):
        if t is not None:
            where.append(f"created {op} ?")
            params.append(t)
    sql = f"SELECT count_if({' AND '.join(where) or 'true'}), min(created), max(created) FROM charges"
    con = ws.connect()
    try:
        [(n, first, last)] = con.execute(sql, params).fetchall()
    finally:
        con.close()
    if n:
        return
    if first is None:
        raise EvaluationError("The event log holds no charges: there is nothing to evaluate.")
    window = f"{start.isoformat() if start else 'the start'} .. {end.isoformat() if end else 'the end'}"
    raise EvaluationError(
        f"The evaluation window {window} holds no charges. The event log's charges run from "
        f"{first.isoformat()} to {last.isoformat()}: choose --from and --to within them."
    )


def held_out(ws: Workspace, model_refs: Sequence[str]) -> dict[str, datetime]:
    """Each model's held-out test period start (``data_window.test_start`` of its registry entry; models
    registered without one are left out): no charge from it on trained or validated the model."""
    from payfm.registry.store import Registry

    reg = Registry(ws)
    out = {}
    for ref in model_refs:
        mv = reg.get(ref)
        start = _entry_time(mv.ref, mv.entry.get("data_window") or {}, "test_start")
        if start is not None:
            out[mv.ref] = start
    return out


def _entry_time(ref: str, window: Mapping[str, Any], key: str) -> datetime | None:
    """``data_window[key]`` of ``ref``'s registry entry as an aware datetime (None when not recorded)."""
    value = window.get(key)
    return time_bound(value, f"{ref}'s data_window.{key}", EvaluationError) if value else None


def seen_periods(ref: str, entry: Mapping[str, Any]) -> list[tuple[str, datetime, datetime]]:
    """The periods of ``ref``'s registry entry (its ``data_window``) whose charges the model saw, as
    (``training`` or ``validation``, start, end), [start, end): training fitted it, validation stopped it
    early, calibrated and tuned it. Nothing of the gaps between them and the test period, nor of a warm-up,
    was used. A period not recorded whole (a window registered from Python) is left out."""
    window = entry.get("data_window") or {}
    out = []
    for what, part in (("training", "train"), ("validation", "val")):
        start, end = _entry_time(ref, window, f"{part}_start"), _entry_time(ref, window, f"{part}_end")
        if start is not None and end is not None:
            out.append((what, start, end))
    return out


def _overlap(window: tuple[datetime | None, datetime | None], start: datetime | None, end: datetime) -> bool:
    """Whether ``window`` [a, b) (None: open) holds a time of [start, end) (``start`` None: open)."""
    a, b = window
    return (a is None or a < end) and (b is None or start is None or b > start)


def in_sample(
    ws: Workspace, model_refs: Sequence[str], start: datetime | None, end: datetime | None = None
) -> dict[str, str]:
    """A warning for each model (its reference as given -> the text) whose training or validation period
    (:func:`seen_periods`) the window [start, end) overlaps (None: open): the window holds charges the model
    was trained or validated on, so its figures are in-sample. A window in a gap (between validation and the
    test period, say) holds none. An entry that records neither period whole counts every charge before its
    held-out test period (``test_start``; from ``train_start`` when recorded) as seen."""
    from payfm.registry.store import Registry

    reg = Registry(ws)
    out = {}
    for ref in model_refs:
        mv = reg.get(ref)
        periods = seen_periods(mv.ref, mv.entry)
        window = mv.entry.get("data_window") or {}
        test_start = _entry_time(mv.ref, window, "test_start")
        if not periods and test_start is not None:
            first = _entry_time(mv.ref, window, "train_start")
            if _overlap((start, end), first, test_start):
                out[ref] = (
                    f"the window starts before {mv.ref}'s held-out test period ({test_start.isoformat()}): "
                    "it holds charges the model was trained or validated on, so its figures are in-sample"
                )
            continue
        overlaps = [(what, a, b) for what, a, b in periods if _overlap((start, end), a, b)]
        if overlaps:
            names = " and ".join(what for what, _, _ in overlaps)
            spans = ", ".join(f"{what} {a.isoformat()} .. {b.isoformat()}" for what, a, b in overlaps)
            out[ref] = (
                f"the window overlaps {mv.ref}'s {names} period{'s' if len(overlaps) > 1 else ''} ({spans}): "
                "it holds charges the model was trained or validated on, so its figures are in-sample"
            )
    return out


def training_window(ws: Workspace, model_ref: str) -> tuple[datetime, datetime]:
    """A model's training window, [train_start, train_end) of its registry entry: the charges whose features
    it learned (a model registered without one, from Python, is refused: give the reference window)."""
    from payfm.registry.store import Registry

    mv = Registry(ws).get(model_ref)
    window = mv.entry.get("data_window") or {}
    if not window.get("train_start") or not window.get("train_end"):
        raise EvaluationError(
            f"{mv.ref}'s registry entry records no training window (data_window.train_start, train_end): "
            "give the reference window (--reference-from, --reference-to)."
        )
    bounds = [
        time_bound(window[k], f"{mv.ref}'s data_window.{k}", EvaluationError)
        for k in ("train_start", "train_end")
    ]
    assert bounds[0] is not None and bounds[1] is not None
    return bounds[0], bounds[1]


def model_drift(
    ws: Workspace,
    model_ref: str,
    start: datetime | None,
    end: datetime | None,
    *,
    reference: tuple[datetime | None, datetime | None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DriftReport:
    """The drift of a model's inputs from its training window (:func:`training_window`, or ``reference``)
    to [start, end): its feature set's features and, for a model on a foundation model's outputs, those
    outputs (on a sample of each window's charges, :data:`payfm.evaluation.drift.FM_MAX_ROWS`)."""
    from payfm.features.catalog import feature_set
    from payfm.registry.store import Registry, fm_outputs

    reg = Registry(ws)
    mv = reg.get(model_ref)
    reg.check_servable_features(mv)  # (the set at the version the model was trained on)
    fs = feature_set(mv.feature_set, ws.root)
    ckpt = reg.check_foundation_model(mv)
    fm = (ckpt, fm_outputs(mv.entry)) if ckpt is not None else None
    against = None if reference is not None else mv.ref
    reference = reference if reference is not None else training_window(ws, mv.ref)
    return window_drift(
        ws, fs, reference, (start, end), against=against, model=mv.ref, progress=progress, fm=fm
    )


def label_horizons(ws: Workspace, model_refs: Sequence[str]) -> dict[str, tuple[str, timedelta]]:
    """Each model's task and label horizon, as trained (its registry entry)."""
    from payfm.registry.store import Registry

    tasks = importlib.import_module("payfm.training.tasks")  # as score_window: imported at call time
    reg = Registry(ws)
    out = {}
    for ref in model_refs:
        mv = reg.get(ref)
        out[mv.ref] = (mv.task, tasks.label_horizon(mv.task, mv.entry))
    return out


def models_task(ws: Workspace, model_refs: Sequence[str]) -> str:
    """The task the models predict (``fraud`` without models: the rules baseline's); they share one, as
    :func:`common_horizon` requires."""
    return ", ".join(sorted({t for t, _ in label_horizons(ws, model_refs).values()})) or "fraud"


def common_horizon(
    ws: Workspace, model_refs: Sequence[str], say: Progress, given: timedelta | None = None
) -> timedelta | None:
    """The label horizon every model is evaluated over: the longest of theirs (None without models), so they
    are compared on one population and one label, the most complete one (each over its own would compare
    them on different charges: a shorter horizon matures more of them, and counts fewer frauds). Models of
    different tasks label different things: refused."""
    if not model_refs:
        return None
    of = label_horizons(ws, model_refs)
    tasks = sorted({t for t, _ in of.values()})
    if len(tasks) > 1:
        each = ", ".join(f"{ref} ({t})" for ref, (t, _) in of.items())
        raise EvaluationError(
            f"Models of different tasks cannot be compared on one population. Got {each}: evaluate each "
            "task's models apart."
        )
    if given is not None:  # asked for: every model over it
        each = ", ".join(f"{r} {_days(h)}" for r, (_, h) in of.items())
        say(f"labels: over {_days(given)} (--horizon-days) for every model (trained over {each})")
        return given
    longest = max(h for _, h in of.values())
    if len({h for _, h in of.values()}) > 1:
        each = ", ".join(f"{r} {_days(h)}" for r, (_, h) in of.items())
        say(
            f"labels: over {_days(longest)}, the longest of the models' label horizons ({each}), for every "
            "model, so they are compared on the same charges and labels"
        )
    return longest


ON = ("all", "authorized")


def only_authorized(
    ws: Workspace, tables: list[tuple[str, pa.Table]], say: Progress
) -> list[tuple[str, pa.Table]]:
    """``tables`` (predictions, one per model) restricted to the authorized charges: a declined or blocked
    charge never gets a dispute or an early fraud warning, so its label 0 says "unknown", not "genuine" (an
    export's fraud flag on a declined attempt makes no label: docs/import.md)."""
    import pyarrow.compute as pc

    ids = pa.concat_arrays([t.column("charge_id").combine_chunks() for _, t in tables])
    con = ws.connect()
    try:
        con.register("ids", pa.table({"charge_id": pc.unique(ids)}))
        kept = (
            con.sql(
                "SELECT c.charge_id FROM charges c JOIN ids USING (charge_id) WHERE c.outcome = 'authorized'"
            )
            .to_arrow_table()
            .column("charge_id")
        )
    finally:
        con.close()
    out = [(name, t.filter(pc.is_in(t.column("charge_id"), value_set=kept))) for name, t in tables]
    left_out = tables[0][1].num_rows - out[0][1].num_rows
    say(f"population: authorized charges only ({left_out:,} declined or blocked charges left out)")
    return out


def _days(h: timedelta) -> str:
    return f"{h.total_seconds() / 86400:g} days"


def model_list(model_refs: str | Sequence[str]) -> list[str]:
    """``model_refs`` as a list of model references: one reference (a text) is a list of one.

    >>> model_list("fraud-gbdt@1"), model_list(("fraud-gbdt", "fraud-lr", "fraud-gbdt"))
    (['fraud-gbdt@1'], ['fraud-gbdt', 'fraud-lr'])
    """
    if isinstance(model_refs, str):
        return [model_refs]
    if not isinstance(model_refs, Sequence) or not all(isinstance(r, str) for r in model_refs):
        got = type(model_refs).__name__
        if isinstance(model_refs, Sequence):
            got = "a sequence holding " + ", ".join(sorted({type(r).__name__ for r in model_refs}))
        raise EvaluationError(
            f"The model_refs of evaluate_models must be a model reference (name, name@<version> or "
            f"name@<stage>) or a list of them. Got {got}."
        )
    return list(dict.fromkeys(model_refs))  # a reference given twice is evaluated once (one row, one report)


def evaluate_models(
    ws: Workspace,
    model_refs: str | Sequence[str],
    start: WindowBound = None,
    end: WindowBound = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    baseline: bool = True,
    bootstrap: int = 200,
    seed: int = 0,
    horizon: timedelta | None = None,
    on: str = "all",
    drift: bool = True,
    progress: Progress | None = None,
) -> tuple[EvaluationReport, list[EvaluationResult]]:
    """Score [start, end) with each model (``payfm.training.predict.score_window``), add the rules baseline
    on the same charges, evaluate each and write the report (default ``reports/<timestamp>/``).
    ``model_refs`` is a list of model references, or one (``"fraud-gbdt@1"``).

    Without models the baseline is evaluated alone on the charges of the window, labelled over ``horizon``
    (default 120 days). Models are labelled over ``horizon`` when it is given, else over the longest of their
    label horizons (:func:`common_horizon`, said through ``progress`` when they differ), all of them on the
    same charges and labels, and the baseline with them (a fraud baseline: left out, and said, for models of
    another task, such as ``retry_success``); models of different tasks are refused.

    Without ``start``, models are evaluated from the latest of their held-out test periods' starts
    (:func:`held_out`), never on the charges they were trained or validated on; a window that overlaps a
    model's training or validation period is evaluated as asked, with a warning (:func:`in_sample`) in that
    model's ``EvaluationResult.warnings`` and the report (and through ``progress``, as ``warning: ...``): its
    figures are in-sample for that model. (A window in the gap before the test period is not: the model saw
    none of its charges.)

    ``seed`` (in [0, 2**32 - 1]), ``bootstrap`` (>= 0) and ``horizon`` (None or a timedelta in (0, 36500
    days]) are checked before any work.

    ``start`` and ``end`` are aware datetimes, dates (their midnight, UTC) or ISO date or time texts (UTC when
    they name no zone), as ``payfm evaluate --from`` takes them. A window holding no charge is refused with
    the event log's range. ``on``: ``all`` charges of the window, or the ``authorized`` ones only
    (:func:`only_authorized`; refused for a task whose rows are not authorized charges).

    With ``drift``, the report holds each model's feature drift from its training window to the evaluated
    window (:func:`training_drift`; models trained on one set over one window share one), also said through
    ``progress``.
    """
    ws = opened(ws, "evaluate_models")
    seed = check_seed(seed, "evaluate_models")
    bootstrap = check_resamples(bootstrap, "evaluate_models")
    horizon = check_horizon(horizon, "evaluate_models")
    if on not in ON:
        raise EvaluationError(f"The evaluation population 'on' must be one of {', '.join(ON)}. Got {on!r}.")
    model_refs = model_list(model_refs)
    start, end = window_bound(start, "start"), window_bound(end, "end")
    check_window(start, end)
    if out_dir is not None:  # writable, before the scoring (it failed once the work was done)
        output_file(Path(out_dir) / "report.json", "--out (out_dir)")
    if not model_refs and not baseline:
        raise EvaluationError(
            "Nothing to evaluate: expected at least one model (--model; model_refs in Python) or the rules "
            "baseline (leave out --no-baseline; baseline=True). Got neither."
        )
    say = progress or (lambda _msg: None)
    tests = held_out(ws, model_refs) if model_refs else {}
    if start is None and tests:
        ref, start = max(tests.items(), key=lambda kv: kv[1])
        say(f"window: from {start.isoformat()}, the start of {ref}'s held-out test period (--from to choose)")
        if end is not None and start >= end:
            raise EvaluationError(
                f"The evaluation window ends at {end.isoformat()}, before the held-out test period of {ref} "
                f"starts ({start.isoformat()}): give --from to evaluate earlier charges (in-sample where the "
                "model was trained or validated on them)."
            )
    _check_charges(ws, start, end)  # (first: a window without charges has no figures to call in-sample)
    warned = in_sample(ws, model_refs, start, end)
    for message in dict.fromkeys(warned.values()):  # (a model named twice, fraud-gbdt and @1: said once)
        say(f"warning: {message}")
    labelled_over = common_horizon(ws, model_refs, say, horizon)
    tables: list[tuple[str, pa.Table]] = []
    if model_refs:
        # imported at call time: the training package provides it, and this module imports without it
        score_window = importlib.import_module("payfm.training.predict").score_window
        for ref in model_refs:
            say(f"scoring with {ref}")
            tables.append((ref, score_window(ws, ref, start=start, end=end, horizon=labelled_over)))
    predicted = models_task(ws, model_refs)
    if baseline and predicted != "fraud":  # its rules flag fraud: on another task's labels it means nothing
        say(f"the rules baseline is left out: its rules flag fraud; these models predict {predicted}")
        baseline = False
    if baseline:
        say("scoring with the rules baseline")
        base = tables[0][1] if tables else window_predictions(ws, start, end, horizon)
        tables.append((BASELINE_NAME, rules_baseline_predictions(ws, base)))
    if on == "authorized":
        if predicted != "fraud":
            raise EvaluationError(
                f"--on authorized keeps the authorized charges; these models predict {predicted}, whose rows "
                "are not authorized charges: evaluate them --on all."
            )
        tables = only_authorized(ws, tables, say)
    results = []
    for name, preds in tables:
        say(f"evaluating {name}")
        result = evaluate_predictions(preds, name=name, bootstrap=bootstrap, seed=seed, window=(start, end))
        results.append(replace(result, warnings=(warned[name],)) if name in warned else result)
    drifts = training_drift(ws, model_refs, start, end, say) if drift and model_refs else []
    say("writing the report")
    title = "payfm evaluation report" + (" (authorized charges only)" if on == "authorized" else "")
    paths = write_report(
        results,
        out_dir if out_dir is not None else default_report_dir(ws),
        title,
        positives=predicted,
        population=on,
        drift=drifts,
    )
    return paths, results


def training_drift(
    ws: Workspace, model_refs: Sequence[str], start: datetime | None, end: datetime | None, say: Progress
) -> list[DriftReport]:
    """The feature drift of each model from its training window to [start, end) (:func:`model_drift`), once
    for the models that share a feature set version, a training window (``payfm train --model all``) and
    foundation-model inputs (none, or one checkpoint's outputs); models registered without a training window
    are left out."""
    from payfm.registry.store import Registry, fm_outputs

    reg = Registry(ws)
    groups: dict[tuple[str, ...], list[str]] = {}
    for ref in model_refs:
        mv = reg.get(ref)
        window = mv.entry.get("data_window") or {}
        if window.get("train_start") and window.get("train_end"):
            fm = mv.entry.get("foundation_model") or {}
            inputs = (str(fm.get("content_hash")), *fm_outputs(mv.entry)) if fm else ()
            key = (
                mv.feature_set,
                mv.feature_set_version,
                window["train_start"],
                window["train_end"],
                *inputs,
            )
            groups.setdefault(key, []).append(mv.ref)
    out = []
    for refs in groups.values():
        refs = list(dict.fromkeys(refs))
        say(f"feature drift from {refs[0]}'s training window")
        try:
            report = replace(model_drift(ws, refs[0], start, end), against=", ".join(refs))
        except EvaluationError as e:  # a section of the report: the rest of it stands without it
            say(f"warning: the feature drift of {', '.join(refs)} is left out of the report: {e}")
            continue
        say(f"feature drift ({report.window_text()}): {report.summary()}")
        out.append(report)
    return out
