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

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from payfm.errors import ConfigError
from payfm.events import currency
from payfm.events.cards import card_number_rows, fingerprint, redact_card_numbers
from payfm.events.import_problems import (
    KEEP,
    Problems,
    raise_problems,
    repeat_count,
    repeat_filter,
    values_at,
)
from payfm.events.mapping import EPOCH_UNITS, CurrencySource, FieldSpec, LabelSpec, Mapping, load_mapping
from payfm.events.schema import ID_COLUMNS, RULES, TIMESTAMP, schema_of
from payfm.events.validate import ValidationError, blank_rows, floor_to_microseconds, validate_events
from payfm.events.workspace import Workspace

Progress = Callable[[str], None]

_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_INTEGER = r"^\s*[+-]?\d+\s*$"
_OFFSET = r"(Z|z|[+-]\d\d(:?\d\d)?)$"
_TIME_MAX_US = 4_102_444_800_000_000  # 2100-01-01 UTC: later (or pre-1970) times mean a wrong unit or format
_PLAUSIBLE = "a time between 1970 and 2100 (check the unit or format in the mapping)"
# Card brands by leading digits of the number (first match wins; checked in this order).
_BRANDS: tuple[tuple[str, str], ...] = (
    ("amex", r"^3[47]"),
    ("jcb", r"^35(2[89]|[3-8])"),
    ("diners", r"^3(0[0-5]|[689])"),
    ("visa", r"^4"),
    ("mastercard", r"^(5[1-5]|222[1-9]|22[3-9]|2[3-6]|27[01]|2720)"),
    ("discover", r"^(6011|64[4-9]|65)"),
    ("unionpay", r"^62"),
)
_OUTCOME_PREFIX = {"disputes": "dp_", "early_fraud_warnings": "efw_"}
_OUTCOME_ID = {"disputes": "dispute_id", "early_fraud_warnings": "efw_id"}


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
    Column names must be distinct (a ConfigError names the repeated one).
    """
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            _check_names(pq.read_schema(path).names, path)
            table = pq.read_table(path)
            is_csv = False
        elif name.endswith((".csv", ".csv.gz")):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
                header = next(csv.reader(f), [])
            convert = pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header}, null_values=[""], strings_can_be_null=True
            )
            table = pacsv.read_csv(path, convert_options=convert)
            is_csv = True
        else:
            raise ConfigError(
                f"Import source '{path}': expected a .csv, .csv.gz, .parquet or .pq file; "
                f"received '{path.suffix}'."
            )
    except (OSError, pa.ArrowInvalid, UnicodeDecodeError) as e:
        # A parser's message quotes the offending row: never echo a card number from it.
        raise ConfigError(
            f"Import source '{path}': expected a readable file; received an error "
            f"({redact_card_numbers(str(e))})."
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
            return ConfigError(
                f"{mapping.name}: '{mapping.source_path(column)}': expected a column of '{source}'{hint}; "
                f"received '{column}', which the file does not have."
            )
    return None


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
def _text(col: pa.Array) -> pa.Array:
    return col if pa.types.is_string(col.type) else pc.cast(col, pa.string())


def _source(spec: FieldSpec, table: pa.Table) -> pa.Array:
    """The source values of ``spec``: one column, or several joined as text."""
    if spec.kind == "columns":
        parts = [_text(table.column(c).chunk(0)) for c in spec.columns]
        return pc.binary_join_element_wise(*parts, spec.separator)
    col: pa.Array = table.column(spec.column).chunk(0)
    return col


def keyed_hash(parts: list[pa.Array], secret: bytes) -> pa.Array:
    """24 hex characters of SHA-256 over the secret and the parts' text, row by row (vectorized in DuckDB).

    Keyed with the workspace secret, so an id hashed from an account number cannot be reversed by trying
    every account number; nulls hash differently from empty texts.
    """
    n = len(parts[0])
    data = pa.table({**{f"c{i}": _text(p) for i, p in enumerate(parts)}, "row_": pa.array(np.arange(n))})
    inputs = ", ".join(f"coalesce(c{i}, chr(0))" for i in range(len(parts)))
    con = duckdb.connect()
    try:
        con.register("data", data)
        query = (
            f"SELECT substr(sha256('{secret.hex()}' || chr(31) || concat_ws(chr(31), {inputs})), 1, 24) AS h "
        )
        result = con.sql(query + "FROM data ORDER BY row_").to_arrow_table()
    finally:
        con.close()
    hashed: pa.Array = result.column("h").combine_chunks().cast(pa.string())
    return hashed


def _card_digits(col: pa.Array, spec: FieldSpec, out: Problems) -> pa.Array | None:
    """Card numbers as plain digit texts (spaces and dashes removed); bad values are reported, never shown."""
    if pa.types.is_floating(col.type):
        if out is not None:
            out.column(
                spec.column,
                "card numbers as text or integers",
                f"floating-point numbers ({col.type}), which lose digits",
            )
        return None
    digits = pc.replace_substring_regex(_text(col), r"[ -]", "")
    ok = pc.fill_null(pc.match_substring_regex(digits, r"^\d{8,19}$"), False)
    bad = np.flatnonzero(pc.and_(pc.is_valid(digits), pc.invert(ok)).to_numpy(False))
    if len(bad):
        if out is not None:
            out.rows(spec.column, bad, "a card number of 8-19 digits", "another value (not shown)")
        digits = pc.if_else(ok, digits, pa.scalar(None, pa.string()))
    return digits


def _card_transform(spec: FieldSpec, table: pa.Table, secret: bytes, out: Problems) -> pa.Array | None:
    # bin/last4/brand of the fingerprinted column report the same cells, which Problems shows once.
    digits = _card_digits(_source(spec, table), spec, out)
    if digits is None:
        return None
    if spec.transform == "bin":
        return pc.utf8_slice_codeunits(digits, 0, 6)
    if spec.transform == "last4":
        return pc.utf8_slice_codeunits(digits, -4)
    if spec.transform == "brand":
        brand = np.full(len(digits), "unknown", dtype=object)
        taken = np.zeros(len(digits), dtype=bool)
        for name, pattern in _BRANDS:
            hit = pc.fill_null(pc.match_substring_regex(digits, pattern), False).to_numpy(False) & ~taken
            brand[hit] = name
            taken |= hit
        return pa.array(brand, type=pa.string(), mask=~pc.is_valid(digits).to_numpy(False))
    # fingerprint: HMAC over the distinct cards only, then spread back to the rows.
    distinct = pc.drop_null(pc.unique(digits))
    fps = fingerprint(distinct, secret)
    taken_fp: pa.Array = pc.take(fps, pc.index_in(digits, value_set=distinct))
    return taken_fp


def _strings(
    spec: FieldSpec, table: pa.Table, secret: bytes, out: Problems, required: bool
) -> pa.Array | None:
    n = table.num_rows
    name = spec.columns[0] if len(spec.columns) == 1 else "+".join(spec.columns)
    if spec.kind == "value":
        return pa.repeat(pa.scalar(spec.prefix + str(spec.value)), n)
    if spec.kind == "hash":
        # Blank inputs hash as missing ones (a Parquet '' like a CSV empty cell), and a row with nothing to
        # hash has no id: guests without an account number must not all share one hashed customer_id.
        parts = [_blank_as_null(_text(table.column(c).chunk(0))) for c in spec.columns]
        nothing = pc.is_null(parts[0])
        for part in parts[1:]:
            nothing = pc.and_(nothing, pc.is_null(part))
        result = pc.if_else(nothing, pa.scalar(None, pa.string()), keyed_hash(parts, secret))
    elif spec.transform is not None:
        return _card_transform(spec, table, secret, out)
    else:
        text = _text(_source(spec, table))
        result = _blank_as_null(text)
        blank = blank_rows(text) if required else np.zeros(0, dtype=np.int64)
        if len(blank):  # (a CSV empty cell is null: validate_events reports it as such)
            out.rows(name, blank, "a value (required field)", "an empty text")
    if spec.case == "lower":
        result = pc.utf8_lower(result)
    elif spec.case == "upper":
        result = pc.utf8_upper(result)
    if spec.map is not None:
        keys = pa.array(list(spec.map), type=pa.string())
        index = pc.index_in(result, value_set=keys)
        mapped = pc.take(pa.array(list(spec.map.values()), type=pa.string()), index)
        missing = pc.and_(pc.is_valid(result), pc.is_null(index))
        if spec.default is not None:
            mapped = pc.if_else(missing, spec.default, mapped)
        elif spec.keep_unmapped:
            mapped = pc.if_else(missing, result, mapped)
        else:
            bad = np.flatnonzero(missing.to_numpy(False))
            if len(bad):
                out.rows(
                    name,
                    bad,
                    f"one of the keys of '{spec.path}.map' (or give a default, or keep_unmapped: true)",
                    values_at(result, bad),
                )
        result = mapped
    if spec.prefix:
        result = pc.binary_join_element_wise(spec.prefix, result, "")
    return result


def _blank_as_null(text: pa.Array) -> pa.Array:
    """Empty and blank texts as null, before case, map and prefix: a missing value stays missing
    (validate_events holds the same rule for the values it is handed)."""
    rows = blank_rows(text)
    if not len(rows):
        return text
    mask = np.zeros(len(text), dtype=bool)
    mask[rows] = True
    return pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), text)


def _floats(col: pa.Array, name: str, out: Problems) -> np.ndarray | None:
    """Numbers as float64 (NaN for null); text is parsed, and unparseable rows are reported (and NaN)."""
    if pa.types.is_string(col.type):
        ok = pc.fill_null(pc.match_substring_regex(col, _NUMBER), False)
        bad = np.flatnonzero(pc.and_(pc.is_valid(col), pc.invert(ok)).to_numpy(False))
        if len(bad):
            out.rows(name, bad, "a number", values_at(col, bad))
            col = pc.if_else(ok, col, pa.scalar(None, pa.string()))
        col = pc.cast(pc.utf8_trim_whitespace(col), pa.float64())
    elif pa.types.is_decimal(col.type) or pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        col = pc.cast(col, pa.float64())
    else:
        out.column(name, "numbers", f"values of type {col.type}")
        return None
    values: np.ndarray = pc.fill_null(col, np.nan).to_numpy(False)
    return values


def _factors(
    cur: CurrencySource, table: pa.Table, rates: Callable[[pa.Array], np.ndarray], out: Problems, path: str
) -> np.ndarray | None:
    if cur.value is not None:
        return rates(pa.array([cur.value]))
    assert cur.column is not None  # parse_mapping guarantees one of the two
    codes = _text(table.column(cur.column).chunk(0))
    factors = rates(codes)
    bad = np.flatnonzero(np.isnan(factors) & pc.is_valid(codes).to_numpy(False))
    if len(bad):
        out.rows(cur.column, bad, f"a currency code known to payfm (for '{path}')", values_at(codes, bad))
    return factors


def _ints(spec: FieldSpec, table: pa.Table, table_name: str, out: Problems) -> pa.Array | None:
    n = table.num_rows
    if spec.kind == "value":
        return pa.repeat(pa.scalar(spec.value, type=pa.int64()), n)
    col = _source(spec, table)
    if spec.scale is None and spec.minor_units is None and spec.usd_cents is None:
        return _as_integers(spec.target, col, out)
    values = _floats(col, spec.column, out)
    if values is None:
        return None
    if spec.scale is not None:
        factors: np.ndarray | None = np.full(n, spec.scale)
    elif spec.minor_units is not None:
        factors = _factors(spec.minor_units, table, currency.minor_unit_factors, out, spec.path)
    else:
        assert spec.usd_cents is not None
        factors = _factors(spec.usd_cents, table, currency.usd_cents_factors, out, spec.path)
    if factors is None:
        return None
    with np.errstate(over="ignore", invalid="ignore"):  # 1e308 * 100 is inf, reported just below
        scaled = values * factors
    # Values no int64 holds (1e30 dollars, an overflow to inf) are reported with the file's value and the
    # field's bounds, before a cast would turn them into -9223372036854775808.
    huge = np.flatnonzero(np.abs(np.nan_to_num(scaled, nan=0.0)) >= 2.0**63)
    if len(huge):
        rule = RULES.get(table_name, {}).get(spec.target)
        bounds = rule.expected() if rule is not None else "an integer of at most 64 bits"
        out.rows(
            spec.column,
            huge,
            f"{bounds} (minor units, after '{spec.path}' conversion)",
            values_at(col, huge),
            key="an integer of at most 64 bits",  # one report per cell when amount and amount_usd read it
        )
        scaled = scaled.copy()
        scaled[huge] = np.nan
    rounded = np.round(scaled)  # half-even
    if spec.usd_cents is None:
        # A scaled amount must be whole minor units; rounding only absorbs float noise (13.8 * 100).
        off = np.abs(scaled - rounded) > 1e-6 + 1e-9 * np.abs(scaled)
        bad = np.flatnonzero(off & ~np.isnan(scaled))
        if len(bad):
            out.rows(
                spec.column,
                bad,
                f"whole minor units after '{spec.path}' scaling (no fractions of a cent)",
                values_at(col, bad),
                key="whole minor units",  # one report per cell when amount and amount_usd read one column
            )
            rounded[bad] = np.nan
    nulls = np.isnan(rounded)
    return pa.array(np.where(nulls, 0, rounded).astype(np.int64), mask=nulls)


_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)
_PIECE = 4096  # cells cast at once while looking for those that do not


def _as_integers(name: str, col: pa.Array, out: Problems) -> pa.Array:
    """``col`` for the integer field ``name`` read as it is (no scale): itself when it casts as a whole
    (validate_events casts and bounds it); else int64 with the cells that do not cast reported (in
    validate_events' words) and null, so that validate_events checks the bounds of the cells that do: one
    cell 'x' used to hide every out-of-bounds value of the column, and the total was short."""
    try:
        pc.cast(col, pa.int64())
        return col
    except _CAST_ERRORS:
        pass
    ok = np.ones(len(col), dtype=bool)
    for start in range(0, len(col), _PIECE):  # the error path only
        piece = col.slice(start, _PIECE)
        try:
            pc.cast(piece, pa.int64())
            continue
        except _CAST_ERRORS:
            pass
        for i in range(len(piece)):
            try:
                pc.cast(piece.slice(i, 1), pa.int64())
            except _CAST_ERRORS:
                ok[start + i] = False
    if not ok.any():
        return col  # nothing casts (a column of another type): validate_events says how
    bad = np.flatnonzero(~ok)
    if pa.types.is_floating(col.type):  # a fraction of a minor unit, as validate_events words it
        values = col.to_numpy(zero_copy_only=False)[bad]
        fraction = np.isfinite(values) & (np.floor(values) != values)
        if fraction.any():
            out.rows(name, bad[fraction], "an integer (minor units)", values_at(col, bad[fraction]))
        bad = bad[~fraction]
    if len(bad):
        out.rows(name, bad, "an integer", values_at(col, bad))
    return pc.cast(pc.if_else(pa.array(ok), col, pa.scalar(None, col.type)), pa.int64())


def _need_zone(spec: FieldSpec, mapping: Mapping, what: str) -> str:
    zone = spec.timezone or mapping.timezone
    if zone is None:
        raise ConfigError(
            f"{mapping.name}: '{spec.path}.timezone': expected a time zone for the naive times of column "
            f"'{'+'.join(spec.columns)}' (set it here or as the top-level `timezone`; payfm never guesses); "
            f"received {what} and no zone."
        )
    return zone


def _localize(naive: pa.Array, text: pa.Array, zone: str, spec: FieldSpec, out: Problems) -> pa.Array | None:
    """Naive local times in ``zone`` to UTC; times that DST makes ambiguous or impossible are reported."""
    early = pc.assume_timezone(naive, zone, ambiguous="earliest", nonexistent="earliest")
    late = pc.assume_timezone(naive, zone, ambiguous="latest", nonexistent="latest")
    bad = np.flatnonzero(pc.fill_null(pc.not_equal(early, late), False).to_numpy(False))
    if len(bad):
        out.rows(
            "+".join(spec.columns),
            bad,
            f"a local time that exists once in {zone} (not in a DST change)",
            values_at(text, bad),
        )
        early = pc.if_else(pc.fill_null(pc.equal(early, late), True), early, pa.scalar(None, early.type))
    return pc.cast(early, TIMESTAMP)


def _parse_rows(text: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Cast ISO texts to ``target``: the result with nulls where parsing failed, and those rows."""
    try:
        return pc.cast(text, target), np.zeros(0, dtype=np.int64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values: list[object] = []
    bad: list[int] = []
    for i in range(len(text)):  # error path only: find the rows that do not parse
        try:
            values.append(pc.cast(text.slice(i, 1), target)[0].as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values.append(None)
            bad.append(i)
    return pa.array(values, type=target), np.array(bad, dtype=np.int64)


def _times(spec: FieldSpec, table: pa.Table, mapping: Mapping, out: Problems) -> pa.Array | None:
    """UTC microsecond times of ``spec``; times outside 1970-2100 (a wrong unit or format) are errors."""
    times = _convert_times(spec, table, mapping, out)
    if times is None or spec.kind == "value":
        return times
    micros = pc.cast(times, pa.int64())
    off = pc.or_(pc.less(micros, 0), pc.greater_equal(micros, _TIME_MAX_US))
    bad = np.flatnonzero(pc.fill_null(off, False).to_numpy(False))
    if len(bad):
        out.rows("+".join(spec.columns), bad, _PLAUSIBLE, values_at(_source(spec, table), bad))
        times = pc.if_else(pc.fill_null(off, False), pa.scalar(None, times.type), times)
    return times


def _convert_times(spec: FieldSpec, table: pa.Table, mapping: Mapping, out: Problems) -> pa.Array | None:
    n = table.num_rows
    name = "+".join(spec.columns)
    if spec.kind == "value":
        try:
            value = pc.cast(pa.array([spec.value]), TIMESTAMP)[0]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise ConfigError(
                f"{mapping.name}: '{spec.path}.value': expected an ISO 8601 time with a zone offset "
                f"(e.g. 2023-01-01T00:00:00Z); received {spec.value!r}."
            ) from None
        return pa.repeat(value, n)
    col = _source(spec, table)
    t = col.type
    if spec.unit is not None:
        if pa.types.is_string(t) and pc.all(pc.match_substring_regex(col, _INTEGER)).as_py() is not False:
            col = pc.cast(pc.utf8_trim_whitespace(col), pa.int64())
            t = col.type
        mul, div = EPOCH_UNITS[spec.unit]
        if pa.types.is_integer(t):
            ints = pc.cast(col, pa.int64())
            nulls = pc.is_null(ints).to_numpy(False)
            v = pc.fill_null(ints, 0).to_numpy(False)
            # Values that would overflow int64 microseconds are implausible anyway: report, don't crash.
            huge = np.flatnonzero(np.abs(v) > min(_TIME_MAX_US * div // mul, 2**62))
            if len(huge):
                out.rows(name, huge, _PLAUSIBLE, values_at(col, huge))
                v, nulls = v.copy(), nulls.copy()  # (Arrow's buffers are read-only)
                v[huge] = 0
                nulls[huge] = True
            return pa.array(v * mul // div, mask=nulls).cast(TIMESTAMP)
        values = _floats(col, name, out)
        if values is None:
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            micros_f = np.round(np.where(np.isnan(values), 0, values) * mul / div)
        # Beyond int64 microseconds (1e30 s) is implausible anyway: report the file's value, never cast it.
        huge = np.flatnonzero(np.abs(np.nan_to_num(micros_f, nan=0.0)) > 2.0**62)
        if len(huge):
            out.rows(name, huge, _PLAUSIBLE, values_at(col, huge))
        nulls = np.isnan(values) | (np.abs(np.nan_to_num(micros_f, nan=0.0)) > 2.0**62)
        return pa.array(np.where(nulls, 0, micros_f).astype(np.int64), mask=nulls).cast(TIMESTAMP)
    if pa.types.is_timestamp(t):
        if t.tz is not None:
            return pc.cast(col, TIMESTAMP, safe=False)
        return _localize(
            pc.cast(col, pa.timestamp("us"), safe=False),
            col,
            _need_zone(spec, mapping, f"naive timestamps ({t})"),
            spec,
            out,
        )
    if pa.types.is_date(t):
        zone = _need_zone(spec, mapping, f"dates ({t})")
        return _localize(pc.cast(pc.cast(col, pa.date32()), pa.timestamp("us")), col, zone, spec, out)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        raise ConfigError(
            f"{mapping.name}: '{spec.path}.unit': expected an epoch unit (s, ms, us, ns) for the numbers in "
            f"column '{name}'; received no unit."
        )
    col = _text(col)
    valid = pc.is_valid(col)
    if spec.format is not None:
        aware = "%z" in spec.format
        parsed = pc.strptime(col, format=spec.format, unit="us", error_is_null=True)
        bad = np.flatnonzero(pc.and_(valid, pc.is_null(parsed)).to_numpy(False))
        if len(bad):
            out.rows(name, bad, f"a time in the format '{spec.format}'", values_at(col, bad))
        if aware:
            return pc.cast(parsed, TIMESTAMP)
        zone = _need_zone(spec, mapping, f"times in the format '{spec.format}' without %z")
        return _localize(parsed, col, zone, spec, out)
    # ISO 8601: rows with an offset are absolute; rows without one need the zone.
    has_offset = pc.fill_null(pc.match_substring_regex(col, _OFFSET), False)
    naive_rows = pc.and_(valid, pc.invert(has_offset))
    iso = floor_to_microseconds(col)  # finer units are floored; messages quote ``col`` as written
    aware_part, bad_aware = _parse_rows(pc.if_else(has_offset, iso, pa.scalar(None, pa.string())), TIMESTAMP)
    result: pa.Array = aware_part
    bad_naive = np.zeros(0, dtype=np.int64)
    naive_part = aware_part
    zone = ""
    if pc.any(naive_rows).as_py():
        zone = _need_zone(spec, mapping, "ISO times without a zone offset")
        naive_part, bad_naive = _parse_rows(
            pc.if_else(naive_rows, iso, pa.scalar(None, pa.string())), pa.timestamp("us")
        )
    bad = np.union1d(bad_aware, bad_naive).astype(np.int64)
    if len(bad):
        out.rows(name, bad, "an ISO 8601 time (e.g. 2023-01-01T12:00:00Z)", values_at(col, bad))
    if pc.any(naive_rows).as_py():
        local = _localize(naive_part, col, zone, spec, out)
        result = pc.if_else(has_offset, aware_part, local)
    return result


def _fields(mapping: Mapping, table: pa.Table, secret: bytes, out: Problems) -> pa.Table:
    """The target table (only the mapped fields; validate_events adds nullable ones as null). Cells that could
    not be computed are reported and null; a field that failed as a whole (a column of the wrong type) is left
    out, so validate_events still checks every other field and row."""
    arrays: dict[str, pa.Array] = {}
    for target, spec in mapping.fields.items():
        out.field = target
        if spec.target_type == "timestamp":
            result = _times(spec, table, mapping, out)
        elif spec.target_type == "int":
            result = _ints(spec, table, mapping.table, out)
        else:
            required = not schema_of(mapping.table).field(target).nullable
            result = _strings(spec, table, secret, out, required)
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


# ---- labels ----------------------------------------------------------------------------------------------
_TRUE_WORDS = ("true", "t", "yes", "y", "1")
_FALSE_WORDS = ("false", "f", "no", "n", "0")


def _label_rows(label: LabelSpec, col: pa.Array, out: Problems) -> np.ndarray:
    """0-based rows whose label value is one of ``when``.

    Numbers compare as numbers, also in text (CSV ``1``, ``1.0`` and `` 1 `` all equal ``when: 1``), and text
    case-insensitively. When ``when`` holds only numbers or booleans the label is numeric, so a value that is
    neither a number nor a boolean word (``abc``, ``nan``) is reported by row rather than read as "no
    outcome"; with a text in ``when`` other values are categories of their own and make no event. Nulls make
    no event.
    """
    nums = [float(w) for w in label.when if isinstance(w, int | float) and not isinstance(w, bool)]
    bools = [w for w in label.when if isinstance(w, bool)]
    texts = [w.strip().lower() for w in label.when if isinstance(w, str)]
    if pa.types.is_boolean(col.type):
        wanted = bools + [w in _TRUE_WORDS for w in texts] + [n != 0 for n in nums]
        mask = pc.is_in(col, value_set=pa.array(wanted, type=pa.bool_()))
        return np.flatnonzero(pc.fill_null(mask, False).to_numpy(False))
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_decimal(col.type):
        numbers = pc.cast(col, pa.float64())
        texts_as_numbers = []
        for w in texts:
            try:
                texts_as_numbers.append(float(w))
            except ValueError:
                continue
        mask = pc.is_in(numbers, value_set=pa.array(nums + texts_as_numbers + [float(b) for b in bools]))
        return np.flatnonzero(pc.fill_null(mask, False).to_numpy(False))
    text = pc.utf8_lower(pc.utf8_trim_whitespace(_text(col)))
    is_number = pc.fill_null(pc.match_substring_regex(text, _NUMBER), False)
    number = pc.cast(pc.if_else(is_number, text, pa.scalar(None, pa.string())), pa.float64())
    wanted_numbers = nums + [1.0 for b in bools if b] + [0.0 for b in bools if not b]
    mask = pc.or_(
        pc.fill_null(pc.is_in(text, value_set=pa.array(texts, type=pa.string())), False),
        pc.fill_null(pc.is_in(number, value_set=pa.array(wanted_numbers, type=pa.float64())), False),
    )
    true_words = pc.is_in(text, value_set=pa.array(_TRUE_WORDS))
    false_words = pc.is_in(text, value_set=pa.array(_FALSE_WORDS))
    if True in bools:
        mask = pc.or_(mask, true_words)
    if False in bools:
        mask = pc.or_(mask, false_words)
    if not texts:
        # A numeric or boolean label: every value must be one the mapping can read as yes or no.
        known = pc.or_(pc.or_(mask, is_number if nums else pa.scalar(False)), pc.or_(true_words, false_words))
        if not nums:  # booleans only: numbers other than 1 and 0 mean nothing
            known = pc.or_(mask, pc.or_(true_words, false_words))
        bad = np.flatnonzero(pc.and_(pc.is_valid(text), pc.invert(known)).to_numpy(False))
        if len(bad):
            yes = ", ".join(repr(w) for w in label.when)
            out.rows(
                label.column,
                bad,
                f"a number, a boolean or an empty cell for '{label.path}' ({yes}: an outcome; other values: "
                "none)",
                values_at(col, bad),
            )
    return np.flatnonzero(pc.fill_null(mask, False).to_numpy(False))


def _early_outcomes(
    created: pa.Array | pa.ChunkedArray,
    charge_created: pa.Array | pa.ChunkedArray,
    rows: np.ndarray,
    column: str,
    what: str,
    out: Problems,
) -> np.ndarray:
    """Positions of outcomes at or before their charge's ``created``, reported at the file's ``rows``.

    An outcome is strictly later than its charge: features count it from its own time on, so one at the
    charge's instant (or before) would be counted by that charge's features and earlier ones (a leak), and
    the online engine, which sees it only after the charge, would disagree.
    """
    early = np.flatnonzero(pc.fill_null(pc.less_equal(created, charge_created), False).to_numpy(False))
    if len(early):
        got = [
            f"a time at or before the charge ({_iso(created[int(i)])}; "
            f"the charge: {_iso(charge_created[int(i)])})"
            for i in early[:KEEP]
        ]
        out.rows(column, rows[early], f"{what} later than the charge's time", got)
    return early


def _iso(value: pa.Scalar) -> str:
    return str(value.as_py().isoformat())


def _follow_charges(ws: Workspace, mapping: Mapping, events: pa.Table, out: Problems) -> None:
    """Outcome events imported as a table (refunds, disputes, early fraud warnings) must point at a charge of
    the workspace and be later than it (docs/features.md: an outcome is always later than its own charge)."""
    if "charge_id" not in events.column_names or not pa.types.is_string(events.column("charge_id").type):
        return
    ids = events.column("charge_id").combine_chunks()
    stored = ws.read("charges", columns=["charge_id", "created"])
    stored = stored.filter(pc.is_in(stored.column("charge_id"), value_set=ids))
    index = pc.index_in(ids, value_set=stored.column("charge_id").combine_chunks())
    unknown = np.flatnonzero(pc.and_(pc.is_valid(ids), pc.is_null(index)).to_numpy(False))
    if len(unknown):
        out.rows(
            _column_of(mapping, "charge_id"),
            unknown,
            "the charge_id of a charge in the workspace (import the charges first)",
            values_at(ids, unknown),
        )
    created = events.column("created") if "created" in events.column_names else None
    if created is None or created.type != TIMESTAMP:
        return
    charge_created = pc.take(stored.column("created"), index)
    rows = np.arange(events.num_rows)
    _early_outcomes(created, charge_created, rows, _column_of(mapping, "created"), "a time", out)


def _column_of(mapping: Mapping, target: str) -> str:
    """The source column(s) of ``target``, as problems name them (a constant: its key path)."""
    spec = mapping.fields[target]
    return "+".join(spec.columns) if spec.kind in ("column", "columns") else spec.path


def _outcomes(
    mapping: Mapping,
    table: pa.Table,
    charges: pa.Table,
    secret: bytes,
    out: Problems,
) -> dict[str, tuple[pa.Table, np.ndarray]]:
    """Outcome events per table, with the source rows they came from (to report problems by source row).

    ``charges`` is the validated table, or when it has problems the computed one: then the labels and outcome
    times are still checked, but no events are made (their problems would only repeat the charges').
    """
    valid = "created" in charges.column_names and not out.total
    parts: dict[str, list[tuple[pa.Table, np.ndarray]]] = {}
    for k, label in enumerate(mapping.labels):
        rows = _label_rows(label, table.column(label.column).chunk(0), out)
        take = pa.array(rows, type=pa.int64())
        picked = charges.take(take)
        if label.delay is not None:
            if not valid:
                continue
            created = pc.add(picked.column("created"), pa.scalar(label.delay, type=pa.duration("us")))
        else:
            assert label.time is not None
            times = _times(label.time, table, mapping, out)
            if times is None:
                continue
            created = pc.take(times, take)
            late = np.ones(len(rows), dtype=bool)
            missing = pc.is_null(created).to_numpy(False)
            if missing.any():
                out.rows(
                    "+".join(label.time.columns),
                    rows[missing],
                    f"an outcome time for '{label.path}'",
                    "null",
                )
            if "created" in picked.column_names:
                early = _early_outcomes(
                    created,
                    picked.column("created"),
                    rows,
                    "+".join(label.time.columns),
                    f"an outcome time for '{label.path}'",
                    out,
                )
                late[early] = False
            if not valid or missing.any() or not late.all():
                continue
        ids = keyed_hash(
            [picked.column("charge_id").combine_chunks(), pa.repeat(pa.scalar(str(k)), len(rows))], secret
        )
        data = {
            _OUTCOME_ID[label.table]: pc.binary_join_element_wise(_OUTCOME_PREFIX[label.table], ids, ""),
            "charge_id": picked.column("charge_id"),
            "created": created,
        }
        if label.table == "disputes":
            data |= {
                "reason": pa.repeat(pa.scalar(label.category), len(rows)),
                "amount": picked.column("amount"),
                "currency": picked.column("currency"),
            }
        else:
            data["fraud_type"] = pa.repeat(pa.scalar(label.category), len(rows))
        parts.setdefault(label.table, []).append((pa.table(data), rows))
    return {
        name: (pa.concat_tables([t for t, _ in items]), np.concatenate([r for _, r in items]))
        for name, items in parts.items()
    }


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
        _follow_charges(ws, mapping, charges, out)
    outcomes: dict[str, pa.Table] = {}
    for name, (events, rows) in _outcomes(mapping, table, charges, secret, out).items():
        try:
            outcomes[name] = validate_events(name, events, source=source)
        except ValidationError as e:
            out.absorb(e, rows)
            continue
        _existing(ws, name, outcomes[name], _OUTCOME_ID[name], out, rows)
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
