"""An all-time ``last`` online equals the backfill's whatever order its events arrive in: the value of the
latest event in the backfill's order ((created, charge_id) for charges, (time, outcome id) for outcomes), in
memory and on Redis, after a warm-up, a snapshot, or a state written before the order was kept."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from payfm.features import warm
from payfm.features.definitions import Aggregate, FeatureSet
from payfm.features.offline import compute
from payfm.features.online import OnlineFeatures
from payfm.features.state import FORMAT, TotalState, state_from_json, state_to_json
from payfm.features.stores import MemoryStore, StateStore
from services import REDIS_URL, require_redis
from streams import connect, label_outcomes, random_log

LAST = FeatureSet(
    "last_order",
    (
        Aggregate("card", "last", "amount_usd"),
        Aggregate("card", "max", "amount_usd"),  # the same cell as the last
        Aggregate("card", "count"),
        Aggregate("customer", "last", "amount_usd", filter="card_present"),
        Aggregate("card", "last", "amount_usd", source="refunds"),  # a refund's own amount
        Aggregate("card", "last", "amount_usd", source="efws"),
        Aggregate("merchant", "last", "amount_usd", source="fraud_disputes"),
        Aggregate("customer", "min", "amount_usd", source="refunds"),  # a cell read only as a min
    ),
)
ONE = FeatureSet("last_one", (Aggregate("card", "last", "amount_usd"), Aggregate("card", "count")))
_IDS = {"fraud_disputes": "dispute_id", "efws": "efw_id", "refunds": "refund_id"}
Outcome = tuple[int, str, str, str, int | None, str | None]  # (time, source, id, charge id, amount, currency)


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> Iterator[Callable[[FeatureSet], StateStore]]:
    made: list[Any] = []

    def make(fset: FeatureSet) -> StateStore:
        if request.param == "memory":
            return MemoryStore()
        require_redis(REDIS_URL)
        from payfm.features.redis_store import RedisStore

        store = RedisStore(REDIS_URL, fset, prefix=f"payfm-test-{uuid.uuid4().hex[:8]}")
        made.append(store)
        return store

    yield make
    for store in made:
        store.clear()


def _charge(i: int, t_s: int, amount: int) -> dict[str, Any]:
    return {
        "charge_id": f"ch_{i}",
        "created_us": t_s * 1_000_000,
        "card_fingerprint": "A",
        "amount_usd": amount,
    }


def _probe(t_s: int = 1000) -> dict[str, Any]:
    return {"charge_id": "ch_probe", "created_us": t_s * 1_000_000, "card_fingerprint": "A"}


@pytest.mark.parametrize("reverse", [False, True], ids=["in_order", "reversed"])
def test_the_latest_charge_and_outcome_win_in_either_order(
    make_store: Callable[[FeatureSet], StateStore], reverse: bool
) -> None:
    fset = FeatureSet(
        "last_small",
        (Aggregate("card", "last", "amount_usd"), Aggregate("card", "last", "amount_usd", source="refunds")),
    )
    online = OnlineFeatures(fset, make_store(fset))
    # Two charges at the same microsecond (ch_3 after ch_2 in the backfill's order), one before them.
    charges = [_charge(1, 10, 100), _charge(2, 20, 200), _charge(3, 20, 300)]
    # Two refunds at the same microsecond: re_b after re_a (the greater id), though of the earlier charge.
    refunds = [("re_a", "ch_3", 30), ("re_b", "ch_1", 30), ("re_0", "ch_2", 25)]
    for c in reversed(charges) if reverse else charges:
        assert online.update(c)
    for oid, cid, t_s in sorted(refunds, key=lambda r: (r[2], r[0]), reverse=reverse):
        assert online.apply_outcome("refunds", oid, cid, t_s * 1_000_000)
    # (without an own amount, a refund adds its charge's)
    assert online.features(_probe()) == {"card.last_amount_usd": 3.0, "card.last_amount_usd_refunds": 1.0}


def test_a_late_authorization_result_keeps_a_later_charges_last_value() -> None:
    fset = FeatureSet("last_results", (Aggregate("card", "last", "amount_usd", filter="authorized"),))
    online = OnlineFeatures(fset)
    first, second = _charge(1, 10, 100), {**_charge(2, 20, 200), "outcome": "authorized"}
    online.features_then_update(first)  # decided without its outcome
    online.features_then_update(second)
    assert online.apply_authorization({**first, "outcome": "authorized"})  # reported after the second
    assert online.features(_probe()) == {"card.last_amount_usd_authorized": 2.0}  # the backfill's


def _log(seed: int, n: int) -> tuple[dict[str, pa.Table], list[int]]:
    """A random log (many equal times, ids out of time order), plus twin refunds and early fraud warnings at
    the time of each of a few charges (the cutoffs returned) on that charge's card, their ids against the
    order they arrive in when reversed."""
    log = random_log(seed, n, span_us=2 * 86_400_000_000, n_keys=3)
    ch = log["charges"].sort_by([("created", "ascending"), ("charge_id", "ascending")])
    log["charges"] = ch
    ts = pc.cast(ch["created"], pa.int64()).to_numpy()
    cards = ch["card_fingerprint"].to_pylist()
    ids = ch["charge_id"].to_pylist()
    amounts = ch["amount"].to_pylist()
    currencies = ch["currency"].to_pylist()
    cut = [int(i) for i in np.linspace(n // 4, n - 1, 6).round()]
    refunds: list[dict[str, Any]] = []
    efws: list[dict[str, Any]] = []
    for k, c in enumerate(cut):
        before = [i for i in range(c) if cards[i] == cards[c] and ts[i] < ts[c]]
        if len(before) < 2:
            continue
        r, s = before[-1], before[0]
        at = pa.scalar(int(ts[c]), pa.timestamp("us", tz="UTC"))
        for j, amount in (("a", amounts[r] + 700), ("b", max(amounts[r] - 300, 0))):
            refunds.append(
                {
                    "refund_id": f"re_tw{k}_{j}",
                    "charge_id": ids[r],
                    "created": at,
                    "amount": amount,
                    "currency": currencies[r],
                    "reason": "requested_by_customer",
                }
            )
        for j, row in (("a", r), ("b", s)):
            efws.append(
                {"efw_id": f"efw_tw{k}_{j}", "charge_id": ids[row], "created": at, "fraud_type": "misc"}
            )
    assert len(refunds) >= 6
    for name, extra in (("refunds", refunds), ("early_fraud_warnings", efws)):
        table = log[name]
        log[name] = pa.concat_tables([table, pa.Table.from_pylist(extra, schema=table.schema)])
    return log, cut


def _events(log: dict[str, pa.Table]) -> tuple[list[dict[str, Any]], list[Outcome]]:
    """The charges (with created_us) and outcomes of ``log``, each in the backfill's order."""
    ch = log["charges"]
    rows = ch.to_pylist()
    for r, t in zip(rows, pc.cast(ch["created"], pa.int64()).to_pylist(), strict=True):
        r["created_us"] = t
    outcomes: list[Outcome] = []
    for source, table in label_outcomes(log).items():
        own = "amount" in table.column_names
        for o in table.to_pylist():
            t = int(o["created"].timestamp()) * 1_000_000 + o["created"].microsecond
            amount, currency = (o["amount"], o["currency"]) if own else (None, None)
            outcomes.append((t, source, o[_IDS[source]], o["charge_id"], amount, currency))
    outcomes.sort(key=lambda o: o[:3])
    return rows, outcomes


