"""Ids and free text in the event log: which characters they may hold, and how many.

Every string field of the event schema that has no vocabulary, pattern, code list or canonical form is an
identifier (``charge_id``, ``merchant_id``, ``card_fingerprint``, a review's ``rule`` and ``reviewer``...) or
free text (a review's ``note``). An id is a key: it is joined, grouped, listed, printed in a terminal, a log
line or an HTTP header. So it holds no control character (Unicode Cc: a NUL, an escape sequence, a line
break that forges a log line or a header), no invisible formatting character (Cf: a bidi override shows
``acct_`` + U+202E + ``live`` as another id, a zero-width space makes two ids that print alike differ) and no
line or paragraph separator (Zl, Zp); it neither starts nor ends with whitespace (``' ch_1'`` is another key
than ``'ch_1'``, and nobody sees the difference); and it has at most :data:`MAX_ID_CHARS` characters (a
60,000-character id is an attack or a bug, and every index, log line and message would carry it). Free text
may hold tabs and line feeds, and any whitespace; other Cc and Cf are refused, and it has at most
:data:`MAX_TEXT_CHARS` characters.

One definition serves both paths: :meth:`TextRule.fault` checks one value in Python (the decision service),
:meth:`TextRule.faulty_rows` a whole Arrow column (imports: numpy over the buffers of a printable-ASCII
column, else Arrow's length and regular-expression kernels; no Python per row). Both read the same character
classes, written as code point ranges for the characters Python's ``unicodedata`` puts in each category
(Unicode 14.0 in Python 3.11; a test holds them to it). A message names the character by code point and
position, never the value, which may hold a card number or an escape sequence.

Example:
    >>> IDENTIFIER.fault("acct_1") is None
    True
    >>> IDENTIFIER.fault("acct_\\u202eevil").received
    'U+202E (RIGHT-TO-LEFT OVERRIDE) at character 6'
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Ids are at most 255 characters (a VARCHAR(255) holds any; Stripe's are under 30, the Sparkov mapping's at
# most 43 (merchant names), the synthetic world's at most 24). A charge id (charge_id in every table,
# retry_of) is at most 245: the decision service derives the ids of the refund and dispute a review closure
# implies from it, ``re_review_<charge_id>`` and ``dp_review_<charge_id>``, and those must fit as ids too.
MAX_ID_CHARS = 255
DERIVED_PREFIX_CHARS = 10  # len("re_review_"), len("dp_review_")
MAX_CHARGE_ID_CHARS = MAX_ID_CHARS - DERIVED_PREFIX_CHARS
# Free text: a reviewer's note (the decision service takes up to 2,000 characters).
MAX_TEXT_CHARS = 10_000

# Code points of Unicode categories Cc (controls: C0, DEL, C1), Cf (invisible formatting: soft hyphen, bidi
# controls, zero-width characters, BOM, tags...), Zl and Zp (U+2028, U+2029), as Python 3.11's unicodedata
# (Unicode 14.0) has them. Arrow's RE2 knows later Unicode versions (U+13439-1343F are Cf since 15.0), so the
# classes are spelled out rather than written \p{Cf}: the import and the decision service refuse alike.
_CC = ((0x0000, 0x001F), (0x007F, 0x009F))
_CF = (
    (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F),
    (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x2064), (0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD),
    (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)  # fmt: skip
_ZL_ZP = ((0x2028, 0x2029),)
# The zero-width non-joiner and joiner are spelling, not formatting, in text: Persian writes with the first,
# Indic conjuncts and emoji sequences (a family: man, ZWJ, woman, ZWJ, girl) with the second. Ids and free
# text take them; every other Cf character is refused.
_JOINERS = ((0x200C, 0x200D),)
JOINERS = frozenset(chr(c) for a, b in _JOINERS for c in range(a, b + 1))  # one character at a time


_ESCAPED = ("Cc", "Cf", "Zl", "Zp", "Cs")  # what a command escapes in text it prints (joiners aside)


def escaped(text: str, keep: str = "") -> str:
    r"""``text`` with its control and invisible formatting characters (Unicode Cc, Cf; Zl, Zp, Cs)
    escaped as Python writes them (``\x1b``, ``\u202e``), except those in ``keep`` (the line breaks of a
    ruleset's text): what a command prints of text stored before such characters were refused must neither
    take over the terminal nor reorder what it shows.

    >>> print(escaped("# ok\n'cus\u202e1'", keep="\n"))
    # ok
    'cus\u202e1'
    """
    if text.isprintable():
        return text
    return "".join(
        repr(ch)[1:-1]
        if ch not in keep and ch not in JOINERS and unicodedata.category(ch) in _ESCAPED
        else ch
        for ch in text
    )


# What str.isspace() and Arrow's utf8_is_space / utf8_trim_whitespace call whitespace.
_SPACE = (
    (0x0009, 0x000D), (0x001C, 0x0020), (0x0085, 0x0085), (0x00A0, 0x00A0), (0x1680, 0x1680),
    (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000),
)  # fmt: skip
_TAB_LF = ((0x0009, 0x000A),)  # what free text may hold of Cc


def _char(cp: int) -> str:
    # ASCII and Latin-1 as \xHH (RE2 and Python's re both read it as that code point), others as themselves.
    return f"\\x{cp:02x}" if cp < 0x100 else chr(cp)


def char_class(ranges: tuple[tuple[int, int], ...]) -> str:
    """A regular-expression character class of ``ranges`` (inclusive code point pairs) that RE2 (Arrow) and
    Python's ``re`` read alike.

    >>> char_class(((0x41, 0x5A), (0x5F, 0x5F)))
    '[\\\\x41-\\\\x5a\\\\x5f]'
    """
    return "[" + "".join(_char(a) if a == b else f"{_char(a)}-{_char(b)}" for a, b in ranges) + "]"


def _minus(
    ranges: tuple[tuple[int, int], ...], cut: tuple[tuple[int, int], ...]
) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        pieces = [(a, b)]
        for c, d in cut:
            pieces = [p for x, y in pieces for p in ((x, min(y, c - 1)), (max(x, d + 1), y)) if p[0] <= p[1]]
        out += pieces
    return tuple(out)


def code_point(ch: str) -> str:
    r"""How a message names a character it must not print: ``U+202E (RIGHT-TO-LEFT OVERRIDE)``; for ids and
    free text here, for rule text and list values in :mod:`payfm.rules.limits`.

    >>> code_point("\x00"), code_point("\u200b")
    ('U+0000 (NULL)', 'U+200B (ZERO WIDTH SPACE)')
    """
    if unicodedata.category(ch) == "Cs":
        return f"U+{ord(ch):04X} (a lone surrogate: a byte that is not UTF-8)"
    name = unicodedata.name(ch, "") or _CONTROL_NAMES.get(ord(ch), "a control character")
    return f"U+{ord(ch):04X} ({name})"


# unicodedata has no names for the C0 and C1 controls; these are their Unicode name aliases.
_CONTROL_NAMES = {
    0x00: "NULL", 0x07: "BELL", 0x08: "BACKSPACE", 0x09: "CHARACTER TABULATION", 0x0A: "LINE FEED",
    0x0B: "LINE TABULATION", 0x0C: "FORM FEED", 0x0D: "CARRIAGE RETURN", 0x1B: "ESCAPE", 0x7F: "DELETE",
    0x85: "NEXT LINE",
}  # fmt: skip


@dataclass(frozen=True)
class Fault:
    """Why a text is refused: what was ``expected`` (after "must be"), what was ``received`` (never the value)
    and a ``hint`` sentence with a leading space for messages that quote the value before it."""

    expected: str
    received: str
    hint: str


@dataclass(frozen=True)
class TextRule:
    """The characters and length a text field may have.

    ``what`` names a valid value ("an id"); ``forbidden`` are the code point ranges it never holds, described
    by ``forbidden_described``; ``trimmed``: no whitespace at either end; ``max_chars``: its length bound.
    """

    what: str
    max_chars: int
    forbidden: tuple[tuple[int, int], ...]
    forbidden_described: str
    trimmed: bool

    @cached_property
    def forbidden_class(self) -> str:
        return char_class(self.forbidden)

    @cached_property
    def _edges(self) -> str:
        space = char_class(_SPACE)
        return f"^{space}|{space}$"

    @cached_property
    def _search(self) -> re.Pattern[str]:
        return re.compile(self.forbidden_class)

    @cached_property
    def pattern(self) -> str:
        """A full-match regular expression of the valid values (RE2 and Python ``re``): what
        :attr:`payfm.events.schema.FieldRule.pattern` holds for the field."""
        ok = "[^" + self.forbidden_class[1:]
        if not self.trimmed:
            return f"{ok}{{0,{self.max_chars}}}"
        edge = "[^" + char_class(_SPACE)[1:-1] + self.forbidden_class[1:]
        return f"{edge}(?:{ok}{{0,{self.max_chars - 2}}}{edge})?"

    @cached_property
    def described(self) -> str:
        """The whole rule in words (the 'values' column of docs/events.md says it shorter)."""
        trimmed = ", no whitespace at either end" if self.trimmed else ""
        return f"{self.what} of at most {self.max_chars:,} characters, {self.forbidden_described}{trimmed}"

    @cached_property
    def _expected(self) -> tuple[str, str, str]:
        return (
            f"{self.what} of at most {self.max_chars:,} characters",
            f"{self.what} {self.forbidden_described}",
            f"{self.what} without whitespace at its start or end",
        )

    def accepts(self, value: str) -> bool:
        """Whether :meth:`fault` finds nothing, fast for the decision service: a printable text (no Cc, Cf,
        Zl, Zp, Cs, nor any whitespace but the space: ``str.isprintable``, on the same Unicode tables) needs
        only its length and ends looked at."""
        if value.isprintable() and len(value) <= self.max_chars:
            return not (self.trimmed and value and (value[0] == " " or value[-1] == " "))
        return self.fault(value) is None

    def fault(self, value: str) -> Fault | None:
        """None when ``value`` is valid; else the first fault: its length, a forbidden character (the first),
        whitespace at an end. Lone surrogates (Cs) are refused too: no event file can hold one.

        >>> IDENTIFIER.fault("\\tch_1").received, IDENTIFIER.fault("ch_1 ").expected
        ('U+0009 (CHARACTER TABULATION) at character 1', 'an id without whitespace at its start or end')
        """
        long, chars, edges = self._expected
        if len(value) > self.max_chars:
            return Fault(long, f"a text of {len(value):,} characters", f" It has {len(value):,} characters.")
        found = self._search.search(value)
        if found is None and not value.isprintable():
            found = next((m for m in re.finditer(r"[\ud800-\udfff]", value)), None)
        if found is not None:
            at = f"{code_point(found.group())} at character {found.start() + 1}"
            return Fault(chars, at, f" It holds {at}.")
        if self.trimmed and value and (value[0].isspace() or value[-1].isspace()):
            i = 0 if value[0].isspace() else len(value) - 1
            at = f"{code_point(value[i])} at character {i + 1}"
            end = "starts" if i == 0 else "ends"
            return Fault(edges, at, f" It {end} with {code_point(value[i])}.")
        return None

    def faulty_rows(self, col: pa.ChunkedArray | pa.Array) -> list[tuple[np.ndarray, str, list[str]]]:
        """The 0-based rows of the text column ``col`` that :meth:`fault` refuses, by fault: ``[(rows,
        expected, what was received at the first 20)]``, each row under its first fault. Vectorized: the
        length and one regular expression over the whole column (a second and third only when some row is
        refused); Python only for the first rows of each fault, to name their character."""
        chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
        if all(_plain(chunk, self.max_chars, self.trimmed) for chunk in chunks):
            return []  # printable ASCII of a valid length and ends: nothing to look for
        long = pc.fill_null(pc.greater(pc.utf8_length(col), self.max_chars), False)
        odd = pc.fill_null(pc.match_substring_regex(col, self._any_fault), False)
        if not pc.any(pc.or_(long, odd)).as_py():
            return []
        chars = pc.and_not(pc.fill_null(pc.match_substring_regex(col, self.forbidden_class), False), long)
        masks = [long, chars]
        if self.trimmed:
            masks.append(pc.and_not(pc.and_not(odd, chars), long))
        out = []
        for mask, expected in zip(masks, self._expected, strict=False):
            rows = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
            if len(rows):
                values = col.take(pa.array(rows[:20])).to_pylist()
                received = [fault.received for v in values if (fault := self.fault(v)) is not None]
                out.append((rows, expected, received))
        return out

    @cached_property
    def _any_fault(self) -> str:
        return self.forbidden_class + ("|" + self._edges if self.trimmed else "")


def _plain(arr: pa.Array, max_chars: int, trimmed: bool) -> bool:
    """True when every text of the string array ``arr`` is printable ASCII (bytes 0x20-0x7E: no control
    character, and none of the other refused ones, which are not ASCII), at most ``max_chars`` long and, if
    ``trimmed``, neither starts nor ends with a space: valid for sure. Read off its buffers with numpy (a min,
    a max and a gather of first and last bytes), some ten times faster than the regular expression, which
    runs only when this says no (any non-ASCII text, a null slot holding bytes: then it decides exactly)."""
    if arr.type != pa.string() or len(arr) == 0:
        return bool(arr.type == pa.string())
    _, offsets_buffer, data_buffer = arr.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    if data_buffer is None or offsets[-1] == offsets[0]:
        return True  # only empty texts and nulls
    data = np.frombuffer(data_buffer, dtype=np.uint8)
    used = data[offsets[0] : offsets[-1]]
    if used.min() < 0x20 or used.max() > 0x7E:
        return False
    lengths = np.diff(offsets)  # bytes, which are characters in ASCII
    if lengths.max() > max_chars:
        return False
    if trimmed:
        starts = offsets[:-1][lengths > 0]
        ends = offsets[1:][lengths > 0] - 1
        if (data[starts] == 0x20).any() or (data[ends] == 0x20).any():
            return False
    return True


IDENTIFIER = TextRule(
    what="an id",
    max_chars=MAX_ID_CHARS,
    forbidden=(*_CC, *_minus(_CF, _JOINERS), *_ZL_ZP),
    forbidden_described=(
        "without control characters, invisible formatting characters or line separators "
        "(Unicode Cc, Cf, Zl, Zp)"
    ),
    trimmed=True,
)
CHARGE_ID = TextRule(
    what="a charge id",
    max_chars=MAX_CHARGE_ID_CHARS,
    forbidden=IDENTIFIER.forbidden,
    forbidden_described=IDENTIFIER.forbidden_described,
    trimmed=True,
)
FREE_TEXT = TextRule(
    what="a text",
    max_chars=MAX_TEXT_CHARS,
    forbidden=(*_minus(_CC, _TAB_LF), *_minus(_CF, _JOINERS)),
    forbidden_described=(
        "without control characters other than tab and line feed, or invisible formatting characters "
        "(Unicode Cc, Cf)"
    ),
    trimmed=False,
)
