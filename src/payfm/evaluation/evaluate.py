"""Evaluation of a model's predictions over a window: every metric, curve, breakdown and interval.

The input is an Arrow table with :data:`PREDICTION_COLUMNS` (what ``payfm.training.predict.score_window``
returns). Only charges whose label is mature enter the metrics; the immature ones are counted in the result.

Example:
    >>> import datetime as dt, pyarrow as pa
    >>> t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    >>> preds = pa.table({
    ...     "charge_id": ["a", "b", "c", "d"], "created": [t0] * 4, "score": [0.9, 0.2, 0.6, 0.1],
    ...     "is_fraud": [1, 0, 0, 0], "mature": [True, True, True, False],
    ...     "scenario": ["card_testing", None, None, None],
    ...     "amount_usd": [5000, 1200, 800, 300], "channel": ["ecommerce"] * 4, "merchant_id": ["m1"] * 4,
    ...     "merchant_country": ["US"] * 4, "card_fingerprint": ["c1", "c2", "c3", "c4"]})
    >>> r = evaluate_predictions(preds, name="demo", bootstrap=20)
    >>> r.evaluated, r.immature, r.average_precision
    (3, 1, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from payfm.errors import ConfigError
from payfm.evaluation.bootstrap import CountsMetric, Interval, bootstrap
from payfm.evaluation.calibration import (
    Reliability,
    brier_score,
    expected_calibration_error,
    reliability_curve,
)
from payfm.evaluation.checks import (
    EvaluationError,
    FloatArray,
    IntArray,
    binary_inputs,
    check_card_k,
    check_rates,
    check_resamples,
    check_seed,
    check_window_arg,
    probabilities,
    require_both_classes,
)
from payfm.evaluation.curves import (
    Curve,
    DollarCurve,
    ScoreHistogram,
    dollar_curve,
    pr_points,
    roc_points,
    score_histogram,
)
from payfm.evaluation.metrics import (
    CardPrecision,
    Counts,
    OperatingPoint,
    average_precision_from,
    card_precision_at_k,
    counts_sorted,
    point_at_block_rate,
    point_at_fpr,
    roc_auc_from,
    sort_by_score,
)
from payfm.evaluation.slices import SliceRow, group_codes, group_labels, merchant_size, slice_table
from payfm.evaluation.thresholds import DEFAULT_PRESETS, Preset, choose, note
from payfm.inputs import arrow_table
from payfm.training.predict import SCORE_COLUMNS

# The columns of a prediction table: the contract of payfm.training.predict.score_window, its producer.
PREDICTION_COLUMNS = SCORE_COLUMNS
_US_PER_DAY = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def pct(x: float) -> str:
    """A rate as the key used in results: 0.01 -> "1%", 0.001 -> "0.1%"."""
    return f"{x * 100:g}%"


@dataclass(frozen=True)
class ThresholdPoint:
    """The operating point a preset picks, with its dollars (fraud caught, legitimate volume blocked).

    ``note`` says why the point does not do what the preset's rule says ("" when it does): the top tie group
    alone exceeds a block-rate budget (the point blocks it all), or no score reaches a fixed threshold.
    """

    preset: Preset
    point: OperatingPoint
    fraud_caught_usd: float
    legit_blocked_usd: float
    note: str = ""


@dataclass(frozen=True)
class Curves:
    roc: Curve
    pr: Curve
    dollars: DollarCurve
    reliability: Reliability
    histogram: ScoreHistogram


@dataclass(frozen=True)
class EvaluationResult:
    """Every number of one model on one window. Rates are fractions; dollars are USD (not cents).

    ``recall_at_fpr`` and ``at_block_rate`` are keyed by the rate as a percentage string ("0.1%", "1%"); a
    point of ``at_block_rate`` blocks the top tie group, over its budget, when that group alone exceeds it.
    ``intervals`` holds bootstrap intervals of ``average_precision``, ``roc_auc``, ``recall_at_fpr_<r>`` and
    ``precision_at_block_rate_<r>``. ``slices`` maps a dimension (scenario, channel, merchant_size,
    merchant_country) to its rows at ``slice_threshold`` (the threshold of the first preset by default).
    """

    name: str
    window_start: str | None
    window_end: str | None
    charges: int  # all rows given
    evaluated: int  # rows with a mature label: the population of every metric
    immature: int  # rows excluded because their label was not mature yet
    fraud: int
    base_rate: float
    fraud_usd: float
    legit_usd: float
    roc_auc: float
    average_precision: float
    recall_at_fpr: dict[str, float]
    at_block_rate: dict[str, OperatingPoint]
    card_precision: CardPrecision
    ece: float
    brier: float
    operating_points: list[ThresholdPoint]
    slice_threshold: ThresholdPoint
    slices: dict[str, list[SliceRow]]
    intervals: dict[str, Interval]
    curves: Curves
    bootstrap_resamples: int
    seed: int
    # What a reader must know before trusting the figures: a window holding charges the model was trained or
    # validated on (evaluate_models says so here; its figures are in-sample). Also in the report.
    warnings: tuple[str, ...] = ()
    # The span of `created` of the rows evaluated (those with a mature label): what the metrics cover, shorter
    # than window_start .. window_end when the last rows' labels are immature.
    evaluated_start: str | None = None
    evaluated_end: str | None = None
    # The first and last UTC day (ISO dates) card precision@k averages over.
    card_precision_first_day: str | None = None
    card_precision_last_day: str | None = None


def resamples_used(results: Sequence[EvaluationResult]) -> tuple[int, int]:
    """(resamples asked, the fewest any interval rests on): a resample that drew no fraudulent (or no
    legitimate) charge cannot be used, and a window with one or two frauds loses many; its intervals then
    condition on drawing a fraud. The report and the CLI say so (:func:`resamples_text`)."""
    asked = max((r.bootstrap_resamples for r in results), default=0)
    used = [iv.resamples for r in results for iv in r.intervals.values()]
    return asked, min(used, default=asked)


def resamples_text(results: Sequence[EvaluationResult]) -> str:
    """ "200 resamples", or "200 resamples, of which as few as 125 drew both classes and were used"."""
    asked, fewest = resamples_used(results)
    if fewest >= asked:
        return f"{asked} resamples"
    return f"{asked} resamples, of which as few as {fewest} drew both classes and were used"


def _column(preds: pa.Table, name: str) -> pa.ChunkedArray:
    return preds.column(name)


def check_predictions(preds: object, who: str) -> pa.Table:
    """``preds`` as an Arrow table (a pandas or Polars DataFrame converted: :func:`payfm.inputs.arrow_table`)
    after checking it has every prediction column, ``created`` a timestamp with a time zone, ``mature``
    boolean and ``score`` and ``is_fraud`` numbers (or booleans); an :class:`EvaluationError` otherwise,
    before any work: a naive ``created`` failed after the whole evaluation, comparing its days with the
    window's aware bounds, a ``mature`` of 0/1 integers failed inside Arrow, and a DataFrame reached
    ``column_names`` as an AttributeError."""
    try:
        table = arrow_table(preds, "preds", "evaluate_predictions")
    except ConfigError as e:  # (the error type of every other check here: docs/evaluation.md)
        raise EvaluationError(str(e)) from None
    missing = [c for c in PREDICTION_COLUMNS if c not in table.column_names]
    if missing:
        raise EvaluationError(
            f"The predictions of {who!r} need the columns {', '.join(PREDICTION_COLUMNS)}. "
            f"Missing: {', '.join(missing)}."
        )
    kinds = {c: table.schema.field(c).type for c in ("created", "mature", "score", "is_fraud")}
    expected = {
        "created": "a timestamp with a time zone (timestamp[us, tz=UTC], as score_window gives)",
        "mature": "boolean (true: the label is final)",
        "score": "numbers (probabilities in [0, 1])",
        "is_fraud": "numbers (labels 0 or 1) or booleans",
    }
    fits = {
        "created": pa.types.is_timestamp(kinds["created"]) and kinds["created"].tz is not None,
        "mature": pa.types.is_boolean(kinds["mature"]),
        "score": any(is_type(kinds["score"]) for is_type in _NUMBERS),
        "is_fraud": any(is_type(kinds["is_fraud"]) for is_type in (*_NUMBERS, pa.types.is_boolean)),
    }
    for column, ok in fits.items():
        if not ok:
            raise EvaluationError(
                f"The '{column}' column of the predictions of {who!r} must be {expected[column]}. "
                f"Got {kinds[column]}."
            )
    return table


_NUMBERS = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal)


def check_window_overlaps(
    window: tuple[datetime | None, datetime | None], span: tuple[datetime | None, datetime | None], who: str
) -> None:
    """Raise when ``window`` ([start, end), None: open) holds no moment of ``span`` (the first and last
    ``created`` of the predictions of ``who``; None: no rows): card precision@k averages over the window's
    days, and a window beside the predictions has none (it used to fall back to every day, silently)."""
    (start, end), (first, last) = window, span
    if first is None or last is None:
        return
    if (end is not None and end <= first) or (start is not None and start > last):
        shown = " .. ".join("open" if b is None else b.isoformat() for b in window)
        raise EvaluationError(
            f"The 'window' of evaluate_predictions must overlap the predictions of {who!r} "
            f"({first.isoformat()} .. {last.isoformat()}). Got {shown}."
        )


def _micros_of(created: pa.ChunkedArray) -> IntArray:
    micros = pc.cast(created, pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)
    out: IntArray = micros.astype(np.int64)
    return out


def _card_days(
    micros: IntArray, window: tuple[datetime | None, datetime | None], first_immature: datetime | None
) -> npt.NDArray[np.bool_]:
    """Which charges (``micros``: their ``created``, microseconds since the epoch) card precision@k counts:
    those on a UTC day wholly inside ``window`` (start inclusive, end exclusive; None is open) and before the
    UTC day of ``first_immature`` (the first immature label: the mature labels end part-way through its day).
    Card precision@k is a daily figure: the few minutes of a day at a window's edge (a model's test period
    starts at the time its split fell) would count in the mean like a whole day of traffic. When no such
    whole day exists (a window shorter than a day), the days the window touches count as they are, up to the
    first immature label."""
    days = np.floor_divide(micros, _US_PER_DAY)
    start, end = window
    cut = end if first_immature is None or (end is not None and end <= first_immature) else first_immature
    whole = np.ones(micros.size, dtype=np.bool_)
    if start is not None:
        whole &= days >= -(-_micros(start) // _US_PER_DAY)  # the first midnight at or after the start
    if cut is not None:
        whole &= days < _micros(cut) // _US_PER_DAY  # days that end at or before the cut
    if whole.any():
        return whole
    touched = np.ones(micros.size, dtype=np.bool_)
    if start is not None:
        touched &= days >= _micros(start) // _US_PER_DAY
    if end is not None:
        touched &= days <= (_micros(end) - 1) // _US_PER_DAY  # (the end is exclusive)
    return touched if first_immature is None else touched & (micros <= _micros(first_immature))


def _micros(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _card_precision(
    preds: pa.Table,
    y: FloatArray,
    s: FloatArray,
    k: int,
    window: tuple[datetime | None, datetime | None],
    first_immature: datetime | None,
    name: str,
) -> CardPrecision:
    micros = _micros_of(_column(preds, "created"))
    keep = _card_days(micros, window, first_immature)
    if not keep.any():
        shown = " .. ".join("open" if b is None else b.isoformat() for b in window)
        cut = (
            ""
            if first_immature is None
            else f" at or before the first immature one ({first_immature.isoformat()})"
        )
        raise EvaluationError(
            f"Card precision@k of {name!r} needs a charge with a mature label on a day of the 'window' "
            f"({shown}){cut}. Got none."
        )
    days = np.floor_divide(micros, _US_PER_DAY)
    cards = group_codes(_column(preds, "card_fingerprint"))
    return card_precision_at_k(y[keep], s[keep], days[keep], cards[keep], k)


def _distinct_keys(rates: tuple[float, ...], param: str) -> tuple[float, ...]:
    """``rates`` unless two of them print as one key (0.01 and 0.0100000001 are both "1%": the second's
    figures replaced the first's, silently); an :class:`EvaluationError` naming both values otherwise."""
    seen: dict[str, float] = {}
    for rate in rates:
        key = pct(rate)
        if key in seen and seen[key] != rate:
            raise EvaluationError(
                f"The '{param}' of evaluate_predictions must be rates with distinct keys (percentages of 6 "
                f"significant digits). Got {seen[key]!r} and {rate!r}, both {key!r}."
            )
        seen[key] = rate
    return rates


def _labels_and_scores(
    preds: pa.Table, rows: IntArray, ids: pa.ChunkedArray, name: str
) -> tuple[FloatArray, FloatArray]:
    """The ``is_fraud`` and ``score`` columns of ``preds`` (the rows with a mature label) as floats; an
    :class:`EvaluationError` naming the column, the first wrong value, its row in the table the caller passed
    (``rows``: each mature row's row there) and its ``charge_id`` otherwise (a position among the mature rows
    alone matched no row a caller could find)."""
    out = []
    for column, rule in (("is_fraud", "a label 0 or 1"), ("score", "a finite score")):
        values = _column(preds, column)
        x = pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False)  # (a null reads as NaN)
        bad = ~np.isin(x, (0.0, 1.0)) if column == "is_fraud" else ~np.isfinite(x)
        if bad.any():
            at = int(np.flatnonzero(bad)[0])
            got = "null" if not values[at].is_valid else repr(float(x[at]))
            row = int(rows[at])
            raise EvaluationError(
                f"The '{column}' column of the predictions of {name!r} must hold {rule} for every charge "
                f"with a mature label. Got {got} at row {row} (charge_id {ids[row].as_py()!r}; "
                f"{int(bad.sum()):,} wrong of the {x.size:,} mature rows)."
            )
        out.append(x)
    return out[0], out[1]


