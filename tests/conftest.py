"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from payfm.events.workspace import Workspace
from payfm.serving.scorer import Scorer
from services import REDIS_SCRATCH_URL, require_redis


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
