"""Benchmark: the logistic regression's and the MLP's input transform (signed log or raw values, clipped to
the training range either way) on the demo's split, by validation and test average precision.

Runs on a workspace that `make demo` (or `payfm generate` + `payfm features backfill`) filled; the split is
the demo's (60-day label horizon, 14-day validation and test periods, negatives sampled at 10%).

    .venv/bin/python bench/bench_preprocessing.py                         # ./payfm-workspace
    .venv/bin/python bench/bench_preprocessing.py --workspace ws --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import time

from sklearn.metrics import average_precision_score

from machine import describe  # bench/machine.py
from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set
from payfm.training.models import model_class
from payfm.training.splits import downsample_negatives
from payfm.training.tasks import task
from payfm.training.trainer import TrainConfig, prepare, rows_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default="payfm-workspace")
    ap.add_argument("--seeds", default="0", help="training seeds, comma-separated (the MLP's init and order)")
    args = ap.parse_args()
    print(describe())
    ws = Workspace.open(args.workspace)
    data, split = prepare(ws, task("fraud"), default_set(), TrainConfig(horizon_days=60, downsample=0.1))
    keep, w = downsample_negatives(data.y[split.train], 0.1, 0)
    tr, te = split.train[keep], split.test[data.mature[split.test]]
    X, y, Xv, yv = rows_of(data.X, tr), data.y[tr], rows_of(data.X, split.val), data.y[split.val]
    Xt, yt = rows_of(data.X, te), data.y[te]
    print(f"train {len(y):,} rows ({int(y.sum())} fraud), validation {len(yv):,}, test {len(yt):,} mature")
    print("kind  transform  seed  val AP  test AP  test mean score / fraud rate  fit s")
    for kind in ("lr", "mlp"):
        for transform in ("symlog", "none"):
            for seed in (int(s) for s in args.seeds.split(",")):
                t0 = time.perf_counter()
                m = model_class(kind)(seed=seed, transform=transform).fit(X, y, w, Xv, yv)
                fit = time.perf_counter() - t0
                pv, pt = m.predict_proba(Xv), m.predict_proba(Xt)
                print(
                    f"{kind:5s} {transform:10s} {seed:4d}  {average_precision_score(yv, pv):.3f}   "
                    f"{average_precision_score(yt, pt):.3f}    {pt.mean() / yt.mean():5.2f}"
                    f"                         {fit:5.1f}"
                )


if __name__ == "__main__":
    main()
