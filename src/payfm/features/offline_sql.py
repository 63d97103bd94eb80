"""The relational backfill plan on DuckDB: the reference engine, and the fallback for outcome aggregates the
columnar engine (:mod:`payfm.features.offline_columnar`) does not compute (min/max/last/times of outcomes).

``base`` numbers the charges by ``rid`` in the total order ``(created, charge_id)``, so "strictly before the
charge" is ``rid < rid(c)``. A tiled window of ``W`` tiles ending ``O`` tiles back covers the charges with
``rid`` in ``[first_rid(T - W - O), first_rid(T - O))`` (``O > 0``) or ``[first_rid(T - W), rid(c))``
(``O = 0``), where ``T`` is the charge's tile and ``first_rid(x)`` the number of charges in tiles before
``x``; those bounds are columns ``lo_<res>_<k>`` of ``base`` (from a dense per-resolution table of tile
starts). Per entity there are up to four queries, each one sort of the entity's rows:

1. charge counts and sums (count, sum, mean, std, first_seen, every window and filter): differences of
   per-key prefix sums in ``rid`` order, the prefix at a bound found by an ``ASOF`` join (:class:`_Prefix`);
2. the other charge aggregates (distinct counts, min/max, last, times): window functions over ``RANGE``
   frames of ``rid`` with per-row offsets, filters as ``FILTER (WHERE ...)`` clauses;
3. outcome counts and sums (fraudulent disputes, EFWs, refunds count once their own time is ``<= t``):
   prefix sums over the outcome events in time order, looked up at ``t`` and at tile starts by ``ASOF`` joins;
4. other outcome aggregates: a union of charges (query points) and outcomes, ``RANGE`` frames over ``ts``
   ending at the current row (an outcome at exactly ``t`` counts).

Numeric sums are exact integers (cents, ``HUGEINT`` squares) and the formulas (mean = s / n, std from the
exact sums) are the ones the online state uses. DuckDB spills to disk beyond its memory limit. The plan is
relational, the shape a Spark port would take; there is no Spark engine (docs/design.md, "Scale").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np
import pyarrow as pa

from payfm.features.definitions import (
    ENTITIES,
    FILTERS,
    OUTCOME_AMOUNT_FIELDS,
    OUTCOME_AMOUNT_USD_SQL,
    Aggregate,
    FeatureSet,
    RequestFeature,
)
from payfm.features.offline_columnar import OUTCOME_MONEY_SQL as _OUTCOME_MONEY_SQL
from payfm.features.offline_columnar import OUTCOME_SQL as _OUTCOME_SQL
from payfm.features.plan import window_tiles


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def needed_columns(fset: FeatureSet) -> list[str]:
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
            if f.reads_outcome_amount:  # an outcome's own amount, converted at its charge's rate
                for c in OUTCOME_AMOUNT_FIELDS:
                    add(c)
        elif isinstance(f, RequestFeature):
            for c in f.columns:
                add(c)
            if f.kind in ("amount_usd", "amount_usd_log"):
                add("amount_usd")
            if f.kind == "local_hour":
                add("merchant_country")
    return [c for c in cols if c not in ("charge_id", "created")]


def _resolution_us(f: Aggregate) -> int:
    assert f.resolution is not None
    return int(f.resolution.total_seconds()) * 1_000_000


def _bounds(fset: FeatureSet) -> dict[int, list[int]]:
    """Per resolution (us): the tile distances ``k`` whose start ``first_rid(T - k)`` charge windows need."""
    return _bounds_of(fset.aggregates)


def _bounds_of(feats: list[Aggregate]) -> dict[int, list[int]]:
    out: dict[int, set[int]] = {}
    for f in feats:
        if f.source == "charges" and f.window is not None:
            w, o = window_tiles(f)
            ks = out.setdefault(_resolution_us(f), set())
            ks.add(w + o)
            if o:
                ks.add(o)
    return {r: sorted(ks) for r, ks in sorted(out.items())}


def _lo(res: int, k: int) -> str:
    """Column of ``base``: rid of the first charge in tile ``T - k`` or later (``T``: the charge's tile)."""
    return f"lo_{res}_{k}"


def _tile_starts_sql(res: int, pad: int) -> str:
    """Dense table of tiles from ``pad`` tiles before the first charge on; ``first_rid``: charges before."""
    return f"""
    WITH c AS (SELECT ts // {res} AS tile, count(*) AS n FROM base0 GROUP BY ALL),
    g AS (SELECT range AS tile FROM range((SELECT min(tile) FROM c) - {pad}, (SELECT max(tile) FROM c) + 1))
    SELECT g.tile, coalesce(sum(c.n) OVER (ORDER BY g.tile ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                            0)::BIGINT AS first_rid
    FROM g LEFT JOIN c USING (tile)"""


def prepare(con: duckdb.DuckDBPyConnection, fset: FeatureSet) -> int:
    """Materialize ``base`` (charges, row id ``rid`` in (created, charge_id) order, window bounds ``lo_*``)
    and the outcome tables ``ev_<source>`` (the outcome's time, its charge's columns)."""
    cols = ", ".join(_q(c) for c in needed_columns(fset))
    con.execute(
        f"""CREATE OR REPLACE TABLE base0 AS
        SELECT (row_number() OVER (ORDER BY created, charge_id) - 1)::BIGINT AS rid, charge_id,
               epoch_us(created) AS ts{", " + cols if cols else ""}
        FROM charges"""
    )
    joins, los = [], []
    for res, ks in _bounds(fset).items():
        con.execute(f"CREATE OR REPLACE TABLE tiles_{res} AS {_tile_starts_sql(res, max(ks))}")
        for k in ks:
            alias = f"t_{res}_{k}"
            joins.append(f"LEFT JOIN tiles_{res} {alias} ON {alias}.tile = b.ts // {res} - {k}")
            los.append(f", coalesce({alias}.first_rid, 0) AS {_lo(res, k)}")
    con.execute(
        f"""CREATE OR REPLACE TABLE base AS
        SELECT b.*{"".join(los)} FROM base0 b {" ".join(joins)} ORDER BY b.rid"""
    )
    con.execute("DROP TABLE base0")
    for res in _bounds(fset):
        con.execute(f"DROP TABLE tiles_{res}")
    sources = {f.source for f in fset.aggregates if f.source != "charges"}
    money = any(f.reads_outcome_amount for f in fset.aggregates)
    for s in sorted(sources):
        # An outcome's columns are its charge's, but its amount_usd is its own where the set reads it.
        own = f", {OUTCOME_AMOUNT_USD_SQL} AS amount_usd" if money else ""
        con.execute(
            f"""CREATE OR REPLACE TABLE ev_{s} AS
            SELECT c.* EXCLUDE (rid, ts{", amount_usd" if money else ""}){own},
                   epoch_us(o.created) AS ts, o.oid
            FROM ({(_OUTCOME_MONEY_SQL if money else _OUTCOME_SQL)[s]}) o JOIN base c USING (charge_id)"""
        )
    return int(con.execute("SELECT count(*) FROM base").fetchall()[0][0])


def _formula(f: Aggregate, c: str, s: str, q: str, mn: str, mx: str) -> str:
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


class _Windows:
    """The window functions of one query, deduplicated by their SQL text."""

    def __init__(self, partition: str, order: str, filter_clause: bool, prefix: str = "w") -> None:
        self.partition, self.order, self.filter_clause = partition, order, filter_clause
        self.prefix = prefix  # of the aliases: two of them in one query need two
        self.exprs: dict[str, str] = {}

    def add(self, fn: str, arg: str, cond: str, frame: str, modifier: str = "") -> str:
        """Alias of ``fn(arg)`` (``modifier``: DISTINCT, IGNORE NULLS) over the events where ``cond``.

        The condition is a ``FILTER`` clause (faster on ``RANGE`` frames with per-row offsets) or a ``CASE``
        in the argument (a ``FILTER`` clause disables DuckDB's cumulative path: 20x slower on ``CURRENT ROW``
        frames); ``last_value`` takes no ``FILTER``.
        """
        where = ""
        if cond and self.filter_clause and fn != "last_value":
            where = f" FILTER (WHERE {cond})"
        elif cond:
            arg = f"CASE WHEN {cond} THEN {arg} END"
        arg = f"DISTINCT {arg}" if modifier == "DISTINCT" else f"{arg} {modifier}".rstrip()
        expr = f"{fn}({arg}){where} OVER (PARTITION BY {self.partition} ORDER BY {self.order} {frame})"
        return self.exprs.setdefault(expr, f"{self.prefix}{len(self.exprs)}")

    def select(self) -> str:
        return ", ".join(f"{e} AS {a}" for e, a in self.exprs.items())


def _filter_cond(f: Aggregate) -> str:
    """SQL predicate of the aggregate's filter ('' when unfiltered)."""
    if not f.filter:
        return ""
    flt = FILTERS[f.filter]
    return f"{_q(flt.column)} IN ({', '.join(repr(v) for v in flt.values)})"


def _and(*conds: str) -> str:
    return " AND ".join(c for c in conds if c)


def _charge_frame(f: Aggregate) -> str:
    """``RANGE`` frame over ``rid`` of the charges the aggregate covers (strictly before the charge)."""
    if f.window is None:
        return "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING"
    res = _resolution_us(f)
    w, o = window_tiles(f)
    start = f"(rid - {_lo(res, w + o)}) PRECEDING"
    end = "1 PRECEDING" if o == 0 else f"(rid - {_lo(res, o)} + 1) PRECEDING"
    return f"RANGE BETWEEN {start} AND {end}"


def _outcome_frame(f: Aggregate) -> str:
    """``RANGE`` frame over ``ts`` of the outcomes the aggregate covers (their time ``<= t``)."""
    if f.window is None:
        return "RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
    res = _resolution_us(f)
    w, o = window_tiles(f)
    start = f"(ts - (ts // {res} - {w + o}) * {res}) PRECEDING"
    end = "CURRENT ROW" if o == 0 else f"(ts - (ts // {res} - {o}) * {res} + 1) PRECEDING"
    return f"RANGE BETWEEN {start} AND {end}"


def _aggregate_expr(f: Aggregate, win: _Windows, frame: str, cond: str) -> str:
    """SQL value of one aggregate: window functions over ``frame`` (events where ``cond``), its formula."""
    col = _q(f.column) if f.column else ""
    c = f"coalesce({win.add('count', '1', cond, frame)}, 0)"
    if f.agg == "distinct":
        return f"coalesce({win.add('count', col, cond, frame, 'DISTINCT')}, 0)::DOUBLE"
    if f.agg == "last":
        return f"{win.add('last_value', col, cond, frame, 'IGNORE NULLS')}::DOUBLE / 100.0"
    if f.agg == "since_prev":
        return f"(ts - {win.add('max', 'ts', cond, frame)})::DOUBLE / 1e6"
    if f.agg == "since_first":
        return f"(ts - {win.add('min', 'ts', cond, frame)})::DOUBLE / 1e6"
    if f.agg == "first_seen":
        return f"CASE WHEN {c} = 0 THEN 1.0 ELSE 0.0 END"
    s = q = "0"
    mn = mx = "NULL"
    if f.agg in ("sum", "mean", "std"):
        s = f"coalesce({win.add('sum', f'{col}::HUGEINT', cond, frame)}, 0)"
        q = f"coalesce({win.add('sum', f'{col}::HUGEINT * {col}', cond, frame)}, 0)"
    if f.agg == "min":
        mn = win.add("min", col, cond, frame)
    if f.agg == "max":
        mx = win.add("max", col, cond, frame)
    return _formula(f, c, s, q, mn, mx)


class _Prefix:
    """Additive sums (counts, amounts, squares) as differences of per-key prefix sums: no segment tree.

    Column ``a<j>`` is an event's contribution (1, the amount or its square where the filter holds).

    - charges (``outcomes=False``): ``x<j>`` is the sum over the key's charges strictly before the charge (a
      cumulative window in ``rid`` order); the prefix at a bound ``first_rid(T - k)`` is ``i<j>`` (inclusive
      prefix) of the key's last charge with ``rid`` below it;
    - outcomes (``outcomes=True``): ``i<j>`` is the sum over the key's outcomes up to and including their
      time (a ``RANGE`` cumulative: peers at the same time agree); the prefix at time ``t`` (inclusive) or at
      a tile start (exclusive) is that of the key's last outcome before it.

    Each bound is an ``ASOF`` join (alias ``b<n>``) of the key's rows ``c``.
    """

    def __init__(self, outcomes: bool) -> None:
        self.outcomes = outcomes
        self.cols: dict[str, str] = {}  # contribution SQL -> j
        self.lookups: dict[str, str] = {}  # ASOF predicate ({a}: the alias) -> alias

    def col(self, value: str, cond: str) -> str:
        expr = f"CASE WHEN {cond} THEN {value} ELSE 0 END" if cond else value
        return self.cols.setdefault(expr, str(len(self.cols)))

    def at(self, pred: str, j: str) -> str:
        """Prefix sum ``j`` at the key's last row ``{a}`` satisfying ``pred``."""
        alias = self.lookups.setdefault(pred, f"b{len(self.lookups)}")
        return f"coalesce({alias}.i{j}, 0)"

    def _before_tile(self, res: int, k: int, j: str) -> str:
        """Prefix sum ``j`` of the events before tile ``T - k``."""
        if self.outcomes:
            return self.at(f"{{a}}.ts < (e.ts // {res} - {k}) * {res}", j)
        return self.at(f"{{a}}.rid < e.{_lo(res, k)}", j)

    def window(self, f: Aggregate, value: str, cond: str) -> str:
        """Sum of ``value`` over the events the aggregate covers."""
        j = self.col(value, cond)
        now = self.at("{a}.ts <= e.ts", j) if self.outcomes else f"coalesce(e.x{j}, 0)"
        if f.window is None:
            return now
        res = _resolution_us(f)
        w, o = window_tiles(f)
        end = now if o == 0 else self._before_tile(res, o, j)
        return f"({end} - {self._before_tile(res, w + o, j)})"

    def joins(self, keys: tuple[str, ...]) -> str:
        on = " AND ".join(f"{{a}}.{_q(k)} = e.{_q(k)}" for k in keys)
        return "".join(
            f" ASOF LEFT JOIN c {a} ON {on.format(a=a)} AND {pred.format(a=a)}"
            for pred, a in self.lookups.items()
        )


def _prefix_expr(f: Aggregate, pre: _Prefix, cond: str) -> str:
    """SQL value of a count, sum, mean, std or first_seen aggregate from prefix sums."""
    col = _q(f.column) if f.column else ""
    c = pre.window(f, "1", cond)
    s = q = "0"
    if f.column:
        s = pre.window(f, f"coalesce({col}, 0)::HUGEINT", cond)
        q = pre.window(f, f"coalesce({col}, 0)::HUGEINT * coalesce({col}, 0)", cond)
    if f.agg == "first_seen":
        return f"CASE WHEN {c} = 0 THEN 1.0 ELSE 0.0 END"
    return _formula(f, c, s, q, "NULL", "NULL")


def _charges_sql(entity: str, feats: list[Aggregate]) -> str:
    """Charge-source aggregates of one entity in one query sorted by (key, rid).

    Counts and sums are prefix differences (:class:`_Prefix`); distinct counts, min/max, last and times are
    window functions over ``RANGE`` frames of ``rid``.
    """
    keys = ENTITIES[entity]
    kcols = ", ".join(_q(k) for k in keys)
    key_ok = " AND ".join(f"{_q(k)} IS NOT NULL" for k in keys)
    win = _Windows(kcols, "rid", filter_clause=True)
    pre = _Prefix(outcomes=False)
    outs = []
    for f in feats:
        cond = _filter_cond(f)
        if f.agg in _PREFIX_AGGS:
            expr = _prefix_expr(f, pre, cond)
        else:
            expr = _aggregate_expr(f, win, _charge_frame(f), cond)
        outs.append(f"{expr} AS {_q(f.name)}")
    frame = f"OVER (PARTITION BY {kcols} ORDER BY rid ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
    adds = "".join(f", {v} AS a{j}" for v, j in pre.cols.items())
    cums = "".join(f", sum(a{j}) {frame} AS x{j}" for j in pre.cols.values())
    incl = ", ".join(f"coalesce(x{j}, 0) + a{j} AS i{j}" for j in pre.cols.values())
    bounds = "".join(f", {_lo(r, k)}" for r, ks in _bounds_of(feats).items() for k in ks)
    wins = f", {win.select()}" if win.exprs else ""
    joins = pre.joins(keys)
    if not pre.cols:
        return f"""
    WITH e AS (SELECT rid, ts{wins} FROM base WHERE {key_ok})
    SELECT rid, {", ".join(outs)} FROM e"""
    return f"""
    WITH v AS (SELECT rid, ts, {kcols}{bounds}{adds}{wins} FROM base WHERE {key_ok}),
    e AS MATERIALIZED (SELECT *{cums} FROM v),
    c AS MATERIALIZED (SELECT rid, {kcols}{", " + incl if incl else ""} FROM e)
    SELECT e.rid, {", ".join(outs)} FROM e{joins}"""


def _outcomes_sql(entity: str, feats: list[Aggregate]) -> str:
    """Every outcome-source aggregate of one entity: the charges (query points, ``src`` NULL) and the outcome
    events of every source in one union, one sort by (key, ts)."""
    keys = ENTITIES[entity]
    kcols = ", ".join(_q(k) for k in keys)
    key_ok = " AND ".join(f"{_q(k)} IS NOT NULL" for k in keys)
    cols: list[str] = []
    for f in feats:
        for c in (f.column, FILTERS[f.filter].column if f.filter else None):
            if c and c not in cols and c not in keys:
                cols.append(c)
    vals = "".join(f", {_q(c)}" for c in cols)
    nulls = "".join(f", NULL AS {_q(c)}" for c in cols)
    union = [
        f"SELECT rid, {kcols}, ts, NULL::VARCHAR AS oid, NULL::VARCHAR AS src{nulls} FROM base WHERE {key_ok}"
    ]
    for s in sorted({f.source for f in feats}):
        union.append(f"SELECT NULL::BIGINT, {kcols}, ts, oid, '{s}'{vals} FROM ev_{s} WHERE {key_ok}")
    win = _Windows(kcols, "ts", filter_clause=False)
    # `last` of outcomes of one instant: the one of the greatest id, as the online paths apply them (warm,
    # replay, parity: by time, then id); a charge (no id) comes after the outcomes of its instant
    by_id = _Windows(kcols, "ts, oid NULLS LAST", filter_clause=False, prefix="v")
    outs = []
    for f in feats:
        cond = _and(f"src = '{f.source}'", _filter_cond(f))
        w = by_id if f.agg == "last" else win
        outs.append(f"{_aggregate_expr(f, w, _outcome_frame(f), cond)} AS {_q(f.name)}")
    windows = ", ".join(x.select() for x in (win, by_id) if x.exprs)
    return f"""
    WITH u AS ({" UNION ALL ".join(union)}),
    a AS (SELECT rid, ts, {windows} FROM u)
    SELECT rid, {", ".join(outs)} FROM a WHERE rid IS NOT NULL"""


def _outcome_prefix_sql(entity: str, feats: list[Aggregate]) -> str:
    """Outcome counts and sums of one entity: prefix sums over its outcome events (all sources in one union,
    sorted by (key, time)), looked up for each charge by ``ASOF`` joins (:class:`_Prefix`)."""
    keys = ENTITIES[entity]
    kcols = ", ".join(_q(k) for k in keys)
    key_ok = " AND ".join(f"{_q(k)} IS NOT NULL" for k in keys)
    pre = _Prefix(outcomes=True)
    outs = []
    for f in feats:
        cond = _and(f"src = '{f.source}'", _filter_cond(f))
        outs.append(f"{_prefix_expr(f, pre, cond)} AS {_q(f.name)}")
    union = " UNION ALL ".join(
        f"SELECT *, '{s}' AS src FROM ev_{s} WHERE {key_ok}" for s in sorted({f.source for f in feats})
    )
    frame = f"OVER (PARTITION BY {kcols} ORDER BY ts RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
    adds = ", ".join(f"sum({v}) {frame} AS i{j}" for v, j in pre.cols.items())
    return f"""
    WITH c AS MATERIALIZED (SELECT {kcols}, ts, {adds} FROM ({union})),
    e AS (SELECT rid, ts, {kcols} FROM base WHERE {key_ok})
    SELECT e.rid, {", ".join(outs)} FROM e{pre.joins(keys)}"""


_PREFIX_AGGS = ("count", "sum", "mean", "std", "first_seen")


def _queries(fset: FeatureSet) -> list[str]:
    """The backfill's queries, per entity: its charges' prefix sums (counts, sums), its charges' other window
    functions (distinct counts, min/max, last, times), its outcomes. Narrow plans run faster."""
    by: dict[tuple[str, str], list[Aggregate]] = {}
    for f in fset.aggregates:
        kind = ("charges" if f.source == "charges" else "outcomes") + (
            "_prefix" if f.agg in _PREFIX_AGGS else ""
        )
        by.setdefault((kind, f.entity), []).append(f)
    build = {
        "charges_prefix": _charges_sql,
        "charges": _charges_sql,
        "outcomes_prefix": _outcome_prefix_sql,
        "outcomes": _outcomes_sql,
    }
    return [build[kind](entity, feats) for (kind, entity), feats in by.items()]


def _scatter(n: int, rid: np.ndarray, values: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    out = np.full(n, np.nan)
    valid = np.zeros(n, dtype=bool)
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    vv = arr.to_numpy(zero_copy_only=False)
    ok = arr.is_valid().to_numpy(zero_copy_only=False)
    out[rid[ok]] = vv[ok]
    valid[rid[ok]] = True
    return out, valid


def _materialize(
    con: duckdb.DuckDBPyConnection,
    fset: FeatureSet,
    progress: Callable[[int, int], None] | None,
    workers: int = 2,
) -> list[str]:
    """Run every aggregate query into a DuckDB table (spilled to disk beyond the memory limit).

    The queries are independent (one per entity and kind) and a single DuckDB query keeps only about one core
    busy here, so ``workers`` of them run at once, each on its own cursor of the same database.
    """
    queries = _queries(fset)
    names = [f"feature_part_{k}" for k in range(len(queries))]

    def run(job: tuple[str, str]) -> None:
        name, sql = job
        cur = con.cursor()
        try:
            cur.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM ({sql}) ORDER BY rid")
        finally:
            cur.close()

    # The longest queries first, so the two workers finish together (SQL length is a fair proxy).
    jobs = sorted(zip(names, queries, strict=True), key=lambda j: -len(j[1]))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, _ in enumerate(pool.map(run, jobs), start=1):
            if progress:
                progress(done, len(queries) + 1)
    return names


def sql_columns(
    con: duckdb.DuckDBPyConnection,
    feats: list[Aggregate],
    progress: Callable[[int, int], None] | None = None,
    workers: int = 2,
) -> Iterator[tuple[str, np.ndarray]]:
    """(name, values in rid order, NaN where missing) of each aggregate of ``feats``, computed in SQL."""
    fset = FeatureSet("sql", tuple(feats))
    n = prepare(con, fset)
    tables = _materialize(con, fset, progress, workers)
    for name in tables:
        res = con.sql(f"SELECT * FROM {name}").to_arrow_table()
        rid = res["rid"].to_numpy()
        for col in res.column_names[1:]:
            data, _ = _scatter(n, rid, res[col])
            yield col, data
        del res
        con.execute(f"DROP TABLE {name}")
