"""Online/offline parity of each aggregate over each outcome source *alone in its set*. An outcome's state
update reads its charge's fields that the set's features need; a field only one feature reads must be among
them. Found by a review: an all-time `distinct` over disputes, warnings or refunds counted nothing online
(the column it counts was never kept for outcomes) unless another feature of the set read that column, as
every test's wider sets did."""

from __future__ import annotations

from datetime import timedelta

import pytest

from payfm.features.definitions import ALL_TIME_ONLY, LABEL_SOURCES, NEEDS_COLUMN, Aggregate, FeatureSet
from payfm.features.offline import compute
from payfm.features.parity import compare, replay
from streams import connect, label_outcomes, random_log

# distinct reads a column that is not the entity's key (merchant: keyed by merchant_id), the others amounts;
# a windowed distinct reads charges only.
COLUMN = {"distinct": "device_id"}
CASES = [
    (source, agg, window)
    for source in LABEL_SOURCES
    for agg in ("count", "sum", "mean", "min", "max", "std", "distinct", "last", "since_prev", "since_first")
    for window in ((None,) if agg in ALL_TIME_ONLY or agg == "distinct" else (None, timedelta(days=2)))
]


@pytest.fixture(scope="module")
def log() -> dict:  # type: ignore[type-arg]
    return random_log(5, 1500, n_keys=12)


@pytest.mark.parametrize(("source", "agg", "window"), CASES)
def test_each_outcome_aggregate_alone_matches_offline(
    log: dict, source: str, agg: str, window: object
) -> None:  # type: ignore[type-arg]
    column = COLUMN.get(agg, "amount_usd") if agg in NEEDS_COLUMN else None
    feature = Aggregate("merchant", agg, column, source=source, window=window)  # type: ignore[arg-type]
    fset = FeatureSet("alone", (feature,))
    offline = compute(connect(log), fset)
    report = compare(offline, replay(fset, log["charges"], label_outcomes(log)), fset.names)
    assert report.total_mismatches == 0, report.examples
    values = offline.column(feature.name).to_pylist()
    assert any(v not in (None, 0, 0.0) for v in values)  # the outcomes were counted: not a parity of zeros
