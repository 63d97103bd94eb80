"""Text conversions a mapping asks for with ``convert``: what exports write, as the event log holds it.

- ``email_domain``: an e-mail address to its domain (what follows its last ``@``, lower case). Stripe's and
  Adyen's exports hold the customer's address; the event log keeps the domain only (docs/events.md), so the
  rest of the address never enters it. A value that is no address is a problem, never quoted (it may be
  personal data); it runs before a mapping's ``map`` (a map of domains), so no address reaches a message.
- ``country``: an ISO 3166-1 country as exports write it to its alpha-2 code: alpha-2 (``us``), alpha-3
  (``USA``), numeric (``840``) or an English name (``United States``, its official or common name),
  case-insensitive, from pycountry's tables (:mod:`payfm.events.countries`), with the English names exports
  write besides ISO's (``Turkey``, ``Russia``, ``Holland``, ``Ivory Coast``: :data:`_ALIASES`; ``UK`` and
  ``EL``, which ISO reserves for them, are ``GB`` and ``GR``); every code the event log accepts is kept
  (``ZZ``, ``AN``). Names in the languages of :data:`LANGUAGES` (``Deutschland``, ``Schweiz``,
  ``États-Unis``, ``España``), from the translations pycountry ships (Debian's iso-codes), also without
  their accents (``Espana``, ``Osterreich``); a name two countries share is left out, and a code or an
  English name keeps its meaning. A value it does not know is a problem naming it: a mapping's
  ``map``, which runs first, names the others (``Unbekannt: null``).

Vectorized over the column (Arrow compute, a dictionary lookup per distinct value).

Example:
    >>> import pyarrow as pa
    >>> domains(pa.array(["Ann@Example.COM ", '"Ann Lee" <ann@b.de>', "x", None])).to_pylist()
    ['example.com', 'b.de', None, None]
    >>> country_codes_of(pa.array(["USA", "840", "germany", "UK", "Atlantis"])).to_pylist()
    ['US', 'US', 'DE', 'GB', None]
    >>> country_codes_of(pa.array(["Deutschland", "Schweiz", "espana", "Royaume-Uni"])).to_pylist()
    ['DE', 'CH', 'ES', 'GB']
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CONVERSIONS = ("email_domain", "country")

EXPECTED = {
    "email_domain": "an e-mail address (name@example.com)",
    "country": "a country as ISO 3166-1 alpha-2 (US), alpha-3 (USA), numeric (840) or its name (in English, "
    "German, French, Spanish...: Germany, Deutschland, Allemagne)",
}


def convert_option(
    path: str, data: dict[str, Any], kind: str, error: Callable[[str, str, object], Exception]
) -> str:
    """A field's ``convert`` (at ``path``; ``data``: the field's options, ``kind``: its source kind), checked;
    ``error`` makes the mapping's ConfigError."""
    value = data["convert"]
    if value not in CONVERSIONS:
        raise error(path, f"one of {', '.join(CONVERSIONS)}", value)
    if kind != "column":
        raise error(path, "a conversion of one source `column`", f"<{kind}>")
    if "transform" in data:
        raise error(path, "`convert` or a card `transform`, not both", "<both>")
    return str(value)


def domains(text: pa.Array) -> pa.Array:
    """The domain of each e-mail address in ``text`` (lower case), null where a value has no ``@`` followed
    by a domain (or is null)."""
    lowered = pc.utf8_lower(pc.utf8_trim_whitespace(text))
    # greedy: the text after the last '@' (a quoted local part may hold one)
    # (a display form, "Ann Lee" <ann@example.com>, ends with its address in angle brackets)
    found = pc.extract_regex(lowered, r"^.*@(?P<domain>[^@\s<>]+)>?$")
    return pc.if_else(pc.is_valid(found), pc.struct_field(found, [0]), pa.scalar(None, pa.string()))


# English names exports write that are not among pycountry's (its names follow ISO's: "Türkiye", "Russian
# Federation", "Côte d'Ivoire"), codes ISO reserves or users assign, and the short names below: each to the
# code it stands for (folded as every key is: :func:`fold`).
_ALIASES = {
    "turkey": "TR", "turkiye": "TR", "russia": "RU", "great britain": "GB", "britain": "GB", "england": "GB",
    "scotland": "GB", "wales": "GB", "northern ireland": "GB", "uk": "GB", "el": "GR", "holland": "NL",
    "the netherlands": "NL", "ivory coast": "CI", "cote d'ivoire": "CI", "macedonia": "MK", "swaziland": "SZ",
    "burma": "MM", "cape verde": "CV", "east timor": "TL", "brunei": "BN", "palestine": "PS",
    "micronesia": "FM", "vatican": "VA", "vatican city": "VA", "holy see": "VA", "dr congo": "CD",
    "democratic republic of the congo": "CD", "congo-kinshasa": "CD", "republic of the congo": "CG",
    "congo-brazzaville": "CG", "uae": "AE", "kosovo": "XK", "xkx": "XK",
    # Russia's short name in the languages of LANGUAGES: their catalogs translate ISO's "Russian Federation"
    # only; and Great Britain and the United States as exports in those languages abbreviate them
    "russland": "RU", "russie": "RU", "rusia": "RU", "rusland": "RU", "rosja": "RU", "rússia": "RU",
    "ryssland": "RU", "venäjä": "RU", "rusko": "RU", "rusya": "RU", "oroszország": "RU", "ρωσία": "RU",
    "россия": "RU", "großbritannien": "GB", "grande-bretagne": "GB", "gran bretaña": "GB",
    "ee. uu.": "US", "ee.uu.": "US", "eeuu": "US",
}  # fmt: skip


