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
    Aggregate,
    Derived,
    FeatureSet,
    RequestFeature,
)
from payfm.features.plan import Group, groups, window_tiles
from payfm.features.request import derive, request_value

Key = tuple[Any, ...]


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


@dataclass
class _Compiled:
    """A group prepared for fast per-charge evaluation."""

    group: Group
    index: int
    keys: tuple[str, ...]
    filter_column: str | None
    filter_values: frozenset[str]
    columns: list[str]  # value columns
    numeric: list[int]  # indices into columns with sums
    minmax: list[int]
    distinct: list[int]
    keep: int  # tiles to keep behind the newest one
    res: int


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
        self._groups: list[_Compiled] = []
        for i, g in enumerate(groups(fset)):
            cols = g.value_columns
            spans = [sum(window_tiles(f)) for f in g.features] if g.windowed else [0]
            flt = FILTERS[g.key.filter] if g.key.filter else None
            self._groups.append(
                _Compiled(
                    group=g,
                    index=i,
                    keys=ENTITIES[g.key.entity],
                    filter_column=flt.column if flt else None,
                    filter_values=frozenset(flt.values) if flt else frozenset(),
                    columns=cols,
                    numeric=[cols.index(c) for c in g.numeric_columns],
                    minmax=[cols.index(c) for c in g.minmax_columns],
                    distinct=[cols.index(c) for c in g.distinct_columns],
                    keep=max(spans) + 1,
                    res=g.key.resolution_us,
                )
            )
        self._by_source: dict[str, list[_Compiled]] = {}
        for cg in self._groups:
            self._by_source.setdefault(cg.group.key.source, []).append(cg)
        self._label_fields = sorted(
            {k for cg in self._groups if cg.group.key.source != "charges" for k in cg.keys}
            | {c for cg in self._groups if cg.group.key.source != "charges" for c in cg.columns}
            | {
                cg.filter_column
                for cg in self._groups
                if cg.group.key.source != "charges" and cg.filter_column
            }
        )
        self._state: dict[tuple[int, Key], WindowState | TotalState] = {}
        self._charges: dict[str, dict[str, Any]] = {}  # charge_id -> fields outcomes need
        self._outcomes: set[str] = set()
        self._request = [f for f in fset.features if isinstance(f, RequestFeature)]
        self._derived = [f for f in fset.features if isinstance(f, Derived)]

    # ---- reading ----------------------------------------------------------------------------------------
    def features(self, charge: Mapping[str, Any]) -> dict[str, float | None]:
        """Every feature of ``charge`` as of just before it (the state is not changed)."""
        ts = int(charge["created_us"])
        out: dict[str, float | None] = {}
        for cg in self._groups:
            key = self._key(cg, charge)
            if key is None:
                for f in cg.group.features:
                    out[f.name] = None
                continue
            state = self._state.get((cg.index, key))
            if cg.res:
                self._read_window(cg, state, ts // cg.res, out)  # type: ignore[arg-type]
            else:
                self._read_total(cg, state, ts, out)  # type: ignore[arg-type]
        for rf in self._request:
            out[rf.name] = request_value(rf, charge, ts)
        for d in self._derived:
            out[d.name] = derive(d, out)
        return {name: out[name] for name in self.fset.names}

    @staticmethod
    def _key(cg: _Compiled, event: Mapping[str, Any]) -> Key | None:
        key = tuple(event.get(k) for k in cg.keys)
        return None if None in key else key

    def _read_window(
        self, cg: _Compiled, st: WindowState | None, tile: int, out: dict[str, float | None]
    ) -> None:
        for f in cg.group.features:
            w, o = window_tiles(f)
            if st is None:
                out[f.name] = 0.0 if f.agg in ("count", "sum", "distinct") else None
                continue
            vi = cg.columns.index(f.column) if f.column else None
            if f.agg == "distinct":
                assert vi is not None
                out[f.name] = float(st.distinct(cg.distinct.index(vi), tile - w))
                continue
            hi_tile = tile if o == 0 else tile - o - 1
            if f.agg in ("min", "max"):
                assert vi is not None
                ext = st.extreme(cg.minmax.index(vi), tile - w - o, hi_tile, f.agg == "min")
                out[f.name] = None if ext is None else ext / CENTS_PER_DOLLAR
                continue
            hi = st.total() if o == 0 else st.through(hi_tile)
            lo = st.through(tile - w - o - 1)
            c = hi[0] - lo[0]
            if vi is None:
                out[f.name] = _value(f.agg, c, 0, 0)
            else:
                j = 1 + 2 * cg.numeric.index(vi)
                out[f.name] = _value(f.agg, c, hi[j] - lo[j], hi[j + 1] - lo[j + 1])

    def _read_total(
        self, cg: _Compiled, st: TotalState | None, ts: int, out: dict[str, float | None]
    ) -> None:
        for f in cg.group.features:
            vi = cg.columns.index(f.column) if f.column else None
            agg = f.agg
            if st is None:
                out[f.name] = {"count": 0.0, "sum": 0.0, "distinct": 0.0, "first_seen": 1.0}.get(agg)
                continue
            c = st.sums[0]
            if agg == "first_seen":
                out[f.name] = 1.0 if c == 0 else 0.0
            elif agg == "since_prev":
                out[f.name] = None if st.prev_ts is None else float(ts - st.prev_ts) / 1e6
            elif agg == "since_first":
                out[f.name] = None if st.first_ts is None else float(ts - st.first_ts) / 1e6
            elif agg == "distinct":
                assert vi is not None
                out[f.name] = float(len(st.seen[vi]))
            elif agg == "last":
                assert vi is not None
                v = st.last[vi]
                out[f.name] = None if v is None else float(v) / CENTS_PER_DOLLAR
            elif agg in ("min", "max"):
                assert vi is not None
                v = (st.mins if agg == "min" else st.maxs)[vi]
                out[f.name] = None if v is None else float(v) / CENTS_PER_DOLLAR
            elif vi is None:
                out[f.name] = _value(agg, c, 0, 0)
            else:
                j = 1 + 2 * cg.numeric.index(vi)
                out[f.name] = _value(agg, c, st.sums[j], st.sums[j + 1])

    # ---- updating ---------------------------------------------------------------------------------------
    def _apply(self, cg: _Compiled, event: Mapping[str, Any], ts: int) -> None:
        key = self._key(cg, event)
        if key is None:
            return
        if cg.filter_column is not None and event.get(cg.filter_column) not in cg.filter_values:
            return
        cols = cg.columns
        vec = [1]
        for i in cg.numeric:
            v = event.get(cols[i])
            v = 0 if v is None else int(v)
            vec.append(v)
            vec.append(v * v)
        # amount_usd is a required field, so a numeric value is never missing in a valid event.
        sk = (cg.index, key)
        st = self._state.get(sk)
        if cg.res:
            if st is None:
                st = self._state[sk] = WindowState(len(vec), len(cg.minmax), len(cg.distinct))
            assert isinstance(st, WindowState)
            mm = [event.get(cols[i]) for i in cg.minmax]
            dv = [event.get(cols[i]) for i in cg.distinct]
            st.add(ts // cg.res, vec, [None if v is None else float(v) for v in mm], dv, cg.keep)
            return
        if st is None:
            st = self._state[sk] = TotalState(len(vec), len(cols))
        assert isinstance(st, TotalState)
        for i, v in enumerate(vec):
            st.sums[i] += v
        for i, c in enumerate(cols):
            v = event.get(c)
            if v is None:
                continue
            st.last[i] = v
            st.seen[i].add(v)
            if isinstance(v, int | float):
                fv = float(v)
                if st.mins[i] is None or fv < st.mins[i]:  # type: ignore[operator]
                    st.mins[i] = fv
                if st.maxs[i] is None or fv > st.maxs[i]:  # type: ignore[operator]
                    st.maxs[i] = fv
        if st.first_ts is None:
            st.first_ts = ts
        st.prev_ts = ts if st.prev_ts is None else max(st.prev_ts, ts)

    def update(self, charge: Mapping[str, Any]) -> bool:
        """Add ``charge`` to the state; False (and no change) if its id was already applied."""
        cid = charge["charge_id"]
        if cid in self._charges:
            return False
        self._charges[cid] = {k: charge.get(k) for k in self._label_fields}
        ts = int(charge["created_us"])
        for cg in self._by_source.get("charges", ()):
            self._apply(cg, charge, ts)
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
        fields = self._charges[charge_id]
        for cg in self._by_source.get(source, ()):
            self._apply(cg, fields, created_us)
        return True

    @property
    def state_size(self) -> int:
        return len(self._state)
