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
    if text.isprintable():  # the fast path: no Cc (nor other unprintable) character
        return None
    for i, ch in enumerate(text, start=1):
        if unicodedata.category(ch) == "Cc":
            return f"Got {ch!r} at character {i}."
    return None


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
