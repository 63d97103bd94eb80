"""How a foreign file is written: the CSV separator, and the decimal and thousands separators of its numbers.

A European export is usually separated by semicolons and writes ``1.234,50`` for 1234.50. A mapping says so
in its ``csv`` block (``csv: {separator: ";", decimal: ",", thousands: "."}``), and an integer field may say
otherwise for itself (``amount: {column: amt, scale: 100, decimal: ","}``). This module holds those values and
parses them; :mod:`payfm.events.mapping` calls it, :mod:`payfm.events.importer` reads the file with the
separator, and :mod:`payfm.events.import_convert` reads the numbers (docs/import.md, "European exports").

Example:
    >>> fmt = NumberFormat(",", ".")
    >>> fmt.example, fmt.described
    ('1.234,50', "',' as the decimal separator and '.' between thousands")
    >>> yaml_separator("\\t")
    '"\\\\t"'
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import pyarrow as pa

from payfm.errors import ConfigError

# The separators payfm reads (each with its quote checks, docs/import.md): the character, and its name in a
# message. Others are refused naming these.
SEPARATORS: dict[str, str] = {",": "comma", ";": "semicolon", "\t": "tab", "|": "'|'"}
DECIMALS = (".", ",")
THOUSANDS = (".", ",", " ", "'")
# A space between thousands is also written as a no-break space (U+00A0) or a narrow one (U+202F, French).
_SPACES = "[ \u00a0\u202f]"
CSV_KEYS = ("separator", "decimal", "thousands")
NUMBER_KEYS = ("decimal", "thousands")

Error = Callable[[str, str, object], ConfigError]  # (key path, expected, received) -> the mapping's error


def yaml_separator(separator: str) -> str:
    """``separator`` as a mapping writes it, double-quoted (a tab as ``"\\t"``; a bare ``|`` starts a YAML
    block, a bare ``,`` is a syntax error)."""
    return '"\\t"' if separator == "\t" else f'"{separator}"'


def cli_separator(separator: str) -> str:
    """``separator`` as ``payfm import --separator`` takes it in a POSIX shell (a tab as ``'\t'``)."""
    return "'\\t'" if separator == "\t" else f"'{separator}'"


def given_separator(separator: str) -> str | None:
    """The separator an import is given (``--separator``, ``import_file(..., separator=)``), as one of
    :data:`SEPARATORS`: the character itself, a tab written as ``\t``, or its name (``comma``,
    ``semicolon``, ``pipe``, ``tab``: nothing to quote in a shell); None if it is none of these."""
    names = {"\\t": "\t", "tab": "\t", "pipe": "|", "semicolon": ";", "comma": ","}
    separator = names.get(separator.lower(), separator)
    return separator if separator in SEPARATORS else None


@dataclass(frozen=True)
class NumberFormat:
    """How numbers written as text separate their decimals and their thousands. ``origin``: the mapping's key
    that said so (``csv``, or a field's path such as ``columns.amount``), for messages."""

    decimal: str = "."
    thousands: str | None = None  # None: no separator between thousands (1234.50)
    origin: str = field(default="csv", compare=False)

    @property
    def plain(self) -> bool:
        """Numbers as Arrow reads them: a '.' decimal, no thousands separator (nothing to rewrite)."""
        return self.decimal == "." and self.thousands is None

    @property
    def example(self) -> str:
        """1234.50 written so, for messages."""
        return f"1{self.thousands}234{self.decimal}50" if self.thousands else f"1234{self.decimal}50"

    @property
    def described(self) -> str:
        """The format in words, for messages."""
        said = f"'{self.decimal}' as the decimal separator"
        if self.thousands is None:
            return said + " and nothing between thousands"
        return said + f" and '{self.thousands}' between thousands"

    @property
    def pattern(self) -> str:
        """An RE2 pattern (Arrow's) of one number written so: the text of ``import_convert.NUMBER`` with this
        decimal separator, and its whole part in groups of three digits when there is a thousands separator
        (``1.234,50``, not ``12.34,5``); a number without separators (``1234,5``) is read too."""
        decimal = re.escape(self.decimal)
        whole = r"\d+"
        if self.thousands is not None:
            group = _SPACES if self.thousands == " " else re.escape(self.thousands)
            whole = rf"(?:\d{{1,3}}(?:{group}\d{{3}})+|\d+)"
        return rf"^\s*[+-]?(?:{whole}(?:{decimal}\d*)?|{decimal}\d+)(?:[eE][+-]?\d+)?\s*$"

    @property
    def thousands_pattern(self) -> str | None:
        """An RE2 pattern of one thousands separator (to remove), or None."""
        if self.thousands is None:
            return None
        return _SPACES if self.thousands == " " else re.escape(self.thousands)


PLAIN = NumberFormat()


@dataclass(frozen=True)
class CsvFormat:
    """The mapping's ``csv`` block: the CSV separator, and how the numbers of the file are written."""

    separator: str = ","
    numbers: NumberFormat = PLAIN


COMMAS = CsvFormat()  # the default: comma-separated, '.' decimals


def parse_csv_block(data: dict[str, Any], error: Error) -> CsvFormat:
    """The ``csv`` block of a mapping, its keys checked (``error`` makes the mapping's ConfigError)."""
    separator = data.get("separator", ",")
    if separator not in SEPARATORS:
        hint = ' (a tab is written "\\t", in double quotes)' if separator in ("\\t", "tab", "TAB") else ""
        quoted = " (quoted: a bare | starts a YAML block)" if separator in ("", None) else ""
        shown = ", ".join(yaml_separator(s) for s in SEPARATORS)
        raise error("csv.separator", f"one of {shown}{hint}{quoted}", separator)
    return CsvFormat(separator, parse_numbers("csv", data, PLAIN, error))


def parse_numbers(path: str, data: dict[str, Any], base: NumberFormat, error: Error) -> NumberFormat:
    """The ``decimal`` and ``thousands`` keys of ``data`` (at ``path``) over ``base``, the file-wide format: a
    key given replaces ``base``'s (``thousands: null`` removes it)."""
    if not any(k in data for k in NUMBER_KEYS):
        return base
    decimal = data.get("decimal", base.decimal)
    if decimal not in DECIMALS:
        raise error(f"{path}.decimal", '"." or "," (quoted)', decimal)
    thousands = data.get("thousands", base.thousands)
    if thousands is not None and thousands not in THOUSANDS:
        shown = ", ".join(f'"{t}"' for t in THOUSANDS)
        raise error(f"{path}.thousands", f"one of {shown} (quoted), or null for none", thousands)
    if thousands == decimal:
        raise error(
            f"{path}.thousands",
            f"a thousands separator other than the decimal separator '{decimal}'",
            thousands,
        )
    return NumberFormat(decimal, thousands, path)


_OFFSET_TEXT = re.compile(r"[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9]")


def parse_zone_names(path: str, data: object, fmt: object, error: Error) -> dict[str, str]:
    """``zone_names``: the zone names a %Z of the format reads (CET, CEST) -> the UTC offsets they stand for,
    so that a report writing the zone beside its local time is read in it, the hour a clock change repeats
    too."""
    if not isinstance(fmt, str) or "%Z" not in fmt:
        raise error(path, "a format with %Z, the zone name the names are read from", fmt)
    if not isinstance(data, dict) or not data:
        raise error(path, 'zone names mapped to offsets, e.g. {CET: "+01:00", CEST: "+02:00"}', data)
    out = {}
    for name, offset in data.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9/_+-]*", name):
            raise error(f"{path}", "zone names such as CET or EST", name)
        if not isinstance(offset, str) or not _OFFSET_TEXT.fullmatch(offset):
            raise error(f"{path}.{name}", 'an offset from UTC, quoted: "+01:00" or "-0500"', offset)
        out[name] = offset.replace(":", "")
    return out


