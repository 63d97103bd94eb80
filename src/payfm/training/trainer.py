"""The trainer: any task, any model kind, one protocol.

Split by time with a label-delay gap, train on mature labels (negatives optionally downsampled with weights),
tune on the validation period, calibrate on it, and report validation and test metrics.

Example (on a workspace with charges; see docs/models.md):
    >>> # [result] = train(ws, "gbdt", task("fraud"), default_set(), TrainConfig(horizon_days=60))
    >>> # register_result(Registry(ws), result, default_set()).ref  -> 'fraud-gbdt@1'
"""

from __future__ import annotations

import numbers
import os
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace, opened
from payfm.features.definitions import FeatureSet
from payfm.registry.store import ModelVersion, Registry
from payfm.training.calibration import METHODS
from payfm.training.data import Progress, TaskData, task_data
from payfm.training.explain import templates
from payfm.training.models import Model, model_class
from payfm.training.models.base import MAX_TRAIN_SEED
from payfm.training.models.params import check_params
from payfm.training.splits import (
    Split,
    check_days,
    downsample_negatives,
    finite_number,
    prequential_splits,
    time_split,
)
from payfm.training.tasks import Task
from payfm.training.tuning import average_precision, tune

# numpy's generators take [0, 2**32 - 1]: the range of evaluation's bootstrap seed (payfm evaluate --seed).
# Training's is narrower, MAX_TRAIN_SEED (2**31 - 1: LightGBM's seed is a 32-bit signed integer).
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``horizon_days`` None uses the task's horizon (fraud: 120 days, which leaves no mature
    negative in a world shorter than that: use e.g. 60 on the 120-day demo world)."""

    horizon_days: float | None = None
    val_days: float = 14
    test_days: float = 14
    gap_days: float = 7  # label delay: nothing from the gap before validation and before test is used
    # The log's first days, left out of training: every card and merchant is new to the log there and the
    # feature windows are not full (splits.time_split). 0: train from the first charge.
    warm_up_days: float = 0
    downsample: float = 1.0  # share of training negatives kept (weighted 1/share)
    trials: int = 0  # Optuna trials on the validation period; 0 keeps the default parameters
    calibration: str = "isotonic"
    seed: int = 0
    as_of: datetime | None = None  # when labels are read; None = the end of the log
    # True: the timeline ends one horizon before the end of the log, so test labels are all mature (rows
    # after it are too recent to label and counted); False: test is the latest period, mostly immature.
    mature_test: bool = True
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> fixed parameters
    # A foundation-model checkpoint whose outputs (``fm_outputs``: embedding, surprise) the models take after
    # the features; it must have been pretrained on charges before the validation period. None: features only.
    # A path (a Path is stored as text); a relative one not found from the current directory is the
    # workspace's (``fm/early``, as the registry records it).
    foundation_model: str | None = None
    fm_outputs: tuple[str, ...] = ("embedding",)
    fm_workers: int = 1  # threads computing the foundation model's outputs in batch
    # "authorized": fit (training and validation rows) on authorized charges only. Declined and blocked
    # charges never get a dispute or an early fraud warning, so their label 0 is unknown rather than genuine:
    # counted as negatives they teach the model that card-testing bursts, mostly declined, are harmless.
    # Test rows are every charge either way. "all": every charge of the task (the default).
    train_on: str = "all"

    def __post_init__(self) -> None:
        """Refuse a value no training can use, naming the field, before any work (the command line refuses
        them as it parses; this covers the Python API). NaN compares false with every bound: refused too."""
        if self.horizon_days is not None:
            check_days(self.horizon_days, "The 'horizon_days' of TrainConfig")
        check_days(self.val_days, "The 'val_days' of TrainConfig")
        check_days(self.test_days, "The 'test_days' of TrainConfig")
        check_days(self.gap_days, "The 'gap_days' of TrainConfig", zero=True)
        check_days(self.warm_up_days, "The 'warm_up_days' of TrainConfig", zero=True)
        share = self.downsample
        if not (finite_number(share) and 0 < share <= 1):
            raise ConfigError(
                f"The 'downsample' of TrainConfig (the share of training negatives kept) must be a number in "
                f"(0, 1]. Got {share!r}."
            )
        for name, low, high in (("trials", 0, None), ("fm_workers", 1, None), ("seed", 0, MAX_TRAIN_SEED)):
            v = getattr(self, name)
            integer = isinstance(v, numbers.Integral) and not isinstance(v, bool)
            if not (integer and int(v) >= low and (high is None or int(v) <= high)):
                expected = f">= {low}" if high is None else f"in [{low}, {high}]"
                raise ConfigError(f"The '{name}' of TrainConfig must be an integer {expected}. Got {v!r}.")
        for name, choices in (("calibration", METHODS), ("train_on", TRAIN_ON)):
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"The '{name}' of TrainConfig must be one of {', '.join(choices)}. "
                    f"Got {getattr(self, name)!r}."
                )
        self._check_types()

    def _check_types(self) -> None:
        """The fields a wrong type reached far from (an AttributeError about 'tzinfo' in train, a text
        read as True): refused here, naming the field."""
        if self.as_of is not None and not (
            isinstance(self.as_of, datetime) and self.as_of.tzinfo is not None
        ):
            raise ConfigError(
                "The 'as_of' of TrainConfig must be a datetime with a time zone (datetime(2026, 2, 1, "
                f"tzinfo=UTC)). Got {self.as_of!r}."
            )
        if not isinstance(self.mature_test, bool):
            raise ConfigError(
                f"The 'mature_test' of TrainConfig must be True or False. Got {self.mature_test!r}."
            )
        fm = self.foundation_model
        if isinstance(fm, os.PathLike) and isinstance(os.fspath(fm), str):
            # a Path, as embed, Registry.register and OnlineEmbedder.load take it: stored as text
            object.__setattr__(self, "foundation_model", fm := os.fspath(fm))
        if fm is not None and not isinstance(fm, str):
            raise ConfigError(
                "The 'foundation_model' of TrainConfig must be a checkpoint's path as text or a Path (e.g. "
                f"'payfm-workspace/fm/early', or 'fm/early' in the workspace) or None. Got {fm!r}."
            )
        outputs = self.fm_outputs
        if not (isinstance(outputs, tuple | list) and all(isinstance(o, str) for o in outputs)):
            raise ConfigError(
                "The 'fm_outputs' of TrainConfig must be a tuple of output names, e.g. ('embedding', "
                f"'surprise'). Got {outputs!r}."
            )
        kinds = self.params if isinstance(self.params, dict) else None
        if kinds is None or not all(isinstance(k, str) and isinstance(p, dict) for k, p in kinds.items()):
            raise ConfigError(
                "The 'params' of TrainConfig must map a model kind to its parameters, e.g. {'gbdt': "
                f"{{'num_leaves': 15}}}}. Got {self.params!r}."
            )
        for kind in kinds:
            model_class(kind)  # a ConfigError naming the kinds there are

    def horizon(self, task: Task) -> timedelta:
        return task.horizon if self.horizon_days is None else timedelta(days=self.horizon_days)


@dataclass
class TrainResult:
    model: Model
    kind: str
    task: str
    params: dict[str, Any]
    metrics: dict[str, float]
    split: dict[str, Any]
    window: dict[str, str]  # ISO bounds of the train/val/test periods
    horizon_days: float
    seconds: float
    foundation_model: str | None = None  # the checkpoint whose outputs the model takes (None: features only)
    fm_outputs: tuple[str, ...] = ()
    fm_hash: str | None = None  # that checkpoint's content hash when its outputs were computed
    # what else shaped the fit: seed, calibration, share of negatives kept, which charges, tuning trials
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("model")
        return d


def hindsight(data: TaskData, split: Split) -> dict[str, list[int]]:
    """Per fitted part (``train``, ``val``): ``[late, positives]``, the part's positives whose label came only
    after the next part began, and all its positives. The labels are read as of the end of the log, not of
    the next part's start (docs/models.md, "Not modelled"): the late ones are labels a model fitted then would
    not have had (a review measured 27% of the training frauds and 31% of the validation ones on a 3-day
    gap), so `payfm train` says how many."""
    label_us = pc.cast(data.table["label_time"], "int64").to_numpy(zero_copy_only=False).astype(np.float64)
    out = {}
    for part, following in (("train", "val"), ("val", "test")):
        idx = getattr(split, part)
        positive = idx[data.y[idx] == 1]
        times = label_us[positive]
        late = int(np.count_nonzero(~np.isnan(times) & (times >= split.bounds[following][0])))
        out[part] = [late, len(positive)]
    return out


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat()


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def evaluate_rows(model: Model, X: np.ndarray, y: np.ndarray, prefix: str) -> dict[str, float]:
    """Average precision, ROC AUC, base rate and row count of ``model`` on labelled rows. On the validation
    period (``prefix`` "val") of the raw scores: the calibration is fitted there, and an isotonic map's ties,
    learned on those very rows, flattered its ranking metrics; the test period's are of the calibrated
    scores, the ones served."""
    score = model.predict_raw if prefix == "val" else model.predict_proba
    p = score(X) if len(X) else np.zeros(0)
    return {
        f"{prefix}_ap": average_precision(y, p) if len(X) else float("nan"),
        f"{prefix}_auc": _auc(y, p) if len(X) else float("nan"),
        f"{prefix}_rows": float(len(y)),
        f"{prefix}_positives": float(y.sum()),
    }


TRAIN_ON = ("all", "authorized")


def rows_of(X: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``X[idx]``, as a view when ``idx`` is a run of consecutive rows (a time split's part usually is): at
    10M rows a copy of the training part costs gigabytes."""
    if len(idx) and int(idx[-1]) - int(idx[0]) == len(idx) - 1 and bool((np.diff(idx) == 1).all()):
        return X[int(idx[0]) : int(idx[-1]) + 1]
    taken: np.ndarray = X[idx]
    return taken


