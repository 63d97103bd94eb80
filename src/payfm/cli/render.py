"""Rich rendering shared by the commands: tables, summaries, progress."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from payfm.errors import ConfigError
from payfm.events.cards import shown_text
from payfm.events.schema import OutOfRange, iso_got, utc_time
from payfm.events.summary import LogSummary
from payfm.events.text import escaped
from payfm.events.workspace import json_ready

# Output piped to a file or another program gets 160 columns rather than Rich's 80: tables keep whole model
# references and slice names there. A terminal's own width, or COLUMNS when set, is used as it is.
PIPED_WIDTH = 160


def _width(stream: object) -> int | None:
    isatty = getattr(stream, "isatty", None)
    if os.environ.get("COLUMNS") or (isatty is not None and isatty()):
        return None  # Rich's own choice
    return PIPED_WIDTH


# Markup and emoji codes are off: every print shows its text as written. A message, a rule, a path or a value
# may hold `[card number removed]`, `[/x]` or `:credit_card:`, which Rich would otherwise read as a style tag
# (dropped, or a MarkupError traceback) or an emoji. Styled output says so: a `style=`, a rich Text, or
# `markup=True` with every value in it escaped (rich.markup.escape).
console = Console(width=_width(sys.stdout), markup=False, emoji=False)
err_console = Console(stderr=True, width=_width(sys.stderr), markup=False, emoji=False)


def ending_path(suffix: str) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """A click callback for an option naming a file to write: a path ending in ``suffix`` (``.csv``,
    ``.json``; any case), not a folder."""

    def check(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is not None and (value.endswith(("/", os.sep)) or not value.lower().endswith(suffix)):
            raise click.BadParameter(f"expected a file path ending in {suffix}. Got '{shown_text(value)}'.")
        return value

    return check


def parquet_path(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A click callback for an ``--out`` that writes Parquet: a file path ending in ``.parquet``."""
    if value is not None and (value.endswith(("/", os.sep)) or not value.endswith(".parquet")):
        raise click.BadParameter(f"expected a file path ending in .parquet. Got {value!r}.")
    return value


def plain_path(path: object) -> str:
    r"""A path as a line prints it (the consoles take no markup): escaped (control characters, card numbers:
    its name may come from anywhere), whole (a cut path names no file).

    >>> print(plain_path("out/[bold]r\x1b[2J"))
    out/[bold]r\x1b[2J
    """
    return shown_text(str(path), limit=4096, times=True)


def shown_path(path: object) -> str:
    r"""A path for a line printed with ``markup=True``: :func:`plain_path` with its brackets taken as text,
    not as markup (``-w '[bold]x'``).

    >>> print(shown_path("out/[bold]r\x1b[2J"))
    out/\[bold]r\x1b[2J
    """
    return escape(plain_path(path))


def plural(n: int, noun: str) -> str:
    """``n`` of a regular ``noun`` in words: "1 day", "2,173 days"."""
    return f"{n:,} {noun}{'s' if n != 1 else ''}"


def cell(x: float | None, spec: str = ".3f") -> str:
    """A number for a table cell, formatted with ``spec``; "-" when it has no value: None, NaN (a precision
    with nothing flagged, a recall without fraud) or an infinity, as the HTML report and backtests show it.

    >>> cell(0.25), cell(float("nan")), cell(None, ",.2f")
    ('0.250', '-', '-')
    """
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def rows_of(n: int, table: str) -> str:
    """``n`` rows of an event table in words: "1 dispute", "5 early fraud warnings"."""
    return plural(n, table.replace("_", " ").removesuffix("s"))


def iso_time(value: str | None, option: str) -> datetime | None:
    """An option's ISO date or time, UTC when it names no zone; a one-line error naming ``option``."""
    if value is None:
        return None
    try:
        return utc_time(value)
    except OutOfRange as e:
        raise ConfigError(f"The option {option} must be a time Python can represent in UTC: {e}.") from None
    except ValueError as e:
        raise ConfigError(
            f"The option {option} must be an ISO date or time (2026-03-01). {iso_got(value, e)}"
        ) from None


