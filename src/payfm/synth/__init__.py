"""The synthetic payments world: merchants, customers, genuine traffic, six fraud scenarios and late outcomes.

Example:
    >>> from payfm.synth import WorldConfig, generate_world
    >>> batches = list(generate_world(WorldConfig(charges=2_000, days=2, seed=7)))  # (table, Arrow batch)
    >>> sorted({name for name, _ in batches})
    ['charges', 'disputes', 'early_fraud_warnings', 'refunds']
    >>> sum(t.num_rows for name, t in batches if name == "charges") > 1_900  # (several batches per table)
    True
"""

from __future__ import annotations

from payfm.synth.config import DEFAULT_SCENARIO_MIX, WorldConfig, WorldConfigError
from payfm.synth.generator import generate_world

__all__ = ["DEFAULT_SCENARIO_MIX", "WorldConfig", "WorldConfigError", "generate_world"]
