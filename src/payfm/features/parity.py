"""Online/offline parity: replay the event log through the online state and compare with the backfill.

The replay is what production sees: events in time order, an outcome at time tau applied before any charge at
t >= tau, each charge read (features) and then applied (update). Chronon calls the measured agreement
"consistency"; payfm requires zero mismatches (floats within 1e-9 relative).
"""

from __future__ import annotations

import gc
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.events.workspace import Workspace
from payfm.features import warm
from payfm.features.definitions import COUNTED_FRAUD_DISPUTES_SQL, FeatureSet, RequestFeature, outcome_claim
from payfm.features.offline import isclose
from payfm.features.online import OnlineFeatures
from payfm.features.stores import MemoryStore

_OUTCOME_IDS = {"fraud_disputes": "dispute_id", "efws": "efw_id", "refunds": "refund_id"}


def _amounts(table: pa.Table) -> tuple[list[int | None], list[str | None]]:
    """An outcome table's own amounts and currencies (none for early fraud warnings)."""
    none: list[Any] = [None] * table.num_rows
    amounts: list[int | None] = table["amount"].to_pylist() if "amount" in table.column_names else none
    currencies: list[str | None] = table["currency"].to_pylist() if "currency" in table.column_names else none
    return amounts, currencies


def _us(col: pa.ChunkedArray | pa.Array) -> list[int | None]:
    out: list[int | None] = pc.cast(pc.cast(col, pa.timestamp("us", tz="UTC")), pa.int64()).to_pylist()
    return out


def replay(
    fset: FeatureSet,
    charges: pa.Table,
    outcomes: dict[str, pa.Table],
    progress: Callable[[int, int], None] | None = None,
    online: OnlineFeatures | None = None,
) -> pa.Table:
    """Online values of ``fset`` for every charge: a table like the backfill's (charge_id, created, features).

    ``charges`` holds charge fields (those the set needs, plus charge_id and created); ``outcomes`` maps a
    label source (fraud_disputes, efws, refunds) to a table with its id column, charge_id and created.
    """
    online = online or OnlineFeatures(fset)
    charges = charges.sort_by([("created", "ascending"), ("charge_id", "ascending")])
    rows = charges.to_pylist()
    ts = _us(charges["created"])
    ts_fields = {
        c for f in fset.features if isinstance(f, RequestFeature) and f.kind == "since" for c in f.columns
    }
    extra = {c: _us(charges[c]) for c in ts_fields}
    # (ts, source, id, charge id, amount, currency): the apply order of the warm path and a replay
    # (outcomes of one instant by id; the backfill's `last` of outcomes follows it)
    events: list[tuple[int, str, str, str, int | None, str | None]] = []
    for source, table in outcomes.items():
        ids = table[_OUTCOME_IDS[source]].to_pylist()
        cids = table["charge_id"].to_pylist()
        amounts, currencies = _amounts(table)
        for k, (oid, cid, t) in enumerate(zip(ids, cids, _us(table["created"]), strict=True)):
            assert t is not None
            events.append((t, source, str(oid), str(cid), amounts[k], currencies[k]))
    events.sort(key=lambda e: e[:4])
    names = fset.names
    out = np.full((len(rows), len(names)), np.nan)
    ev_i = 0
    for i, row in enumerate(rows):
        t = ts[i]
        assert t is not None
        while ev_i < len(events) and events[ev_i][0] <= t:
            et, source, oid, cid, amount, currency = events[ev_i]
            online.apply_outcome(source, oid, cid, et, amount, currency)
            ev_i += 1
        row["created_us"] = t
        for c, vals in extra.items():
            row[c + "_us"] = vals[i]
        values = online.features_then_update(row)
        out[i] = [np.nan if values[n] is None else values[n] for n in names]
        if progress and i % 10_000 == 0:
            progress(i, len(rows))
    columns: list[pa.Array | pa.ChunkedArray] = [charges["charge_id"], charges["created"]]
    columns += [pa.array(out[:, j], mask=np.isnan(out[:, j])) for j in range(len(names))]
    return pa.Table.from_arrays(columns, names=["charge_id", "created", *names])


