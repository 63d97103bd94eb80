"""Import mappings: a declarative YAML file saying how a foreign CSV or Parquet file becomes payfm events.

The file is parsed and checked here, before any data is read, into frozen dataclasses that
:mod:`payfm.events.importer` executes. Every mistake raises :class:`~payfm.errors.ConfigError` naming the
mapping file and the key path, what was expected and what was received (with a nearest-name suggestion for
misspelt keys and fields). The format is documented field by field in docs/import.md.

Example:
    >>> m = parse_mapping({"table": "refunds", "columns": {
    ...     "refund_id": {"column": "id"}, "charge_id": {"column": "charge"},
    ...     "created": {"column": "ts", "unit": "s"}, "amount": {"column": "amt", "scale": 100},
    ...     "currency": {"value": "usd"}, "reason": {"value": "requested_by_customer"}}}, "m.yaml")
    >>> m.fields["amount"].scale, m.source_columns()
    (100.0, ('amt', 'charge', 'id', 'ts'))
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import yaml

from payfm.errors import ConfigError
from payfm.events.cards import contains_card_number, shown_text
from payfm.events.currency import MINOR_UNITS
from payfm.events.import_format import (
    COMMAS,
    CSV_KEYS,
    PLAIN,
    CsvFormat,
    NumberFormat,
    ZoneColumn,
    parse_csv_block,
    parse_numbers,
)
from payfm.events.import_text import convert_option
from payfm.events.mapping_cards import check_card_columns, no_card_columns
from payfm.events.mapping_join import JoinSpec, parse_join
from payfm.events.mapping_times import TIME_KEYS, time_options, zone_name
from payfm.events.mapping_yaml import MappingLoader, yaml_problem
from payfm.events.schema import (
    DISPUTE_REASONS,
    EFW_FRAUD_TYPES,
    PAYMENT_TABLES,
    RULES,
    DomainError,
    schema_of,
)
from payfm.events.validate import shown_number

Scalar = str | int | float | bool
Kind = Literal["column", "columns", "value", "hash"]
CardTransform = Literal["fingerprint", "bin", "last4", "brand"]

TRANSFORMS: tuple[str, ...] = ("fingerprint", "bin", "last4", "brand")
DELAY_UNITS: dict[str, timedelta] = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
# The longest label ``delay``: ten years. Card networks' dispute windows are at most 540 days; a longer delay
# is a mistake of the mapping (and one of millions of days would date outcomes past any time the log holds).
MAX_DELAY = timedelta(days=3650)
LABEL_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    # label table -> (the key naming its category field, the allowed values)
    "disputes": ("reason", DISPUTE_REASONS),
    "early_fraud_warnings": ("fraud_type", EFW_FRAUD_TYPES),
}

_TOP_KEYS = (
    "table",
    "description",
    "timezone",
    "csv",
    "keep_rows",
    "join",
    "columns",
    "drop",
    "no_card_numbers",
    "labels",
)
_SOURCE_KEYS = ("column", "columns", "value", "hash")
# Options allowed per kind of target field (besides the source keys).
_TEXT = ("separator", "prefix", "transform", "convert", "map", "default", "keep_unmapped", "case", "missing")
_OPTIONS: dict[str, tuple[str, ...]] = {
    "string": (*_TEXT, "strip"),
    "int": ("separator", "scale", "minor_units", "usd_cents", "sign", "decimal", "thousands"),
    "timestamp": ("separator", *TIME_KEYS),
}
_LABEL_KEYS = ("column", "when", "table", "reason", "fraud_type", "delay", "time")
_KEEP_KEYS = ("column", "when")


@dataclass(frozen=True)
class CurrencySource:
    """Where the currency of an amount comes from: a source column or one ISO code for the whole file."""

    column: str | None = None
    value: str | None = None


@dataclass(frozen=True)
class FieldSpec:
    """How one target field is computed from the source row (see docs/import.md for each option)."""

    target: str  # target field name (or "time" for a label's outcome time)
    path: str  # key path in the mapping file, for error messages, e.g. "columns.amount"
    target_type: Literal["string", "int", "timestamp"]
    kind: Kind
    columns: tuple[str, ...] = ()  # source columns read: one for "column", several for "columns" and "hash"
    value: Scalar | None = None  # the constant of kind "value"
    separator: str = " "  # joins "columns" into one text before parsing
    prefix: str = ""  # prepended to strings (useful for hashed ids: "ch_")
    transform: CardTransform | None = None
    # bin, last4 or brand of a masked card number (424242******4242): its column is not fingerprinted
    masked: bool = False
    convert: str | None = None  # email_domain or country (payfm.events.import_text), before case and map
    map: dict[str, str | None] | None = None  # source text -> target value (None: missing)
    default: str | None = None  # for values missing from ``map``; None: such values are errors
    keep_unmapped: bool = False  # values missing from ``map`` are kept as they are (after ``case``)
    missing: str | None = None  # the target value of an empty cell or a null (after ``map``)
    case: Literal["lower", "upper"] | None = None
    strip: bool = False  # whitespace at either end of the source text removed (fixed-width exports pad ids)
    scale: float | None = None  # multiply, then round half-even; the result must be integral
    minor_units: CurrencySource | None = None  # source is in major units of this currency
    usd_cents: CurrencySource | None = None  # source is in major units of this currency; convert to US cents
    negative: bool = False  # ``sign: negative``: the source writes the amount negative (a refund's -4.00)
    unit: str | None = None  # unit of numeric times: d, h, m, s, ms, us, ns (since the epoch or origin)
    origin_us: int | None = None  # numeric times count from this instant (UTC us), not the Unix epoch
    format: str | None = None  # strptime format of text times (default: ISO 8601)
    timezone: str | None = None  # zone of naive times (the mapping's file-wide zone if not given here)
    zone_column: ZoneColumn | None = None  # or each row's zone, from a source column
    ambiguous: str = (
        "error"  # a local time a DST change repeats: error, earliest, latest or infer (file order)
    )
    nonexistent: str = "error"  # a local time a DST change skips: error, earliest, latest or shift
    numbers: NumberFormat = PLAIN  # how numbers written as text are (the csv block's, or the field's own)
    zone_names: dict[str, str] | None = None  # %Z names -> the offsets they stand for ({CET: "+01:00"})

    @property
    def column(self) -> str:
        """The single source column (kinds "column" only)."""
        return self.columns[0]

    @property
    def read_columns(self) -> tuple[str, ...]:
        """Every source column the field reads: its own, a currency's and a zone's columns."""
        extra = [
            c.column for c in (self.minor_units, self.usd_cents) if c is not None and c.column is not None
        ]
        if self.zone_column is not None:
            extra.append(self.zone_column.column)
        return (*self.columns, *(c for c in extra if c not in self.columns))

    @property
    def source(self) -> str:
        """The source as problems key it: the column, several joined by '+', or a constant's key path."""
        return "+".join(self.columns) if self.columns else f"{self.path}.value"

    @property
    def columns_text(self) -> str:
        """The source columns in words: ``column 'ts'``, ``columns 'day' and 'time'``."""
        names = [f"'{shown_text(c)}'" for c in self.columns]  # a file's own names: escaped
        if len(names) == 1:
            return f"column {names[0]}"
        return f"columns {', '.join(names[:-1])} and {names[-1]}"

    @property
    def where(self) -> str:
        """Where a problem of this field is, as a message names it: the file's own column(s), and the target
        field where it differs; a constant by its key path. A label's outcome time names only its columns
        (its messages name the label).

        >>> m = parse_mapping({"table": "refunds", "columns": {
        ...     "refund_id": {"hash": ["id", "ts"]}, "charge_id": "charge_id",
        ...     "created": {"columns": ["d", "t"]}, "amount": {"column": "amt", "scale": 100},
        ...     "currency": {"value": "usd"}, "reason": {"value": "duplicate"}}}, "m.yaml")
        >>> for spec in m.fields.values():
        ...     print(spec.where)
        columns 'id' and 'ts' (hashed into refund_id)
        column 'charge_id'
        columns 'd' and 't' (created)
        column 'amt' (amount)
        the constant 'columns.currency.value'
        the constant 'columns.reason.value'
        """
        if self.kind == "value":
            return f"the constant '{self.path}.value'"
        if not self.path.startswith("columns."):
            return self.columns_text
        if self.kind == "hash":
            return f"{self.columns_text} (hashed into {self.target})"
        if self.kind == "column" and self.column == self.target:
            return self.columns_text
        return f"{self.columns_text} ({self.target})"


