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

import bisect
import csv
import dataclasses
import functools
import gzip
import re
import secrets
import shlex
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, NamedTuple, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from payfm.errors import ConfigError
from payfm.events.cards import (
    redact_card_numbers,
    shown_text,
)
from payfm.events.import_convert import keyed_hash, to_ints, to_strings
from payfm.events.import_format import SEPARATORS, open_binary, open_stream, yaml_separator
from payfm.events.import_join import check_join, join_columns
from payfm.events.import_outcomes import (
    OUTCOME_ID,
    LabelCounts,
    all_orphans,
    follow_charges,
    keep_rows,
    outcome_events,
)
from payfm.events.import_problems import (
    KEEP,
    Problems,
    closest_column,
    raise_problems,
    repeat_count,
    repeat_filter,
    values_at,
)
from payfm.events.import_scan import hide_card_headers, scan_cards
from payfm.events.import_times import to_times
from payfm.events.mapping import FieldSpec, Mapping, load_mapping
from payfm.events.schema import ID_COLUMNS, schema_of
from payfm.events.validate import Problem, ValidationError, validate_events
from payfm.events.workspace import Workspace, opened

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
    line breaks, but a quote that nothing closes, or that only a quote on a later line followed by more text
    closes (spaces or tabs before the next separator or line break are no more text: Arrow reads them into
    the value; otherwise Arrow would read the lines between into one value, silently), is a ConfigError
    naming its row, line and column (never the text).
    """
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            _check_names(pq.read_schema(path).names, path)
            table = pq.read_table(path)
            is_csv = False
        elif name.endswith((".csv", ".csv.gz")):
            table = _read_csv(path, separator)
            is_csv = True
        else:
            raise ConfigError(
                f"Import source '{path}': expected a .csv, .csv.gz, .parquet or .pq file; "
                f"received '{path.suffix}'."
            )
    except (OSError, EOFError, zlib.error, pa.ArrowInvalid) as e:  # (EOFError, zlib: a .gz cut or corrupt)
        # A parser's message may quote a row: never echo it (the first ': ' of a CSV parse error ends what
        # is said about the row), nor a card number from any other message.
        text = str(e)
        if text.startswith("CSV parse error:"):
            text = text.split(": ", 2)[1] if text.count(": ") >= 2 else "CSV parse error"
        elif "straddles two block boundaries" in text:  # (Arrow's advice names a size no one can set)
            text = "a line longer than 1 MiB, Arrow's CSV block: a value of megabytes; keep values shorter"
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


def _read_csv(path: Path, separator: str) -> pa.Table:
    """A UTF-8 file separated by ``separator``, with a header line, every column as text (see
    :func:`read_source`)."""
    with open_binary(path) as f:
        start = f.read(4)
    if start.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _not_utf8(path, "UTF-16 text (it starts with a UTF-16 byte-order mark)", "UTF-16")
    _check_not_binary(path, start)
    header = _read_header(path, separator)
    if len(header) == 1:
        _check_separator(header[0], path, separator)
    invalid: list[tuple[int, int, int | None]] = []  # (expected, received) cell counts, physical row

    def handle(row: pacsv.InvalidRow) -> str:
        invalid.append((row.expected_columns, row.actual_columns, row.number))
        return "skip"  # all of them are counted; none is imported (the whole file is refused below)

    convert = pacsv.ConvertOptions(
        column_types={h: pa.string() for h in header}, null_values=[""], strings_can_be_null=True
    )
    # newlines_in_values: Arrow cuts the file into blocks at line breaks outside quoted values (without it at
    # any line break: a quoted one at a block's end made a ragged row, an unclosed quote lost rows silently)
    parse = pacsv.ParseOptions(delimiter=separator, invalid_row_handler=handle, newlines_in_values=True)
    try:
        with open_stream(path) as raw:
            stream = _Counted(raw)
            table = pacsv.read_csv(stream, parse_options=parse, convert_options=convert)
        if invalid and any(number is None for _e, _r, number in invalid):
            # Arrow numbers the rows only when it parses in one thread: read again, on this error path only.
            invalid.clear()
            pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(use_threads=False),
                parse_options=parse,
                convert_options=convert,
            )
    except pa.ArrowInvalid as e:
        if "invalid UTF8" in str(e):
            raise _encoding_error(path, separator) from None
        _check_quotes(path, header, separator)  # a quote never closed makes a row longer than Arrow's blocks
        raise
    # A quote never closed reads the lines after it into its value, silently, up to a quote opening another
    # value or to the end of the file: fewer rows than lines, or the file ends with that value. Only then (or
    # with quoted line breaks, blank lines, ragged rows) is the whole file read again, to say where.
    if invalid or table.num_rows + 1 != stream.lines() or _may_end_in_quote(table, stream.tail, separator):
        _check_quotes(path, header, separator)
    if invalid:
        _raise_ragged(path, invalid, separator)
    return table


class _Counted:
    """A binary stream as Arrow reads it through: its line breaks counted (CR LF, LF or CR, as Arrow ends
    rows) and its last 64 KiB kept, for the checks of quotes at no second reading."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.tail, self.closed, self.breaks = raw, b"", False, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        # (a CR LF split between two reads: its CR was counted as a line break, its LF is not)
        self.breaks += data.count(b"\n") - (data[:1] == b"\n" and self.tail[-1:] == b"\r")
        if b"\r" in data:  # (a CR alone ends a row too; counting CR LF costs three times as long)
            self.breaks += data.count(b"\r") - data.count(b"\r\n")
        self.tail = (self.tail + data)[-(1 << 16) :]
        return data

    def lines(self) -> int:
        """Lines read: line breaks, and a last line without one."""
        return self.breaks + (self.tail[-1:] not in (b"\n", b"\r", b""))

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def _may_end_in_quote(table: pa.Table, tail: bytes, separator: str) -> bool:
    """Whether the file may end inside a quoted value on its last line: Arrow reads the rest of the file into
    that value, the last it parses, so the file ends with a quote where a value may start and that value,
    its quotes doubled (``tail``: the file's last bytes)."""
    if table.num_rows == 0 or table.num_columns == 0:
        return True  # (the header's last name: the file is one line, read again at no cost)
    value = table.column(table.num_columns - 1)[table.num_rows - 1].as_py()
    end = b'"' + (value or "").encode().replace(b'"', b'""')
    if len(end) >= len(tail) >= 1 << 16:
        return True  # (more than was kept: cannot tell)
    # (the byte before a value's opening quote: the separator or a line break, or none at the file's start)
    before = separator.encode() + b"\r\n\xbf"
    return tail.endswith(end) and (len(tail) == len(end) or tail[-len(end) - 1] in before)


