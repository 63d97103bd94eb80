"""Loading the online state from a workspace's whole log, in memory and in Redis: what a serving process does
at start-up (the first one of a feature set or checkpoint, on Redis).

    .venv/bin/python bench/bench_state_load.py --workspace ws [--checkpoint ws/fm/v3] \
        --redis redis://127.0.0.1:6379/0

Features (the default set): the state built in memory from the event log (``apply_log``), then written to
Redis (``RedisStore.load``). With ``--checkpoint``, the embedder's warm start on each state. Reports the
times, the Redis memory and keys each takes, and the time to delete them. Uses namespaces of its own,
deleted at the end.
"""

from __future__ import annotations

import argparse
import time
import uuid

from machine import describe  # bench/machine.py
from payfm.events.workspace import Workspace
from payfm.fm.embed import OnlineEmbedder
from payfm.fm.online_state import RedisState
from payfm.fm.sequences import read_charges


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--checkpoint", default=None, help="also an embedder's state, e.g. ws/fm/default")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()
    print(f"# {describe()}", flush=True)
    ws = Workspace.open(args.workspace)
    features(ws, args.redis)
    if args.checkpoint is None:
        return
    charges = read_charges(ws)
    for state in ("memory", args.redis):
        embedder = OnlineEmbedder.load(args.checkpoint, state, namespace=f"bench-{uuid.uuid4().hex[:12]}")
        store = embedder.store
        before = store.client.info("memory")["used_memory"] if isinstance(store, RedisState) else 0
        t0 = time.perf_counter()
        embedder.warm(charges)
        print(
            f"warm start on {state}: {charges.num_rows:,} charges in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        if isinstance(store, RedisState):
            used = store.client.info("memory")["used_memory"] - before
            t1 = time.perf_counter()
            keys = store.clear()
            print(
                f"  Redis: {used / 1e6:,.0f} MB in {keys:,} keys; deleted in {time.perf_counter() - t1:.1f} s"
            )


def features(ws: Workspace, url: str) -> None:
    from payfm.features.catalog import default_set
    from payfm.features.online import OnlineFeatures
    from payfm.features.parity import apply_log
    from payfm.features.redis_store import RedisStore
    from payfm.features.stores import MemoryStore

    fset = default_set()
    memory = MemoryStore()
    t0 = time.perf_counter()
    n = apply_log(OnlineFeatures(fset, memory), ws)
    built = time.perf_counter() - t0
    store = RedisStore(url, fset, prefix=f"bench-{uuid.uuid4().hex[:12]}")
    try:
        before = store.client.info("memory")["used_memory"]
        assert store.begin_load()
        t1 = time.perf_counter()
        keys = store.load(memory)
        written = time.perf_counter() - t1
        used = store.client.info("memory")["used_memory"] - before
        print(
            f"features ({fset.name}, {len(fset.names)}): {n:,} charges built in memory in {built:.1f} s "
            f"({len(memory.states):,} states), written to Redis in {written:.1f} s: {keys:,} keys, "
            f"{used / 1e6:,.0f} MB",
            flush=True,
        )
    finally:
        t2 = time.perf_counter()
        deleted = store.clear()
        print(f"  deleted {deleted:,} keys in {time.perf_counter() - t2:.1f} s")


if __name__ == "__main__":
    main()
