"""The compiled online engine: aggregate shapes the default set does not use, against the offline backfill;
the columnar warm-up against event-by-event application; late events; snapshot formats; Redis records."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from payfm.errors import PayfmError
from payfm.events.workspace import Workspace
from payfm.features import parity, warm
from payfm.features.catalog import default_set
from payfm.features.definitions import Aggregate, Derived, FeatureSet, RequestFeature
from payfm.features.offline import compute
from payfm.features.online import OnlineFeatures
from payfm.features.online_plan import plan
from payfm.features.parity import apply_log, compare, replay
from payfm.features.request import derive, request_value
from payfm.features.state import FORMAT, WindowState, state_to_json
from payfm.features.stores import MemoryStore, SnapshotError, StateStore
from services import REDIS_URL, require_redis
from streams import connect, label_outcomes, random_log

H = timedelta(hours=1)
D = timedelta(days=1)
M = timedelta(minutes=1)

# Filters on extremes, distinct counts with a filter, times and extremes of outcome sources, offsets, pairs:
# several slots (source, filter) and cells share one state per (entity, resolution).
WIDE = FeatureSet(
    "wide",
    (
        Aggregate("card", "min", "amount_usd", window=2 * H, filter="declined"),
        Aggregate("card", "max", "amount_usd", window=D),
        Aggregate("card", "max", "amount_usd", window=30 * M, offset=10 * M),
        Aggregate("card", "count", window=D, source="fraud_disputes"),
        Aggregate("ip", "distinct", "card_fingerprint", window=H, filter="ecommerce"),
        Aggregate("card", "distinct", "merchant_id"),
        Aggregate("card", "since_prev", source="refunds"),
        Aggregate("merchant", "since_first", source="fraud_disputes"),
        Aggregate("device", "first_seen", filter="declined"),
        Aggregate("customer", "min", "amount_usd", source="refunds"),
        Aggregate("customer", "max", "amount_usd", source="refunds"),
        Aggregate("card", "last", "amount_usd", source="refunds"),  # an outcome's own amount, as min/max
        Aggregate("merchant", "last", "amount_usd", source="fraud_disputes"),
        Aggregate("customer", "last", "amount_usd", filter="card_present"),
        Aggregate("customer", "mean", "amount_usd", filter="declined"),
        Aggregate("merchant", "std", "amount_usd", window=2 * D, source="efws"),
        Aggregate("merchant", "mean", "amount_usd", window=D, filter="authorized", offset=D),
        Aggregate("card_ip", "sum", "amount_usd", window=3 * D),
        Aggregate("email", "count", window=7 * D, source="refunds", filter="ecommerce"),
        RequestFeature("amount_usd", "amount_usd"),
        Derived("card.amount_to_max_1d", "ratio", ("amount_usd", "card.max_amount_usd_1d")),
    ),
)


def test_states_are_shared_per_entity_and_resolution() -> None:
    plans = plan(WIDE)
    keys = [(sp.entity, sp.res) for sp in plans]
    assert len(keys) == len(set(keys))
    card_hour = next(sp for sp in plans if sp.entity == "card" and sp.res == 3_600_000_000)
    # charges unfiltered (max 1d) and fraud disputes: two slots, one state
    assert {(s.source, s.filter) for s in card_hour.slots} == {("charges", None), ("fraud_disputes", None)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_set_parity_on_random_streams(seed: int) -> None:
    log = random_log(seed, 2000, span_us=6 * 86_400_000_000, n_keys=5 + 10 * seed)
    offline = compute(connect(log), WIDE)
    online = replay(WIDE, log["charges"], label_outcomes(log))
    report = compare(offline, online, WIDE.names)
    assert report.charges == 2000
    assert report.total_mismatches == 0, {k: report.examples[k] for k, v in report.mismatches.items() if v}
    # Not vacuous: the rarer features take values.
    for name in WIDE.names:
        assert online[name].null_count < online.num_rows, name


def test_inlined_request_and_derived_formulas_equal_the_reference_ones() -> None:
    fset = default_set()
    online = OnlineFeatures(fset)
    rows = random_log(9, 400)["charges"].to_pylist()
    position = {n: i for i, n in enumerate(fset.names)}
    checked = 0
    for row in rows:
        ts = int(row["created"].timestamp() * 1_000_000)
        cred = row["credential_changed_at"]
        row.update(
            created_us=ts, credential_changed_at_us=None if cred is None else int(cred.timestamp() * 1e6)
        )
        got = online.vector_then_update(row)
        for f in fset.features:
            if isinstance(f, RequestFeature):
                want = request_value(f, row, ts)
            elif isinstance(f, Derived):
                want = derive(f, [got[position[x]] for x in f.inputs])
            else:
                continue
            assert got[position[f.name]] == want, f.name
            checked += want is not None
    assert checked > 400 * 10


def _workspace(tmp_path: Path, log: dict[str, Any]) -> Workspace:
    ws = Workspace.open(tmp_path / "ws", create=True)
    with ws.writer("replace") as w:
        for table in ("charges", "disputes", "early_fraud_warnings", "refunds"):
            w.write(table, log[table])
    return ws


def _probes(ws: Workspace, n: int = 300) -> list[dict[str, Any]]:
    rows = ws.read("charges").sort_by("created").to_pylist()
    last = int(rows[-1]["created"].timestamp() * 1_000_000)
    rng = np.random.default_rng(0)
    out = []
    for i, j in enumerate(rng.choice(len(rows), n, replace=False).tolist()):
        probe = dict(rows[j])
        later = [0, 59 * 60, 2 * 3600, 86_400, 10 * 86_400][i % 5] * 1_000_000
        probe.update(charge_id=f"ch_probe_{i}", created_us=last + later, credential_changed_at_us=None)
        out.append(probe)
    return out


@pytest.mark.parametrize("fset", [default_set(), WIDE], ids=["default", "wide"])
def test_columnar_warm_up_equals_applying_events_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fset: FeatureSet
) -> None:
    ws = _workspace(tmp_path, random_log(11, 1500, span_us=10 * 86_400_000_000, n_keys=12))
    built: list[int] = []
    states = warm.states

    def spy(*args: Any) -> Any:
        out = states(*args)
        built.append(0 if out is None else len(out))
        return out

    monkeypatch.setattr(warm, "states", spy)
    fast = OnlineFeatures(fset)
    assert apply_log(fast, ws) == 1500
    assert built and built[0] > 0  # the columnar path ran
    monkeypatch.setattr(parity, "_warm_columnar", lambda *args: False)
    slow = OnlineFeatures(fset)
    apply_log(slow, ws)
    a, b = fast.store, slow.store
    assert isinstance(a, MemoryStore) and isinstance(b, MemoryStore)
    assert a.charges == b.charges and a.outcomes == b.outcomes and a.watermark_us == b.watermark_us
    assert a.states.keys() == b.states.keys()
    for probe in _probes(ws):
        assert fast.features(probe) == slow.features(probe), probe["charge_id"]
    # Applying the log again changes nothing (the event path, every id already claimed).
    again = _probes(ws, 20)
    before = [fast.features(p) for p in again]
    apply_log(fast, ws)
    assert [fast.features(p) for p in again] == before


def test_columnar_warm_up_declines_repeated_outcome_ids_and_counts_a_charges_fraud_dispute_once() -> None:
    log = random_log(3, 200)
    charges = log["charges"].sort_by([("created", "ascending"), ("charge_id", "ascending")])
    ts = np.array([int(t.timestamp() * 1_000_000) for t in charges["created"].to_pylist()], dtype=np.int64)
    d = log["disputes"]
    ids = d["dispute_id"].to_pylist()
    times = np.array([int(t.timestamp() * 1_000_000) for t in d["created"].to_pylist()], dtype=np.int64)
    cids = d["charge_id"].to_pylist()
    money = d["amount"].to_pylist(), d["currency"].to_pylist()
    assert warm.events(charges, ts, [("refunds", times, ids, cids, *money)]) is not None
    twice = [("refunds", np.concatenate([times, times]), ids + ids, cids + cids, money[0] * 2, money[1] * 2)]
    assert warm.events(charges, ts, twice) is None  # repeated ids: event by event instead
    # A charge's fraud disputes count once (the first): its later ones are left out, not declined.
    once = warm.events(charges, ts, [("fraud_disputes", times, ids, cids, *money)])
    later = [f"dp_again_{i}" for i in ids]
    again = warm.events(
        charges,
        ts,
        [
            (
                "fraud_disputes",
                np.concatenate([times, times + 1]),
                ids + later,
                cids * 2,
                money[0] * 2,
                money[1] * 2,
            )
        ],
    )
    assert once is not None and again is not None and len(once[0].row) > len(charges)
    assert np.array_equal(again[0].row, once[0].row) and np.array_equal(again[0].ts, once[0].ts)
    assert again[1] == once[1]  # the same claims


def test_late_events_end_in_the_same_state_as_in_order() -> None:
    fset = FeatureSet(
        "late",
        (
            Aggregate("card", "count", window=H),
            Aggregate("card", "max", "amount_usd", window=H),
            Aggregate("card", "distinct", "merchant_id", window=D),
            Aggregate("card", "std", "amount_usd", window=7 * D),
        ),
    )
    t0 = 10**15
    rng = np.random.default_rng(5)
    charges = [
        {
            "charge_id": f"ch_{i}",
            "created_us": t0 + int(rng.integers(0, 3 * 86_400)) * 1_000_000,
            "card_fingerprint": "fp_1",
            "merchant_id": f"mer_{int(rng.integers(0, 9))}",
            "amount_usd": int(rng.integers(1, 10_000)),
        }
        for i in range(400)
    ]
    in_order = OnlineFeatures(fset)
    for c in sorted(charges, key=lambda c: (c["created_us"], c["charge_id"])):
        in_order.update(c)
    shuffled = OnlineFeatures(fset)
    for c in charges:  # random order: most events arrive late
        shuffled.update(c)
    end = max(c["created_us"] for c in charges)
    for later in (0, 1_800_000_000, 86_400_000_000):
        probe = {"charge_id": "ch_probe", "created_us": end + later, "card_fingerprint": "fp_1"}
        assert shuffled.features(probe) == in_order.features(probe)
    assert in_order.features(probe)["card.count_charges_1h"] == 0.0  # a day later: the hour is empty


def test_hot_key_cells_stay_aligned_and_bounded() -> None:
    fset = FeatureSet(
        "hot",
        (
            Aggregate("merchant", "min", "amount_usd", window=H),
            Aggregate("merchant", "distinct", "card_fingerprint", window=H),
        ),
    )
    online = OnlineFeatures(fset)
    t0 = 10**15
    for i in range(6000):  # one charge every 20 s for 33 hours, 500 cards
        online.update(
            {
                "charge_id": f"ch_{i}",
                "created_us": t0 + i * 20_000_000,
                "merchant_id": "mer_hot",
                "card_fingerprint": f"fp_{i % 500}",
                "amount_usd": 1000 + i % 77,
            }
        )
    assert isinstance(online.store, MemoryStore)
    (st,) = online.store.states.values()
    assert isinstance(st, WindowState)
    assert len(st.tiles) <= 62 and len(st.ext[0]) == len(st.tiles) + 1
    assert st.lasts[0] == sorted(st.seen[0].values()) and len(st.seen[0]) <= 500
    probe = {"charge_id": "ch_p", "created_us": t0 + 6000 * 20_000_000, "merchant_id": "mer_hot"}
    got = online.features(probe)
    assert got["merchant.min_amount_usd_1h"] == 10.0  # amount 1000 recurs every 77 charges
    start = probe["created_us"] // 60_000_000 - 60  # the first tile of the window
    recent = {i % 500 for i in range(6000) if (t0 + i * 20_000_000) // 60_000_000 >= start}
    assert got["merchant.distinct_card_fingerprint_1h"] == len(recent) > 170


def test_a_snapshot_of_an_older_format_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    fset = default_set()
    old = tmp_path / "old.json.gz"
    with gzip.open(old, "wt") as f:  # format 1: no "format" in the head, one state per group
        f.write(json.dumps({"version": fset.version, "watermark_us": 5, "outcomes": []}) + "\n{}\n")
        f.write(json.dumps([0, "fp_1", ["t", [1, 500, 250000], [None], [None], [None], [[]], 1, 1]]) + "\n")
    with pytest.raises(SnapshotError, match=f"format 1; this payfm reads format {FORMAT}") as e:
        MemoryStore.restore(old, fset.version)
    assert isinstance(e.value, PayfmError) and isinstance(e.value, ValueError)
    online = OnlineFeatures(fset)
    online.update({"charge_id": "ch_1", "created_us": 10**15, "card_fingerprint": "fp_1", "amount_usd": 5})
    assert isinstance(online.store, MemoryStore)
    online.store.snapshot(tmp_path / "new.json.gz", fset.version)
    assert MemoryStore.restore(tmp_path / "new.json.gz", fset.version).charges.keys() == {"ch_1"}


def test_redis_records_keep_every_state_of_a_key(tmp_path: Path) -> None:
    require_redis(REDIS_URL)
    from payfm.features.redis_store import RedisStore

    store = RedisStore(REDIS_URL, WIDE, prefix=f"payfm-test-{uuid.uuid4().hex[:8]}")
    try:
        log = random_log(8, 500, span_us=5 * 86_400_000_000)
        offline = compute(connect(log), WIDE)
        # Outcome events write only some states of a record; the others must survive the write.
        online = replay(WIDE, log["charges"], label_outcomes(log), online=OnlineFeatures(WIDE, store))
        report = compare(offline, online, WIDE.names)
        assert report.total_mismatches == 0, report.examples
        names = [k.decode() for k in store.client.scan_iter(f"{store.ns}:*", count=1000)]
        assert any(":e:card:" in n for n in names) and any(":p:card_ip:" in n for n in names)
    finally:
        store.clear()


@pytest.mark.parametrize("fset", [default_set(), WIDE], ids=["default", "wide"])
def test_read_update_equals_read_then_write(fset: FeatureSet) -> None:
    # The decision path reads and updates state by state (read_update); it must equal reading every state
    # first, then updating (read, write_charges), and change nothing for a charge already applied.
    log = random_log(5, 600, span_us=3 * 86_400_000_000, n_keys=8)
    rows = log["charges"].sort_by([("created", "ascending"), ("charge_id", "ascending")]).to_pylist()
    fused, split = OnlineFeatures(fset), OnlineFeatures(fset)
    write = split.engine.write["charges"]
    assert isinstance(split.store, MemoryStore)
    for row in rows:
        row["created_us"] = int(row["created"].timestamp() * 1_000_000)
        row["credential_changed_at_us"] = None
        expected = split.vector(row)
        write(split.store.states, split.engine.keys(row), row, row["created_us"], row["charge_id"])
        assert fused.vector_then_update(row) == expected, row["charge_id"]
    assert isinstance(fused.store, MemoryStore)
    snapshot = {k: state_to_json(s) for k, s in fused.store.states.items()}
    assert snapshot == {k: state_to_json(s) for k, s in split.store.states.items()}
    for row in rows[::50]:  # already applied: read, not counted again
        fused.vector_then_update(row)
    assert {k: state_to_json(s) for k, s in fused.store.states.items()} == snapshot


def test_redis_encoding_keeps_integers_beyond_64_bits() -> None:
    pytest.importorskip("redis")
    from payfm.features.redis_store import _dumps, _loads

    small = {"2": ["w", [1, 2], [[3, 2**63 - 1, -(2**63)]], [0, 0, 0], 0, 0]}
    assert _dumps(small)[:1] != b" " and _loads(_dumps(small)) == small  # the fast encoder
    big = {"2": ["w", [1], [[3, 2**64 + 1, 10**30]], [0, -(2**70), 0], 0, 0]}
    assert _dumps(big)[:1] == b" " and _loads(_dumps(big)) == big  # exact, not read back as floats


# and an outcome source filtered on its charge's outcome, which a result reported later must set too
RESULTS = FeatureSet(
    "results",
    (*WIDE.features, Aggregate("card", "count", window=7 * D, source="refunds", filter="authorized")),
)


class _DecidedWithoutOutcome(OnlineFeatures):
    """Each charge decided without its outcome, which comes as an authorization result up to ``delay``
    charges later, in random order (0: before the next charge)."""

    def __init__(self, fset: FeatureSet, delay: int = 0) -> None:
        super().__init__(fset)
        self.delay = delay
        self.waiting: list[dict[str, Any]] = []
        self.rng = np.random.default_rng(0)

    def features_then_update(self, charge: Any) -> dict[str, float | None]:
        out = super().features_then_update({**charge, "outcome": None})
        self.waiting.append(dict(charge))
        while len(self.waiting) > self.delay:
            assert self.apply_authorization(self.waiting.pop(int(self.rng.integers(len(self.waiting)))))
        return out


@pytest.mark.parametrize("seed", [0, 1])
def test_outcomes_reported_after_the_decision_give_the_backfills_values(seed: int) -> None:
    log = random_log(seed, 2000, span_us=6 * 86_400_000_000, n_keys=5 + 10 * seed)
    offline = compute(connect(log), RESULTS)
    online = _DecidedWithoutOutcome(RESULTS)
    report = compare(
        offline, replay(RESULTS, log["charges"], label_outcomes(log), online=online), RESULTS.names
    )
    assert report.charges == 2000
    assert report.total_mismatches == 0, {k: report.examples[k] for k, v in report.mismatches.items() if v}
    # Without the results, the declined-filtered features are off (the test is not vacuous).
    blind = OnlineFeatures(RESULTS)
    blind.features_then_update = lambda c: OnlineFeatures.features_then_update(  # type: ignore[method-assign]
        blind, {**c, "outcome": None}
    )
    off = compare(offline, replay(RESULTS, log["charges"], label_outcomes(log), online=blind), RESULTS.names)
    for name in (
        "card.min_amount_usd_declined_2h",
        "device.first_seen_declined",
        "card.count_refunds_authorized_7d",
    ):
        assert off.mismatches[name] > 0, name
    assert off.mismatches["merchant.mean_amount_usd_authorized_1d_ending_1d_ago"] > 0


def test_a_late_authorization_result_ends_in_the_state_the_outcome_would_have_given() -> None:
    fset = FeatureSet(
        "late_results",
        (
            *RESULTS.features,
            Aggregate("card", "since_first", filter="declined"),
            Aggregate("card", "since_prev", filter="declined"),
            Aggregate("merchant", "count", window=H, filter="declined"),
            # the latest declined charge (by time, then id), though its result came after a later one's
            Aggregate("card", "last", "amount_usd", filter="declined"),
        ),
    )
    log = random_log(3, 1500, span_us=3 * 86_400_000_000, n_keys=6)
    with_outcome = OnlineFeatures(fset)
    replay(fset, log["charges"], label_outcomes(log), online=with_outcome)
    late = _DecidedWithoutOutcome(
        fset, delay=25
    )  # results come late, out of order, often after the key's next
    replay(fset, log["charges"], label_outcomes(log), online=late)
    for c in late.waiting:
        late.apply_authorization(c)
    end = max(log["charges"]["created"].to_pylist())
    end_us = int(end.timestamp() * 1_000_000)
    for row in log["charges"].slice(0, 300).to_pylist():
        for later in (60_000_000, 3_600_000_000, 86_400_000_000):
            probe = {**row, "charge_id": "ch_probe", "created_us": end_us + later}
            assert late.features(probe) == with_outcome.features(probe)


def test_an_authorization_result_counts_once_and_only_for_a_counted_charge() -> None:
    online = OnlineFeatures(WIDE)
    charge = {"charge_id": "ch_1", "created_us": 10**15, "card_fingerprint": "fp", "amount_usd": 700}
    online.features_then_update(charge)
    declined = {**charge, "outcome": "issuer_declined"}
    assert online.apply_authorization(declined)
    assert not online.apply_authorization(declined)  # once
    assert not online.apply_authorization({**declined, "charge_id": "ch_never_decided"})
    probe = {**charge, "charge_id": "ch_2", "created_us": 10**15 + 60_000_000}
    assert online.features(probe)["card.min_amount_usd_declined_2h"] == 7.0


def test_results_reported_in_reverse_order_keep_the_first_and_previous_times() -> None:
    fset = FeatureSet(
        "reverse_results",
        (
            Aggregate("card", "since_first", filter="declined"),
            Aggregate("card", "since_prev", filter="declined"),
        ),
    )
    online = OnlineFeatures(fset)
    t1, t2 = 10**15, 10**15 + 600_000_000
    first, second = (
        {"charge_id": f"ch_{i}", "created_us": t, "card_fingerprint": "fp"} for i, t in ((1, t1), (2, t2))
    )
    online.features_then_update(first)
    online.features_then_update(second)
    assert online.apply_authorization({**second, "outcome": "issuer_declined"})
    assert online.apply_authorization({**first, "outcome": "issuer_declined"})
    probe = online.features({"charge_id": "ch_3", "created_us": t2 + 60_000_000, "card_fingerprint": "fp"})
    assert probe == {"card.since_first_declined": 660.0, "card.since_prev_declined": 60.0}


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_a_refund_of_a_charge_authorized_by_a_later_result_counts_as_authorized(where: str) -> None:
    # The charge was decided without its outcome; its result says authorized; its refund then counts in the
    # refunds filtered on the charge's outcome (the stored fields take the result), in memory and in Redis.
    store: StateStore = MemoryStore()
    if where == "redis":
        require_redis(REDIS_URL)
        from payfm.features.redis_store import RedisStore

        store = RedisStore(REDIS_URL, RESULTS, prefix=f"payfm-test-{uuid.uuid4().hex[:8]}")
    try:
        online = OnlineFeatures(RESULTS, store)
        t = 10**15
        charge = {"charge_id": "ch_1", "created_us": t, "card_fingerprint": "fp", "amount_usd": 700}
        online.features_then_update(charge)
        assert online.apply_authorization({**charge, "outcome": "authorized"})
        assert online.apply_outcome("refunds", "re_1", "ch_1", t + 60_000_000)
        probe = {**charge, "charge_id": "ch_2", "created_us": t + 120_000_000}
        assert online.features(probe)["card.count_refunds_authorized_7d"] == 1.0
        fields = store.charge_fields("ch_1")
        assert fields is not None and fields["outcome"] == "authorized"
        if where == "redis":  # the fields keep their expiry
            assert 0 < store.client.ttl(f"{store.ns}:c:ch_1") <= store.charge_ttl_s  # type: ignore[attr-defined]
    finally:
        if where == "redis":
            store.clear()  # type: ignore[attr-defined]


def test_a_result_retried_after_a_failed_write_of_the_stored_outcome_repairs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On Redis the claim and the stored fields are two writes: a failure between them must not lose the
    # stored outcome for good (the retry finds the claim taken and writes the outcome anyway).
    store = MemoryStore()
    online = OnlineFeatures(RESULTS, store)
    t = 10**15
    charge = {"charge_id": "ch_1", "created_us": t, "card_fingerprint": "fp", "amount_usd": 700}
    online.features_then_update(charge)
    update = store.set_charge_fields

    def lost(charge_id: str, values: dict[str, Any]) -> None:
        raise ConnectionError("connection lost after the claim")

    monkeypatch.setattr(store, "set_charge_fields", lost)
    with pytest.raises(ConnectionError):
        online.apply_authorization({**charge, "outcome": "authorized"})
    monkeypatch.setattr(store, "set_charge_fields", update)
    assert not online.apply_authorization({**charge, "outcome": "authorized"})  # counted once
    assert online.apply_outcome("refunds", "re_1", "ch_1", t + 60_000_000)
    probe = {**charge, "charge_id": "ch_2", "created_us": t + 120_000_000}
    assert online.features(probe)["card.count_refunds_authorized_7d"] == 1.0