class _QuotePatterns(NamedTuple):
    """The regular expressions of the quote checks for one separator (:func:`_quote_patterns`)."""

    first_unclosed: re.Pattern[bytes]
    next_spread: re.Pattern[bytes]
    quoted: re.Pattern[bytes]


@functools.cache
def _quote_patterns(separator: str) -> _QuotePatterns:
    """The quote checks' expressions for files separated by ``separator`` (',', ';', a tab or '|')."""
    sep = re.escape(separator.encode())
    # Where a quoted value may start: at the file's start (after its byte-order mark, if any), after the
    # separator or a line break. A quote anywhere else is read as is, inside an unquoted value (5" screen).
    at_start = rb"(?:(?<=[" + sep + rb"\r\n])|\A|(?<=\A\xef\xbb\xbf))"
    mid_quote = rb"(?<=[^" + sep + rb'\r\n])(?<!\A\xef\xbb\xbf)"'
    # Spaces or tabs after a closing quote, before the separator (Arrow reads them into the value): no more
    # text. A tab that is the separator is not among them.
    blank = rb"[ ]" if separator == "\t" else rb"[ \t]"
    # A quoted value from its opening quote, as Arrow's parser reads it: closed on its line (what follows the
    # closing quote is added to the value, on that line), or holding line breaks and closed by a quote that
    # ends the value (spaces or tabs, then the separator, a line break or the end of the file), its quotes
    # doubled inside. Loops unrolled (a run of bytes, then each doubled quote and a run) and possessive:
    # linear, no backtracking.
    one_line = rb'"[^"\r\n]*+(?:""[^"\r\n]*+)*+"'
    closed = (
        rb'"[^"\r\n]*+(?:""[^"\r\n]*+)*+(?:"|[^"]*+(?:""[^"]*+)*+"(?='
        + blank
        + rb"*+(?:["
        + sep
        + rb"\r\n]|\Z)))"
    )
    to_closing = rb'"[^"]*+(?:""[^"]*+)*+'  # (up to the quote closing it, if any)
    after = rb"(?<=[" + sep + rb"\r\n])"
    return _QuotePatterns(
        # The first quoted value that is not closed so (its opening quote 'open', the quote closing it
        # 'close': none if nothing does), everything before it skipped in one match; no match if there is
        # none. One pass over the file, a few passes over that value: linear, even on a file made of quotes
        # and line breaks.
        re.compile(
            rb"(?:\xef\xbb\xbf)?+(?:" + closed + rb")?+"
            rb'(?:[^"]*+(?:' + after + closed + rb"|" + mid_quote + rb"))*+[^\"]*+"
            rb"(?P<open>" + at_start + rb")" + to_closing + rb'(?P<close>")?'
        ),
        # The next quoted value holding a line break (matched from a value's start, up to a quote that
        # nothing closes)
        re.compile(
            rb"(?:\A(?:\xef\xbb\xbf)?+" + one_line + rb")?+"
            rb'(?:[^"]*+(?:' + after + one_line + rb"|" + mid_quote + rb"))*+[^\"]*+"
            rb"(?P<open>" + at_start + rb")" + to_closing + rb'"'
        ),
        re.compile(at_start + to_closing + rb'"?'),  # (a quoted value; not closed: to the end)
    )


