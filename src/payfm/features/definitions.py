"""The feature DSL: declarative definitions that both engines (offline SQL, online state) read.

Three kinds of feature:

- :class:`Aggregate`: an aggregation over the past events of an entity in a window. The events are the
  entity's charges (strictly before the charge in the total order ``(created, charge_id)``) or its outcome
  events (fraudulent disputes, EFWs, refunds: counted once their own ``created`` is ``<= t``).
- :class:`RequestFeature`: computed from the charge itself (USD amount, local hour, country mismatches).
- :class:`Derived`: arithmetic over other features (ratios, the amount's z-score against history).

Windows are tiled: a window ``w`` with resolution ``r`` at time ``t`` covers ``[floor(t / r) * r - w, t)``, so
its length is between ``w`` and ``w + r``. The resolution is part of the definition (and of the version hash);
the backfill computes exactly the same tiled value the online state serves with bounded memory.

Example:
    >>> from datetime import timedelta
    >>> f = Aggregate("card", "count", window=timedelta(hours=1))
    >>> f.name, f.resolution
    ('card.count_charges_1h', datetime.timedelta(seconds=60))
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any, Literal

import pyarrow as pa

from payfm.errors import ConfigError
from payfm.features.durations import (
    MAX_OFFSET,
    MAX_WINDOW,
    MIN_WINDOW,
    TilingError,
    default_resolution,
    format_duration,
    tiling_problem,
)
from payfm.features.durations import parse_duration as parse_duration  # (re-exported)
from payfm.features.names import check_feature_name

US = 1_000_000  # microseconds per second

# Entities: a name and the charge columns that key it (a pair has two).
ENTITIES: dict[str, tuple[str, ...]] = {
    "card": ("card_fingerprint",),
    "customer": ("customer_id",),
    "email": ("email_domain",),
    "ip": ("ip_address",),
    "device": ("device_id",),
    "merchant": ("merchant_id",),
    "bin": ("card_bin",),
    "card_merchant": ("card_fingerprint", "merchant_id"),
    "card_ip": ("card_fingerprint", "ip_address"),
}

# How a feature's description names an entity whose name does not say its key: the email entity is keyed
# by the e-mail address's domain (no event holds an address), a pair by both of its columns.
_ENTITY_SAYS = {
    "email": "e-mail domain",
    "card_merchant": "card and merchant pair",
    "card_ip": "card and IP pair",
}

# Event sources: charges, or outcome events of the entity's charges.
SOURCES = ("charges", "fraud_disputes", "efws", "refunds")
# The charge columns a processor reports after the decision (the authorization result, sent to the decision
# service by POST /v1/charges/{id}/authorization): a charge decided without them is counted by the filters
# on them when they come, at the charge's own time, as if it had carried them (the online engine's
# "authorization" update, :meth:`payfm.features.online.OnlineFeatures.apply_authorization`).
AUTHORIZATION = "authorization"
LATE_COLUMNS = ("outcome",)
LABEL_SOURCES = ("fraud_disputes", "efws", "refunds")
# A charge is disputed as fraud once: a review closed as `disputed` (its dispute ``dp_review_<charge>``) and
# the processor's dispute of the charge are one dispute. So fraud disputes count once per charge; early fraud
# warnings and refunds once per event id (a charge can be refunded twice).
ONCE_PER_CHARGE = frozenset({"fraud_disputes"})
REVIEW_DISPUTE_PREFIX = "dp_review_"
# Which of a charge's fraud disputes counts, from the log alone: the one a review closure implied, if any (a
# closure implies one only when the charge has none yet, so online it was the first to arrive), else the
# earliest created. Offline and every replay of the log take this one; online the first to arrive is
# counted, the same one unless two processor disputes of one charge arrive out of their time order.
COUNTED_FRAUD_DISPUTES_SQL = (
    "SELECT * FROM disputes WHERE reason = 'fraudulent' QUALIFY row_number() OVER (PARTITION BY charge_id "
    f"ORDER BY starts_with(dispute_id, '{REVIEW_DISPUTE_PREFIX}') DESC, created, dispute_id) = 1"
)


def outcome_claim(source: str, outcome_id: str, charge_id: str) -> str:
    """The key under which an outcome is counted once (online state claims; the warm path)."""
    if source in ONCE_PER_CHARGE or source == AUTHORIZATION:  # (a charge has one authorization result)
        return f"{source}:charge:{charge_id}"
    return f"{source}:{outcome_id}"


def authorization_claim(charge_id: str) -> str:
    """The key under which a charge's authorization result is counted once (online state claims)."""
    return outcome_claim(AUTHORIZATION, charge_id, charge_id)


