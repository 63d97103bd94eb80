"""Benchmark: feature drift (`payfm features drift`, ``payfm.evaluation.drift.window_drift``) of the default
feature set between two windows of a workspace's backfill: wall time and peak RSS, every window's rows and
an evenly spaced sample of them.

Runs on a workspace that `make demo` (or `payfm generate` + `payfm features backfill`) filled; the reference
window is the log's first ``--split`` share of days, the current one the rest.

    .venv/bin/python bench/bench_drift.py                                   # ./payfm-workspace
    .venv/bin/python bench/bench_drift.py --workspace ws --max-rows 100000,500000,2000000
    .venv/bin/python bench/bench_drift.py --fm payfm-workspace/fm/early   # + a foundation model's outputs

``--fm`` compares the checkpoint's embedding and surprise too, each dimension as a feature, on at most
``--fm-max-rows`` charges of each window (the drift of a model trained with ``payfm train --fm``).
"""

from __future__ import annotations

import argparse
import resource
import time

from machine import describe  # bench/machine.py
from payfm.evaluation.drift import window_drift
from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set
from payfm.features.training_set import backfill_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default="payfm-workspace")
    ap.add_argument("--split", type=float, default=0.6, help="share of the log's time in the reference")
    ap.add_argument("--max-rows", default="500000", help="rows compared per window at most, comma-separated")
    ap.add_argument(
        "--fm", help="a foundation-model checkpoint whose embedding and surprise are compared too"
    )
    ap.add_argument("--fm-max-rows", type=int, default=20_000, help="charges of a window embedded at most")
    args = ap.parse_args()
    print(describe())
    ws = Workspace.open(args.workspace)
    fs = default_set()
    backfill_path(ws, fs)  # computed first when missing or stale: not timed
    con = ws.connect()
    try:
        [(lo, hi)] = con.execute("SELECT min(created), max(created) FROM charges").fetchall()
    finally:
        con.close()
    cut = lo + (hi - lo) * args.split
    for max_rows in (int(m) for m in args.max_rows.split(",")):
        t0 = time.perf_counter()
        fm = (args.fm, ("embedding", "surprise")) if args.fm else None
        report = window_drift(
            ws, fs, (None, cut), (cut, None), max_rows=max_rows, fm=fm, fm_max_rows=args.fm_max_rows
        )
        dt = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(
            f"{len(report.features)} features, {report.reference_rows:,} + {report.current_rows:,} charges, "
            f"at most {max_rows:,} per window{' (sampled)' if report.sampled else ''}: {dt:.1f} s, peak RSS "
            f"{rss:.2f} GB; {report.summary(top=1)}"
        )


if __name__ == "__main__":
    main()
