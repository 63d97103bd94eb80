"""Reading a CSV file as Arrow text columns, and the checks of its form (see docs/import.md).

Every column is read as text (the mapping says how to parse it), separated by the mapping's
``csv.separator``. A file that is no text (Parquet, gzip, ZIP), in another encoding, with a header of one
column holding another separator, with a quote that nothing closes, or with rows of another number of cells
than the header is refused, naming where, never a row's text. :class:`RowLines` says on which line each row
starts, for the messages of the later steps.
"""

from __future__ import annotations

import bisect
import csv
import functools
import gzip
import re
import shlex
from pathlib import Path
from typing import BinaryIO, NamedTuple, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from payfm.errors import ConfigError
from payfm.events.cards import redact_card_numbers, shown_text
from payfm.events.import_format import (
    SEPARATORS,
    cli_separator,
    open_binary,
    open_stream,
    yaml_separator,
)
from payfm.events.import_problems import KEEP, RowLines, raise_problems
from payfm.events.validate import Problem

BLOCK_SIZES = (1 << 20, 64 << 20, 512 << 20)  # Arrow's default, then larger for a row it does not hold


def read_csv(path: Path, separator: str) -> tuple[pa.Table, RowLines]:
    """A UTF-8 file separated by ``separator``, with a header line, every column as text (see
    :func:`payfm.events.importer.read_source`), and the line on which each of its rows starts."""
    with open_binary(path) as f:
        start = f.read(4)
    if start.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _not_utf8(path, "UTF-16 text (it starts with a UTF-16 byte-order mark)", "UTF-16")
    _check_not_binary(path, start)
    skip = _separator_line(path, separator)  # (Excel's `sep=;` line before the header: 1)
    header = _read_header(path, separator, skip)
    if not header:  # (said here, not by Arrow: its reader on a stream may abort the process after the error)
        raise ConfigError(
            f"Import source '{path}': expected a header line of column names on line {skip + 1}; received "
            f"{_what_blank_holds(path)}."
        )
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
    # Arrow parses the file in blocks, and a row longer than two of them is an error: one value of megabytes
    # (a gateway's raw JSON in a column the mapping drops) is read again with larger blocks.
    for block in BLOCK_SIZES:
        try:
            with open_stream(path) as raw:
                stream = _Counted(raw)
                table = pacsv.read_csv(
                    stream,
                    read_options=pacsv.ReadOptions(skip_rows=skip, block_size=block),
                    parse_options=parse,
                    convert_options=convert,
                )
            if invalid and any(number is None for _e, _r, number in invalid):
                # Arrow numbers the rows only when it parses in one thread: read again, on this error path.
                invalid.clear()
                pacsv.read_csv(
                    path,
                    read_options=pacsv.ReadOptions(use_threads=False, skip_rows=skip, block_size=block),
                    parse_options=parse,
                    convert_options=convert,
                )
            break
        except pa.ArrowInvalid as e:
            if "invalid UTF8" in str(e):
                raise _encoding_error(path, separator, skip) from None
            check_quotes(
                path, header, separator, skip
            )  # a quote never closed makes a row longer than a block
            if "Empty CSV file or block" in str(e) and header and stream.breaks <= skip:
                # A header line without a line break after it: Arrow finds no row to count the columns by.
                return pa.table({h: pa.array([], pa.string()) for h in header}), RowLines(offset=skip)
            if "straddles two block boundaries" not in str(e):
                raise
            if block == BLOCK_SIZES[-1]:
                raise ConfigError(
                    f"Import source '{path}': expected lines Arrow's largest CSV block ({block >> 20} MiB) "
                    "holds; received a longer one: a value of that size. Shorten it before the import."
                ) from None
            invalid.clear()
    # A quote never closed reads the lines after it into its value, silently, up to a quote opening another
    # value or to the end of the file: fewer rows than lines, or the file ends with that value. Only then (or
    # with quoted line breaks, blank lines, ragged rows) is the whole file read again, to say where.
    # A quoted value closed by a quote that more text follows is read changed, silently, on one line too:
    # any file holding a quote is read again for it (1.2 s more on a 166 MB CSV, BENCHMARKS.md).
    every_line_a_row = table.num_rows + 1 + skip == stream.lines()
    if invalid or not every_line_a_row or stream.quoted:
        check_quotes(path, header, separator, skip)
    # Row n is on line n + 1 (+ 1 after a `sep=` line) when every line is a row; else the file is read
    # again for the lines, when a message first names one.
    find = functools.partial(_row_lines, path, separator, skip)
    lines = RowLines(offset=skip) if every_line_a_row else RowLines(find)
    if invalid:
        _raise_ragged(path, invalid, lines, separator, skip)
    return table, lines