def _amounts_usd(preds: pa.Table, name: str) -> FloatArray:
    """The ``amount_usd`` column (US cents) of the charges with a mature label, in dollars; an
    :class:`EvaluationError` naming the column and how many amounts are null, negative or not finite (each
    charge weighs its amount in the dollar figures: one missing amount has no place in them)."""
    column = _column(preds, "amount_usd")
    numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal)
    if not any(is_type(column.type) for is_type in numeric):
        raise EvaluationError(
            f"The 'amount_usd' column of the predictions of {name!r} must hold numbers (US cents). "
            f"Got {column.type}."
        )
    cents = column.to_numpy(zero_copy_only=False).astype(np.float64)  # (a null reads as NaN)
    nulls = column.null_count
    finite = np.isfinite(cents)
    negative = int(np.sum(finite & (cents < 0)))
    not_finite = int(np.sum(~finite)) - nulls
    if nulls or negative or not_finite:
        wrong = ", ".join(
            f"{n:,} {what}"
            for n, what in ((nulls, "null"), (negative, "negative"), (not_finite, "not finite"))
            if n
        )
        raise EvaluationError(
            f"The 'amount_usd' column of the predictions of {name!r} must hold a finite, non-negative amount "
            f"(US cents) for every charge with a mature label. Got {wrong} (of {cents.size:,} charges)."
        )
    usd: FloatArray = cents / 100.0
    return usd


