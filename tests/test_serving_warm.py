"""A new server starts its online state from the workspace's event log, not from zero."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set
from payfm.features.online import OnlineFeatures
from payfm.features.parity import apply_log, log_outcomes, replay
from payfm.features.stores import MemoryStore
from payfm.serving.scorer import Scorer, ScorerConfig
from payfm.synth import WorldConfig, generate_world


def test_a_new_scorer_is_warmed_from_the_event_log_and_snapshots_it(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=3000, days=5, seed=4)), "replace")
    history = ws.read("charges").sort_by([("created", "ascending"), ("charge_id", "ascending")])
    last = history.slice(history.num_rows - 1).to_pylist()[0]
    new = {k: v for k, v in last.items() if k not in ("outcome", "decline_code", "scenario")}
    new.update(charge_id="ch_live_after_history", created=last["created"] + timedelta(seconds=1))
    # What a single pass over the whole log gives for the new charge.
    reference = OnlineFeatures(default_set())
    replay(default_set(), history, log_outcomes(ws), online=reference)
    want = reference.features(
        {**new, "created_us": int(new["created"].timestamp() * 1_000_000), "credential_changed_at_us": None}
    )
    scorer = Scorer.open(ws, config=ScorerConfig())
    try:
        got = scorer.score({**new, "created": new["created"].isoformat()}).features
    finally:
        scorer.close()
    assert got["card.count_charges_all"] == want["card.count_charges_all"] > 0
    assert got == want
    # The warm state was snapshotted at close: a second start restores it instead of replaying the log.
    assert list((ws.root / "serving" / "state").glob("*.json.gz"))
    again = Scorer.open(ws, config=ScorerConfig(warm_from_event_log=False))
    try:
        probe = {
            **new,
            "charge_id": "ch_probe",
            "created": (new["created"] + timedelta(seconds=1)).isoformat(),
        }
        assert again.score(probe).features["card.count_charges_all"] == want["card.count_charges_all"] + 1
    finally:
        again.close()


def test_apply_log_is_idempotent(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=2000, days=3, seed=5)), "replace")
    once, twice = OnlineFeatures(default_set()), OnlineFeatures(default_set())
    apply_log(once, ws)
    apply_log(twice, ws)
    apply_log(twice, ws)
    probe = ws.read("charges").slice(0, 1).to_pylist()[0]
    probe.update(charge_id="ch_probe", created_us=int(probe["created"].timestamp() * 1e6) + 10**12)
    probe["credential_changed_at_us"] = None
    assert once.features(probe) == twice.features(probe)


def test_a_snapshot_in_an_old_state_format_is_ignored_and_the_state_rebuilt(tmp_path: Path) -> None:
    import gzip
    import json

    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=1500, days=3, seed=6)), "replace")
    first = Scorer.open(ws, config=ScorerConfig())
    first.close()
    (snap,) = (ws.root / "serving" / "state").glob("*.json.gz")
    with gzip.open(snap, "rt") as f:
        lines = f.read().splitlines()
    head = json.loads(lines[0])
    head.pop("format")  # what an older payfm wrote: format 1, no "format" field
    with gzip.open(snap, "wt") as f:
        f.write("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    last = ws.read("charges").sort_by([("created", "ascending"), ("charge_id", "ascending")])
    probe = last.slice(last.num_rows - 1).to_pylist()[0]
    probe = {k: v for k, v in probe.items() if k not in ("outcome", "decline_code", "scenario")}
    probe.update(charge_id="ch_probe_old", created=(probe["created"] + timedelta(seconds=1)).isoformat())
    again = Scorer.open(ws, config=ScorerConfig())  # no traceback: the old snapshot is ignored
    try:
        count = again.score(probe).features["card.count_charges_all"]
    finally:
        again.close()
    history = ws.read("charges").to_pylist()
    assert count == sum(c["card_fingerprint"] == probe["card_fingerprint"] for c in history) > 0


class HeldSnapshot:
    """``MemoryStore.snapshot`` patched to stop, in the forked child, until the test releases it; the child
    writes its pid first (and the fds it holds, Linux)."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import time

        from payfm.features.stores import MemoryStore

        self.started, self.release = tmp_path / "child-started", tmp_path / "release-child"
        self.write = MemoryStore.snapshot
        started, release, write = self.started, self.release, self.write

        def slow_snapshot(store: MemoryStore, path: Path, version: str) -> None:  # runs in the child
            fds = sorted(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else []
            started.write_text(json.dumps({"pid": os.getpid(), "fds": fds}))
            while not release.exists():
                time.sleep(0.01)
            write(store, path, version)

        monkeypatch.setattr(MemoryStore, "snapshot", slow_snapshot)

    def wait_started(self) -> dict[str, object]:
        import time

        deadline = time.monotonic() + 30
        while not self.started.exists() or not self.started.read_text():
            assert time.monotonic() < deadline, "the snapshot child did not start"
            time.sleep(0.01)
        return dict(json.loads(self.started.read_text()))


def _world(tmp_path: Path) -> tuple[Workspace, Any]:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=1500, days=3, seed=6)), "replace")
    last = ws.read("charges").sort_by([("created", "descending")]).slice(0, 1).to_pylist()[0]
    base = {k: v for k, v in last.items() if k not in ("outcome", "decline_code", "scenario")}

    def live(i: int) -> dict[str, object]:
        return {
            **base,
            "charge_id": f"ch_live_{i}",
            "created": (last["created"] + timedelta(seconds=i)).isoformat(),
        }

    return ws, live


