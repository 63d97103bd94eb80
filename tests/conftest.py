"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from payfm.events.workspace import Workspace
from payfm.serving.scorer import Scorer
from services import REDIS_SCRATCH_URL, require_redis

# The CLI's output as a pipe gets it (160 columns, no colour), whatever terminal or CI runs the tests: Rich
# reads these when payfm.cli.render is imported, after this file (COLUMNS=80 failed 16 tests, FORCE_COLOR=1
# 25).
for _name in ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
    os.environ.pop(_name, None)

# In CI (.ci/run sets PAYFM_REQUIRE_SERVICES) property tests draw the same examples on every run (a failure
# can be rerun); elsewhere new ones each run. Never a deadline or a too-slow check: a loaded machine is slow,
# not wrong.
settings.register_profile(
    "payfm",
    derandomize=bool(os.environ.get("PAYFM_REQUIRE_SERVICES")),
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("payfm")


def pytest_configure(config: pytest.Config) -> None:
    """Refuse, as a usage error before any test, more pytest-xdist workers than the Redis tests have scratch
    databases (tests/services.py: 9, 10, 11), or one given scratch URL shared by several workers."""
    if hasattr(config, "workerinput"):  # (a worker: the controller checked)
        return
    # the workers xdist starts: -n (auto: the CPUs) capped by --maxprocesses, one "popen" each
    workers = len(config.getoption("tx", None) or [])
    if workers > 3 or (workers > 1 and "PAYFM_TEST_REDIS_SCRATCH_URL" in os.environ):
        raise pytest.UsageError(
            "The Redis tests give each pytest-xdist worker a scratch database of its own (9, 10, 11): run at "
            f"most 3 workers (-n 3, or -n auto --maxprocesses 3 as make test does), and no "
            f"PAYFM_TEST_REDIS_SCRATCH_URL with several. Got {workers} workers."
        )


@pytest.fixture()
def redis_scratch() -> Iterator[Any]:
    """A client of the scratch Redis database (REDIS_SCRATCH_URL), emptied before and after the test."""
    client = require_redis(REDIS_SCRATCH_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture()
def scorer(ws: Workspace) -> Iterator[Scorer]:
    """A decision service in process on the module's ``ws`` fixture, closed after the test."""
    s = Scorer.open(ws)
    yield s
    s.close()
