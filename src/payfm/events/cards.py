"""Card-number (PAN) detection and the keyed fingerprint transform.

A full card number is 13-19 digits passing the Luhn check, possibly written with single spaces or dashes
between digit groups. It must never be stored, logged or echoed: detection reports only the row and column.
Detection is vectorized with Arrow's regular expressions; only candidate values (rare in clean data) reach the
Python Luhn check.
"""

from __future__ import annotations

import hashlib
import hmac
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# A run of 13-19 digits, optionally separated by single spaces or dashes, not glued to other letters or digits
# (so a hex hash that happens to contain 13 digits in a row is not a card number).
_CANDIDATE = r"(?:^|[^0-9A-Za-z])\d(?:[ -]?\d){12,18}(?:$|[^0-9A-Za-z])"
_RUN = re.compile(r"(?<![0-9A-Za-z])\d(?:[ -]?\d){12,18}(?![0-9A-Za-z])")


def luhn_valid(digits: str) -> bool:
    """True if ``digits`` (only 0-9) passes the Luhn checksum.

    >>> luhn_valid("4242424242424242"), luhn_valid("4242424242424241")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    """True if ``text`` holds a 13-19 digit Luhn-valid number (spaces or dashes allowed between digits)."""
    for match in _RUN.finditer(text):
        digits = re.sub(r"[ -]", "", match.group(0))
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return True
    return False


def redact_card_numbers(text: str) -> str:
    """``text`` with every full card number (as :func:`contains_card_number` finds them) replaced by
    ``[card number removed]``: for messages that quote input, such as a parser's error.

    >>> redact_card_numbers("got 5: 1,m1,4111 1111 1111 1111,12.50")
    'got 5: 1,m1,[card number removed],12.50'
    """

    def one(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group(0))
        return "[card number removed]" if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group(0)

    return _RUN.sub(one, text)


def _luhn_valid_ints(values: np.ndarray) -> np.ndarray:
    """Vectorized Luhn check of non-negative int64 values, digit by digit from the right."""
    v = values.astype(np.int64, copy=True)
    total = np.zeros(len(v), dtype=np.int64)
    position = 0
    while np.any(v > 0):
        d = v % 10
        if position % 2 == 1:
            d = np.where(d > 4, d * 2 - 9, d * 2)
        total += d
        v //= 10
        position += 1
    ok: np.ndarray = total % 10 == 0
    return ok


def card_number_rows(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """0-based positions of the values of ``column`` that contain a full card number.

    Strings are scanned for digit runs; integers (and integral floats) of 13-19 digits are Luhn-checked.
    Other types cannot hold a card number and yield no rows.
    """
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        mask = pc.fill_null(pc.match_substring_regex(col, _CANDIDATE), False)
        candidates = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        if len(candidates) == 0:
            return candidates
        texts = col.take(pa.array(candidates)).to_pylist()
        return np.array(
            [i for i, s in zip(candidates, texts, strict=True) if contains_card_number(s)], dtype=np.int64
        )
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        filled = pc.fill_null(col, 0)
        values = filled.to_numpy(zero_copy_only=False)
        if pa.types.is_floating(t):
            integral = np.isfinite(values) & (np.floor(values) == values) & (values < 1e19)
            values = np.where(integral, values, 0)
        in_range = (values >= 10**12) & (values < 10**19)
        candidates = np.flatnonzero(in_range)
        if len(candidates) == 0:
            return candidates
        ok = _luhn_valid_ints(values[candidates].astype(np.int64))
        found: np.ndarray = candidates[ok]
        return found
    return np.zeros(0, dtype=np.int64)


def fingerprint(values: pa.Array | pa.ChunkedArray, secret: bytes, *, source: str = "") -> pa.Array:
    """Keyed fingerprints (``fp_`` + 16 hex of HMAC-SHA256) of card numbers, ignoring spaces and dashes.

    The same card gives the same fingerprint in a workspace (same secret) and an unrelated one elsewhere.
    Nulls stay null. Values that are not 8-19 digit numbers raise ValueError naming ``source`` and the row,
    without echoing the value.
    """
    out: list[str | None] = []
    for row, value in enumerate(values.to_pylist()):
        if value is None:
            out.append(None)
            continue
        digits = re.sub(r"[ -]", "", str(int(value)) if isinstance(value, int | float) else str(value))
        if not (digits.isdigit() and 8 <= len(digits) <= 19):
            raise ValueError(
                f"{source}row {row + 1}: expected a card number of 8-19 digits; got another value"
            )
        mac = hmac.new(secret, digits.encode(), hashlib.sha256).hexdigest()
        out.append("fp_" + mac[:16])
    return pa.array(out, type=pa.string())


def last4(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The last four digits of card numbers (safe to store)."""
    out = [
        None
        if v is None
        else re.sub(r"[^0-9]", "", str(int(v)) if isinstance(v, int | float) else str(v))[-4:]
        for v in values.to_pylist()
    ]
    return pa.array(out, type=pa.string())


def bin6(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The first six digits (BIN) of card numbers (safe to store)."""
    out = [
        None
        if v is None
        else re.sub(r"[^0-9]", "", str(int(v)) if isinstance(v, int | float) else str(v))[:6]
        for v in values.to_pylist()
    ]
    return pa.array(out, type=pa.string())
