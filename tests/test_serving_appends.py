"""Outcomes reach the event log once each: concurrent requests take turns, a workspace another process is
writing (compaction, an import) makes them wait instead of failing, and compaction keeps every row."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import WorkspaceBusy, WorkspaceError
from payfm.events.workspace import Workspace
from payfm.serving.scorer import Scorer
from payfm.synth import WorldConfig, generate_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    Workspace.open(root, create=True).write_stream(
        generate_world(WorldConfig(charges=3000, days=3, seed=5)), "replace"
    )
    return root


@pytest.fixture()
def ws(world: Path, tmp_path: Path) -> Workspace:
    import shutil

    shutil.copytree(world, tmp_path / "ws")
    return Workspace.open(tmp_path / "ws")


@pytest.fixture()
def scorer(ws: Workspace, tmp_path: Path) -> Iterator[Scorer]:
    s = Scorer.open(ws, decision_log=f"sqlite:///{tmp_path / 'decisions.db'}", durability="os")
    yield s
    s.close(snapshot=False)


def disputes(ws: Workspace, n: int, tag: str) -> list[dict[str, Any]]:
    con = ws.connect()
    try:
        rows = con.execute(
            "SELECT charge_id, created, amount, currency FROM charges WHERE outcome = 'authorized' "
            "AND charge_id NOT IN (SELECT charge_id FROM disputes) ORDER BY charge_id LIMIT ?",
            [n],
        ).fetchall()
    finally:
        con.close()
    return [
        {
            "dispute_id": f"dp_{tag}_{i}",
            "charge_id": cid,
            "created": (created + timedelta(days=2)).isoformat(),
            "reason": "fraudulent",
            "amount": amount,
            "currency": currency,
        }
        for i, (cid, created, amount, currency) in enumerate(rows)
    ]


def ids(ws: Workspace, table: str = "disputes") -> list[str]:
    return [str(v) for v in ws.read(table, ["dispute_id"])["dispute_id"].to_pylist()]


def test_concurrent_outcomes_are_all_appended_once(ws: Workspace, scorer: Scorer) -> None:
    events, errors = disputes(ws, 120, "c"), []

    def post(part: list[dict[str, Any]]) -> None:
        for e in part:
            try:
                scorer.record_outcome("disputes", e)
            except Exception as err:  # collected: the assertion shows them
                errors.append(repr(err))

    threads = [threading.Thread(target=post, args=(events[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []  # they collided on the workspace's write lock before (WorkspaceError)
    got = [i for i in ids(ws) if i.startswith("dp_c_")]
    assert sorted(got) == sorted(e["dispute_id"] for e in events)
    assert scorer.log.unappended_outcomes() == []


@pytest.fixture()
def no_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Appends that found the workspace busy wait for the next outcome or the close: the tests that look at
    what waits after the lock is gone must not race the 2 s retry (a busy machine may take that long)."""
    from payfm.serving import feedback

    monkeypatch.setattr(feedback, "APPEND_RETRY_S", 3600.0)


def test_a_busy_workspace_makes_outcomes_wait_not_fail(
    ws: Workspace, scorer: Scorer, caplog: pytest.LogCaptureFixture, no_retry: None
) -> None:
    first, second = disputes(ws, 3, "b")[:2], disputes(ws, 3, "b")[2]
    files = len(ws.files("disputes"))
    with ws._lock():  # another process writing (compaction, an import)
        with pytest.raises(WorkspaceBusy):
            ws.compact(wait_s=0)  # what that process would see of this one, and the other way round
        for e in first:
            out = scorer.record_outcome("disputes", e)
            assert out["duplicate"] is False and out["applied"] is True  # counted online all the same
    assert not {"dp_b_0", "dp_b_1"} & set(ids(ws))
    busy = [r for r in caplog.records if "being written by another process" in r.getMessage()]
    assert len(busy) == 1  # one warning for the busy spell, not one per outcome
    assert scorer.events_waiting() == 2  # what /healthz reports
    waiting = {p["dispute_id"] for _, p in scorer.log.unappended_outcomes()}
    assert waiting == {"dp_b_0", "dp_b_1"}  # in the decision log: a crash now appends them at the restart
    assert scorer.record_outcome("disputes", first[0])["duplicate"] is True  # known while it waits
    scorer.record_outcome("disputes", second)  # the next append takes the waiting ones along
    assert {"dp_b_0", "dp_b_1", "dp_b_2"} <= set(ids(ws))
    assert len(ws.files("disputes")) == files + 1  # one transaction, one file for the day
    assert scorer.events_waiting() == 0
    assert sorted(ids(ws)).count("dp_b_0") == 1
    assert scorer.log.unappended_outcomes() == []


def test_close_appends_what_waits(ws: Workspace, tmp_path: Path, no_retry: None) -> None:
    s = Scorer.open(ws, decision_log=f"sqlite:///{tmp_path / 'd2.db'}", durability="os")
    (e,) = disputes(ws, 1, "z")
    with ws._lock():
        s.record_outcome("disputes", e)
    assert "dp_z_0" not in ids(ws)
    s.close(snapshot=False)
    assert "dp_z_0" in ids(ws)


