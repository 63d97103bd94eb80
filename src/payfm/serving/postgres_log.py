"""The production decision log: PostgreSQL through psycopg 3 (the same tables as the SQLite log).

A commit returns once PostgreSQL has flushed its WAL (``synchronous_commit`` on, the server default), so an
acknowledged decision is durable; ``durability="os"`` sets ``synchronous_commit = off`` for the log's
connections (a commit survives a crash of the serving process, not of the database server). Several
serving processes may share one database (with the Redis state).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from payfm.errors import ConfigError, scrubbed, shown_url
from payfm.serving.decision_log import LOG_TABLES, DecisionLog, new_log_id

T = TypeVar("T")

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS decisions (charge_id TEXT PRIMARY KEY, seq BIGINT NOT NULL, "
    "created_us BIGINT NOT NULL, decided_at TEXT NOT NULL, outcome TEXT NOT NULL, charge TEXT NOT NULL, "
    "decision TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS decisions_seq ON decisions (seq)",
    "CREATE TABLE IF NOT EXISTS outcomes (kind TEXT NOT NULL, outcome_id TEXT NOT NULL, "
    "charge_id TEXT NOT NULL, seq BIGINT NOT NULL, created_us BIGINT NOT NULL, source TEXT, "
    "applied INTEGER NOT NULL, appended INTEGER NOT NULL, payload TEXT NOT NULL, received_at TEXT NOT NULL, "
    "PRIMARY KEY (kind, outcome_id))",
    "CREATE INDEX IF NOT EXISTS outcomes_seq ON outcomes (seq)",
    "CREATE INDEX IF NOT EXISTS outcomes_charge ON outcomes (charge_id)",
    "CREATE TABLE IF NOT EXISTS reviews (charge_id TEXT PRIMARY KEY, seq BIGINT NOT NULL, "
    "opened_at TEXT NOT NULL, status TEXT NOT NULL, rule TEXT, risk_score INTEGER, reason TEXT, note TEXT, "
    "closed_at TEXT, label INTEGER)",
    "CREATE INDEX IF NOT EXISTS reviews_status ON reviews (status, seq)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS feature_layouts (id TEXT PRIMARY KEY, names TEXT NOT NULL)",
]


# The advisory lock (a 64-bit key of payfm's own) under which a log creates its schema and tables.
_SCHEMA_LOCK = 0x7061_7966_6D5F_6C67  # "payfm_lg"


def _said(e: Exception, url: str) -> str:
    """psycopg's message on one line (it spans lines: the cause, then a hint), without the URL's password
    (:func:`payfm.errors.scrubbed`: libpq does not quote it, but quotes a URL it cannot parse)."""
    return scrubbed(" ".join(str(e).split()) or type(e).__name__, url)


# libpq's connection options a log's connections take unless its URL gives them: TCP keepalives and a
# limit on unacknowledged data (ms), so that a connection whose server vanished (a failover that black-holes
# the open connections) fails within about 25 s instead of waiting in recv for good; then the next statement
# reconnects.
CONNECT_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "15000",
}

# The columns every payfm's tables had, keys and indexes: a table of one of their names without them is
# another application's.
COLUMNS = {
    "decisions": {"charge_id", "seq", "created_us"},
    "outcomes": {"kind", "outcome_id", "charge_id", "seq"},
    "reviews": {"charge_id", "seq", "status"},
    "meta": {"key", "value"},
    "feature_layouts": {"id", "names"},
}

# What a complete log holds: its tables and indexes (SCHEMA), and its id in meta.
RELATIONS = tuple(re.findall(r"IF NOT EXISTS (\w+)", " ".join(SCHEMA)))
# What makes a database a decision log, for the commands that only read one (an older payfm's lacks a table
# or index added since, feature_layouts: a server adds them at its next start)
ESSENTIAL = (*LOG_TABLES, "meta's log_id")


def _foreign(con: psycopg.Connection[Any]) -> list[tuple[str, str, list[str]]]:
    """``(schema, table, missing columns)`` of each table the connection's search path finds under a name
    of payfm's (:data:`COLUMNS`) that lacks payfm's columns: another application's table."""
    found = []
    for table, columns in COLUMNS.items():
        row = con.execute(
            "SELECT n.nspname, array_agg(a.attname::text) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE c.oid = to_regclass(%s) GROUP BY n.nspname",
            (table,),
        ).fetchone()
        if row is not None and (lacks := sorted(columns - set(row[1] or ()))):
            found.append((str(row[0]), table, lacks))
    return found


