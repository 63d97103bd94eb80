"""Commands over the event log: generate, import, sql, summary."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import pyarrow as pa

from payfm.cli.options import FiniteFloatRange
from payfm.cli.render import (
    console,
    err_console,
    iso_time,
    plain_path,
    plural,
    print_arrow,
    print_summary,
    progress_bar,
    rows_of,
    stage_progress,
)
from payfm.errors import ConfigError, PayfmError, WorkspaceError
from payfm.events.cards import name_holds_card_number, redacted_table, shown_text
from payfm.events.query import sql_batches
from payfm.events.schema import TABLES
from payfm.events.summary import summarize
from payfm.events.workspace import MANIFEST, Workspace

if TYPE_CHECKING:
    from payfm.synth import WorldConfig


def _workspace(ctx: click.Context, create: bool = False) -> Workspace:
    return Workspace.open(ctx.obj["workspace"], create=create)


@contextmanager
def _created_workspace(ctx: click.Context) -> Iterator[Workspace]:
    """The workspace, created if missing; removed again when the command fails and it made the workspace,
    unless another command works in it (a failed first import or generate leaves nothing behind, and takes
    nothing from another process importing into the same new workspace meanwhile).

    Every command here holds a shared lock on the workspace's folder while it runs (:func:`_joined`); the one
    that made the folder removes it only if it gets the lock alone, no other writer holds the workspace's
    write lock, and no commit but its own (if any) is in the manifest."""
    root = Path(ctx.obj["workspace"]).expanduser()  # (as Workspace.open reads it)
    held, made = _joined(root)
    ws: Workspace | None = None
    try:
        ws = Workspace.open(root, create=True)
        yield ws
    except BaseException:
        if made and held is not None:
            _remove_if_alone(root, held, ws)
        raise
    finally:
        if held is not None:
            os.close(held)  # (releases the lock)


def _joined(root: Path) -> tuple[int | None, bool]:
    """The folder ``root`` (made if missing), opened and held with a shared lock (flock) for as long as the
    command runs, and whether this process made it. None when it cannot be opened as a folder (a file, no
    permission, a name too long: Workspace.open then says why; or a filesystem without flock). A folder
    removed between its open and its lock (by a command that made it and failed) is made again."""
    while True:
        try:
            root.mkdir(parents=True)
            made = True
        except FileExistsError:
            made = False
        except OSError:
            return None, False
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue
        except OSError:
            return None, False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # (waits only for a remover, which holds it exclusively briefly)
        except OSError:  # (a filesystem without flock: nothing is removed, rather than another's work)
            os.close(fd)
            return None, made
        if _same_folder(root, fd):
            return fd, made
        os.close(fd)


def _same_folder(root: Path, fd: int) -> bool:
    """Whether ``root`` is still the folder open as ``fd`` (not removed, or removed and made again)."""
    try:
        now, held = os.stat(root), os.fstat(fd)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _remove_if_alone(root: Path, fd: int, ws: Workspace | None) -> None:
    """Remove the workspace folder ``root`` that this command made and failed in (``fd``: its shared lock),
    if no other command holds that lock, no writer holds the workspace's own, and its manifest holds no
    commit but this command's own (``ws``'s first): else another process's work is in it, and it stays."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (another command's shared lock: it stays)
    except OSError:
        return
    if not _same_folder(root, fd):
        return
    if ws is None:  # (Workspace.open failed: only what it made is there, without a manifest)
        if not (root / MANIFEST).exists():
            shutil.rmtree(root, ignore_errors=True)
        return
    try:
        with ws._lock():  # the workspace's write lock: a library writer (import_file) in a transaction
            version = ws.manifest().get("version")
            if version == 0 or (version == 1 and ws.written_version == 1):
                shutil.rmtree(root, ignore_errors=True)
    except PayfmError:  # (busy, or a manifest that is not this command's: it stays)
        return


@contextmanager
def _workspace_to_import_into(ctx: click.Context, dry_run: bool) -> Iterator[Workspace]:
    """The import's workspace (created if missing); for a dry run into none, a scratch one, removed after
    (once it is clear that the workspace could be made there)."""
    root = Path(ctx.obj["workspace"]).expanduser()  # (as Workspace.open reads it: `-w ~/ws` unexpanded)
    if not dry_run or (root / "manifest.json").exists():
        with _created_workspace(ctx) as ws:
            yield ws
        return
    ancestor = root.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(
            f"Cannot create the workspace '{plain_path(root)}': '{plain_path(ancestor)}' is not a directory "
            "payfm may write in. Expected a path where a directory can be made (pass another --workspace)."
        )
    with tempfile.TemporaryDirectory(prefix="payfm-dry-run-") as scratch:
        yield Workspace.open(Path(scratch) / "ws", create=True)


