"""Synthetic prediction tables for examples, tests and docs: known base rate, scenarios and score quality.

Example:
    >>> synthetic_predictions(100, seed=0).num_rows
    100
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

SCENARIOS = ("card_testing", "account_takeover", "stolen_card", "friendly_fraud")


def synthetic_predictions(
    n: int, *, seed: int = 0, fraud_rate: float = 0.03, separation: float = 2.0, immature: float = 0.05
) -> pa.Table:
    """``n`` predictions over 14 days with the columns of ``score_window``; fraud scores higher by
    ``separation`` (in logit units); the last ``immature`` share of charges has an immature label."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < fraud_rate).astype(np.int64)
    scen_idx = rng.integers(0, len(SCENARIOS), n)
    # scenarios differ in difficulty: card testing is easy, friendly fraud is hard
    lift = separation * np.array([1.5, 1.0, 0.8, 0.2])[scen_idx]
    logit = rng.normal(-4.0, 1.2, n) + y * lift
    score = 1.0 / (1.0 + np.exp(-logit))
    offsets = np.sort(rng.integers(0, 14 * 86_400_000_000, n))
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    created = [t0 + timedelta(microseconds=int(o)) for o in offsets]
    scenario = [SCENARIOS[i] if f else None for i, f in zip(scen_idx, y, strict=True)]
    merchants = rng.zipf(1.6, n) % 500
    return pa.table(
        {
            "charge_id": [f"ch_{i:07d}" for i in range(n)],
            "created": pa.array(created, pa.timestamp("us", tz="UTC")),
            "score": score,
            "is_fraud": y,
            "mature": np.arange(n) < round(n * (1 - immature)),
            "scenario": pa.array(scenario, pa.string()),
            "amount_usd": rng.lognormal(8.0, 1.0, n).astype(np.int64),
            "channel": rng.choice(["ecommerce", "card_present", "recurring"], n, p=[0.6, 0.3, 0.1]),
            "merchant_id": [f"mer_{m}" for m in merchants],
            "merchant_country": rng.choice(["US", "GB", "FR", "BR"], n, p=[0.6, 0.2, 0.1, 0.1]),
            "card_fingerprint": [f"fp_{c}" for c in rng.integers(0, max(n // 4, 1), n)],
        }
    )
