"""The backfill as an Apache Spark plan: the same features as the columnar and DuckDB engines (tested equal),
for an event log too large for one machine.

:func:`plan` turns the event log's four tables, as Spark DataFrames, into one DataFrame of features per charge
(``charge_id``, ``created``, then the set's features in order). A cluster job reads its own tables (Parquet on
shared storage, a catalog) and writes the result where it likes; :func:`backfill_chunks` runs the plan on a
workspace (``payfm features backfill --engine spark``) and gives the rows in ``(created, charge_id)`` order
for the workspace's file.

The plan is window functions over one union of events, with no join but the one of outcomes to their charges:

- every charge is a query point and a charge event; every outcome (counted fraud dispute, early fraud warning,
  refund) is an outcome event carrying its charge's columns (and its own ``amount_usd`` where the set reads
  it), ``src`` naming its source;
- an entity's aggregates are window functions partitioned by its key columns. A row whose key has a null
  part is alone in its partition (``_solo``: its own id), and its features of that entity are null, as in the
  other engines;
- "strictly before the charge" is a ``ROWS`` frame ending one row before, ordered by ``(ts, charge_id)``;
  outcomes count once their time is ``<= t``: a ``RANGE`` frame ending at the current row ordered by ``ts``;
- a window of ``W`` tiles ending ``O`` tiles back (tiles of the aggregate's resolution) is a ``RANGE`` frame
  over the tile number (``[T - W - O, T - O - 1]``), plus, for ``O = 0``, the charge's own tile up to the
  charge (a frame within the partition ``(key, tile)``). Counts and sums add over the two parts, min and max
  take the least and greatest, distinct counts the size of the union of the two sets;
- sums are exact (``DECIMAL(38, 0)``; squares too) and the formulas are those of the other engines.

Spark runs with ANSI SQL on: every division here is guarded, and an overflow fails rather than wraps.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from payfm.errors import ConfigError
from payfm.features.definitions import (
    ENTITIES,
    FILTERS,
    REVIEW_DISPUTE_PREFIX,
    Aggregate,
    Derived,
    FeatureSet,
    RequestFeature,
)
from payfm.features.offline_sql import needed_columns
from payfm.features.plan import window_tiles
from payfm.features.request import COUNTRY_UTC_OFFSET_H

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from payfm.events.workspace import Workspace

INSTALL_HINT = "The spark engine needs PySpark and Java 17 or later: pip install 'payfm[spark]'."
_TABLES = ("charges", "disputes", "early_fraud_warnings", "refunds")
_EXACT = "DECIMAL(38,0)"
# Spark's JVM logs errors only, one line each (its default is every warning, and a banner).
_LOG4J = """rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = spark: %p %c{1}: %m%n
logger.repl.name = org.apache.spark.repl.Main
logger.repl.level = error
"""


def _require() -> None:
    """PySpark importable, or a ConfigError saying how to install it."""
    try:
        import pyspark.sql  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None


def session(master: str = "local[*]", memory: str = "6g", local_dir: str | None = None) -> SparkSession:
    """A Spark session for the backfill: UTC, ANSI SQL, Parquet timestamps as microseconds, quiet logs.

    ``master`` and ``memory`` (the driver's: in local mode the whole job's) apply when this process starts
    the session; an existing session is reused as it is.
    """
    _require()
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # (the JVM warns of a loopback hostname otherwise)
    # The JVM reads log4j2.properties from SPARK_CONF_DIR (where a user has set none of their own).
    if "SPARK_CONF_DIR" not in os.environ:
        conf_dir = Path(tempfile.gettempdir()) / f"payfm-spark-conf-{os.getuid()}"
        conf_dir.mkdir(exist_ok=True)
        if not (conf_dir / "log4j2.properties").exists():
            tmp = conf_dir / f".log4j2.properties.{os.getpid()}"
            tmp.write_text(_LOG4J)
            os.replace(tmp, conf_dir / "log4j2.properties")
        os.environ["SPARK_CONF_DIR"] = str(conf_dir)
    builder = (
        SparkSession.builder.master(master)
        .appName("payfm backfill")
        .config("spark.driver.memory", memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.ansi.enabled", "true")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if local_dir:
        builder = builder.config("spark.local.dir", local_dir)
    # payfm says a failed job in one line (:func:`failure`); pyspark would also log each as JSON.
    for name in ("DataFrameQueryContextLogger", "SQLQueryContextLogger"):
        logging.getLogger(name).disabled = True
    try:
        with warnings.catch_warnings():  # (pyspark warns of pandas 3, which this plan does not use)
            warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
            spark = builder.getOrCreate()
    except Exception as e:  # no Java, a Java too old, a master that does not answer
        said = _first_line(e)
        raise ConfigError(f"Spark did not start on master {master!r}: {said}. {INSTALL_HINT}") from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def failure(e: BaseException) -> ConfigError | None:
    """A one-line error for a failed Spark job (an analysis error, an executor lost, out of memory), or None
    when ``e`` is not Spark's."""
    try:
        from py4j.protocol import Py4JError
        from pyspark.errors import PySparkException
    except ImportError:
        return None
    if not isinstance(e, PySparkException | Py4JError):
        return None
    return ConfigError(f"The Spark backfill failed: {_first_line(e)}")


