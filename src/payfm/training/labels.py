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

from datetime import date, datetime, timedelta

import duckdb
import pyarrow as pa

from payfm.errors import ConfigError
from payfm.events.schema import FRAUD_OUTCOMES_SQL, time_bound
from payfm.inputs import kind

DEFAULT_HORIZON = timedelta(days=120)


def log_end(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """The log's "now": the time of its latest event (charges and outcomes); None for an empty log."""
    [(end,)] = con.execute(
        """SELECT greatest((SELECT max(created) FROM charges), (SELECT max(created) FROM disputes),
                           (SELECT max(created) FROM early_fraud_warnings),
                           (SELECT max(created) FROM refunds), (SELECT max(created) FROM reviews))"""
    ).fetchall()
    return end  # type: ignore[no-any-return]


def labels_as_of(as_of: datetime | date | str | None, who: str = "the labels") -> datetime | None:
    """``as_of`` as an aware datetime (None stays None): an aware datetime, a date or ISO text, read as the
    backtest and every window bound read them (:func:`payfm.events.schema.time_bound`); else a ConfigError
    naming ``who``'s 'as_of'.

    >>> labels_as_of("2026-03-01", "build_training_set").isoformat()
    '2026-03-01T00:00:00+00:00'
    """
    return time_bound(as_of, f"The 'as_of' of {who}", ConfigError)


def label_horizon_arg(horizon: object, who: str) -> None:
    """Refuse a ``horizon`` that is not a timedelta (days given as a number: ``horizon=60``) with a
    ConfigError naming ``who``, as score_window says it; a timedelta's sign is checked where it is used.

    >>> label_horizon_arg(60, "build_training_set")
    Traceback (most recent call last):
    ...
    payfm.errors.ConfigError: The 'horizon' of build_training_set must be a positive timedelta. Got the int \
60: for days, timedelta(days=60).
    """
    if not isinstance(horizon, timedelta):
        days = (
            f": for days, timedelta(days={horizon!r})"
            if isinstance(horizon, int | float) and not isinstance(horizon, bool)
            else ""
        )
        raise ConfigError(f"The 'horizon' of {who} must be a positive timedelta. Got {kind(horizon)}{days}.")


def fraud_labels(
    con: duckdb.DuckDBPyConnection,
    as_of: datetime | date | str | None = None,
    horizon: timedelta = DEFAULT_HORIZON,
) -> pa.Table:
    """Per charge: ``is_fraud`` (0/1), ``label_time`` (first fraud outcome, if any) and ``mature``.

    ``as_of`` (an aware datetime, a date or ISO text) defaults to the time of the latest event in the log
    (charges and outcomes): the log's "now".
    """
    as_of = labels_as_of(as_of)
    label_horizon_arg(horizon, "the labels")
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
