"""A task's training table: backfilled features joined with the task's labels, and its numpy views."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.features.definitions import FeatureSet
from payfm.features.training_set import backfill_path
from payfm.training.tasks import Task

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class TaskData:
    """Rows sorted by (created, key): ``X`` (n, d) with NaN for missing, ``y``, ``mature``, ``created_us``."""

    table: pa.Table  # key, charge_id, created, label, label_time, mature, scenario, outcome (no features)
    X: np.ndarray
    y: np.ndarray
    mature: np.ndarray
    created_us: np.ndarray
    feature_names: list[str]
    # the content hash of the foundation-model checkpoint whose outputs follow the features, as they were
    # computed (None: features only): registration refuses the model when the checkpoint changed since
    fm_hash: str | None = None


def feature_matrix(
    table: pa.Table, names: list[str], dtype: type[np.floating[Any]] = np.float64
) -> np.ndarray:
    """(n, d) of the named columns in ``dtype`` (float64 by default), nulls as NaN."""
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise ConfigError(f"The feature table lacks {len(missing)} feature column(s), e.g. {missing[0]!r}.")
    out = np.empty((table.num_rows, len(names)), dtype=dtype)
    for j, n in enumerate(names):
        out[:, j] = table[n].cast(pa.float64()).to_numpy(zero_copy_only=False)
    return out


_READ_ROWS = 131_072  # rows of the backfill read at a time into the training matrix


def task_data(
    ws: Workspace,
    task: Task,
    fset: FeatureSet,
    *,
    as_of: datetime | None = None,
    horizon: timedelta | None = None,
    progress: Progress | None = None,
) -> TaskData:
    """Join the backfill of ``fset`` (computed if missing) with ``task``'s labels on the task's key.

    The join and the order are computed on the key columns only; the features stream from the backfill's
    Parquet file into one float32 matrix (4 bytes a value: 6.3 GB for 10M rows of 158 features), never held
    as a table beside it. float32 is what the models fit on (LightGBM bins its inputs; scikit-learn's trees
    compare float32 values), and the decision service's float64 vectors fall on the same side of every
    split threshold, which lies between two float32 values.
    """
    path = backfill_path(ws, fset)
    pf = pq.ParquetFile(path)
    have = set(pf.schema_arrow.names)
    if task.key not in have:
        raise ConfigError(
            f"Task '{task.name}' is keyed by {task.key!r}, which the backfill of feature set '{fset.name}' "
            f"lacks. Expected one of {', '.join(pf.schema_arrow.names[:3])}."
        )
    missing = [n for n in fset.names if n not in have]
    if missing:
        raise ConfigError(
            f"The backfill {path} lacks {len(missing)} feature column(s) of feature set '{fset.name}', "
            f"e.g. {missing[0]!r}: run `payfm features backfill --set {fset.name}` again."
        )
    labels = task.labels(ws, as_of, horizon)
    keys = sorted({"charge_id", "created", task.key})
    con = ws.connect()
    try:
        con.register("l", labels)
        f = pq.read_table(path, columns=keys)
        # the row number travels as a column: DuckDB does not promise scan order to a window function
        con.register("f", f.append_column("rownum", pa.array(np.arange(f.num_rows, dtype=np.int64))))
        meta = con.sql(
            f"""SELECT f.rownum, l.key, f.charge_id, f.created, l.label, l.label_time, l.mature,
                       c.scenario, c.outcome
                FROM f JOIN l ON f."{task.key}" = l.key JOIN charges c ON c.charge_id = f.charge_id
                ORDER BY f.created, l.key"""
        ).to_arrow_table()
    finally:
        con.close()
    n, d = meta.num_rows, len(fset.names)
    # where each backfill row goes in the matrix (-1: not a row of the task)
    where = np.full(pf.metadata.num_rows, -1, dtype=np.int64)
    where[meta["rownum"].to_numpy(zero_copy_only=False)] = np.arange(n, dtype=np.int64)
    X = np.empty((n, d), dtype=np.float32)
    done = 0
    for batch in pf.iter_batches(batch_size=_READ_ROWS, columns=fset.names):
        to = where[done : done + batch.num_rows]
        keep = to >= 0
        X[to[keep]] = feature_matrix(pa.Table.from_batches([batch]), fset.names, np.float32)[keep]
        done += batch.num_rows
        if progress:
            progress("reading features", done, pf.metadata.num_rows)
    return TaskData(
        table=meta.select(
            ["key", "charge_id", "created", "label", "label_time", "mature", "scenario", "outcome"]
        ),
        X=X,
        y=meta["label"].to_numpy(zero_copy_only=False).astype(np.float64),
        mature=meta["mature"].to_numpy(zero_copy_only=False).astype(bool),
        created_us=meta["created"].cast(pa.int64()).to_numpy(zero_copy_only=False),
        feature_names=fset.names,
    )
