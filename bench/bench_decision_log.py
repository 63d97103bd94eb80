"""Benchmark: what a decision costs the decision log, on disk and in time.

Copies ``--workspace`` (the demo's) to a scratch folder, opens the decision service in process on it
(memory state, the embedded SQLite log) and decides ``--charges`` charges one at a time, each waiting for
its commit (``--durability``). Prints the log's bytes on disk per decision (its pages after a checkpoint),
the mean stored charge and decision (the decision's feature values a list, their names once per log:
payfm.serving.decision_codec), and each decision's latency with its commit. Usage:

    .venv/bin/python bench/bench_decision_log.py --workspace payfm-workspace
    .venv/bin/python bench/bench_decision_log.py --workspace ws --charges 10000 --durability os
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench_prune import _charge  # bench/bench_prune.py: the same charges
from machine import describe  # bench/machine.py
from payfm.events.workspace import Workspace
from payfm.serving.scorer import Scorer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default="payfm-workspace")
    ap.add_argument("--charges", type=int, default=5_000)
    ap.add_argument("--cards", type=int, default=500)
    ap.add_argument("--durability", choices=("fsync", "os"), default="fsync")
    args = ap.parse_args()
    print(f"# {describe()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="payfm-bench-log-") as tmp:
        root = Path(tmp) / "ws"
        shutil.copytree(args.workspace, root, ignore=shutil.ignore_patterns("serving", "reports"))
        ws = Workspace.open(root)
        end = ws.connect().sql("SELECT max(created) FROM charges").fetchall()[0][0]
        scorer = Scorer.open(ws, durability=args.durability)
        ms: list[float] = []
        try:
            for i in range(args.charges):
                created = (end + timedelta(seconds=10 * (i + 1))).isoformat()
                t0 = time.perf_counter()
                scorer.score(_charge(i, created, args.cards))
                ms.append((time.perf_counter() - t0) * 1000)
            scorer.log.flush()
        finally:
            scorer.close(snapshot=False)
        db = root / "serving" / "decisions.db"
        with sqlite3.connect(db) as con:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pages, size = (con.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
            n, charge, decision = con.execute(
                "SELECT count(*), avg(length(charge)), avg(length(decision)) FROM decisions"
            ).fetchone()
        ms.sort()
        print(
            f"{n:,} decisions ({args.durability}): {pages * size / n:,.0f} bytes each on disk "
            f"({size}-byte pages); "
            f"stored charge {charge:,.0f} B, decision {decision:,.0f} B; decision with its commit "
            f"p50 {ms[len(ms) // 2]:.2f} ms, p99 {ms[int(len(ms) * 0.99)]:.2f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
