"""No leakage: events at or after a charge's time never change its features (property-based)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payfm.features.definitions import Aggregate, Derived, FeatureSet, RequestFeature
from payfm.features.offline import compute
from payfm.features.parity import compare
from streams import connect, random_log

H = timedelta(hours=1)
D = timedelta(days=1)
# One feature of every kind: each aggregation, filters, pairs, offsets, outcome sources, derived and request.
COVERAGE = FeatureSet(
    "coverage",
    (
        Aggregate("card", "count", window=H),
        Aggregate("card", "sum", "amount_usd", window=D),
        Aggregate("ip", "mean", "amount_usd", window=7 * D),
        Aggregate("device", "std", "amount_usd", window=7 * D),
        Aggregate("merchant", "min", "amount_usd", window=D),
        Aggregate("merchant", "max", "amount_usd", window=D, offset=H),
        Aggregate("card", "distinct", "ip_address", window=7 * D),
        Aggregate("card", "distinct", "device_id"),
        Aggregate("card", "last", "amount_usd"),
        Aggregate("customer", "since_prev"),
        Aggregate("customer", "since_first"),
        Aggregate("card_merchant", "first_seen"),
        Aggregate("card", "count", window=D, filter="declined"),
        Aggregate("card", "count", source="fraud_disputes"),
        Aggregate("merchant", "count", source="efws", window=7 * D),
        Aggregate("ip", "sum", "amount_usd", source="refunds"),
        RequestFeature("amount_usd", "amount_usd"),
        Derived("card.decline_rate_1d", "ratio", ("card.count_declined_1d", "card.sum_amount_usd_1d")),
    ),
)
US = 1_000_000


def _perturb(log: dict[str, pa.Table], cut_us: int, seed: int) -> dict[str, pa.Table]:
    """Change every event at or after ``cut_us``: shuffle amounts, keys and outcomes, add new ones."""
    rng = np.random.default_rng(seed)
    out = dict(log)
    ch = log["charges"]
    late = pc.greater_equal(pc.cast(ch["created"], pa.int64()), cut_us).to_numpy(zero_copy_only=False)
    amounts = ch["amount_usd"].to_numpy().copy()
    amounts[late] = rng.integers(0, 10**6, int(late.sum()))
    cards = np.array(ch["card_fingerprint"].to_pylist(), dtype=object)
    cards[late] = rng.choice(cards, int(late.sum()))
    ch = ch.set_column(ch.column_names.index("amount_usd"), "amount_usd", pa.array(amounts))
    ch = ch.set_column(
        ch.column_names.index("card_fingerprint"), "card_fingerprint", pa.array(cards.tolist())
    )
    # A new charge exactly at the cut, on an existing card.
    extra = ch.slice(0, 1).to_pylist()[0]
    extra.update(charge_id="ch_zzz_new", created=pa.scalar(cut_us, pa.timestamp("us", tz="UTC")).as_py())
    out["charges"] = pa.concat_tables([ch, pa.Table.from_pylist([extra], schema=ch.schema)])
    for name in ("disputes", "early_fraud_warnings", "refunds"):
        t = log[name]
        times = pc.cast(t["created"], pa.int64()).to_numpy()
        keep = times <= cut_us - 1  # outcomes before the cut stay
        moved = t.filter(pa.array(~keep))
        t2 = t.filter(pa.array(keep))
        if moved.num_rows:  # outcomes after the cut: pointed at other charges, new times after the cut
            ids = rng.choice(np.array(ch["charge_id"].to_pylist(), dtype=object), moved.num_rows).tolist()
            new_t = cut_us + rng.integers(0, 86_400, moved.num_rows) * US
            moved = moved.set_column(moved.column_names.index("charge_id"), "charge_id", pa.array(ids))
            moved = moved.set_column(
                moved.column_names.index("created"), "created", pa.array(new_t, pa.timestamp("us", tz="UTC"))
            )
            t2 = pa.concat_tables([t2, moved.cast(t.schema)])
        out[name] = t2
    return out


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), frac=st.floats(0.1, 0.9))
def test_events_at_or_after_t_never_change_features_before_t(seed: int, frac: float) -> None:
    log = random_log(seed, 400, span_us=10 * 86_400 * US, n_keys=4)
    times = np.unique(pc.cast(log["charges"]["created"], pa.int64()).to_numpy())
    cut = int(times[max(1, int(frac * len(times)))])  # a charge's own time: ties at the cut are exercised
    before = compute(connect(log), COVERAGE)
    after = compute(connect(_perturb(log, cut, seed)), COVERAGE)
    early = pc.less(pc.cast(before["created"], pa.int64()), cut)
    a = before.filter(early)
    ids = a["charge_id"]
    b = after.filter(pc.is_in(after["charge_id"], value_set=ids))
    assert a.num_rows > 0
    report = compare(a, b, COVERAGE.names)
    assert report.total_mismatches == 0, report.examples


def test_the_perturbation_does_change_later_features() -> None:
    # Guard against a vacuous property: the same perturbation moves features at or after the cut.
    log = random_log(11, 400, span_us=10 * 86_400 * US, n_keys=4)
    times = pc.cast(log["charges"]["created"], pa.int64()).to_numpy()
    cut = int(np.quantile(times, 0.5))
    before = compute(connect(log), COVERAGE)
    after = compute(connect(_perturb(log, cut, 11)), COVERAGE)
    late = pc.greater(pc.cast(before["created"], pa.int64()), cut)
    a = before.filter(late)
    b = after.filter(pc.is_in(after["charge_id"], value_set=a["charge_id"]))
    assert compare(a, b, COVERAGE.names).total_mismatches > 0
