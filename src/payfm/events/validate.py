"""Validation of event tables against the schema: the gate every input passes before it is stored.

One function, :func:`validate_events`, checks a table in this order and collects every problem before it
raises, so a user fixes a file in one round:
1. card numbers in any column (reported by row and column, never echoed);
2. missing and unexpected columns;
3. types (naive timestamps are rejected, never guessed);
4. empty and blank texts (missing: null in optional fields, a problem in required ones), nulls in required
   fields, canonical forms (IP addresses, e-mail domains), vocabularies, patterns, code lists (countries,
   currencies), the characters and lengths of ids and free text (:mod:`payfm.events.text`) and bounds;
5. facts between fields (a credential change at or before its charge) and unique ids.
All checks are vectorized Arrow compute; per-value Python runs only on rows already known to be bad, and on
the distinct values of a field with a canonical form that are not already in it (the returned table holds
the canonical values, so lists, rules and feature keys compare them as equal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.errors import ConfigError, PayfmError
from payfm.events.cards import card_number_rows, contains_card_number, mask_long_numbers, shown_text
from payfm.events.schema import ID_COLUMNS, ORDERED_TIMES, RULES, DomainError, schema_of
from payfm.inputs import arrow_table

_CHUNK = 4096
# A date-time as an export writes it (ISO 8601, or day/month/year with a time): quoted as written in
# messages, although its digits make a long number (2024-03-31 02:30:00 holds 14 digits).
_DATE = r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4})"
_CLOCK = r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[AaPp][Mm])?)?"
# a zone: Z, an offset, an abbreviation (CET, CEST, EST) or an IANA name (Europe/Amsterdam), as exports write
_ZONE = r"(?:\s?(?:[Zz]|[A-Za-z]{2,5}|[A-Za-z]+/[A-Za-z_]+(?:/[A-Za-z_]+)?|[+-]\d{2}(?::?\d{2})?))?"
_DATE_TIME = re.compile(rf"\s*{_DATE}{_CLOCK}{_ZONE}\s*")
# Digits of a second's fraction beyond microseconds (ISO text): floored away, as finer units are.
_SUB_MICROSECOND = r"(:\d\d[.,]\d{6})\d+"
_LONG_RUN = re.compile(r"\d{13,}")  # what no message shows (docs/serving.md): it could be a card number


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input. ``row`` is 1-based in the data (None: the whole column).

    ``where``, when given, is how the message names the column instead of ``column '<column>'``: an import
    names the file's own column and the target field computed from it (``column 'amt' (amount)``), while
    ``column`` keeps the name the check used.
    """

    column: str | None
    row: int | None
    expected: str
    received: str
    where: str | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.where is not None:
            where.append(self.where)
        elif self.column is not None:
            where.append(f"column '{shown_text(self.column)}'")
        prefix = ", ".join(where) + ": " if where else ""
        return f"{prefix}expected {self.expected}; received {self.received}"


class ValidationError(PayfmError):
    """The input does not conform; nothing was written. Carries the first problems and the total count."""

    def __init__(
        self, source: str, problems: list[Problem], total: int, shown: int = 5, kinds: int = 12
    ) -> None:
        self.source = source
        self.problems = problems
        self.total = total
        lines = [f"{source}: {total} problem(s); nothing was written."]
        # The first of each kind of problem (a column and what it expected), up to ``kinds``, then the next
        # ones up to ``shown`` in all: a file's every kind of mistake in one run, not its first rows' only.
        first: dict[tuple[str | None, str], int] = {}
        for i, p in enumerate(problems):
            first.setdefault((p.column, p.expected), i)
        picked = set(list(first.values())[:kinds])
        picked |= set([i for i in range(len(problems)) if i not in picked][: max(shown - len(picked), 0)])
        lines += [f"  {source}: {problems[i]}" for i in sorted(picked)]
        if total > len(picked):
            unseen = len(first) - len(set(first.values()) & picked)
            more = f" ({unseen} more kind(s) of problem among them)" if unseen > 0 else ""
            lines.append(f"  ... and {total - len(picked)} more{more}")
        super().__init__("\n".join(lines))


class _Collector:
    def __init__(self, row_base: int) -> None:
        self.problems: list[Problem] = []
        self.total = 0
        self.row_base = row_base

    def rows(self, column: str, rows: np.ndarray, expected: str, received: list[str] | str) -> None:
        """Record problems at 0-based ``rows``; ``received`` is one text for all or one per row."""
        self.total += len(rows)
        for k, r in enumerate(rows[:20]):
            text = received if isinstance(received, str) else received[k]
            self.problems.append(Problem(column, int(r) + self.row_base, expected, text))

    def column(self, column: str | None, expected: str, received: str) -> None:
        self.total += 1
        self.problems.append(Problem(column, None, expected, received))


