"""Model parameters checked before any work: names each model kind knows, values of the type and in the range
it expects.

Each kind declares its parameters (``Model.PARAMS``: name -> type), and :data:`RANGES` the values each takes
(the bounds scikit-learn, LightGBM and torch document, tighter where the library's own value trains a model
that cannot learn: an MLP without hidden units or epochs); the GBDT also passes any other LightGBM
parameter through, checked against LightGBM's own names and on a four-row fit, so a typo or a value LightGBM
refuses is an error naming the parameter before the task's data is read, not a warning LightGBM prints (and
ignores) minutes later. Values given as text (``payfm train --param max_bin=63``) are read in the type the
parameter has: int, float, bool (true/false) or str; a pass-through LightGBM value is read as an int, a float,
true/false or else text.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from payfm.errors import ConfigError
from payfm.training.models.gbdt import EXPLANATIONS, GBDTModel
from payfm.training.models.scaling import TRANSFORMS

# LightGBM parameters payfm sets itself (the classifier it trains, its seed and determinism, its logging)
_FIXED_BY_PAYFM = {
    "objective": "payfm trains a binary classifier",
    "seed": "use --seed (TrainConfig.seed)",
    "deterministic": "payfm trains deterministically",
    "verbosity": "payfm silences LightGBM",
    "linear_tree": "a linear leaf's output cannot be explained as the reasons require",
    "num_class": "payfm trains a binary classifier",
}


def parse_assignment(text: str) -> tuple[str | None, str, str]:
    """``[KIND.]NAME=VALUE`` (a ``--param``) as (kind or None, name, value text); a ConfigError otherwise."""
    m = re.fullmatch(r"\s*(?:([a-z]+)\.)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)", text, re.S)
    if m is None:
        raise ConfigError(
            f"--param: expected [KIND.]NAME=VALUE, e.g. n_estimators=200 or gbdt.max_bin=63. Got {text!r}."
        )
    return m.group(1), m.group(2), m.group(3).strip()


def _read(text: str, kind: type, where: str) -> Any:
    """``text`` as a value of ``kind`` (int, float, bool or str)."""
    try:
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is list:
            return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{where}: expected {_TYPE_NAMES[kind]}. Got {text!r}.") from None
    return text


_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "text",
    list: "column indices separated by commas",
}


def _guess(text: str) -> Any:
    """A pass-through LightGBM value given as text: an int, a float, true/false, or the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.lower() == "true" if text.lower() in ("true", "false") else text


def _checked(value: Any, kind: type, where: str) -> Any:
    """A value given from Python, in ``kind``: an integer (numpy's too) where a number is expected is taken,
    a bool is no number; text is read as from the command line."""
    if isinstance(value, str) and kind is not str:
        return _read(value, kind, where)
    number = not isinstance(value, bool | np.bool_)
    if kind is int and number and isinstance(value, numbers.Integral):
        return int(value)
    if kind is float and number and isinstance(value, numbers.Real):
        return float(value)
    if kind is str and (value is None or isinstance(value, str)):  # (class_weight None: the default)
        return value
    if kind is bool and isinstance(value, bool | np.bool_):
        return bool(value)
    integers = isinstance(value, list | tuple | np.ndarray) and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value
    )
    if kind is list and integers:
        return [int(v) for v in value]
    raise ConfigError(f"{where}: expected {_TYPE_NAMES[kind]}. Got {value!r}.")


@dataclass(frozen=True)
class Range:
    """The values a parameter takes beyond its type: ``ok`` tells, ``expected`` says it in words (a message's
    "expected ..."). A float must also be finite: NaN compares false with every bound."""

    ok: Callable[[Any], bool]
    expected: str


def _integer(low: int, note: str = "") -> Range:
    return Range(lambda v: v >= low, f"an integer >= {low}{note}")


def _number(low: float, high: float | None = None, *, low_open: bool, high_open: bool = False) -> Range:
    """A number in the interval from ``low`` to ``high`` (None: no upper bound), each end open or closed."""
    if high is None:
        return Range(
            lambda v: v > low if low_open else v >= low, f"a number {'>' if low_open else '>='} {low:g}"
        )
    text = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return Range(
        lambda v: (v > low if low_open else v >= low) and (v < high if high_open else v <= high),
        f"a number in {text}",
    )


# the numeric inputs of lr and mlp (payfm.training.models.scaling)
_TRANSFORM = Range(lambda v: v in TRANSFORMS, " or ".join(repr(t) for t in TRANSFORMS))

