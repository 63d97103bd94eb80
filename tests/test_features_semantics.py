"""The time semantics of features, on hand-computed examples, in both engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from factories import charges as make_charges
from factories import disputes as make_disputes
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.features.definitions import Aggregate, Derived, FeatureSet, RequestFeature
from payfm.features.offline import backfill, compute
from payfm.features.online import OnlineFeatures
from payfm.features.parity import apply_log, log_outcomes, replay
from payfm.features.state import WindowState
from payfm.features.stores import MemoryStore
from streams import connect

T = datetime(2026, 3, 2, 10, 0, 30, tzinfo=UTC)


def _log() -> dict[str, pa.Table]:
    base = make_charges(4).to_pylist()
    when = {
        "ch_b": T,
        "ch_a": T,
        "ch_c": T.replace(hour=11, second=10),
        "ch_d": T.replace(hour=11, minute=1, second=0),
    }
    for row, (cid, ts) in zip(base, when.items(), strict=True):
        usd = 1000 * (ord(cid[-1]) - 96)  # (a usd charge: its amount is its amount_usd)
        row.update(charge_id=cid, created=ts, card_fingerprint="fp_cardA", amount=usd, amount_usd=usd)
    charges = pa.Table.from_pylist(base, schema=make_charges(1).schema)
    # A fraud dispute of ch_a at exactly ch_c's time: it counts for ch_c (its time has passed), not before.
    disputes = make_disputes(["ch_a"], when["ch_c"])
    empty_efw = pa.table({"efw_id": [], "charge_id": [], "created": [], "fraud_type": []})
    from payfm.events.schema import SCHEMAS

    return {
        "charges": charges,
        "disputes": disputes,
        "early_fraud_warnings": empty_efw.cast(SCHEMAS["early_fraud_warnings"]),
        "refunds": SCHEMAS["refunds"].empty_table(),
    }


FSET = FeatureSet(
    "semantics",
    (
        Aggregate("card", "count", window=timedelta(hours=1)),
        Aggregate("card", "sum", "amount_usd", window=timedelta(hours=1)),
        Aggregate("card", "count", source="fraud_disputes"),
        Aggregate("card", "first_seen"),
        Aggregate("card", "since_prev"),
        Aggregate("card", "mean", "amount_usd"),
        Aggregate("card", "std", "amount_usd"),
        RequestFeature("amount_usd", "amount_usd"),
        Derived(
            "card.amount_zscore",
            "zscore",
            ("amount_usd", "card.mean_amount_usd_all", "card.std_amount_usd_all"),
        ),
    ),
)

# Order: ch_a before ch_b (same time, smaller id), then ch_c (11:00:10), then ch_d (11:01:00).
# ch_c's 1h window starts at floor(11:00:10, 1 min) - 1 h = 10:00:00, so it sees ch_a and ch_b;
# ch_d's starts at 10:01:00, so it sees only ch_c. Amounts: a=$10, b=$20, c=$30, d=$40.
EXPECTED = {
    "ch_a": {
        "card.count_charges_1h": 0,
        "card.sum_amount_usd_1h": 0,
        "card.count_fraud_disputes_all": 0,
        "card.first_seen": 1,
        "card.since_prev": None,
        "card.mean_amount_usd_all": None,
    },
    "ch_b": {
        "card.count_charges_1h": 1,
        "card.sum_amount_usd_1h": 10.0,
        "card.count_fraud_disputes_all": 0,
        "card.first_seen": 0,
        "card.since_prev": 0.0,
        "card.mean_amount_usd_all": 10.0,
        "card.std_amount_usd_all": None,
    },
    "ch_c": {
        "card.count_charges_1h": 2,
        "card.sum_amount_usd_1h": 30.0,
        "card.count_fraud_disputes_all": 1,
        "card.first_seen": 0,
        "card.since_prev": 3580.0,
        "card.mean_amount_usd_all": 15.0,
        "card.std_amount_usd_all": pytest.approx(7.0710678118654755, rel=1e-12),
        "card.amount_zscore": pytest.approx((30 - 15) / 7.0710678118654755, rel=1e-12),
    },
    "ch_d": {
        "card.count_charges_1h": 1,
        "card.sum_amount_usd_1h": 30.0,
        "card.count_fraud_disputes_all": 1,
        "card.since_prev": 50.0,
        "card.mean_amount_usd_all": 20.0,
        "card.std_amount_usd_all": 10.0,
    },
}


def _rows(table: pa.Table) -> dict[str, dict[str, object]]:
    return {r["charge_id"]: r for r in table.to_pylist()}


@pytest.mark.parametrize("engine", ["offline", "online"])
def test_hand_computed_values(engine: str) -> None:
    log = _log()
    if engine == "offline":
        table = compute(connect(log), FSET)
    else:
        d = log["disputes"]
        table = replay(FSET, log["charges"], {"fraud_disputes": d, "efws": log["early_fraud_warnings"]})
    got = _rows(table)
    for cid, expected in EXPECTED.items():
        for name, value in expected.items():
            assert got[cid][name] == value, f"{engine}: {cid} {name}"


def test_idempotent_charges_and_outcomes() -> None:
    online = OnlineFeatures(tiny_set())
    charge = {"charge_id": "ch_1", "created_us": 10**15, "card_fingerprint": "fp_x", "amount_usd": 700}
    assert online.update(charge)
    assert not online.update(charge)
    later = {**charge, "charge_id": "ch_2", "created_us": 10**15 + 1}
    assert online.features(later)["card.count_charges_1h"] == 1.0
    assert online.apply_outcome("fraud_disputes", "dp_1", "ch_1", 10**15 + 1)
    assert not online.apply_outcome("fraud_disputes", "dp_1", "ch_1", 10**15 + 1)
    assert not online.apply_outcome("fraud_disputes", "dp_2", "ch_unknown", 10**15 + 1)
    assert online.features(later)["card.count_fraud_disputes_all"] == 1.0
    # Scoring the same charge again does not count it again.
    assert online.features_then_update(later)["card.count_charges_1h"] == 1.0
    assert online.features_then_update(later)["card.count_charges_1h"] == 2.0  # now it is in the state
    assert online.features_then_update(later)["card.count_charges_1h"] == 2.0  # and only once


def test_hot_key_state_stays_bounded() -> None:
    fset = FeatureSet("hot", (Aggregate("merchant", "count", window=timedelta(hours=1)),))
    online = OnlineFeatures(fset)
    t0 = 10**15
    for i in range(20_000):  # one charge every 15 s for 3.5 days at one merchant
        online.update({"charge_id": f"ch_{i}", "created_us": t0 + i * 15_000_000, "merchant_id": "mer_hot"})
    states = [s for s in online.store.states.values() if isinstance(s, WindowState)]  # type: ignore[attr-defined]
    assert len(states) == 1
    assert len(states[0].tiles) <= 62  # 60 one-minute tiles of the window, plus the current and one spare
    now = t0 + 20_000 * 15_000_000
    start = now // 60_000_000 * 60_000_000 - 3_600_000_000  # the tiled window start
    expected = sum(1 for i in range(20_000) if t0 + i * 15_000_000 >= start)
    last = {"charge_id": "ch_x", "created_us": now, "merchant_id": "mer_hot"}
    assert online.features(last)["merchant.count_charges_1h"] == expected


@pytest.mark.parametrize("processor_created", ["after", "before"])
def test_a_charges_fraud_disputes_count_once_in_every_engine_and_warm_path(
    tmp_path: Path, processor_created: str
) -> None:
    """A review closed as `disputed` records dispute dp_review_<charge>; the processor's dispute of the same
    charge that arrives after it is the same dispute. The counted one is the review's (online it arrived
    first: a closure implies a dispute only when the charge has none), also when the processor's was created
    earlier and delivered late. Offline (both engines, SQL and workspace reads), replays of the log, a state
    warmed from it and the live state all count that one only."""
    log = _log()
    c_time = log["charges"].filter(pc.equal(log["charges"]["charge_id"], "ch_c"))["created"][0].as_py()
    later = c_time + timedelta(seconds=20)  # before ch_d (c_time + 50 s)
    review_at, processor_at = (c_time, later) if processor_created == "after" else (later, c_time)
    [row] = make_disputes(["ch_a"], review_at).to_pylist()
    review = pa.Table.from_pylist([row | {"dispute_id": "dp_review_ch_a"}], schema=log["disputes"].schema)
    processor = make_disputes(["ch_a"], processor_at)  # dp_0
    log["disputes"] = pa.concat_tables([review, processor])
    # as of ch_c and ch_d: the review's dispute, counted from its own time
    want = [1, 1] if processor_created == "after" else [0, 1]
    for engine in ("columnar", "duckdb"):
        got = _rows(compute(connect(log), FSET, engine=engine))
        assert [got[c]["card.count_fraud_disputes_all"] for c in ("ch_c", "ch_d")] == want, engine
    if processor_created == "after":  # the log in time order is the arrival order
        online = _rows(replay(FSET, log["charges"], {"fraud_disputes": log["disputes"]}))
        assert [online[c]["card.count_fraud_disputes_all"] for c in ("ch_c", "ch_d")] == want

    ws = Workspace.open(tmp_path, create=True)
    with ws.writer() as w:
        for name, table in log.items():
            w.write(name, table)
    path, _ = backfill(ws, FSET)  # the columnar engine on the workspace's files
    got = _rows(pq.read_table(path))
    assert [got[c]["card.count_fraud_disputes_all"] for c in ("ch_c", "ch_d")] == want
    online = _rows(replay(FSET, log["charges"], log_outcomes(ws)))  # a replay of the log: the counted one
    assert [online[c]["card.count_fraud_disputes_all"] for c in ("ch_c", "ch_d")] == want
    probe = {"charge_id": "ch_probe", "created_us": 10**17, "card_fingerprint": "fp_cardA", "amount_usd": 1}
    warmed, by_event = OnlineFeatures(FSET), OnlineFeatures(FSET, store=MemoryStore())
    apply_log(warmed, ws)  # a fresh in-memory state: built column by column
    by_event.update(probe | {"charge_id": "ch_first", "created_us": 0})  # in use: applied event by event
    apply_log(by_event, ws)
    assert warmed.features(probe)["card.count_fraud_disputes_all"] == 1.0
    assert by_event.features(probe)["card.count_fraud_disputes_all"] == 1.0
    # live: the review's dispute arrived first; the processor's after it is not applied again
    fresh = OnlineFeatures(FSET)
    for row in log["charges"].to_pylist():
        fresh.update(row | {"created_us": int(row["created"].timestamp() * 1e6)})
    assert fresh.apply_outcome("fraud_disputes", "dp_review_ch_a", "ch_a", int(review_at.timestamp() * 1e6))
    assert not fresh.apply_outcome("fraud_disputes", "dp_0", "ch_a", int(processor_at.timestamp() * 1e6))
    assert fresh.features(probe)["card.count_fraud_disputes_all"] == 1.0
