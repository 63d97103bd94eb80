"""What an audit of the HTTP API found the outcome endpoints took that the score endpoint refuses: values of
the wrong JSON type (``"amount": true`` stored as a 1-cent refund, Unix seconds read as a time) are refused
by the charge's own check before anything converts them; refunds, disputes and early fraud warnings of a
charge that moved no money (blocked, or declined by its issuer) are a 409 naming its outcome; a charge sent
again with another time names the request's field; a decline code goes with a decline on both endpoints."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from factories import charges as charge_table
from log_holds import hold_writes
from payfm.events.schema import SCHEMAS
from payfm.events.validate import validate_events
from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.serving.app import create_app
from payfm.serving.charges import normalize_charge
from payfm.serving.errors import Conflict, InvalidInput, ServingError
from payfm.serving.scorer import Scorer
from test_serving_reviews import charge

# ch_* of charge() are $900 (to review); one from Russia is blocked by the service itself.
RULES = "from_ru: block if :ip_country: = 'RU'\nbig: review if :amount_usd: > 500\n"
LATER = "2026-03-05T00:00:00Z"  # after charge()'s 2026-03-01T12:00:00Z
NAMES = {"refunds": "refund", "disputes": "dispute", "early_fraud_warnings": "early fraud warning"}
COUNTS = {
    "refunds": "card.count_refunds_all",
    "disputes": "card.count_fraud_disputes_all",
    "early_fraud_warnings": "card.count_efws_all",
}


def refund(oid: str, cid: str, **kw: Any) -> dict[str, Any]:
    r = {"refund_id": oid, "charge_id": cid, "created": LATER, "amount": 1_000, "currency": "usd"}
    return r | {"reason": "fraudulent"} | kw


def dispute(oid: str, cid: str, **kw: Any) -> dict[str, Any]:
    d = {"dispute_id": oid, "charge_id": cid, "created": LATER, "reason": "fraudulent", "amount": 1_000}
    return d | {"currency": "usd"} | kw


def efw(oid: str, cid: str, **kw: Any) -> dict[str, Any]:
    kw.pop("amount", None)  # an early fraud warning has none
    return {"efw_id": oid, "charge_id": cid, "created": LATER, "fraud_type": "made_with_stolen_card"} | kw


OUTCOME: dict[str, Callable[..., dict[str, Any]]] = {
    "refunds": refund,
    "disputes": dispute,
    "early_fraud_warnings": efw,
}


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    w = Workspace.open(tmp_path / "ws", create=True)
    rulesets.save(w, RULES, activate=True, set_name="default", author="test")  # default set: outcome counts
    return w


@pytest.fixture()
def scorer(ws: Workspace) -> Iterator[Scorer]:
    s = Scorer.open(ws)
    yield s
    s.close(snapshot=False)


@pytest.fixture()
def client(scorer: Scorer) -> Iterator[TestClient]:
    with TestClient(create_app(scorer, None)) as c:
        yield c


_PROBES = itertools.count(900)


def counts(scorer: Scorer) -> dict[str, float | None]:
    """The outcome counts of card fp_1 (every charge() here), read by a later charge of it."""
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    features = scorer.score(charge(next(_PROBES), later, amount=100, amount_usd=100)).features
    return {table: features[name] for table, name in COUNTS.items()}


def error(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"type", "message", "field"}
    return err


def raised(call: Callable[[], object]) -> ServingError:
    with pytest.raises(ServingError) as e:
        call()
    return e.value


def nothing_recorded(scorer: Scorer, ws: Workspace, cid: str) -> None:
    assert [kind for kind, _ in scorer.log.outcomes_of(cid) if kind in OUTCOME] == []
    assert all(not ws.files(table) for table in OUTCOME)


# ---- 1. each field's JSON type, checked as the charge's before anything converts it ---------------------

INTEGER, TIME = "must be an integer.", "must be a timestamp with a timezone, as an ISO 8601 text"
TIME += " (e.g. '2026-01-02T03:04:05Z')."
FRACTION = "number with a fraction or an exponent"
WRONG_TYPES = [
    ("refunds", "amount", True, f"{INTEGER} Got a boolean (true)."),  # was stored as a 1-cent refund
    ("refunds", "amount", "100", f"{INTEGER} Got a string ('100')."),
    ("refunds", "amount", 1000.0, f"{INTEGER} Got a {FRACTION} (1000.0)."),
    ("disputes", "amount", False, f"{INTEGER} Got a boolean (false)."),
    ("disputes", "amount", 2**70, "must fit in 64 bits. Got an integer of 22 digits."),  # was a 500
    ("refunds", "created", 1772668800, f"{TIME} Got an integer (1772668800)."),  # Unix seconds
    ("disputes", "created", 1772668800000, f"{TIME} Got an integer of 13 digits."),  # ms: never quoted
    ("early_fraud_warnings", "created", 1772668800.5, f"{TIME} Got a {FRACTION} (1772668800.5)."),
    ("refunds", "charge_id", 1, "must be a string. Got an integer (1)."),  # was looked up as charge '1'
    ("refunds", "reason", True, "must be a string. Got a boolean (true)."),
    ("disputes", "currency", ["usd"], "must be a string. Got an array."),
    ("early_fraud_warnings", "fraud_type", 5, "must be a string. Got an integer (5)."),
]


@pytest.mark.parametrize(("table", "field", "value", "problem"), WRONG_TYPES)
def test_an_outcome_field_of_the_wrong_json_type_is_refused_naming_it(
    scorer: Scorer, ws: Workspace, table: str, field: str, value: object, problem: str
) -> None:
    scorer.score(charge(1))
    e = raised(lambda: scorer.record_outcome(table, OUTCOME[table]("o_1", "ch_1", **{field: value})))
    assert isinstance(e, InvalidInput) and e.field == field
    assert str(e) == f"Field '{field}' of the {NAMES[table]} {problem}"
    nothing_recorded(scorer, ws, "ch_1")
    assert counts(scorer) == {"refunds": 0.0, "disputes": 0.0, "early_fraud_warnings": 0.0}


@pytest.mark.parametrize(
    ("value", "got"),
    [
        (True, "a boolean (true)"),
        ("100", "a string ('100')"),
        (1000.0, f"a {FRACTION} (1000.0)"),
    ],
)
def test_a_charge_and_its_refund_refuse_a_wrong_type_in_the_same_words(
    scorer: Scorer, value: object, got: str
) -> None:
    """One check for both paths (``refuse_wrong_type``): the charge's message was 'Got bool.'."""
    scorer.score(charge(1))
    of_charge = raised(lambda: normalize_charge(charge(2, amount=value, amount_usd=1_000)))
    of_refund = raised(lambda: scorer.record_outcome("refunds", refund("re_1", "ch_1", amount=value)))
    assert str(of_charge) == f"Field 'amount' must be an integer. Got {got}."
    assert str(of_refund) == f"Field 'amount' of the refund must be an integer. Got {got}."
    unix = raised(lambda: normalize_charge(charge(2, created=1772668800)))
    assert str(unix) == f"Field 'created' {TIME} Got an integer (1772668800)." and unix.field == "created"


