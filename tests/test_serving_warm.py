"""A new server starts its online state from the workspace's event log, not from zero."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set
from payfm.features.online import OnlineFeatures
from payfm.features.parity import apply_log, log_outcomes, replay
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


def test_deciding_goes_on_while_a_forked_child_writes_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child writes the state as of the snapshot's sequence number; a charge decided meanwhile (the
    parent holds no lock) is not in the file but in the log, so a restart counts it exactly once."""
    import threading
    import time

    from payfm.features.stores import MemoryStore

    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=1500, days=3, seed=6)), "replace")
    started, release = tmp_path / "child-started", tmp_path / "release-child"
    write = MemoryStore.snapshot

    def slow_snapshot(self: MemoryStore, path: Path, version: str) -> None:  # runs in the child
        started.touch()
        while not release.exists():
            time.sleep(0.01)
        write(self, path, version)

    monkeypatch.setattr(MemoryStore, "snapshot", slow_snapshot)
    last = ws.read("charges").sort_by([("created", "descending")]).slice(0, 1).to_pylist()[0]
    base = {k: v for k, v in last.items() if k not in ("outcome", "decline_code", "scenario")}

    def live(i: int) -> dict[str, object]:
        return {
            **base,
            "charge_id": f"ch_live_{i}",
            "created": (last["created"] + timedelta(seconds=i)).isoformat(),
        }

    scorer = Scorer.open(ws, config=ScorerConfig(warm_from_event_log=True))
    try:
        first = scorer.score(live(1)).features["card.count_charges_all"]
        result: list[Path | None] = []
        t = threading.Thread(target=lambda: result.append(scorer.snapshot()))
        t.start()
        deadline = time.monotonic() + 30
        while not started.exists():
            assert time.monotonic() < deadline, "the snapshot child did not start"
            time.sleep(0.01)
        # The child is blocked mid-snapshot: the parent decides anyway (with the lock held it could not).
        during: list[object] = []
        d = threading.Thread(
            target=lambda: during.append(scorer.score(live(2)).features["card.count_charges_all"])
        )
        d.start()
        d.join(10)
        assert during == [first + 1], "no decision while the snapshot was being written"
        assert t.is_alive() and not result
        release.touch()
        t.join(30)
        [path] = result
        assert path is not None and path.exists()
        assert not list(path.parent.glob(".*.tmp"))
    finally:
        scorer.close(snapshot=False)
    monkeypatch.setattr(MemoryStore, "snapshot", write)
    again = Scorer.open(ws, config=ScorerConfig(warm_from_event_log=False))
    try:  # snapshot (live 1) + the log's tail (live 2): counted once each
        assert again.score(live(3)).features["card.count_charges_all"] == first + 2
    finally:
        again.close(snapshot=False)
