"""Breakdowns of an operating point by a dimension of the charge: fraud scenario, channel, merchant size,
country. For each group: charges, fraud, flagged, caught, recall (with a bootstrap interval), precision
and block rate at one threshold.

Example:
    >>> import numpy as np
    >>> codes, names = group_labels(["web", "web", "pos"])
    >>> rows = slice_table("channel", codes, names, np.array([1.0, 1, 0]), np.array([True, False, True]),
    ...                    rng=np.random.default_rng(0), resamples=10)
    >>> [(r.group, r.recall, r.precision) for r in rows]
    [('web', 0.5, 1.0), ('pos', nan, 0.0)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.evaluation.bootstrap import Interval, proportion_interval
from payfm.evaluation.checks import BoolArray, FloatArray, IntArray

NONE_GROUP = "(none)"
# merchant size buckets by the merchant's number of charges in the evaluated window (upper bounds, exclusive)
MERCHANT_SIZE_EDGES = (100, 1_000, 10_000)
MERCHANT_SIZE_NAMES = ("small (<100 charges)", "medium (100-999)", "large (1k-9,999)", "very large (10k+)")


@dataclass(frozen=True)
class SliceRow:
    """One group of a breakdown at one threshold. ``recall`` is NaN without fraud, ``precision`` without
    flagged charges."""

    dimension: str
    group: str
    charges: int
    fraud: int
    flagged: int
    caught: int
    recall: float
    recall_low: float
    recall_high: float
    precision: float
    block_rate: float


Groups = tuple[IntArray, list[str]]  # a group code per charge, and the name of each code


def group_labels(values: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> Groups:
    """Group codes of string values (Arrow dictionary encoding); missing values are ``"(none)"``."""
    codes, dictionary = _encode(values)
    return codes, [str(x) for x in dictionary.to_pylist()]


def group_codes(values: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> IntArray:
    """The codes of :func:`group_labels` alone (no Python strings: fast for a million card ids)."""
    return _encode(values)[0]


def _encode(values: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> tuple[IntArray, pa.Array]:
    arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values, pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    enc = pc.fill_null(arr.cast(pa.string()), NONE_GROUP).dictionary_encode()
    codes: IntArray = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, enc.dictionary


def merchant_size(merchant_id: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> Groups:
    """Each charge's merchant size bucket, from its merchant's number of charges in ``merchant_id``."""
    merchant = group_codes(merchant_id)
    per_charge = np.bincount(merchant)[merchant]
    bucket = np.searchsorted(np.asarray(MERCHANT_SIZE_EDGES), per_charge, side="right").astype(np.int64)
    return bucket, list(MERCHANT_SIZE_NAMES)


NO_INTERVAL = Interval(float("nan"), float("nan"), 0.95, 0)


def slice_table(
    dimension: str,
    codes: IntArray,
    names: Sequence[str],
    y: FloatArray,
    flagged: BoolArray,
    *,
    rng: np.random.Generator,
    resamples: int = 200,
    level: float = 0.95,
) -> list[SliceRow]:
    """One :class:`SliceRow` per group with charges, the groups with the most fraud first (then by name)."""
    inverse = codes
    k = len(names)
    charges = np.bincount(inverse, minlength=k)
    fraud = np.bincount(inverse, weights=y, minlength=k).astype(np.int64)
    flag = np.bincount(inverse, weights=flagged.astype(np.float64), minlength=k).astype(np.int64)
    caught = np.bincount(inverse, weights=y * flagged, minlength=k).astype(np.int64)
    rows = []
    for g in sorted((i for i in range(k) if charges[i] > 0), key=lambda i: (-fraud[i], names[i])):
        iv = (
            proportion_interval(int(caught[g]), int(fraud[g]), resamples=resamples, rng=rng, level=level)
            if resamples
            else NO_INTERVAL  # the bootstrap turned off: no interval, not the spread of a single draw
        )
        rows.append(
            SliceRow(
                dimension=dimension,
                group=str(names[g]),
                charges=int(charges[g]),
                fraud=int(fraud[g]),
                flagged=int(flag[g]),
                caught=int(caught[g]),
                recall=float(caught[g] / fraud[g]) if fraud[g] else float("nan"),
                recall_low=iv.low,
                recall_high=iv.high,
                precision=float(caught[g] / flag[g]) if flag[g] else float("nan"),
                block_rate=float(flag[g] / charges[g]),
            )
        )
    return rows
