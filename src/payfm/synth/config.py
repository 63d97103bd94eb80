"""Configuration of the synthetic payments world: size, time span, seed, fraud rate and scenario mix.

The config is a frozen value validated on construction, so a bad knob fails loudly before any work starts,
with an error that names the field, what was expected and what was received.

Example:
    >>> cfg = WorldConfig(charges=20_000, days=30, seed=1)
    >>> round(sum(cfg.scenario_mix.values()), 6)
    1.0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from types import MappingProxyType
from typing import TypeGuard

import numpy as np

from payfm.errors import ConfigError
from payfm.events.schema import SCENARIOS, TIME_MAX_US

# The longest world, in days: ten years. Every day has a fixed cost, however few its charges (100,000 days of
# the default world ran for minutes, into the year 2299).
MAX_DAYS = 3_660
MAX_CHARGES = 1_000_000_000  # (10M take ~0.5 GiB and 24 s to generate: BENCHMARKS.md)
# Event times lie in [1970-01-01, 2100-01-01) (imports and the decision service refuse others), and so do the
# world's: it starts two days into 1970, as a takeover changes credentials up to 36 h before its first charge,
# and ends (``start + days``: every time it emits is before its end) at the latest when 2100 begins.
EARLIEST_START = datetime(1970, 1, 3, tzinfo=UTC)
LATEST_END = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=TIME_MAX_US)

# Share of the fraud charges each scenario contributes by default (normalised on construction).
DEFAULT_SCENARIO_MIX: Mapping[str, float] = MappingProxyType(
    {
        "stolen_card": 0.30,
        "card_testing": 0.25,
        "account_takeover": 0.12,
        "compromised_merchant": 0.13,
        "friendly_fraud": 0.12,
        "merchant_bust_out": 0.08,
    }
)


class WorldConfigError(ConfigError, ValueError):
    """A knob of :class:`WorldConfig` is invalid: a :class:`payfm.errors.PayfmError` like every user error
    (the CLI prints it without a traceback), and a ``ValueError`` as a bad argument is in Python."""


@dataclass(frozen=True)
class WorldConfig:
    """What world to generate.

    ``charges`` is the approximate total number of charges (genuine + fraud, retries included) over ``days``
    days starting at ``start`` (tz-aware UTC). ``fraud_rate`` is the share of charges tagged with a fraud
    scenario, split between scenarios by ``scenario_mix`` (weights, normalised; missing scenarios get 0).
    """

    charges: int = 1_000_000
    days: int = 120
    seed: int = 0
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    fraud_rate: float = 0.003
    scenario_mix: Mapping[str, float] = field(default_factory=lambda: DEFAULT_SCENARIO_MIX)

    def __post_init__(self) -> None:
        # Integers and reals of any kind (numpy's included) are accepted and stored as plain int / float.
        if not _integer(self.charges) or self.charges < 1000:
            raise WorldConfigError(
                f"The 'charges' of WorldConfig must be an integer >= 1000. Got {self.charges!r}."
            )
        object.__setattr__(self, "charges", int(self.charges))
        if not _integer(self.days) or self.days < 1:
            raise WorldConfigError(f"The 'days' of WorldConfig must be an integer >= 1. Got {self.days!r}.")
        object.__setattr__(self, "days", int(self.days))
        if self.charges > MAX_CHARGES:
            raise WorldConfigError(
                f"The 'charges' of WorldConfig must be at most {MAX_CHARGES:,}. Got {self.charges:,}."
            )
        if self.days > MAX_DAYS:
            raise WorldConfigError(
                f"The 'days' of WorldConfig must be at most {MAX_DAYS:,} (ten years). Got {self.days!r}."
            )
        if not _integer(self.seed) or self.seed < 0:
            raise WorldConfigError(
                f"The 'seed' of WorldConfig must be a non-negative integer. Got {self.seed!r}."
            )
        object.__setattr__(self, "seed", int(self.seed))
        if not isinstance(self.start, datetime) or self.start.tzinfo is None:
            raise WorldConfigError(
                f"The 'start' of WorldConfig must be a tz-aware UTC datetime. Got {self.start!r}."
            )
        if self.start.utcoffset() != timedelta(0):
            raise WorldConfigError(
                f"The 'start' of WorldConfig must be in UTC. Got offset {self.start.utcoffset()}."
            )
        _check_span(self.start, self.days)
        if self.start.astimezone(UTC).time() != time(0):  # day d is [start + d days, start + d + 1 days)
            raise WorldConfigError(
                "The 'start' of WorldConfig must be at midnight UTC (daily patterns, such as the hours "
                f"customers shop at, count from it). Got {_shown(self.start)}."
            )
        rate = self.fraud_rate
        if not _real(rate) or not 0.0 <= _float(rate) < 0.5:
            raise WorldConfigError(f"The 'fraud_rate' of WorldConfig must be in [0, 0.5). Got {rate!r}.")
        object.__setattr__(self, "fraud_rate", float(rate))
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "scenario_mix", _normalise_mix(self.scenario_mix))

    def __hash__(self) -> int:
        mix = tuple(sorted(self.scenario_mix.items()))
        return hash((self.charges, self.days, self.seed, self.start, self.fraud_rate, mix))

    @property
    def end(self) -> datetime:
        """The observation time: outcomes at or after it have not happened yet."""
        return self.start + timedelta(days=self.days)


def _check_span(start: datetime, days: int) -> None:
    """Refuse a world outside [EARLIEST_START, LATEST_END]: its times would leave the platform's timeline."""
    shown = _shown(start)
    if start < EARLIEST_START:
        raise WorldConfigError(
            f"The 'start' of WorldConfig must be on or after {_shown(EARLIEST_START)}: event times begin in "
            f"1970, and a takeover changes credentials up to 36 h before its first charge. Got {shown}."
        )
    latest = LATEST_END - timedelta(days=1)  # the last start that leaves room for one day
    if start > latest:
        raise WorldConfigError(
            f"The 'start' of WorldConfig must be on or before {_shown(latest)}: the world must end by "
            f"{_shown(LATEST_END)}, where event times stop. Got {shown}."
        )
    room = (LATEST_END - start) // timedelta(days=1)  # compared, not added: start + days may overflow
    if days > room:
        raise WorldConfigError(
            f"The 'days' of WorldConfig must end the world by {_shown(LATEST_END)}, where event times stop: "
            f"at most {room:,} day{'' if room == 1 else 's'} from a start of {shown}. Got {days!r}."
        )