def fit_rows(data: TaskData, idx: np.ndarray, config: TrainConfig) -> np.ndarray:
    """The rows of ``idx`` a model fits on under ``config.train_on``: all, or the authorized charges."""
    if config.train_on not in TRAIN_ON:
        raise ConfigError(f"'train_on' must be one of {', '.join(TRAIN_ON)}. Got {config.train_on!r}.")
    if config.train_on == "all":
        return idx
    authorized = np.asarray(pc.equal(data.table["outcome"], "authorized"), dtype=bool)
    kept: np.ndarray = idx[authorized[idx]]
    return kept


def _some_rows(task: Task, part: str, idx: np.ndarray, config: TrainConfig) -> None:
    """Refuse a ``train_on`` that leaves ``part`` without rows (a task whose rows it does not keep)."""
    if len(idx) == 0 and config.train_on != "all":
        raise ConfigError(
            f"Task '{task.name}': --train-on {config.train_on} leaves no {part} rows (the task's rows "
            "are not authorized charges); use --train-on all."
        )


def _us(t: datetime | None) -> int:
    """``t`` in microseconds since the epoch (0 for None)."""
    if t is None:
        return 0
    epoch = datetime(1970, 1, 1, tzinfo=UTC if t.tzinfo is not None else None)
    return (t - epoch) // timedelta(microseconds=1)