def _point_dollars(
    preset: Preset, c: Counts, y: FloatArray, s: FloatArray, usd: FloatArray
) -> ThresholdPoint:
    p = choose(preset, c)
    flagged = s >= p.threshold
    return ThresholdPoint(
        preset,
        p,
        float(np.sum(usd[flagged & (y == 1)])),
        float(np.sum(usd[flagged & (y == 0)])),
        note(preset, p),
    )


def evaluate_predictions(
    preds: pa.Table,
    *,
    name: str,
    thresholds: Sequence[Preset] = DEFAULT_PRESETS,
    bootstrap: int = 200,
    seed: int = 0,
    fpr_levels: Sequence[float] = (0.001, 0.01),
    block_rates: Sequence[float] = (0.01,),
    card_k: int = 100,
    n_bins: int = 10,
    window: tuple[datetime | None, datetime | None] = (None, None),
) -> EvaluationResult:
    """Evaluate one model's predictions: headline metrics, presets, curves, breakdowns and intervals.

    ``window`` is the time window the predictions were drawn from (``evaluate_models`` passes its own):
    card precision@k averages over the UTC days wholly inside it, and before the UTC day of the first
    immature label (a window shorter than any such day: the days it touches, up to that label). The result
    says what the metrics cover: ``evaluated_start`` .. ``evaluated_end``, and card precision@k's days.

    ``preds`` is an Arrow table (a pandas or Polars DataFrame is converted). Raises :class:`EvaluationError`,
    before any work, when ``preds`` is none of those, a column is missing or of the wrong type
    (``created`` a timestamp with a time zone, ``mature`` boolean, ``score`` and ``is_fraud`` numbers) or a
    parameter is out of range (``seed`` in [0, 2**32 - 1], ``bootstrap`` >= 0, each of ``fpr_levels`` and
    ``block_rates`` in (0, 1) with distinct keys, ``card_k`` an integer >= 1, ``thresholds`` Presets,
    ``window`` two bounds: aware datetimes, dates or ISO texts, overlapping the predictions); and when a
    label of a charge with a mature label is not 0 or 1 or its score not a probability (naming the row and
    its ``charge_id``), its amount is null, negative or not finite, or the mature labels do not include both
    a fraudulent and a legitimate charge.
    """
    seed = check_seed(seed, "evaluate_predictions")
    bootstrap = check_resamples(bootstrap, "evaluate_predictions")
    fpr_levels = check_rates(fpr_levels, "fpr_levels", "evaluate_predictions")
    block_rates = check_rates(block_rates, "block_rates", "evaluate_predictions")
    window = check_window_arg(window, "evaluate_predictions")
    card_k = check_card_k(card_k, "evaluate_predictions")
    if not thresholds:
        raise EvaluationError(f"The evaluation of {name!r} needs at least one threshold preset. Got none.")
    if isinstance(thresholds, str) or not all(isinstance(p, Preset) for p in thresholds):
        wrong = (
            thresholds
            if isinstance(thresholds, str)
            else next(p for p in thresholds if not isinstance(p, Preset))
        )
        raise EvaluationError(
            "The 'thresholds' of evaluate_predictions must be Presets (payfm.evaluation.thresholds: "
            f"DEFAULT_PRESETS, Preset('top 1%', 'block_rate', 0.01)). Got {wrong!r}."
        )
    fpr_levels = _distinct_keys(fpr_levels, "fpr_levels")
    block_rates = _distinct_keys(block_rates, "block_rates")
    preds = check_predictions(preds, name)
    mature_col = pc.fill_null(_column(preds, "mature"), False)
    charges = preds.num_rows
    span = (pc.min(_column(preds, "created")).as_py(), pc.max(_column(preds, "created")).as_py())
    check_window_overlaps(window, span, name)
    # the mature labels end where the first immature one is: the day it falls on is a part-day too
    first_immature = pc.min(_column(preds, "created").filter(pc.invert(mature_col))).as_py()
    # each mature row's row in the table given, and the charge ids there: where a wrong label or score is
    rows: IntArray = np.flatnonzero(mature_col.to_numpy()).astype(np.int64)
    ids = _column(preds, "charge_id")
    preds = preds.filter(mature_col)
    evaluated = (pc.min(_column(preds, "created")).as_py(), pc.max(_column(preds, "created")).as_py())
    who = f"The evaluation of {name!r}"
    if charges and not preds.num_rows:
        raise EvaluationError(
            f"{who} has no charge with a mature label: the window's {charges:,} charges "
            f"({span[0]:%Y-%m-%d} .. {span[1]:%Y-%m-%d}) are all too recent for their label horizon, "
            "so whether they were fraud is not known yet. Evaluate an earlier window (--from, --to), or "
            "with a shorter label horizon (--horizon-days) when the event log is shorter than it."
        )
    y, s, _ = binary_inputs(who, *_labels_and_scores(preds, rows, ids, name))
    probabilities(who, s)
    if charges > preds.num_rows:
        who += f" ({charges - preds.num_rows} immature labels excluded)"
    require_both_classes(who, y, np.ones_like(y))
    usd = _amounts_usd(preds, name)
    card_precision = _card_precision(preds, y, s, card_k, window, first_immature, name)
    c = counts_sorted(*sort_by_score(y, s, np.ones_like(y)))

    at_block = {pct(b): point_at_block_rate(c, b) for b in block_rates}
    points = [_point_dollars(p, c, y, s, usd) for p in thresholds]
    slice_point = points[0]
    flagged = s >= slice_point.point.threshold
    rng = np.random.default_rng(seed)
    dims = {
        "scenario": group_labels(_column(preds, "scenario")),
        "channel": group_labels(_column(preds, "channel")),
        "merchant_size": merchant_size(_column(preds, "merchant_id")),
        "merchant_country": group_labels(_column(preds, "merchant_country")),
    }
    slices = {
        dim: slice_table(dim, codes, names, y, flagged, rng=rng, resamples=bootstrap)
        for dim, (codes, names) in dims.items()
    }

    metric_fns: dict[str, CountsMetric] = {
        "average_precision": average_precision_from,
        "roc_auc": roc_auc_from,
    }
    for r in fpr_levels:
        metric_fns[f"recall_at_fpr_{pct(r)}"] = _recall_at_fpr(r)
    for b in block_rates:
        metric_fns[f"precision_at_block_rate_{pct(b)}"] = _precision_at_block_rate(b)
    # Resample cards, not charges: a card's charges (a takeover's spree, a stolen card's run) stand or fall
    # together, and resampling them one by one gives intervals too narrow.
    cards = group_codes(_column(preds, "card_fingerprint"))
    intervals = bootstrap_intervals(metric_fns, y, s, bootstrap, seed, groups=cards)
    card_days = sorted(card_precision.per_day)

    return EvaluationResult(
        name=name,
        window_start=None if span[0] is None else span[0].isoformat(),
        window_end=None if span[1] is None else span[1].isoformat(),
        charges=charges,
        evaluated=preds.num_rows,
        immature=charges - preds.num_rows,
        fraud=int(c.positives),
        base_rate=c.positives / c.total,
        fraud_usd=float(usd[y == 1].sum()),
        legit_usd=float(usd[y == 0].sum()),
        roc_auc=roc_auc_from(c),
        average_precision=average_precision_from(c),
        recall_at_fpr={pct(r): point_at_fpr(c, r).recall for r in fpr_levels},
        at_block_rate=at_block,
        card_precision=card_precision,
        ece=expected_calibration_error(y, s, n_bins),
        brier=brier_score(y, s),
        operating_points=points,
        slice_threshold=slice_point,
        slices=slices,
        intervals=intervals,
        curves=Curves(
            roc=roc_points(c),
            pr=pr_points(c),
            dollars=dollar_curve(y, s, usd),
            reliability=reliability_curve(y, s, n_bins),
            histogram=score_histogram(y, s),
        ),
        bootstrap_resamples=bootstrap,
        seed=seed,
        evaluated_start=None if evaluated[0] is None else evaluated[0].isoformat(),
        evaluated_end=None if evaluated[1] is None else evaluated[1].isoformat(),
        card_precision_first_day=card_days[0] if card_days else None,
        card_precision_last_day=card_days[-1] if card_days else None,
    )


