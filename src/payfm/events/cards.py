"""Card-number (PAN) detection and the keyed fingerprint transform.

A full card number is 13-19 digits passing the Luhn check; one starting with 1 has 15 (the only cards whose
numbers start with 1 are the airlines' UATP cards, of 15 digits: an epoch time in milliseconds, 13 digits,
passes Luhn one time in ten and is no card number, nor are those in micro- or nanoseconds, 16 and 19
digits). It may be written in digit groups separated by 1-3
characters of space, dash, dot, slash or underscore, or, for a number written in fours (the last group 1-4
digits), by line breaks or a longer run of spaces (``4111 1111 1111 1111``, ``4111.1111.1111.1111``,
``4111 - 1111 - 1111 - 1111``), and may touch letters (``card4111111111111111``), except the letters of a
hexadecimal token or of a UUID: a digit run inside a device id or a SHA-256 hex digest is part of that
identifier (random 64-hex ids hold a Luhn-valid run of 13-19 digits between letters about once in 230).
Written with colons or pluses (``4111:1111:1111:1111``, ``4111+1111+1111+1111``) or with its first group
in parentheses (``(4111) 1111-1111-1111``), it must also be written as cards are, as a whole run, and start
with a card brand's prefix: times, IPv6 addresses and sums use those characters too (commas are not taken;
docs/events.md has the measurements). It must never be stored, logged or echoed: detection reports only the
row and column. Digits of any script count (``４１１１…`` fullwidth, ``٤١١١…`` Arabic-Indic), and so do the
separators of any script (an ideographic space, a fullwidth hyphen or full stop, a thin space, a format
character such as a right-to-left mark, or a mark that combines with the digit before it: a variation
selector, the combining grapheme joiner, a keycap): a number written with them is as much a card number;
so are superscript and circled digits (``⁴``, ``④``). The digits are those of Python's Unicode database
(Unicode 14 on Python 3.11: digits added later are not read).

Detection is vectorized with Arrow's regular expressions; only candidate values (rare in clean data) reach the
Python window and Luhn checks.
"""

from __future__ import annotations

import decimal
import functools
import json
import math
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.events.text import escaped