def _keys_ok(keys: tuple[str, ...]) -> Column:
    from pyspark.sql import functions as F

    ok = F.col(keys[0]).isNotNull()
    for k in keys[1:]:
        ok = ok & F.col(k).isNotNull()
    return ok


def _tile(res: int) -> Column:
    """The tile number ``floor(ts / res)`` in exact integers."""
    from pyspark.sql import functions as F

    return F.expr(f"(ts - pmod(ts, {res})) div {res}")


def _res_us(f: Aggregate) -> int:
    assert f.resolution is not None
    return int(f.resolution.total_seconds()) * 1_000_000


def _events(tables: Mapping[str, DataFrame], fset: FeatureSet) -> DataFrame:
    """One union of events: each charge (``src`` null, ``cid`` its id) and each outcome the set reads
    (``src`` its source, ``cid`` null), with the charge columns the set needs and ``ts`` in microseconds."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    cols = needed_columns(fset)
    charges = tables["charges"].select("charge_id", F.unix_micros("created").alias("ts"), *cols)
    union = charges.select(
        F.col("charge_id").alias("cid"),
        F.lit(None).cast("string").alias("src"),
        F.lit(None).cast("string").alias("oid"),
        "ts",
        *cols,
    )
    money = any(f.reads_outcome_amount for f in fset.aggregates)
    for source in sorted({f.source for f in fset.aggregates if f.source != "charges"}):
        if source == "fraud_disputes":  # once per charge: definitions.COUNTED_FRAUD_DISPUTES_SQL
            order = Window.partitionBy("charge_id").orderBy(
                F.col("dispute_id").startswith(REVIEW_DISPUTE_PREFIX).desc(), "created", "dispute_id"
            )
            raw = tables["disputes"].where(F.col("reason") == "fraudulent")
            raw = raw.withColumn("_n", F.row_number().over(order)).where(F.col("_n") == 1)
            o = raw.select("charge_id", "created", F.col("dispute_id").alias("oid"), "amount", "currency")
        elif source == "efws":
            o = tables["early_fraud_warnings"].select(
                "charge_id",
                "created",
                F.col("efw_id").alias("oid"),
                F.lit(None).cast("long").alias("amount"),
                F.lit(None).cast("string").alias("currency"),
            )
        else:
            o = tables["refunds"].select(
                "charge_id", "created", F.col("refund_id").alias("oid"), "amount", "currency"
            )
        o = o.select(
            "charge_id",
            "oid",
            F.unix_micros("created").alias("ts"),
            F.col("amount").alias("_o_amount"),
            F.col("currency").alias("_o_currency"),
        )
        c = charges.drop("ts")
        joined = o.join(c, "charge_id")
        values = []
        for col in cols:
            if col == "amount_usd" and money:  # definitions.OUTCOME_AMOUNT_USD_SQL
                own = F.expr(f"CAST(CAST(_o_amount AS {_EXACT}) * amount_usd div amount AS BIGINT)")
                use = F.col("_o_amount").isNotNull() & (F.col("amount") > 0)
                use = use & (F.col("_o_currency") == F.col("currency"))
                values.append(F.when(use, own).otherwise(F.col("amount_usd")).alias(col))
            else:
                values.append(F.col(col))
        union = union.unionByName(
            joined.select(
                F.lit(None).cast("string").alias("cid"),
                F.lit(source).alias("src"),
                "oid",
                "ts",
                *values,
            )
        )
    return union


class _Entity:
    """The window specifications of one entity's aggregates over the union of events."""

    def __init__(self, entity: str) -> None:
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        self.keys = ENTITIES[entity]
        self.ok = _keys_ok(self.keys)
        solo = F.when(~self.ok, F.coalesce(F.col("cid"), F.concat(F.col("src"), F.lit(":"), F.col("oid"))))
        self.solo = f"_solo_{entity}"
        self.solo_expr = solo
        self.part = [*self.keys, self.solo]
        self.W = Window

    def before(self) -> Any:
        """The charges strictly before the charge (all time), in ``(ts, cid)`` order."""
        W = self.W
        return W.partitionBy(*self.part).orderBy("ts", "cid").rowsBetween(W.unboundedPreceding, -1)

    def up_to(self, by_oid: bool = False) -> Any:
        """The outcomes at or before the charge's time (all time). Ordered by ``(ts, cid)`` as :meth:`before`
        (one sort serves both): an outcome's ``cid`` is null and sorts first, so the outcomes of the
        charge's instant are in its frame. ``by_oid``: ordered by ``(ts, oid)``, for ``last``."""
        from pyspark.sql import Window as W
        from pyspark.sql import functions as F

        order = ["ts", F.col("oid").asc_nulls_last()] if by_oid else ["ts", "cid"]
        return W.partitionBy(*self.part).orderBy(*order).rangeBetween(W.unboundedPreceding, W.currentRow)

    def tiles(self, res: int, first: int, last: int) -> Any:
        """The events in tiles ``T - first .. T - last`` (``T``: the row's tile)."""
        return self.W.partitionBy(*self.part).orderBy(f"_tile_{res}").rangeBetween(-first, -last)

    def own_tile(self, res: int, outcomes: bool) -> Any:
        """The events of the row's own tile before the charge (charges) or at or before its time (outcomes),
        in ``(ts, cid)`` order as :meth:`up_to`."""
        W = self.W
        spec = W.partitionBy(*self.part, f"_tile_{res}").orderBy("ts", "cid")
        if outcomes:
            return spec.rangeBetween(W.unboundedPreceding, W.currentRow)
        return spec.rowsBetween(W.unboundedPreceding, -1)