# A line break that another follows: a blank line after it (Arrow skips blank lines: no row). Starting with a
# line break, not a lookbehind, the search skips to the next one at the speed of a byte scan.
_BEFORE_BLANK = re.compile(rb"(?:\n|\r(?!\n))(?=[\r\n])")


def _read_header(path: Path, separator: str) -> list[str]:
    """The names in the file's header line (read as Python's csv module reads it)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as lines:
            return next(csv.reader(lines, delimiter=separator), [])
    except UnicodeDecodeError:
        raise _encoding_error(path, separator) from None
    except csv.Error as e:
        reason = str(e)  # (a value over the csv module's limit of 128 KiB: a quote never closed, read on)
    _check_quotes(path, [], separator)
    raise ConfigError(
        f"Import source '{path}': expected a header line of column names; received a header that cannot be "
        f"read ({reason}): a name over 128 KiB, or a quoted name running over many lines?"
    )


def _check_quotes(path: Path, header: list[str], separator: str = ",") -> None:
    """A ConfigError naming the row, line and column of a quote that nothing closes, or that only a quote on a
    later line followed by more text closes (a quote opening another value, read as this one's end: the
    lines between vanish into one value), never the text. Lines read into a quoted value are legitimate only
    if its closing quote ends the value (spaces or tabs, then the ``separator``, a line break or the end of
    the file)."""
    with open_binary(path) as f:
        data = f.read()
    m = _quote_patterns(separator).first_unclosed.match(data)
    if m is not None:
        closing = m.end() if m.start("close") >= 0 else None
        _raise_unclosed(path, header, data, m.start("open"), closing, separator)


def _breaks(data: bytes, start: int = 0, end: int | None = None) -> int:
    """Line breaks in ``data[start:end]`` (CR LF, LF or CR, as Arrow ends rows), with no copy."""
    return data.count(b"\n", start, end) + data.count(b"\r", start, end) - data.count(b"\r\n", start, end)


def _cells(row: bytes, separator: str) -> int:
    """The cells of a row (or of its start): one, and one more for each ``separator`` outside quoted values
    (counted without the csv module, whose cells stop at 128 KiB)."""
    return _quote_patterns(separator).quoted.sub(b"", row).count(separator.encode()) + 1


def _raise_unclosed(
    path: Path, header: list[str], data: bytes, opening: int, closing: int | None, separator: str
) -> NoReturn:
    """The error for the quote at ``opening``, closed at ``closing`` by a quote followed by more text (None:
    at the end of the file). Its row is its line less the header, the blank lines and the line breaks inside
    the quoted values before it (all closed); its column, the separators outside quoted values on its row."""
    spread: list[tuple[int, int]] = []  # the quoted values holding line breaks before it, starts and ends
    position = 0
    next_spread = _quote_patterns(separator).next_spread
    while (m := next_spread.match(data, position, opening)) is not None:
        spread.append((m.start("open"), m.end()))
        position = m.end()
    starts = [a for a, _b in spread]

    def inside(position: int) -> tuple[int, int] | None:
        """The multi-line quoted value holding ``position`` (past its opening quote), if any."""
        i = bisect.bisect_left(starts, position) - 1
        return spread[i] if i >= 0 and position < spread[i][1] else None

    line = _breaks(data, 0, opening) + 1
    first = 3 if data.startswith(b"\xef\xbb\xbf") else 0  # (a blank first line, then the others)
    blank = int(data[first : first + 1] in (b"\r", b"\n"))
    blank += sum(inside(m.end()) is None for m in _BEFORE_BLANK.finditer(data, 0, opening))
    row = line - 1 - blank - sum(_breaks(data, a, b) for a, b in spread)
    start = opening  # the row's first byte: after the last line break outside a quoted value
    while True:
        start = max(data.rfind(b"\n", 0, start), data.rfind(b"\r", 0, start)) + 1
        value = inside(start)
        if value is None:
            break
        start = value[0]
    column = _cells(data[start:opening], separator)
    if row == 0:
        where = f"line 1 (the header), column {column}"
    else:
        name = header[column - 1] if column <= len(header) else column
        where = f"row {row} (line {line}), column {redact_card_numbers(repr(name))}"
    if closing is None:
        last = line + _breaks(data, opening) - data.endswith((b"\n", b"\r"))
        said, lines = "that nothing closes", "the rest of the file"
    else:
        last = line + _breaks(data, opening, closing)
        said = (
            f"that only a quote on line {last} closes, followed by more text (a quote opening another value?)"
        )
        lines = "the lines between"
    span = f"line {line}" if last <= line else f"lines {line}-{last}"
    raise ConfigError(
        f"Import source '{path}': expected a closing double quote for every quoted value; received a quote "
        f"opening a value at {where} {said}: {lines} ({span}) would be read as that one value. Close the "
        'quote, write a quote inside a quoted value twice (""), or leave the value unquoted.'
    )


def _raise_ragged(path: Path, invalid: list[tuple[int, int, int | None]], separator: str) -> NoReturn:
    """Rows with another number of cells than the header, by row and line, never their text."""
    problems: list[Problem] = []
    word = SEPARATORS[separator]
    for expected, received, number in invalid[:KEEP]:
        # Arrow's row number counts the header as 1: data row number - 1, on line number (no quoted breaks).
        row = None if number is None else number - 1
        problems.append(
            Problem(
                None,
                row,
                f"{expected} cells, as many as the header has columns (a missing or extra {word}, or a "
                f"{word} inside an unquoted value?)",
                f"{received} cells",
            )
        )
    raise_problems(str(path), problems, len(invalid), csv_file=True)


def _check_separator(name: str, path: Path, separator: str) -> None:
    """A header of one column holding another separator (',', ';', a tab or '|': the one it holds most) is a
    file separated by that, not by the mapping's ``separator``: a ConfigError saying how to set it."""
    counts = {other: name.count(other) for other in SEPARATORS if other != separator}
    other = max(counts, key=lambda o: counts[o])  # (the first of the most frequent)
    if not counts[other]:
        return
    shown = "tabs" if other == "\t" else f"'{other}'"
    said = yaml_separator(separator)
    setting = "" if separator == "," else f" (the mapping's `csv: {{separator: {said}}}`)"
    default = " (or leave it out: ',' is the default)" if other == "," else ""
    raise ConfigError(
        f"Import source '{path}': expected {SEPARATORS[separator]}-separated columns{setting}; received a "
        f"header of one column holding {shown} {counts[other]} time(s): the file seems separated by {shown}. "
        f"Set the mapping's separator to it: `csv: {{separator: {yaml_separator(other)}}}`{default}."
    )