@dataclass
class ParityReport:
    """Mismatches per feature between two value tables keyed by charge_id."""

    charges: int
    mismatches: dict[str, int] = field(default_factory=dict)
    examples: dict[str, tuple[str, float | None, float | None]] = field(default_factory=dict)

    @property
    def total_mismatches(self) -> int:
        return sum(self.mismatches.values())


def _differs(x: np.ndarray, y: np.ndarray, rel: float) -> np.ndarray:
    """Where two float columns (NaN: null) differ: one null and not the other, or beyond ``rel``."""
    x_nan = np.isnan(x)
    y_nan = np.isnan(y)
    both = ~x_nan & ~y_nan
    diff: np.ndarray = x_nan != y_nan
    scale = np.maximum(np.abs(x), np.abs(y))
    with np.errstate(invalid="ignore"):
        diff[both] |= np.abs(x[both] - y[both]) > np.maximum(rel * scale[both], 1e-12)
    return diff


def compare(
    offline: pa.Table, online: pa.Table, names: list[str], rel: float = 1e-9, warmed: pa.Table | None = None
) -> ParityReport:
    """Compare feature values charge by charge (both sorted by charge id first).

    ``warmed``: values of some of the charges by another online path (a state warmed from the log before
    them, see :func:`warm_replay`); a charge mismatches where either online value differs from the offline
    one (an example shows the event-by-event value when that one differs, else the warmed one)."""
    a = offline.sort_by("charge_id")
    b = online.sort_by("charge_id")
    if a["charge_id"] != b["charge_id"]:
        raise ValueError("The offline and online tables hold different charges.")
    at = np.zeros(0, dtype=np.int64)
    if warmed is not None:
        found = pc.index_in(warmed["charge_id"], value_set=a["charge_id"])
        if found.null_count:
            raise ValueError("The warmed table holds charges the offline one does not.")
        at = found.to_numpy(zero_copy_only=False).astype(np.int64)
    report = ParityReport(charges=a.num_rows)
    ids = a["charge_id"]
    for name in names:
        x = a[name].to_numpy(zero_copy_only=False)
        y = b[name].to_numpy(zero_copy_only=False)
        diff = _differs(x, y, rel)
        other = y.copy()  # the online value an example shows
        if warmed is not None:
            w = warmed[name].to_numpy(zero_copy_only=False)
            only = _differs(x[at], w, rel) & ~diff[at]
            diff[at[only]] = True
            other[at[only]] = w[only]
        n = int(diff.sum())
        report.mismatches[name] = n
        if n:
            k = int(np.flatnonzero(diff)[0])
            xa = None if np.isnan(x[k]) else float(x[k])
            yb = None if np.isnan(other[k]) else float(other[k])
            assert not isclose(xa, yb, rel)
            report.examples[name] = (str(ids[k]), xa, yb)
    return report


WARM_SHARE = 0.9  # the share of a log's charges workspace_parity warms a state from before replaying the rest


def workspace_parity(
    ws: Workspace, fset: FeatureSet, progress: Callable[[int, int], None] | None = None
) -> ParityReport:
    """Backfill ``fset``, replay the whole log online, and compare (``payfm features parity``).

    The charges of the last tenth of the log (from the time of the charge at :data:`WARM_SHARE`) are also
    read after a state warmed from the events before them as a starting server warms it (:func:`warm_replay`):
    a charge mismatches where either online value differs from the backfill's."""
    from payfm.features.offline import compute

    con = ws.connect()
    try:
        offline = compute(con, fset)
    finally:
        con.close()
    charges, outcomes = ws.read("charges"), log_outcomes(ws)
    online = replay(fset, charges, outcomes, progress=progress)
    ts = np.sort(np.array(_us(charges["created"]), dtype=np.int64))
    warmed = warm_replay(fset, charges, outcomes, int(ts[int(len(ts) * WARM_SHARE)])) if len(ts) else None
    return compare(offline, online, fset.names, warmed=warmed)


