"""The online engine of a feature set, compiled: straight-line Python generated from its state plans.

:func:`compile_engine` writes, for the whole set, a ``read`` function (every feature of a charge as of just
before it: aggregates, request-time and derived) and one ``write_<source>`` function per event source (the
state update), each a flat sequence of list indexing and integer arithmetic with every index, window bound
and filter resolved up front from the plans (:mod:`.online_plan`): no per-feature loop, dispatch or dictionary
lookup is left for decision time. Identifiers and integers are the only things written into the generated
source; column names are written with ``repr`` (they are validated against fixed sets by
:mod:`.definitions`) and filter values are passed in as constants. The source is kept on
:attr:`Engine.source` for reading and debugging.
"""

from __future__ import annotations

import functools
import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from payfm.features.definitions import (
    AUTHORIZATION,
    ENTITIES,
    FILTERS,
    LATE_COLUMNS,
    SOURCES,
    Derived,
    FeatureSet,
    RequestFeature,
)
from payfm.features.online_plan import SUMS, StatePlan, plan, std
from payfm.features.plan import window_tiles
from payfm.features.request import COUNTRY_UTC_OFFSET_H
from payfm.features.state import State, StateKey, TotalState, WindowState

_ZERO_WHEN_EMPTY = ("count", "sum", "distinct")


KeysFn = Callable[[Mapping[str, Any]], tuple[Any, ...]]
ReadFn = Callable[[Mapping[StateKey, State], tuple[Any, ...], Mapping[str, Any], int], list[float | None]]
# write(states, entity keys, event, time, event id): the id (a charge's, an outcome's own) orders `last` cells
WriteFn = Callable[[MutableMapping[StateKey, State], tuple[Any, ...], Mapping[str, Any], int, str], None]
ReadUpdateFn = Callable[
    [MutableMapping[StateKey, State], tuple[Any, ...], Mapping[str, Any], int, bool], list[float | None]
]


@dataclass
class Engine:
    """The compiled functions of one feature set (see the module docstring)."""

    plans: list[StatePlan]
    keys: KeysFn  # the entity keys of a charge, one per entity (None where a part is missing)
    state_keys: dict[str, Callable[[tuple[Any, ...]], list[StateKey]]]  # per source, and "*" for all
    read: ReadFn  # every feature: aggregates, request-time and derived
    write: dict[str, WriteFn]  # per source
    read_update: ReadUpdateFn  # read, then (if its last argument is true) write_charges, one lookup a state
    source: str


class _Code:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, object] = {}
        self.indent = 0  # added to every depth (a block generated inside another)

    def __call__(self, depth: int, line: str) -> None:
        self.lines.append("    " * (depth + self.indent) + line)

    def const(self, value: object) -> str:
        name = f"C{len(self.consts)}"
        self.consts[name] = value
        return name


def _entities(plans: list[StatePlan]) -> list[str]:
    out: list[str] = []
    for sp in plans:
        if sp.entity not in out:
            out.append(sp.entity)
    return out


def _gen_keys(code: _Code, entities: list[str]) -> None:
    code(0, "def keys(ch):")
    code(1, "get = ch.get")
    for e, name in enumerate(entities):
        cols = ENTITIES[name]
        if len(cols) == 1:
            code(1, f"k{e} = get({cols[0]!r})")
        else:
            parts = [f"get({c!r})" for c in cols]
            code(1, f"p = ({', '.join(parts)},)")
            code(1, f"k{e} = None if None in p else p")
    code(1, f"return ({''.join(f'k{e}, ' for e in range(len(entities)))})")


def _gen_state_keys(code: _Code, plans: list[StatePlan], entities: list[str], source: str) -> None:
    code(0, f"def state_keys_{source if source != '*' else 'all'}(kk):")
    code(1, "out = []")
    for e, name in enumerate(entities):
        idx = [sp.index for sp in plans if sp.entity == name and (source == "*" or _slots(sp, source))]
        if idx:
            code(1, f"k = kk[{e}]")
            code(1, "if k is not None:")
            code(2, f"out += [{', '.join(f'({i}, k)' for i in idx)}]")
    code(1, "return out")


