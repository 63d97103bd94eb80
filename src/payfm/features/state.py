"""State objects of the online engine and their safe (JSON) serialization.

One state per (entity, resolution) and entity key: every windowed feature of an entity at one resolution, of
every source and filter, shares one :class:`WindowState`; every all-time feature of an entity shares one
:class:`TotalState`. A *slot* is one (source, filter) pair: its part of a state's vector is
``[count, s0, q0, ...]`` (count, sum and sum of squares of each numeric column, exact integers in cents).

- :class:`WindowState`: sparse tiles of one resolution with *cumulative* vectors, so a window is two binary
  searches and a subtraction however hot the key; tiles older than the longest window fold into a base, so
  memory is bounded by window / resolution. Per-tile extremes (min/max cells) and, for distinct counts, the
  last tile each value was seen in (with the sorted list of those tiles, so a count is one binary search).
- :class:`TotalState`: all-time vector, extremes, last values (with the time and id of the event each came
  from) and distinct sets per cell, first/previous event time per slot.

The engine that reads and writes these objects is generated per feature set (:mod:`.online_codegen`).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import Any

StateKey = tuple[int, Any]  # (state index, entity key)
INF = float("inf")
# Of the serialized states (snapshots and Redis). 1 was one state per (source, filter) group; 2 claimed a
# fraud dispute by its id (3 claims it by its charge: a charge's fraud disputes count once). An all-time state
# of format 3 may end with the (time, id) of each last value (TotalState); one without them (written before
# they were kept) still reads, so they did not need a new format.
FORMAT = 3


class WindowState:
    """Tiles of one resolution for one entity key.

    ``ext[k][i]`` is extreme cell ``k`` over tile ``i`` (+inf / -inf for a min / max cell without a value);
    ``seen[k]`` maps each value of distinct cell ``k`` to the last tile it was seen in and ``lasts[k]`` holds
    those tiles, sorted.
    """

    __slots__ = ("base", "cum", "ext", "lasts", "seen", "tiles")

    def __init__(self, width: int, ext_kinds: tuple[bool, ...] = (), n_distinct: int = 0) -> None:
        self.tiles: list[int] = []
        self.cum: list[list[int]] = []
        self.base: list[int] = [0] * width
        # A min cell starts a tile at +inf, a max cell at -inf; the sign of its first entry tells the kind.
        self.ext: list[list[float]] = [[INF if is_min else -INF] for is_min in ext_kinds]
        self.seen: list[dict[Any, int]] = [{} for _ in range(n_distinct)]
        self.lasts: list[list[int]] = [[] for _ in range(n_distinct)]

    # ext[k][0] is the kind marker (the empty value of the cell); tile i's extreme is ext[k][i + 1].

    @classmethod
    def of(
        cls,
        tiles: list[int],
        cum: list[list[int]],
        base: list[int],
        ext: list[list[float]],
        seen: list[dict[Any, int]],
    ) -> WindowState:
        """A state from its parts (no copies; ``lasts`` derived from ``seen``)."""
        st = cls.__new__(cls)
        st.tiles, st.cum, st.base, st.ext, st.seen = tiles, cum, base, ext, seen
        st.lasts = [sorted(d.values()) for d in seen]
        return st

    def append_tile(self, tile: int) -> None:
        """Open ``tile`` after the newest one (a copy of the last cumulative vector)."""
        self.cum.append((self.cum[-1] if self.cum else self.base).copy())
        self.tiles.append(tile)
        for e in self.ext:
            e.append(e[0])

    def insert_tile(self, tile: int) -> int:
        """The index of ``tile``, inserted if missing (a late event); the caller adds to every later row."""
        tiles = self.tiles
        i = bisect_left(tiles, tile)
        if i == len(tiles) or tiles[i] != tile:
            tiles.insert(i, tile)
            self.cum.insert(i, (self.cum[i - 1] if i else self.base).copy())
            for e in self.ext:
                e.insert(i + 1, e[0])
        return i

    def see(self, k: int, value: Any, tile: int) -> None:
        """Value ``value`` of distinct cell ``k`` was seen in ``tile``."""
        seen = self.seen[k]
        old = seen.get(value)
        if old is not None:
            if old >= tile:
                return
            lasts = self.lasts[k]
            del lasts[bisect_left(lasts, old)]
        seen[value] = tile
        insort(self.lasts[k], tile)

    def fold(self, limit: int) -> None:
        """Fold tiles before ``limit`` into the base: bounded memory for hot keys."""
        tiles = self.tiles
        if len(tiles) == 2 and tiles[0] < limit and not self.ext and not self.seen:
            # The common case of a quiet key: only the newest tile stays.
            self.base = self.cum[0]
            del tiles[0], self.cum[0]
            return
        cut = bisect_left(tiles, limit)
        if not cut:
            return
        self.base = self.cum[cut - 1]
        del tiles[:cut], self.cum[:cut]
        for e in self.ext:
            del e[1 : cut + 1]
        for seen, lasts in zip(self.seen, self.lasts, strict=True):
            if len(seen) > 64:  # lazily: values older than every window never count again
                for v in [v for v, t in seen.items() if t < limit]:
                    del seen[v]
                del lasts[: bisect_left(lasts, limit)]

    def extreme(self, k: int, lo_tile: int, hi_tile: int) -> float | None:
        """Extreme cell ``k`` over tiles ``lo_tile..hi_tile`` (inclusive), None if no value."""
        tiles = self.tiles
        lo = bisect_left(tiles, lo_tile)
        hi = bisect_left(tiles, hi_tile + 1)
        if lo >= hi:
            return None
        e = self.ext[k]
        empty = e[0]
        v = min(e[lo + 1 : hi + 1]) if empty > 0 else max(e[lo + 1 : hi + 1])
        return None if v == empty else v


class TotalState:
    """All-time aggregates for one entity key: the vector, extreme / last / distinct cells, times per slot.

    ``last[k]`` is the value of the latest event of cell ``k`` in the backfill's order, whatever order the
    events were applied in: ``last_ts[k]`` and ``last_id[k]`` are that event's time and id (a charge's id, an
    outcome's own id), and an event replaces the value only when it sorts after them (``(time, id)``). Both
    are None for a cell without a value, and for one loaded from a state written before they were kept (the
    next event then replaces the value, as every event did before). Cells read only as min/max keep no last.
    A state without cells (most) has None for both lists: no memory for them.
    """

    __slots__ = ("first", "last", "last_id", "last_ts", "maxs", "mins", "prev", "seen", "sums")

    def __init__(self, width: int = 0, n_cells: int = 0, n_distinct: int = 0, n_slots: int = 0) -> None:
        self.sums = [0] * width
        self.mins: list[float | None] = [None] * n_cells
        self.maxs: list[float | None] = [None] * n_cells
        self.last: list[Any] = [None] * n_cells
        # Two parallel lists rather than (time, id) pairs: JSON would turn a tuple into a list.
        self.last_ts: list[int | None] | None = [None] * n_cells if n_cells else None
        self.last_id: list[Any] | None = [None] * n_cells if n_cells else None
        self.seen: list[set[Any]] = [set() for _ in range(n_distinct)]
        self.first: list[int | None] = [None] * n_slots
        self.prev: list[int | None] = [None] * n_slots

    @classmethod
    def of(
        cls,
        sums: list[int],
        cells: tuple[list[Any], list[float | None], list[float | None]],
        seen: list[set[Any]],
        times: tuple[list[int | None], list[int | None]],
        last_at: tuple[list[int | None] | None, list[Any] | None],
    ) -> TotalState:
        """A state from its parts: the vector, (last, mins, maxs) per cell, distinct sets, (first, prev) per
        slot, and (time, id) per cell of the event its last value came from."""
        st = cls.__new__(cls)
        st.sums, (st.last, st.mins, st.maxs), st.seen, (st.first, st.prev) = sums, cells, seen, times
        st.last_ts, st.last_id = last_at
        return st


State = WindowState | TotalState


def _ext_to_json(e: list[float]) -> list[float | None]:
    # The kind marker as 1 (min) or -1 (max), empty tiles as null: standard JSON, no infinities.
    return [1 if e[0] > 0 else -1, *(None if v == e[0] else v for v in e[1:])]


def _ext_from_json(e: list[float | None]) -> list[float]:
    empty = INF if (e[0] or 0) > 0 else -INF
    return [empty, *(empty if v is None else v for v in e[1:])]


def state_to_json(st: State) -> list[Any]:
    """A JSON-able list for a state (the snapshot and Redis format)."""
    if isinstance(st, WindowState):
        ext = [_ext_to_json(e) for e in st.ext] if st.ext else 0
        seen = [list(d.items()) for d in st.seen] if st.seen else 0
        return ["w", st.tiles, st.cum, st.base, ext, seen]
    seen_t = [list(s) for s in st.seen]
    out: list[Any] = ["t", st.sums, st.mins, st.maxs, st.last, seen_t, st.first, st.prev]
    if st.last:  # (time, id) of each last value: trailing, so that a reader without them still reads the rest
        out += [st.last_ts, st.last_id]
    return out


def _key(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def state_from_json(data: list[Any]) -> State:
    """The inverse of :func:`state_to_json`."""
    if data[0] == "w":
        w = WindowState(0)
        w.tiles, w.cum, w.base = data[1], data[2], data[3]
        w.ext = [_ext_from_json(e) for e in data[4]] if data[4] else []
        if data[5]:
            w.seen = [{_key(v): t for v, t in items} for items in data[5]]
            w.lasts = [sorted(d.values()) for d in w.seen]
        return w
    if data[0] != "t":
        raise ValueError(f"A serialized online state must start with 'w' or 't'. Got {data[0]!r}.")
    t = TotalState()
    t.sums, t.mins, t.maxs, t.last = data[1], data[2], data[3], data[4]
    t.seen = [{_key(v) for v in s} for s in data[5]]
    t.first, t.prev = data[6], data[7]
    if len(data) > 9:
        t.last_ts, t.last_id = data[8], data[9]
    elif t.last:  # written before they were kept: the next event of a cell replaces its last value
        t.last_ts, t.last_id = [None] * len(t.last), [None] * len(t.last)
    return t
