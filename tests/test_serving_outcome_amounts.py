"""A refund or dispute reported to the decision service counts its own amount (at its charge's rate) in the
features that sum outcome amounts, as the offline backfill does, in memory and on Redis, and after a restart
that rebuilds the state from the decision log; one in another currency than its charge's, or for more than
its charge, is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.serving.errors import InvalidInput
from payfm.serving.scorer import Scorer
from services import REDIS_SCRATCH_URL
from test_serving_reviews import charge

SUM = "merchant.sum_amount_usd_refunds_7d"


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    w = Workspace.open(tmp_path / "ws", create=True)
    rulesets.save(w, "big: review if :amount_usd: > 1000000\n", activate=True, set_name="default", author="t")
    return w


def _later(i: int, now: datetime) -> dict[str, Any]:
    """A charge of the same merchant a day after the refunds."""
    return charge(i, (now + timedelta(days=1)).isoformat(), amount=100, amount_usd=100)


@pytest.mark.parametrize("state", ["memory", "redis"])
def test_a_partial_refund_counts_its_own_amount_at_its_charges_rate(
    ws: Workspace, state: str, request: pytest.FixtureRequest
) -> None:
    url = "memory"
    if state == "redis":
        request.getfixturevalue("redis_scratch")
        url = REDIS_SCRATCH_URL
    now = datetime.now(UTC)
    s = Scorer.open(ws, state=url)
    try:
        s.score(charge(1, amount=20_000, currency="eur", amount_usd=21_674))
        refund = {"charge_id": "ch_1", "created": now.isoformat(), "reason": "requested_by_customer"}
        # EUR 50.00 of EUR 200.00 (USD 216.74): USD 54.18, rounded down.
        s.record_outcome("refunds", {**refund, "refund_id": "re_1", "amount": 5_000, "currency": "eur"})
        assert s.score(_later(2, now)).features[SUM] == pytest.approx(54.18)
        # Not in its charge's currency, or more than its charge: refused (Stripe's rules), nothing counted.
        with pytest.raises(InvalidInput, match="expected the currency of its charge, 'eur'") as e:
            s.record_outcome("refunds", {**refund, "refund_id": "re_2", "amount": 10, "currency": "gbp"})
        assert e.value.field == "currency"
        with pytest.raises(
            InvalidInput, match=r"no larger than its charge's \(20000 in the minor unit of eur"
        ):
            s.record_outcome("refunds", {**refund, "refund_id": "re_3", "amount": 20_001, "currency": "eur"})
        # EUR 20.00 more: USD 21.67.
        s.record_outcome("refunds", {**refund, "refund_id": "re_4", "amount": 2_000, "currency": "eur"})
        assert s.score(_later(3, now)).features[SUM] == pytest.approx(54.18 + 21.67)
    finally:
        s.close(snapshot=False)
    again = Scorer.open(ws, state=url)  # rebuilt from the decision log (memory) or read back (Redis)
    try:
        assert again.score(_later(4, now)).features[SUM] == pytest.approx(54.18 + 21.67)
    finally:
        again.close(snapshot=False)


def test_a_review_of_a_zero_amount_charge_closed_as_fraud_keeps_the_service_startable(ws: Workspace) -> None:
    """The refund a closure implies copies its charge's amount: 0 for a $0 charge (card testing's favourite).
    It was refused as not positive after the closure was logged; every later start replayed the refusal."""
    rulesets.save(ws, "zero: review if :amount_usd: < 1\n", activate=True, set_name="default", author="t")
    s = Scorer.open(ws)
    try:
        assert s.score(charge(1, amount=0, amount_usd=0)).outcome == "manual_review"
        assert s.close_review("ch_1", "refunded_as_fraud")["label"] == 1
    finally:
        s.close(snapshot=False)
    again = Scorer.open(ws)  # the closure's recovery replays it: no error
    again.close(snapshot=False)
    assert ws.read("refunds").to_pylist()[0]["amount"] == 0
