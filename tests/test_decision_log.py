"""The decision log's reads: a bounded connection pool, a PostgreSQL that drops its connections, pages that
never skip events sharing a sequence number, and one-line errors that never show a password."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from payfm.errors import ConfigError, shown_url
from payfm.serving.decision_log import MAX_IDLE_READS, DecisionLog, open_log
from payfm.serving.sqlite_log import SQLiteDecisionLog
from services import POSTGRES_URL, require_postgres


def _insert(log: DecisionLog, rows: list[tuple[str, int]]) -> None:
    """Decisions with the given (charge_id, seq): as two servers sharing one log number them."""
    with log._reading() as con:
        for cid, seq in rows:
            con.execute(
                log._sql("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?)"),
                (
                    cid,
                    seq,
                    seq,
                    "2026-03-01T00:00:00+00:00",
                    "authorized",
                    json.dumps({"charge_id": cid}),
                    "{}",
                ),
            )


def test_pages_never_skip_events_that_share_a_sequence_number(tmp_path: Path) -> None:
    log = SQLiteDecisionLog(tmp_path / "d.db")
    try:
        rows = [(f"ch_{s}_{k}", s) for s in range(1, 8) for k in range(3)]  # three events per seq
        _insert(log, rows)
        for batch in (1, 2, 3, 4, 5000):
            got = [(s, p["charge_id"]) for s, _, p in log.events_after(0, batch=batch)]
            assert sorted(got) == sorted((s, c) for c, s in rows) and len(got) == len(rows), batch
            assert [s for s, _ in got] == sorted(s for s, _ in got)  # in sequence order
        after = [p["charge_id"] for _, _, p in log.events_after(3, batch=2)]
        assert sorted(after) == sorted(c for c, s in rows if s > 3)
    finally:
        log.close()


def test_reads_from_many_threads_keep_a_small_pool(tmp_path: Path) -> None:
    log = SQLiteDecisionLog(tmp_path / "d.db")
    try:
        for _ in range(3):  # new threads each round, as a server's worker threads come and go
            threads = [
                threading.Thread(target=lambda: [log.count("decisions") for _ in range(20)])
                for _ in range(16)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(log._idle) <= MAX_IDLE_READS
    finally:
        log.close()
    assert log._idle == []


@pytest.fixture()
def pg_log() -> Iterator[DecisionLog]:
    require_postgres()
    from payfm.serving.postgres_log import PostgresDecisionLog

    schema = f"payfm_test_{uuid.uuid4().hex[:8]}"
    log = PostgresDecisionLog(POSTGRES_URL, schema=schema)
    yield log
    log.close()
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
        con.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def any_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DecisionLog]:
    """The embedded log and the PostgreSQL one, each test run on both."""
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_log")
        return
    log = SQLiteDecisionLog(tmp_path / "d.db")
    yield log
    log.close()


def _open_reviews(log: DecisionLog, rows: list[tuple[str, int, str | None, int | None]]) -> None:
    """Open reviews of (charge_id, seq, rule, risk_score), as the scorer logs them."""
    with log._reading() as con:
        for cid, seq, rule, score in rows:
            con.execute(
                log._sql(
                    "INSERT INTO reviews (charge_id, seq, opened_at, status, rule, risk_score) "
                    "VALUES (?, ?, ?, 'open', ?, ?)"
                ),
                (cid, seq, "2026-03-01T00:00:00+00:00", rule, score),
            )


def _every_open_review(log: DecisionLog, limit: int, **which: Any) -> list[str]:
    """The charge ids of the open queue, paged ``limit`` at a time after each page's last review."""
    from payfm.serving.review_queue import review_page

    seen: list[str] = []
    page = review_page(log, "open", limit, **which)
    while page:
        seen += [r["charge_id"] for r in page]
        page = review_page(log, "open", limit, starting_after=seen[-1], **which)
    return seen


def test_a_read_after_postgresql_dropped_the_connections_reconnects(pg_log: DecisionLog) -> None:
    import psycopg

    pids = {pg_log._fetch("SELECT pg_backend_pid()")[0][0]}  # the pooled connection
    assert pg_log.count("decisions") == 0
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:  # a restart, a failover
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert pg_log.count("decisions") == 0  # not an error: a new connection
    assert pg_log._fetch("SELECT pg_backend_pid()")[0][0] not in pids


def test_an_unreachable_postgresql_is_one_line_without_the_password() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(ConfigError, match=r"postgresql://app:\*\*\*@127\.0\.0\.1:1/x is not reachable") as e:
        open_log("postgresql://app:s3cret@127.0.0.1:1/x", Path("."))
    assert "s3cret" not in str(e.value) and "\n" not in str(e.value)
    assert shown_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert shown_url("postgresql://u@h/db") == "postgresql://u@h/db"
    from payfm.serving.errors import InvalidInput

    with pytest.raises(InvalidInput) as bad:
        open_log("mysql://u:hunter2@h/db", Path("."))
    assert "hunter2" not in str(bad.value)