class _PlainProgress:
    """Progress where stderr is no terminal (a log file, CI): a bar would draw nothing there, so a stage that
    runs long says where it is in one plain line, at its first update after :data:`PLAIN_FIRST_S` seconds,
    then at the first update after each :data:`PLAIN_EVERY_S` more, and once more when it ends (a quick stage
    says nothing; a stage whose updates come minutes apart speaks at that pace)."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.monotonic
        self._start: dict[str, float] = {}
        self._said: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int, extra: str = "") -> None:
        now = self._clock()
        start = self._start.setdefault(stage, now)
        last = self._said.get(stage)
        finished = total > 0 and done >= total
        due = now - start >= PLAIN_FIRST_S if last is None else now - last >= PLAIN_EVERY_S
        if due or (finished and last is not None and last != math.inf):
            of = f"{done:,}/{total:,}" if total > 0 else f"{done:,}"
            err_console.print(f"{stage}: {of}{extra} ({now - start:.0f} s)", markup=False, highlight=False)
            self._said[stage] = math.inf if finished else now


PLAIN_FIRST_S = 10.0
PLAIN_EVERY_S = 30.0


@contextmanager
def stage_progress() -> Iterator[Callable[[str, int, int], None]]:
    """Progress bars on stderr, one per stage; yields ``update(stage, done, total)`` (plain lines for a long
    stage where stderr is no terminal: :class:`_PlainProgress`)."""
    if not err_console.is_terminal:
        yield _PlainProgress()
        return
    with Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr; yields ``update(done, total)``."""
    with stage_progress() as update_stage:
        update_stage(label, 0, total)
        yield lambda done, total_: update_stage(label, done, total_)


@contextmanager
def loss_progress(label: str, show: bool = True) -> Iterator[Callable[[int, int, float], None]]:
    """A progress bar on stderr for a training loop; yields ``update(step, total, loss)``.

    ``show=False`` (a process other than rank 0 under torchrun) shows nothing."""
    if not show:
        yield lambda step, total, loss: None
        return
    if not err_console.is_terminal:
        plain = _PlainProgress()
        yield lambda step, total, loss: plain(label, step, total, f", loss {loss:.3f}")
        return
    with Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None, loss=float("nan"))

        def update(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=loss)

        yield update


# What a value of `payfm sql` prints as. Every DuckDB type prints: payfm.events.query.printable_types casts
# those Arrow or Python cannot hold as DuckDB does (an INTERVAL, BIGNUM, TIME WITH TIME ZONE...) to DuckDB's
# text before they reach here; a date or time Python cannot hold (DuckDB's infinity, a year after 9999)
# prints as DuckDB's text of it (_values), bytes as DuckDB writes a BLOB (blob_text). Text never reaches the
# terminal as control characters: they print escaped, as payfm.events.text.escaped writes them (a line feed,
# and in CSV a tab, kept as data).
_TABLE_KEPT = "\n"  # (a value of several lines shows as several lines in the table)
_CSV_KEPT = "\t\n"  # (CSV quotes them: a note keeps its lines)
_PY_DAYS = (-719_162, 2_932_896)  # 0001-01-01 and 9999-12-31, days since the epoch: Python's dates
_PY_SECONDS = (-62_135_596_800, 253_402_300_799)  # their first and last second
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _python_holds(col: pa.ChunkedArray) -> bool:
    """Whether Python holds every value of the date or timestamp column ``col`` (any other type: True)."""
    t = col.type
    if pa.types.is_date32(t):
        lo, hi = _PY_DAYS
    elif pa.types.is_date64(t):
        lo, hi = _PY_SECONDS[0] * 1_000, _PY_SECONDS[1] * 1_000 + 999
    elif pa.types.is_timestamp(t):
        per = _PER_SECOND[t.unit]
        lo, hi = _PY_SECONDS[0] * per, (_PY_SECONDS[1] + 1) * per - 1
    else:
        return True
    bounds = pc.min_max(col.cast(pa.int32() if pa.types.is_date32(t) else pa.int64()))
    least, most = bounds["min"].as_py(), bounds["max"].as_py()
    return least is None or (lo <= least and most <= hi)


