"""Random event streams for parity and leakage tests: few entities, clustered times, equal timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import numpy as np
import pyarrow as pa

from payfm.events.schema import SCHEMAS

EPOCH_US = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000


def random_log(seed: int, n: int, span_us: int = 40 * 86_400_000_000, n_keys: int = 6) -> dict[str, pa.Table]:
    """A valid event log of ``n`` charges and some outcomes, with many collisions of keys and times."""
    rng = np.random.default_rng(seed)
    money = np.random.default_rng(seed + 10_000)  # currencies, outcome amounts (the other draws as before)
    currency = money.choice(["usd", "eur", "jpy"], n)
    # Times on a coarse grid so equal timestamps are common, plus a few bursts.
    ts = EPOCH_US + np.sort(rng.integers(0, span_us // 60_000_000, n)) * 60_000_000
    ts[rng.random(n) < 0.2] = ts[0]
    ts = np.sort(ts)
    ids = [f"ch_{i:07d}" for i in rng.permutation(n)]  # id order differs from time order

    def pick(prefix: str, k: int, p_null: float = 0.0) -> list[str | None]:
        vals = rng.integers(0, k, n)
        nulls = rng.random(n) < p_null
        return [None if z else f"{prefix}{v}" for v, z in zip(vals, nulls, strict=True)]

    outcome = rng.choice(["authorized", "issuer_declined", "blocked"], n, p=[0.8, 0.15, 0.05])
    amount = rng.integers(0, 100_000, n)
    amount_usd = rng.integers(0, 100_000, n)
    amount_usd[currency == "usd"] = amount[currency == "usd"]  # (a usd charge's amount is its amount_usd)
    charges = pa.table(
        {
            "charge_id": ids,
            "created": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "merchant_id": pick("mer_", 3),
            "merchant_mcc": ["5411"] * n,
            "merchant_country": rng.choice(["US", "GB", "JP"], n).tolist(),
            "customer_id": pick("cus_", n_keys, 0.1),
            "card_fingerprint": pick("fp_", n_keys),
            "card_bin": rng.choice(["424242", "555555"], n).tolist(),
            "card_last4": ["4242"] * n,
            "card_brand": ["visa"] * n,
            "card_funding": rng.choice(["credit", "prepaid"], n).tolist(),
            "card_country": rng.choice(["US", "GB"], n).tolist(),
            "amount": amount,
            "currency": currency.tolist(),
            "amount_usd": amount_usd,
            "channel": rng.choice(["ecommerce", "card_present", "recurring"], n).tolist(),
            "ip_address": pick("10.0.0.", n_keys, 0.2),
            "ip_country": rng.choice(["US", "GB", "NG"], n).tolist(),
            "device_id": pick("dev_", n_keys, 0.2),
            "email_domain": pick("mail", 3, 0.1),
            "billing_country": rng.choice(["US", "GB"], n).tolist(),
            "shipping_country": [
                None if z else c
                for z, c in zip(rng.random(n) < 0.3, rng.choice(["US", "GB"], n), strict=True)
            ],
            "shipping_address_id": pick("addr_", 4, 0.3),
            "credential_changed_at": pa.array(
                [None if z else int(t) - 3_600_000_000 for z, t in zip(rng.random(n) < 0.8, ts, strict=True)],
                pa.timestamp("us", tz="UTC"),
            ),
            "three_ds": ["not_requested"] * n,
            "cvc_check": rng.choice(["pass", "fail"], n, p=[0.9, 0.1]).tolist(),
            "address_check": ["pass"] * n,
            "outcome": outcome.tolist(),
            "decline_code": [("do_not_honor" if o == "issuer_declined" else None) for o in outcome],
            "retry_of": [None] * n,
            "scenario": [None] * n,
        }
    ).cast(SCHEMAS["charges"])
    authorized = np.flatnonzero(outcome == "authorized")

    def outcomes(k: int, id_col: str, prefix: str) -> tuple[list[str], list[str], np.ndarray]:
        chosen = (
            rng.choice(authorized, size=min(k, len(authorized)), replace=False) if len(authorized) else []
        )
        # On the same minute grid as the charges, so outcomes often share a timestamp with other charges;
        # an outcome is always strictly after its own charge.
        delay = rng.integers(1, 20 * 1440, len(chosen)) * 60_000_000
        created = ts[chosen] + delay
        return [f"{prefix}{j}" for j in range(len(chosen))], [ids[i] for i in chosen], created

    amount_of = dict(zip(ids, charges["amount"].to_pylist(), strict=True))
    currency_of = dict(zip(ids, currency.tolist(), strict=True))

    def own_money(charge_ids: list[str]) -> tuple[list[int], list[str]]:
        """An outcome's own amount: all of its charge's, a part, or (rarely) in another currency."""
        amounts, currencies = [], []
        for cid in charge_ids:
            whole = int(amount_of[cid])
            u = money.random()
            amounts.append(whole if u < 0.4 else int(money.integers(0, whole + 1)))
            currencies.append("gbp" if u > 0.9 else str(currency_of[cid]))
        return amounts, currencies

    did, dcid, dts = outcomes(max(1, n // 15), "dispute_id", "dp_")
    d_amount, d_currency = own_money(dcid)
    disputes = pa.table(
        {
            "dispute_id": did,
            "charge_id": dcid,
            "created": pa.array(dts, pa.timestamp("us", tz="UTC")),
            "reason": rng.choice(["fraudulent", "general"], len(did), p=[0.8, 0.2]).tolist(),
            "amount": d_amount,
            "currency": d_currency,
        }
    ).cast(SCHEMAS["disputes"])
    eid, ecid, ets = outcomes(max(1, n // 20), "efw_id", "efw_")
    efws = pa.table(
        {
            "efw_id": eid,
            "charge_id": ecid,
            "created": pa.array(ets, pa.timestamp("us", tz="UTC")),
            "fraud_type": ["misc"] * len(eid),
        }
    ).cast(SCHEMAS["early_fraud_warnings"])
    rid, rcid, rts = outcomes(max(1, n // 20), "refund_id", "re_")
    r_amount, r_currency = own_money(rcid)
    refunds = pa.table(
        {
            "refund_id": rid,
            "charge_id": rcid,
            "created": pa.array(rts, pa.timestamp("us", tz="UTC")),
            "amount": r_amount,
            "currency": r_currency,
            "reason": ["requested_by_customer"] * len(rid),
        }
    ).cast(SCHEMAS["refunds"])
    return {"charges": charges, "disputes": disputes, "early_fraud_warnings": efws, "refunds": refunds}


def connect(log: dict[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the log's tables registered under their names (as a workspace has)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name, table in log.items():
        con.register(name, table)
    return con


def label_outcomes(log: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """The outcome tables as the online replay takes them (fraud disputes only)."""
    import pyarrow.compute as pc

    d = log["disputes"]
    return {
        "fraud_disputes": d.filter(pc.equal(d["reason"], "fraudulent")),
        "efws": log["early_fraud_warnings"],
        "refunds": log["refunds"],
    }
