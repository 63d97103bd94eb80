"""Found by a review of the decision log's operations (2026-12-07): a PostgreSQL role that may not create
tables (the usual least-privilege role of a server, a read-only replica) got a traceback, though every table
was there; `payfm serve export` and `prune --dry-run` created a decision log's tables in whatever they were
pointed at (another database, the key store's file) and an archive folder; a non-C collation made
`events_after(seq)` return seq's own events; and a server joining a Redis state loaded after an export
replayed its whole decision log, warning of a prune, at every start."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.serving.export import export_charges
from payfm.serving.scorer import Scorer
from payfm.serving.shared_state import catch_up
from payfm.serving.sqlite_log import SQLiteDecisionLog
from services import POSTGRES_URL, REDIS_SCRATCH_URL, require_postgres
from test_decision_log import _insert
from test_serving_scorer import charge


def _admin() -> Any:
    import psycopg

    return psycopg.connect(POSTGRES_URL, autocommit=True)


@pytest.fixture()
def schema() -> Iterator[str]:
    """A fresh schema, dropped after the test with the roles it made (``payfm_role_<hex>``)."""
    require_postgres()
    name = f"payfm_test_{uuid.uuid4().hex[:8]}"
    with _admin() as con:
        con.execute(f'CREATE SCHEMA "{name}"')
    yield name
    with _admin() as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        for (role,) in con.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"{name}_%",)):
            con.execute(f'DROP OWNED BY "{role}"')
            con.execute(f'DROP ROLE "{role}"')


def _role(schema: str, name: str, grants: str, read_only: bool = False) -> str:
    """A login role of the test's (trust auth: no password) whose tables are ``schema``'s; its URL."""
    role = f"{schema}_{name}"
    with _admin() as con:
        con.execute(f'CREATE ROLE "{role}" LOGIN')
        con.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        if grants:
            con.execute(f'GRANT {grants} ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        if read_only:
            con.execute(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
    host = POSTGRES_URL.split("@", 1)[1]
    return f"postgresql://{role}@{host}?options=-csearch_path%3D{schema}"


def _tables(schema: str) -> list[str]:
    with _admin() as con:
        rows = con.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()
    return sorted(r[0] for r in rows)


def test_a_role_without_create_opens_a_complete_log_and_is_refused_in_one_line_on_an_empty_one(
    schema: str,
) -> None:
    from payfm.serving.postgres_log import PostgresDecisionLog

    owner = PostgresDecisionLog(POSTGRES_URL, schema=schema)  # the first server, as the tables' owner
    log_id = owner.log_id()
    owner.close()
    dml = _role(schema, "dml", "SELECT, INSERT, UPDATE, DELETE")
    server = PostgresDecisionLog(dml)  # a server's role: no CREATE on the schema
    try:
        assert server.log_id() == log_id
    finally:
        server.close()
    replica = _role(schema, "ro", "SELECT", read_only=True)
    for create in (True, False):  # a read-only replica: export and a dry run read it
        log = PostgresDecisionLog(replica, create=create)
        assert log.log_id() == log_id
        log.close()

    empty = f"{schema}_empty"
    with _admin() as con:
        con.execute(f'CREATE SCHEMA "{empty}"')
    try:
        url = _role(schema, "none", "").replace(f"search_path%3D{schema}", f"search_path%3D{empty}")
        with _admin() as con:
            con.execute(f'GRANT USAGE ON SCHEMA "{empty}" TO "{schema}_none"')
        with pytest.raises(ConfigError) as e:
            PostgresDecisionLog(url)
        said = str(e.value)
        assert (
            said.startswith(f"The PostgreSQL decision log at {url} cannot be set up: ") and "\n" not in said
        )
        assert "permission denied for schema" in said and "created once, by the first server" in said
        with pytest.raises(ConfigError, match=r"holds no payfm decision log \(missing: decisions, "):
            PostgresDecisionLog(url, create=False)
        assert _tables(empty) == []
    finally:
        with _admin() as con:
            con.execute(f'DROP SCHEMA "{empty}" CASCADE')


def test_export_and_a_dry_run_refuse_what_holds_no_decision_log_and_change_nothing(
    tmp_path: Path, schema: str
) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    other = tmp_path / "keys_copy.db"  # a SQLite file of something else
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE keys (name TEXT)")
    before = other.read_bytes()
    runner = CliRunner()
    for args in (["serve", "export"], ["serve", "prune", "--dry-run"]):
        result = runner.invoke(cli, ["-w", str(ws.root), *args, "--decision-log", f"sqlite:///{other}"])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert f"{other} is not a payfm decision log (missing: decisions, outcomes, reviews, meta);" in (
            result.output
        ), result.output
        assert "nothing was changed" in result.output
        url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
        result = runner.invoke(cli, ["-w", str(ws.root), *args, "--decision-log", url])
        assert result.exit_code == 1 and "holds no payfm decision log" in result.output, result.output
    assert other.read_bytes() == before and _tables(schema) == []
    assert not (ws.root / "serving" / "archive").exists()


def test_a_dry_run_prune_writes_no_archive_folder(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    rulesets.save(ws, "bad_country: block if :ip_country: = 'RU'\n", activate=True, set_name="default")
    s = Scorer.open(ws)
    s.score(charge(1))
    s.close(snapshot=False)
    result = CliRunner().invoke(cli, ["-w", str(ws.root), "serve", "prune", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert not (ws.root / "serving" / "archive").exists()


def test_events_after_starts_after_the_events_of_its_sequence_number_in_any_collation(schema: str) -> None:
    """A sentinel tie key "~" sorted after every key in the C collation only: in en-US it sorts first."""
    from payfm.serving.postgres_log import PostgresDecisionLog

    log = PostgresDecisionLog(POSTGRES_URL, schema=schema)
    try:
        with _admin() as con:
            con.execute(
                f'ALTER TABLE "{schema}".decisions ALTER COLUMN charge_id TYPE TEXT COLLATE "en-US-x-icu"'
            )
        _insert(log, [(f"ch_{s}_{k}", s) for s in (1, 2, 3) for k in range(3)])
        for batch in (1, 2, 5000):
            got = [(s, p["charge_id"]) for s, _, p in log.events_after(2, batch=batch)]
            assert got == [(3, "ch_3_0"), (3, "ch_3_1"), (3, "ch_3_2")], batch
    finally:
        log.close()


def test_a_server_joining_a_state_loaded_after_an_export_finds_nothing_missing(
    tmp_path: Path, redis_scratch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The exported charges were loaded from the event log with their results: their authorization results
    take no claim then, and every joining server took them for missing."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    rulesets.save(ws, "bad_country: block if :ip_country: = 'RU'\n", activate=True, set_name="default")
    s = Scorer.open(ws)
    for i in (1, 2, 3):
        s.score(charge(i))
    s.record_authorization("ch_1", "issuer_declined", "insufficient_funds")
    s.record_authorization("ch_2", "authorized")
    s.close(snapshot=False)
    assert export_charges(ws, s.log).exported == 2  # (ch_3 has no result yet)
    first = Scorer.open(ws, state=REDIS_SCRATCH_URL)  # loads it: the event log, then the decision log
    try:
        with caplog.at_level(logging.INFO, "payfm.serving"):
            second = Scorer.open(
                Workspace.open(shutil.copytree(ws.root, tmp_path / "b")), state=REDIS_SCRATCH_URL
            )
        try:
            assert "caught up" not in caplog.text and "pruned" not in caplog.text, caplog.text
            assert catch_up(second, second.online.store) == 0  # type: ignore[arg-type]
        finally:
            second.close(snapshot=False)
    finally:
        first.close(snapshot=False)


def test_sqlite_refuses_a_file_that_is_no_log_without_creating_tables(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE decisions (x)")
    with pytest.raises(
        ConfigError, match=r"is not a payfm decision log \(missing: outcomes, reviews, meta\)"
    ):
        SQLiteDecisionLog(path, create=False)
    with sqlite3.connect(path) as con:
        assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["decisions"]
    with pytest.raises(ConfigError, match=r"No decision log at .*: the file does not exist"):
        SQLiteDecisionLog(tmp_path / "none.db", create=False)
    assert not (tmp_path / "none.db").exists()


def test_a_log_of_an_older_payfm_is_read_without_the_tables_added_since(tmp_path: Path, schema: str) -> None:
    """A log written before feature_layouts existed (an older payfm): export and prune read it (a review
    found them refused as "not a payfm decision log"), on a read-only replica too; a server adds the table."""
    from payfm.serving.postgres_log import PostgresDecisionLog

    path = tmp_path / "old.db"
    SQLiteDecisionLog(path).close()
    with sqlite3.connect(path) as con:
        con.execute("DROP TABLE feature_layouts")
    SQLiteDecisionLog(path, create=False).close()
    PostgresDecisionLog(POSTGRES_URL, schema=schema).close()
    with _admin() as con:
        con.execute(f'DROP TABLE "{schema}".feature_layouts')
    replica = _role(schema, "old", "SELECT", read_only=True)
    PostgresDecisionLog(replica, create=False).close()
    assert "feature_layouts" not in _tables(schema)  # (read as it is)
    PostgresDecisionLog(POSTGRES_URL, schema=schema).close()  # a server's start adds it
    assert "feature_layouts" in _tables(schema)