def _recall_at_fpr(level: float) -> CountsMetric:
    return lambda c: point_at_fpr(c, level).recall


def _precision_at_block_rate(budget: float) -> CountsMetric:
    return lambda c: point_at_block_rate(c, budget).precision


def bootstrap_intervals(
    metric_fns: dict[str, CountsMetric],
    y: FloatArray,
    s: FloatArray,
    resamples: int,
    seed: int,
    groups: npt.ArrayLike | None = None,
) -> dict[str, Interval]:
    """Intervals of the headline metrics, resampling ``groups`` (one id per charge; None: charges) whole;
    none when ``resamples`` is 0."""
    if resamples == 0:
        return {}
    return bootstrap(metric_fns, y, s, resamples=resamples, seed=seed, groups=groups)


@dataclass(frozen=True)
class ComparisonRow:
    """One model in a comparison, best average precision first. ``block_rate_at_1pct_block`` is the share
    the precision at a 1% block rate was measured on: above 1% when the top tie group alone exceeds it."""

    name: str
    average_precision: float
    ap_low: float
    ap_high: float
    roc_auc: float
    recall_at_1pct_fpr: float
    precision_at_1pct_block: float
    block_rate_at_1pct_block: float
    card_precision_at_k: float
    ece: float
    evaluated: int
    immature: int

    def at_1pct_block(self, number: Callable[[float], str]) -> str:
        """The precision at a 1% block rate as a table shows it (``number`` formats it), marked with the
        share it was measured on when the top tie group alone is over the budget (the report, the CLI).

        >>> row = ComparisonRow("m", *[0.5] * 6, 0.0242, 0.5, 0.01, 100, 0)
        >>> row.at_1pct_block(lambda x: f"{x:.3f}")
        '0.500 (top tie: 2.42% blocked)'
        """
        shown, share = number(self.precision_at_1pct_block), self.block_rate_at_1pct_block
        if share > 0.01 * (1 + 1e-12):  # as metrics.over_budget
            return f"{shown} (top tie: {share:.2%} blocked)"
        return shown