# A necessary condition, cheap enough for every string on the serving hot path and run by RE2 over columns:
# 13 digits with at most 3 separator characters between neighbours. Values passing it get the exact check.
# Separators between digit groups: spaces (also tabs and no-break spaces), dashes, dots, slashes, underscores.
_SPACE_CHARS = " \t\n\r\v\f\u00a0"
_LINE_BREAKS = "\n\r\v\f"
_SEP = _SPACE_CHARS + "._/-"  # (line breaks too: a number typed over lines, or a CR LF between groups)
# ...and ASCII controls, as spaces (ascii_digits): a terminal shows none, so a BEL between groups prints the
# digits joined (`payfm sql` of '4111' || chr(7) || ...). Escaped: RE2 and re read ``\x07`` alike.
_CONTROLS = r"\x00-\x08\x0e-\x1f\x7f"
_SEP_CLASS = "[" + _SEP.replace("-", "") + _CONTROLS + "-]"
# ...or a longer run of white space (a number typed with wide gaps, or aligned in columns): 4 or more, so that
# the two never match the same run (no backtracking blow-up in Python's re on the serving hot path).
_WIDE_GAP = "[" + _SPACE_CHARS + "]{4,}"  # (the characters themselves: RE2 and re read them alike)
_CANDIDATE = rf"[0-9](?:(?:{_SEP_CLASS}{{0,3}}|{_WIDE_GAP})[0-9]){{12}}"
_PREFILTER = re.compile(_CANDIDATE)
# Card numbers written with other punctuation: 4111:1111:1111:1111, 4111+1111+1111+1111 (a URL's spaces), one
# kind throughout, and (4111) 1111-1111-1111. Colons and pluses also write times, IPv6 addresses and sums, so
# such a number counts only written as cards are: in fours (the last group 1-4 digits) or Amex's 4-6-5, a
# whole run (see _punct_spans), passing Luhn and starting with a card brand's prefix (IIN). Not commas: lists
# of four 4-digit numbers (MCCs, amounts) passed those checks 3 times in 100 (docs/events.md). Their
# prefilter, a necessary condition: three groups joined by the punctuation (4-4-digit or Amex's 4-6-digit),
# or four digits in parentheses. Not less: a time with its offset (``00:00:03+0000``), a URL's port
# (``:8080``) or a phone number (``+1415...``) made 1.5M values of such a column 60 times slower to scan.
_PUNCT_SHAPE = r"[0-9]{4}[:+][0-9]{4}(?:[0-9]{2})?[:+][0-9]|\([0-9]{4}\)"
_PUNCT_PREFILTER = re.compile(_PUNCT_SHAPE)
# Separators of other scripts, as the ASCII one they stand for (see _ascii_char): spaces and format characters
# (an ideographic space, a thin space, a right-to-left mark) read as a space, dashes as a dash.
_WIDE_SEP = {"\uff0e": ".", "\u3002": ".", "\u066b": ".", "\uff0f": "/", "\uff3f": "_", "\u066c": " "}
_WIDE_DASH = "\u2212\u30fc\uff70"  # minus sign, katakana-hiragana prolonged sound marks
_BLANK_CATEGORIES = ("Zs", "Cf", "Cc", "Zl", "Zp", "Mn", "Me")  # (Mn, Me: a variation selector, a keycap)
_WIDE_PUNCT = {"\uff1a": ":", "\uff0b": "+", "\uff08": "(", "\uff09": ")"}  # fullwidth forms
# Letters and symbols drawn blank, read as spaces: the braille blank, the Hangul fillers (an audit wrote a
# card number with U+2800 between its groups, and it was stored and shown)
_BLANKS = "\u2800\u3164\u115f\u1160\uffa0"
# Arrow's (RE2) prefilter of text columns: the same, with the digits and separators of every script.
_ANY_DIGIT = r"[\p{Nd}\p{No}]"
_CANDIDATE_ANY = (
    _CANDIDATE.replace("[0-9]", _ANY_DIGIT).replace(
        _SEP_CLASS,
        "["
        + _SEP.replace("-", "")
        + _CONTROLS
        + r"\p{Zs}\p{Cf}\p{Cc}\p{Zl}\p{Zp}\p{Pd}"
        + "".join(rf"\x{{{ord(c):04x}}}" for c in (*_WIDE_SEP, *_WIDE_DASH, *_BLANKS))
        + "-]",
    )
    + "|"
    + _PUNCT_SHAPE.replace("[0-9]", _ANY_DIGIT)  # (the punctuation forms' prefilter, any script)
    .replace("[:+]", r"[:+\x{ff1a}\x{ff0b}]")
    .replace(r"\(", r"[(\x{ff08}]")
    .replace(r"\)", r"[)\x{ff09}]")
)
# Marks that combine with the digit before them (variation selectors, the combining grapheme joiner, keycaps):
# read as a space, as _ascii_char reads them; replaced before the prefilter runs, as one more class in its
# separators made RE2 about 80 times slower on text of other scripts.
_MARKS = r"[\p{Mn}\p{Me}]"
_NOT_PLAIN = re.compile(r"[^\x09-\x0d\x20-\x7e]")  # not ASCII, or an ASCII control other than tab to CR
# The prefilter of bytes that are not all UTF-8, which RE2 reads as Latin-1: a UTF-8 multi-byte sequence
# may be a digit or a separator of another script.
_UTF8_CHAR = r"[\xc2-\xf4][\x80-\xbf]{1,3}"
_CANDIDATE_BYTES = (
    _CANDIDATE.replace("[0-9]", rf"(?:[0-9]|{_UTF8_CHAR})").replace(
        _SEP_CLASS, rf"(?:{_SEP_CLASS}|{_UTF8_CHAR})"
    )
    + "|"
    + _PUNCT_SHAPE.replace("[0-9]", rf"(?:[0-9]|{_UTF8_CHAR})")
    .replace("[:+]", rf"(?:[:+]|{_UTF8_CHAR})")
    .replace(r"\(", rf"(?:\(|{_UTF8_CHAR})")
    .replace(r"\)", rf"(?:\)|{_UTF8_CHAR})")
)
# digit groups joined by separators
_SEQUENCE = re.compile(rf"[0-9]+(?:(?:{_SEP_CLASS}{{1,3}}|{_WIDE_GAP})[0-9]+)*")
_GROUP = re.compile(r"[0-9]+")
_NON_HEX = re.compile(r"[g-zG-Z]")
# A UUID (8-4-4-4-12 hex digits): its all-digit groups are dash-separated digit runs, and 1 random UUID in
# 5,700 held a Luhn-valid 16-digit window (``4xxx-yxxx-xxxxxxxxxxxx``) before it was exempted.
_UUID = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(?![0-9A-Za-z])")
_ALNUM = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# The exact punctuation forms (in ASCII), touching no letter or digit: fours or 4-6-5 joined by one colon or
# plus throughout (group 1, then \1), or the first four in parentheses, then single spaces or dashes (every
# repetition is of fixed-width groups: no backtracking blow-up).
_PUNCT = re.compile(
    r"(?<![0-9A-Za-z])(?:"
    r"[0-9]{4}([:+])(?:[0-9]{4}\1[0-9]{4}(?:\1[0-9]{4})?\1[0-9]{1,4}|[0-9]{6}\1[0-9]{5})"
    r"|\([0-9]{4}\)[ -]?(?:[0-9]{4}[ -][0-9]{4}(?:[ -][0-9]{4})?[ -][0-9]{1,4}|[0-9]{6}[ -][0-9]{5})"
    r")(?![0-9A-Za-z])"
)
# Card brands by the leading digits of the number (first match wins; checked in this order): the brand of a
# card transform (payfm.events.import_convert), and the prefix a number written with punctuation must have.
BRAND_PREFIXES: tuple[tuple[str, str], ...] = (
    ("amex", r"^3[47]"),
    ("jcb", r"^35(2[89]|[3-8])"),
    ("diners", r"^3(0[0-5]|[689])"),
    ("visa", r"^4"),
    ("mastercard", r"^(5[1-5]|222[1-9]|22[3-9]|2[3-6]|27[01]|2720)"),
    ("discover", r"^(6011|64[4-9]|65)"),
    ("unionpay", r"^62"),
)
_IIN = re.compile("|".join(pattern for _name, pattern in BRAND_PREFIXES))
_SPACES = _SPACE_CHARS
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # a Luhn-doubled digit, its digits summed


