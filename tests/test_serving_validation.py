"""The decision service applies the import's rules to the charges and outcomes it receives, so a charge or
outcome accepted online is one an import would accept (features agree offline and online only if their
inputs do): blank texts are missing, a credential change is at or before its charge, an e-mail address is
never quoted, an outcome is strictly later than its charge and of a charge the service or the event log
holds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from fastapi.testclient import TestClient

import test_serving_scorer
from factories import T0
from factories import charges as charge_table
from payfm.events.validate import ValidationError, blank_rows, validate_events
from payfm.events.workspace import Workspace
from payfm.serving.app import create_app
from payfm.serving.charges import normalize_charge
from payfm.serving.errors import InvalidInput, NotFound
from payfm.serving.scorer import Scorer
from test_serving_scorer import charge

ws = test_serving_scorer.ws  # the fixture: a workspace with a production model and the tiny ruleset

# Texts at the edge of "blank": Unicode spaces, separators and controls that are (or are not) whitespace.
EDGES = ["\t", "\x1c", "\x85", "\xa0", "\u1680", "\u2003", "\u2028", "\u3000", "\u200b", "\ufeff", "\u180e"]


@pytest.fixture()
def client(scorer: Scorer) -> Iterator[TestClient]:
    with TestClient(create_app(scorer, None)) as c:
        yield c


def error(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"type", "message", "field"} and "\n" not in err["message"]
    return err


def refused(body: dict[str, Any]) -> InvalidInput:
    with pytest.raises(InvalidInput) as e:
        normalize_charge(body)
    return e.value


# ---- 1. empty and blank texts are missing ----------------------------------------------------------------
@pytest.mark.parametrize("blank", ["", " ", "  ", "\t\n", "\u00a0 ", "\u2003"])
def test_a_blank_optional_text_is_missing(blank: str) -> None:
    c = normalize_charge(charge(1, customer_id=blank, device_id=blank, ip_country=blank))
    assert c["customer_id"] is None and c["device_id"] is None and c["ip_country"] is None


@pytest.mark.parametrize("field", ["merchant_id", "charge_id", "card_fingerprint", "merchant_mcc"])
@pytest.mark.parametrize("blank", ["", " ", "\u2003"])
def test_a_blank_required_text_is_refused_naming_the_field(field: str, blank: str) -> None:
    e = refused(charge(1) | {field: blank})
    assert e.field == field and str(e).startswith(f"Field '{field}' is required. Got ")


def test_blank_texts_are_missing_exactly_as_the_import_says() -> None:
    """The online rule is the import's, text for text (``blank_rows``: Arrow's ``utf8_is_space``)."""
    texts = ["", "a", " a", "a ", *EDGES, *(c * 2 for c in EDGES), "\u200b ", " \ufeff"]
    offline = set(blank_rows(pa.array(texts)).tolist())

    def missing(t: str) -> bool:
        try:
            return normalize_charge(charge(1, customer_id=t))["customer_id"] is None
        except InvalidInput:  # not blank, and refused as an id (a control character, a space at an end)
            return False

    online = {i for i, t in enumerate(texts) if missing(t)}
    assert online == offline and offline  # some are blank, some are not
    # ... and on every code point: Arrow's whitespace is Python's.
    every = [chr(i) for i in range(0x110000) if not 0xD800 <= i <= 0xDFFF]
    arrow = pc.utf8_is_space(pa.array(every)).to_numpy(zero_copy_only=False)
    assert [c for c, a in zip(every, arrow, strict=True) if a != c.isspace()] == []


def test_a_blank_text_over_http(client: TestClient, scorer: Scorer) -> None:
    err = error(client.post("/v1/charges/score", json=charge(1, merchant_id=" ")), 422)
    assert err["field"] == "merchant_id" and err["type"] == "InvalidInput"
    assert client.post("/v1/charges/score", json=charge(2, customer_id="")).status_code == 200
    assert scorer.log.get_charge("ch_2")["customer_id"] is None  # type: ignore[index]
    assert scorer.log.get_charge("ch_1") is None


# ---- 2. a credential change is at or before its charge ---------------------------------------------------
def test_a_credential_change_after_the_charge_is_refused_showing_both_times() -> None:
    late = charge(1, created="2026-03-01T12:00:00Z", credential_changed_at="2026-03-01T12:00:00.000001Z")
    e = refused(late)
    assert e.field == "credential_changed_at"
    assert "2026-03-01T12:00:00.000001+00:00" in str(e) and "2026-03-01T12:00:00+00:00" in str(e)
    assert "at or before the charge's 'created'" in str(e)
    at = normalize_charge(late | {"credential_changed_at": "2026-03-01T12:00:00Z"})
    assert at["credential_changed_at_us"] == at["created_us"]
    none = normalize_charge(charge(1, credential_changed_at=None))
    assert none["credential_changed_at_us"] is None


def test_the_credential_rule_is_the_imports() -> None:
    for changed, ok in (("2026-03-01T12:00:00Z", True), ("2026-03-01T12:00:00.000001Z", False)):
        body = charge(1, created="2026-03-01T12:00:00Z", credential_changed_at=changed)
        table = charge_table(1)
        table = table.set_column(
            table.schema.get_field_index("created"), "created", pa.array([body["created"]])
        )
        at = pa.array([changed])
        table = table.set_column(
            table.schema.get_field_index("credential_changed_at"), "credential_changed_at", at
        )
        try:
            validate_events("charges", table)
            imported = True
        except ValidationError:
            imported = False
        try:
            normalize_charge(body)
            online = True
        except InvalidInput:
            online = False
        assert imported == online == ok


def test_a_credential_change_after_the_charge_over_http(client: TestClient, scorer: Scorer) -> None:
    body = charge(1, credential_changed_at="2026-03-02T00:00:00Z")
    err = error(client.post("/v1/charges/score", json=body), 422)
    assert err["field"] == "credential_changed_at" and "2026-03-02T00:00:00+00:00" in err["message"]
    assert scorer.log.get_charge("ch_1") is None


# ---- 3. an e-mail address is never quoted ----------------------------------------------------------------
@pytest.mark.parametrize("address", ["alice@example.com", "Alice.Smith@Example.COM", " bob@@x", "carol@"])
def test_an_email_address_is_refused_without_being_quoted(client: TestClient, address: str) -> None:
    e = refused(charge(1, email_domain=address))
    local = address.split("@")[0].strip()
    assert e.field == "email_domain" and "an e-mail address, not a domain (not shown)" in str(e)
    assert local not in str(e) and "@" not in str(e)
    err = error(client.post("/v1/charges/score", json=charge(1, email_domain=address)), 422)
    assert err["field"] == "email_domain" and local not in err["message"] and "@" not in err["message"]


def test_a_bad_domain_that_is_no_address_is_still_quoted() -> None:
    assert "'exa mple.com'" in str(refused(charge(1, email_domain="exa mple.com")))
    assert normalize_charge(charge(1, email_domain="EVIL.COM."))["email_domain"] == "evil.com"


# ---- 4. an outcome follows a charge the service or the event log holds -----------------------------------
def dispute(oid: str, cid: str, created: str) -> dict[str, Any]:
    d = {"dispute_id": oid, "charge_id": cid, "created": created, "reason": "fraudulent"}
    return d | {"amount": 1999, "currency": "usd"}


def test_an_outcome_at_its_charges_instant_is_refused(
    client: TestClient, scorer: Scorer, ws: Workspace
) -> None:
    client.post("/v1/charges/score", json=charge(1, created="2026-03-01T12:00:00Z"))
    err = error(client.post("/v1/disputes", json=dispute("dp_1", "ch_1", "2026-03-01T12:00:00Z")), 422)
    assert err["field"] == "created" and "later than its charge 'ch_1'" in err["message"]
    assert err["message"].count("2026-03-01T12:00:00+00:00") == 2  # both times
    early = dispute("dp_1", "ch_1", "2026-03-01T11:59:59Z")
    assert error(client.post("/v1/disputes", json=early), 422)["field"] == "created"
    assert scorer.log.outcomes_of("ch_1") == [] and ws.count("disputes") == 0
    later = client.post("/v1/disputes", json=dispute("dp_1", "ch_1", "2026-03-01T12:00:00.000001Z"))
    assert later.status_code == 200 and later.json()["applied"] is True
    assert ws.count("disputes") == 1


def test_an_outcome_of_an_unknown_charge_is_refused_and_not_appended(
    client: TestClient, scorer: Scorer, ws: Workspace
) -> None:
    """Appended, it would leave the event log an outcome whose charge it lacks, which an import refuses."""
    err = error(client.post("/v1/disputes", json=dispute("dp_1", "ch_nope", "2026-03-01T12:00:00Z")), 404)
    assert err["type"] == "NotFound" and err["field"] == "charge_id"
    assert "'ch_nope'" in err["message"] and "decide or import the charge first" in err["message"]
    assert scorer.log.outcomes_of("ch_nope") == [] and ws.count("disputes") == 0
    refund = {"refund_id": "re_1", "charge_id": "ch_nope", "created": "2026-03-01T12:00:00Z", "amount": 1}
    refund |= {"currency": "usd", "reason": "duplicate"}
    assert error(client.post("/v1/refunds", json=refund), 404)["field"] == "charge_id"


def test_an_outcome_of_a_charge_only_the_event_log_holds_is_taken(ws: Workspace) -> None:
    with ws.writer("append") as w:
        w.write("charges", validate_events("charges", charge_table(1)))  # ch_000000 at T0
    s = Scorer.open(ws)
    try:
        at = dispute("dp_0", "ch_000000", T0.isoformat()) | {"amount": 1000}  # the whole $10.00 charge
        with pytest.raises(InvalidInput) as e:
            s.record_outcome("disputes", at)
        assert e.value.field == "created"
        out = s.record_outcome("disputes", at | {"created": "2026-01-02T00:00:00Z"})
        assert out["duplicate"] is False
    finally:
        s.close()
    assert ws.count("disputes") == 1


def test_a_replay_in_process_appends_nothing_and_takes_outcomes_of_earlier_charges(scorer: Scorer) -> None:
    """In process, outcomes come from the event log itself (their charges may precede the period)."""
    scorer.append_outcomes = False
    out = scorer.record_outcome("disputes", dispute("dp_1", "ch_before", "2026-03-01T12:00:00Z"))
    assert out["applied"] is False and out["duplicate"] is False
    scorer.append_outcomes = True
    with pytest.raises(NotFound):
        scorer.record_outcome("disputes", dispute("dp_2", "ch_before", "2026-03-01T12:00:00Z"))


def test_outcome_and_review_field_errors_say_what_was_expected_and_received(client: TestClient) -> None:
    """The outcome, review and result endpoints word their field errors as the charge endpoint does: the
    field, what was expected, what was received (long numbers masked), not pydantic's own sentence."""
    naive = dispute("dp_1", "ch_1", "2026-03-01T12:00:00")
    err = error(client.post("/v1/disputes", json=naive), 422)
    assert err["field"] == "created" and "expected a time with a timezone" in err["message"]
    assert "Got a naive timestamp '2026-03-01T12:00:00'" in err["message"]
    missing = {k: v for k, v in dispute("dp_1", "ch_1", "2026-03-01T12:00:00Z").items() if k != "amount"}
    assert (
        error(client.post("/v1/disputes", json=missing), 422)["message"]
        == "Field 'amount': required. Got none."
    )
    err = error(client.post("/v1/disputes", json={**missing, "amount": "12.5 dollars"}), 422)
    assert (
        err["message"] == "Field 'amount' of the dispute must be an integer. Got a string ('12.5 dollars')."
    )
    err = error(client.get("/v1/reviews", params={"limit": "many"}), 422)
    assert err["field"] == "limit" and "Got 'many'" in err["message"] and "Input should" not in err["message"]