class _Counted:
    """A binary stream as Arrow reads it through: its line breaks counted (CR LF, LF or CR, as Arrow ends
    rows) and its last 64 KiB kept, for the checks of quotes at no second reading."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.tail, self.closed, self.breaks, self.quoted = raw, b"", False, 0, False

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        # (a CR LF split between two reads: its CR was counted as a line break, its LF is not)
        self.breaks += data.count(b"\n") - (data[:1] == b"\n" and self.tail[-1:] == b"\r")
        if b"\r" in data:  # (a CR alone ends a row too; counting CR LF costs three times as long)
            self.breaks += data.count(b"\r") - data.count(b"\r\n")
        self.quoted = self.quoted or b'"' in data
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
    # A quoted value from its opening quote, as Arrow's parser reads it, its quotes doubled inside, closed by
    # a quote that ends the value (spaces or tabs, then the separator, a line break or the end of the file),
    # on its line or after line breaks. A closing quote followed by more text is refused: Arrow adds that
    # text to the value, dropping the quote (`"Joe"s Diner"` is read `Joes Diner"`), silently. Loops
    # unrolled (a run of bytes, then each doubled quote and a run) and possessive: linear, no backtracking.
    one_line = rb'"[^"\r\n]*+(?:""[^"\r\n]*+)*+"'
    closed = rb'"[^"]*+(?:""[^"]*+)*+"(?=' + blank + rb"*+(?:[" + sep + rb"\r\n]|\Z))"
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


# Excel's first line naming the file's separator (`sep=;`, which Excel writes and reads): no header.
_SEP_LINE = re.compile(rb'(?i)(?:\xef\xbb\xbf)?("?)sep=([^\r\n])\1(?:\r\n|\n|\r)')


def _separator_line(path: Path, separator: str) -> int:
    """1 when the file starts with Excel's separator line (``sep=;``) naming ``separator``: the header is
    the line after it; 0 without one. One naming another separator is a ConfigError saying how to set it."""
    with open_binary(path) as f:
        m = _SEP_LINE.match(f.read(16))
    if m is None:
        return 0
    said = m.group(2).decode("latin-1")
    if said != separator:
        named = f"'{said}'" if said in SEPARATORS else f"{said!r}, which payfm does not read"
        how = ""
        if said in SEPARATORS:
            how = (
                f" Set the mapping's separator to it: `csv: {{separator: {yaml_separator(said)}}}`, or give "
                f"it to the import: `payfm import --separator {cli_separator(said)}`."
            )
        raise ConfigError(
            f"Import source '{shown_text(str(path))}': expected {SEPARATORS[separator]}-separated columns; "
            f"received a first line `sep={shown_text(said)}` (Excel's line naming the separator): the file "
            f"is separated by {named}.{how}"
        )
    return 1


def _read_header(path: Path, separator: str, skip: int = 0) -> list[str]:
    """The names in the file's header line (read as Python's csv module reads it), after ``skip`` lines (an
    Excel ``sep=;`` line)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as lines:
            for _ in range(skip):
                next(lines, None)
            return next(csv.reader(lines, delimiter=separator), [])
    except UnicodeDecodeError:
        raise _encoding_error(path, separator, skip) from None
    except csv.Error as e:
        reason = str(e)  # (a value over the csv module's limit of 128 KiB: a quote never closed, read on)
    check_quotes(path, [], separator, skip)
    raise ConfigError(
        f"Import source '{path}': expected a header line of column names; received a header that cannot be "
        f"read ({reason}): a name over 128 KiB, or a quoted name running over many lines?"
    )