def _decisions(log: DecisionLog, rows: list[tuple[str, int]]) -> None:
    with log._reading() as con:
        for cid, seq in rows:
            con.execute(
                log._sql("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?)"),
                (cid, seq, seq, "2026-03-01T00:00:00+00:00", "blocked", json.dumps({"charge_id": cid}), "{}"),
            )


def test_the_review_queue_pages_after_a_review_without_skipping_one_of_the_same_seq(
    any_log: DecisionLog,
) -> None:
    """Found by a review: the page after a review compared seq alone, so a review sharing its seq (two
    servers number from one max) was never shown."""
    rows = [("ch_a", 7), ("ch_b", 7), ("ch_c", 8), ("ch_d", 8), ("ch_e", 9)]
    _open_reviews(any_log, [(cid, seq, None, None) for cid, seq in rows])
    for limit in (1, 2, 3):
        assert _every_open_review(any_log, limit) == ["ch_a", "ch_b", "ch_c", "ch_d", "ch_e"], limit


def test_decided_pages_through_every_decision_once(any_log: DecisionLog) -> None:
    rows = [(f"ch_{s}_{k}", s) for s in range(1, 6) for k in range(3)]  # three decisions per seq
    _decisions(any_log, rows)
    for batch in (1, 2, 4, 5000):
        got = [(outcome, p["charge_id"]) for outcome, p in any_log.decided(batch=batch)]
        assert got == [("blocked", c) for c, _ in sorted(rows, key=lambda r: (r[1], r[0]))], batch


def test_newest_times_name_the_last_decision_the_last_outcome_and_the_latest_charge(
    any_log: DecisionLog,
) -> None:
    """Where the service's event clock starts after a restart (payfm.serving.clock)."""
    log = any_log
    assert log.newest_times() == []
    with log._reading() as con:
        for cid, seq, created_us, at in [("a", 1, 900, "2026-03-01T00:00:01+00:00"), ("b", 2, 500, "x")]:
            con.execute(
                log._sql("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?)"),
                (cid, seq, created_us, at, "blocked", json.dumps({"charge_id": cid}), "{}"),
            )
        con.execute(
            log._sql("INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            ("refunds", "re_1", "a", 3, 950, "refunds", 1, 0, "{}", "y"),
        )
    assert log.newest_times() == [(500, "x"), (950, "y"), (900, "2026-03-01T00:00:01+00:00")]


def _open_together(schema: str, n: int) -> tuple[list[DecisionLog], list[BaseException]]:
    from payfm.serving.postgres_log import PostgresDecisionLog

    start = threading.Barrier(n)
    opened: list[DecisionLog] = []
    failed: list[BaseException] = []

    def open_one() -> None:
        start.wait()
        try:
            opened.append(PostgresDecisionLog(POSTGRES_URL, schema=schema))
        except BaseException as e:  # handed to the test's thread
            failed.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return opened, failed


def test_servers_started_together_on_a_new_database_all_open_the_log() -> None:
    """Several servers on one new database run the schema's CREATE ... IF NOT EXISTS at once: without a lock
    all but one could fail on a unique violation in PostgreSQL's catalog (an audit: 2 of 2 tries)."""
    require_postgres()
    import psycopg

    for _ in range(3):
        schema = f"payfm_test_{uuid.uuid4().hex[:8]}"
        opened, failed = _open_together(schema, 4)
        try:
            assert failed == [] and len(opened) == 4
            assert len({log.log_id() for log in opened}) == 1  # one log, whoever created it
        finally:
            for log in opened:
                log.close()
            with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
                con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_an_unreachable_postgresql_says_why_on_one_line() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(ConfigError) as e:
        open_log("postgresql://app:s3cret@127.0.0.1:1/x", Path("."))
    said = str(e.value)
    assert 'connection to server at "127.0.0.1", port 1 failed: Connection refused Is the server' in said
    assert "\t" not in said and "\n" not in said and "s3cret" not in said


def test_the_unreachable_message_masks_no_piece_of_its_words() -> None:
    from payfm.serving.postgres_log import _said

    refused = Exception('connection to server at "127.0.0.1", port 5499 failed: Connection refused')
    assert _said(refused, "postgresql://postgres:a@127.0.0.1:5499/db") == str(refused)  # 'a' in 'failed'
    role = Exception('FATAL:  role "bob" does not exist')
    assert _said(role, "postgresql://bob:bob@127.0.0.1/db") == 'FATAL: role "bob" does not exist'
    echoed = Exception("password s3cretpassword refused")
    assert _said(echoed, "postgresql://app:s3cretpassword@h/db") == "password *** refused"


@pytest.mark.parametrize("spec", ["sqlite:/tmp/x.db", "sqlite://x.db", "sqlite:", "sqlite:///"])
def test_a_sqlite_url_without_its_three_slashes_is_refused_not_the_default_log(
    spec: str, tmp_path: Path
) -> None:
    """An SRE's `--decision-log sqlite:/tmp/x.db` opened the workspace's default log, silently: a server
    meant to write elsewhere wrote beside the others."""
    from payfm.serving.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"'sqlite:///<path>' \(a path from the working folder\)"):
        open_log(spec, tmp_path)
    assert not (tmp_path / "serving").exists()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/abc", "redis://127.0.0.1:6379/3/x", "rediss://h/3a"])