class _Tokens:
    """The runs of ASCII letters and digits of a text, found once (one pass): for each, whether it holds a
    letter past f (no hexadecimal token). A digit group's run is looked up by bisection, so the checks of
    every group of a text take time linear in it (walking each group's run cost a 64 KB body of hex runs
    holding 1,000s of digit groups 40 s, the server's event loop blocked meanwhile)."""

    def __init__(self, text: str) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.non_hex: list[bool] = []
        for m in _TOKEN.finditer(text):
            self.starts.append(m.start())
            self.ends.append(m.end())
            self.non_hex.append(_NON_HEX.search(m.group()) is not None)

    def free(self, start: int, end: int) -> bool:
        """False if the digit group at ``start:end`` is glued to the letters of a hexadecimal token (only 0-9
        and a-f: a digest, a device id). A card number glued to a short affix of hex letters
        (``cc4111111111111111``) is taken for one too: random 20-character hex ids (a device id of 10 bytes)
        hold Luhn-valid digit runs with only a few hex letters around them too, so a short affix cannot be
        told from an identifier."""
        i = bisect_right(self.starts, start) - 1  # (the run holding the group: digits are in one)
        if self.starts[i] == start and self.ends[i] == end:
            return True
        return self.non_hex[i]


_TOKEN = re.compile(r"[0-9A-Za-z]+")


def _separators_ok(legacy: bool, same_kind: bool, kind: str, gaps: int) -> bool:
    """Separators a written card number uses: single spaces or dashes in any mix (``4111 1111-1111 1111``), or
    one kind throughout, ignoring spaces around it (``4111 - 1111 - ...``, ``4111.1111.1111.1111``). A dot,
    slash or underscore needs three groups (two gaps): a decimal (``0.1234567890123``) is not one."""
    return gaps == 0 or legacy or (same_kind and (kind in ("", "-") or gaps >= 2))


def _card_spans(
    text: str, original: str | None = None, *, hex_tokens: bool = True
) -> Iterator[tuple[int, int]]:
    """Spans of ``text`` holding a full card number: every window of whole digit groups of a sequence with
    13-19 digits, acceptable separators, free ends and a valid Luhn checksum, not inside a UUID. Without
    ``hex_tokens`` (free text: a note, a comment) digits glued to hex letters count too (``ab4111...``).

    Linear in the sequence's length: prefix sums give each window's digit count, separator facts and Luhn
    sum in constant time (a 64 KiB body of single digits between spaces would otherwise take a second)."""
    uuids: list[tuple[int, int]] | None = None
    tokens: _Tokens | None = None
    for seq in _SEQUENCE.finditer(text):
        groups = [m.span() for m in _GROUP.finditer(text, seq.start(), seq.end())]
        n = len(groups)
        digits = "".join(text[a:b] for a, b in groups)
        if len(digits) < 13:
            continue
        # cum[g]: digits before group g; a window of groups i..j holds cum[j + 1] - cum[i] digits
        cum = [0] * (n + 1)
        for g, (a, b) in enumerate(groups):
            cum[g + 1] = cum[g] + b - a
        # separator g joins groups g and g + 1: its kind (spaces stripped) and whether it is a single space or
        # dash; odd[g]: separators before g that are not; run[g]: first separator of g's run of one kind
        kinds, odd, run = [""] * max(n - 1, 0), [0] * n, [0] * max(n - 1, 0)
        # wide[g]: separators before g breaking a line or of 4+ spaces; four[g]: groups before g of 4 digits
        wide, four = [0] * n, [0] * (n + 1)
        for g in range(n - 1):
            sep = text[groups[g][1] : groups[g + 1][0]]
            kinds[g] = sep.strip(_SPACES)
            odd[g + 1] = odd[g] + (not (len(sep) == 1 and (sep in _SPACES or sep == "-")))
            run[g] = run[g - 1] if g and kinds[g] == kinds[g - 1] else g
            wide[g + 1] = wide[g] + (len(sep) >= 4 or any(c in sep for c in _LINE_BREAKS))
        for g, (a, b) in enumerate(groups):
            four[g + 1] = four[g] + (b - a == 4)
        # Luhn prefix sums by digit parity: plain[r][k], doubled[r][k] over the digits p < k with p % 2 == r
        plain: tuple[list[int], list[int]] = ([0], [0])
        doubled: tuple[list[int], list[int]] = ([0], [0])
        for p, ch in enumerate(digits):
            d, r = ord(ch) - 48, p % 2
            plain[r].append(plain[r][-1] + d)
            doubled[r].append(doubled[r][-1] + _DOUBLED[d])
            plain[1 - r].append(plain[1 - r][-1])
            doubled[1 - r].append(doubled[1 - r][-1])
        # a group written with another script's digits is no hexadecimal token's (``cafe４１１１…``)
        if tokens is None:
            tokens = _Tokens(text)
        free_first, free_last = (
            not hex_tokens or tokens.free(a, b) or (original is not None and not original[a:b].isascii())
            for a, b in (groups[0], groups[-1])
        )
        j0 = 0
        for i in range(n):
            if i == 0 and not free_first:
                continue
            while j0 < n and cum[j0 + 1] - cum[i] < 13:
                j0 += 1
            j = j0
            while j < n and cum[j + 1] - cum[i] <= 19:
                if j == n - 1 and not free_last:
                    break
                gaps = j - i
                same = gaps == 0 or run[j - 1] <= i
                legacy = odd[j] - odd[i] == 0
                # Over line breaks or wide gaps only a number written in fours: 4111 / 1111 / 1111 / 1111
                # (not two phone numbers on two lines, ZIP codes one per line, a row of a table).
                spread = wide[j] - wide[i] > 0
                fours = gaps >= 3 and four[j] - four[i] == gaps and 0 < groups[j][1] - groups[j][0] <= 4
                if spread and not (same and kinds[i] == "" and fours):
                    j += 1
                    continue
                if _separators_ok(legacy, same, kinds[i] if gaps else "", gaps):
                    s, e = cum[i], cum[j + 1]
                    r = (e - 1) % 2  # digits of the last one's parity count plain, the others doubled
                    total = plain[r][e] - plain[r][s] + doubled[1 - r][e] - doubled[1 - r][s]
                    if total % 10 == 0 and (digits[s] != "1" or e - s == UATP_DIGITS):
                        span = groups[i][0], groups[j][1]
                        if uuids is None:
                            uuids = [m.span() for m in _UUID.finditer(text)]
                        if not any(a <= span[0] and span[1] <= b for a, b in uuids):
                            yield span
                j += 1


