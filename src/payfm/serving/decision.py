"""The decision of one charge, as the decision service answers it and logs it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Decision:
    """The decision of one charge (``features`` are logged; the HTTP response leaves them out)."""

    charge_id: str
    outcome: str
    risk_score: int | None
    risk_level: str | None
    rule: str | None
    action: str | None
    reasons: list[dict[str, Any]]
    model: str | None
    ruleset_version: int | None
    latency_ms: float
    decided_at: str
    shadow: dict[str, Any] | None = None
    features: dict[str, float | None] = field(default_factory=dict)
    embedding: list[float] | None = None  # the foundation-model embedding the model took, if it takes one

    def to_json(self) -> dict[str, Any]:
        # A shallow dict: dataclasses.asdict deep-copies the 158 feature values and cost ~2.5 ms a decision.
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def response(self) -> dict[str, Any]:
        """What the HTTP API returns: the decision without the feature values and the shadow score."""
        return {name: getattr(self, name) for name in _RESPONSE_FIELDS}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Decision:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


_RESPONSE_FIELDS = tuple(
    n for n in Decision.__dataclass_fields__ if n not in ("shadow", "features", "embedding")
)
