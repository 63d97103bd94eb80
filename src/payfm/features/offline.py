"""Offline backfill: every feature of every charge as of just before it, as relational plans on DuckDB.

Each aggregate group (see :mod:`payfm.features.plan`) is one SQL query over the union of
*events* (the entity's charges or outcomes, ``is_ev = 1``) and *query points* (every charge, ``is_ev = 0``):

1. ``tile = ts // resolution``; per (key, tile) totals;
2. complete tiles of the window: a ``RANGE`` window function over the tile index;
3. the partial current tile: a cumulative ``ROWS ... 1 PRECEDING`` window in the total order
   ``(ts, charge_id, is_ev)`` (charges: strictly before the charge) or ``(ts, is_ev DESC)`` (outcomes: an
   outcome at exactly ``t`` counts);
4. value = complete tiles + partial tile, then the aggregate's formula (mean = s / n, std from exact integer
   sums), the same formulas the online state uses.

No Python loop touches rows: the same plans can be emitted for Spark SQL. DuckDB spills to disk beyond its
memory limit, which bounds memory on large logs.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from payfm.events.workspace import Workspace
from payfm.features.definitions import (
    ENTITIES,
    FILTERS,
    Aggregate,
    Derived,
    FeatureSet,
    RequestFeature,
)
from payfm.features.plan import Group, groups, window_tiles
from payfm.features.request import COUNTRY_UTC_OFFSET_H

_OUTCOME_SQL = {
    "fraud_disputes": "SELECT charge_id, created FROM disputes WHERE reason = 'fraudulent'",
    "efws": "SELECT charge_id, created FROM early_fraud_warnings",
    "refunds": "SELECT charge_id, created FROM refunds",
}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _needed_columns(fset: FeatureSet) -> list[str]:
    cols: list[str] = []

    def add(c: str) -> None:
        if c not in cols:
            cols.append(c)

    for f in fset.features:
        if isinstance(f, Aggregate):
            for c in f.key_columns:
                add(c)
            if f.column:
                add(f.column)
            if f.filter:
                add(FILTERS[f.filter].column)
        elif isinstance(f, RequestFeature):
            for c in f.columns:
                add(c)
            if f.kind in ("amount_usd", "amount_usd_log"):
                add("amount_usd")
            if f.kind == "local_hour":
                add("merchant_country")
    return [c for c in cols if c not in ("charge_id", "created")]


def prepare(con: duckdb.DuckDBPyConnection, fset: FeatureSet) -> int:
    """Materialize ``base`` (charges, row id ``rid`` in (created, charge_id) order) and outcome tables."""
    cols = ", ".join(_q(c) for c in _needed_columns(fset))
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE base AS
        SELECT (row_number() OVER (ORDER BY created, charge_id) - 1)::BIGINT AS rid, charge_id,
               epoch_us(created) AS ts{", " + cols if cols else ""}
        FROM charges"""
    )
    sources = {f.source for f in fset.aggregates if f.source != "charges"}
    for s in sorted(sources):
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE ev_{s} AS
            SELECT b.* EXCLUDE (rid, ts), epoch_us(o.created) AS ts
            FROM ({_OUTCOME_SQL[s]}) o JOIN base b USING (charge_id)"""
        )
    return int(con.execute("SELECT count(*) FROM base").fetchall()[0][0])


def _group_sql(g: Group) -> str:
    keys = ENTITIES[g.key.entity]
    kcols = ", ".join(_q(k) for k in keys)
    key_ok = " AND ".join(f"{_q(k)} IS NOT NULL" for k in keys)
    vals = g.value_columns
    filt = ""
    if g.key.filter:
        flt = FILTERS[g.key.filter]
        filt = f" AND {_q(flt.column)} IN ({', '.join(repr(v) for v in flt.values)})"
    src = "base" if g.key.source == "charges" else f"ev_{g.key.source}"
    v_ev = "".join(f", {_q(c)} AS v{i}" for i, c in enumerate(vals))
    v_q = "".join(f", NULL AS v{i}" for i, _ in enumerate(vals))
    # For distinct all-time: flag the first occurrence of each (key, value) among events.
    fo_cols = [i for i, c in enumerate(vals) if c in g.distinct_columns and not g.windowed]
    fo_ev = "".join(
        f", (row_number() OVER (PARTITION BY {kcols}, v{i} ORDER BY ts, charge_id) = 1"
        f" AND v{i} IS NOT NULL)::INT AS fo{i}"
        for i in fo_cols
    )
    fo_q = "".join(f", 0 AS fo{i}" for i in fo_cols)
    union = f"""
        SELECT *{fo_ev} FROM (SELECT NULL::BIGINT AS rid, {kcols}, ts, charge_id, 1 AS is_ev{v_ev}
                             FROM {src} WHERE {key_ok}{filt})
        UNION ALL
        SELECT rid, {kcols}, ts, charge_id, 0 AS is_ev{v_q}{fo_q} FROM base WHERE {key_ok}"""
    order = "ts, charge_id, is_ev" if g.key.source == "charges" else "ts, is_ev DESC"
    numeric = [i for i, c in enumerate(vals) if c in g.numeric_columns]
    minmax = [i for i, c in enumerate(vals) if c in g.minmax_columns]
    if not g.windowed:
        return _all_time_sql(g, union, kcols, order, numeric, minmax, fo_cols)
    return _windowed_sql(g, union, kcols, order, numeric, minmax)


def _agg_parts(numeric: list[int], minmax: list[int], fn_sum: str, fn_min: str, fn_max: str) -> list[str]:
    parts = [f"{fn_sum.format('is_ev')}::BIGINT AS c"]
    for i in numeric:
        parts.append(f"{fn_sum.format(f'v{i}')}::HUGEINT AS s{i}")
        parts.append(f"{fn_sum.format(f'v{i}::HUGEINT * v{i}')}::HUGEINT AS q{i}")
    for i in minmax:
        parts.append(f"{fn_min.format(f'v{i}')} AS mn{i}")
        parts.append(f"{fn_max.format(f'v{i}')} AS mx{i}")
    return parts


def _formula(f: Aggregate, vi: int | None, c: str, s: str, q: str, mn: str, mx: str) -> str:
    """The aggregate's value from its sums; the same formulas as payfm.features.online."""
    if f.agg == "count":
        return f"({c})::DOUBLE"
    if f.agg == "sum":
        return f"({s})::DOUBLE / 100.0"
    if f.agg == "mean":
        return f"CASE WHEN {c} > 0 THEN ({s})::DOUBLE / ({c})::DOUBLE / 100.0 END"
    if f.agg == "std":
        return (
            f"CASE WHEN {c} > 1 THEN sqrt((({c})::HUGEINT * ({q}) - ({s}) * ({s}))::DOUBLE"
            f" / (({c})::HUGEINT * (({c}) - 1))::DOUBLE) / 100.0 END"
        )
    if f.agg == "min":
        return f"({mn})::DOUBLE / 100.0"
    if f.agg == "max":
        return f"({mx})::DOUBLE / 100.0"
    raise AssertionError(f.agg)