def test_a_redis_url_whose_path_is_no_database_number_is_refused(url: str) -> None:
    """redis-py reads `redis://host:6379/abc` as database 0, silently (an SRE's server loaded 276k keys
    into database 0)."""
    from payfm.redis_load import redis_client

    with pytest.raises(ConfigError, match=r"expected its path to be the database number"):
        redis_client(url)
    assert redis_client("redis://127.0.0.1:6379/3").connection_pool.connection_kwargs["db"] == 3
    assert redis_client("redis://127.0.0.1:6379").connection_pool.connection_kwargs.get("db") is None


def test_a_write_after_postgresql_dropped_its_connection_reconnects(pg_log: DecisionLog) -> None:
    """Found by an SRE audit: with the idle connections ended (pg_terminate_backend: a restart, a
    failover), the next decision failed with a 500 though nothing was in flight."""
    import psycopg

    from payfm.serving.decision_log import DecisionRecord

    def record(i: int) -> DecisionRecord:
        return DecisionRecord.of(
            i, f"ch_{i}", i, "2026-01-01T00:00:00+00:00", "authorized", {}, {"n": i}, False
        )

    pg_log.write(record(1))
    pid = pg_log._wcon.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[attr-defined]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert pg_log.write(record(2)) == {"n": 2}  # not an error: a new connection
    assert pg_log.count("decisions") == 2


def test_settled_waits_for_another_threads_commit_and_never_cancels_it() -> None:
    """The score endpoint awaits the log's commit through ``settled``: done in another thread -> True; a
    timeout -> False with the commit left running; a request cancelled while waiting cancels no commit (a
    decision whose client went away is still logged, as ``asyncio.shield`` kept it before)."""
    import asyncio
    import threading
    from concurrent.futures import Future

    from payfm.serving.decision_log import settled

    async def main() -> None:
        later: Future[int] = Future()
        threading.Timer(0.05, later.set_result, (7,)).start()
        assert await settled(later, 5.0) is True and later.result() == 7

        done: Future[int] = Future()
        done.set_result(1)
        assert await settled(done, 5.0) is True

        stuck: Future[int] = Future()
        assert await settled(stuck, 0.05) is False
        assert not stuck.done() and not stuck.cancelled()

        task = asyncio.ensure_future(settled(stuck, 5.0))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not stuck.cancelled() and stuck.set_running_or_notify_cancel()  # (still pending, runnable)
        stuck.set_result(2)

    asyncio.run(main())


def test_an_id_holding_nul_is_looked_up_as_no_such_id(any_log: DecisionLog) -> None:
    """A path's %00 reaches the log as a charge id holding NUL: PostgreSQL refuses such a text parameter
    (a 500 for GET /v1/reviews/a%00b: a review's finding), so every lookup finds nothing on both."""
    log = any_log
    _insert(log, [("a", 1)])
    assert log.get_decision("a") is not None
    for cid in ("a\x00", "a\x00b", "\x00"):
        assert log.get_decision(cid) is None and log.get_charge(cid) is None
        assert log.get_review(cid) is None and log.review_seq(cid) is None
        assert log.reviews(None, 10, charge_id=cid) == [] and log.outcomes_of(cid) == []


def test_the_review_queue_keeps_one_rules_reviews_and_the_riskiest_paging_after_a_review(
    any_log: DecisionLog,
) -> None:
    """`GET /v1/reviews?rule=...&min_risk_score=...` (payfm review list --rule --min-risk): a filter, not an
    order, so a page after a review (a cursor) still skips none of the kept ones."""
    log = any_log
    scores = (None, 10, 55, 80, 95, 60, 5, 77)
    _open_reviews(log, [(f"ch_{i}", i, "big" if i % 2 else "new_card", scores[i]) for i in range(8)])
    for limit in (1, 2, 10):
        assert _every_open_review(log, limit, rule="big") == ["ch_1", "ch_3", "ch_5", "ch_7"]
        # (no score: not kept)
        assert _every_open_review(log, limit, min_risk_score=60) == ["ch_3", "ch_4", "ch_5", "ch_7"]
        assert _every_open_review(log, limit, rule="new_card", min_risk_score=55) == ["ch_2", "ch_4"]
        assert _every_open_review(log, limit, rule="nobody") == []
    # the queue's length with those filters (GET /v1/reviews' total)
    assert log.review_count("open", rule="big") == 4 and log.review_count(None, min_risk_score=60) == 4
    assert log.review_count("closed") == 0 and log.review_count() == 8