def test_deciding_goes_on_while_a_forked_child_writes_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child writes the state as of the snapshot's sequence number; a charge decided meanwhile (the
    parent holds no lock) is not in the file but in the log, so a restart counts it exactly once. The child
    holds none of the parent's sockets or files (a killed server can restart on its port)."""
    import socket
    import threading

    ws, live = _world(tmp_path)
    held = HeldSnapshot(tmp_path, monkeypatch)
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    scorer = Scorer.open(ws, config=ScorerConfig(warm_from_event_log=True))
    try:
        first = scorer.score(live(1)).features["card.count_charges_all"]
        result: list[Path | None] = []
        t = threading.Thread(target=lambda: result.append(scorer.snapshot()))
        t.start()
        child = held.wait_started()
        if child["fds"]:  # Linux: only stdin, stdout, stderr (and listdir's own) are open in the child
            assert len(child["fds"]) <= 4 and str(listening.fileno()) not in child["fds"]
        # The child is blocked mid-snapshot: the parent decides anyway (with the lock held it could not).
        during: list[object] = []
        d = threading.Thread(
            target=lambda: during.append(scorer.score(live(2)).features["card.count_charges_all"])
        )
        d.start()
        d.join(10)
        assert during == [first + 1], "no decision while the snapshot was being written"
        assert t.is_alive() and not result
        held.release.touch()
        t.join(30)
        [path] = result
        assert path is not None and path.exists()
        assert not list(path.parent.glob(".*.tmp"))
    finally:
        listening.close()
        held.release.touch()  # a failed assertion must not leave the child (and close()) waiting
        scorer.close(snapshot=False)
    monkeypatch.setattr(MemoryStore, "snapshot", held.write)
    again = Scorer.open(ws, config=ScorerConfig(warm_from_event_log=False))
    try:  # snapshot (live 1) + the log's tail (live 2): counted once each
        assert again.score(live(3)).features["card.count_charges_all"] == first + 2
    finally:
        again.close(snapshot=False)


def test_close_waits_for_a_running_snapshot_then_takes_the_final_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    ws, live = _world(tmp_path)
    held = HeldSnapshot(tmp_path, monkeypatch)
    scorer = Scorer.open(ws, config=ScorerConfig(warm_from_event_log=False))
    scorer.score(live(1))
    periodic = threading.Thread(target=scorer.snapshot)
    periodic.start()
    held.wait_started()
    scorer.score(live(2))
    held.started.unlink()
    closing = threading.Thread(target=scorer.close)
    closing.start()
    closing.join(1.0)
    try:
        assert closing.is_alive(), "close() returned while a snapshot was still being written"
    finally:
        held.release.touch()  # the periodic child finishes; close() then forks the final snapshot (released)
        periodic.join(30)
        closing.join(30)
    assert not closing.is_alive()
    snaps = sorted((ws.root / "serving" / "state").glob("*.json.gz"))
    assert [p.name.split("-")[-1] for p in snaps] == ["2.json.gz"]  # the final one, at seq 2, alone