# Files that are no text at all, by their first bytes (magic numbers): named as what they are, not as text in
# another encoding (a Parquet file named .csv got the advice to convert it from Windows-1252).
_NOT_CSV = (
    (b"PAR1", "a Parquet file (it starts with the Parquet magic bytes PAR1)", ".parquet"),
    (b"\x1f\x8b", "a gzip-compressed file (it starts with the gzip magic bytes 1f 8b)", ".csv.gz"),
    (b"PK\x03\x04", "a ZIP archive (it starts with the bytes PK; an Excel .xlsx workbook is one)", None),
)


def _check_not_binary(path: Path, start: bytes) -> None:
    """A ConfigError for a file named .csv (or .csv.gz) that is a Parquet file, a gzip file or a ZIP archive
    (``start``: its first bytes, decompressed for .csv.gz), saying what it is and how to import it."""
    gz = path.name.lower().endswith(".gz")
    for magic, what, suffix in _NOT_CSV:
        if not start.startswith(magic) or (gz and suffix == ".csv.gz"):
            continue  # (a .csv.gz compressed twice: the encoding error names its first byte)
        if suffix is None:
            how = "Export the sheet as CSV (UTF-8, comma-separated) and import that file."
        else:
            stem = path.name[: -len(".csv.gz")] if path.name.lower().endswith(".csv.gz") else path.stem
            renamed = path.with_name(stem + suffix)
            # quoted for a POSIX shell (a name may hold quotes, $( ) or ;), then shown escaped
            old, new = shlex.quote(str(path)), shlex.quote(str(renamed))
            command = f"gunzip -c {old} > {new}" if gz else f"mv {old} {new}"
            how = (
                f"Decompress it and name it {suffix}, e.g. `{shown_text(command, 400)}`."
                if gz
                else f"Name it {suffix}, e.g. `{shown_text(command, 400)}`, and import it again."
            )
        shown = shown_text(str(path))
        expected = "expected a CSV file (UTF-8 text)"
        raise ConfigError(f"Import source '{shown}': {expected}; received {what}. {how}")


