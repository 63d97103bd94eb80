"""Errors of the decision service found by an audit: no card number echoed from a path or id, JSON nested
past the parser's depth is a 422 on every endpoint, an outcome id sent again for another charge is a 409 and a
true duplicate answers with what is stored, outcome validation names the field."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from log_holds import hold_writes
from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.serving.app import create_app
from payfm.serving.errors import Conflict, shown
from payfm.serving.scorer import Scorer, ScorerConfig
from payfm.synth import WorldConfig, generate_world
from test_serving_scorer import RULES, charge, register

PAN = "4111111111111111"
JSON = {"content-type": "application/json"}
SCORE = "/v1/charges/score"
OUTCOME_PATHS = ("/v1/disputes", "/v1/early_fraud_warnings", "/v1/refunds", "/v1/reviews/ch_1/close")


@pytest.fixture()
def scorer(tmp_path: Path) -> Iterator[Scorer]:
    ws = Workspace.open(tmp_path / "ws", create=True)
    register(ws, 1.0, "production")
    rulesets.save(ws, RULES, activate=True, set_name="tiny", author="test")
    s = Scorer.open(ws)
    yield s
    s.close()


@pytest.fixture()
def client(scorer: Scorer) -> Iterator[TestClient]:
    with TestClient(create_app(scorer, None)) as c:
        yield c


def dispute(oid: str, cid: str, **kw: Any) -> dict[str, Any]:
    d = {"dispute_id": oid, "charge_id": cid, "created": "2026-03-01T13:00:00Z", "reason": "fraudulent"}
    return d | {"amount": 1999, "currency": "usd"} | kw


def error(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"type", "message", "field"} and "\n" not in err["message"]
    return err


@pytest.mark.parametrize(
    "written", [PAN, "4111 1111 1111 1111", "4111.1111.1111.1111", f"x{PAN}x", f"ch_{PAN}"]
)
def test_no_error_quotes_a_card_number_from_the_path(client: TestClient, written: str) -> None:
    """A path parameter and an unknown path are quoted masked (a charge id never holds a card number: the
    body scan refuses one, so the 404 says no more than 'no review')."""
    closing = client.post(f"/v1/reviews/{written}/close", json={"reason": "approved"})
    err = error(closing, 404)
    assert "[card number removed]" in err["message"] and err["field"] == "charge_id"
    nowhere = client.get(f"/v1/{written}")
    assert error(nowhere, 404)["type"] == "NotFound"
    for r in (closing, nowhere):
        assert "1111" not in r.text, r.text
    assert shown(f"ch_{PAN}") == "ch_[card number removed]" and shown("ch_1") == "ch_1"
    assert len(shown("x" * 1000)) == 120


def test_json_nested_past_the_parser_is_a_422_on_every_endpoint(client: TestClient) -> None:
    deep = b"[" * 20000 + b"]" * 20000  # 40 KB, under the body limit
    inner = b'{"charge_id": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    for path in ("/v1/charges/score", *OUTCOME_PATHS):
        for body in (deep, inner):
            err = error(client.post(path, content=body, headers=JSON), 422)
            assert err["type"] == "InvalidInput" and err["message"] == (
                "The body is not valid JSON (nested too deeply)."
            ), path
        broken = error(client.post(path, content=b'{"a": ', headers=JSON), 422)
        assert broken["message"] == "The body is not valid JSON (Expecting value at character 6).", path


def test_a_body_that_is_not_an_object_says_what_it_is(client: TestClient) -> None:
    for path in ("/v1/charges/score", *OUTCOME_PATHS):
        for body, kind in ((b"[1]", "a list"), (b'"x"', "a string"), (b"null", "null"), (b"", "none")):
            err = error(client.post(path, content=body, headers=JSON), 422)
            assert err["message"] == f"The body must be a JSON object. Got {kind}.", (path, err)
            assert err["type"] == "InvalidInput" and err["field"] is None


@pytest.mark.parametrize(
    ("field", "value", "got"),
    [
        ("created", 1772370000, "Got 1772370000."),  # a JSON number, not the text '1772370000'
        # a wrong JSON type is worded as the score endpoint words it (its kind, then the value as JSON)
        ("amount", "100", "must be an integer. Got a string ('100')."),  # a text quoted
        ("amount", True, "must be an integer. Got a boolean (true)."),  # JSON's spelling, not Python's
        ("amount", 1.5, "must be an integer. Got a number with a fraction or an exponent (1.5)."),
        (
            "dispute_id",
            12345678901234567,
            "must be a string. Got an integer of 17 digits.",
        ),  # never the digits
        (
            "amount",
            0.1234567890123456,
            "must be an integer. Got a number with 16 digits after the point.",
        ),  # the run in the fraction
    ],
)
def test_outcome_type_errors_quote_a_json_value_as_json_writes_it(
    client: TestClient, field: str, value: object, got: str
) -> None:
    err = error(client.post("/v1/disputes", json=dispute("dp_1", "ch_1", **{field: value})), 422)
    assert err["field"] == field and err["message"].endswith(got), err


def test_outcome_validation_names_the_first_field_on_one_line(client: TestClient) -> None:
    client.post("/v1/charges/score", json=charge(1))
    bad = error(client.post("/v1/disputes", json=dispute("dp_1", "ch_1", reason="Fraudulent")), 422)
    assert bad["type"] == "InvalidInput" and bad["field"] == "reason"
    assert bad["message"].startswith("Field 'reason' of the dispute must be one of fraudulent,")
    assert bad["message"].endswith("Got 'Fraudulent'.")
    two = error(client.post("/v1/disputes", json=dispute("dp_1", "ch_1", reason="x", currency="USD")), 422)
    assert two["field"] == "reason" and "Field 'currency' of the dispute must be" in two["message"]
    refund = {"refund_id": "re_1", "charge_id": "ch_1", "created": "2026-03-01T13:00:00Z", "amount": -1}
    neg = error(client.post("/v1/refunds", json=refund | {"currency": "usd", "reason": "fraudulent"}), 422)
    assert (
        neg["field"] == "amount"
        and neg["message"]
        == "Field 'amount' of the refund must be a value from 0 to 999,999,999,999. Got -1."
    )


def test_an_outcome_id_is_one_outcome_of_one_charge(client: TestClient, scorer: Scorer) -> None:
    """Sent again as it was, it answers with the stored record; with another field (another outcome under
    the same id), 409 naming the field; for another charge, 409 naming the charge it is recorded on, and
    nothing is counted for the other charge."""
    for i in (1, 22):
        client.post("/v1/charges/score", json=charge(i, card_fingerprint=f"fp_{i}"))
    first = client.post("/v1/disputes", json=dispute("dp_1", "ch_1"))
    assert first.json() == {
        "id": "dp_1",
        "charge_id": "ch_1",
        "label_source": "fraud_disputes",
        "applied": True,
        "duplicate": False,
        "counted_from": None,  # (dated after every event seen: it counts from its own time)
    }
    again = client.post("/v1/disputes", json=dispute("dp_1", "ch_1"))
    assert again.status_code == 200 and again.json() == {**first.json(), "duplicate": True}
    err = error(client.post("/v1/disputes", json=dispute("dp_1", "ch_1", reason="general")), 409)
    assert err["type"] == "Conflict" and err["field"] == "reason"
    assert err["message"] == (
        "The dispute 'dp_1' of charge 'ch_1' is recorded already with another 'reason': a retry must send "
        "the same dispute, and another dispute needs a new dispute_id."
    )
    other = client.post("/v1/disputes", json=dispute("dp_1", "ch_22", reason="general"))
    err = error(other, 409)
    assert err["type"] == "Conflict" and err["field"] == "dispute_id"
    assert "'dp_1' is recorded on charge 'ch_1'" in err["message"] and "'ch_22'" in err["message"]
    later = charge(23, card_fingerprint="fp_22", created="2026-03-02T12:00:00+00:00")
    assert scorer.score(later).features["card.count_fraud_disputes_all"] == 0.0
    assert scorer.log.outcomes_of("ch_22") == []


def test_an_id_being_recorded_is_answered_once_it_is_durable(scorer: Scorer) -> None:
    """A second request for an id whose first is still being written waits for it: the same charge gets
    the first's facts, another charge a Conflict, and another outcome under the id (another amount) a
    Conflict naming the field at once (found by a review: it got the first's facts, its amount dropped)."""
    scorer.score(charge(1))
    scorer.score(charge(2))
    entered, release = hold_writes(scorer, outcome_id="dp_1")
    results: dict[str, Any] = {}

    def record(name: str, payload: dict[str, Any]) -> None:
        try:
            results[name] = scorer.record_outcome("disputes", payload)
        except Exception as e:
            results[name] = e

    first = threading.Thread(target=record, args=("first", dispute("dp_1", "ch_1")))
    first.start()
    assert entered.wait(10)
    waiting = [
        threading.Thread(target=record, args=(name, dispute("dp_1", cid)))
        for name, cid in (("same", "ch_1"), ("other", "ch_2"))
    ]
    for t in waiting:
        t.start()
    record("another", dispute("dp_1", "ch_1", amount=999))  # while the first is in flight: not waiting
    assert isinstance(results["another"], Conflict) and results["another"].field == "amount"
    release.set()
    for t in (first, *waiting):
        t.join(10)
    assert results["first"]["duplicate"] is False and results["first"]["applied"] is True
    assert results["same"] == {**results["first"], "duplicate": True}
    assert isinstance(results["other"], Conflict) and "'ch_1'" in str(results["other"])


def test_an_event_log_outcome_sent_for_another_charge_is_a_conflict(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=1500, days=4, seed=4)), "replace")
    refund = ws.read("refunds").to_pylist()[-1]
    elsewhere = next(
        c for c in ws.read("charges", ["charge_id"])["charge_id"].to_pylist() if c != refund["charge_id"]
    )
    scorer = Scorer.open(ws, config=ScorerConfig(fork_snapshots=False))
    try:
        same = scorer.record_outcome("refunds", refund)
        assert same["duplicate"] and same["charge_id"] == refund["charge_id"]
        with pytest.raises(Conflict, match=f"recorded on charge '{refund['charge_id']}'") as info:
            scorer.record_outcome("refunds", refund | {"charge_id": elsewhere})
        assert info.value.field == "refund_id" and not scorer.log.has_outcome("refunds", refund["refund_id"])
    finally:
        scorer.close(snapshot=False)


