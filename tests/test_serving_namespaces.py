"""`payfm serve state list|drop`: the online state's Redis namespaces with the models and the servers that
use them; one a production model uses, or a running server reads, is not dropped without --force."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.features.redis_store import RedisStore
from payfm.features.state import FORMAT
from payfm.fm.embed import OnlineEmbedder
from payfm.fm.identity import checkpoint_hash, embedding_names
from payfm.redis_load import Presence, live_servers
from payfm.registry import Registry
from payfm.serving.namespaces import list_namespaces
from payfm.serving.scorer import Scorer
from payfm.synth import WorldConfig, generate_world
from payfm.training.models import model_class
from services import REDIS_SCRATCH_URL
from test_registry import _checkpoint

FS = tiny_set()


def test_list_shows_each_namespace_with_its_users_and_drop_spares_production(
    tmp_path: Path, redis_scratch: Any
) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    reg = Registry(ws)
    served, old = _checkpoint(tmp_path / "served", seed=0), _checkpoint(tmp_path / "old", seed=1)
    names = FS.names + embedding_names(8)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(800, len(names)))
    y = (X[:, -1] + rng.normal(size=800) > 1.5).astype(int)
    m = model_class("gbdt")(n_estimators=10, num_threads=1, calibration="none").fit(X, y, feature_names=names)
    mv = reg.register(m, name="fraud-fm", task="fraud", fset=FS, foundation_model=served)
    reg.promote(mv.ref)
    from payfm.features.online import OnlineFeatures

    features = OnlineFeatures(FS, store=RedisStore(REDIS_SCRATCH_URL, FS))
    for fm, n in ((served, 30), (old, 12)):
        embedder = OnlineEmbedder.load(fm, REDIS_SCRATCH_URL)
        for i in range(n):
            c = {
                "charge_id": f"ch_{fm.name}_{i}",
                "created_us": 10**15 + i,
                "card_fingerprint": f"fp_{i % 5}",
                "merchant_id": "acct_1",
                "amount_usd": 500 + i,
                "card_brand": "visa",
            }
            embedder.learn_one(c)
            features.update(c)
    found = {ns.name: ns for ns in list_namespaces(REDIS_SCRATCH_URL, reg)}
    fm_served = f"payfm:fm:{checkpoint_hash(served)[:16]}"
    fm_old = f"payfm:fm:{checkpoint_hash(old)[:16]}"
    fs_ns = next(n for n in found if n.endswith(f".f{FORMAT}"))
    assert set(found) == {fm_served, fm_old, fs_ns}
    assert found[fm_served].used_by == (f"{mv.ref} (production)",) and found[fm_served].in_production
    assert found[fs_ns].used_by == (f"{mv.ref} (production)",)
    assert found[fm_old].used_by == () and found[fm_old].kind == "foundation model"
    assert found[fm_served].keys > found[fm_old].keys > 0 and found[fm_old].bytes > 0
    assert found[fm_served].keys == sum(1 for _ in redis_scratch.scan_iter(f"{fm_served}:*"))

    runner = CliRunner()
    base = ["-w", str(ws.root), "serve", "state"]
    listed = runner.invoke(cli, [*base, "list", "--state", REDIS_SCRATCH_URL], catch_exceptions=False)
    assert listed.exit_code == 0
    [row] = [line for line in listed.output.splitlines() if fm_old in line and "│" in line]  # (its table row)
    assert [c.strip() for c in row.split("│")][5] == "none"  # the old checkpoint's state: no model uses it
    refused = runner.invoke(cli, [*base, "drop", fm_served, "--state", REDIS_SCRATCH_URL, "--yes"])
    assert refused.exit_code == 1 and "--force" in refused.output and "Traceback" not in refused.output
    assert redis_scratch.exists(*list(redis_scratch.scan_iter(f"{fm_served}:*"))[:1])
    for wrong in ("payfm", "payfm:*", "payfm:fm:*", "payfm:fm:[0-9]*"):  # a glob would drop them all
        bad = runner.invoke(cli, [*base, "drop", wrong, "--state", REDIS_SCRATCH_URL, "--yes"])
        assert bad.exit_code == 1 and "is not a namespace" in bad.output, wrong
    redis_scratch.set(f"{fm_old}:warming", b"token")  # a server loading it
    busy = runner.invoke(cli, [*base, "drop", fm_old, "--state", REDIS_SCRATCH_URL, "--yes"])
    assert busy.exit_code == 1 and "being loaded" in busy.output
    redis_scratch.delete(f"{fm_old}:warming")
    shadow = reg.register(m, name="fraud-fm-next", task="fraud", fset=FS, foundation_model=old)
    reg.set_stage(shadow.ref, "shadow")  # servers run it beside production: its state is in use
    busy = runner.invoke(cli, [*base, "drop", fm_old, "--state", REDIS_SCRATCH_URL, "--yes"])
    assert busy.exit_code == 1 and f"{shadow.ref} (shadow)" in busy.output
    reg.set_stage(shadow.ref, "archived")
    dropped = runner.invoke(cli, [*base, "drop", fm_old, "--state", REDIS_SCRATCH_URL, "--yes"])
    assert dropped.exit_code == 0 and f"{found[fm_old].keys:,} keys" in dropped.output
    assert set(n.name for n in list_namespaces(REDIS_SCRATCH_URL, reg)) == {fm_served, fs_ns}
    forced = runner.invoke(cli, [*base, "drop", fm_served, "--state", REDIS_SCRATCH_URL, "--yes", "--force"])
    assert forced.exit_code == 0 and not list(redis_scratch.scan_iter(f"{fm_served}:*"))


def test_a_namespace_a_running_server_reads_is_not_dropped_and_is_forgotten_when_it_stops(
    tmp_path: Path, redis_scratch: Any
) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=1_000, days=2, seed=4)), "replace")
    runner = CliRunner()
    base = ["-w", str(ws.root), "serve", "state"]
    me = f"{socket.gethostname()} pid {os.getpid()}"
    scorer = Scorer.open(ws, state=REDIS_SCRATCH_URL)  # rules only: no registered model names its state
    ns = scorer.online.store.ns  # type: ignore[attr-defined]
    try:
        [found] = [n for n in list_namespaces(REDIS_SCRATCH_URL, Registry(ws)) if n.name == ns]
        assert found.used_by == () and found.servers == (me,)
        live = [k for k in redis_scratch.scan_iter(f"{ns}:*") if k.startswith(f"{ns}:live:".encode())]
        assert len(live) == 1 and found.keys == sum(1 for _ in redis_scratch.scan_iter(f"{ns}:*")) - 1
        listed = runner.invoke(cli, [*base, "list", "--state", REDIS_SCRATCH_URL], catch_exceptions=False)
        [row] = [line for line in listed.output.splitlines() if ns in line and "│" in line]
        assert row.rstrip("│ ").endswith("1")  # the servers column
        refused = runner.invoke(cli, [*base, "drop", ns, "--state", REDIS_SCRATCH_URL, "--yes"])
        assert refused.exit_code == 1 and "1 serving process" in refused.output and me in refused.output
        assert "Traceback" not in refused.output and redis_scratch.exists(f"{ns}:warm")
    finally:
        scorer.close(snapshot=False)
    assert live_servers(redis_scratch, ns) == []  # a server that stops says so at once
    dropped = runner.invoke(cli, [*base, "drop", ns, "--state", REDIS_SCRATCH_URL, "--yes"])
    assert dropped.exit_code == 0 and not list(redis_scratch.scan_iter(f"{ns}:*"))
    again = runner.invoke(cli, [*base, "drop", ns, "--state", REDIS_SCRATCH_URL, "--yes"])  # a typo, say
    assert again.exit_code == 1 and "holds no keys" in again.output
    not_redis = runner.invoke(cli, [*base, "list", "--state", "memory"])
    assert not_redis.exit_code == 1 and "must be a redis://" in not_redis.output
    assert "Traceback" not in again.output + not_redis.output

    # A server that dies without closing is forgotten after the TTL; alive, its thread renews the key.
    # (a TTL of 3 s renewed every second: a loaded machine may stall the renewing thread for a second)
    dying = Presence(redis_scratch, ttl_s=3)
    dying.serve([ns])
    time.sleep(4)
    assert live_servers(redis_scratch, ns) == [me]  # renewed past its first TTL
    dying._stop.set()  # the process is gone: nothing renews or deletes its key
    dying._thread.join()  # type: ignore[union-attr]
    time.sleep(3.2)
    assert live_servers(redis_scratch, ns) == []


def test_presence_moves_with_the_namespaces_and_closing_never_fails(
    tmp_path: Path, redis_scratch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    me = f"{socket.gethostname()} pid {os.getpid()}"
    p = Presence(redis_scratch)
    p.serve(["payfm:a.f3", "payfm:fm:b"])
    p.serve(["payfm:fm:b"])  # a promotion: the features' namespace is no longer read
    assert live_servers(redis_scratch, "payfm:a.f3") == [] and live_servers(redis_scratch, "payfm:fm:b") == [
        me
    ]
    p.client = redis.Redis.from_url("redis://127.0.0.1:1/0")  # Redis away at shutdown
    p.close()  # logs, does not raise: the key expires on its own
    assert redis_scratch.ttl(p.key("payfm:fm:b")) > 0
    p.serve(["payfm:c.f3"])  # a reload finishing after close: nothing written
    assert live_servers(redis_scratch, "payfm:c.f3") == []
    bare = Presence(redis_scratch)  # a server reading a namespace emptied by `drop --force`: still listed
    bare.serve(["payfm:d.f3"])
    [listed] = [n for n in list_namespaces(REDIS_SCRATCH_URL) if n.name == "payfm:d.f3"]
    assert (listed.keys, listed.bytes, listed.servers) == (0, 0, (me,))
    bare.close()

    # A server says it reads its features' namespace from the start, while it loads it (minutes on a big
    # log), not only once it is ready.
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=1_000, days=2, seed=4)), "replace")
    during: list[list[str]] = []
    real = RedisStore.load

    def watching(self: RedisStore, memory: Any, **kw: Any) -> int:
        during.append(live_servers(redis_scratch, self.ns))
        return real(self, memory, **kw)

    monkeypatch.setattr(RedisStore, "load", watching)
    Scorer.open(ws, state=REDIS_SCRATCH_URL).close(snapshot=False)
    assert during == [[me]]
