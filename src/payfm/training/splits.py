"""Time-based splits with a label-delay gap, prequential folds and negative downsampling.

The timeline is cut into [warm-up |] train | gap | validation | gap | test, by the charge's ``created``.
The optional warm-up is the log's first days, in no part: there every card and merchant is new to the log and
the windows of its features are not full yet, so a model fitted there reads "first charge" and low counts
as commoner among genuine charges than they are later (docs/models.md). Nothing from the gaps is used: a
model is validated on charges that happen at least ``gap`` after the last training charge, as it would be
in production where recent labels have not arrived yet. Train and validation keep mature labels only (the
immature ones are counted); test keeps every row and its ``mature`` flag, so evaluation can say how many
test labels were still immature.

Example:
    >>> import numpy as np
    >>> day = 86_400_000_000
    >>> created = np.arange(0, 60 * day, day // 10)
    >>> s = time_split(created, np.ones(len(created), bool), val_days=10, test_days=10, gap_days=5)
    >>> bool(created[s.train].max() + 5 * day <= created[s.val].min())
    True
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from payfm.errors import ConfigError

US_PER_DAY = 86_400_000_000
# The most days a period, gap or label horizon may last: a century is past any of them, and far below where
# timedelta (999,999,999 days) and the int64 microsecond timeline (about 100,000,000 days) overflow.
MAX_DAYS = 36_500


def finite_number(value: object) -> bool:
    """Whether ``value`` is a finite number (a bool is none; NaN and the infinities are not finite)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def check_days(value: object, who: str, *, zero: bool = False) -> float:
    """``value`` as a number of days: finite, > 0 (>= 0 with ``zero``) and at most :data:`MAX_DAYS`; a
    ConfigError naming ``who`` otherwise. NaN compares false with every bound, so it is refused explicitly.

        >>> check_days(7, "The 'gap_days' of the time split", zero=True)
        7.0
        >>> check_days(float("nan"), "'val_days'")
        Traceback (most recent call last):
        payfm.errors.ConfigError: 'val_days' must be a number of days in (0, 36500]. Got nan.
    """
    if finite_number(value):
        days = float(value)  # type: ignore[arg-type]
        if (days >= 0 if zero else days > 0) and days <= MAX_DAYS:
            return days
    raise ConfigError(
        f"{who} must be a number of days in {'[' if zero else '('}0, {MAX_DAYS}]. Got {value!r}."
    )