def test_the_review_note_and_the_authorization_result_are_strings(scorer: Scorer) -> None:
    """The library's other entry points take the same check (over HTTP their models refuse non-strings)."""
    scorer.score(charge(1))
    note = raised(lambda: scorer.close_review("ch_1", "approved", note=5))  # type: ignore[arg-type]
    assert (
        str(note) == "Field 'note' of the review must be a string. Got an integer (5)."
        and note.field == "note"
    )
    assert scorer.log.get_review("ch_1")["status"] == "open"  # type: ignore[index]
    result = raised(lambda: scorer.record_authorization("ch_1", 1))  # type: ignore[arg-type]
    assert str(result) == "Field 'outcome' of the authorization result must be a string. Got an integer (1)."


def test_the_refund_endpoint_refuses_an_amount_past_64_bits(client: TestClient, scorer: Scorer) -> None:
    """The HTTP model takes any JSON integer (its own type check refuses true, '100', 100.0 and Unix times:
    tests/test_serving_openapi_types.py); one past the event log's int64 was a 500 (Arrow's OverflowError)."""
    assert client.post("/v1/charges/score", json=charge(1)).status_code == 200
    err = error(client.post("/v1/refunds", json=refund("re_1", "ch_1", amount=2**70)), 422)
    assert err["field"] == "amount"
    assert err["message"] == "Field 'amount' of the refund must fit in 64 bits. Got an integer of 22 digits."
    assert scorer.log.outcomes_of("ch_1") == []


