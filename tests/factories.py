"""Small valid event tables for tests, built by hand so expectations are obvious."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from payfm.events.schema import SCHEMAS

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def charges(
    n: int, start: datetime = T0, step: timedelta = timedelta(hours=7), prefix: str = "ch_"
) -> pa.Table:
    """``n`` valid authorized charges, ``step`` apart from ``start`` (so they span several days)."""
    rows = [
        {
            "charge_id": f"{prefix}{i:06d}",
            "created": start + i * step,
            "merchant_id": f"mer_{i % 3}",
            "merchant_mcc": "5411",
            "merchant_country": "US",
            "customer_id": f"cus_{i % 5}",
            "card_fingerprint": f"fp_{i % 4:04d}cafe",
            "card_bin": "424242",
            "card_last4": "4242",
            "card_brand": "visa",
            "card_funding": "credit",
            "card_country": "US",
            "amount": 1000 + i,
            "currency": "usd",
            "amount_usd": 1000 + i,
            "channel": "ecommerce",
            "ip_address": "203.0.113.7",
            "ip_country": "US",
            "device_id": f"dev_{i % 2}",
            "email_domain": "example.com",
            "billing_country": "US",
            "shipping_country": "US",
            "shipping_address_id": None,
            "credential_changed_at": None,
            "three_ds": "not_requested",
            "cvc_check": "pass",
            "address_check": "pass",
            "outcome": "authorized",
            "decline_code": None,
            "retry_of": None,
            "scenario": None,
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMAS["charges"])


def disputes(charge_ids: list[str], created: datetime, reason: str = "fraudulent") -> pa.Table:
    rows = [
        {
            "dispute_id": f"dp_{i}",
            "charge_id": c,
            "created": created,
            "reason": reason,
            "amount": 1000,
            "currency": "usd",
        }
        for i, c in enumerate(charge_ids)
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMAS["disputes"])


def usd_consistent(charge: dict[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``charge`` with, for a charge in usd, the one of amount / amount_usd that ``given`` does not set made
    equal to the other (a usd charge carries its amount twice; the decision service refuses it otherwise)."""
    if charge.get("currency") != "usd":
        return charge
    if "amount_usd" in given and "amount" not in given:
        return {**charge, "amount": charge["amount_usd"]}
    if "amount" in given and "amount_usd" not in given:
        return {**charge, "amount_usd": charge["amount"]}
    return charge