def shown_value(value: object) -> str:
    """``value`` as a problem quotes it: long numbers inside a string masked (:func:`mask_long_numbers`; a
    number itself is checked by the card-number scan, and a row holding one is not shown), then cut.

    A text shaped like a date-time is shown as written (unless it holds a card number): a user must see the
    time that failed, not ``'2024-03-01T[card number removed]Z'``.

    >>> shown_value("2024-03-31 02:30:00"), shown_value("id 4111111111111111x")
    ("'2024-03-31 02:30:00'", "'id [card number removed]x'")
    """
    if isinstance(value, str):
        dated = _DATE_TIME.fullmatch(value) is not None and not contains_card_number(value)
        text = repr(value) if dated else mask_long_numbers(repr(value))
    elif isinstance(value, int | float):
        text = shown_number(value)
    else:
        text = mask_long_numbers(repr(value))
    return text if len(text) <= 40 else text[:37] + "..."


def shown_number(value: float) -> str:
    """A number as a problem quotes it: as written, unless that holds a run of 13 or more digits, which no
    message shows (docs/serving.md promises it of the decision service's errors: it could be a card number).
    Such a number is out of every bound anyway, and how many digits it has says what went wrong (a unit, a
    parsing error) better than the digits do; the decision service words a JSON integer too long for 64 bits
    alike.

    >>> shown_number(-1), shown_number(10**20), shown_number(-(10**13))
    ('-1', 'an integer of 21 digits', 'a negative integer of 14 digits')
    >>> shown_number(12345678901234.5), shown_number(-0.1234567890123456)
    ('a number of 14 digits and a fraction', 'a negative number with 16 digits after the point')
    """
    text = repr(value)
    if not _LONG_RUN.search(text):
        return text
    whole = int(abs(value))
    kind = "integer" if isinstance(value, int) else "number"
    article = "a negative" if value < 0 else ("an" if kind == "integer" else "a")
    if not _LONG_RUN.search(str(whole)):  # the run is in the fraction (0.1234567890123456)
        places = len(text.split(".", 1)[1].split("e")[0]) if "." in text else 0
        return f"{article} number with {places} digits after the point"
    fraction = "" if isinstance(value, int) or whole == abs(value) else " and a fraction"
    return f"{article} {kind} of {len(str(whole))} digits{fraction}"


