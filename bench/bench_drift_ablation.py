"""Benchmark: what the features that drift are worth to the GBDT on the demo's split. Fits the GBDT on every
feature, without the features whose drift from the training window to the validation period is major (PSI
>= 0.25, chosen without looking at the test period), and without the all-time features (``*_all`` and the
times since a first charge), and gives the validation and test average precision of each (raw scores, the
mean of three seeds).

Runs on a workspace that `make demo` (or `payfm generate` + `payfm features backfill`) filled.

    .venv/bin/python bench/bench_drift_ablation.py                      # ./payfm-workspace
    .venv/bin/python bench/bench_drift_ablation.py --workspace ws --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import average_precision_score

from demo_split import demo_split  # bench/demo_split.py
from machine import describe  # bench/machine.py
from payfm.evaluation.drift import feature_drift
from payfm.training.models import model_class


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default="payfm-workspace")
    ap.add_argument("--seeds", default="0,1,2", help="GBDT seeds, comma-separated")
    args = ap.parse_args()
    print(describe())
    s = demo_split(args.workspace)
    X, y, w, Xv, yv, Xt, yt, names = s.X, s.y, s.w, s.Xv, s.yv, s.Xt, s.yt, s.names
    drift = feature_drift(s.X_train_all.astype(np.float64), Xv.astype(np.float64), names)
    major = {d.feature for d in drift if d.level == "major"}
    print(s.describe())
    print(f"major drift from the training window to the validation period: {len(major)} of {len(names)}")
    variants = {
        "every feature": names,
        "without major drift (train -> val)": [n for n in names if n not in major],
        "without all-time features": [n for n in names if not (n.endswith("_all") or "since_first" in n)],
    }
    seeds = [int(s) for s in args.seeds.split(",")]
    for label, cols in variants.items():
        idx = [names.index(c) for c in cols]
        t0 = time.perf_counter()
        vals, tests = [], []
        for seed in seeds:
            m = model_class("gbdt")(seed=seed).fit(X[:, idx], y, w, Xv[:, idx], yv)
            vals.append(average_precision_score(yv, m.predict_raw(Xv[:, idx])))
            tests.append(average_precision_score(yt, m.predict_raw(Xt[:, idx])))
        each = ", ".join(f"{t:.3f}" for t in tests)
        print(
            f"{label:36s} {len(cols):4d} features  val AP {np.mean(vals):.3f}  test AP {np.mean(tests):.3f} "
            f"({each}; {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
