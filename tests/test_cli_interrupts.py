"""A signal that stops a command ends it as the signal says, without a traceback: Ctrl-C is "Aborted!" and
exit 1, SIGTERM exit 143, also when it lands in a DuckDB query (which reports either as RuntimeError('Query
interrupted')) or in an Optuna trial (which logged the trial's traceback before re-raising)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from payfm.errors import ConfigError
from payfm.training import tuning

# A command that runs DuckDB queries without end and signals its own process while they run.
_ENDLESS_QUERY = textwrap.dedent(
    """
    import os, signal, sys, threading
    import click, duckdb
    from payfm.cli.main import cli, main

    SIG = getattr(signal, sys.argv[1])

    @cli.command("endless")
    def endless() -> None:
        con = duckdb.connect()
        threading.Timer(0.5, os.kill, (os.getpid(), SIG)).start()
        while True:  # queries of about a second: Ctrl-C ends one at once, SIGTERM at its end (DuckDB)
            con.execute("SELECT count(*) FROM range(100000000) r WHERE r.range % 7 = 3").fetchall()

    sys.argv = ["payfm", "endless"]
    main()
    """
)


@pytest.mark.parametrize(("sig", "code"), [("SIGINT", 1), ("SIGTERM", 128 + signal.SIGTERM)])
def test_a_signal_during_a_duckdb_query_stops_the_command_without_a_traceback(sig: str, code: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _ENDLESS_QUERY, sig],
        capture_output=True,
        text=True,
        timeout=120,
        # a child of a shell's background job starts with SIGINT ignored; the test needs Python's handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "Query interrupted" not in proc.stderr
    assert proc.stderr.strip() == ("Aborted!" if sig == "SIGINT" else "")


def test_a_failed_tuning_trial_raises_without_optunas_traceback(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    class Refuses:
        @staticmethod
        def search_space(trial: object) -> dict[str, object]:
            return {}

        def __init__(self, **params: object) -> None:
            pass

        def fit(self, *args: object) -> Refuses:
            raise ConfigError("gbdt.num_leaves must be at least 2. Got 1.")

    monkeypatch.setattr(tuning, "model_class", lambda kind: Refuses)
    X, y = np.zeros((4, 1)), np.array([0, 1, 0, 1])
    with pytest.raises(ConfigError, match="num_leaves"):
        tuning.tune("gbdt", X, y, None, X, y, trials=3)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Trial 0 failed" not in err


# Commands that take a SIGTERM where a library catches what the handler raises, as DuckDB does when the
# signal lands in Python code it called back (scanning a registered Arrow source): it wraps the SystemExit in
# an error of its own, or drops it and the work goes on to publish its output.
_CAUGHT_BY_A_LIBRARY = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    import pyarrow as pa
    from payfm.cli.main import cli, main
    from payfm.events.outputs import write_parquet

    def signalled_in_a_callback() -> BaseException | None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs here, in the main thread
        except BaseException as e:
            return e
        return None

    @cli.command("wrapped")
    def wrapped() -> None:
        caught = signalled_in_a_callback()
        raise RuntimeError(f"offering a filter to the source registered as 'disputes' failed: {caught!r}")

    @cli.command("dropped")
    def dropped() -> None:
        signalled_in_a_callback()
        print("work finished")

    @cli.command("publishes")
    def publishes() -> None:
        signalled_in_a_callback()
        write_parquet(pa.table({"x": [1, 2]}), Path(sys.argv[2]), "the test")

    sys.argv = ["payfm", sys.argv[1]]
    main()
    """
)