def floor_to_microseconds(text: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """ISO 8601 texts with the digits of a second's fraction beyond the sixth dropped: the contract floors
    finer units to microseconds (docs/events.md), where Arrow's parser refuses them.

    >>> floor_to_microseconds(pa.array(["2024-03-01T10:00:00.1234567Z"])).to_pylist()
    ['2024-03-01T10:00:00.123456Z']
    """
    return pc.replace_substring_regex(text, _SUB_MICROSECOND, r"\1")


def blank_rows(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """0-based rows of the text column ``col`` that are empty or only whitespace (as ``str.isspace`` says)."""
    blank = pc.or_(pc.equal(col, ""), pc.utf8_is_space(col))
    return np.flatnonzero(pc.fill_null(blank, False).to_numpy(zero_copy_only=False))


def _cast(col: pa.ChunkedArray, target: pa.DataType, name: str, out: _Collector) -> pa.ChunkedArray | None:
    """Cast ``col`` to ``target``; on failure record the bad rows (found chunk by chunk) and return None."""
    if pa.types.is_timestamp(target):
        if pa.types.is_timestamp(col.type):
            if col.type.tz is None:
                out.column(
                    name,
                    "timezone-aware timestamps (UTC)",
                    f"naive timestamps ({col.type}); give the zone in the import mapping",
                )
                return None
            # Instants are already absolute; finer units are floored to microseconds (the contract).
            return pc.cast(col, target, safe=False)
        if pa.types.is_date(col.type):
            out.column(name, "timestamps with a time zone", f"dates ({col.type})")
            return None
        if pa.types.is_string(col.type):
            col = floor_to_microseconds(col)
    if pa.types.is_integer(target) and pa.types.is_floating(col.type):
        values = col.to_numpy()
        bad = np.flatnonzero(~np.isnan(values) & (np.floor(values) != values))
        if len(bad):
            out.rows(name, bad, "an integer (minor units)", [shown_value(float(values[i])) for i in bad[:20]])
            return None
    cast, rows = try_cast(col, target)
    if cast is not None:
        return cast
    expected = _describe(target)
    if not len(rows):
        out.column(name, expected, f"values of type {col.type}")
        return None
    flat = col.combine_chunks()
    out.rows(name, rows, expected, [shown_value(flat[int(i)].as_py()) for i in rows[:20]])
    return None


CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)  # what a failed cast raises


def try_cast(col: Any, target: pa.DataType) -> tuple[Any, np.ndarray]:
    """``(col cast to target, no rows)``, or ``(None, the 0-based rows whose cells do not cast)`` (empty when
    each cell casts alone but the column does not: a type Arrow cannot cast from). On failure, pieces of
    ``_CHUNK`` cells are tried, single cells only inside a piece that fails."""
    try:
        return pc.cast(col, target), np.zeros(0, dtype=np.int64)
    except CAST_ERRORS:
        pass
    flat = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    bad: list[int] = []
    for start in range(0, len(flat), _CHUNK):
        piece = flat.slice(start, _CHUNK)
        try:
            pc.cast(piece, target)
            continue
        except CAST_ERRORS:
            pass
        for i in range(len(piece)):
            try:
                pc.cast(piece.slice(i, 1), target)
            except CAST_ERRORS:
                bad.append(start + i)
    return None, np.array(bad, dtype=np.int64)


def _describe(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "a timestamp with a zone offset (e.g. 2026-01-31T12:00:00Z)"
    if pa.types.is_integer(t):
        return "an integer"
    return f"a value of type {t}"


def _canonicalize(table: str, name: str, col: pa.ChunkedArray, out: _Collector) -> pa.ChunkedArray:
    """``col`` with each value in its field's canonical form (``FieldRule.canonical``); invalid values are
    recorded by row. The canonical function runs once per distinct value that does not already match
    ``canonical_form``, never per row: a million-row import with a few thousand addresses makes a few thousand
    calls, and a column already canonical comes back as it is."""
    rule = RULES.get(table, {}).get(name)
    if rule is None or rule.canonical is None:
        return col
    distinct = pc.unique(col).drop_null()
    if rule.canonical_form is not None:
        done = pc.match_substring_regex(distinct, "^(?:" + rule.canonical_form + ")$")
        distinct = distinct.filter(pc.invert(done))
    changed: dict[str, str] = {}
    bad: dict[str, str | None] = {}  # invalid value -> what to show instead of it (None: the value)
    for value in distinct.to_pylist():
        try:
            canonical = rule.canonical(value)
        except DomainError as e:
            bad[value] = e.hidden  # an e-mail address is described, never quoted
            continue
        except ValueError:
            bad[value] = None
            continue
        if canonical != value:
            changed[value] = canonical
    if bad:
        value_set = pa.array(list(bad), col.type)
        rows = np.flatnonzero(pc.is_in(col, value_set=value_set).to_numpy(zero_copy_only=False))
        got = [col[int(i)].as_py() for i in rows[:20]]
        shown = [
            "a full card number (not shown)" if contains_card_number(v) else bad[v] or shown_value(v)
            for v in got
        ]
        out.rows(name, rows, rule.expected(), shown)
    if not changed:
        return col
    index = pc.index_in(col, value_set=pa.array(list(changed), col.type))
    return pc.if_else(pc.is_null(index), col, pc.take(pa.array(list(changed.values()), col.type), index))


def _check_rules(table: str, name: str, col: pa.ChunkedArray, out: _Collector) -> None:
    rule = RULES.get(table, {}).get(name)
    if rule is None:
        return
    if rule.text is not None:  # an id or free text: its characters and length (its pattern says the same)
        for rows, expected, received in rule.text.faulty_rows(col):
            out.rows(name, rows, expected, received)
        return
    valid = pc.is_valid(col)
    if rule.choices is not None:
        ok = pc.is_in(col, value_set=pa.array(rule.choices))
        bad = np.flatnonzero((pc.and_(valid, pc.invert(ok))).to_numpy(zero_copy_only=False))
        if len(bad):
            got = [shown_value(col[int(i)].as_py()) for i in bad[:20]]
            out.rows(name, bad, rule.expected(), got)
    if rule.pattern is not None:
        ok = pc.match_substring_regex(col, "^(?:" + rule.pattern + ")$")
        bad = np.flatnonzero(pc.and_(valid, pc.invert(ok)).to_numpy(zero_copy_only=False))
        if len(bad):
            got = [shown_value(col[int(i)].as_py()) for i in bad[:20]]
            out.rows(name, bad, rule.expected(), got)
    if rule.codes is not None:
        ok = pc.is_in(col, value_set=pa.array(sorted(rule.codes())))
        bad = np.flatnonzero(pc.and_(valid, pc.invert(ok)).to_numpy(zero_copy_only=False))
        if len(bad):
            values = [col[int(i)].as_py() for i in bad[:20]]
            hint = rule.hint or (lambda _v: "")
            # The hint after the value: "'USD'. Currency codes are lower case: 'usd'" (a message ends in ".").
            got = [shown_value(v) + (f".{hint(v).removesuffix('.')}" if hint(v) else "") for v in values]
            out.rows(name, bad, rule.expected(), got)
    if rule.min_value is not None:
        outside = pc.less(col, rule.min_value)
        if rule.max_value is not None:
            outside = pc.or_(outside, pc.greater(col, rule.max_value))
        bad = np.flatnonzero(pc.fill_null(outside, False).to_numpy(zero_copy_only=False))
        if len(bad):
            got = [shown_value(col[int(i)].as_py()) for i in bad[:20]]
            out.rows(name, bad, rule.expected(), got)


def _blank_to_null(col: pa.ChunkedArray, field: pa.Field, out: _Collector) -> pa.ChunkedArray:
    """Empty and blank texts as null: a value that is not there. In an optional field that is what they mean
    (two guest charges with customer_id '' are not one customer), in a required one a problem; a CSV cell and
    a Parquet '' are read alike."""
    rows = blank_rows(col)
    if not len(rows):
        return col
    if not field.nullable:
        out.rows(field.name, rows, _REQUIRED, "an empty text")
    mask = np.zeros(len(col), dtype=bool)
    mask[rows] = True
    return pc.if_else(pa.array(mask), pa.scalar(None, col.type), col)


_REQUIRED = "a value (required field)"


def _check_order(table: str, columns: dict[str, pa.ChunkedArray], out: _Collector) -> None:
    """Times of one event that must be in order: a credential change is known at or before its charge (a
    later one would make ``since_credential_change`` read the future)."""
    for earlier, later, what in ORDERED_TIMES.get(table, ()):
        if earlier not in columns or later not in columns:
            continue
        after = pc.fill_null(pc.greater(columns[earlier], columns[later]), False)
        bad = np.flatnonzero(after.to_numpy(zero_copy_only=False))
        if len(bad):
            got = [
                f"{shown_value(columns[earlier][int(i)].as_py().isoformat())}, after the {later} "
                f"{shown_value(columns[later][int(i)].as_py().isoformat())}"
                for i in bad[:20]
            ]
            out.rows(earlier, bad, f"{what} at or before the event's '{later}'", got)


def _check_usd(table: str, columns: dict[str, pa.ChunkedArray], out: _Collector) -> None:
    """A charge in US dollars has its amount in US cents twice: ``amount_usd`` is ``amount`` (a model and
    every ``amount_usd`` rule read the second)."""
    if table != "charges" or not {"currency", "amount", "amount_usd"} <= columns.keys():
        return
    usd = pc.fill_null(pc.equal(columns["currency"], "usd"), False)
    for name in ("amount", "amount_usd"):  # (a value outside its own range is reported as that, once)
        usd = pc.and_(usd, pc.fill_null(pc.greater_equal(columns[name], 0), False))
    differ = pc.fill_null(pc.and_(usd, pc.not_equal(columns["amount"], columns["amount_usd"])), False)
    bad = np.flatnonzero(differ.to_numpy(zero_copy_only=False))
    if len(bad):
        got = [
            f"{shown_number(columns['amount_usd'][int(i)].as_py())} with amount "
            f"{shown_number(columns['amount'][int(i)].as_py())}"
            for i in bad[:20]
        ]
        out.rows("amount_usd", bad, "the charge's amount itself for a charge in usd (both in US cents)", got)


def _check_decline_code(table: str, columns: dict[str, pa.ChunkedArray], out: _Collector) -> None:
    """A decline code is the issuer's reason for a decline: it goes with outcome ``issuer_declined`` only, as
    the decision service's endpoints take it."""
    if table != "charges" or not {"outcome", "decline_code"} <= columns.keys():
        return
    declined = pc.fill_null(pc.equal(columns["outcome"], "issuer_declined"), False)
    stray = pc.and_(pc.is_valid(columns["decline_code"]), pc.invert(declined))
    bad = np.flatnonzero(stray.to_numpy(zero_copy_only=False))
    if len(bad):
        got = []
        for i in bad[:20]:
            outcome = columns["outcome"][int(i)].as_py()
            with_ = f"outcome {shown_value(outcome)}" if outcome is not None else "no outcome"
            got.append(f"{shown_value(columns['decline_code'][int(i)].as_py())} with {with_}")
        out.rows("decline_code", bad, "a decline code only with outcome 'issuer_declined'", got)


def card_number_problems(table: pa.Table, out: _Collector, skip: frozenset[str] = frozenset()) -> None:
    """Record every (row, column) holding a full card number, without the number."""
    for name in table.column_names:
        if name in skip:
            continue
        rows = card_number_rows(table.column(name))
        if len(rows):
            out.rows(name, rows, "no card numbers", "a full card number (not shown)")


def _arrow_input(table: Any, source: str, row_base: int) -> pa.Table:
    """``table`` of :func:`validate_events` as Arrow (:func:`payfm.inputs.arrow_table`: a pandas or Polars
    DataFrame converted; another kind a ConfigError). A pandas column Arrow cannot convert (values of mixed
    types) is a problem of the input like the others: a :class:`ValidationError` naming the column, the
    values it quotes cut short and without card numbers."""
    try:
        return arrow_table(table, "table", "validate_events")
    except ConfigError:
        if type(table).__module__.split(".")[0] != "pandas":
            raise
    out = _Collector(row_base)
    for name in table.columns:
        try:
            pa.array(table[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
            why = shown_text(mask_long_numbers(str(e).splitlines()[0]), 160)
            out.column(str(name), "values of one type (a DataFrame column Arrow converts)", why)
    if not out.total:
        out.column(None, "a DataFrame Arrow converts", "one it cannot")
    raise ValidationError(source, out.problems, out.total)


def validate_events(table_name: str, table: pa.Table, source: str = "input", row_base: int = 1) -> pa.Table:
    """Check ``table`` against the schema of ``table_name`` and return it cast to that exact schema.
    ``table`` is a pyarrow Table (a RecordBatch, a pandas or Polars DataFrame is converted first).

    Raises :class:`ValidationError` listing the problems (row numbers are 0-based positions + ``row_base``).

    >>> import pyarrow as pa
    >>> t = pa.table({"refund_id": ["re_1"], "charge_id": ["ch_1"], "created": ["2026-01-02T03:04:05Z"],
    ...               "amount": [500], "currency": ["usd"], "reason": ["duplicate"]})
    >>> validate_events("refunds", t).column("created").type
    TimestampType(timestamp[us, tz=UTC])
    """
    schema = schema_of(table_name)
    table = _arrow_input(table, source, row_base)
    out = _Collector(row_base)
    card_number_problems(table, out)
    present = set(table.column_names)
    for name in table.column_names:
        if schema.get_field_index(name) < 0:
            out.column(name, f"only the columns of '{table_name}'", "an unexpected column")
    columns: dict[str, pa.ChunkedArray] = {}
    for field in schema:
        if field.name not in present:
            if field.nullable:
                columns[field.name] = pa.chunked_array([pa.nulls(table.num_rows, field.type)])
            else:
                out.column(field.name, "a required column", "no such column")
            continue
        cast = _cast(table.column(field.name), field.type, field.name, out)
        if cast is None:
            continue
        if not field.nullable and cast.null_count:
            bad = np.flatnonzero(pc.is_null(cast).to_numpy(zero_copy_only=False))
            out.rows(field.name, bad, _REQUIRED, "null")
        if pa.types.is_string(field.type):
            cast = _blank_to_null(cast, field, out)
        cast = _canonicalize(table_name, field.name, cast, out)
        _check_rules(table_name, field.name, cast, out)
        columns[field.name] = cast
    _check_order(table_name, columns, out)
    _check_usd(table_name, columns, out)
    _check_decline_code(table_name, columns, out)
    id_column = ID_COLUMNS[table_name]
    if id_column in columns:
        ids = columns[id_column]
        if pc.count_distinct(ids).as_py() != len(ids) - ids.null_count:  # (a null id: said as missing)
            counts = pc.value_counts(ids)
            repeated = pc.and_(pc.greater(counts.field("counts"), 1), pc.is_valid(counts.field("values")))
            dup_values = pc.filter(counts.field("values"), repeated)
            bad = np.flatnonzero(pc.is_in(ids, value_set=dup_values).to_numpy(zero_copy_only=False))
            out.rows(id_column, bad, "unique ids", [shown_value(ids[int(i)].as_py()) for i in bad[:20]])
    if out.total:
        raise ValidationError(source, out.problems, out.total)
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
