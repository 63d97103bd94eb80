"""What the decision service must check before it logs a review closure or answers a charge, now that the
event log refuses ids and notes with control characters (docs/events.md, "Ids and free text"): a closure the
event log would refuse is refused first (once logged, its append failed at every start), and a refused id or
amount is described, never quoted."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

import test_serving_reviews
from payfm.events.workspace import Workspace
from payfm.serving.scorer import Scorer
from test_serving_reviews import charge, rows

ws, scorer, client = test_serving_reviews.ws, test_serving_reviews.scorer, test_serving_reviews.client


def test_a_note_the_event_log_refuses_is_refused_before_the_closure_is_logged(
    client: tuple[TestClient, dict[str, str]],
    scorer: Scorer,
    ws: Workspace,
) -> None:
    c, h = client
    c.post("/v1/charges/score", json=charge(1), headers=h)
    r = c.post("/v1/reviews/ch_1/close", json={"reason": "approved", "note": "a\x1b[31mred"}, headers=h)
    assert r.status_code == 422, r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["field"] == "note" and err["message"].endswith("Got U+001B (ESCAPE) at character 2.")
    assert "[31m" not in err["message"] and scorer.log.unappended_outcomes() == []
    ok = c.post("/v1/reviews/ch_1/close", json={"reason": "approved", "note": "called:\n\tfine"}, headers=h)
    assert ok.status_code == 200 and [r["note"] for r in rows(ws, "reviews")] == ["called:\n\tfine"]
    scorer.close(snapshot=False)
    Scorer.open(ws).close(snapshot=False)  # starts: nothing left that the event log refuses


def test_a_refused_id_or_amount_of_a_charge_is_described_not_quoted(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    c, h = client
    r = c.post("/v1/charges/score", json=charge(1, merchant_id="acct_\x1b[31m" + "m" * 40), headers=h)
    assert r.status_code == 422 and r.json()["error"]["message"].endswith(
        "Got U+001B (ESCAPE) at character 6."
    )
    r = c.post("/v1/charges/score", json=charge(1, amount=10**13, amount_usd=10**13), headers=h)
    assert r.status_code == 422 and r.json()["error"]["message"].endswith("Got an integer of 14 digits.")
