"""Benchmark: the online feature vector of the default set (read + update of one charge), memory and Redis.

A synthetic world is generated into a temporary workspace; the first `--warm` charges warm a memory state
up, then each of the next ones is timed through `OnlineFeatures.vector_then_update` (the decision-time path),
outcomes applied in time order as in production, the garbage collector handled as a server handles it (a
freeze after the warm-up, then a collection and a freeze every `ScorerConfig.gc_freeze_every` charges, in
that charge's time). For Redis the warm state is loaded into Redis (`RedisStore.load`, as a Redis-state
server loads it at its first start) before the memory run goes on, and the first `--redis-charges` of the
same timed charges are timed there: both stores time the same charges on the same state (until 2026-12-07
the Redis run timed the world's first charges from an empty store, states ~8x smaller).
Wall time is the latency; the CPU time of the thread beside it shows how much of a slow figure is other
processes on the shared cores (the load average is printed with each line). Usage:

    .venv/bin/python bench/bench_online.py                       # 200k charges, 30 days; memory and Redis
    .venv/bin/python bench/bench_online.py --redis-url ''        # memory only
    .venv/bin/python bench/bench_online.py --apply-log --charges 1000000 --days 120   # warming a new server
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from machine import describe  # bench/machine.py
from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set
from payfm.features.online import OnlineFeatures
from payfm.features.parity import apply_log
from payfm.features.stores import MemoryStore
from payfm.serving.scorer_config import ScorerConfig
from payfm.synth import WorldConfig, generate_world


def _events(ws: Workspace) -> tuple[list[dict[str, object]], list[tuple[int, str, str, str]]]:
    ch = ws.read("charges").sort_by([("created", "ascending"), ("charge_id", "ascending")])
    rows = ch.to_pylist()
    ts = pc.cast(ch["created"], pa.int64()).to_pylist()
    cred = pc.cast(ch["credential_changed_at"], pa.int64()).to_pylist()
    for r, t, c in zip(rows, ts, cred, strict=True):
        r["created_us"] = t
        r["credential_changed_at_us"] = c
    outcomes: list[tuple[int, str, str, str]] = []
    d = ws.read("disputes")
    d = d.filter(pc.equal(d["reason"], "fraudulent"))
    for source, table, id_col in (
        ("fraud_disputes", d, "dispute_id"),
        ("efws", ws.read("early_fraud_warnings"), "efw_id"),
        ("refunds", ws.read("refunds"), "refund_id"),
    ):
        times = pc.cast(table["created"], pa.int64()).to_pylist()
        for t, oid, cid in zip(times, table[id_col].to_pylist(), table["charge_id"].to_pylist(), strict=True):
            outcomes.append((t, source, oid, cid))
    outcomes.sort()
    return rows, outcomes


def warm_up(online: OnlineFeatures, rows: list[dict[str, object]], outcomes: list) -> int:
    """Apply ``rows`` (the charges before the timed ones) and the outcomes up to the last one's time, in time
    order, untimed; returns how many outcomes were applied."""
    k = 0
    for row in rows:
        t = int(row["created_us"])  # type: ignore[call-overload]
        while k < len(outcomes) and outcomes[k][0] <= t:
            online.apply_outcome(outcomes[k][1], outcomes[k][2], outcomes[k][3], outcomes[k][0])
            k += 1
        online.vector_then_update(row)
    gc.freeze()  # as a serving process does after warming its state (apply_log, restore)
    return k


def timed(
    name: str, online: OnlineFeatures, rows: list[dict[str, object]], outcomes: list, k: int, warm: int
) -> np.ndarray:
    """Time ``vector_then_update`` of each of ``rows`` on a state warmed with ``warm`` charges and the first
    ``k`` outcomes (the later ones applied as their time comes, untimed); prints a line, returns the wall
    latencies in us."""
    lat = []
    cpu = []
    pauses = []
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    every = ScorerConfig().gc_freeze_every
    for i, row in enumerate(rows):
        t = int(row["created_us"])  # type: ignore[call-overload]
        while k < len(outcomes) and outcomes[k][0] <= t:
            online.apply_outcome(outcomes[k][1], outcomes[k][2], outcomes[k][3], outcomes[k][0])
            k += 1
        c0 = cpu_clock()
        t0 = clock()
        online.vector_then_update(row)
        if every and (i + 1) % every == 0:
            # as a serving process does every `gc_freeze_every` decisions, before that decision's response
            p0 = clock()
            gc.collect()
            gc.freeze()
            pauses.append((clock() - p0) / 1e6)
        t1 = clock()
        c1 = cpu_clock()
        lat.append(t1 - t0)
        cpu.append(c1 - c0)
    a = np.array(lat) / 1000.0
    c = np.array(cpu) / 1000.0
    print(
        f"{name:>7}: {len(online.fset.features)} features, {len(a):,} charges timed after {warm:,} warm-up, "
        f"load average {os.getloadavg()[0]:.1f}: wall p50 {np.percentile(a, 50):,.0f} us, "
        f"p99 {np.percentile(a, 99):,.0f} us, p99.9 {np.percentile(a, 99.9):,.0f} us, "
        f"mean {a.mean():,.0f} us; "
        f"CPU time of this thread p50 {np.percentile(c, 50):,.0f} us, p99 {np.percentile(c, 99):,.0f} us",
        flush=True,
    )
    if pauses:
        print(
            f"{'':>7}  (gc.collect + gc.freeze every {every:,} charges, in that charge's time, as a server "
            f"does: {len(pauses)} pauses, median {np.median(pauses):.1f} ms, max {max(pauses):.1f} ms)",
            flush=True,
        )
    return a


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--charges", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--warm", type=int, default=150_000, help="Charges applied before timing starts.")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="'' to skip Redis.")
    parser.add_argument("--redis-charges", type=int, default=20_000, help="Charges timed on Redis.")
    parser.add_argument(
        "--apply-log", action="store_true", help="Only time warming a state from the whole log (apply_log)."
    )
    args = parser.parse_args()
    print(f"# {describe()}")
    tmp = Path(tempfile.mkdtemp(prefix="payfm-bench-online-"))
    try:
        ws = Workspace.open(tmp, create=True)
        ws.write_stream(generate_world(WorldConfig(charges=args.charges, days=args.days, seed=3)), "replace")
        if args.apply_log:
            online = OnlineFeatures(default_set())
            t0, c0 = time.perf_counter(), time.process_time()
            n = apply_log(online, ws)
            print(
                f"apply_log: {n:,} charges in {time.perf_counter() - t0:.1f} s "
                f"({time.process_time() - c0:.1f} s CPU), load average {os.getloadavg()[0]:.1f}, "
                f"{len(online.store.states):,} states"  # type: ignore[attr-defined]
            )
            return
        rows, outcomes = _events(ws)
        warm = min(args.warm, len(rows) - 1000)
        # One warm state for both stores: built in memory, then (before the memory run goes on) copied into
        # Redis as a Redis-state server loads it at its first start (RedisStore.load, bench_state_load.py),
        # so memory and Redis time the same charges, rows[warm:], on the same state.
        memory = MemoryStore()
        online = OnlineFeatures(default_set(), memory)
        t0 = time.perf_counter()
        k = warm_up(online, rows[:warm], outcomes)
        print(
            f"warm-up: {warm:,} charges and {k:,} outcomes in memory in {time.perf_counter() - t0:.1f} s "
            f"({len(memory.states):,} states)",
            flush=True,
        )
        store = None
        try:
            if args.redis_url:
                from payfm.features.redis_store import RedisStore

                store = RedisStore(args.redis_url, default_set(), prefix="payfm-bench")
                store.clear()
                if not store.begin_load():
                    raise SystemExit(f"bench_online: another process loaded {store.ns} at {args.redis_url}")
                t0 = time.perf_counter()
                keys = store.load(memory)
                print(f"  loaded into Redis in {time.perf_counter() - t0:.1f} s ({keys:,} keys)", flush=True)
            mem = timed("memory", online, rows[warm:], outcomes, k, warm)
            if store is not None:
                n = min(len(rows) - warm, args.redis_charges)
                del online, memory  # (the memory run's state: the Redis run has its own)
                timed("redis", OnlineFeatures(default_set(), store), rows[warm : warm + n], outcomes, k, warm)
                p50, p99 = np.percentile(mem[:n], [50, 99])
                print(
                    f"{'':>7}  (memory on the same {n:,} charges: wall p50 {p50:,.0f} us, p99 {p99:,.0f} us)"
                )
        finally:
            if store is not None:
                store.clear()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