def labels_now_us(ws: Workspace, task: Task, data: TaskData, config: TrainConfig) -> int:
    """When the labels are read (us): ``config.as_of``, else "now" in the labels' own sense (Task.now): for
    fraud the log's latest event, an outcome included (an export's chargebacks run months past its last
    charge, and every charge a horizon before them has its final label); for retries the last charge. The
    registry records it (``training.as_of``): the log grows, and only the same as-of rebuilds the model."""
    latest = max(int(data.created_us.max()), _us(task.now_of(ws))) + 1
    if config.as_of is None:
        return latest
    as_of = _us(config.as_of)
    if as_of > latest:  # later than anything known: labels still to come would be read as final
        raise ConfigError(
            f"The as-of of the labels (--as-of) must be at most 1 microsecond after the log's latest event "
            f"({_iso(latest - 1)}; the default, recorded by a model trained without --as-of, is "
            f"{_iso(latest)}): later, disputes still to come would read as none. Got "
            f"{config.as_of.isoformat()}."
        )
    if as_of <= int(data.created_us.min()):
        raise ConfigError(
            f"The as-of of the labels (--as-of) must be after the log's first charge "
            f"({_iso(int(data.created_us.min()))}). Got {config.as_of.isoformat()}."
        )
    return as_of


def prepare(
    ws: Workspace, task: Task, fset: FeatureSet, config: TrainConfig, progress: Progress | None = None
) -> tuple[TaskData, Split]:
    """The task's data and its time split (mature train/val rows, every test row)."""
    data, split, _ = _prepared(ws, task, fset, config, progress)
    return data, split


