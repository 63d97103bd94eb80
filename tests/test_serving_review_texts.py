"""What the decision service must check before it logs a review closure or answers a charge, now that the
event log refuses ids and notes with control characters (docs/events.md, "Ids and free text"): a closure the
event log would refuse is refused first (once logged, its append failed at every start), and a refused id or
amount is described, never quoted."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

import test_serving_reviews
from payfm.events.workspace import Workspace
from payfm.serving import feedback
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


def test_a_note_with_windows_line_breaks_is_kept_with_line_feeds(
    client: tuple[TestClient, dict[str, str]],
    ws: Workspace,
) -> None:
    """A browser's textarea sends CR LF: taken, stored with line feeds (a lone CR is still refused)."""
    c, h = client
    c.post("/v1/charges/score", json=charge(1), headers=h)
    c.post("/v1/charges/score", json=charge(2), headers=h)
    lone = c.post("/v1/reviews/ch_2/close", json={"reason": "approved", "note": "a\rb"}, headers=h)
    assert lone.status_code == 422 and "U+000D (CARRIAGE RETURN)" in lone.json()["error"]["message"]
    r = c.post("/v1/reviews/ch_1/close", json={"reason": "approved", "note": "called\r\nback"}, headers=h)
    assert r.status_code == 200, r.text
    assert [r["note"] for r in rows(ws, "reviews")] == ["called\nback"]


def test_a_closure_logged_before_the_checks_does_not_stop_a_start(
    client: tuple[TestClient, dict[str, str]],
    scorer: Scorer,
    ws: Workspace,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A closure an older server logged, with a note the event log now refuses, and not appended yet (a
    busy workspace): the next start leaves it in the decision log, unappended, and says so (it failed)."""
    c, h = client
    c.post("/v1/charges/score", json=charge(1), headers=h)
    with monkeypatch.context() as m:  # the older server: no check, and the workspace busy at the append
        m.setattr(feedback, "refuse_review_texts", lambda values: None)
        m.setattr(feedback.FeedbackMixin, "_append_to_event_log", lambda self, table, events: None)
        scorer.close_review("ch_1", "approved", "a\x1b[31mred", None)
    assert [t for t, _ in scorer.log.unappended_outcomes()] == ["reviews"]
    scorer.close(snapshot=False)
    with caplog.at_level(logging.WARNING, logger="payfm.serving"):
        again = Scorer.open(ws)
    again.close(snapshot=False)
    assert [t for t, _ in again.log.unappended_outcomes()] == ["reviews"]
    assert "reviews ch_1 of the decision log was refused" in caplog.text and "[31m" not in caplog.text


def test_a_decline_reported_during_a_closure_leaves_it_a_label(
    client: tuple[TestClient, dict[str, str]],
    scorer: Scorer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A decline reported between the closure's check and its implied refund: the closure stands (logged,
    the label), without a refund; it was a 409 with the closure logged and its event left unappended."""
    c, h = client
    c.post("/v1/charges/score", json=charge(1), headers=h)
    check = feedback.FeedbackMixin._uncaptured
    calls: list[int] = []

    def racing(self: Any, *args: Any) -> Any:
        answer = check(self, *args)
        if not calls:
            calls.append(1)
            self.record_authorization("ch_1", "issuer_declined", "do_not_honor")
        return answer

    monkeypatch.setattr(feedback.FeedbackMixin, "_uncaptured", racing)
    closed = scorer.close_review("ch_1", "refunded_as_fraud", "", None)
    assert calls and closed["outcome"] is None
    assert scorer.log.get_review("ch_1")["status"] == "closed"
    assert "refunds" not in [kind for kind, _ in scorer.log.outcomes_of("ch_1")]  # none of a declined charge