def _slots(sp: StatePlan, source: str) -> list[int]:
    """The slots of ``sp`` an event of ``source`` updates. The authorization result of a charge decided
    without it updates the charge slots whose filter reads a column it reports (``LATE_COLUMNS``)."""
    if source == AUTHORIZATION:
        return [
            i
            for i, s in enumerate(sp.slots)
            if s.source == "charges" and s.filter is not None and FILTERS[s.filter].column in LATE_COLUMNS
        ]
    return [i for i, s in enumerate(sp.slots) if s.source == source]


def _gen_read_window(code: _Code, sp: StatePlan) -> None:
    d = 3
    code(d, "tiles = st.tiles")
    code(d, "cum = st.cum")
    code(d, "base = st.base")
    code(d, f"t = ts // {sp.res}")
    bounds: set[int] = set()
    for _, f, _ in sp.features:
        if f.agg in ("count", *SUMS):
            w, o = window_tiles(f)
            bounds.add(w + o + 1)
            if o:
                bounds.add(o + 1)
    if any(window_tiles(f)[1] == 0 for _, f, _ in sp.features if f.agg in ("count", *SUMS)):
        code(d, "top = cum[-1] if cum else base")
    for b in sorted(bounds):
        code(d, f"i = br(tiles, t - {b})")
        code(d, f"r{b} = cum[i - 1] if i else base")
    for out, f, si in sp.features:
        w, o = window_tiles(f)
        hi, lo = ("top" if o == 0 else f"r{o + 1}"), f"r{w + o + 1}"
        slot = sp.slots[si]
        c = f"{hi}[{slot.offset}] - {lo}[{slot.offset}]"
        if f.agg == "count":
            code(d, f"out[{out}] = float({c})")
        elif f.agg in SUMS:
            j = slot.sum_index(f.column or "")
            _gen_sums(code, d, out, f.agg, c, f"{hi}[{j}] - {lo}[{j}]", f"{hi}[{j + 1}] - {lo}[{j + 1}]")
        elif f.agg in ("min", "max"):
            k = sp.cells.index((si, f.column or "", f.agg == "min"))
            code(d, f"v = st.extreme({k}, t - {w + o}, t{f' - {o + 1}' if o else ''})")
            code(d, f"out[{out}] = None if v is None else v / 100.0")
        elif f.agg == "distinct":
            k = sp.distinct.index((si, f.column or ""))
            code(d, f"s = st.lasts[{k}]")
            code(d, f"out[{out}] = float(len(s) - bl(s, t - {w}))")
        else:
            raise AssertionError(f.agg)


def _gen_read_total(code: _Code, sp: StatePlan) -> None:
    d = 3
    code(d, "s = st.sums")
    for out, f, si in sp.features:
        slot = sp.slots[si]
        n = f"s[{slot.offset}]"
        if f.agg == "count":
            code(d, f"out[{out}] = float({n})")
        elif f.agg == "first_seen":
            code(d, f"out[{out}] = 1.0 if {n} == 0 else 0.0")
        elif f.agg in ("since_prev", "since_first"):
            code(d, f"p = st.{'prev' if f.agg == 'since_prev' else 'first'}[{si}]")
            code(d, f"out[{out}] = None if p is None else float(ts - p) / 1e6")
        elif f.agg == "distinct":
            code(d, f"out[{out}] = float(len(st.seen[{sp.distinct.index((si, f.column or ''))}]))")
        elif f.agg in ("last", "min", "max"):
            k = sp.cells.index((si, f.column or "", False))
            code(d, f"v = st.{ {'last': 'last', 'min': 'mins', 'max': 'maxs'}[f.agg] }[{k}]")
            code(d, f"out[{out}] = None if v is None else float(v) / 100.0")
        else:
            j = slot.sum_index(f.column or "")
            _gen_sums(code, d, out, f.agg, n, f"s[{j}]", f"s[{j + 1}]")