def _values(col: pa.ChunkedArray | pa.Array) -> list[Any]:
    """The values of ``col`` in Python, for printing; a value Python cannot hold (DuckDB's infinity, a date
    after 9999, in a list or not) as DuckDB's text of it: never an OverflowError half-way through a result."""
    try:
        values: list[Any] = col.to_pylist()
        return values
    except (OverflowError, ValueError, ArithmeticError, pa.ArrowException):
        pass
    whole = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    texts = _duckdb_texts(whole)
    out: list[Any] = []
    for i, text in enumerate(texts):
        try:
            out.append(whole[i].as_py())
        except (OverflowError, ValueError, ArithmeticError, pa.ArrowException):
            out.append(text)
    return out


def _duckdb_texts(col: pa.Array) -> list[Any]:
    """The values of ``col`` with their dates and times (at any depth) as DuckDB's text of them."""
    import duckdb

    from payfm.events.query import printable_types

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")  # (as the workspace's connection reads them)
        rel = printable_types(con.from_arrow(pa.table({"v": col})), times=False)
        values: list[Any] = rel.to_arrow_table().column(0).to_pylist()
        return values
    except (duckdb.Error, pa.ArrowException, OverflowError, ValueError):  # (a type DuckDB cannot read back)
        return [None if v is None else f"<{col.type}>" for v in pc.is_valid(col).to_pylist()]
    finally:
        con.close()


def blob_text(value: bytes) -> str:
    r"""Bytes as DuckDB writes a BLOB as text: printable ASCII as it is, any other byte (and the backslash)
    as ``\xHH``.

    >>> print(blob_text(b"ab\x07\\\xc3\xa9"))
    ab\x07\x5C\xC3\xA9
    """
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02X}" for b in value)


def _shown(value: object, keep: str = _TABLE_KEPT) -> str:
    """A value as a table cell or a record's line shows it: its text (bytes as :func:`blob_text`), control
    characters escaped."""
    return blob_text(value) if isinstance(value, bytes) else escaped(str(value), keep)


def _json_default(value: object) -> str:
    """What JSON cannot hold as it is (a time, a decimal, bytes) as its text (bytes as :func:`blob_text`)."""
    return blob_text(value) if isinstance(value, bytes) else str(value)


def _json_text(value: object) -> str:
    return json.dumps(json_ready(value), default=_json_default, allow_nan=False)