def _punct_spans(text: str) -> Iterator[tuple[int, int]]:
    """Spans of ``text`` (ASCII digits) holding a card number written with colons or pluses, or with its
    first group in parentheses (:data:`_PUNCT`): 13-19 digits, Luhn-valid, with a brand's prefix.

    The run must be whole: a group of digits or hex digits, or nothing (``::``), on the far side of the same
    punctuation next to it makes the number one part of a longer run, an IPv6 address or a sum
    (``2620:0000:1234:5678::1``, ``12+4111+1111+1111+1111``); a word there does not (``cc:4111:...`` is hex,
    ``card:4111:...`` is not). Linear: each token next to a match is read for at most its two neighbours."""
    for m in _PUNCT.finditer(text):
        digits = "".join(_GROUP.findall(m.group()))
        if not (13 <= len(digits) <= 19 and luhn_valid(digits) and _IIN.match(digits)):
            continue
        start, end = m.span()
        punct = m.group(1)
        if punct is None:  # (4111) 1111-1111-1111: not if the run goes on (another space or dash and digit)
            if text[end : end + 1] in (" ", "-") and text[end + 1 : end + 2].isdigit():
                continue
        elif _listed(text, start - 1, -1, punct) or _listed(text, end, 1, punct):
            continue
        yield start, end


def _listed(text: str, at: int, step: int, punct: str) -> bool:
    """Whether ``text[at]`` is ``punct`` joining the number to a token of hex digits, or to the same
    punctuation again (IPv6's ``::``); not a stray one before a space, a symbol or the end of the text
    (``4111:1111:1111:1111: declined``, a URL's ``+4111+...+1111+&``)."""
    if not 0 <= at < len(text) or text[at] != punct:
        return False
    i = at + step
    if not (0 <= i < len(text)) or text[i] not in _ALNUM:
        return 0 <= i < len(text) and text[i] == punct
    while 0 <= i < len(text) and text[i] in _ALNUM:
        if _NON_HEX.match(text[i]):
            return False
        i += step
    return True


# 13 or more digits, possibly glued to letters or split by up to 3 other characters between digits: what a
# message quoting user input never shows. Wider than the detection above on purpose (no Luhn check, no word
# boundary, no hex exemption): hiding a long number costs a message nothing, showing a card number leaks it.
_LONG_NUMBER = re.compile(r"\d(?:[^0-9A-Za-z]{0,3}\d){12,}")
_ESCAPES = re.compile(r"\\(?:[nrtvfab]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})")


def _detection_text(text: str) -> str:
    """``text`` as the masking of messages reads it: its :func:`ascii_digits`, each backslash escape (of a
    line break, a tab, another character: what ``repr``, JSON and :func:`escaped` write, which messages
    quote) as that many spaces, so ``4111\\n1111\\n1111\\n1111`` reads as the number over line breaks it
    was. Positions are those of ``text``."""
    return _ESCAPES.sub(lambda m: " " * len(m.group()), ascii_digits(text))


