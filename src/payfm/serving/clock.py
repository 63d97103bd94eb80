"""The decision service's time on its events' timeline, for the events it dates itself (a review closure and
the refund or dispute it implies).

Charges and outcomes carry their own times; a closure has none but the moment it is made. In production
the two timelines are one (charges are dated as they come), but the service also serves history: a
replayed world, the demo's, a processor's export. Dated by the wall clock there, a closure would be months
ahead of every other event of its charge's card and merchant, and the velocity windows, which follow each
key's newest event, would fold that key's whole history away (every later charge of the merchant the first
of its month), and the label horizons would count from it. So the service keeps a clock on the events'
timeline: the newest event time it knows, advanced by the wall time since it came. Live, that is the wall
clock (less any lag of the clients' clocks); replaying, it is the replay's time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from payfm.events.workspace import Workspace
from payfm.serving.charges import to_us
from payfm.training.labels import log_end

if TYPE_CHECKING:
    from payfm.serving.decision_log import DecisionLog


class EventClock:
    """The newest event time seen (µs), advanced by the wall time since it was seen; never goes back.

    ``start`` gives, on the first reading, the events known before this process saw any: ``(created_us,
    seen_at)`` pairs, ``seen_at`` the wall time (ISO 8601) the event came, or None for one seen only now
    (read from the event log at startup)."""

    def __init__(self, start: Callable[[], Iterable[tuple[int, str | None]]]) -> None:
        self._start: Callable[[], Iterable[tuple[int, str | None]]] | None = start
        self._lock = threading.Lock()
        self._base_us: int | None = None
        self._at = 0.0  # time.monotonic() when _base_us was seen
        self._newest_us: int | None = None  # the newest event time seen, not ahead of the wall clock

    def saw(self, created_us: int, ago_s: float = 0.0) -> None:
        """An event dated ``created_us`` came ``ago_s`` seconds ago."""
        with self._lock:
            self._saw(created_us, ago_s)

    def _saw(self, created_us: int, ago_s: float) -> None:
        if created_us <= time.time() * 1e6 and (self._newest_us is None or created_us > self._newest_us):
            self._newest_us = created_us
        now = time.monotonic()
        if self._base_us is None or created_us + ago_s * 1e6 > self._base_us + (now - self._at) * 1e6:
            self._base_us, self._at = created_us, now - ago_s

    def now_us(self) -> int | None:
        """The time on the events' timeline now, None before any event (an empty service)."""
        with self._lock:
            self._started()
            if self._base_us is None:
                return None
            return self._base_us + int((time.monotonic() - self._at) * 1e6)

    def newest_us(self) -> int | None:
        """The newest event time seen (None: none), not advanced by the wall time since, and not moved by an
        event dated ahead of the wall clock (a client's fast clock, within --max-future-s): every charge
        decided so far is at or before it, what a late outcome is dated after (feedback's _counted_from)."""
        with self._lock:
            self._started()
            return self._newest_us

    def _started(self) -> None:
        """Take the events known before this process saw any, on the first reading (under the lock)."""
        if self._start is not None:
            start, self._start = self._start, None
            wall = time.time()
            for created_us, seen_at in start():
                ago = 0.0 if seen_at is None else wall - datetime.fromisoformat(seen_at).timestamp()
                self._saw(created_us, max(ago, 0.0))


def known_times(ws: Workspace, log: DecisionLog) -> list[tuple[int, str | None]]:
    """The events a service on ``ws`` and ``log`` knows before it sees any (:class:`EventClock`'s start):
    the event log's latest (seen now) and the decision log's last decision and outcome (seen when logged)."""
    end = log_end(ws.connect())
    known: list[tuple[int, str | None]] = [] if end is None else [(to_us(end, "created"), None)]
    return known + [(t, at) for t, at in log.newest_times()]
