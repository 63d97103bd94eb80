"""The embedded decision log: one SQLite file in the workspace, WAL mode, ``synchronous=FULL``.

FULL makes every commit fsync the write-ahead log, so a decision acknowledged to a client survives a kill -9
or a power cut; the group commit of :mod:`payfm.serving.decision_log` shares one fsync between the
concurrent requests of a batch. With ``durability="os"`` the log runs ``synchronous=NORMAL``: a commit is
written to the WAL file (in the operating system's page cache) before it returns, so it survives a kill -9
of the server but not a power cut; no fsync per commit (WAL checkpoints still fsync).

Checkpoints (copying the write-ahead log into the database file, then an fsync) run on a background thread
every :data:`CHECKPOINT_EVERY_S` (``PRAGMA wal_checkpoint(PASSIVE)``: it never waits for the writer), so
the commits that acknowledge decisions rarely do one: a checkpoint on the commit path (SQLite's automatic
one, every 1,000 pages, ~600 decisions) delayed every request waiting on that commit. The automatic
checkpoint stays as the bound on the log's size; it finds little left to copy.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from payfm.errors import ConfigError, sqlite_file
from payfm.serving.decision_log import LOG_TABLES, DecisionLog, new_log_id

log = logging.getLogger("payfm.serving")
CHECKPOINT_EVERY_S = 0.2
# A decision's row is about 2.3 KB (its charge, its decision with its feature values): one fits a page of
# SQLite's default 4 KB, half of it left empty; three fit one of 8 KB (2.8 KB a row on disk against 4.2 KB,
# decisions committed as fast: BENCHMARKS.md). Larger pages gain little more and write more per commit.
PAGE_SIZE = 8192
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    charge_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, created_us INTEGER NOT NULL, decided_at TEXT NOT NULL,
    outcome TEXT NOT NULL, charge TEXT NOT NULL, decision TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_seq ON decisions (seq);
CREATE TABLE IF NOT EXISTS outcomes (
    kind TEXT NOT NULL, outcome_id TEXT NOT NULL, charge_id TEXT NOT NULL, seq INTEGER NOT NULL,
    created_us INTEGER NOT NULL, source TEXT, applied INTEGER NOT NULL, appended INTEGER NOT NULL,
    payload TEXT NOT NULL, received_at TEXT NOT NULL, PRIMARY KEY (kind, outcome_id));
CREATE INDEX IF NOT EXISTS outcomes_seq ON outcomes (seq);
CREATE INDEX IF NOT EXISTS outcomes_charge ON outcomes (charge_id);
CREATE TABLE IF NOT EXISTS reviews (
    charge_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, opened_at TEXT NOT NULL, status TEXT NOT NULL,
    rule TEXT, risk_score INTEGER, reason TEXT, note TEXT, closed_at TEXT, label INTEGER);
CREATE INDEX IF NOT EXISTS reviews_status ON reviews (status, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- the names of decisions' features, once (payfm.serving.decision_codec)
CREATE TABLE IF NOT EXISTS feature_layouts (id TEXT PRIMARY KEY, names TEXT NOT NULL);
"""


class SQLiteDecisionLog(DecisionLog):
    """``SQLiteDecisionLog(path)``; reads use one connection per thread, writes the group-commit thread's."""

    def __init__(self, path: Path, *, durability: str = "fsync", create: bool = True) -> None:
        """``create``: make the file and its tables when they are missing (a server's first start); without
        it a file that is not a decision log is refused, unchanged (`payfm serve export`, `prune`), and a log
        is read through read-only connections, its tables and journal mode as they are (a file the user may
        only read, an older payfm's log): only a write (a prune's) changes it."""
        super().__init__()
        self.path = Path(path)
        self.durability = durability
        self.url = f"sqlite:///{self.path}"
        self.create = create
        if not create:
            self._check_is_log()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite_file(self.path, "The decision log"):
                con = self._connect()
                try:
                    con.executescript(SCHEMA)
                    con.execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES ('log_id', ?)", (new_log_id(),)
                    )
                finally:
                    con.close()
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None

    def _check_is_log(self) -> None:
        """Raise unless :attr:`path` is a decision log (its tables and its id), read without changing it."""
        if not self.path.is_file():
            raise ConfigError(f"No decision log at {self.path}: the file does not exist.")
        with sqlite_file(self.path, "The decision log"):
            con = self._read_only()
            try:
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                missing = [t for t in LOG_TABLES if t not in tables]  # (one added since: a server adds it)
                if not missing and con.execute("SELECT 1 FROM meta WHERE key = 'log_id'").fetchone() is None:
                    missing.append("meta's log_id")
            finally:
                con.close()
        if missing:
            raise ConfigError(
                f"{self.path} is not a payfm decision log (missing: {', '.join(missing)}); nothing was "
                "changed. `payfm serve` writes its log to the workspace's serving/decisions.db, or where "
                "--decision-log says."
            )

    def start(self) -> None:
        """Start the group-commit writer and the background checkpointer (again after :meth:`close`)."""
        super().start()
        if self._checkpointer is None:
            self._stop = threading.Event()
            self._checkpointer = threading.Thread(
                target=self._checkpoints, args=(self._stop,), name="payfm-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def _checkpoints(self, stop: threading.Event) -> None:
        try:
            con = self._connect()
        except sqlite3.Error as e:  # the commit path's automatic checkpoint still runs
            log.warning("no background checkpoints of %s: %s", self.path, e)
            return
        try:
            while not stop.wait(CHECKPOINT_EVERY_S):
                try:
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as e:  # e.g. the disk is full: the commit path's checkpoint still runs
                    log.warning("background checkpoint of %s failed: %s", self.path, e)
        finally:
            con.close()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._stop.set()
            self._checkpointer.join(timeout=30)
            self._checkpointer = None
        super().close()

    def free_bytes(self) -> int | None:
        """The file's free pages (SQLite reuses them for new rows; the file does not shrink)."""
        pages, size = (self._fetch(f"PRAGMA {name}")[0][0] for name in ("freelist_count", "page_size"))
        return int(pages) * int(size)

    def _read_only(self) -> sqlite3.Connection:
        """A connection that cannot write. A log in WAL mode whose folder the user may not write, closed
        cleanly (no -wal file: no writer has it open), has no -shm file and cannot make one: SQLite refuses to
        read it so ("attempt to write a readonly database"); it is read as immutable then, which it is."""
        uri = self.path.resolve().as_uri()
        con = sqlite3.connect(
            uri + "?mode=ro", uri=True, timeout=30, isolation_level=None, check_same_thread=False
        )
        try:
            con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.OperationalError as e:
            con.close()
            if "readonly" not in str(e) or Path(f"{self.path}-wal").exists():
                raise
            con = sqlite3.connect(
                uri + "?mode=ro&immutable=1", uri=True, isolation_level=None, check_same_thread=False
            )
        return con

    def _connect_reader(self) -> sqlite3.Connection:
        return self._connect() if self.create else self._read_only()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        con.execute(f"PRAGMA page_size={PAGE_SIZE}")  # (a new file's; an existing file keeps its own)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=" + ("FULL" if self.durability == "fsync" else "NORMAL"))
        return con

    def _transaction(self, con: Any, work: Callable[[Any], T]) -> T:
        cur = con.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            out = work(cur)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return out