def _not_utf8(path: Path, received: str, encoding: str) -> ConfigError:
    return ConfigError(
        f"Import source '{path}': expected UTF-8 text; received {received}. Convert it to UTF-8 and import "
        f"the copy, e.g. `iconv -f {encoding} -t UTF-8 '{path}' > '{path.with_suffix('')}.utf8.csv'`."
    )


def _encoding_error(path: Path, separator: str) -> ConfigError:
    """The first byte that is not UTF-8, by row, line and column (read line by line: on this error path
    only), and how to convert the file."""
    with open_binary(path) as f:
        names: list[str] = []
        for line_number, line in enumerate(f, 1):
            try:
                text = line.decode("utf-8-sig" if line_number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                # Latin-1 maps each byte to one character: the cells before the bad byte, whatever they hold.
                column = _cells(line[: e.start], separator) - 1
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
                try:
                    names = next(csv.reader([text], delimiter=separator), [])
                except csv.Error:  # (a name over 128 KiB: columns are named by number)
                    names = []
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
    second, csv_file = read_source(path, separator=mapping.csv.separator)
    out = Problems(mapping.fields, csv_file)
    second = hide_card_headers(second, csv_file, out)
    scan_cards(mapping, second, out)
    if out.total:
        raise_problems(str(path), out.items, out.total, csv_file)
    read = mapping.source_columns()
    table, unmatched = join_columns(
        mapping.join, table, second, read, source, str(path), csv_file, mapping.name
    )
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
            _missing_values(spec, result, is_csv, out)
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


def _missing_values(spec: FieldSpec, result: pa.Array, is_csv: bool, out: Problems) -> None:
    """Rows of a required field with no value that no other problem explains (an empty cell, a Parquet
    null), named by the source column: once per cell, however many required fields read it."""
    if not result.null_count:
        return
    rows = np.flatnonzero(pc.is_null(result).to_numpy(zero_copy_only=False))
    rows = np.setdiff1d(rows, out.bad.get(spec.target, np.zeros(0, dtype=np.int64)))
    if len(rows):
        cells = out.empty
        if spec.kind == "hash":
            cells = "only empty cells" if is_csv else "only nulls"
        out.rows(spec.source, rows, "a value (required field)", cells)


def _existing(
    ws: Workspace,
    table_name: str,
    table: pa.Table,
    id_column: str,
    out: Problems,
    rows: np.ndarray | None = None,
    skip: bool = False,
) -> np.ndarray:
    """Ids already stored in the workspace cannot be imported again (events are immutable); ``rows`` maps the
    rows of a derived table (outcome events) back to the file's rows. With ``skip`` (``--skip-existing``)
    they are no problem: the rows to leave out are returned (a mask; none otherwise)."""
    held = np.zeros(table.num_rows, dtype=bool)
    if id_column not in table.column_names:
        return held
    stored = ws.read(table_name, columns=[id_column]).column(id_column)
    if len(stored) == 0:
        return held
    ids = table.column(id_column).combine_chunks()
    bad = np.flatnonzero(pc.is_in(ids, value_set=stored.combine_chunks().cast(ids.type)).to_numpy(False))
    if len(bad) and skip:
        held[bad] = True
    elif len(bad):
        spec = out.fields.get(id_column) if rows is None else None
        out.rows(
            id_column,
            bad if rows is None else rows[bad],
            f"an id not already in the workspace's '{table_name}' (was this file imported before? "
            "--skip-existing leaves such rows out)",
            values_at(ids, bad),
            where=spec.where if spec is not None else None,
        )
    return held


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
) -> ImportSummary:
    """Import the CSV or Parquet file ``path`` into ``ws`` through the mapping ``mapping_path`` (a file or the
    name of a bundled mapping such as ``sparkov``). All or nothing: any problem raises and writes nothing.
    ``skip_existing`` leaves out the rows (and the labels' outcomes) whose id the workspace holds,
    ``skip_orphans`` the outcomes whose charge it does not hold, instead of refusing them (counted in
    ``ImportSummary.skipped``); such rows are checked like the others. ``join``: the second file of a
    mapping with a ``join`` (docs/import.md, "Joining a second file"). ``dry_run``: every check runs, the
    summary says what would be written, nothing is (not even the workspace's key: a workspace without one
    is checked with a key of its own, which changes no check's result).
    """
    ws, say = opened(ws, "import_file"), progress or (lambda _step: None)
    mapping = load_mapping(mapping_path)
    source = str(path)
    say(f"reading {source}")
    table, is_csv = read_source(Path(path), separator=mapping.csv.separator)
    out = Problems(mapping.fields, is_csv)
    say("scanning for card numbers")
    table = hide_card_headers(table, is_csv, out)
    scan_cards(mapping, table, out)
    check_join(mapping, join)
    joined: list[str] = []
    columns = list(table.column_names)  # (and the second file's, for the summary)
    if mapping.join is not None and join is not None:
        if out.total:  # (the imported file's card numbers first; the second file's once it is clean)
            raise_problems(source, out.items, out.total, is_csv)
        say(f"reading {join}")
        table, joined, second = _join(mapping, table, source, Path(join))
        columns += [c for c in second if c not in columns]
    files = f"'{source}'" + (f" or '{join}'" if mapping.join is not None else "")
    missing = _missing_columns(mapping, table, files)
    if missing:  # nothing more can be computed: the mapping's mistakes, then the card numbers found, if any
        raise_problems(source, out.items, out.total, is_csv, missing)
    read = [c for c in dict.fromkeys(mapping.source_columns()) if c in table.column_names]
    nested = [c for c in read if pa.types.is_nested(table.schema.field(c).type)]
    for c in nested:  # (Arrow cannot cast a list or struct to text: a traceback, a fuzzer found)
        out.column(
            c, "text, numbers, booleans or times (a nested column cannot be mapped)", f"a {table[c].type}"
        )
    if nested:
        raise_problems(source, out.items, out.total, is_csv)
    rows_read = table.num_rows
    warnings: list[str] = joined
    if mapping.keep_rows:
        table, kept = keep_rows(mapping, table, out)
        warnings = [*joined, *kept]
    say("mapping columns")
    # (no key yet: no id of the workspace came from one, so a throwaway key finds the same collisions)
    secret = secrets.token_bytes(32) if dry_run and not (ws.root / "secret.key").exists() else ws.secret()
    built = _fields(mapping, table, secret, out, is_csv)
    say("validating")
    try:
        charges = validate_events(mapping.table, built, source=source)
    except ValidationError as e:
        charges = built
        repeats = repeat_filter(out)
        out.absorb(e, repeats=repeats, repeated=repeat_count(mapping.table, built, out))
    id_column = ID_COLUMNS[mapping.table]
    held = _existing(ws, mapping.table, charges, id_column, out, skip=skip_existing)
    orphans = np.zeros(charges.num_rows, dtype=bool)
    if mapping.table != "charges":
        orphans = follow_charges(ws, mapping, charges, out, held, skip_orphans)
    outcomes: dict[str, pa.Table] = {}
    counts = LabelCounts()  # (the labels of every row: a row left out may bring a new label of its charge)
    for name, (events, rows) in outcome_events(mapping, table, charges, secret, out, counts).items():
        try:
            outcomes[name] = validate_events(name, events, source=source)
        except ValidationError as e:
            out.absorb(e, rows)
            continue
        stored = _existing(ws, name, outcomes[name], OUTCOME_ID[name], out, rows, skip=skip_existing)
        outcomes[name] = outcomes[name].filter(pa.array(~stored))
    counts.keep_written(outcomes)  # the late outcomes said are those written (--skip-existing)
    if out.total:
        raise_problems(source, out.items, out.total, is_csv)
    skipped = {"not_kept": rows_read - table.num_rows} if mapping.keep_rows else {}
    skipped |= {"existing": int(held.sum())} if skip_existing else {}
    skipped |= {"orphans": int(orphans.sum())} if skip_orphans and mapping.table != "charges" else {}
    if skip_orphans and charges.num_rows and orphans.all():  # (were the charges imported first?)
        warnings.append(all_orphans(charges.num_rows))
    charges = charges.filter(pa.array(~(held | orphans)))
    if not dry_run:
        say("writing")
        with ws.writer("append", validate=False) as w:  # (validated above)
            w.write(mapping.table, charges)
            for name, events in outcomes.items():
                w.write(name, events)
    rows_written = {mapping.table: charges.num_rows} | {name: t.num_rows for name, t in outcomes.items()}
    used, declared = set(mapping.source_columns()), set(mapping.no_card_numbers)
    used |= {mapping.join.key} if mapping.join is not None else set()
    dropped, unscanned = (tuple(c for c in columns if c in s) for s in (mapping.drop, declared))
    unmapped = tuple(c for c in columns if c not in used | declared and c not in mapping.drop)
    return ImportSummary(
        source,
        mapping.name,
        rows_read,
        rows_written,
        dropped,
        unmapped,
        counts.without_money,
        counts.after_file,
        counts.last_charge,
        skipped,
        tuple(warnings),
        unscanned,
        dry_run,
    )


__all__ = ["ImportSummary", "import_file", "keyed_hash", "read_source"]