def test_a_failed_fork_writes_the_snapshot_under_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, live = _world(tmp_path)
    scorer = Scorer.open(ws, config=ScorerConfig(warm_from_event_log=False))
    try:
        scorer.score(live(1))
        fork = os.fork

        def no_memory() -> int:
            raise OSError(12, "Cannot allocate memory")

        monkeypatch.setattr(os, "fork", no_memory)
        path = scorer.snapshot()
        assert path is not None and path.exists()  # written here instead
        monkeypatch.setattr(os, "fork", fork)
        scorer.score(live(2))
        assert scorer.snapshot() is not None  # not stuck: the next snapshot forks again
    finally:
        scorer.close(snapshot=False)


def test_an_outcome_the_event_log_holds_is_not_written_again_and_one_before_its_charge_is_refused(
    tmp_path: Path,
) -> None:
    """POSTing an outcome of the event log (a replay over HTTP against a copy of the workspace, say) must not
    add a second row: the backfill would count it twice and differ from the online state. An outcome dated
    before its charge is refused, as the importer refuses it."""
    from payfm.serving.errors import InvalidInput

    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=3000, days=5, seed=4)), "replace")
    refund = ws.read("refunds").to_pylist()[-1]
    before = ws.count("refunds")
    scorer = Scorer.open(ws, config=ScorerConfig(fork_snapshots=False))
    try:
        got = scorer.record_outcome("refunds", refund)
        assert got["duplicate"] and not got["applied"]
        assert ws.count("refunds") == before and not scorer.log.has_outcome("refunds", refund["refund_id"])
        charge = ws.read("charges").to_pylist()[0]
        early = {"dispute_id": "dp_early", "charge_id": charge["charge_id"], "reason": "fraudulent"}
        money = {"amount": 1, "currency": charge["currency"]}  # in its charge's currency
        with pytest.raises(InvalidInput, match="before its charge") as info:
            when = charge["created"] - timedelta(days=1)
            scorer.record_outcome("disputes", early | {"created": when, **money})
        assert (
            info.value.field == "created" and "dp_early" not in ws.read("disputes")["dispute_id"].to_pylist()
        )
        later = early | {"created": charge["created"] + timedelta(days=1), **money}
        assert not scorer.record_outcome("disputes", later)["duplicate"]  # a new one is taken as before
        assert "dp_early" in ws.read("disputes")["dispute_id"].to_pylist()
    finally:
        scorer.close(snapshot=False)


def test_a_snapshot_of_another_decision_log_is_not_restored(tmp_path: Path) -> None:
    """A server moved to another decision log (PostgreSQL, a deleted SQLite file) numbers its events from 1
    again: restoring the old log's snapshot (a higher sequence number) would hide every charge of the new
    one at the next restart."""
    ws, live = _world(tmp_path)
    first = Scorer.open(ws, config=ScorerConfig())
    for i in range(5):
        first.score(live(i))
    first.close()  # a snapshot at seq 5 of the workspace's SQLite log
    other = f"sqlite:///{tmp_path / 'other.db'}"
    second = Scorer.open(ws, config=ScorerConfig(), decision_log=other)
    for i in range(5, 7):
        second.score(live(i))
    second.close(snapshot=False)  # killed: the next start must find these two in the log
    third = Scorer.open(ws, config=ScorerConfig(), decision_log=other)
    try:
        count = third.score(live(7)).features["card.count_charges_all"]
    finally:
        third.close()
    card = live(0)["card_fingerprint"]
    history = sum(c["card_fingerprint"] == card for c in ws.read("charges").to_pylist())
    assert count == history + 2  # the card's charges before: the event log's and the two on this log
    # its own snapshot now, and the other log's is gone
    names = sorted(p.name for p in (ws.root / "serving" / "state").glob("*.json.gz"))
    assert len(names) == 1 and names[0].endswith("-3.json.gz")
