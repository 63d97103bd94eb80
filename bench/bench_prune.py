"""Benchmark: `payfm serve prune` on a decision log of decided charges, while a server decides.

Copies ``--workspace`` (the demo's) to a scratch folder and opens the decision service in process on it
(memory state, SQLite decision log, ``--durability os``). Decides ``--charges`` charges of ``--cards``
cards, dated over ``--days`` days after the event log's end, appends them to the event log (`payfm serve
export`) and takes a state snapshot, as a server does every 100k decisions. Then decides charges one at a
time for ``--seconds`` seconds (the baseline), and again while `payfm serve prune --keep-days <days / 2>`
runs in another process on the same log, timing each decision. Usage:

    .venv/bin/python bench/bench_prune.py --workspace payfm-workspace           # the demo's workspace
    .venv/bin/python bench/bench_prune.py --workspace ws --charges 20000 --days 60 --seconds 10
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from machine import describe  # bench/machine.py
from payfm.events.workspace import Workspace
from payfm.serving.charges import EXAMPLE_FIELDS
from payfm.serving.export import export_charges
from payfm.serving.scorer import Scorer


def _charge(i: int, created: str, cards: int) -> dict[str, object]:
    amount = 500 + (i * 7919) % 40_000  # $5 to $405
    return {
        **EXAMPLE_FIELDS,
        "charge_id": f"bench_pr_{i}",
        "created": created,
        "card_fingerprint": f"fp_bench_pr_{i % cards}",
        "amount": amount,
        "amount_usd": amount,
        "outcome": "authorized",
    }


def _decide_for(
    scorer: Scorer, start: int, seconds: float, at: str, stop: threading.Event | None
) -> list[float]:
    """Decide charges one at a time for ``seconds`` (or until ``stop`` is set); their latencies in ms."""
    out: list[float] = []
    end = time.monotonic() + seconds
    i = start
    while time.monotonic() < end and not (stop is not None and stop.is_set()):
        t0 = time.perf_counter()
        scorer.score(_charge(i, at, 1_000))
        out.append((time.perf_counter() - t0) * 1000)
        i += 1
    return out


def _summary(ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=100)
    return f"{len(ms):,} decisions, p50 {q[49]:.2f} ms, p99 {q[98]:.2f} ms, max {max(ms):.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default="payfm-workspace")
    ap.add_argument("--charges", type=int, default=50_000, help="charges decided before the prune")
    ap.add_argument("--cards", type=int, default=5_000)
    ap.add_argument("--days", type=int, default=60, help="the decided charges' span; the prune keeps half")
    ap.add_argument("--seconds", type=float, default=10.0, help="the baseline's length")
    args = ap.parse_args()
    print(f"# {describe()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="payfm-bench-prune-") as tmp:
        root = Path(tmp) / "ws"
        t0 = time.perf_counter()
        shutil.copytree(args.workspace, root, ignore=shutil.ignore_patterns("serving"))
        ws = Workspace.open(root)
        end = ws.connect().sql("SELECT max(created) FROM charges").fetchall()[0][0]
        print(f"workspace copied in {time.perf_counter() - t0:.0f} s; its event log ends {end}", flush=True)
        scorer = Scorer.open(ws, durability="os")
        try:
            t0 = time.perf_counter()
            step = timedelta(days=args.days) / args.charges
            for i in range(args.charges):
                scorer.score(_charge(i, (end + step * (i + 1)).isoformat(), args.cards))
            scorer.log.flush()
            print(f"{args.charges:,} charges decided in {time.perf_counter() - t0:.0f} s", flush=True)
            exported = export_charges(ws, scorer.log).exported
            snapshot = scorer.snapshot()
            db = root / "serving" / "decisions.db"
            size, wal = db.stat().st_size, Path(f"{db}-wal").stat().st_size
            name = snapshot.name if snapshot else None
            print(
                f"{exported:,} exported; snapshot {name}; log {size / 1e6:.0f} MB, WAL {wal / 1e6:.0f} MB",
                flush=True,
            )
            at = (end + timedelta(days=args.days)).isoformat()
            base = _decide_for(scorer, args.charges, args.seconds, at, None)
            print(f"baseline: {_summary(base)}", flush=True)
            cmd = [sys.executable, "-c", "from payfm.cli.main import main; main()", "-w", str(root)]
            cmd += ["serve", "prune", "--keep-days", str(args.days / 2)]
            stop = threading.Event()
            during: list[float] = []
            worker = threading.Thread(
                target=lambda: during.extend(_decide_for(scorer, 10**7, 3600, at, stop)), daemon=True
            )
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            worker.start()
            said, _ = proc.communicate()
            wall = time.perf_counter() - t0
            stop.set()
            worker.join()
            print(said.strip())
            pruned = next(int(w.replace(",", "")) for w in said.split("Pruned ", 1)[1].split()[:1])
            print(f"prune: {wall:.1f} s wall (process start included), {pruned / wall:,.0f} decisions/s")
            print(f"during the prune: {_summary(during)}", flush=True)
            archive = root / "serving" / "archive"
            kb = sum(f.stat().st_size for f in archive.rglob("*.parquet")) / 1e6
            print(f"archive: {kb:.1f} MB of Parquet for {pruned:,} decisions")
        finally:
            scorer.close(snapshot=False)


if __name__ == "__main__":
    main()
