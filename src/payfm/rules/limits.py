"""The error every rule problem raises, and the limits that keep hostile rule text from crashing or hanging.

Limits are checked before anything recursive runs: text size and rule count on the raw text, nesting depth
with an explicit stack over the parse tree. Every limit is documented in docs/rules.md.
"""

from __future__ import annotations

import unicodedata

from payfm.errors import PayfmError

MAX_TEXT_BYTES = 1_000_000  # a whole ruleset file
MAX_RULES = 1_000  # rules in one ruleset
MAX_RULE_CHARS = 10_000  # one rule (one line)
MAX_DEPTH = 40  # nesting of the expression tree (parentheses, not, arithmetic)
MAX_STRING_CHARS = 1_000  # one string literal
MAX_NUMBER_CHARS = 40  # one number literal, as written
MAX_ABS_NUMBER = 1e15  # largest magnitude of a number literal
MAX_IN_VALUES = 1_000  # values of one `in (...)`
MAX_NAME_CHARS = 100  # a rule, attribute or list name


def control_character(text: str) -> str | None:
    r"""Where ``text`` holds a control character (Unicode category Cc: C0 such as ESC, tab or a line break,
    DEL, C1), a message saying which and where (``Got '\x1b' at character 3.``); None when it holds none.

    Rule literals, list values and list and key names refuse them: printed raw, an escape sequence takes over
    the terminal of whoever reads a list, its audit trail or a key list.

    >>> control_character("cus_1"), control_character("ab\x1b[31m")
    (None, "Got '\\x1b' at character 3.")
    """
    found = _first_of(text, "Cc")
    return None if found is None else f"Got {found[1]!r} at character {found[0]}."


def format_character(text: str) -> str | None:
    """Where ``text`` holds an invisible formatting character (Unicode category Cf: the bidi controls
    U+202A-U+202E and U+2066-U+2069, the zero-width U+200B-U+200D, U+FEFF, a soft hyphen...), a message
    naming its code point and where (``Got U+202E (RIGHT-TO-LEFT OVERRIDE) at character 4.``); None when it
    holds none. The message never quotes ``text`` (it may hold a card number).

    List values refuse them: printed, a bidi override shows ``cus_1`` + U+202E + ``gpj.exe`` as
    ``cus_1exe.jpg``, and a zero-width character makes two values that print alike different.

    >>> format_character("cus_1"), format_character("cus\u200b1")
    (None, 'Got U+200B (ZERO WIDTH SPACE) at character 4.')
    """
    found = _first_of(text, "Cf")
    if found is None:
        return None
    at, ch = found
    return f"Got U+{ord(ch):04X} ({unicodedata.name(ch, 'unnamed')}) at character {at}."


def _first_of(text: str, category: str) -> tuple[int, str] | None:
    """The 1-based position and the first character of Unicode ``category`` in ``text`` (None: none)."""
    if text.isprintable():  # the fast path: no Cc, Cf (nor other unprintable) character
        return None
    return next(((i, ch) for i, ch in enumerate(text, start=1) if unicodedata.category(ch) == category), None)


class RuleError(PayfmError):
    """A rule or ruleset is invalid: says where (rule, line, column), what was expected and got."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None, rule: str = ""):
        self.line = line
        self.column = column
        self.rule = rule
        self.detail = message
        where = []
        if rule:
            where.append(f"rule '{rule}'")
        if line is not None:
            where.append(f"line {line}" + (f", column {column}" if column is not None else ""))
        super().__init__((" ".join(where) + ": " if where else "") + message)