def _gen_sums(code: _Code, d: int, out: int, agg: str, c: str, s: str, q: str) -> None:
    """sum, mean or std of feature ``out`` from the count ``c``, sum ``s`` and sum of squares ``q``."""
    if agg == "sum":
        code(d, f"out[{out}] = float({s}) / 100.0")
    elif agg == "mean":
        code(d, f"c = {c}")
        code(d, f"out[{out}] = float({s}) / float(c) / 100.0 if c else None")
    else:
        code(d, f"out[{out}] = std({c}, {s}, {q})")


def _gen_request(code: _Code, fset: FeatureSet, ch: str) -> None:
    """Request-time and derived features: the formulas of :mod:`.request`, inlined (``ch``: the charge)."""
    position = {n: i for i, n in enumerate(fset.names)}
    code(1, f"get = {ch}.get")
    for f in fset.features:
        i = position[f.name]
        if isinstance(f, RequestFeature):
            cols = f.columns
            if f.kind == "amount_usd":
                code(1, f"out[{i}] = float({ch}['amount_usd']) / 100.0")
            elif f.kind == "amount_usd_log":
                code(1, f"out[{i}] = log(float({ch}['amount_usd']) / 100.0 + 1.0)")
            elif f.kind == "local_hour":
                offsets = code.const(COUNTRY_UTC_OFFSET_H)
                code(1, f"off = {offsets}.get(get('merchant_country') or '', 0)")
                code(1, f"out[{i}] = float((ts // 3600000000 + off) % 24)")
            elif f.kind == "mismatch":
                code(1, f"a = get({cols[0]!r})")
                code(1, f"b = get({cols[1]!r})")
                code(1, f"out[{i}] = None if a is None or b is None else (1.0 if a != b else 0.0)")
            elif f.kind == "is":
                code(1, f"out[{i}] = 1.0 if get({cols[0]!r}) in {code.const(f.values)} else 0.0")
            elif f.kind == "missing":
                code(1, f"out[{i}] = 1.0 if get({cols[0]!r}) is None else 0.0")
            elif f.kind == "since":
                code(1, f"v = get({cols[0] + '_us'!r})")
                code(1, f"out[{i}] = None if v is None else float(ts - int(v)) / 1e6")
            else:
                raise AssertionError(f.kind)
        elif isinstance(f, Derived):
            a, b = (position[x] for x in f.inputs[:2])
            code(1, f"a = out[{a}]")
            code(1, f"b = out[{b}]")
            if f.op == "ratio":
                code(1, f"out[{i}] = None if a is None or b is None or b == 0 else a / b")
            elif f.op == "diff":
                code(1, f"out[{i}] = None if a is None or b is None else a - b")
            else:
                code(1, f"d = out[{position[f.inputs[2]]}]")
                code(1, f"out[{i}] = None if a is None or b is None or d is None or d == 0 else (a - b) / d")


def _gen_read_state(code: _Code, sp: StatePlan) -> None:
    """The features of state ``sp`` (``st``, None when the key has none yet), at depth 2."""
    code(2, "if st is None:")
    empty = [
        (out, "1.0" if f.agg == "first_seen" else "0.0")
        for out, f, _ in sp.features
        if f.agg in _ZERO_WHEN_EMPTY or f.agg == "first_seen"
    ]
    for out, value in empty:
        code(3, f"out[{out}] = {value}")
    if not empty:
        code(3, "pass")
    code(2, "else:")
    (_gen_read_window if sp.res else _gen_read_total)(code, sp)


def _gen_read(code: _Code, fset: FeatureSet, plans: list[StatePlan], entities: list[str]) -> None:
    code(0, "def read(states, kk, ch, ts):")
    code(1, f"out = [None] * {len(fset.names)}")
    code(1, "get = states.get")
    for sp in plans:
        code(1, f"k = kk[{entities.index(sp.entity)}]")
        code(1, "if k is not None:")
        code(2, f"st = get(({sp.index}, k))")
        _gen_read_state(code, sp)
    _gen_request(code, fset, "ch")
    code(1, "return out")


