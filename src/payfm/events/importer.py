"""Import a foreign CSV or Parquet file into the workspace through a mapping (see docs/import.md).

The import is a pipeline of small steps, all-or-nothing:

1. parse the mapping (:mod:`payfm.events.mapping`): mistakes are ConfigErrors before any data is read;
2. read the file (CSV columns are read as text, so nothing is guessed or silently rounded);
3. scan every source column except the fingerprinted ones for full card numbers (never echoed);
4. compute each target field (renames, constants, keyed hashes, value maps, units, currencies, time zones,
   card transforms) with vectorized Arrow and numpy, collecting every bad row;
5. turn label columns into outcome events (disputes or early fraud warnings);
6. validate both tables against the schema, refuse ids already in the workspace, and refuse outcome events
   of charges the workspace does not hold or at or before their charge;
7. write everything in one workspace transaction.

This module runs the steps, reads the file and checks its columns; the conversions of step 4 are
:mod:`payfm.events.import_convert` and :mod:`payfm.events.import_times`, the outcome events and their
checks against the charges :mod:`payfm.events.import_outcomes`, and the collected problems
:mod:`payfm.events.import_problems`.

Any problem raises :class:`~payfm.events.validate.ValidationError` (file, row, column, expected, received;
the first few and a count) or :class:`~payfm.errors.ConfigError`, and nothing is written.

Example:
    >>> import tempfile, pathlib
    >>> from payfm.events.workspace import Workspace
    >>> ws = Workspace.open(tempfile.mkdtemp(), create=True)
    >>> sample = pathlib.Path("tests/data/sparkov_sample.parquet")
    >>> import_file(ws, sample, "sparkov").rows  # doctest: +SKIP
    {'charges': 384, 'disputes': 78}
"""

from __future__ import annotations

import csv
import difflib
import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from payfm.errors import ConfigError
from payfm.events.cards import card_number_rows, contains_card_number, redact_card_numbers
from payfm.events.import_convert import keyed_hash, to_ints, to_strings
from payfm.events.import_outcomes import OUTCOME_ID, follow_charges, outcome_events
from payfm.events.import_problems import (
    KEEP,
    Problems,
    raise_problems,
    repeat_count,
    repeat_filter,
    values_at,
)
from payfm.events.import_times import to_times
from payfm.events.mapping import Mapping, load_mapping
from payfm.events.schema import ID_COLUMNS, schema_of
from payfm.events.validate import Problem, ValidationError, validate_events
from payfm.events.workspace import Workspace

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImportSummary:
    """What an import wrote: rows per event table, and the source columns that were not stored."""

    source: str
    mapping: str
    rows_read: int
    rows: dict[str, int]
    dropped_columns: tuple[str, ...]  # listed under `drop`: read and scanned, never stored
    unmapped_columns: tuple[str, ...]  # neither used nor dropped: read and scanned, never stored


# ---- reading ---------------------------------------------------------------------------------------------
def read_source(path: Path) -> tuple[pa.Table, bool]:
    """The file as an Arrow table (plain, undictionaried columns) and whether it is CSV.

    CSV columns are read as text: the mapping says how to parse them, so a card number never turns into a
    float and an id never loses its leading zeros. Only an empty cell is null: ``NA``, ``NULL`` or ``nan``
    is text like any other (a merchant may be called NULL; a label ``N/A`` is a problem, not "no label").
    Column names must be distinct (a ConfigError names the repeated one). A CSV file must be UTF-8 and
    comma-separated, with as many cells in every row as in its header: a ragged row is a ValidationError
    naming its row and line and the counts (never its text), another encoding or separator a ConfigError
    saying how to convert the file.
    """
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            _check_names(pq.read_schema(path).names, path)
            table = pq.read_table(path)
            is_csv = False
        elif name.endswith((".csv", ".csv.gz")):
            table = _read_csv(path)
            is_csv = True
        else:
            raise ConfigError(
                f"Import source '{path}': expected a .csv, .csv.gz, .parquet or .pq file; "
                f"received '{path.suffix}'."
            )
    except (OSError, pa.ArrowInvalid) as e:
        # A parser's message may quote a row: never echo it (the first ': ' of a CSV parse error ends what
        # is said about the row), nor a card number from any other message.
        text = str(e)
        if text.startswith("CSV parse error:"):
            text = text.split(": ", 2)[1] if text.count(": ") >= 2 else "CSV parse error"
        raise ConfigError(
            f"Import source '{path}': expected a readable file; received an error "
            f"({redact_card_numbers(text)})."
        ) from None
    _check_names(table.column_names, path)
    columns = []
    for col in table.columns:
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if pa.types.is_large_string(col.type):
            col = col.cast(pa.string())
        columns.append(col.combine_chunks())
    return pa.Table.from_arrays(columns, names=table.column_names), is_csv