def _cond(f: Aggregate) -> Column:
    """The events an aggregate reads: its source, and its filter."""
    from pyspark.sql import functions as F

    c = F.col("src").isNull() if f.source == "charges" else (F.col("src") == f.source)
    if f.filter:
        flt = FILTERS[f.filter]
        c = c & F.col(flt.column).isin(list(flt.values))
    return c


def _parts(f: Aggregate, ent: _Entity) -> list[Any]:
    """The window frames whose union is the aggregate's window."""
    outcomes = f.source != "charges"
    if f.window is None:
        return [ent.up_to(by_oid=f.agg == "last") if outcomes else ent.before()]
    res = _res_us(f)
    w, o = window_tiles(f)
    if o:
        return [ent.tiles(res, w + o, o + 1)]
    return [ent.tiles(res, w, 1), ent.own_tile(res, outcomes)]


def _aggregate(f: Aggregate, ent: _Entity) -> Column:
    """The aggregate's value (null where the charge's key has a null part)."""
    from pyspark.sql import functions as F

    cond = _cond(f)
    parts = _parts(f, ent)
    col = F.col(f.column) if f.column else None

    def over(fn: Callable[[Column], Column], value: Column, combine: str = "add") -> Column:
        vals = [fn(F.when(cond, value)).over(p) for p in parts]
        if len(vals) == 1:
            return vals[0]
        if combine == "add":
            return F.coalesce(vals[0], F.lit(0)) + F.coalesce(vals[1], F.lit(0))
        return F.least(*vals) if combine == "least" else F.greatest(*vals)

    count = over(F.count, F.lit(1))
    agg = f.agg
    if agg in ("sum", "mean", "std"):
        assert col is not None
        x = F.coalesce(col, F.lit(0)).cast(_EXACT)
        s = F.coalesce(over(F.sum, x), F.lit(0).cast(_EXACT))
        if agg == "sum":
            value = s.cast("double") / 100.0
        elif agg == "mean":
            value = F.when(count > 0, s.cast("double") / count.cast("double") / 100.0)
        else:
            q = F.coalesce(over(F.sum, x * x), F.lit(0).cast(_EXACT))
            n = count.cast(_EXACT)
            var = (n * q - s * s).cast("double") / (n * (n - 1)).cast("double")
            value = F.when(count > 1, F.sqrt(var) / 100.0)
    elif agg == "count":
        value = count.cast("double")
    elif agg == "first_seen":
        value = F.when(count == 0, F.lit(1.0)).otherwise(F.lit(0.0))
    elif agg in ("min", "max"):
        assert col is not None
        fn = F.min if agg == "min" else F.max
        value = over(fn, col, "least" if agg == "min" else "greatest").cast("double") / 100.0
    elif agg == "distinct":
        assert col is not None
        sets = [F.coalesce(F.collect_set(F.when(cond, col)).over(p), F.array()) for p in parts]
        union = sets[0] if len(sets) == 1 else F.array_union(sets[0], sets[1])
        value = F.size(union).cast("double")
    elif agg == "last":
        assert col is not None
        value = F.last(F.when(cond, col), ignorenulls=True).over(parts[0]).cast("double") / 100.0
    elif agg in ("since_prev", "since_first"):
        fn = F.max if agg == "since_prev" else F.min
        value = (F.col("ts") - fn(F.when(cond, F.col("ts"))).over(parts[0])).cast("double") / 1e6
    else:
        raise AssertionError(agg)
    return F.when(ent.ok, value)