@cache
def _country_table() -> tuple[pa.Array, pa.Array]:
    """(keys, alpha-2 codes): each way of writing a country :func:`country_codes_of` reads, folded: every
    code the event log accepts (withdrawn and user-assigned ones too: ``AN``, ``ZZ``), pycountry's alpha-3 and
    numeric codes and names, and :data:`_ALIASES`."""
    import pycountry

    from payfm.events.countries import country_codes

    names: dict[str, str] = {fold(code): code for code in country_codes()}
    for c in pycountry.countries:
        for key in ("alpha_3", "numeric", "name", "official_name", "common_name"):
            value = getattr(c, key, None)
            if value:
                names.setdefault(fold(str(value)), c.alpha_2)
    names |= {fold(alias): code for alias, code in _ALIASES.items()}
    for name, code in translated(pycountry.countries, _catalogs(pycountry.LOCALES_DIR)).items():
        names.setdefault(name, code)
    return pa.array(list(names), pa.string()), pa.array(list(names.values()), pa.string())


# The languages whose country names the conversion reads (pycountry's catalogs of ISO 3166-1 names): those of
# Europe's and the Americas' larger card markets. Not all 159 it ships: some catalogs hold mistakes (one
# gives the Gambia's official name as "Slovenská republika"), which a conversion would apply silently.
LANGUAGES = ("cs", "da", "de", "el", "es", "fi", "fr", "hu", "it", "nb_NO", "nl", "pl", "pt", "pt_BR", "ro",
             "ru", "sv", "tr")  # fmt: skip


def _catalogs(folder: str) -> list[Any]:
    """The gettext catalogs of ISO 3166-1 names of :data:`LANGUAGES` in pycountry's ``folder``."""
    import gettext

    out = []
    for language in LANGUAGES:
        try:
            out.append(gettext.translation("iso3166-1", folder, languages=[language]))
        except OSError:  # (a pycountry without that catalog)
            continue
    return out


def translated(countries: Any, catalogs: list[Any]) -> dict[str, str]:
    """Names of ``countries`` in each of ``catalogs`` (gettext-like: ``gettext(english)``), folded
    (:func:`fold`), -> alpha-2; a name that stands for two countries is left out, and so is one of three
    letters or fewer (Turkish's Chad, ``Çad``, folds to ``cad``, the Canadian dollar's code).

    >>> from types import SimpleNamespace as C
    >>> countries = [C(alpha_2="DE", name="Germany"), C(alpha_2="AT", name="Austria")]
    >>> countries.append(C(alpha_2="XY", name="Other"))  # a mistaken catalog's name for it: Deutschland
    >>> german = C(gettext={"Germany": "Deutschland", "Austria": "Österreich", "Other": "Deutschland"}.get)
    >>> translated(countries, [german])
    {'osterreich': 'AT'}
    """
    codes: dict[str, set[str]] = {}
    for catalog in catalogs:
        for c in countries:
            for key in ("name", "common_name"):
                english = getattr(c, key, None)
                if english:
                    codes.setdefault(fold(catalog.gettext(english)), set()).add(c.alpha_2)
    return {name: next(iter(found)) for name, found in codes.items() if len(found) == 1 and len(name) > 3}


# Letters that do not decompose into a base letter and an accent, as the base letter(s) they are written as
# where the keyboard lacks them: the Turkish dotless ı, the Danish and Norwegian ø, the Polish ł...
_BASE_LETTERS = str.maketrans(
    {"ı": "i", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "æ": "ae", "œ": "oe"}
)


def fold(text: str) -> str:
    """A country as looked up: spaces trimmed, case folded (``ß`` -> ``ss``, Greek final ``ς`` -> ``σ``),
    ``ı``, ``ø``, ``ł``... as their base letters, accents dropped; so ``İSVİÇRE``, ``Isvicre`` and
    ``isviçre`` are one key, as are ``ΚΥΠΡΟΣ`` and ``Κύπρος``, ``Ostrig`` and ``Østrig``.

    >>> [fold(t) for t in ("İSVİÇRE", "Kıbrıs", "ΚΥΠΡΟΣ", "Κύπρος", " Østrig ", "Straße")]
    ['isvicre', 'kibris', 'κυπροσ', 'κυπροσ', 'ostrig', 'strasse']
    """
    decomposed = unicodedata.normalize("NFKD", text.strip().casefold().translate(_BASE_LETTERS))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def country_codes_of(text: pa.Array) -> pa.Array:
    """The alpha-2 code of each country in ``text`` (see the module docstring), null where a value is not
    one (or is null)."""
    keys, codes = _country_table()
    distinct = pc.unique(text)  # (folded in Python: a country column holds few distinct values)
    folded = pa.array([None if v is None else fold(v) for v in distinct.to_pylist()], pa.string())
    found = pc.take(codes, pc.index_in(folded, value_set=keys))
    converted: pa.Array = pc.take(found, pc.index_in(text, value_set=distinct))
    return converted


def convert(kind: str, text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """``text`` converted by ``kind`` (one of :data:`CONVERSIONS`), and the rows whose value it could not
    convert (a value, not a null)."""
    result = domains(text) if kind == "email_domain" else country_codes_of(text)
    bad = np.flatnonzero(pc.and_(pc.is_valid(text), pc.is_null(result)).to_numpy(False))
    return result, bad