@dataclass(frozen=True)
class RowFilter:
    """``keep_rows``: only the rows whose ``column`` holds one of ``when`` are imported (matched as labels
    are: numbers as numbers, text case-insensitively)."""

    path: str
    column: str
    when: tuple[Scalar, ...]


@dataclass(frozen=True)
class LabelSpec:
    """A label column turned into outcome events (disputes or early fraud warnings) for matching rows."""

    path: str
    column: str
    when: tuple[Scalar, ...]  # source values meaning "this charge has the outcome"
    table: str  # "disputes" or "early_fraud_warnings"
    category: str  # the dispute reason or the EFW fraud type
    delay: timedelta | None  # outcome time = charge created + delay (when the source has no outcome time)
    time: FieldSpec | None  # or the outcome time from source columns


@dataclass(frozen=True)
class Mapping:
    """A parsed, checked import mapping."""

    name: str  # the mapping file, as shown in messages
    table: str
    fields: dict[str, FieldSpec]
    drop: tuple[str, ...] = ()
    labels: tuple[LabelSpec, ...] = ()
    timezone: str | None = None
    description: str = ""
    fingerprinted: frozenset[str] = field(default_factory=frozenset)
    csv: CsvFormat = COMMAS  # the CSV separator, and how the file's numbers are written
    keep_rows: tuple[RowFilter, ...] = ()  # every one must match for a row to be imported
    # columns declared to hold no card numbers (processor references, card aliases): not scanned, never stored
    no_card_numbers: tuple[str, ...] = ()
    join: JoinSpec | None = None  # the columns of a second file, matched by a key (payfm.events.mapping_join)

    def source_columns(self) -> tuple[str, ...]:
        """Every source column the mapping reads (fields, labels, keep_rows, the join's), sorted."""
        used: set[str] = {self.join.column} if self.join is not None else set()
        for spec in self.fields.values():
            used.update(spec.read_columns)
        for label in self.labels:
            used.add(label.column)
            if label.time is not None:
                used.update(label.time.read_columns)
        used.update(f.column for f in self.keep_rows)
        return tuple(sorted(used))

    def source_path(self, column: str) -> str:
        """The key path of the first place that reads source ``column`` (for error messages)."""
        for spec in self.fields.values():
            if column in spec.read_columns:
                return spec.path
        for label in self.labels:
            if column == label.column or (label.time is not None and column in label.time.read_columns):
                return label.path
        if self.join is not None and column == self.join.column:
            return "join.column"
        return next((f.path for f in self.keep_rows if f.column == column), "drop")


