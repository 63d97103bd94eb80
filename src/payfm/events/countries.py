"""ISO 3166-1 alpha-2 country codes: what the event log, the decision service, lists and rules accept.

The codes come from pycountry (the ISO 3166 tables, kept current by its maintainers; docs/events.md says why
a library and not a list of our own): the 249 assigned codes, the withdrawn ones of ISO 3166-3 (an old export
may hold ``AN`` or ``YU``) and the user-assigned ranges (``AA``, ``QM``-``QZ``, ``XA``-``XZ``, ``ZZ``), where
``XK`` is Kosovo by common use. Two upper-case letters are not enough: ``UK`` is the classic slip (the United
Kingdom is ``GB``), and a rule or blocklist on it would never match a charge.

Example:
    >>> is_country("GB"), is_country("UK"), is_country("XK")
    (True, False, True)
    >>> country_hint("UK")
    " The United Kingdom's code is 'GB'."
"""

from __future__ import annotations

import string
from functools import cache

DESCRIBED = "an ISO 3166-1 alpha-2 country code (two upper-case letters, e.g. US, GB)"

# Codes ISO reserves "exceptionally" that people write for a country whose code is another.
_SLIPS = {"UK": ("GB", "The United Kingdom"), "EL": ("GR", "Greece")}


@cache
def country_codes() -> frozenset[str]:
    """Every code :func:`is_country` accepts (loaded once; pycountry reads its tables on first use)."""
    import pycountry

    codes = {c.alpha_2 for c in pycountry.countries}
    codes |= {c.alpha_2 for c in pycountry.historic_countries if getattr(c, "alpha_2", None)}
    user = ["AA", "ZZ"] + [f"Q{ch}" for ch in "MNOPQRSTUVWXYZ"] + [f"X{ch}" for ch in string.ascii_uppercase]
    return frozenset(codes | set(user))


def is_country(code: str) -> bool:
    return code in country_codes()


def country_hint(value: str) -> str:
    """A sentence (with a leading space) that points from a refused ``value`` to the code meant, or ""."""
    v = value.strip()
    if v.upper() in _SLIPS:
        code, name = _SLIPS[v.upper()]
        return f" {name}'s code is '{code}'."
    if v != v.upper() and is_country(v.upper()):
        return f" Country codes are upper case: '{v.upper()}'."
    if v != value and is_country(v):
        return f" Did you mean '{v}' (no spaces)?"
    return ""