def _missing(con: psycopg.Connection[Any]) -> list[str]:
    """The relations of :data:`RELATIONS` that the connection's search path lacks, and ``meta's log_id`` when
    its row is missing (empty: the log is complete)."""
    found = con.execute(
        "SELECT " + ", ".join("to_regclass(%s) IS NOT NULL" for _ in RELATIONS), RELATIONS
    ).fetchone()
    missing = [name for name, there in zip(RELATIONS, found or (), strict=True) if not there]
    if "meta" not in missing and con.execute("SELECT 1 FROM meta WHERE key = 'log_id'").fetchone() is None:
        missing.append("meta's log_id")
    return missing


class PostgresDecisionLog(DecisionLog):
    """``PostgresDecisionLog("postgresql://user@host:5432/db")``."""

    placeholder = "%s"
    remote = True

    def __init__(
        self, url: str, *, schema: str | None = None, durability: str = "fsync", create: bool = True
    ) -> None:
        """``create``: make the tables when they are missing (a server's first start); without it a database
        that holds no decision log is refused, unchanged (`payfm serve export`, `payfm serve prune`)."""
        super().__init__()
        self.url = url
        self.durability = durability
        self.schema = schema  # a PostgreSQL schema to keep the tables in (tests use a fresh one)
        try:
            first = self._connect()
        except psycopg.OperationalError as e:
            raise ConfigError(
                f"The PostgreSQL decision log at {shown_url(url)} is not reachable: {_said(e, url)}"
            ) from None
        except psycopg.Error as e:  # libpq refused the URL itself (ProgrammingError): its message quotes it
            said, shown = _said(e, url), shown_url(url)
            raise ConfigError(f"The PostgreSQL decision log URL {shown} is not valid: {said}") from None
        with first as con:
            try:
                if foreign := _foreign(con):
                    schema, table, lacks = foreign[0]
                    raise ConfigError(
                        f"The database at {shown_url(url)} holds a table {table!r} in schema {schema!r} "
                        f"that is not payfm's (it lacks the columns {', '.join(lacks)}); nothing was "
                        "changed. Keep the decision log in a schema of its own: create one (CREATE SCHEMA "
                        "payfm) and name it in the URL's options "
                        "(postgresql://user@host/db?options=-csearch_path%3Dpayfm), or use another database."
                    )
                if not (missing := _missing(con)):
                    return  # (no DDL: a role with only SELECT, INSERT, UPDATE and DELETE on the tables works)
                if not create and (essential := [m for m in missing if m in ESSENTIAL]):
                    raise ConfigError(
                        f"The database at {shown_url(url)} holds no payfm decision log (missing: "
                        f"{', '.join(essential)}); nothing was changed. A server creates it at its first "
                        "start (payfm serve --decision-log URL); check the URL (database, schema)."
                    )
                if not create:  # a log of an older payfm, without a table or index added since: read as is
                    return
                with con.transaction():
                    # Servers started together on a new database would race on CREATE ... IF NOT EXISTS (a
                    # unique violation in the catalog): the first takes the lock and creates, the others
                    # find the tables.
                    con.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    for stmt in SCHEMA:
                        con.execute(stmt)
                    con.execute(
                        "INSERT INTO meta (key, value) VALUES ('log_id', %s) ON CONFLICT (key) DO NOTHING",
                        (new_log_id(),),
                    )
            except psycopg.Error as e:  # a role that may not create (permission denied, a read-only replica)
                raise ConfigError(
                    f"The PostgreSQL decision log at {shown_url(url)} cannot be set up: {_said(e, url)}. Its "
                    "tables are created once, by the first server, with a role that may create tables in the "
                    "schema; later, a role with SELECT, INSERT, UPDATE and DELETE on them is enough."
                ) from None

    def _connect(self) -> psycopg.Connection[Any]:
        given = conninfo_to_dict(self.url)
        defaults = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in given}  # (the URL's own win)
        con = psycopg.connect(make_conninfo(self.url, **defaults), autocommit=True)
        if self.schema:
            with con.transaction():
                con.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                con.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            con.execute(f'SET search_path TO "{self.schema}"')
        if self.durability == "os":
            con.execute("SET synchronous_commit = off")
        return con

    _lost = (psycopg.OperationalError,)

    def _usable(self, con: Any) -> bool:
        return con is not None and not con.closed and not con.broken

    def _interrupt(self, con: Any) -> bool:
        """Shut down the connection's socket (a duplicate of its descriptor: the driver's own is left to the
        thread inside it): the statement waiting on it fails at once with an OperationalError, and the
        connection is broken, so the next statement opens another."""
        with suppress(psycopg.Error, OSError):
            sock = socket.socket(fileno=os.dup(con.pgconn.socket))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()
            return True
        return False

    def _transaction(self, con: Any, work: Callable[[Any], T]) -> T:
        with con.transaction(), con.cursor() as cur:
            return work(cur)
