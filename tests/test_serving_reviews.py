"""Review closures become label events: a ``reviews`` row in the event log and, for refunded_as_fraud and
disputed, the fraudulent refund or dispute they imply (counted by the label-aware online features), once."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from factories import usd_consistent
from log_holds import hold_writes
from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.serving.app import create_app
from payfm.serving.charges import EXAMPLE_FIELDS
from payfm.serving.decision_log import ReviewClose
from payfm.serving.errors import Conflict, NotFound
from payfm.serving.keys import KeyStore
from payfm.serving.scorer import Scorer

RULES = "big: review if :amount_usd: > 500\n"


def charge(i: int, created: str = "2026-03-01T12:00:00+00:00", **kw: Any) -> dict[str, Any]:
    c = {"charge_id": f"ch_{i}", "created": created, **EXAMPLE_FIELDS, "amount": 90_000} | {
        "amount_usd": 90_000,
        **kw,
    }
    return usd_consistent(c, kw)


def probe(scorer: Scorer, i: int) -> dict[str, float | None]:
    """The features of a later charge of the same card (after the closures, which happen now)."""
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return scorer.score(charge(i, later, amount=100, amount_usd=100)).features


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    w = Workspace.open(tmp_path / "ws", create=True)
    rulesets.save(w, RULES, activate=True, set_name="default", author="test")  # default set: refund features
    return w


@pytest.fixture()
def scorer(ws: Workspace) -> Iterator[Scorer]:
    s = Scorer.open(ws)
    yield s
    s.close(snapshot=False)


@pytest.fixture()
def client(ws: Workspace, scorer: Scorer) -> Iterator[tuple[TestClient, dict[str, str]]]:
    key = KeyStore(ws.root / "serving" / "keys.db").create("alice")
    with TestClient(create_app(scorer, KeyStore(ws.root / "serving" / "keys.db"))) as c:
        yield c, {"Authorization": f"Bearer {key}"}


def rows(ws: Workspace, table: str) -> list[dict[str, Any]]:
    return ws.read(table).to_pylist() if ws.files(table) else []


def test_refunded_as_fraud_appends_the_review_and_a_fraudulent_refund(
    client: tuple[TestClient, dict[str, str]], scorer: Scorer, ws: Workspace
) -> None:
    c, h = client
    assert c.post("/v1/charges/score", json=charge(1, amount=123_450), headers=h).json()["outcome"] == (
        "manual_review"
    )
    r = c.post("/v1/reviews/ch_1/close", json={"reason": "refunded_as_fraud", "note": "called"}, headers=h)
    assert r.status_code == 200
    body = r.json()
    assert body["label"] == 1 and body["outcome"] == {
        "table": "refunds",
        "id": "re_review_ch_1",
        "applied": True,
    }
    (review,) = rows(ws, "reviews")
    assert review["charge_id"] == "ch_1" and review["closed_as"] == "refunded_as_fraud"
    assert review["reviewer"] == "alice" and review["rule"] == "big" and review["note"] == "called"
    assert review["opened"] <= review["created"] and review["created"].tzinfo is not None
    (refund,) = rows(ws, "refunds")
    assert refund["refund_id"] == "re_review_ch_1" and refund["reason"] == "fraudulent"
    assert (
        refund["amount"] == 123_450 and refund["currency"] == "usd" and refund["created"] == review["created"]
    )
    assert rows(ws, "disputes") == []
    features = probe(scorer, 2)
    assert features["card.count_refunds_all"] == 1.0 and features["card.count_fraud_disputes_all"] == 0.0
    # The same closure sent again (a retry of a lost answer): the first answer, a duplicate, nothing appended.
    retry = c.post(
        "/v1/reviews/ch_1/close", json={"reason": "refunded_as_fraud", "note": "called"}, headers=h
    )
    assert retry.status_code == 200 and retry.json() == {**body, "duplicate": True}
    assert len(rows(ws, "reviews")) == 1 and len(rows(ws, "refunds")) == 1
    # Closing again otherwise (another reason, or another note) is refused and appends nothing.
    other = c.post("/v1/reviews/ch_1/close", json={"reason": "refunded_as_fraud", "note": "no"}, headers=h)
    assert other.status_code == 409
    again = c.post("/v1/reviews/ch_1/close", json={"reason": "disputed"}, headers=h)
    assert again.status_code == 409  # saying what it was closed as: a retry of a lost answer sees it landed
    assert "is already closed: as 'refunded_as_fraud' at 20" in again.json()["error"]["message"]
    assert len(rows(ws, "reviews")) == 1 and len(rows(ws, "refunds")) == 1 and rows(ws, "disputes") == []


def test_a_review_of_a_charge_id_holding_a_slash_can_be_closed(
    client: tuple[TestClient, dict[str, str]], ws: Workspace
) -> None:
    c, h = client
    cid = "order/7"
    assert c.post("/v1/charges/score", json=charge(1, amount=123_450, charge_id=cid), headers=h).json()[
        "outcome"
    ] == ("manual_review")
    r = c.post(f"/v1/reviews/{quote(cid, safe='')}/close", json={"reason": "approved"}, headers=h)
    assert r.status_code == 200
    (review,) = rows(ws, "reviews")
    assert review["charge_id"] == cid and review["closed_as"] == "approved"


def test_one_review_is_read_by_its_charge_id_as_the_queue_shows_it(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    """GET /v1/reviews/{charge_id}: what a reviewer's tool opens (payfm review show); 404 for a charge
    decided without a review, one never decided, and without a key 401."""
    c, h = client
    for i, amount in ((1, 123_450), (2, 100), (3, 99_000)):
        c.post("/v1/charges/score", json=charge(i, amount=amount, card_fingerprint=f"fp_{i}"), headers=h)
    c.post("/v1/charges/score", json=charge(4, amount=77_000, charge_id="order/7"), headers=h)
    queue = {r["charge_id"]: r for r in c.get("/v1/reviews", headers=h).json()["data"]}
    assert set(queue) == {"ch_1", "ch_3", "order/7"}
    for cid in queue:
        one = c.get(f"/v1/reviews/{quote(cid, safe='')}", headers=h)
        assert one.status_code == 200  # the same item, the charge's own, and the rule that sent it
        item = one.json()
        detail = item.pop("rule_detail")
        assert item == queue[cid]
        amount = queue[cid]["charge"]["amount_usd"] / 100
        assert detail == {
            "ruleset_version": 1,
            "condition": "big: review if :amount_usd: > 500",
            "values": {"amount_usd": amount},
        }
    assert queue["ch_3"]["charge"]["amount"] == 99_000 and queue["ch_3"]["rule"] == "big"
    c.post("/v1/reviews/ch_3/close", json={"reason": "approved", "note": "known customer"}, headers=h)
    closed = c.get("/v1/reviews/ch_3", headers=h).json()
    assert closed["status"] == "closed" and closed["reason"] == "approved"
    assert closed["note"] == "known customer"
    for missing in ("ch_2", "ch_404"):
        r = c.get(f"/v1/reviews/{missing}", headers=h)
        assert r.status_code == 404 and r.json()["error"]["message"] == f"No review for charge '{missing}'."
    assert c.get("/v1/reviews/ch_1").status_code == 401
    # A filter no review can match (a NUL, which PostgreSQL refuses in a text): an empty page, not a 500.
    nul = c.get("/v1/reviews?rule=a%00b", headers=h)
    assert nul.status_code == 200 and nul.json()["total"] == 0 and nul.json()["data"] == []
    # A trailing slash is the queue, as before the route of one review took the paths under it.
    slash = c.get("/v1/reviews/?status=closed", headers=h, follow_redirects=False)
    assert slash.status_code == 307 and slash.headers["location"] == "/v1/reviews?status=closed"


def test_a_review_shows_the_outcomes_only_the_event_log_holds_as_imported(
    client: tuple[TestClient, dict[str, str]], scorer: Scorer, ws: Workspace
) -> None:
    """A processor's dispute export imported into the event log (not sent to the API) is part of what a
    reviewer must see; an outcome the service took (and appended to the event log itself) shows once."""
    import pyarrow as pa

    c, h = client
    c.post("/v1/charges/score", json=charge(1, amount=123_450), headers=h)
    c.post("/v1/charges/score", json=charge(2, amount=123_450, card_fingerprint="fp_2"), headers=h)
    refund = {"refund_id": "re_api", "charge_id": "ch_1", "created": "2026-03-02T00:00:00+00:00"}
    c.post(
        "/v1/refunds",
        json=refund | {"amount": 100, "currency": "usd", "reason": "requested_by_customer"},
        headers=h,
    )
    day = datetime(2026, 3, 5, 9, 30, tzinfo=UTC)
    imported = {
        "dispute_id": ["dp_export"],
        "charge_id": ["ch_1"],
        "created": [day],
        "reason": ["fraudulent"],
    }
    ws.write_stream([("disputes", pa.table(imported | {"amount": [123_450], "currency": ["usd"]}))])
    efw = {"efw_id": ["efw_x"], "charge_id": ["ch_1"], "created": [day - timedelta(days=1)]}
    ws.write_stream([("early_fraud_warnings", pa.table(efw | {"fraud_type": ["made_with_stolen_card"]}))])
    assert rows(ws, "refunds")[0]["refund_id"] == "re_api"  # appended by the service: in both logs
    one = c.get("/v1/reviews/ch_1", headers=h).json()
    assert [(o["table"], o["id"], o["imported"]) for o in one["outcomes"]] == [
        ("refunds", "re_api", False),
        ("early_fraud_warnings", "efw_x", True),  # the event log's own, oldest first
        ("disputes", "dp_export", True),
    ]
    assert one["outcomes"][2] == {
        "table": "disputes",
        "id": "dp_export",
        "created": "2026-03-05T09:30:00+00:00",
        "reason": "fraudulent",
        "amount": 123_450,
        "currency": "usd",
        "imported": True,
    }
    queue = {r["charge_id"]: r for r in c.get("/v1/reviews", headers=h).json()["data"]}
    assert queue["ch_1"]["outcomes"] == one["outcomes"] and queue["ch_2"]["outcomes"] == []


def test_disputed_counts_a_fraud_dispute_and_approved_only_a_review(scorer: Scorer, ws: Workspace) -> None:
    scorer.score(charge(1))
    scorer.score(charge(2, card_fingerprint="fp_2"))
    out = scorer.close_review("ch_1", "disputed")
    assert out["outcome"]["table"] == "disputes" and out["label"] == 1
    assert scorer.close_review("ch_2", "approved")["outcome"] is None
    closed = {r["charge_id"]: r for r in scorer.reviews("closed")}
    assert closed["ch_2"]["note"] is None  # no note: null, as in the event log, not ""
    assert {(r["charge_id"], r["closed_as"]) for r in rows(ws, "reviews")} == {
        ("ch_1", "disputed"),
        ("ch_2", "approved"),
    }
    assert [(d["dispute_id"], d["reason"]) for d in rows(ws, "disputes")] == [
        ("dp_review_ch_1", "fraudulent")
    ]
    assert rows(ws, "refunds") == []
    assert probe(scorer, 3)["card.count_fraud_disputes_all"] == 1.0
    assert scorer.close_review("ch_1", "disputed") == {**out, "duplicate": True}  # a retry: the same answer
    with pytest.raises(Conflict):
        scorer.close_review("ch_1", "approved")
    with pytest.raises(NotFound):
        scorer.close_review("ch_404", "approved")
    assert len(rows(ws, "disputes")) == 1 and len(rows(ws, "reviews")) == 2


def test_a_dispute_already_received_is_not_counted_twice(scorer: Scorer, ws: Workspace) -> None:
    scorer.score(charge(1))
    dispute = {"dispute_id": "dp_bank", "charge_id": "ch_1", "created": "2026-03-02T00:00:00+00:00"}
    scorer.record_outcome("disputes", dispute | {"reason": "fraudulent", "amount": 90_000, "currency": "usd"})
    assert scorer.close_review("ch_1", "disputed")["outcome"] is None
    assert [d["dispute_id"] for d in rows(ws, "disputes")] == ["dp_bank"]
    assert probe(scorer, 2)["card.count_fraud_disputes_all"] == 1.0


def test_the_processors_dispute_after_a_review_closed_as_disputed_is_not_counted_again(
    scorer: Scorer, ws: Workspace
) -> None:
    scorer.score(charge(1))
    assert scorer.close_review("ch_1", "disputed")["outcome"]["applied"]
    dispute = {"dispute_id": "dp_bank", "charge_id": "ch_1", "created": "2026-03-02T00:00:00+00:00"}
    out = scorer.record_outcome(
        "disputes", dispute | {"reason": "fraudulent", "amount": 90_000, "currency": "usd"}
    )
    assert not out["applied"] and not out["duplicate"]  # recorded, not counted: the charge's dispute counted
    assert {d["dispute_id"] for d in rows(ws, "disputes")} == {"dp_review_ch_1", "dp_bank"}
    assert probe(scorer, 2)["card.count_fraud_disputes_all"] == 1.0


def test_a_closure_logged_before_a_crash_is_appended_once_at_restart(ws: Workspace) -> None:
    s = Scorer.open(ws)
    s.score(charge(1))
    # What a crash right after the closure's commit leaves: the closure and its event in the decision log,
    # neither the event nor the implied refund in the event log.
    closed = datetime.now(UTC)
    event = {"charge_id": "ch_1", "created": closed.isoformat(), "opened": closed.isoformat()}
    event |= {
        "closed_as": "refunded_as_fraud",
        "rule": "big",
        "risk_score": None,
        "reviewer": "bob",
        "note": None,
    }
    us = int(closed.timestamp() * 1_000_000)
    s.log.write(
        ReviewClose("ch_1", "refunded_as_fraud", "", closed.isoformat(), 99, us, event | {"id": "ch_1"})
    )
    s.close()
    assert rows(ws, "reviews") == [] and rows(ws, "refunds") == []
    for _ in range(2):  # the first restart appends; the second finds nothing left to do
        s = Scorer.open(ws)
        try:
            assert [r["reviewer"] for r in rows(ws, "reviews")] == ["bob"]
            assert [r["refund_id"] for r in rows(ws, "refunds")] == ["re_review_ch_1"]
            assert s.log.unappended_outcomes() == []
        finally:
            s.close()
    # A crash after the appends but before they were marked: the restart finds them in the event log.
    with sqlite3.connect(ws.root / "serving" / "decisions.db") as con:
        con.execute("UPDATE outcomes SET appended = 0")
    s = Scorer.open(ws)
    try:
        assert len(rows(ws, "reviews")) == 1 and len(rows(ws, "refunds")) == 1
        assert s.log.unappended_outcomes() == []
        assert probe(s, 2)["card.count_refunds_all"] == 1.0  # counted once, also after three restarts
    finally:
        s.close(snapshot=False)


def test_a_closure_while_a_decline_is_being_recorded_closes_without_a_refund(
    scorer: Scorer, ws: Workspace
) -> None:
    """Found by a review: the closure's implied refund met the decline's claim, a 409 came back after the
    closure was logged, and its reviews event was never appended. A decline in flight means no money moved:
    the closure is its label alone, as with a decline recorded before it."""
    import threading

    assert scorer.score(charge(1, amount=123_450)).outcome == "manual_review"
    entered, release = hold_writes(scorer, kind="authorizations")
    done: dict[str, Any] = {}
    t = threading.Thread(
        target=lambda: done.setdefault("decline", scorer.record_authorization("ch_1", "issuer_declined"))
    )
    t.start()
    assert entered.wait(10)
    # the closure waits for the decline in flight, which its write lets go of a moment later
    threading.Timer(0.3, release.set).start()
    closed = scorer.close_review("ch_1", "refunded_as_fraud")
    t.join(10)
    assert (
        closed["status"] == "closed" and closed["outcome"] is None and done["decline"]["duplicate"] is False
    )
    assert [r["closed_as"] for r in rows(ws, "reviews")] == ["refunded_as_fraud"] and rows(
        ws, "refunds"
    ) == []


def test_a_closure_waits_for_a_decline_in_flight_and_refunds_when_it_loses(
    scorer: Scorer, ws: Workspace
) -> None:
    """Found by a review: a closure took a decline in flight for a recorded one; when the decline then lost
    (refused, failed), the charge had moved money and the closure's refund was never recorded."""
    import threading

    assert scorer.score(charge(1, amount=123_450)).outcome == "manual_review"
    scorer._declining["ch_1"] = ["issuer_declined"]  # a decline's claim, as record_authorization holds it
    threading.Timer(0.05, lambda: scorer._declining.pop("ch_1", None)).start()  # ...which then loses
    closed = scorer.close_review("ch_1", "refunded_as_fraud")
    assert closed["outcome"] == {"table": "refunds", "id": "re_review_ch_1", "applied": True}
    assert [r["refund_id"] for r in rows(ws, "refunds")] == ["re_review_ch_1"]


