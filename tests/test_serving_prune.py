"""`payfm serve prune`: the decision log's old rows that the event log holds, archived, then deleted; what
reads the log (outcomes, restarts, snapshots) gives the same answers after it."""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import test_serving_scorer
from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.serving import prune as prune_module
from payfm.serving.decision_log import DecisionLog, open_log
from payfm.serving.errors import Conflict, InvalidInput, NotFound
from payfm.serving.export import export_charges
from payfm.serving.prune import (
    AFTER_SNAPSHOT,
    LATER_OUTCOME,
    NOT_EXPORTED,
    OPEN_REVIEW,
    UNAPPENDED,
    prune,
)
from payfm.serving.scorer import Scorer
from services import POSTGRES_URL, REDIS_SCRATCH_URL, require_postgres
from test_serving_scorer import charge, served_workspace

ws = test_serving_scorer.ws  # the fixture: a workspace with a production model and the tiny ruleset

OLD = "2026-03-01T12:00:{:02d}+00:00"
NEW = "2026-05-01T12:00:00+00:00"  # the newest charge: with --keep-days 30, before 2026-04-01T12:00 is old


def _dispute(i: int, created: str) -> dict[str, Any]:
    return {
        "dispute_id": f"dp_{i}",
        "charge_id": f"ch_{i}",
        "created": created,
        "reason": "fraudulent",
        "amount": 100,
        "currency": "usd",
    }


def _decide(s: Scorer, ws: Workspace) -> None:
    """Old charges of one card, one new charge, and what keeps some of them: see the test below."""
    s.score(charge(1, created=OLD.format(1), outcome="authorized"))  # pruned
    s.score(charge(2, created=OLD.format(2)))  # let through without its result: export leaves it out
    big = {"amount": 90_000, "amount_usd": 90_000, "outcome": "authorized"}
    s.score(charge(3, created=OLD.format(3), **big))  # sent to review (rule big), left open
    s.score(charge(4, created=OLD.format(4), **big))  # sent to review, closed: pruned with its review
    s.close_review("ch_4", "approved")
    s.score(charge(5, created=OLD.format(5), outcome="authorized"))
    s.score(charge(6, created=OLD.format(6), outcome="authorized"))
    # (in time order: the service dates an outcome no earlier than the events before it)
    s.record_outcome("disputes", _dispute(6, "2026-03-10T00:00:00Z"))  # old: pruned with its charge
    s.record_outcome("disputes", _dispute(5, "2026-04-20T00:00:00Z"))  # within the kept days: kept
    s.score(charge(7, created=NEW, outcome="authorized"))  # new
    s.log.flush()
    assert export_charges(ws, s.log).exported == 6  # all but ch_2
    assert s.log.unappended_outcomes() == []


def _rows(log: DecisionLog) -> dict[str, set[str]]:
    return {
        "decisions": {str(r[0]) for r in log._fetch("SELECT charge_id FROM decisions")},
        "outcomes": {f"{k}:{o}" for k, o in log._fetch("SELECT kind, outcome_id FROM outcomes")},
        "reviews": {str(r[0]) for r in log._fetch("SELECT charge_id FROM reviews")},
    }


def _archived(archive: Path, table: str, column: str) -> list[str]:
    files = sorted((archive / table).glob("*.parquet"))
    return sorted(v for f in files for v in pq.read_table(f)[column].to_pylist())


def _probe(root: Path, created: str) -> dict[str, Any]:
    """The features of a charge of the same card at ``created``, served from the workspace at ``root``
    restarted (its state rebuilt from what its logs hold)."""
    s = Scorer.open(Workspace.open(root))
    try:
        return s.score(charge(60, created=created)).features
    finally:
        s.close(snapshot=False)