def _request(f: RequestFeature) -> Column:
    """A request-time feature; the same rules as payfm.features.request and the other engines."""
    from pyspark.sql import functions as F

    if f.kind == "amount_usd":
        return F.col("amount_usd").cast("double") / 100.0
    if f.kind == "amount_usd_log":
        return F.log(F.col("amount_usd").cast("double") / 100.0 + 1.0)
    if f.kind == "local_hour":
        pairs = [x for k, v in COUNTRY_UTC_OFFSET_H.items() for x in (F.lit(k), F.lit(v))]
        offset = F.coalesce(F.try_element_at(F.create_map(*pairs), F.col("merchant_country")), F.lit(0))
        return F.pmod(F.expr("ts div 3600000000") + offset, F.lit(24)).cast("double")
    if f.kind == "mismatch":
        return (F.col(f.columns[0]) != F.col(f.columns[1])).cast("double")
    if f.kind == "is":
        return F.coalesce(F.col(f.columns[0]).isin(list(f.values)), F.lit(False)).cast("double")
    if f.kind == "missing":
        return F.col(f.columns[0]).isNull().cast("double")
    if f.kind == "since":
        return (F.col("ts") - F.unix_micros(F.col(f.columns[0]))).cast("double") / 1e6
    raise AssertionError(f.kind)


def _derived(f: Derived, inner: Mapping[str, str]) -> Column:
    """A derived feature (its inputs by their internal names); the rules of payfm.features.request.derive."""
    from pyspark.sql import functions as F

    a, b = F.col(inner[f.inputs[0]]), F.col(inner[f.inputs[1]])
    if f.op == "ratio":
        return F.when(b != 0.0, a / b)
    if f.op == "diff":
        return a - b
    std = F.col(inner[f.inputs[2]])
    return F.when(std != 0.0, (a - b) / std)