def warm_replay(fset: FeatureSet, charges: pa.Table, outcomes: dict[str, pa.Table], cut_us: int) -> pa.Table:
    """Online values of the charges at or after ``cut_us``, read after a fresh in-memory state was warmed
    from the events before it as :func:`apply_log` warms a starting server (column by column, where that
    path applies), then the rest replayed as :func:`replay` does: the warm path's parity."""

    def split(table: pa.Table) -> tuple[pa.Table, pa.Table]:
        before = pc.less(pc.cast(pc.cast(table["created"], pa.timestamp("us", tz="UTC")), pa.int64()), cut_us)
        return table.filter(before), table.filter(pc.invert(before))

    head, tail = split(charges.sort_by([("created", "ascending"), ("charge_id", "ascending")]))
    parts = {source: split(table) for source, table in outcomes.items()}
    online = OnlineFeatures(fset)
    names = [c for c in online.write_columns if c in head.column_names]
    _apply(online, head, _us(head["created"]), names, {s: p[0] for s, p in parts.items()}, None)
    return replay(fset, tail, {s: p[1] for s, p in parts.items()}, online=online)


def log_outcomes(ws: Workspace, since_us: int | None = None) -> dict[str, pa.Table]:
    """The label sources of the workspace's log (at or after ``since_us``), as :func:`replay` takes them."""
    since = f"WHERE epoch_us(created) >= {int(since_us)}" if since_us is not None else ""
    con = ws.connect()
    try:
        counted = con.sql(f"SELECT * FROM ({COUNTED_FRAUD_DISPUTES_SQL}) {since}").to_arrow_table()
        return {
            "fraud_disputes": counted,  # one per charge, the one online counts
            "efws": con.sql(f"SELECT * FROM early_fraud_warnings {since}").to_arrow_table(),
            "refunds": con.sql(f"SELECT * FROM refunds {since}").to_arrow_table(),
        }
    finally:
        con.close()


def apply_log(
    online: OnlineFeatures, ws: Workspace, progress: Callable[[int, int], None] | None = None
) -> int:
    """Apply the workspace's whole event log to ``online`` (updates only, no reads), in time order: how a
    serving process starts from history. Outcomes at time tau go before charges at t >= tau. Idempotent.

    A fresh in-memory state is built from the whole log at once, column by column (:mod:`.warm`); otherwise
    (another store, a state already in use) events are applied one by one, charges between two outcomes in
    one :meth:`~OnlineFeatures.update_many` call, with only the columns the updates read. The cyclic garbage
    collector is paused meanwhile (it would rescan millions of long-lived state objects again and again);
    afterwards the state is moved out of its reach (``gc.freeze``), so it causes no collection pauses while
    serving either.
    """
    charges = ws.read("charges").sort_by([("created", "ascending"), ("charge_id", "ascending")])
    ts = _us(charges["created"])
    names = [c for c in online.write_columns if c in charges.column_names]
    outcomes = log_outcomes(ws)
    n = int(charges.num_rows)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _apply(online, charges, ts, names, outcomes, progress)
    finally:
        if was_enabled:
            gc.enable()
    gc.freeze()
    return n