def parse_mix(text: str | None) -> dict[str, float] | None:
    """Parse ``stolen_card=2,card_testing=1`` into weights; None when not given. The weights themselves
    (finite, >= 0, a positive total) are checked by WorldConfig."""
    if text is None:
        return None
    if not text.strip():  # (an empty --mix read as "the default mix", without a word)
        raise ConfigError(
            "The '--mix' option must be a list like 'stolen_card=2,card_testing=1' (leave it out for the "
            f"default mix). Got {text!r}."
        )
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            weight = float(value)
        except ValueError:
            raise ConfigError(
                f"The '--mix' option must be a list like 'stolen_card=2,card_testing=1'. Got {part!r}."
            ) from None
        if name.strip() in mix:  # a second weight would silently replace the first
            raise ConfigError(f"The '--mix' option must name each scenario once. Got {name.strip()!r} twice.")
        mix[name.strip()] = weight
    return mix


def world_config(
    charges: int,
    days: int,
    seed: int,
    start: datetime,
    fraud_rate: float,
    mix: dict[str, float] | None,
) -> WorldConfig:
    """The WorldConfig of these option values; a ConfigError naming the option (not the field) otherwise."""
    from payfm.synth import WorldConfig

    try:
        config = WorldConfig(charges=charges, days=days, seed=seed, start=start, fraud_rate=fraud_rate)
        if mix is not None:
            config = dataclasses.replace(config, scenario_mix=mix)
    except ValueError as e:  # the library names its parameters ("The 'days' of WorldConfig"); say the options
        message = re.sub(
            r"The '(\w+)' of WorldConfig", lambda m: f"--{m.group(1).replace('_', '-')}", str(e)
        ).replace("--scenario-mix", "--mix")
        raise ConfigError(message) from None
    return config


def write_world(ws: Workspace, config: WorldConfig) -> dict[str, int]:
    """Generate the world of ``config`` into ``ws`` (replacing its contents), with a progress bar."""
    from payfm.synth import generate_world

    with progress_bar("generating days", config.days) as update:
        # (the generator's output is checked by its tests: tests/test_synth*.py validate whole worlds)
        return ws.write_stream(generate_world(config, progress=update), mode="replace", validate=False)


@click.command()
@click.option("--charges", default=1_000_000, show_default=True, help="Approximate number of charges.")
@click.option("--days", default=120, show_default=True, help="Days of history, 1 to 3660 (ten years).")
@click.option("--seed", default=0, show_default=True, help="Random seed: the same seed gives the same world.")
@click.option(
    "--start",
    default="2026-01-01",
    show_default=True,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="First day (UTC), from 1970-01-03; the world (--start + --days) must end by 2100-01-01.",
)
@click.option("--fraud-rate", default=0.003, show_default=True, help="Share of charges that are fraud.")
@click.option(
    "--mix", default=None, help="Scenario weights, e.g. 'stolen_card=3,card_testing=2,friendly_fraud=1'."
)
@click.option("--replace", is_flag=True, help="Replace a workspace that already holds events.")
@click.pass_context
def generate(
    ctx: click.Context,
    charges: int,
    days: int,
    seed: int,
    start: datetime,
    fraud_rate: float,
    mix: str | None,
    replace: bool,
) -> None:
    """Generate a synthetic payments world (charges, disputes, EFWs, refunds) into the workspace.

    \b
    Example:
      payfm generate --charges 200000 --days 30 --seed 7
    """
    # the option values first (nothing created or read yet), then the workspace
    config = world_config(charges, days, seed, start.replace(tzinfo=UTC), fraud_rate, parse_mix(mix))
    with _created_workspace(ctx) as ws:
        if not replace and ws.count("charges"):
            raise ConfigError(
                f"Workspace '{ws.root}' already holds {ws.count('charges'):,} charges. "
                "Pass --replace to replace them, or choose another --workspace."
            )
        t0 = time.perf_counter()
        rows = write_world(ws, config)
    elapsed = time.perf_counter() - t0
    n = rows.get("charges", 0)
    outcomes = ", ".join(rows_of(v, k) for k, v in rows.items() if k != "charges" and v)
    console.print(
        f"Generated {n:,} charges in {elapsed:.1f} s ({n / max(elapsed, 1e-9):,.0f}/s) into "
        f"{plain_path(ws.root)}: {outcomes or 'no outcomes (disputes, early fraud warnings, refunds)'}"
    )