def _open_binary(path: Path) -> BinaryIO:
    return cast(BinaryIO, gzip.open(path, "rb")) if path.name.lower().endswith(".gz") else path.open("rb")


def _read_csv(path: Path) -> pa.Table:
    """A UTF-8, comma-separated file with a header line, every column as text (see :func:`read_source`)."""
    with _open_binary(path) as f:
        if f.read(4).startswith((b"\xff\xfe", b"\xfe\xff")):
            raise _not_utf8(path, "UTF-16 text (it starts with a UTF-16 byte-order mark)", "UTF-16")
    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8-sig", newline="") as lines:
            header = next(csv.reader(lines), [])
    except UnicodeDecodeError:
        raise _encoding_error(path) from None
    if len(header) == 1:
        _check_separator(header[0], path)
    invalid: list[tuple[int, int, int | None]] = []  # (expected, received) cell counts, physical row

    def handle(row: pacsv.InvalidRow) -> str:
        invalid.append((row.expected_columns, row.actual_columns, row.number))
        return "skip"  # all of them are counted; none is imported (the whole file is refused below)

    convert = pacsv.ConvertOptions(
        column_types={h: pa.string() for h in header}, null_values=[""], strings_can_be_null=True
    )
    try:
        table = pacsv.read_csv(
            path, parse_options=pacsv.ParseOptions(invalid_row_handler=handle), convert_options=convert
        )
        if invalid and any(number is None for _e, _r, number in invalid):
            # Arrow numbers the rows only when it parses in one thread: read again, on this error path only.
            invalid.clear()
            pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(use_threads=False),
                parse_options=pacsv.ParseOptions(invalid_row_handler=handle),
                convert_options=convert,
            )
    except pa.ArrowInvalid as e:
        if "invalid UTF8" in str(e):
            raise _encoding_error(path) from None
        raise
    if invalid:
        _raise_ragged(path, invalid)
    return table


def _raise_ragged(path: Path, invalid: list[tuple[int, int, int | None]]) -> NoReturn:
    """Rows with another number of cells than the header, by row and line, never their text."""
    problems: list[Problem] = []
    for expected, received, number in invalid[:KEEP]:
        # Arrow's row number counts the header as 1: data row number - 1, on line number (no quoted breaks).
        row = None if number is None else number - 1
        problems.append(
            Problem(
                None,
                row,
                f"{expected} cells, as many as the header has columns (a missing or extra comma, or a "
                "comma inside an unquoted value?)",
                f"{received} cells",
            )
        )
    raise_problems(str(path), problems, len(invalid), csv_file=True)


def _check_separator(name: str, path: Path) -> None:
    """A header of one column holding ';', a tab or '|' is a file separated by that, not by commas."""
    for separator, shown in ((";", "';'"), ("\t", "tabs"), ("|", "'|'")):
        if separator in name:
            raise ConfigError(
                f"Import source '{path}': expected comma-separated columns; received a header of one column "
                f"holding {shown} {name.count(separator)} time(s): the file seems separated by {shown}. "
                f"payfm reads comma-separated files: export or save it with ',' as the separator."
            )


def _not_utf8(path: Path, received: str, encoding: str) -> ConfigError:
    return ConfigError(
        f"Import source '{path}': expected UTF-8 text; received {received}. Convert it to UTF-8 and import "
        f"the copy, e.g. `iconv -f {encoding} -t UTF-8 '{path}' > '{path.with_suffix('')}.utf8.csv'`."
    )