def _shown(t: datetime) -> str:
    """A UTC time as messages show it: its date alone at midnight (as ``--start`` takes it), else ISO 8601."""
    t = t.astimezone(UTC)
    return t.date().isoformat() if t.time() == time(0) else t.isoformat()


def _normalise_mix(mix: Mapping[str, float]) -> Mapping[str, float]:
    """Validate scenario weights and scale them to sum to 1 (every scenario present, missing ones 0).

    Weights are finite numbers >= 0, at least one of them positive. Weights whose total overflows a float
    (``1e308`` twice) are first divided by the largest, so they keep their proportions instead of all
    becoming 0; other mixes are divided by their total as they always were (the same world for the same mix).

        >>> dict(_normalise_mix({"stolen_card": 1e308, "card_testing": 1e308}))["card_testing"]
        0.5
    """
    if not isinstance(mix, Mapping):
        raise WorldConfigError(
            "The 'scenario_mix' of WorldConfig must be a mapping of scenario names to weights. "
            f"Got {type(mix).__name__} {mix!r}."
        )
    for name, weight in mix.items():
        if name not in SCENARIOS:
            raise WorldConfigError(
                f"The 'scenario_mix' of WorldConfig has an unknown scenario {name!r}. "
                f"Expected names from: {', '.join(SCENARIOS)}."
            )
        if not _finite_weight(weight):
            raise WorldConfigError(
                "The 'scenario_mix' of WorldConfig must have finite weights >= 0. "
                f"Got {weight!r} for {name!r}."
            )
    # Plain Python numbers from here (numpy's 1e308 + 1e308 would warn of an overflow; ints stay exact).
    mix = {name: int(w) if isinstance(w, numbers.Integral) else float(w) for name, w in mix.items()}
    try:
        total = float(sum(mix.values()))
    except OverflowError:  # integers past the largest float
        total = math.inf
    if total <= 0.0:
        raise WorldConfigError(
            f"The 'scenario_mix' of WorldConfig must have a positive total weight. Got {dict(mix)}."
        )
    if math.isfinite(total):
        return MappingProxyType({name: float(mix.get(name, 0.0)) / total for name in SCENARIOS})
    top = max(float(weight) for weight in mix.values())
    scaled = {name: float(mix.get(name, 0.0)) / top for name in SCENARIOS}  # each in [0, 1]: no overflow
    total = sum(scaled.values())
    return MappingProxyType({name: weight / total for name, weight in scaled.items()})


def _integer(value: object) -> bool:
    """Whether ``value`` is an integer (``int``, ``numpy.int64``, ...), not a bool (numpy's included)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _real(value: object) -> TypeGuard[numbers.Real]:
    """Whether ``value`` is a real number (``float``, ``numpy.float32``, an integer...), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _finite_weight(weight: object) -> bool:
    """Whether ``weight`` is a real number (not a bool), finite and >= 0 (NaN compares false with 0)."""
    if not _real(weight):
        return False
    value = _float(weight)
    return math.isfinite(value) and value >= 0


def _float(value: numbers.Real) -> float:
    """``value`` as a float; NaN (which every check refuses) past the largest float (``10**400``)."""
    try:
        return float(value)
    except OverflowError:
        return math.nan
