"""The online feature engine: for a new charge, the exact offline value of every feature, then the update.

State is kept per (group, entity key) in the objects of :mod:`payfm.features.state`, whose math mirrors the
offline SQL, in a :class:`~payfm.features.stores.StateStore` (process memory by default, Redis for several
serving processes).

Sums are exact integers (amounts are integer minor units), so means and standard deviations are computed from
the same integers as the backfill and agree to the last bit or within 1e-9 relative.

Applying the same charge or outcome id twice counts once. Events must arrive in time order per key for exact
parity with the backfill (a late event is still counted, in its own tile).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from payfm.features.definitions import (
    CENTS_PER_DOLLAR,
    ENTITIES,
    FILTERS,
    Derived,
    FeatureSet,
    RequestFeature,
)
from payfm.features.plan import Group, groups, window_tiles
from payfm.features.request import derive, request_value
from payfm.features.state import State, StateKey, TotalState, WindowState
from payfm.features.stores import MemoryStore, StateStore


def _std(c: int, s: int, q: int) -> float | None:
    if c < 2:
        return None
    return math.sqrt(float(c * q - s * s) / float(c * (c - 1))) / CENTS_PER_DOLLAR


def _value(agg: str, c: int, s: int, q: int) -> float | None:
    """The aggregate from exact integer sums (cents); the same formulas as the offline SQL."""
    if agg == "count":
        return float(c)
    if agg == "sum":
        return float(s) / CENTS_PER_DOLLAR
    if agg == "mean":
        return float(s) / float(c) / CENTS_PER_DOLLAR if c else None
    if agg == "std":
        return _std(c, s, q)
    raise AssertionError(agg)


# Read codes of an aggregate.
_COUNT, _SUM, _MEAN, _STD, _MIN, _MAX, _DISTINCT = range(7)
_CODES = {
    "count": _COUNT,
    "sum": _SUM,
    "mean": _MEAN,
    "std": _STD,
    "min": _MIN,
    "max": _MAX,
    "distinct": _DISTINCT,
}


Slot = tuple[str | None, frozenset[str], list[str]]  # (filter column, its values, numeric columns)
_MERGEABLE = {"count", "sum", "mean", "std"}


@dataclass
class _Compiled:
    """A state group prepared for fast per-charge evaluation: every index resolved once, up front.

    Windowed groups of the same source, entity and resolution whose features are counts, sums, means or
    standard deviations share one state: each filter is a *slot* of the cumulative vector
    ``[count, s0, q0, ...]``, so a charge touches one state per (entity, resolution), not one per filter.
    """

    index: int
    entity: str
    source: str
    res: int
    slots: list[Slot]
    width: int
    columns: list[str]  # value columns (all-time groups)
    numeric: list[str]  # numeric columns (all-time groups)
    minmax: list[str]
    distinct: list[str]
    keep: int  # tiles to keep behind the newest one
    spans: list[tuple[int, int]]  # distinct (window, offset) in tiles
    # (out index, code, span index, count index, sum index, minmax/distinct index, window, offset)
    ops: list[tuple[int, int, int, int, int, int, int, int]]
    total_ops: list[tuple[int, str, int, int]]  # (out index, agg, sum index j, column index)


def _slot(g: Group) -> Slot:
    flt = FILTERS[g.key.filter] if g.key.filter else None
    return (flt.column if flt else None, frozenset(flt.values) if flt else frozenset(), g.numeric_columns)


def _compile(i: int, members: list[Group], position: dict[str, int]) -> _Compiled:
    first = members[0]
    slots = [_slot(g) for g in members]
    offsets = []
    width = 0
    for _, _, nums in slots:
        offsets.append(width)
        width += 1 + 2 * len(nums)
    minmax, distinct = first.minmax_columns, first.distinct_columns  # only unmerged groups have these
    spans: list[tuple[int, int]] = []
    ops: list[tuple[int, int, int, int, int, int, int, int]] = []
    total_ops: list[tuple[int, str, int, int]] = []
    for g, off, (_, _, nums) in zip(members, offsets, slots, strict=True):
        for f in g.features:
            j = off + 1 + 2 * nums.index(f.column) if f.column in nums else off
            if g.windowed:
                w, o = window_tiles(f)
                if (w, o) not in spans:
                    spans.append((w, o))
                k = 0
                if f.agg in ("min", "max"):
                    k = minmax.index(f.column or "")
                elif f.agg == "distinct":
                    k = distinct.index(f.column or "")
                ops.append((position[f.name], _CODES[f.agg], spans.index((w, o)), off, j, k, w, o))
            else:
                ci = g.value_columns.index(f.column) if f.column else -1
                total_ops.append((position[f.name], f.agg, j, ci))
    return _Compiled(
        index=i,
        entity=first.key.entity,
        source=first.key.source,
        res=first.key.resolution_us,
        slots=slots,
        width=width,
        columns=first.value_columns,
        numeric=first.numeric_columns,
        minmax=minmax,
        distinct=distinct,
        keep=max((w + o for w, o in spans), default=0) + 1,
        spans=spans,
        ops=ops,
        total_ops=total_ops,
    )


def _merge(plan: list[Group]) -> list[list[Group]]:
    """Plan groups that can share one state (see :class:`_Compiled`), in first-use order."""
    out: dict[object, list[Group]] = {}
    for g in plan:
        mergeable = g.windowed and all(f.agg in _MERGEABLE for f in g.features)
        key: object = (g.key.source, g.key.entity, g.key.resolution_us) if mergeable else g.key
        out.setdefault(key, []).append(g)
    return list(out.values())


def window_ttl_s(fset: FeatureSet) -> dict[int, int]:
    """Per windowed state group: seconds of inactivity after which its state no longer matters (+1 h)."""
    position = {n: i for i, n in enumerate(fset.names)}
    compiled = [_compile(i, m, position) for i, m in enumerate(_merge(groups(fset)))]
    return {cg.index: cg.keep * cg.res // 1_000_000 + 3600 for cg in compiled if cg.res}


def entity_key(entity: str, event: Mapping[str, Any]) -> Any:
    """The key of ``entity`` in ``event``: a value, a tuple for pairs, or None when a part is missing."""
    cols = ENTITIES[entity]
    if len(cols) == 1:
        return event.get(cols[0])
    key = tuple(event.get(c) for c in cols)
    return None if None in key else key


class OnlineFeatures:
    """Online feature state for one feature set, in process memory.

    >>> from payfm.features.catalog import tiny_set
    >>> online = OnlineFeatures(tiny_set())
    >>> charge = {"charge_id": "ch_1", "created_us": 0, "card_fingerprint": "fp_1", "amount_usd": 500}
    >>> online.features_then_update(charge)["card.count_charges_1h"]
    0.0
    >>> online.features_then_update({**charge, "charge_id": "ch_2", "created_us": 1})["card.count_charges_1h"]
    1.0
    """

    def __init__(self, fset: FeatureSet, store: StateStore | None = None) -> None:
        self.fset = fset
        self.store: StateStore = store if store is not None else MemoryStore()
        self.names = fset.names
        position = {n: i for i, n in enumerate(self.names)}
        self._groups = [_compile(i, m, position) for i, m in enumerate(_merge(groups(fset)))]
        self._entities = sorted({cg.entity for cg in self._groups})
        self._by_source: dict[str, list[_Compiled]] = {}
        for cg in self._groups:
            self._by_source.setdefault(cg.source, []).append(cg)
        label = [cg for cg in self._groups if cg.source != "charges"]
        self._label_fields = sorted(
            {k for cg in label for k in ENTITIES[cg.entity]}
            | {c for cg in label for _, _, nums in cg.slots for c in nums}
            | {c for cg in label for c in cg.columns}
            | {col for cg in label for col, _, _ in cg.slots if col}
        )
        self._request = [(position[f.name], f) for f in fset.features if isinstance(f, RequestFeature)]
        self._derived = [
            (position[f.name], f, [position[x] for x in f.inputs])
            for f in fset.features
            if isinstance(f, Derived)
        ]

    # ---- reading ----------------------------------------------------------------------------------------
    def _keys(self, charge: Mapping[str, Any], source: str) -> tuple[dict[str, Any], list[StateKey]]:
        keys = {e: entity_key(e, charge) for e in self._entities}
        groups_ = self._groups if source == "*" else self._by_source.get(source, [])
        return keys, [(cg.index, keys[cg.entity]) for cg in groups_ if keys[cg.entity] is not None]

    def _vector(
        self, states: MutableMapping[StateKey, State], keys: dict[str, Any], charge: Mapping[str, Any]
    ) -> list[float | None]:
        ts = int(charge["created_us"])
        out: list[float | None] = [None] * len(self.names)
        for cg in self._groups:
            key = keys[cg.entity]
            if key is None:
                continue
            st = states.get((cg.index, key))
            if cg.res:
                self._read_window(cg, st, ts // cg.res, out)  # type: ignore[arg-type]
            else:
                self._read_total(cg, st, ts, out)  # type: ignore[arg-type]
        for i, rf in self._request:
            out[i] = request_value(rf, charge, ts)
        for i, d, inputs in self._derived:
            out[i] = derive(d, [out[x] for x in inputs])
        return out

    def vector(self, charge: Mapping[str, Any]) -> list[float | None]:
        """Every feature of ``charge`` as of just before it, in feature-set order (the state is unchanged)."""
        keys, skeys = self._keys(charge, "*")
        return self.store.run(skeys, None, None, lambda states, _: self._vector(states, keys, charge))

    def features(self, charge: Mapping[str, Any]) -> dict[str, float | None]:
        """Every feature of ``charge`` by name, as of just before it (the state is unchanged)."""
        return dict(zip(self.names, self.vector(charge), strict=True))

    @staticmethod
    def _read_window(cg: _Compiled, st: WindowState | None, tile: int, out: list[float | None]) -> None:
        if st is None:
            for i, code, *_ in cg.ops:
                out[i] = 0.0 if code in (_COUNT, _SUM, _DISTINCT) else None
            return
        total = st.total()
        through = st.through
        sums = [(total if o == 0 else through(tile - o - 1), through(tile - w - o - 1)) for w, o in cg.spans]
        for i, code, span, ci, j, k, w, o in cg.ops:
            if code == _DISTINCT:
                out[i] = float(st.distinct(k, tile - w))
                continue
            if code in (_MIN, _MAX):
                ext = st.extreme(k, tile - w - o, tile if o == 0 else tile - o - 1, code == _MIN)
                out[i] = None if ext is None else ext / CENTS_PER_DOLLAR
                continue
            hi, lo = sums[span]
            c = hi[ci] - lo[ci]
            if code == _COUNT:
                out[i] = float(c)
            elif code == _SUM:
                out[i] = float(hi[j] - lo[j]) / CENTS_PER_DOLLAR
            elif code == _MEAN:
                out[i] = float(hi[j] - lo[j]) / float(c) / CENTS_PER_DOLLAR if c else None
            else:
                out[i] = _std(c, hi[j] - lo[j], hi[j + 1] - lo[j + 1])

    @staticmethod
    def _read_total(cg: _Compiled, st: TotalState | None, ts: int, out: list[float | None]) -> None:
        for i, agg, j, ci in cg.total_ops:
            if st is None:
                out[i] = {"count": 0.0, "sum": 0.0, "distinct": 0.0, "first_seen": 1.0}.get(agg)
                continue
            c = st.sums[0]
            if agg == "count":
                out[i] = float(c)
            elif agg == "first_seen":
                out[i] = 1.0 if c == 0 else 0.0
            elif agg == "since_prev":
                out[i] = None if st.prev_ts is None else float(ts - st.prev_ts) / 1e6
            elif agg == "since_first":
                out[i] = None if st.first_ts is None else float(ts - st.first_ts) / 1e6
            elif agg == "distinct":
                out[i] = float(len(st.seen[ci]))
            elif agg in ("last", "min", "max"):
                v = st.last[ci] if agg == "last" else (st.mins if agg == "min" else st.maxs)[ci]
                out[i] = None if v is None else float(v) / CENTS_PER_DOLLAR
            else:
                out[i] = _value(agg, c, st.sums[j], st.sums[j + 1])

    # ---- updating ---------------------------------------------------------------------------------------
    def _apply(
        self,
        states: MutableMapping[StateKey, State],
        cg: _Compiled,
        event: Mapping[str, Any],
        key: Any,
        ts: int,
    ) -> None:
        vec: list[int] = []
        hit = False
        for column, values, nums in cg.slots:
            if column is None or event.get(column) in values:
                hit = True
                vec.append(1)
                for c in nums:
                    v = int(event[c])  # amount_usd is a required field
                    vec.append(v)
                    vec.append(v * v)
            else:
                vec.extend([0] * (1 + 2 * len(nums)))
        if not hit:
            return
        sk = (cg.index, key)
        st = states.get(sk)
        if cg.res:
            if st is None:
                st = states[sk] = WindowState(cg.width, len(cg.minmax), len(cg.distinct))
            mm = [float(event[c]) for c in cg.minmax]
            dv = [event.get(c) for c in cg.distinct]
            st.add(ts // cg.res, vec, mm, dv, cg.keep)  # type: ignore[union-attr]
            return
        if st is None:
            st = states[sk] = TotalState(cg.width, len(cg.columns))
        assert isinstance(st, TotalState)
        sums = st.sums
        for i, v in enumerate(vec):
            sums[i] += v
        for i, c in enumerate(cg.columns):
            val = event.get(c)
            if val is None:
                continue
            st.last[i] = val
            st.seen[i].add(val)
            if isinstance(val, int | float):
                fv = float(val)
                lo, hi = st.mins[i], st.maxs[i]
                if lo is None or fv < lo:
                    st.mins[i] = fv
                if hi is None or fv > hi:
                    st.maxs[i] = fv
        if st.first_ts is None:
            st.first_ts = ts
        st.prev_ts = ts if st.prev_ts is None else max(st.prev_ts, ts)

    def _apply_all(
        self,
        states: MutableMapping[StateKey, State],
        source: str,
        keys: dict[str, Any],
        event: Mapping[str, Any],
        ts: int,
    ) -> None:
        for cg in self._by_source.get(source, ()):
            key = keys[cg.entity]
            if key is not None:
                self._apply(states, cg, event, key, ts)

    def features_then_update(self, charge: Mapping[str, Any]) -> dict[str, float | None]:
        """The decision-time path: read every feature, then add the charge, in one atomic step.

        Idempotent by charge id: a charge already applied is read but not counted again.
        """
        return dict(zip(self.names, self.vector_then_update(charge), strict=True))

    def vector_then_update(self, charge: Mapping[str, Any]) -> list[float | None]:
        """:meth:`features_then_update` as a list in feature-set order."""
        keys, skeys = self._keys(charge, "*")
        fields = {k: charge.get(k) for k in self._label_fields}
        ts = int(charge["created_us"])

        def step(states: MutableMapping[StateKey, State], claimed: bool) -> list[float | None]:
            out = self._vector(states, keys, charge)
            if claimed:
                self._apply_all(states, "charges", keys, charge, ts)
            return out

        out = self.store.run(skeys, str(charge["charge_id"]), fields, step)
        self.store.advance(ts)
        return out

    def update(self, charge: Mapping[str, Any]) -> bool:
        """Add ``charge`` to the state; False (and no change) if its id was already applied."""
        keys, skeys = self._keys(charge, "charges")
        fields = {k: charge.get(k) for k in self._label_fields}
        ts = int(charge["created_us"])

        def step(states: MutableMapping[StateKey, State], claimed: bool) -> bool:
            if claimed:
                self._apply_all(states, "charges", keys, charge, ts)
            return claimed

        applied = self.store.run(skeys, str(charge["charge_id"]), fields, step)
        self.store.advance(ts)
        return applied

    def apply_outcome(self, source: str, outcome_id: str, charge_id: str, created_us: int) -> bool:
        """Count an outcome (``fraud_disputes``, ``efws`` or ``refunds``) of a known charge, at its own time.

        Returns False if the outcome id was already applied or its charge was never seen (then it cannot be
        attributed to an entity).
        """
        fields = self.store.charge_fields(charge_id)
        if fields is None or source not in self._by_source:
            return False
        keys, skeys = self._keys(fields, source)

        def step(states: MutableMapping[StateKey, State], claimed: bool) -> bool:
            if claimed:
                self._apply_all(states, source, keys, fields, created_us)
            return claimed

        applied = self.store.run(skeys, f"{source}:{outcome_id}", None, step)
        self.store.advance(created_us)
        return applied