# Each kind's parameters -> their valid values (a test checks that every parameter of Model.PARAMS has one).
RANGES: dict[str, dict[str, Range]] = {
    "lr": {  # scikit-learn's LogisticRegression: C in (0, inf] (finite here), max_iter >= 0 (>= 1 here)
        "C": _number(0, low_open=True),
        "max_iter": _integer(1),
        "class_weight": Range(
            lambda v: v in (None, "balanced"), "'balanced' or None (unweighted, the default)"
        ),
        "categorical": Range(lambda v: all(j >= 0 for j in v), "column indices >= 0"),
        "transform": _TRANSFORM,
    },
    "rf": {  # scikit-learn's RandomForestClassifier (max_features: payfm passes a share of the features)
        "n_estimators": _integer(1),
        "max_depth": Range(lambda v: v is None or v >= 1, "an integer >= 1, or None (no limit)"),
        "min_samples_leaf": _integer(1),
        "max_features": _number(0, 1, low_open=True),
        "max_rows": _integer(1),
        "n_jobs": Range(lambda v: v != 0, "an integer other than 0 (-1: every core)"),
        "class_weight": Range(
            lambda v: v in (None, "balanced"), "'balanced' (the default) or None (the sample weights alone)"
        ),
    },
    "gbdt": {  # LightGBM's Parameters page
        "n_estimators": _integer(1),
        "learning_rate": _number(0, low_open=True),
        "num_leaves": Range(lambda v: 2 <= v <= 131072, "an integer in [2, 131072]"),
        "max_depth": Range(lambda v: True, "an integer (<= 0: no limit)"),
        "min_child_samples": _integer(0),
        "feature_fraction": _number(0, 1, low_open=True),
        "lambda_l2": _number(0, low_open=False),
        "early_stopping": _integer(0, " (0: no early stopping)"),
        "num_threads": _integer(0, " (0: every core)"),
        "explanations": Range(lambda v: v in EXPLANATIONS, " or ".join(repr(e) for e in EXPLANATIONS)),
    },
    "mlp": {  # torch: Dropout p in [0, 1] (1 zeroes every unit), AdamW lr and weight_decay >= 0
        "hidden": Range(  # (8192: 40M weights in the second layer, 160 MB; more is a typo, not a model)
            lambda v: 2 <= v <= 8192, "an integer in [2, 8192] (the second layer has hidden // 2 units)"
        ),
        "dropout": _number(0, 1, low_open=False, high_open=True),
        "lr": _number(0, low_open=True),
        "weight_decay": _number(0, low_open=False),
        "epochs": _integer(1),
        "batch_size": Range(  # (None: the adaptive size, the default)
            lambda v: v is None or v >= 1, "an integer >= 1, or None (adaptive: 32 to 1024 rows, the default)"
        ),
        "patience": _integer(1),
        "num_threads": _integer(1),
        "transform": _TRANSFORM,
    },
}


def _takes_none(valid: Range | None) -> bool:
    """Whether a parameter's range takes None (lr.class_weight, rf.max_depth); a range of numbers or lists
    does not (its test cannot even compare None: gbdt.n_estimators=None is then the text 'None', refused as
    such)."""
    try:
        return valid is not None and bool(valid.ok(None))
    except TypeError:
        return False


def _in_range(value: Any, valid: Range | None, where: str) -> Any:
    """``value`` (already in its parameter's type) if ``valid`` takes it; a ConfigError otherwise."""
    finite = not isinstance(value, float) or math.isfinite(value)
    if valid is not None and not (finite and valid.ok(value)):
        raise ConfigError(f"{where}: expected {valid.expected}. Got {value!r}.")
    return value


@cache
def lightgbm_names() -> dict[str, str]:
    """Every LightGBM parameter name and alias -> its main name (empty if LightGBM cannot say)."""
    try:
        from lightgbm.basic import _ConfigAliases

        aliases = _ConfigAliases._get_all_param_aliases()
    except Exception:  # (a private API: without it, names pass through unchecked, as LightGBM takes them)
        return {}
    return {alias: main for main, names in aliases.items() for alias in (main, *names)}


