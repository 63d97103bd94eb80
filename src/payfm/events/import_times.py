"""Source columns to UTC microsecond times.

The conversion of :mod:`payfm.events.importer` for timestamp fields and outcome times: epoch numbers in a
declared unit, Arrow timestamps and dates, texts in a ``format`` or ISO 8601. Naive times take the field's or
the mapping's time zone (payfm never guesses one; a missing zone is a ConfigError), and times that a DST
change makes ambiguous or impossible are reported. Times outside 1990-2100 mean a wrong unit, format or a
placeholder (epoch seconds read as milliseconds fall in January 1970, as does a 0 written for "no time") and
are reported by row, like every cell that does not parse, and left null. (The platform's timeline is
1970-2100; an export's charges are from 1990 on.)
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.errors import ConfigError
from payfm.events.import_convert import as_text, plain_numbers, source_values, to_floats
from payfm.events.import_problems import KEEP, Problems, values_at
from payfm.events.mapping import FieldSpec, Mapping
from payfm.events.mapping_times import EPOCH_UNITS, is_zone, split_fraction
from payfm.events.schema import TIME_MAX_US, TIMESTAMP
from payfm.events.validate import CAST_ERRORS, floor_to_microseconds, try_cast

_INTEGER = r"^\s*[+-]?\d+\s*$"
# A zone offset ending an ISO time: after the time, never a date's day (``2024-03-01`` is a naive date, read
# as midnight in the mapping's zone, not 2024-03 at the offset -01).
_OFFSET = r"\d[Tt ]\d.*(Z|z|[+-]\d\d(:?\d\d)?)$"
_PLAUSIBLE = (
    "a time between 1990 and 2100 (check the unit, origin or format in the mapping; epoch seconds read as "
    "milliseconds fall in January 1970, and a 0 meaning no time is an empty cell)"
)
IMPORT_TIME_MIN_US = 631_152_000_000_000  # 1990-01-01: no export's charge or outcome is older
_DIRECTIVE = re.compile(r"%.")  # a strptime directive (``%%`` included, so a literal ``%z`` is no zone)
_ZONES = ("%z", "%Z")
# A zone name of UTC in a time read with %Z: UTC, GMT, UT or Z as a word, not followed by an offset.
_UTC_NAME = r"(?i)(?:^|[^A-Za-z])(?:UTC|GMT|UT|Z)(?:[^A-Za-z0-9+-]|$)"


def _need_zone(
    spec: FieldSpec, mapping: Mapping, what: str, table: pa.Table, out: Problems
) -> str | pa.Array:
    """The zone of the field's naive times: one name, or each row's (``timezone: {column: ...}``; a cell that
    is not UTF-8 is reported, :func:`as_text`)."""
    if spec.zone_column is not None:
        column = spec.zone_column.column
        names = as_text(table.column(column).combine_chunks(), out, column)
        names = pc.utf8_trim_whitespace(names)
        if spec.zone_column.map:
            keys = list(spec.zone_column.map)
            at = pc.index_in(names, value_set=pa.array(keys))
            mapped = pc.take(pa.array(list(spec.zone_column.map.values())), at)
            names = pc.if_else(pc.is_valid(at), mapped, names)
        return names
    zone = spec.timezone or mapping.timezone
    if zone is None:
        raise ConfigError(
            f"{mapping.name}: '{spec.path}.timezone': expected a time zone for the naive times of "
            f"{spec.columns_text} (set it here or as the top-level `timezone`; payfm never guesses); "
            f"received {what} and no zone."
        )
    return zone


def _localize(
    naive: pa.Array,
    text: pa.Array,
    zone: str | pa.Array,
    spec: FieldSpec,
    out: Problems,
    at: np.ndarray | None = None,
) -> pa.Array:
    """Naive local times in ``zone`` to UTC. A local time that a DST change repeats (the clocks going back)
    is reported, or read as the field's ``ambiguous`` says: its first instant (``earliest``), its second
    (``latest``), or as the rows' order tells (``infer``, :func:`_second_pass`). One that it skips is
    reported, or read as the field's ``nonexistent`` says: the last instant before the gap (``earliest``),
    the first after it (``latest``; plus a microsecond per second into the gap, so that the skipped hour's
    rows keep their order, not their hashed ids'), or moved forward by the gap (``shift``: read with the
    offset before it, as zoneinfo reads it; they keep their spacing, interleaved with the hour after).
    ``zone``: one name, or each row's (:func:`_localize_rows`); ``at``: the rows of the table that
    ``naive`` holds (problems are reported there), when only some."""
    if not isinstance(zone, str):
        return _localize_rows(naive, text, zone, spec, out)
    early = pc.assume_timezone(naive, zone, ambiguous="earliest", nonexistent="earliest")
    late = pc.assume_timezone(naive, zone, ambiguous="latest", nonexistent="earliest")
    gap = pc.assume_timezone(naive, zone, ambiguous="earliest", nonexistent="latest")
    twice = pc.fill_null(pc.not_equal(early, late), False).to_numpy(False)
    never = pc.fill_null(pc.not_equal(early, gap), False).to_numpy(False)
    where = "+".join(spec.columns)
    skipped = never if spec.nonexistent == "error" else np.zeros(len(never), dtype=bool)
    if skipped.any():
        bad = np.flatnonzero(skipped)
        out.rows(
            where,
            bad if at is None else at[bad],
            f"a local time that exists in {zone} (a DST change skips it; set '{spec.path}.nonexistent' to "
            "earliest or latest to read it as the instant before or after the gap, or shift to move it "
            "forward by the gap)",
            values_at(text, bad),
        )
    second, unresolved = np.zeros(len(twice), dtype=bool), np.zeros(len(twice), dtype=bool)
    if spec.ambiguous == "latest":
        second = twice
    elif spec.ambiguous == "infer":
        second, unresolved = _second_pass(naive, twice, early, late)
    else:
        unresolved = twice if spec.ambiguous == "error" else unresolved
    if unresolved.any():
        bad = np.flatnonzero(unresolved)
        how = (
            "in a file whose rows of that hour are in time order, the clock going back once (to infer which"
            " of its two instants each is)"
            if spec.ambiguous == "infer"
            else f"that exists once in {zone}"
        )
        choices = "earliest or latest" if spec.ambiguous == "infer" else "earliest, latest or infer"
        out.rows(
            where,
            bad if at is None else at[bad],
            f"a local time {how}: a DST change repeats it (set '{spec.path}.ambiguous' to {choices})",
            values_at(text, bad),
        )
    result = pc.if_else(pa.array(second), late, early)
    if never.any() and spec.nonexistent in ("latest", "shift"):
        # (``early`` holds the instant before the gap; into: how far past it the clock read, in µs)
        into = pc.subtract(naive, pc.local_timestamp(early))
        if spec.nonexistent == "latest":  # the gap's end, plus a µs per second into the gap (the rows' order)
            seconds = pc.divide(pc.cast(into, pa.int64()), 1_000_000)
            moved = pc.add(gap, pc.cast(seconds, pa.duration("us")))
        else:
            moved = pc.add(early, into)
        result = pc.if_else(pa.array(never), moved, result)
    result = pc.if_else(pa.array(skipped | unresolved), pa.scalar(None, early.type), result)
    return pc.cast(result, TIMESTAMP)


def _localize_rows(
    naive: pa.Array, text: pa.Array, zones: pa.Array, spec: FieldSpec, out: Problems
) -> pa.Array:
    """Naive local times each in its row's zone: the rows of each zone are read as one zone's are, in file
    order (the hour a clock change repeats too). A row without a zone, or whose zone is no IANA name, is a
    problem of the zone column's row."""
    assert spec.zone_column is not None
    column = spec.zone_column.column
    needed = pc.is_valid(naive).to_numpy(False)
    missing = np.flatnonzero(needed & pc.is_null(zones).to_numpy(False))
    if out.field is not None:  # (a zone cell reported already, not UTF-8, is no missing zone too)
        missing = np.setdiff1d(missing, out.bad.get(out.field, missing[:0]))
    if len(missing):
        out.rows(column, missing, f"a time zone for the naive time of {spec.columns_text}", out.empty)
    encoded = pc.dictionary_encode(zones)
    codes = pc.fill_null(encoded.indices, -1).to_numpy(False).astype(np.int64)
    codes[~needed] = -1
    order = np.argsort(codes, kind="stable")  # (the rows of each zone together, each group in file order)
    starts = np.searchsorted(codes[order], np.arange(len(encoded.dictionary) + 1))
    micros, valid = np.zeros(len(naive), dtype=np.int64), np.zeros(len(naive), dtype=bool)
    unknown: list[np.ndarray] = []
    for k, zone in enumerate(encoded.dictionary.to_pylist()):
        rows = order[starts[k] : starts[k + 1]]
        if not len(rows):
            continue
        if not is_zone(zone):
            unknown.append(rows)
            continue
        taken = pa.array(rows)
        local = _localize(naive.take(taken), text.take(taken), zone, spec, out, rows)
        micros[rows] = pc.fill_null(pc.cast(local, pa.int64()), 0).to_numpy(False)
        valid[rows] = pc.is_valid(local).to_numpy(False)
    if unknown:
        bad = np.sort(np.concatenate(unknown))
        keys = ", ".join(list(spec.zone_column.map)[:KEEP])
        mapped = f" or a key of the field's timezone map ({keys})" if spec.zone_column.map else ""
        out.rows(
            column, bad, f"an IANA time zone name such as America/New_York{mapped}", values_at(zones, bad)
        )
    return pa.array(micros, mask=~valid).cast(TIMESTAMP)