AggName = Literal[
    "count", "sum", "mean", "min", "max", "std", "distinct", "last", "since_prev", "since_first", "first_seen"
]
AGGS: tuple[str, ...] = (
    "count",
    "sum",
    "mean",
    "min",
    "max",
    "std",
    "distinct",
    "last",
    "since_prev",
    "since_first",
    "first_seen",
)
NEEDS_COLUMN = {"sum", "mean", "min", "max", "std", "distinct", "last"}
ALL_TIME_ONLY = {"last", "since_prev", "since_first", "first_seen"}
# Numeric aggregates read amount_usd (exact integer cents) and report US dollars.
NUMERIC_COLUMNS = {"amount_usd"}
CENTS_PER_DOLLAR = 100.0
# Columns of charges an aggregate may read. An outcome event's values are its charge's columns, except its
# amount_usd: a refund's or dispute's own amount, converted at its charge's rate (outcome_amount_usd; an early
# fraud warning has no amount of its own: its charge's). Described so by Aggregate.describe.
VALUE_COLUMNS = {
    "amount_usd",
    "card_fingerprint",
    "customer_id",
    "email_domain",
    "ip_address",
    "ip_country",
    "device_id",
    "merchant_id",
    "card_country",
    "shipping_address_id",
    "billing_country",
    "shipping_country",
}

# The charge fields an outcome's own amount_usd is converted with (at its charge's rate).
OUTCOME_AMOUNT_FIELDS = ("amount", "currency", "amount_usd")


def outcome_amount_usd(amount: int | None, currency: str | None, charge: Mapping[str, Any]) -> Any:
    """An outcome's ``amount_usd`` (US cents): its own ``amount`` (minor units of ``currency``) at its
    ``charge``'s rate, ``amount * charge amount_usd // charge amount`` (exact integers: a full refund is its
    charge's ``amount_usd``, a partial one its share, rounded down). The charge's ``amount_usd`` itself when
    the outcome has no amount (an early fraud warning), its currency is not the charge's, or the charge's
    amount is 0. The offline engines compute the same in SQL (:data:`OUTCOME_AMOUNT_USD_SQL`).

    >>> outcome_amount_usd(2_500, "eur", {"amount": 10_000, "currency": "eur", "amount_usd": 10_837})
    2709
    >>> outcome_amount_usd(None, None, {"amount": 10_000, "currency": "eur", "amount_usd": 10_837})
    10837
    """
    usd = charge.get("amount_usd")
    base = charge.get("amount")
    if amount is None or usd is None or not base or currency != charge.get("currency"):
        return usd
    return int(amount) * int(usd) // int(base)


# outcome_amount_usd over an outcome ``o`` (columns amount, currency) joined to its charge ``c``.
OUTCOME_AMOUNT_USD_SQL = (
    "CASE WHEN o.amount IS NOT NULL AND c.amount > 0 AND o.currency = c.currency "
    "THEN (o.amount::HUGEINT * c.amount_usd // c.amount)::BIGINT ELSE c.amount_usd END"
)


@dataclass(frozen=True)
class Filter:
    """Keep events whose ``column`` is one of ``values`` (a named, declarative predicate, no code)."""

    name: str
    column: str
    values: tuple[str, ...]


FILTERS: dict[str, Filter] = {
    f.name: f
    for f in (
        Filter("declined", "outcome", ("issuer_declined",)),
        Filter("authorized", "outcome", ("authorized",)),
        Filter("blocked", "outcome", ("blocked",)),
        Filter("card_present", "channel", ("card_present",)),
        Filter("ecommerce", "channel", ("ecommerce",)),
        Filter("cvc_fail", "cvc_check", ("fail",)),
    )
}


