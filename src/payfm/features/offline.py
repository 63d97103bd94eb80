"""Offline backfill: every feature of every charge as of just before it, as Parquet keyed by charge id.

Two engines compute the aggregates with the same semantics (see docs/features.md, "Offline backfill"):

- ``columnar`` (default): :mod:`payfm.features.offline_columnar`, whole-column numpy operations over the
  charges in ``(created, charge_id)`` order (read from the workspace's Parquet files, or from DuckDB for
  :func:`compute`): one sort per entity, prefix sums, binary searches, difference arrays. Outcome
  min/max/last/times, which it does not compute, run as SQL;
- ``duckdb``: :mod:`payfm.features.offline_sql`, the relational plan (prefix sums + ``ASOF`` joins, ``RANGE``
  window frames) on DuckDB: the reference the columnar engine is tested against, the shape of a Spark plan.

Request-time and derived features are vectorized Arrow expressions. Columns are computed one at a time into a
column store (integer-valued ones narrowed to uint8/16/32; beyond a memory budget as raw files on disk), then
assembled and written ``chunk_rows`` rows at a time, so memory stays bounded by the charges' key columns and
the entity sorts, not by charges x features.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from payfm import interrupts
from payfm.errors import ConfigError
from payfm.events.schema import CHARGES
from payfm.events.workspace import Workspace, alive, opened
from payfm.features.definitions import Aggregate, Derived, FeatureSet, RequestFeature, refuse_card_numbers
from payfm.features.offline_columnar import (
    Charges,
    Frame,
    aggregate_columns,
    load,
    load_workspace,
    supported,
)
from payfm.features.offline_sql import needed_columns, sql_columns
from payfm.features.request import COUNTRY_UTC_OFFSET_H
from payfm.inputs import kind

log = logging.getLogger(__name__)

Engine = Literal["columnar", "duckdb", "spark"]
ENGINES: tuple[str, ...] = ("columnar", "duckdb")  # in this process; "spark" backfills a workspace only
# Feature columns kept in memory before the rest wait in files (bytes).
_IN_MEMORY_BYTES = 2**28


def _request_columns(base: pa.Table, fset: FeatureSet) -> dict[str, pa.Array]:
    """Request-time features, vectorized with Arrow; the same rules as payfm.features.request."""
    out: dict[str, pa.Array] = {}

    def col(name: str) -> pa.ChunkedArray:
        c = base[name]
        return pc.cast(c, c.type.value_type) if pa.types.is_dictionary(c.type) else c

    for f in fset.features:
        if not isinstance(f, RequestFeature):
            continue
        if f.kind == "amount_usd":
            out[f.name] = pc.divide(pc.cast(col("amount_usd"), pa.float64()), 100.0)
        elif f.kind == "amount_usd_log":
            out[f.name] = pc.ln(pc.add(pc.divide(pc.cast(col("amount_usd"), pa.float64()), 100.0), 1.0))
        elif f.kind == "local_hour":
            ts = base["ts"].to_numpy()
            zones = pa.array(list(COUNTRY_UTC_OFFSET_H))
            idx = pc.index_in(col("merchant_country"), value_set=zones).to_numpy(zero_copy_only=False)
            table = np.array([*COUNTRY_UTC_OFFSET_H.values(), 0], dtype=np.int64)  # unknown country: UTC
            offsets = table[np.where(np.isnan(idx.astype(float)), len(table) - 1, idx).astype(np.int64)]
            hours = ((ts // 3_600_000_000) + offsets) % 24
            out[f.name] = pa.array(hours.astype(np.float64))
        elif f.kind == "mismatch":
            a, b = col(f.columns[0]), col(f.columns[1])
            out[f.name] = pc.cast(pc.not_equal(a, b), pa.float64())
        elif f.kind == "is":
            # The values have the field's type (checked when the feature is built): Arrow compares them
            # with no cast on either side, as the online `in` does.
            value_set = pa.array(list(f.values), type=CHARGES.field(f.columns[0]).type)
            hit = pc.fill_null(pc.is_in(col(f.columns[0]), value_set=value_set), False)
            out[f.name] = pc.cast(hit, pa.float64())
        elif f.kind == "missing":
            out[f.name] = pc.cast(pc.is_null(col(f.columns[0])), pa.float64())
        elif f.kind == "since":
            then = pc.cast(pc.cast(col(f.columns[0]), pa.timestamp("us", tz="UTC")), pa.int64())
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


class _Columns:
    """Feature columns (rid order, NaN where missing). Integer-valued features (counts, flags, hours) are
    kept as uint8/16/32 with the type's maximum for missing, the others as float64; in memory up to
    ``memory_bytes``, then as raw files under ``root``."""

    def __init__(self, root: Path | None, memory_bytes: int, integral: set[str]) -> None:
        self.root, self.memory_bytes, self.used = root, memory_bytes, 0
        self.integral = integral
        self._cols: dict[str, np.ndarray | tuple[Path, np.dtype]] = {}

    def put(self, name: str, values: np.ndarray) -> None:
        data = np.asarray(values, dtype=np.float64)
        if self.root is not None and name in self.integral:
            data = _narrow(data)
        if self.root is None or self.used + data.nbytes <= self.memory_bytes:
            self._cols[name] = data
            self.used += data.nbytes
            return
        path = self.root / f"{len(self._cols)}.col"
        data.tofile(path)
        self._cols[name] = (path, data.dtype)

    def get(self, name: str, lo: int, hi: int) -> np.ndarray:
        """Float64 values of rows ``lo <= rid < hi`` (NaN where missing)."""
        col = self._cols[name]
        if isinstance(col, tuple):
            path, dtype = col
            data = np.fromfile(path, dtype=dtype, count=hi - lo, offset=lo * dtype.itemsize)
        else:
            data = col[lo:hi]
        if data.dtype == np.float64:
            return data
        out = data.astype(np.float64)
        out[data == np.iinfo(data.dtype).max] = np.nan
        return out


def _narrow(values: np.ndarray) -> np.ndarray:
    """Non-negative integer ``values`` as the narrowest of uint8/16/32 (missing: the type's maximum)."""
    top_value = float(np.fmax.reduce(values)) if len(values) else 0.0
    for dtype in (np.uint8, np.uint16, np.uint32):
        top = np.iinfo(dtype).max
        if np.isnan(top_value) or top_value < top:
            narrow: np.ndarray = np.nan_to_num(values, nan=top).astype(dtype)
            return narrow
    return values


def _integral(fset: FeatureSet) -> set[str]:
    """Features whose values are non-negative integers (counts, distinct counts, flags, hours)."""
    out = set()
    for f in fset.features:
        if (isinstance(f, Aggregate) and f.agg in ("count", "distinct", "first_seen")) or (
            isinstance(f, RequestFeature) and f.kind in ("local_hour", "mismatch", "is", "missing")
        ):
            out.add(f.name)
    return out


def _to_numpy(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Float64 values, NaN where null."""
    filled = pc.fill_null(pc.cast(arr, pa.float64()), np.nan)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.float64)


def _arrow(values: np.ndarray) -> pa.Array:
    """Float64 Arrow array, null where NaN (missing)."""
    return pa.array(values, mask=np.isnan(values))


def _fill(
    fset: FeatureSet,
    read: Callable[[list[str]], Charges],
    connect: Callable[[], duckdb.DuckDBPyConnection],
    store: Callable[[], _Columns],
    engine: str,
    progress: Callable[[int, int], None] | None,
) -> tuple[_Columns, pa.Array, np.ndarray]:
    """Every aggregate and request feature into a column store; the charge ids and times in rid order.
    ``read`` loads the charges (the needed columns); ``connect`` gives DuckDB for the SQL aggregates."""
    if engine == "spark":
        raise ValueError(
            "The spark engine backfills a workspace (backfill(ws, fset, engine='spark')); on Spark "
            "DataFrames, use payfm.features.offline_spark.plan."
        )
    if engine not in ENGINES:
        raise ValueError(f"The backfill engine must be one of {', '.join(ENGINES)}. Got {engine!r}.")
    t0 = time.perf_counter()
    cols = needed_columns(fset)
    charges = read(cols)
    log.info("backfill: %d charges read in %.1f s", charges.n, time.perf_counter() - t0)
    columns = store()
    aggs = fset.aggregates
    fast = [f for f in aggs if engine == "columnar" and supported(f)]
    slow = [f for f in aggs if f not in fast]
    total = len({f.entity for f in fast}) + (1 if slow else 0) + 2
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    for name, values in _request_columns(charges.table, fset).items():
        columns.put(name, _to_numpy(values))
    step()
    frame = Frame(charges)
    frame.prepare(fast)  # the charges table keeps only charge_id and ts from here on
    aggregate_columns(frame, fast, columns.put, step)
    log.info("backfill: %d columnar aggregates at %.1f s", len(fast), time.perf_counter() - t0)
    del frame
    if slow:
        for name, values in sql_columns(connect(), slow):
            columns.put(name, values)
        step()
        log.info("backfill: %d SQL aggregates at %.1f s", len(slow), time.perf_counter() - t0)
    return columns, charges.table["charge_id"].combine_chunks(), charges.table["ts"].to_numpy()


def _rows(fset: FeatureSet, columns: _Columns, ids: pa.Array, ts: np.ndarray, lo: int, hi: int) -> pa.Table:
    """The feature rows of charges ``lo <= rid < hi`` (derived features computed here, per chunk)."""
    values: dict[str, pa.Array] = {}
    for f in fset.features:
        if isinstance(f, Derived):
            values[f.name] = _derived(values, f)
        else:
            values[f.name] = _arrow(columns.get(f.name, lo, hi))
    arrays = [ids.slice(lo, hi - lo), pa.array(ts[lo:hi], pa.timestamp("us", tz="UTC"))]
    arrays += [pc.cast(values[name], pa.float64()) for name in fset.names]
    return pa.Table.from_arrays(arrays, names=["charge_id", "created", *fset.names])


def compute(
    con: duckdb.DuckDBPyConnection,
    fset: FeatureSet,
    progress: Callable[[int, int], None] | None = None,
    engine: Engine = "columnar",
) -> pa.Table:
    """Backfill ``fset`` over the ``charges`` (and outcome) views of ``con``: one row per charge, by rid.

    >>> from payfm.features.catalog import tiny_set
    >>> con = duckdb.connect()
    >>> _ = con.execute("CREATE TABLE charges AS SELECT 'ch_' || i AS charge_id, "
    ...     "TIMESTAMPTZ '2026-01-01 00:00:00+00' + i * INTERVAL 1 MINUTE AS created, "
    ...     "'fp_1' AS card_fingerprint, 500 AS amount_usd FROM range(3) t(i)")
    >>> ids = {"disputes": "dispute_id", "early_fraud_warnings": "efw_id", "refunds": "refund_id"}
    >>> for t, key in ids.items():
    ...     _ = con.execute(f"CREATE TABLE {t} ({key} VARCHAR, charge_id VARCHAR, created TIMESTAMPTZ, "
    ...                     "reason VARCHAR, amount BIGINT, currency VARCHAR)")
    >>> compute(con, tiny_set())["card.count_charges_1h"].to_pylist()
    [0.0, 1.0, 2.0]
    """
    columns, ids, ts = _fill(
        fset,
        lambda cols: load(con, fset, cols),
        lambda: con,
        lambda: _Columns(None, 0, set()),
        engine,
        progress,
    )
    return _rows(fset, columns, ids, ts, 0, len(ts))


def compute_chunks(
    con: duckdb.DuckDBPyConnection,
    fset: FeatureSet,
    chunk_rows: int = 1_000_000,
    progress: Callable[[int, int], None] | None = None,
    engine: Engine = "columnar",
    spill_dir: Path | None = None,
    memory_bytes: int = _IN_MEMORY_BYTES,
) -> Iterator[pa.Table]:
    """:func:`compute` in chunks of ``chunk_rows`` charges (in (created, charge_id) order): bounded memory.

    Feature columns beyond ``memory_bytes`` wait in files under ``spill_dir`` (a temporary directory by
    default).
    """
    return _chunks(
        fset,
        lambda cols: load(con, fset, cols),
        lambda: con,
        chunk_rows,
        progress,
        engine,
        spill_dir,
        memory_bytes,
    )


def _chunks(
    fset: FeatureSet,
    read: Callable[[list[str]], Charges],
    connect: Callable[[], duckdb.DuckDBPyConnection],
    chunk_rows: int,
    progress: Callable[[int, int], None] | None,
    engine: str,
    spill_dir: Path | None,
    memory_bytes: int,
) -> Iterator[pa.Table]:
    tmp = Path(tempfile.mkdtemp(prefix="payfm-columns-", dir=spill_dir))
    try:
        columns, ids, ts = _fill(
            fset, read, connect, lambda: _Columns(tmp, memory_bytes, _integral(fset)), engine, progress
        )
        for lo in range(0, max(len(ts), 1), chunk_rows):
            yield _rows(fset, columns, ids, ts, lo, min(len(ts), lo + chunk_rows))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def backfill(
    ws: Workspace,
    fset: FeatureSet,
    *,
    memory_limit: str = "6GB",
    chunk_rows: int = 500_000,
    progress: Callable[[int, int], None] | None = None,
    engine: Engine = "columnar",
    spark_master: str = "local[*]",
) -> tuple[Path, int]:
    """Backfill ``fset`` over the workspace into ``features/<set>-<version>.parquet`` (atomically).

    Aggregates run in the columnar engine (or DuckDB, spilling beyond ``memory_limit``); rows are assembled
    and written ``chunk_rows`` at a time, so memory stays bounded on large logs. ``engine="spark"`` runs the
    whole backfill as a Spark plan (:mod:`payfm.features.offline_spark`) on ``spark_master``, its driver
    given ``memory_limit``. Returns the path and the row count.
    """
    ws = opened(ws, "backfill")
    if not isinstance(fset, FeatureSet) or not fset.features:
        got = f"set '{fset.name}', of no feature" if isinstance(fset, FeatureSet) else type(fset).__name__
        raise ConfigError(f"A backfill needs a FeatureSet of at least one feature. Got {got}.")
    if engine not in (*ENGINES, "spark"):
        raise ConfigError(f"The backfill engine must be one of {', '.join(ENGINES)}, spark. Got {engine!r}.")
    # before the work: a chunk size of 0 failed in range() after every aggregate was computed
    if not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool) or chunk_rows < 1:
        raise ConfigError(
            f"The 'chunk_rows' of backfill must be an integer >= 1 (rows written at a time). "
            f"Got {kind(chunk_rows) if not isinstance(chunk_rows, int) else chunk_rows}."
        )
    _check_size(memory_limit, "backfill")
    return _backfill(ws, fset, memory_limit, chunk_rows, progress, engine, spark_master)


LOG_VERSION_KEY = b"payfm.log_version"  # the workspace manifest version a backfill was computed from


def backfill_is_current(ws: Workspace, path: Path) -> bool:
    """The backfill at ``path`` was computed from the workspace's event log as it is now (a file that is not
    readable Parquet, cut short or damaged, is not)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, OSError):
        return False
    return meta.get(LOG_VERSION_KEY) == str(ws.manifest()["version"]).encode()