def plan(tables: Mapping[str, DataFrame], fset: FeatureSet) -> DataFrame:
    """Every feature of ``fset`` for every charge as of just before it: ``charge_id``, ``created`` and one
    double column per feature (null where missing), in no particular row order.

    ``tables``: the event log's ``charges``, ``disputes``, ``early_fraud_warnings`` and ``refunds`` with the
    workspace's schemas (docs/events.md), e.g. ``spark.read.parquet(...)`` of a workspace's files.
    """
    from pyspark.sql import functions as F

    missing = [t for t in _TABLES if t not in tables]
    if missing:
        raise ConfigError(f"The Spark backfill needs the tables {', '.join(_TABLES)}. Missing: {missing}.")
    events = _events(tables, fset)
    resolutions = sorted({_res_us(f) for f in fset.aggregates if f.window is not None})
    events = events.select("*", *[_tile(r).alias(f"_tile_{r}") for r in resolutions])
    entities: dict[str, _Entity] = {}
    for a in fset.aggregates:
        if a.entity not in entities:
            entities[a.entity] = _Entity(a.entity)
    events = events.select("*", *[e.solo_expr.alias(e.solo) for e in entities.values()])
    # Features are computed under internal names (a feature may be named like a column: `amount_usd`).
    inner = {name: f"_f{i}" for i, name in enumerate(fset.names)}
    feats = [_aggregate(f, entities[f.entity]).alias(inner[f.name]) for f in fset.aggregates]
    rows = events.select("cid", "ts", *needed_columns(fset), *feats).where(F.col("src").isNull())
    requests = [_request(f).alias(inner[f.name]) for f in fset.features if isinstance(f, RequestFeature)]
    rows = rows.select("*", *requests)
    for d in fset.features:
        if isinstance(d, Derived):
            rows = rows.withColumn(inner[d.name], _derived(d, inner))
    created = F.timestamp_micros(F.col("ts")).alias("created")
    named = [F.col(inner[n]).cast("double").alias(n) for n in fset.names]
    return rows.select(F.col("cid").alias("charge_id"), created, *named)


def read_workspace(spark: SparkSession, ws: Workspace) -> dict[str, DataFrame]:
    """The workspace's event log tables as DataFrames over its Parquet files (an empty table as an empty
    DataFrame of its schema)."""
    from payfm.events.schema import SCHEMAS

    out = {}
    for t in _TABLES:
        files = [str(p) for p in ws.files(t)]
        if files:
            out[t] = spark.read.parquet(*files)
        else:
            out[t] = spark.createDataFrame(SCHEMAS[t].empty_table())
    return out


def backfill_chunks(
    ws: Workspace,
    fset: FeatureSet,
    chunk_rows: int,
    progress: Callable[[int, int], None] | None,
    master: str,
    memory: str,
    scratch: Path,
) -> Iterator[pa.Table]:
    """The backfill of the workspace by Spark, as tables of at most ``chunk_rows`` rows in
    ``(created, charge_id)`` order with the other engines' schema. Spark writes the sorted rows under
    ``scratch`` (it must be a folder every executor can write and this process read); they are read back
    one file at a time."""
    # (Spark's own scratch stays in its default folder: a session outlives this backfill in a process that
    # runs another, and a folder removed with this one's would fail that one's jobs.)
    spark = session(master, memory)
    total = 3
    if progress:
        progress(1, total)
    stage = scratch / "spark-out"
    try:
        result = plan(read_workspace(spark, ws), fset).orderBy("created", "charge_id")
        result.write.mode("overwrite").parquet(str(stage))
    except Exception as e:
        said = failure(e)
        if said is None:
            raise
        raise said from None
    if progress:
        progress(2, total)
    yield from _read_back(stage, fset, chunk_rows)
    shutil.rmtree(stage, ignore_errors=True)
    if progress:
        progress(3, total)


def _read_back(stage: Path, fset: FeatureSet, chunk_rows: int) -> Iterator[pa.Table]:
    """The sorted rows Spark wrote (part files in order), as tables of ``chunk_rows`` rows (the last fewer;
    one empty table when there are none) with the other engines' schema."""
    schema = pa.schema(
        [
            pa.field("charge_id", pa.string()),
            pa.field("created", pa.timestamp("us", tz="UTC")),
            *[pa.field(n, pa.float64()) for n in fset.names],
        ]
    )
    pending: list[pa.RecordBatch] = []
    held = 0
    for path in sorted(glob.glob(str(stage / "part-*.parquet"))):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=min(chunk_rows, 65_536)):
            pending.extend(pa.Table.from_batches([batch]).select(schema.names).cast(schema).to_batches())
            held += batch.num_rows
            while held >= chunk_rows:
                chunk = pa.Table.from_batches(pending, schema=schema)
                yield chunk.slice(0, chunk_rows)
                rest = chunk.slice(chunk_rows)
                pending, held = rest.to_batches(), rest.num_rows
    if held or not pending:
        yield pa.Table.from_batches(pending, schema=schema)