def test_prune_takes_what_the_event_log_holds_and_a_restart_counts_the_same(
    tmp_path: Path, ws: Workspace
) -> None:
    s = Scorer.open(ws)
    try:
        _decide(s, ws)
    finally:
        s.close(snapshot=False)
    shutil.copytree(ws.root, tmp_path / "unpruned")
    log = open_log("sqlite", ws.root)
    try:
        before = _rows(log)
        logged = {cid: log.get_decision(cid) for cid in ("ch_1", "ch_4", "ch_6")}
        dry = prune(ws, log, keep_days=30, keep_newest=0, dry_run=True)
        assert _rows(log) == before and not (dry.archive / "decisions").exists()
        report = prune(ws, log, keep_days=30, keep_newest=0)
        assert (dry.pruned, dry.kept) == (report.pruned, report.kept)
        after = _rows(log)
        assert after["decisions"] == {"ch_2", "ch_3", "ch_5", "ch_7"}
        assert after["reviews"] == {"ch_3"}  # open
        assert after["outcomes"] == {"disputes:dp_5"}
        gone = {t: before[t] - after[t] for t in before}
        assert gone["outcomes"] == {"disputes:dp_6", "reviews:ch_4"}  # the closure's event went with ch_4
        assert report.pruned == {"decisions": 3, "outcomes": 2, "reviews": 1}
        assert report.kept == {NOT_EXPORTED: 1, OPEN_REVIEW: 1, LATER_OUTCOME: 1}
        # the archive holds exactly what was deleted, every column of it
        assert _archived(report.archive, "decisions", "charge_id") == ["ch_1", "ch_4", "ch_6"]
        decided = pq.read_table(next((report.archive / "decisions").glob("*.parquet"))).to_pylist()
        # each decision as the log read it before: its features by name, not by the log's layout id
        assert {d["charge_id"]: json.loads(d["decision"]) for d in decided} == logged
        assert all(json.loads(d["decision"])["features"] for d in decided)
        assert _archived(report.archive, "reviews", "charge_id") == ["ch_4"]
        assert _archived(report.archive, "outcomes", "outcome_id") == ["ch_4", "dp_6"]
        ch4 = pq.read_table(next((report.archive / "reviews").glob("*.parquet"))).to_pylist()[0]
        assert (ch4["status"], ch4["reason"], ch4["label"]) == ("closed", "approved", 0)
        assert prune_module.pruned_parts(log) == set(report.parts) and len(report.parts) == 1
        seqs = pq.read_table(next((report.archive / "decisions").glob("*.parquet")))["seq"].to_pylist()
        assert log.pruned_through() >= max(seqs)
        again = prune(ws, log, keep_days=30, keep_newest=0)
        assert sum(again.pruned.values()) == 0 and again.parts == [] and again.removed == []
    finally:
        log.close()
    later = "2026-05-01T12:30:00+00:00"
    pruned, unpruned = _probe(ws.root, later), _probe(tmp_path / "unpruned", later)
    assert pruned == unpruned
    assert pruned["card.count_fraud_disputes_all"] == 2.0  # dp_5 logged, dp_6 pruned: in the event log


def test_an_outcome_of_a_pruned_charge_still_finds_its_charge_and_its_refund_cap(ws: Workspace) -> None:
    """What the outcome endpoints read of a decided charge (its time, amount, outcome, refunds) they find in
    the event log once its decision is pruned."""
    s = Scorer.open(ws)
    try:
        s.score(charge(1, created=OLD.format(1), outcome="authorized", amount=1000, amount_usd=1000))
        refund = {"refund_id": "re_1", "charge_id": "ch_1", "created": "2026-03-02T00:00:00Z"}
        s.record_outcome("refunds", refund | {"amount": 600, "currency": "usd", "reason": "duplicate"})
        s.score(charge(2, created=NEW, outcome="authorized"))
        s.log.flush()
        export_charges(ws, s.log)
        assert prune(ws, s.log, keep_days=30, keep_newest=0).pruned["decisions"] == 1
        assert s.log.get_charge("ch_1") is None
        more = {
            "refund_id": "re_2",
            "charge_id": "ch_1",
            "created": "2026-05-01T00:00:00Z",
            "currency": "usd",
        }
        with pytest.raises(InvalidInput, match="expected at most 400, what is left to refund"):
            s.record_outcome("refunds", more | {"amount": 500, "reason": "duplicate"})  # 600 refunded of 1000
        out = s.record_outcome("refunds", more | {"amount": 400, "reason": "duplicate"})
        assert out["duplicate"] is False and out["charge_id"] == "ch_1"
        refunds = ws.read("refunds").to_pylist()
        assert sorted((r["refund_id"], r["amount"]) for r in refunds) == [("re_1", 600), ("re_2", 400)]
        dup = s.record_outcome("refunds", refund | {"amount": 600, "currency": "usd", "reason": "duplicate"})
        assert dup["duplicate"] is True  # its first refund, pruned: a duplicate by the event log's row
    finally:
        s.close(snapshot=False)