_DAY_US, _MINUTE_US = 86_400_000_000, 60_000_000  # a local day; a minute


def _second_pass(
    naive: pa.Array, twice: np.ndarray, early: pa.Array, late: pa.Array
) -> tuple[np.ndarray, np.ndarray]:
    """Of the rows whose local time a DST change repeats (``twice``), those in its second pass, and those it
    cannot tell. In a file in time order, the rows of one night's repeated hour go back in time once, where
    the clock went back, to an earlier minute (by any amount: with sparse night traffic, 02:30 then 02:10
    is the clock going back; a step back within one minute is a file sorted to the minute only); the rows
    from there on are in the second pass, and the night's instants, its other rows' too, then go up in file
    order. A night whose rows never go back (all in one pass, or one row), go back more than once, or whose
    instants would not go up (a file newest first, or sorted to the minute only) cannot be told."""
    second, unresolved = np.zeros(len(twice), dtype=bool), np.zeros(len(twice), dtype=bool)
    local = pc.fill_null(pc.cast(naive, pa.int64()), -1).to_numpy(False)
    first_us = pc.fill_null(pc.cast(early, pa.int64()), -1).to_numpy(False)
    second_us = pc.fill_null(pc.cast(late, pa.int64()), -1).to_numpy(False)
    rows = np.flatnonzero(twice)
    nights = local[rows] // _DAY_US  # (the repeated hour lies within one local day)
    for night in np.unique(nights):  # one per DST change in the file: a few a year
        at = rows[nights == night]
        back = np.flatnonzero(np.diff(local[at] // _MINUTE_US) < 0)
        steps = np.flatnonzero(np.diff(local[at]) < 0)
        if len(back) == 1 and len(steps) == 1:
            mine = np.zeros(len(twice), dtype=bool)
            mine[at[back[0] + 1 :]] = True
            day = np.flatnonzero(local // _DAY_US == night)  # every row of that local day, in file order
            instants = np.where(mine[day], second_us[day], first_us[day])
            if (np.diff(instants) >= 0).all():
                second |= mine
                continue
        unresolved[at] = True
    return second, unresolved


def _parse_rows(text: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Cast ISO texts to ``target``: the result with nulls where parsing failed, and those rows."""
    cast, bad = try_cast(text, target)
    if cast is not None:
        return cast, bad
    failed = np.zeros(len(text), dtype=bool)
    failed[bad] = True
    return pc.cast(pc.if_else(pa.array(failed), pa.scalar(None, text.type), text), target), bad


def _strptime(col: pa.Array, fmt: str) -> tuple[pa.Array, pa.Array, str, pa.Array | None]:
    """Texts in the strptime format ``fmt`` parsed to microseconds (null where they are not in it): the
    times, the texts and the format as Arrow's strptime read them, and the fractions of a second of a format
    with ``%f`` (None without), to add to the times once they are checked. Arrow's strptime has no %f: the
    fraction's digits (1 to 9, floored to the microsecond) are cut out of each text and the %f out of the
    format (:func:`~payfm.events.mapping_times.split_fraction`), and a text without them does not parse.

    >>> times, _, _, fraction = _strptime(pa.array(["01.03.2024 09:00:00,5"]), "%d.%m.%Y %H:%M:%S,%f")
    >>> pc.add(times, fraction)[0].as_py()
    datetime.datetime(2024, 3, 1, 9, 0, 0, 500000)
    """
    split = split_fraction(fmt)
    if split is None:
        return pc.strptime(col, format=fmt, unit="us", error_is_null=True), col, fmt, None
    whole, pattern = split
    parts = pc.extract_regex(col, pattern)  # (null where the text does not match)
    head, digits, tail = (pc.struct_field(parts, [i]) for i in range(3))
    text = pc.binary_join_element_wise(head, tail, "")
    micros = pc.utf8_slice_codeunits(pc.utf8_rpad(digits, 9, "0"), 0, 6)  # (ns floored to the µs)
    fraction = pc.cast(pc.cast(micros, pa.int64()), pa.duration("us"))
    parsed = pc.strptime(text, format=whole, unit="us", error_is_null=True)
    return parsed, text, whole, fraction


def _split_at_zone(fmt: str) -> tuple[str, str, bool]:
    """``fmt`` cut at its first zone directive (%z or %Z): the parts before and after (with any other zone
    directive removed), and whether it had one."""
    cut = next((m for m in _DIRECTIVE.finditer(fmt) if m.group() in _ZONES), None)
    if cut is None:
        return fmt, "", False
    after = _DIRECTIVE.sub(lambda m: "" if m.group() in _ZONES else m.group(), fmt[cut.end() :])
    return fmt[: cut.start()], after, True


def _numbers(text: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The numbers written in each text: its runs of digits without leading zeros ('2023-2-03' and
    '2023-02-3' both give 2023, 2, 3), flattened, with each row's first index and count."""
    parts = pc.split_pattern_regex(text, r"[^0-9]+")
    flat, owner = pc.list_flatten(parts), pc.list_parent_indices(parts)
    keep = pc.greater(pc.utf8_length(flat), 0)
    flat, owner = pc.filter(flat, keep), pc.filter(owner, keep)
    counts = np.bincount(owner.to_numpy(False), minlength=len(text)).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return pc.utf8_ltrim(flat, "0"), starts, counts


def _differ(
    written: tuple[pa.Array, np.ndarray, np.ndarray],
    printed: tuple[pa.Array, np.ndarray, np.ndarray],
    from_end: bool,
) -> np.ndarray:
    """Per row, whether the numbers ``printed`` differ from the first (``from_end``: the last) ``written``."""
    w_flat, w_starts, w_counts = written
    p_flat, p_starts, p_counts = printed
    differ = w_counts < p_counts
    owner = np.repeat(np.arange(len(p_counts)), p_counts)  # the row of each printed number
    nth = np.arange(len(p_flat)) - np.repeat(p_starts, p_counts)
    first = w_starts + (w_counts - p_counts if from_end else 0)
    at = np.clip(first[owner] + nth, 0, max(len(w_flat) - 1, 0))
    if len(p_flat):
        same = pc.equal(pc.take(w_flat, pa.array(at)), p_flat).to_numpy(False)
        differ[owner[~same]] = True
    return differ


def _starts_and_ends(text: pa.Array, head: pa.Array, tail: pa.Array | None) -> pa.Array:
    """Per row, whether ``text`` starts with ``head`` and ends with ``tail`` (when they have one length)."""
    same = pa.repeat(pa.scalar(False), len(text))
    for part, at_end in ((head, False), (tail, True)):
        if part is None:
            continue
        lengths = pc.min_max(pc.utf8_length(part)).as_py()
        if lengths["min"] != lengths["max"]:
            return same
        n = lengths["max"] or 0
        cut = pc.utf8_slice_codeunits(text, -n) if at_end and n else pc.utf8_slice_codeunits(text, 0, n)
        same = pc.equal(cut, part) if part is head else pc.and_(same, pc.equal(cut, part))
    return same


def _rolled_over(col: pa.Array, parsed: pa.Array, fmt: str) -> np.ndarray:
    """Rows whose time, written back in ``fmt``, shows other numbers than the text: strptime rolls an
    impossible date over (2023-02-30 to 2023-03-02, a 60th second to the next minute) instead of failing.

    A text that is exactly what ``fmt`` writes is fine (one comparison for most files); for the others only
    the numbers are compared, so names (Feb, FEB), spaces and leading zeros (%e, '2023-2-3') do not count.
    The numbers of a zone (%z, %Z: '+02:00', 'GMT+2') are skipped: the text's own wall time is written
    back, from a parse that reads the zone as a name and ignores it. Formats arrow cannot write (``%s``) are
    not checked; an epoch number cannot roll over.
    """
    none = np.zeros(0, dtype=np.int64)
    before, after, zoned = _split_at_zone(fmt)
    if "%s" in fmt:
        return none
    local = parsed
    if "%z" in fmt:  # the wall time as written: %Z reads the offset as a name and ignores it
        local = pc.strptime(col, format=fmt.replace("%z", "%Z"), unit="us", error_is_null=True)
    ok = pc.and_(pc.is_valid(parsed), pc.is_valid(local))
    rows = np.flatnonzero(pc.fill_null(ok, False).to_numpy(False))
    if not len(rows):
        return none
    wall = pc.cast(pc.take(local, pa.array(rows)), pa.timestamp("s"), safe=False)  # strptime has no fractions
    text = pc.take(col, pa.array(rows))
    try:
        head = pc.strftime(wall, format=before)
        tail = pc.strftime(wall, format=after) if after else None
    except pa.ArrowInvalid:  # a directive arrow parses but cannot write: no check rather than a wrong one
        return none
    # The common case: the text is exactly what the format writes (around the zone, when it has one).
    same = pc.equal(text, head) if not zoned else _starts_and_ends(text, head, tail)
    other = pa.array(np.flatnonzero(~pc.fill_null(same, False).to_numpy(False)))
    rows, text, head = rows[other.to_numpy(False)], pc.take(text, other), pc.take(head, other)
    tail = pc.take(tail, other) if tail is not None else None
    if not len(rows):
        return none
    written = _numbers(text)
    first = _numbers(head)
    last = _numbers(tail) if tail is not None else _numbers(pa.repeat(pa.scalar(""), len(rows)))
    differ = _differ(written, first, from_end=False) | _differ(written, last, from_end=True)
    # Without a zone every number must match; with one, the zone's numbers lie between the two parts.
    total = first[2] + last[2]
    differ |= (written[2] != total) if not zoned else (written[2] < total)
    rolled: np.ndarray = rows[differ].astype(np.int64)
    return rolled


def to_times(spec: FieldSpec, table: pa.Table, mapping: Mapping, out: Problems) -> pa.Array | None:
    """UTC microsecond times of ``spec``; times outside 1990-2100 (a wrong unit, format or a placeholder) are
    errors."""
    times = _convert_times(spec, table, mapping, out)
    if times is None or spec.kind == "value":
        return times
    micros = pc.cast(times, pa.int64())
    off = pc.or_(pc.less(micros, IMPORT_TIME_MIN_US), pc.greater_equal(micros, TIME_MAX_US))
    bad = np.flatnonzero(pc.fill_null(off, False).to_numpy(False))
    if len(bad):
        out.rows("+".join(spec.columns), bad, _PLAUSIBLE, values_at(source_values(spec, table, out), bad))
        times = pc.if_else(pc.fill_null(off, False), pa.scalar(None, times.type), times)
    return times


def _convert_times(spec: FieldSpec, table: pa.Table, mapping: Mapping, out: Problems) -> pa.Array | None:
    n = table.num_rows
    name = "+".join(spec.columns)
    if spec.kind == "value":
        try:
            value = pc.cast(pa.array([spec.value]), TIMESTAMP)[0]
        except CAST_ERRORS:
            raise ConfigError(
                f"{mapping.name}: '{spec.path}.value': expected an ISO 8601 time with a zone offset "
                f"(e.g. 2023-01-01T00:00:00Z); received {spec.value!r}."
            ) from None
        return pa.repeat(value, n)
    col = source_values(spec, table, out)
    t = col.type
    if spec.unit is not None:
        written = col  # (as the file has it, for messages; ``col``: with a '.' decimal, no thousands dots)
        col = plain_numbers(col, spec, out)
        if pa.types.is_string(t) and pc.all(pc.match_substring_regex(col, _INTEGER)).as_py() is not False:
            col = pc.cast(pc.utf8_trim_whitespace(col), pa.int64())
            t = col.type
        mul, div = EPOCH_UNITS[spec.unit]
        if pa.types.is_integer(t):
            ints = pc.cast(col, pa.int64())
            nulls = pc.is_null(ints).to_numpy(False)
            v = pc.fill_null(ints, 0).to_numpy(False)
            # Values that would overflow int64 microseconds are implausible anyway: report, don't crash.
            huge = np.flatnonzero(np.abs(v) > min(TIME_MAX_US * div // mul, 2**62))
            if len(huge):
                out.rows(name, huge, _PLAUSIBLE, values_at(written, huge))
                v, nulls = v.copy(), nulls.copy()  # (Arrow's buffers are read-only)
                v[huge] = 0
                nulls[huge] = True
            return pa.array(v * mul // div + (spec.origin_us or 0), mask=nulls).cast(TIMESTAMP)
        values = to_floats(col, name, out)
        if values is None:
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            micros_f = np.round(np.where(np.isnan(values), 0, values) * mul / div)
        # Beyond int64 microseconds (1e30 s) is implausible anyway: report the file's value, never cast it.
        huge = np.flatnonzero(np.abs(np.nan_to_num(micros_f, nan=0.0)) > 2.0**62)
        if len(huge):
            out.rows(name, huge, _PLAUSIBLE, values_at(written, huge))
        nulls = np.isnan(values) | (np.abs(np.nan_to_num(micros_f, nan=0.0)) > 2.0**62)
        micros = np.where(nulls, 0, micros_f).astype(np.int64) + (spec.origin_us or 0)
        return pa.array(micros, mask=nulls).cast(TIMESTAMP)
    if pa.types.is_timestamp(t):
        if t.tz is not None:
            return pc.cast(col, TIMESTAMP, safe=False)
        return _localize(
            pc.cast(col, pa.timestamp("us"), safe=False),
            col,
            _need_zone(spec, mapping, f"naive timestamps ({t})", table, out),
            spec,
            out,
        )
    if pa.types.is_date(t):
        zone = _need_zone(spec, mapping, f"dates ({t})", table, out)
        return _localize(pc.cast(pc.cast(col, pa.date32()), pa.timestamp("us")), col, zone, spec, out)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        raise ConfigError(
            f"{mapping.name}: '{spec.path}.unit': expected a unit (s, ms, us, ns; d, h, m) for the numbers "
            f"in {spec.columns_text}; received no unit."
        )
    col = as_text(col, out, spec.source)
    valid = pc.is_valid(col)
    if spec.format is not None and spec.zone_names:
        return _named_zones(spec, col, name, out)
    if spec.format is not None:
        # %Z: Arrow reads a zone's name and ignores it ('10:00 CET' would be 10:00 in the mapping's zone), so
        # only names of UTC are taken (read as UTC); another zone is a problem of its row.
        named = "%Z" in spec.format and "%z" not in spec.format
        aware = "%z" in spec.format or named
        parsed, read, fmt, fraction = _strptime(col, spec.format)
        unparsed = np.flatnonzero(pc.and_(valid, pc.is_null(parsed)).to_numpy(False))
        rolled = _rolled_over(read, parsed, fmt)
        if named:
            utc = pc.fill_null(pc.match_substring_regex(col, _UTC_NAME), False)
            other = np.flatnonzero(pc.and_(pc.is_valid(parsed), pc.invert(utc)).to_numpy(False))
            if len(other):
                out.rows(
                    name,
                    other,
                    f"a time in the format '{spec.format}' whose %Z zone is UTC or GMT (another zone's name "
                    'needs zone_names, e.g. {CET: "+01:00", CEST: "+02:00"}; or %z with numeric offsets)',
                    values_at(col, other),
                )
                mask = np.zeros(len(col), dtype=bool)
                mask[other] = True
                parsed = pc.if_else(pa.array(mask), pa.scalar(None, parsed.type), parsed)
        bad = np.union1d(unparsed, rolled).astype(np.int64)
        if len(rolled):
            mask = np.zeros(len(col), dtype=bool)
            mask[rolled] = True
            parsed = pc.if_else(pa.array(mask), pa.scalar(None, parsed.type), parsed)
        if len(bad):
            out.rows(name, bad, f"a time in the format '{spec.format}'", values_at(col, bad))
        if fraction is not None:
            parsed = pc.add(parsed, fraction)
        if aware:
            return pc.cast(parsed, TIMESTAMP)
        zone = _need_zone(spec, mapping, f"times in the format '{spec.format}' without %z", table, out)
        return _localize(parsed, col, zone, spec, out)
    # ISO 8601: rows with an offset are absolute; rows without one need the zone.
    has_offset = pc.fill_null(pc.match_substring_regex(col, _OFFSET), False)
    naive_rows = pc.and_(valid, pc.invert(has_offset))
    iso = floor_to_microseconds(col)  # finer units are floored; messages quote ``col`` as written
    aware_part, bad_aware = _parse_rows(pc.if_else(has_offset, iso, pa.scalar(None, pa.string())), TIMESTAMP)
    result: pa.Array = aware_part
    bad_naive = np.zeros(0, dtype=np.int64)
    naive_part = aware_part
    naive = bool(pc.any(naive_rows).as_py())
    iso_zone: str | pa.Array | None = spec.timezone or mapping.timezone
    if spec.zone_column is not None:
        iso_zone = _need_zone(spec, mapping, "ISO times without a zone offset", table, out)
    if naive:
        naive_part, bad_naive = _parse_rows(
            pc.if_else(naive_rows, iso, pa.scalar(None, pa.string())), pa.timestamp("us")
        )
        some_read = len(bad_naive) < int(pc.sum(pc.cast(naive_rows, pa.int64())).as_py() or 0)
        if iso_zone is None and some_read and not pc.any(has_offset).as_py():
            # a column of naive times: the mapping's mistake (one of no times at all is its rows')
            _need_zone(spec, mapping, "ISO times without a zone offset", table, out)
    bad = np.union1d(bad_aware, bad_naive).astype(np.int64)
    if len(bad):
        out.rows(name, bad, "an ISO 8601 time (e.g. 2023-01-01T12:00:00Z)", values_at(col, bad))
    if naive and iso_zone is None:
        # Some rows carry an offset, these do not, and the mapping gives no zone: a problem of each such row
        # (an export that lost the offset of a few), named like every other row problem, never guessed.
        zoneless = np.setdiff1d(np.flatnonzero(naive_rows.to_numpy(zero_copy_only=False)), bad_naive)
        out.rows(
            name,
            zoneless,
            "an ISO 8601 time with a zone offset, as the other rows have (e.g. 2023-01-01T12:00:00Z), or a "
            f"`timezone` for its naive times in the mapping ('{spec.path}.timezone' or top-level)",
            values_at(col, zoneless),
        )
    elif naive:
        assert iso_zone is not None
        local = _localize(naive_part, col, iso_zone, spec, out)
        result = pc.if_else(has_offset, aware_part, local)
    return result


def _named_zones(spec: FieldSpec, col: pa.Array, name: str, out: Problems) -> pa.Array:
    """Times whose %Z names a zone of ``zone_names`` (``2024-10-27 02:20:00 CEST``): each name is read as the
    offset it stands for, so the hour a clock change repeats is the one the file says; a name not in
    ``zone_names`` is a problem of its row."""
    assert spec.format is not None and spec.zone_names is not None
    names = sorted(spec.zone_names, key=len, reverse=True)  # (CEST before CET; any case: cest, Cest)
    pattern = r"(?i)\b(" + "|".join(re.escape(n) for n in names) + r")\b"  # (RE2: no lookbehind)
    text = col
    for zone in names:
        text = pc.replace_substring_regex(text, rf"(?i)\b{re.escape(zone)}\b", spec.zone_names[zone])
    known = pc.fill_null(pc.match_substring_regex(col, pattern), False)
    parsed, read, fmt, fraction = _strptime(text, spec.format.replace("%Z", "%z"))
    bad = np.flatnonzero(
        pc.and_(pc.is_valid(col), pc.or_(pc.invert(known), pc.is_null(parsed))).to_numpy(False)
    )
    rolled = _rolled_over(read, parsed, fmt)
    bad = np.union1d(bad, rolled).astype(np.int64)
    if len(bad):
        zones = ", ".join(names)
        out.rows(
            name,
            bad,
            f"a time in the format '{spec.format}' with a zone of zone_names ({zones})",
            values_at(col, bad),
        )
        mask = np.zeros(len(col), dtype=bool)
        mask[bad] = True
        parsed = pc.if_else(pa.array(mask), pa.scalar(None, parsed.type), parsed)
    if fraction is not None:
        parsed = pc.add(parsed, fraction)
    return pc.cast(parsed, TIMESTAMP)
