"""The layout of the online state of a feature set: one state per entity and tile resolution.

The aggregates of a set are laid out once (:func:`plan`): one :class:`StatePlan` per (entity, resolution)
holds every windowed aggregate of that entity at that resolution, of every source and filter; one per entity
holds its all-time aggregates. A (source, filter) pair is a *slot* of the state's integer vector
``[count, s0, q0, ...]``; min/max/last values and distinct counts are *cells*. The code that reads and
writes these states is generated from the plans (:mod:`.online_codegen`).

The math mirrors the offline SQL (see :mod:`.offline`): exact integer sums in cents; a window ``w`` with
offset ``o`` (in tiles) at tile ``t`` covers tiles ``t - w - o .. t - o - 1``, or everything applied so far
from tile ``t - w`` on when ``o`` is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from payfm.features.definitions import (
    CENTS_PER_DOLLAR,
    ENTITIES,
    FILTERS,
    LATE_COLUMNS,
    OUTCOME_AMOUNT_FIELDS,
    Aggregate,
    FeatureSet,
)
from payfm.features.plan import window_tiles

SUMS = ("sum", "mean", "std")  # aggregates that need a column's sum (and sum of squares) in the vector


@dataclass
class Slot:
    """One (source, filter) pair of a state: ``[count, s0, q0, ...]`` at ``offset`` of the vector."""

    source: str
    filter: str | None
    numeric: list[str] = field(default_factory=list)
    offset: int = 0
    times: bool = False  # all-time: keep the first and previous event time

    def sum_index(self, column: str) -> int:
        return self.offset + 1 + 2 * self.numeric.index(column)


@dataclass
class StatePlan:
    """Every aggregate of one entity at one resolution (0: all-time), in one state per entity key."""

    index: int
    entity: str
    res: int  # microseconds; 0 for all-time
    slots: list[Slot] = field(default_factory=list)
    # windowed: extreme cells (slot, column, is_min); all-time: value cells (slot, column) for last/min/max
    cells: list[tuple[int, str, bool]] = field(default_factory=list)
    distinct: list[tuple[int, str]] = field(default_factory=list)
    features: list[tuple[int, Aggregate, int]] = field(default_factory=list)  # (out index, feature, slot)
    width: int = 0
    keep: int = 0  # tiles kept behind the newest one

    def slot(self, source: str, flt: str | None) -> int:
        for i, s in enumerate(self.slots):
            if s.source == source and s.filter == flt:
                return i
        self.slots.append(Slot(source, flt))
        return len(self.slots) - 1

    def cell(self, slot: int, column: str, is_min: bool = False) -> int:
        key = (slot, column, is_min if self.res else False)
        if key not in self.cells:
            self.cells.append(key)
        return self.cells.index(key)

    def distinct_cell(self, slot: int, column: str) -> int:
        if (slot, column) not in self.distinct:
            self.distinct.append((slot, column))
        return self.distinct.index((slot, column))


def plan(fset: FeatureSet) -> list[StatePlan]:
    """The state plans of ``fset``'s aggregates, in first-use order."""
    position = {n: i for i, n in enumerate(fset.names)}
    plans: dict[tuple[str, int], StatePlan] = {}
    for f in fset.aggregates:
        res = 0 if f.resolution is None else int(f.resolution.total_seconds()) * 1_000_000
        sp = plans.setdefault((f.entity, res), StatePlan(len(plans), f.entity, res))
        si = sp.slot(f.source, f.filter)
        slot = sp.slots[si]
        if f.agg in SUMS and f.column not in slot.numeric:
            slot.numeric.append(f.column or "")
        if f.agg in ("since_prev", "since_first"):
            slot.times = True
        if f.agg in ("min", "max", "last"):
            sp.cell(si, f.column or "", f.agg == "min")
        elif f.agg == "distinct":
            sp.distinct_cell(si, f.column or "")
        if res:
            w, o = window_tiles(f)
            sp.keep = max(sp.keep, w + o + 1)
        sp.features.append((position[f.name], f, si))
    out = list(plans.values())
    for sp in out:
        width = 0
        for s in sp.slots:
            s.offset = width
            width += 1 + 2 * len(s.numeric)
        sp.width = width
    return out


def label_fields(plans: list[StatePlan]) -> list[str]:
    """Charge fields the outcome events of a charge need (its entity keys and the columns they read; its
    amount and currency when an outcome's own amount is read), and its outcome when a filter reads it (an
    authorization result reported later counts only if it had none)."""
    out: set[str] = set()
    for sp in plans:
        for i, s in enumerate(sp.slots):
            if s.source == "charges":
                if s.filter and FILTERS[s.filter].column in LATE_COLUMNS:
                    # whether the charge was counted with its outcome: its authorization result counts once
                    out.add(FILTERS[s.filter].column)
                continue
            out.update(ENTITIES[sp.entity])
            out.update(s.numeric)
            if s.filter:
                out.add(FILTERS[s.filter].column)
            out.update(c for si, c, _ in sp.cells if si == i)
            out.update(c for si, c in sp.distinct if si == i)
    if any(f.reads_outcome_amount for sp in plans for _, f, _ in sp.features):
        out.update(OUTCOME_AMOUNT_FIELDS)  # an outcome's own amount is converted at its charge's rate
    return sorted(out)


def write_columns(plans: list[StatePlan]) -> list[str]:
    """Charge fields the state updates read (entity keys, filter columns, aggregated columns)."""
    out: set[str] = set()
    for sp in plans:
        out.update(ENTITIES[sp.entity])
        for s in sp.slots:
            out.update(s.numeric)
            if s.filter:
                out.add(FILTERS[s.filter].column)
        out.update(c for _, c, _ in sp.cells)
        out.update(c for _, c in sp.distinct)
    if any(s.numeric for sp in plans for s in sp.slots) or any(sp.cells for sp in plans):
        out.add("amount_usd")
    return sorted(out)


def std(c: int, s: int, q: int) -> float | None:
    """Sample standard deviation in dollars from exact integer count, sum and sum of squares (cents)."""
    if c < 2:
        return None
    return math.sqrt(float(c * q - s * s) / float(c * (c - 1))) / CENTS_PER_DOLLAR