# ---- helpers ---------------------------------------------------------------------------------------------
class _Ctx:
    """The mapping file name, so every error names it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def error(self, path: str, expected: str, received: object) -> ConfigError:
        got = received if isinstance(received, str) and received.startswith("<") else _show(received)
        return ConfigError(f"{self.name}: '{path}': expected {expected}; received {got}.")

    def keys(self, path: str, data: dict[str, Any], allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                hint = _suggest(str(key), allowed)
                raise self.error(
                    f"{path}.{key}" if path else str(key),
                    "one of " + ", ".join(allowed) + hint,
                    f"<an unknown key {str(key)!r}>",
                )


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _suggest(name: str, options: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_of(t: pa.DataType) -> Literal["string", "int", "timestamp"]:
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_integer(t):
        return "int"
    return "string"


def parse_delay(text: object) -> timedelta:
    """A delay such as ``30d``, ``12h``, ``90m``, ``45s`` or ``2w`` of at most :data:`MAX_DELAY` (3650d) as a
    timedelta; ValueError otherwise (its text says what was expected).

    >>> parse_delay("30d")
    datetime.timedelta(days=30)
    >>> parse_delay("3651d")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: a duration such as 30d, ..., of at most 3650d (ten years; ...)
    """
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text) if isinstance(text, str) else None
    if match is None:
        raise ValueError("a duration such as 30d, 12h, 90m, 45s or 2w")
    unit = DELAY_UNITS[match.group(2)]
    # (compared as a count of units: 999999999999w is no timedelta at all)
    if int(match.group(1)) > MAX_DELAY // unit:
        raise ValueError(
            f"a duration such as 30d, 12h, 90m, 45s or 2w, of at most {MAX_DELAY.days}d (ten years; card "
            "networks' dispute windows are at most 540 days)"
        )
    return int(match.group(1)) * unit


def _text(ctx: _Ctx, path: str, value: object) -> str:
    """A string constant for a string field; numbers become text; YAML booleans (yes/no/NO...) are refused."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ctx.error(
            path, "a text value (quote it in YAML: 'NO', 'yes' and 'on' are booleans otherwise)", value
        )
    return str(value)


