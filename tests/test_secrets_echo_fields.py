"""A field name a client sends that is no field of a charge is quoted as the outcome endpoints quote theirs
(:func:`payfm.serving.errors.shown`): a card number in it masked, the name cut to 120 characters, in the
message and in `field` alike (a 60,000-character name was echoed twice, a 120 kB answer)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from payfm.serving.app import create_app
from payfm.serving.charges import normalize_charge
from payfm.serving.errors import InvalidInput
from payfm.serving.scorer import Scorer
from test_serving_http_audit import scorer  # noqa: F401 (the fixture: a workspace's scorer)
from test_serving_scorer import charge

PAN = "4111111111111111"
DISPUTE = {
    "dispute_id": "dp_1",
    "charge_id": "ch_1",
    "created": "2026-03-01T13:00:00Z",
    "reason": "fraudulent",
}
DISPUTE |= {"amount": 1999, "currency": "usd"}
NUMBER = "4111111111111112"  # 16 digits that fail the Luhn check: no card number, masked all the same


@pytest.fixture()
def client(scorer: Scorer) -> Iterator[TestClient]:  # noqa: F811 (the imported fixture)
    with TestClient(create_app(scorer, None, max_body=256 * 1024)) as c:
        yield c


def refusal(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    err: dict[str, Any] = r.json()["error"]
    return err


@pytest.mark.parametrize("name", [f"cc{NUMBER}", f"x_{NUMBER}_y", "card 4111 1111 1111 1112"])
def test_an_unknown_field_name_holding_a_long_number_is_masked_as_the_disputes_endpoint_masks_it(
    client: TestClient, name: str
) -> None:
    scored = refusal(client, "/v1/charges/score", charge(1) | {name: "x"})
    for shown in (scored["message"], scored["field"]):
        assert "1111 1112" not in shown and NUMBER not in shown and PAN not in shown, scored
    assert "[card number removed]" in scored["message"] and "not a field of a charge" in scored["message"]
    assert scored["field"] is not None and "[card number removed]" in scored["field"]
    disputed = refusal(client, "/v1/disputes", DISPUTE | {name: "x"})
    assert scored["field"] == disputed["field"]  # one helper for both endpoints


@pytest.mark.parametrize("name", [f"cc{PAN}", f"{PAN}_x", "card 4111 1111 1111 1111"])
def test_an_unknown_field_name_holding_a_card_number_is_never_echoed(client: TestClient, name: str) -> None:
    """Refused by the card-number scan of the field names or as no field of a charge: either way unquoted."""
    scored = refusal(client, "/v1/charges/score", charge(1) | {name: "x"})
    said = f"{scored['message']} {scored['field']}"
    assert PAN not in said and "1111 1111" not in said, scored


def test_a_long_unknown_field_name_is_cut_in_the_message_and_the_field(client: TestClient) -> None:
    name = "z" * 60_000
    r = client.post("/v1/charges/score", json=charge(1) | {name: 1})
    assert r.status_code == 422 and len(r.content) < 1000, len(r.content)
    err = r.json()["error"]
    assert len(err["field"]) == 120 and err["field"].endswith("...")
    assert f"Field '{err['field']}' is not a field of a charge" in err["message"]


def test_a_known_field_is_still_named_as_it_is() -> None:
    with pytest.raises(InvalidInput) as e:
        normalize_charge(charge(1) | {"amount": "12"})
    assert e.value.field == "amount" and "Field 'amount'" in str(e.value)
    with pytest.raises(InvalidInput) as unknown:
        normalize_charge(charge(1) | {"colour": "red"})
    assert unknown.value.field == "colour" and str(unknown.value).startswith("Field 'colour' is not a field")
