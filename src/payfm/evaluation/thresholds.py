"""Threshold presets: three named ways to pick the blocking threshold from a model's scores.

A charge is blocked when ``score >= threshold``. Candidates are the distinct scores (so ties move together).

* **maximize protection** (``kind="block_rate"``, ``value`` = budget, default 0.01): the lowest threshold that
  blocks at most ``value`` of all charges. Catches the most fraud a fixed review/decline capacity allows.
  When the top group of tied scores alone exceeds the budget (an isotonic calibration's plateau at 1.0),
  no threshold honours it: the point is that group, over budget, and :func:`note` says so.
* **balance** (``kind="max_f1"``): the threshold with the highest F1 = 2PR / (P + R); on ties the highest
  threshold. Trades missed fraud against false declines with equal weight on precision and recall.
* **maximize revenue** (``kind="min_recall"``, ``value`` = minimum recall, default 0.5): among thresholds
  whose recall is at least ``value``, the one that blocks the fewest legitimate dollars. Blocked legitimate
  dollars only grow as the threshold falls, so this is the highest threshold reaching the recall.
* ``kind="fixed"``: the rule ``score >= value`` (for example a production threshold). Like every preset it
  picks a distinct score: the point's ``threshold`` is the lowest score at or above ``value`` (``inf`` when
  none is, and nothing is flagged: :func:`note` says so), which flags exactly the charges ``value`` flags.

Presets chosen on the evaluated window describe the model's trade-offs; a deployed threshold should be chosen
on a validation window and then evaluated with ``kind="fixed"``.

Example:
    >>> from payfm.evaluation.metrics import binary_counts
    >>> choose(Preset("f1", "max_f1"), binary_counts([0, 1, 1, 0], [0.1, 0.9, 0.7, 0.8])).threshold
    0.7
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Literal

import numpy as np

from payfm import inputs
from payfm.evaluation.checks import EvaluationError
from payfm.evaluation.metrics import (
    Counts,
    OperatingPoint,
    over_budget,
    point_at,
    point_at_block_rate,
    point_at_threshold,
)

PresetKind = Literal["block_rate", "max_f1", "min_recall", "fixed"]


@dataclass(frozen=True)
class Preset:
    """A named rule for choosing a threshold; ``value`` is the budget, minimum recall or fixed threshold."""

    name: str
    kind: PresetKind
    value: float = float("nan")

    def __post_init__(self) -> None:
        value = self.value
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise EvaluationError(
                f"The 'value' of preset {self.name!r} must be a number (a budget, a minimum recall or a "
                f"threshold: Preset('p', 'fixed', 0.4)). Got {inputs.kind(value)}"
                + (f" ({value!r})." if isinstance(value, str) else ".")
            )
        object.__setattr__(self, "value", float(value))  # (a NumPy number as Python's)
        if self.kind not in ("block_rate", "max_f1", "min_recall", "fixed"):
            raise EvaluationError(
                f"The kind of preset {self.name!r} must be block_rate, max_f1, min_recall or fixed. "
                f"Got {self.kind!r}."
            )
        if self.kind in ("block_rate", "min_recall") and not 0.0 < self.value <= 1.0:
            raise EvaluationError(f"The value of preset {self.name!r} must be in (0, 1]. Got {self.value}.")
        # scores are probabilities: a fixed threshold below 0, or a forgotten one (NaN), would flag every
        # charge without a word (one above 1 flags none, and the preset's note says so)
        if self.kind == "fixed" and not self.value >= 0.0:
            raise EvaluationError(
                f"The fixed threshold of preset {self.name!r} must be a score >= 0 (a probability). "
                f"Got {self.value}."
            )


PROTECTION = Preset("maximize protection", "block_rate", 0.01)
BALANCE = Preset("balance", "max_f1")
REVENUE = Preset("maximize revenue", "min_recall", 0.5)
DEFAULT_PRESETS = (PROTECTION, BALANCE, REVENUE)


def choose(preset: Preset, c: Counts) -> OperatingPoint:
    """The operating point ``preset`` picks from the counts ``c``."""
    if preset.kind == "block_rate":
        return point_at_block_rate(c, preset.value)
    if preset.kind == "fixed":
        return point_at_threshold(c, preset.value)
    if preset.kind == "max_f1":
        f1 = 2 * c.tps / (c.flagged + c.positives)
        return point_at(c, int(np.argmax(f1)))
    recall = c.tps / c.positives
    reached = np.flatnonzero(recall >= preset.value * (1 - 1e-12))
    return point_at(c, int(reached[0]))


def note(preset: Preset, point: OperatingPoint) -> str:
    """Why the ``point`` that ``preset`` picked does not do what its rule says ("" when it does): a budget
    the top tie group alone exceeds, or a fixed threshold no score reaches (nothing flagged).

    >>> from payfm.evaluation.metrics import binary_counts
    >>> note(PROTECTION, choose(PROTECTION, binary_counts([1, 0, 0], [0.9, 0.9, 0.1])))[:46]
    'the top score 0.9000 ties 2 charges (66.67% of'
    """
    if preset.kind == "block_rate" and over_budget(point, preset.value):
        share, budget = f"{point.block_rate:.2%}", f"{preset.value * 100:g}%"
        return (
            f"the top score {point.threshold:.4f} ties {point.flagged:,.0f} charges ({share} of charges > "
            f"the {budget} budget): a threshold cannot split them, so all are blocked"
        )
    if preset.kind == "fixed" and point.flagged == 0:
        return f"no charge scores at or above {preset.value:g}: nothing is flagged"
    return ""