def compare(results: Sequence[EvaluationResult]) -> list[ComparisonRow]:
    """The models side by side, sorted by average precision (highest first).

    Raises :class:`EvaluationError` when the results were computed on different numbers of charges, which
    would make the comparison unfair.
    """
    if not results:
        raise EvaluationError("compare needs at least one evaluation result. Got none.")
    sizes = {r.evaluated for r in results}
    if len(sizes) > 1:
        detail = ", ".join(f"{r.name}: {r.evaluated}" for r in results)
        raise EvaluationError(f"compare needs results on the same charges. Got different counts ({detail}).")
    rows = []
    for r in results:
        ap = r.intervals.get("average_precision")
        at_1pct = r.at_block_rate.get("1%")
        rows.append(
            ComparisonRow(
                name=r.name,
                average_precision=r.average_precision,
                ap_low=ap.low if ap else float("nan"),
                ap_high=ap.high if ap else float("nan"),
                roc_auc=r.roc_auc,
                recall_at_1pct_fpr=r.recall_at_fpr.get("1%", float("nan")),
                precision_at_1pct_block=at_1pct.precision if at_1pct else float("nan"),
                block_rate_at_1pct_block=at_1pct.block_rate if at_1pct else float("nan"),
                card_precision_at_k=r.card_precision.mean,
                ece=r.ece,
                evaluated=r.evaluated,
                immature=r.immature,
            )
        )
    return sorted(rows, key=lambda row: -row.average_precision)