def test_a_naive_time_of_an_outcome_is_quoted_as_sent(client: TestClient) -> None:
    """A time it parsed is no card number: quoted as sent, not masked as a long run of digits (it was
    "Got a naive timestamp '[card number removed]'")."""
    assert client.post("/v1/charges/score", json=charge(1)).status_code == 200
    err = error(client.post("/v1/disputes", json=dispute("dp_1", "ch_1", created="2026-03-02 15:00:00")), 422)
    assert err["field"] == "created" and "Got a naive timestamp '2026-03-02 15:00:00'." in err["message"]


def test_a_refund_of_nothing_is_refused_but_a_closure_of_a_refunded_charge_still_labels_it(
    client: TestClient, scorer: Scorer
) -> None:
    """A refund moves money (Stripe: a positive amount); a 0 one was taken and counted as a refund. A
    closure as refunded_as_fraud of a charge refunded in full still records its 0 fraudulent refund."""
    assert client.post("/v1/charges/score", json=charge(1)).status_code == 200
    err = error(client.post("/v1/refunds", json=refund("re_0", "ch_1", amount=0)), 422)
    assert err["field"] == "amount" and err["message"].endswith("(a refund moves money). Got 0.")
    assert scorer.log.outcomes_of("ch_1") == []
    full = refund("re_1", "ch_1", amount=90_000, reason="requested_by_customer")
    assert client.post("/v1/refunds", json=full).status_code == 200
    closed = scorer.close_review("ch_1", "refunded_as_fraud")
    assert closed["outcome"] is not None and closed["outcome"]["id"] == "re_review_ch_1"
    amounts = {p["id"]: p["amount"] for kind, p in scorer.log.outcomes_of("ch_1") if kind == "refunds"}
    assert amounts == {"re_1": 90_000, "re_review_ch_1": 0}


# ---- 2. no refund, dispute or early fraud warning of a charge that moved no money -----------------------


def _event_log_charges(ws: Workspace) -> None:
    """ch_000000 authorized, ch_000001 declined (do_not_honor), ch_000002 blocked, in the event log only."""
    rows = charge_table(3, start=datetime(2026, 3, 1, tzinfo=UTC)).to_pylist()
    rows[1] |= {"outcome": "issuer_declined", "decline_code": "do_not_honor"}
    rows[2] |= {"outcome": "blocked"}
    with ws.writer("append") as w:
        w.write("charges", validate_events("charges", pa.Table.from_pylist(rows, schema=SCHEMAS["charges"])))


def _blocked_by_the_service(s: Scorer, ws: Workspace) -> str:
    assert s.score(charge(3, ip_country="RU")).outcome == "blocked"
    return "ch_3"


def _declined_in_the_request(s: Scorer, ws: Workspace) -> str:
    s.score(charge(3, outcome="issuer_declined", decline_code="do_not_honor"))
    return "ch_3"


def _blocked_in_the_request(s: Scorer, ws: Workspace) -> str:  # by the merchant's own rules
    s.score(charge(3, outcome="blocked"))
    return "ch_3"


def _declined_as_a_result_reported(s: Scorer, ws: Workspace) -> str:
    s.score(charge(3))
    assert s.record_authorization("ch_3", "issuer_declined", "insufficient_funds")["applied"]
    return "ch_3"


def _declined_in_the_event_log(s: Scorer, ws: Workspace) -> str:
    return "ch_000001"


def _blocked_in_the_event_log(s: Scorer, ws: Workspace) -> str:
    return "ch_000002"


def _declined_in_the_event_log_and_decided_again(s: Scorer, ws: Workspace) -> str:
    (row,) = [r for r in ws.read("charges").to_pylist() if r["charge_id"] == "ch_000001"]
    sent = {k: v for k, v in row.items() if k not in ("outcome", "decline_code", "scenario")}
    s.score({**sent, "created": row["created"].isoformat()})  # the decision log holds no outcome of it
    return "ch_000001"


