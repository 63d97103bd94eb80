"""The options of a mapping's time fields (``unit``, ``origin``, ``format``, ``timezone``, ``ambiguous``,
``nonexistent``, ``zone_names``), parsed and checked for :mod:`payfm.events.mapping`;
:mod:`payfm.events.import_times` reads the times with them (docs/import.md, "Times").

Example:
    >>> from payfm.errors import ConfigError
    >>> error = lambda path, expected, got: ConfigError(f"'{path}': expected {expected}; received {got!r}.")
    >>> time_options("columns.created", {"format": "%Y-%m-%d %H:%M", "timezone": "UTC"}, error)
    {'format': '%Y-%m-%d %H:%M', 'timezone': 'UTC'}
"""

from __future__ import annotations

import difflib
import functools
import re
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from payfm.events.import_format import Error, parse_zone_column, parse_zone_names

# value -> micros (multiply, divide): numbers of these since the Unix epoch, or since a field's ``origin``
EPOCH_UNITS = {
    "d": (86_400_000_000, 1),
    "h": (3_600_000_000, 1),
    "m": (60_000_000, 1),
    "s": (1_000_000, 1),
    "ms": (1_000, 1),
    "us": (1, 1),
    "ns": (1, 1_000),
}
# What a format may hold after %f, as patterns of the text: literal text, a zone (%z, %Z) or AM/PM (%p). The
# fraction's digits are found in a text by what follows them (Arrow's strptime has no %f).
_AFTER_FRACTION = {
    "%z": r"(?:[+-]\d\d(?::?\d\d)?|[Zz])",
    "%Z": r"[A-Za-z][A-Za-z0-9_/+-]*",
    "%p": r"[AaPp]\.?[Mm]\.?",
    "%%": "%",
}
_FRACTION_USE = (
    "a format whose %f (a fraction of a second, 1 to 9 digits) follows %S and a separator, such as "
    "'%Y-%m-%d %H:%M:%S.%f' or '%d.%m.%Y %H:%M:%S,%f', with only text, %z, %Z or %p after it"
)
AMBIGUOUS = ("error", "earliest", "latest", "infer")  # a repeated local time (payfm.events.import_times)
NONEXISTENT = ("error", "earliest", "latest", "shift")  # a local time a DST change skips
_DIRECTIVE = re.compile(r"%.")  # a strptime directive (``%%`` included: a literal ``%f`` is no fraction)
TIME_KEYS = ("unit", "origin", "format", "timezone", "ambiguous", "nonexistent", "zone_names")


@functools.cache
def is_zone(name: str) -> bool:
    """Whether ``name`` is a zone both Python and Arrow read (Arrow refuses some of zoneinfo's: ``Factory``,
    ``posix/...``, ``right/...``), and not ``localtime``, the host's own zone, which would read a file
    differently on another machine."""
    if name == "localtime" or name.startswith(("posix/", "right/")):
        return False
    try:
        zoneinfo.ZoneInfo(name)
        pc.assume_timezone(pa.array([0], pa.timestamp("us")), name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, pa.ArrowInvalid):
        return False
    return True


