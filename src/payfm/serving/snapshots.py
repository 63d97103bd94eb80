"""Snapshots of the memory state: written with the decision-log sequence number they cover, from a forked
child process (:mod:`payfm.serving.snapshot_child`) so the server goes on deciding meanwhile, periodically
on a thread of their own and at close; a restart restores the newest one of its feature set and decision
log and replays the log after it (:meth:`payfm.serving.scorer.Scorer.open`).

:class:`SnapshotMixin` holds these methods of :class:`payfm.serving.scorer.Scorer`; it uses the scorer's
state lock, decision log, online features and workspace.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from payfm.events.workspace import Workspace, alive
from payfm.features.online import OnlineFeatures
from payfm.features.stores import MemoryStore
from payfm.serving.decision_log import DecisionLog
from payfm.serving.snapshot_child import fork_writer, snapshot_seq

if TYPE_CHECKING:
    from payfm.serving.bundle import Bundle
    from payfm.serving.scorer import ScorerConfig

log = logging.getLogger("payfm.serving")


class SnapshotMixin:
    """State snapshots of a :class:`~payfm.serving.scorer.Scorer` (see the module docstring)."""

    ws: Workspace
    online: OnlineFeatures
    bundle: Bundle
    log: DecisionLog
    config: ScorerConfig
    _lock: threading.Lock
    _drained: threading.Condition
    _since_snapshot: int
    _snapshotting: bool
    _settled: Callable[[], int]  # the scorer's: waits for decisions in flight; the seq logged up to

    def _snapshot_dir(self) -> Path:
        return self.ws.root / "serving" / "state"

    def _snapshot_prefix(self) -> str:
        """Snapshots are named ``<feature set version>-<decision log id>-<seq>.json.gz``: a snapshot counts
        the sequence numbers of one decision log, and another log (a server moved to PostgreSQL, a deleted
        SQLite file) numbers its events from 1 again, so a snapshot of another log would hide them."""
        return f"{self.bundle.fset.version}-{self.log.log_id()}-"

    def snapshot(self) -> Path | None:
        """Write the memory state with the sequence number it covers; returns its path (None: not a memory
        state, a snapshot is being written already, or it failed: logged).

        The state lock is held only to let in-flight decisions commit and to take a consistent copy: on
        POSIX the copy is a ``fork`` (copy-on-write pages, as Redis' BGSAVE), and the child process writes
        the file while this process goes on deciding; where ``fork`` is missing or fails, the file is
        written under the lock."""
        store = self.online.store
        if not isinstance(store, MemoryStore):
            return None
        version = self.bundle.fset.version
        d = self._snapshot_dir()
        d.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._snapshotting:
                return None
            seq = self._settled()
            path = d / f"{self._snapshot_prefix()}{seq}.json.gz"
            self._since_snapshot = 0
            child = 0
            if self.config.fork_snapshots and hasattr(os, "fork"):
                try:
                    child = fork_writer(lambda: store.snapshot(path, version))
                except OSError as e:  # ENOMEM, EAGAIN: write it here instead
                    log.warning("fork for the state snapshot failed (%s): writing it under the lock", e)
            if child:
                self._snapshotting = True
            else:
                store.snapshot(path, version)
        if child:
            try:
                _, status = os.waitpid(child, 0)
            finally:
                with self._lock:
                    self._snapshotting = False
                    self._drained.notify_all()
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                (d / f".{path.name}.{child}.tmp").unlink(missing_ok=True)
                if -code in (signal.SIGINT, signal.SIGTERM):  # a stop of the process group: not a failure
                    log.info(
                        "the state snapshot at seq %d was stopped by %s", seq, signal.Signals(-code).name
                    )
                else:
                    log.error(
                        "the state snapshot at seq %d failed in its child process (exit code %d)", seq, code
                    )
                return None
        for old in d.glob(f"{version}-*.json.gz"):  # this log's older ones, and any of another log
            if old != path and (not old.name.startswith(self._snapshot_prefix()) or snapshot_seq(old) < seq):
                old.unlink(missing_ok=True)
        for tmp in d.glob(f".{version}-*.tmp"):  # left by a writer that died (both processes killed)
            if not alive(int(tmp.name.split(".")[-2])):  # ".<name>.<pid>.tmp"
                tmp.unlink(missing_ok=True)
        return path

    def _snapshot_in_background(self) -> None:
        """A periodic snapshot on its own thread: the request that completed the interval does not wait."""

        def run() -> None:
            try:
                self.snapshot()
            except Exception:  # a failed snapshot must not fail or stop deciding; the next one retries
                log.exception("the periodic state snapshot failed")

        threading.Thread(target=run, name="payfm-snapshot", daemon=True).start()
