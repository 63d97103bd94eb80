"""The decision service under a PostgreSQL decision log that fails (found by a review of `payfm serve` under
backend failure): a failover that black-holes the open connections, a failover's seconds down, a stall
while a client retries a decided charge, a stop with the log stalled, a database holding another
application's ``decisions`` table.

PostgreSQL is reached through a TCP proxy of the test's own (:class:`services.Proxy`), whose connections can
be held (nothing forwarded: a stalled backend), stranded (the open ones black-holed for good, new ones
passing: a failover) or reset (every connection closed, new ones closed at once: the seconds a failover is
down)."""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.serving.decision_log import DecisionRecord
from payfm.serving.sqlite_log import SQLiteDecisionLog
from services import POSTGRES_URL, Proxy, require_postgres


@pytest.fixture()
def pg() -> Iterator[tuple[Proxy, str]]:
    """A proxy to the test PostgreSQL and a fresh schema, dropped after the test."""
    require_postgres()
    import psycopg

    proxy, schema = Proxy(POSTGRES_URL, 5432), f"payfm_test_{uuid.uuid4().hex[:8]}"
    yield proxy, schema
    proxy.close()
    with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _record(i: int) -> DecisionRecord:
    return DecisionRecord.of(i, f"ch_{i}", i, "2026-01-01T00:00:00+00:00", "authorized", {}, {"n": i}, False)