def _gen_increments(
    code: _Code, d: int, sp: StatePlan, slots: list[int], row: str, flags: dict[int, str]
) -> None:
    for si in slots:
        slot = sp.slots[si]
        dd = d
        if slot.filter:
            code(d, f"if {flags[si]}:")
            dd = d + 1
        code(dd, f"{row}[{slot.offset}] += 1")
        for c in slot.numeric:
            j = slot.sum_index(c)
            code(dd, f"{row}[{j}] += a")
            code(dd, f"{row}[{j + 1}] += aa")


def _gen_write_prelude(
    code: _Code, d: int, plans: list[StatePlan], source: str
) -> dict[tuple[int, int], str]:
    """The filter flags and amounts an update of ``source`` reads (``get`` is the event's); flag per slot."""
    flags: dict[tuple[int, int], str] = {}
    named: dict[tuple[str, frozenset[str]], str] = {}
    numeric = False
    for sp in plans:
        for si in _slots(sp, source):
            slot = sp.slots[si]
            numeric = numeric or bool(slot.numeric) or any(c[0] == si for c in sp.cells)
            if slot.filter:
                flt = FILTERS[slot.filter]
                fkey = (flt.column, frozenset(flt.values))
                if fkey not in named:
                    named[fkey] = f"f{len(named)}"
                    code(d, f"{named[fkey]} = get({flt.column!r}) in {code.const(fkey[1])}")
                flags[(sp.index, si)] = named[fkey]
    if numeric:
        code(d, "a = int(ev['amount_usd'])  # the one numeric column (definitions.NUMERIC_COLUMNS)")
        code(d, "aa = a * a")
        code(d, "fa = float(a)")
    return flags


def _gen_update(code: _Code, sp: StatePlan, source: str, flags: dict[tuple[int, int], str]) -> None:
    """The update of state ``sp`` by an event of ``source``, at depth 2 from ``if st is None:`` on."""
    slots = _slots(sp, source)
    sflags = {si: flags[(sp.index, si)] for si in slots if (sp.index, si) in flags}
    code(2, "if st is None:")
    if sp.res:
        kinds = tuple(is_min for _, _, is_min in sp.cells)
        code(3, f"st = states[sk] = WindowState({sp.width}, {kinds!r}, {len(sp.distinct)})")
        _gen_write_window(code, sp, slots, sflags)
    else:
        args = f"{sp.width}, {len(sp.cells)}, {len(sp.distinct)}, {len(sp.slots)}"
        code(3, f"st = states[sk] = TotalState({args})")
        _gen_write_total(code, sp, slots, sflags)


def _hit(sp: StatePlan, source: str, flags: dict[tuple[int, int], str]) -> str:
    """The condition (after ``k is not None``) for an event of ``source`` to touch state ``sp``: a slot
    without filter, or one whose filter holds."""
    slots = _slots(sp, source)
    names = [flags[(sp.index, si)] for si in slots if (sp.index, si) in flags]
    return "" if len(names) < len(slots) else " and (" + " or ".join(sorted(set(names))) + ")"


def _orders_last(plans: list[StatePlan], source: str) -> bool:
    """Whether an update of ``source`` writes an all-time ``last`` cell (it then reads the event's id)."""
    return any(f.agg == "last" and si in _slots(sp, source) for sp in plans for _, f, si in sp.features)


def _gen_write(code: _Code, plans: list[StatePlan], entities: list[str], source: str) -> None:
    code(0, f"def write_{source}(states, kk, ev, ts, eid):")
    code(1, "get = ev.get")
    touched = [sp for sp in plans if _slots(sp, source)]
    flags = _gen_write_prelude(code, 1, touched, source)
    for sp in touched:
        code(1, f"k = kk[{entities.index(sp.entity)}]")
        code(1, f"if k is not None{_hit(sp, source, flags)}:")
        code(2, f"sk = ({sp.index}, k)")
        code(2, "st = states.get(sk)")
        _gen_update(code, sp, source, flags)


