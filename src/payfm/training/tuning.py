"""Hyperparameter search on the validation period with Optuna: maximize validation average precision."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from payfm.errors import ConfigError
from payfm.training.models import model_class
from payfm.training.models.base import MAX_TRAIN_SEED, is_train_seed


def average_precision(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float:
    from sklearn.metrics import average_precision_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(average_precision_score(y, p, sample_weight=w))


def tune(
    kind: str,
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None,
    X_val: np.ndarray,
    y_val: np.ndarray,
    *,
    trials: int,
    base_params: dict[str, Any] | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], float]:
    """The best parameters of ``trials`` trials and their validation AP. ``base_params`` are fixed: a trial
    takes them over what the search space draws (a parameter given with ``--param`` is not tuned away).

    The first trial is the model's default parameters (with ``base_params``), the others Optuna's draws: a
    search never returns parameters that do worse on the validation period than no search (a few draws
    can)."""
    if not is_train_seed(seed):  # (the models' and the sampler's seed: LightGBM's is a 32-bit signed int)
        raise ConfigError(f"The 'seed' of tune must be an integer in [0, {MAX_TRAIN_SEED}]. Got {seed!r}.")
    import optuna

    # Optuna logs a trial that raised (a Ctrl-C, a user error of the model) with its traceback at WARNING,
    # then re-raises it: the error reaches the caller (the CLI's one line) without the log.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cls = model_class(kind)
    base = dict(base_params or {})

    def score(params: dict[str, Any]) -> float:
        m = cls(calibration="none", seed=seed, **params).fit(X, y, w, X_val, y_val)
        ap = average_precision(y_val, m.predict_raw(X_val))
        return 0.0 if np.isnan(ap) else ap

    def objective(trial: optuna.Trial) -> float:
        return score({**cls.search_space(trial), **base})

    defaults = score(base)
    done = [1]
    if progress:
        progress(done[0], trials)
    if trials <= 1:
        return base, defaults
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))

    def tick(_s: optuna.Study, _t: optuna.trial.FrozenTrial) -> None:
        done[0] += 1
        if progress:
            progress(done[0], trials)

    study.optimize(objective, n_trials=trials - 1, callbacks=[tick])
    if defaults >= study.best_value:
        return base, defaults
    return {**study.best_params, **base}, float(study.best_value)
