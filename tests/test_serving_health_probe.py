"""`/healthz` while the decision log stalls (found by an SRE locking the PostgreSQL table): the probe waited
without a limit, so /healthz never answered, and each probe opened another connection and held another
thread. It now answers within its limit, a 503 naming the log, and probes one read at a time."""

from __future__ import annotations

import threading
import time

from payfm.serving.health import Probe


def test_a_stalled_read_is_reported_within_the_limit_and_never_read_twice_at_once() -> None:
    release, calls, ends = threading.Event(), [], []

    def read() -> None:
        calls.append(time.monotonic())
        release.wait(10)
        ends.append(time.monotonic())

    probe = Probe(read, limit_s=0.2)
    t0 = time.monotonic()
    first = probe()
    assert first is not None and first.startswith("no answer to a read within 0.2 s")
    assert time.monotonic() - t0 < 1.0
    for _ in range(5):  # probes while the read stalls: none starts another
        assert probe() is not None
    assert len(calls) == 1
    release.set()
    # the stalled read ends in the pool's thread: until then a probe still says "no answer" (a loaded
    # machine can take a while), then the next one reads again (and, should that read too take more than
    # the limit to be scheduled, the one after: reads are counted as never overlapping, not as two)
    deadline = time.monotonic() + 10
    while (answer := probe()) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert answer is None and len(calls) >= 2
    assert all(start >= end for start, end in zip(calls[1:], ends, strict=False))  # one read at a time
    probe.close()


def test_a_read_that_fails_is_reported_with_its_error() -> None:
    def read() -> None:
        raise ConnectionError("connection refused")

    probe = Probe(read, limit_s=1.0)
    assert probe() == "ConnectionError: connection refused"
    probe.close()


def test_the_scorers_health_uses_the_probe(tmp_path: object) -> None:
    from datetime import UTC, datetime
    from pathlib import Path

    from payfm.events.workspace import Workspace
    from payfm.serving import scorer as scorer_module
    from payfm.serving.scorer import Scorer
    from payfm.synth import WorldConfig, generate_world

    ws = Workspace.open(Path(str(tmp_path)) / "ws", create=True)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ws.write_stream(generate_world(WorldConfig(charges=1_000, days=1, seed=4, start=start)))
    with Scorer.open(ws) as s:
        assert s.health() == []
        stall = threading.Event()
        s.log.get_decision = lambda charge_id: stall.wait(10)  # type: ignore[method-assign, assignment, return-value]
        s._log_probe = scorer_module.Probe(lambda: s.log.get_decision(""), limit_s=0.2)
        t0 = time.monotonic()
        [problem] = s.health()
        assert time.monotonic() - t0 < 1.5
        assert problem.startswith("the decision log does not answer (no answer to a read within 0.2 s")
        stall.set()