def _what_blank_holds(path: Path) -> str:
    """What a file whose header line is blank holds: nothing, blank lines only, or rows after a blank line
    (read up to its first other byte)."""
    with open_binary(path) as f:
        seen = 0
        while chunk := f.read(1 << 16):
            if chunk.strip():
                return "a blank line (the rows follow it: remove the blank lines before the header)"
            seen += len(chunk)
    return "only blank lines" if seen else "an empty file"


def check_quotes(path: Path, header: list[str], separator: str = ",", skip: int = 0) -> None:
    """A ConfigError naming the row, line and column of a quote that nothing closes, or that only a quote on a
    later line followed by more text closes (a quote opening another value, read as this one's end: the
    lines between vanish into one value), never the text. Lines read into a quoted value are legitimate only
    if its closing quote ends the value (spaces or tabs, then the ``separator``, a line break or the end of
    the file). ``skip``: the lines before the header (an Excel ``sep=;`` line), counted as no row."""
    with open_binary(path) as f:
        data = f.read()
    m = _quote_patterns(separator).first_unclosed.match(data)
    if m is not None:
        closing = m.end() if m.start("close") >= 0 else None
        _raise_unclosed(path, header, data, m.start("open"), closing, separator, skip)


def _breaks(data: bytes, start: int = 0, end: int | None = None) -> int:
    """Line breaks in ``data[start:end]`` (CR LF, LF or CR, as Arrow ends rows), with no copy."""
    return data.count(b"\n", start, end) + data.count(b"\r", start, end) - data.count(b"\r\n", start, end)


def _row_lines(path: Path, separator: str, skip: int = 0) -> np.ndarray:
    """The line on which each row of the CSV file ``path`` starts (header = line 1), its header's first, as
    Arrow reads rows: a blank line is no row (before the header too), and a line break inside a quoted value
    does not end one. Read once every quote is known closed (numpy over the bytes: an error path only)."""
    with open_binary(path) as f:
        data = f.read()
    byte = np.frombuffer(data, dtype=np.uint8)
    lf, cr = np.flatnonzero(byte == 10), np.flatnonzero(byte == 13)
    lone_cr = cr[byte[np.minimum(cr + 1, len(byte) - 1)] != 10]  # (one ending the file: itself, no LF)
    ends = np.union1d(lf, lone_cr)  # the last byte of every line break (a CR LF's LF)
    spread, position = [], 0  # the quoted values holding line breaks: (opening quote, end)
    while (m := _quote_patterns(separator).next_spread.match(data, position)) is not None:
        spread.append((m.start("open"), m.end()))
        position = m.end()
    opened, closed = np.array([a for a, _b in spread], np.int64), np.array([b for _a, b in spread], np.int64)
    value = np.searchsorted(opened, ends, side="right") - 1
    inside = np.zeros(len(ends), dtype=bool)
    if len(spread):
        inside = (value >= 0) & (ends < closed[np.maximum(value, 0)])
    row_ends = ends[~inside]
    first = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    starts = np.r_[first, row_ends + 1]
    crlf = (byte[row_ends] == 10) & (byte[np.maximum(row_ends - 1, 0)] == 13) & (row_ends > 0)
    stops = np.r_[row_ends - crlf, len(byte)]  # (the first byte of the line break ending each)
    lines: np.ndarray = np.searchsorted(ends, starts[stops > starts]) + 1  # (line breaks before it, + 1)
    return lines[skip:]  # (an Excel `sep=;` line before the header is no row)


def _cells(row: bytes, separator: str) -> int:
    """The cells of a row (or of its start): one, and one more for each ``separator`` outside quoted values
    (counted without the csv module, whose cells stop at 128 KiB)."""
    return _quote_patterns(separator).quoted.sub(b"", row).count(separator.encode()) + 1