def _windowed_sql(g: Group, union: str, kcols: str, order: str, numeric: list[int], minmax: list[int]) -> str:
    res = g.key.resolution_us
    tile_parts = _agg_parts(numeric, minmax, "sum({})", "min({})", "max({})")
    part_parts = _agg_parts(numeric, minmax, "sum({}) OVER wp", "min({}) OVER wp", "max({}) OVER wp")
    part_parts = [p.replace(" AS ", " AS p_", 1) for p in part_parts]
    spans = sorted({window_tiles(f) for f in g.features if f.agg != "distinct"})
    win_parts = []
    for w, o in spans:
        frame = f"(PARTITION BY {kcols} ORDER BY tile RANGE BETWEEN {w + o} PRECEDING AND {o + 1} PRECEDING)"
        win_parts.append(f"sum(c) OVER {frame} AS c_{w}_{o}")
        for i in numeric:
            win_parts.append(f"sum(s{i}) OVER {frame} AS s{i}_{w}_{o}")
            win_parts.append(f"sum(q{i}) OVER {frame} AS q{i}_{w}_{o}")
        for i in minmax:
            win_parts.append(f"min(mn{i}) OVER {frame} AS mn{i}_{w}_{o}")
            win_parts.append(f"max(mx{i}) OVER {frame} AS mx{i}_{w}_{o}")
    vals = g.value_columns
    outs = []
    for f in g.features:
        if f.agg == "distinct":
            continue
        w, o = window_tiles(f)
        vi = vals.index(f.column) if f.column else None
        live = o == 0  # the partial current tile counts only when the window ends at the charge

        def comb(name: str, kind: str, w: int = w, o: int = o, live: bool = live) -> str:
            whole = f"tw.{name}_{w}_{o}"
            if kind == "sum":
                return (
                    f"(coalesce({whole}, 0) + coalesce(p.p_{name}, 0))" if live else f"coalesce({whole}, 0)"
                )
            fn = "least" if kind == "min" else "greatest"
            return f"{fn}({whole}, p.p_{name})" if live else whole

        c = comb("c", "sum")
        s = comb(f"s{vi}", "sum") if vi is not None and vi in numeric else "0"
        q = comb(f"q{vi}", "sum") if vi is not None and vi in numeric else "0"
        mn = comb(f"mn{vi}", "min") if vi is not None and vi in minmax else "NULL"
        mx = comb(f"mx{vi}", "max") if vi is not None and vi in minmax else "NULL"
        outs.append(f"{_formula(f, vi, c, s, q, mn, mx)} AS {_q(f.name)}")
    if not outs:
        return ""
    return f"""
    WITH t AS (SELECT *, ts // {res} AS tile FROM ({union})),
    tt AS (SELECT {kcols}, tile, {", ".join(tile_parts)} FROM t GROUP BY ALL),
    tw AS (SELECT {kcols}, tile, {", ".join(win_parts)} FROM tt),
    p AS (SELECT rid, {kcols}, tile, {", ".join(part_parts)} FROM t
          WINDOW wp AS (PARTITION BY {kcols}, tile ORDER BY {order}
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING))
    SELECT p.rid, {", ".join(outs)} FROM p JOIN tw USING ({kcols}, tile) WHERE p.rid IS NOT NULL"""


