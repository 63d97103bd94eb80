"""The load lock of a Redis state outlives neither its holder nor a few seconds (found by a review: a server
killed by kill -9 or the OOM killer while it loaded left `payfm:<v>.f3:warming` with a TTL of 1800 s, and
every server of the feature set waited for it, printing nothing, for up to 30 minutes). The lock lives
payfm.redis_load.LOCK_TTL_S seconds, renewed by a heartbeat while its holder lives; its token names the
holder, whom a waiting server names."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from payfm.errors import ConfigError
from payfm.redis_load import LoadLock
from services import REDIS_SCRATCH_URL

NS = "payfm:t-heartbeat.f3"
SHORT_S = 30  # a dead holder's lock is gone within this (payfm.redis_load.LOCK_TTL_S: 20)


def _holder(ttl_s: int | None) -> subprocess.Popen[str]:
    """Another serving process that takes the load lock and then builds for a minute (until killed)."""
    ttl = "" if ttl_s is None else f", ttl_s={ttl_s}"
    script = textwrap.dedent(
        f"""
        import time, redis
        from payfm.redis_load import LoadLock
        lock = LoadLock(redis.Redis.from_url({REDIS_SCRATCH_URL!r}), {NS!r}, "a test state"{ttl})
        assert lock.begin()
        print("held", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)  # no clean-up: as kill -9 or the OOM killer
    proc.wait(10)
    assert proc.stdout is not None
    proc.stdout.close()


def test_the_lock_of_a_killed_loader_expires_within_seconds(redis_scratch: Any) -> None:
    proc = _holder(None)  # the default lock of a load
    _kill(proc)
    ttl = redis_scratch.ttl(f"{NS}:warming")
    assert 0 < ttl <= SHORT_S  # (was 1800 for the features' load, 600 for an embedder's)


def test_a_waiting_server_says_whom_it_waits_for_and_takes_the_lock_of_a_dead_holder(
    redis_scratch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    proc = _holder(4)
    _kill(proc)
    waiter = LoadLock(redis_scratch, NS, "a test state")
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="payfm.redis_load"):
        assert waiter.begin(timeout_s=60)  # the dead holder's lock expired: this one loads
    took = time.monotonic() - t0
    waiter.release()
    assert took < 20  # its 4 s TTL (generous: a loaded machine)
    waits = [r.getMessage() for r in caplog.records if "waiting for the Redis state" in r.getMessage()]
    assert len(waits) == 1, waits  # said once (then every 30 s)
    assert f"pid {proc.pid} since " in waits[0] and NS in waits[0] and REDIS_SCRATCH_URL in waits[0]


def test_a_live_loader_keeps_its_lock_through_a_long_build_by_its_heartbeat(
    redis_scratch: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import payfm.redis_load as redis_load

    first = LoadLock(redis_scratch, NS, "a test state", ttl_s=2)
    assert first.begin(timeout_s=5)
    time.sleep(5)  # building the state in memory: no keep() meanwhile, the heartbeat renews the lock
    monkeypatch.setattr(redis_load, "WAIT_SAID_EVERY_S", 0.3)
    second = LoadLock(redis_scratch, NS, "a test state", ttl_s=1)
    with (
        caplog.at_level(logging.WARNING, logger="payfm.redis_load"),
        pytest.raises(
            ConfigError, match=rf"being loaded by another process \(host .* pid {os.getpid()} since"
        ),
    ):
        second.begin(timeout_s=1.2)
    assert len([r for r in caplog.records if "waiting for the Redis state" in r.getMessage()]) >= 2  # again
    first.keep()  # still its own
    first.done()
    assert redis_scratch.exists(f"{NS}:warm") and not redis_scratch.exists(f"{NS}:warming")
    time.sleep(1.0)  # the heartbeat stopped with the release: nothing sets a lock again
    assert not redis_scratch.exists(f"{NS}:warming")


def test_the_features_and_the_embedders_loads_take_the_short_lock(redis_scratch: Any) -> None:
    from payfm.features.catalog import default_set
    from payfm.features.redis_store import RedisStore
    from payfm.fm.online_state import RedisState

    features = RedisStore(REDIS_SCRATCH_URL, default_set())
    embedder = RedisState(REDIS_SCRATCH_URL, "t-heartbeat", keep=3, n_fields=20)
    for store in (features, embedder):
        assert store.begin_load()
        assert 0 < redis_scratch.ttl(f"{store.ns}:warming") <= SHORT_S
        store.abort_load()
        assert not redis_scratch.exists(f"{store.ns}:warming")