NO_MONEY = {
    _blocked_by_the_service: "outcome 'blocked' (with the decision)",
    _declined_in_the_request: "outcome 'issuer_declined' (do_not_honor) (with the decision)",
    _blocked_in_the_request: "outcome 'blocked' (with the decision)",
    _declined_as_a_result_reported: "outcome 'issuer_declined' (insufficient_funds) (reported before)",
    _declined_in_the_event_log: "outcome 'issuer_declined' (do_not_honor) (in the event log)",
    _blocked_in_the_event_log: "outcome 'blocked' (in the event log)",
    _declined_in_the_event_log_and_decided_again: "outcome 'issuer_declined' (do_not_honor) (in the event "
    "log)",
}


@pytest.mark.parametrize("setup", list(NO_MONEY), ids=lambda f: f.__name__.strip("_"))
def test_a_charge_that_moved_no_money_takes_no_refund_dispute_or_efw(
    ws: Workspace, setup: Callable[[Scorer, Workspace], str]
) -> None:
    _event_log_charges(ws)
    s = Scorer.open(ws)
    try:
        cid = setup(s, ws)
        before = counts(s)
        for table, make in OUTCOME.items():
            with pytest.raises(Conflict) as refused:
                s.record_outcome(table, make("o_1", cid, amount=100))
            e = refused.value
            assert e.status == 409 and e.field == "charge_id"
            assert str(e) == (
                f"The {NAMES[table]} 'o_1' must follow a charge that moved money (authorized, or its result "
                "not reported yet): a refund, dispute or early fraud warning follows a successful charge "
                f"only. Got charge '{cid}' with {NO_MONEY[setup]}."
            )
        nothing_recorded(s, ws, cid)
        assert counts(s) == before  # neither counted nor a label
    finally:
        s.close(snapshot=False)


@pytest.mark.parametrize("cid", ["ch_1", "ch_2", "ch_000000"])
def test_a_charge_authorized_or_whose_result_is_outstanding_takes_them(ws: Workspace, cid: str) -> None:
    _event_log_charges(ws)
    s = Scorer.open(ws)
    try:
        s.score(charge(1))  # no result yet
        s.score(charge(2, outcome="authorized"))
        for i, (table, make) in enumerate(OUTCOME.items()):
            out = s.record_outcome(table, make(f"o_{i}", cid, amount=100))
            assert out["applied"] and not out["duplicate"]
        assert {k for k, _ in s.log.outcomes_of(cid)} == set(OUTCOME)
    finally:
        s.close(snapshot=False)


def test_a_decline_reported_after_an_outcome_of_its_charge_is_refused(scorer: Scorer) -> None:
    """The mirror of refusing a refund of a declined charge: whichever of the two comes second is a 409 (a
    decline after the refund left the refund counted and labelled, on a charge that moved no money)."""
    scorer.score(charge(1))
    first = refund("re_1", "ch_1")
    assert scorer.record_outcome("refunds", first)["applied"]
    for outcome, code in (("issuer_declined", "do_not_honor"), ("blocked", None)):
        e = raised(lambda o=outcome, c=code: scorer.record_authorization("ch_1", o, c))  # type: ignore[misc]
        assert isinstance(e, Conflict) and e.status == 409 and e.field == "outcome"
        assert str(e) == (
            f"An authorization result '{outcome}' says charge 'ch_1' moved no money, but its refund 're_1' "
            "is recorded: a refund, dispute or early fraud warning follows a successful charge only. Report "
            "a charge's result before its outcomes."
        )
    assert scorer.record_outcome("refunds", first)["duplicate"]  # a retry: as stored
    assert scorer.record_authorization("ch_1", "authorized")["applied"] is not None  # consistent: taken
    assert isinstance(raised(lambda: scorer.record_authorization("ch_1", "issuer_declined")), Conflict)