def test_a_snapshot_older_than_the_prune_is_not_restored(ws: Workspace, tmp_path: Path) -> None:
    """A snapshot that covers less than what was pruned (another feature set version's, after a rollback)
    would replay the log after it without the pruned events: the server rebuilds instead."""
    s = Scorer.open(ws)
    try:
        s.score(charge(1, created=OLD.format(1), outcome="authorized"))
        old_snapshot = s.snapshot()
        assert old_snapshot is not None
        shutil.copy(old_snapshot, tmp_path / old_snapshot.name)
        for i in range(2, 6):  # pruned, all logged after that snapshot
            s.score(charge(i, created=OLD.format(i), outcome="authorized"))
        s.score(charge(7, created="2026-03-01T12:30:00+00:00", outcome="authorized"))  # the newest
        s.log.flush()
        export_charges(ws, s.log)
    finally:
        s.close()  # a final snapshot, covering everything: the prune may take all the older charges
    log = open_log("sqlite", ws.root)
    try:
        report = prune(ws, log, keep_days=0, keep_newest=0)
        assert report.snapshot_seq is not None and report.pruned["decisions"] == 5
    finally:
        log.close()
    for snap in (ws.root / "serving" / "state").glob("*.json.gz"):
        snap.unlink()
    shutil.copy(tmp_path / old_snapshot.name, old_snapshot)  # only the old one left
    # ch_1..ch_5 (pruned: from the event log) and ch_7; restored from the old snapshot, ch_1 and ch_7 only
    assert _probe(ws.root, "2026-03-01T12:45:00+00:00")["card.count_charges_1h"] == 6.0


def test_prune_never_takes_rows_after_the_last_snapshot_or_the_newest(ws: Workspace) -> None:
    s = Scorer.open(ws)
    try:
        s.score(charge(1, created=OLD.format(1), outcome="authorized"))
        s.score(charge(2, created=OLD.format(2), outcome="authorized"))
        assert s.snapshot() is not None  # covers ch_1, ch_2
        s.score(charge(3, created=OLD.format(3), outcome="authorized"))  # after it
        s.score(charge(7, created=NEW, outcome="authorized"))
        s.log.flush()
        export_charges(ws, s.log)
        newest = prune(ws, s.log, keep_days=30, keep_newest=4, dry_run=True)
        assert sum(newest.pruned.values()) == 0 and newest.kept == {AFTER_SNAPSHOT: 3}
        report = prune(ws, s.log, keep_days=30, keep_newest=0)
        assert report.pruned["decisions"] == 2 and report.kept == {AFTER_SNAPSHOT: 1}
        assert _rows(s.log)["decisions"] == {"ch_3", "ch_7"}
    finally:
        s.close(snapshot=False)


def _two_old_and_a_new(ws: Workspace) -> None:
    """ch_1 and ch_2 (old) and ch_7 (new) decided and exported; the server stopped without a snapshot."""
    s = Scorer.open(ws)
    try:
        for i in (1, 2):
            s.score(charge(i, created=OLD.format(i), outcome="authorized"))
        s.score(charge(7, created=NEW, outcome="authorized"))
        s.log.flush()
        export_charges(ws, s.log)
    finally:
        s.close(snapshot=False)