def test_log_connections_take_tcp_keepalives_unless_the_url_gives_its_own() -> None:
    """Without keepalives nor tcp_user_timeout, a connection whose server vanished waited in recv for
    good."""
    require_postgres()
    from psycopg.conninfo import conninfo_to_dict

    from payfm.serving.postgres_log import PostgresDecisionLog

    schema = f"payfm_test_{uuid.uuid4().hex[:8]}"
    log = PostgresDecisionLog(POSTGRES_URL, schema=schema)
    try:
        with log._connect() as con:
            given = conninfo_to_dict(con.info.dsn)
        assert given["keepalives"] == "1" and given["keepalives_idle"] == "10", given
        assert given["keepalives_interval"] == "5" and given["keepalives_count"] == "3", given
        assert given["tcp_user_timeout"] == "15000", given
        own = PostgresDecisionLog(f"{POSTGRES_URL}?keepalives_idle=30&tcp_user_timeout=0", schema=schema)
        with own._connect() as con:
            given = conninfo_to_dict(con.info.dsn)
        assert given["keepalives_idle"] == "30" and given["tcp_user_timeout"] == "0", given  # the URL's win
        assert given["keepalives_count"] == "3", given
    finally:
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_a_write_and_a_read_on_black_holed_connections_go_on_on_new_ones(
    pg: tuple[Proxy, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A failover that black-holes the open connections: the writer thread and the health probe waited in
    recv for good (every later decision a 503 until a restart). The watchdog shuts down a connection whose
    statement waited longer than the commit timeout (30 s; 1 s here); the batch goes on a new one."""
    from payfm.serving.postgres_log import PostgresDecisionLog

    proxy, schema = pg
    log = PostgresDecisionLog(proxy.url, schema=schema)
    log.stalled_s = 1.0
    try:
        log.start()
        assert log.write(_record(1)) == {"n": 1}
        assert log.get_decision("ch_1") == {"n": 1}  # (a read connection, idle in the pool)
        proxy.strand()
        t0 = time.monotonic()
        assert log.write(_record(2), timeout=15) == {"n": 2}  # (before: no answer, ever)
        assert log.get_decision("ch_2") == {"n": 2}
        assert time.monotonic() - t0 < 10
        assert "answered no statement for 1 s" in caplog.text
    finally:
        log.close()


def test_a_batch_is_tried_again_while_a_failover_refuses_connections(pg: tuple[Proxy, str]) -> None:
    """The one retry on a new connection fell in a failover's seconds down, so none of the batch's records
    was logged (their requests 503s, though the online state had counted them): it is tried again for a few
    seconds."""
    from payfm.serving.postgres_log import PostgresDecisionLog

    proxy, schema = pg
    log = PostgresDecisionLog(proxy.url, schema=schema)
    try:
        log.start()
        assert log.write(_record(1)) == {"n": 1}
        proxy.reset(for_s=1.5)  # the connections closed, and new ones for 1.5 s
        assert log.write(_record(2), timeout=15) == {"n": 2}  # (before: OperationalError)
        assert log.count("decisions") == 2
    finally:
        log.close()


def test_a_stop_with_the_writer_stalled_says_how_many_records_it_left_unwritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop with a stalled log waited 30 s and said "decision log closed", the writer thread abandoned
    with its records unwritten and no word of it."""
    log = SQLiteDecisionLog(tmp_path / "d.db")
    log.close_timeout_s = 0.5
    stalled, real = threading.Event(), log._write_batch

    def stalls(records: Any) -> list[Any]:
        stalled.wait(20)
        return real(records)

    log._write_batch = stalls  # type: ignore[method-assign]
    try:
        first = log.submit(_record(1))
        time.sleep(0.3)  # (the writer holds it)
        queued = [log.submit(_record(i)) for i in (2, 3)]
        t0 = time.monotonic()
        with caplog.at_level(logging.ERROR, "payfm.serving"):
            log.close()
        assert time.monotonic() - t0 < 5
        assert log.unwritten == 3
        assert "did not commit within 0.5 s: 3 record(s) left unwritten" in caplog.text
        for f in queued:  # (their requests waited for them: answered now)
            assert isinstance(f.exception(timeout=1), RuntimeError)
        assert not first.done()
    finally:
        stalled.set()
    assert first.result(timeout=10) == {"n": 1}  # the write in hand ends when it returns


def test_a_foreign_decisions_table_is_named_not_taken_for_a_permission_problem(pg: tuple[Proxy, str]) -> None:
    """'column "seq" does not exist ... a role that may create tables in the schema' pointed at
    permissions."""
    import psycopg

    from payfm.serving.postgres_log import PostgresDecisionLog

    _, schema = pg
    with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
        con.execute(f'CREATE SCHEMA "{schema}"')
        con.execute(f'CREATE TABLE "{schema}".decisions (id INTEGER PRIMARY KEY, verdict TEXT)')
    with pytest.raises(ConfigError) as e:
        PostgresDecisionLog(POSTGRES_URL, schema=schema)
    said = str(e.value)
    assert f"holds a table 'decisions' in schema '{schema}' that is not payfm's" in said, said
    assert "lacks the columns charge_id, created_us, seq" in said, said
    assert "options=-csearch_path%3D" in said and "may create tables" not in said, said
    with psycopg.connect(POSTGRES_URL, autocommit=True) as con:  # nothing was changed
        made = con.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename <> 'decisions'", (schema,)
        ).fetchone()
    assert made == (0,)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    from payfm.synth import WorldConfig, generate_world

    ws = Workspace.open(tmp_path_factory.mktemp("pgstall"), create=True)
    ws.write_stream(generate_world(WorldConfig(charges=1_000, days=4, seed=5)), "replace")
    return ws


def test_a_retry_during_a_postgresql_stall_holds_only_itself(
    world: Workspace, tmp_path: Path, pg: tuple[Proxy, str]
) -> None:
    """Memory state, PostgreSQL log: a retry of a decided charge reads the log, on the event loop and under
    the state lock, so one retry during a stall froze the server (/healthz, /metrics, new charges: 46 s)."""
    from fastapi.testclient import TestClient

    from payfm.serving.app import create_app
    from payfm.serving.keys import KeyStore
    from payfm.serving.postgres_log import PostgresDecisionLog
    from payfm.serving.scorer import Scorer
    from test_serving_redis_state import _new_charges

    proxy, schema = pg
    ws = Workspace.open(shutil.copytree(world.root, tmp_path / "ws"))
    scorer = Scorer.open(ws, decision_log=PostgresDecisionLog(proxy.url, schema=schema))
    keys = KeyStore(ws.root / "serving" / "keys.db")
    http, key = TestClient(create_app(scorer, keys)), keys.create("stall")
    auth = {"Authorization": f"Bearer {key}"}
    charge = _new_charges(world, 1, "ch_pgstall")[0]
    try:
        with http:  # (one event loop for every request, as a server has: without, one loop each)
            first = http.post("/v1/charges/score", json=charge, headers=auth)
            assert first.status_code == 200, first.text
            assert http.post("/v1/charges/score", json=charge, headers=auth).json() == first.json()
            proxy.hold(at_most_s=8)
            retried: list[Any] = []
            retry = threading.Thread(
                target=lambda: retried.append(http.post("/v1/charges/score", json=charge, headers=auth))
            )
            retry.start()
            try:
                time.sleep(0.5)  # (the retry waits on its read)
                t0 = time.monotonic()
                health = http.get("/healthz")
                assert time.monotonic() - t0 < 5, "the event loop waited for the stalled read"
                assert health.status_code == 503, health.text
                assert "decision log does not answer" in health.text, health.text
                assert scorer._lock.acquire(timeout=2), "the state lock was held across the stalled read"
                scorer._lock.release()
                assert not retried
            finally:
                proxy.release()
                retry.join(20)
            assert retried and retried[0].json() == first.json()
    finally:
        proxy.release()
        scorer.close(snapshot=False)


def test_a_dispute_retry_during_a_postgresql_stall_holds_only_itself(
    world: Workspace, tmp_path: Path, pg: tuple[Proxy, str]
) -> None:
    """Memory state, PostgreSQL log: a dispute retry read its stored record under the state lock, so a stall
    starting at that read held every new charge's decision (and the lock) for as long as the log stalled."""
    from fastapi.testclient import TestClient

    from payfm.serving.app import create_app
    from payfm.serving.keys import KeyStore
    from payfm.serving.postgres_log import PostgresDecisionLog
    from payfm.serving.scorer import Scorer
    from test_serving_redis_state import _new_charges

    proxy, schema = pg
    ws = Workspace.open(shutil.copytree(world.root, tmp_path / "ws"))
    scorer = Scorer.open(ws, decision_log=PostgresDecisionLog(proxy.url, schema=schema))
    keys = KeyStore(ws.root / "serving" / "keys.db")
    http, key = TestClient(create_app(scorer, keys)), keys.create("stall")
    auth = {"Authorization": f"Bearer {key}"}
    charge, new = _new_charges(world, 2, "ch_dpstall")
    dispute = {"dispute_id": "dp_stall", "charge_id": charge["charge_id"], "reason": "fraudulent"}
    dispute["created"] = datetime.fromisoformat(charge["created"]) + timedelta(hours=1)
    dispute = {**dispute, "created": dispute["created"].isoformat(), "amount": charge["amount"]}
    dispute["currency"] = charge["currency"]
    read = scorer.log.get_outcome
    stalled = threading.Event()

    def stalling_read(table: str, oid: str) -> Any:  # the stall starts at the retry's read of its record
        if stalled.is_set():
            proxy.hold(at_most_s=8)
        return read(table, oid)

    try:
        with http:
            assert http.post("/v1/charges/score", json=charge, headers=auth).status_code == 200
            first = http.post("/v1/disputes", json=dispute, headers=auth)
            assert first.status_code == 200 and not first.json()["duplicate"], first.text
            scorer.log.get_outcome = stalling_read  # type: ignore[method-assign]
            stalled.set()
            retried: list[Any] = []
            retry = threading.Thread(
                target=lambda: retried.append(http.post("/v1/disputes", json=dispute, headers=auth))
            )
            retry.start()
            try:
                time.sleep(0.5)  # (the retry waits on its read)
                assert proxy.mode == "hold"
                assert scorer._lock.acquire(timeout=2), "the state lock was held across the stalled read"
                scorer._lock.release()
                decided: list[Any] = []
                begin = threading.Thread(target=lambda: decided.append(scorer.begin(new)), daemon=True)
                begin.start()
                begin.join(3)
                assert decided, "a new charge's decision waited for the dispute retry's stalled read"
                t0 = time.monotonic()
                health = http.get("/healthz")
                assert time.monotonic() - t0 < 5, "the event loop waited for the stalled read"
                assert health.status_code == 503, health.text
                assert not retried
            finally:
                proxy.release()
                retry.join(20)
            assert retried and retried[0].status_code == 200, retried and retried[0].text
            assert retried[0].json() == {**first.json(), "duplicate": True}
            assert decided[0].result(20).charge_id == new["charge_id"]  # durable once the log answers
    finally:
        proxy.release()
        scorer.close(snapshot=False)