def _prepared(
    ws: Workspace, task: Task, fset: FeatureSet, config: TrainConfig, progress: Progress | None
) -> tuple[TaskData, Split, int]:
    """:func:`prepare`, and the as-of (us) the labels were read at and the split placed by."""
    data, now_us, end_us = _timeline(ws, task, fset, config, progress)
    split = time_split(
        data.created_us,
        data.mature,
        val_days=config.val_days,
        test_days=config.test_days,
        gap_days=config.gap_days,
        end_us=end_us,
        warm_up_days=config.warm_up_days,
        as_of_us=None if config.as_of is None else now_us,
    )
    split = replace(split, train=fit_rows(data, split.train, config), val=fit_rows(data, split.val, config))
    for part in ("train", "val"):
        idx = getattr(split, part)
        _some_rows(task, part, idx, config)
        if len(np.unique(data.y[idx])) < 2:
            late = _late_labels(ws, task, config.horizon(task)) if not data.y[idx].any() else ""
            raise ConfigError(
                f"Task '{task.name}': the {part} period needs mature positives and negatives. "
                f"Got {int(data.y[idx].sum())} positives in {len(idx)} mature rows "
                f"({split.immature[part]} immature); try "
                + (late or (f"a longer --val-days (now {config.val_days:g}), " if part == "val" else ""))
                + ("" if late else "a shorter --horizon-days or a longer event log.")
            )
    return data, split, now_us


def _timeline(
    ws: Workspace, task: Task, fset: FeatureSet, config: TrainConfig, progress: Progress | None
) -> tuple[TaskData, int, int]:
    """The task's data, the as-of (us) its labels are read at, and where the timeline ends: at the as-of
    (charges created later did not exist then), a horizon before it when the test period must be mature."""
    data = task_data(ws, task, fset, as_of=config.as_of, horizon=config.horizon(task), progress=progress)
    if len(data.created_us) == 0:
        raise ConfigError(f"Task '{task.name}' has no labelled rows in this workspace.")
    now_us = labels_now_us(ws, task, data, config)
    end_us = now_us - int(config.horizon(task).total_seconds() * 1e6) if config.mature_test else now_us
    return data, now_us, end_us


def _late_labels(ws: Workspace, task: Task, horizon: timedelta) -> str:
    """A hint when the fraud task's labels arrive later than ``horizon`` after their charge (an export's
    `delay: 30d` under --horizon-days 20): none of them counts, and a longer horizon is what helps."""
    if task.name != "fraud":
        return ""
    from payfm.events.schema import FRAUD_OUTCOMES_SQL

    with ws.connect() as con:
        [(share, p90)] = con.execute(
            f"""SELECT avg((o.created - c.created > INTERVAL ({horizon.total_seconds()}) SECOND)::INT),
                       quantile_cont(epoch(o.created - c.created), 0.9)
                FROM ({FRAUD_OUTCOMES_SQL}) o JOIN charges c USING (charge_id)"""
        ).fetchall()
    if share is None or share < 0.5:
        return ""
    days = int(np.ceil(p90 / 86_400))
    return (
        f"a longer --horizon-days: {share:.0%} of the fraud labels arrive more than "
        f"{horizon / timedelta(days=1):g} days "
        f"after their charge, and no label later than the horizon counts (--horizon-days {days} counts 90% "
        "of them)."
    )


