"""Build the online state of a whole event log at once, column by column (warming a new serving process).

Applying the log event by event (:meth:`OnlineFeatures.update_many`) costs tens of microseconds per charge in
Python. The state it ends in is a function of the log, so it can be computed with array operations instead:
per state plan, sort the events by (entity key, apply order), sum the slot vectors per tile, fold what is
older than the longest window into the base, and only then make the Python objects, one per entity key.

Events are applied in the order of :func:`payfm.features.parity.apply_log`: time, outcomes at tau before
charges at t >= tau, each outcome counted only if its charge came strictly before it, events of one instant
and source by id. In that order every key's events arrive in time order, so no tile is ever late, and an
all-time ``last`` is the latest event in the backfill's order (kept with its time and id, as event by event);
the result equals the event-by-event state for every read (tests hold the two to the same features). Cases
this path does not take (repeated charge or outcome ids, charges of one instant out of id order, sums near
the int64 range) return False and the caller applies events one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.features.definitions import (
    ENTITIES,
    FILTERS,
    ONCE_PER_CHARGE,
    SOURCES,
    outcome_amount_usd,
    outcome_claim,
)
from payfm.features.online_plan import StatePlan
from payfm.features.state import INF, State, StateKey, TotalState, WindowState

_SAFE = float(2**62)  # sums beyond this (as floats) might overflow int64: take the event path instead


class _Fallback(Exception):
    pass


@dataclass
class _Events:
    """Every event to apply, sorted by apply order: its charge's row, time and source code."""

    row: np.ndarray  # (N,) int64 row of the charge in the charges table
    ts: np.ndarray  # (N,) int64 microseconds
    src: np.ndarray  # (N,) int8 index in SOURCES
    amount: np.ndarray | None  # (N,) int64 amount_usd the event adds (an outcome's own); None: no amounts
    oid: np.ndarray  # (N,) int64 an outcome's index in ``outcome_ids``, -1 for a charge (its id: its row's)
    outcome_ids: list[str]

    def ids(self, at: list[int], charges: pa.Table) -> list[str]:
        """The id of each event ``at`` (indices in apply order): a charge's id, an outcome's own."""
        oid = self.oid[at].tolist()
        cids = charges["charge_id"].take(pa.array(self.row[at], type=pa.int64())).to_pylist()
        return [str(c) if o < 0 else self.outcome_ids[o] for o, c in zip(oid, cids, strict=True)]