@pytest.mark.parametrize("first", ["refund", "decline"])
def test_a_refund_and_a_decline_in_flight_at_once_one_is_refused(scorer: Scorer, first: str) -> None:
    """Found by a review: the two checks read only what was durable, so a refund and a decline of one charge
    sent at the same instant were both taken (9 of 40 racing pairs). The first holds a claim until it is
    durable: the second, sent while the first's log write is held, is a 409."""
    scorer.score(charge(1))
    entered, release = hold_writes(scorer, charge_id="ch_1")
    calls = {
        "refund": lambda: scorer.record_outcome("refunds", refund("re_1", "ch_1")),
        "decline": lambda: scorer.record_authorization("ch_1", "issuer_declined", "do_not_honor"),
    }
    done: dict[str, Any] = {}
    t = threading.Thread(target=lambda: done.setdefault("first", calls[first]()))
    t.start()
    assert entered.wait(10)
    second = raised(calls["decline" if first == "refund" else "refund"])  # while the first is in flight
    release.set()
    t.join(10)
    assert isinstance(second, Conflict) and second.status == 409
    assert second.field == ("outcome" if first == "refund" else "charge_id")
    assert ("'re_1'" in str(second)) if first == "refund" else ("being reported" in str(second))
    assert done["first"]["duplicate"] is False
    assert not scorer._moving and not scorer._declining  # every claim ended


def test_a_refused_duplicate_does_not_end_the_claims_of_the_request_in_flight(scorer: Scorer) -> None:
    """Found by a review: claims were keyed by id only, so a second request for refund re_1 (another
    amount: a 409) ended the first's claims while it was still being written; a second refund of the whole
    amount, or a decline, was then taken beside it."""
    scorer.score(charge(1, amount=90_000, amount_usd=90_000))
    entered, release = hold_writes(scorer, outcome_id="re_1")
    first = refund("re_1", "ch_1", amount=90_000)
    done: dict[str, Any] = {}
    t = threading.Thread(target=lambda: done.setdefault("first", scorer.record_outcome("refunds", first)))
    t.start()
    assert entered.wait(10)
    assert isinstance(raised(lambda: scorer.record_outcome("refunds", {**first, "amount": 5})), Conflict)
    over = raised(lambda: scorer.record_outcome("refunds", refund("re_2", "ch_1", amount=90_000)))
    assert isinstance(over, InvalidInput) and over.field == "amount"  # the first's 90,000 still counted
    assert isinstance(raised(lambda: scorer.record_authorization("ch_1", "issuer_declined")), Conflict)
    release.set()
    t.join(10)
    assert done["first"]["duplicate"] is False
    assert [p["id"] for k, p in scorer.log.outcomes_of("ch_1") if k == "refunds"] == ["re_1"]
    assert not scorer._moving and not scorer._refunding and not scorer._refund_holds


def test_a_refund_in_flight_is_held_again_only_by_the_same_refund(scorer: Scorer) -> None:
    """Found by a review: a second request for refund re_1 in flight was held whatever its amount, unchecked
    against the cap; if it reached the log first, it was recorded over the cap."""
    scorer.score(charge(1, amount=90_000, amount_usd=90_000))
    c = {"amount": 90_000, "currency": "usd"}
    scorer._claim_refund("ch_1", "re_1", {"amount": 1_000}, c, False)
    e = raised(lambda: scorer._claim_refund("ch_1", "re_1", {"amount": 90_000}, c, False))
    assert (
        isinstance(e, Conflict) and e.field == "amount" and "being recorded with another 'amount'" in str(e)
    )
    scorer._claim_refund("ch_1", "re_1", {"amount": 1_000}, c, False)  # the same refund: held once more
    scorer._release_refund("ch_1", "re_1")
    assert scorer._refunding == {"ch_1": {"re_1": 1_000}}  # the first's hold stays
    scorer._release_refund("ch_1", "re_1")
    assert not scorer._refunding and not scorer._refund_holds


def test_a_result_ends_only_its_own_claim(scorer: Scorer) -> None:
    """An authorized result claims nothing, so ending it must not end a decline's claim on the charge."""
    scorer.score(charge(1))
    scorer._claim_result("ch_1", "issuer_declined")
    scorer._claim_result("ch_1", "authorized")
    scorer._release_result("ch_1", "authorized")
    assert isinstance(raised(lambda: scorer._claim_outcome("refunds", "re_1", "ch_1")), Conflict)
    scorer._release_result("ch_1", "issuer_declined")
    scorer._claim_outcome("refunds", "re_1", "ch_1")  # taken once the decline's claim ended
    scorer._release_outcome("refunds", "re_1", "ch_1")
    assert not scorer._moving and not scorer._declining