def _all_time_sql(
    g: Group, union: str, kcols: str, order: str, numeric: list[int], minmax: list[int], fo: list[int]
) -> str:
    frame = f"(PARTITION BY {kcols} ORDER BY {order} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
    parts = _agg_parts(numeric, minmax, "sum({}) OVER w", "min({}) OVER w", "max({}) OVER w")
    vals = g.value_columns
    for i, c in enumerate(vals):
        if any(f.agg == "last" and f.column == c for f in g.features):
            parts.append(f"last_value(v{i} IGNORE NULLS) OVER w AS last{i}")
    for i in fo:
        parts.append(f"sum(fo{i}) OVER w AS d{i}")
    parts.append("max(CASE WHEN is_ev = 1 THEN ts END) OVER w AS prev_ts")
    parts.append("min(CASE WHEN is_ev = 1 THEN ts END) OVER w AS first_ts")
    outs = []
    for f in g.features:
        vi = vals.index(f.column) if f.column else None
        if f.agg == "distinct":
            expr = f"coalesce(d{vi}, 0)::DOUBLE"
        elif f.agg == "last":
            expr = f"last{vi}::DOUBLE / 100.0"
        elif f.agg == "since_prev":
            expr = "(ts - prev_ts)::DOUBLE / 1e6"
        elif f.agg == "since_first":
            expr = "(ts - first_ts)::DOUBLE / 1e6"
        elif f.agg == "first_seen":
            expr = "CASE WHEN coalesce(c, 0) = 0 THEN 1.0 ELSE 0.0 END"
        else:
            s = f"coalesce(s{vi}, 0)" if vi is not None and vi in numeric else "0"
            q = f"coalesce(q{vi}, 0)" if vi is not None and vi in numeric else "0"
            mn = f"mn{vi}" if vi is not None and vi in minmax else "NULL"
            mx = f"mx{vi}" if vi is not None and vi in minmax else "NULL"
            expr = _formula(f, vi, "coalesce(c, 0)", s, q, mn, mx)
        outs.append(f"{expr} AS {_q(f.name)}")
    return f"""
    WITH a AS (SELECT rid, ts, {", ".join(parts)} FROM ({union})
               WINDOW w AS {frame})
    SELECT rid, {", ".join(outs)} FROM a WHERE rid IS NOT NULL"""