class _Columns:
    """Charge columns as arrays, encoded once (dictionary codes for keys and values)."""

    def __init__(self, charges: pa.Table) -> None:
        self.t = charges
        self._codes: dict[str, tuple[np.ndarray, list[Any]]] = {}
        self._keys: dict[str, tuple[np.ndarray, list[Any]]] = {}
        self._amount: np.ndarray | None = None

    def codes(self, column: str) -> tuple[np.ndarray, list[Any]]:
        """(code per row, -1 for null; the values)."""
        if column not in self._codes:
            enc = pc.dictionary_encode(self.t[column].combine_chunks())
            idx = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            self._codes[column] = (idx, enc.dictionary.to_pylist())
        return self._codes[column]

    def entity(self, entity: str) -> tuple[np.ndarray, list[Any]]:
        """The entity key of each row as a code (-1 when a part is missing) and the key values."""
        if entity not in self._keys:
            cols = ENTITIES[entity]
            if len(cols) == 1:
                self._keys[entity] = self.codes(cols[0])
            else:
                (a, va), (b, vb) = self.codes(cols[0]), self.codes(cols[1])
                ok = (a >= 0) & (b >= 0)
                pair = np.where(ok, a * max(len(vb), 1) + b, -1)
                uniq, inv = np.unique(pair[ok], return_inverse=True)
                out = np.full(len(pair), -1, dtype=np.int64)
                out[ok] = inv
                nb = max(len(vb), 1)
                self._keys[entity] = (out, [(va[u // nb], vb[u % nb]) for u in uniq.tolist()])
        return self._keys[entity]

    def passes(self, flt: str | None) -> np.ndarray | None:
        if flt is None:
            return None
        f = FILTERS[flt]
        mask = pc.is_in(self.t[f.column], value_set=pa.array(list(f.values)))
        out: np.ndarray = mask.fill_null(False).to_numpy(zero_copy_only=False)
        return out

    def amount(self) -> np.ndarray:
        if self._amount is None:
            self._amount = self.t["amount_usd"].to_numpy(zero_copy_only=False).astype(np.int64)
        return self._amount


def _sums(m: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Column sums of ``m`` over the row groups that begin at ``starts`` (exact int64, or a fallback)."""
    if not len(starts):
        return np.zeros((0, m.shape[1]), dtype=np.int64)
    if np.abs(np.add.reduceat(m.astype(np.float64), starts, axis=0)).max(initial=0.0) > _SAFE:
        raise _Fallback
    out: np.ndarray = np.add.reduceat(m, starts, axis=0)
    return out


def _starts(*cols: np.ndarray) -> np.ndarray:
    """Indices where any of the (sorted) columns changes value: the starts of the groups."""
    n = len(cols[0])
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
    for c in cols:
        change[1:] |= c[1:] != c[:-1]
    return np.flatnonzero(change)


def _plan_states(sp: StatePlan, cols: _Columns, ev: _Events, out: dict[StateKey, State]) -> None:
    key_rows, key_values = cols.entity(sp.entity)
    keys = key_rows[ev.row]
    hits = []
    for s in sp.slots:
        h = ev.src == SOURCES.index(s.source)
        passes = cols.passes(s.filter)
        if passes is not None:
            h &= passes[ev.row]
        hits.append(h)
    sel = np.flatnonzero((keys >= 0) & np.logical_or.reduce(hits))
    if not len(sel):
        return
    order = np.argsort(keys[sel], kind="stable")  # events are in apply order already: stable keeps it
    sel = sel[order]
    k = keys[sel]
    ts = ev.ts[sel]
    rows = ev.row[sel]
    hit = [h[sel] for h in hits]
    amount = None
    reads_amount = sp.cells or any(c == "amount_usd" for _, c in sp.distinct)
    if any(s.numeric for s in sp.slots) or reads_amount:  # an outcome's own amount where it has one
        amount = cols.amount()[rows] if ev.amount is None else ev.amount[sel]
    vec = np.zeros((len(sel), sp.width), dtype=np.int64)
    for s, h in zip(sp.slots, hit, strict=True):
        vec[:, s.offset] = h
        for c in s.numeric:
            assert amount is not None
            j = s.sum_index(c)
            vec[:, j] = np.where(h, amount, 0)
            vec[:, j + 1] = np.where(h, amount * amount, 0)
    kstarts = _starts(k)
    kcodes = k[kstarts].tolist()
    if sp.res:
        _windowed(sp, cols, k, ts, rows, hit, amount, vec, kstarts, kcodes, key_values, out)
    else:
        _total(sp, cols, ts, rows, hit, amount, vec, kstarts, kcodes, key_values, out, (ev, sel))


def _windowed(
    sp: StatePlan,
    cols: _Columns,
    k: np.ndarray,
    ts: np.ndarray,
    rows: np.ndarray,
    hit: list[np.ndarray],
    amount: np.ndarray | None,
    vec: np.ndarray,
    kstarts: np.ndarray,
    kcodes: list[int],
    key_values: list[Any],
    out: dict[StateKey, State],
) -> None:
    tile = ts // sp.res
    kend = np.append(kstarts[1:], len(k))
    newest = tile[kend - 1]  # per key (its events are in time order)
    limit = np.repeat(newest - sp.keep, kend - kstarts)
    folded = tile < limit
    base = _sums(np.where(folded[:, None], vec, 0), kstarts)
    kept = np.flatnonzero(~folded)
    gk, gt = k[kept], tile[kept]
    gstarts = _starts(gk, gt)
    g = _sums(vec[kept], gstarts)
    # Cumulative per key: the running total over all groups minus the total before the key's first group.
    run = np.cumsum(g, axis=0)
    gkey = gk[gstarts]
    first = _starts(gkey)
    before = np.vstack([np.zeros((1, sp.width), dtype=np.int64), run])[first]
    cum = run - np.repeat(before, np.diff(np.append(first, len(gkey))), axis=0)
    cum += np.repeat(base, np.diff(np.append(first, len(gkey))), axis=0)
    cum_rows = cum.tolist()
    tiles = gt[gstarts].tolist()
    ext: list[list[float]] = []
    for si, _, is_min in sp.cells:
        assert amount is not None
        fill = INF if is_min else -INF
        vals = np.where(hit[si][kept], amount[kept].astype(np.float64), fill)
        ext.append((np.minimum if is_min else np.maximum).reduceat(vals, gstarts).tolist())
    seen = [_distinct(cols, column, k, tile, rows, hit[si], ~folded) for si, column in sp.distinct]
    bounds = np.append(first, len(gkey)).tolist()
    base_rows = base.tolist()
    kinds = [INF if is_min else -INF for _, _, is_min in sp.cells]
    make, index = WindowState.of, sp.index
    if not ext and not seen:  # the common case: only tiles and sums
        for n, code in enumerate(kcodes):
            a, b = bounds[n], bounds[n + 1]
            out[(index, key_values[code])] = make(tiles[a:b], cum_rows[a:b], base_rows[n], [], [])
        return
    for n, code in enumerate(kcodes):
        a, b = bounds[n], bounds[n + 1]
        st_ext = [[kind, *e[a:b]] for kind, e in zip(kinds, ext, strict=True)]
        st_seen = [d.get(code, {}) for d in seen]
        out[(index, key_values[code])] = make(tiles[a:b], cum_rows[a:b], base_rows[n], st_ext, st_seen)


def _distinct(
    cols: _Columns,
    column: str,
    k: np.ndarray,
    tile: np.ndarray,
    rows: np.ndarray,
    hit: np.ndarray,
    keep: np.ndarray,
) -> dict[int, dict[Any, int]]:
    """Per key code: each value seen in a kept tile -> the last tile it was seen in."""
    vcodes, values = cols.codes(column)
    v = vcodes[rows]
    m = np.flatnonzero(hit & keep & (v >= 0))
    t = pa.table({"k": k[m], "v": v[m], "t": tile[m]}).group_by(["k", "v"]).aggregate([("t", "max")])
    out: dict[int, dict[Any, int]] = {}
    for kc, vc, last in zip(t["k"].to_pylist(), t["v"].to_pylist(), t["t_max"].to_pylist(), strict=True):
        out.setdefault(kc, {})[values[vc]] = last
    return out


def _total(
    sp: StatePlan,
    cols: _Columns,
    ts: np.ndarray,
    rows: np.ndarray,
    hit: list[np.ndarray],
    amount: np.ndarray | None,
    vec: np.ndarray,
    kstarts: np.ndarray,
    kcodes: list[int],
    key_values: list[Any],
    out: dict[StateKey, State],
    picked: tuple[_Events, np.ndarray],
) -> None:
    """All-time states. A last cell's value is that of its key's latest valid event in apply order, which is
    the backfill's order within one source ((time, id): see :func:`events`), with that event's time and id
    (``picked``: the events and the indices of these rows in them)."""
    sums = _sums(vec, kstarts).tolist()
    n = len(kcodes)
    times: dict[int, tuple[list[Any], list[Any]]] = {}
    for si, s in enumerate(sp.slots):
        if s.times:
            big = np.iinfo(np.int64).max
            lo = np.minimum.reduceat(np.where(hit[si], ts, big), kstarts)
            hi = np.maximum.reduceat(np.where(hit[si], ts, -1), kstarts)
            any_ = np.logical_or.reduceat(hit[si], kstarts).tolist()
            times[si] = (
                [x if ok else None for x, ok in zip(lo.tolist(), any_, strict=True)],
                [x if ok else None for x, ok in zip(hi.tolist(), any_, strict=True)],
            )
    minmax = {(si, f.column) for _, f, si in sp.features if f.agg in ("min", "max")}
    lasts = {(si, f.column) for _, f, si in sp.features if f.agg == "last"}
    cells: list[tuple[list[Any], list[Any] | None, list[Any] | None]] = []
    last_at: list[tuple[list[Any], list[Any]]] = []
    idx = np.arange(len(rows))
    none = [None] * n
    for si, column, _ in sp.cells:
        codes, values = cols.codes(column)
        valid = hit[si] & (codes[rows] >= 0)
        vals: list[Any] = none
        if (si, column) in lasts:  # (a cell read only as min/max keeps no last value, as event by event)
            last_i = np.maximum.reduceat(np.where(valid, idx, -1), kstarts).tolist()
            if column == "amount_usd" and amount is not None:  # what each event adds: an outcome's own amount
                vals = [None if i < 0 else int(amount[i]) for i in last_i]
            else:
                vals = [None if i < 0 else values[codes[rows[i]]] for i in last_i]
            ev, sel = picked
            found = [i for i in last_i if i >= 0]
            at = iter(zip(ts[found].tolist(), ev.ids(sel[found].tolist(), cols.t), strict=True))
            pairs = [(None, None) if i < 0 else next(at) for i in last_i]
            last_at.append(([t for t, _ in pairs], [e for _, e in pairs]))
        else:
            last_at.append((none, none))
        lo_l = hi_l = None
        if (si, column) in minmax:
            assert amount is not None
            f = amount.astype(np.float64)
            any_ = np.logical_or.reduceat(valid, kstarts).tolist()
            lo = np.minimum.reduceat(np.where(valid, f, INF), kstarts).tolist()
            hi = np.maximum.reduceat(np.where(valid, f, -INF), kstarts).tolist()
            lo_l = [x if ok else None for x, ok in zip(lo, any_, strict=True)]
            hi_l = [x if ok else None for x, ok in zip(hi, any_, strict=True)]
        cells.append((vals, lo_l, hi_l))
    seen = []
    for si, column in sp.distinct:
        codes, values = cols.codes(column)
        v = codes[rows]
        m = np.flatnonzero(hit[si] & (v >= 0))
        k = np.repeat(np.arange(n), np.diff(np.append(kstarts, len(rows))))[m]
        own = amount if column == "amount_usd" else None  # what each event adds: an outcome's own amount
        t = pa.table({"k": k, "v": v[m] if own is None else own[m]}).group_by(["k", "v"]).aggregate([])
        sets: dict[int, set[Any]] = {}
        for kc, vc in zip(t["k"].to_pylist(), t["v"].to_pylist(), strict=True):
            sets.setdefault(kc, set()).add(values[vc] if own is None else vc)
        seen.append(sets)
    # Per key rows of each per-cell / per-slot column (transposed in C), a fresh list per state.

    def per_key(columns: list[list[Any]]) -> list[list[Any]]:
        return list(map(list, zip(*columns, strict=True))) if columns else [[] for _ in range(n)]

    last = per_key([c[0] for c in cells])
    mins = per_key([none if c[1] is None else c[1] for c in cells])
    maxs = per_key([none if c[2] is None else c[2] for c in cells])
    slots = range(len(sp.slots))
    first = per_key([times[si][0] if si in times else none for si in slots])
    prev = per_key([times[si][1] if si in times else none for si in slots])
    # (None for a state without cells, as TotalState makes it: no lists)
    last_ts = per_key([c[0] for c in last_at]) if sp.cells else none
    last_id = per_key([c[1] for c in last_at]) if sp.cells else none
    make, index = TotalState.of, sp.index
    for i, code in enumerate(kcodes):
        st_seen = [d.get(i, set()) for d in seen]
        out[(index, key_values[code])] = make(
            sums[i], (last[i], mins[i], maxs[i]), st_seen, (first[i], prev[i]), (last_ts[i], last_id[i])
        )


Outcomes = list[tuple[str, np.ndarray, list[str], list[str], list[int | None], list[str | None]]]


def events(
    charges: pa.Table, ts: np.ndarray, outcomes: Outcomes, outcome_amounts: bool = False
) -> tuple[_Events, list[str], int] | None:
    """The apply order of the log (see the module docstring): the events, the outcomes' claims
    (:func:`~payfm.features.definitions.outcome_claim`) and the watermark; None if a charge or outcome id
    repeats, or charges of one instant are not in id order. A charge's later fraud disputes are left out: its
    first counts, as event by event.

    ``outcomes``: (source, times, ids, charge ids, amounts, currencies) per source. With
    ``outcome_amounts`` an outcome adds its own amount at its charge's rate
    (:func:`~payfm.features.definitions.outcome_amount_usd`), else its charge's ``amount_usd``."""
    cids = charges["charge_id"].to_pylist()
    position = {c: i for i, c in enumerate(cids)}
    if len(position) != len(cids) or not _ids_ordered(ts, cids):
        return None
    o_row: list[int] = []
    o_ids: list[str] = []
    o_ts: list[int] = []
    o_src: list[int] = []
    o_amount: list[int] = []
    # (time, source, id, charge id, own amount, currency)
    o_key: list[tuple[int, str, str, str, int | None, str | None]] = []
    claimed: set[str] = set()
    for source, times, ids, charge_ids, amounts, currencies in outcomes:
        for t, oid, cid, amount, currency in zip(
            times.tolist(), ids, charge_ids, amounts, currencies, strict=True
        ):
            r = position.get(cid)
            # Counted only if its charge was applied before it (charges at t >= tau come after it).
            if r is not None and int(ts[r]) < t:
                o_key.append((t, source, str(oid), cid, amount, currency))
    o_key.sort(key=lambda k: k[:4])
    money = _Money(charges) if outcome_amounts else None
    for t, source, oid, cid, amount, currency in o_key:
        claim = outcome_claim(source, oid, cid)
        if claim in claimed:
            if source in ONCE_PER_CHARGE:
                continue  # a later fraud dispute of the charge: the first (in apply order) counted
            return None
        claimed.add(claim)
        r = position[cid]
        o_row.append(r)
        o_ids.append(oid)
        o_ts.append(t)
        o_src.append(SOURCES.index(source))
        if money is not None:
            o_amount.append(money.of(r, amount, currency))
    n = len(cids)
    row = np.concatenate([np.arange(n, dtype=np.int64), np.array(o_row, dtype=np.int64)])
    tss = np.concatenate([ts.astype(np.int64), np.array(o_ts, dtype=np.int64)])
    src = np.concatenate([np.zeros(n, dtype=np.int8), np.array(o_src, dtype=np.int8)])
    amount_usd = None
    if money is not None:
        amount_usd = np.concatenate([money.usd, np.array(o_amount, dtype=np.int64)])
    # Apply order: time, then outcomes (kind 0) before charges (kind 1), then their own order.
    kind = (src == 0).astype(np.int8)
    seq = np.concatenate([np.arange(n), np.arange(len(o_row))])
    order = np.lexsort((seq, kind, tss))
    top = int(tss.max()) if len(tss) else 0
    adds = None if amount_usd is None else amount_usd[order]
    oids = np.concatenate([np.full(n, -1, dtype=np.int64), np.arange(len(o_row), dtype=np.int64)])
    ev = _Events(
        row=row[order], ts=tss[order], src=src[order], amount=adds, oid=oids[order], outcome_ids=o_ids
    )
    return ev, sorted(claimed), top


def _ids_ordered(ts: np.ndarray, cids: list[Any]) -> bool:
    """Whether charges of one instant come in id order (the backfill's order, (created, charge_id), which an
    all-time ``last`` follows; :func:`~payfm.features.parity.apply_log` reads them so). Only ties matter: the
    apply order sorts by time."""
    if len(ts) < 2:
        return True
    perm = np.arange(len(ts)) if bool(np.all(ts[1:] >= ts[:-1])) else np.argsort(ts, kind="stable")
    st = ts[perm]
    p = perm.tolist()
    return not any(str(cids[p[i]]) > str(cids[p[i + 1]]) for i in np.flatnonzero(st[1:] == st[:-1]).tolist())


class _Money:
    """The charges' amounts, currencies and USD amounts, to convert an outcome's own amount."""

    def __init__(self, charges: pa.Table) -> None:
        self.usd = charges["amount_usd"].to_numpy(zero_copy_only=False).astype(np.int64)
        self.amount = charges["amount"].to_numpy(zero_copy_only=False).astype(np.int64)
        self.currency = charges["currency"].to_pylist()

    def of(self, row: int, amount: int | None, currency: str | None) -> int:
        charge = {
            "amount": int(self.amount[row]),
            "currency": self.currency[row],
            "amount_usd": int(self.usd[row]),
        }
        return int(outcome_amount_usd(amount, currency, charge))


def states(plans: list[StatePlan], charges: pa.Table, ev: _Events) -> dict[StateKey, State] | None:
    """Every state after applying ``ev`` (see :func:`events`); None if sums might overflow int64."""
    cols = _Columns(charges)
    out: dict[StateKey, State] = {}
    try:
        for sp in plans:
            _plan_states(sp, cols, ev, out)
    except _Fallback:
        return None
    return out
