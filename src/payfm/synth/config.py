"""Configuration of the synthetic payments world: size, time span, seed, fraud rate and scenario mix.

The config is a frozen value validated on construction, so a bad knob fails loudly before any work starts,
with an error that names the field, what was expected and what was received.

Example:
    >>> cfg = WorldConfig(charges=20_000, days=30, seed=1)
    >>> round(sum(cfg.scenario_mix.values()), 6)
    1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from payfm.events.schema import SCENARIOS

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
        if isinstance(self.charges, bool) or not isinstance(self.charges, int) or self.charges < 1000:
            raise ValueError(
                f"The 'charges' of WorldConfig must be an integer >= 1000. Got {self.charges!r}."
            )
        if isinstance(self.days, bool) or not isinstance(self.days, int) or self.days < 1:
            raise ValueError(f"The 'days' of WorldConfig must be an integer >= 1. Got {self.days!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"The 'seed' of WorldConfig must be a non-negative integer. Got {self.seed!r}.")
        if not isinstance(self.start, datetime) or self.start.tzinfo is None:
            raise ValueError(
                f"The 'start' of WorldConfig must be a tz-aware UTC datetime. Got {self.start!r}."
            )
        if self.start.utcoffset() != timedelta(0):
            raise ValueError(
                f"The 'start' of WorldConfig must be in UTC. Got offset {self.start.utcoffset()}."
            )
        rate = self.fraud_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate < 0.5:
            raise ValueError(f"The 'fraud_rate' of WorldConfig must be in [0, 0.5). Got {rate!r}.")
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "scenario_mix", _normalise_mix(self.scenario_mix))

    def __hash__(self) -> int:
        mix = tuple(sorted(self.scenario_mix.items()))
        return hash((self.charges, self.days, self.seed, self.start, self.fraud_rate, mix))

    @property
    def end(self) -> datetime:
        """The observation time: outcomes at or after it have not happened yet."""
        return self.start + timedelta(days=self.days)


def _normalise_mix(mix: Mapping[str, float]) -> Mapping[str, float]:
    """Validate scenario weights and scale them to sum to 1 (every scenario present, missing ones 0)."""
    for name, weight in mix.items():
        if name not in SCENARIOS:
            raise ValueError(
                f"The 'scenario_mix' of WorldConfig has an unknown scenario {name!r}. "
                f"Expected names from: {', '.join(SCENARIOS)}."
            )
        if not isinstance(weight, int | float) or not weight >= 0.0:
            raise ValueError(
                f"The 'scenario_mix' weight of {name!r} in WorldConfig must be a number >= 0. Got {weight!r}."
            )
    total = float(sum(mix.values()))
    if total <= 0.0:
        raise ValueError(
            f"The 'scenario_mix' of WorldConfig must have a positive total weight. Got {dict(mix)}."
        )
    return MappingProxyType({name: float(mix.get(name, 0.0)) / total for name in SCENARIOS})
