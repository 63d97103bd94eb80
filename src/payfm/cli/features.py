"""`payfm features`: list, show, backfill, parity and training sets."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import click
import pyarrow.compute as pc
from rich.table import Table
from rich.text import Text

from payfm.cli.options import DAYS
from payfm.cli.render import cell, console, err_console, iso_time, parquet_path, plain_path, progress_bar
from payfm.errors import ConfigError
from payfm.evaluation.drift import DriftReport
from payfm.events.cards import shown_text
from payfm.events.workspace import Workspace
from payfm.features.catalog import FEATURE_SETS, check_definable, define_set, feature_set
from payfm.features.definitions import FeatureSet
from payfm.features.offline import Engine

SET_OPTION = click.option(
    "--set",
    "set_name",
    default="default",
    show_default=True,
    help=f"Feature set: {', '.join(sorted(FEATURE_SETS))}, or one this workspace defines (features define).",
)


@click.group()
def features() -> None:
    """Features defined once: point-in-time backfill, online state, parity."""


@features.command(name="list")
@SET_OPTION
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the set's definitions as JSON (a start for your own set: edit, then `features define`).",
)
@click.pass_context
def list_(ctx: click.Context, set_name: str, as_json: bool) -> None:
    """List the features of a set with a one-line description each.

    \b
    Example:
      payfm features list --set tiny --json > mine.json   # then edit its name and features
    """
    fs = feature_set(set_name, ctx.obj["workspace"])
    if as_json:
        click.echo(json.dumps(fs.to_json(), indent=2, default=list))
        return
    table = Table(title=f"Feature set '{fs.name}' version {fs.version}: {len(fs.features)} features")
    table.add_column("name")
    table.add_column("definition")
    for f in fs.features:
        table.add_row(f.name, f.describe())
    console.print(table)


@features.command()
@click.argument("name")
@SET_OPTION
@click.pass_context
def show(ctx: click.Context, name: str, set_name: str) -> None:
    """Show one feature's full definition."""
    fs = feature_set(set_name, ctx.obj["workspace"])
    f = fs.get(name)
    console.print(Text.assemble((f.name, "bold"), f": {f.describe()}"))
    for k, v in f.spec().items():
        console.print(f"  {k}: {v}")