def test_a_replay_of_the_event_log_takes_its_own_outcomes_whatever_the_charge(ws: Workspace) -> None:
    """A replay in process (append_outcomes False) reads outcomes an import took: no charge check applies."""
    _event_log_charges(ws)
    s = Scorer.open(ws)
    try:
        s.append_outcomes = False
        for cid in ("ch_000001", "ch_000002"):
            out = s.record_outcome("disputes", dispute(f"dp_{cid}", cid, amount=100))
            assert out["duplicate"] is False
    finally:
        s.close(snapshot=False)


def test_a_review_closed_as_fraud_on_a_declined_charge_implies_no_dispute(
    scorer: Scorer, ws: Workspace
) -> None:
    """The closure is the charge's label; the dispute or refund it would imply cannot exist."""
    assert scorer.score(charge(1)).outcome == "manual_review"
    scorer.record_authorization("ch_1", "issuer_declined", "stolen_card")
    closed = scorer.close_review("ch_1", "disputed")
    assert closed["label"] == 1 and closed["outcome"] is None
    assert [r["closed_as"] for r in ws.read("reviews").to_pylist()] == ["disputed"]
    nothing_recorded(scorer, ws, "ch_1")
    assert counts(scorer)["disputes"] == 0.0


def test_the_refund_endpoint_answers_409_naming_the_charges_outcome(client: TestClient) -> None:
    assert client.post("/v1/charges/score", json=charge(1, ip_country="RU")).json()["outcome"] == "blocked"
    err = error(client.post("/v1/refunds", json=refund("re_1", "ch_1")), 409)
    assert err["type"] == "Conflict" and err["field"] == "charge_id"
    assert "Got charge 'ch_1' with outcome 'blocked' (with the decision)." in err["message"]


# ---- 3. a charge sent again with another time: the request's field ---------------------------------------


def test_a_charge_resent_with_another_time_names_the_request_field(
    client: TestClient, scorer: Scorer
) -> None:
    first = charge(1, credential_changed_at="2026-02-01T00:00:00Z")
    assert client.post("/v1/charges/score", json=first).status_code == 200
    for field, other in (
        ("created", "2026-03-01T12:00:01Z"),
        ("credential_changed_at", "2026-02-02T00:00:00Z"),
    ):
        err = error(client.post("/v1/charges/score", json={**first, field: other}), 409)
        assert err["type"] == "Conflict" and err["field"] == field
        assert f"with another '{field}':" in err["message"] and "_us" not in err["message"]
    e = raised(lambda: scorer.score({**first, "created": "2026-03-02T12:00:00Z"}))
    assert isinstance(e, Conflict) and e.field == "created"


# ---- 4. a decline code goes with a decline, on the score endpoint as on the authorization endpoint --------


@pytest.mark.parametrize(
    ("outcome", "with_"),
    [("authorized", "outcome 'authorized'"), ("blocked", "outcome 'blocked'"), (None, "no outcome")],
)
def test_the_score_endpoint_refuses_a_decline_code_without_a_decline(
    client: TestClient, scorer: Scorer, outcome: str | None, with_: str
) -> None:
    sent = charge(1, decline_code="insufficient_funds") | ({"outcome": outcome} if outcome else {})
    err = error(client.post("/v1/charges/score", json=sent), 422)
    expected = (
        "Field 'decline_code' is the issuer's reason for a decline: it goes with outcome 'issuer_declined'. "
        f"Got 'insufficient_funds' with {with_}."
    )
    assert err["field"] == "decline_code" and err["message"] == expected
    assert scorer.log.get_decision("ch_1") is None
    if outcome is not None:  # the authorization endpoint's own words: one rule
        scorer.score(charge(2))
        result = raised(lambda: scorer.record_authorization("ch_2", outcome, "insufficient_funds"))
        assert str(result) == expected and result.field == "decline_code"
    declined = charge(3, outcome="issuer_declined", decline_code="insufficient_funds")
    assert client.post("/v1/charges/score", json=declined).status_code == 200
