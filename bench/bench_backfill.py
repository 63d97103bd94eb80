"""Benchmark: offline backfill. (1) The 15-feature set over ~1.75M charges, beside a straightforward
pandas groupby + time-rolling implementation of the same features, in the same run; (2) the default set.

Usage:
    .venv/bin/python bench/bench_backfill.py          # 1.75M charges: bench15 + pandas, then the default set
    .venv/bin/python bench/bench_backfill.py --charges 10000000 --skip-pandas --skip-bench15
    .venv/bin/python bench/bench_backfill.py --workspace /tmp/ws   # an existing workspace, no generation
    .venv/bin/python bench/bench_backfill.py --charges 300000 --days 60 --skip-pandas --skip-bench15 \
        --engine spark --spark-master 'local[2]'    # the Spark plan (its JVM's CPU is not in "CPU")

Each figure is printed with the process CPU time and the load average before the run: on a shared machine the
wall time of a run competing for the cores is longer than that of the same run on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe  # bench/machine.py

_CHILD = """
import json, resource, sys, time
from payfm.events.workspace import Workspace
from payfm.features.catalog import feature_set
from payfm.features.offline import backfill
ws = Workspace.open(sys.argv[1])
t0, c0 = time.perf_counter(), time.process_time()
steps = []  # (step, of, seconds since the start): the engine's progress
def progress(i, n):
    steps.append((i, n, round(time.perf_counter() - t0, 1)))
path, rows = backfill(ws, feature_set(sys.argv[2]), engine=sys.argv[3], spark_master=sys.argv[4],
                      progress=progress)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                  "rows": rows,
                  "features": len(feature_set(sys.argv[2]).features), "peak_rss_bytes": rss,
                  "steps": steps}))
"""

_PANDAS = """
import json, resource, sys, time
import numpy as np
import pandas as pd
from payfm.events.workspace import Workspace
ws = Workspace.open(sys.argv[1])
cols = ["charge_id", "created", "customer_id", "merchant_id", "amount_usd"]
ch = ws.read("charges", columns=cols).to_pandas()
d = ws.read("disputes").to_pandas()
t0 = time.perf_counter()
ch = ch.sort_values(["created", "charge_id"]).reset_index(drop=True)
ch["one"] = 1.0
def roll(key, window, column, how):
    # groupby + time-rolling, windows ending just before each charge; back in the charges' order
    frame = ch[ch[key].notna()].sort_values([key, "created", "charge_id"], kind="stable")
    r = getattr(frame.groupby(key, sort=True).rolling(window, on="created", closed="left")[column], how)()
    return pd.Series(r.to_numpy(), index=frame.index).reindex(ch.index)
res = {}
for w in ("1D", "7D", "30D"):
    res[f"customer.count_{w}"] = roll("customer_id", w, "amount_usd", "count")
    res[f"customer.mean_{w}"] = roll("customer_id", w, "amount_usd", "mean") / 100.0
week = roll("merchant_id", "7D", "one", "sum")
fraud = d[d["reason"] == "fraudulent"][["charge_id", "created"]].merge(ch[["charge_id", "merchant_id"]])
fraud = fraud.sort_values("created").assign(cum=1.0)
fraud["cum"] = fraud.groupby("merchant_id")["cum"].cumsum()
def fraud_before(when):  # fraud disputes of the charge's merchant strictly before `when`
    left = pd.DataFrame({"t": when, "merchant_id": ch["merchant_id"], "i": ch.index}).sort_values("t")
    j = pd.merge_asof(left, fraud.rename(columns={"created": "t"})[["t", "merchant_id", "cum"]], on="t",
                      by="merchant_id", allow_exact_matches=False)
    return j.set_index("i")["cum"].reindex(ch.index).fillna(0.0)
shifted = ch["created"] - pd.Timedelta(days=7)
end_count = fraud_before(shifted)
for days in (1, 7, 30):
    count = roll("merchant_id", f"{days + 7}D", "one", "sum").fillna(0) - week.fillna(0)
    n_fraud = end_count - fraud_before(shifted - pd.Timedelta(days=days))
    res[f"merchant.count_{days}d"] = count
    res[f"merchant.fraud_{days}d"] = n_fraud
    res[f"merchant.fraud_rate_{days}d"] = n_fraud / count.replace(0, np.nan)
out = pd.DataFrame(res)
elapsed = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": elapsed, "rows": len(out), "features": out.shape[1], "peak_rss_bytes": rss}))
"""


def _child(code: str, *argv: str) -> dict[str, Any]:
    load = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load"] = load
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--charges", type=int, default=1_750_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--skip-bench15", action="store_true")
    parser.add_argument("--skip-default", action="store_true")
    parser.add_argument("--workspace", type=Path, help="an existing workspace (no world is generated)")
    parser.add_argument("--engine", choices=["columnar", "duckdb", "spark"], default="columnar")
    parser.add_argument("--spark-master", default="local[*]", help="with --engine spark")
    args = parser.parse_args()
    print(f"# {describe()}")
    tmp = Path(tempfile.mkdtemp(prefix="payfm-bench-backfill-"))
    try:
        from payfm.events.workspace import Workspace
        from payfm.synth import WorldConfig, generate_world

        if args.workspace:
            root = args.workspace
            n = Workspace.open(root).count("charges")
            print(f"world: {n:,} charges in {root}")
        else:
            root = tmp / "ws"
            ws = Workspace.open(root, create=True)
            world = generate_world(WorldConfig(charges=args.charges, days=args.days, seed=5))
            rows = ws.write_stream(world, "replace", validate=False)  # (as `payfm generate` writes one)
            n = rows["charges"]
            print(f"world: {n:,} charges over {args.days} days")

        def show(name: str, r: dict[str, Any]) -> None:
            print(
                f"{name:>24}: {r['features']:.0f} features x {r['rows']:,.0f} charges "
                f"in {r['seconds']:.2f} s "
                f"({r['rows'] / r['seconds']:,.0f} charges/s), "
                f"CPU {r.get('cpu_seconds', float('nan')):.1f} s, "
                f"peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB, load average {r['load']:.2f}"
            )
            if r.get("steps"):  # the engine's progress: for spark, step i starts the i-th part's job
                print(f"{'steps':>24}: " + ", ".join(f"{i}/{n} at {t:.1f} s" for i, n, t in r["steps"]))

        engine = (args.engine, args.spark_master)
        if not args.skip_bench15:
            r15 = _child(_CHILD, str(root), "bench15", *engine)
            show(f"payfm bench15 ({args.engine})", r15)
            if not args.skip_pandas:
                rp = _child(_PANDAS, str(root))
                show("pandas rolling (15)", rp)
                print(f"{'ratio':>24}: payfm is {rp['seconds'] / r15['seconds']:.1f}x faster than pandas")
        if not args.skip_default:
            show(f"payfm default set ({args.engine})", _child(_CHILD, str(root), "default", *engine))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"# total {time.perf_counter() - t:.0f} s")
