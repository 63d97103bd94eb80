"""An outcome reported after the service decided later charges (a dispute the issuer opened days before the
processor's report brought it) counts from when it came, online and in the event log alike: dated by its
sender, the backfill would count it in the charges decided meanwhile, which never saw it (a label leak into
training). The time it was sent with stays in the decision log, so a retry is still a retry."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from payfm.events.workspace import Workspace
from payfm.features.offline import compute
from payfm.rules import rulesets
from payfm.serving import clock
from payfm.serving.export import export_charges
from payfm.serving.scorer import Scorer, ScorerConfig
from test_serving_reviews import charge

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
COUNT = "merchant.count_refunds_all"
REFUND = {
    "refund_id": "re_1",
    "charge_id": "ch_1",
    "amount": 500,
    "currency": "usd",
    "reason": "requested_by_customer",
}


def at(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    w = Workspace.open(tmp_path / "ws", create=True)
    rulesets.save(
        w, "big: review if :amount_usd: > 100000000\n", activate=True, set_name="default", author="t"
    )
    return w


def test_a_late_outcome_counts_from_its_arrival_online_and_offline(ws: Workspace) -> None:
    refund = {"refund_id": "re_1", "charge_id": "ch_1", "created": at(1), "amount": 500, "currency": "usd"}
    s = Scorer.open(ws)
    try:
        assert s.score(charge(1, at(0), outcome="authorized")).features[COUNT] == 0
        assert s.score(charge(2, at(10), outcome="authorized")).features[COUNT] == 0
        first = s.record_outcome("refunds", {**refund, "reason": "requested_by_customer"})
        assert first["duplicate"] is False and first["applied"] is True
        # The answer says when it counts from (1 us after ch_2, the newest event seen): the sender saw only
        # "applied" and took its own time for the refund's.
        counted_from = (T0 + timedelta(minutes=10, microseconds=1)).isoformat()
        assert first["counted_from"] == counted_from
        # A retry with the time it was sent with is a retry, not another refund.
        again = s.record_outcome("refunds", {**refund, "reason": "requested_by_customer"})
        assert again["duplicate"] is True and again["counted_from"] == counted_from
        assert s.score(charge(3, at(20), outcome="authorized")).features[COUNT] == 1
        stored = s.log.outcomes_of("ch_1")
        assert [(k, p["reported_us"]) for k, p in stored] == [
            ("refunds", int(T0.timestamp() * 1e6) + 60_000_000)
        ]
        decisions = {c: s.log.get_decision(c) for c in ("ch_2", "ch_3")}
        export_charges(ws, s.log)
    finally:
        s.close(snapshot=False)
    counted = ws.read("refunds", ["refund_id", "created"]).to_pylist()
    assert len(counted) == 1
    # A replay of the event log sends the refund at the time the service counted it from: the same refund
    # again, not a conflict (an audit's replay got a 409 for each outcome the docs' examples had posted).
    s = Scorer.open(ws)
    try:
        replayed = s.record_outcome(
            "refunds",
            {**refund, "reason": "requested_by_customer", "created": counted[0]["created"].isoformat()},
        )
        assert replayed["duplicate"] is True
    finally:
        s.close(snapshot=False)
    # After ch_2 (decided before the refund came), before ch_3 (decided after).
    assert T0 + timedelta(minutes=10) < counted[0]["created"] < T0 + timedelta(minutes=20)
    # The backfill agrees with what the service saw for every charge: ch_2 without the refund, ch_3 with it.
    fset = s.bundle.fset
    offline = compute(ws.connect(), fset).to_pylist()
    by_id = {r["charge_id"]: r for r in offline}
    assert by_id["ch_2"][COUNT] == 0 and by_id["ch_3"][COUNT] == 1
    for cid, decision in decisions.items():
        assert decision is not None
        served = decision["features"] if "features" in decision else decision["decision"]["features"]
        assert served[COUNT] == by_id[cid][COUNT]


def test_an_outcome_dated_after_the_services_clock_keeps_its_time(ws: Workspace) -> None:
    """Replaying history in time order, each outcome comes before the later charges: its own time stands."""
    s = Scorer.open(ws)
    try:
        s.score(charge(1, at(0), outcome="authorized"))
        s.record_outcome(
            "refunds",
            {
                "refund_id": "re_1",
                "charge_id": "ch_1",
                "created": at(5),
                "amount": 500,
                "currency": "usd",
                "reason": "requested_by_customer",
            },
        )
        assert s.score(charge(2, at(10), outcome="authorized")).features[COUNT] == 1
        assert "reported_us" not in s.log.outcomes_of("ch_1")[0][1]
        assert s.log.get_outcome("refunds", "re_1")["counted_from"] is None  # type: ignore[index]
    finally:
        s.close(snapshot=False)
    assert ws.read("refunds", ["created"])["created"].to_pylist() == [T0 + timedelta(minutes=5)]


def test_a_fast_clients_charge_does_not_date_late_outcomes_in_the_future(ws: Workspace) -> None:
    """A reviewer's find: dated by the wall-advanced clock, one charge 250 s ahead (within --max-future-s)
    dated every later outcome past the charges that count it online, and the backfill disagreed."""
    now = datetime.now(UTC)
    s = Scorer.open(ws, config=ScorerConfig(max_future_s=300))
    try:
        s.score(charge(1, (now - timedelta(seconds=60)).isoformat(), outcome="authorized"))
        s.score(
            charge(9, (now + timedelta(seconds=250)).isoformat(), outcome="authorized", merchant_id="m_x")
        )
        sent = (now - timedelta(seconds=1)).isoformat()
        s.record_outcome("refunds", {**REFUND, "created": sent})
        assert (
            "reported_us" not in s.log.outcomes_of("ch_1")[0][1]
        )  # later than every charge seen: its own time
    finally:
        s.close(snapshot=False)
    assert ws.read("refunds", ["created"])["created"].to_pylist() == [datetime.fromisoformat(sent)]


def test_a_restarted_service_dates_a_late_outcome_after_the_charges_it_knows_not_by_wall_time(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restarted a day later (wall time) while history is fed in time order: the wall-advanced clock dated
    each outcome a day late; the newest event seen (the decision log's) is what counts."""
    with Scorer.open(ws) as s:
        s.score(charge(1, at(0), outcome="authorized"))
    wall = time.time
    monkeypatch.setattr(clock.time, "time", lambda: wall() + 86_400)
    with Scorer.open(ws) as s:
        s.score(charge(2, at(60), outcome="authorized"))
        s.record_outcome("refunds", {**REFUND, "charge_id": "ch_2", "created": at(120)})
        assert s.score(charge(3, at(180), outcome="authorized")).features[COUNT] == 1
    assert ws.read("refunds", ["created"])["created"].to_pylist() == [T0 + timedelta(minutes=120)]
