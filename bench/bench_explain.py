"""Benchmark: single-charge score + explanation latency of the GBDT on the default feature set.

A synthetic world is generated and backfilled, a GBDT is trained on it (fraud task, short horizon), then each
of the world's last ``--timed`` charges (in time order: their features have the earlier charges as history)
is scored and explained one at a time, as the decision service will: `predict_one`
(calibrated probability) and `explain_one` (top-3 reasons as text; path contributions by default, exact
TreeSHAP with `"explanations": "shap"`). The temporary workspace is deleted at exit unless ``--keep``.
Usage:

    .venv/bin/python bench/bench_explain.py           # 100k charges, 60 days, 5,000 timed, 200 trees
    .venv/bin/python bench/bench_explain.py --charges 300000 --timed 20000
    .venv/bin/python bench/bench_explain.py --gbdt '{}' --gbdt '{"explanations": "shap"}'   # both methods
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from machine import describe  # bench/machine.py
from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set
from payfm.features.definitions import FeatureSet
from payfm.synth import WorldConfig, generate_world
from payfm.training.tasks import task
from payfm.training.trainer import TrainConfig, TrainResult, train


def _pct(xs: list[float]) -> str:
    a = np.asarray(xs) * 1e6
    return f"p50 {np.percentile(a, 50):7.0f} us  p99 {np.percentile(a, 99):7.0f} us  max {a.max():7.0f} us"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--charges", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--timed", type=int, default=5_000)
    ap.add_argument("--horizon-days", type=float, default=20)
    ap.add_argument(
        "--gbdt",
        action="append",
        default=None,
        help="GBDT parameters as JSON, repeatable to compare, e.g. --gbdt '{\"num_leaves\": 15}'",
    )
    ap.add_argument(
        "--trees",
        type=int,
        default=200,
        help="boosting rounds, all trained (early stopping off): the latency grows with the trees, and early "
        "stopping on a small world keeps a handful; 0 leaves n_estimators and early_stopping to --gbdt "
        "(default 200, the trees bench_serving.py serves)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary workspace (its path is printed)")
    args = ap.parse_args()
    print(f"# {describe()}", flush=True)

    root = Path(tempfile.mkdtemp(prefix="payfm-bench-explain-"))
    try:
        ws = Workspace.open(root, create=True)
        t0 = time.perf_counter()
        ws.write_stream(generate_world(WorldConfig(charges=args.charges, days=args.days, seed=0)), "replace")
        fs = default_set()
        for text in args.gbdt or ["{}"]:
            fixed = {"n_estimators": args.trees, "early_stopping": 0} if args.trees else {}
            params = fixed | json.loads(text)
            cfg = TrainConfig(
                horizon_days=args.horizon_days, val_days=10, test_days=10, gap_days=3, params={"gbdt": params}
            )
            [res] = train(ws, "gbdt", task("fraud"), fs, cfg)
            print(f"--- GBDT {params or 'default parameters'}")
            _time(ws, fs, res, args.timed, t0)
    finally:
        if args.keep:
            print(f"workspace kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _time(ws: Workspace, fs: FeatureSet, res: TrainResult, timed: int, t0: float) -> None:
    model = res.model
    print(
        f"world + backfill + training: {time.perf_counter() - t0:.1f} s; {len(fs.names)} features, "
        f"{model.best_iteration_} trees, val AP {res.metrics['val_ap']:.3f}"  # type: ignore[attr-defined]
    )
    from payfm.features.training_set import load_backfill
    from payfm.training.data import feature_matrix

    backfill = load_backfill(ws, fs).sort_by([("created", "ascending"), ("charge_id", "ascending")])
    X = feature_matrix(backfill.slice(max(backfill.num_rows - timed, 0)), fs.names)  # the last charges
    vectors: list[list[float | None]] = [[None if np.isnan(v) else float(v) for v in row] for row in X]
    for v in vectors[:200]:  # warm-up
        model.predict_one(v)
        model.explain_one(v)
    score, explain, both = [], [], []
    for v in vectors:
        t = time.perf_counter()
        model.predict_one(v)
        t1 = time.perf_counter()
        reasons = model.explain_one(v, top_k=3)
        _ = [r.text for r in reasons]
        t2 = time.perf_counter()
        score.append(t1 - t)
        explain.append(t2 - t1)
        both.append(t2 - t)
    print(f"{platform.processor() or platform.machine()}, {len(vectors):,} charges one at a time:")
    print(f"  predict_one                 {_pct(score)}")
    print(f"  explain_one (top 3, text)   {_pct(explain)}")
    print(f"  score + explain             {_pct(both)}")
    print(f"  example reasons: {[r.text for r in model.explain_one(vectors[-1])]}")


if __name__ == "__main__":
    main()
