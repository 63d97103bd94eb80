"""Evaluate registered models on a window of the workspace and write the report: what ``payfm evaluate``
and the demo call.

Example (needs trained models)::

    paths, results = evaluate_models(ws, ["gbdt", "lr"], start, end)
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from payfm.evaluation.baseline import BASELINE_NAME, rules_baseline_predictions, window_predictions
from payfm.evaluation.checks import EvaluationError
from payfm.evaluation.evaluate import EvaluationResult, evaluate_predictions
from payfm.evaluation.report import EvaluationReport, write_report
from payfm.events.workspace import Workspace

Progress = Callable[[str], None]


def default_report_dir(ws: Workspace) -> Path:
    """``reports/<UTC timestamp>/`` in the workspace."""
    return ws.root / "reports" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _check_window(start: datetime | None, end: datetime | None) -> None:
    for label, t in (("start", start), ("end", end)):
        if t is not None and t.tzinfo is None:
            raise EvaluationError(
                f"The evaluation {label} must be timezone-aware (UTC). Got {t.isoformat()}."
            )
    if start is not None and end is not None and start >= end:
        raise EvaluationError(
            f"The evaluation window must end after it starts. Got {start.isoformat()} .. {end.isoformat()}."
        )


def held_out(ws: Workspace, model_refs: Sequence[str]) -> dict[str, datetime]:
    """Each model's held-out test period start (``data_window.test_start`` of its registry entry; models
    registered without one are left out): charges before it trained or validated the model."""
    from payfm.registry.store import Registry

    reg = Registry(ws)
    out = {}
    for ref in model_refs:
        mv = reg.get(ref)
        start = (mv.entry.get("data_window") or {}).get("test_start")
        if start:
            out[mv.ref] = datetime.fromisoformat(start)
    return out


def evaluate_models(
    ws: Workspace,
    model_refs: Sequence[str],
    start: datetime | None = None,
    end: datetime | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    baseline: bool = True,
    bootstrap: int = 200,
    seed: int = 0,
    horizon: timedelta | None = None,
    progress: Progress | None = None,
) -> tuple[EvaluationReport, list[EvaluationResult]]:
    """Score [start, end) with each model (``payfm.training.predict.score_window``), add the rules baseline
    on the same charges, evaluate each and write the report (default ``reports/<timestamp>/``).

    Without models the baseline is evaluated alone on the charges of the window, labelled over ``horizon``
    (default 120 days); with models it uses the first model's charges and labels.

    Without ``start``, models are evaluated from the latest of their held-out test periods' starts
    (:func:`held_out`), never on the charges they were trained or validated on; a ``start`` earlier than a
    model's test period is evaluated as asked, with a ``warning:`` through ``progress``: its figures are
    in-sample for that model.
    """
    _check_window(start, end)
    if not model_refs and not baseline:
        raise EvaluationError("evaluate_models needs at least one model or the baseline. Got neither.")
    say = progress or (lambda _msg: None)
    tests = held_out(ws, model_refs) if model_refs else {}
    if start is None and tests:
        ref, start = max(tests.items(), key=lambda kv: kv[1])
        say(f"window: from {start.isoformat()}, the start of {ref}'s held-out test period (--from to choose)")
        if end is not None and start >= end:
            raise EvaluationError(
                f"The evaluation window ends at {end.isoformat()}, before the held-out test period of {ref} "
                f"starts ({start.isoformat()}): give --from to evaluate earlier charges (in-sample)."
            )
    for ref, test_start in tests.items():
        if start is not None and start < test_start:
            say(
                f"warning: the window starts before {ref}'s held-out test period ({test_start.isoformat()}): "
                "it holds charges the model was trained or validated on, so its figures are in-sample"
            )
    tables: list[tuple[str, pa.Table]] = []
    if model_refs:
        # imported at call time: the training package provides it, and this module imports without it
        score_window = importlib.import_module("payfm.training.predict").score_window
        for ref in model_refs:
            say(f"scoring with {ref}")
            tables.append((ref, score_window(ws, ref, start=start, end=end)))
    if baseline:
        say("scoring with the rules baseline")
        base = tables[0][1] if tables else window_predictions(ws, start, end, horizon)
        tables.append((BASELINE_NAME, rules_baseline_predictions(ws, base)))
    results = []
    for name, preds in tables:
        say(f"evaluating {name}")
        results.append(evaluate_predictions(preds, name=name, bootstrap=bootstrap, seed=seed))
    say("writing the report")
    paths = write_report(results, out_dir if out_dir is not None else default_report_dir(ws))
    return paths, results
