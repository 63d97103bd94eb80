"""A health probe with a time limit: one read at a time, answered within its limit or reported as not
answering, so that ``/healthz`` answers (a 503 naming the backend) while a backend stalls.

A decision log whose table is locked (a PostgreSQL ``LOCK TABLE``, a migration) left every probe waiting:
``/healthz`` never answered, and each probe opened another connection and held another thread (an SRE saw a
server's connections go from 5 to 44 and its thread pool run dry). Here a probe still running when the
next comes is waited on again, not started twice: one connection, one thread, however often the probes
come.

Example:
    >>> import time
    >>> probe = Probe(lambda: time.sleep(0.5), limit_s=0.05)
    >>> probe()
    'no answer to a read within 0.05 s (0 s so far)'
    >>> probe.close()
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Probe:
    """``probe()``: None when ``read`` returned within ``limit_s`` seconds of the probe's start, else what
    went wrong (the read's error, or how long it has gone unanswered)."""

    def __init__(self, read: Callable[[], Any], limit_s: float = 2.0) -> None:
        self._read, self._limit_s = read, limit_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="payfm-health")
        self._lock = threading.Lock()
        self._running: Future[Any] | None = None
        self._started = 0.0

    def __call__(self) -> str | None:
        with self._lock:
            if self._running is None or self._running.done():
                self._running, self._started = self._pool.submit(self._read), time.monotonic()
            running, started = self._running, self._started
        try:
            running.result(timeout=max(0.0, self._limit_s - (time.monotonic() - started)))
        except TimeoutError:
            return (
                f"no answer to a read within {self._limit_s:g} s ({time.monotonic() - started:.0f} s so far)"
            )
        except Exception as e:  # the backend's failure is what the probe reports
            return f"{type(e).__name__}: {e}"
        return None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class OneAtATime(Generic[T]):
    """``await call()``: ``fn()`` run in a thread of its own, one run at a time; a call that comes while one
    runs awaits that run's result. ``/healthz`` answers through it: a plain handler ran in the server's
    thread pool, which blocking requests (outcomes waiting for a stalled commit) can all hold, and then the
    probe that should say so never ran (an SRE's audit: 50 outcomes behind a locked log, ``/healthz`` and
    ``/metrics`` silent)."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="payfm-healthz")
        self._lock = threading.Lock()
        self._running: Future[T] | None = None

    async def __call__(self) -> T:
        with self._lock:
            if self._running is None or self._running.done():
                self._running = self._pool.submit(self._fn)
            running = self._running
        return await asyncio.shield(asyncio.wrap_future(running))


def release_memory() -> None:
    """Give the memory of what was just dropped back to the system: Arrow's pool and glibc's heap keep freed
    memory for reuse, so a server that built the shared state in memory kept it (an SRE saw 840 MB against
    the 300 MB of a server that found the state loaded; this returns about a fifth of the difference, the
    rest being Python's own arenas)."""
    import ctypes
    import ctypes.util
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    libc = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None
    if trim is not None:  # (glibc only)
        trim(0)