def _gbdt_passthrough(name: str, value: Any, own: Iterable[str]) -> Any:
    names = lightgbm_names()
    where = f"gbdt parameter {name!r}"
    if not names:
        return _guess(value) if isinstance(value, str) else value
    main = names.get(name)
    if main is None:
        near = difflib.get_close_matches(name, [*own, *names], n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ConfigError(
            f"{where}: expected one of payfm's ({', '.join(sorted(own))}) or a LightGBM "
            f"parameter (https://lightgbm.readthedocs.io/en/stable/Parameters.html). Got {name!r}.{hint}"
        )
    for fixed, why in _FIXED_BY_PAYFM.items():
        if names.get(fixed) == main:
            raise ConfigError(f"{where}: set by payfm ({why}). Got {name}={value!r}.")
    for mine in own:
        if names.get(mine) == main:  # an alias of one of payfm's own: two values for one parameter
            raise ConfigError(f"{where}: LightGBM's alias of payfm's {mine!r}; set {mine} instead.")
    return _guess(value) if isinstance(value, str) else value


def check_params(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` of model ``kind`` with their values in the types the model takes; a ConfigError names the
    first unknown parameter (with the nearest name) or the first value of the wrong type or out of its range
    (:data:`RANGES`).

        >>> check_params("rf", {"n_estimators": "200"})
        {'n_estimators': 200}
        >>> check_params("rf", {"n_estimators": 0})
        Traceback (most recent call last):
        payfm.errors.ConfigError: rf parameter 'n_estimators': expected an integer >= 1. Got 0.
    """
    from payfm.training.models import model_class

    cls = model_class(kind)
    out: dict[str, Any] = {}
    for name, value in params.items():
        known = cls.PARAMS.get(name)
        where = f"{kind} parameter {name!r}"
        if known is not None:
            valid = RANGES[kind].get(name)
            if isinstance(value, str) and value.lower() == "none" and _takes_none(valid):
                value = None  # the None a message offers, as a command line writes it: lr.class_weight=None
            if value is None and _takes_none(valid):
                out[name] = None  # (whatever the parameter's type: rf.max_depth=None, no limit)
                continue
            out[name] = _in_range(_checked(value, known, where), valid, where)
        elif kind == "gbdt":
            out[name] = _gbdt_passthrough(name, value, cls.PARAMS)
        else:
            near = difflib.get_close_matches(name, list(cls.PARAMS), n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ConfigError(
                f"{where}: expected one of {', '.join(sorted(cls.PARAMS))}. Got {name!r}.{hint}"
            )
    if kind == "gbdt":
        _try_lightgbm(out, cls.PARAMS)
    return out


_STDERR_LOCK = threading.Lock()
# LightGBM parameters with one value per feature: a fit on one column refuses any list of the feature set's
# length, so they are not tried (LightGBM checks them when the model fits)
_PER_FEATURE = {
    "monotone_constraints",
    "max_bin_by_feature",
    "feature_contri",
    "forcedsplits_filename",
    "interaction_constraints",
    "categorical_feature",
    "forcedbins_filename",
}


# ...of which those LightGBM reads as one number per column (a subset): the fit checks their length first
PER_COLUMN = frozenset({"monotone_constraints", "max_bin_by_feature", "feature_contri"})


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the block (what C++ code prints there), then back; one block at a
    time, and nothing silenced when descriptor 2 cannot be duplicated (closed)."""
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):
            yield
            return
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _try_lightgbm(params: Mapping[str, Any], own: Iterable[str]) -> None:
    """Fit one round on four rows with the pass-through parameters: a value LightGBM refuses is an error
    now, naming LightGBM's reason."""
    names = lightgbm_names()
    mine = set(own)
    extra = {k: v for k, v in params.items() if k not in mine and names.get(k, k) not in _PER_FEATURE}
    if not extra:
        return
    import lightgbm as lgb

    X, y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0.0, 1.0, 0.0, 1.0])
    given = ", ".join(f"{k}={v!r}" for k, v in extra.items())
    train = lgb.Dataset(X, y, params={"verbosity": -1})
    dart = any(str(params.get(a, "")).lower() == "dart" for a in ("boosting", "boosting_type", "boost"))
    # 0: no early stopping (nor a metric to stop on); dart has none either
    stop = int(params.get("early_stopping", GBDTModel.DEFAULTS["early_stopping"]))
    try:
        with _stderr_silenced():  # LightGBM's C++ prints a refusal ("[LightGBM] [Fatal] ...") as it raises it
            lgb.train(
                {**extra, "objective": "binary", "verbosity": -1, "num_threads": 1},
                train,
                num_boost_round=1,
                # as the trainer fits: stopping early on a validation set (a metric LightGBM does not know
                # leaves it none to stop on)
                valid_sets=[] if dart or not stop else [lgb.Dataset(X, y, reference=train)],
                callbacks=[] if dart or not stop else [lgb.early_stopping(stop, verbose=False)],
            )
    except lgb.basic.LightGBMError as e:
        why = re.sub(r" at \S+\.cpp, line \d+\s*\.?$", "", str(e).strip())  # (where in LightGBM's C++)
        raise ConfigError(f"LightGBM refused the GBDT parameters {given}: {why}.") from None
    except ValueError as e:
        if "eval metric" not in str(e):
            raise
        raise ConfigError(
            f"LightGBM refused the GBDT parameters {given}: early stopping on the validation period needs an "
            "evaluation metric LightGBM knows (metric=auc, binary_logloss, average_precision, ...)."
        ) from None