def test_the_queue_is_worked_page_by_page_with_starting_after_and_each_item_carries_its_charge(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    """Found by a fraud analyst's audit: paging the open queue by offset while closing its reviews skipped
    reviews (closing 3 of 5 made offset 2 past the end), items lacked the charge (amount, card, e-mail
    domain) and the decision's reasons, and a note of null was refused."""
    c, h = client
    scored = [
        c.post("/v1/charges/score", json=charge(i, f"2026-03-01T12:00:0{i}Z"), headers=h).json()
        for i in range(5)
    ]
    assert {d["outcome"] for d in scored} == {"manual_review"}
    first = c.get("/v1/reviews?status=open&limit=2", headers=h).json()
    assert [r["charge_id"] for r in first["data"]] == ["ch_0", "ch_1"] and first["has_more"]
    assert first["next_starting_after"] == "ch_1" and first["next_offset"] == 2
    item = first["data"][0]
    assert item["charge"]["amount"] == 90_000 and item["charge"]["card_last4"] == EXAMPLE_FIELDS["card_last4"]
    assert item["rule"] == "big" and item["reasons"] == scored[0]["reasons"]  # (none: no model here)
    for cid in ("ch_0", "ch_1", "ch_2"):  # the analyst works the first page, and one more
        r = c.post(f"/v1/reviews/{cid}/close", json={"reason": "approved", "note": None}, headers=h)
        assert r.status_code == 200, r.text
    by_offset = c.get("/v1/reviews?status=open&limit=2&offset=2", headers=h).json()
    assert by_offset["data"] == []  # what offsets do to a shrinking queue
    after = c.get("/v1/reviews?status=open&limit=2&starting_after=ch_1", headers=h).json()
    assert [r["charge_id"] for r in after["data"]] == ["ch_3", "ch_4"] and not after["has_more"]
    assert after["next_starting_after"] is None and after["next_offset"] is None
    closed = c.get("/v1/reviews?status=closed", headers=h).json()["data"]
    assert [r["note"] for r in closed] == [None, None, None]


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("starting_after=ch_none", "starting_after must be the charge id of a review"),
        ("starting_after=ch_0&offset=2", "Give offset or starting_after, not both. Got offset 2"),
    ],
)
def test_a_wrong_starting_after_is_a_422_naming_it(
    client: tuple[TestClient, dict[str, str]], query: str, said: str
) -> None:
    c, h = client
    c.post("/v1/charges/score", json=charge(0), headers=h)
    r = c.get(f"/v1/reviews?{query}", headers=h)
    assert r.status_code == 422 and r.json()["error"]["field"] == "starting_after"
    assert said in r.json()["error"]["message"]


