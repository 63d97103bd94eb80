"""Personal data a mapping would store as an id: refused by row, never quoted (docs/import.md).

An id field read as it is from a column (not through a keyed ``hash``) stores the file's text: an export's
customer column that holds e-mail addresses, or its shipping address column written out, would put personal
data in the event log, where every feature, rule list and decision log repeats it. So:

- a value of an id field (``customer_id``, ``merchant_id``, ``device_id``, ...) that is an e-mail address is
  a problem of its row, with the mapping that stores a keyed hash instead (or the address's domain as
  ``email_domain``); so is one written as a phone number is (``+1 415 555 0100``, ``(415) 555-0100``);
- a ``shipping_address_id`` read as it is holds an id (an export's own address token), not an address: a
  value with spaces or commas, as a written address has, is a problem of its row, with the mapping that
  hashes the address (the field is a "keyed hash of the full shipping address", docs/events.md).

Example:
    >>> import pyarrow as pa
    >>> email_rows(pa.array(["cus_1", "Ann.Lee@Example.COM", None, "a@b"])).tolist()
    [1]
    >>> phone_rows(pa.array(["+44 20 7946 0958", "4155550100", "(415) 555-0100", "+1-2", "415.555.0100"]))
    array([0, 2, 4])
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.events.cards import shown_text
from payfm.events.import_problems import Problems
from payfm.events.mapping import FieldSpec
from payfm.events.schema import CHARGE_ID_RULE, ID, RULES

# Every id field of every table (the fields whose rule is an id's, docs/events.md "Ids and free text").
ID_FIELDS = frozenset(
    name for rules in RULES.values() for name, rule in rules.items() if rule in (ID, CHARGE_ID_RULE)
)
# An e-mail address (RE2, Arrow's): a local part, '@', a domain with a dot and a top-level name of letters;
# in a display form too ("Ann Lee" <ann@example.com>). Ids such as `acct@2` or `a@b` are not one.
_EMAIL = r"(?i)(?:^|[\s<])[^@\s<>]+@[^@\s<>]+\.[a-z]{2,63}(?:$|[\s>])"
_WRITTEN = r"[\s,]"  # what a written address holds and an address token does not
# A phone number as people write one, maybe after 'tel:': international (a '+', then 8 to 15 digits,
# spaces, dots, dashes or brackets between them; or 00 and a country code followed by a separator,
# 001-202-555-0143) or North American with its separators, maybe after its trunk 1 ((415) 555-0100,
# 415.555.0100, 1-800-555-0100). Digits alone (4155550100, 0012025550143) are not one: a numeric id looks
# the same.
_PHONE = (
    r"^(?:[Tt][Ee][Ll]:)?(?:\+[1-9](?:[\s().-]*\d){7,14}|00[1-9]\d{0,2}[\s.-](?:[\s().-]*\d){6,13}"
    r"|(?:1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4})$"
)


def _rows(text: pa.Array, pattern: str) -> np.ndarray:
    found = pc.fill_null(pc.match_substring_regex(text, pattern), False)
    return np.flatnonzero(found.to_numpy(zero_copy_only=False))


def email_rows(text: pa.Array) -> np.ndarray:
    """The 0-based rows of ``text`` that hold an e-mail address."""
    return _rows(text, _EMAIL)


def phone_rows(text: pa.Array) -> np.ndarray:
    """The 0-based rows of ``text`` that are a phone number as people write one."""
    return _rows(text, _PHONE)


def check_personal(spec: FieldSpec, result: pa.Array, name: str, out: Problems) -> None:
    """Record the rows of the id field ``spec`` (read as it is from ``name``, its column or columns) whose
    computed value ``result`` is personal data: an e-mail address, a phone number, or a written shipping
    address."""
    if spec.target not in ID_FIELDS or spec.kind not in ("column", "columns"):
        return
    hashed = f"`{spec.target}: {{hash: [{', '.join(shown_text(c) for c in spec.columns)}]}}`"
    emails = email_rows(result)
    if len(emails):
        domain = ""
        if spec.kind == "column" and spec.target == "customer_id":
            column = shown_text(spec.column)
            domain = f"; its domain may go into `email_domain: {{column: {column}, convert: email_domain}}`"
        out.rows(
            name,
            emails,
            f"an id that is not an e-mail address (personal data: store its keyed hash, {hashed}{domain})",
            "an e-mail address (not shown)",
        )
    phones = phone_rows(result)
    if len(phones):
        out.rows(
            name,
            phones,
            f"an id that is not a phone number (personal data: store its keyed hash, {hashed})",
            "a phone number (not shown)",
        )
    if spec.target == "shipping_address_id":
        written = pc.fill_null(pc.match_substring_regex(result, _WRITTEN), False).to_numpy(False)
        written[emails] = False  # (said once, as an e-mail address or a phone number)
        written[phones] = False
        rows = np.flatnonzero(written)
        if len(rows):
            out.rows(
                name,
                rows,
                "a keyed hash of the shipping address or the export's own address token, an id without "
                f"spaces or commas (an address is personal data: {hashed} stores its keyed hash)",
                "a text with spaces or commas, as a written address (not shown)",
            )


__all__ = ["ID_FIELDS", "check_personal", "email_rows", "phone_rows"]
