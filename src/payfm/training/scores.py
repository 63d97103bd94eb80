"""Risk score 0-100 and risk levels from a calibrated probability.

Fraud probabilities live on a log scale (a 0.1% base rate, 10% for the riskiest charges), so the score maps
log10(p) linearly from ``floor`` (score 0) to 1 (score 100): with the default floor 1e-4, p = 1% scores 50,
p = 4% scores 65 (elevated) and p = 10% scores 75 (highest). The levels' thresholds are configurable.

Example:
    >>> ScoreLevels().level(risk_score(0.2))
    'highest'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from payfm.errors import ConfigError

RISK_LEVELS = ("normal", "elevated", "highest")  # the risk levels, lowest first


def risk_scores(p: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """Scores 0-100 (floats) of calibrated probabilities ``p``."""
    if not 0 < floor < 1:
        raise ConfigError(f"The score 'floor' must be in (0, 1). Got {floor}.")
    lo = np.log10(floor)
    q = np.clip(np.asarray(p, dtype=np.float64), floor, 1.0)
    out: np.ndarray = 100.0 * (np.log10(q) - lo) / -lo
    return out


def risk_score(p: float, floor: float = 1e-4) -> int:
    """The integer 0-100 risk score of one calibrated probability."""
    return int(np.floor(risk_scores(np.array([p]), floor)[0]))


@dataclass(frozen=True)
class ScoreLevels:
    """Risk levels: normal below ``elevated``, elevated from it, highest from ``highest``."""

    elevated: float = 65
    highest: float = 75

    def __post_init__(self) -> None:
        if not 0 <= self.elevated <= self.highest <= 100:
            raise ConfigError(
                "Score levels need 0 <= elevated <= highest <= 100. "
                f"Got elevated={self.elevated}, highest={self.highest}."
            )

    def level(self, score: float) -> str:
        normal, elevated, highest = RISK_LEVELS
        if score >= self.highest:
            return highest
        return elevated if score >= self.elevated else normal