def fit_on_split(
    kind: str,
    data: TaskData,
    split: Split,
    config: TrainConfig,
    fset: FeatureSet,
    task: Task,
    progress: Progress | None = None,
) -> TrainResult:
    """Tune (optionally), fit and calibrate one model kind on a prepared split."""
    t0 = time.perf_counter()
    tr = split.train
    w: np.ndarray | None = None
    if config.downsample < 1.0:
        keep, w = downsample_negatives(data.y[tr], config.downsample, config.seed)
        tr = tr[keep]
    X, y = rows_of(data.X, tr), data.y[tr]
    Xv, yv = rows_of(data.X, split.val), data.y[split.val]
    params = dict(config.params.get(kind, {}))
    if config.trials > 0:

        def tick(done: int, total: int) -> None:
            if progress:
                progress(f"{kind}: tuning", done, total)

        params, _ = tune(
            kind, X, y, w, Xv, yv, trials=config.trials, base_params=params, seed=config.seed, progress=tick
        )
    if progress:
        progress(f"{kind}: fitting", 0, 1)
    model = model_class(kind)(calibration=config.calibration, seed=config.seed, **params)
    model.fit(X, y, w, Xv, yv, feature_names=data.feature_names, templates=templates(fset))
    metrics = evaluate_rows(model, Xv, yv, "val")
    test_mature = split.test[data.mature[split.test]]
    metrics |= evaluate_rows(model, rows_of(data.X, test_mature), data.y[test_mature], "test")
    metrics["test_immature"] = float(len(split.test) - len(test_mature))
    if progress:
        progress(f"{kind}: fitting", 1, 1)
    return TrainResult(
        model=model,
        kind=kind,
        task=task.name,
        params=params,
        metrics=metrics,
        split={
            **split.summary(),
            "train_on": config.train_on,
            "fitted": len(tr),
            "hindsight": hindsight(data, split),
        },
        window={
            f"{k}_{e}": _iso(v) for k, (s, t) in split.bounds.items() for e, v in (("start", s), ("end", t))
        },
        horizon_days=config.horizon(task).total_seconds() / 86400,
        seconds=time.perf_counter() - t0,
        foundation_model=config.foundation_model,
        fm_outputs=tuple(config.fm_outputs) if config.foundation_model else (),
        fm_hash=data.fm_hash if config.foundation_model else None,
        settings={
            "seed": config.seed,
            "calibration": config.calibration,
            "downsample": config.downsample,
            "train_on": config.train_on,
            "trials": config.trials,
            "as_of": None if config.as_of is None else config.as_of.isoformat(),
            "mature_test": config.mature_test,
            "warm_up_days": config.warm_up_days,
        },
    )


def train(
    ws: Workspace,
    kinds: list[str] | str,
    task: Task,
    fset: FeatureSet,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
) -> list[TrainResult]:
    """Train each model kind on ``task`` over the backfill of ``fset``; one result per kind."""
    ws = opened(ws, "train")
    _check_arguments(task, fset, config)  # (ws: opened() above)
    cfg = _checked(in_workspace(config or TrainConfig(), ws), fset)
    names = [kinds] if isinstance(kinds, str) else list(kinds)
    for k in names:
        model_class(k)
    data, split, now_us = _prepared(ws, task, fset, cfg, progress)
    # the as-of the labels were read at, recorded (a later event moves "now", and with it the window)
    cfg = replace(cfg, as_of=datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=now_us))
    if cfg.foundation_model is not None:
        if progress:
            progress("foundation-model outputs", 0, 1)
        data = with_fm_inputs(ws, data, split, cfg)
        if progress:
            progress("foundation-model outputs", 1, 1)
    out = []
    for k in names:
        out.append(fit_on_split(k, data, split, cfg, fset, task, progress))
    return out


def _check_arguments(task: object, fset: object, config: object) -> None:
    """A wrong type among train's arguments, named (it failed far inside: "'str' object has no attribute
    'key'")."""
    for name, value, want, example in (
        ("task", task, Task, "payfm.training.tasks.task('fraud')"),
        ("fset", fset, FeatureSet, "payfm.features.catalog.feature_set('default')"),
        ("config", config, (TrainConfig, type(None)), "TrainConfig(horizon_days=60)"),
    ):
        if not isinstance(value, want):
            raise ConfigError(
                f"train's '{name}' must be what {example} gives. Got a {type(value).__name__}: {value!r:.60}."
            )


