"""The decision log's writer: one thread drains a queue of records and writes each batch in one transaction
(a group commit), resolving each record's future with its result.

It remembers when it began writing the batch in hand: :meth:`GroupCommit.busy_s` is how long that write has
taken so far (0 when idle), which ``/healthz`` reads, because a read does not see a log that takes no
writes (a SQLite database another process holds the write lock of; a locked PostgreSQL table) until a
decision waits its 30 s for its commit.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from payfm.serving.decision_log import DecisionLog, Record

_STOP = object()


class GroupCommit:
    """One writer thread: drains the queue, writes the batch in one transaction, resolves the futures."""

    def __init__(self, log: DecisionLog, max_batch: int = 512) -> None:
        self._log = log
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._max = max_batch
        self._since: float | None = None  # time.monotonic() when the batch in hand began to be written
        self._in_hand = 0  # records in the batch being written
        self._thread = threading.Thread(target=self._run, name="payfm-decision-log", daemon=True)
        self._thread.start()

    def submit(self, record: Record | None) -> Future[Any]:
        fut: Future[Any] = Future()
        self._q.put((record, fut))
        return fut

    def busy_s(self) -> float:
        """How long the batch being written has taken so far; 0 when no write is in progress."""
        since = self._since
        return 0.0 if since is None else time.monotonic() - since

    def close(self, timeout: float = 30.0) -> int:
        """Write what is queued, then stop the thread, waiting at most ``timeout`` seconds; returns how many
        records were left unwritten (0: all written, or failed). The futures of those still queued fail now
        (their requests waited for them); the batch in hand is the stalled write's own."""
        self._q.put(_STOP)
        self._thread.join(timeout=timeout)
        if not self._thread.is_alive():
            return 0
        left = self._in_hand
        gone = RuntimeError(f"the decision log's writer was stopped: not written within {timeout:g} s")
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                continue
            record, fut = item
            left += record is not None
            if not fut.done():
                fut.set_exception(gone)
        self._q.put(_STOP)  # (the thread ends if its write ever returns)
        return left

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < self._max:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            records = [r for r, _ in batch if r is not None]
            self._in_hand, self._since = len(records), time.monotonic()
            try:
                results = iter(self._log._write_retried(records) if records else [])
                for r, fut in batch:
                    res = None if r is None else next(results)
                    if isinstance(res, Exception):
                        fut.set_exception(res)
                    else:
                        fut.set_result(res)
            except Exception as e:  # the whole transaction failed: no record of the batch is durable
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
            finally:
                self._in_hand, self._since = 0, None
            if stop:
                return