@pytest.mark.parametrize("how", ["wrapped", "dropped", "publishes"])
def test_a_sigterm_a_library_caught_still_ends_the_command_and_publishes_nothing(
    how: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    proc = subprocess.run(
        [sys.executable, "-c", _CAUGHT_BY_A_LIBRARY, how, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert proc.stderr == "" and "Traceback" not in proc.stdout
    assert proc.stdout == ("work finished\n" if how == "dropped" else "")
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


# ---- interrupts.interruptible: the one wait that payfm sql and the rules backtest share --------------------


def test_work_a_ctrl_c_caught_before_its_thread_ran_is_cancelled_not_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Ctrl-C inside the thread's start: the work must never run, and nothing waits for it (the rules
    backtest's own loop waited for a thread that never started until a second Ctrl-C)."""
    import threading
    import time

    from payfm import interrupts

    ran, interrupted = [], []

    def start(self: threading.Thread) -> None:
        raise KeyboardInterrupt  # (before the thread is created)

    monkeypatch.setattr(threading.Thread, "start", start)
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        interrupts.interruptible(lambda: ran.append(1), lambda: interrupted.append(1), "a query")
    assert time.monotonic() - began < 0.5 and ran == [] and interrupted == [] and interrupts.abandoned == []


def test_interruptible_hands_back_the_works_value_or_error_and_runs_in_place_off_the_main_thread() -> None:
    import threading

    from payfm import interrupts

    def where() -> str:
        return threading.current_thread().name

    assert interrupts.interruptible(where, lambda: None, "a query") == "payfm: a query"  # a worker thread
    with pytest.raises(ZeroDivisionError):
        interrupts.interruptible(lambda: 1 / 0, lambda: None, "a query")
    seen: list[str] = []
    t = threading.Thread(
        target=lambda: seen.append(interrupts.interruptible(where, lambda: None, "q")), name="w"
    )
    t.start()
    t.join()
    assert seen == ["w"]  # no signal lands outside the main thread: no worker


def _run_interrupted_at_line(n: int) -> bool:
    """Run interruptible with a KeyboardInterrupt raised at the ``n``-th line the main thread executes in
    interrupts and threading, outside interrupts._start: True when it was raised (and came out right), False
    when the run ended first."""
    import sys
    import threading
    from types import FrameType
    from typing import Any

    from payfm import interrupts

    stop, began, ended = threading.Event(), threading.Event(), threading.Event()
    seen = [0]
    waits = {interrupts.__file__, threading.__file__}

    def work() -> str:
        began.set()
        try:
            stop.wait(0.25)  # a query: ends when interrupted, or by itself
            return "done"
        finally:
            ended.set()

    def inside_start(frame: FrameType | None) -> bool:
        while frame is not None:
            if frame.f_code is interrupts._start.__code__:
                return True
            frame = frame.f_back
        return False

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        # Only the wait's own code: a callback the garbage collector runs on this thread (pytest has one)
        # would swallow the KeyboardInterrupt as an unraisable exception.
        if event == "call" and (frame.f_code.co_filename not in waits or inside_start(frame)):
            return None
        if event == "line":
            seen[0] += 1
            if seen[0] == n:
                raise KeyboardInterrupt
        return tracer

    sys.settrace(tracer)
    try:
        value = interrupts.interruptible(work, stop.set, "a query")
    except BaseException as e:  # the test is about which exception comes out
        sys.settrace(None)
        assert type(e) is KeyboardInterrupt, f"line {n}: {e!r}"
        assert ended.is_set() or not began.is_set(), f"line {n}: the work runs on"
        assert interrupts.abandoned == []
        return True
    finally:
        sys.settrace(None)
    assert value == "done" and seen[0] < n  # every line of a whole run was tried
    return False


def test_a_ctrl_c_landing_at_any_line_of_the_wait_is_a_keyboard_interrupt_that_stops_the_work() -> None:
    """CI got "RuntimeError: release unlocked lock" and a traceback, not "Aborted!", from a Ctrl-C during a
    long `payfm sql`: the main thread waited on an Event, whose wait is Python code around a Condition, and
    the KeyboardInterrupt landed between two of its lines. Each run here raises the KeyboardInterrupt at the
    next line the main thread executes (a signal's handler runs between lines), until a run ends first. The
    lines of interrupts._start (which calls Thread.start) are skipped: it holds the signals (tested below)."""
    n = 1
    while _run_interrupted_at_line(n):
        n += 1
        assert n < 1000, "no run ended before its interrupt"


def test_the_works_thread_starts_with_ctrl_c_and_sigterm_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thread.start waits on an Event: a signal is held until it returns, then handled."""
    import signal
    import threading

    from payfm import interrupts

    held: list[set[int]] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        held.append(set(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    assert interrupts.interruptible(lambda: 42, lambda: None, "a sum") == 42
    assert {signal.SIGINT, signal.SIGTERM} <= held[0]
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # let through again
