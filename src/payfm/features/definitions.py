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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from payfm.errors import ConfigError

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

# Event sources: charges, or outcome events of the entity's charges.
SOURCES = ("charges", "fraud_disputes", "efws", "refunds")
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
    return f"{source}:charge:{charge_id}" if source in ONCE_PER_CHARGE else f"{source}:{outcome_id}"


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
# Columns of charges an aggregate may read (values of outcome events are their charge's columns).
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

MIN_WINDOW = timedelta(minutes=1)
MAX_WINDOW = timedelta(days=365)


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


def default_resolution(window: timedelta) -> timedelta:
    """Tile size for a window: 1 minute up to 2 hours, 1 hour beyond.

    Tiles are sparse (only tiles with events are kept) and cumulative, so a finer resolution costs memory only
    on hot keys (at most window / resolution tiles) and no time; two resolutions let the windows of an entity
    share state.
    """
    if window <= timedelta(hours=2):
        return timedelta(minutes=1)
    return timedelta(hours=1)


def format_duration(d: timedelta) -> str:
    """Shortest exact unit: 90s -> '90s', 3600s -> '1h', 86400s -> '1d', 5 min -> '5m'."""
    s = int(d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


_DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_duration(text: str, who: str) -> timedelta:
    """'15m', '1h', '7d' -> timedelta; a ConfigError naming ``who`` otherwise."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ConfigError(f"The {who} must be a duration like 15m, 1h or 30d. Got {text!r}.")
    n, unit = int(m.group(1)), m.group(2)
    return timedelta(seconds=n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


def _suggest(value: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(options), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class Aggregate:
    """An aggregation over the entity's past events. ``window=None`` means all-time.

    ``offset`` shifts the window back (a window "ending 7 days before the charge"); it must be a multiple of
    the resolution. Charge events count when strictly before the charge; outcome events (label sources) count
    once their own time is ``<= t``.
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
        if self.resolution is None and self.window is not None:
            object.__setattr__(self, "resolution", default_resolution(self.window))
        if not self.name:
            object.__setattr__(self, "name", self._auto_name())
        self.validate()

    def _auto_name(self) -> str:
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
            raise ConfigError(f"{who}: '{self.agg}' is all-time only; it takes no window. Got {self.window}.")
        if self.window is None:
            if self.offset:
                raise ConfigError(f"{who}: an all-time feature takes no offset. Got {self.offset}.")
            return
        if not MIN_WINDOW <= self.window <= MAX_WINDOW:
            raise ConfigError(
                f"{who}: the window must be between 1m and 365d. Got {format_duration(self.window)}."
            )
        res = self.resolution
        assert res is not None  # set in __post_init__ for windowed features
        if res < MIN_WINDOW or res > self.window:
            raise ConfigError(
                f"{who}: the resolution must be between 1m and the window. Got {format_duration(res)}."
            )
        if self.window % res or self.offset % res or self.offset < timedelta(0):
            raise ConfigError(
                f"{who}: the window and offset must be non-negative multiples of the resolution "
                f"({format_duration(res)}). Got window {format_duration(self.window)}, "
                f"offset {format_duration(self.offset)}."
            )
        if self.agg == "distinct" and (self.source != "charges" or self.offset):
            raise ConfigError(
                f"{who}: 'distinct' is supported over charges, without offset. Got source {self.source!r}, "
                f"offset {format_duration(self.offset)}."
            )

    @property
    def key_columns(self) -> tuple[str, ...]:
        return ENTITIES[self.entity]

    @property
    def inclusive(self) -> bool:
        """Outcomes at exactly the charge's time count (their time has passed); charges must be earlier."""
        return self.source != "charges"

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
        }


REQUEST_KINDS = ("amount_usd", "amount_usd_log", "local_hour", "mismatch", "is", "missing", "since")


@dataclass(frozen=True)
class RequestFeature:
    """A feature of the charge itself. ``kind``:

    - ``amount_usd``: the amount in dollars; ``amount_usd_log``: log1p of it;
    - ``local_hour``: hour of day at the merchant (UTC + a fixed offset per merchant country);
    - ``mismatch``: 1 if the two ``columns`` differ, 0 if equal, null if either is null;
    - ``is``: 1 if ``columns[0]`` is one of ``values`` else 0;
    - ``missing``: 1 if ``columns[0]`` is null else 0;
    - ``since``: seconds from the timestamp ``columns[0]`` (e.g. credential_changed_at) to the charge; null if
      the timestamp is null.
    """

    name: str
    kind: str
    columns: tuple[str, ...] = ()
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        who = f"Feature '{self.name}'"
        if self.kind not in REQUEST_KINDS:
            raise ConfigError(
                f"{who}: the kind must be one of {', '.join(REQUEST_KINDS)}. Got {self.kind!r}."
                + _suggest(self.kind, REQUEST_KINDS)
            )
        need = {"mismatch": 2, "is": 1, "missing": 1, "since": 1}.get(self.kind, 0)
        if len(self.columns) != need:
            raise ConfigError(f"{who}: '{self.kind}' takes {need} column(s). Got {len(self.columns)}.")
        from payfm.events.schema import CHARGES

        for c in self.columns:
            if CHARGES.get_field_index(c) < 0:
                raise ConfigError(f"{who}: no charge field {c!r}." + _suggest(c, CHARGES.names))

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
        who = f"Feature '{self.name}'"
        if self.op not in DERIVED_OPS:
            raise ConfigError(f"{who}: the op must be one of {', '.join(DERIVED_OPS)}. Got {self.op!r}.")
        need = 3 if self.op == "zscore" else 2
        if len(self.inputs) != need:
            raise ConfigError(f"{who}: '{self.op}' takes {need} inputs. Got {len(self.inputs)}.")

    def spec(self) -> dict[str, object]:
        return {"kind": "derived", "name": self.name, "op": self.op, "inputs": self.inputs}


Feature = Aggregate | RequestFeature | Derived
_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)?$")


@dataclass(frozen=True)
class FeatureSet:
    """An ordered, validated set of features with a version hash of their definitions."""

    name: str
    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for f in self.features:
            if not _NAME.match(f.name):
                raise ConfigError(
                    f"Feature '{f.name}': names are lower-case words with underscores and one optional dot "
                    "(like card.count_charges_1h)."
                )
            if f.name in seen:
                raise ConfigError(f"Feature '{f.name}' is defined twice in feature set '{self.name}'.")
            if isinstance(f, Derived):
                for i in f.inputs:
                    if i not in seen:
                        raise ConfigError(
                            f"Feature '{f.name}': input {i!r} must be defined earlier in the set."
                            + _suggest(i, seen)
                        )
            seen.add(f.name)

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
        raise ConfigError(f"No feature {name!r} in feature set '{self.name}'." + _suggest(name, self.names))

    def subset(self, names: Sequence[str]) -> FeatureSet:
        """The named features plus what derived ones need, in set order."""
        want = set(names)
        for f in reversed(self.features):
            if f.name in want and isinstance(f, Derived):
                want.update(f.inputs)
        for n in names:
            self.get(n)
        return FeatureSet(self.name, tuple(f for f in self.features if f.name in want))
