"""Benchmark: what the decision service's metrics and access log add to each request, in process.

Times :meth:`payfm.serving.metrics.ServiceMetrics.request` without and with an access-log line (written to a
file, as `payfm serve` writes to its stderr) and :meth:`~payfm.serving.metrics.ServiceMetrics.decided`.
Usage:

    .venv/bin/python bench/bench_metrics.py             # 50,000 calls each
    .venv/bin/python bench/bench_metrics.py --calls 200000
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import timeit
from pathlib import Path

from machine import describe  # bench/machine.py
from payfm.serving.metrics import ServiceMetrics


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=50_000)
    args = ap.parse_args()
    print(f"# {describe()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        handler = logging.FileHandler(Path(tmp) / "access.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        access = logging.getLogger("payfm.access")
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        metrics = ServiceMetrics(lambda: {})
        scope = {"path": "/v1/charges/score", "method": "POST", "client": ("127.0.0.1", 52814)}
        n = args.calls
        for name, call in (
            ("request metrics", lambda: metrics.request(scope, 200, 0.0012, 371, "key", False)),
            ("request metrics + access line", lambda: metrics.request(scope, 200, 0.0012, 371, "key", True)),
            ("decision counter and histogram", lambda: metrics.decided("authorized", "normal", 1.2)),
        ):
            us = min(timeit.repeat(call, number=n, repeat=3)) / n * 1e6
            print(f"{name}: {us:.1f} us per call ({n:,} calls, best of 3)", flush=True)
        access.removeHandler(handler)
        handler.close()


if __name__ == "__main__":
    main()
