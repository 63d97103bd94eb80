"""The workspace's rules database: ``rules.db`` (SQLite), holding lists, their audit trail and rulesets.

Every write runs in one transaction (``with connect(ws) as con``): it commits on a clean exit or rolls back.
"""

from __future__ import annotations

import getpass
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from payfm.events.workspace import Workspace

SCHEMA = """
CREATE TABLE IF NOT EXISTS lists (
    name TEXT PRIMARY KEY, type TEXT NOT NULL, created TEXT NOT NULL, author TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS list_values (
    list TEXT NOT NULL REFERENCES lists(name), value TEXT NOT NULL, PRIMARY KEY (list, value)
);
CREATE TABLE IF NOT EXISTS list_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, list TEXT NOT NULL, at TEXT NOT NULL, author TEXT NOT NULL,
    action TEXT NOT NULL, value TEXT
);
CREATE TABLE IF NOT EXISTS rulesets (
    version INTEGER PRIMARY KEY, created TEXT NOT NULL, author TEXT NOT NULL, sha256 TEXT NOT NULL,
    text TEXT NOT NULL, note TEXT NOT NULL, feature_set TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS active_ruleset (
    id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL REFERENCES rulesets(version)
);
"""


@contextmanager
def connect(ws: Workspace) -> Iterator[sqlite3.Connection]:
    """A connection to ``rules.db`` (created on first use); the block is one transaction."""
    con = sqlite3.connect(ws.root / "rules.db", timeout=10.0)
    try:
        con.execute("PRAGMA foreign_keys = ON")
        con.executescript(SCHEMA)
        with con:
            yield con
    finally:
        con.close()


def now_iso(at: datetime | None = None) -> str:
    """``at`` (default: the wall clock, for audit records only) as an ISO-8601 UTC string."""
    return (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")


def default_author() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"
