"""A task's training table: backfilled features joined with the task's labels, and its numpy views."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.features.definitions import FeatureSet
from payfm.features.training_set import load_backfill
from payfm.training.tasks import Task


@dataclass(frozen=True)
class TaskData:
    """Rows sorted by (created, key): ``X`` (n, d) with NaN for missing, ``y``, ``mature``, ``created_us``."""

    table: pa.Table  # key, charge_id, created, label, label_time, mature, scenario, outcome (no features)
    X: np.ndarray
    y: np.ndarray
    mature: np.ndarray
    created_us: np.ndarray
    feature_names: list[str]


def feature_matrix(table: pa.Table, names: list[str]) -> np.ndarray:
    """(n, d) float64 of the named columns, nulls as NaN."""
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise ConfigError(f"The feature table lacks {len(missing)} feature column(s), e.g. {missing[0]!r}.")
    out = np.empty((table.num_rows, len(names)), dtype=np.float64)
    for j, n in enumerate(names):
        out[:, j] = table[n].cast(pa.float64()).to_numpy(zero_copy_only=False)
    return out


def task_data(
    ws: Workspace,
    task: Task,
    fset: FeatureSet,
    *,
    as_of: datetime | None = None,
    horizon: timedelta | None = None,
) -> TaskData:
    """Join the backfill of ``fset`` (computed if missing) with ``task``'s labels on the task's key."""
    feats = load_backfill(ws, fset)
    if task.key not in feats.column_names:
        raise ConfigError(
            f"Task '{task.name}' is keyed by {task.key!r}, which the backfill of feature set '{fset.name}' "
            f"lacks. Expected one of {', '.join(feats.column_names[:3])}."
        )
    labels = task.labels(ws, as_of, horizon)
    con = ws.connect()
    try:
        con.register("f", feats)
        con.register("l", labels)
        joined = con.sql(
            f"""SELECT f.*, l.key, l.label, l.label_time, l.mature, c.scenario, c.outcome
                FROM f JOIN l ON f."{task.key}" = l.key JOIN charges c ON c.charge_id = f.charge_id
                ORDER BY f.created, l.key"""
        ).to_arrow_table()
    finally:
        con.close()
    meta = joined.select(
        ["key", "charge_id", "created", "label", "label_time", "mature", "scenario", "outcome"]
    )
    created = joined["created"].cast(pa.int64()).to_numpy(zero_copy_only=False)
    return TaskData(
        table=meta,
        X=feature_matrix(joined, fset.names),
        y=joined["label"].to_numpy(zero_copy_only=False).astype(np.float64),
        mature=joined["mature"].to_numpy(zero_copy_only=False).astype(bool),
        created_us=created,
        feature_names=fset.names,
    )