def _column_name(ctx: _Ctx, path: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ctx.error(path, "a source column name", value)
    return value


def _currency(ctx: _Ctx, path: str, value: object) -> CurrencySource:
    if isinstance(value, dict) and len(value) == 1 and "column" in value:
        return CurrencySource(column=_column_name(ctx, path + ".column", value["column"]))
    if isinstance(value, dict) and len(value) == 1 and "value" in value:
        value = value["value"]
        path += ".value"
    if isinstance(value, str) and value.lower() in MINOR_UNITS:
        return CurrencySource(value=value.lower())
    raise ctx.error(path, "{column: NAME} or an ISO 4217 code such as usd, eur, jpy", value)


# ---- fields ----------------------------------------------------------------------------------------------
def _field(
    ctx: _Ctx,
    path: str,
    target: str,
    target_type: Literal["string", "int", "timestamp"],
    data: object,
    numbers: NumberFormat = PLAIN,
) -> FieldSpec:
    """The field ``target`` at ``path``; ``numbers``: how the file writes numbers (the csv block's)."""
    if isinstance(data, str):
        data = {"column": data}  # shorthand: `target: source_column`
    if not isinstance(data, dict):
        raise ctx.error(path, "a mapping such as {column: NAME} or {value: CONSTANT}", data)
    allowed = _SOURCE_KEYS + _OPTIONS[target_type]
    ctx.keys(path, data, allowed)
    sources = [k for k in _SOURCE_KEYS if k in data]
    if len(sources) != 1:
        raise ctx.error(path, "exactly one of column, columns, value, hash", f"<{len(sources)} of them>")
    kind: Kind = sources[0]  # type: ignore[assignment]
    raw = data[kind]
    opts: dict[str, Any] = {}
    columns: tuple[str, ...] = ()
    value: Scalar | None = None
    if kind == "column":
        columns = (_column_name(ctx, f"{path}.column", raw),)
    elif kind in ("columns", "hash"):
        if not isinstance(raw, list) or not raw:
            raise ctx.error(f"{path}.{kind}", "a non-empty list of source column names", raw)
        columns = tuple(_column_name(ctx, f"{path}.{kind}[{i}]", c) for i, c in enumerate(raw))
        if kind == "hash" and target_type != "string":
            raise ctx.error(
                f"{path}.hash", f"a text field (hash gives text ids); '{target}' is {target_type}", "<hash>"
            )
    else:
        if target_type == "string":
            value = _text(ctx, f"{path}.value", raw)
        elif target_type == "int":
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise ctx.error(f"{path}.value", "an integer", raw)
            value = raw
        else:
            if not isinstance(raw, str):
                raise ctx.error(f"{path}.value", "an ISO 8601 time with a zone offset, quoted", raw)
            value = raw
    if "separator" in data:
        if kind != "columns" or not isinstance(data["separator"], str):
            raise ctx.error(f"{path}.separator", "a text, together with `columns`", data["separator"])
        opts["separator"] = data["separator"]
    if "prefix" in data:
        opts["prefix"] = _text(ctx, f"{path}.prefix", data["prefix"])
    if "transform" in data:
        t = data["transform"]
        if t not in TRANSFORMS:
            raise ctx.error(
                f"{path}.transform", "one of " + ", ".join(TRANSFORMS) + _suggest(str(t), TRANSFORMS), t
            )
        if kind != "column":
            raise ctx.error(f"{path}.transform", "a transform of one source `column`", f"<{kind}>")
        if any(k in data for k in ("map", "default", "keep_unmapped", "case", "prefix", "strip", "missing")):
            raise ctx.error(
                path,
                "a card transform alone (no map, default, keep_unmapped, case, prefix, strip or missing)",
                "<other options>",
            )
        opts["transform"] = t
    if "convert" in data:
        opts["convert"] = convert_option(f"{path}.convert", data, kind, ctx.error)
    if "map" in data:
        m = data["map"]
        if not isinstance(m, dict) or not m:
            raise ctx.error(f"{path}.map", "a non-empty mapping of source values to target values", m)
        opts["map"] = {  # a null target: the value means "missing" (an export's "N/A")
            _text(ctx, f"{path}.map", k): None if v is None else _text(ctx, f"{path}.map.{k}", v)
            for k, v in m.items()
        }
    if "default" in data:
        if "map" not in data:
            raise ctx.error(f"{path}.default", "`default` together with `map`", data["default"])
        opts["default"] = _text(ctx, f"{path}.default", data["default"])
    if "keep_unmapped" in data:
        keep = data["keep_unmapped"]
        if not isinstance(keep, bool):
            raise ctx.error(f"{path}.keep_unmapped", "true or false", keep)
        if keep and "map" not in data:
            raise ctx.error(f"{path}.keep_unmapped", "`keep_unmapped` together with `map`", "no `map`")
        if keep and "default" in data:
            raise ctx.error(
                f"{path}.keep_unmapped", "`keep_unmapped` or `default`, not both", "both (drop one)"
            )
        opts["keep_unmapped"] = keep
    if "missing" in data:
        opts["missing"] = _text(ctx, f"{path}.missing", data["missing"])
    if "strip" in data:
        if not isinstance(data["strip"], bool):
            raise ctx.error(f"{path}.strip", "true or false", data["strip"])
        if kind == "value":
            raise ctx.error(f"{path}.strip", "`strip` on source columns (column, columns or hash)", "<value>")
        opts["strip"] = data["strip"]
    if "case" in data:
        if data["case"] not in ("lower", "upper"):
            raise ctx.error(f"{path}.case", "lower or upper", data["case"])
        opts["case"] = data["case"]
    if "scale" in data:
        s = data["scale"]
        if isinstance(s, bool) or not isinstance(s, int | float) or not 0 < s < float("inf"):  # (not .nan)
            raise ctx.error(f"{path}.scale", "a positive number (100 turns dollars into cents)", s)
        opts["scale"] = float(s)
    if "sign" in data:
        if data["sign"] not in ("positive", "negative"):
            raise ctx.error(
                f"{path}.sign", "positive or negative (how the source writes the amount)", data["sign"]
            )
        if kind == "value":
            raise ctx.error(
                f"{path}.sign", "`sign` on source columns (a constant is written as stored)", "<value>"
            )
        opts["negative"] = data["sign"] == "negative"
    for key in ("minor_units", "usd_cents"):
        if key in data:
            opts[key] = _currency(ctx, f"{path}.{key}", data[key])
    if sum(k in data for k in ("scale", "minor_units", "usd_cents")) > 1:
        raise ctx.error(path, "at most one of scale, minor_units, usd_cents", "<several>")
    opts |= time_options(path, data, ctx.error)
    if any(k in data for k in ("decimal", "thousands")):
        opts["numbers"] = parse_numbers(path, data, numbers, ctx.error)
    elif target_type != "string" and kind != "value":
        opts["numbers"] = numbers
    if kind == "value" and opts and not set(opts) <= {"prefix"}:
        raise ctx.error(
            path, "no conversion options on a constant `value`", "<" + ", ".join(sorted(opts)) + ">"
        )
    return FieldSpec(
        target=target, path=path, target_type=target_type, kind=kind, columns=columns, value=value, **opts
    )


def _label(ctx: _Ctx, path: str, data: object, numbers: NumberFormat) -> LabelSpec:
    if not isinstance(data, dict):
        raise ctx.error(path, "a mapping with column, when, reason and delay (or time)", data)
    ctx.keys(path, data, _LABEL_KEYS)
    if "column" not in data:
        raise ctx.error(f"{path}.column", "the source column holding the label", "<nothing>")
    column = _column_name(ctx, f"{path}.column", data["column"])
    when = _when(ctx, path, data, "source value(s) that mean", "the outcome happened, e.g. 1")
    table = data.get("table", "disputes")
    if table not in LABEL_TABLES:
        raise ctx.error(f"{path}.table", "disputes or early_fraud_warnings", table)
    key, allowed = LABEL_TABLES[table]
    other = "fraud_type" if key == "reason" else "reason"
    if other in data:
        raise ctx.error(f"{path}.{other}", f"'{key}' for {table}", f"<{other}>")
    category = data.get(key, "fraudulent" if key == "reason" else "misc")
    if category not in allowed:
        raise ctx.error(
            f"{path}.{key}", "one of " + ", ".join(allowed) + _suggest(str(category), allowed), category
        )
    if ("delay" in data) == ("time" in data):
        raise ctx.error(
            path,
            "exactly one of delay (e.g. 30d) or time (a source time column)",
            "<both>" if "delay" in data else "<neither>",
        )
    delay = None
    time = None
    if "delay" in data:
        try:
            delay = parse_delay(data["delay"])
        except ValueError as e:
            raise ctx.error(f"{path}.delay", str(e), data["delay"]) from None
        if delay <= timedelta(0):
            # An outcome is always later than its charge (features count outcomes from their own time on).
            raise ctx.error(
                f"{path}.delay", "a positive delay (an outcome follows its charge)", data["delay"]
            )
    else:
        time = _field(ctx, f"{path}.time", "time", "timestamp", data["time"], numbers)
        if time.kind == "value" or time.kind == "hash":
            raise ctx.error(f"{path}.time", "a source `column` or `columns`", f"<{time.kind}>")
    return LabelSpec(path, column, when, table, category, delay, time)


def _when(ctx: _Ctx, path: str, data: dict[str, object], values: str, meaning: str) -> tuple[Scalar, ...]:
    """The ``when`` of a label or of ``keep_rows``: one value or a non-empty list of them (an empty one
    would silently match nothing)."""
    if "when" not in data:
        raise ctx.error(f"{path}.when", f"the {values} {meaning}", "<nothing>")
    when_raw = data["when"] if isinstance(data["when"], list) else [data["when"]]
    if not when_raw:
        one = values.replace("value(s)", "value").replace(" mean", " means")
        raise ctx.error(f"{path}.when", f"at least one {one} {meaning}", "<an empty list>")
    for i, w in enumerate(when_raw):
        if not isinstance(w, str | int | float | bool):
            raise ctx.error(f"{path}.when[{i}]", "a text, number or boolean", w)
    return tuple(when_raw)


def _keep_rows(ctx: _Ctx, data: object) -> tuple[RowFilter, ...]:
    """``keep_rows``: one ``{column, when}`` or a list of them (a row is kept when every one matches)."""
    items = data if isinstance(data, list) else [data]
    if not items:
        raise ctx.error("keep_rows", "a {column, when} or a non-empty list of them", "<an empty list>")
    filters = []
    for i, item in enumerate(items):
        path = f"keep_rows[{i}]" if isinstance(data, list) else "keep_rows"
        if not isinstance(item, dict):
            raise ctx.error(path, "a mapping such as {column: record_type, when: [Settled]}", item)
        ctx.keys(path, item, _KEEP_KEYS)
        if "column" not in item:
            raise ctx.error(
                f"{path}.column", "the source column that tells which rows to import", "<nothing>"
            )
        column = _column_name(ctx, f"{path}.column", item["column"])
        filters.append(RowFilter(path, column, _when(ctx, path, item, "value(s) of", "the rows to import")))
    return tuple(filters)


# ---- the file --------------------------------------------------------------------------------------------
def parse_mapping(data: object, name: str) -> Mapping:
    """Check the parsed YAML ``data`` of the mapping file ``name`` and return the :class:`Mapping`."""
    ctx = _Ctx(name)
    if not isinstance(data, dict):
        raise ctx.error("(top level)", "a mapping with table and columns", data)
    ctx.keys("", data, _TOP_KEYS)
    table = data.get("table")
    if table not in PAYMENT_TABLES:
        # reviews are written by the decision service only (docs/events.md): never generated or imported.
        why = " (reviews are written by the decision service, never imported)" if table == "reviews" else ""
        hint = _suggest(str(table), PAYMENT_TABLES)
        raise ctx.error("table", "one of " + ", ".join(PAYMENT_TABLES) + hint + why, table)
    schema = schema_of(table)
    names = schema.names
    if isinstance(data.get("timezone"), dict):
        raise ctx.error(
            "timezone",
            "one IANA zone name for the whole file (each row's zone from a column is given per field: "
            "columns.created.timezone: {column: tz})",
            data["timezone"],
        )
    timezone = zone_name(ctx.error, "timezone", data["timezone"]) if "timezone" in data else None
    csv = COMMAS
    if "csv" in data:
        if not isinstance(data["csv"], dict):
            raise ctx.error("csv", 'a mapping such as {separator: ";", decimal: ","}', data["csv"])
        ctx.keys("csv", data["csv"], CSV_KEYS)
        csv = parse_csv_block(data["csv"], ctx.error)
    columns = data.get("columns")
    if not isinstance(columns, dict) or not columns:
        raise ctx.error("columns", f"a mapping from fields of '{table}' to source expressions", columns)
    fields: dict[str, FieldSpec] = {}
    for target, spec in columns.items():
        if target not in names:
            hint = _suggest(str(target), names)
            raise ctx.error(
                f"columns.{target}", f"a field of '{table}'{hint}", f"<an unknown field {target!r}>"
            )
        typed = _type_of(schema.field(target).type)
        fields[target] = _field(ctx, f"columns.{target}", target, typed, spec, csv.numbers)
        _check_constant(ctx, fields[target], table, not schema.field(target).nullable)
        if fields[target].missing is not None:  # a value of every empty cell: checked once, as a constant
            as_value = dataclasses.replace(
                fields[target], kind="value", value=fields[target].missing, prefix=""
            )
            _check_constant(ctx, as_value, table, True, key="missing")
    for f in schema:
        if not f.nullable and f.name not in fields:
            raise ctx.error(
                f"columns.{f.name}",
                f"a source for the required field '{f.name}' of '{table}' (a column, or a constant `value`)",
                "<nothing>",
            )
    drop_raw = data.get("drop", [])
    if not isinstance(drop_raw, list):
        raise ctx.error("drop", "a list of source column names", drop_raw)
    drop = tuple(_column_name(ctx, f"drop[{i}]", c) for i, c in enumerate(drop_raw))
    labels_raw = data.get("labels", [])
    if not isinstance(labels_raw, list):
        raise ctx.error("labels", "a list of label specifications", labels_raw)
    if labels_raw and table != "charges":
        raise ctx.error("labels", "labels only when importing charges", f"<labels on '{table}'>")
    labels = tuple(_label(ctx, f"labels[{i}]", x, csv.numbers) for i, x in enumerate(labels_raw))
    keep = _keep_rows(ctx, data["keep_rows"]) if "keep_rows" in data else ()
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ctx.error("description", "a text", description)
    no_cards = no_card_columns(ctx.error, data.get("no_card_numbers", []))
    join = parse_join(ctx.error, data["join"]) if "join" in data else None
    mapping = Mapping(
        name,
        table,
        fields,
        drop,
        labels,
        timezone,
        description,
        csv=csv,
        keep_rows=keep,
        no_card_numbers=no_cards,
        join=join,
    )
    fingerprinted = frozenset(s.column for s in fields.values() if s.transform == "fingerprint")
    check_card_columns(ctx.error, mapping, fingerprinted)
    for column in drop:
        if column in mapping.source_columns():
            raise ctx.error(
                f"drop[{drop.index(column)}]",
                "columns the mapping does not use",
                f"<'{column}', used by '{mapping.source_path(column)}'>",
            )
    masked = {  # bin, last4 or brand of a column that is not fingerprinted: of masked numbers
        k: dataclasses.replace(spec, masked=True)
        for k, spec in fields.items()
        if spec.transform in ("bin", "last4", "brand") and spec.column not in fingerprinted
    }
    return dataclasses.replace(mapping, fingerprinted=fingerprinted, fields=fields | masked)


def _check_constant(ctx: _Ctx, spec: FieldSpec, table: str, required: bool, key: str = "value") -> None:
    """A constant ``value`` that the event table would refuse is the mapping's mistake: said once, naming its
    key, before the file is read (not on every row of it). The rules are validate_events' (a canonical form
    is taken, as validate_events takes it), and a card number is never shown."""
    if spec.kind != "value" or spec.value is None:
        return
    path = f"{spec.path}.{key}"
    rule = RULES.get(table, {}).get(spec.target)
    if isinstance(spec.value, int) and not isinstance(spec.value, bool):
        if rule is None or rule.min_value is None:
            return
        low, high = rule.min_value, rule.max_value
        if spec.value < low or (high is not None and spec.value > high):
            raise ConfigError(
                f"{ctx.name}: '{path}': expected {rule.expected()}; received {shown_number(spec.value)}."
            )
        return
    if spec.target_type != "string":
        return
    text = spec.prefix + str(spec.value)
    if contains_card_number(text):
        raise ConfigError(
            f"{ctx.name}: '{path}': expected no card numbers (a card number enters only through transform: "
            "fingerprint); received a full card number (not shown)."
        )
    if not text.strip():
        if required:
            raise ConfigError(
                f"{ctx.name}: '{path}': expected a value (required field); received an empty text."
            )
        return
    if rule is None:
        return
    if rule.canonical is not None:
        try:
            text = rule.canonical(text)
        except ValueError as e:  # (a DomainError describes an e-mail address, never quotes it)
            got = (e.hidden if isinstance(e, DomainError) else None) or rule.received(text)
            raise ConfigError(f"{ctx.name}: '{path}': expected {rule.expected()}; received {got}.") from None
    problem = rule.problem(text)
    if problem is not None:
        expected, hint = problem
        # (an id's or a free text's hint says where it is refused, as its received does: said once)
        got = f"{rule.received(text)}.{hint}" if hint and rule.text is None else f"{rule.received(text)}."
        raise ConfigError(f"{ctx.name}: '{path}': expected {expected}; received {got}")


def bundled_mappings() -> tuple[str, ...]:
    """Names of the mappings shipped with payfm (``payfm/mappings/<name>.yaml``)."""
    folder = resources.files("payfm").joinpath("mappings")
    return tuple(sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")))


def resolve_mapping(name_or_path: str | Path) -> Path:
    """The mapping file ``name_or_path``: an existing file, or the name of a bundled mapping (``sparkov``).

    >>> resolve_mapping("sparkov").name
    'sparkov.yaml'
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    text = str(name_or_path)
    if "/" not in text and not text.endswith((".yaml", ".yml")):
        bundled = resources.files("payfm").joinpath("mappings", f"{text}.yaml")
        if bundled.is_file():
            return Path(str(bundled))
    names = bundled_mappings()
    raise ConfigError(
        f"Mapping '{text}': expected a mapping file or a bundled mapping name ({', '.join(names)})"
        f"{_suggest(text, names)}; received a name that is neither."
    )


def load_mapping(name_or_path: str | Path) -> Mapping:
    """Read, parse and check a mapping file (or bundled mapping name); ConfigError names any mistake."""
    path = resolve_mapping(name_or_path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path.name}: expected a readable mapping file; received an error ({e})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{path.name}: expected UTF-8 text; received the byte 0x{data[e.start]:02x} on line {line}, "
            "which is not UTF-8 (Latin-1 or Windows-1252?). Save the mapping as UTF-8."
        ) from None
    try:
        parsed = yaml.load(text, Loader=MappingLoader)  # a SafeLoader
    except yaml.YAMLError as e:
        raise ConfigError(f"{path.name}: expected valid YAML; received {yaml_problem(e, text)}.") from None
    except RecursionError:
        raise ConfigError(f"{path.name}: expected valid YAML; received values nested too deeply.") from None
    return parse_mapping(parsed, path.name)