def _raise_unclosed(
    path: Path,
    header: list[str],
    data: bytes,
    opening: int,
    closing: int | None,
    separator: str,
    skip: int = 0,
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
    row = line - 1 - skip - blank - sum(_breaks(data, a, b) for a, b in spread)
    start = opening  # the row's first byte: after the last line break outside a quoted value
    while True:
        start = max(data.rfind(b"\n", 0, start), data.rfind(b"\r", 0, start)) + 1
        value = inside(start)
        if value is None:
            break
        start = value[0]
    column = _cells(data[start:opening], separator)
    if row == 0:
        where = f"line {line} (the header), column {column}"
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
    read = f"{lines} ({span}) would be read as that one value"
    if closing is not None and last == line:
        said = "whose closing quote more text follows (a quote inside the value not doubled?)"
        read = "the value would be read without that quote, changed"
    raise ConfigError(
        f"Import source '{path}': expected a closing double quote for every quoted value; received a quote "
        f"opening a value at {where} {said}: {read}. Close the quote, write a quote inside a quoted value "
        'twice (""), or leave the value unquoted.'
    )


def _raise_ragged(
    path: Path, invalid: list[tuple[int, int, int | None]], lines: RowLines, separator: str, skip: int = 0
) -> NoReturn:
    """Rows with another number of cells than the header, by row and line, never their text."""
    problems: list[Problem] = []
    word = SEPARATORS[separator]
    for expected, received, number in invalid[:KEEP]:
        # Arrow's row number counts the rows (not blank lines) from the header's, 1: data row number - 1.
        row = None if number is None else number - 1 - skip  # (a skipped `sep=;` line counts)
        problems.append(
            Problem(
                None,
                row,
                f"{expected} cells, as many as the header has columns (a missing or extra {word}, or a "
                f"{word} inside an unquoted value?)",
                f"{received} cells",
            )
        )
    raise_problems(str(path), problems, len(invalid), csv_file=lines)


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
        f"Set the mapping's separator to it: `csv: {{separator: {yaml_separator(other)}}}`{default}. Or give "
        f"it to the import (a bundled mapping's too): `payfm import --separator {cli_separator(other)}` "
        f"(`import_file(..., separator={yaml_separator(other)})`)."
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
    """The error of a file in another ``encoding``, with the command that converts it (a .csv.gz file
    decompressed, converted and compressed again: iconv would read its compressed bytes)."""
    command = f"iconv -f {encoding} -t UTF-8 '{path}' > '{path.with_suffix('')}.utf8.csv'"
    if path.name.lower().endswith(".gz"):
        stem = path.name[: -len(".csv.gz")] if path.name.lower().endswith(".csv.gz") else path.stem
        copy = path.with_name(f"{stem}.utf8.csv.gz")
        command = f"gunzip -c '{path}' | iconv -f {encoding} -t UTF-8 | gzip > '{copy}'"
    return ConfigError(
        f"Import source '{path}': expected UTF-8 text; received {received}. Convert it to UTF-8 and import "
        f"the copy, e.g. `{command}`."
    )


def _encoding_error(path: Path, separator: str, skip: int = 0) -> ConfigError:
    """The first byte that is not UTF-8, by row, line and column (read line by line: on this error path
    only; blank lines are no row, as Arrow reads them), and how to convert the file."""
    with open_binary(path) as f:
        names: list[str] | None = None
        records = 0  # the lines that are not blank, this one's included: the header, then the rows
        for line_number, line in enumerate(f, 1):
            records += line.strip(b"\r\n") != b""
            try:
                text = line.decode("utf-8-sig" if line_number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                # Latin-1 maps each byte to one character: the cells before the bad byte, whatever they hold.
                column = _cells(line[: e.start], separator) - 1
                if names is None:
                    where = f"line {line_number} (the header), column {column + 1}"
                else:
                    name = names[column] if column < len(names) else column + 1
                    shown = redact_card_numbers(repr(name))
                    where = f"row {records - 1 - skip} (line {line_number}), column {shown}"
                return _not_utf8(
                    path,
                    f"the byte 0x{line[e.start]:02x} at {where}, which is not UTF-8 (the file seems to be in "
                    "another encoding, such as Windows-1252 or Latin-1)",
                    "WINDOWS-1252",
                )
            if names is None and records == 1 + skip:
                try:
                    names = next(csv.reader([text], delimiter=separator), [])
                except csv.Error:  # (a name over 128 KiB: columns are named by number)
                    names = []
    return _not_utf8(path, "bytes that are not UTF-8", "WINDOWS-1252")
