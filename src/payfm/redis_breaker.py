"""Failing at once the calls that queued behind a Redis call that failed, instead of each waiting out its
own timeout in turn.

The scorer holds its state lock across a decision's Redis round trips (what orders the decisions, their
sequence numbers and the outcomes). With a Redis that stalls, each request waited its socket timeout (10 s)
in turn behind the lock: the k-th of k concurrent requests got its 503 after about k x 10 s (an SRE's
SIGSTOP of redis-server: 10.0, 20.1, 30.1, 40.1 s...). The state lock is a :class:`QueuedLock`, which
remembers when the thread holding it began to wait for it; a :class:`Breaker` remembers when a call failed on
the connection (refused, reset, no answer within the timeout), and :meth:`Breaker.check` fails at once, with
the same kind of error (so the same 503 ``Unavailable``, with ``Retry-After``), the call of a thread that
began waiting for the lock before that failure: every request queued behind the failed one gets its 503
together with it. A request that waited for a worker thread first counts from when it came
(:func:`queued_since`), so those the thread pool held back meanwhile fail with it too. A request that comes
after the failure asks Redis again: the first one after Redis is back succeeds, and none waits more than
about one timeout (the call in flight when it came).

One breaker serves every store of a process on one Redis URL (:func:`breaker_for`): the online feature
state and each foundation-model embedder's state are asked in turn under the same lock, so a call of either
that failed fails the calls of both that queued behind it.

    >>> b = breaker_for("redis://127.0.0.1:6379/0")
    >>> b.check()  # nothing failed: ask Redis
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

# .since: when the thread holding a QueuedLock began to wait for it (monotonic); .arrived: when the request
# the thread runs came, if it waited for a thread before (queued_since)
_held = threading.local()


@contextmanager
def queued_since(arrived: float) -> Iterator[None]:
    """In the block, the calling thread's :class:`QueuedLock` waits count from ``arrived`` (a
    ``time.monotonic()``), not from when it asks for the lock: a request that waited for a worker thread
    (``asyncio.to_thread``'s pool, 6 threads on 2 cores) was queued all that time. Without it, 24 concurrent
    requests behind a stalled Redis got their 503s in steps of one timeout (10, 20, ... 58 s): each batch
    the pool let in began waiting after the call in flight failed, and asked Redis again."""
    _held.arrived = arrived
    try:
        yield
    finally:
        _held.arrived = None


class QueuedLock:
    """A lock (as ``threading.Lock``: ``with``, ``acquire``, ``release``, usable by ``threading.Condition``)
    that remembers, for the thread holding it, when that thread began to wait for it (or, inside
    :func:`queued_since`, when its request came)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        arrived = getattr(_held, "arrived", None)
        since = time.monotonic() if arrived is None else arrived
        got = self._lock.acquire(blocking, timeout)
        if got:
            _held.since = since
        return got

    def release(self) -> None:
        _held.since = None
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class Breaker:
    """Remembers when Redis at ``url`` last failed on its connection; :meth:`check` before a call raises when
    the calling thread holds a :class:`QueuedLock` it began waiting for before that failure. ``errors``: the
    exception types that trip it (redis-py's connection errors and timeouts), for
    ``except breaker.errors as e: breaker.trip(e)``."""

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self.errors: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
        self._at = -float("inf")  # time.monotonic() of the last failure
        self._failure: Exception | None = None

    def check(self) -> None:
        """Raise (the failure's kind: a redis-py ConnectionError or TimeoutError) when the calling thread
        queued for its state lock before Redis last failed; return at once otherwise."""
        since = getattr(_held, "since", None)
        if since is None or since > self._at:
            return
        import redis

        from payfm.errors import scrubbed

        failure = self._failure
        kind: Any = redis.TimeoutError if isinstance(failure, redis.TimeoutError) else redis.ConnectionError
        said = scrubbed(" ".join(str(failure).split())[:160], self.url)
        raise kind(
            f"Redis failed {time.monotonic() - self._at:.1f} s ago, while this request waited for the state "
            f"lock ({type(failure).__name__}: {said}); not asked again for it"
        )

    def trip(self, e: Exception) -> None:
        """Redis just failed with ``e``: the calls queued meanwhile fail at once."""
        self._failure, self._at = e, time.monotonic()

    def guarded(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)`` through the breaker: checked first, tripped by a connection failure."""
        self.check()
        try:
            return call(*args, **kwargs)
        except self.errors as e:
            self.trip(e)
            raise


_breakers: dict[str, Breaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(url: str) -> Breaker:
    """The process's one :class:`Breaker` of the Redis at ``url`` (made at the first call)."""
    with _breakers_lock:
        breaker = _breakers.get(url)
        if breaker is None:
            breaker = _breakers[url] = Breaker(url)
        return breaker
