"""Fraud labels with maturity, from the outcome events, as of a point in time.

A charge is fraudulent if a fraudulent dispute, an early fraud warning or a manual review closed as
``refunded_as_fraud`` (the ``reviews`` table, written by the decision service) arrives within the label
horizon (default 120 days) of the charge, and no later than ``as_of``. Its label is *mature* once the horizon
has passed by ``as_of``, positive or not: a fraud labelled early is final, but counting it while the genuine
charges of its days are not yet would make those days a population of frauds only (every metric and fit on
them inflated). Training uses mature labels only; evaluation reports how many labels were still immature.

Example:
    >>> import tempfile
    >>> from payfm.events.workspace import Workspace
    >>> ws = Workspace.open(tempfile.mkdtemp(), create=True)
    >>> fraud_labels(ws.connect()).num_rows
    0
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pyarrow as pa

from payfm.errors import ConfigError
from payfm.events.schema import FRAUD_OUTCOMES_SQL

DEFAULT_HORIZON = timedelta(days=120)


def log_end(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """The log's "now": the time of its latest event (charges and outcomes); None for an empty log."""
    [(end,)] = con.execute(
        """SELECT greatest((SELECT max(created) FROM charges), (SELECT max(created) FROM disputes),
                           (SELECT max(created) FROM early_fraud_warnings),
                           (SELECT max(created) FROM refunds), (SELECT max(created) FROM reviews))"""
    ).fetchall()
    return end  # type: ignore[no-any-return]


def fraud_labels(
    con: duckdb.DuckDBPyConnection, as_of: datetime | None = None, horizon: timedelta = DEFAULT_HORIZON
) -> pa.Table:
    """Per charge: ``is_fraud`` (0/1), ``label_time`` (first fraud outcome, if any) and ``mature``.

    ``as_of`` defaults to the time of the latest event in the log (charges and outcomes): the log's "now".
    """
    if as_of is not None and as_of.tzinfo is None:
        raise ConfigError(f"The 'as_of' of the labels must be timezone-aware (UTC). Got {as_of.isoformat()}.")
    if horizon <= timedelta(0):
        raise ConfigError(f"The label 'horizon' must be positive. Got {horizon}.")
    if as_of is None:
        as_of = log_end(con)
    as_of_sql = "NULL::TIMESTAMPTZ" if as_of is None else f"'{as_of.isoformat()}'::TIMESTAMPTZ"
    micros = int(horizon.total_seconds() * 1_000_000)
    return con.sql(
        f"""
        WITH outcome AS ({FRAUD_OUTCOMES_SQL}),
        first_fraud AS (
            SELECT o.charge_id, min(o.created) AS t
            FROM outcome o JOIN charges c USING (charge_id)
            WHERE o.created <= c.created + to_microseconds({micros}) AND o.created <= {as_of_sql}
            GROUP BY 1
        )
        SELECT c.charge_id, c.created,
               (f.t IS NOT NULL)::INT AS is_fraud,
               f.t AS label_time,
               -- mature once the horizon has passed, positives too: counting the frauds labelled early
               -- without the genuine charges of their period would give a population of frauds only
               (c.created + to_microseconds({micros}) <= {as_of_sql}) AS mature
        FROM charges c LEFT JOIN first_fraud f USING (charge_id)
        ORDER BY c.created, c.charge_id
        """
    ).to_arrow_table()