def _distinct_windowed_sql(g: Group, f: Aggregate) -> str:
    """Windowed distinct count: a range join of each charge with its entity's events in the window."""
    keys = ENTITIES[g.key.entity]
    on = " AND ".join(f"e.{_q(k)} = q.{_q(k)}" for k in keys)
    key_ok = " AND ".join(f"{_q(k)} IS NOT NULL" for k in keys)
    res = g.key.resolution_us
    w, o = window_tiles(f)
    filt = ""
    if g.key.filter:
        flt = FILTERS[g.key.filter]
        filt = f" AND {_q(flt.column)} IN ({', '.join(repr(v) for v in flt.values)})"
    col = _q(f.column or "")
    before = "(e.ts < q.ts OR (e.ts = q.ts AND e.charge_id < q.charge_id))"
    return f"""
    WITH q AS (SELECT rid, {", ".join(_q(k) for k in keys)}, ts, charge_id, ts // {res} AS tile FROM base
               WHERE {key_ok}),
    e AS (SELECT {", ".join(_q(k) for k in keys)}, ts, charge_id, ts // {res} AS tile, {col} AS v FROM base
          WHERE {key_ok}{filt} AND {col} IS NOT NULL)
    SELECT q.rid, count(DISTINCT e.v)::DOUBLE AS {_q(f.name)}
    FROM q LEFT JOIN e ON {on} AND e.tile >= q.tile - {w + o} AND e.tile <= q.tile - {o} AND {before}
    GROUP BY q.rid"""


