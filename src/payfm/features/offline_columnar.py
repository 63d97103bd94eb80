"""The columnar backfill engine: every aggregate as sorts, prefix sums and binary searches over numpy columns.

Charges are numbered by ``rid`` in the total order ``(created, charge_id)``, so "strictly before the charge"
is ``rid < rid(c)``. Per entity the charges with a key are sorted once by ``(key, rid)`` (positions ``p``,
dense group ``g`` per key); the position of a ``rid`` bound in the key's run is one ``np.searchsorted`` of the
composite ``g * n + rid`` (an ``ASOF`` join in columnar form, with sorted needles). A tiled window of ``W``
tiles ending ``O`` tiles back covers ``rid`` in ``[first_rid(T - W - O), first_rid(T - O))`` (``O > 0``) or
``[first_rid(T - W), rid(c))`` (``O = 0``), ``T`` the charge's tile, ``first_rid(x)`` the number of charges in
tiles before ``x``: the same bounds as the online tiles (:func:`payfm.features.plan.window_tiles`).

- count, sum, mean, std, first_seen: differences of exclusive prefix sums at the two bounds; sums are exact
  integers (cents; squares in int64 while they fit, Python integers beyond), and the formulas are those of the
  online state;
- distinct counts: an event (first in the window of its value iff its previous occurrence ``p`` in the key is
  before the window's start ``L``) counts for the queries ``q`` after it with ``p < L_q <= rid``; ``L`` is
  monotone in ``q``, so that set is one interval of positions: +1/-1 in a difference array, one cumsum;
- min/max: a sparse table (one doubling level at a time, queries answered per level);
- last, since_prev, since_first: running "last valid position" arrays;
- outcome sources (fraud disputes, EFWs, refunds) counted once their own time is ``<= t``: prefix sums over
  the outcome events sorted by (key, time), looked up at ``t`` and at tile starts.

No Python loop touches rows: every step is a whole-column numpy operation (sort, searchsorted, cumsum,
gather), the columnar equivalent of the relational plan in :mod:`payfm.features.offline_sql`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from payfm.events.schema import SCHEMAS
from payfm.events.workspace import Workspace
from payfm.features.definitions import (
    CENTS_PER_DOLLAR,
    COUNTED_FRAUD_DISPUTES_SQL,
    ENTITIES,
    FILTERS,
    ONCE_PER_CHARGE,
    Aggregate,
    FeatureSet,
    outcome_amount_usd,
)
from payfm.features.plan import window_tiles

OUTCOME_SQL = {
    # once per charge (definitions.COUNTED_FRAUD_DISPUTES_SQL); ``oid``, the outcome's id, orders outcomes
    # of one instant (as the online paths apply them)
    "fraud_disputes": f"SELECT charge_id, created, dispute_id AS oid FROM ({COUNTED_FRAUD_DISPUTES_SQL})",
    "efws": "SELECT charge_id, created, efw_id AS oid FROM early_fraud_warnings",
    "refunds": "SELECT charge_id, created, refund_id AS oid FROM refunds",
}
# The same with each outcome's own amount and currency (an early fraud warning has none), for the sets that
# read it (Aggregate.reads_outcome_amount).
OUTCOME_MONEY_SQL = {
    "fraud_disputes": "SELECT charge_id, created, dispute_id AS oid, amount, currency "
    f"FROM ({COUNTED_FRAUD_DISPUTES_SQL})",
    "efws": "SELECT charge_id, created, efw_id AS oid, NULL::BIGINT AS amount, NULL::VARCHAR AS currency "
    "FROM early_fraud_warnings",
    "refunds": "SELECT charge_id, created, refund_id AS oid, amount, currency FROM refunds",
}
# Aggregates the columnar engine computes, per source; the others run as SQL (offline_sql).
CHARGE_AGGS = frozenset(
    {
        "count",
        "sum",
        "mean",
        "std",
        "first_seen",
        "distinct",
        "min",
        "max",
        "last",
        "since_prev",
        "since_first",
    }
)
OUTCOME_AGGS = frozenset({"count", "sum", "mean", "std", "first_seen"})
_FITS = float(2**62)  # magnitudes below this are exact in int64 with room for one addition


def supported(f: Aggregate) -> bool:
    return f.agg in (CHARGE_AGGS if f.source == "charges" else OUTCOME_AGGS)


def _resolution_us(f: Aggregate) -> int:
    assert f.resolution is not None
    return int(f.resolution.total_seconds()) * 1_000_000


def _exclusive_cumsum(x: np.ndarray) -> np.ndarray:
    """``out[i] = x[:i].sum()`` (length ``len(x) + 1``): int64, or Python integers where int64 overflows."""
    if x.dtype != object and float(np.abs(x).sum(dtype=np.float64)) >= _FITS:
        x = x.astype(object)
    out = np.zeros(len(x) + 1, dtype=x.dtype)
    np.cumsum(x, out=out[1:])
    return out


def _squares(a: np.ndarray) -> np.ndarray:
    if len(a) and float(np.abs(a).max()) ** 2 >= _FITS:
        big: np.ndarray = a.astype(object) * a.astype(object)
        return big
    out: np.ndarray = a * a
    return out


@dataclass
class Charges:
    """The charges in ``rid`` order (``charge_id``, ``ts`` in us, the needed columns) and, per outcome source,
    the ``rid`` of each outcome's charge and the outcome's own time (us); for a set that reads an outcome's
    own amount, its ``amount_usd`` (:func:`~payfm.features.definitions.outcome_amount_usd`) per source too."""

    table: pa.Table
    outcomes: dict[str, tuple[np.ndarray, np.ndarray]]
    amounts: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.table.num_rows)


# Outcome sources as workspace tables: (table, value of ``reason`` required or None).
_OUTCOME_TABLES = {
    "fraud_disputes": ("disputes", "fraudulent"),
    "efws": ("early_fraud_warnings", None),
    "refunds": ("refunds", None),
}


def _sources(fset: FeatureSet) -> list[str]:
    return sorted({f.source for f in fset.aggregates if f.source != "charges" and supported(f)})


def load(con: duckdb.DuckDBPyConnection, fset: FeatureSet, columns: list[str]) -> Charges:
    """Read the needed columns of ``charges`` in ``(created, charge_id)`` order, and the outcome events."""
    cols = "".join(f', "{c}"' for c in columns)
    table = con.sql(
        f"SELECT charge_id, epoch_us(created) AS ts{cols} FROM charges ORDER BY created, charge_id"
    ).to_arrow_table()
    money = _reads_money(fset)
    sql = OUTCOME_MONEY_SQL if money else OUTCOME_SQL
    extra = ", amount, currency" if money else ""
    events = [
        con.sql(f"SELECT charge_id, epoch_us(created) AS ts{extra} FROM ({sql[s]})").to_arrow_table()
        for s in _sources(fset)
    ]
    return _charges(table, dict(zip(_sources(fset), events, strict=True)))


def load_workspace(ws: Workspace, fset: FeatureSet, columns: list[str]) -> Charges:
    """:func:`load` straight from the workspace's Parquet files: string columns stay dictionary-encoded (no
    string is materialized but the charge ids), sorted by ``(created, charge_id)`` with one Arrow sort (no
    reordering at all when the files are already in that order, as the workspace writes them)."""
    files = [str(f) for f in ws.files("charges")]
    if not files:
        table = SCHEMAS["charges"].empty_table().select(["charge_id", "created", *columns])
    else:
        import pyarrow.dataset as ds  # here, not at import: it imports pandas (0.2 s of every payfm command)

        schema = pq.read_schema(files[0])
        strings = [c for c in columns if pa.types.is_string(schema.field(c).type)]
        fmt = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=strings))
        table = ds.dataset(files, format=fmt).to_table(columns=["charge_id", "created", *columns])
        table = table.unify_dictionaries()
    order = pc.sort_indices(table, [("created", "ascending"), ("charge_id", "ascending")]).to_numpy()
    if not np.array_equal(order, np.arange(len(order))):
        table = table.take(pa.array(order))
    ts = pc.cast(pc.cast(table["created"], pa.timestamp("us", tz="UTC")), pa.int64())
    table = table.set_column(1, "ts", ts)
    events = {}
    money = ["amount", "currency"] if _reads_money(fset) else []
    for s in _sources(fset):
        name, reason = _OUTCOME_TABLES[s]
        own = money if s != "efws" else []  # an early fraud warning has no amount of its own
        if s in ONCE_PER_CHARGE:  # the counted one of a charge's fraud disputes
            con = duckdb.connect()
            cols = ["dispute_id", "charge_id", "created", "reason", *own]
            con.register("disputes", ws.read(name, columns=cols))
            ev = con.sql(COUNTED_FRAUD_DISPUTES_SQL).to_arrow_table().select(["charge_id", "created", *own])
            con.close()
        else:
            ev = ws.read(name, columns=["charge_id", "created", *(["reason"] if reason else []), *own])
            if reason:
                ev = ev.filter(pc.equal(ev["reason"], reason))
        ts_ev = pc.cast(pc.cast(ev["created"], pa.timestamp("us", tz="UTC")), pa.int64())
        ev_columns = {"charge_id": ev["charge_id"], "ts": ts_ev}
        if money:
            n = ev.num_rows
            ev_columns["amount"] = ev["amount"] if own else pa.nulls(n, pa.int64())
            ev_columns["currency"] = ev["currency"] if own else pa.nulls(n, pa.string())
        events[s] = pa.table(ev_columns)
    return _charges(table, events)


def _reads_money(fset: FeatureSet) -> bool:
    return any(f.reads_outcome_amount for f in fset.aggregates)


def _charges(table: pa.Table, events: dict[str, pa.Table]) -> Charges:
    """The charges and their outcomes (the events' rows whose charge is known), with the outcomes' own
    ``amount_usd`` where the events carry their amount and currency."""
    attached = _attach(events, table["charge_id"])
    outcomes = {s: (rid, ets) for s, (rid, ets, _) in attached.items()}
    amounts: dict[str, np.ndarray] = {}
    if any("amount" in ev.column_names for ev in events.values()):
        usd = table["amount_usd"].to_numpy(zero_copy_only=False)
        base = table["amount"].to_numpy(zero_copy_only=False)
        cur = table["currency"]
        for s, (rid, _, keep) in attached.items():
            own = events[s]["amount"].to_pylist()
            own_cur = events[s]["currency"].to_pylist()
            charge_cur = cur.take(pa.array(rid)).to_pylist()
            amounts[s] = np.array(
                [
                    outcome_amount_usd(
                        own[k],
                        own_cur[k],
                        {"amount": int(base[r]), "currency": charge_cur[i], "amount_usd": int(usd[r])},
                    )
                    for i, (k, r) in enumerate(zip(keep.tolist(), rid.tolist(), strict=True))
                ],
                dtype=np.int64,
            )
    return Charges(table, outcomes, amounts)


def _attach(
    events: dict[str, pa.Table], charge_ids: pa.ChunkedArray
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per outcome source: the rid of each outcome's charge (outcomes of unknown charges dropped), the
    outcome's own time (us) and its row among the source's events."""
    outcomes: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    if not events:
        return outcomes
    ids = pa.chunked_array([c for t in events.values() for c in t["charge_id"].chunks], pa.string())
    # Hash the few outcome charge ids, not every charge id: the charges that have an outcome, then each
    # outcome's position among them.
    hit = np.flatnonzero(pc.is_in(charge_ids, value_set=pc.unique(ids)).to_numpy(zero_copy_only=False))
    having = charge_ids.take(pa.array(hit))
    for s, ev in events.items():
        at = pc.index_in(ev["charge_id"], value_set=having).to_numpy(zero_copy_only=False)
        at = np.nan_to_num(at.astype(np.float64), nan=-1.0).astype(np.int64)
        rid = hit[np.maximum(at, 0)] if len(hit) else np.zeros(len(at), dtype=np.int64)
        keep = at >= 0  # unknown charge: dropped
        ets = ev["ts"].to_numpy().astype(np.int64)
        outcomes[s] = (rid[keep], ets[keep], np.flatnonzero(keep))
    return outcomes


class Frame:
    """Columns of the charges as integer codes and masks, computed once and shared by every entity."""

    def __init__(self, charges: Charges) -> None:
        self.charges = charges
        self.n = charges.n
        self.ts: np.ndarray = charges.table["ts"].to_numpy().astype(np.int64)
        self._codes: dict[str, tuple[np.ndarray, int]] = {}
        self._dicts: dict[str, pa.Array] = {}
        self._lo: dict[tuple[int, int], np.ndarray] = {}
        self._tiles: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._ranks: dict[tuple[str, int, int | None], np.ndarray] = {}
        self._times: dict[str, np.ndarray] = {}
        self._masks: dict[str, np.ndarray] = {}
        self._amount: np.ndarray | None = None
        self._amount_present = np.zeros(0, dtype=bool)
        if self.n >= 2**31:
            raise ValueError(f"The columnar backfill takes up to 2^31 - 1 charges. Got {self.n:,}.")

    def codes(self, column: str) -> tuple[np.ndarray, int]:
        """Dense int64 codes of a column's values (-1 where null) and their number."""
        if column not in self._codes:
            col = self.charges.table[column]
            if not pa.types.is_dictionary(col.type):
                col = pc.dictionary_encode(col)
            enc = col.combine_chunks()  # unified dictionaries: one dictionary
            idx = pc.fill_null(enc.indices, -1).to_numpy().astype(np.int32)
            self._codes[column] = (idx, len(enc.dictionary))
            self._dicts[column] = enc.dictionary
        return self._codes[column]

    def key(self, entity: str) -> np.ndarray:
        """The entity's key code per charge (-1 where a part is null)."""
        cols = ENTITIES[entity]
        code = self.codes(cols[0])[0].astype(np.int64)
        for c in cols[1:]:
            other, k = self.codes(c)
            code = np.where((code >= 0) & (other >= 0), code * k + other, -1)
        return code

    def mask(self, name: str) -> np.ndarray:
        """Charges passing the named filter (a null value does not pass)."""
        if name not in self._masks:
            flt = FILTERS[name]
            codes, _ = self.codes(flt.column)
            values = self._dicts[flt.column]
            hit = pc.fill_null(pc.is_in(values, value_set=pa.array(list(flt.values))), False)
            table = np.append(hit.to_numpy(zero_copy_only=False), False)  # code -1 (null): no
            self._masks[name] = table[codes]
        return self._masks[name]

    @property
    def amount(self) -> np.ndarray:
        """``amount_usd`` in cents, 0 where null (the SQL ``coalesce``)."""
        if self._amount is None:
            col = self.charges.table["amount_usd"]
            self._amount_present = col.is_valid().to_numpy(zero_copy_only=False)
            self._amount = pc.fill_null(col, 0).to_numpy().astype(np.int64)
        return self._amount

    def present(self, column: str) -> np.ndarray:
        """Charges whose ``column`` is not null."""
        if column == "amount_usd":
            _ = self.amount
            return self._amount_present
        return self.codes(column)[0] >= 0

    def prepare(self, feats: list[Aggregate]) -> None:
        """Encode every column ``feats`` read, then drop them from the charges table (memory)."""
        for f in feats:
            for c in (*f.key_columns, f.column):
                if c == "amount_usd":
                    _ = self.amount
                if c is not None and (c != "amount_usd" or f.agg == "distinct"):  # (distinct reads codes)
                    self.codes(c)
            if f.filter:
                self.mask(f.filter)
        self.charges.table = self.charges.table.select(["charge_id", "ts"])

    def tiles(self, res: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The runs of charges in the same tile (``ts // res`` is non-decreasing in rid): the run of each
        charge (int32), each run's tile, and each run's first rid followed by ``n``."""
        if res not in self._tiles:
            tiles = self.ts // res
            first = np.flatnonzero(np.diff(tiles, prepend=tiles[:1] - 1) != 0) if len(tiles) else tiles
            run_of = (np.cumsum(np.diff(tiles, prepend=tiles[:1]) != 0)).astype(np.int32)
            self._tiles[res] = (run_of, tiles[first], np.append(first, self.n))
        return self._tiles[res]

    def lo(self, res: int, k: int, rids: np.ndarray) -> np.ndarray:
        """``first_rid(T - k)`` of the charges ``rids``: the rid of the first charge in tile ``T - k`` or
        later (``k`` may be negative: a tile after the charge's). Computed once per tile run."""
        run_of, run_tile, run_first = self.tiles(res)
        if (res, k) not in self._lo:
            at = np.searchsorted(run_tile, run_tile - k, side="left")
            self._lo[(res, k)] = run_first[at].astype(np.int32)
        out: np.ndarray = self._lo[(res, k)][run_of[rids]]
        return out

    def outcome_rank(self, source: str, res: int, shift: int | None, rids: np.ndarray) -> np.ndarray:
        """For the charges ``rids``: how many of the source's outcomes have time ``<= t`` (``shift`` None) or
        a time before the start of tile ``T - shift``: a rank in the source's sorted outcome times."""
        key = (source, res, shift)
        times = self.outcome_times(source)
        if shift is None:
            if key not in self._ranks:
                self._ranks[key] = np.searchsorted(times, self.ts, side="right").astype(np.int32)
            le: np.ndarray = self._ranks[key][rids]
            return le
        run_of, run_tile, _ = self.tiles(res)
        if key not in self._ranks:
            per_run = np.searchsorted(times, (run_tile - shift) * res, side="left")
            self._ranks[key] = per_run.astype(np.int32)
        lt: np.ndarray = self._ranks[key][run_of[rids]]
        return lt

    def outcome_times(self, source: str) -> np.ndarray:
        """The source's outcome times (us), sorted."""
        if source not in self._times:
            _, ets = self.charges.outcomes.get(source, (None, np.zeros(0, np.int64)))
            self._times[source] = np.sort(ets)
        return self._times[source]


class EntityIndex:
    """The charges of one entity with a key, sorted by ``(key, rid)``: position ``p`` holds charge ``perm[p]``
    of dense key group ``g[p]``, whose run starts at ``start[p]``."""

    def __init__(self, frame: Frame, key: np.ndarray) -> None:
        n = frame.n
        rid = np.flatnonzero(key >= 0)
        k = key[rid]
        if len(k) and float(k.max()) * n < _FITS:
            order = np.argsort(k * n + rid)  # unique composite: no stable sort needed
        else:
            order = np.argsort(k, kind="stable")
        self.perm = rid[order].astype(np.int32)
        ks = k[order]
        del rid, k, order
        self.m = len(ks)
        self.n = n
        first = np.ones(self.m, dtype=bool)
        first[1:] = ks[1:] != ks[:-1]
        del ks
        self.g = np.cumsum(first) - 1  # int64: composite keys g * n + rid are built from it
        self.start = np.flatnonzero(first).astype(np.int32)[self.g]
        self.comp = self.g * n + self.perm  # sorted, unique
        self._pos: dict[tuple[int, int], np.ndarray] = {}
        self._run_starts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.here = np.arange(self.m, dtype=np.int32)  # each position itself
        self.frame = frame

    def pos(self, res: int, k: int) -> np.ndarray:
        """Per position: the position of the first charge of its key with ``rid >= first_rid(T - k)`` (the
        next key's first position if none). Positions of one key in one tile share it: searched once."""
        if (res, k) not in self._pos:
            runs, lengths = self._runs(res)
            lo = self.frame.lo(res, k, self.perm[runs])
            found = np.searchsorted(self.comp, self.g[runs] * self.n + lo)
            self._pos[(res, k)] = np.repeat(found.astype(np.int32), lengths)
        return self._pos[(res, k)]

    def _runs(self, res: int) -> tuple[np.ndarray, np.ndarray]:
        """First positions and lengths of the runs of equal (key, tile)."""
        if res not in self._run_starts:
            tiles = self.frame.tiles(res)[0][self.perm]  # tile runs: equal iff the tiles are
            new = np.ones(self.m, dtype=bool)
            new[1:] = (tiles[1:] != tiles[:-1]) | (self.g[1:] != self.g[:-1])
            starts = np.flatnonzero(new)
            self._run_starts[res] = (starts.astype(np.int32), np.diff(np.append(starts, self.m)))
        return self._run_starts[res]

    def bounds(self, f: Aggregate) -> tuple[np.ndarray, np.ndarray]:
        """Positions ``[lo, hi)`` of the charges the aggregate covers, per position."""
        here = self.here
        if f.window is None:
            return self.start, here
        res = _resolution_us(f)
        w, o = window_tiles(f)
        return self.pos(res, w + o), (here if o == 0 else self.pos(res, o))


def _value(f: Aggregate, c: np.ndarray, s: np.ndarray | None, q: np.ndarray | None) -> np.ndarray:
    """The aggregate from exact integer window sums; the formulas of payfm.features.online."""
    cf = c.astype(np.float64)
    if f.agg == "count":
        return cf
    if f.agg == "first_seen":
        first: np.ndarray = (c == 0).astype(np.float64)
        return first
    assert s is not None
    sf = s.astype(np.float64)
    if f.agg == "sum":
        return sf / CENTS_PER_DOLLAR
    with np.errstate(divide="ignore", invalid="ignore"):
        if f.agg == "mean":
            return np.where(c > 0, sf / cf / CENTS_PER_DOLLAR, np.nan)
        assert q is not None
        num = _exact_variance_numerator(c, s, q)
        den = (c * (c - 1)).astype(np.float64)
        return np.where(c > 1, np.sqrt(num / den) / CENTS_PER_DOLLAR, np.nan)


def _exact_variance_numerator(c: np.ndarray, s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``float(c * q - s * s)`` computed exactly: int64 where it cannot overflow, Python integers beyond."""
    cf, sf, qf = (x.astype(np.float64) for x in (c, s, q))
    big = (np.abs(cf * qf) >= _FITS) | (sf * sf >= _FITS)
    out = np.empty(len(c), dtype=np.float64)
    small = ~big
    qs = q[small].astype(np.int64) if q.dtype == object else q[small]
    out[small] = (c[small] * qs - s[small] * s[small]).astype(np.float64)
    if big.any():
        cb, sb, qb = (x[big].astype(object) for x in (c, s, q))
        out[big] = np.array([float(v) for v in cb * qb - sb * sb], dtype=np.float64)
    return out


def _range_max(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``max(v[lo:hi])`` per query (``-inf`` when empty): a sparse table built one doubling level at a time,
    each query answered at its level ``floor(log2(hi - lo))`` from two overlapping blocks."""
    out = np.full(len(lo), -np.inf)
    length = hi - lo
    ok = length > 0
    if not ok.any():
        return out
    level = np.zeros(len(lo), dtype=np.int64)
    level[ok] = np.floor(np.log2(length[ok])).astype(np.int64)
    level[ok & ((1 << level) > length)] -= 1  # guard against log2 rounding at powers of two
    level[ok & ((2 << level) <= length)] += 1
    level[~ok] = -1
    order = np.argsort(level, kind="stable")
    cuts = np.searchsorted(level[order], np.arange(int(level.max()) + 2))
    table = v
    for j in range(int(level.max()) + 1):
        sel = order[cuts[j] : cuts[j + 1]]
        if len(sel):
            out[sel] = np.maximum(table[lo[sel]], table[hi[sel] - (1 << j)])
        step = 1 << j
        table = np.maximum(table[:-step], table[step:])  # table[i] = max(v[i : i + 2^(j+1)])
    return out


class EntityEngine:
    """Every supported aggregate of one entity; results come back per position (see :class:`EntityIndex`)."""

    def __init__(self, frame: Frame, entity: str) -> None:
        self.frame = frame
        self.idx = EntityIndex(frame, frame.key(entity))
        self._sums: dict[tuple[str, str | None], np.ndarray] = {}
        self._outcome_sums: dict[tuple[str, str, str | None], np.ndarray] = {}
        self._events: dict[tuple[str, str | None], tuple[np.ndarray, np.ndarray, int]] = {}
        self._event_at: dict[tuple[str, str | None], np.ndarray] = {}  # each event's row in Charges
        self._prev: dict[tuple[str, str | None], tuple[np.ndarray, np.ndarray]] = {}
        self._opos: dict[tuple[str, str | None, int, int | None], np.ndarray] = {}

    def _mask(self, flt: str | None) -> np.ndarray | None:
        return None if flt is None else self.frame.mask(flt)[self.idx.perm]

    def _prefix(self, what: str, flt: str | None) -> np.ndarray:
        """Exclusive prefix sums over the positions of ``what`` (``c``: 1, ``s``: amount, ``q``: squared)."""
        if (what, flt) not in self._sums:
            m = self._mask(flt)
            if what == "c":
                x = np.ones(self.idx.m, dtype=np.int64) if m is None else m.astype(np.int64)
            else:
                a = self.frame.amount[self.idx.perm]
                x = a if what == "s" else _squares(a)
                if m is not None:
                    x = np.where(m, x, 0) if x.dtype != object else x * m
            self._sums[(what, flt)] = _exclusive_cumsum(x)
        return self._sums[(what, flt)]

    def compute(self, f: Aggregate) -> np.ndarray:
        """The aggregate's values per position (NaN where missing)."""
        if f.source != "charges":
            return self._outcome(f)
        if f.agg == "distinct":
            return self._distinct(f)
        if f.agg in ("last", "since_prev", "since_first"):
            return self._last(f)
        lo, hi = self.idx.bounds(f)
        if f.agg in ("count", "sum", "mean", "std", "first_seen"):
            c = self._window("c", f.filter, lo, hi)
            s = self._window("s", f.filter, lo, hi) if f.agg in ("sum", "mean", "std") else None
            q = self._window("q", f.filter, lo, hi) if f.agg == "std" else None
            return _value(f, c, s, q)
        sign = 1.0 if f.agg == "max" else -1.0  # min/max
        v = sign * self.frame.amount[self.idx.perm].astype(np.float64)
        v[~self._valid(f)] = -np.inf
        ext = _range_max(v, lo, hi)
        return np.where(np.isinf(ext), np.nan, sign * ext / CENTS_PER_DOLLAR)

    def cache_keys(self, f: Aggregate) -> set[tuple[object, ...]]:
        """The cached arrays computing ``f`` reads (see :meth:`drop_unused`)."""
        keys: set[tuple[object, ...]] = set()
        if f.agg == "distinct":
            keys.add(("prev", f.column, f.filter))
        if f.source != "charges":
            keys.add(("events", f.source, f.filter))
            return keys
        if f.agg in ("count", "sum", "mean", "std", "first_seen"):
            keys.add(("sums", "c", f.filter))
            if f.agg in ("sum", "mean", "std"):
                keys.add(("sums", "s", f.filter))
            if f.agg == "std":
                keys.add(("sums", "q", f.filter))
        if f.window is not None:
            res = _resolution_us(f)
            w, o = window_tiles(f)
            ks = [-(w + 1)] if f.agg == "distinct" else [w + o, *([o] if o else [])]
            keys.update(("pos", res, k) for k in ks)
        return keys

    def drop_unused(self, keep: set[tuple[object, ...]]) -> None:
        """Forget the cached arrays no key of ``keep`` names: prefix sums, window bounds, previous
        occurrences, outcome lookups (memory: an entity's caches are n-element arrays)."""
        for k in [k for k in self._sums if ("sums", *k) not in keep]:
            del self._sums[k]
        for p in [p for p in self.idx._pos if ("pos", *p) not in keep]:
            del self.idx._pos[p]
        for c in [c for c in self._prev if ("prev", *c) not in keep]:
            del self._prev[c]
        for o in [o for o in self._opos if ("events", o[0], o[1]) not in keep]:
            del self._opos[o]
        for e in [e for e in self._outcome_sums if ("events", e[0], e[2]) not in keep]:
            del self._outcome_sums[e]

    def _window(self, what: str, flt: str | None, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        pre = self._prefix(what, flt)
        upper = pre[: self.idx.m] if hi is self.idx.here else pre[hi]  # up to the charge: a slice, no gather
        out: np.ndarray = upper - pre[lo]
        return out

    def _valid(self, f: Aggregate) -> np.ndarray:
        """Positions whose event the aggregate reads: the filter holds and the value is present."""
        ok = np.ones(self.idx.m, dtype=bool)
        m = self._mask(f.filter)
        if m is not None:
            ok &= m
        if f.column is not None:
            ok &= self.frame.present(f.column)[self.idx.perm]
        return ok

    def _last(self, f: Aggregate) -> np.ndarray:
        """last, since_prev, since_first (all-time): the last / first valid position before each position."""
        idx = self.idx
        ok = self._valid(f)
        here = np.arange(idx.m)
        if f.agg == "since_first":
            vpos = np.flatnonzero(ok)
            first_of_group = np.full(int(idx.g[-1]) + 1 if idx.m else 0, idx.m, dtype=np.int64)
            # the first valid position of each group: reversed assignment keeps the smallest
            first_of_group[idx.g[vpos[::-1]]] = vpos[::-1]
            at = first_of_group[idx.g]
            found = at < here
        else:
            last = np.maximum.accumulate(np.where(ok, here, -1)) if idx.m else here
            at = np.empty(idx.m, dtype=np.int64)
            at[:1] = -1
            at[1:] = last[:-1]
            found = at >= idx.start
        at = np.where(found, at, 0)
        if f.agg == "last":
            vals = self.frame.amount[idx.perm][at].astype(np.float64) / CENTS_PER_DOLLAR
        else:
            ts = self.frame.ts[idx.perm]
            vals = (ts - ts[at]).astype(np.float64) / 1e6
        return np.where(found, vals, np.nan)

    def _previous(self, f: Aggregate) -> tuple[np.ndarray, np.ndarray]:
        """The positions of the events ``f`` reads (increasing) and, per event, the index (into them) of the
        previous event of the same key and value (-1 if none); shared by every window of one column."""
        assert f.column is not None
        cache = (f.column, f.filter)
        if cache not in self._prev:
            idx = self.idx
            codes, card = self.frame.codes(f.column)
            ev = np.flatnonzero(self._valid(f)).astype(np.int32)
            pair = idx.g[ev] * (card + 1) + codes[idx.perm[ev]]
            order = np.argsort(pair, kind="stable")  # by (key, value), positions increasing within
            pair = pair[order]
            same = pair[1:] == pair[:-1]
            prev = np.full(len(ev), -1, dtype=np.int32)
            prev[order[1:][same]] = order[:-1][same]
            self._prev[cache] = (ev, prev)
        return self._prev[cache]

    def _distinct(self, f: Aggregate) -> np.ndarray:
        """Distinct non-null values of ``f.column`` among the charges the window covers, per position."""
        idx = self.idx
        ev, prev = self._previous(f)
        if f.window is None:  # the first occurrences before the position, within its key
            firsts = np.zeros(idx.m, dtype=np.int64)
            firsts[ev[prev < 0]] = 1
            pre = _exclusive_cumsum(firsts)
            total: np.ndarray = (pre[np.arange(idx.m)] - pre[idx.start]).astype(np.float64)
            return total
        # The event counts for queries q > e with L_q in (rid(prev), rid(e)]; L is monotone along a group.
        # L_q > rid(e) iff T_q > tile(e) + W: the first such q is the first of the key from tile T + W + 1 on.
        end = idx.pos(_resolution_us(f), -(window_tiles(f)[0] + 1))[ev]
        start = np.where(prev >= 0, end[np.maximum(prev, 0)], idx.start[ev])
        start = np.maximum(start, ev + 1)
        hit = start < end
        diff = np.bincount(start[hit], minlength=idx.m + 1) - np.bincount(end[hit], minlength=idx.m + 1)
        counts: np.ndarray = np.cumsum(diff)[: idx.m].astype(np.float64)
        return counts

    # ---- outcome sources --------------------------------------------------------------------------------
    def _outcome_events(self, source: str, flt: str | None) -> tuple[np.ndarray, np.ndarray, int]:
        """The source's events of this entity sorted by (group, time rank): their composite key
        ``group * stride + rank`` (rank in all of the source's sorted times), the rid of each event's charge,
        and the stride."""
        if (source, flt) not in self._events:
            idx = self.idx
            rid, ets = self.frame.charges.outcomes.get(source, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
            times = self.frame.outcome_times(source)
            group = np.full(self.frame.n, -1, dtype=np.int64)
            group[idx.perm] = idx.g
            eg = group[rid]
            keep = eg >= 0
            if flt is not None:
                keep &= self.frame.mask(flt)[rid]
            at = np.flatnonzero(keep)
            rid, ets, eg = rid[keep], ets[keep], eg[keep]
            stride = len(times) + 1
            comp = eg * stride + np.searchsorted(times, ets, side="left")
            order = np.argsort(comp, kind="stable")
            self._events[(source, flt)] = (comp[order], rid[order], stride)
            self._event_at[(source, flt)] = at[order]
        return self._events[(source, flt)]

    def _event_amounts(self, source: str, flt: str | None) -> np.ndarray:
        """What each of the entity's events (in :meth:`_outcome_events` order) adds to sums: the outcome's
        own amount where the set reads it, else its charge's ``amount_usd``."""
        _, rid, _ = self._outcome_events(source, flt)
        own = self.frame.charges.amounts.get(source)
        out: np.ndarray = self.frame.amount[rid] if own is None else own[self._event_at[(source, flt)]]
        return out

    def _outcome_pos(self, source: str, flt: str | None, res: int, shift: int | None) -> np.ndarray:
        """Per position: how many of the source's events sort before the bound of its group (events of
        earlier groups included): time ``<= t`` (``shift`` None) or before the start of tile ``T - shift``."""
        key = (source, flt, res, shift)
        if key not in self._opos:
            comp, _, stride = self._outcome_events(source, flt)
            idx = self.idx
            if shift is None:
                rank = self.frame.outcome_rank(source, res, None, idx.perm)
                found = np.searchsorted(comp, idx.g * stride + rank, side="left")
                self._opos[key] = found.astype(np.int32)
            else:  # one search per run of equal (key, tile)
                runs, lengths = idx._runs(res)
                rank = self.frame.outcome_rank(source, res, shift, idx.perm[runs])
                found = np.searchsorted(comp, idx.g[runs] * stride + rank, side="left")
                self._opos[key] = np.repeat(found.astype(np.int32), lengths)
        return self._opos[key]

    def _outcome(self, f: Aggregate) -> np.ndarray:
        """Outcome counts and sums: the events with time ``<= t`` (or before a tile start) in the window."""
        _, rid, _ = self._outcome_events(f.source, f.filter)  # (the events' count)
        if f.window is None:
            lo = self._group_first(f)
            hi = self._outcome_pos(f.source, f.filter, 1, None)
        else:
            res = _resolution_us(f)
            w, o = window_tiles(f)
            lo = self._outcome_pos(f.source, f.filter, res, w + o)
            hi = self._outcome_pos(f.source, f.filter, res, o if o else None)
        sums: dict[str, np.ndarray] = {}
        for what in ("c", "s", "q"):
            k = (f.source, what, f.filter)
            if k not in self._outcome_sums:
                if what == "c":
                    x = np.ones(len(rid), dtype=np.int64)
                else:
                    a = self._event_amounts(f.source, f.filter)
                    x = a if what == "s" else _squares(a)
                self._outcome_sums[k] = _exclusive_cumsum(x)
            sums[what] = self._outcome_sums[k][hi] - self._outcome_sums[k][lo]
            if f.agg not in ("sum", "mean", "std"):
                break
        return _value(f, sums["c"], sums.get("s"), sums.get("q"))

    def _group_first(self, f: Aggregate) -> np.ndarray:
        """Per position: how many events belong to earlier groups (the start of the group's events)."""
        comp, _, stride = self._outcome_events(f.source, f.filter)
        return np.searchsorted(comp, self.idx.g * stride, side="left")


def entity_columns(frame: Frame, entity: str, feats: list[Aggregate]) -> Iterator[tuple[str, np.ndarray]]:
    """(name, values in rid order, NaN where missing) of each of the entity's aggregates. Features sharing
    cached arrays run together, and each cache is dropped after the last feature that reads it (memory)."""
    engine = EntityEngine(frame, entity)
    perm = engine.idx.perm
    feats = sorted(feats, key=lambda f: (f.source, f.agg == "distinct", f.column or "", f.filter or ""))
    for i, f in enumerate(feats):
        out = np.full(frame.n, np.nan)
        out[perm] = engine.compute(f)
        yield f.name, out
        del out
        engine.drop_unused(set().union(*(engine.cache_keys(g) for g in feats[i + 1 :])))


def aggregate_columns(
    frame: Frame,
    feats: list[Aggregate],
    put: Callable[[str, np.ndarray], None],
    progress: Callable[[], None] | None = None,
    workers: int = 2,
) -> None:
    """Every aggregate of ``feats`` (all supported) handed to ``put`` (name, values in rid order), entity by
    entity. numpy releases the GIL in its sorts, searches and ufuncs, so ``workers`` entities run at once;
    ``put`` and ``progress`` are called under one lock."""
    by: dict[str, list[Aggregate]] = {}
    for f in feats:
        by.setdefault(f.entity, []).append(f)
    lock = threading.Lock()

    def run(entity: str) -> None:
        for name, values in entity_columns(frame, entity, by[entity]):
            with lock:
                put(name, values)
            del values
        if progress:
            with lock:
                progress()

    order = sorted(by, key=lambda e: -len(by[e]))  # the largest first, so the workers finish together
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(run, order):
            pass
