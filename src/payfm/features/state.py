"""State objects of the online engine and their safe (JSON) serialization.

- :class:`WindowState`: tiles of one resolution with *cumulative* sums ``[count, s0, q0, ...]``, so a window
  is two binary searches and a subtraction however hot the key; tiles older than the longest window fold into
  a base, so memory is bounded by window / resolution; per-tile min/max and last-seen tiles for distinct
  counts.
- :class:`TotalState`: all-time count, sums, min/max, last value, first/previous time, distinct sets.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

StateKey = tuple[int, Any]  # (group index, entity key)


class WindowState:
    """Tiles of one resolution for one entity key."""

    __slots__ = ("base", "cum", "maxs", "mins", "seen", "tiles")

    def __init__(self, width: int, n_minmax: int, n_distinct: int) -> None:
        self.tiles: list[int] = []
        self.cum: list[list[int]] = []
        self.base: list[int] = [0] * width
        self.mins: list[list[float | None]] | None = [[] for _ in range(n_minmax)] if n_minmax else None
        self.maxs: list[list[float | None]] | None = [[] for _ in range(n_minmax)] if n_minmax else None
        self.seen: list[dict[Any, int]] | None = [{} for _ in range(n_distinct)] if n_distinct else None

    def add(self, tile: int, vec: list[int], mm: list[float], distinct: list[Any], keep: int) -> None:
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
            for k, x in enumerate(mm):
                cur = self.mins[k][i]
                self.mins[k][i] = x if cur is None or x < cur else cur
                cur = self.maxs[k][i]
                self.maxs[k][i] = x if cur is None or x > cur else cur
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


State = WindowState | TotalState


def state_to_json(st: State) -> list[Any]:
    """A JSON-able list for a state (the snapshot and Redis format)."""
    if isinstance(st, WindowState):
        seen = None if st.seen is None else [list(d.items()) for d in st.seen]
        return ["w", st.tiles, st.cum, st.base, st.mins, st.maxs, seen]
    return ["t", st.sums, st.mins, st.maxs, st.last, [sorted(s) for s in st.seen], st.first_ts, st.prev_ts]


def state_from_json(data: list[Any]) -> State:
    """The inverse of :func:`state_to_json`."""
    if data[0] == "w":
        w = WindowState(0, 0, 0)
        w.tiles, w.cum, w.base, w.mins, w.maxs = data[1], data[2], data[3], data[4], data[5]
        w.seen = None if data[6] is None else [{v: t for v, t in items} for items in data[6]]
        return w
    t = TotalState(0, 0)
    t.sums, t.mins, t.maxs, t.last = data[1], data[2], data[3], data[4]
    t.seen = [set(s) for s in data[5]]
    t.first_ts, t.prev_ts = data[6], data[7]
    return t