def mask_long_numbers(text: str) -> str:
    """``text`` with every run of 13 or more digits replaced by ``[card number removed]``: what an error
    message may quote of a value a user sent.

    >>> mask_long_numbers("ip 'cc4111111111111111', id ch_1")
    "ip 'cc[card number removed]', id ch_1"

    Digits of any script count, as for detection (the runs are found in :func:`ascii_digits` of ``text``,
    whose positions are the same, and cut from ``text``). So does every card number the detection finds
    (:func:`contains_card_number`), written in fours over wide gaps or line breaks too
    (``4111    1111    1111    1111``): the runs alone let such a number through, whole. A backslash escape
    counts as that many spaces (:func:`_detection_text`): ``'4111\\n1111\\n1111\\n1111'`` is masked.
    """
    ascii_text = _detection_text(text)
    spans = sorted([m.span() for m in _LONG_NUMBER.finditer(ascii_text)] + list(_spans(ascii_text, text)))
    parts: list[str] = []
    position = 0
    for start, end in spans:
        if end <= position:  # (within a span cut already)
            continue
        if start >= position:
            parts += [text[position:start], "[card number removed]"]
        position = end
    parts.append(text[position:])
    return "".join(parts)


UATP_DIGITS = 15  # the length of the only card numbers that start with 1 (airlines' UATP cards)


def card_shaped(digits: str) -> bool:
    """True if ``digits`` (only 0-9) could be a full card number: 13-19 digits, 15 when the first is 1, and
    passing the Luhn check.

    >>> card_shaped("4111111111111111"), card_shaped("1764957808124"), card_shaped("122000000000003")
    (True, False, True)
    """
    return 13 <= len(digits) <= 19 and (digits[0] != "1" or len(digits) == UATP_DIGITS) and luhn_valid(digits)


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


@functools.lru_cache(maxsize=4096)
def _ascii_char(ch: str) -> str:
    """The ASCII character a non-ASCII one (or an ASCII control) stands for in a written number: a digit its
    digit, a space, control or format character, line or paragraph separator or combining mark (invisible
    beside a digit, or drawn on it) a space, a dash a dash, a fullwidth full stop, solidus, low line, colon,
    plus sign or parenthesis its ASCII one; any other character itself."""
    digit = unicodedata.digit(ch, None)  # decimal digits of every script, superscripts, circled digits
    if digit is not None:
        return str(digit)
    category = unicodedata.category(ch)
    if category in _BLANK_CATEGORIES or ch in _BLANKS:
        return " "
    if category == "Pd" or ch in _WIDE_DASH:
        return "-"
    return _WIDE_SEP.get(ch) or _WIDE_PUNCT.get(ch, ch)


def ascii_digits(text: str) -> str:
    """``text`` with the digits and number separators of other scripts written as their ASCII ones, and its
    control characters as spaces, one for one (positions are kept): ``"４１１１－１１１１"`` ->
    ``"4111-1111"``, ``"4111\\x071111"`` -> ``"4111 1111"``."""
    if text.isascii() and text.isprintable():
        return text
    return _NOT_PLAIN.sub(lambda m: _ascii_char(m.group()), text)


def contains_card_number(text: str, *, free_text: bool = False) -> bool:
    """True if ``text`` holds a full card number (13-19 Luhn-valid digits, as the module docstring describes).

    ``free_text``: ``text`` is written by a person (a note, a comment), not an identifier, so digits glued to
    hex letters are no hexadecimal token's: ``ab4111111111111111`` is a card number there.

    >>> texts = ("4111.1111.1111.1111", "card4111111111111111", "ab4111111111111111", "４２４２" * 4)
    >>> [contains_card_number(t) for t in texts], contains_card_number(texts[2], free_text=True)
    ([True, True, False, True], True)
    """
    ascii_text = ascii_digits(text)
    if _PREFILTER.search(ascii_text) is not None and (
        next(_card_spans(ascii_text, text, hex_tokens=not free_text), None) is not None
        or any(_scientific_card(m) for m in _SCIENTIFIC.finditer(ascii_text))
    ):
        return True
    return _punctuated(ascii_text) and next(_punct_spans(ascii_text), None) is not None


# A number in scientific notation, as a spreadsheet writes a column of card numbers it read as numbers
# (4.11111111111111E+15: 15 significant digits, the 16th lost; 4,11111111111111E+15 in a decimal-comma
# locale). 13 or more significant digits (what the prefilter passes), a 13-19 digit number.
_SCIENTIFIC = re.compile(r"(?<![0-9.,])([1-9])[.,]([0-9]{12,18})[eE]\+?(1[2-8])(?![0-9])")


def _scientific_card(m: re.Match[str]) -> bool:
    """Whether a number in scientific notation is a card number: its digits, the unwritten ones zeros
    (5.1051051051051e+15 is 5105105105105100: a program drops trailing zeros), Luhn-valid; or all but the
    last written (the Luhn check digit gives it back) with a card brand's prefix. A 16-digit id with a
    card brand's prefix saved so by a spreadsheet counts too: it has lost its last digit as an id as well."""
    written, digits = m.group(1) + m.group(2), int(m.group(3)) + 1
    if len(written) > digits:  # more digits than the number has: only trailing zeros may be the extra
        if written[digits:].strip("0"):
            return False
        written = written[:digits]
    if card_shaped(written.ljust(digits, "0")):
        return True
    return digits - len(written) == 1 and 13 <= digits <= 19 and _IIN.match(written) is not None


