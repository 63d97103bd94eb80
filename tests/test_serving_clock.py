"""The decision service dates a review closure on its events' timeline (serving/clock.py): serving history (a
replayed world, the demo's), a closure dated by the wall clock would fold its merchant's velocity windows
away and date the label months after its charge."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from factories import charges, usd_consistent
from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.serving.charges import EXAMPLE_FIELDS
from payfm.serving.clock import EventClock
from payfm.serving.export import export_charges
from payfm.serving.scorer import Scorer
from payfm.training.labels import fraud_labels

START = datetime(2026, 1, 1, tzinfo=UTC)
END = START + timedelta(hours=59)  # the event log's last charge (60 charges an hour apart)


def charge(cid: str, at: datetime, amount: int) -> dict[str, Any]:
    c = {**EXAMPLE_FIELDS, "charge_id": cid, "created": at.isoformat(), "merchant_id": "mer_0"}
    kw = {"amount": amount, "amount_usd": amount}
    return usd_consistent(c | kw, kw)


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    w = Workspace.open(tmp_path / "ws", create=True)
    with w.writer() as wr:
        wr.write("charges", charges(60, START, timedelta(hours=1)))  # mer_0 takes every third
    rulesets.save(w, "big: review if :amount_usd: > 500\n", activate=True, set_name="default", author="t")
    return w


def test_a_closure_on_a_served_history_keeps_its_merchants_windows_and_labels_its_charge(
    ws: Workspace, scorer: Scorer
) -> None:
    m = timedelta(minutes=1)
    assert scorer.score(charge("r1", END + m, 90_000)).outcome == "manual_review"
    before = scorer.score(charge("r2", END + 2 * m, 100)).features
    assert before["merchant.count_charges_7d"] == 21  # its 20 in the event log and r1
    t0 = time.monotonic()
    closed = scorer.close_review("r1", "refunded_as_fraud")
    assert closed["outcome"] is not None and closed["outcome"]["applied"]
    after = scorer.score(charge("r3", END + 3 * m, 100)).features
    assert after["merchant.count_charges_7d"] == 22  # r2 too: the closure folded nothing away
    assert after["merchant.count_refunds_all"] == 1  # and its refund counts
    scorer.log.flush()
    review = ws.read("reviews").to_pylist()[0]
    refund = ws.read("refunds").to_pylist()[0]
    # dated on the events' timeline: r2's time (the newest event then), advanced by the wall time since
    elapsed = timedelta(seconds=time.monotonic() - t0 + 1)
    assert END + 2 * m <= review["created"] <= END + 2 * m + elapsed
    assert refund["created"] == review["created"] and review["opened"] == END + m  # opened: r1's time
    export_charges(ws, scorer.log, assume_authorized=True)
    labels = fraud_labels(ws.connect()).to_pylist()
    assert {r["charge_id"]: r["is_fraud"] for r in labels}["r1"] == 1  # within the horizon


def test_a_restarted_service_dates_a_closure_after_what_it_logged(ws: Workspace) -> None:
    first = Scorer.open(ws)
    first.score(charge("r1", END + timedelta(minutes=1), 90_000))
    first.score(charge("r2", END + timedelta(days=2), 100))  # the newest event: logged, then a restart
    first.close(snapshot=False)
    again = Scorer.open(ws)
    try:
        again.close_review("r1", "approved")
        again.log.flush()
    finally:
        again.close(snapshot=False)
    created = ws.read("reviews").to_pylist()[0]["created"]
    assert END + timedelta(days=2) <= created <= END + timedelta(days=2, minutes=1)


def test_the_clock_follows_the_newest_event_and_the_wall_time_since() -> None:
    wall = datetime.now(UTC)
    seen_at = (wall - timedelta(seconds=30)).isoformat()
    clock = EventClock(lambda: [(1_000_000_000, seen_at), (5_000_000, None)])
    now = clock.now_us()
    assert now is not None and 1_030_000_000 <= now <= 1_032_000_000  # 30 s after it was seen
    clock.saw(2_000_000_000)  # newer
    assert 2_000_000_000 <= (clock.now_us() or 0) <= 2_001_000_000
    clock.saw(1_500_000_000)  # older: the clock never goes back
    assert (clock.now_us() or 0) >= 2_000_000_000
    assert EventClock(lambda: []).now_us() is None  # no event yet