def test_a_request_without_a_valid_key_is_refused_before_its_body_is_scanned(
    scorer: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card-number scan of a digit-heavy 64 KiB body takes most of a second of the event loop: a request
    without a valid key must not get that far (401 first), on every guarded path."""
    import payfm.serving.app as app_module
    from payfm.serving.keys import KeyStore

    scans: list[int] = []
    scan = app_module.contains_card_number
    monkeypatch.setattr(app_module, "contains_card_number", lambda t: scans.append(len(t)) or scan(t))
    keys = KeyStore(scorer.ws.root / "serving" / "keys.db")
    key = keys.create("tests")
    body = '{"a": "' + "1 " * 20_000 + '"}'
    with TestClient(create_app(scorer, keys)) as c:
        for path in ("/v1/charges/score", "/v1/disputes", "/v1/reviews/ch_1/close"):
            for auth in ({}, {"authorization": "Bearer wrong"}):
                r = c.post(path, content=body, headers=JSON | auth)
                assert error(r, 401)["type"] == "Unauthorized"
        assert scans == []
        ok = c.post("/v1/charges/score", json=charge(1), headers={"authorization": f"Bearer {key}"})
        assert ok.status_code == 200 and scans  # with the key, the body is scanned as before


def test_a_revoked_key_is_told_so_and_a_wrong_secret_is_any_invalid_key(scorer: Scorer) -> None:
    """A client whose key was revoked gets a 401 that says so (not which key nor when: a revoked key has
    often leaked), not the missing-key advice; a wrong secret for that key's id, or a made-up key, learns
    nothing."""
    from payfm.serving.keys import KeyStore

    keys = KeyStore(scorer.ws.root / "serving" / "keys.db")
    key, other = keys.create("ops-bot"), keys.create("other")
    keys.revoke("ops-bot")
    with TestClient(create_app(scorer, keys)) as c:

        def said(k: str) -> str:
            r = c.post("/v1/charges/score", json=charge(1), headers={"authorization": f"Bearer {k}"})
            return str(error(r, 401)["message"])

        gone = said(key)
        assert gone == "This API key has been revoked: ask for a new one (`payfm serve keys create`)."
        generic = "A valid API key is required: send 'Authorization: Bearer <key>'."
        assert said(key[:-1] + ("a" if key[-1] != "a" else "b")) == generic  # the id, a wrong secret
        assert said("pfm_nope_x") == generic
        ok = c.post("/v1/charges/score", json=charge(2), headers={"authorization": f"Bearer {other}"})
        assert ok.status_code == 200


def test_a_422_never_shows_a_long_number_a_field_held(client: TestClient) -> None:
    """A value the card-number scan lets through (digits glued to hex letters, as in an id) is still never
    quoted whole by a validation error."""
    for field, value in (("ip_address", f"cc{PAN}"), ("channel", f"CC{PAN}")):
        err = error(client.post("/v1/charges/score", json=charge(1, **{field: value}), headers=JSON), 422)
        assert err["field"] == field and PAN not in err["message"], err
        assert "[card number removed]" in err["message"]


def test_an_outcome_sent_without_its_json_content_type_says_so(client: TestClient) -> None:
    body = '{"dispute_id": "dp_1", "charge_id": "ch_1"}'
    form = {"content-type": "application/x-www-form-urlencoded"}  # what `curl -d` sends
    r = client.post("/v1/disputes", content=body, headers=form)
    assert "Content-Type: application/json" in error(r, 422)["message"]


@pytest.mark.parametrize("escaped", [False, True])
def test_a_card_number_in_fullwidth_digits_is_refused_unquoted(client: TestClient, escaped: bool) -> None:
    """Digits of another script are digits: a card number typed in CJK input mode is refused as one, whether
    the body holds the characters (the raw scan) or JSON escapes of them (the parsed charge's check)."""
    wide = "".join(chr(0xFF10 + int(d)) for d in PAN)
    body = json.dumps(charge(1, ip_address=wide), ensure_ascii=escaped, default=str)
    assert ("\\uff14" in body) is escaped
    r = client.post("/v1/charges/score", content=body.encode(), headers=JSON)
    err = error(r, 422)
    assert "full card number" in err["message"] and wide not in r.text and PAN not in r.text


@pytest.mark.parametrize("path", ["/v1/charges/score", "/v1/disputes", "/v1/reviews/ch_1/close"])
def test_a_field_sent_twice_is_refused_not_read_as_its_last_value(
    scorer: Scorer, client: TestClient, path: str
) -> None:
    """Found by an SRE audit: `{"amount": 100, ..., "amount": 999999}` was decided on 999999 (the standard
    library keeps the last value), while a proxy or log in front of the service may read the first."""
    body = json.dumps(charge(1) if path == SCORE else dispute("dp_1", "ch_1"))[:-1] + ', "charge_id": "ch_2"}'
    err = error(client.post(path, content=body, headers=JSON), 422)
    assert err["field"] == "charge_id"
    assert err["message"] == "Field 'charge_id': expected once in the body. Got it more than once."
    if path == SCORE:
        assert scorer.log.get_decision("ch_2") is None and scorer.log.get_decision("ch_1") is None
    twice_nested = '{"a": {"b": 1, "b": 2}}'
    assert error(client.post(path, content=twice_nested, headers=JSON), 422)["field"] == "b"


@pytest.mark.parametrize("kind", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"])
def test_a_charge_sent_as_another_content_type_says_so_as_the_other_endpoints_do(
    client: TestClient, kind: str
) -> None:
    body = json.dumps(charge(1))
    err = error(client.post(SCORE, content=body, headers={"content-type": kind}), 422)
    assert "Content-Type: application/json" in err["message"]
    for fine in ("application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.payfm+json"):
        assert client.post(SCORE, content=body, headers={"content-type": fine}).status_code == 200, fine
    for path in (SCORE, "/v1/disputes"):  # none given: not JSON, on every endpoint (FastAPI's strict reading)
        none = error(client.post(path, content=body), 422)["message"]
        assert none.endswith("Got Content-Type none."), none


def test_a_header_sent_twice_is_read_as_its_first_value_as_the_endpoints_read_it(client: TestClient) -> None:
    """Found by a review: Guard kept a header's last value and FastAPI its first, so `application/json` then
    `text/plain` took a body with a field twice past the check that refuses it."""
    body = json.dumps(dispute("dp_9", "ch_1"))[:-1] + ', "dispute_id": "dp_10"}'
    twice = [("content-type", "application/json"), ("content-type", "text/plain")]
    err = error(client.post("/v1/disputes", content=body, headers=twice), 422)
    assert err["field"] == "dispute_id"
    forms_first = [("content-type", "text/plain"), ("content-type", "application/json")]
    assert (
        "Got Content-Type 'text/plain'"
        in error(client.post(SCORE, content=body, headers=forms_first), 422)["message"]
    )