F = TypeVar("F", bound=Callable[..., Any])


def wait_option(why: str) -> Callable[[F], F]:
    """``--wait SECONDS`` (``wait_s``, default 60) for the workspace's write lock; its help says ``why``."""
    return click.option(
        "--wait",
        "wait_s",
        default=60.0,
        show_default=True,
        type=FiniteFloatRange(0),
        help=f"Seconds to wait for the workspace's write lock ({why}).",
    )


@click.command(name="import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--mapping",
    "-m",
    required=True,
    help="Mapping YAML: a path, or the name of a bundled mapping (e.g. 'sparkov').",
)
@click.option(
    "--skip-existing",
    is_flag=True,
    help="Leave out the rows whose id the workspace holds already (a cumulative export imported again), "
    "instead of refusing the file; compared by id only.",
)
@click.option(
    "--skip-orphans",
    is_flag=True,
    help="Leave out the outcomes (disputes, warnings, refunds) whose charge the workspace does not hold "
    "(chargebacks of charges from before the charges export), instead of refusing the file.",
)
@click.option(
    "--join",
    "join",
    type=click.Path(exists=True, dir_okay=False),
    help="A second file (CSV or Parquet) whose columns each row takes, from its row of the same key: for "
    "a mapping with a `join` (e.g. join: {column: TransactionID}), as an export of transactions and "
    "identities.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Run every check and say what would be imported; write nothing (not even a new workspace).",
)
@click.option(
    "--separator",
    help="The CSV separator of the file (and of --join's): ',', ';', '|' or a tab ('\\t'), or its name "
    "(comma, semicolon, pipe, tab), instead of the mapping's `csv: {separator: ...}`: a file exported "
    "otherwise than a bundled mapping reads.",
)
@wait_option(
    "another import or a compaction, a server appending an outcome; then the import fails, writes nothing"
)
@click.pass_context
def import_(
    ctx: click.Context,
    path: str,
    mapping: str,
    skip_existing: bool,
    skip_orphans: bool,
    join: str | None,
    dry_run: bool,
    separator: str | None,
    wait_s: float,
) -> None:
    """Import a CSV or Parquet file in another schema, all or nothing.

    The mapping renames columns, converts units, currencies and time zones, fingerprints the card number
    (a full card number anywhere else is refused) and turns label columns into dispute events; its
    `keep_rows` imports only some rows (a report that mixes payments, refunds and fees, once per table). It
    prints the rows written per table and the source columns not stored: those the mapping drops and those it
    does not mention (both read and scanned for card numbers), and those under no_card_numbers (not scanned).

    \b
    Examples:
      payfm import transactions.parquet --mapping sparkov
      payfm import chargebacks.csv --mapping cb.yaml --skip-existing --skip-orphans  # a cumulative file
      payfm import report.csv --mapping refunds.yaml  # keep_rows: {column: record_type, when: Refunded}
      payfm import train_transaction.csv --join train_identity.csv --mapping ieee.yaml  # join: {column: ...}
      payfm import export.csv --mapping mine.yaml --dry-run  # check a new mapping on the whole file first
      payfm import sparkov_export.csv --mapping sparkov --separator pipe  # Sparkov's own '|'-separated files
    """
    from payfm.events.importer import import_file

    with _workspace_to_import_into(ctx, dry_run) as ws:
        t0 = time.perf_counter()
        try:
            result = import_file(
                ws,
                path,
                mapping,
                skip_existing=skip_existing,
                skip_orphans=skip_orphans,
                join=join,
                dry_run=dry_run,
                separator=separator,
                wait_s=wait_s,
            )
        except OSError as e:
            raise _read_refused(e, ws) from None
    elapsed = time.perf_counter() - t0
    what = "Would import" if dry_run else "Imported"
    console.print(
        f"{what} {shown_text(str(path), limit=4096, times=True)} in {elapsed:.1f} s: "
        + ", ".join(rows_of(v, k) for k, v in result.rows.items())
        + (" (a dry run: nothing written)" if dry_run else ""),
        markup=False,
        highlight=False,
    )
    reasons = {
        "not_kept": "(keep_rows): {} that keep_rows does not import",
        "existing": "(--skip-existing): {} whose id the workspace holds already",
        "orphans": "(--skip-orphans): {} whose charge it does not hold",
    }
    for reason, n in result.skipped.items():
        console.print(f"Left out {reasons[reason].format(plural(n, 'row'))}.", highlight=False)
    for message in result.warnings:  # (they quote the file's values and the mapping's: card numbers removed)
        said = shown_text(message, limit=4096)
        err_console.print(f"warning: {said}.", markup=False, highlight=False, soft_wrap=True)
    for label, n in result.labels_without_money.items():
        console.print(
            f"{shown_text(label)}: {plural(n, 'label')} on charges that moved no money (declined or blocked) "
            "made no dispute or early fraud warning: those follow a successful charge.",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    last = result.last_charge.isoformat() if result.last_charge else ""
    for label, n in result.labels_after_file.items():
        console.print(
            f"{shown_text(label)}: {plural(n, 'outcome')} dated after the file's last charge ({last}): "
            "labels are read as of the event log's latest event, so the charges of those last days count as "
            "observed that much longer. Give the label a `time` where the export has one, or a shorter "
            "`delay`.",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    # never stored as they are: say which, so nothing is lost unnoticed (all scanned for card numbers, but
    # those declared under no_card_numbers)
    for label, columns in (
        ("Dropped by the mapping, not stored", result.dropped_columns),
        ("Not in the mapping, not stored", result.unmapped_columns),
        ("Under no_card_numbers, not scanned, not stored as they are", result.not_scanned),
    ):
        if columns:
            console.print(
                f"{label} ({plural(len(columns), 'column')}): " + ", ".join(shown_text(c) for c in columns),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )


def _read_refused(e: OSError, ws: Workspace) -> Exception:
    """The error of an import whose read of a file the system refused (EACCES, EPERM): an import's own writes
    to the workspace say so themselves (a WorkspaceError), so such an OSError is a read (of the workspace's
    key, the source file, the second file); main's net for OSErrors would call it a write. Any other is
    returned as it is."""
    if e.errno not in (errno.EACCES, errno.EPERM) or e.filename is None:
        return e
    path = Path(os.fsdecode(e.filename))
    shown = shown_text(str(path), 4096, times=True)
    if path.name == "secret.key" and path.parent == ws.root:
        return WorkspaceError(
            f"Cannot read the workspace's key '{shown}': {e.strerror}. Expected a key payfm may read (the "
            "file is its maker's only, mode 0600): run payfm as the user who made the workspace."
        )
    return ConfigError(f"Cannot read '{shown}': {e.strerror}. Expected a file payfm may read.")


class _QueryCommand(click.Command):
    """A command whose one argument is a query: a query that starts with a comment (``-- why``) is the query,
    not an unknown option (click reads any argument starting with ``--`` as an option). No option of the
    command takes a text, so an argument that starts with ``--`` and holds a space or a line break is taken
    for the query, wherever it stands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" not in args:
            queries = [a for a in args if a.startswith("--") and any(c.isspace() for c in a)]
            if queries:
                args = [a for a in args if a not in queries] + ["--", *queries]
        return super().parse_args(ctx, args)


@click.command(
    cls=_QueryCommand,
    help=f"""Run a read-only SQL query (DuckDB dialect) over the workspace tables.

    Tables: {", ".join(TABLES)}. Only one SELECT; nothing outside the workspace.

    Amounts are integers in minor units: amount is in the charge's currency's (cents for usd, yen for jpy),
    amount_usd in US cents (7096 is $70.96; rules read :amount_usd: in dollars: amount_usd / 100.0 here).
    Times are UTC. A query may start with a comment line (-- why), its SELECT on the next line.

    \b
    Example:
      payfm sql "SELECT scenario, count(*) AS n FROM charges GROUP BY 1 ORDER BY n DESC"
    """,
)
@click.argument("query")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="table: the first --limit rows on the terminal (a wide result as one block per row); "
    "csv: every row, with a header line; json: every row, one JSON object per line.",
)
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1), help="Rows shown in table format."
)
@click.pass_context
def sql(ctx: click.Context, query: str, fmt: str, limit: int) -> None:
    # the help is above, in click.command: it lists the tables from the schema
    # The tables hold no card number (imports and the decision service refuse them), so a result can hold one
    # only if the query writes it: a query holding one (a literal, an alias) is refused, and the rows
    # printed are scanned too, in every format (one put together from pieces).
    if name_holds_card_number(query):  # (with a brand's prefix: not an epoch in milliseconds it compares)
        raise ConfigError("The query must not hold a card number (PAN): payfm never prints one.")
    ws = _workspace(ctx)
    removed = 0  # values printed with a card number removed: said on stderr, never silently
    try:
        with contextlib.closing(sql_batches(ws, query, printable=True)) as batches:
            if fmt != "table":  # every row, a batch at a time (memory: one batch, whatever the result's size)
                for i, batch in enumerate(batches):
                    table = pa.Table.from_batches([batch])
                    removed += print_arrow(table, fmt, None, redact=redacted_table, header=i == 0)
                return
            kept: list[pa.RecordBatch] = []
            rows = 0
            for batch in batches:  # the first --limit rows, and the others counted (up to SQL_COUNTED)
                if rows < limit:
                    kept.append(batch.slice(0, limit - rows))
                rows += batch.num_rows
                if rows > SQL_COUNTED:
                    break
        total = f"more than {SQL_COUNTED:,}" if rows > SQL_COUNTED else f"{rows:,}"
        removed += print_arrow(
            pa.Table.from_batches(kept), fmt, limit, redact=redacted_table, total=(rows, total)
        )
    finally:
        if removed:
            sys.stdout.flush()
            err_console.print(
                f"note: {plural(removed, 'value')} printed with [card number removed] in place of what reads "
                "as a full card number (13-19 digits passing the Luhn check): payfm never prints one.",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )


SQL_COUNTED = 10_000_000  # rows of a result `payfm sql` counts past those it shows, before it stops reading


@click.command()
@click.option(
    "--table",
    "tables",
    multiple=True,
    type=click.Choice(list(TABLES)),
    help="A table to compact (repeatable). Default: every table.",
)
@wait_option("a server appending an outcome holds it briefly")
@click.pass_context
def compact(ctx: click.Context, tables: tuple[str, ...], wait_s: float) -> None:
    """Rewrite each day held in several files as one file (same rows, one commit).

    Every append adds a file per day it touches, and the decision service appends each outcome (dispute,
    early fraud warning, refund, review) as its own file; reads open every file, so they slow down as
    small files pile up. Compaction is atomic: readers see the old files or the new ones (the old ones stay
    an hour, for jobs that listed them, then the next write deletes them). It takes the
    workspace's write lock (waiting up to --wait for it); a server's appends meanwhile wait in its memory and
    follow a few seconds later (docs/events.md, "Compaction").

    \b
    Example:
      payfm compact
      payfm compact --table disputes --table refunds
    """
    ws = _workspace(ctx)
    t0 = time.perf_counter()
    with stage_progress() as update:
        result = ws.compact(
            tables or None, progress=lambda t, d, n: update(f"compacting {t}", d, n), wait_s=wait_s
        )
    elapsed = time.perf_counter() - t0
    changed = {t: r for t, r in result.items() if r.days_rewritten}
    if not changed:
        console.print("Nothing to compact: every day of every table is one file.")
        return
    for t, r in changed.items():
        days, rows = plural(r.days_rewritten, "day"), plural(r.rows_rewritten, "row")
        console.print(f"{t}: {r.files_before:,} files -> {r.files_after:,} ({days} rewritten, {rows})")
    console.print(f"Compacted in {elapsed:.1f} s.")


@click.command()
@click.option("--from", "start", metavar="TIME", help="Only charges created at or after TIME (UTC, ISO).")
@click.option("--to", "end", metavar="TIME", help="Only charges created before TIME (UTC, ISO).")
@click.pass_context
def summary(ctx: click.Context, start: str | None, end: str | None) -> None:
    """Summarize the event log: volumes, authorization rate, fraud by scenario, label delays; with --from
    and --to, of the charges of that window and their outcomes (whenever those came).

    \b
    Examples:
      payfm summary
      payfm summary --from 2026-04-24 --to 2026-05-01      # last week of the default world
    """
    ws = _workspace(ctx)
    print_summary(summarize(ws, iso_time(start, "--from"), iso_time(end, "--to")))
