"""The HTTP API's outcome endpoints take each field in its JSON type, as the score endpoint does (a refund of
`true` was a 1-cent refund, a `created` of digits was read as Unix time); the OpenAPI document describes the
API as it answers (Bearer keys, the service's error body, the statuses each route can give); HEAD /healthz."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import test_serving_http_audit
from payfm.events.schema import REFUND_REASONS, RULES
from payfm.serving.app import create_app
from payfm.serving.keys import KeyStore
from payfm.serving.scorer import Scorer
from test_serving_http_audit import dispute, error
from test_serving_scorer import charge

scorer, client = test_serving_http_audit.scorer, test_serving_http_audit.client  # the same service


def refund(oid: str, cid: str, **kw: Any) -> dict[str, Any]:
    r = {"refund_id": oid, "charge_id": cid, "created": "2026-03-01T13:00:00Z", "amount": 500}
    return r | {"currency": "usd", "reason": "requested_by_customer"} | kw


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        # worded as the score endpoint words a charge's (found by a review: pydantic's "expected a valid
        # integer" on these endpoints only)
        ("amount", True, "must be an integer. Got a boolean (true)."),
        ("amount", "100", "must be an integer. Got a string ('100')."),
        ("amount", 100.0, "must be an integer. Got a number with a fraction or an exponent (100.0)."),
        ("created", 1772370000, "expected an ISO 8601 time with a timezone"),
        ("created", 1772370000000, "expected an ISO 8601 time with a timezone"),
        ("created", "1772370000", "expected an ISO 8601 time with a timezone"),
        ("currency", 840, "must be a string. Got an integer (840)."),
    ],
)
def test_outcome_fields_are_taken_in_their_json_type(
    client: TestClient, scorer: Scorer, field: str, value: Any, expected: str
) -> None:
    assert client.post("/v1/charges/score", json=charge(1)).status_code == 200
    for path, body in (("/v1/refunds", refund("re_1", "ch_1")), ("/v1/disputes", dispute("dp_1", "ch_1"))):
        err = error(client.post(path, json=body | {field: value}), 422)
        assert err["field"] == field and expected in err["message"], err
    assert scorer.log.outcomes_of("ch_1") == []  # nothing recorded
    ok = client.post("/v1/refunds", json=refund("re_1", "ch_1"))
    assert ok.status_code == 200 and ok.json()["duplicate"] is False  # the same refund, typed right


def test_the_openapi_document_describes_keys_and_errors(scorer: Scorer, tmp_path: Path) -> None:
    keys = KeyStore(scorer.ws.root / "serving" / "keys.db")
    with TestClient(create_app(scorer, keys)) as c:
        spec = c.get("/openapi.json").json()
        assert c.head("/healthz").status_code == 200  # no key needed, as GET
        assert c.post("/v1/refunds", json={}).status_code == 401
    assert spec["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API key of `payfm serve keys`."}
    }
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "Error" in schemas
    assert set(schemas["Error"]["properties"]["error"]["properties"]) == {"type", "message", "field"}
    paths = spec["paths"]
    assert "security" not in paths["/healthz"]["get"] and "security" not in paths["/metrics"]["get"]
    error_ref = {"$ref": "#/components/schemas/Error"}
    for path, ops in paths.items():
        for method, op in ops.items():
            responses = op["responses"]
            assert responses["422"]["content"]["application/json"]["schema"] == error_ref, (path, method)
            assert "503" in responses
            if path not in ("/healthz", "/metrics"):
                assert op["security"] == [{"bearerAuth": []}] and "401" in responses, (path, method)
    assert {"409", "413"} <= set(paths["/v1/charges/score"]["post"]["responses"])
    assert {"404", "409"} <= set(paths["/v1/refunds"]["post"]["responses"])
    # One review is read without a body: a 404, never a 409 or 413 (the closure may answer both).
    one = set(paths["/v1/reviews/{charge_id}"]["get"]["responses"])
    assert "404" in one and not {"409", "413"} & one
    assert {"404", "409", "413"} <= set(paths["/v1/reviews/{charge_id}/close"]["post"]["responses"])
    refund_schema = schemas["Refund"]["properties"]
    assert refund_schema["amount"]["type"] == "integer"


def test_the_openapi_document_states_each_fields_values_as_the_service_checks_them(
    scorer: Scorer,
) -> None:
    """Vocabularies and code lists as enums (null too for an optional field), patterns anchored, bounds and
    lengths: a generated client knows what the service takes (found by an integrator's audit: no enums)."""
    keys = KeyStore(scorer.ws.root / "serving" / "keys.db")
    with TestClient(create_app(scorer, keys)) as c:
        schemas = c.get("/openapi.json").json()["components"]["schemas"]
    checked = 0
    for model, table in (("Charge", "charges"), ("Dispute", "disputes"), ("Refund", "refunds")):
        props = schemas[model]["properties"]
        for name, rule in RULES[table].items():
            p = props[name]
            if "enum" in p:  # every listed value is taken, and only those
                assert all(rule.problem(v) is None for v in p["enum"] if v is not None), name
                assert (None in p["enum"]) == ("anyOf" in p), name  # null listed where the field may be null
                assert rule.problem("not-a-listed-value") is not None
                checked += 1
            if "pattern" in p:  # anchored: a JSON-schema pattern matches anywhere in the value
                assert rule.pattern is not None and p["pattern"] == f"^(?:{rule.pattern})$"
                assert rule.problem("x1234567x") is not None and re.search(p["pattern"], "x1234567x") is None
            if rule.text is not None:
                assert p["maxLength"] == rule.text.max_chars
    assert checked >= 12
    assert schemas["Charge"]["properties"]["currency"]["enum"][:1] == ["aed"]  # ISO 4217, as the service's
    assert schemas["Refund"]["properties"]["reason"]["enum"] == list(REFUND_REASONS)
    assert schemas["Charge"]["properties"]["amount"]["minimum"] == 0
    assert schemas["Charge"]["properties"]["card_bin"]["pattern"] == "^(?:[0-9]{6,8})$"


def test_healthz_answers_head(client: TestClient) -> None:
    r = client.head("/healthz")
    assert r.status_code == 200 and r.text == ""
    assert client.get("/healthz").json()["status"] == "ok"