def test_a_usd_charge_whose_amount_usd_is_not_its_amount_is_refused() -> None:
    """A $5,000 charge sent with amount_usd 1 was decided as a $0.01 one by every amount rule and the model
    (and `serve export` then refused it): refused as an import refuses it."""
    e = refused(charge(1, amount=500_000, currency="usd", amount_usd=1))
    assert e.field == "amount_usd" and "500000. Got 1." in str(e)
    assert (
        normalize_charge(charge(1, amount=500_000, currency="eur", amount_usd=541_850))["amount_usd"]
        == 541_850
    )


def test_the_instants_the_service_derives_are_refused_in_a_score_body(
    client: TestClient, scorer: Scorer
) -> None:
    """Found by a review: `created_us` and `credential_changed_at_us` in a body were thrown away silently (the
    service derives them from `created` and `credential_changed_at`); an unknown field is refused."""
    for name, value in (("created_us", 1), ("credential_changed_at_us", "junk")):
        err = error(client.post("/v1/charges/score", json=charge(7) | {name: value}), 422)
        assert err["field"] == name
        assert err["message"] == (
            f"Field '{name}' is not a field of a charge: the service derives it from "
            f"'{name.removesuffix('_us')}' (docs/events.md)."
        )
    assert client.post("/v1/charges/score", json=charge(7)).status_code == 200  # nothing kept of those
    normalize_charge(charge(8) | {"created_us": 1})  # the library's callers may pass them


def test_a_text_over_its_length_is_refused_by_its_length_not_quoted(client: TestClient) -> None:
    """Found by a review: a review note over 2,000 characters was refused in pydantic's words, quoting its
    first 117 characters (a note is free text: a name, a phone number)."""
    note = "call Ana on 555 0100 " * 100
    r = client.post("/v1/reviews/ch_404/close", json={"reason": "approved", "note": note})
    err = error(r, 422)
    assert err["field"] == "note"
    assert err["message"] == f"Field 'note': expected at most 2000 characters. Got {len(note)}."
