"""The synthetic payments world: merchants, customers, genuine traffic, six fraud scenarios and late outcomes.

Example:
    >>> from payfm.synth import WorldConfig, generate_world
    >>> tables = dict(generate_world(WorldConfig(charges=2_000, days=2, seed=7)))
    >>> sorted(tables)
    ['charges', 'disputes', 'early_fraud_warnings', 'refunds']
"""

from __future__ import annotations

from payfm.synth.config import DEFAULT_SCENARIO_MIX, WorldConfig
from payfm.synth.generator import generate_world

__all__ = ["DEFAULT_SCENARIO_MIX", "WorldConfig", "generate_world"]
