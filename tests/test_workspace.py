"""The workspace: day partitions, DuckDB views, and atomic transactions (including a killed writer)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from factories import charges, disputes
from payfm.errors import WorkspaceError
from payfm.events.validate import ValidationError
from payfm.events.workspace import Workspace


def test_open_requires_an_existing_workspace_unless_create(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="No payfm workspace at"):
        Workspace.open(tmp_path / "nope")
    ws = Workspace.open(tmp_path / "ws", create=True)
    assert Workspace.open(tmp_path / "ws").root == ws.root
    assert ws.count("charges") == 0


def test_writes_one_file_per_utc_day_and_reads_back(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path, create=True)
    data = charges(10)  # 7 h apart from 2026-01-01 00:00: days 01..03
    with ws.writer() as w:
        w.write("charges", data)
    days = sorted(p.parent.name for p in ws.files("charges"))
    assert days == ["day=2026-01-01", "day=2026-01-02", "day=2026-01-03"]
    assert ws.read("charges").sort_by("charge_id").equals(data)
    con = ws.connect()
    assert con.execute("SELECT count(*), min(amount), max(amount) FROM charges").fetchone() == (
        10,
        1000,
        1009,
    )
    # Timestamps come back as UTC instants.
    first = con.execute("SELECT strftime(min(created), '%Y-%m-%d %H:%M') FROM charges").fetchone()
    assert first == ("2026-01-01 00:00",)


def test_unsorted_input_lands_in_the_right_day(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path, create=True)
    data = charges(8)
    shuffled = data.take(pa.array([7, 0, 5, 2, 1, 6, 3, 4]))
    with ws.writer() as w:
        w.write("charges", shuffled)
    con = ws.connect()
    rows = con.execute(
        "SELECT filename, strftime(created, '%Y-%m-%d') FROM read_parquet("
        + repr([str(f) for f in ws.files("charges")])
        + ", filename = true)"
    ).fetchall()
    assert all(f"day={day}" in fname for fname, day in rows)


def test_append_adds_and_replace_swaps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from payfm.events import workspace

    ws = Workspace.open(tmp_path, create=True)
    with ws.writer() as w:
        w.write("charges", charges(4))
    with ws.writer("append") as w:
        w.write("charges", charges(3, prefix="ch_b"))
    assert ws.count("charges") == 7
    old = set(ws.files("charges"))
    with ws.writer("replace") as w:
        w.write("charges", charges(2, prefix="ch_c"))
    assert ws.count("charges") == 2
    assert ws.count("disputes") == 0
    # Replaced files stay for the grace period (retired, as a compaction's), then the next write deletes them.
    on_disk = set((tmp_path / "charges").rglob("*.parquet"))
    assert on_disk == old | set(ws.files("charges")) and len(ws.manifest()["retired"]) == len(old)
    monkeypatch.setattr(workspace, "RETIRE_AFTER_S", 0.0)  # an hour later
    with ws.writer("append") as w:
        w.write("charges", charges(1, prefix="ch_d"))
    on_disk = list((tmp_path / "charges").rglob("*.parquet"))
    assert sorted(on_disk) == sorted(ws.files("charges")) and "retired" not in ws.manifest()


def test_wrong_schema_is_refused_and_nothing_is_committed(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path, create=True)
    before = (tmp_path / "manifest.json").read_text()
    with pytest.raises(ValidationError, match="'created': expected a required column"), ws.writer() as w:
        w.write("disputes", disputes(["ch_1"], charges(1).column("created")[0].as_py()))
        w.write("charges", pa.table({"charge_id": ["x"]}))
    assert (tmp_path / "manifest.json").read_text() == before
    assert ws.count("disputes") == 0
    assert not list((tmp_path / "disputes").rglob("*.parquet"))


def test_failure_mid_transaction_keeps_previous_state(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path, create=True)
    with ws.writer() as w:
        w.write("charges", charges(5))
    snapshot = ws.read("charges")
    with pytest.raises(RuntimeError, match="boom"), ws.writer("replace") as w:
        w.write("charges", charges(50, prefix="ch_new"))
        raise RuntimeError("boom")
    assert ws.read("charges").equals(snapshot)


def test_second_writer_is_refused_while_one_is_open(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path, create=True)
    other = Workspace.open(tmp_path)
    with ws.writer(), pytest.raises(WorkspaceError, match="being written by another process"), other.writer():
        pass


_KILLED_WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from factories import charges
from payfm.events.workspace import Workspace
ws = Workspace.open(sys.argv[1])
with ws.writer("replace") as w:
    for k in range(3):
        w.write("charges", charges(20, prefix=f"ch_new{k}_"))
    Path(sys.argv[1], "ready").write_text("1")
    time.sleep(60)
"""


def test_a_killed_writer_leaves_the_previous_state_intact(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path, create=True)
    with ws.writer() as w:
        w.write("charges", charges(6))
    snapshot = ws.read("charges")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path), str(Path(__file__).parent)],
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "ready").exists():
        assert proc.poll() is None, "the writer died before it was killed"
        assert time.monotonic() < deadline, "the writer never got ready"
        time.sleep(0.05)
    # The killed writer had new files on disk, not yet committed.
    assert len(list((tmp_path / "charges").rglob("*.parquet"))) > len(ws.files("charges"))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert ws.read("charges").equals(snapshot)
    assert ws.connect().execute("SELECT count(*) FROM charges").fetchone() == (6,)
    # The next writer removes the stray files and commits normally.
    with ws.writer() as w:
        w.write("charges", charges(2, prefix="ch_next"))
    assert ws.count("charges") == 8
    assert sorted((tmp_path / "charges").rglob("*.parquet")) == sorted(ws.files("charges"))


def test_secret_is_created_once_private_and_stable(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path, create=True)
    key = ws.secret()
    assert len(key) == 32
    assert Workspace.open(tmp_path).secret() == key
    assert (tmp_path / "secret.key").stat().st_mode & 0o077 == 0
    assert Workspace.open(tmp_path / "other", create=True).secret() != key


def test_damaged_manifest_is_a_clear_error(tmp_path: Path) -> None:
    Workspace.open(tmp_path, create=True)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(WorkspaceError, match="not valid JSON"):
        Workspace.open(tmp_path).manifest()
