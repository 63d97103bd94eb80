"""Prediction tasks: a label is a definition (entity key, label query, maturity rule), not hard-coded.

A :class:`Task` turns the workspace into one label row per entity: ``key`` (the entity's id, a charge id by
default), ``label`` (0/1), ``label_time`` (when the label became known, null for negatives) and ``mature``
(the label can no longer change). The trainer joins these rows to the backfilled features by the key, so the
same trainer fits any task. Two ship: ``fraud`` (the default) and ``retry_success``.

Example:
    >>> import tempfile
    >>> from payfm.events.workspace import Workspace
    >>> ws = Workspace.open(tempfile.mkdtemp(), create=True)
    >>> task("retry_success").labels(ws).column_names
    ['key', 'created', 'label', 'label_time', 'mature']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace, opened
from payfm.training.labels import (
    DEFAULT_HORIZON,
    fraud_labels,
    label_horizon_arg,
    labels_as_of,
    log_end,
)

# (connection, as_of or None, horizon) -> table with key, created, label, label_time, mature
LabelQuery = Callable[[duckdb.DuckDBPyConnection, datetime | None, timedelta], pa.Table]


@dataclass(frozen=True)
class Task:
    """What to predict. ``key`` names the backfill column the labels join on (the entity key)."""

    name: str
    description: str
    query: LabelQuery
    key: str = "charge_id"
    horizon: timedelta = DEFAULT_HORIZON  # how long after the entity's time the label may still change
    # the time its labels are read at by default ("now"): the fraud labels' is the log's latest event, an
    # outcome included; a retry is a charge, so the retry labels' is the last charge
    now: Callable[[duckdb.DuckDBPyConnection], datetime | None] = log_end

    def now_of(self, ws: Workspace) -> datetime | None:
        """The time the task's labels are read at by default in ``ws`` (None for an empty log)."""
        con = ws.connect()
        try:
            return self.now(con)
        finally:
            con.close()

    def labels(
        self, ws: Workspace, as_of: datetime | str | None = None, horizon: timedelta | None = None
    ) -> pa.Table:
        """One row per entity: ``key``, ``created``, ``label``, ``label_time``, ``mature``; ``as_of`` an aware
        datetime, a date or ISO text, as every window bound."""
        ws = opened(ws, f"the labels of task '{self.name}'")
        when = labels_as_of(as_of, f"the labels of task '{self.name}'")
        if horizon is not None:
            label_horizon_arg(horizon, f"the labels of task '{self.name}'")
        h = self.horizon if horizon is None else horizon
        if h <= timedelta(0):
            raise ConfigError(
                f"The label horizon of task '{self.name}' must be positive. "
                f"Got {h.total_seconds() / 86400:g} days."
            )
        con = ws.connect()
        try:
            return self.query(con, when, h)
        finally:
            con.close()


def _as_of_sql(con: duckdb.DuckDBPyConnection, as_of: datetime | None) -> str:
    if as_of is not None:
        if as_of.tzinfo is None:
            raise ConfigError(f"The 'as_of' of the labels must be timezone-aware (UTC). Got {as_of}.")
        return f"'{as_of.isoformat()}'::TIMESTAMPTZ"
    last = _last_charge(con)
    return "NULL::TIMESTAMPTZ" if last is None else f"'{last.isoformat()}'::TIMESTAMPTZ"


def _last_charge(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """The time of the log's last charge."""
    last: datetime | None = con.execute("SELECT max(created) FROM charges").fetchall()[0][0]
    return last


def _fraud(con: duckdb.DuckDBPyConnection, as_of: datetime | None, horizon: timedelta) -> pa.Table:
    t = fraud_labels(con, as_of, horizon)
    return pa.table(
        {
            "key": t["charge_id"],
            "created": t["created"],
            "label": t["is_fraud"],
            "label_time": t["label_time"],
            "mature": t["mature"],
        }
    )


def _retry_success(con: duckdb.DuckDBPyConnection, as_of: datetime | None, horizon: timedelta) -> pa.Table:
    """Per issuer-declined charge: does a retry of it (``retry_of``) get authorized within the horizon?"""
    now = _as_of_sql(con, as_of)
    micros = int(horizon.total_seconds() * 1_000_000)
    return con.sql(
        f"""
        WITH ok AS (
            SELECT r.retry_of AS charge_id, min(r.created) AS t
            FROM charges r JOIN charges d ON r.retry_of = d.charge_id
            WHERE r.outcome = 'authorized' AND r.created <= d.created + to_microseconds({micros})
              AND r.created <= {now}
            GROUP BY 1
        )
        SELECT d.charge_id AS key, d.created, (ok.t IS NOT NULL)::INT AS label, ok.t AS label_time,
               (d.created + to_microseconds({micros}) <= {now}) AS mature
        FROM charges d LEFT JOIN ok USING (charge_id)
        WHERE d.outcome = 'issuer_declined'
        ORDER BY d.created, d.charge_id
        """
    ).to_arrow_table()


TASKS: dict[str, Task] = {
    "fraud": Task(
        "fraud",
        "A fraudulent dispute, early fraud warning or review closed as refunded_as_fraud arrives within the"
        " horizon.",
        _fraud,
    ),
    "retry_success": Task(
        "retry_success",
        "An issuer-declined charge is retried (retry_of) and the retry is authorized within the horizon.",
        _retry_success,
        horizon=timedelta(days=7),
        now=_last_charge,
    ),
}


def label_horizon(task_name: str, entry: Mapping[str, Any]) -> timedelta:
    """The label horizon a registered model was trained with: its registry ``entry``'s ``horizon_days``,
    else its task's default."""
    days = entry.get("horizon_days")
    return task(task_name).horizon if days is None else timedelta(days=float(days))


def task(name: str) -> Task:
    """A shipped task by name."""
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"Unknown task {name!r}. Expected one of {', '.join(TASKS)}.") from None
