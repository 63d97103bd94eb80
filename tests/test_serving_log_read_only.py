"""The commands that only read a decision log (`payfm serve export`, `payfm serve prune --dry-run`) leave it
as it is, on either backend: no table added, no journal mode changed; a log without a table they read is
refused, unchanged, by both."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

import test_serving_scorer
from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.serving.decision_log import open_log
from payfm.serving.scorer import Scorer
from payfm.serving.sqlite_log import SQLiteDecisionLog
from services import POSTGRES_URL, require_postgres
from test_serving_prune import _decide

ws = test_serving_scorer.ws  # the fixture: a workspace with a production model and the tiny ruleset


def _older_copy(ws: Workspace, to: Path, *, drop: tuple[str, ...] = ("feature_layouts",)) -> Path:
    """A copy of ``ws``'s decision log as an older payfm, or a copy made with SQLite's backup, leaves it: in
    the rollback-journal mode, without the tables ``drop``."""
    with sqlite3.connect(ws.root / "serving" / "decisions.db") as src, sqlite3.connect(to) as dst:
        src.backup(dst)
    con = sqlite3.connect(to, isolation_level=None)
    try:
        assert con.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
        for table in drop:
            con.execute(f"DROP TABLE {table}")
    finally:
        con.close()
    return to


def _state(path: Path) -> tuple[str, set[str], str]:
    con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        con.close()
    return hashlib.sha256(path.read_bytes()).hexdigest(), tables, mode


def test_export_and_a_dry_run_leave_an_older_sqlite_log_as_it_is(ws: Workspace, tmp_path: Path) -> None:
    s = Scorer.open(ws)
    try:
        _decide(s, ws)
    finally:
        s.close(snapshot=False)
    copy = _older_copy(ws, tmp_path / "older.db")
    before = _state(copy)
    assert "feature_layouts" not in before[1] and before[2] == "delete"
    spec = f"sqlite:///{copy}"
    base = ["-w", str(ws.root), "serve"]
    r = CliRunner().invoke(cli, [*base, "prune", "--keep-days", "30", "--keep-newest", "0", "--dry-run"])
    said = " ".join(r.output.split())
    assert r.exit_code == 0 and "Would prune 3 decisions, 1 review and 2 outcomes" in said, said
    r = CliRunner().invoke(cli, [*base, "prune", "--dry-run", "--decision-log", spec])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, [*base, "export", "--decision-log", spec])
    assert r.exit_code == 0, r.output
    # (they wrote its tables and switched it to WAL: a file the user may only read was refused)
    assert _state(copy) == before
    # a prune writes (in the WAL mode a server's log is in), and only what it prunes: no table added
    args = [*base, "prune", "--keep-days", "30", "--keep-newest", "0", "--decision-log", spec]
    r = CliRunner().invoke(cli, args)
    said = " ".join(r.output.split())
    assert r.exit_code == 0 and "Pruned 3 decisions, 1 review and 2 outcomes" in said, said
    after = _state(copy)
    assert after[0] != before[0] and after[1] == before[1]


def test_a_log_without_its_reviews_is_refused_unchanged_by_both_backends(
    ws: Workspace, tmp_path: Path
) -> None:
    """Prune reads the reviews (an open one keeps its charge): a log without the table is not one it can
    prune, on SQLite as on PostgreSQL (SQLite's was given the table, PostgreSQL's failed midway)."""
    open_log("sqlite", ws.root).close()
    copy = _older_copy(ws, tmp_path / "no-reviews.db", drop=("reviews",))
    before = _state(copy)
    with pytest.raises(ConfigError, match=r"is not a payfm decision log \(missing: reviews\); nothing was"):
        open_log(f"sqlite:///{copy}", ws.root, create=False)
    assert _state(copy) == before
    r = CliRunner().invoke(
        cli, ["-w", str(ws.root), "serve", "prune", "--dry-run", "--decision-log", f"sqlite:///{copy}"]
    )
    assert r.exit_code == 1 and "(missing: reviews)" in r.output and "Traceback" not in r.output

    require_postgres(POSTGRES_URL)
    import psycopg

    from payfm.serving.postgres_log import PostgresDecisionLog

    schema = f"payfm_test_{uuid.uuid4().hex[:8]}"
    try:
        PostgresDecisionLog(POSTGRES_URL, schema=schema).close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
            con.execute(f'DROP TABLE "{schema}".reviews')
        with pytest.raises(ConfigError, match=r"holds no payfm decision log \(missing: reviews\); nothing"):
            PostgresDecisionLog(POSTGRES_URL, schema=schema, create=False)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_a_log_in_a_folder_the_user_may_only_read_is_read(tmp_path: Path) -> None:
    """A log closed cleanly in WAL mode has no -shm file; in a folder the user may not write, SQLite's
    read-only connection cannot make one and refused to read it ("attempt to write a readonly database")."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv (util-linux) to run a reader as an unprivileged user")
    folder = Path(tempfile.mkdtemp(prefix="payfm-ro-"))  # (pytest's tmp_path is root's alone: 0700)
    try:
        log = folder / "d" / "decisions.db"
        SQLiteDecisionLog(log).close()
        assert not Path(f"{log}-shm").exists() and not Path(f"{log}-wal").exists()
        log.chmod(0o444)
        log.parent.chmod(0o555)
        folder.chmod(0o755)
        code = (
            "from pathlib import Path; from payfm.serving.sqlite_log import SQLiteDecisionLog; "
            f"log = SQLiteDecisionLog(Path({str(log)!r}), create=False); "
            "print(log._fetch('SELECT count(*) FROM decisions')[0][0], log.log_id() is not None)"
        )
        user = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c"]
        if subprocess.run([*user, "import payfm"], capture_output=True).returncode != 0:
            pytest.skip("the unprivileged user cannot run this checkout's Python")
        run = subprocess.run([*user, code], capture_output=True, text=True)
        assert run.returncode == 0 and run.stdout.split() == ["0", "True"], run.stderr
    finally:
        log.parent.chmod(0o755)
        shutil.rmtree(folder)
