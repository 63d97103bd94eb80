"""A stop signal that the code between it and the command's end cannot lose.

The CLI turns SIGTERM into ``SystemExit(143)`` raised wherever the main thread stands (:func:`stop`). Where
that is inside a callback a library makes (DuckDB calling back into Python to scan a registered Arrow
source), the library may wrap the exception in an error of its own, or drop it and go on. So the signal is
also recorded here: the CLI ends with the signal's status whatever became of the exception, and every
place that publishes a finished output (renames a temporary over a file, writes a manifest) calls
:func:`check` first, so a stopped command publishes nothing new even when its work ran to the end.

Outside the CLI (the Python API) no handler records anything and :func:`check` does nothing.

A long call into a library (a DuckDB query) does not return to the interpreter, so a signal's Python
handler waits for its end. :func:`interruptible` runs such work in a thread while the main thread waits, so
the signal's exception lands at once and interrupts the work.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

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


def interruptible(work: Callable[[], T], interrupt: Callable[[], None], what: str) -> T:
    """``work()`` in a worker thread while the main thread waits for it, so that a signal's exception
    (Ctrl-C's KeyboardInterrupt, the CLI's SIGTERM -> SystemExit) lands in the wait: the work is then
    stopped and the exception goes on. Stopped means never started, or ``interrupt()`` called again and again
    until it ends (an interrupt that comes before DuckDB begins its query is lost, so one is not enough). A
    second Ctrl-C while the work ignores its interrupts raises :class:`Abandoned` naming ``what``: the thread
    is left running. Called outside the main thread (which takes no signal), ``work()`` runs there.

    >>> interruptible(lambda: 6 * 7, interrupt=lambda: None, what="a sum")
    42
    """
    if threading.current_thread() is not threading.main_thread():
        return work()
    out: dict[str, Any] = {}
    gate = threading.Lock()  # the work starts, or is cancelled, never both
    started = threading.Event()
    # The main thread waits on a bare lock that the work releases when it ends: a lock's acquire is one call
    # that a signal interrupts cleanly. Not on an Event: its wait is Python code around a Condition, and a
    # Ctrl-C landing between two of its lines leaves that Condition's lock released twice, so the
    # KeyboardInterrupt became "RuntimeError: release unlocked lock" and a traceback (seen in CI). Nor on
    # Thread.join: interrupted, it can leave is_alive() False while the thread still runs (CPython gh-90882).
    done = threading.Lock()
    done.acquire()

    def run() -> None:
        try:
            with gate:
                if out.get("cancelled"):
                    return
                started.set()
            out["value"] = work()
        except BaseException as e:  # handed to the waiting thread
            out["error"] = e
        finally:
            out["finished"] = True
            done.release()

    try:
        _start(threading.Thread(target=run, name=f"payfm: {what}", daemon=True))
        while not done.acquire(timeout=0.1):
            pass
    except BaseException:
        if not _stopped(interrupt, out, gate, started, done):
            raise abandon(what) from None
        raise
    if "error" in out:
        raise out["error"]
    return out["value"]  # type: ignore[no-any-return]


def _start(thread: threading.Thread) -> None:
    """Start ``thread`` with Ctrl-C and SIGTERM held until it runs: ``Thread.start`` waits on an Event (see
    :func:`interruptible`). A signal that came meanwhile is handled once they are let through again. The
    mask is read before the try (reading it changes nothing), so an exception anywhere leaves it as it was
    (a Python session that blocked them for good would never take a Ctrl-C again)."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _stopped(
    interrupt: Callable[[], None],
    out: dict[str, Any],
    gate: threading.Lock,
    started: threading.Event,
    done: threading.Lock,
) -> bool:
    """Cancel the work if it has not started, else interrupt it until it ends; False when a second Ctrl-C
    (or SIGTERM) came first: the work may still run."""
    try:
        with gate:
            if not started.is_set():
                out["cancelled"] = True
                return True
        while not out.get("finished"):
            interrupt()  # a query started after one interrupt gets the next
            done.acquire(timeout=0.1)
    except (KeyboardInterrupt, SystemExit):
        return bool(out.get("finished"))
    return True