def test_a_restart_while_busy_keeps_waiting_events_unmarked_and_two_servers_append_once(
    ws: Workspace, tmp_path: Path, no_retry: None
) -> None:
    """A waits with an outcome (busy workspace); B starts on the same decision log while it is still busy,
    then A closes: the outcome is in the event log once, and never marked before it was there."""
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    a = Scorer.open(ws, decision_log=db, durability="os")
    (e,) = disputes(ws, 1, "r")
    with ws._lock():
        a.record_outcome("disputes", e)
        b = Scorer.open(ws, decision_log=db, durability="os")  # its start finds the outcome, still busy
        assert [p["dispute_id"] for _, p in b.log.unappended_outcomes()] == ["dp_r_0"]  # not marked
    b.record_outcome("disputes", disputes(ws, 2, "r")[1])  # B's next append takes A's outcome along
    a.close(snapshot=False)  # A's flush finds it there and leaves it out
    b.close(snapshot=False)
    assert sorted(ids(ws)).count("dp_r_0") == 1
    assert "dp_r_1" in ids(ws)


def test_waiting_events_are_retried_without_another_outcome(
    ws: Workspace, scorer: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from payfm.serving import feedback

    monkeypatch.setattr(feedback, "APPEND_RETRY_S", 0.05)
    (e,) = disputes(ws, 1, "t")
    with ws._lock():
        scorer.record_outcome("disputes", e)
        time.sleep(0.2)  # retried while busy: still waiting
        assert "dp_t_0" not in ids(ws)
    # the flush writes the file, then marks the outcome appended in the decision log: a loaded machine can
    # look in between, so both are awaited
    deadline = time.monotonic() + 5
    while ("dp_t_0" not in ids(ws) or scorer.log.unappended_outcomes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "dp_t_0" in ids(ws) and scorer.log.unappended_outcomes() == []


def test_a_second_busy_spell_is_retried_too(
    ws: Workspace, scorer: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from payfm.serving import feedback

    monkeypatch.setattr(feedback, "APPEND_RETRY_S", 0.05)
    first, second = disputes(ws, 2, "s")

    def appended(oid: str) -> bool:
        # the flush commits the file, then empties its waiting list (events_waiting is a lock-free snapshot):
        # a loaded machine can look in between, so both are awaited
        deadline = time.monotonic() + 5
        while (oid not in ids(ws) or scorer.events_waiting()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return oid in ids(ws)

    with ws._lock():
        scorer.record_outcome("disputes", first)
    assert appended("dp_s_0")  # by the retry timer
    with ws._lock():
        scorer.record_outcome("disputes", second)  # a new spell: the first timer is spent
    assert appended("dp_s_1") and scorer.events_waiting() == 0


def test_an_event_waiting_twice_is_appended_once(ws: Workspace, scorer: Scorer) -> None:
    (e,) = disputes(ws, 1, "d")
    with ws._lock():
        scorer.record_outcome("disputes", e)
        scorer._append_to_event_log("disputes", [e])  # as a restart's recovery would queue it again
        assert scorer.events_waiting() == 2
    scorer._flush_appends()
    assert ids(ws).count("dp_d_0") == 1 and scorer.events_waiting() == 0


def test_close_stops_appending_even_when_its_snapshot_fails(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Scorer.open(ws, decision_log=f"sqlite:///{tmp_path / 'd3.db'}", durability="os")
    a, b = disputes(ws, 2, "c")
    with ws._lock():
        s.record_outcome("disputes", a)
        s.close(snapshot=False)  # still busy: a is left to the next start
    s._flush_appends()  # a retry timer firing after the close, the workspace free again
    assert "dp_c_0" not in ids(ws)  # nothing appended after the close (the decision log is closed)
    s2 = Scorer.open(ws, decision_log=f"sqlite:///{tmp_path / 'd3.db'}", durability="os")
    assert "dp_c_0" in ids(ws)  # the next start appended it
    with ws._lock():
        s2.record_outcome("disputes", b)

    def full_disk() -> None:
        raise OSError("disk full")

    monkeypatch.setattr(s2, "snapshot", full_disk)
    with pytest.raises(OSError, match="disk full"):
        s2.close()
    assert "dp_c_1" in ids(ws)  # the last flush ran all the same
    assert s2._append_timer is None or not s2._append_timer.is_alive()


def test_compaction_waits_for_the_lock_and_a_failed_commit_leaves_no_files(
    ws: Workspace, scorer: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for e in disputes(ws, 6, "w"):
        scorer.record_outcome("disputes", e)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with ws._lock():
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    with pytest.raises(WorkspaceBusy, match=r"waited 0\.05 s"):
        ws.compact(wait_s=0.05)
    threading.Timer(0.3, release.set).start()  # the holder lets go while the next compaction waits
    assert ws.compact(wait_s=10)["disputes"].days_rewritten >= 1
    t.join()
    for e in disputes(ws, 3, "f"):
        scorer.record_outcome("disputes", e)
    before = sorted((ws.root / "disputes").rglob("*.parquet"))

    def fail(manifest: dict[str, Any]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ws, "_commit", fail)
    with pytest.raises(WorkspaceError, match=r"manifest\.json' failed: disk full"):  # (one line)
        ws.compact()
    assert sorted((ws.root / "disputes").rglob("*.parquet")) == before  # its new files removed again
    assert not (ws.root / ".writing").exists()


def test_the_key_index_keeps_only_listed_files(ws: Workspace, scorer: Scorer) -> None:
    from payfm.serving import event_lookup

    for e in disputes(ws, 10, "i"):
        scorer.record_outcome("disputes", e)
    ws.compact()
    assert event_lookup.matching(ws, "disputes", "dispute_id", "dp_i_3", "dispute_id") == ["dp_i_3"]
    cache = event_lookup._KEY_INDEX[(str(ws.root / "disputes"), "dispute_id")]
    assert set(cache) == {str(f) for f in ws.files("disputes")}  # the compacted-away files are forgotten


def test_compaction_keeps_every_row_in_order_and_leaves_one_file_a_day(ws: Workspace, scorer: Scorer) -> None:
    for e in disputes(ws, 30, "k"):
        scorer.record_outcome("disputes", e)
    before = {t: ws.read(t).to_pylist() for t in ("charges", "disputes", "refunds")}
    files, version = len(ws.files("disputes")), ws.manifest()["version"]
    days = {rel.parts[1] for rel in (Path(p).relative_to(ws.root) for p in ws.files("disputes"))}
    assert files > len(days)
    result = ws.compact()
    assert result["disputes"].files_before == files and result["disputes"].files_after == len(days)
    assert result["charges"].days_rewritten == 0  # one file a day already: left as it is
    assert ws.manifest()["version"] == version + 1  # backfills of the version before are recomputed

    def by_day(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(rows, key=lambda r: r["created"].date())  # stable: a day's order is kept

    for table, rows in before.items():
        assert ws.read(table).to_pylist() == by_day(rows), table
    assert ws.compact()["disputes"].days_rewritten == 0  # nothing left to do
    assert ws.manifest()["version"] == version + 1  # and nothing committed
    on_disk = {p for p in (ws.root / "disputes").rglob("*.parquet")}
    assert on_disk > set(
        ws.files("disputes")
    )  # the replaced files stay a while, for readers that listed them


def test_a_reader_that_listed_the_files_before_a_compaction_still_reads_them(
    ws: Workspace, scorer: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from payfm.events import workspace

    for e in disputes(ws, 12, "g"):
        scorer.record_outcome("disputes", e)
    con = ws.connect()  # a long job's view, opened before the compaction
    n = ws.count("disputes")
    listed = set(ws.files("disputes"))
    ws.compact()
    assert con.execute("SELECT count(*) FROM disputes").fetchone() == (n,)  # its files are still there
    monkeypatch.setattr(workspace, "RETIRE_AFTER_S", 0.0)  # an hour later
    scorer.record_outcome("disputes", disputes(ws, 1, "h")[0])  # the next transaction deletes them
    assert not any(p.exists() for p in listed - set(ws.files("disputes")))
    assert "retired" not in ws.manifest()
    assert ws.count("disputes") == n + 1
    con.close()


def test_outcomes_during_compaction_are_all_appended(ws: Workspace, scorer: Scorer) -> None:
    events = disputes(ws, 60, "p")
    for e in events[:20]:
        scorer.record_outcome("disputes", e)
    stop = threading.Event()

    def compact_again_and_again() -> None:
        while not stop.is_set():
            with contextlib.suppress(WorkspaceBusy):  # the scorer appending: compaction gives way here
                ws.compact(["disputes"])

    t = threading.Thread(target=compact_again_and_again)
    t.start()
    try:
        for e in events[20:]:
            scorer.record_outcome("disputes", e)
    finally:
        stop.set()
        t.join()
    scorer.record_outcome("disputes", disputes(ws, 1, "q")[0])  # takes along any still waiting
    got = [i for i in ids(ws) if i.startswith("dp_p_")]
    assert sorted(got) == sorted(e["dispute_id"] for e in events)
    assert scorer.log.unappended_outcomes() == []


def test_cli_compact_reports_and_refuses_an_unknown_table(ws: Workspace, scorer: Scorer) -> None:
    for e in disputes(ws, 12, "x"):
        scorer.record_outcome("disputes", e)
    run = CliRunner()
    summary = run.invoke(cli, ["-w", str(ws.root), "summary"]).output
    assert "1 table(s) with days in several files" in summary and "payfm compact" in summary
    out = run.invoke(cli, ["-w", str(ws.root), "compact", "--table", "disputes"])
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if x.startswith("disputes:"))
    assert " files -> " in line and "rows)" in line
    assert "one per table and day" in run.invoke(cli, ["-w", str(ws.root), "summary"]).output
    again = run.invoke(cli, ["-w", str(ws.root), "compact"])
    assert again.exit_code == 0 and "Nothing to compact" in again.output
    bad = run.invoke(cli, ["-w", str(ws.root), "compact", "--table", "dispute"])
    assert bad.exit_code == 2 and "'dispute' is not one of" in bad.output