SPILL_PREFIX = "payfm-spill-"  # + pid: DuckDB's temporary files of a backfill, in the system's temp folder


def _sweep_strays(out_dir: Path) -> None:
    """Remove what backfills killed outright (kill -9, out of memory) left: their partial Parquet files in
    ``out_dir`` (``.<name>.<pid>.<ns>.tmp``) and their spill folders (``payfm-spill-<pid>-*``), those of
    processes that no longer exist."""
    for tmp in out_dir.glob(".*.tmp"):
        pid = tmp.name.split(".")[-3]
        if pid.isdigit() and not alive(int(pid)):
            tmp.unlink(missing_ok=True)
    for spill in Path(tempfile.gettempdir()).glob(f"{SPILL_PREFIX}*-*"):
        pid = spill.name[len(SPILL_PREFIX) :].split("-")[0]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(spill, ignore_errors=True)


def _backfill(
    ws: Workspace,
    fset: FeatureSet,
    memory_limit: str,
    chunk_rows: int,
    progress: Callable[[int, int], None] | None,
    engine: Engine,
    spark_master: str = "local[*]",
) -> tuple[Path, int]:
    # The file is named by the set and its columns by the features: no card number at rest (every backfill,
    # and the training and evaluation that compute a missing one, come through here).
    refuse_card_numbers(fset)
    _check_size(memory_limit)
    out_dir = ws.root / "features"
    out_dir.mkdir(exist_ok=True)
    _sweep_strays(out_dir)
    path = out_dir / f"{fset.name}-{fset.version}.parquet"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")
    meta = {
        b"payfm.feature_set": fset.name.encode(),
        b"payfm.version": fset.version.encode(),
        # the event log's version read before its data: a later write makes this backfill stale
        LOG_VERSION_KEY: str(ws.manifest()["version"]).encode(),
    }
    spill = Path(tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-"))
    cons: list[duckdb.DuckDBPyConnection] = []

    def connect() -> duckdb.DuckDBPyConnection:  # only the SQL aggregates need DuckDB
        if not cons:
            con = ws.connect()
            con.execute(f"SET memory_limit = '{memory_limit}'")
            con.execute(f"SET temp_directory = '{spill}'")
            cons.append(con)
        return cons[0]

    rows = 0
    writer: pq.ParquetWriter | None = None
    # Parquet encoding releases the GIL: a chunk is written while the next one is assembled.
    pool = ThreadPoolExecutor(max_workers=1)
    pending: Future[None] | None = None
    chunks: Iterator[pa.Table] | None = None
    try:
        if engine == "spark":
            from payfm.features.offline_spark import backfill_chunks

            memory = spark_memory(memory_limit)
            chunks = backfill_chunks(ws, fset, chunk_rows, progress, spark_master, memory, spill, connect)
        else:
            chunks = _chunks(
                fset,
                lambda cols: load_workspace(ws, fset, cols),
                connect,
                chunk_rows,
                progress,
                engine,
                spill,
                _IN_MEMORY_BYTES,
            )
        for chunk in chunks:
            chunk = chunk.replace_schema_metadata(meta)
            if writer is None:
                writer = _writer(tmp, chunk.schema, fset)
            if pending is not None:
                pending.result()
            pending = pool.submit(writer.write_table, chunk)
            rows += chunk.num_rows
        if pending is not None:
            pending.result()
        pool.shutdown(wait=True)
        if writer is not None:
            writer.close()
            writer = None
        interrupts.check()
        os.replace(tmp, path)
        log.info("backfill: %d rows written to %s", rows, path)
    except duckdb.OutOfMemoryException as e:
        said = str(e).splitlines()[0].removeprefix("Out of Memory Error: ")
        raise ConfigError(
            f"The backfill's DuckDB queries ran out of memory under --memory-limit {memory_limit} ({said}). "
            "DuckDB spills to disk beyond the limit, but some steps must fit in it: give a larger "
            "--memory-limit (memory_limit in Python; default 6GB)."
        ) from None
    finally:
        pool.shutdown(wait=True)
        close = getattr(chunks, "close", None)  # (a generator stopped early: its files and connections now)
        if close is not None:
            close()
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        for con in cons:
            con.close()
        shutil.rmtree(spill, ignore_errors=True)
    return path, rows


def _check_size(memory_limit: str, who: str = "backfill") -> None:
    """Refuse a ``memory_limit`` that is not a size text (``6GB``, ``512MiB``): a number of gigabytes given
    as an int is named as such (an AttributeError before), for ``who``, the function that took it."""
    if not isinstance(memory_limit, str):
        raise ConfigError(
            f"The 'memory_limit' of {who} must be a size text such as '6GB' or '512MiB' (--memory-limit). "
            f"Got {kind(memory_limit)}."
        )
    if not re.fullmatch(r"\d+(\.\d+)?\s*([KMGT]i?)?B", memory_limit.strip(), flags=re.IGNORECASE):
        raise ConfigError(f"--memory-limit: expected a size such as 4GB or 512MiB. Got {memory_limit!r}.")


def spark_memory(memory_limit: str, who: str = "backfill") -> str:
    """A ``--memory-limit`` (DuckDB's form: ``6GB``, ``512MiB``) as Spark's driver memory (``5722m``; at
    least 512 MiB), or a :class:`ConfigError` naming the option (the 'memory_limit' of ``who``)."""
    _check_size(memory_limit, who)
    return f"{max(512, _bytes(memory_limit) // 2**20)}m"


def _bytes(size: str) -> int:
    """Bytes of a size such as ``6GB`` or ``512MiB`` (checked before)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B", size.strip(), flags=re.IGNORECASE)
    assert m is not None
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** " KMGT".index((m.group(2) or " ").upper()))


def _writer(path: Path, schema: pa.Schema, fset: FeatureSet) -> pq.ParquetWriter:
    """Snappy; dictionary pages only for integer-valued features (few distinct values: hashing the others
    costs more than it saves); min/max statistics for the charge id and time only."""
    return pq.ParquetWriter(
        path,
        schema,
        compression="snappy",
        use_dictionary=sorted(_integral(fset)),
        write_statistics=["charge_id", "created"],
    )


def isclose(a: float | None, b: float | None, rel: float = 1e-9) -> bool:
    """Parity comparison: both missing, or equal within ``rel`` relative tolerance."""
    a_missing = a is None or (isinstance(a, float) and math.isnan(a))
    b_missing = b is None or (isinstance(b, float) and math.isnan(b))
    if a_missing or b_missing:
        return a_missing and b_missing
    assert a is not None and b is not None
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