def _gen_read_update(code: _Code, fset: FeatureSet, plans: list[StatePlan], entities: list[str]) -> None:
    """``read_update(states, kk, ch, ts, w)``: ``read``, then (when ``w``) ``write_charges``, state by state.

    One lookup per state for both: a state's features are read before the charge updates it, and an update
    touches no other state, so reading and updating state by state is the same as reading everything first.
    """
    code(0, "def read_update(states, kk, ev, ts, w):")
    code(1, f"out = [None] * {len(fset.names)}")
    code(1, "get = ev.get")
    code(1, "sget = states.get")
    touched = [sp for sp in plans if _slots(sp, "charges")]
    flags: dict[tuple[int, int], str] = {}
    if touched:
        code(1, "if w:")
        mark = len(code.lines)
        flags = _gen_write_prelude(code, 2, touched, "charges")
        if _orders_last(touched, "charges"):
            code(2, "eid = str(ev['charge_id'])  # orders the last cells (_gen_write_total)")
        if len(code.lines) == mark:
            code(2, "pass")
    for sp in plans:
        code(1, f"k = kk[{entities.index(sp.entity)}]")
        code(1, "if k is not None:")
        code(2, f"sk = ({sp.index}, k)")
        code(2, "st = sget(sk)")
        _gen_read_state(code, sp)
        if sp in touched:
            code(2, f"if w{_hit(sp, 'charges', flags)}:")
            code.indent += 1
            _gen_update(code, sp, "charges", flags)
            code.indent -= 1
    _gen_request(code, fset, "ev")
    code(1, "return out")


def _gen_write_window(code: _Code, sp: StatePlan, slots: list[int], flags: dict[int, str]) -> None:
    d = 2
    ext = [k for k, (si, _, _) in enumerate(sp.cells) if si in slots]
    code(d, f"t = ts // {sp.res}")
    code(d, "tiles = st.tiles")
    code(d, "if tiles and tiles[-1] == t:")
    code(d + 1, "row = st.cum[-1]")
    _gen_increments(code, d + 1, sp, slots, "row", flags)
    code(d, "elif not tiles or tiles[-1] < t:  # a new newest tile: a copy of the last cumulative vector")
    code(d + 1, "cum = st.cum")
    code(d + 1, "row = (cum[-1] if cum else st.base).copy()")
    _gen_increments(code, d + 1, sp, slots, "row", flags)
    if not sp.cells and not sp.distinct:
        # A quiet key (its newest tile is beyond every window): everything folds, the new tile stays alone.
        code(d + 1, f"if tiles and tiles[-1] < t - {sp.keep}:")
        code(d + 2, "st.base = cum[-1]")
        code(d + 2, "tiles.clear()")
        code(d + 2, "cum.clear()")
    code(d + 1, "tiles.append(t)")
    code(d + 1, "cum.append(row)")
    for k in range(len(sp.cells)):
        code(d + 1, f"e = st.ext[{k}]")
        code(d + 1, "e.append(e[0])")
    code(d, "else:  # a late event: every later cumulative vector includes it too")
    code(d + 1, "i = st.insert_tile(t)")
    if ext:
        code(d + 1, "x = i + 1")
    code(d + 1, "for row in st.cum[i:]:")
    _gen_increments(code, d + 2, sp, slots, "row", flags)
    if ext:
        code(d, "if tiles[-1] == t:")
        code(d + 1, "x = -1")
    for k, (si, _, is_min) in enumerate(sp.cells):
        if si not in slots:
            continue
        dd = d
        if si in flags:
            code(d, f"if {flags[si]}:")
            dd += 1
        code(dd, f"e = st.ext[{k}]")
        code(dd, f"if fa {'<' if is_min else '>'} e[x]:")
        code(dd + 1, "e[x] = fa")
    for k, (si, column) in enumerate(sp.distinct):
        if si not in slots:
            continue
        dd = d
        if si in flags:
            code(d, f"if {flags[si]}:")
            dd += 1
        code(dd, f"v = get({column!r})")
        code(dd, "if v is not None:")
        code(dd + 1, f"st.see({k}, v, t)")
    code(d, f"if tiles[0] < tiles[-1] - {sp.keep}:  # fold what no window reaches any more")
    code(d + 1, f"st.fold(tiles[-1] - {sp.keep})")


