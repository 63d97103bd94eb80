"""Feature drift between two time windows: how far each feature's distribution moved, as the population
stability index (PSI), and how many of the later window's values lie beyond every value of the earlier one.

A model learns its features' distributions in its training window; a feature whose values later move (an
all-time count that only grows, a card's age since its first charge in the log, a 30-day window that was
not yet full in the log's first month) is read by the model in a range it never saw. ``payfm evaluate``
reports it for each model (its training window against the evaluated one), ``payfm features drift`` for any
two windows.

Each feature's reference values (the earlier window) are cut into ``bins`` quantile bins (deciles); a feature
with at most ``2 * bins`` distinct reference values (flags, codes, small counts) gets a bin per value and one
for any other value; missing values are a bin of their own. With shares ``r`` and ``c`` of the reference and
current rows in each bin (floored at 1e-4, so an empty bin counts but does not make it infinite),

    PSI = sum((c - r) * ln(c / r))

The usual reading (Siddiqi, *Credit Risk Scorecards*, 2006): below 0.1 stable, 0.1 to 0.25 moderate, from
0.25 a major shift.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ref = np.column_stack([rng.normal(size=5000), np.arange(5000.0)])
    >>> cur = np.column_stack([rng.normal(size=5000), np.arange(5000.0, 10000.0)])
    >>> [(d.feature, d.level, round(d.beyond, 2)) for d in feature_drift(ref, cur, ["noise", "count_all"])]
    [('count_all', 'major', 1.0), ('noise', 'stable', 0.0)]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from payfm import inputs
from payfm.evaluation.checks import EvaluationError
from payfm.events.schema import time_bound

if TYPE_CHECKING:
    from payfm.events.workspace import Workspace
    from payfm.features.definitions import FeatureSet

BINS = 10
MODERATE, MAJOR = 0.1, 0.25  # PSI thresholds of the levels
LEVELS = ("major", "moderate", "stable")
FLOOR = 1e-4  # the least share a bin counts with
MAX_ROWS = 500_000  # rows of a window read at most: beyond, an evenly spaced sample in time order
# Charges of a window whose foundation-model outputs are computed, at most (an evenly spaced sample beyond):
# embedding them costs about 50 us each on a 2-core CPU, besides building the log's sequences once.
FM_MAX_ROWS = 20_000
_COLUMNS_AT_ONCE = 32  # features read from the backfill at a time (bounded memory on large windows)


def level(psi: float) -> str:
    """``major`` (PSI >= 0.25), ``moderate`` (>= 0.1) or ``stable``."""
    return "major" if psi >= MAJOR else "moderate" if psi >= MODERATE else "stable"


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift from the reference window to the current one."""

    feature: str
    psi: float
    level: str
    reference_missing: float  # share of the reference rows without a value
    current_missing: float
    beyond: float  # share of the current window's values outside [min, max] of the reference window's
    reference_median: float | None  # of the values present (None: no value)
    current_median: float | None

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _median(values: np.ndarray, is_sorted: bool = False) -> float | None:
    if not len(values):
        return None
    if not is_sorted:
        return float(np.median(values))
    n = len(values)
    return float((values[(n - 1) // 2] + values[n // 2]) / 2)


def column_drift(name: str, reference: np.ndarray, current: np.ndarray, bins: int = BINS) -> FeatureDrift:
    """The drift of one feature: ``reference`` and ``current`` hold its values (NaN: missing)."""
    # (an infinity is a value beyond every finite one: it is binned as the largest float, not as NaN)
    big = np.finfo(np.float64).max
    ref = np.clip(np.asarray(reference, dtype=np.float64), -big, big)
    cur = np.clip(np.asarray(current, dtype=np.float64), -big, big)
    if len(ref) == 0 or len(cur) == 0:
        raise EvaluationError(
            f"The drift of {name!r} needs rows in both windows. Got {len(ref)} and {len(cur)}."
        )
    ref_missing, cur_missing = np.isnan(ref), np.isnan(cur)
    rv, cv = np.sort(ref[~ref_missing]), cur[~cur_missing]  # (one sort gives the bins, counts and median)
    starts = np.flatnonzero(np.r_[True, rv[1:] != rv[:-1]]) if len(rv) else np.zeros(0, dtype=np.int64)
    if len(starts) <= 2 * bins:  # a bin per reference value, then one for any other value
        distinct = rv[starts]
        r_counts = np.append(np.diff(np.append(starts, len(rv))), 0)
        ci = np.searchsorted(distinct, cv)
        known = ci < len(distinct)
        known[known] = distinct[ci[known]] == cv[known]
        ci = np.where(known, ci, len(distinct))
        n_bins = len(distinct) + 1
    else:  # quantile bins of the reference values: values beyond them fall in the edge bins
        edges = np.unique(np.quantile(rv, np.arange(1, bins) / bins))
        # bin k holds edges[k-1] <= v < edges[k] (as searchsorted(edges, v, "right") places a current value)
        r_counts = np.diff(np.searchsorted(rv, edges, side="left"), prepend=0, append=len(rv))
        ci = np.searchsorted(edges, cv, side="right")
        n_bins = len(edges) + 1
    r = np.append(r_counts, ref_missing.sum()) / len(ref)
    c = np.append(np.bincount(ci, minlength=n_bins), cur_missing.sum()) / len(cur)
    r, c = np.maximum(r, FLOOR), np.maximum(c, FLOOR)
    psi = float(((c - r) * np.log(c / r)).sum())
    if len(cv) == 0:
        beyond = 0.0
    elif len(rv) == 0:
        beyond = 1.0
    else:
        beyond = float(((cv < rv[0]) | (cv > rv[-1])).mean())
    return FeatureDrift(
        name,
        psi,
        level(psi),
        float(ref_missing.mean()),
        float(cur_missing.mean()),
        beyond,
        _median(rv, is_sorted=True),
        _median(cv),
    )


def _ranked(drifts: Sequence[FeatureDrift]) -> tuple[FeatureDrift, ...]:
    return tuple(sorted(drifts, key=lambda d: (-d.psi, d.feature)))


def feature_drift(
    reference: npt.ArrayLike, current: npt.ArrayLike, names: Sequence[str], bins: int = BINS
) -> tuple[FeatureDrift, ...]:
    """Each column's drift (:func:`column_drift`), largest PSI first. ``reference`` (n, d) and ``current``
    (m, d) are matrices of the same ``d`` features, named by ``names``: NumPy arrays, or what
    ``np.asarray(x, dtype=float)`` reads as one (lists of rows, a pandas DataFrame); an
    :class:`EvaluationError` names the one that is not (rows of different lengths, a text)."""
    reference, current = (_matrix(m, p) for m, p in ((reference, "reference"), (current, "current")))
    if reference.ndim != 2 or current.ndim != 2 or not reference.shape[1] == current.shape[1] == len(names):
        raise EvaluationError(
            f"feature_drift needs two (rows, {len(names)}) matrices, one column per name. Got "
            f"{reference.shape} and {current.shape}."
        )
    return _ranked([column_drift(n, reference[:, j], current[:, j], bins) for j, n in enumerate(names)])


def _matrix(values: npt.ArrayLike, param: str) -> np.ndarray:
    """``values`` (the ``param`` of feature_drift) as a float array; an :class:`EvaluationError` naming the
    parameter when NumPy cannot read it as one (it reached ``.ndim`` of a list as an AttributeError)."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        why = "rows of different lengths" if "inhomogeneous" in str(e) else str(e).splitlines()[0][:120]
        raise EvaluationError(
            f"The '{param}' of feature_drift must be a (rows, features) matrix of numbers (a NumPy array, a "
            f"list of equal rows, a DataFrame). Got {inputs.kind(values)}: {why}."
        ) from None


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


@dataclass(frozen=True)
class DriftReport:
    """The drift of a feature set's features from a reference window to a current one ([start, end), UTC;
    None: the log's start or end)."""

    feature_set: str
    reference: tuple[str | None, str | None]
    current: tuple[str | None, str | None]
    reference_rows: int
    current_rows: int
    sampled: bool  # a window held more than MAX_ROWS rows: an evenly spaced sample of them was compared
    features: tuple[FeatureDrift, ...]  # largest PSI first
    against: str | None = None  # the models whose training window is the reference
    max_rows: int = MAX_ROWS  # rows of a window compared at most
    fm_rows: int | None = None  # charges of a window whose foundation-model outputs were compared, at most
    model: str | None = None  # the model whose features are compared (payfm features drift --model)
    # The windows ("reference", "current") holding charges the foundation model whose outputs are compared
    # was pretrained on: its outputs there are in-sample for it. ``fm_seen_until``: its pretraining's end
    # (None with windows seen: the checkpoint records none, it saw the whole log).
    fm_seen: tuple[str, ...] = ()
    fm_seen_until: str | None = None

    def count(self, of_level: str) -> int:
        return sum(d.level == of_level for d in self.features)

    def summary(self, top: int = 3) -> str:
        """One line: how many features shifted, and the largest shifts."""
        major, moderate = self.count("major"), self.count("moderate")
        head = (
            f"{major} of {len(self.features)} features shifted (PSI >= {MAJOR:g}), {moderate} moderately "
            f"(>= {MODERATE:g})"
        )
        shown = [d for d in self.features[:top] if d.level != "stable"]
        each = ", ".join(
            f"{d.feature} {d.psi:.2f}" + (f" ({d.beyond:.0%} beyond the reference range)" if d.beyond else "")
            for d in shown
        )
        return f"{head}{f'; largest: {each}' if shown else ''}{self._seen_text()}"

    def _seen_text(self) -> str:
        """What the summary says of the windows' charges the foundation model was pretrained on."""
        if not self.fm_seen:
            return ""
        until = (self.fm_seen_until or "")[:16].replace("T", " ") or "the end of the log"
        if len(self.fm_seen) == 2:
            return (
                f"; the foundation model was pretrained on charges up to {until}, of both windows: its "
                "outputs' drift compares charges it saw"
            )
        return (
            f"; the foundation model was pretrained on charges up to {until}, {self.fm_seen[0]} ones among "
            "them: its outputs' drift includes seen against unseen charges"
        )

    def rows_text(self) -> str:
        """How many charges each window held, and whether a sample of them was compared."""
        most = max(self.reference_rows, self.current_rows)
        parts = [f"at most {self.max_rows:,} of each compared"] if most > self.max_rows else []
        if self.fm_rows is not None and most > self.fm_rows:
            parts.append(f"the foundation model's outputs on at most {self.fm_rows:,} of each")
        sample = f" ({'; '.join(parts)}, evenly spaced)" if parts else ""
        return f"{self.reference_rows:,} reference and {self.current_rows:,} current charges{sample}"

    def window_text(self) -> str:
        def span(w: tuple[str | None, str | None]) -> str:
            lo, hi = (w[0] or "the start")[:16], (w[1] or "the end")[:16]
            return f"{lo.replace('T', ' ')} .. {hi.replace('T', ' ')}"

        return f"reference {span(self.reference)}, current {span(self.current)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "feature_set": self.feature_set,
            "against": self.against,
            "model": self.model,
            "reference": list(self.reference),
            "current": list(self.current),
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "sampled": self.sampled,
            "max_rows": self.max_rows,
            "fm_rows": self.fm_rows,
            "fm_seen": list(self.fm_seen),
            "fm_seen_until": self.fm_seen_until,
            "thresholds": {"moderate": MODERATE, "major": MAJOR},
            "counts": {lv: self.count(lv) for lv in LEVELS},
            "features": [d.to_json() for d in self.features],
        }


# A window's bounds, [start, end): aware datetimes, dates (their midnight UTC) or ISO texts (UTC when they
# name no zone), as --from and --to take them; None is the log's start or end.
Window = tuple[datetime | date | str | None, datetime | date | str | None]


def _bounds(window: Window, which: str) -> tuple[datetime | None, datetime | None]:
    """``window`` as UTC datetimes; an error naming the bound otherwise."""
    out = []
    for side, value in zip(("start", "end"), window, strict=True):
        t = time_bound(value, f"The drift's {which} {side}", EvaluationError)
        out.append(None if t is None else t.astimezone(UTC))
    start, end = out
    if start is not None and end is not None and start >= end:
        raise EvaluationError(
            f"The drift's {which} window must end after it starts. Got {start.isoformat()} .. "
            f"{end.isoformat()}."
        )
    return start, end


def _filters(window: tuple[datetime | None, datetime | None]) -> list[tuple[str, str, Any]] | None:
    out: list[tuple[str, str, Any]] = []
    if window[0] is not None:
        out.append(("created", ">=", window[0]))
    if window[1] is not None:
        out.append(("created", "<", window[1]))
    return out or None


def _rows(n: int, max_rows: int) -> np.ndarray | None:
    """Evenly spaced row indices when ``n`` exceeds ``max_rows`` (None: every row)."""
    return None if n <= max_rows else np.linspace(0, n - 1, max_rows).round().astype(np.int64)


def _values(table: Any, name: str, pick: np.ndarray | None) -> np.ndarray:
    """Column ``name`` of ``table`` as float64 (NaN for null), its rows ``pick`` only when given."""
    values: np.ndarray = table.column(name).cast("float64").to_numpy(zero_copy_only=False)
    return values if pick is None else values[pick]


def window_drift(
    ws: Workspace,
    fset: FeatureSet,
    reference: Window,
    current: Window,
    *,
    max_rows: int = MAX_ROWS,
    against: str | None = None,
    model: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    fm: tuple[str | Path, Sequence[str]] | None = None,
    fm_max_rows: int = FM_MAX_ROWS,
) -> DriftReport:
    """The drift of ``fset``'s features (its backfill, computed first when missing or stale) from the charges
    created in ``reference`` to those in ``current``, each a [start, end) pair of aware datetimes (None: the
    log's start or end). A window without charges is an error naming it and the backfill's range.
    ``progress(done, total)`` is called as features are compared. ``fm``: a foundation-model checkpoint and
    the outputs a model takes from it (embedding, surprise), compared too, each output dimension as a
    feature, on an evenly spaced sample of at most ``fm_max_rows`` charges of each window."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from payfm.features.training_set import backfill_path

    if max_rows < 1:
        raise EvaluationError(f"The drift's max_rows must be at least 1. Got {max_rows}.")
    windows = {"reference": _bounds(reference, "reference"), "current": _bounds(current, "current")}
    path = backfill_path(ws, fset)
    names = list(fset.names)
    counts: dict[str, int] = {}
    picks: dict[str, np.ndarray | None] = {}
    for which, window in windows.items():
        created = pq.read_table(path, columns=["created"], filters=_filters(window)).column("created")
        counts[which] = len(created)
        if not len(created):
            whole = pq.read_table(path, columns=["created"]).column("created")
            lo, hi = pc.min(whole).as_py(), pc.max(whole).as_py()
            got = f"{_iso(window[0]) or 'the start'} .. {_iso(window[1]) or 'the end'}"
            held = "is empty (the log holds no charges)"
            held = f"runs from {_iso(lo)} to {_iso(hi)}" if lo is not None else held
            raise EvaluationError(
                f"The {which} window of the drift ({got}) holds no charges of the backfill, which {held}."
            )
        picks[which] = _rows(len(created), max_rows)
    drifts: list[FeatureDrift] = []
    for at in range(0, len(names), _COLUMNS_AT_ONCE):
        chunk = names[at : at + _COLUMNS_AT_ONCE]
        parts = {
            which: pq.read_table(path, columns=chunk, filters=_filters(w)) for which, w in windows.items()
        }
        for name in chunk:
            ref, cur = (_values(parts[w], name, picks[w]) for w in windows)
            drifts.append(column_drift(name, ref, cur))
        if progress:
            progress(min(at + _COLUMNS_AT_ONCE, len(names)), len(names))
    fm_sampled, fm_until = False, None
    fm_seen: tuple[str, ...] = ()
    if fm is not None:
        fm_drifts, fm_sampled = _fm_drift(ws, path, windows, counts, fm, fm_max_rows)
        drifts += fm_drifts
        fm_seen, fm_until = _seen_windows(fm[0], windows)
    return DriftReport(
        feature_set=fset.name,
        reference=(_iso(windows["reference"][0]), _iso(windows["reference"][1])),
        current=(_iso(windows["current"][0]), _iso(windows["current"][1])),
        reference_rows=counts["reference"],
        current_rows=counts["current"],
        sampled=any(p is not None for p in picks.values()) or fm_sampled,
        fm_rows=fm_max_rows if fm is not None else None,
        features=_ranked(drifts),
        against=against,
        model=model,
        max_rows=max_rows,
        fm_seen=fm_seen,
        fm_seen_until=fm_until,
    )


def _seen_windows(
    checkpoint: str | Path, windows: dict[str, tuple[datetime | None, datetime | None]]
) -> tuple[tuple[str, ...], str | None]:
    """The windows holding charges ``checkpoint`` was pretrained on (those starting before its pretraining
    ended; every window when it records no end: it saw the whole log), and that end as ISO text."""
    from payfm.fm.identity import checkpoint_meta, seen_until

    until_us = seen_until(checkpoint_meta(Path(checkpoint)))
    until = None if until_us is None else datetime.fromtimestamp(until_us / 1e6, UTC)
    seen = tuple(
        which for which, (start, _) in windows.items() if until is None or start is None or start < until
    )
    return seen, None if until is None else until.isoformat()


def _fm_drift(
    ws: Workspace,
    path: Path,
    windows: dict[str, tuple[datetime | None, datetime | None]],
    counts: dict[str, int],
    fm: tuple[str | Path, Sequence[str]],
    max_rows: int,
) -> tuple[list[FeatureDrift], bool]:
    """The drift of a foundation model's outputs (``fm``: checkpoint, outputs) over the two windows'
    charges of the backfill at ``path``, at most ``max_rows`` of each; whether that sampled them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from payfm.fm.embed import outputs_for
    from payfm.fm.identity import checkpoint_meta, input_names

    if max_rows < 1:
        raise EvaluationError(f"The drift's fm_max_rows must be at least 1. Got {max_rows}.")
    checkpoint, outputs = fm
    ids = {}
    for which, window in windows.items():
        column = pq.read_table(path, columns=["charge_id"], filters=_filters(window)).column("charge_id")
        pick = _rows(counts[which], max_rows)
        ids[which] = column if pick is None else column.take(pick)
    both = pa.chunked_array([*ids["reference"].chunks, *ids["current"].chunks]).combine_chunks()
    values = outputs_for(ws, checkpoint, both, tuple(outputs))
    n_ref = len(ids["reference"])
    names = input_names(checkpoint_meta(Path(checkpoint)), tuple(outputs))
    drifts = [column_drift(n, values[:n_ref, j], values[n_ref:, j]) for j, n in enumerate(names)]
    return drifts, any(counts[w] > max_rows for w in windows)