def in_workspace(config: TrainConfig, ws: Workspace) -> TrainConfig:
    """``config`` with its ``foundation_model`` found: a relative path that is nothing from the current
    directory is taken in ``ws`` (``fm/early``: where the registry records a checkpoint of the workspace,
    relative to it); a ConfigError names both places when neither holds anything."""
    fm = config.foundation_model
    if fm is None or Path(fm).is_absolute() or Path(fm).exists():
        return config
    inside = ws.root / fm
    if inside.exists():
        return replace(config, foundation_model=str(inside))
    raise ConfigError(
        f"The 'foundation_model' of TrainConfig must be a checkpoint's path. Got {fm!r}, which is neither in "
        f"the current directory ('{Path.cwd() / fm}') nor in the workspace ('{inside}'). Pretrain it first "
        "(`payfm fm pretrain --name NAME` writes fm/NAME in the workspace)."
    )


def _checked(config: TrainConfig, fset: FeatureSet) -> TrainConfig:
    """``config`` with its models' parameters checked and in their types, before any work (a ConfigError
    names the first unknown parameter or wrong value; column indices are checked against ``fset``)."""
    config = replace(config, params=checked_params(config.params, fset))
    if "gbdt" in config.params:  # one value per column: the set's, then the foundation model's inputs
        from payfm.training.models.gbdt import check_per_column

        width = len(fset.names)
        if config.foundation_model is not None:
            from payfm.fm.identity import check_outputs, checkpoint_meta, input_names

            meta = checkpoint_meta(config.foundation_model)
            width += len(input_names(meta, check_outputs(config.fm_outputs)))
        check_per_column(config.params["gbdt"], width)
    return config


def checked_params(params: dict[str, dict[str, Any]], fset: FeatureSet) -> dict[str, dict[str, Any]]:
    """``params`` (kind -> name -> value) checked and in their types (:func:`check_params`), the column
    indices of ``lr.categorical`` checked against ``fset``; a ConfigError names the first that is wrong."""
    params = {kind: check_params(kind, p) for kind, p in params.items()}
    n = len(fset.names)
    for j in params.get("lr", {}).get("categorical", ()):
        if j >= n:
            raise ConfigError(
                f"lr parameter 'categorical': expected indices of feature columns, 0 to {n - 1} (feature set "
                f"'{fset.name}' has {n} features: `payfm features list --set {fset.name}` lists them in "
                f"order). Got {j}."
            )
    return params


def with_fm_inputs(ws: Workspace, data: TaskData, split: Split, config: TrainConfig) -> TaskData:
    """``data`` with the foundation model's outputs after the features (columns ``fm.emb_*``,
    ``fm.surprise_*``), each charge's from the charges before it. Refused when the checkpoint was pretrained
    on charges of the validation period or later: its outputs would carry what validation and test measure."""
    return _fm_columns(ws, data, split.bounds["val"][0], "the validation period", config)


def _fm_columns(ws: Workspace, data: TaskData, start_us: int, period: str, config: TrainConfig) -> TaskData:
    """``data`` with the checkpoint's outputs appended; refused unless its weights saw only charges before
    ``start_us``, where ``period`` (what is measured) starts."""
    from payfm.fm.embed import outputs_for
    from payfm.fm.identity import check_outputs, checkpoint_hash, checkpoint_meta, input_names, seen_until

    assert config.foundation_model is not None
    ckpt = config.foundation_model
    meta = checkpoint_meta(ckpt)
    outputs = check_outputs(config.fm_outputs)
    until = seen_until(meta)
    if until is None or until > start_us:
        con = ws.connect()
        try:
            before = f"CASE WHEN epoch_us(created) < {int(start_us)} THEN 1.0 ELSE 0.0 END"
            row = con.execute(f"SELECT avg({before}) FROM charges").fetchone()
        finally:
            con.close()
        frac = int((row[0] if row and row[0] is not None else 0.0) * 100) / 100
        upto = _iso(until) if until is not None else "the end of the log"
        raise ConfigError(
            f"The foundation model '{ckpt}' was pretrained on charges up to {upto}, after {period} "
            f"starts ({_iso(start_us)}): its outputs would carry what {period} measures. "
            f"Pretrain it on earlier charges, e.g. `payfm fm pretrain --name {Path(ckpt).name} --until-frac "
            f"{frac:.2f} --fresh` (the share of charges before {period})."
        )
    digest = checkpoint_hash(ckpt)  # (a pretraining still running may save it again meanwhile)
    extra = outputs_for(
        ws, ckpt, data.table["charge_id"].combine_chunks(), outputs, workers=config.fm_workers
    )
    if checkpoint_hash(ckpt) != digest:
        raise ConfigError(
            f"The foundation model '{ckpt}' changed while its outputs were computed (a pretraining of it is "
            "still running?): train again once it is done."
        )
    names = [*data.feature_names, *input_names(meta, outputs)]
    X = np.hstack([data.X, extra.astype(np.float32)])
    return replace(data, X=X, feature_names=names, fm_hash=digest)