def test_a_queue_item_shows_the_charges_outcomes_and_hides_its_scenario(scorer: Scorer) -> None:
    """A fraud analyst's audit: the queue did not say a fraudulent dispute had come (reviewers worked cases
    the network had decided), and a replayed synthetic charge showed its `scenario`, the answer."""
    scorer.score(charge(1, scenario="stolen_card"))
    scorer.score(charge(2))
    dispute = {"dispute_id": "dp_bank", "charge_id": "ch_1", "created": "2026-03-02T00:00:00+00:00"}
    scorer.record_outcome("disputes", dispute | {"reason": "fraudulent", "amount": 90_000, "currency": "usd"})
    first, second = scorer.reviews("open", 10)
    assert "scenario" not in first["charge"] and first["charge"]["charge_id"] == "ch_1"
    assert first["outcomes"] == [
        {
            "table": "disputes",
            "id": "dp_bank",
            "created": "2026-03-02T00:00:00+00:00",
            "reason": "fraudulent",
            "amount": 90_000,
            "currency": "usd",
            "imported": False,  # taken by the service (True: only the event log holds it)
        }
    ]
    assert second["outcomes"] == []


def test_review_items_carry_the_risk_level_and_the_charge_as_the_api_takes_it(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    """A reviewer sees the decision's risk level beside its score, and the charge's fields as the score
    endpoint takes them (not the service's microsecond copies: created_us); status=all lists both kinds
    (it was a 422; leaving status out did it already)."""
    c, h = client
    decided = [c.post("/v1/charges/score", json=charge(i, amount=123_450), headers=h).json() for i in (1, 2)]
    assert [d["outcome"] for d in decided] == ["manual_review", "manual_review"]
    assert c.post("/v1/reviews/ch_1/close", json={"reason": "approved"}, headers=h).status_code == 200
    page = c.get("/v1/reviews", params={"status": "all"}, headers=h)
    assert page.status_code == 200
    items = page.json()["data"]
    assert [(i["charge_id"], i["status"]) for i in items] == [("ch_1", "closed"), ("ch_2", "open")]
    assert items == c.get("/v1/reviews", headers=h).json()["data"]
    for item, d in zip(items, decided, strict=True):
        assert item["risk_level"] == d["risk_level"] and item["risk_score"] == d["risk_score"]
        assert not [k for k in item["charge"] if k.endswith("_us")], item["charge"]
        assert item["charge"]["created"] == "2026-03-01T12:00:00+00:00"
    assert c.get("/v1/reviews", params={"status": "both"}, headers=h).status_code == 422


def test_a_closure_is_a_retry_only_from_the_same_reviewer_and_counted_once(
    ws: Workspace, scorer: Scorer, client: tuple[TestClient, dict[str, str]]
) -> None:
    """Two analysts clicking 'approved' on one review: the second is a 409 (their verdict is not recorded),
    not a duplicate; a retry with another note says the note differs; a retry is not counted as a closure."""
    c, alice = client
    bob = {"Authorization": f"Bearer {KeyStore(ws.root / 'serving' / 'keys.db').create('bob')}"}
    for i in (1, 2):
        assert c.post("/v1/charges/score", json=charge(i, amount=123_450), headers=alice).status_code == 200
    assert c.post("/v1/reviews/ch_1/close", json={"reason": "approved"}, headers=alice).status_code == 200
    again = c.post("/v1/reviews/ch_1/close", json={"reason": "approved"}, headers=alice)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    other = c.post("/v1/reviews/ch_1/close", json={"reason": "approved"}, headers=bob)
    assert (
        other.status_code == 409 and "already closed: as 'approved' at " in other.json()["error"]["message"]
    )
    assert other.json()["error"]["message"].endswith(", by another reviewer.")
    assert c.post(
        "/v1/reviews/ch_2/close", json={"reason": "approved", "note": "called"}, headers=alice
    ).is_success
    noted = c.post("/v1/reviews/ch_2/close", json={"reason": "approved"}, headers=alice)
    assert noted.status_code == 409
    assert noted.json()["error"]["message"].endswith(", with another note (a retry sends the same note).")
    metrics = c.get("/metrics").text
    assert 'payfm_reviews_closed_total{reason="approved"} 2.0' in metrics  # two closures, one retry
    assert [r["charge_id"] for r in scorer.reviews("all", 10)] == ["ch_1", "ch_2"]
    assert len(rows(ws, "reviews")) == 2


def test_a_closure_logged_before_reviewers_were_kept_is_retried_by_anyone() -> None:
    """A decision log from before closures recorded their reviewer: who closed it is unknown, so a retry with
    the same reason and note is a duplicate whoever sends it (not a 409 blaming another reviewer)."""
    from payfm.serving.review_queue import closed_again

    class OldLog:
        def outcomes_of(self, charge_id: str) -> list[tuple[str, dict[str, Any]]]:
            return [("reviews", {"charge_id": charge_id, "closed_as": "approved"})]  # no 'reviewer'

        def get_charge(self, charge_id: str) -> dict[str, Any]:
            return {"amount": 100, "currency": "usd"}

        def get_outcome(self, kind: str, oid: str) -> None:
            return None

    review = {"charge_id": "ch_1", "reason": "approved", "note": None, "closed_at": "2026-12-01T00:00:00"}
    for who in ("alice", None):
        answer = closed_again(OldLog(), review, "approved", "", who)  # type: ignore[arg-type]
        assert answer["duplicate"] is True and answer["label"] == 0
    with pytest.raises(Conflict, match="with another note"):
        closed_again(OldLog(), review, "approved", "x", "alice")  # type: ignore[arg-type]


def test_the_loser_of_a_race_to_close_learns_how_it_was_closed(
    scorer: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two reviewers closing one review at once: the second's check saw it open, its write found it closed.
    It was told only "already closed"; now it is answered as a closure after the first is (an analyst's
    session): how and when, or the first answer when it is the same closure retried."""
    scorer.score(charge(1))
    seen_open = scorer.log.get_review("ch_1")
    first = scorer.close_review("ch_1", "approved", "known customer", reviewer="alice")
    real = scorer.log.get_review

    def stale_once() -> None:
        calls = iter([seen_open])
        monkeypatch.setattr(scorer.log, "get_review", lambda cid: next(calls, None) or real(cid))

    stale_once()
    with pytest.raises(Conflict, match=r"is already closed: as 'approved' at 20"):
        scorer.close_review("ch_1", "disputed", "fraud", reviewer="bob")
    stale_once()
    assert scorer.close_review("ch_1", "approved", "known customer", reviewer="alice") == {
        **first,
        "duplicate": True,
    }
