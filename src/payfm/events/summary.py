"""A summary of a workspace's event log: volumes, authorization, fraud by scenario and label delays.

Everything is one DuckDB query per figure over the workspace views, so it runs on any log size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import duckdb

from payfm.errors import ConfigError
from payfm.events.schema import FRAUD_OUTCOMES_SQL, TABLES, time_bound
from payfm.events.workspace import Workspace, opened


@dataclass(frozen=True)
class DelayStats:
    """Label delay of one outcome type, in days after its charge."""

    events: int
    p10: float | None
    p50: float | None
    p90: float | None
    p99: float | None


@dataclass(frozen=True)
class LogSummary:
    charges: int
    first: str | None
    last: str | None
    merchants: int
    cards: int
    authorized: int
    issuer_declined: int
    blocked: int
    volume_usd: float
    fraud_by_scenario: dict[str, int] = field(default_factory=dict)
    disputes: int = 0
    fraud_disputes: int = 0
    early_fraud_warnings: int = 0
    refunds: int = 0
    labelled_fraud_charges: int = 0
    delays: dict[str, DelayStats] = field(default_factory=dict)
    # table -> (data files, days they cover): more files than days is what `payfm compact` undoes
    files: dict[str, tuple[int, int]] = field(default_factory=dict)
    # The window summarized ([start, end) of the charges' times, UTC; None: unbounded); outcomes are those of
    # its charges, whenever they came.
    window: tuple[datetime | None, datetime | None] = (None, None)

    @property
    def authorization_rate(self) -> float:
        return self.authorized / self.charges if self.charges else 0.0


def _delay(con: duckdb.DuckDBPyConnection, sql_from: str) -> DelayStats:
    row = con.execute(
        f"""
        WITH d AS (SELECT epoch(o.created - c.created) / 86400.0 AS days
                   FROM {sql_from} o JOIN win c USING (charge_id))
        SELECT count(*), quantile_cont(days, 0.1), quantile_cont(days, 0.5),
               quantile_cont(days, 0.9), quantile_cont(days, 0.99) FROM d
        """
    ).fetchall()[0]
    assert row is not None
    return DelayStats(int(row[0]), *(None if v is None else float(v) for v in row[1:]))


def _files_and_days(ws: Workspace, table: str) -> tuple[int, int]:
    files = ws.files(table)
    return len(files), len({f.parent.name for f in files})


def summarize(
    ws: Workspace, start: datetime | date | str | None = None, end: datetime | date | str | None = None
) -> LogSummary:
    """Figures over the log of ``ws`` (see :class:`LogSummary`): its charges created in [start, end) (UTC;
    aware datetimes, dates or ISO texts; None: unbounded) and their outcomes, whenever they came."""
    ws = opened(ws, "summarize")
    lo = time_bound(start, "The summary's start (--from)", ConfigError)
    hi = time_bound(end, "The summary's end (--to)", ConfigError)
    if lo is not None and hi is not None and hi <= lo:
        raise ConfigError(
            f"The summary's window must end after it starts. Got --from {lo.isoformat()} and --to "
            f"{hi.isoformat()}."
        )
    con = ws.connect()
    try:
        # (a view takes no parameters: the bounds are datetimes time_bound made, written as literals)
        bounds = [
            f"created {op} '{t.isoformat()}'::TIMESTAMPTZ"
            for op, t in ((">=", lo), ("<", hi))
            if t is not None
        ]
        con.execute(
            "CREATE TEMP VIEW win AS SELECT * FROM charges"
            + (f" WHERE {' AND '.join(bounds)}" if bounds else "")
        )
        row = con.execute(
            """
            SELECT count(*), strftime(min(created), '%Y-%m-%d %H:%M'),
                   strftime(max(created), '%Y-%m-%d %H:%M'),
                   count(DISTINCT merchant_id), count(DISTINCT card_fingerprint),
                   count(*) FILTER (outcome = 'authorized'), count(*) FILTER (outcome = 'issuer_declined'),
                   count(*) FILTER (outcome = 'blocked'),
                   coalesce(sum(amount_usd) FILTER (outcome = 'authorized'), 0) / 100.0
            FROM win
            """
        ).fetchall()[0]
        assert row is not None
        by_scenario = dict(
            con.execute(
                "SELECT scenario, count(*) FROM win WHERE scenario IS NOT NULL GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
        )
        # Outcomes of the window's charges (of the whole log: every outcome, one of a charge it lacks too)
        mine = " AND charge_id IN (SELECT charge_id FROM win)" if bounds else ""
        counts = con.execute(
            f"""
            SELECT (SELECT count(*) FROM disputes WHERE true{mine}),
                   (SELECT count(*) FROM disputes WHERE reason = 'fraudulent'{mine}),
                   (SELECT count(*) FROM early_fraud_warnings WHERE true{mine}),
                   (SELECT count(*) FROM refunds WHERE true{mine}),
                   (SELECT count(DISTINCT charge_id) FROM ({FRAUD_OUTCOMES_SQL}) WHERE true{mine})
            """
        ).fetchall()[0]
        assert counts is not None
        delays = {
            "fraudulent disputes": _delay(con, "(SELECT * FROM disputes WHERE reason = 'fraudulent')"),
            "early fraud warnings": _delay(con, "early_fraud_warnings"),
            "refunds": _delay(con, "refunds"),
        }
        return LogSummary(
            charges=int(row[0]),
            first=row[1],
            last=row[2],
            merchants=int(row[3]),
            cards=int(row[4]),
            authorized=int(row[5]),
            issuer_declined=int(row[6]),
            blocked=int(row[7]),
            volume_usd=float(row[8]),
            fraud_by_scenario={str(k): int(v) for k, v in by_scenario.items()},
            disputes=int(counts[0]),
            fraud_disputes=int(counts[1]),
            early_fraud_warnings=int(counts[2]),
            refunds=int(counts[3]),
            labelled_fraud_charges=int(counts[4]),
            delays=delays,
            files={t: _files_and_days(ws, t) for t in TABLES},
            window=(lo, hi),
        )
    finally:
        con.close()
