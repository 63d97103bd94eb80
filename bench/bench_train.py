"""Benchmark: GBDT training time on N rows of the default feature set (target: 10M rows in <= 10 min).

Backfills a synthetic world of ``--charges`` charges (the expensive part, not timed as training), then trains
LightGBM on the first N rows for each N in ``--rows``. Rows beyond the world's size are the world's rows
repeated (say so when reporting: the trees then see duplicates, the cost per row and round is what is
measured). Fixed boosting rounds (``--rounds``, no early stopping) so runs of different sizes compare.

    .venv/bin/python bench/bench_train.py                              # 1M charges; 1M and 2M rows
    .venv/bin/python bench/bench_train.py --charges 200000 --rows 200000,1000000 --rounds 200
    .venv/bin/python bench/bench_train.py --charges 300000 --rows 2000000 --rounds 50 \
        --param force_col_wise=true                                    # LightGBM's lower-memory layout

Peak RSS is the process's so far (a second size prints the larger of both): compare sizes or parameters in
separate runs of one size each. The temporary workspace is
deleted at exit unless ``--keep``.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from machine import describe  # bench/machine.py
from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set
from payfm.features.training_set import build_training_set
from payfm.synth import WorldConfig, generate_world
from payfm.training.data import feature_matrix
from payfm.training.models.gbdt import GBDTModel
from payfm.training.models.params import check_params, parse_assignment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--charges", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=120)
    ap.add_argument("--rows", default="1000000,2000000")
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="a GBDT parameter (repeatable)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary workspace (its path is printed)")
    args = ap.parse_args()
    params = check_params("gbdt", {name: value for _, name, value in map(parse_assignment, args.param)})
    print(f"# {describe()}", flush=True)

    root = Path(tempfile.mkdtemp(prefix="payfm-bench-train-"))
    try:
        run(root, args, params)
    finally:
        if args.keep:
            print(f"workspace kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run(root: Path, args: argparse.Namespace, params: dict[str, object]) -> None:
    ws = Workspace.open(root, create=True)
    t0 = time.perf_counter()
    ws.write_stream(generate_world(WorldConfig(charges=args.charges, days=args.days, seed=0)), "replace")
    fs = default_set()
    _, table = build_training_set(ws, fs, horizon=timedelta(days=60))
    X = feature_matrix(table, fs.names).astype(np.float32)
    y = table["is_fraud"].to_numpy(zero_copy_only=False).astype(np.float64)
    print(
        f"world + backfill of {table.num_rows:,} charges x {len(fs.names)} features: "
        f"{time.perf_counter() - t0:.1f} s"
    )
    for n in (int(r) for r in args.rows.split(",")):
        reps = -(-n // len(X))
        Xn = np.tile(X, (reps, 1))[:n] if reps > 1 else X[:n]
        yn = np.tile(y, reps)[:n]
        t = time.perf_counter()
        m = GBDTModel(
            **{"n_estimators": args.rounds, "min_child_samples": 200, **params}, calibration="none"
        ).fit(Xn, yn, feature_names=fs.names)
        dt = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(
            f"GBDT {n:>11,} rows x {len(fs.names)} features, {m.best_iteration_} rounds: {dt:7.1f} s "
            f"({dt / args.rounds * 1000:.0f} ms/round; the process's peak RSS so far {rss:.1f} GB)"
            + ("  [rows repeated from the world]" if reps > 1 else "")
            + (f"  {params}" if params else "")
        )


if __name__ == "__main__":
    main()
