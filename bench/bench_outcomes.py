"""Benchmark: recording outcomes (disputes) in the decision service, as small files pile up, and compaction.

Each outcome the service records is checked against the event log (is it there already? when was its
charge?) and appended to it as its own small Parquet file. This measures, in process (no HTTP):

- ``record``: ``Scorer.record_outcome`` for disputes of charges in the event log (not decided by this
  server, so the charge's time comes from the event log too), per batch of ``--batch`` outcomes, as the
  disputes table grows by one file per outcome;
- ``compact``: ``Workspace.compact()`` (what ``payfm compact`` runs) once they are in, and the next batch.

Usage:

    .venv/bin/python bench/bench_outcomes.py                       # 200k charges, 3 batches of 300
    .venv/bin/python bench/bench_outcomes.py --charges 1000000 --batches 4 --batch 500
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from machine import describe  # bench/machine.py
from payfm.events.workspace import Workspace
from payfm.serving.scorer import Scorer
from payfm.synth import WorldConfig, generate_world


def _stats(lat_ms: list[float]) -> dict[str, float]:
    a = np.asarray(lat_ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2)}


def run(root: Path, charges: int, batches: int, batch: int) -> dict[str, Any]:
    ws = Workspace.open(root / "ws", create=True)
    t0 = time.perf_counter()
    ws.write_stream(generate_world(WorldConfig(charges=charges, seed=3)), "replace")
    generated_s = time.perf_counter() - t0
    con = ws.connect()
    try:
        rows = con.execute(
            "SELECT charge_id, created, amount, currency FROM charges WHERE outcome = 'authorized' "
            "AND charge_id NOT IN (SELECT charge_id FROM disputes) ORDER BY hash(charge_id) LIMIT ?",
            [batches * batch + batch],
        ).fetchall()
    finally:
        con.close()
    t0 = time.perf_counter()
    scorer = Scorer.open(ws, decision_log=f"sqlite:///{root / 'decisions.db'}", durability="os")
    open_s = time.perf_counter() - t0
    out: dict[str, Any] = {
        "machine": describe(),
        "charges": ws.count("charges"),
        "generate_s": round(generated_s, 1),
        "scorer_open_s": round(open_s, 1),
        "batches": [],
    }

    def record(part: list[tuple[Any, ...]], label: str) -> None:
        lat = []
        files_before = len(ws.files("disputes"))
        for i, (cid, created, amount, currency) in enumerate(part):
            event = {
                "dispute_id": f"dp_bench_{label}_{i}",
                "charge_id": cid,
                "created": (created + timedelta(days=20)).isoformat(),
                "reason": "fraudulent",
                "amount": amount,
                "currency": currency,
            }
            t = time.perf_counter()
            scorer.record_outcome("disputes", event)
            lat.append((time.perf_counter() - t) * 1000)
        entry = {"label": label, "n": len(part), "dispute_files_before": files_before, **_stats(lat)}
        out["batches"].append(entry)
        print(json.dumps(entry), file=sys.stderr)

    try:
        for b in range(batches):
            record(rows[b * batch : (b + 1) * batch], f"batch{b + 1}")
        t0 = time.perf_counter()
        result = ws.compact()
        out["compact_s"] = round(time.perf_counter() - t0, 2)
        out["compact"] = {t: [r.files_before, r.files_after] for t, r in result.items()}
        record(rows[batches * batch :], "after_compact")
    finally:
        scorer.close(snapshot=False)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--charges", type=int, default=200_000)
    p.add_argument("--batches", type=int, default=3, help="batches of outcomes before compacting")
    p.add_argument("--batch", type=int, default=300, help="outcomes per batch")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(Path(tmp), args.charges, args.batches, args.batch), indent=1))


if __name__ == "__main__":
    main()