def zone_name(error: Error, path: str, value: object, per_row: bool = False) -> str:
    """``value`` if it is an IANA zone name; the mapping's error naming ``path`` (and the nearest name)."""
    if not isinstance(value, str):
        rows = ", or {column: tz} for each row's zone from a source column" if per_row else ""
        raise error(path, f"an IANA time zone name such as UTC or America/New_York{rows}", value)
    if not is_zone(value):
        close = difflib.get_close_matches(value, sorted(zoneinfo.available_timezones()), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise error(path, "an IANA time zone name such as UTC or America/New_York" + hint, value)
    return value


def split_fraction(fmt: str) -> tuple[str, str] | None:
    """For a ``format`` holding ``%f``: the format without it (for Arrow's strptime, which has no %f) and
    the pattern (RE2) of a text in the format, whose groups ``head``, ``frac`` and ``tail`` are the text up to
    the fraction's digits, the digits, and the rest; None for a format without %f. A %f that does not follow
    %S and a separator, or is followed by another directive than %z, %Z or %p, is a ValueError saying what
    to write.

    >>> split_fraction("%d.%m.%Y %H:%M:%S,%f")
    ('%d.%m.%Y %H:%M:%S,', '^(?P<head>.*,)(?P<frac>[0-9]{1,9})(?P<tail>)$')
    >>> split_fraction("%Y-%m-%d %H:%M:%S") is None
    True
    """
    directives = list(_DIRECTIVE.finditer(fmt))
    fractions = [m for m in directives if m.group() == "%f"]
    if not fractions:
        return None
    at = fractions[0]
    before = [m for m in directives if m.end() <= at.start()]
    separator = fmt[before[-1].end() : at.start()] if before else ""
    after = [m.group() for m in directives if m.start() >= at.end()]
    if (
        len(fractions) > 1
        or not before
        or before[-1].group() != "%S"
        or not separator
        or any(ch.isdigit() for ch in separator)
        or any(d not in _AFTER_FRACTION for d in after)
    ):
        raise ValueError(_FRACTION_USE)
    tail, position = [], at.end()
    for m in _DIRECTIVE.finditer(fmt, at.end()):
        tail += [re.escape(fmt[position : m.start()]), _AFTER_FRACTION[m.group()]]
        position = m.end()
    tail.append(re.escape(fmt[position:]))
    pattern = f"^(?P<head>.*{re.escape(separator)})(?P<frac>[0-9]{{1,9}})(?P<tail>{''.join(tail)})$"
    return fmt[: at.start()] + fmt[at.end() :], pattern


def _origin(path: str, value: object, error: Error) -> int:
    """``origin``: an ISO 8601 time with its zone's offset, as UTC microseconds since the Unix epoch."""
    expected = "an ISO 8601 time with a zone offset, e.g. '2017-12-01T00:00:00Z'"
    if isinstance(value, datetime):  # (YAML reads an unquoted time itself)
        when = value
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            raise error(path, expected, value) from None
    else:
        raise error(path, expected, value)
    if when.tzinfo is None:
        raise error(path, expected + " (a time without one would be a guess)", str(value))
    if not 1800 <= when.astimezone(UTC).year < 2100:  # (a spreadsheet's serial days count from 1899-12-30)
        raise error(path, "a time between 1800 and 2100", str(value))
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def time_options(path: str, data: dict[str, Any], error: Error) -> dict[str, Any]:
    """The time options of the field at ``path`` (its mapping ``data``), as FieldSpec keyword arguments."""
    opts: dict[str, Any] = {}
    if "unit" in data:
        if data["unit"] not in EPOCH_UNITS:
            raise error(f"{path}.unit", "a unit: " + ", ".join(EPOCH_UNITS) + " (m: minutes)", data["unit"])
        opts["unit"] = data["unit"]
    if "origin" in data:
        if "unit" not in data:
            raise error(
                f"{path}.origin", "a unit beside it (numbers of that unit since the origin)", "<no unit>"
            )
        opts["origin_us"] = _origin(f"{path}.origin", data["origin"], error)
    if "format" in data:
        if not isinstance(data["format"], str) or "%" not in data["format"]:
            raise error(f"{path}.format", "a strptime format such as '%Y-%m-%d %H:%M:%S'", data["format"])
        try:
            split_fraction(data["format"])
        except ValueError as e:
            raise error(f"{path}.format", str(e), data["format"]) from None
        opts["format"] = data["format"]
    if "unit" in data and "format" in data:
        raise error(path, "either unit (epoch numbers) or format (text times), not both", "<both>")
    if isinstance(data.get("timezone"), dict):
        zone = functools.partial(zone_name, error)
        opts["zone_column"] = parse_zone_column(f"{path}.timezone", data["timezone"], error, zone)
    elif "timezone" in data:
        opts["timezone"] = zone_name(error, f"{path}.timezone", data["timezone"], per_row=True)
    for key, choices in (("ambiguous", AMBIGUOUS), ("nonexistent", NONEXISTENT)):
        if key in data:
            if data[key] not in choices:
                raise error(f"{path}.{key}", "one of " + ", ".join(choices), data[key])
            opts[key] = data[key]
    if "zone_names" in data:
        opts["zone_names"] = parse_zone_names(
            f"{path}.zone_names", data["zone_names"], data.get("format"), error
        )
    return opts
