"""The commit point of a workspace write is the manifest's rename, and only it: an interrupt that lands just
after the rename (Ctrl-C's KeyboardInterrupt and the CLI's SIGTERM land at any bytecode) keeps the files the
new manifest lists, and a directory flush the filesystem cannot do does not undo a committed write.

Found by an import review: a SIGTERM sent as soon as manifest.json was replaced left, in 6 of 8 runs, a
manifest listing 60 files that the aborting writer had removed; every later read and write failed."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from factories import charges
from payfm.errors import WorkspaceError
from payfm.events.workspace import MANIFEST, Workspace


def _write(ws: Workspace, n: int) -> None:
    with ws.writer() as w:
        w.write("charges", charges(n))


def _interrupt_after_the_rename(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> list[str]:
    real, renamed = os.replace, []

    def replace(src: Any, dst: Any) -> None:
        real(src, dst)
        if Path(dst).name == MANIFEST:
            renamed.append(str(dst))
            raise exc

    monkeypatch.setattr(os, "replace", replace)
    return renamed


@pytest.mark.parametrize("exc", [SystemExit(143), KeyboardInterrupt()])
def test_an_interrupt_just_after_the_rename_keeps_the_committed_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    _write(ws, 30)
    renamed = _interrupt_after_the_rename(monkeypatch, exc)
    with pytest.raises(type(exc)):
        _write(ws, 20)
    monkeypatch.undo()
    assert renamed and ws.written_version == 2
    reopened = Workspace.open(tmp_path / "ws")
    assert reopened.manifest()["version"] == 2 and reopened.count("charges") == 50  # every listed file read
    _write(reopened, 5)  # and the next writer goes on from there
    assert reopened.count("charges") == 55


def test_an_interrupt_before_the_rename_removes_the_writers_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    _write(ws, 30)
    before = sorted(p.name for p in (tmp_path / "ws" / "charges").rglob("*.parquet"))
    real = os.replace

    def refuse(src: Any, dst: Any) -> None:
        if Path(dst).name == MANIFEST:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(KeyboardInterrupt):
        _write(ws, 20)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "ws" / "charges").rglob("*.parquet")) == before
    assert ws.manifest()["version"] == 1 and ws.count("charges") == 30
    assert not [p for p in (tmp_path / "ws").iterdir() if p.name.endswith(".tmp")]


def _failing_dir_fsync(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_filesystem_that_cannot_flush_a_folder_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EINVAL, as some network and FUSE mounts answer a directory's fsync: the write stood, yet the writer
    said "The event log is unchanged" and removed its files."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    _failing_dir_fsync(monkeypatch, errno.EINVAL)
    _write(ws, 30)
    _write(ws, 20)
    monkeypatch.undo()
    assert Workspace.open(tmp_path / "ws").count("charges") == 50


def test_a_flush_that_fails_after_the_rename_says_the_write_is_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    _write(ws, 30)
    _failing_dir_fsync(monkeypatch, errno.EIO)
    with pytest.raises(WorkspaceError, match=r"is committed \(readers see it\), but its folder could not be"):
        _write(ws, 20)
    monkeypatch.undo()
    assert Workspace.open(tmp_path / "ws").count("charges") == 50
