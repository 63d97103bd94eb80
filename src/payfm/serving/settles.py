"""Which outcome records settled lately: whether a decision-log read made outside the state lock is stale.

The outcome and authorization paths of :class:`~payfm.serving.feedback.FeedbackMixin` read what the log holds
of a record before taking the state lock (a PostgreSQL that stalls then holds that request, not every other
one: a review found one dispute retry holding every decision for the watchdog's 30 s). Between that read and
the lock, another request of this process may have recorded the same id and settled it (logged, no longer
pending): the read missed it, and taking it as new would count the outcome twice. :class:`Settles` numbers
each settled key; a read taken at number ``n`` is stale once its key settled after ``n``.

>>> s = Settles(keep=2)
>>> n = s.count
>>> s.add("disputes:dp_1")
>>> s.stale("disputes:dp_1", n), s.stale("disputes:dp_2", n), s.stale("disputes:dp_1", s.count)
(True, False, False)
"""

from __future__ import annotations

from collections import OrderedDict


class Settles:
    """The keys settled lately, with the number each settled at (``count``: the latest). Not thread-safe:
    call under the state lock. ``keep`` bounds what it remembers; a read older than a key it forgot is taken
    as stale (read again), never as fresh."""

    def __init__(self, keep: int = 4096) -> None:
        self.count = 0
        self._last: OrderedDict[str, int] = (
            OrderedDict()
        )  # key -> the number it last settled at, oldest first
        self._forgot = 0  # the newest number forgotten (over ``keep``)
        self._keep = keep

    def add(self, key: str) -> None:
        """``key`` settled (its record logged, or its write failed): no longer pending."""
        self.count += 1
        self._last[key] = self.count
        self._last.move_to_end(key)
        while len(self._last) > self._keep:
            self._forgot = self._last.popitem(last=False)[1]

    def stale(self, key: str, since: int) -> bool:
        """Whether a read of ``key`` made after number ``since`` may have missed its record."""
        return self._last.get(key, 0) > since or self._forgot > since
