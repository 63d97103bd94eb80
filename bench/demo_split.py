"""The demo's training split (60-day label horizon, 14-day validation and test periods, negatives sampled at
10%), as matrices, for the benchmarks that fit models on it (bench_models.py, bench_drift_ablation.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set
from payfm.training.splits import downsample_negatives
from payfm.training.tasks import task
from payfm.training.trainer import TrainConfig, prepare, rows_of


@dataclass
class DemoSplit:
    names: list[str]
    X: np.ndarray  # training rows (downsampled) and their labels and weights
    y: np.ndarray
    w: np.ndarray
    Xv: np.ndarray  # validation
    yv: np.ndarray
    Xt: np.ndarray  # test rows with mature labels
    yt: np.ndarray
    X_train_all: np.ndarray  # every training row, before downsampling

    def describe(self) -> str:
        return (
            f"train {len(self.y):,} rows ({int(self.y.sum())} fraud), validation {len(self.yv):,}, "
            f"test {len(self.yt):,} mature"
        )


def demo_split(workspace: str) -> DemoSplit:
    """The split of ``make demo``'s models on ``workspace`` (filled by `make demo` or `payfm generate`)."""
    ws = Workspace.open(workspace)
    data, split = prepare(ws, task("fraud"), default_set(), TrainConfig(horizon_days=60, downsample=0.1))
    keep, w = downsample_negatives(data.y[split.train], 0.1, 0)
    tr, te = split.train[keep], split.test[data.mature[split.test]]
    return DemoSplit(
        list(data.feature_names),
        rows_of(data.X, tr),
        data.y[tr],
        w,
        rows_of(data.X, split.val),
        data.y[split.val],
        rows_of(data.X, te),
        data.y[te],
        rows_of(data.X, split.train),
    )