def _text_like(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _text_like(t.value_type)
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _csv_ready(table: pa.Table) -> pa.Table:
    """``table`` as CSV prints it: the columns CSV cannot hold as they are, lists, structs and maps as JSON
    text, bytes as :func:`blob_text`, cell by cell; a date or time column holding a value Python cannot
    (``infinity``) as text, that value DuckDB's text of it, the others as Arrow writes them; texts and names
    with their control characters escaped (a tab and a line feed kept: CSV quotes them)."""
    for i, f in enumerate(table.schema):
        t, col = f.type, table.column(i)
        cells: list[Any] | None = None
        if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            cells = [None if v is None else blob_text(v) for v in col.to_pylist()]
        elif pa.types.is_nested(t):
            cells = [None if v is None else _json_text(v) for v in _values(col)]
        elif _text_like(t):
            plain = col if pa.types.is_string(t) or pa.types.is_large_string(t) else col.cast(pa.string())
            if pc.all(pc.utf8_is_printable(plain)).as_py() is False:
                cells = [None if v is None else escaped(v, _CSV_KEPT) for v in plain.to_pylist()]
        elif not _python_holds(col):
            arrow = pc.cast(col, pa.string()).to_pylist()
            cells = [v if isinstance(v, str) else arrow[r] for r, v in enumerate(_values(col))]
        name = escaped(f.name)
        if cells is not None:
            table = table.set_column(i, name, pa.array(cells, pa.string()))
        elif name != f.name:
            table = table.rename_columns([*table.column_names[:i], name, *table.column_names[i + 1 :]])
    return table


def print_arrow(
    table: pa.Table,
    fmt: str,
    limit: int | None,
    redact: Callable[[pa.Table], tuple[pa.Table, int]] | None = None,
    *,
    header: bool = True,
    total: tuple[int, str] | None = None,
) -> int:
    """Print ``table`` as a rich table (first ``limit`` rows), CSV or JSON lines on stdout (strict JSON:
    NaN and infinities as null); return how many values ``redact`` changed. ``redact`` (a table and the
    count of its values it changed) is applied to what is printed: every row in CSV or JSON, the rows a table
    shows, before their control characters are escaped. ``header``: CSV's header line (not for a later batch
    of one result); ``total``: the rows of the whole result, and how to say it, when ``table`` holds only
    those shown."""
    removed = 0
    if fmt in ("csv", "json") and redact is not None:
        table, removed = redact(table)
    if fmt == "csv":
        sink = pa.BufferOutputStream()
        pacsv.write_csv(_csv_ready(table), sink, pacsv.WriteOptions(include_header=header))
        sys.stdout.write(sink.getvalue().to_pybytes().decode())
        return removed
    if fmt == "json":
        names = table.column_names
        for row in zip(*(_values(col) for col in table.columns), strict=True):
            sys.stdout.write(_json_text(dict(zip(names, row, strict=True))) + "\n")
        return removed
    shown = table if limit is None else table.slice(0, limit)
    if redact is not None:
        shown, removed = redact(shown)
    names = [escaped(name) for name in shown.column_names]
    cells = [[None if v is None else _shown(v) for v in _values(col)] for col in shown.columns]
    if shown.num_columns and (
        console.width // shown.num_columns < MIN_COLUMN_WIDTH or _table_width(names, cells) > console.width
    ):
        _print_records(names, cells)
    else:
        _print_table(names, cells)
    rows, said = total if total is not None else (table.num_rows, str(table.num_rows))
    if limit is not None and rows > limit:
        console.print(f"{limit} of {said} rows shown; use --limit or --format csv for all", style="dim")
    return removed


# Below this many characters a column, a table of the result would show "c…" for every value: the rows are
# printed as records instead (a block per row, a line per column), like psql's expanded display.
MIN_COLUMN_WIDTH = 12


def _table_width(names: list[str], cells: list[list[str | None]]) -> int:
    """Characters a table of ``cells`` (by column) needs with every value on one line: its widest value or
    name per column, plus the borders and padding (3 a column, 1 more). Wider than the screen, the rows are
    printed as records: folded into the columns, an id copied from the screen would come in pieces."""
    from rich.cells import cell_len  # (wide characters take two cells, a multi-line value its widest line)

    width = 1
    for name, col in zip(names, cells, strict=True):
        values = [max(map(cell_len, v.splitlines() or [""])) for v in col if v is not None]
        width += max([cell_len(name), 4, *values]) + 3  # (4: NULL)
    return width


def _print_records(names: list[str], cells: list[list[str | None]]) -> None:
    rows = len(cells[0]) if cells else 0
    if rows == 0:
        console.print(
            f"(no rows; columns: {', '.join(names)})",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return
    pad = max(len(n) for n in names)
    for i in range(rows):
        rule = f"-[ row {i + 1} ]" + "-" * max(0, pad + 10 - len(str(i + 1)))
        console.print(rule, style="bold", highlight=False)
        for name, col in zip(names, cells, strict=True):
            v = col[i]
            line = Text(f"{name:<{pad}}  ")
            if v is None:
                line.append("NULL", style="dim")
            else:
                line.append(v)
            line.rstrip()
            console.print(line, highlight=False, soft_wrap=True)


def _print_table(names: list[str], cells: list[list[str | None]]) -> None:
    # Values and names as plain text, never markup: '[red]acct' or '[card number removed]' shows as written.
    # A value too wide for its column folds onto more lines, never cut with "…": an id copied from the screen
    # (into a list, a rule) must be the whole id.
    out = Table(show_header=True, header_style="bold")
    for name in names:
        out.add_column(Text(name), overflow="fold")
    for row in zip(*cells, strict=True):
        out.add_row(*(Text("NULL", style="dim") if v is None else Text(v) for v in row))
    console.print(out)


def print_summary(s: LogSummary) -> None:
    """The event log summary: volumes, authorization, fraud by scenario, label delays."""
    lo, hi = s.window
    title = "Event log"
    if lo is not None or hi is not None:  # outcomes: of these charges, whenever they came
        shown = f"{lo.isoformat() if lo else 'the start'} .. {hi.isoformat() if hi else 'the end'}"
        title += f": charges created {shown}, and their outcomes"
    head = Table(title=title, show_header=False)
    head.add_column(style="bold")
    head.add_column(justify="right")
    head.add_row("charges", f"{s.charges:,}")
    head.add_row("period (UTC)", f"{s.first} .. {s.last}" if s.first else "no charges yet")
    head.add_row("merchants / cards", f"{s.merchants:,} / {s.cards:,}")
    head.add_row("authorization rate", f"{s.authorization_rate:.2%}")
    head.add_row("issuer declined / blocked", f"{s.issuer_declined:,} / {s.blocked:,}")
    head.add_row("authorized volume (USD)", f"{s.volume_usd:,.0f}")
    head.add_row("disputes (fraudulent)", f"{s.disputes:,} ({s.fraud_disputes:,})")
    head.add_row("early fraud warnings", f"{s.early_fraud_warnings:,}")
    head.add_row("refunds", f"{s.refunds:,}")
    head.add_row("charges labelled fraud so far", f"{s.labelled_fraud_charges:,}")
    scattered = [t for t, (files, days) in s.files.items() if files > days]
    if s.files:
        total = sum(files for files, _ in s.files.values())
        how = (
            f"{len(scattered)} table(s) with days in several files" if scattered else "one per table and day"
        )
        head.add_row("data files" + (" (whole log)" if title != "Event log" else ""), f"{total:,} ({how})")
    console.print(head)
    if scattered:
        console.print(
            f"{', '.join(scattered)}: days in several files (appends). `payfm compact` rewrites each "
            "day as one file; reads get faster (docs/events.md, Compaction).",
            style="dim",
        )
    if s.fraud_by_scenario:
        fraud = Table(title="Fraud by scenario (ground truth)")
        fraud.add_column("scenario")
        fraud.add_column("charges", justify="right")
        fraud.add_column("share of all charges", justify="right")
        total = sum(s.fraud_by_scenario.values())
        for name, n in s.fraud_by_scenario.items():
            fraud.add_row(name, f"{n:,}", f"{n / s.charges:.3%}")
        every = ("all fraud", f"{total:,}", f"{total / s.charges:.3%}")
        fraud.add_row(*(Text(c, style="bold") for c in every))
        console.print(fraud)
    delays = Table(title="Label delay (days after the charge)")
    delays.add_column("outcome")
    for q in ("events", "p10", "p50", "p90", "p99"):
        delays.add_column(q, justify="right")
    for name, d in s.delays.items():
        cells = [cell(v, ".1f") for v in (d.p10, d.p50, d.p90, d.p99)]
        delays.add_row(name, f"{d.events:,}", *cells)
    console.print(delays)


def print_feature_sample(table: pa.Table, names: list[str]) -> None:
    """Distribution of a few feature columns: share present, mean, p50, p99, max."""
    import pyarrow.compute as pc

    out = Table(title="A few features")
    for col in ("feature", "present", "mean", "p50", "p99", "max"):
        out.add_column(col, justify="left" if col == "feature" else "right")
    for name in names:
        col = table[name]
        present = (len(col) - col.null_count) / max(len(col), 1)
        q = pc.quantile(col, q=[0.5, 0.99]).to_pylist()
        mean, mx = pc.mean(col).as_py(), pc.max(col).as_py()
        cells = [cell(v, ",.2f") for v in (mean, q[0], q[1], mx)]
        out.add_row(name, f"{present:.1%}", *cells)
    console.print(out)
