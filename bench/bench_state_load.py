"""Loading the online state from a workspace's whole log, in memory and in Redis: what a serving process does
at start-up (the first one of a feature set or checkpoint, on Redis).

    .venv/bin/python bench/bench_state_load.py --workspace ws [--checkpoint ws/fm/v3] \
        --redis redis://127.0.0.1:6379/13

Give it a Redis database the test suite does not use: the tests empty databases 9-11 (a scratch database
per pytest-xdist worker, tests/services.py) and use 12 and 15; 13 (the default here) and 14 are left to the
benches. Its namespaces are its own and deleted at the end; nothing else in the database is touched.

Features (the default set): the state built in memory from the event log (``apply_log``), then written to
Redis (``RedisStore.load``). With ``--checkpoint``, the embedder's warm start on each state. Reports the
times, the keys each takes and the time to delete them, and two memory figures: the growth of the server's
``used_memory`` (server-wide: whatever else the server did meanwhile counts, and the allocator's own
overhead), and the namespace's keys' own ``MEMORY USAGE``, summed over one key in ``--sample-every`` and
scaled up (an estimate of what the keys take).
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

from machine import describe  # bench/machine.py
from payfm.events.workspace import Workspace
from payfm.fm.embed import OnlineEmbedder
from payfm.fm.online_state import RedisState
from payfm.fm.sequences import read_charges


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--checkpoint", default=None, help="also an embedder's state, e.g. ws/fm/default")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="a database the tests do not use")
    ap.add_argument(
        "--sample-every", type=int, default=100, help="MEMORY USAGE of one key in this many (1: every key)"
    )
    args = ap.parse_args()
    print(f"# {describe()}", flush=True)
    ws = Workspace.open(args.workspace)
    features(ws, args.redis, args.sample_every)
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
            n, size = namespace_usage(store.client, store.ns, args.sample_every)
            t1 = time.perf_counter()
            keys = store.clear()
            took = time.perf_counter() - t1
            print(
                f"  Redis: {n:,} keys, {size / 1e6:,.0f} MB by MEMORY USAGE (sampled), the server's "
                f"used_memory +{used / 1e6:,.0f} MB; {keys:,} keys deleted in {took:.1f} s"
            )


def namespace_usage(client: Any, ns: str, every: int) -> tuple[int, int]:
    """(keys, bytes) of the keys under ``ns``: SCAN finds them; ``MEMORY USAGE`` of one in ``every`` (each
    key's value, name and Redis's own record of it), summed and scaled by the keys over those measured."""
    sampled: list[bytes] = []
    n = 0
    for key in client.scan_iter(match=f"{ns}:*", count=10_000):
        if n % every == 0:
            sampled.append(key)
        n += 1
    total = 0
    for i in range(0, len(sampled), 5_000):
        pipe = client.pipeline(transaction=False)
        for key in sampled[i : i + 5_000]:
            pipe.memory_usage(key)
        total += sum(x or 0 for x in pipe.execute())
    return n, round(total * n / len(sampled)) if sampled else 0


def features(ws: Workspace, url: str, every: int) -> None:
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
        if not store.begin_load():
            raise SystemExit(f"bench_state_load: another process loaded {store.ns} at {url}")
        t1 = time.perf_counter()
        keys = store.load(memory)
        written = time.perf_counter() - t1
        used = store.client.info("memory")["used_memory"] - before
        found, size = namespace_usage(store.client, store.ns, every)
        print(
            f"features ({fset.name}, {len(fset.names)}): {n:,} charges built in memory in {built:.1f} s "
            f"({len(memory.states):,} states), written to Redis in {written:.1f} s: {keys:,} keys written "
            f"({found:,} in the namespace), {size / 1e6:,.0f} MB by MEMORY USAGE (one key in {every} "
            f"measured), the server's used_memory +{used / 1e6:,.0f} MB",
            flush=True,
        )
    finally:
        t2 = time.perf_counter()
        deleted = store.clear()
        print(f"  deleted {deleted:,} keys in {time.perf_counter() - t2:.1f} s")


if __name__ == "__main__":
    main()