def name_holds_card_number(name: str) -> bool:
    """True if ``name`` (of a feature, a feature set, a model, a checkpoint; a value a query computes) holds a
    full card number (:func:`contains_card_number`) that is not a time: names often end in a timestamp or an
    epoch (``fraud_20261205143005``, ``t_1767226127770``), one in ten of which passes Luhn. A run of digits
    that starts with 1 (an epoch in seconds to nanoseconds; no card brand but UATP starts with 1) or with a
    date of 1900-2099 (``YYYYMMDD``) is taken for one; leading zeros are not (``04111...`` is ``4111...``).

    >>> names = ("amt_4111111111111111", "fraud_20261205143005", "x04111111111111111")
    >>> [name_holds_card_number(n) for n in names]
    [True, False, True]
    """
    ascii_text = ascii_digits(name)
    return any(not _timelike(ascii_text[start:end]) for start, end in _spans(ascii_text, name))


def _timelike(span: str) -> bool:
    """Whether the digits of a card-number-shaped ``span`` read as a time: an epoch (it starts with 1) or a
    date of 1900-2099 (``YYYYMMDD``), leading zeros aside."""
    digits = "".join(ch for ch in span if ch.isdigit()).lstrip("0")
    return digits.startswith("1") or _dated(digits)


def _dated(digits: str) -> bool:
    """Whether ``digits`` start with a date of 1900-2099 written ``YYYYMMDD``."""
    if digits[:2] not in ("19", "20") or len(digits) < 8:
        return False
    month, day = int(digits[4:6]), int(digits[6:8])
    return 1 <= month <= 12 and 1 <= day <= 31


def _punctuated(ascii_text: str) -> bool:
    """Whether the punctuation forms' prefilter finds a candidate (most texts hold none of its characters)."""
    return ("+" in ascii_text or ":" in ascii_text or "(" in ascii_text) and bool(
        _PUNCT_PREFILTER.search(ascii_text)
    )


def _spans(ascii_text: str, text: str) -> Iterator[tuple[int, int]]:
    """The spans of card numbers in ``text`` (``ascii_text``: its :func:`ascii_digits`), each form's scan run
    only where its prefilter finds a candidate."""
    if _PREFILTER.search(ascii_text) is not None:
        yield from _card_spans(ascii_text, text)
        yield from (m.span() for m in _SCIENTIFIC.finditer(ascii_text) if _scientific_card(m))
    if _punctuated(ascii_text):
        yield from _punct_spans(ascii_text)


def shown_text(text: str, limit: int = 120, *, times: bool = False) -> str:
    r"""Text that came from outside (a file or column name, a path, a label) as a message or a line of
    output shows it: control and invisible formatting characters escaped as Python writes them (an ESC
    sequence or a bidi override cannot take over the terminal, a line break cannot forge a line), full card
    numbers removed, cut to ``limit`` characters.

    >>> shown_text("amt\x1b[31m\u202eRED\ncard 4111 1111 1111 1111")
    'amt\\x1b[31m\\u202eRED\\ncard [card number removed]'
    """
    text = redact_card_numbers(escaped(text), times=times)  # (``times``: a path's or a name's epochs kept)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def redact_card_numbers(text: str, *, times: bool = False) -> str:
    """``text`` with every full card number (as :func:`contains_card_number` finds them) replaced by
    ``[card number removed]``: for messages that quote input, such as a parser's error. With ``times``, a
    run of digits that is a time (an epoch, a ``YYYYMMDD...`` stamp, as :func:`name_holds_card_number`
    reads names) is kept: for names and paths, which often end in one.

    >>> redact_card_numbers("got 5: 1,m1,4111 1111 1111 1111,12.50")
    'got 5: 1,m1,[card number removed],12.50'
    >>> redact_card_numbers("runs/1764957808124/4111111111111111", times=True)
    'runs/1764957808124/[card number removed]'
    """
    ascii_text = _detection_text(text)
    spans = sorted(_spans(ascii_text, text))  # (the same positions in both)
    if times:
        spans = [(a, b) for a, b in spans if not _timelike(ascii_text[a:b])]
    if not spans:
        return text
    parts: list[str] = []
    position = 0
    for start, end in spans:  # overlapping windows are removed as one
        while end < len(text) and unicodedata.category(text[end]) in ("Mn", "Me"):
            end += 1  # a mark on the last digit (a keycap) goes with it
        if end <= position:
            continue
        if start >= position:
            parts.append(text[position:start])
            parts.append("[card number removed]")
        position = end
    parts.append(text[position:])
    return "".join(parts)