def register_result(
    reg: Registry, result: TrainResult, fset: FeatureSet, name: str | None = None
) -> ModelVersion:
    """Register a trained model as a candidate ``<task>-<kind>`` (``<task>-<kind>-fm`` on foundation-model
    inputs, registered with its checkpoint) with its window, metrics and horizon."""
    fm = result.foundation_model
    return reg.register(
        result.model,
        name=name or f"{result.task}-{result.kind}{'-fm' if fm else ''}",
        task=result.task,
        fset=fset,
        data_window=result.window,
        params=result.params,
        metrics=result.metrics,
        extra={
            "horizon_days": result.horizon_days,
            "split": result.split,
            "train_seconds": result.seconds,
            "training": result.settings,
            # what the fit settled on beyond its parameters (the MLP's batch size under its default)
            **({"fitted": facts} if (facts := result.model.fitted_facts()) else {}),
        },
        foundation_model=fm,
        fm_outputs=result.fm_outputs or ("embedding",),
        fm_hash=result.fm_hash,
    )


def prequential(
    ws: Workspace,
    kind: str,
    task: Task,
    fset: FeatureSet,
    config: TrainConfig | None = None,
    weeks: int = 4,
) -> list[dict[str, Any]]:
    """Rolling weekly evaluation: for each of the last ``weeks`` weeks, the model ``train`` would have fitted
    at the week's start, scored on the week. The weeks end where ``train``'s test period ends (a label
    horizon before the labels' as-of: every label of every week is mature; at the as-of with
    ``mature_test=False``); each week's split is :func:`~payfm.training.splits.prequential_splits`' and its
    fit is ``train``'s (``train_on``, downsampling, trials, calibration and early stopping on the week's
    validation period). One row per week, oldest first: ``week_start``, ``week_end`` and the fit's
    ``val_*`` and ``test_*`` metrics.

    With ``config.foundation_model`` every fit also takes the checkpoint's outputs (``config.fm_outputs``);
    the checkpoint must have been pretrained on charges before the first week's validation period only.
    """
    ws = opened(ws, "prequential")
    _check_arguments(task, fset, config)
    cfg = _checked(in_workspace(config or TrainConfig(), ws), fset)
    model_class(kind)
    data, now_us, end_us = _timeline(ws, task, fset, cfg, None)
    splits = prequential_splits(
        data.created_us,
        data.mature,
        weeks=weeks,
        end_us=end_us,
        val_days=cfg.val_days,
        gap_days=cfg.gap_days,
        warm_up_days=cfg.warm_up_days,
    )
    cfg = replace(cfg, as_of=datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=now_us))
    if cfg.foundation_model is not None:
        first_val = splits[0].bounds["val"][0]
        data = _fm_columns(ws, data, first_val, "the first prequential week's validation period", cfg)
    rows = []
    for split in splits:
        split = replace(split, train=fit_rows(data, split.train, cfg), val=fit_rows(data, split.val, cfg))
        start, end = split.bounds["test"]
        for part in ("train", "val"):
            idx = getattr(split, part)
            _some_rows(task, part, idx, cfg)
            if len(np.unique(data.y[idx])) < 2:
                raise ConfigError(
                    f"Task '{task.name}': the {part} period of the prequential week from {_iso(start)} needs "
                    f"mature positives and negatives. Got {int(data.y[idx].sum())} positives in {len(idx)} "
                    "mature rows; use fewer weeks, a longer --val-days or a shorter --horizon-days."
                )
        result = fit_on_split(kind, data, split, cfg, fset, task)
        rows.append({"week_start": _iso(start), "week_end": _iso(end), **result.metrics})
    return rows
