"""Import a foreign CSV or Parquet file into the workspace through a mapping (see docs/import.md).

The import is a pipeline of small steps, all-or-nothing:

1. parse the mapping (:mod:`payfm.events.mapping`): mistakes are ConfigErrors before any data is read;
2. read the file (CSV columns are read as text, so nothing is guessed or silently rounded, its cells
   separated by the mapping's ``csv.separator``; a quote never closed is refused, not read to the end of the
   file);
3. scan every source column except the fingerprinted ones for full card numbers (never echoed), and check
   that the file has every column the mapping reads: missing ones (all of them) stop the import here, with
   the card numbers found, as nothing more can be computed;
4. compute each target field (renames, constants, keyed hashes, value maps, units, currencies, time zones,
   card transforms) with vectorized Arrow and numpy, collecting every bad row;
5. turn label columns into outcome events (disputes or early fraud warnings);
6. validate both tables against the schema, refuse ids already in the workspace, and refuse outcome events
   of charges the workspace does not hold or at or before their charge;
7. write everything in one workspace transaction, after the checks of step 6 ran again under its lock if
   another writer committed since they read the workspace.

This module runs the steps, reads the file and checks its columns; a CSV file is read by
:mod:`payfm.events.import_csv`, the conversions of step 4 are :mod:`payfm.events.import_convert` and
:mod:`payfm.events.import_times`, the outcome events and their checks against the charges
:mod:`payfm.events.import_outcomes`, the checks against the workspace :mod:`payfm.events.import_stored`, and
the collected problems :mod:`payfm.events.import_problems`.

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

import dataclasses
import os
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from payfm.errors import ConfigError
from payfm.events import import_scan
from payfm.events.cards import redact_card_numbers, shown_text
from payfm.events.import_convert import keyed_hash, to_ints, to_strings
from payfm.events.import_csv import check_quotes as _check_quotes  # noqa: F401 - (tests call it from here)
from payfm.events.import_csv import read_csv
from payfm.events.import_format import given_separator
from payfm.events.import_join import check_join, join_columns
from payfm.events.import_outcomes import all_orphans, keep_rows, label_warnings
from payfm.events.import_problems import (
    Problems,
    RowLines,
    closest_column,
    raise_problems,
    repeat_count,
    repeat_filter,
)
from payfm.events.import_scan import hide_card_headers, scan_cards, text_bytes
from payfm.events.import_stored import Checked, check_stored
from payfm.events.import_times import to_times
from payfm.events.mapping import FieldSpec, Mapping, load_mapping
from payfm.events.schema import schema_of
from payfm.events.validate import ValidationError, validate_events
from payfm.events.workspace import Workspace, opened

Progress = Callable[[str], None]
# Text files of separated values, read as CSV: a tab-separated export is often named .tsv or .txt.
_TEXT_SUFFIXES = tuple(f"{kind}{gz}" for kind in (".csv", ".tsv", ".txt") for gz in ("", ".gz"))


@dataclass(frozen=True)
class ImportSummary:
    """What an import wrote: rows per event table, and the source columns that were not stored."""

    source: str
    mapping: str
    rows_read: int
    rows: dict[str, int]
    dropped_columns: tuple[str, ...]  # listed under `drop`: read and scanned, never stored
    unmapped_columns: tuple[str, ...]  # neither used nor dropped: read and scanned, never stored
    # per label: its rows on charges that moved no money, its events after the file's last charge
    labels_without_money: dict[str, int] = dataclasses.field(default_factory=dict)
    labels_after_file: dict[str, int] = dataclasses.field(default_factory=dict)
    last_charge: datetime | None = None
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)  # rows left out, by reason (asked for)
    warnings: tuple[str, ...] = ()  # what was imported may not be what was meant
    not_scanned: tuple[str, ...] = ()  # under no_card_numbers: not scanned, only hashed, compared or dropped
    dry_run: bool = False  # nothing was written: ``rows`` are what an import would write


# ---- reading ---------------------------------------------------------------------------------------------
def read_source(path: Path, *, separator: str = ",") -> tuple[pa.Table, bool]:
    """The file as an Arrow table (plain, undictionaried columns) and whether it is CSV.

    CSV columns are read as text: the mapping says how to parse them, so a card number never turns into a
    float and an id never loses its leading zeros. Only an empty cell is null: ``NA``, ``NULL`` or ``nan``
    is text like any other (a merchant may be called NULL; a label ``N/A`` is a problem, not "no label").
    Column names must be distinct (a ConfigError names the repeated one). A CSV file must be UTF-8 and
    separated by ``separator`` (the mapping's ``csv.separator``: ',', ';', a tab or '|'), with as many cells
    in every row as in its header: a ragged row is a ValidationError naming its row and line and the counts
    (never its text), another encoding a ConfigError saying how to convert the file, a header that seems
    separated by another character one saying how to set the mapping's separator. A quoted value may hold
    line breaks, but a quote that nothing closes, or that only a quote followed by more text closes, on a
    later line or its own (spaces or tabs before the next separator or line break are no more text: Arrow
    reads them into the value; otherwise Arrow would read the lines between into one value, or the value
    without that quote, silently), is a ConfigError naming its row, line and column (never the text).
    """
    table, lines = _read(path, separator)
    return table, lines is not None


def _read(path: Path, separator: str) -> tuple[pa.Table, RowLines | None]:
    """:func:`read_source`'s table, and for a CSV file the line on which each of its rows starts."""
    name = path.name.lower()
    lines = None
    try:
        if name.endswith((".parquet", ".pq")):
            _check_names(pq.read_schema(path).names, path)
            table = pq.read_table(path)
        elif name.endswith(_TEXT_SUFFIXES):  # (read with the mapping's separator, whatever the suffix)
            table, lines = read_csv(path, separator)
        else:
            raise ConfigError(
                f"Import source '{path}': expected a .csv, .csv.gz, .parquet or .pq file (or text separated "
                f"as the mapping says named .tsv, .txt, .tsv.gz or .txt.gz); received '{path.suffix}'."
            )
    except (OSError, EOFError, zlib.error, pa.ArrowInvalid) as e:  # (EOFError, zlib: a .gz cut or corrupt)
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
    for name, col in zip(table.column_names, table.columns, strict=True):
        try:
            columns.append(_plain(col))
        except pa.ArrowInvalid as e:  # (an offset overflow of a column Arrow cannot make one array of)
            raise ConfigError(
                f"Import source '{path}': expected columns Arrow can read as one array; received column "
                f"{redact_card_numbers(repr(name))}, which it cannot ({redact_card_numbers(str(e))}). Split "
                "the file into files of fewer rows and import each."
            ) from None
    return pa.Table.from_arrays(columns, names=table.column_names), lines


def _plain(col: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The column as one array, undictionaried, text as ``string`` (32-bit offsets), as the later steps read
    it; a column of more text than one such array holds (2 GiB, ``import_scan.TEXT_LIMIT``) stays in
    pieces: the card scan reads it piece by piece, and a mapping may not read it (:func:`_refuse_big`)."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if text_bytes(col) > import_scan.TEXT_LIMIT:
        return col
    if pa.types.is_large_string(col.type):
        col = col.cast(pa.string())
    return col.combine_chunks()


def _refuse_big(table: pa.Table, mapping: Mapping, path: str) -> None:
    """A ConfigError for a column the mapping reads that holds more text than one array holds (the steps
    after the scan read a column as one): one to split the file."""
    for name in mapping.source_columns():
        if name in table.column_names and table.column(name).num_chunks > 1:
            size, limit = text_bytes(table.column(name)), import_scan.TEXT_LIMIT
            raise ConfigError(
                f"Import source '{path}': expected a column the mapping reads to hold at most {limit:,} "
                f"bytes of text (2 GiB, what one Arrow array holds); received column "
                f"{redact_card_numbers(repr(name))} holding {size:,} bytes. Split the file into files of "
                "fewer rows and import each (a column the mapping does not read may be larger: it is only "
                "scanned)."
            )


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
    return closest_column(column, present, free)


def _missing_columns(mapping: Mapping, table: pa.Table, files: str) -> list[str]:
    """A message for each source column the mapping reads that is not in the file, or files, ``files``
    (quoted, ``'a.csv' or 'b.csv'``) hold (with a suggestion)."""
    present = table.column_names
    missing = []
    for column in mapping.source_columns():
        if column not in present:
            close = _suggest(column, mapping, present)
            hint = f" (did you mean {close!r}?)" if close else ""
            where = f"{mapping.name}: '{mapping.source_path(column)}'"
            missing.append(
                redact_card_numbers(
                    f"{where}: expected a column of {files}{hint}; "
                    f"received '{column}', which the file does not have."
                )
            )
    return missing


def _join(
    mapping: Mapping, table: pa.Table, source: str, path: Path
) -> tuple[pa.Table, list[str], list[str]]:
    """``table`` with the columns the mapping reads from the second file ``path``, read and scanned for
    card numbers as the imported file is (its own card numbers refused, naming it); a warning when rows
    found no row there; and the second file's columns (for the summary's lists of columns not stored)."""
    assert mapping.join is not None
    second, lines = _read(path, separator=mapping.csv.separator)
    csv_file = lines is not None
    out = Problems(mapping.fields, lines or False)
    second = hide_card_headers(second, csv_file, out)
    scan_cards(mapping, second, out)
    if out.total:
        raise_problems(str(path), out.items, out.total, lines or False)
    _refuse_big(second, mapping, str(path))
    read = mapping.source_columns()
    table, unmatched = join_columns(mapping.join, table, second, read, source, str(path), lines, mapping.name)
    on, shown = mapping.join.column, shown_text(str(path), limit=4096, times=True)
    warnings = [
        f"{unmatched:,} of the {table.num_rows:,} rows found no row of {shown} by {shown_text(on)!r}: the "
        "columns they take from it are empty"
    ]
    return table, warnings if unmatched else [], second.column_names


# ---- field computations ----------------------------------------------------------------------------------
def _fields(mapping: Mapping, table: pa.Table, secret: bytes, out: Problems, is_csv: bool) -> pa.Table:
    """The target table (only the mapped fields; validate_events adds nullable ones as null). Cells that could
    not be computed are reported and null; a field that failed as a whole (a column of the wrong type) is left
    out, so validate_events still checks every other field and row. A problem names the file's column(s) and
    the field (``column 'amt' (amount)``), and a source cell read by several fields is reported once."""
    arrays: dict[str, pa.Array] = {}
    for target, spec in mapping.fields.items():
        out.field, out.spec = target, spec
        required = not schema_of(mapping.table).field(target).nullable
        if spec.target_type == "timestamp":
            result = to_times(spec, table, mapping, out)
        elif spec.target_type == "int":
            result = to_ints(spec, table, mapping.table, out)
        else:
            result = to_strings(spec, table, secret, out, required)
        if result is not None and required:
            _missing_values(spec, result, table, is_csv, out)
        out.field, out.spec = None, None
        if result is None:
            out.failed.add(target)
            continue
        arrays[target] = result
    # (after every field: a problem found by a later field may mark an earlier one's rows, as an amount's
    # currency does the currency field's)
    for target, result in arrays.items():
        if target in out.bad:
            mask = np.zeros(len(result), dtype=bool)
            mask[out.bad[target]] = True
            arrays[target] = pc.if_else(pa.array(mask), pa.scalar(None, result.type), result)
    return pa.table(arrays) if arrays else pa.table({"_": pa.nulls(table.num_rows)}).drop(["_"])


def _missing_values(spec: FieldSpec, result: pa.Array, table: pa.Table, is_csv: bool, out: Problems) -> None:
    """Rows of a required field with no value that no other problem explains (an empty cell, a Parquet
    null or NaN), named by the source column: once per cell, however many required fields read it."""
    if not result.null_count:
        return
    rows = np.flatnonzero(pc.is_null(result).to_numpy(zero_copy_only=False))
    rows = np.setdiff1d(rows, out.bad.get(spec.target, np.zeros(0, dtype=np.int64)))
    if len(rows):
        cells: str | list[str] = out.empty
        if spec.kind == "hash":
            cells = "only empty cells" if is_csv else "only nulls"
        source = table.column(spec.column) if spec.kind == "column" else None
        if source is not None and pa.types.is_floating(source.type):  # (a float NaN is no value either)
            nan = pc.fill_null(pc.is_nan(source.chunk(0)), False).to_numpy(zero_copy_only=False)[rows]
            cells = ["NaN" if n else out.empty for n in nan] if nan.any() else cells
        out.rows(spec.source, rows, "a value (required field)", cells)


def _check_arguments(
    path: object, mapping_path: object, progress: object, join: object, flags: dict[str, object]
) -> None:
    """Each argument of import_file of the kind it takes, else a ConfigError naming it, what it takes and what
    it got (a bare TypeError from deep inside, before)."""
    paths = {
        "path": (path, "the path of a CSV or Parquet file (a str or a pathlib.Path)"),
        "mapping_path": (
            mapping_path,
            "the path of a mapping file or the name of a bundled mapping such as 'sparkov' (a str or a "
            "pathlib.Path)",
        ),
        "join": (join, "None or the path of the second file of a mapping with a join (a str or a Path)"),
    }
    for name, (value, expected) in paths.items():
        if not isinstance(value, str | os.PathLike) and not (name == "join" and value is None):
            hint = ""
            if name == "mapping_path" and isinstance(value, dict):
                hint = " (a mapping's content: write it to a YAML file and pass that file's path)"
            raise ConfigError(f"The '{name}' of import_file must be {expected}. Got {_kind(value)}{hint}.")
    if progress is not None and not callable(progress):
        raise ConfigError(
            f"The 'progress' of import_file must be None or a function taking each step's name. Got "
            f"{_kind(progress)}."
        )
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(f"The '{name}' of import_file must be True or False. Got {_kind(value)}.")


def _with_separator(mapping: Mapping, separator: object) -> Mapping:
    """``mapping`` reading CSV files separated by ``separator`` (import_file's, when given), else a
    ConfigError naming what it takes."""
    if separator is None:
        return mapping
    given = given_separator(separator) if isinstance(separator, str) else None
    if given is None:
        said = repr(separator) if isinstance(separator, str) else _kind(separator)
        raise ConfigError(
            "The 'separator' of import_file must be None or one of ',', ';', '|' and a tab ('\\t' or 'tab': "
            f"`payfm import --separator '\\t'`). Got {redact_card_numbers(said)}."
        )
    return dataclasses.replace(mapping, csv=dataclasses.replace(mapping.csv, separator=given))


def _kind(value: object) -> str:
    """A wrong argument as a message names it: ``None``, ``the int 3``, ``a dict``."""
    if value is None:
        return "None"
    name = type(value).__name__
    if isinstance(value, int | float):
        return f"the {name} {value!r}"
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


# ---- the import ------------------------------------------------------------------------------------------
def import_file(
    ws: Workspace,
    path: str | Path,
    mapping_path: str | Path,
    *,
    progress: Progress | None = None,
    skip_existing: bool = False,
    skip_orphans: bool = False,
    join: str | Path | None = None,
    dry_run: bool = False,
    separator: str | None = None,
    wait_s: float = 60.0,
) -> ImportSummary:
    """Import the CSV or Parquet file ``path`` into ``ws`` through the mapping ``mapping_path`` (a file or the
    name of a bundled mapping such as ``sparkov``). All or nothing: any problem raises and writes nothing.
    ``skip_existing`` leaves out the rows (and the labels' outcomes) whose id the workspace holds,
    ``skip_orphans`` the outcomes whose charge it does not hold, instead of refusing them (counted in
    ``ImportSummary.skipped``); such rows are checked like the others. ``join``: the second file of a
    mapping with a ``join`` (docs/import.md, "Joining a second file"). ``dry_run``: every check runs, the
    summary says what would be written, nothing is (not even the workspace's key: a workspace without one
    is checked with a key of its own, which changes no check's result). ``separator``: the CSV separator of
    this file (and of ``join``'s), instead of the mapping's ``csv.separator`` (``payfm import
    --separator``): a bundled mapping's file exported with another one. ``wait_s``: seconds the write waits
    for the workspace's write lock (another import, a compaction, a server appending an outcome) before
    :class:`~payfm.errors.WorkspaceBusy`; the checks against the workspace then run again if it changed.
    """
    ws, say = opened(ws, "import_file"), progress or (lambda _step: None)
    flags: dict[str, object] = {
        "skip_existing": skip_existing,
        "skip_orphans": skip_orphans,
        "dry_run": dry_run,
    }
    _check_arguments(path, mapping_path, progress, join, flags)
    if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or not 0 <= wait_s < float("inf"):
        raise ConfigError(f"The 'wait_s' of import_file must be seconds, a number >= 0. Got {wait_s!r}.")
    mapping = _with_separator(load_mapping(mapping_path), separator)
    source = str(path)
    say(f"reading {source}")
    table, lines = _read(Path(path), separator=mapping.csv.separator)
    is_csv = lines is not None
    out = Problems(mapping.fields, lines or False)
    say("scanning for card numbers")
    table = hide_card_headers(table, is_csv, out)
    scan_cards(mapping, table, out)
    _refuse_big(table, mapping, source)
    check_join(mapping, join)
    joined: list[str] = []
    columns = list(table.column_names)  # (and the second file's, for the summary)
    blank = _blank_names(columns)
    if mapping.join is not None and join is not None:
        if out.total:  # (the imported file's card numbers first; the second file's once it is clean)
            raise_problems(source, out.items, out.total, lines or False)
        say(f"reading {join}")
        table, joined, second = _join(mapping, table, source, Path(join))
        columns += [c for c in second if c not in columns]
        blank = _blank_names(second) | blank
    files = f"'{source}'" + (f" or '{join}'" if mapping.join is not None else "")
    missing = _missing_columns(mapping, table, files)
    if missing:  # nothing more can be computed: the mapping's mistakes, then the card numbers found, if any
        raise_problems(source, out.items, out.total, lines or False, missing)
    read = [c for c in dict.fromkeys(mapping.source_columns()) if c in table.column_names]
    table = table.select(read)  # (the others were scanned: read no further)
    nested = [c for c in read if pa.types.is_nested(table.schema.field(c).type)]
    for c in nested:  # (Arrow cannot cast a list or struct to text: a traceback, a fuzzer found)
        out.column(
            c, "text, numbers, booleans or times (a nested column cannot be mapped)", f"a {table[c].type}"
        )
    if nested:
        raise_problems(source, out.items, out.total, lines or False)
    rows_read = table.num_rows
    warnings: list[str] = joined
    if mapping.keep_rows:
        table, kept = keep_rows(mapping, table, out)
        warnings = [*joined, *kept]
    warnings = [*warnings, *label_warnings(mapping, table)]
    say("mapping columns")
    # (no key yet: no id of the workspace came from one, so a throwaway key finds the same collisions)
    secret = (
        secrets.token_bytes(32) if dry_run and not (ws.root / "secret.key").exists() else ws.secret(wait_s)
    )
    built = _fields(mapping, table, secret, out, is_csv)
    say("validating")
    try:
        charges = validate_events(mapping.table, built, source=source)
    except ValidationError as e:
        charges = built
        repeats = repeat_filter(out)
        out.absorb(e, repeats=repeats, repeated=repeat_count(mapping.table, built, out))

    def check_workspace(problems: Problems) -> Checked:
        return check_stored(
            ws,
            mapping,
            table,
            charges,
            secret,
            problems,
            source=source,
            skip_existing=skip_existing,
            skip_orphans=skip_orphans,
        )

    before = out.snapshot()  # (the checks against the workspace may run again, from here)
    checked = check_workspace(out)
    if out.total:
        raise_problems(source, out.items, out.total, lines or False)
    written = _written(mapping, charges, checked)
    if not dry_run:
        say("writing")
        with ws.writer("append", wait_s, validate=False) as w:  # (validated above)
            if int(ws.manifest()["version"]) != checked.version:
                # Another writer committed since the checks read the workspace (an import of the same file
                # at the same time): they run again, under the lock, against what this write follows.
                checked = check_workspace(before)
                if before.total:
                    raise_problems(source, before.items, before.total, lines or False)
                written = _written(mapping, charges, checked)
            for name, events in written.items():
                w.write(name, events)
    skipped = {"not_kept": rows_read - table.num_rows} if mapping.keep_rows else {}
    skipped |= {"existing": int(checked.held.sum())} if skip_existing else {}
    skipped |= {"orphans": int(checked.orphans.sum())} if skip_orphans and mapping.table != "charges" else {}
    warnings = [*warnings, *checked.warnings]
    if skip_orphans and charges.num_rows and checked.orphans.all():  # (were the charges imported first?)
        warnings.append(all_orphans(charges.num_rows))
    used, declared = set(mapping.source_columns()), set(mapping.no_card_numbers)
    used |= {mapping.join.key} if mapping.join is not None else set()
    dropped, unscanned = (tuple(c for c in columns if c in s) for s in (mapping.drop, declared))
    unmapped = tuple(blank.get(c, c) for c in columns if c not in used | declared and c not in mapping.drop)
    return ImportSummary(
        source,
        mapping.name,
        rows_read,
        {name: events.num_rows for name, events in written.items()},
        dropped,
        unmapped,
        checked.counts.without_money,
        checked.counts.after_file,
        checked.counts.last_charge,
        skipped,
        tuple(warnings),
        unscanned,
        dry_run,
    )


def _blank_names(columns: list[str]) -> dict[str, str]:
    """How the summary names each column of ``columns`` whose name is empty or blank (a trailing separator
    at the end of a header line): ``(empty name, column 9)``, by its position in its file."""
    return {
        c: ("(empty name" if not c else f"({c!r}, a blank name") + f", column {i + 1})"
        for i, c in enumerate(columns)
        if not c.strip()
    }


def _written(mapping: Mapping, charges: pa.Table, checked: Checked) -> dict[str, pa.Table]:
    """What an import writes, by table: the file's rows less those left out, and its labels' outcomes."""
    kept = charges.filter(pa.array(~(checked.held | checked.orphans)))
    return {mapping.table: kept} | checked.outcomes


__all__ = ["ImportSummary", "import_file", "keyed_hash", "read_source"]