def test_a_part_whose_delete_did_not_commit_is_removed_and_its_rows_archived_once(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    _two_old_and_a_new(ws)
    log = open_log("sqlite", ws.root)
    try:
        with monkeypatch.context() as m:  # the process dies between the archive and the delete
            m.setattr(prune_module, "delete_part", lambda log, part: (_ for _ in ()).throw(KeyboardInterrupt))
            with pytest.raises(KeyboardInterrupt):
                prune(ws, log, keep_days=30, keep_newest=0)
        archive = ws.root / "serving" / "archive" / log.log_id()
        assert _archived(archive, "decisions", "charge_id") == ["ch_1", "ch_2"]  # written, not committed
        assert _rows(log)["decisions"] == {"ch_1", "ch_2", "ch_7"}
        report = prune(ws, log, keep_days=30, keep_newest=0)
        assert len(report.removed) == 1 and report.pruned["decisions"] == 2
        assert _archived(archive, "decisions", "charge_id") == ["ch_1", "ch_2"]  # once
        assert _rows(log)["decisions"] == {"ch_7"}
    finally:
        log.close()


def test_rows_another_prune_took_meanwhile_roll_the_batch_back(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    _two_old_and_a_new(ws)
    log = open_log("sqlite", ws.root)
    read = prune_module._rows_of

    def read_then_lose_one(decisions: DecisionLog, ids: list[str]) -> Any:
        rows = read(decisions, ids)
        with sqlite3.connect(ws.root / "serving" / "decisions.db") as con:  # another process, another place
            con.execute("DELETE FROM decisions WHERE charge_id = 'ch_2'")
        return rows

    monkeypatch.setattr(prune_module, "_rows_of", read_then_lose_one)
    try:
        with pytest.raises(ConfigError, match="Another prune deleted some of these rows"):
            prune(ws, log, keep_days=30, keep_newest=0)
        assert _rows(log)["decisions"] == {"ch_1", "ch_7"}  # ch_1 not deleted: rolled back
        archive = ws.root / "serving" / "archive" / log.log_id()
        assert not list((archive / "decisions").glob("*.parquet")) and log.pruned_through() == 0
    finally:
        log.close()


def test_one_prune_at_a_time(ws: Workspace) -> None:
    log = open_log("sqlite", ws.root)
    archive = ws.root / "serving" / "archive" / log.log_id()
    archive.mkdir(parents=True)
    try:
        with open(archive / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            with pytest.raises(ConfigError, match="Another prune of this decision log is running"):
                prune(ws, log)
    finally:
        log.close()


def test_prune_on_a_postgresql_log(ws: Workspace) -> None:
    require_postgres(POSTGRES_URL)
    import psycopg

    from payfm.serving.postgres_log import PostgresDecisionLog

    schema = f"payfm_test_{uuid.uuid4().hex[:8]}"
    s = Scorer.open(ws, decision_log=PostgresDecisionLog(POSTGRES_URL, schema=schema))
    try:
        _decide(s, ws)
        report = prune(ws, s.log, keep_days=30, keep_newest=0)
        assert report.pruned == {"decisions": 3, "outcomes": 2, "reviews": 1}
        assert report.kept == {NOT_EXPORTED: 1, OPEN_REVIEW: 1, LATER_OUTCOME: 1}
        assert _rows(s.log)["decisions"] == {"ch_2", "ch_3", "ch_5", "ch_7"}
        assert s.log.pruned_through() > 0 and prune_module.pruned_parts(s.log) == set(report.parts)
    finally:
        s.close(snapshot=False)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_an_outcome_not_yet_in_the_event_log_keeps_its_charge(ws: Workspace) -> None:
    s = Scorer.open(ws)
    try:
        s.score(charge(1, created=OLD.format(1), outcome="authorized"))
        s.record_outcome("disputes", _dispute(1, "2026-03-02T00:00:00Z"))
        s.score(charge(7, created=NEW, outcome="authorized"))
        s.log.flush()
        export_charges(ws, s.log)
        with s.log._reading() as con:  # its append did not happen yet (a crash between the commit and it)
            con.execute("UPDATE outcomes SET appended = 0")
        report = prune(ws, s.log, keep_days=30, keep_newest=0)
        assert sum(report.pruned.values()) == 0 and report.kept == {UNAPPENDED: 1}
    finally:
        s.close(snapshot=False)


def test_cli_prune_says_how_much_of_the_sqlite_file_it_freed(ws: Workspace) -> None:
    s = Scorer.open(ws)
    try:  # 200 old decisions: whole pages of them (three decisions of 2.3 KB share a page of 8 KB)
        for i in range(200):
            s.score(
                charge(
                    100 + i, created=f"2026-03-01T{10 + i // 60}:{i % 60:02d}:00+00:00", outcome="authorized"
                )
            )
        s.score(charge(999, created=NEW, outcome="authorized"))
        s.log.flush()
        assert export_charges(ws, s.log).exported == 201
    finally:
        s.close(snapshot=False)
    args = ["-w", str(ws.root), "serve", "prune", "--keep-days", "30", "--keep-newest", "0"]
    r = CliRunner().invoke(cli, args)
    said = " ".join(r.output.split())
    assert r.exit_code == 0 and "Pruned 200 decisions" in said, said
    freed = re.search(r"The SQLite file keeps ([\d.,]+) KB of freed pages, which new decisions reuse", said)
    log = open_log("sqlite", ws.root)
    try:
        free = log.free_bytes()
    finally:
        log.close()
    assert free and freed and freed.group(1) == f"{free / 1e3:,.0f}", said


def test_cli_prune(tmp_path: Path, ws: Workspace) -> None:
    empty = served_workspace(tmp_path / "empty")
    r = CliRunner().invoke(cli, ["-w", str(empty.root), "serve", "prune"])
    assert r.exit_code == 1 and "has no decision log" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "serve", "prune", "--keep-days", "-1"])
    assert r.exit_code == 2 and "--keep-days" in r.output
    s = Scorer.open(ws)
    try:
        _decide(s, ws)
    finally:
        s.close(snapshot=False)
    args = ["-w", str(ws.root), "serve", "prune", "--keep-days", "30", "--keep-newest", "0"]
    r = CliRunner().invoke(cli, [*args, "--dry-run"])
    said = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert "Would prune 3 decisions, 1 review and 2 outcomes" in said, said
    assert (
        "created before 2026-04-01 12:00 UTC (30 days before the newest charge, 2026-05-01 12:00 UTC)" in said
    )
    assert (
        "Kept 3 old decisions: 1 as its review is open, 1 as an outcome of it is more recent (within the "
        "kept days, or after the last snapshot), 1 as its charge is not in the event log (`payfm serve "
        "export` appends it)." in said
    )
    r = CliRunner().invoke(cli, args)
    said = " ".join(r.output.split())
    assert r.exit_code == 0 and "Pruned 3 decisions, 1 review and 2 outcomes" in said, said
    assert str(ws.root / "serving" / "archive") in said
    with pytest.raises(ConfigError):
        prune(ws, open_log("sqlite", ws.root), keep_days=-1)


def test_an_old_outcome_of_a_charge_the_service_did_not_decide_is_pruned(
    ws: Workspace, tmp_path: Path
) -> None:
    other = Scorer.open(ws, decision_log=f"sqlite:///{tmp_path / 'other.db'}")  # another service's charge
    try:
        other.score(charge(1, created=OLD.format(1), outcome="authorized"))
        other.log.flush()
        assert export_charges(ws, other.log).exported == 1
    finally:
        other.close(snapshot=False)
    s = Scorer.open(ws)
    try:
        s.record_outcome("disputes", _dispute(1, "2026-03-02T00:00:00Z"))  # its charge: the event log's
        s.record_outcome(
            "early_fraud_warnings",
            {  # too recent
                "efw_id": "efw_1",
                "charge_id": "ch_1",
                "created": "2026-04-30T00:00:00Z",
                "fraud_type": "misc",
            },
        )
        s.score(charge(7, created=NEW, outcome="authorized"))
        s.log.flush()
        report = prune(ws, s.log, keep_days=30, keep_newest=0)
        assert report.pruned == {"outcomes": 1} and report.kept == {}
        assert _rows(s.log)["outcomes"] == {"early_fraud_warnings:efw_1"}
        assert _archived(report.archive, "outcomes", "outcome_id") == ["dp_1"]
    finally:
        s.close(snapshot=False)


def test_a_server_numbers_its_events_after_the_pruned_ones(ws: Workspace) -> None:
    """Found by a review: a prune that took the row of the log's highest seq (a late charge, the last one
    logged) let a restarted server number its next event with that seq, which the snapshot claims to cover:
    after a crash, the restart from that snapshot skipped it."""
    s = Scorer.open(ws)
    try:
        s.score(charge(7, created=NEW, outcome="authorized"))  # seq 1, the newest charge
        s.score(charge(1, created=OLD.format(1), outcome="authorized"))  # seq 2, late: old
        s.log.flush()
        export_charges(ws, s.log)
    finally:
        s.close()  # a snapshot at seq 2
    log = open_log("sqlite", ws.root)
    try:
        assert prune(ws, log, keep_days=30, keep_newest=0).pruned == {"decisions": 1}
        assert log.max_seq() == 2  # the pruned row's seq is still taken
    finally:
        log.close()
    s = Scorer.open(ws)
    try:
        s.score(charge(8, created="2026-05-01T12:10:00+00:00", outcome="authorized"))
        assert s.log._fetch("SELECT seq FROM decisions WHERE charge_id = 'ch_8'") == [(3,)]
    finally:
        s.close(snapshot=False)  # a crash: the snapshot at seq 2 stays the newest
    assert _probe(ws.root, "2026-05-01T12:20:00+00:00")["card.count_charges_1h"] == 2.0  # ch_7 and ch_8


def test_an_authorization_result_of_a_pruned_charge_is_answered_from_the_event_log(ws: Workspace) -> None:
    _two_old_and_a_new(ws)  # ch_1 authorized, in the event log
    s = Scorer.open(ws)
    try:
        assert prune(ws, s.log, keep_days=30, keep_newest=0).pruned["decisions"] == 2
        again = s.record_authorization("ch_1", "authorized")
        assert (again["duplicate"], again["applied"]) == (True, False)
        with pytest.raises(Conflict, match=r"has outcome 'authorized' already \(in the event log\)"):
            s.record_authorization("ch_1", "issuer_declined", "insufficient_funds")
        with pytest.raises(NotFound, match="did not decide it"):
            s.record_authorization("ch_404", "authorized")
    finally:
        s.close(snapshot=False)


def test_an_outcome_logged_while_its_charge_is_archived_keeps_the_charge(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server records a dispute of an old charge after the prune read its rows, before it deleted them:
    the delete's transaction sees it, rolls back, and the part is written again without that charge."""
    _two_old_and_a_new(ws)
    s = Scorer.open(ws)
    write = prune_module._write_part
    disputed: list[str] = []

    def write_then_dispute(archive: Path, table: str, name: str, rows: list[dict[str, Any]]) -> Path:
        if not disputed:
            disputed.append(str(s.record_outcome("disputes", _dispute(1, "2026-03-03T00:00:00Z"))["id"]))
        return write(archive, table, name, rows)

    monkeypatch.setattr(prune_module, "_write_part", write_then_dispute)
    try:
        report = prune(ws, s.log, keep_days=30, keep_newest=0)
        assert report.pruned == {"decisions": 1} and report.kept == {LATER_OUTCOME: 1} and disputed
        assert _rows(s.log)["decisions"] == {"ch_1", "ch_7"} and _rows(s.log)["outcomes"] == {"disputes:dp_1"}
        assert _archived(report.archive, "decisions", "charge_id") == ["ch_2"]  # the first try's files gone
    finally:
        s.close(snapshot=False)


def test_pages_of_one_row_prune_the_same(ws: Workspace) -> None:
    s = Scorer.open(ws)
    try:
        _decide(s, ws)
        whole = prune(ws, s.log, keep_days=30, keep_newest=0, dry_run=True)
        paged = prune(ws, s.log, keep_days=30, keep_newest=0, batch=1)
        assert (paged.pruned, paged.kept) == (whole.pruned, whole.kept) and len(paged.parts) == 3
    finally:
        s.close(snapshot=False)


def test_a_stale_redis_state_of_a_pruned_log_is_caught_up_and_the_remedy_said(
    ws: Workspace, redis_scratch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by reviews: a Redis state that missed events of the decision log catches up from that log
    within the charge TTL, so pruned events (in the event log only) count nowhere in it. Loading it again at
    start emptied a namespace live servers used, and a check for them raced with their start: the server
    warns instead, naming the remedy, which counts them."""
    live = Scorer.open(ws, state=REDIS_SCRATCH_URL)  # serves from the namespace throughout
    try:
        m = Scorer.open(ws)  # a memory-state server on the same log: the Redis state is not fed
        try:
            for i in (2, 3):
                m.score(charge(i, created=OLD.format(i), outcome="authorized"))
                m.record_outcome("disputes", _dispute(i, f"2026-03-0{i}T00:00:00Z"))
            live.score(charge(20, created="2026-05-01T12:10:00+00:00", outcome="authorized"))
            m.score(charge(7, created=NEW, outcome="authorized"))  # 12:00
            m.log.flush()
            export_charges(ws, m.log)
            assert prune(ws, m.log, keep_days=30, keep_newest=0).pruned["decisions"] == 2
        finally:
            m.close(snapshot=False)
        with caplog.at_level("INFO", logger="payfm.serving.scorer"):
            other = Scorer.open(ws, state=REDIS_SCRATCH_URL)
            other.close(snapshot=False)
        said = " ".join(r.getMessage() for r in caplog.records)
        assert (
            "which was pruned of events within the charge TTL: caught up from the decision log alone" in said
        )
        assert f"payfm serve state drop {live.online.store.ns}" in said  # type: ignore[attr-defined]
        assert live.health() == []  # its namespace was not emptied under it
        d = live.score(charge(21, created="2026-05-01T12:30:00+00:00", outcome="authorized"))
        assert d.features["card.count_charges_1h"] == 2.0  # ch_7 (caught up by the other server), ch_20
        assert d.features["card.count_fraud_disputes_all"] == 0.0  # the pruned disputes: not counted
    finally:
        live.close(snapshot=False)
    redis_scratch.flushdb()  # the remedy: every server stopped, the namespace dropped, one started
    s = Scorer.open(ws, state=REDIS_SCRATCH_URL)
    try:
        d = s.score(charge(22, created="2026-05-01T12:40:00+00:00", outcome="authorized"))
        assert d.features["card.count_fraud_disputes_all"] == 2.0  # from the event log
    finally:
        s.close(snapshot=False)


def test_prune_on_a_postgresql_log_a_server_writes_meanwhile(ws: Workspace) -> None:
    """Found by a review: a table lock the prune's transaction took deadlocked with the servers' own (a review
    closure writes reviews then outcomes; a group commit, outcomes then decisions): the prune failed."""
    require_postgres(POSTGRES_URL)
    import psycopg

    from payfm.serving.postgres_log import PostgresDecisionLog

    schema = f"payfm_test_{uuid.uuid4().hex[:8]}"
    s = Scorer.open(ws, decision_log=PostgresDecisionLog(POSTGRES_URL, schema=schema))
    errors: list[BaseException] = []
    stop = threading.Event()
    ids = iter(range(1000, 10**6))
    take = threading.Lock()

    disputed: list[str] = []

    def serve() -> None:  # charges sent to review, each closed at once; disputes of charges being pruned
        while not stop.is_set():
            with take:
                i = next(ids)
            try:
                created = f"2026-05-0{2 + i % 7}T{i % 24:02d}:{i // 24 % 60:02d}:00+00:00"
                s.score(charge(i, created=created, outcome="authorized", amount=90_000, amount_usd=90_000))
                s.close_review(f"ch_{i}", "approved")
                old = _dispute(i % 100, "2026-05-01T00:00:00Z") | {"dispute_id": f"dp_live_{i}"}
                if i % 4 == 0 and s.record_outcome("disputes", old)["applied"] is not None:
                    disputed.append(f"disputes:dp_live_{i}")
            except BaseException as e:  # pragma: no cover - the failure the test looks for
                errors.append(e)
                return

    try:
        for i in range(100):
            s.score(
                charge(i, created=f"2026-03-01T12:{i // 60:02d}:{i % 60:02d}+00:00", outcome="authorized")
            )
        s.score(charge(999, created=NEW, outcome="authorized"))
        s.log.flush()
        export_charges(ws, s.log)
        servers = [threading.Thread(target=serve) for _ in range(3)]
        for t in servers:
            t.start()
        try:
            report = prune(ws, s.log, keep_days=30, keep_newest=0, batch=10)
        finally:
            stop.set()
            for t in servers:
                t.join()
        assert not errors, errors
        archived = _archived(report.archive, "decisions", "charge_id")
        assert len(archived) == report.pruned["decisions"] == 100 - report.kept[LATER_OUTCOME]
        assert not set(archived) & _rows(s.log)["decisions"]
        assert disputed and set(disputed) <= _rows(s.log)["outcomes"]  # recent: none pruned, none lost
    finally:
        s.close(snapshot=False)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_pruned_through_only_rises(ws: Workspace, backend: str) -> None:
    """Found by a review: read, then written, two prunes of one PostgreSQL log could lower it (a snapshot
    it no longer covered would then be restored); the upsert takes the max itself."""
    from payfm.serving.postgres_log import PostgresDecisionLog

    schema = f"payfm_test_{uuid.uuid4().hex[:8]}"
    if backend == "postgresql":
        require_postgres(POSTGRES_URL)
    log = (
        open_log("sqlite", ws.root)
        if backend == "sqlite"
        else PostgresDecisionLog(POSTGRES_URL, schema=schema)
    )
    try:
        for name, seq, us in (("a", 200, 7_000), ("b", 150, 9_000), ("c", 180, 8_000)):
            prune_module.delete_part(log, prune_module.PrunedPart(name, (), (), (), seq, us))
        assert (log.pruned_through(), log.pruned_newest_us(), log.max_seq()) == (200, 9_000, 200)
        assert prune_module.pruned_parts(log) == {"a", "b", "c"}
    finally:
        log.close()
        if backend == "postgresql":
            import psycopg

            with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
                con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
