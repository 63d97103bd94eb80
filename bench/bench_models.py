"""Benchmark: each model kind's test average precision on the demo's split, with its defaults and the
settings they replaced (the LR's and MLP's raw inputs, the forest's unbalanced classes), on raw scores,
calibrated (centred isotonic, payfm's) and through a plain isotonic step map (the calibration before
2026-12-06).

Runs on a workspace that `make demo` (or `payfm generate` + `payfm features backfill`) filled; the split is
the demo's (60-day label horizon, 14-day validation and test periods, negatives sampled at 10%).

    .venv/bin/python bench/bench_models.py                              # ./payfm-workspace, seed 0
    .venv/bin/python bench/bench_models.py --workspace ws --seeds 0,1 --kinds rf,gbdt
"""

from __future__ import annotations

import argparse
import time

from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score

from demo_split import demo_split  # bench/demo_split.py
from machine import describe  # bench/machine.py
from payfm.training.models import model_class

VARIANTS = {
    "lr": [("default (symlog)", {}), ("transform=none", {"transform": "none"})],
    "mlp": [("default (symlog)", {}), ("transform=none", {"transform": "none"})],
    "rf": [("default (balanced)", {}), ("class_weight=None", {"class_weight": None})],
    "gbdt": [("default", {})],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default="payfm-workspace")
    ap.add_argument("--seeds", default="0", help="training seeds, comma-separated")
    ap.add_argument("--kinds", default="lr,rf,gbdt,mlp")
    args = ap.parse_args()
    print(describe())
    s = demo_split(args.workspace)
    X, y, w, Xv, yv, Xt, yt = s.X, s.y, s.w, s.Xv, s.yv, s.Xt, s.yt
    print(s.describe())
    print(
        "kind  variant              seed  val AP (raw)  test AP: raw  calibrated  step map  mean/rate  fit s"
    )
    one_thread = {"rf": {"n_jobs": 1}, "gbdt": {"num_threads": 1}}
    for kind in args.kinds.split(","):
        for name, params in VARIANTS[kind]:
            for seed in (int(s) for s in args.seeds.split(",")):
                t0 = time.perf_counter()
                m = model_class(kind)(seed=seed, **one_thread.get(kind, {}), **params).fit(X, y, w, Xv, yv)
                fit = time.perf_counter() - t0
                rv, rt, pt = m.predict_raw(Xv), m.predict_raw(Xt), m.predict_proba(Xt)
                step = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(rv, yv).predict(rt)
                ap_ = average_precision_score
                ratio = pt.mean() / yt.mean()
                print(
                    f"{kind:5s} {name:20s} {seed:4d}  {ap_(yv, rv):.3f}         {ap_(yt, rt):.3f}    "
                    f"{ap_(yt, pt):.3f}       {ap_(yt, step):.3f}     {ratio:5.2f}  {fit:6.1f}"
                )


if __name__ == "__main__":
    main()
