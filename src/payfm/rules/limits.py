"""The error every rule problem raises, and the limits that keep hostile rule text from crashing or hanging.

Limits are checked before anything recursive runs: text size and rule count on the raw text, nesting depth
with an explicit stack over the parse tree. Every limit is documented in docs/rules.md.
"""

from __future__ import annotations

import unicodedata

from payfm.errors import PayfmError
from payfm.events.cards import contains_card_number
from payfm.events.text import JOINERS, code_point

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
    U+202A-U+202E and U+2066-U+2069, the zero-width space U+200B, U+FEFF, a soft hyphen...), a message
    naming its code point and where (``Got U+202E (RIGHT-TO-LEFT OVERRIDE) at character 4.``); None when it
    holds none. The message never quotes ``text`` (it may hold a card number).

    List values refuse them: printed, a bidi override shows ``cus_1`` + U+202E + ``gpj.exe`` as
    ``cus_1exe.jpg``, and a zero-width space makes two values that print alike different. The zero-width
    non-joiner and joiner (U+200C, U+200D) are taken: they spell Persian, Indic and emoji names, and a list
    value or rule literal must be able to name every id the event log takes (:mod:`payfm.events.text`).

    >>> format_character("cus_1"), format_character("cus\u200b1")
    (None, 'Got U+200B (ZERO WIDTH SPACE) at character 4.')
    """
    found = first_format_character(text)
    return None if found is None else f"Got {code_point(found[1])} at character {found[0]}."


def first_format_character(text: str) -> tuple[int, str] | None:
    r"""The 1-based position and the first character of ``text`` that shows other than it is (None: none):
    an invisible formatting character (Unicode Cf), a line or paragraph separator (U+2028, U+2029: editors
    break the line there, the parser does not) or a lone surrogate (Cs: a byte that was not UTF-8, as Python
    passes it from the command line). Rule text refuses them as list values do: a bidi override or isolate
    makes a rule read differently from what runs (Trojan Source, CVE-2021-42574).

    >>> first_format_character("block if :ip_country: = 'US\u202e'")
    (28, '\u202e')
    """
    return _first_of(text, ("Cf", "Zl", "Zp", "Cs"))


# What :func:`first_format_character` finds, as messages name it.
INVISIBLE = (
    "invisible formatting characters (Unicode Cf: bidi controls, zero-width characters; line and paragraph "
    "separators; bytes that are not UTF-8)"
)


def _first_of(text: str, categories: str | tuple[str, ...]) -> tuple[int, str] | None:
    """The 1-based position and the first character of a Unicode category of ``categories`` in ``text``
    (None: none), the zero-width non-joiner and joiner aside (spelling, as in ids)."""
    if text.isprintable():  # the fast path: no Cc, Cf, Zl, Zp, Cs (nor other unprintable) character
        return None
    found = (
        (i, ch)
        for i, ch in enumerate(text, start=1)
        if ch not in JOINERS and unicodedata.category(ch) in categories
    )
    return next(found, None)


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

    def prefixed(self, prefix: str) -> RuleError:
        """This error, its message after ``prefix`` (a file's name, ``--rule 2 of 3: ``), its place kept."""
        named = RuleError(prefix + str(self))
        named.line, named.column, named.rule, named.detail = self.line, self.column, self.rule, self.detail
        return named


def line_breaks(note: str) -> str:
    r"""``note`` with its CR LF and lone CR line breaks as LF, the one line break notes keep.

    >>> line_breaks("why\r\nbecause\r")
    'why\nbecause\n'
    """
    return note.replace("\r\n", "\n").replace("\r", "\n")


def check_note(note: str, author: str | None = None, whose: str = "A ruleset's") -> None:
    """Refuse a note or author (of a ruleset, or ``whose`` else: "A list change's") that `rules history` or
    `lists audit` could not print as written: a card number, a control character (a note's tabs and line
    breaks are layout) or an invisible one (a RuleError)."""
    for what, value in (("note", note), ("author", author or "")):
        if contains_card_number(value, free_text=True):
            raise RuleError(f"{whose} {what} must not contain a card number (PAN).")
    lines = line_breaks(note).replace("\t", " ").replace("\n", " ")
    for what, value in (("note", lines), ("author", author or "")):
        if (control := control_character(value)) is not None:  # printed by `rules history`
            raise RuleError(f"{whose} {what} must not contain control characters. {control}")
        if (invisible := format_character(value)) is not None:  # a bidi override reorders what it prints
            raise RuleError(f"{whose} {what} must not contain {INVISIBLE}. {invisible}")