def _suggest(value: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(options), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _got(value: object) -> str:
    """A received value for an error message: its repr and, when that does not show it, its type."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return text if isinstance(value, str | timedelta) or value is None else f"{text} ({type(value).__name__})"


def _check_str(who: str, what: str, value: object, optional: bool = False) -> None:
    if not (isinstance(value, str) or (optional and value is None)):
        raise ConfigError(
            f"{who}: the {what} must be a string{' or None' if optional else ''}. Got {_got(value)}."
        )


def _check_duration(who: str, what: str, value: object, optional: bool, example: str) -> None:
    """``value`` must be a timedelta of whole seconds (definitions and their version hash hold seconds)."""
    if optional and value is None:
        return
    if not isinstance(value, timedelta):
        hint = f" (parse_duration({value!r}, ...) makes one)" if isinstance(value, str) else ""
        raise ConfigError(
            f"{who}: the {what} must be a datetime.timedelta, e.g. {example}"
            f"{' or None' if optional else ''}. Got {_got(value)}{hint}."
        )
    if value.microseconds:
        raise ConfigError(
            f"{who}: the {what} must be a whole number of seconds. Got {format_duration(value)}."
        )


def _check_names(who: str, what: str, value: object, example: str) -> None:
    """``value`` must be a tuple of strings (a bare string would be read as a tuple of its characters)."""
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{who}: the {what} must be a tuple of names, like {example}. Got {_got(value)}.")


# What the all-time-only aggregations are, in words (``Aggregate.describe``).
_ALL_TIME_SAYS = {
    "first_seen": "1 if the {entity} has no earlier {events}, else 0 (null when the charge has no {entity})",
    "since_prev": "seconds since the {entity}'s previous {events}",
    "since_first": "seconds since the {entity}'s first {events}",
}


@dataclass(frozen=True)
class Aggregate:
    """An aggregation over the entity's past events. ``window=None`` means all-time.

    ``offset`` shifts the window back (a window "ending 7 days before the charge"); it must be a multiple of
    the resolution. Charge events count when strictly before the charge; outcome events (label sources) count
    once their own time is ``<= t``. The ``column`` of an outcome event is its charge's, except
    ``amount_usd``: a refund's or dispute's own amount at its charge's rate (:func:`outcome_amount_usd`), so
    ``sum`` of ``amount_usd`` over refunds adds the amounts refunded.
    """

    entity: str
    agg: str
    column: str | None = None
    window: timedelta | None = None
    source: str = "charges"
    filter: str | None = None
    offset: timedelta = timedelta(0)
    resolution: timedelta | None = None
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self._check_types()
        if self.resolution is None and self.window is not None:
            object.__setattr__(self, "resolution", default_resolution(self.window))
        if not self.name:
            # parts not valid yet: named as given in the error (not 'card.cnt_None_all', 'card.mean_None_1h')
            name = self.generated_name() if self._parts_valid() else f"{self.entity}.{self.agg}"
            object.__setattr__(self, "name", name)
        self.validate()

    def _parts_valid(self) -> bool:
        """The parts a generated name shows are valid (entity, aggregation, column, source, filter, window,
        offset)."""
        if self.agg not in AGGS or self.entity not in ENTITIES or self.source not in SOURCES:
            return False
        if self.agg in NEEDS_COLUMN:
            numeric = self.agg == "distinct" or self.column in NUMERIC_COLUMNS
            if self.column not in VALUE_COLUMNS or not numeric:
                return False
        elif self.column is not None:
            return False
        in_range = self.window is None or MIN_WINDOW <= self.window <= MAX_WINDOW
        in_range = in_range and timedelta(0) <= self.offset <= MAX_OFFSET
        return in_range and (self.filter is None or self.filter in FILTERS)

    def generated_name(self) -> str:
        """The name this definition generates (its name when none is given)."""
        what = {
            "charges": "charges",
            "fraud_disputes": "fraud_disputes",
            "efws": "efws",
            "refunds": "refunds",
        }.get(self.source, self.source)
        if self.filter:
            what = self.filter if self.source == "charges" else f"{what}_{self.filter}"
        if self.agg == "count":
            body = f"count_{what}"
        elif self.agg in ("since_prev", "since_first", "first_seen"):
            body = f"{self.agg}_{what}" if what != "charges" else self.agg
        else:
            body = f"{self.agg}_{self.column}" + (f"_{what}" if what != "charges" else "")
        span = "all" if self.window is None else format_duration(self.window)
        if self.offset:
            span += f"_ending_{format_duration(self.offset)}_ago"
        return f"{self.entity}.{body}_{span}" if self.agg not in ALL_TIME_ONLY else f"{self.entity}.{body}"

    def _check_types(self) -> None:
        """Parameter types, before anything reads them (the name is not generated yet)."""
        _check_str("An aggregate feature", "name", self.name)
        given = self.name or ".".join(str(p) for p in (self.entity, self.agg))
        who = f"Feature '{given}'"
        _check_str(who, "entity", self.entity)
        _check_str(who, "aggregation", self.agg)
        _check_str(who, "column", self.column, optional=True)
        _check_str(who, "source", self.source)
        _check_str(who, "filter", self.filter, optional=True)
        _check_duration(who, "window", self.window, True, "timedelta(hours=1),")
        _check_duration(who, "offset", self.offset, False, "timedelta(days=7)")
        _check_duration(who, "resolution", self.resolution, True, "timedelta(minutes=5),")

    def validate(self) -> None:
        who = f"Feature '{self.name}'"
        if self.entity not in ENTITIES:
            raise ConfigError(
                f"{who}: the entity must be one of {', '.join(ENTITIES)}. Got {self.entity!r}."
                + _suggest(self.entity, ENTITIES)
            )
        if self.agg not in AGGS:
            raise ConfigError(
                f"{who}: the aggregation must be one of {', '.join(AGGS)}. Got {self.agg!r}."
                + _suggest(self.agg, AGGS)
            )
        if self.source not in SOURCES:
            raise ConfigError(
                f"{who}: the source must be one of {', '.join(SOURCES)}. Got {self.source!r}."
                + _suggest(self.source, SOURCES)
            )
        if self.agg in NEEDS_COLUMN:
            if self.column is None:
                raise ConfigError(f"{who}: the aggregation '{self.agg}' needs a column. Got none.")
            if self.column not in VALUE_COLUMNS:
                raise ConfigError(
                    f"{who}: the column must be one of {', '.join(sorted(VALUE_COLUMNS))}. "
                    f"Got {self.column!r}." + _suggest(self.column, VALUE_COLUMNS)
                )
            if self.agg != "distinct" and self.column not in NUMERIC_COLUMNS:
                raise ConfigError(
                    f"{who}: '{self.agg}' needs the numeric column amount_usd. Got {self.column!r}."
                )
        elif self.column is not None:
            raise ConfigError(f"{who}: the aggregation '{self.agg}' takes no column. Got {self.column!r}.")
        if self.filter is not None and self.filter not in FILTERS:
            raise ConfigError(
                f"{who}: the filter must be one of {', '.join(FILTERS)}. Got {self.filter!r}."
                + _suggest(self.filter, FILTERS)
            )
        if self.agg in ALL_TIME_ONLY and self.window is not None:
            raise ConfigError(
                f"{who}: '{self.agg}' is all-time only; it takes no window. "
                f"Got {format_duration(self.window)}."
            )
        if self.window is None:
            if self.offset:
                raise ConfigError(
                    f"{who}: an all-time feature takes no offset. Got {format_duration(self.offset)}."
                )
            if self.resolution is not None:
                raise ConfigError(
                    f"{who}: an all-time feature takes no resolution. Got {format_duration(self.resolution)}."
                )
            return
        if not MIN_WINDOW <= self.window <= MAX_WINDOW:
            raise ConfigError(
                f"{who}: the window must be from 1m to 365d, or None (all-time). "
                f"Got {format_duration(self.window)}."
            )
        res = self.resolution
        assert res is not None  # set in __post_init__ for windowed features
        if not MIN_WINDOW <= res <= self.window:
            raise ConfigError(
                f"{who}: the resolution must be from 1m to the window ({format_duration(self.window)}), "
                f"or None (the default). Got {format_duration(res)}."
            )
        if not timedelta(0) <= self.offset <= MAX_OFFSET:
            raise ConfigError(
                f"{who}: the offset must be from 0s to 3650d (10 years), a multiple of the resolution. "
                f"Got {format_duration(self.offset)}."
            )
        problem = tiling_problem(self.window, self.offset, res, in_json=False)
        if problem is not None:
            raise TilingError(f"{who}: {problem}", f"{who}: {tiling_problem(self.window, self.offset, res)}")
        if self.agg == "distinct" and (self.source != "charges" or self.offset):
            got = ([f"source {self.source!r}"] if self.source != "charges" else []) + (
                [f"offset {format_duration(self.offset)}"] if self.offset else []
            )
            raise ConfigError(
                f"{who}: a windowed 'distinct' reads charges only, without offset (an all-time one may read "
                f"any source). Got {', '.join(got)}."
            )

    @property
    def key_columns(self) -> tuple[str, ...]:
        return ENTITIES[self.entity]

    @property
    def inclusive(self) -> bool:
        """Outcomes at exactly the charge's time count (their time has passed); charges must be earlier."""
        return self.source != "charges"

    def describe(self) -> str:
        """One line saying what the feature is (``payfm features list``).

        >>> f = Aggregate("merchant", "sum", "amount_usd", source="refunds", window=timedelta(days=7))
        >>> print(f.describe())  # doctest: +NORMALIZE_WHITESPACE
        sum(amount_usd) of the merchant's refunds over the last 7d, 1h tiles
        (each refund's own amount, in USD at its charge's rate)
        """
        flt = f", only {self.filter}" if self.filter else ""
        if self.agg in _ALL_TIME_SAYS:  # their one-word names explain nothing (an audit of the docs)
            events = {
                "charges": "charge" if self.filter else "charge (any outcome)",
                "fraud_disputes": "fraudulent dispute",
                "efws": "early fraud warning",
                "refunds": "refund",
            }[self.source]
            entity = _ENTITY_SAYS.get(self.entity, self.entity)
            return _ALL_TIME_SAYS[self.agg].format(entity=entity, events=events) + flt
        what = self.agg + (f"({self.column})" if self.column else "")
        span = "all time" if self.window is None else f"the last {format_duration(self.window)}"
        if self.offset:
            span += f" ending {format_duration(self.offset)} ago"
        res = f", {format_duration(self.resolution)} tiles" if self.resolution else ""
        entity = _ENTITY_SAYS.get(self.entity, self.entity)
        text = f"{what} of the {entity}'s {self.source} over {span}{flt}{res}"
        if self.source != "charges" and self.column:
            event = {"fraud_disputes": "dispute", "efws": "EFW", "refunds": "refund"}[self.source]
            if self.column != "amount_usd":
                text += f" (the {self.column} of each {event}'s charge)"
            elif self.source == "efws":
                text += " (the amount of each EFW's charge, in USD)"
            else:
                text += f" (each {event}'s own amount, in USD at its charge's rate)"
        return text

    def spec(self) -> dict[str, object]:
        return {
            "kind": "aggregate",
            "name": self.name,
            "entity": self.entity,
            "agg": self.agg,
            "column": self.column,
            "window_s": None if self.window is None else int(self.window.total_seconds()),
            "resolution_s": None if self.resolution is None else int(self.resolution.total_seconds()),
            "offset_s": int(self.offset.total_seconds()),
            "source": self.source,
            "filter": self.filter,
            # An outcome's amount_usd is its own amount (outcome_amount_usd); it was its charge's before, so
            # sets reading it got a new version (their models, backfills and online states are not reused).
            **({"value": "outcome_amount"} if self.reads_outcome_amount else {}),
        }

    @property
    def reads_outcome_amount(self) -> bool:
        """Reads an outcome's own amount (:func:`outcome_amount_usd`), not its charge's columns only."""
        return self.source in ("fraud_disputes", "refunds") and self.column == "amount_usd"


REQUEST_KINDS = ("amount_usd", "amount_usd_log", "local_hour", "mismatch", "is", "missing", "since")
# Charge fields no request feature reads. ``created`` is the decision time itself (both engines read it as
# such: local_hour and since use it). The others are not known when the charge is decided (the decision
# service receives them as null) but are in the log: offline they would hold values the online engine never
# sees (training/serving skew, and the synthetic ground truth is the label itself).
NOT_REQUEST_FIELDS: dict[str, str] = {
    "created": "the charge's own time (read it with local_hour, or since on another timestamp)",
    "outcome": "the processor's outcome, unknown when the charge is decided",
    "decline_code": "the issuer's decline code, unknown when the charge is decided",
    "scenario": "the synthetic ground truth, unknown when the charge is decided",
}


def _field_kind(t: pa.DataType) -> str:
    """'string', 'integer' or 'timestamp': the kinds of the charge schema's fields."""
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_integer(t):
        return "integer"
    return "string"


@dataclass(frozen=True)
class RequestFeature:
    """A feature of the charge itself. ``kind``:

    - ``amount_usd``: the amount in dollars; ``amount_usd_log``: log1p of it;
    - ``local_hour``: hour of day at the merchant (UTC + a fixed offset per merchant country);
    - ``mismatch``: 1 if the two ``columns`` (different fields of one type, string or integer) differ, 0 if
      equal, null if either is null;
    - ``is``: 1 if ``columns[0]`` (a string or integer field) is one of ``values`` else 0. The values have the
      field's type: strings valid for the field (its vocabulary, pattern or canonical form) for a string
      field, integers for an integer field (``amount`` in minor units, ``amount_usd`` in cents), so that both
      engines compare equal values with ``==`` and nothing is converted;
    - ``missing``: 1 if ``columns[0]`` (a nullable field) is null else 0;
    - ``since``: seconds from the timestamp ``columns[0]`` (e.g. credential_changed_at) to the charge; null if
      the timestamp is null.

    Only ``is`` takes ``values``. No kind reads ``created`` (the charge's time) or the fields unknown at
    decision time (:data:`NOT_REQUEST_FIELDS`).
    """

    name: str
    kind: str
    columns: tuple[str, ...] = ()
    values: tuple[str | int, ...] = ()

    def __post_init__(self) -> None:
        _check_str("A request feature", "name", self.name)
        who = f"Feature '{self.name}'"
        _check_str(who, "kind", self.kind)
        if self.kind not in REQUEST_KINDS:
            raise ConfigError(
                f"{who}: the kind must be one of {', '.join(REQUEST_KINDS)}. Got {self.kind!r}."
                + _suggest(self.kind, REQUEST_KINDS)
            )
        _check_names(who, "columns", self.columns, "('channel',)")
        need = {"mismatch": 2, "is": 1, "missing": 1, "since": 1}.get(self.kind, 0)
        if len(self.columns) != need:
            raise ConfigError(f"{who}: '{self.kind}' takes {need} column(s). Got {len(self.columns)}.")
        if not isinstance(self.values, tuple):
            raise ConfigError(
                f"{who}: the values must be a tuple, like ('ecommerce',). Got {_got(self.values)}."
            )
        if self.kind != "is" and self.values:
            raise ConfigError(f"{who}: '{self.kind}' takes no values (only 'is' does). Got {self.values!r}.")
        from payfm.events.schema import CHARGES

        for c in self.columns:
            if CHARGES.get_field_index(c) < 0:
                raise ConfigError(f"{who}: no charge field {c!r}." + _suggest(c, CHARGES.names))
            if c in NOT_REQUEST_FIELDS:
                raise ConfigError(
                    f"{who}: '{self.kind}' cannot read {c!r}, {NOT_REQUEST_FIELDS[c]}. Got {c!r}."
                )
        fields = [CHARGES.field(c) for c in self.columns]
        kinds = [_field_kind(f.type) for f in fields]
        if self.kind == "since" and kinds[0] != "timestamp":
            stamps = [
                f.name
                for f in CHARGES
                if _field_kind(f.type) == "timestamp" and f.name not in NOT_REQUEST_FIELDS
            ]
            raise ConfigError(
                f"{who}: 'since' needs a timestamp field ({', '.join(stamps)}). "
                f"Got {self.columns[0]!r} ({kinds[0]})."
            )
        if self.kind == "missing" and not fields[0].nullable:
            raise ConfigError(
                f"{who}: 'missing' needs a nullable field. Got {self.columns[0]!r}, which is never null."
            )
        if self.kind == "mismatch":
            a, b = self.columns
            if a == b:
                raise ConfigError(f"{who}: 'mismatch' compares two different fields. Got {a!r} twice.")
            if kinds[0] != kinds[1] or kinds[0] == "timestamp":
                raise ConfigError(
                    f"{who}: 'mismatch' compares two string fields or two integer fields. "
                    f"Got {a!r} ({kinds[0]}) and {b!r} ({kinds[1]})."
                )
        if self.kind == "is":
            self._check_values(who, kinds[0])

    def _check_values(self, who: str, kind: str) -> None:
        """The values of ``is``: at least one, each of the field's type and valid for the field."""
        from payfm.events.schema import RULES

        column = self.columns[0]
        if kind == "timestamp":
            raise ConfigError(f"{who}: 'is' needs a string or integer field. Got {column!r} ({kind}).")
        if not self.values:
            raise ConfigError(f"{who}: 'is' needs at least one value of {column!r}. Got none.")
        rule = RULES["charges"].get(column)
        for v in self.values:
            if kind == "string":
                if not isinstance(v, str):
                    raise ConfigError(
                        f"{who}: the values of 'is' on {column!r} (a string field) must be strings. "
                        f"Got {_got(v)}."
                    )
                problem = None if rule is None else rule.problem(v)
                if problem is not None:
                    raise ConfigError(
                        f"{who}: the values of 'is' on {column!r} must be {problem[0]}. "
                        f"Got {v!r}.{problem[1]}"
                    )
            else:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ConfigError(
                        f"{who}: the values of 'is' on {column!r} (an integer field) must be integers. "
                        f"Got {v!r} ({type(v).__name__})."
                    )
                lo = -(2**63) if rule is None or rule.min_value is None else rule.min_value
                hi = 2**63 - 1 if rule is None or rule.max_value is None else rule.max_value
                if not lo <= v <= hi:
                    raise ConfigError(
                        f"{who}: the values of 'is' on {column!r} must be from {lo:,} to {hi:,}. Got {v:,}."
                    )

    def describe(self) -> str:
        """One line saying what the feature is (``payfm features list``)."""
        cols = f"({', '.join(self.columns)})" if self.columns else ""
        return f"request: {self.kind}{cols}" + (
            f" in {', '.join(map(repr, self.values))}" if self.values else ""
        )

    def spec(self) -> dict[str, object]:
        return {
            "kind": "request",
            "name": self.name,
            "type": self.kind,
            "columns": self.columns,
            "values": self.values,
        }


DERIVED_OPS = ("ratio", "zscore", "diff")


@dataclass(frozen=True)
class Derived:
    """Arithmetic over other features (in the same set):

    - ``ratio``: a / b, null when b is 0 or null;
    - ``diff``: a - b;
    - ``zscore``: (a - mean) / std over inputs (a, mean, std); null when std is null or 0.
    """

    name: str
    op: str
    inputs: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_str("A derived feature", "name", self.name)
        who = f"Feature '{self.name}'"
        _check_str(who, "op", self.op)
        _check_names(who, "inputs", self.inputs, "('a.count_1h', 'b.count_1h')")
        if self.op not in DERIVED_OPS:
            raise ConfigError(f"{who}: the op must be one of {', '.join(DERIVED_OPS)}. Got {self.op!r}.")
        need = 3 if self.op == "zscore" else 2
        if len(self.inputs) != need:
            raise ConfigError(f"{who}: '{self.op}' takes {need} inputs. Got {len(self.inputs)}.")

    def describe(self) -> str:
        """One line saying what the feature is (``payfm features list``)."""
        return f"{self.op}({', '.join(self.inputs)})"

    def spec(self) -> dict[str, object]:
        return {"kind": "derived", "name": self.name, "op": self.op, "inputs": self.inputs}


Feature = Aggregate | RequestFeature | Derived


def refuse_card_numbers(fset: FeatureSet) -> None:
    """Raise unless the names of ``fset`` and of its features are free of card numbers: a set a workspace
    defines is a file name, listed, recorded in the registry, and its feature names are given as reasons in
    every decision (:func:`payfm.events.cards.name_holds_card_number`; checked when a set is defined or a
    model registered, not when a stored one loads)."""
    from payfm.events.cards import name_holds_card_number

    if name_holds_card_number(fset.name):
        raise ConfigError("A feature set's name must not hold a card number (PAN).")
    for i, f in enumerate(fset.features, start=1):
        if name_holds_card_number(f.name):
            raise ConfigError(
                f"Feature set '{fset.name}', feature {i}: a feature name must not hold a card number (PAN)."
            )


def _same_but_resolution(a: Aggregate, b: Aggregate) -> bool:
    """Whether two aggregates differ in resolution alone, compared field by field (a copy of ``a`` with
    ``b``'s resolution is validated, and may not tile: a tiling error instead of "defined twice")."""
    return all(getattr(a, f.name) == getattr(b, f.name) for f in fields(Aggregate) if f.name != "resolution")


# A set's name: a lower-case word, as its files are named after it.
SET_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True)
class FeatureSet:
    """An ordered, validated set of features with a version hash of their definitions."""

    name: str
    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not SET_NAME.fullmatch(self.name):
            # (a file's name, features/<name>-<version>.parquet: no path, no capitals, never empty)
            from payfm.events.cards import shown_text  # (events -> features is the flow's direction)

            got = shown_text(repr(self.name)) if isinstance(self.name, str) else _got(self.name)
            raise ConfigError(
                "A feature set's 'name' must be a lower-case word of letters, digits and underscores (up to "
                f"64). Got {got}."
            )
        seen: dict[str, int] = {}  # name -> index
        for pos, f in enumerate(self.features):
            if not isinstance(f, Aggregate | RequestFeature | Derived):
                raise ConfigError(
                    f"Feature set '{self.name}': each feature must be an Aggregate, a RequestFeature or a "
                    f"Derived. Got {_got(f)}."
                )
            check_feature_name(f.name)  # (its form; not a column beside the features in its files)
            if f.name in seen:
                raise ConfigError(self._twice(seen[f.name], pos))
            if isinstance(f, Derived):
                for i in f.inputs:
                    if i not in seen:
                        raise ConfigError(
                            f"Feature '{f.name}': input {i!r} must be defined earlier in the set."
                            + _suggest(i, seen)
                        )
            seen[f.name] = pos

    def _twice(self, first: int, second: int) -> str:
        """The error for features ``first`` and ``second`` (indices) of one name."""
        a, b = self.features[first], self.features[second]
        text = (
            f"Feature '{a.name}' is defined twice in feature set '{self.name}' "
            f"(features {first + 1} and {second + 1})"
        )
        if a == b and type(a) is type(b):
            return f"{text}, with the same definition: remove one."
        if isinstance(a, Aggregate) and isinstance(b, Aggregate) and _same_but_resolution(a, b):
            assert a.resolution is not None and b.resolution is not None  # (equal otherwise)
            ra, rb = format_duration(a.resolution), format_duration(b.resolution)
            return (
                f"{text}, which differ only in resolution ({ra} and {rb}), which generated names do not "
                f"show: give one a 'name' of its own, e.g. '{b.name}_{rb}_tiles'."
            )
        return f"{text}: give one a 'name' of its own."

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def aggregates(self) -> list[Aggregate]:
        return [f for f in self.features if isinstance(f, Aggregate)]

    @property
    def version(self) -> str:
        """sha256 (12 hex) of the canonical JSON of the definitions: changes iff a definition changes."""
        blob = json.dumps([f.spec() for f in self.features], sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def get(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        hint = _suggest(name, self.names) or f" `payfm features list --set {self.name}` lists its features."
        raise ConfigError(f"No feature {name!r} in feature set '{self.name}'." + hint)

    def subset(self, names: Sequence[str]) -> FeatureSet:
        """The named features plus what derived ones need, in set order."""
        want = set(names)
        for f in reversed(self.features):
            if f.name in want and isinstance(f, Derived):
                want.update(f.inputs)
        for n in names:
            self.get(n)
        return FeatureSet(self.name, tuple(f for f in self.features if f.name in want))

    def to_json(self) -> dict[str, object]:
        """The set as JSON data: ``{"name", "version", "features": [spec, ...]}`` (what
        :meth:`from_json` reads; ``payfm features list --json`` prints it)."""
        return {"name": self.name, "version": self.version, "features": [f.spec() for f in self.features]}

    @classmethod
    def from_json(cls, data: object, source: str = "feature set") -> FeatureSet:
        """A set from :meth:`to_json`'s data (:func:`payfm.features.set_json.set_from_json`)."""
        from payfm.features.set_json import set_from_json

        return set_from_json(data, source)
