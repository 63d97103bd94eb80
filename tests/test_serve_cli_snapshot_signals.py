"""A stop signal sent to the server's whole process group (Ctrl-C) or cgroup (systemd's stop) while a state
snapshot is being written: the snapshot child stops at once and quietly, and leaves no partial snapshot. A
review's `kill -INT -- -PGID` during a snapshot printed "Exception ignored when trying to write to the signal
wakeup fd ... OSError: [Errno 9] Bad file descriptor" from the child, which had inherited uvicorn's handlers
and the event loop's wakeup descriptor, closed that descriptor, and wrote on."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from payfm.events.workspace import Workspace
from payfm.features.stores import MemoryStore
from payfm.serving.scorer import Scorer
from payfm.serving.snapshot_child import fork_writer

STOPS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _served() -> Iterator[list[int]]:
    """This process's signals as `payfm serve` has them: handlers that only ask the server to stop
    (uvicorn's), and the event loop's wakeup descriptor. Yields the signals the handlers took."""
    taken: list[int] = []
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    handlers = {s: signal.signal(s, lambda signum, frame: taken.append(signum)) for s in STOPS}
    wakeup = signal.set_wakeup_fd(writer.fileno())
    try:
        yield taken
    finally:
        signal.set_wakeup_fd(wakeup)
        for s, handler in handlers.items():
            signal.signal(s, handler)
        reader.close()
        writer.close()


def _until(done: object, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not (done() if callable(done) else done):
        assert time.monotonic() < deadline, f"waited {timeout_s} s for {what}"
        time.sleep(0.02)


def _exit_code(pid: int, timeout_s: float = 20.0) -> int:
    """The child's exit code (-N: killed by signal N), or a failure if it has not ended in ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the snapshot child went on writing {timeout_s} s after a stop signal")
        time.sleep(0.02)


@pytest.mark.parametrize("signum", STOPS, ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_ends_the_snapshot_child_at_once_and_quietly(
    signum: int, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    started = tmp_path / "started"

    def write() -> None:  # a long snapshot: 8 s (the test waits for the child's end for up to 20 s)
        started.write_text("")
        for _ in range(400):
            time.sleep(0.02)

    with _served() as taken:
        pid = fork_writer(write)
        _until(started.exists, "the child's write to start")
        os.kill(pid, signum)
        t0 = time.monotonic()
        code = _exit_code(pid)
    assert code == -signum and time.monotonic() - t0 < 5  # killed by it, not after the whole write
    assert taken == []  # (the parent's handlers saw nothing: the signal was the child's)
    err = capfd.readouterr().err
    assert "wakeup fd" not in err and "Bad file descriptor" not in err and "Traceback" not in err, err


def test_a_snapshot_child_stopped_mid_write_leaves_no_partial_snapshot(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The snapshot is published by a rename once complete; the parent removes a stopped child's temporary
    file, says the stop at INFO (a stop of the process group is no failure: it was an ERROR), and the next
    snapshot is written as usual."""
    caplog.set_level(logging.INFO, logger="payfm.serving")
    scorer = Scorer.open(Workspace.open(tmp_path / "ws", create=True))
    state_dir = scorer._snapshot_dir()
    real = MemoryStore.snapshot
    pid_file = tmp_path / "child"

    def slow(store: MemoryStore, path: Path, version: str) -> None:  # in the child: half a file, then waits
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text('{"format": ')
        pid_file.write_text(str(os.getpid()))
        for _ in range(400):
            time.sleep(0.02)
        real(store, path, version)

    try:
        with _served():
            monkeypatch.setattr(MemoryStore, "snapshot", slow)
            written: list[Path | None] = []
            thread = threading.Thread(target=lambda: written.append(scorer.snapshot()))
            thread.start()  # (as the periodic snapshot runs: forked from a thread of its own)
            _until(pid_file.exists, "the child's write to start")
            [partial] = state_dir.iterdir()  # (the half-written temporary file, nothing else)
            assert partial.name.startswith(".") and partial.name.endswith(
                f".json.gz.{pid_file.read_text()}.tmp"
            )
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            thread.join(20)
            assert not thread.is_alive() and written == [None]  # (the parent logged the child's failure)
            assert list(state_dir.iterdir()) == []  # no partial snapshot, no temporary file
            said = [
                (r.levelname, r.getMessage())
                for r in caplog.records
                if "state snapshot at seq" in r.getMessage()
            ]
            assert len(said) == 1 and said[0][0] == "INFO" and said[0][1].endswith("was stopped by SIGTERM")
            monkeypatch.setattr(MemoryStore, "snapshot", real)
            path = scorer.snapshot()
        assert path is not None and [p.name for p in state_dir.iterdir()] == [path.name]
    finally:
        scorer.close(snapshot=False)
    assert "wakeup fd" not in capfd.readouterr().err