def _scatter(n: int, rid: np.ndarray, values: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    out = np.full(n, np.nan)
    valid = np.zeros(n, dtype=bool)
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    vv = arr.to_numpy(zero_copy_only=False)
    ok = arr.is_valid().to_numpy(zero_copy_only=False)
    out[rid[ok]] = vv[ok]
    valid[rid[ok]] = True
    return out, valid


def _request_columns(base: pa.Table, fset: FeatureSet) -> dict[str, pa.Array]:
    """Request-time features, vectorized with Arrow; the same rules as payfm.features.request."""
    out: dict[str, pa.Array] = {}
    for f in fset.features:
        if not isinstance(f, RequestFeature):
            continue
        if f.kind == "amount_usd":
            out[f.name] = pc.divide(pc.cast(base["amount_usd"], pa.float64()), 100.0)
        elif f.kind == "amount_usd_log":
            out[f.name] = pc.ln(pc.add(pc.divide(pc.cast(base["amount_usd"], pa.float64()), 100.0), 1.0))
        elif f.kind == "local_hour":
            ts = base["ts"].to_numpy()
            zones = pa.array(list(COUNTRY_UTC_OFFSET_H))
            idx = pc.index_in(base["merchant_country"], value_set=zones).to_numpy(zero_copy_only=False)
            table = np.array([*COUNTRY_UTC_OFFSET_H.values(), 0], dtype=np.int64)  # unknown country: UTC
            offsets = table[np.where(np.isnan(idx.astype(float)), len(table) - 1, idx).astype(np.int64)]
            hours = ((ts // 3_600_000_000) + offsets) % 24
            out[f.name] = pa.array(hours.astype(np.float64))
        elif f.kind == "mismatch":
            a, b = base[f.columns[0]], base[f.columns[1]]
            out[f.name] = pc.cast(pc.not_equal(a, b), pa.float64())
        elif f.kind == "is":
            hit = pc.fill_null(pc.is_in(base[f.columns[0]], value_set=pa.array(list(f.values))), False)
            out[f.name] = pc.cast(hit, pa.float64())
        elif f.kind == "missing":
            out[f.name] = pc.cast(pc.is_null(base[f.columns[0]]), pa.float64())
        elif f.kind == "since":
            then = pc.cast(pc.cast(base[f.columns[0]], pa.timestamp("us", tz="UTC")), pa.int64())
            out[f.name] = pc.divide(pc.cast(pc.subtract(base["ts"], then), pa.float64()), 1e6)
    return {k: (v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v) for k, v in out.items()}


def _derived(values: dict[str, pa.Array], f: Derived) -> pa.Array:
    """Derived features, vectorized; the same rules as payfm.features.request.derive."""
    a = values[f.inputs[0]]
    b = values[f.inputs[1]]
    if f.op == "ratio":
        safe = pc.if_else(pc.equal(b, 0.0), None, b)
        return pc.divide(a, safe)
    if f.op == "diff":
        return pc.subtract(a, b)
    std = values[f.inputs[2]]
    safe_std = pc.if_else(pc.equal(std, 0.0), None, std)
    return pc.divide(pc.subtract(a, b), safe_std)


def compute(
    con: duckdb.DuckDBPyConnection,
    fset: FeatureSet,
    progress: Callable[[int, int], None] | None = None,
) -> pa.Table:
    """Backfill ``fset`` over the ``charges`` (and outcome) views of ``con``: one row per charge, by rid."""
    n = prepare(con, fset)
    base = con.sql("SELECT * FROM base ORDER BY rid").to_arrow_table()
    values: dict[str, pa.Array] = {}
    plan = groups(fset)
    steps = len(plan) + 1
    for k, g in enumerate(plan):
        queries = [_group_sql(g)] + [
            _distinct_windowed_sql(g, f) for f in g.features if f.agg == "distinct" and g.windowed
        ]
        for sql in queries:
            if not sql:
                continue
            res = con.sql(sql).to_arrow_table()
            rid = res["rid"].to_numpy()
            for name in res.column_names[1:]:
                data, valid = _scatter(n, rid, res[name])
                values[name] = pa.array(data, mask=~valid)
        if progress:
            progress(k + 1, steps)
    values.update(_request_columns(base, fset))
    for f in fset.features:
        if isinstance(f, Derived):
            values[f.name] = _derived(values, f)
    columns = [base["charge_id"], pc.cast(base["ts"], pa.timestamp("us", tz="UTC"))]
    columns += [pc.cast(values[name], pa.float64()) for name in fset.names]
    if progress:
        progress(steps, steps)
    return pa.Table.from_arrays(columns, names=["charge_id", "created", *fset.names])


def backfill(
    ws: Workspace,
    fset: FeatureSet,
    *,
    memory_limit: str = "6GB",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, pa.Table]:
    """Backfill ``fset`` over the workspace; write it atomically to ``features/<set>-<version>.parquet``."""
    con = ws.connect()
    spill = Path(tempfile.mkdtemp(prefix="payfm-spill-"))
    try:
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute(f"SET temp_directory = '{spill}'")
        table = compute(con, fset, progress)
    finally:
        con.close()
        for p in spill.glob("*"):
            p.unlink(missing_ok=True)
        spill.rmdir()
    out_dir = ws.root / "features"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"{fset.name}-{fset.version}.parquet"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")
    meta = {b"payfm.feature_set": fset.name.encode(), b"payfm.version": fset.version.encode()}
    pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
    os.replace(tmp, path)
    return path, table


def isclose(a: float | None, b: float | None, rel: float = 1e-9) -> bool:
    """Parity comparison: both missing, or equal within ``rel`` relative tolerance."""
    a_missing = a is None or (isinstance(a, float) and math.isnan(a))
    b_missing = b is None or (isinstance(b, float) and math.isnan(b))
    if a_missing or b_missing:
        return a_missing and b_missing
    assert a is not None and b is not None
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
