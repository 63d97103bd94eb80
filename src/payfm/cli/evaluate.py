"""`payfm evaluate`: score a window with models, compare them with the rules baseline, write the report."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from payfm.cli.options import DAYS
from payfm.cli.render import cell, console, err_console, iso_time, plain_path
from payfm.evaluation.evaluate import EvaluationResult, compare, resamples_text, resamples_used
from payfm.evaluation.pipeline import evaluate_models, models_task
from payfm.evaluation.report import evaluated_span
from payfm.events.workspace import Workspace
from payfm.training.trainer import MAX_SEED


def population(results: Sequence[Any], positives: str = "fraud") -> str:
    """What the metrics were computed on: the charges with mature labels, the same for every model
    (:func:`payfm.evaluation.pipeline.common_horizon`), how many are positive (``positives``: what the
    task's label means), their span and card precision@k's days (:func:`~payfm.evaluation.report.
    evaluated_span`, as the report says them)."""
    r0 = results[0]
    return (
        f"{r0.evaluated:,} charges with mature labels ({r0.fraud:,} {positives}); {r0.immature:,} immature "
        f"excluded. {evaluated_span(r0)}"
    )


def comparison_table(results: Sequence[EvaluationResult], title: str, positives: str = "fraud") -> Table:
    """The models side by side (best AP first), as ``payfm evaluate`` and ``payfm demo`` print them; a metric
    without a value shows "-"; a precision at a 1% block rate measured over budget (the top tie group alone
    exceeds it) says on what share, as the report does."""
    table = Table(title=title, caption=population(results, positives))
    for col in ("model", "AP [95% CI]", "ROC AUC", "recall@1% FPR", "precision@1% block", "ECE", "immature"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in compare(results):
        table.add_row(
            row.name,
            f"{cell(row.average_precision)} [{cell(row.ap_low)}, {cell(row.ap_high)}]",
            cell(row.roc_auc),
            cell(row.recall_at_1pct_fpr),
            row.at_1pct_block(cell),
            cell(row.ece, ".4f"),
            f"{row.immature:,}",
        )
    return table


@click.command()
@click.option(
    "--model",
    "models",
    multiple=True,
    help="A model reference: name, name@<version> or name@<stage> (repeat for several; none: the rules "
    "baseline alone).",
)
@click.option(
    "--from",
    "start",
    help="Start of the window (UTC, inclusive), e.g. 2026-03-01 [default: with --model, the start of the "
    "models' held-out test period, so no model is scored on charges it was trained on; a window overlapping "
    "a model's training or validation period is evaluated with a warning].",
)
@click.option("--to", "end", help="End of the window (UTC, exclusive) [default: the end of the log].")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Report directory; a relative path is relative to the current directory, not the workspace "
    "[default: <workspace>/reports/<UTC time>/, e.g. reports/20260501T120000Z/].",
)
@click.option(
    "--bootstrap", default=200, show_default=True, type=click.IntRange(0), help="Bootstrap resamples."
)
@click.option(
    "--seed", default=0, show_default=True, type=click.IntRange(0, MAX_SEED), help="Bootstrap seed."
)
@click.option("--no-baseline", is_flag=True, help="Leave out the rules-only baseline.")
@click.option(
    "--horizon-days",
    type=DAYS,
    default=None,
    help="Label horizon of the evaluation: every model's and the baseline's labels over it [default: with "
    "--model, the longest of the models' own horizons; without, 120].",
)
@click.option(
    "--on",
    type=click.Choice(["all", "authorized"]),
    default="all",
    show_default=True,
    help="The charges evaluated: all of the window's, or the authorized ones only (a declined or blocked "
    "charge never gets a dispute or warning: its label 0 means unknown; an export's fraud flags on declined "
    "attempts are not labels).",
)
@click.option(
    "--no-drift",
    is_flag=True,
    help="Leave out the feature drift from each model's training window to this window (4-11 s for a "
    "million charges, BENCHMARKS.md; `payfm features drift` shows it alone).",
)
@click.pass_context
def evaluate(
    ctx: click.Context,
    models: tuple[str, ...],
    start: str | None,
    end: str | None,
    out: str | None,
    bootstrap: int,
    seed: int,
    no_baseline: bool,
    horizon_days: float | None,
    on: str,
    no_drift: bool,
) -> None:
    """Evaluate models on a time window: metrics, intervals, breakdowns and an HTML + JSON report.

    \b
    Examples, on the default world of make demo (1M charges from 2026-01-01 to 2026-05-01):
      payfm evaluate --model fraud-gbdt --model fraud-lr --from 2026-02-16 --to 2026-03-01
      payfm evaluate --from 2026-02-01 --to 2026-03-01 --horizon-days 30     # the rules baseline alone
      payfm evaluate --model fraud-gbdt --on authorized      # the charges that moved money only
    """
    ws = Workspace.open(ctx.obj["workspace"])
    paths, results = evaluate_models(
        ws,
        list(models),
        iso_time(start, "--from"),
        iso_time(end, "--to"),
        out,
        baseline=not no_baseline,
        bootstrap=bootstrap,
        seed=seed,
        horizon=timedelta(days=horizon_days) if horizon_days is not None else None,
        on=on,
        drift=not no_drift,
        progress=lambda msg: err_console.print(
            msg, style="yellow" if msg.startswith("warning:") else "dim", highlight=False
        ),
    )
    predicted = models_task(ws, list(models))
    positives = "fraud" if predicted == "fraud" else f"positive: {predicted}"
    console.print(comparison_table(results, "Evaluation", positives))
    asked, fewest = resamples_used(results)
    if fewest < asked:
        console.print(f"Intervals: {resamples_text(results)}.")
    console.print(Text.assemble("Report: ", (plain_path(paths.html), "bold"), " (numbers in report.json)"))
