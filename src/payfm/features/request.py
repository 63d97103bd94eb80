"""Request-time and derived features for one charge: the reference formulas.

The online engine inlines these formulas in its generated code (payfm.features.online_codegen; a test holds
the two to the same values) and the offline engine computes them vectorized (payfm.features.offline; the
parity tests hold it to the online values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from payfm.features.definitions import Derived, RequestFeature

# Standard-time UTC offset (hours) of a merchant country, for "local hour". A fixed offset per country is an
# approximation (no DST, one zone per country), stated in docs/features.md.
COUNTRY_UTC_OFFSET_H: dict[str, int] = {
    "US": -5,
    "CA": -5,
    "MX": -6,
    "BR": -3,
    "AR": -3,
    "GB": 0,
    "IE": 0,
    "PT": 0,
    "FR": 1,
    "DE": 1,
    "ES": 1,
    "IT": 1,
    "NL": 1,
    "BE": 1,
    "SE": 1,
    "PL": 1,
    "CH": 1,
    "AT": 1,
    "NG": 1,
    "ZA": 2,
    "RO": 2,
    "UA": 2,
    "TR": 3,
    "RU": 3,
    "AE": 4,
    "IN": 5,
    "SG": 8,
    "CN": 8,
    "HK": 8,
    "PH": 8,
    "JP": 9,
    "KR": 9,
    "AU": 10,
    "NZ": 12,
}
_US_PER_HOUR = 3_600_000_000


def request_value(f: RequestFeature, charge: Mapping[str, Any], ts_us: int) -> float | None:
    """The value of a request-time feature for one charge (a mapping of charge fields).

    Timestamps are read as integer microseconds from ``<field>_us`` (as ``created_us``).
    """
    if f.kind == "amount_usd":
        return float(charge["amount_usd"]) / 100.0
    if f.kind == "amount_usd_log":
        return math.log(float(charge["amount_usd"]) / 100.0 + 1.0)
    if f.kind == "local_hour":
        offset = COUNTRY_UTC_OFFSET_H.get(charge.get("merchant_country") or "", 0)
        return float((ts_us // _US_PER_HOUR + offset) % 24)
    if f.kind == "mismatch":
        a, b = charge.get(f.columns[0]), charge.get(f.columns[1])
        if a is None or b is None:
            return None
        return 1.0 if a != b else 0.0
    if f.kind == "is":
        # The values have the field's type (checked when the feature is built): no conversion on either side.
        return 1.0 if charge.get(f.columns[0]) in f.values else 0.0
    if f.kind == "missing":
        return 1.0 if charge.get(f.columns[0]) is None else 0.0
    if f.kind == "since":
        then = charge.get(f.columns[0] + "_us")
        return None if then is None else float(ts_us - int(then)) / 1e6
    raise AssertionError(f.kind)


def derive(f: Derived, inputs: Sequence[float | None]) -> float | None:
    """The value of a derived feature from the values of its inputs, in order (null in, null out)."""
    a, b = inputs[0], inputs[1]
    if a is None or b is None:
        return None
    if f.op == "ratio":
        return None if b == 0 else a / b
    if f.op == "diff":
        return a - b
    std = inputs[2]
    if std is None or std == 0:
        return None
    return (a - b) / std
