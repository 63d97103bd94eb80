"""The online feature state: for a new charge, the exact offline value of every feature, then the update.

State is kept per (group, entity key) in small objects whose math mirrors the offline SQL:

- :class:`WindowState`: tiles of one resolution with *cumulative* sums, so a window is two binary searches and
  a subtraction (``O(log tiles)``) however hot the key; old tiles fold into a base, so memory is bounded by
  the longest window; per-tile min/max and last-seen tiles for distinct counts where a feature needs them.
- :class:`TotalState`: all-time count, sums, min/max, last value, first/previous time, distinct sets.

Sums are exact integers (amounts are integer minor units), so means and standard deviations are computed from
the same integers as the backfill and agree to the last bit or within 1e-9 relative.

Applying the same charge or outcome id twice counts once. Events must arrive in time order per key for exact
parity with the backfill (a late event is still counted, in its own tile).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
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


class WindowState:
    """Tiles of one resolution for one entity key: cumulative sums ``[count, s0, q0, s1, q1, ...]``."""

    __slots__ = ("base", "cum", "maxs", "mins", "seen", "tiles")

    def __init__(self, width: int, n_minmax: int, n_distinct: int) -> None:
        self.tiles: list[int] = []
        self.cum: list[list[int]] = []
        self.base: list[int] = [0] * width
        self.mins: list[list[float | None]] | None = [[] for _ in range(n_minmax)] if n_minmax else None
        self.maxs: list[list[float | None]] | None = [[] for _ in range(n_minmax)] if n_minmax else None
        self.seen: list[dict[Any, int]] | None = [{} for _ in range(n_distinct)] if n_distinct else None

    def add(self, tile: int, vec: list[int], mm: list[Any], distinct: list[Any], keep: int) -> None:
        tiles = self.tiles
        if tiles and tiles[-1] == tile:
            last = self.cum[-1]
            for i, v in enumerate(vec):
                last[i] += v
            i = len(tiles) - 1
        elif not tiles or tiles[-1] < tile:
            prev = self.cum[-1] if self.cum else self.base
            tiles.append(tile)
            self.cum.append([p + v for p, v in zip(prev, vec, strict=True)])
            if self.mins is not None and self.maxs is not None:
                for lst in self.mins:
                    lst.append(None)
                for lst in self.maxs:
                    lst.append(None)
            i = len(tiles) - 1
        else:  # a late event: insert its tile and shift every later cumulative sum
            i = bisect_left(tiles, tile)
            if i == len(tiles) or tiles[i] != tile:
                prev = self.cum[i - 1] if i else self.base
                tiles.insert(i, tile)
                self.cum.insert(i, list(prev))
                if self.mins is not None and self.maxs is not None:
                    for lst in self.mins:
                        lst.insert(i, None)
                    for lst in self.maxs:
                        lst.insert(i, None)
            for j in range(i, len(tiles)):
                row = self.cum[j]
                for k, v in enumerate(vec):
                    row[k] += v
        if self.mins is not None and self.maxs is not None:
            for k, v in enumerate(mm):
                if v is None:
                    continue
                cur = self.mins[k][i]
                self.mins[k][i] = v if cur is None or v < cur else cur
                cur = self.maxs[k][i]
                self.maxs[k][i] = v if cur is None or v > cur else cur
        if self.seen is not None:
            for k, v in enumerate(distinct):
                if v is not None and self.seen[k].get(v, -1) < tile:
                    self.seen[k][v] = tile
        # Fold tiles older than the longest window into the base: bounded memory for hot keys.
        limit = tiles[-1] - keep
        if tiles[0] < limit:
            cut = bisect_left(tiles, limit)
            self.base = self.cum[cut - 1]
            del tiles[:cut], self.cum[:cut]
            if self.mins is not None and self.maxs is not None:
                for lst in self.mins:
                    del lst[:cut]
                for lst in self.maxs:
                    del lst[:cut]
            if self.seen is not None:
                for d in self.seen:
                    if len(d) > 64:
                        for v in [v for v, t in d.items() if t < limit]:
                            del d[v]

    def through(self, tile: int) -> list[int]:
        """Cumulative sums of every event in tiles <= ``tile``."""
        i = bisect_right(self.tiles, tile) - 1
        return self.cum[i] if i >= 0 else self.base

    def total(self) -> list[int]:
        return self.cum[-1] if self.cum else self.base

    def extreme(self, k: int, lo_tile: int, hi_tile: int, is_min: bool) -> float | None:
        assert self.mins is not None and self.maxs is not None
        lo = bisect_left(self.tiles, lo_tile)
        hi = bisect_right(self.tiles, hi_tile)
        vals = [v for v in (self.mins if is_min else self.maxs)[k][lo:hi] if v is not None]
        if not vals:
            return None
        return min(vals) if is_min else max(vals)

    def distinct(self, k: int, lo_tile: int) -> int:
        assert self.seen is not None
        return sum(1 for t in self.seen[k].values() if t >= lo_tile)


class TotalState:
    """All-time aggregates for one entity key."""

    __slots__ = ("first_ts", "last", "maxs", "mins", "prev_ts", "seen", "sums")

    def __init__(self, width: int, n_cols: int) -> None:
        self.sums = [0] * width
        self.mins: list[float | None] = [None] * n_cols
        self.maxs: list[float | None] = [None] * n_cols
        self.last: list[Any] = [None] * n_cols
        self.seen: list[set[Any]] = [set() for _ in range(n_cols)]
        self.first_ts: int | None = None
        self.prev_ts: int | None = None


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


@dataclass
class _Compiled:
    """A group prepared for fast per-charge evaluation: every index resolved once, up front."""

    group: Group
    index: int
    entity: str
    filter_column: str | None
    filter_values: frozenset[str]
    columns: list[str]  # value columns
    numeric: list[str]  # columns with sums, in vector order
    minmax: list[str]
    distinct: list[str]
    keep: int  # tiles to keep behind the newest one
    res: int
    spans: list[tuple[int, int]]  # distinct (window, offset) in tiles
    # (out index, code, span index, sum index j, minmax/distinct index k, window w, offset o)
    ops: list[tuple[int, int, int, int, int, int, int]]
    total_ops: list[tuple[int, str, int, int]]  # (out index, agg, sum index j, column index)


def _compile(i: int, g: Group, position: dict[str, int]) -> _Compiled:
    cols = g.value_columns
    numeric, minmax, distinct = g.numeric_columns, g.minmax_columns, g.distinct_columns
    flt = FILTERS[g.key.filter] if g.key.filter else None
    spans: list[tuple[int, int]] = []
    ops: list[tuple[int, int, int, int, int, int, int]] = []
    total_ops: list[tuple[int, str, int, int]] = []
    for f in g.features:
        j = 1 + 2 * numeric.index(f.column) if f.column in numeric else 0
        if g.windowed:
            w, o = window_tiles(f)
            if (w, o) not in spans:
                spans.append((w, o))
            k = 0
            if f.agg in ("min", "max"):
                k = minmax.index(f.column or "")
            elif f.agg == "distinct":
                k = distinct.index(f.column or "")
            ops.append((position[f.name], _CODES[f.agg], spans.index((w, o)), j, k, w, o))
        else:
            ci = cols.index(f.column) if f.column else -1
            total_ops.append((position[f.name], f.agg, j, ci))
    keep = max((w + o for w, o in spans), default=0) + 1
    return _Compiled(
        group=g,
        index=i,
        entity=g.key.entity,
        filter_column=flt.column if flt else None,
        filter_values=frozenset(flt.values) if flt else frozenset(),
        columns=cols,
        numeric=numeric,
        minmax=minmax,
        distinct=distinct,
        keep=keep,
        res=g.key.resolution_us,
        spans=spans,
        ops=ops,
        total_ops=total_ops,
    )


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

    def __init__(self, fset: FeatureSet) -> None:
        self.fset = fset
        self.names = fset.names
        position = {n: i for i, n in enumerate(self.names)}
        self._groups = [_compile(i, g, position) for i, g in enumerate(groups(fset))]
        self._entities = sorted({cg.entity for cg in self._groups})
        self._by_source: dict[str, list[_Compiled]] = {}
        for cg in self._groups:
            self._by_source.setdefault(cg.group.key.source, []).append(cg)
        label = [cg for cg in self._groups if cg.group.key.source != "charges"]
        self._label_fields = sorted(
            {k for cg in label for k in ENTITIES[cg.entity]}
            | {c for cg in label for c in cg.columns}
            | {cg.filter_column for cg in label if cg.filter_column}
        )
        self._state: dict[tuple[int, Any], WindowState | TotalState] = {}
        self._charges: dict[str, dict[str, Any]] = {}  # charge_id -> fields its outcomes need
        self._outcomes: set[str] = set()
        self._request = [(position[f.name], f) for f in fset.features if isinstance(f, RequestFeature)]
        self._derived = [
            (position[f.name], f, [position[x] for x in f.inputs])
            for f in fset.features
            if isinstance(f, Derived)
        ]

    # ---- reading ----------------------------------------------------------------------------------------
    def vector(self, charge: Mapping[str, Any]) -> list[float | None]:
        """Every feature of ``charge`` as of just before it, in feature-set order (the state is unchanged)."""
        ts = int(charge["created_us"])
        out: list[float | None] = [None] * len(self.names)
        keys = {e: entity_key(e, charge) for e in self._entities}
        state = self._state
        for cg in self._groups:
            key = keys[cg.entity]
            if key is None:
                continue
            st = state.get((cg.index, key))
            if cg.res:
                self._read_window(cg, st, ts // cg.res, out)  # type: ignore[arg-type]
            else:
                self._read_total(cg, st, ts, out)  # type: ignore[arg-type]
        for i, rf in self._request:
            out[i] = request_value(rf, charge, ts)
        for i, d, inputs in self._derived:
            out[i] = derive(d, [out[x] for x in inputs])
        return out

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
        for i, code, span, j, k, w, o in cg.ops:
            if code == _DISTINCT:
                out[i] = float(st.distinct(k, tile - w))
                continue
            if code in (_MIN, _MAX):
                ext = st.extreme(k, tile - w - o, tile if o == 0 else tile - o - 1, code == _MIN)
                out[i] = None if ext is None else ext / CENTS_PER_DOLLAR
                continue
            hi, lo = sums[span]
            c = hi[0] - lo[0]
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
    def _apply(self, cg: _Compiled, event: Mapping[str, Any], key: Any, ts: int) -> None:
        if cg.filter_column is not None and event.get(cg.filter_column) not in cg.filter_values:
            return
        vec = [1]
        for c in cg.numeric:
            v = int(event[c])  # amount_usd is a required field
            vec.append(v)
            vec.append(v * v)
        sk = (cg.index, key)
        st = self._state.get(sk)
        if cg.res:
            if st is None:
                st = self._state[sk] = WindowState(len(vec), len(cg.minmax), len(cg.distinct))
            mm = [float(event[c]) for c in cg.minmax]
            dv = [event.get(c) for c in cg.distinct]
            st.add(ts // cg.res, vec, mm, dv, cg.keep)  # type: ignore[union-attr]
            return
        if st is None:
            st = self._state[sk] = TotalState(len(vec), len(cg.columns))
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

    def _apply_all(self, source: str, event: Mapping[str, Any], ts: int) -> None:
        keys: dict[str, Any] = {}
        for cg in self._by_source.get(source, ()):
            key = keys.get(cg.entity, keys)
            if key is keys:
                key = keys[cg.entity] = entity_key(cg.entity, event)
            if key is not None:
                self._apply(cg, event, key, ts)

    def update(self, charge: Mapping[str, Any]) -> bool:
        """Add ``charge`` to the state; False (and no change) if its id was already applied."""
        cid = charge["charge_id"]
        if cid in self._charges:
            return False
        self._charges[cid] = {k: charge.get(k) for k in self._label_fields}
        self._apply_all("charges", charge, int(charge["created_us"]))
        return True

    def features_then_update(self, charge: Mapping[str, Any]) -> dict[str, float | None]:
        """The decision-time path: read every feature, then add the charge (idempotent by charge id)."""
        out = self.features(charge)
        self.update(charge)
        return out

    def apply_outcome(self, source: str, outcome_id: str, charge_id: str, created_us: int) -> bool:
        """Count an outcome (``fraud_disputes``, ``efws`` or ``refunds``) of a known charge, at its own time.

        Returns False if the outcome id was already applied or its charge was never seen (then it cannot be
        attributed to an entity).
        """
        if outcome_id in self._outcomes or charge_id not in self._charges:
            return False
        self._outcomes.add(outcome_id)
        self._apply_all(source, self._charges[charge_id], created_us)
        return True

    @property
    def state_size(self) -> int:
        return len(self._state)
