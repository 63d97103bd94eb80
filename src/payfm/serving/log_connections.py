"""The decision log's connections to its backend: a small pool of read connections, the writer's connection,
and the watchdog that shuts down a connection whose statement stalled.

:class:`LogConnections` is the base of :class:`payfm.serving.decision_log.DecisionLog`: it tracks the
connections a statement runs on now (reads, the writer's), so that a server's log on the network
(PostgreSQL) can interrupt one that a failover left hanging (:meth:`LogConnections.interrupt_stalled`, every
second on a watchdog thread); the backends supply the connections (:meth:`LogConnections._connect`) and say
how to interrupt one.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from payfm.errors import shown_url

MAX_IDLE_READS = 4  # read connections kept open between reads (more are opened while more threads read)
# A statement of a serving process's log still unanswered after this many seconds (the commit timeout: its
# requests had their 503 already) has its connection shut down (:meth:`LogConnections.interrupt_stalled`).
STALLED_S = 30.0

log = logging.getLogger("payfm.serving")


def _close_quietly(con: Any) -> None:
    with suppress(Exception):  # closing a connection the server dropped: nothing left to do
        con.close()


class LogConnections(ABC):
    """The read pool, the writer's connection and the busy connections' watchdog of a decision log."""

    url: str
    stalled_s = STALLED_S

    def __init__(self) -> None:
        # Read connections: a small pool, not one per thread (the server's worker threads come and go: a
        # connection per thread grew without bound, 79 of PostgreSQL's 100 in an audit's run)
        self._idle: list[Any] = []
        self._pool_lock = threading.Lock()
        self._wcon: Any = None  # the group-commit thread's connection
        # The connections a statement runs on now (reads, the writer's): token -> (connection, since when,
        # time.monotonic(); inf once interrupted); under _pool_lock, and closed only once out of it.
        self._busy: dict[object, tuple[Any, float]] = {}
        self._watchdog: threading.Thread | None = None
        self._stop_watching = threading.Event()

    # ---- backend hooks -------------------------------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> Any:
        """A new connection to the backend."""

    def _connect_reader(self) -> Any:
        """A new connection for reads only (:meth:`_reading`); the backend's own by default."""
        return self._connect()

    def _usable(self, con: Any) -> bool:
        """Whether a connection made earlier can still be used."""
        return con is not None

    # Errors of a connection the backend lost (a database restart, a failover): a read is tried once more on
    # a new connection.
    _lost: tuple[type[BaseException], ...] = ()

    def _interrupt(self, con: Any) -> bool:
        """Make the statement running on ``con`` (in another thread) fail now, as if the backend lost the
        connection; False where the backend cannot (SQLite: nothing on the network to wait for)."""
        return False

    @contextmanager
    def _running_on(self, con: Any) -> Iterator[None]:
        """Mark ``con`` busy in the block, for :meth:`interrupt_stalled`."""
        token = object()
        with self._pool_lock:
            self._busy[token] = (con, time.monotonic())
        try:
            yield
        finally:
            with self._pool_lock:
                del self._busy[token]

    def interrupt_stalled(self, after_s: float) -> int:
        """Shut down the connections whose statement has waited more than ``after_s`` seconds; returns how
        many. A failover that black-holes the open connections (their packets go nowhere, nothing answers
        nor resets) left the writer thread and the health probe waiting in recv for good: every later
        decision a 503, until a restart. The statement fails as on a lost connection, so the batch is tried
        again on a new one (and a read once more)."""
        now, n = time.monotonic(), 0
        with self._pool_lock:  # (a busy connection is closed only once out of _busy: never a reused socket)
            for token, (con, since) in list(self._busy.items()):
                if now - since > after_s and self._interrupt(con):
                    self._busy[token] = (con, float("inf"))  # once
                    n += 1
        return n

    def _watch(self) -> None:
        """The watchdog thread of a server's log on the network: :meth:`interrupt_stalled` every second."""
        while not self._stop_watching.wait(min(1.0, self.stalled_s / 4)):
            if n := self.interrupt_stalled(self.stalled_s):
                log.warning(
                    "the decision log at %s answered no statement for %g s on %d connection(s) (a failover "
                    "that left them hanging?): shut down, the statements are tried again on new ones",
                    shown_url(self.url),
                    self.stalled_s,
                    n,
                )

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        """A read connection from the pool (a new one when none is idle), back to it after the block; one that
        failed is closed, not reused."""
        with self._pool_lock:
            con = self._idle.pop() if self._idle else None
        if con is not None and not self._usable(con):
            _close_quietly(con)
            con = None
        if con is None:
            con = self._connect_reader()
        try:
            with self._running_on(con):
                yield con
        except BaseException:
            _close_quietly(con)
            raise
        with self._pool_lock:
            if len(self._idle) < MAX_IDLE_READS:
                self._idle.append(con)
                return
        _close_quietly(con)

    def _write_connection(self) -> Any:
        if not self._usable(self._wcon):
            self._wcon = self._connect()
        return self._wcon

    def _drop_idle(self) -> None:
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for con in idle:
            _close_quietly(con)

    def _start_watchdog(self) -> None:
        """Start the thread of :meth:`_watch`, unless it runs already."""
        if self._watchdog is None:
            self._stop_watching.clear()
            self._watchdog = threading.Thread(target=self._watch, name="payfm-log-watchdog", daemon=True)
            self._watchdog.start()

    def _stop_watchdog(self) -> None:
        self._stop_watching.set()
        if self._watchdog is not None:
            self._watchdog.join(5)
            self._watchdog = None
