"""Writing the online state's snapshot from a forked child process (copy-on-write, as Redis' BGSAVE), so
the server goes on deciding while the file is written. Used by :meth:`payfm.serving.scorer.Scorer.snapshot`.

Snapshots are ``<workspace>/serving/state/<feature set version>-<decision log id>-<seq>.json.gz``: the state
after the decision log's events up to sequence number ``seq`` (:func:`snapshot_seq`).
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Callable
from pathlib import Path


def fork_writer(write: Callable[[], None]) -> int:
    """Run ``write`` in a forked child process and return the child's pid (the parent goes on at once).

    The child holds a copy-on-write image of this process. Before ``write`` it gives up the parent's signal
    handling (:func:`stop_on_signals`), turns the garbage collector off (a collection would run the parent's
    finalizers and touch every page), closes every inherited file descriptor but stdin/out/err (the
    listening socket, client connections, the decision log's files: a parent killed meanwhile must be able
    to restart on its port) and asks to be killed with its parent (Linux). It takes no lock another thread
    could hold and leaves with ``os._exit``: 0 when ``write`` succeeded; a failure's traceback goes to
    stderr."""
    parent = os.getpid()
    with warnings.catch_warnings():
        # Python 3.12+ warns that fork() in a threaded process may deadlock a child that takes a lock
        # another thread held; the child here takes none (the allocator's locks are reset by glibc).
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which coverage does not follow
        code = 1
        try:
            stop_on_signals()
            gc.disable()
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))
            die_with_parent(parent)
            write()
            code = 0
        except BaseException:
            import traceback

            os.write(2, traceback.format_exc().encode(errors="replace"))
        finally:
            os._exit(code)
    return pid


def stop_on_signals() -> None:  # pragma: no cover - runs in the snapshot child
    """SIGINT and SIGTERM end this process at once, and no signal writes to the parent's wakeup descriptor.

    The child inherits the server's handlers (uvicorn's, which only ask the copy of the server to stop) and
    the event loop's ``signal.set_wakeup_fd``, whose descriptor it then closes: a Ctrl-C or systemd's stop,
    sent to the whole process group or cgroup, printed "Exception ignored when trying to write to the
    signal wakeup fd ... Bad file descriptor" from the child, which wrote on. Its work is not worth
    finishing then: the server stopping takes its final snapshot when this child has ended, and a child
    killed mid-write leaves no partial snapshot (the file is published by a rename once complete, and the
    parent removes the temporary file of a child that failed)."""
    import signal

    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the snapshot child
    """Linux: SIGKILL this process when its parent dies (a killed server leaves no writer behind)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the child finishes its write, then exits
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def snapshot_seq(path: Path) -> int:
    """The decision-log sequence number a state snapshot covers (``...-<seq>.json.gz``)."""
    return int(path.name.split("-")[-1].split(".")[0])


def newest_snapshot_seq(state_dir: Path, log_id: str) -> int | None:
    """The highest sequence number a snapshot in ``state_dir`` of decision log ``log_id`` covers (of any
    feature set version); None without one."""
    seqs = [snapshot_seq(p) for p in state_dir.glob(f"*-{log_id}-*.json.gz")]
    return max(seqs, default=None)
