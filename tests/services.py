"""The services some tests run against for real (Redis), or skip without: CI sets PAYFM_REQUIRE_SERVICES,
which turns the skip into a failure so that those tests always run there."""

from __future__ import annotations

import os
from typing import Any

import pytest

REDIS_URL = os.environ.get("PAYFM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# A database the tests that need an empty Redis may empty (FLUSHDB) before and after: never a shared one,
# and one per pytest-xdist worker (gw0: 9, gw1: 10, ...), since tests of two workers run at the same time.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_SCRATCH_URL = os.environ.get("PAYFM_TEST_REDIS_SCRATCH_URL", f"redis://127.0.0.1:6379/{9 + _WORKER}")


def require_redis(url: str = REDIS_URL) -> Any:
    """A redis-py client of ``url`` (pinged), else skip the test (fail under PAYFM_REQUIRE_SERVICES)."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError:
        if os.environ.get("PAYFM_REQUIRE_SERVICES"):
            pytest.fail(f"Redis is required (PAYFM_REQUIRE_SERVICES) but not reachable at {url}")
        pytest.skip(f"Redis not reachable at {url}; start redis-server or set PAYFM_TEST_REDIS_URL")
    return client


POSTGRES_URL = os.environ.get("PAYFM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def require_postgres(url: str = POSTGRES_URL) -> None:
    """Skip the test unless PostgreSQL answers at ``url`` (fail instead under PAYFM_REQUIRE_SERVICES)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError:
        if os.environ.get("PAYFM_REQUIRE_SERVICES"):
            pytest.fail(f"PostgreSQL is required (PAYFM_REQUIRE_SERVICES) but not reachable at {url}")
        pytest.skip(f"PostgreSQL not reachable at {url}; start it or set PAYFM_TEST_POSTGRES_URL")