@dataclass(frozen=True)
class ZoneColumn:
    """``timezone: {column: ..., map: ...}``: the IANA zone of each row's naive time, read from a source
    column (a store's zone, or a state or country ``map`` turns into one). A value that ``map`` does not
    hold is read as a zone name itself."""

    column: str
    map: dict[str, str] = field(default_factory=dict)


def parse_zone_column(
    path: str, data: dict[str, Any], error: Error, zone: Callable[[str, object], str]
) -> ZoneColumn:
    """A field's per-row ``timezone`` (``{column: tz}`` or ``{column: state, map: {TX: America/Chicago}}``);
    ``zone`` checks an IANA name (the mapping's own check, naming the key path)."""
    for key in data:
        if key not in ("column", "map"):
            raise error(
                f"{path}.{key}",
                "column or map (the source column of each row's zone)",
                f"<an unknown key {str(key)!r}>",
            )
    column = data.get("column")
    if not isinstance(column, str) or not column:
        raise error(
            f"{path}.column", "the source column holding each row's time zone (or what map reads)", column
        )
    raw = data.get("map", {})
    if not isinstance(raw, dict):
        raise error(
            f"{path}.map", "the column's values mapped to IANA zones, e.g. {TX: America/Chicago}", raw
        )
    for key in raw:
        if isinstance(key, bool) or not isinstance(key, str | int):  # (YAML reads NO, ON, YES as booleans)
            raise error(
                f"{path}.map", "text keys (quote them in YAML: NO, ON and Y are booleans otherwise)", key
            )
    names = {str(k): zone(f"{path}.map.{k}", v) for k, v in raw.items()}
    return ZoneColumn(column, names)


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, a .gz file's decompressed by Python's gzip (lines and seeking)."""
    return cast(BinaryIO, gzip.open(path, "rb")) if path.name.lower().endswith(".gz") else path.open("rb")


def open_stream(path: Path) -> BinaryIO:
    """The file's bytes for one pass of reads (no lines, no seeking): a .gz file is decompressed by Arrow
    (about 10% faster than Python's gzip, BENCHMARKS.md), whose error for a file cut short is an OSError."""
    if path.name.lower().endswith(".gz"):
        return cast(BinaryIO, pa.input_stream(str(path), compression="gzip"))
    return path.open("rb")
