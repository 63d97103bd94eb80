"""The refunds of one charge add up to at most its amount (Stripe's rule): each refund reported live is taken
only for what is left to refund, counting the refunds the decision log, the event log and other requests in
flight hold; a review closed as refunded_as_fraud after a partial refund implies a refund of what is left."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from payfm.events.validate import validate_events
from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.serving import feedback
from payfm.serving.errors import Conflict, InvalidInput
from payfm.serving.scorer import Scorer
from test_serving_reviews import charge

SUM = "merchant.sum_amount_usd_refunds_7d"


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    w = Workspace.open(tmp_path / "ws", create=True)
    rulesets.save(w, "big: review if :amount_usd: > 1000\n", activate=True, set_name="default", author="t")
    return w


def _refund(i: int, amount: int, **kw: Any) -> dict[str, Any]:
    created = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    return {"refund_id": f"re_{i}", "charge_id": "ch_1", "created": created, "amount": amount} | {
        "currency": "usd",
        "reason": "requested_by_customer",
        **kw,
    }


def _later_sum(s: Scorer, i: int) -> float:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    value = s.score(charge(i, later, amount=100, amount_usd=100)).features[SUM]
    assert value is not None
    return value


def test_partial_refunds_add_up_to_at_most_the_charges_amount(ws: Workspace) -> None:
    s = Scorer.open(ws)
    try:
        s.score(charge(1, amount=20_000, amount_usd=20_000))
        first = _refund(1, 15_000)
        assert s.record_outcome("refunds", first)["applied"]
        with pytest.raises(
            InvalidInput,
            match=r"expected at most 5000, what is left to refund of its charge "
            r"\(its amount 20000 in the minor unit of usd, less 15000 refunded already or being refunded\)\. "
            r"Got 6000",
        ) as e:
            s.record_outcome("refunds", _refund(2, 6_000))
        assert e.value.field == "amount"
        assert s.record_outcome("refunds", first)["duplicate"]  # a retry is answered, not capped
        with pytest.raises(Conflict, match="recorded already with another 'amount'") as c:
            s.record_outcome("refunds", {**first, "amount": 4_000})  # another refund under its id: refused
        assert c.value.field == "amount"
        assert s.record_outcome("refunds", _refund(3, 5_000))["applied"]  # what is left: taken
        with pytest.raises(InvalidInput, match="expected at most 0"):
            s.record_outcome("refunds", _refund(4, 1))
        assert _later_sum(s, 2) == pytest.approx(200.00)  # 150 + 50; not the refused 60 or 0.01
    finally:
        s.close(snapshot=False)
    again = Scorer.open(ws)  # the decision log holds the refunds: still capped after a restart
    try:
        with pytest.raises(InvalidInput, match="expected at most 0"):
            again.record_outcome("refunds", _refund(5, 1))
    finally:
        again.close(snapshot=False)


def test_the_event_logs_refunds_of_the_charge_count(ws: Workspace) -> None:
    s = Scorer.open(ws)
    try:
        s.score(charge(1, amount=20_000, amount_usd=20_000))
        theirs = _refund(9, 12_000)
        imported = validate_events("refunds", pa.Table.from_pylist([theirs]))
        with ws.writer() as w:  # imported meanwhile (not through the service)
            w.write("refunds", imported)
        with pytest.raises(InvalidInput, match=r"expected at most 8000, .* less 12000 refunded"):
            s.record_outcome("refunds", _refund(1, 9_000))
        assert s.record_outcome("refunds", _refund(1, 8_000))["applied"]
        # compared with the event log's row: another outcome under its id is refused, the same one taken
        for field, value in (("reason", "duplicate"), ("created", _refund(9, 1)["created"])):
            with pytest.raises(
                Conflict, match=f"'re_9' of charge 'ch_1' is recorded already with another '{field}'"
            ):
                s.record_outcome("refunds", {**theirs, field: value})
        assert s.record_outcome("refunds", theirs)["id"] == "re_9"
    finally:
        s.close(snapshot=False)


def test_refunds_in_flight_at_once_are_capped_together(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two refunds of 60% each sent at once: while the first is being logged (slowly here) the second must
    count it; exactly one is taken."""
    s = Scorer.open(ws)
    try:
        s.score(charge(1, amount=20_000, amount_usd=20_000))
        write = s.log.write

        def slow_write(record: Any) -> Any:
            time.sleep(0.3)
            return write(record)

        monkeypatch.setattr(s.log, "write", slow_write)
        results: list[str] = []

        def send(i: int) -> None:
            try:
                s.record_outcome("refunds", _refund(i, 12_000))
                results.append("taken")
            except InvalidInput as e:
                results.append(str(e))

        threads = [threading.Thread(target=send, args=(i,)) for i in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results)[-1] == "taken" and "expected at most 8000" in sorted(results)[0], results
        assert not s._refunding  # nothing left in flight
    finally:
        s.close(snapshot=False)


def test_a_closure_as_fraud_after_a_partial_refund_refunds_what_is_left(ws: Workspace) -> None:
    s = Scorer.open(ws)
    try:
        assert s.score(charge(1, amount=200_000, amount_usd=200_000)).outcome == "manual_review"
        s.record_outcome("refunds", _refund(1, 50_000))
        out = s.close_review("ch_1", "refunded_as_fraud")
        assert out["label"] == 1 and out["outcome"]["id"] == "re_review_ch_1"
        implied = [p for kind, p in s.log.outcomes_of("ch_1") if p.get("id") == "re_review_ch_1"]
        assert implied[0]["amount"] == 150_000 and implied[0]["reason"] == "fraudulent"
        assert _later_sum(s, 2) == pytest.approx(2_000.00)  # the charge's amount once, not 2,500
    finally:
        s.close(snapshot=False)


def test_a_refund_arriving_while_a_review_closes_leaves_the_closure_whole(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refund recorded between the closure's reading of its charge and the implied refund: the implied one
    is taken for what is left then (it was refused, the closure logged but its refund and event not)."""
    s = Scorer.open(ws)
    try:
        assert s.score(charge(1, amount=200_000, amount_usd=200_000)).outcome == "manual_review"
        s.record_outcome("refunds", _refund(1, 50_000))
        implied = feedback.implied_outcome

        def meanwhile(review: Any, charge_: Any) -> Any:
            s.record_outcome("refunds", _refund(2, 10_000))
            return implied(review, charge_)

        monkeypatch.setattr(feedback, "implied_outcome", meanwhile)
        out = s.close_review("ch_1", "refunded_as_fraud")
        assert out["outcome"]["id"] == "re_review_ch_1"
        amounts = {p["id"]: p["amount"] for kind, p in s.log.outcomes_of("ch_1") if kind == "refunds"}
        assert amounts == {"re_1": 50_000, "re_2": 10_000, "re_review_ch_1": 140_000}
    finally:
        s.close(snapshot=False)


def test_a_refund_the_state_failed_to_count_is_not_left_in_flight(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Scorer.open(ws)
    try:
        s.score(charge(1, amount=20_000, amount_usd=20_000))
        apply = s.online.apply_outcome
        calls = iter([ConnectionError("state down")])

        def flaky(*args: Any) -> Any:
            err = next(calls, None)
            if err is not None:
                raise err
            return apply(*args)

        monkeypatch.setattr(s.online, "apply_outcome", flaky)
        with pytest.raises(ConnectionError):
            s.record_outcome("refunds", _refund(1, 15_000))
        assert not s._refunding
        assert s.record_outcome("refunds", _refund(2, 20_000))["applied"]  # nothing was refunded
    finally:
        s.close(snapshot=False)