@features.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--replace", is_flag=True, help="Replace the workspace's set of the same name.")
@click.pass_context
def define(ctx: click.Context, file: str, replace: bool) -> None:
    """Define a feature set of this workspace from a JSON file: its name and features, in the format
    `features list --json` prints. Every command's --set takes it then, and the decision service serves
    models trained on it.

    \b
    Example:
      payfm features list --set tiny --json > mine.json   # edit "name" and "features"
      payfm features define mine.json
      payfm features backfill --set mine && payfm train --set mine --horizon-days 60
    """
    try:
        data = json.loads(Path(file).read_text(encoding="utf-8-sig"))  # (a BOM, as Windows editors write)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:  # (nested deeper than it parses)
        raise ConfigError(f"Feature set file '{file}': expected JSON text. Got an error ({e}).") from None
    # The file's 'version' is that of the set it was exported from: a file made by editing an export (as the
    # example above does) is a new set, whose version its definitions give; said, not refused.
    exported = data.pop("version", None) if isinstance(data, dict) else None
    fs = FeatureSet.from_json(data, f"Feature set file '{file}'")
    if exported is not None and exported != fs.version:
        err_console.print(
            f"note: '{file}' says version {exported!r}, written before its features were edited; its "
            f"definitions give version {fs.version}.",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    try:
        check_definable(fs)  # before the workspace: a bad name is said even where there is none yet
    except ConfigError as e:
        raise ConfigError(f"Feature set file '{file}': {e}") from None
    path, written = define_set(Workspace.open(ctx.obj["workspace"]), fs, replace=replace)
    if not written:
        console.print(f"Feature set '{fs.name}' version {fs.version} is defined already: unchanged.")
        return
    n = len(fs.features)
    console.print(f"Defined feature set '{fs.name}' version {fs.version}: {n} features ({plain_path(path)}).")


ENGINE_OPTION = click.option(
    "--engine",
    type=click.Choice(["columnar", "duckdb", "spark"]),
    default="columnar",
    show_default=True,
    help="columnar: vectorized NumPy over sorted columns (fast); duckdb: the same plan in SQL (reference); "
    "spark: the plan on Apache Spark (pip install 'payfm[spark]'; Java 17+).",
)
MEMORY_OPTION = click.option(
    "--memory-limit",
    default="6GB",
    show_default=True,
    help="DuckDB's memory limit (it spills beyond); with --engine spark, the Spark driver's memory.",
)
SPARK_MASTER_OPTION = click.option(
    "--spark-master",
    default="local[*]",
    show_default=True,
    help="With --engine spark: the Spark master URL (local[N]: N cores of this machine).",
)


def _spark_only(engine: str, spark_master: str) -> None:
    if engine != "spark" and spark_master != "local[*]":
        raise ConfigError(f"--spark-master applies to --engine spark only (the engine is {engine}).")
    if engine == "spark":
        from payfm.features.offline_spark import check_master

        check_master(spark_master)  # (before any work)


@features.command()
@SET_OPTION
@ENGINE_OPTION
@MEMORY_OPTION
@SPARK_MASTER_OPTION
@click.pass_context
def backfill(ctx: click.Context, set_name: str, engine: str, memory_limit: str, spark_master: str) -> None:
    """Compute every feature of every charge as of just before it, into features/<set>-<version>.parquet.

    The engines give the same values (tested); the file name carries the feature set's version hash.

    \b
    Examples:
      payfm features backfill --set default
      payfm features backfill --set bench15 --engine duckdb
      payfm features backfill --engine spark --spark-master 'local[2]'
    """
    from payfm.features.offline import backfill as run

    _spark_only(engine, spark_master)
    ws = Workspace.open(ctx.obj["workspace"])
    fs = feature_set(set_name, ws.root)
    t0 = time.perf_counter()
    with progress_bar("feature groups", 1) as update:
        path, rows = run(
            ws,
            fs,
            memory_limit=memory_limit,
            progress=update,
            engine=cast(Engine, engine),
            spark_master=spark_master,
        )
    elapsed = time.perf_counter() - t0
    console.print(
        f"Backfilled {len(fs.features)} features x {rows:,} charges in {elapsed:.1f} s "
        f"({rows / max(elapsed, 1e-9):,.0f} charges/s) -> {plain_path(path)}"
    )
    from payfm.features.coverage import uninformative

    said = uninformative(path, fs.names).said(len(fs.names)) if rows else None
    if said:  # (an import fills only some fields: the features of the others tell a model nothing)
        err_console.print(f"warning: {said}.", markup=False, highlight=False, soft_wrap=True)


@features.command()
@SET_OPTION
@click.option(
    "--show",
    "show_n",
    type=click.IntRange(0),
    default=10,
    show_default=True,
    help="Features to list (worst first).",
)
@click.pass_context
def parity(ctx: click.Context, set_name: str, show_n: int) -> None:
    """Replay the log through the online state and compare every feature with the backfill.

    Prints the mismatch rate per feature; exits 1 if any value differs (beyond 1e-9 relative).
    """
    from payfm.features.parity import workspace_parity

    ws = Workspace.open(ctx.obj["workspace"])
    fs = feature_set(set_name, ws.root)
    t0 = time.perf_counter()
    with progress_bar("replaying charges", 1) as update:
        report = workspace_parity(ws, fs, progress=update)
    elapsed = time.perf_counter() - t0
    worst = sorted(report.mismatches.items(), key=lambda kv: -kv[1])[:show_n]
    table = Table(title=f"Online vs offline, {report.charges:,} charges, {len(fs.features)} features")
    table.add_column("feature")
    table.add_column("mismatches", justify="right")
    table.add_column("rate", justify="right")
    table.add_column("first example (charge, offline, online)")
    for name, n in worst:
        ex = report.examples.get(name)
        table.add_row(name, f"{n:,}", f"{n / max(report.charges, 1):.4%}", "" if ex is None else str(ex))
    console.print(table)
    console.print(
        f"{report.total_mismatches:,} mismatching values of {report.charges * len(fs.features):,} "
        f"in {elapsed:.1f} s"
    )
    if report.total_mismatches:
        ctx.exit(1)


@features.command(name="training-set")
@SET_OPTION
@click.option(
    "--horizon-days",
    default=120.0,
    show_default=True,
    type=DAYS,
    help="Label horizon in days: an outcome within it labels the charge fraud; a label is mature once the "
    "horizon has passed.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    callback=parquet_path,
    help="Parquet path; a relative path is relative to the current directory. In the workspace only a "
    "*.training.parquet file in features/ (not over a backfill) or a .parquet file at its top "
    "[default: <workspace>/features/<set>-<version>.training.parquet].",
)
@ENGINE_OPTION
@MEMORY_OPTION
@SPARK_MASTER_OPTION
@click.pass_context
def training_set(
    ctx: click.Context,
    set_name: str,
    horizon_days: float,
    out: str | None,
    engine: str,
    memory_limit: str,
    spark_master: str,
) -> None:
    """Join backfilled features with fraud labels and their maturity (as of the end of the log).

    The backfill is computed first where it is missing or older than the event log (with --engine). With
    --engine spark the labels are computed by Spark too: the plan a cluster job runs
    (payfm.training.labels_spark), giving the same rows.

    \b
    Examples:
      payfm features training-set --horizon-days 60
      payfm features training-set --engine spark --spark-master 'local[2]' --out spark.training.parquet
    """
    from payfm.features.training_set import build_training_set

    _spark_only(engine, spark_master)
    ws = Workspace.open(ctx.obj["workspace"])
    fs = feature_set(set_name, ws.root)
    path, table = build_training_set(
        ws,
        fs,
        horizon=timedelta(days=horizon_days),
        out=out,
        engine=cast(Engine, engine),
        spark_master=spark_master,
        memory_limit=memory_limit,
    )
    mature = int(pc.sum(pc.cast(table["mature"], "int64")).as_py() or 0)
    fraud = int(pc.sum(table["is_fraud"]).as_py() or 0)
    console.print(
        f"{table.num_rows:,} charges: {fraud:,} labelled fraud, {mature:,} mature labels, "
        f"{table.num_rows - mature:,} immature (horizon {horizon_days:g} d) -> "
        + shown_text(str(path), limit=4096, times=True),
        markup=False,
        highlight=False,
    )
    if table.num_rows and not mature:
        console.print(
            f"warning: no label is mature: every charge is less than {horizon_days:g} days before "
            "the log's end, so a 0 may still become fraud. Train on mature labels only: pass a shorter "
            "--horizon-days (disputes mostly arrive within 60 days) or use a longer log.",
            style="yellow",
            highlight=False,
        )
    if "scenario" in table.column_names:
        console.print(
            "'scenario' is the synthetic world's ground truth (null for genuine charges): drop it with "
            "is_fraud, label_time and mature before fitting.",
            style="dim",
            highlight=False,
        )


@features.command()
@click.option(
    "--model",
    "model_ref",
    help="A registered model: its feature set, and its training window as the reference "
    "(name, name@<version> or name@<stage>).",
)
@click.option("--set", "set_name", default=None, help="Feature set, without --model [default: default].")
@click.option(
    "--from",
    "start",
    help="Start of the current window (UTC, inclusive) [default: with --model, the start of its held-out "
    "test period; needed without --model].",
)
@click.option("--to", "end", help="End of the current window (UTC, exclusive) [default: the end of the log].")
@click.option(
    "--reference-from",
    "ref_start",
    help="Start of the reference window [default: with --model, its training start; else the log's start].",
)
@click.option(
    "--reference-to",
    "ref_end",
    help="End of the reference window [default: with --model, its training end; else --from].",
)
@click.option(
    "--show", "show_n", default=15, show_default=True, type=click.IntRange(0), help="Features to list."
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole report (every feature) as JSON.")
@click.pass_context
def drift(
    ctx: click.Context,
    model_ref: str | None,
    set_name: str | None,
    start: str | None,
    end: str | None,
    ref_start: str | None,
    ref_end: str | None,
    show_n: int,
    as_json: bool,
) -> None:
    """How far each feature's distribution moved from a reference window to a current one: the population
    stability index (PSI: below 0.1 stable, 0.1-0.25 moderate, from 0.25 a major shift) and the share of
    current values beyond every reference value. A model reads a shifted feature in a range it never saw.

    \b
    Examples, on the default world of make demo:
      payfm features drift --model fraud-gbdt                 # its training window vs its test period on
      payfm features drift --from 2026-04-01 --reference-from 2026-02-01 --reference-to 2026-03-01
    """
    from payfm.evaluation.drift import window_drift
    from payfm.evaluation.pipeline import held_out, model_drift

    ws = Workspace.open(ctx.obj["workspace"])
    cur_start, cur_end = iso_time(start, "--from"), iso_time(end, "--to")
    given_ref = (iso_time(ref_start, "--reference-from"), iso_time(ref_end, "--reference-to"))
    for (lo, lo_name), (hi, hi_name) in (
        ((cur_start, "--from"), (cur_end, "--to")),
        ((given_ref[0], "--reference-from"), (given_ref[1], "--reference-to")),
    ):
        if lo is not None and hi is not None and hi <= lo:  # named as options, before any work
            raise ConfigError(
                f"{hi_name} must be after {lo_name} (a window is [{lo_name}, {hi_name})). "
                f"Got {lo_name} {lo.isoformat()} and {hi_name} {hi.isoformat()}."
            )
    with progress_bar("comparing features", 1) as update:
        if model_ref is not None:
            if set_name is not None:
                raise ConfigError(
                    "--set and --model exclude each other: the model's feature set is compared."
                )
            if cur_start is None:
                cur_start = next(iter(held_out(ws, [model_ref]).values()), None)
            reference: tuple[datetime | None, datetime | None] | None = None
            if given_ref[0] is not None and given_ref[1] is not None:
                reference = given_ref
            elif given_ref != (None, None):  # one bound given: the other is the training window's
                from payfm.evaluation.pipeline import training_window

                trained = training_window(ws, model_ref)
                reference = (given_ref[0] or trained[0], given_ref[1] or trained[1])
            report = model_drift(ws, model_ref, cur_start, cur_end, reference=reference, progress=update)
        else:
            if cur_start is None:
                raise ConfigError(
                    "--from is needed without --model: the current window's start (the reference window ends "
                    "there unless --reference-to says otherwise)."
                )
            fs = feature_set(set_name or "default", ws.root)
            report = window_drift(
                ws, fs, (given_ref[0], given_ref[1] or cur_start), (cur_start, cur_end), progress=update
            )
    if (shared := _overlap(report)) is not None:
        err_console.print(
            f"warning: the reference and current windows overlap ({shared}): the charges they share are in "
            "both, which hides drift. End the reference window (--reference-to) at or before the current "
            "one's start (--from).",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=1))
        return
    _drift_table(report, show_n)


def _overlap(report: DriftReport) -> str | None:
    """The span the report's two windows share ([start, end), ISO; None bounds: the log's), or None."""

    first, last = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)  # (open bounds)

    def at(text: str | None, default: datetime) -> datetime:
        return default if text is None else datetime.fromisoformat(text)

    lo = max(at(report.reference[0], first), at(report.current[0], first))
    hi = min(at(report.reference[1], last), at(report.current[1], last))
    if lo >= hi:
        return None
    start = "the log's start" if lo.year == 1 else lo.isoformat()[:16].replace("T", " ")
    end = "the log's end" if hi.year == 9999 else hi.isoformat()[:16].replace("T", " ")
    return f"{start} .. {end}"


def _drift_table(report: DriftReport, show_n: int) -> None:
    against = (
        f" ({report.against}'s training window as the reference)"
        if report.against
        else f" (features of {report.model})"
        if report.model
        else ""
    )
    table = Table(
        title=f"Feature drift of set '{report.feature_set}'{against}: {report.window_text()}",
        caption=report.rows_text(),
    )
    for col in ("feature", "PSI", "level", "beyond reference", "missing ref -> cur", "median ref -> cur"):
        table.add_column(col, justify="left" if col in ("feature", "level") else "right")
    for d in report.features[:show_n]:
        table.add_row(
            shown_text(d.feature),
            f"{d.psi:.3f}",
            d.level,
            f"{d.beyond:.1%}",
            f"{d.reference_missing:.1%} -> {d.current_missing:.1%}",
            f"{cell(d.reference_median, '.4g')} -> {cell(d.current_median, '.4g')}",
        )
    console.print(table)
    console.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
