# ruff: noqa: F811 (the tests take the imported `world` fixture as an argument)
"""A Redis that restarts under running servers, from an older save (an RDB snapshot, an AOF that lost its last
second), comes back with its load marker and an older state. Found by an operations review: the servers
went on deciding from the older state, `/healthz` 200, until they restarted. A running server now notices
the Redis's new run id and catches the features' state up with its decision log; an embedder's state, which
cannot be caught up in place, is a /healthz warning; a state of another log a problem (503). The Redis here
is a real one of the test's own (tests/services.py, PrivateRedis), restarted for real."""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from payfm.events.workspace import Workspace
from payfm.redis_load import unlink_namespace
from payfm.serving.redis_restarts import RestartCheck
from payfm.serving.scorer import Scorer
from payfm.serving.scorer_config import ScorerConfig
from payfm.serving.shared_state import Owner
from services import PrivateRedis
from test_serving_fm import World, world  # noqa: F401 (world: the module's fixture)


def _probe(charge: dict[str, Any], i: int) -> dict[str, Any]:
    """A charge a minute after ``charge``, on its card and merchant: its features count ``charge``."""
    return {
        **charge,
        "charge_id": f"probe_{i}",
        "created_us": int(charge["created"].timestamp() * 1e6) + 60e6,
    }


def test_a_running_server_catches_its_state_up_after_redis_restarts_from_an_older_save(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A busy service: more charges decided between the restart and the next look than the last-charges check
    # reads (5 here, 1,000 in production), so the check alone would find them all in the restarted state
    # and take it for up to date (a review). After a restart the whole log within the TTL is replayed, and
    # the embedder check reads the charges decided before the last look.
    monkeypatch.setattr("payfm.serving.shared_state.STALE_CHECK", 5)
    monkeypatch.setattr("payfm.serving.redis_restarts.STALE_CHECK", 5)
    server = PrivateRedis(tmp_path / "redis")
    ws = Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws"))
    reference = Scorer.open(Workspace.open(shutil.copytree(world.serve.root, tmp_path / "memory")))
    scorer = Scorer.open(ws, state=server.url)
    try:
        check = RestartCheck(scorer)
        check.look()  # the run the state was loaded on
        for charge in world.live[:10]:
            scorer.score(charge)
        server.save()  # the save the restart comes back from: the next ten charges are not in it
        for charge in world.live[10:20]:
            scorer.score(charge)
        check.look()  # (the watcher looks every second: the last look before the restart)
        server.restart()
        for charge in world.live[20:26]:  # decided on the restarted state before the next look
            scorer.score(charge)
        for charge in world.live[:26]:
            reference.score(charge)
        probes = [_probe(c, i) for i, c in enumerate(world.live[10:20])]
        want = [reference.online.features(p) for p in probes]
        assert [scorer.online.features(p) for p in probes] != want  # the restart lost ten charges

        with caplog.at_level(logging.INFO, "payfm.serving"):
            check.look()
        assert [scorer.online.features(p) for p in probes] == want
        replayed = re.search(
            r"(\d+) events of this decision log replayed onto it after Redis restarted", caplog.text
        )
        assert replayed is not None and int(replayed[1]) >= 26, caplog.text
        [h] = scorer.bundle.embedders  # its state cannot be caught up in place: a warning, until a reload
        stale = (
            f"the state of foundation model {h[:12]} in Redis misses charges of this server's decision log "
            "(Redis restarted from an older save): its embeddings read a shorter history until a server "
            "restarts (a server that starts loads it again from the logs)"
        )
        assert check.warnings() == [stale] and check.problem is None

        caplog.clear()  # the same run: nothing replayed again, the warning stays
        with caplog.at_level(logging.INFO, "payfm.serving"):
            check.look()
        assert "restarted" not in caplog.text and check.warnings() == [stale]
        # another server starts (a copy: the same decision log's charges): it loads the embedder's state
        # again from the logs, and this server's warning clears at its next look
        Scorer.open(Workspace.open(shutil.copytree(ws.root, tmp_path / "b")), state=server.url).close(
            snapshot=False
        )
        check.look()
        assert check.warnings() == [] and scorer.health() == []
        # a restart that lost nothing: replayed all the same (ids count once), the features unchanged
        server.save()
        server.restart()
        check.look()
        assert [scorer.online.features(p) for p in probes] == want and check.warnings() == []
    finally:
        scorer.close(snapshot=False)
        reference.close(snapshot=False)
        server.stop()


def test_a_redis_restarted_with_another_logs_state_takes_the_server_out(world: World, tmp_path: Path) -> None:
    """Through the server's watcher (every look): the state the Redis came back with was loaded from another
    event log, a /healthz problem (a load balancer takes the server out), not decided on."""
    server = PrivateRedis(tmp_path / "redis")
    ws = Workspace.open(shutil.copytree(world.serve.root, tmp_path / "ws"))
    config = ScorerConfig(lists_refresh_s=0.05)
    scorer = Scorer.open(ws, state=server.url, config=config)
    try:
        assert scorer.health() == []
        other = Owner("ws_other", "log_other", "/elsewhere", "otherhost", "2026-01-02T03:04:05+00:00")
        with redis.Redis.from_url(server.url) as client:
            client.set(f"{scorer.online.store.ns}:warm", other.encoded())  # type: ignore[attr-defined]
        server.save()
        server.restart()
        deadline = time.monotonic() + 15
        while not (problems := scorer.health()) and time.monotonic() < deadline:
            time.sleep(0.05)
        [problem] = problems
        assert problem.startswith(
            "the online state in Redis changed under this server: The Redis state "
            f"{scorer.online.store.ns} at "  # type: ignore[attr-defined]
        )
        assert "loaded from the event log of workspace '/elsewhere' on otherhost" in problem
        # the operator drops it and starts a server, which loads this log's state: the problem clears
        with redis.Redis.from_url(server.url) as client:
            unlink_namespace(client, scorer.online.store.ns)  # type: ignore[attr-defined]
        Scorer.open(Workspace.open(shutil.copytree(ws.root, tmp_path / "ws2")), state=server.url).close(
            snapshot=False
        )
        deadline = time.monotonic() + 15
        while scorer.health() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scorer.health() == []
    finally:
        scorer.close(snapshot=False)
        server.stop()


def test_a_server_catches_up_a_state_another_loads_after_redis_restarted_empty(
    world: World, tmp_path: Path
) -> None:
    """A Redis that came back empty: /healthz says the state is gone; a server that starts loads it from its
    own logs, and this one, looking meanwhile, adds the charges of its decision log the other's lacks."""
    server = PrivateRedis(tmp_path / "redis")
    scorer = Scorer.open(Workspace.open(shutil.copytree(world.serve.root, tmp_path / "a")), state=server.url)
    try:
        check = RestartCheck(scorer)
        check.look()
        for charge in world.live[:10]:
            scorer.score(charge)
        probes = [_probe(c, i) for i, c in enumerate(world.live[:10])]
        want = [scorer.online.features(p) for p in probes]
        server.restart()  # never saved: empty
        check.look()
        assert "Redis restarted empty or was flushed" in " ".join(scorer.health())
        Scorer.open(
            Workspace.open(shutil.copytree(world.serve.root, tmp_path / "b")), state=server.url
        ).close(
            snapshot=False
        )  # another server (its own decision log, without a's charges) starts and loads it
        assert [scorer.online.features(p) for p in probes] != want
        check.look()
        assert [scorer.online.features(p) for p in probes] == want
        assert scorer.health() == []
    finally:
        scorer.close(snapshot=False)
        server.stop()