def _apply(online: OnlineFeatures, charges: list[dict[str, Any]], outcomes: list[Outcome]) -> None:
    for c in charges:
        assert online.update(c)
    for t, source, oid, cid, amount, currency in outcomes:
        assert online.apply_outcome(source, oid, cid, t, amount, currency)


def _orders(rows: list[Any], seed: int) -> dict[str, list[Any]]:
    rng = np.random.default_rng(seed)
    return {"reversed": rows[::-1], "shuffled": [rows[i] for i in rng.permutation(len(rows))]}


def test_last_equals_the_backfill_whatever_order_the_events_arrive_in(
    make_store: Callable[[FeatureSet], StateStore],
) -> None:
    # For each cutoff charge c: the events the backfill counts for c (charges before it in (created,
    # charge_id) order, outcomes at or before its time), applied charges first, then outcomes, each in
    # reverse or random order; c's features must be its backfill values.
    log, cut = _log(4, 240)
    offline = {r["charge_id"]: r for r in compute(connect(log), LAST).to_pylist()}
    charges, outcomes = _events(log)
    checked = 0
    for c in cut[-3:]:
        row = charges[c]
        t = row["created_us"]
        want = {n: offline[row["charge_id"]][n] for n in LAST.names}
        assert (
            want["card.last_amount_usd_refunds"] is not None and want["card.last_amount_usd_efws"] is not None
        )
        counted = [o for o in outcomes if o[0] <= t]
        for (name, before), (_, after) in zip(
            _orders(charges[:c], c).items(), _orders(counted, c).items(), strict=True
        ):
            online = OnlineFeatures(LAST, make_store(LAST))
            _apply(online, before, after)
            assert online.features(row) == want, (name, row["charge_id"])
            checked += 1
    assert checked == 6


