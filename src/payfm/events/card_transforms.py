"""The keyed transforms of a card-number column (an import mapping's ``transform``: ``fingerprint``, ``bin``,
``last4``): what the event log keeps of a card number, never the number itself (docs/import.md)."""

from __future__ import annotations

import hashlib
import hmac
import re

import pyarrow as pa
import pyarrow.compute as pc

from payfm.events.cards import ascii_digits


def fingerprint(values: pa.Array | pa.ChunkedArray, secret: bytes, *, source: str = "") -> pa.Array:
    """Keyed fingerprints (``fp_`` + 16 hex of HMAC-SHA256) of card numbers, ignoring spaces and dashes.

    Sixteen hex digits that happen to be all decimal (1 card in 1,800) start with a letter instead, as the
    synthetic world's ids do: else 1 card in 18,000 would get a fingerprint that reads as a card number, and
    the import holding it would be refused.

    The same card gives the same fingerprint in a workspace (same secret) and an unrelated one elsewhere.
    Nulls stay null. Values that are not 8-19 digit numbers raise ValueError naming ``source`` and the row,
    without echoing the value.
    """
    out: list[str | None] = []
    for row, value in enumerate(values.to_pylist()):
        if value is None:
            out.append(None)
            continue
        digits = re.sub(r"[ -]", "", _card_text(value))
        if not (digits.isascii() and digits.isdigit() and 8 <= len(digits) <= 19):
            raise ValueError(
                f"{source}row {row + 1}: expected a card number of 8-19 digits; got another value"
            )
        mac = hmac.new(secret, digits.encode(), hashlib.sha256).hexdigest()[:16]
        if mac.isdigit():  # 1 card in 1,800: 16 digits, Luhn-valid for 1 in 10, would read as a card number
            mac = "abcdef"[int(mac[0]) % 6] + mac[1:]
        out.append("fp_" + mac)
    return pa.array(out, type=pa.string())


def _card_text(value: object) -> str:
    """A card-number cell as text, its digits ASCII (the same card gives the same fingerprint, BIN and last
    four however its digits were written)."""
    return str(int(value)) if isinstance(value, int | float) else ascii_digits(str(value))


# Digits of a card number never stored. PCI DSS's truncation baseline, the first 6 and the last 4, hides 6
# digits of a 16-digit number and 5 of an American Express one, but only 2 of a 12-digit one (the Luhn check
# then leaves 10 candidates, and the fingerprint tells which with the workspace's key). So a number keeps
# its last four only with 15 or more digits, and its BIN only with 11 or more; else they are null.
HIDDEN_DIGITS = 5


def truncated(digits: pa.Array, part: str) -> pa.Array:
    """``part`` (``bin``: the first six, ``last4``) of card numbers written as ASCII digits only, null where
    storing it would leave fewer than :data:`HIDDEN_DIGITS` digits unknown: a BIN of a number under 11
    digits, the last four of one under 15 (a number keeps its BIN whenever it keeps its last four)."""
    stored = 6 if part == "bin" else 6 + 4
    kept = pc.utf8_slice_codeunits(digits, 0, 6) if part == "bin" else pc.utf8_slice_codeunits(digits, -4)
    enough = pc.greater_equal(pc.utf8_length(digits), stored + HIDDEN_DIGITS)
    return pc.if_else(enough, kept, pa.scalar(None, pa.string()))


def last4(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The last four digits of card numbers of 15 or more digits (null for shorter ones)."""
    return truncated(_digits_only(values), "last4")


def bin6(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The first six digits (BIN) of card numbers of 11 or more digits (null for shorter ones)."""
    return truncated(_digits_only(values), "bin")


def _digits_only(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    out = [None if v is None else re.sub(r"[^0-9]", "", _card_text(v)) for v in values.to_pylist()]
    return pa.array(out, type=pa.string())