def _encoding_error(path: Path) -> ConfigError:
    """The first byte that is not UTF-8, by row, line and column (read line by line: on this error path
    only), and how to convert the file."""
    with _open_binary(path) as f:
        names: list[str] = []
        for line_number, line in enumerate(f, 1):
            try:
                text = line.decode("utf-8-sig" if line_number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                # Latin-1 maps each byte to one character: the cells before the bad byte, whatever they hold.
                before = next(csv.reader([line[: e.start].decode("latin-1")]), [""])
                column = max(len(before) - 1, 0)
                if line_number == 1:
                    where = f"line 1 (the header), column {column + 1}"
                else:
                    shown = redact_card_numbers(repr(names[column] if column < len(names) else column + 1))
                    where = f"row {line_number - 1} (line {line_number}), column {shown}"
                return _not_utf8(
                    path,
                    f"the byte 0x{line[e.start]:02x} at {where}, which is not UTF-8 (the file seems to be in "
                    "another encoding, such as Windows-1252 or Latin-1)",
                    "WINDOWS-1252",
                )
            if line_number == 1:
                names = next(csv.reader([text]), [])
    return _not_utf8(path, "bytes that are not UTF-8", "WINDOWS-1252")


def _check_names(names: list[str], path: Path) -> None:
    """A column name twice in the file (a CSV header, a Parquet schema) is a ConfigError naming it: which of
    the two a mapping reads, or which holds a card number, would be a guess."""
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            raise ConfigError(
                f"Import source '{path}': expected distinct column names; received the column "
                f"{redact_card_numbers(repr(name))} twice (columns {first[name] + 1} and {i + 1})."
            )
        first[name] = i


def _suggest(column: str, mapping: Mapping, present: list[str]) -> str | None:
    """A plausible file column for the missing ``column``: the same name in another case, or a close spelling
    (difflib ratio >= 0.8: 'merchnt' -> 'merchant', never 'amt' -> 'lat') among the columns the mapping
    neither reads nor drops (a column it already uses elsewhere is not what was meant)."""
    free = [c for c in present if c not in mapping.source_columns() and c not in mapping.drop]
    same = [c for c in present if c.lower() == column.lower()]
    if same:
        return same[0]
    close = difflib.get_close_matches(column, free, n=1, cutoff=0.8)
    return close[0] if close else None


def _check_columns(mapping: Mapping, table: pa.Table, source: str) -> ConfigError | None:
    """The error for the first source column the mapping reads that is not in the file (with a suggestion)."""
    present = table.column_names
    for column in mapping.source_columns():
        if column not in present:
            close = _suggest(column, mapping, present)
            hint = f" (did you mean {close!r}?)" if close else ""
            where = f"{mapping.name}: '{mapping.source_path(column)}'"
            return ConfigError(
                redact_card_numbers(
                    f"{where}: expected a column of '{source}'{hint}; "
                    f"received '{column}', which the file does not have."
                )
            )
    return None


def _hide_card_headers(table: pa.Table, is_csv: bool, out: Problems) -> pa.Table:
    """Column names holding a card number (a header line that is really a data row, a number pasted into
    a header) are refused like a card number in a cell: reported, never shown. The column is renamed to its
    redacted name and position, so no later message, nor the summary, shows the number."""
    names = table.column_names
    hidden = [i for i, name in enumerate(names) if contains_card_number(name)]
    if not hidden:
        return table
    hint = " (is the first line a data row? the file must start with a header line)" if is_csv else ""
    renamed = list(names)
    for i in hidden:
        renamed[i] = f"{redact_card_numbers(names[i])} (column {i + 1})"
        out.column(renamed[i], f"a column name without a card number{hint}", "a full card number (not shown)")
    return table.rename_columns(renamed)


def _scan_cards(mapping: Mapping, table: pa.Table, out: Problems) -> None:
    """Card numbers in any column but the fingerprinted ones: report row and column, never the number."""
    # A column the mapping declares as epoch times is exempt: one 13-digit epoch-millisecond value in ten
    # passes the Luhn check, and its values are checked as times in 1970-2100 instead.
    epoch = {c for spec in mapping.fields.values() if spec.unit is not None for c in spec.columns}
    for name in table.column_names:
        if name in mapping.fingerprinted:
            continue
        if name in epoch:
            continue
        rows = card_number_rows(table.column(name))
        if len(rows):
            out.rows(
                name,
                rows,
                "no card numbers (only a column sent through transform: fingerprint may hold them)",
                "a full card number (not shown)",
            )


# ---- field computations ----------------------------------------------------------------------------------
def _fields(mapping: Mapping, table: pa.Table, secret: bytes, out: Problems) -> pa.Table:
    """The target table (only the mapped fields; validate_events adds nullable ones as null). Cells that could
    not be computed are reported and null; a field that failed as a whole (a column of the wrong type) is left
    out, so validate_events still checks every other field and row."""
    arrays: dict[str, pa.Array] = {}
    for target, spec in mapping.fields.items():
        out.field = target
        if spec.target_type == "timestamp":
            result = to_times(spec, table, mapping, out)
        elif spec.target_type == "int":
            result = to_ints(spec, table, mapping.table, out)
        else:
            required = not schema_of(mapping.table).field(target).nullable
            result = to_strings(spec, table, secret, out, required)
        out.field = None
        if result is None:
            out.failed.add(target)
            continue
        if target in out.bad:
            mask = np.zeros(len(result), dtype=bool)
            mask[out.bad[target]] = True
            result = pc.if_else(pa.array(mask), pa.scalar(None, result.type), result)
        arrays[target] = result
    return pa.table(arrays) if arrays else pa.table({"_": pa.nulls(table.num_rows)}).drop(["_"])


def _existing(
    ws: Workspace,
    table_name: str,
    table: pa.Table,
    id_column: str,
    out: Problems,
    rows: np.ndarray | None = None,
) -> None:
    """Ids already stored in the workspace cannot be imported again (events are immutable); ``rows`` maps the
    rows of a derived table (outcome events) back to the file's rows."""
    if id_column not in table.column_names:
        return
    stored = ws.read(table_name, columns=[id_column]).column(id_column)
    if len(stored) == 0:
        return
    ids = table.column(id_column).combine_chunks()
    bad = np.flatnonzero(pc.is_in(ids, value_set=stored.combine_chunks().cast(ids.type)).to_numpy(False))
    if len(bad):
        out.rows(
            id_column,
            bad if rows is None else rows[bad],
            f"an id not already in the workspace's '{table_name}' (was this file imported before?)",
            values_at(ids, bad),
        )


# ---- the import ------------------------------------------------------------------------------------------
def import_file(
    ws: Workspace, path: str | Path, mapping_path: str | Path, *, progress: Progress | None = None
) -> ImportSummary:
    """Import the CSV or Parquet file ``path`` into ``ws`` through the mapping ``mapping_path`` (a file or the
    name of a bundled mapping such as ``sparkov``). All or nothing: any problem raises and writes nothing.
    """
    say = progress or (lambda _step: None)
    mapping = load_mapping(mapping_path)
    source = str(path)
    say(f"reading {source}")
    table, is_csv = read_source(Path(path))
    out = Problems()
    say("scanning for card numbers")
    table = _hide_card_headers(table, is_csv, out)
    _scan_cards(mapping, table, out)
    missing = _check_columns(mapping, table, source)
    if missing is not None:  # nothing more can be computed; card numbers found come first
        if out.total:
            raise_problems(source, out.items, out.total, is_csv)
        raise missing
    say("mapping columns")
    secret = ws.secret()
    built = _fields(mapping, table, secret, out)
    say("validating")
    try:
        charges = validate_events(mapping.table, built, source=source)
    except ValidationError as e:
        charges = built
        repeats = repeat_filter(out)
        out.absorb(e, repeats=repeats, repeated=repeat_count(mapping.table, built, out))
    id_column = ID_COLUMNS[mapping.table]
    _existing(ws, mapping.table, charges, id_column, out)
    if mapping.table != "charges":
        follow_charges(ws, mapping, charges, out)
    outcomes: dict[str, pa.Table] = {}
    for name, (events, rows) in outcome_events(mapping, table, charges, secret, out).items():
        try:
            outcomes[name] = validate_events(name, events, source=source)
        except ValidationError as e:
            out.absorb(e, rows)
            continue
        _existing(ws, name, outcomes[name], OUTCOME_ID[name], out, rows)
    if out.total:
        raise_problems(source, out.items, out.total, is_csv)
    say("writing")
    with ws.writer("append") as w:
        w.write(mapping.table, charges)
        for name, events in outcomes.items():
            w.write(name, events)
    rows_written = {mapping.table: charges.num_rows} | {name: t.num_rows for name, t in outcomes.items()}
    used = set(mapping.source_columns())
    dropped = tuple(c for c in table.column_names if c in mapping.drop)
    unmapped = tuple(c for c in table.column_names if c not in used and c not in mapping.drop)
    return ImportSummary(source, mapping.name, table.num_rows, rows_written, dropped, unmapped)


__all__ = ["ImportSummary", "import_file", "keyed_hash", "read_source"]
