"""Benchmark: `payfm train`'s own path (task data, split, fit, register) on a workspace: time and peak memory
per stage.

Unlike bench_train.py (LightGBM on a matrix it builds itself), this runs what `payfm train --model KIND`
runs, on a workspace that is already backfilled, and samples the process's resident memory every 20 ms to
name the stage where it peaked: reading the task's rows into the float32 matrix, or fitting.

    .venv/bin/payfm -w /tmp/w2m generate --charges 2400000 --days 330 --seed 11
    .venv/bin/payfm -w /tmp/w2m features backfill
    .venv/bin/python bench/bench_train_task.py /tmp/w2m --horizon-days 30
"""

from __future__ import annotations

import argparse
import resource
import threading
import time

from machine import describe
from payfm.events.workspace import Workspace
from payfm.features.catalog import feature_set
from payfm.registry import Registry
from payfm.training.tasks import task
from payfm.training.trainer import TrainConfig, register_result, train


def rss_mb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return 0


class Stages:
    """Stage names from the trainer's progress callback, with the peak resident memory seen in each."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.stage = "start (labels, keys, join)"
        self.peak: dict[str, int] = {}
        self.started: dict[str, float] = {self.stage: 0.0}
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            r = rss_mb()
            self.peak[self.stage] = max(self.peak.get(self.stage, 0), r)
            time.sleep(0.02)

    def enter(self, stage: str) -> None:
        if stage != self.stage:
            self.stage = stage
            self.started[stage] = time.perf_counter() - self.t0

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.enter(stage)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace")
    ap.add_argument("--model", default="gbdt")
    ap.add_argument("--set", default="default")
    ap.add_argument("--horizon-days", type=float, default=30.0)
    ap.add_argument("--downsample", type=float, default=1.0)
    args = ap.parse_args()

    print(describe())
    ws = Workspace.open(args.workspace)
    fs = feature_set(args.set)
    stages = Stages()
    cfg = TrainConfig(horizon_days=args.horizon_days, downsample=args.downsample)
    [res] = train(ws, args.model, task("fraud"), fs, cfg, stages)
    stages.enter("register")
    mv = register_result(Registry(ws), res, fs)
    stages.enter("done")
    total = time.perf_counter() - stages.t0
    rows = res.split["rows"]
    print(
        f"{mv.ref}: train/val/test rows {rows['train']:,}/{rows['val']:,}/{rows['test']:,}, "
        f"{len(fs.names)} features, fitted on {res.split['fitted']:,}; test AP {res.metrics['test_ap']:.4f}"
    )
    names = list(stages.started)
    for i, name in enumerate(names[:-1]):
        took = stages.started[names[i + 1]] - stages.started[name]
        print(f"  {name:<28} {took:8.1f} s   peak RSS {stages.peak.get(name, 0):>7,} MB")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"  total {total:.1f} s; peak RSS {maxrss:,} MB")


if __name__ == "__main__":
    main()