def test_the_warm_up_keeps_the_time_and_id_of_each_last_value() -> None:
    log, cut = _log(5, 300)
    charges, outcomes = _events(log)
    event = OnlineFeatures(LAST)
    # The apply order of a replay: time, outcomes of an instant before its charges, each by id.
    mixed = [(o[0], 0, o[2], o) for o in outcomes] + [
        (c["created_us"], 1, c["charge_id"], c) for c in charges
    ]
    for t, kind, _, e in sorted(mixed, key=lambda m: m[:3]):
        if kind:
            event.update(e)
        else:
            assert event.apply_outcome(e[1], e[2], e[3], t, e[4], e[5])
    ch = log["charges"]
    ts = pc.cast(ch["created"], pa.int64()).to_numpy()
    given = []
    for source in ("fraud_disputes", "efws", "refunds"):
        os_ = [o for o in outcomes if o[1] == source]
        times = np.array([o[0] for o in os_], dtype=np.int64)
        given.append(
            (
                source,
                times,
                [o[2] for o in os_],
                [o[3] for o in os_],
                [o[4] for o in os_],
                [o[5] for o in os_],
            )
        )
    built = warm.events(ch, ts, given, event.outcome_amounts)
    assert built is not None
    states = warm.states(event.engine.plans, ch, built[0])
    assert states is not None
    assert isinstance(event.store, MemoryStore)
    assert states.keys() == event.store.states.keys()
    lasts = 0
    for key, st in states.items():
        other = event.store.states[key]
        assert isinstance(st, TotalState) and isinstance(other, TotalState)
        for field in ("sums", "last", "last_ts", "last_id", "mins", "maxs", "first", "prev"):
            assert getattr(st, field) == getattr(other, field), (key, field)
        lasts += sum(t is not None for t in st.last_ts or [])
    assert lasts > 10
    # A late charge after the warm-up does not replace a later one's value.
    fast = OnlineFeatures(LAST)
    assert isinstance(fast.store, MemoryStore)
    fast.store.states = states
    fast.store.charges = dict(event.store.charges)
    row = charges[cut[-1]]
    before = fast.features({**row, "created_us": row["created_us"] + 1})
    late = {
        **charges[0],
        "charge_id": "ch_late",
        "card_fingerprint": row["card_fingerprint"],
        "amount_usd": 1,
    }
    assert fast.update(late) and event.update(late)
    after = fast.features({**row, "created_us": row["created_us"] + 1})
    assert after["card.last_amount_usd"] == before["card.last_amount_usd"] != 0.01
    assert after == event.features({**row, "created_us": row["created_us"] + 1})


