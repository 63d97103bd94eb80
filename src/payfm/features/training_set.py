"""The training-set builder: backfilled features joined with labels and their maturity."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from payfm.errors import ConfigError
from payfm.events.outputs import output_file, write_parquet
from payfm.events.schema import column_names
from payfm.events.workspace import Workspace, opened
from payfm.features.catalog import feature_set_arg
from payfm.features.definitions import FeatureSet
from payfm.features.offline import Engine, spark_memory
from payfm.training.labels import DEFAULT_HORIZON, fraud_labels, label_horizon_arg, labels_as_of

log = logging.getLogger(__name__)


def backfill_path(ws: Workspace, fset: FeatureSet, **backfill_options: Any) -> Path:
    """The Parquet file of ``fset``'s backfill in ``ws``, computing it first if it is missing or was computed
    from an earlier state of the event log (charges or outcomes written since: a new world, an import,
    outcomes appended by the decision service); ``backfill_options`` (``engine``, ``spark_master``,
    ``memory_limit``) go to :func:`payfm.features.offline.backfill` when it runs."""
    return _backfill_path(
        opened(ws, "backfill_path"), feature_set_arg(fset, "backfill_path"), backfill_options
    )


def _backfill_path(ws: Workspace, fset: FeatureSet, backfill_options: dict[str, Any]) -> Path:
    from payfm.features.offline import backfill, backfill_is_current

    path = ws.root / "features" / f"{fset.name}-{fset.version}.parquet"
    if path.exists():
        if backfill_is_current(ws, path):
            return path
        log.warning("the backfill %s is older than the event log: computing it again", path.name)
    return backfill(ws, fset, **backfill_options)[0]


def load_backfill(
    ws: Workspace,
    fset: FeatureSet,
    columns: Sequence[str] | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
) -> pa.Table:
    """The backfill of ``fset`` in ``ws`` (see :func:`backfill_path`): every column, or ``columns`` only;
    ``filters`` (pyarrow's ``[(column, op, value), ...]``, e.g. on ``created``) skip the row groups and rows
    they exclude, so a window of a large backfill is read without the rest. ``columns``: a list or tuple of
    names of the backfill's columns (charge_id, created, the features)."""
    ws, fset = opened(ws, "load_backfill"), feature_set_arg(fset, "load_backfill")
    path = _backfill_path(ws, fset, {})
    if columns is not None:
        have = pq.read_schema(path).names
        what = f"the backfill of set '{fset.name}'"
        columns = column_names(columns, have, "columns", "load_backfill", what)
    return pq.read_table(path, columns=columns, filters=filters)


def build_training_set(
    ws: Workspace,
    fset: FeatureSet,
    *,
    as_of: datetime | date | str | None = None,
    horizon: timedelta = DEFAULT_HORIZON,
    out: str | os.PathLike[str] | None = None,
    engine: Engine = "columnar",
    spark_master: str = "local[*]",
    memory_limit: str = "6GB",
) -> tuple[Path, pa.Table]:
    """Features + ``is_fraud``, ``label_time``, ``mature`` (and ``scenario`` where known: the synthetic
    world's ground truth, never a model input), one row per charge.

    Written atomically to ``out`` (default ``features/<set>-<version>.training.parquet`` in the workspace).
    ``engine="spark"`` computes the labels with Spark on ``spark_master``
    (:func:`payfm.training.labels_spark.workspace_labels`), and the backfill too where it is missing or
    stale; the other engines, the backfill's, compute the labels with DuckDB. Both give the same rows
    (tested).
    """
    ws, fset = opened(ws, "build_training_set"), feature_set_arg(fset, "build_training_set")
    as_of = labels_as_of(as_of, "build_training_set")
    label_horizon_arg(horizon, "build_training_set")
    if engine not in ("columnar", "duckdb", "spark"):
        raise ConfigError(f"The engine must be one of columnar, duckdb, spark. Got {engine!r}.")
    memory = spark_memory(memory_limit, "build_training_set")  # (checked before the work)
    default = ws.root / "features" / f"{fset.name}-{fset.version}.training.parquet"
    # before the work, not after; in the workspace only under features/ (not over its manifest or event log)
    path = output_file(
        out if out else default, "--out", workspace=ws.root, within="features/*.training.parquet"
    )
    options = {"engine": engine, "spark_master": spark_master, "memory_limit": memory_limit}
    feats = pq.read_table(_backfill_path(ws, fset, options))
    spark_labels = None
    if engine == "spark":
        from payfm.training.labels_spark import workspace_labels

        spark_labels = workspace_labels(ws, as_of, horizon, spark_master, memory)
    con = ws.connect()
    try:
        labels = fraud_labels(con, as_of, horizon) if spark_labels is None else spark_labels
        scen = con.sql("SELECT charge_id, scenario FROM charges").to_arrow_table()
        con.register("f", feats)
        con.register("l", labels)
        con.register("s", scen)
        table = con.sql(
            "SELECT f.*, l.is_fraud, l.label_time, l.mature, s.scenario FROM f JOIN l USING (charge_id) "
            "JOIN s USING (charge_id) ORDER BY f.created, f.charge_id"
        ).to_arrow_table()
    finally:
        con.close()
    write_parquet(table, path, "--out", compression="zstd")
    return path, table