def redacted_table(table: pa.Table) -> tuple[pa.Table, int]:
    """``table`` with every value holding a full card number (:func:`card_number_rows`) as text with the
    number replaced (:func:`redact_card_numbers`), column names likewise, and how many values were: for
    output a user's query computes (``payfm sql``). A run of digits shaped as a time does not count
    (:func:`name_holds_card_number`: an epoch in milliseconds passes Luhn one time in ten). A list or struct
    is shown as JSON, its characters as they are (``str`` of a list escapes a zero-width space, which would
    hide a number written with one). A column without one is returned as it is; one with one becomes text.

    >>> t, n = redacted_table(pa.table({"x": ["4111" + chr(7) + "1111 1111 1111", "ok"]}))
    >>> t.column("x").to_pylist(), n
    (['[card number removed]', 'ok'], 1)
    """
    columns, names, changed, count = [], [], False, 0
    for name, col in zip(table.column_names, table.columns, strict=True):
        found = [r for r in card_number_rows(col).tolist() if name_holds_card_number(_shown(col[r].as_py()))]
        if found:
            values = [None if v is None else _shown(v) for v in col.to_pylist()]
            for r in found:
                values[r] = redact_card_numbers(values[r] or "")
                if contains_card_number(values[r]):  # written so that only the whole value is one
                    values[r] = "[card number removed]"
            col, changed = pa.chunked_array([pa.array(values, pa.string())]), True
            count += len(found)
        safe = redact_card_numbers(name)
        changed = changed or safe != name
        columns.append(col)
        names.append(safe)
    return (pa.Table.from_arrays(columns, names=names) if changed else table), count


