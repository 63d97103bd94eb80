"""The commands on a decision log the servers write: ``payfm serve export`` reads it (in serve.py),
``payfm serve prune`` archives and deletes its old rows; :func:`opened_log` opens it for either."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from payfm.cli.options import FiniteFloatRange
from payfm.cli.render import plural
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace

if TYPE_CHECKING:
    from payfm.serving.decision_log import DecisionLog
    from payfm.serving.prune import PruneReport

# The option of the commands on the servers' decision log (its value is their ``spec`` argument).
decision_log_option = click.option(
    "--decision-log",
    "spec",
    envvar="PAYFM_DECISION_LOG",
    default="sqlite",
    show_default=True,
    help="The servers' decision log: sqlite (in the workspace) or postgresql://... (or PAYFM_DECISION_LOG).",
)


@contextmanager
def opened_log(ws: Workspace, spec: str) -> Iterator[DecisionLog]:
    """The decision log ``spec`` of workspace ``ws``, closed after the block; one that is not there, or a
    backend's error while the block reads it, is a ConfigError naming it (no traceback)."""
    from payfm.errors import scrubbed, shown_url
    from payfm.serving.decision_log import open_log

    if spec == "sqlite" and not (ws.root / "serving" / "decisions.db").exists():
        raise ConfigError(
            f"The workspace {ws.root} has no decision log (serving/decisions.db): `payfm serve` writes it. "
            "Give --decision-log for another one."
        )
    if spec.startswith("sqlite:///") and not Path(spec[len("sqlite:///") :]).is_file():
        raise ConfigError(f"No decision log at {spec[len('sqlite:///') :]} (from --decision-log {spec}).")
    log = None
    try:
        log = open_log(spec, ws.root, create=False)  # (what holds no decision log is refused, unchanged)
        yield log
    except Exception as e:
        if type(e).__module__.split(".")[0] not in ("psycopg", "sqlite3"):
            raise
        said = scrubbed((str(e).splitlines() or [type(e).__name__])[0], spec)
        raise ConfigError(f"Cannot use the decision log {shown_url(spec)}: {said}") from None
    finally:
        if log is not None:
            log.close()


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} KB"


def _when(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M UTC")


@click.command("prune")
@decision_log_option
@click.option(
    "--keep-days",
    default=180.0,
    show_default=True,
    type=FiniteFloatRange(min=0, max=36_500),
    help="Keep every row of a charge created within this many days of the newest charge the log holds "
    "(its retries answered with its stored decision, its late outcomes checked against the log).",
)
@click.option(
    "--keep-newest",
    default=None,
    type=click.IntRange(min=0),
    help="Keep the newest N decisions and counted outcomes whatever their age (default: the 1,000 that "
    "a shared state's staleness check reads).",
)
@click.option(
    "--dry-run", is_flag=True, help="Count what would be pruned and why the rest is kept; change nothing."
)
@click.pass_context
def prune_cmd(
    ctx: click.Context, spec: str, keep_days: float, keep_newest: int | None, dry_run: bool
) -> None:
    """Archive and delete the decision log's old rows whose facts the event log holds.

    A decision goes (with its closed review and its outcomes) when its charge is in the event log (`payfm
    serve export` appended it), its review is not open, its outcomes are in the event log too, and it and they
    were created more than --keep-days before the newest charge; so does an outcome of a charge the service
    did not decide, appended and as old. Rows after the last state snapshot stay. What it deletes is archived
    first, as Parquet, under WORKSPACE/serving/archive/<log id>/. Servers may run meanwhile; a restart
    rebuilds the same state (docs/serving.md, "Pruning the decision log").

    \b
    payfm -w WORKSPACE serve export                      # first: the decided charges into the event log
    payfm -w WORKSPACE serve prune --dry-run
    payfm -w WORKSPACE serve prune --keep-days 90
    payfm -w WORKSPACE serve prune --decision-log postgresql://...
    """
    from payfm.cli.render import console, stage_progress
    from payfm.serving.decision_log import STALE_CHECK
    from payfm.serving.prune import prune

    ws = Workspace.open(ctx.obj["workspace"])
    with opened_log(ws, spec) as log, stage_progress() as update:
        newest = STALE_CHECK if keep_newest is None else keep_newest

        def progress(r: PruneReport) -> None:
            update("decision log: old decisions looked at", r.looked, r.old)

        report = prune(ws, log, keep_days=keep_days, dry_run=dry_run, keep_newest=newest, progress=progress)
    for line in prune_lines(report):
        console.print(line, markup=False, highlight=False)


def prune_lines(report: PruneReport) -> list[str]:
    """What ``payfm serve prune`` says of ``report``."""
    from payfm.serving.prune import REASONS

    if report.newest_us is None or report.cutoff_us is None:
        return ["The decision log holds no decisions: nothing to prune."]
    p = report.pruned
    counts = (
        f"{plural(p['decisions'], 'decision')}, {plural(p['reviews'], 'review')} and "
        f"{plural(p['outcomes'], 'outcome')}"
    )
    days = f"{report.keep_days:g} days"
    lines = [
        f"{'Would prune' if report.dry_run else 'Pruned'} {counts}: those created before "
        f"{_when(report.cutoff_us)} ({days} before the newest charge, {_when(report.newest_us)}) whose facts "
        "the event log holds."
    ]
    if report.removed:
        lines.append(
            f"Removed {plural(len(report.removed), 'archive part')} of an earlier prune that did not commit "
            "(its rows were still in the log)."
        )
    if report.kept:
        why = ", ".join(f"{report.kept[r]:,} as {r}" for r in REASONS if report.kept[r])
        lines.append(f"Kept {plural(sum(report.kept.values()), 'old decision')}: {why}.")
    if report.snapshot_seq is not None:
        lines.append(f"The last state snapshot covers the log up to seq {report.snapshot_seq:,}.")
    if report.parts:
        lines.append(
            f"Archived to {report.archive} ({plural(len(report.parts), 'part')}; one Parquet file per table "
            "and part: decisions/, outcomes/, reviews/)."
        )
    if report.free_bytes and not report.dry_run:
        lines.append(
            f"The SQLite file keeps {_size(report.free_bytes)} of freed pages, which new decisions reuse: it "
            "does not shrink."
        )
    return lines