def _apply(
    online: OnlineFeatures,
    charges: pa.Table,
    ts: list[int | None],
    names: list[str],
    outcomes: dict[str, pa.Table],
    progress: Callable[[int, int], None] | None,
) -> None:
    n = int(charges.num_rows)
    if _warm_columnar(online, charges.select(["charge_id", *names]), ts, outcomes):
        if progress:
            progress(n, n)
        return
    columns = [charges[c].to_pylist() for c in ("charge_id", *names)]
    events: list[tuple[int, str, str, str, int | None, str | None]] = []
    for source, table in outcomes.items():
        ids = table[_OUTCOME_IDS[source]].to_pylist()
        cids = table["charge_id"].to_pylist()
        times = _us(table["created"])
        for t, oid, cid, amount, currency in zip(times, ids, cids, *_amounts(table), strict=True):
            assert t is not None
            events.append((t, source, oid, cid, amount, currency))
    events.sort()
    keys = ["charge_id", *names, "created_us"]

    def rows(lo: int, hi: int) -> Iterator[dict[str, Any]]:
        for i in range(lo, hi):
            yield dict(zip(keys, [*(col[i] for col in columns), ts[i]], strict=True))

    done = 0
    for t, source, oid, cid, amount, currency in events:
        upto = bisect_left(ts, t, lo=done)  # type: ignore[type-var]  # (created is never null)
        if upto > done:
            online.update_many(rows(done, upto))
            if progress and upto // 50_000 > done // 50_000:
                progress(upto, n)
            done = upto
        online.apply_outcome(source, oid, cid, t, amount, currency)
    online.update_many(rows(done, n))


def _warm_columnar(
    online: OnlineFeatures, charges: pa.Table, ts: list[int | None], outcomes: dict[str, pa.Table]
) -> bool:
    """A fresh in-memory state built from the whole log at once (:mod:`payfm.features.warm`); False where
    that path does not apply (another store, a state already in use, repeated ids)."""
    store = online.store
    if not isinstance(store, MemoryStore) or store.states or store.charges or store.outcomes:
        return False
    ts_arr = np.array(ts, dtype=np.int64)
    given = [
        (
            source,
            np.array(_us(t["created"]), dtype=np.int64),
            t[_OUTCOME_IDS[source]].to_pylist(),
            t["charge_id"].to_pylist(),
            *_amounts(t),
        )
        for source, t in outcomes.items()
        if source in online.engine.write
    ]
    ordered = warm.events(charges, ts_arr, given, online.outcome_amounts)
    if ordered is None:
        return False
    ev, claimed, top = ordered
    built = warm.states(online.engine.plans, charges, ev)
    if built is None:
        return False
    fields = [c for c in online.label_fields if c in charges.column_names]
    values = [charges[c].to_pylist() for c in fields]
    cids = charges["charge_id"].to_pylist()
    # Fields missing from the log (an older schema) are stored as None, as the event path does.
    fields += [c for c in online.label_fields if c not in charges.column_names]
    values += [[None] * len(cids)] * (len(fields) - len(values))
    rows = zip(*values, strict=True) if fields else ((),) * len(cids)
    store.charges = dict(zip(cids, (dict(zip(fields, row, strict=True)) for row in rows), strict=True))
    store.states = built
    store.outcomes = set(claimed)
    if len(ts_arr):
        store.advance(top)
    return True


def resume(ws: Workspace, fset: FeatureSet, snapshot: Path) -> OnlineFeatures:
    """Restart the in-memory online state: load ``snapshot``, then apply every event of the log it has not
    applied, by id (the state holds the id of each charge and outcome it counted).

    Not only the log's tail from the snapshot's time: an event written after the snapshot may be dated
    before it (a late webhook, an import of a missed export), and the backfill counts it. So the restarted
    state equals one built from the whole log; nothing is missed or counted twice.
    """
    store = MemoryStore.restore(snapshot, fset.version)
    online = OnlineFeatures(fset, store)
    con = ws.connect()
    try:
        charges = con.sql("SELECT * FROM charges").to_arrow_table()
    finally:
        con.close()
    applied = pa.array(list(store.charges), pa.string())
    charges = charges.filter(pc.invert(pc.is_in(charges["charge_id"], value_set=applied)))
    outcomes = {}
    for source, table in log_outcomes(ws).items():
        ids, cids = table[_OUTCOME_IDS[source]].to_pylist(), table["charge_id"].to_pylist()
        new = [
            outcome_claim(source, str(o), str(c)) not in store.outcomes
            for o, c in zip(ids, cids, strict=True)
        ]
        outcomes[source] = table.filter(pa.array(new, pa.bool_()))
    replay(fset, charges, outcomes, online=online)
    return online