def _shown(value: object) -> str:
    """A value as :func:`redacted_table` shows it: a text as it is, a list or struct as JSON (unescaped)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):  # (as card_number_rows reads them: the repr escapes a control character)
        return value.decode("utf-8", "replace")
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _luhn_valid_ints(values: np.ndarray) -> np.ndarray:
    """Vectorized Luhn check of non-negative int64 values, digit by digit from the right."""
    v = values.astype(np.uint64, copy=True)
    total = np.zeros(len(v), dtype=np.uint64)
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


# The prefilter of ASCII text: the same as _CANDIDATE_ANY on it (no other script's digit or separator can be
# there), and about 80 times faster than RE2's Unicode classes (1M charge ids: 0.09 s, not 7.7 s).
_CANDIDATE_ASCII = _CANDIDATE + "|" + _PUNCT_SHAPE


def _string_candidates(col: pa.Array) -> np.ndarray:
    """Positions of the strings of ``col`` (a string array) that pass the prefilter: the ASCII one over
    ASCII values, the Unicode one over the others only."""
    ascii_ok = pc.fill_null(pc.string_is_ascii(col), True)
    mask = pc.fill_null(pc.match_substring_regex(col, _CANDIDATE_ASCII), False)
    found = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    others = np.flatnonzero(~ascii_ok.to_numpy(zero_copy_only=False))
    if len(others):
        text = pc.replace_substring_regex(col.take(pa.array(others)), _MARKS, " ")
        wide = pc.fill_null(pc.match_substring_regex(text, _CANDIDATE_ANY), False)
        found = np.union1d(
            found[ascii_ok.to_numpy(zero_copy_only=False)[found]],
            others[wide.to_numpy(zero_copy_only=False)],
        )
    return found.astype(np.int64)


def branded_card_rows(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """0-based positions of the values of ``column`` that are card numbers starting with a card brand's digits
    (:data:`BRAND_PREFIXES`): the scan of a column of epoch times, one 13-digit millisecond value in ten of
    which passes the Luhn check. Epoch times from September 2001 to May 2033 start with a 1 in every unit
    (s, ms, us, ns), no brand's digit, so only a card number (or a time far from now) is found; a card
    number read as microseconds would otherwise be stored as it is.

        >>> micros = [1_700_000_000_000_000, 4_111_111_111_111_111, 378_282_246_310_005]
        >>> branded_card_rows(pa.array(micros)).tolist()
        [1, 2]
    """
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_string(col.type):  # (only texts starting with a brand's digit are scanned: a CSV's times
        # are texts, and a full scan of each 13-digit millisecond value took twice the import's time)
        maybe = np.flatnonzero(
            pc.fill_null(pc.match_substring_regex(col, r"^\s*[2-6]"), False).to_numpy(False)
        )
        rows = maybe[card_number_rows(col.take(pa.array(maybe, pa.int64())))] if len(maybe) else maybe
    else:
        rows = card_number_rows(col)
    if not len(rows):
        return rows
    texts = col.take(pa.array(rows)).to_pylist()
    branded = [_IIN.match(re.sub(r"[^0-9]", "", str(v).split(".")[0])) is not None for v in texts]
    found: np.ndarray = rows[np.array(branded, dtype=bool)]
    return found


def card_number_rows(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """0-based positions of the values of ``column`` that contain a full card number.

    Strings (and binary values, read as UTF-8) are scanned for digit runs; integers (and integral floats and
    decimals) of 13-19 digits are Luhn-checked; lists, structs, maps and unions are scanned element by
    element at any depth, a row counting if any of its elements holds one (the names of a struct's fields are
    :func:`card_number_fields`). Booleans and times cannot hold a card number and yield no rows; a type not
    named here is scanned value by value in Python.
    """
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(col.type, pa.ExtensionType):
        col = col.storage
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if pa.types.is_run_end_encoded(col.type):
        col = pc.run_end_decode(col)
    t = col.type
    if pa.types.is_string_view(t) or pa.types.is_large_string(t):
        col = col.cast(pa.string())
        t = col.type
    if pa.types.is_fixed_size_binary(t) or pa.types.is_binary_view(t):
        col = col.cast(pa.binary())
        t = col.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        try:  # bytes that are UTF-8 text are scanned as text (RE2 reads bytes as Latin-1)
            col = col.cast(pa.string() if pa.types.is_binary(t) else pa.large_string()).cast(pa.string())
            t = col.type
        except pa.ArrowInvalid:
            pass
    if pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        if pa.types.is_string(t):
            candidates = _string_candidates(col)
        else:  # not all UTF-8 (RE2 reads Latin-1): a UTF-8 sequence may be a digit or a separator
            mask = pc.fill_null(pc.match_substring_regex(col, _CANDIDATE_BYTES), False)
            candidates = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        if len(candidates) == 0:
            return candidates
        texts = col.take(pa.array(candidates)).to_pylist()
        return np.array(
            [
                i
                for i, s in zip(candidates, texts, strict=True)
                if contains_card_number(s if isinstance(s, str) else s.decode("utf-8", "replace"))
            ],
            dtype=np.int64,
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
        ints = values[candidates].astype(np.uint64)  # (a uint64 past 2^63 would wrap in int64)
        # the first digit 1 only with 15 digits (card_shaped): not epoch times in ms, us or ns
        powers = 10 ** np.arange(20, dtype=np.uint64)
        size = powers[np.searchsorted(powers, ints, side="right") - 1]  # 10 ** (digits - 1), exactly
        keep = (ints >= 2 * size) | (size == 10 ** (UATP_DIGITS - 1))
        candidates, ints = candidates[keep], ints[keep]
        ok = _luhn_valid_ints(ints)
        found: np.ndarray = candidates[ok]
        return found
    if pa.types.is_decimal(t):  # integral ones of 13-19 digits, as integers (a DECIMAL(19, 0) card column)
        text = pc.cast(col, pa.string())
        mask = pc.fill_null(pc.match_substring_regex(text, r"^[0-9]{13,19}(\.0*)?$"), False)
        candidates = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        digits = text.take(pa.array(candidates, pa.int64())).to_pylist()
        return np.array(
            [i for i, d in zip(candidates, digits, strict=True) if card_shaped(d.split(".")[0])],
            dtype=np.int64,
        )
    if pa.types.is_map(t):  # (list kernels abort on maps) keys and values, by their offsets
        offsets = col.offsets.to_numpy(zero_copy_only=False)
        inner = np.union1d(card_number_rows(col.keys), card_number_rows(col.items))
        inner = inner[(inner >= offsets[0]) & (inner < offsets[-1])]
        return np.unique(np.searchsorted(offsets, inner, side="right") - 1).astype(np.int64)
    if (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    ):
        parents = pc.list_parent_indices(col).to_numpy(zero_copy_only=False)
        inner = card_number_rows(pc.list_flatten(col))
        return np.unique(parents[inner]).astype(np.int64)
    if pa.types.is_struct(t):
        fields = [card_number_rows(child) for child in col.flatten()]
        return np.unique(np.concatenate([np.zeros(0, dtype=np.int64), *fields])).astype(np.int64)
    if pa.types.is_boolean(t) or pa.types.is_null(t) or pa.types.is_temporal(t) or pa.types.is_interval(t):
        return np.zeros(0, dtype=np.int64)
    # unions and any type not named above: each value as Python reads it, nothing left unscanned
    values = col.to_pylist()
    return np.array([i for i, v in enumerate(values) if _holds_card_number(v)], dtype=np.int64)


def _holds_card_number(value: object) -> bool:
    """A Python value (of a union or of another Arrow type) holding a full card number, at any depth."""
    if isinstance(value, str):
        return contains_card_number(value)
    if isinstance(value, bytes):
        return contains_card_number(value.decode("utf-8", "replace"))
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float | decimal.Decimal):
        integral = isinstance(value, int) or (math.isfinite(value) and value == int(value))
        return integral and 10**12 <= value < 10**19 and card_shaped(str(int(value)))
    if isinstance(value, dict):
        return any(_holds_card_number(k) or _holds_card_number(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_card_number(v) for v in value)
    return False


def card_number_fields(t: pa.DataType) -> bool:
    """True if a field name nested in the type ``t`` (of a struct, a union, a map's entries or a list's
    items, at any depth) holds a full card number: a name is as much the file's text as a value.

    >>> card_number_fields(pa.list_(pa.struct([("4111 1111 1111 1111", pa.string())])))
    True
    """
    if isinstance(t, pa.ExtensionType):
        return card_number_fields(t.storage_type)
    if isinstance(t, pa.DictionaryType):
        return card_number_fields(t.value_type)
    fields = (t.field(i) for i in range(t.num_fields))
    return any(contains_card_number(f.name) or card_number_fields(f.type) for f in fields)
