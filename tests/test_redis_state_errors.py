"""A Redis that fails while a server starts on it is one line naming the URL and what was under way (found by
a review: Redis killed while `payfm serve --state redis://...` built its state printed a 160-line traceback
with two chained ConnectionErrors, the second from releasing the load lock on the way out; a server waiting
on another's load when Redis died printed 114 lines)."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.serving.scorer import Scorer
from payfm.synth import WorldConfig, generate_world
from services import REDIS_SCRATCH_URL, HeldRedis


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = Workspace.open(tmp_path_factory.mktemp("redis-errors"), create=True)
    ws.write_stream(generate_world(WorldConfig(charges=1_000, days=4, seed=6)), "replace")
    return ws


def _one_line(e: BaseException, url: str, doing: str) -> str:
    said = str(e)
    assert isinstance(e, ConfigError), repr(e)
    assert "\n" not in said and url in said and f"Redis failed while {doing}" in said, said
    assert e.__cause__ is None and e.__suppress_context__  # no chained driver's traceback
    return said


def test_redis_dying_while_the_server_builds_its_state_is_one_line(
    world: Workspace,
    tmp_path: Path,
    redis_scratch: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = HeldRedis(REDIS_SCRATCH_URL)
    real = Scorer._warm_from_event_log

    def then_redis_dies(self: Scorer, online: Any) -> None:
        real(self, online)
        proxy.close()  # Redis killed while the state is built in memory

    monkeypatch.setattr(Scorer, "_warm_from_event_log", then_redis_dies)
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(Exception) as e:
            Scorer.open(Workspace.open(shutil.copytree(world.root, tmp_path / "ws")), state=proxy.url)
    finally:
        proxy.close()
    _one_line(e.value, proxy.url, "writing the state")
    # Releasing the lock failed too (Redis is gone): logged, not raised over the first error; the lock left
    # in Redis expires within seconds
    assert "could not release the load lock" in caplog.text
    [lock] = redis_scratch.scan_iter("payfm:*:warming")
    assert 0 < redis_scratch.ttl(lock) <= 30  # (payfm.redis_load.LOCK_TTL_S)


def test_redis_dying_while_a_server_waits_for_anothers_load_is_one_line(
    world: Workspace, tmp_path: Path, redis_scratch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from payfm.features.redis_store import RedisStore

    waited: list[str] = []
    real = RedisStore.begin_load

    def begin_load(self: RedisStore, *args: Any, **kwargs: Any) -> bool:
        waited.append(self.ns)  # another server holds this namespace's lock, for a minute
        holder = {"host": "elsewhere", "pid": 4242, "since": "2026-12-07T10:00:00+00:00", "id": "x"}
        redis_scratch.set(f"{self.ns}:warming", json.dumps(holder), ex=60)
        threading.Timer(0.8, proxy.close).start()  # Redis dies while this server waits
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RedisStore, "begin_load", begin_load)
    proxy = HeldRedis(REDIS_SCRATCH_URL)
    try:
        with pytest.raises(Exception) as e:
            Scorer.open(Workspace.open(shutil.copytree(world.root, tmp_path / "ws")), state=proxy.url)
    finally:
        proxy.close()
    said = _one_line(e.value, proxy.url, "waiting for the load of another process (host elsewhere pid 4242")
    assert waited and waited[0] in said


def test_redis_gone_while_an_embedder_state_is_checked_is_one_line(
    world: Workspace, redis_scratch: Any
) -> None:
    from payfm.fm.online_state import RedisState
    from payfm.serving.fm_embeddings import warm

    proxy = HeldRedis(REDIS_SCRATCH_URL)
    try:
        state = RedisState(proxy.url, "t-errors", keep=3, n_fields=20)
        proxy.close()
        embedder = SimpleNamespace(store=state)
        decisions = SimpleNamespace(
            recent_charges=lambda n, upto: ([], None), recent_outcomes=lambda n: [], decided=lambda upto: []
        )
        with pytest.raises(Exception) as e:
            warm({"h" * 64: embedder}, world, decisions, None, False)  # type: ignore[arg-type, dict-item]
    finally:
        proxy.close()
    said = _one_line(e.value, proxy.url, "checking it")
    assert "foundation model hhhhhhhhhhhh" in said
