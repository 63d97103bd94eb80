"""Benchmark: generate the synthetic world into a fresh workspace (the `payfm generate` path, with Parquet).

Each size runs in its own process, so peak RSS is that run's alone. Usage:

    .venv/bin/python bench/bench_generate.py                 # 1M and 10M charges over 120 days
    .venv/bin/python bench/bench_generate.py --sizes 1000000 # one size
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import describe  # bench/machine.py

_CHILD = """
import json, resource, sys, time
from datetime import UTC, datetime
from payfm.events.workspace import Workspace
from payfm.synth import WorldConfig, generate_world
n, days, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ws = Workspace.open(path, create=True)
t0 = time.perf_counter()
# as `payfm generate` writes a world: unchecked (the generator's tables are checked by its tests)
world = generate_world(WorldConfig(charges=n, days=days, seed=1))
rows = ws.write_stream(world, mode="replace", validate=False)
elapsed = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"charges": rows["charges"], "rows": rows, "seconds": elapsed, "peak_rss_bytes": rss}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000000,10000000", help="Comma-separated charge counts.")
    parser.add_argument("--days", type=int, default=120)
    args = parser.parse_args()
    print(f"# {describe()}")
    for n in (int(s) for s in args.sizes.split(",")):
        tmp = Path(tempfile.mkdtemp(prefix="payfm-bench-"))
        try:
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, str(n), str(args.days), str(tmp / "ws")],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            size = sum(p.stat().st_size for p in (tmp / "ws").rglob("*.parquet"))
            rate = r["charges"] / r["seconds"]
            outcomes = {k: v for k, v in r["rows"].items() if k != "charges"}
            print(
                f"generate {n:>11,} requested: {r['charges']:,} charges in {r['seconds']:.1f} s "
                f"= {rate:,.0f} charges/s, peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB, "
                f"{size / 2**20:,.0f} MiB of Parquet; outcomes {json.dumps(outcomes)}"
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
