"""Currencies: minor-unit exponents and fixed reference rates to US dollars.

Amounts in the event log are integers in minor units of their currency (cents for usd, yen for jpy, fils
for kwd), plus ``amount_usd`` in US cents for cross-currency features. Imports and the synthetic generator
need the exponent of each currency and a rate to US dollars. The rates are fixed reference values, not market
data: they keep imports reproducible (the same file always gives the same ``amount_usd``), which matters more
for fraud features than the last basis point.

The event log's ``currency`` fields hold any ISO 4217 code, lower case (:func:`currency_codes`), checked as
strictly as countries are (docs/events.md): a misspelled code would never match a rule, a list or a charge's
other outcomes. Converting amounts needs a rate, so imports that convert take only the currencies below.

Example:
    >>> exponent("jpy"), exponent("usd"), round(usd_per_unit("eur"), 2)
    (0, 2, 1.08)
    >>> is_currency("usd"), is_currency("USD"), is_currency("xyz"), currency_hint("USD")
    (True, False, False, " Currency codes are lower case: 'usd'.")
"""

from __future__ import annotations

import difflib
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# ISO 4217 minor-unit exponents (lower-case codes): amount_minor = amount_major * 10**exponent.
MINOR_UNITS: dict[str, int] = {
    "usd": 2, "eur": 2, "gbp": 2, "jpy": 0, "cad": 2, "aud": 2, "nzd": 2, "chf": 2, "sek": 2, "nok": 2,
    "dkk": 2, "pln": 2, "czk": 2, "huf": 2, "ron": 2, "try": 2, "brl": 2, "mxn": 2, "ars": 2, "clp": 0,
    "cop": 2, "inr": 2, "cny": 2, "hkd": 2, "sgd": 2, "krw": 0, "twd": 2, "thb": 2, "myr": 2, "idr": 2,
    "php": 2, "vnd": 0, "aed": 2, "sar": 2, "ils": 2, "zar": 2, "ngn": 2, "kes": 2, "egp": 2, "kwd": 3,
    "bhd": 3, "jod": 3, "omr": 3,
}  # fmt: skip

# US dollars per one major unit of each currency (fixed reference rates, early 2024 levels).
USD_PER_UNIT: dict[str, float] = {
    "usd": 1.0, "eur": 1.08, "gbp": 1.27, "jpy": 0.0067, "cad": 0.74, "aud": 0.66, "nzd": 0.61,
    "chf": 1.13, "sek": 0.095, "nok": 0.094, "dkk": 0.145, "pln": 0.25, "czk": 0.043, "huf": 0.0028,
    "ron": 0.22, "try": 0.031, "brl": 0.2, "mxn": 0.058, "ars": 0.0012, "clp": 0.00105, "cop": 0.00025,
    "inr": 0.012, "cny": 0.138, "hkd": 0.128, "sgd": 0.74, "krw": 0.00075, "twd": 0.032, "thb": 0.028,
    "myr": 0.21, "idr": 0.000064, "php": 0.018, "vnd": 0.000041, "aed": 0.2723, "sar": 0.2667,
    "ils": 0.27, "zar": 0.053, "ngn": 0.00068, "kes": 0.0068, "egp": 0.021, "kwd": 3.25, "bhd": 2.65,
    "jod": 1.41, "omr": 2.6,
}  # fmt: skip

CURRENCIES: tuple[str, ...] = tuple(sorted(MINOR_UNITS))


def _known(code: str) -> str:
    key = code.lower()
    if key not in MINOR_UNITS:
        known = ", ".join(CURRENCIES)
        raise ValueError(f"Unknown currency {code!r}. Expected an ISO 4217 code, one of {known}.")
    return key


def exponent(code: str) -> int:
    """The minor-unit exponent of ``code`` (2 for usd: 1 dollar = 100 cents); case-insensitive."""
    return MINOR_UNITS[_known(code)]


def usd_per_unit(code: str) -> float:
    """US dollars per one major unit of ``code`` at the fixed reference rate."""
    return USD_PER_UNIT[_known(code)]


def _lookup(codes: pa.Array | pa.ChunkedArray, table: dict[str, float]) -> np.ndarray:
    """Per-row value of ``table`` for currency ``codes`` (case-insensitive); NaN for null or unknown codes."""
    keys = pa.array(list(table), type=pa.string())
    values = np.array([*table.values(), np.nan], dtype=np.float64)
    lowered = pc.utf8_lower(pc.cast(codes, pa.string()))
    index = pc.fill_null(pc.index_in(lowered, value_set=keys), len(table))
    return values[np.asarray(index.to_numpy(zero_copy_only=False), dtype=np.int64)]


def minor_unit_factors(codes: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per-row ``10**exponent`` for currency ``codes``: multiply major units by it to get minor units.

    NaN marks a null or unknown code, so callers can report those rows.
    """
    return _lookup(codes, {k: float(10**v) for k, v in MINOR_UNITS.items()})


def usd_cents_factors(codes: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per-row US cents per major unit of currency ``codes`` (NaN for null or unknown codes)."""
    return _lookup(codes, {k: v * 100.0 for k, v in USD_PER_UNIT.items()})


DESCRIBED = "an ISO 4217 currency code, lower case (e.g. usd, eur)"
# Codes ISO 4217 withdrew since 2008 (its list three), which an export of those years may hold: the Croatian
# kuna, the Netherlands Antillean guilder, the old leone, Zimbabwe dollar, Cuban convertible peso, bolivar
# fuerte, ouguiya, dobra, Belarusian ruble, litas, lats, kroon, Zambian kwacha, Slovak koruna, Cypriot and
# Maltese pounds. pycountry has only the current list.
WITHDRAWN = (
    "hrk", "ang", "sll", "zwl", "cuc", "vef", "mro", "std", "byr", "ltl", "lvl", "eek", "zmk", "skk", "cyp",
    "mtl",
)  # fmt: skip


@cache
def currency_codes() -> frozenset[str]:
    """Every code the event log accepts: ISO 4217's current codes (from pycountry, which packages the ISO
    tables, as for countries) in lower case, and the :data:`WITHDRAWN` ones (loaded once)."""
    import pycountry

    return frozenset({c.alpha_3.lower() for c in pycountry.currencies} | set(WITHDRAWN) | set(MINOR_UNITS))


def is_currency(code: str) -> bool:
    return code in currency_codes()


def currency_hint(value: str) -> str:
    """A sentence (with a leading space) that points from a refused ``value`` to the code meant, or "": the
    code without spaces or in lower case, else the nearest code (common currencies first) to a text of two to
    four characters."""
    v = value.strip()
    key = v.lower()
    if key in currency_codes():
        return f" Currency codes {'have no spaces' if v != value else 'are lower case'}: {key!r}."
    if not 2 <= len(v) <= 4:  # a longer text ('dollars') is no misspelled code
        return ""
    close = difflib.get_close_matches(key, CURRENCIES, n=1, cutoff=0.6) or difflib.get_close_matches(
        key, sorted(currency_codes()), n=1, cutoff=0.6
    )
    return f" The nearest ISO 4217 code is {close[0]!r}." if close else ""
