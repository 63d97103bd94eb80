"""`payfm features`: list, show, backfill, parity and training sets."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import cast

import click
import pyarrow.compute as pc
from rich.table import Table

from payfm.cli.options import DAYS
from payfm.cli.render import console, parquet_path, progress_bar, shown_path
from payfm.errors import ConfigError, PayfmError
from payfm.events.cards import shown_text
from payfm.events.workspace import Workspace, atomic_write_bytes
from payfm.features.catalog import FEATURE_SETS, feature_set, set_path
from payfm.features.definitions import FeatureSet, refuse_card_numbers

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
    console.print(f"[bold]{f.name}[/bold]: {f.describe()}")
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
      payfm features backfill --set mine && payfm train --set mine --model gbdt
    """
    try:
        data = json.loads(Path(file).read_text(encoding="utf-8-sig"))  # (a BOM, as Windows editors write)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"Feature set file '{file}': expected JSON text. Got an error ({e}).") from None
    fs = FeatureSet.from_json(data, f"Feature set file '{file}'")
    try:
        refuse_card_numbers(fs)
    except ConfigError as e:
        raise ConfigError(f"Feature set file '{file}': {e}") from None
    if fs.name in FEATURE_SETS:
        raise ConfigError(
            f"Feature set file '{file}': '{fs.name}' is a set payfm bundles ({', '.join(FEATURE_SETS)}); "
            "give yours another name."
        )
    ws = Workspace.open(ctx.obj["workspace"])
    path = set_path(ws.root, fs.name)
    if path.exists() and replace:
        from payfm.registry import Registry

        serving = [
            v.ref
            for v in Registry(ws).list()
            if v.feature_set == fs.name
            and v.stage in ("production", "shadow")
            and v.feature_set_version != fs.version
        ]
        if serving:
            raise ConfigError(
                f"Feature set '{fs.name}' is served: {', '.join(serving)} (production or shadow) were "
                "trained on its current definitions, which the decision service would no longer compute. "
                "Archive them first (payfm models promote REF --stage archived), or define the new set under "
                "another name."
            )
        _check_active_ruleset(ws, feature_set(fs.name, ws.root), fs)
    if path.exists() and not replace:
        old = feature_set(fs.name, ws.root)
        if old.version == fs.version:
            console.print(f"Feature set '{fs.name}' version {fs.version} is defined already: unchanged.")
            return
        raise ConfigError(
            f"Workspace '{ws.root}' defines feature set '{fs.name}' already (version {old.version}; this "
            f"file gives {fs.version}). Pass --replace to replace it: models trained on the old version "
            "will not load against the new one."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(fs.to_json(), indent=2, default=list).encode())
    n = len(fs.features)
    console.print(f"Defined feature set '{fs.name}' version {fs.version}: {n} features ({shown_path(path)}).")


def _check_active_ruleset(ws: Workspace, old: FeatureSet, new: FeatureSet) -> None:
    """Refuse new definitions of a set that drop a feature the active ruleset reads: a decision service
    could not load that ruleset any more, and `rules activate` would then be the only way out."""
    from payfm.rules import rulesets
    from payfm.rules.catalog import AttributeCatalog

    active = rulesets.active(ws) if (ws.root / "rules.db").exists() else None
    if active is None or active.feature_set != old.name:
        return
    try:
        # features only: an attribute that is also a charge field (tiny's amount_usd) reads the field
        reads = (
            rulesets.compile_version(ws, active).attributes() & AttributeCatalog.for_feature_set(old).features
        )
    except PayfmError:  # it does not load already: the new definitions may be what mends it
        return
    dropped = sorted(reads - set(new.names))
    if dropped:
        raise ConfigError(
            f"Feature set '{old.name}' cannot drop {', '.join(dropped)}: the active ruleset "
            f"v{active.version} reads them, and a decision service could not load it. Activate a version "
            "that does not (payfm rules activate VERSION) first, or keep them."
        )


@features.command()
@SET_OPTION
@click.option(
    "--engine",
    type=click.Choice(["columnar", "duckdb"]),
    default="columnar",
    show_default=True,
    help="columnar: vectorized NumPy over sorted columns (fast); duckdb: the same plan in SQL (reference).",
)
@click.option("--memory-limit", default="6GB", show_default=True, help="DuckDB memory limit (spills beyond).")
@click.pass_context
def backfill(ctx: click.Context, set_name: str, engine: str, memory_limit: str) -> None:
    """Compute every feature of every charge as of just before it, into features/<set>-<version>.parquet.

    Both engines give the same values (tested); the file name carries the feature set's version hash.

    \b
    Examples:
      payfm features backfill --set default
      payfm features backfill --set bench15 --engine duckdb
    """
    from payfm.features.offline import Engine
    from payfm.features.offline import backfill as run

    ws = Workspace.open(ctx.obj["workspace"])
    fs = feature_set(set_name, ws.root)
    t0 = time.perf_counter()
    with progress_bar("feature groups", 1) as update:
        path, rows = run(ws, fs, memory_limit=memory_limit, progress=update, engine=cast(Engine, engine))
    elapsed = time.perf_counter() - t0
    console.print(
        f"Backfilled {len(fs.features)} features x {rows:,} charges in {elapsed:.1f} s "
        f"({rows / max(elapsed, 1e-9):,.0f} charges/s) -> {shown_path(path)}"
    )


@features.command()
@SET_OPTION
@click.option("--show", "show_n", default=10, show_default=True, help="Features to list (worst first).")
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
    help="Parquet path; a relative path is relative to the current directory "
    "[default: <workspace>/features/<set>-<version>.training.parquet].",
)
@click.pass_context
def training_set(ctx: click.Context, set_name: str, horizon_days: float, out: str | None) -> None:
    """Join backfilled features with fraud labels and their maturity (as of the end of the log)."""
    from payfm.features.training_set import build_training_set

    ws = Workspace.open(ctx.obj["workspace"])
    fs = feature_set(set_name, ws.root)
    path, table = build_training_set(ws, fs, horizon=timedelta(days=horizon_days), out=out)
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
            f"[yellow]warning: no label is mature: every charge is less than {horizon_days:g} days before "
            "the log's end, so a 0 may still become fraud. Train on mature labels only: pass a shorter "
            "--horizon-days (disputes mostly arrive within 60 days) or use a longer log.[/yellow]",
            highlight=False,
        )
    if "scenario" in table.column_names:
        console.print(
            "[dim]'scenario' is the synthetic world's ground truth (null for genuine charges): drop it with "
            "is_fraud, label_time and mature before fitting.[/dim]",
            highlight=False,
        )
