"""Foundation-model benchmarks on this CPU: pretraining throughput, batch and single-charge online embedding.

    .venv/bin/python bench/bench_fm.py [--charges 50000] [--days 120] [--threads 1] [--workers 2] [--intra 2]
    python3 bench/bench_fm.py --device cuda --charges 300000 --steps 300 --pretrain-batch 4096 \
        --embed-batch 8192 --threads 4          # on a GPU machine (BENCHMARKS.md has the command used)

Targets (DESIGN.md): single-charge online embedding p99 <= 5 ms; batch embedding >= 20k charges/s.
Uses a fresh synthetic world and the default model size (seq_len 16, 2 layers, 4 heads, 32 channels).
Batch embedding is reported in wall-clock and in this process's CPU time (charges per CPU-second): on a
shared machine the second says what the code does, the first what the machine let it do. The temporary
workspace is deleted at exit unless ``--keep``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from machine import describe  # bench/machine.py
from payfm.events.workspace import Workspace
from payfm.fm.embed import OnlineEmbedder, embed_sequences
from payfm.fm.pretrain import PretrainConfig, pretrain
from payfm.fm.sequences import build_sequences, read_charges
from payfm.synth import WorldConfig
from payfm.synth.generator import generate_world


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--charges", type=int, default=50_000)
    ap.add_argument(
        "--days",
        type=int,
        default=120,
        help="the world's days (the default world's 120: fewer give cards shorter histories, and short "
        "sequences embed faster)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (pretraining, online)")
    ap.add_argument("--workers", type=int, default=2, help="batch-embedding threads")
    ap.add_argument(
        "--intra",
        type=int,
        default=0,
        help="also time one batch-embedding worker on this many torch threads (0: not)",
    )
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--pretrain-batch", type=int, default=256, help="charges per optimizer step")
    ap.add_argument(
        "--embed-batch", type=int, default=128, help="batch embedding: tokens per pass = this x views x K"
    )
    ap.add_argument(
        "--device",
        default="cpu",
        help="batch embedding on this device ('cuda' on a GPU machine; pretraining takes CUDA when present)",
    )
    ap.add_argument("--online", type=int, default=3000, help="single-charge embeddings to time")
    ap.add_argument(
        "--state",
        action="append",
        default=[],
        help="also time a decision's FM step (state read + learn, forward pass) on this online state: "
        "memory or redis://... (repeatable; a namespace of its own, deleted after)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary workspace (its path is printed)")
    args = ap.parse_args()
    args.device = checked_device(args.device)  # before a world is generated and pretrained on
    print(f"# {describe()}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="bench-fm-"))
    try:
        run(root, args)
    finally:
        if args.keep:
            print(f"workspace kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def checked_device(value: str) -> str:
    """``value`` after checking it is a device this machine has: cpu, or cuda (cuda:N) when torch sees a
    GPU; otherwise exit with one line naming --device, what it takes and what it got (it failed with a torch
    traceback after the world was generated and pretrained on)."""
    expected = "cpu, or cuda / cuda:N on a machine with a GPU torch sees"
    try:
        device = torch.device(value)
    except RuntimeError:
        raise SystemExit(f"bench_fm: --device must be {expected}. Got {value!r}.") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SystemExit(f"bench_fm: --device must be {expected}. Got {value!r}, and torch sees no GPU.")
        if device.index is not None and device.index >= count:
            raise SystemExit(
                f"bench_fm: --device must be {expected}. Got {value!r}; torch sees {count} GPU(s)."
            )
    elif device.type != "cpu":
        raise SystemExit(f"bench_fm: --device must be {expected}. Got {value!r}.")
    return str(device) if device.type == "cuda" else "cpu"  # ("cpu:0" as "cpu": run() compares with it)


def run(root: Path, args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    ws = Workspace.open(root, create=True)
    ws.write_stream(generate_world(WorldConfig(charges=args.charges, days=args.days, seed=11)), "replace")

    result = pretrain(ws, PretrainConfig(steps=args.steps, batch_size=args.pretrain_batch))
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(
        f"pretraining on {where}: {result.charges_per_s:,.0f} charges/s "
        f"(batch {args.pretrain_batch}, {args.steps} steps)"
    )

    from payfm.fm.pretrain import load_checkpoint

    model, tokenizer, _ = load_checkpoint(result.path)
    model.to(args.device)
    # (workers, torch threads): one thread; worker threads (one torch thread each); one worker on --intra
    # torch threads. Intra-op threads wait on each other at every small op: fast on idle cores, slow when
    # another job holds one; worker threads do not wait on each other.
    runs = {(1, 1), (args.workers, 1)} | ({(1, args.intra)} if args.intra > 1 else set())
    if args.device != "cpu":
        runs = {(1, args.threads)}  # one stream of passes feeds the GPU
    for workers, threads in sorted(runs):
        torch.set_num_threads(threads)
        t0, c0 = time.perf_counter(), time.process_time()
        charges = read_charges(ws)
        seqs = build_sequences(charges, tokenizer, model.config.seq_len)
        t1, c1 = time.perf_counter(), time.process_time()
        embed_sequences(model, seqs, batch_size=args.embed_batch, workers=workers)
        t2, c2 = time.perf_counter(), time.process_time()
        n = len(seqs)
        if (workers, threads) == sorted(runs)[0]:  # the input, once: how long the histories embedded are
            filled = (seqs.index != n).sum(axis=2).mean(axis=0)  # per view, of K rows (the charge's own too)
            views = ", ".join(f"{k:.1f}" for k in filled)
            print(f"sequences: {n:,} charges, mean rows per view {views} of {seqs.index.shape[2]}")
        print(
            f"batch embedding, {workers} worker(s) x {threads} torch thread(s): "
            f"{n / (t2 - t0):,.0f} charges/s end to end ({n / (c2 - c0):,.0f} per CPU-second, "
            f"{c2 - c0:.2f} CPU-s in {t2 - t0:.2f} s); "
            f"read + tokenize + sequences {t1 - t0:.2f} s, model {t2 - t1:.2f} s = {n / (t2 - t1):,.0f}/s "
            f"({n / (c2 - c1):,.0f} per CPU-second)"
        )
        if (workers, threads) == (1, 1) or args.device != "cpu":
            t3 = time.perf_counter()
            embed_sequences(model, seqs, batch_size=args.embed_batch, workers=workers, output="surprise")
            t4 = time.perf_counter()
            print(
                f"batch surprise, {workers} worker(s) x {threads} torch thread(s): "
                f"model {n / (t4 - t3):,.0f} charges/s"
            )
    torch.set_num_threads(args.threads)
    if args.device != "cpu":
        return  # the online embedder runs on the CPU, one charge at a time

    online = OnlineEmbedder(model, tokenizer)
    rows = charges.slice(0, args.online + 1000).to_pylist()
    for c in rows[:1000]:
        online.learn_one(c)
    lat = []
    for c in rows[1000:]:
        s = time.perf_counter()
        online.embed_one(c)
        lat.append(time.perf_counter() - s)
        online.learn_one(c)
    ms = np.array(lat) * 1e3
    print(f"online embedding: p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms")
    lat = []  # a model taking the embedding and the surprise: one state read, both forward passes
    for c in rows[1000:]:
        s = time.perf_counter()
        online.fm_inputs(online.inputs_one(c), ("embedding", "surprise"))
        lat.append(time.perf_counter() - s)
    ms = np.array(lat) * 1e3
    print(
        f"online embedding + surprise: p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms"
    )
    for state in args.state:
        decision_step(str(result.path), charges, state, args.online)


def decision_step(ckpt: str, table: pa.Table, state: str, n: int) -> None:
    """What a decision does with the embedder: inputs_then_learn (under the scorer's lock: the state read
    and the learn, two Redis round trips on Redis) then the forward pass, over ``n`` charges after a warm
    start from the charges before them; each charge sent without its outcome, as a live one is, and its
    authorization result then set (set_outcome: one Redis script call on Redis), timed apart."""
    import uuid

    from payfm.fm.online_state import RedisState

    embedder = OnlineEmbedder.load(ckpt, state, namespace=f"bench-{uuid.uuid4().hex[:12]}")
    try:
        start = table.num_rows - n
        t0 = time.perf_counter()
        embedder.warm(table.slice(0, start))
        warm_s = time.perf_counter() - t0
        state_ms, forward_ms, result_ms = [], [], []
        for c in table.slice(start).to_pylist():
            s = time.perf_counter()
            x = embedder.inputs_then_learn({**c, "outcome": None, "decline_code": None})
            m = time.perf_counter()
            embedder.fm_inputs(x)
            e = time.perf_counter()
            embedder.set_outcome(c)
            r = time.perf_counter()
            state_ms.append((m - s) * 1e3)
            forward_ms.append((e - m) * 1e3)
            result_ms.append((r - e) * 1e3)
        total = np.array(state_ms) + np.array(forward_ms)

        def p(a: list[float] | np.ndarray) -> str:
            return f"p50 {np.percentile(a, 50):.2f} / p99 {np.percentile(a, 99):.2f} ms"

        print(
            f"decision FM step on {state}: warm {start:,} charges {warm_s:.1f} s; per charge: "
            f"state read+learn {p(state_ms)}, forward {p(forward_ms)}, total {p(total)}; "
            f"its authorization result (set_outcome) {p(result_ms)}"
        )
    finally:
        if isinstance(embedder.store, RedisState):
            embedder.store.clear()


if __name__ == "__main__":
    main()