def _gen_write_total(code: _Code, sp: StatePlan, slots: list[int], flags: dict[int, str]) -> None:
    """The update of an all-time state. A ``last`` cell takes the event's value only when the event sorts
    after the one it holds in the backfill's order, ``(time, id)`` (``ts``, ``eid``: a charge's id, an
    outcome's own), so the value does not depend on the order events arrive in; a cell loaded without them
    (an older state) takes the next event's. Cells read only as min/max keep no last value."""
    code(2, "s = st.sums")
    minmax = {(si, f.column) for _, f, si in sp.features if f.agg in ("min", "max")}
    lasts = {(si, f.column) for _, f, si in sp.features if f.agg == "last"}
    for si in slots:
        slot = sp.slots[si]
        d = 2
        if si in flags:
            code(d, f"if {flags[si]}:")
            d += 1
        code(d, f"s[{slot.offset}] += 1")
        for c in slot.numeric:
            j = slot.sum_index(c)
            code(d, f"s[{j}] += a")
            code(d, f"s[{j + 1}] += aa")
        if slot.times:
            code(d, f"p = st.prev[{si}]")
            code(d, "if p is None or ts > p:")
            code(d + 1, f"st.prev[{si}] = ts")
            code(d, f"fst = st.first[{si}]")
            code(d, "if fst is None or ts < fst:  # (a late event may be the first)")
            code(d + 1, f"st.first[{si}] = ts")
        for k, (csi, column, _) in enumerate(sp.cells):
            if csi != si:
                continue
            code(d, f"v = get({column!r})")
            code(d, "if v is not None:")
            if (si, column) in lasts:
                code(d + 1, f"p = st.last_ts[{k}]")
                code(d + 1, f"if p is None or ts > p or ts == p and eid > st.last_id[{k}]:")
                code(d + 2, f"st.last[{k}] = v")
                code(d + 2, f"st.last_ts[{k}] = ts")
                code(d + 2, f"st.last_id[{k}] = eid")
            if (si, column) in minmax:
                code(d + 1, "fv = float(v)")
                code(d + 1, f"m = st.mins[{k}]")
                code(d + 1, "if m is None or fv < m:")
                code(d + 2, f"st.mins[{k}] = fv")
                code(d + 1, f"m = st.maxs[{k}]")
                code(d + 1, "if m is None or fv > m:")
                code(d + 2, f"st.maxs[{k}] = fv")
        for k, (dsi, column) in enumerate(sp.distinct):
            if dsi != si:
                continue
            code(d, f"v = get({column!r})")
            code(d, "if v is not None:")
            code(d + 1, f"st.seen[{k}].add(v)")


@functools.lru_cache(maxsize=32)
def compile_engine(fset: FeatureSet) -> Engine:
    """Generate and compile the read and write functions of ``fset`` (see the module docstring).

    Cached per feature set (the functions keep no state, so engines share them).
    """
    plans = plan(fset)
    entities = _entities(plans)
    code = _Code()
    _gen_keys(code, entities)
    sources = [s for s in (*SOURCES, AUTHORIZATION) if any(_slots(sp, s) for sp in plans)]
    for source in ["*", *sources]:
        _gen_state_keys(code, plans, entities, source)
    _gen_read(code, fset, plans, entities)
    _gen_read_update(code, fset, plans, entities)
    for source in sources:
        _gen_write(code, plans, entities, source)
    text = "\n".join(code.lines) + "\n"
    namespace: dict[str, Any] = {
        "WindowState": WindowState,
        "TotalState": TotalState,
        "std": std,
        "log": math.log,
        "br": bisect_right,
        "bl": bisect_left,
        **code.consts,
    }
    exec(compile(text, f"<payfm online engine {fset.name} {fset.version}>", "exec"), namespace)
    return Engine(
        plans=plans,
        keys=namespace["keys"],
        state_keys={s: namespace[f"state_keys_{s if s != '*' else 'all'}"] for s in ["*", *sources]},
        read=namespace["read"],
        write={s: namespace[f"write_{s}"] for s in sources},
        read_update=namespace["read_update"],
        source=text,
    )
