"""Loading a foundation model's online embedder state from a workspace's whole log: in memory and in Redis.

    .venv/bin/python bench/bench_fm_state.py --workspace ws --checkpoint ws/fm/v3 \
        --redis redis://127.0.0.1:6379/0

Reports the warm start's time on each state (what a serving process does at start-up, or the first one on
Redis), the Redis memory and keys it takes, and the time to delete them. Uses a namespace of its own,
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
    ap.add_argument("--checkpoint", required=True, help="a checkpoint directory, e.g. ws/fm/default")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()
    print(f"# {describe()}", flush=True)
    charges = read_charges(Workspace.open(args.workspace))
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


if __name__ == "__main__":
    main()
