"""Errors of the decision service; each carries its HTTP status and, where it has one, the field at fault.

The HTTP app has one handler that turns any :class:`payfm.errors.PayfmError` into a JSON error
(``{"error": {"type", "message", "field"}}``) with :func:`http_status`; the CLI prints the message. A message
that quotes what the client sent (an id, a path parameter, the path) quotes it through :func:`shown`.
"""

from __future__ import annotations

import re

from payfm.errors import PayfmError
from payfm.events.cards import mask_long_numbers

_SHOWN_CHARS = 120  # longer values are cut: a message names the value, it does not reproduce it


class ServingError(PayfmError):
    """A request the service refuses; ``status`` is the HTTP status, ``field`` the input field at fault."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidInput(ServingError):
    """The input does not match the event schema (422)."""

    status = 422


class Unauthorized(ServingError):
    """No valid API key (401)."""

    status = 401


class NotFound(ServingError):
    """No such charge, review or key (404)."""

    status = 404


class Conflict(ServingError):
    """The request conflicts with the current state, e.g. closing a closed review (409)."""

    status = 409


class PayloadTooLarge(ServingError):
    """The request body exceeds the configured limit (413)."""

    status = 413


class Overloaded(ServingError):
    """Too many requests in flight; retry after a moment (503 with Retry-After)."""

    status = 503


class Unavailable(ServingError):
    """A backend the decision needs (the decision log, the shared online state) failed or did not answer in
    time: nothing was decided for the client, which retries (503 with Retry-After)."""

    status = 503

    def __init__(self, message: str, *, backend: str) -> None:
        super().__init__(message)
        self.backend = backend


def not_committed(timeout: float) -> Unavailable:
    """The 503 of a decision-log commit not done in ``timeout`` seconds (it may land later: a retry sees)."""
    return Unavailable(
        f"The decision log did not commit within {timeout:g} s: the request may not be recorded. Retry after "
        "the Retry-After header's seconds.",
        backend="decision log",
    )


def backend_errors() -> tuple[type[Exception], ...]:
    """The exception types that may be a backend's failure (:func:`backend_failure` says which are)."""
    import sqlite3

    import psycopg
    import redis

    return (
        psycopg.OperationalError,
        psycopg.InterfaceError,
        sqlite3.OperationalError,
        redis.ConnectionError,
        redis.TimeoutError,
        redis.ResponseError,
    )


def backend_failure(e: BaseException) -> Unavailable | None:
    """What a backend's failure becomes for the client, or None when ``e`` is no backend failure (a bug is
    a 500). Failures: PostgreSQL's operational errors (connection lost, server shutting down, pool
    exhausted) and interface errors (a connection closed under the request); SQLite's busy, locked, full,
    read-only, unopenable and I/O errors (not "no such table" or a syntax error: those are bugs); Redis's
    connection errors and timeouts, and the answers of a server that cannot write now (a replica after a
    failover, out of memory, its primary down). The message names the backend and the error's type, not its
    text (a driver's text may name hosts, users or values)."""
    import sqlite3

    import psycopg

    from payfm.redis_load import failure_types

    sqlite_state = isinstance(e, sqlite3.OperationalError) and _sqlite_unavailable(e)
    if sqlite_state or isinstance(e, psycopg.OperationalError | psycopg.InterfaceError):
        backend = "decision log"
    elif isinstance(e, failure_types()):
        backend = "shared online state"
    else:
        return None
    return Unavailable(
        f"The {backend} did not answer ({type(e).__name__}): no decision or outcome was recorded, though "
        "the online state may already count the request. Retry it with the same body after the Retry-After "
        "header's seconds (it is counted once; docs/serving.md, 'Limits').",
        backend=backend,
    )


def _sqlite_unavailable(e: BaseException) -> bool:
    """Whether a SQLite error is the database's state (busy, locked, full, read-only, not openable, I/O),
    which passes or an operator fixes, rather than a statement's fault. The primary result code is the low
    byte of the extended one; an error raised without a code (a test's, a wrapper's) counts as the state."""
    import sqlite3

    code = getattr(e, "sqlite_errorcode", None)
    if code is None:
        return True
    transient = {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_PROTOCOL,
    }
    return int(code) & 0xFF in transient


def shown(value: object) -> str:
    """``value`` as an error message may quote it: every run of 13 or more digits (any full card number
    among them, however it is written) replaced by ``[card number removed]``, then cut to 120 characters.

    >>> shown("/v1/reviews/4111 1111 1111 1111/close"), shown("ch_1")
    ('/v1/reviews/[card number removed]/close', 'ch_1')
    """
    text = mask_long_numbers(str(value))
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def printable(text: str) -> str:
    """``text`` with its control and format characters escaped (``\\n``, ``\\x1b``): a client's text in a
    log line or message cannot start another line or move the terminal's cursor."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def http_status(e: PayfmError) -> int:
    """The HTTP status of any payfm error: its own for serving errors, 422 for other user errors."""
    return e.status if isinstance(e, ServingError) else 422
