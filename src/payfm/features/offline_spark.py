"""The backfill as an Apache Spark plan: the same features as the columnar and DuckDB engines (tested equal),
for an event log too large for one machine.

:func:`plan` turns the event log's four tables, as Spark DataFrames, into one DataFrame of features per charge
(``charge_id``, ``created``, then the set's features in order). A cluster job reads its own tables (Parquet on
shared storage, a catalog) and writes the result where it likes; :func:`backfill_chunks` runs the plan on a
workspace (``payfm features backfill --engine spark``) and gives the rows in ``(created, charge_id)`` order
for the workspace's file.

The plan is window functions over one union of events (persisted), one pass per entity over a projection of
it to the columns that entity reads, and a join of the entities' features by charge:

- every charge is a query point and a charge event; every outcome (counted fraud dispute, early fraud warning,
  refund) is an outcome event carrying its charge's columns (and its own ``amount_usd`` where the set reads
  it), ``src`` naming its source;
- an entity's aggregates are window functions partitioned by its key columns. A row whose key has a null
  part is alone in its partition (``_solo``: its own id), and its features of that entity are null, as in the
  other engines;
- "strictly before the charge" is a ``ROWS`` frame ending one row before, ordered by ``(ts, charge_id)``;
  outcomes count once their time is ``<= t``: a ``RANGE`` frame ending at the current row in the same order
  (an outcome's ``charge_id`` is null and sorts first among the events of its instant);
- a count or sum over a window of ``W`` tiles ending ``O`` tiles back (tiles of the aggregate's resolution:
  ``[T - W - O, T - O - 1]``, plus, for ``O = 0``, the charge's own tile up to the charge) is the difference
  of two growing frames: the events before the charge (or in tiles up to ``T - O - 1``) less those in tiles
  up to ``T - W - O - 1``. Spark adds to a growing frame row by row; a sliding frame it aggregates again
  whenever the frame moves;
- min, max and distinct counts use the sliding frame over the tile number, plus for ``O = 0`` the charge's
  own tile (a frame within the partition ``(key, tile)``): the least or greatest of the two, or the size of
  the union of the two sets;
- sums are exact (``DECIMAL(38, 0)``; squares too) and the formulas are those of the other engines.

Spark runs with ANSI SQL on: every division here is guarded, and an overflow fails rather than wraps.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

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
    import duckdb
    from pyspark.sql import Column, DataFrame, SparkSession

    from payfm.events.workspace import Workspace

INSTALL_HINT = "The spark engine needs PySpark and Java 17 or later: pip install 'payfm[spark]'."
_TABLES = ("charges", "disputes", "early_fraud_warnings", "refunds")
_EXACT = "DECIMAL(38,0)"
# Spark's JVM logs errors only (its default is every warning, and a banner), each in one line: without its
# Java stack trace (payfm's own message then names the cause).
_LOG4J = """rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = spark: %p %c{1}: %m%n
appender.console.layout.alwaysWriteExceptions = false
logger.repl.name = org.apache.spark.repl.Main
logger.repl.level = error
"""


# The master URLs Spark takes (docs: "Master URLs"); another fails inside the JVM's launcher, with its stack
# trace and a gateway error that names no cause.
_MASTER = re.compile(
    r"local(\[(\*|[1-9][0-9]*)(,[0-9]+)?\])?|local-cluster\[[0-9]+, *[0-9]+, *[0-9]+\]|yarn"
    r"|(spark|k8s)://\S+"
)


def check_master(master: str) -> str:
    """``master`` when it is a Spark master URL, or a :class:`ConfigError` naming ``--spark-master``.

    >>> check_master("local[2]")
    'local[2]'
    """
    if not isinstance(master, str) or not _MASTER.fullmatch(master):
        raise ConfigError(
            "--spark-master must be a Spark master URL: local, local[N], local[*], spark://HOST:PORT, "
            f"yarn or k8s://HOST:PORT. Got {master!r}."
        )
    return master


def _require() -> None:
    """PySpark importable, or a ConfigError saying how to install it."""
    try:
        import pyspark.sql  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None


def session(master: str = "local[*]", memory: str = "6g") -> SparkSession:
    """A Spark session for the backfill: UTC, ANSI SQL, Parquet timestamps as microseconds, quiet logs.

    ``master`` and ``memory`` (the driver's: in local mode the whole job's) apply when this process starts
    the session; an existing session is reused as it is.
    """
    check_master(master)
    _require()
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # (the JVM warns of a loopback hostname otherwise)
    # The JVM reads log4j2.properties from SPARK_CONF_DIR (where a user has set none of their own): a folder
    # of this process's own (mkdtemp: mode 0700, a new name), since Spark's launcher also runs the folder's
    # spark-env.sh, so a folder of a predictable name in /tmp would let another local user plant one.
    if "SPARK_CONF_DIR" not in os.environ:
        conf_dir = Path(tempfile.mkdtemp(prefix="payfm-spark-conf-"))
        atexit.register(shutil.rmtree, conf_dir, True)
        (conf_dir / "log4j2.properties").write_text(_LOG4J)
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
        # (a workspace's table is a file a day: Spark would list more than 32 paths with a job of its own)
        .config("spark.sql.sources.parallelPartitionDiscovery.threshold", "100000")
    )
    # payfm says a failed job in one line (:func:`failure`); pyspark would also log each as JSON.
    for name in ("DataFrameQueryContextLogger", "SQLQueryContextLogger"):
        logging.getLogger(name).disabled = True
    try:
        with warnings.catch_warnings():  # (pyspark warns of pandas 3, which this plan does not use)
            warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
            spark = builder.getOrCreate()
    except Exception as e:  # no Java, a Java too old, a master that does not answer
        said = (_java_cause(e) or _first_line(e)).rstrip(". ")
        # (the hint only where it can be the cause: PySpark imported, so a Java missing)
        hint = f" {INSTALL_HINT}" if shutil.which("java") is None and not os.environ.get("JAVA_HOME") else ""
        if "stopped SparkContext" in said and not master.startswith("local"):
            hint += (
                " A master that does not answer stops the application: check that it runs at that address."
            )
        raise ConfigError(f"Spark did not start on master {master!r}: {said}.{hint}") from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _first_line(e: BaseException) -> str:
    try:
        text = str(e).strip()
    except Exception:  # (a Java exception whose JVM has gone cannot say itself)
        text = ""
    return text.splitlines()[0] if text else type(e).__name__


def _java_cause(e: BaseException) -> str | None:
    """What a Java exception PySpark did not translate says (``Py4JJavaError``: its own first line is only "An
    error occurred while calling o43.parquet."): the first exception of its chain of causes that is not
    Spark's "Job aborted due to stage failure" wrapper (the innermost one otherwise), as ``class: message``,
    its first line; None when ``e`` carries no Java exception."""
    try:
        chain = [e.java_exception]  # type: ignore[attr-defined]
        while len(chain) < 20 and chain[-1].getCause() is not None:  # (a cycle of causes would loop)
            chain.append(chain[-1].getCause())
        said = [str(j.toString()).strip() for j in chain]
    except Exception:
        return None
    specific = [t for t in said if t and "Job aborted due to stage failure" not in t.split("\n")[0]]
    text = specific[0] if specific else said[-1]
    return text.splitlines()[0] if text else None


def failure(e: BaseException, job: str = "backfill") -> ConfigError | None:
    """A one-line error for a failed Spark ``job`` (an analysis error, an unreadable file, an executor lost,
    out of memory): "The Spark backfill failed: ...", or None when ``e`` is not Spark's."""
    try:
        from py4j.protocol import Py4JError
        from pyspark.errors import PySparkException
    except ImportError:
        return None
    if not isinstance(e, PySparkException | Py4JError):
        return None
    said = _java_cause(e) if not isinstance(e, PySparkException) else None
    return ConfigError(f"The Spark {job} failed: {said or _first_line(e)}")


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
    """The window specifications of one entity's aggregates over the union of events. Each specification
    and condition is built once per entity: every one is a round trip to the JVM."""

    def __init__(self, entity: str) -> None:
        from pyspark.sql import functions as F

        self.keys = ENTITIES[entity]
        self.ok = _keys_ok(self.keys)
        solo = F.when(~self.ok, F.coalesce(F.col("cid"), F.concat(F.col("src"), F.lit(":"), F.col("oid"))))
        self.solo = f"_solo_{entity}"
        self.solo_expr = solo
        self.part = [*self.keys, self.solo]
        self._made: dict[tuple[Any, ...], Any] = {}

    def _once(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def before(self) -> Any:
        """The charges strictly before the charge (all time), in ``(ts, cid)`` order."""
        from pyspark.sql import Window as W

        return self._once(
            ("before",),
            lambda: W.partitionBy(*self.part).orderBy("ts", "cid").rowsBetween(W.unboundedPreceding, -1),
        )

    def up_to(self, by_oid: bool = False) -> Any:
        """The outcomes at or before the charge's time (all time). Ordered by ``(ts, cid)`` as :meth:`before`
        (one sort serves both): an outcome's ``cid`` is null and sorts first, so the outcomes of the
        charge's instant are in its frame. ``by_oid``: ordered by ``(ts, oid)``, for ``last``."""
        from pyspark.sql import Window as W
        from pyspark.sql import functions as F

        def make() -> Any:
            order = ["ts", F.col("oid").asc_nulls_last()] if by_oid else ["ts", "cid"]
            return W.partitionBy(*self.part).orderBy(*order).rangeBetween(W.unboundedPreceding, W.currentRow)

        return self._once(("up_to", by_oid), make)

    def tiles(self, res: int, first: int, last: int) -> Any:
        """The events in tiles ``T - first .. T - last`` (``T``: the row's tile)."""
        from pyspark.sql import Window as W

        return self._once(
            ("tiles", res, first, last),
            lambda: W.partitionBy(*self.part).orderBy(f"_tile_{res}").rangeBetween(-first, -last),
        )

    def tiles_upto(self, res: int, back: int) -> Any:
        """The events in every tile up to ``T - back``: a growing frame, which Spark adds to row by row
        (a sliding frame is aggregated again whenever it moves)."""
        from pyspark.sql import Window as W

        return self._once(
            ("tiles_upto", res, back),
            lambda: (
                W.partitionBy(*self.part).orderBy(f"_tile_{res}").rangeBetween(W.unboundedPreceding, -back)
            ),
        )

    def own_tile(self, res: int, outcomes: bool) -> Any:
        """The events of the row's own tile before the charge (charges) or at or before its time (outcomes),
        in ``(ts, cid)`` order as :meth:`up_to`."""
        from pyspark.sql import Window as W

        def make() -> Any:
            spec = W.partitionBy(*self.part, f"_tile_{res}").orderBy("ts", "cid")
            if outcomes:
                return spec.rangeBetween(W.unboundedPreceding, W.currentRow)
            return spec.rowsBetween(W.unboundedPreceding, -1)

        return self._once(("own_tile", res, outcomes), make)

    def cond(self, f: Aggregate) -> Column:
        """The events an aggregate reads: its source, and its filter."""
        from pyspark.sql import functions as F

        def make() -> Column:
            c = F.col("src").isNull() if f.source == "charges" else (F.col("src") == f.source)
            if f.filter:
                flt = FILTERS[f.filter]
                c = c & F.col(flt.column).isin(list(flt.values))
            return c

        made: Column = self._once(("cond", f.source, f.filter), make)
        return made


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


def _additive(f: Aggregate, ent: _Entity) -> Callable[[Callable[[Column], Column], Column], Column]:
    """``over(fn, value)``: a count or sum over the aggregate's window, as the difference of two growing
    frames: the events up to the charge (or up to the window's end) less those of the tiles before the
    window. Exact: the sums are integers."""
    from pyspark.sql import functions as F

    cond = ent.cond(f)
    outcomes = f.source != "charges"
    upto = ent.up_to() if outcomes else ent.before()
    if f.window is None:
        return lambda fn, value: F.coalesce(fn(F.when(cond, value)).over(upto), F.lit(0))
    res = _res_us(f)
    w, o = window_tiles(f)
    end = ent.tiles_upto(res, o + 1) if o else upto
    start = ent.tiles_upto(res, w + o + 1)

    def over(fn: Callable[[Column], Column], value: Column) -> Column:
        to_end, to_start = (F.coalesce(fn(F.when(cond, value)).over(s), F.lit(0)) for s in (end, start))
        return to_end - to_start

    return over


def _aggregate(f: Aggregate, ent: _Entity) -> Column:
    """The aggregate's value (null where the charge's key has a null part)."""
    from pyspark.sql import functions as F

    cond = ent.cond(f)
    col = F.col(f.column) if f.column else None
    add = _additive(f, ent)
    agg = f.agg
    if agg in ("count", "first_seen", "sum", "mean", "std"):
        count = add(F.count, F.lit(1))
        if agg == "count":
            value = count.cast("double")
        elif agg == "first_seen":
            value = F.when(count == 0, F.lit(1.0)).otherwise(F.lit(0.0))
        else:
            assert col is not None
            x = F.coalesce(col, F.lit(0)).cast(_EXACT)
            s = add(F.sum, x).cast(_EXACT)
            if agg == "sum":
                value = s.cast("double") / 100.0
            elif agg == "mean":
                value = F.when(count > 0, s.cast("double") / count.cast("double") / 100.0)
            else:
                q = add(F.sum, x * x).cast(_EXACT)
                n = count.cast(_EXACT)
                var = (n * q - s * s).cast("double") / (n * (n - 1)).cast("double")
                value = F.when(count > 1, F.sqrt(var) / 100.0)
        return F.when(ent.ok, value)
    parts = _parts(f, ent)
    if agg in ("min", "max"):
        assert col is not None
        fn = F.min if agg == "min" else F.max
        vals = [fn(F.when(cond, col)).over(p) for p in parts]
        best = vals[0] if len(vals) == 1 else (F.least if agg == "min" else F.greatest)(*vals)
        value = best.cast("double") / 100.0
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


class _Frames:
    """The plan before its joins: ``charges`` (``cid``, ``ts`` and the request features), one frame per entity
    (``cid`` and the entity's aggregates), features under internal names (``inner``: a feature may be named
    like a column, ``amount_usd``); ``events``, the union of events they read, persisted for their passes."""

    def __init__(self, tables: Mapping[str, DataFrame], fset: FeatureSet) -> None:
        missing = [t for t in _TABLES if t not in tables]
        if missing:
            raise ConfigError(
                f"The Spark backfill needs the tables {', '.join(_TABLES)}. Missing: {missing}."
            )
        events = _events(tables, fset)
        resolutions = sorted({_res_us(f) for f in fset.aggregates if f.window is not None})
        self.events = events.select("*", *[_tile(r).alias(f"_tile_{r}") for r in resolutions]).persist()
        try:
            self._build(fset)
        except BaseException:
            with contextlib.suppress(Exception):
                self.events.unpersist()
            raise

    def _build(self, fset: FeatureSet) -> None:
        from pyspark.sql import functions as F

        self.inner = inner = {name: f"_f{i}" for i, name in enumerate(fset.names)}
        requests = [_request(f).alias(inner[f.name]) for f in fset.features if isinstance(f, RequestFeature)]
        charges = self.events.where(F.col("src").isNull())
        self.charges = charges.select("cid", "ts", *requests)
        # Each entity's windows run over a projection of the events to the columns its aggregates read:
        # every sort and shuffle carries a few columns, not every feature computed so far.
        by_entity: dict[str, list[Aggregate]] = {}
        for a in fset.aggregates:
            by_entity.setdefault(a.entity, []).append(a)
        self.entities: dict[str, DataFrame] = {}
        for entity, aggs in by_entity.items():
            ent = _Entity(entity)
            used = needed_columns(FeatureSet(entity, tuple(aggs)))
            tiles = sorted({f"_tile_{_res_us(f)}" for f in aggs if f.window is not None})
            sub = self.events.select("cid", "src", "oid", "ts", *tiles, *used, ent.solo_expr.alias(ent.solo))
            feats = [_aggregate(f, ent).alias(inner[f.name]) for f in aggs]
            found = sub.select("cid", "src", *feats).where(F.col("src").isNull()).drop("src")
            self.entities[entity] = found


def plan(tables: Mapping[str, DataFrame], fset: FeatureSet) -> DataFrame:
    """Every feature of ``fset`` for every charge as of just before it: ``charge_id``, ``created`` and one
    double column per feature (null where missing), in no particular row order.

    ``tables``: the event log's ``charges``, ``disputes``, ``early_fraud_warnings`` and ``refunds`` with the
    workspace's schemas (docs/events.md), e.g. ``spark.read.parquet(...)`` of a workspace's files. Charge ids
    must be unique, as a workspace's are (the entities' features join the charges by id). The union
    of their events is persisted (``DataFrame.persist``: memory, then disk) for the entities' passes over it;
    ``spark.catalog.clearCache()`` frees it.
    """
    from pyspark.sql import functions as F

    frames = _Frames(tables, fset)
    inner = frames.inner
    rows = frames.charges
    for found in frames.entities.values():
        rows = rows.join(found, "cid")
    for d in fset.features:
        if isinstance(d, Derived):
            rows = rows.withColumn(inner[d.name], _derived(d, inner))
    created = F.timestamp_micros(F.col("ts")).alias("created")
    named = [F.col(inner[n]).cast("double").alias(n) for n in fset.names]
    return rows.select(F.col("cid").alias("charge_id"), created, *named)


def _literal(path: Path) -> str:
    r"""``path`` as Spark reads a file of that very name: a path holding one of ``[]{}*?`` is a glob pattern
    to Spark (Hadoop), so a workspace at ``ws[1]`` read as the pattern matches no file; those characters
    (and the backslash) are escaped.

    >>> _literal(Path("/data/ws[1]/charges/a.parquet"))
    '/data/ws\\[1\\]/charges/a.parquet'
    """
    return re.sub(r"([\\\[\]{}*?])", r"\\\1", str(path))


def read_workspace(spark: SparkSession, ws: Workspace, more: tuple[str, ...] = ()) -> dict[str, DataFrame]:
    """The workspace's event log tables (charges and the outcomes; ``more``: others, such as ``reviews``) as
    DataFrames over its Parquet files (an empty table as an empty DataFrame of its schema)."""
    from payfm.events.schema import SCHEMAS

    out = {}
    for t in (*_TABLES, *more):
        files = [_literal(p) for p in ws.files(t)]
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
    connect: Callable[[], duckdb.DuckDBPyConnection],
) -> Iterator[pa.Table]:
    """The backfill of the workspace by Spark, as tables of at most ``chunk_rows`` rows in
    ``(created, charge_id)`` order with the other engines' schema.

    Spark writes the request features and each entity's aggregates under ``scratch`` (a folder every executor
    can write and this process read); DuckDB (``connect``: the backfill's connection, with its memory limit
    and spill folder) joins them by charge, in ``(created, charge_id)`` order, and the
    derived features are computed on each chunk by the columnar engine's rules. The workspace's file is
    written on this machine in any case, and a join and a sort there cost less than Spark's (measured:
    BENCHMARKS.md, "Backfill on Spark")."""
    # (Spark's own scratch stays in its default folder: a session outlives this backfill in a process that
    # runs another, and a folder removed with this one's would fail that one's jobs.)
    spark = session(master, memory)
    frames: _Frames | None = None
    stages: list[Path] = []
    try:
        frames = _Frames(read_workspace(spark, ws), fset)
        parts = [frames.charges, *frames.entities.values()]
        total = len(parts) + 1
        for i, part in enumerate(parts):
            if progress:
                progress(i, total)
            stages.append(scratch / f"spark-{i}")
            part.write.mode("overwrite").parquet(str(stages[-1]))
    except Exception as e:
        said = failure(e)
        if said is None:
            raise
        raise said from None
    finally:
        if frames is not None:
            with contextlib.suppress(Exception):  # (a JVM that died has nothing left to free)
                frames.events.unpersist()
    if progress:
        progress(len(parts), total)
    try:
        yield from _assemble(stages, fset, frames.inner, chunk_rows, connect())
    finally:
        for stage in stages:
            shutil.rmtree(stage, ignore_errors=True)
    if progress:
        progress(total, total)


def _assemble(
    stages: list[Path],
    fset: FeatureSet,
    inner: Mapping[str, str],
    chunk_rows: int,
    con: duckdb.DuckDBPyConnection,
) -> Iterator[pa.Table]:
    """The frames Spark wrote (``stages[0]``: the charges and their request features, then one per entity)
    joined by charge in ``(ts, cid)`` order, with the derived features, as tables of ``chunk_rows`` rows (the
    last fewer; one empty table when there are none) with the other engines' schema."""
    import pyarrow.compute as pc

    from payfm.features.offline import _derived as derived_column

    schema = pa.schema(
        [
            pa.field("charge_id", pa.string()),
            pa.field("created", pa.timestamp("us", tz="UTC")),
            *[pa.field(n, pa.float64()) for n in fset.names],
        ]
    )
    parts = [sorted(stage.glob("part-*.parquet")) for stage in stages]  # (the folder's name is no pattern)
    for stage, found in zip(stages, parts, strict=True):
        if not found:  # (Spark writes a part file, an empty one for no rows)
            raise ConfigError(f"The Spark backfill wrote no Parquet part file in {stage}.")

    def quoted(path: Path) -> str:
        return "'" + str(path).replace("'", "''") + "'"

    def files(i: int) -> str:
        return "[" + ", ".join(quoted(f) for f in parts[i]) + "]"

    sql = ", ".join(f"p{i}.* EXCLUDE (cid)" for i in range(1, len(stages)))
    sql = f"SELECT p0.*{', ' + sql if sql else ''} FROM read_parquet({files(0)}) p0"
    for i in range(1, len(stages)):
        sql += f" JOIN read_parquet({files(i)}) p{i} ON p{i}.cid = p0.cid"
    sql += " ORDER BY p0.ts, p0.cid"

    def chunk(batch: pa.RecordBatch) -> pa.Table:
        values: dict[str, pa.Array] = {}
        for f in fset.features:
            if isinstance(f, Derived):
                values[f.name] = derived_column(values, f)
            else:
                values[f.name] = batch.column(inner[f.name])
        ts = pc.cast(batch.column("ts"), pa.timestamp("us", tz="UTC"))
        columns = [batch.column("cid"), ts, *[pc.cast(values[n], pa.float64()) for n in fset.names]]
        return pa.Table.from_arrays(columns, schema=schema)

    pending: list[pa.Table] = []
    held = given = 0
    for batch in con.sql(sql).to_arrow_reader(chunk_rows):
        pending.append(chunk(batch))
        held += batch.num_rows
        while held >= chunk_rows:
            table = pa.concat_tables(pending)
            yield table.slice(0, chunk_rows)
            pending, held, given = [table.slice(chunk_rows)], held - chunk_rows, given + 1
    if held or not given:
        yield pa.concat_tables(pending) if pending else schema.empty_table()
