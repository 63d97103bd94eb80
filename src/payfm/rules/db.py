"""The workspace's rules database: ``rules.db`` (SQLite), holding lists, their audit trail, rulesets and the
log of their activations.

Every write runs in one transaction (``with connect(ws) as con``): it commits on a clean exit or rolls back.
A write that first reads what it changes (the active ruleset, to log it as the previous one) takes the write
lock at the start (``connect(ws, immediate=True)``), so no other writer slips in between.
"""

from __future__ import annotations

import getpass
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from payfm.errors import sqlite_file
from payfm.events.cards import shown_text
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
    action TEXT NOT NULL, value TEXT, note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS rulesets (
    version INTEGER PRIMARY KEY, created TEXT NOT NULL, author TEXT NOT NULL, sha256 TEXT NOT NULL,
    text TEXT NOT NULL, note TEXT NOT NULL, feature_set TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS active_ruleset (
    id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL REFERENCES rulesets(version)
);
-- Every change of active_ruleset, written in its transaction. action: 'apply' (a version saved and made
-- active), 'activate' (a stored version made active), 'rollback' (rollback_of: the activation it undid).
-- previous: the version active before (NULL: none was). Workspaces made before this log have none of the
-- activations made before it.
CREATE TABLE IF NOT EXISTS ruleset_activations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, author TEXT NOT NULL,
    version INTEGER NOT NULL REFERENCES rulesets(version), previous INTEGER REFERENCES rulesets(version),
    note TEXT NOT NULL, action TEXT NOT NULL CHECK (action IN ('apply', 'activate', 'rollback')),
    rollback_of INTEGER REFERENCES ruleset_activations(id)
);
"""


@contextmanager
def connect(ws: Workspace, *, immediate: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection to ``rules.db`` (created on first use); the block is one transaction. ``immediate``
    takes the write lock at its start (``BEGIN IMMEDIATE``): what the block reads stays true until it
    commits (another writer waits, up to the 10 s busy timeout)."""
    path = ws.root / "rules.db"
    with sqlite_file(path, "The rules database"):  # (damaged, or a write the system refuses: one line)
        con = sqlite3.connect(path, timeout=10.0)
        try:
            con.execute("PRAGMA foreign_keys = ON")
            con.executescript(SCHEMA)
            _migrate(con)
            with con:
                if immediate:
                    con.execute("BEGIN IMMEDIATE")
                yield con
        finally:
            con.close()


def _migrate(con: sqlite3.Connection) -> None:
    """Columns added since a workspace's ``rules.db`` was made: a list change's ``note`` (empty for the
    changes made before)."""
    columns = {row[1] for row in con.execute("PRAGMA table_info(list_audit)")}
    if "note" not in columns:
        try:
            with con:
                con.execute("ALTER TABLE list_audit ADD COLUMN note TEXT NOT NULL DEFAULT ''")
        except sqlite3.OperationalError as e:  # another process added it between the look and the change
            if "duplicate column" not in str(e):
                raise


def now_iso(at: datetime | None = None) -> str:
    """``at`` (default: the wall clock, for audit records only) as an ISO-8601 UTC string."""
    return (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")


def default_author() -> str:
    """The login name, as the author of a list change or a ruleset version given none: stored and printed,
    so escaped and without a card number (:func:`payfm.events.cards.shown_text`; an audit logged in as
    'ana 4111 1111 1111 1111')."""
    try:
        return shown_text(getpass.getuser(), 64) or "unknown"
    except Exception:  # no user name in some containers
        return "unknown"
