"""A stop signal that the code between it and the command's end cannot lose.

The CLI turns SIGTERM into ``SystemExit(143)`` raised wherever the main thread stands (:func:`stop`). Where
that is inside a callback a library makes (DuckDB calling back into Python to scan a registered Arrow
source), the library may wrap the exception in an error of its own, or drop it and go on. So the signal is
also recorded here: the CLI ends with the signal's status whatever became of the exception, and every
place that publishes a finished output (renames a temporary over a file, writes a manifest) calls
:func:`check` first, so a stopped command publishes nothing new even when its work ran to the end.

Outside the CLI (the Python API) no handler records anything and :func:`check` does nothing.
"""

from __future__ import annotations

received: list[int] = []  # the signals the CLI's handler took, in order
# Work a second Ctrl-C gave up on, still running in a thread (a DuckDB query deaf to its interrupt): the CLI
# then leaves without waiting for it (the interpreter would join the thread at exit).
abandoned: list[str] = []


class Abandoned(KeyboardInterrupt):
    """A second Ctrl-C while work did not stop: its thread is left running (the caller must not wait for it,
    nor close what it uses). Made by :func:`abandon`."""


def abandon(what: str) -> Abandoned:
    """Record ``what`` as left running (:data:`abandoned`) and return the exception to raise."""
    abandoned.append(what)
    return Abandoned(what)


def stop(signum: int, _frame: object = None) -> None:
    """The CLI's SIGTERM handler: record the signal and unwind like Ctrl-C."""
    received.append(signum)
    raise SystemExit(128 + signum)


def check() -> None:
    """Raise the recorded signal's ``SystemExit`` again if one was received (before publishing)."""
    if received:
        raise SystemExit(128 + received[-1])