def test_the_warm_up_declines_charges_of_one_instant_out_of_id_order() -> None:
    log = random_log(6, 50)
    ch = log["charges"].sort_by([("created", "ascending"), ("charge_id", "descending")])
    ts = pc.cast(ch["created"], pa.int64()).to_numpy()
    assert warm.events(ch, ts, []) is None  # (the event path then applies them, in any order)
    ch = log["charges"].sort_by([("created", "ascending"), ("charge_id", "ascending")])
    assert warm.events(ch, pc.cast(ch["created"], pa.int64()).to_numpy(), []) is not None


def test_a_snapshot_keeps_the_order_of_last_values(tmp_path: Path) -> None:
    online = OnlineFeatures(ONE)
    online.update(_charge(2, 20, 200))
    online.update(_charge(3, 20, 300))
    assert isinstance(online.store, MemoryStore)
    (st,) = online.store.states.values()
    data = state_to_json(st)
    assert data[-2:] == [[20_000_000], ["ch_3"]]
    back = state_from_json(json.loads(json.dumps(data)))
    assert isinstance(back, TotalState) and state_to_json(back) == data
    online.store.snapshot(tmp_path / "s.json.gz", ONE.version)
    restored = OnlineFeatures(ONE, MemoryStore.restore(tmp_path / "s.json.gz", ONE.version))
    assert restored.update(_charge(1, 10, 100))  # late: counted, but not the last
    assert restored.update(_charge(0, 20, 50))  # the same instant, a smaller id
    assert restored.features(_probe()) == {"card.last_amount_usd": 3.0, "card.count_charges_all": 4.0}


def _older(data: list[Any]) -> list[Any]:
    """An all-time state as written before the (time, id) of its last values was kept."""
    assert data[0] == "t" and len(data) == 10
    return data[:8]


def _replays_an_older_state(online: OnlineFeatures) -> None:
    # The value is read as it was; the next event replaces it (its order unknown, as before); from then on
    # only a later event does.
    assert online.features(_probe()) == {"card.last_amount_usd": 2.0, "card.count_charges_all": 1.0}
    assert online.update(_charge(1, 10, 100))
    assert online.features(_probe())["card.last_amount_usd"] == 1.0
    assert online.update(_charge(3, 30, 300))
    assert online.update(_charge(0, 5, 50))
    assert online.features(_probe()) == {"card.last_amount_usd": 3.0, "card.count_charges_all": 4.0}


def test_a_state_written_before_the_order_was_kept_still_loads(tmp_path: Path) -> None:
    st = state_from_json(["t", [1], [None], [None], [200], [], [None], [None]])
    assert isinstance(st, TotalState) and st.last_ts == [None] and st.last_id == [None]
    online = OnlineFeatures(ONE)
    online.update(_charge(2, 20, 200))
    assert isinstance(online.store, MemoryStore)
    ((key, state),) = online.store.states.items()
    path = tmp_path / "older.json.gz"
    with gzip.open(path, "wt") as f:  # a snapshot of this format, its state without the order
        head = {"format": FORMAT, "version": ONE.version, "watermark_us": 20_000_000, "outcomes": []}
        f.write(json.dumps(head) + "\n" + json.dumps(online.store.charges) + "\n")
        f.write(json.dumps([key[0], key[1], _older(state_to_json(state))]) + "\n")
    _replays_an_older_state(OnlineFeatures(ONE, MemoryStore.restore(path, ONE.version)))


def test_a_redis_record_written_before_the_order_was_kept_still_loads() -> None:
    require_redis(REDIS_URL)
    from payfm.features.redis_store import RedisStore, _dumps, _loads

    store = RedisStore(REDIS_URL, ONE, prefix=f"payfm-test-{uuid.uuid4().hex[:8]}")
    try:
        online = OnlineFeatures(ONE, store)
        online.update(_charge(2, 20, 200))
        (name,) = [k for k in store.client.scan_iter(f"{store.ns}:e:*", count=1000)]
        version, _, body = store.client.get(name).partition(b"|")
        record = {i: _older(data) for i, data in _loads(body).items()}
        store.client.set(name, version + b"|" + _dumps(record))
        _replays_an_older_state(online)
        version, _, body = store.client.get(name).partition(b"|")
        assert [len(data) for data in _loads(body).values()] == [10]  # written back with the order
    finally:
        store.clear()