@dataclass(frozen=True)
class Split:
    """Row indices of each part (into the table sorted by time) and the cut points (UTC microseconds)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    bounds: dict[str, tuple[int, int]]  # part -> [start, end) in microseconds
    immature: dict[str, int]  # rows left out of train/val because their label was not mature
    too_recent: int = 0  # rows after the end of the timeline (``end_us``), in no part
    warm_up: int = 0  # rows of the warm-up (the log's first ``warm_up_days``), in no part

    def summary(self) -> dict[str, object]:
        return {
            "rows": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "bounds_us": self.bounds,
            "immature_dropped": self.immature,
            "too_recent": self.too_recent,
            "warm_up": self.warm_up,
        }


def time_split(
    created_us: np.ndarray,
    mature: np.ndarray,
    *,
    val_days: float = 14,
    test_days: float = 14,
    gap_days: float = 7,
    end_us: int | None = None,
    warm_up_days: float = 0,
    as_of_us: int | None = None,
) -> Split:
    """Split by time: the last ``test_days`` are test, the ``val_days`` before them (less a gap) validation.

    ``created_us`` are int64 microseconds (any order); ``mature`` is a bool array of the same length.
    ``end_us`` ends the timeline early: rows created at or after it are in no part (``too_recent``); the
    trainer sets it one label horizon before the task's last row, so that every test label is mature.
    Training starts ``warm_up_days`` after the first row (the rows before are in no part: ``warm_up``).
    ``as_of_us``: the labels' as-of when one was set (``--as-of``; ``end_us`` is then at most it): a refusal
    names it and says the span of the log up to it (the log's later charges did not exist then).

        >>> day = 86_400_000_000
        >>> created = np.arange(0, 60 * day, day)
        >>> s = time_split(created, np.ones(60, bool), val_days=10, test_days=10, gap_days=5, warm_up_days=20)
        >>> [int(created[i] // day) for i in (s.train[0], s.train[-1])], s.warm_up
        ([20, 29], 20)
    """
    for who, v in (("val_days", val_days), ("test_days", test_days)):
        check_days(v, f"The '{who}' of the time split")
    check_days(gap_days, "The 'gap_days' of the time split", zero=True)
    check_days(warm_up_days, "The 'warm_up_days' of the time split", zero=True)
    if len(created_us) == 0:
        raise ConfigError("The time split needs at least one row. Got an empty table.")
    lo, hi = int(created_us.min()), int(created_us.max()) + 1
    early = end_us is not None and int(end_us) < hi  # (the timeline ends where labels are mature)
    if end_us is not None:
        hi = min(hi, int(end_us))
    gap, vd, td = (int(d * US_PER_DAY) for d in (gap_days, val_days, test_days))
    test_start = hi - td
    val_end = test_start - gap
    val_start = val_end - vd
    train_end = val_start - gap
    as_of, horizon = _as_of_said(lo, end_us, as_of_us)
    if end_us is not None and hi <= lo:
        if as_of:
            raise ConfigError(
                f"The time split needs rows with mature labels: {as_of}, and a {horizon:g}-day label horizon "
                "before it leaves no mature label: use a later --as-of or a shorter --horizon-days."
            )
        span = (int(created_us.max()) + 1 - lo) / US_PER_DAY
        raise ConfigError(
            f"The time split needs rows with mature labels: the label horizon reaches back before the first "
            f"charge (the log spans {span:.1f} days). Use a shorter --horizon-days."
        )
    if train_end <= lo:
        span = (hi - lo) / US_PER_DAY
        tail = " with mature labels (a label horizon before the task's last row)." if end_us else "."
        if as_of:  # (where the timeline ends is the as-of's, not the log's)
            less = f", less a {horizon:g}-day label horizon" if horizon else ""
            shorter = " or a shorter --horizon-days" if horizon else ""
            tail = f" ({as_of}{less}): use a later --as-of, shorter periods{shorter}."
        raise ConfigError(
            f"The time split needs more data: val {val_days} d + test {test_days} d + 2 gaps of {gap_days} d "
            f"leave no training period in {span:.1f} days of charges{tail}"
        )
    train_start = lo + int(warm_up_days * US_PER_DAY)
    if train_start >= train_end:
        room = (train_end - lo) / US_PER_DAY
        raise ConfigError(
            f"The warm-up of {warm_up_days:g} days leaves no training period: training may run only "
            f"{room:.1f} days from the first charge (before validation, test and their gaps"
            + (", which end where labels are mature" if early else "")
            + "). Use a shorter --warm-up-days or a longer event log."
        )
    mature = np.asarray(mature, dtype=bool)
    in_train = (created_us >= train_start) & (created_us < train_end)
    in_val = (created_us >= val_start) & (created_us < val_end)
    in_test = (created_us >= test_start) & (created_us < hi)
    return Split(
        train=np.flatnonzero(in_train & mature),
        val=np.flatnonzero(in_val & mature),
        test=np.flatnonzero(in_test),
        bounds={"train": (train_start, train_end), "val": (val_start, val_end), "test": (test_start, hi)},
        immature={"train": int((in_train & ~mature).sum()), "val": int((in_val & ~mature).sum())},
        too_recent=int((created_us >= hi).sum()),
        warm_up=int((created_us < train_start).sum()),
    )


def _as_of_said(lo: int, end_us: int | None, as_of_us: int | None) -> tuple[str, float]:
    """The log up to an as-of, in words ("the log spans 19.0 days up to --as-of 2026-01-20T00:00:00+00:00"),
    and the label horizon (days) the timeline ends before it; ("", 0) without one."""
    if as_of_us is None:
        return "", 0.0
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(as_of_us))
    span = (int(as_of_us) - lo) / US_PER_DAY
    horizon = (int(as_of_us) - int(end_us)) / US_PER_DAY if end_us is not None else 0.0
    return f"the log spans {span:.1f} days up to --as-of {when.isoformat()}", max(horizon, 0.0)


def prequential_splits(
    created_us: np.ndarray,
    mature: np.ndarray,
    *,
    weeks: int = 4,
    end_us: int | None = None,
    val_days: float = 14,
    gap_days: float = 7,
    warm_up_days: float = 0,
) -> list[Split]:
    """Rolling weekly evaluation: the :func:`time_split` of each of the last ``weeks`` weeks before ``end_us``
    (the trainer's: a label horizon before the labels' as-of, so every week's labels are mature), oldest
    first. Week k's split is the one a model trained at its start would have had: its 7 days are the test
    period, validation the ``val_days`` before them less the gap, training everything mature before that
    less the gap (from the warm-up on). A week with too little history before it is refused as
    :func:`time_split` refuses it.

        >>> day = 86_400_000_000
        >>> created = np.arange(0, 70 * day, day // 4)
        >>> folds = prequential_splits(created, np.ones(len(created), bool), weeks=2, end_us=63 * day,
        ...                            val_days=7, gap_days=2)
        >>> [[int(b // day) for b in f.bounds["test"]] for f in folds]
        [[49, 56], [56, 63]]
    """
    if isinstance(weeks, bool) or not isinstance(weeks, int) or weeks < 1:
        raise ConfigError(f"The 'weeks' of prequential evaluation must be an integer >= 1. Got {weeks!r}.")
    if len(created_us) == 0:
        raise ConfigError("The prequential evaluation needs at least one row. Got an empty table.")
    hi = int(created_us.max()) + 1 if end_us is None else min(int(end_us), int(created_us.max()) + 1)
    week = 7 * US_PER_DAY
    out = []
    for k in range(weeks - 1, -1, -1):
        try:
            out.append(
                time_split(
                    created_us,
                    mature,
                    val_days=val_days,
                    test_days=7,
                    gap_days=gap_days,
                    end_us=hi - k * week,
                    warm_up_days=warm_up_days,
                )
            )
        except ConfigError as e:
            start = datetime.fromtimestamp((hi - (k + 1) * week) / 1e6, UTC).isoformat(timespec="seconds")
            raise ConfigError(f"Prequential week {weeks - k} of {weeks} (from {start}): {e}") from None
    return out


def downsample_negatives(y: np.ndarray, rate: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Keep every positive and a ``rate`` share of negatives; weight kept negatives by 1/rate.

    Returns (row indices kept, in order; their sample weights), so weighted metrics and calibration stay
    unbiased for the full population.
    """
    if not 0 < rate <= 1:
        raise ConfigError(f"The negative downsampling 'rate' must be in (0, 1]. Got {rate}.")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    keep = (y == 1) | (rng.random(len(y)) < rate)
    idx = np.flatnonzero(keep)
    weights = np.where(y[idx] == 1, 1.0, 1.0 / rate)
    return idx, weights
