"""Hold a decision log's writes: a request stays in flight (its record not durable) while a test sends
another, to check what the service answers then."""

from __future__ import annotations

import threading
from typing import Any

from payfm.serving.scorer import Scorer


def hold_writes(scorer: Scorer, **match: str) -> tuple[threading.Event, threading.Event]:
    """Make ``scorer``'s log hold every record whose attributes equal ``match`` (``outcome_id="re_1"``)
    until the returned ``release`` is set; ``entered`` is set when one is held."""
    write, entered, release = scorer.log.write, threading.Event(), threading.Event()

    def held_write(record: Any, timeout: float = 30.0) -> Any:
        if all(getattr(record, k, None) == v for k, v in match.items()):
            entered.set()
            if not release.wait(10):  # a test that never released it would pass through the timeout
                raise AssertionError("a held decision-log write was never released")
        return write(record, timeout)

    scorer.log.write = held_write  # type: ignore[method-assign]
    return entered, release
