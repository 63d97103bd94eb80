"""The rule language's grammar (Lark, LALR) and the parser from rule text to :mod:`payfm.rules.ast`.

One rule per line, ``#`` starts a comment, an optional ``name:`` prefix names the rule::

    high_score: block if :risk_score: >= 80
    review if :card_country: != :ip_country: and :amount_usd: > 500
    allow if :email_domain: in @trusted_domains

Hostile text is bounded before it is parsed (size, rule count, line length) and the parse tree's depth is
measured with an explicit stack before anything recursive walks it (see :mod:`payfm.rules.limits`).

Example:
    >>> [r.action for r in parse_rules("block if :risk_score: >= 80")]
    ['block']
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import re
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from payfm.errors import ConfigError
from payfm.events.cards import contains_card_number, shown_text
from payfm.events.text import code_point
from payfm.inputs import kind
from payfm.rules import ast
from payfm.rules.catalog import CHARGE_NUMBER_FIELDS, CHARGE_STRING_FIELDS, SCORE_ATTRIBUTES
from payfm.rules.limits import (
    INVISIBLE,
    MAX_ABS_NUMBER,
    MAX_DEPTH,
    MAX_IN_VALUES,
    MAX_NAME_CHARS,
    MAX_NUMBER_CHARS,
    MAX_RULE_CHARS,
    MAX_RULES,
    MAX_STRING_CHARS,
    MAX_TEXT_BYTES,
    RuleError,
    control_character,
    first_format_character,
)

# Keywords are case-insensitive (`Block if ... AND ...`, as Radar's docs write them): no other bare word is
# valid where a keyword is (a rule name ends in `:`, attributes are `:x:`, lists `@x`, strings are quoted),
# so the case cannot change what a rule means. A keyword is a word of its own: `(?<!\w)` and `(?!\w)` refuse
# `blockif`, `andnot` and `5or` (read as `block if`, `and not` and `5 or` before). Punctuation may touch one:
# `if:amount_usd:`, `in(...)`, `in@list`. Versions saved before keep loading (see _lenient).
GRAMMAR = r"""
start: (RULE_NAME ":")? action _IF or_expr

action: REQUEST_3DS | ALLOW | BLOCK | REVIEW

?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: NOT not_expr -> not_
         | predicate
?predicate: sum
          | sum COMP_OP sum -> compare
          | sum NOT? IN "(" in_item ("," in_item)* ")" -> in_values
          | sum NOT? IN LIST_REF -> in_list
          | sum NOT? STR_OP sum -> strop
          | sum _IS _MISSING -> is_missing
          | sum _IS NOT _MISSING -> is_not_missing
?sum: product
    | sum PLUS product -> arith
    | sum MINUS product -> arith
?product: unary
        | product STAR unary -> arith
        | product SLASH unary -> arith
?unary: atom
      | MINUS unary -> neg
?atom: ATTR -> attr
     | NUMBER -> number
     | STRING -> string
     | BOOL -> boolean
     | "(" or_expr ")"
in_item: MINUS? NUMBER | STRING | BOOL

RULE_NAME: /[A-Za-z_][A-Za-z0-9_\-]*(?=:)/
ATTR: /:[A-Za-z_][A-Za-z0-9_.]*:/
LIST_REF: /@[A-Za-z_][A-Za-z0-9_]*/
NUMBER: /([0-9]+(\.[0-9]+)?|\.[0-9]+)([eE][+-]?[0-9]+)?/
STRING: /'[^'\n]*'/ | /"[^"\n]*"/
REQUEST_3DS: /(?<!\w)request_3ds(?!\w)/i
ALLOW: /(?<!\w)allow(?!\w)/i
BLOCK: /(?<!\w)block(?!\w)/i
REVIEW: /(?<!\w)review(?!\w)/i
_IF: /(?<!\w)if(?!\w)/i
_OR: /(?<!\w)or(?!\w)/i
_AND: /(?<!\w)and(?!\w)/i
NOT: /(?<!\w)not(?!\w)/i
IN: /(?<!\w)in(?!\w)/i
_IS: /(?<!\w)is(?!\w)/i
_MISSING: /(?<!\w)missing(?!\w)/i
BOOL: /(?<!\w)(true|false)(?!\w)/i
STR_OP: /(?<!\w)(starts_with|ends_with|contains)(?!\w)/i
COMP_OP: "==" | "!=" | "<=" | ">=" | "=" | "<" | ">"
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
COMMENT: /#[^\n]*/

%ignore COMMENT
%ignore /[ \t\r]+/
"""

_PARSER = Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)


@functools.cache
def _lenient() -> Lark:
    """Text saved before keywords needed word boundaries (`block if :a: > 5and :b: < 3`) must keep loading: a
    decision service would not start otherwise. The same grammar without the boundaries, built when first
    needed."""
    grammar = GRAMMAR.replace(r"(?<!\w)", "").replace(r"(?!\w)", "")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _parser(saved: bool) -> Lark:
    return _lenient() if saved else _PARSER


# How a terminal is named in an error message.
_READABLE = {
    "RULE_NAME": "a rule name",
    "ATTR": "an attribute like :amount_usd:",
    "LIST_REF": "a list like @blocked_cards",
    "NUMBER": "a number",
    "STRING": "a 'string'",
    "BOOL": "true or false",
    "COMP_OP": "a comparison (= != < <= > >=)",
    "STR_OP": "starts_with, ends_with or contains",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "COLON": "':'",
    "_IF": "'if'",
    "_OR": "'or'",
    "_AND": "'and'",
    "NOT": "'not'",
    "IN": "'in'",
    "_IS": "'is'",
    "_MISSING": "'missing'",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "REQUEST_3DS": "an action (request_3ds, allow, block, review)",
    "ALLOW": "an action (request_3ds, allow, block, review)",
    "BLOCK": "an action (request_3ds, allow, block, review)",
    "REVIEW": "an action (request_3ds, allow, block, review)",
    "$END": "the end of the rule",
}


def _expected(names: set[str]) -> str:
    readable = sorted({_READABLE.get(n, n.lower()) for n in names if not n.startswith("__")})
    return ", ".join(readable) if readable else "the end of the rule"


_NON_FINITE = ("inf", "infinity", "nan")
# Attributes that hold strings, known without a feature set (features are numbers).
_STRING_ATTRIBUTES = frozenset(
    [*CHARGE_STRING_FIELDS, *(n for n, t in SCORE_ATTRIBUTES.items() if t == "string")]
)


def _string_context(stack: list[Any]) -> tuple[str, bool] | None:
    """Where the parser stood when a number was expected (``stack``: its value stack), why a string is
    expected there instead and whether that is inside ``in (...)``; None when a number may be meant.

    A string is expected after ``starts_with`` / ``ends_with`` / ``contains``, after a comparison with a
    string field (``:ip_country: = nan``) or a string literal, and in an ``in (...)`` of a string field or
    with a quoted value before (``:ip_country: in ('US', nan)``). Features are numbers, so the attributes
    that hold strings are known before the type check.
    """
    items = list(stack)
    while items and isinstance(items[-1], Token) and items[-1].type == "MINUS":
        items.pop()  # `-inf`: the sign is part of what was written
    siblings: list[Tree[Token]] = []
    while len(items) >= 2 and isinstance(items[-1], Token) and items[-1].type == "COMMA":
        if not (isinstance(items[-2], Tree) and items[-2].data == "in_item"):
            break
        siblings.append(items[-2])
        items = items[:-2]
    if len(items) < 2 or not isinstance(items[-1], Token):
        return None
    op = items[-1]
    if op.type == "STR_OP" and not siblings:
        return f"'{op}' tests strings", False
    if op.type == "LPAR" and len(items) >= 3 and isinstance(items[-2], Token) and items[-2].type == "IN":
        left, within = items[-3], True
        if isinstance(left, Token) and left.type == "NOT" and len(items) >= 4:  # `x not in (...)`
            left = items[-4]
    elif op.type == "COMP_OP" and not siblings:
        left, within = items[-2], False
    else:
        return None
    attr = str(left.children[0]) if isinstance(left, Tree) and left.data == "attr" else ""
    if attr[1:-1] in _STRING_ATTRIBUTES:
        return f"{attr} holds strings", within
    if isinstance(left, Tree) and left.data == "string":
        return "the other side is a string", within
    if any(isinstance(t, Token) and t.type == "STRING" for s in siblings for t in s.children):
        return "the values before it are strings", within
    return None


def _non_finite(
    expected: set[str], line: int, text: str, column: int, stack: list[Any] | None = None
) -> RuleError | None:
    """Where a number was expected and ``inf``, ``-inf`` or ``nan`` was written (the lexer stops at the
    word: a keyword is a word of its own, so the ``in`` of ``inf`` is none), the error saying that numbers are
    finite, or, where a string is expected (``stack``: the parser's value stack, see
    :func:`_string_context`), that the word is no string; None otherwise."""
    word = re.match(r"[A-Za-z0-9_]+", text[column - 1 :]) if column > 0 else None
    if "NUMBER" not in expected or word is None or word.group(0).lower() not in _NON_FINITE:
        return None
    before = text[: column - 1].rstrip()
    if before.endswith("-"):  # `-inf`: the sign belongs to what was written
        got, column = "-" + word.group(0), len(before)
    else:
        got = word.group(0)
    nan = word.group(0).lower() == "nan"
    if (context := _string_context(stack or [])) is not None:
        reason, within = context
        if within:
            reason = (
                f"the values of `in (...)` are quoted strings, finite numbers or true/false, and {reason}"
            )
        missing = "; a missing value is tested with `is missing`" if nan else ""
        return RuleError(
            f"Expected a quoted string: {reason}. Got {got} without quotes, which is not a value: write "
            f"'{got}' for the text{missing}.",
            line=line,
            column=column,
        )
    if nan:
        why = "a rule's numbers are finite, and a NaN value counts as missing (test it with `is missing`)"
    else:
        why = f"a rule's numbers are finite, at most {MAX_ABS_NUMBER:.0e} in magnitude"
    return RuleError(f"Expected a finite number. Got {got!r}: {why}.", line=line, column=column)


# A rule name's shape (RULE_NAME), and a name-like prefix before an action: `b3 : review`, `règle_é: review`.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_NAME_PREFIX = re.compile(
    r"[ \t]*([^\s:#'\"()]+)([ \t]*):[ \t]*(?:request_3ds|allow|block|review)(?!\w)", re.I
)


def _name_error(text: str, line: int, column: int) -> RuleError | None:
    """Where the parser stopped (``column``) in what reads as a ``name:`` prefix, the error saying what a rule
    name is (at the first character it may not hold) or that its ':' follows it directly; None otherwise."""
    m = _NAME_PREFIX.match(text)
    if m is None or column > m.end(2) + 1:
        return None
    name, space = m.group(1), m.group(2)
    valid = len(shape.group(0)) if (shape := _NAME.match(name)) else 0
    if valid < len(name):
        bad = name[valid]
        got = f"Got {name!r}, which starts with {bad!r}" if valid == 0 else f"Got {bad!r} in {name!r}"
        return RuleError(
            f"A rule name is ASCII letters, digits, '_' and '-', starting with a letter or '_'. {got}.",
            line=line,
            column=m.start(1) + valid + 1,
        )
    if space:
        return RuleError(
            f"A rule name is followed directly by ':'. Got {'a space' if space == ' ' else 'whitespace'} "
            f"between {name!r} and ':': write '{name}:'.",
            line=line,
            column=m.start(2) + 1,
        )
    return None


# Each keyword and the terminal that reads it (to tell whether the parser takes it where it stopped).
_KEYWORDS = {
    **{k: k.upper() for k in ("request_3ds", "allow", "block", "review", "not")},
    **{k: "_" + k.upper() for k in ("missing", "and", "if", "or", "is")},
    **{k: "BOOL" for k in ("true", "false")},
    **{k: "STR_OP" for k in ("starts_with", "ends_with", "contains")},
    "in": "IN",
}
_KEYWORD = re.compile("|".join(sorted(_KEYWORDS, key=len, reverse=True)), re.I)  # longest first


def _glued_error(text: str, line: int, column: int, allowed: set[str]) -> RuleError | None:
    """Where the lexer stopped (``column``) at a keyword glued to a word (``blockif``, ``andnot``, ``5or``),
    the error saying so and how to write it; where a keyword this place does not take starts the word
    (``> info``), the error naming that keyword, as before keywords needed word boundaries; None otherwise."""
    word = re.match(r"\w+", text[column - 1 :]) if column > 0 else None
    if word is None:
        return None
    w = word.group(0)
    pieces = _KEYWORD.findall(w)
    first = _KEYWORD.match(w)
    if first is None:
        return None
    kw = first.group(0)
    if _KEYWORDS[kw.lower()] not in allowed:  # (`> info`: the word is unexpected, said whole below)
        return None
    # `5or`: the number before was read and the keyword cannot start inside a word. Only a word made of
    # keywords gets a fix (`blockif`, `andnot`, `isnotmissing`); `orange` is just unexpected.
    left = re.search(r"[\w.]+$", text[: column - 1])
    if "".join(pieces) != w or (left is None and len(pieces) < 2):
        return None
    fix = " ".join([left.group(0), *pieces] if left else pieces)
    after = f" right after {left.group(0)!r}" if left else ""
    return RuleError(
        f"Unexpected {w!r}{after}: keywords are words of their own. Expected {fix!r}.",
        line=line,
        column=column,
    )


def _glued_name(
    e: UnexpectedToken, text: str, line: int, allowed: set[str], stack: list[Any]
) -> RuleError | None:
    """The glued-keyword error (:func:`_glued_error`) where a ':' after the glued word made the lexer read
    it as a rule name: ``5or:amount_usd:`` (the token is ``or``), ``blockif:amount_usd:`` (the rule read as
    named ``blockif``, the parser stops at ``amount_usd``, where an action was expected); None otherwise."""
    if e.token.type == "RULE_NAME" and (glued := _glued_error(text, line, e.column, allowed)):
        return glued
    if len(stack) == 2 and isinstance(name := stack[0], Token) and name.type == "RULE_NAME":
        return _glued_error(text, line, name.column or 0, allowed)  # (allowed: the actions)
    return None


_SEPARATORS = " Numbers are written without separators: 1000, not 1,000."


def _refuse_separators(tree: Tree[Token], line: int) -> None:
    """Refuse a thousands separator in ``in (...)``: ``in (1,000, 2,500)`` parses as four values (1, 0, 2,
    500), so a whole number directly followed by a comma and three digits is (a space after the comma
    separates values: ``in (1, 500)``). Walks with ``find_data`` (iterative)."""
    commas = []
    for node in tree.find_data("in_values"):
        # each value's tokens: [NUMBER], [MINUS, NUMBER], [STRING] or [BOOL]
        items = [
            [t for t in c.children if isinstance(t, Token)]
            for c in node.children
            if isinstance(c, Tree) and c.data == "in_item"
        ]
        for left, right in itertools.pairwise(items):
            a, b = left[-1], right[0]
            if (
                a.type == b.type == "NUMBER"
                and re.fullmatch(r"[0-9]+", a)
                and re.fullmatch(r"[0-9]{3}(\.[0-9]+)?", b)
                and a.end_column is not None
                and b.column == a.end_column + 1  # the comma between them, and nothing else
            ):
                first = "".join(left)  # (with its sign: `-1,000`)
                commas.append((a.end_column, f"{first},{b}", first, str(b)))
    if commas:
        column, written, first, second = min(commas)
        raise RuleError(
            f"Unexpected ',' in '{written}': the values of `in (...)` are separated by commas, so it reads "
            f"as two values, {first} and {second}.{_SEPARATORS} For several values (three-digit codes), "
            f"put a space after the comma: in ({first}, {second}).",
            line=line,
            column=column,
        )


_CURLY_QUOTES = "\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u00ab\u00bb"


def _slip(text: str, column: int) -> str:
    """A hint for a common slip where the parser stopped at ``column`` (1-based): operators of other
    languages, typographic quotes, numbers written as people write them, an attribute's missing closing
    colon, a rule name with spaces. Empty when none applies."""
    i = column - 1
    if not 0 <= i < len(text):
        return ""
    ch, before, after = text[i], text[i - 1] if i else "", text[i + 1 : i + 2]
    if ch in "<>" and before == "=":
        return f" Comparisons are written {ch + '='!r}, not {'=' + ch!r}."
    if ch == "&" and after == "&":
        return " Write 'and' for '&&'."
    if ch == "|" and after == "|":
        return " Write 'or' for '||'."
    if ch == "!" and after != "=":
        return " Write 'not' for '!'."
    if ch in _CURLY_QUOTES:
        return f" {ch!r} is a typographic quote (from a document or a chat): quote strings with ' or \"."
    if ch == "," and before.isdigit() and re.match(r",[0-9]{3}\b", text[i:]):
        return _SEPARATORS
    if ch in "kKmM" and before.isdigit() and not text[i + 1 : i + 2].isalnum():
        from decimal import Decimal

        written = re.search(r"[0-9]*\.?[0-9]+$", text[:i])
        n = written.group(0) if written else "1"
        full = Decimal(n) * (1000 if ch in "kK" else 1_000_000)  # exact: 1.5k is 1500, not 1500.0000001
        return f" Numbers are written in full: {full.normalize():f}, not {n}{ch}."
    m = re.match(r":([A-Za-z_][\w.]*)", text[i:]) if ch == ":" else None
    if m and not text[i + m.end() :].startswith(":"):
        return f" The attribute ':{m.group(1)}' has no closing colon: write ':{m.group(1)}:'."
    if ch == "$" and (amount := re.match(r"\$[ \t]*([0-9][0-9,]*(?:\.[0-9]+)?)", text[i:])):
        n = amount.group(1).replace(",", "")
        said = amount.group(0)
        return f" Numbers are written without a currency sign (:amount_usd: is in dollars): {n}, not {said}."
    word = re.match(r"[A-Za-z_][\w.]*", text[i:])
    if word is not None and (hint := _word_slip(word.group(0), text[:i], text[i:])):
        return hint
    return _name_slip(text, i)


def _word_slip(word: str, before: str, rest: str) -> str:
    """A hint for a word of another language where the parser stopped (SQL's ``is null``, ``like``,
    ``between``), or a value written without its quotes (``= US``) or an attribute without its colons;
    ``before`` and ``rest``: the rule's text before the word and from it on."""
    lower, left = word.lower(), before.rstrip()
    negated = re.search(r"(?<!\w)not$", left, re.I) is not None
    if lower == "null" and re.search(r"(?<!\w)is(?:[ \t]+not)?$", left, re.I):
        return f" Write 'is {'not ' if negated else ''}missing' for 'is {'not ' if negated else ''}null'."
    if lower in ("null", "missing", "none") and left.endswith(("=", "!=")):
        positive = "not " if left.endswith("!=") else ""
        return f" A missing value is tested with 'is {positive}missing', not {left[-2:].strip()} {word}."
    if lower in ("like", "ilike"):
        return (
            " There is no 'like': write starts_with 'abc' for 'abc%', ends_with 'abc' for '%abc', contains "
            "'abc' for '%abc%'."
        )
    if lower == "between":
        m = re.search(r"(:[\w.]+:|[\w.]+)$", left)
        after = re.match(r"between[ \t]+(\S+)[ \t]+and[ \t]+(\S+)", rest, re.I)
        x = m.group(1) if m else ":x:"
        lo, hi = ("LOW", "HIGH") if after is None else after.groups()
        return f" There is no 'between': write two comparisons, {x} >= {lo} and {x} <= {hi}."
    listed = re.search(r"(:[\w.]+:)[ \t]+(?:not[ \t]+)?in[ \t]*\([^)]*$", left, re.I)
    compared = re.search(r"(:[\w.]+:)?[ \t]*(==|!=|=|<=|>=|<|>)$", left)
    if (listed is None and compared is None) or lower in _KEYWORDS or lower in _NON_FINITE:
        return ""
    if "." in word or word in _STRING_ATTRIBUTES or word in CHARGE_NUMBER_FIELDS or word in SCORE_ATTRIBUTES:
        return f" Attributes are written between colons: :{word}:."
    # a text value without its quotes, tested for equality or membership (`> info` may mean anything)
    attr = (
        listed.group(1) if listed else compared.group(1) if compared and compared.group(2) in _EQUAL else None
    )
    if attr is None or attr[1:-1] not in _STRING_ATTRIBUTES:
        return ""
    return f" Strings are quoted: write '{word}'."


_EQUAL = ("=", "==", "!=")


def _name_slip(text: str, i: int) -> str:
    """A hint for a rule's name of several words (``velocity rule: block``) where the parser stopped."""
    head = re.match(r"\s*([A-Za-z_]\w*(?:[ \t]+[A-Za-z_]\w*)+):(?!\S)", text)  # `velocity rule: block`
    if head and i <= head.end(1) and not any(w.lower() in _KEYWORDS for w in head.group(1).split()):
        return f" A rule's name is one word: write '{'_'.join(head.group(1).split())}:'."
    return ""


def _syntax_error(e: UnexpectedInput, line: int, text: str) -> RuleError:
    error = _plain_syntax_error(e, line, text)
    column = getattr(e, "column", None)
    if error.line == line and isinstance(column, int) and (hint := _slip(text, column)):
        return RuleError(error.detail + hint, line=error.line, column=error.column)
    return error


def _plain_syntax_error(e: UnexpectedInput, line: int, text: str) -> RuleError:
    if isinstance(e, UnexpectedToken | UnexpectedCharacters):
        if (named := _name_error(text, line, e.column)) is not None:
            return named
        allowed = set((e.accepts or e.expected) if isinstance(e, UnexpectedToken) else (e.allowed or ()))
        parser = getattr(e, "interactive_parser", None)
        stack = list(parser.parser_state.value_stack) if parser is not None else []
        if (non_finite := _non_finite(allowed, line, text, e.column, stack)) is not None:
            return non_finite
        if isinstance(e, UnexpectedCharacters) and (glued := _glued_error(text, line, e.column, allowed)):
            return glued
        if isinstance(e, UnexpectedToken) and (glued := _glued_name(e, text, line, allowed, stack)):
            return glued
    if (isinstance(e, UnexpectedToken) and e.token.type == "$END") or isinstance(e, UnexpectedEOF):
        expected = getattr(e, "expected", None) or getattr(e, "accepts", None) or set()
        return RuleError(
            f"The rule ended early. Expected {_expected(set(expected))}.", line=line, column=len(text) + 1
        )
    if isinstance(e, UnexpectedToken):
        got = str(e.token)
        shown = got if len(got) <= 40 else got[:40] + "..."
        return RuleError(
            f"Unexpected {shown!r}. Expected {_expected(set(e.accepts or e.expected))}.",
            line=line,
            column=e.column,
        )
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.column - 1] if 0 < e.column <= len(text) else "?"
        if ch in "'\"":
            msg = f"Unexpected character {ch!r}: strings are quoted with ' or \" and end on the same line."
            return RuleError(msg, line=line, column=e.column)
        word = re.match(r"\w{1,40}|\S", text[e.column - 1 :])
        got = word.group(0) if word else ch
        expected = _expected(set(e.allowed or ()))
        return RuleError(f"Unexpected {got!r}. Expected {expected}.", line=line, column=e.column)
    return RuleError(f"Invalid rule: {e}", line=line)


def _check_depth(tree: Tree[Token], line: int) -> None:
    """Reject trees deeper than MAX_DEPTH, walking with an explicit stack (deep input cannot recurse)."""
    stack: list[tuple[Tree[Token], int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RuleError(
                f"The rule is nested more than {MAX_DEPTH} levels deep. Simplify it or split it into rules.",
                line=line,
                column=getattr(node.meta, "column", None),
            )
        for child in node.children:
            if isinstance(child, Tree):
                stack.append((child, depth + 1))


def _number(tok: Token, line: int, negative: bool = False) -> float:
    text = str(tok)
    if len(text) > MAX_NUMBER_CHARS:
        raise RuleError(
            f"A number literal has at most {MAX_NUMBER_CHARS} characters. Got {len(text)}.",
            line=line,
            column=tok.column,
        )
    value = float(text)
    if not math.isfinite(value) or abs(value) > MAX_ABS_NUMBER:
        raise RuleError(
            f"A number literal must be at most {MAX_ABS_NUMBER:.0e} in magnitude. Got {text[:20]}.",
            line=line,
            column=tok.column,
        )
    return -value if negative else value


def _string(tok: Token, line: int) -> str:
    value = str(tok)[1:-1]
    if len(value) > MAX_STRING_CHARS:
        raise RuleError(
            f"A string literal has at most {MAX_STRING_CHARS} characters. Got {len(value)}.",
            line=line,
            column=tok.column,
        )
    return value


def _item(tree: Tree[Token], line: int) -> ast.Value:
    toks = [t for t in tree.children if isinstance(t, Token)]
    if toks[-1].type == "NUMBER":
        return _number(toks[-1], line, negative=len(toks) == 2)
    if toks[0].type == "STRING":
        return _string(toks[0], line)
    return str(toks[0]).lower() == "true"


def _col(tree: Tree[Token]) -> int:
    return int(getattr(tree.meta, "column", 0) or 0)


def _expr(node: Tree[Token] | Token, line: int) -> ast.Expr:
    """Lark tree -> AST. Recursive, but only after _check_depth bounded the depth."""
    if isinstance(node, Token):  # pragma: no cover - every token is wrapped by an aliased rule
        raise RuleError(f"Unexpected {str(node)!r}.", line=line, column=node.column)
    kind, ch, col = node.data, node.children, _col(node)
    if kind == "attr":
        tok = ch[0]
        assert isinstance(tok, Token)
        name = str(tok)[1:-1]
        if len(name) > MAX_NAME_CHARS:
            raise RuleError(
                f"An attribute name has at most {MAX_NAME_CHARS} characters.", line=line, column=col
            )
        return ast.Attr(name, col=col)
    if kind == "number":
        assert isinstance(ch[0], Token)
        return ast.Literal(_number(ch[0], line), col=col)
    if kind == "string":
        assert isinstance(ch[0], Token)
        return ast.Literal(_string(ch[0], line), col=col)
    if kind == "boolean":
        return ast.Literal(str(ch[0]).lower() == "true", col=col)
    if kind == "neg":
        operand = _expr(ch[1], line)
        if isinstance(operand, ast.Literal) and isinstance(operand.value, float):
            return ast.Literal(-operand.value, col=col)
        return ast.Arith("-", ast.Literal(0.0, col=col), operand, col=col)
    if kind == "arith":
        return ast.Arith(str(ch[1]), _expr(ch[0], line), _expr(ch[2], line), col=col)
    if kind == "compare":
        op = str(ch[1])
        return ast.Compare("=" if op == "==" else op, _expr(ch[0], line), _expr(ch[2], line), col=col)
    if kind in ("strop", "in_values", "in_list") and isinstance(ch[1], Token) and ch[1].type == "NOT":
        # `x not in (...)`, `x not in @l`, `x not contains 'y'` are `not (x in ...)`: the same tree, so the
        # evaluators and the type checker need nothing more, and a missing x stays unknown (no match).
        positive = Tree(kind, [ch[0], *ch[2:]], meta=node.meta)
        return ast.Not(_expr(positive, line), col=ch[1].column or col)
    if kind == "strop":
        return ast.StrOp(str(ch[1]).lower(), _expr(ch[0], line), _expr(ch[2], line), col=col)
    if kind == "in_values":
        items = [c for c in ch[2:] if isinstance(c, Tree)]
        if len(items) > MAX_IN_VALUES:
            raise RuleError(
                f"An `in (...)` holds at most {MAX_IN_VALUES} values; use a list (@name) for more. "
                f"Got {len(items)}.",
                line=line,
                column=col,
            )
        values = tuple(_item(i, line) for i in items)
        return ast.In(_expr(ch[0], line), values, col=col, value_cols=tuple(_col(i) for i in items))
    if kind == "in_list":
        return ast.InList(_expr(ch[0], line), str(ch[2])[1:], col=col)
    if kind == "is_missing":
        return ast.IsMissing(_expr(ch[0], line), col=col)
    if kind == "is_not_missing":
        return ast.IsMissing(_expr(ch[0], line), negated=True, col=col)
    if kind == "not_":
        return ast.Not(_expr(ch[1], line), col=col)
    if kind == "and_expr":
        return ast.And(tuple(_expr(c, line) for c in ch), col=col)
    if kind == "or_expr":
        return ast.Or(tuple(_expr(c, line) for c in ch), col=col)
    raise RuleError(f"Unsupported construct {kind!r}.", line=line, column=col)  # pragma: no cover


def _refuse_invisible(text: str, line: int, saved: bool = False) -> None:
    """Raise a RuleError naming the line, column and code point of the first invisible formatting character
    (Unicode Cf), line or paragraph separator of ``text``, one line of rule text (``saved``: none, a stored
    version keeps loading), or of a lone surrogate (a byte that was not UTF-8, from the command line: no
    stored text holds one). Never quotes the text."""
    if text.isprintable():  # the fast path: no Cc, Cf, Zl, Zp, Cs (nor other unprintable) character
        return
    surrogate = next(((i, ch) for i, ch in enumerate(text, start=1) if "\ud800" <= ch <= "\udfff"), None)
    if surrogate is not None:
        at, ch = surrogate  # U+DC80-U+DCFF: Python's escape of the bytes 0x80-0xFF that were not UTF-8
        byte = f" (byte 0x{ord(ch) - 0xDC00:02x})" if "\udc80" <= ch <= "\udcff" else ""
        raise RuleError(
            f"Rule text must be UTF-8 text. Got a lone surrogate U+{ord(ch):04X}{byte}: bytes that are not "
            "UTF-8, as a terminal or shell in another encoding passes them; write the rule in UTF-8.",
            line=line,
            column=at,
        )
    found = None if saved else first_format_character(text)
    if found is not None:
        raise RuleError(
            f"Rule text must not contain {INVISIBLE}, string literals and comments included: they make a "
            f"rule read differently from what runs. Got {code_point(found[1])}.",
            line=line,
            column=found[0],
        )


def _comment(line: str) -> str | None:
    """The comment of a line of rule text (from its first ``#`` outside a string literal: strings are quoted
    with ' or " and hold no line break), or None.

    >>> _comment("block if :ip_country: = '#1'  # card check"), _comment("# all of it"), _comment("x")
    ('# card check', '# all of it', None)
    """
    quote = None
    for at, ch in enumerate(line):
        if quote is not None:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[at:]
    return None


def parse_rule(text: str, line: int = 1, *, saved: bool = False) -> ast.Rule:
    """Parse one rule (one line, without its comment-only or blank neighbours).

    ``saved=True`` reads a rule stored before invisible formatting characters were refused: it must keep
    loading (a decision service would not start otherwise), so they are allowed where the grammar allows any
    character (string literals, comments). New text refuses them (Trojan Source, CVE-2021-42574).
    """
    if len(text) > MAX_RULE_CHARS:
        raise RuleError(
            f"A rule has at most {MAX_RULE_CHARS:,} characters. Got {len(text):,}.", line=line, column=1
        )
    if contains_card_number(text):
        # Never echo the text: it may hold a full card number.
        raise RuleError("Rule text must not contain a card number (PAN).", line=line)
    _refuse_invisible(text, line, saved)
    try:
        tree = _parser(saved).parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, line, text) from None
    _check_depth(tree, line)
    if not saved:  # (a version saved before keeps loading: it meant what it was served as)
        _refuse_separators(tree, line)
    children: list[Any] = list(tree.children)
    name_tok = children[0] if isinstance(children[0], Token) and children[0].type == "RULE_NAME" else None
    if name_tok is not None:
        children = children[1:]
    action_tree = children[0]
    action = str(action_tree.children[0]).lower()
    name = str(name_tok) if name_tok is not None else f"{action}_line_{line}"
    if len(name) > MAX_NAME_CHARS:
        raise RuleError(f"A rule name has at most {MAX_NAME_CHARS} characters.", line=line, column=1)
    return ast.Rule(name, action, _expr(children[1], line), line=line)  # type: ignore[arg-type]


def rule_text(text: object, who: str, param: str = "text") -> str:
    """``text`` if it is a str; else a ConfigError naming ``param`` of ``who``: a rules file's path is
    not its text (``'PosixPath' object has no attribute 'encode'``, before), nor are its bytes.

    >>> from pathlib import Path
    >>> rule_text(Path("x.rules"), "rulesets.compile_text")
    Traceback (most recent call last):
    ...
    payfm.errors.ConfigError: The 'text' of rulesets.compile_text must be the rules' text (a str). Got the \
PosixPath 'x.rules': pass the file's text, Path('x.rules').read_text().
    """
    if isinstance(text, str):
        return text
    expected = f"The '{param}' of {who} must be the rules' text (a str)."
    if isinstance(text, os.PathLike):
        path = shown_text(str(os.fspath(text)), 200)
        raise ConfigError(
            f"{expected} Got the {type(text).__name__} '{path}': pass the file's text, "
            f"Path('{path}').read_text()."
        )
    if isinstance(text, bytes | bytearray):
        raise ConfigError(f"{expected} Got {kind(text)}: decode it first, data.decode('utf-8').")
    raise ConfigError(f"{expected} Got {kind(text)}.")


def parse_rules(text: str, *, saved: bool = False) -> list[ast.Rule]:
    """Parse a ruleset: one rule per non-blank, non-comment line; rule names must be unique.

    ``saved=True`` reads a version already stored, which may hold invisible formatting characters from before
    they were refused (see :func:`parse_rule`).
    """
    text = rule_text(text, "parse_rules")
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_TEXT_BYTES:
        raise RuleError(f"A ruleset has at most {MAX_TEXT_BYTES:,} bytes. Got {size:,}.")
    rules: list[ast.Rule] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(text.split("\n"), start=1):
        if not saved and "\r" in raw.removesuffix("\r"):  # (a CRLF line end is layout)
            # A lone carriage return hides what precedes it on a terminal, and some editors break the line
            # there: `allow if ... #<CR>review if ...` showed a review rule and ran an allow (Trojan Source).
            raise RuleError(
                "Rule text must not contain a carriage return inside a line (a line ends with \\n or "
                "\\r\\n). Got one.",
                line=i,
                column=raw.index("\r") + 1,
            )
        stripped = raw.strip()
        comment = _comment(raw)  # on a line of its own or after a rule: stored and shown as written
        if comment is not None and contains_card_number(comment, free_text=True):
            raise RuleError("Rule text must not contain a card number (PAN), comments included.", line=i)
        if "#" in raw and (control := control_character(raw.replace("\t", " ").replace("\r", " "))):
            # Comments are stored and printed (`rules show`); elsewhere the parser or the type checker refuses
            # a control character. Tabs and the CR of a CRLF line end are layout.
            raise RuleError(
                f"Rule text must not contain control characters, comments included. {control}", line=i
            )
        if not stripped or stripped.startswith("#"):
            _refuse_invisible(raw, i, saved)
            continue
        if len(rules) >= MAX_RULES:
            raise RuleError(f"A ruleset has at most {MAX_RULES:,} rules.", line=i)
        rule = parse_rule(raw, i, saved=saved)
        if rule.name in seen:
            raise RuleError(
                f"Rule name '{rule.name}' is already used on line {seen[rule.name]}. Names must be unique.",
                line=i,
                column=1,
                rule=rule.name,
            )
        seen[rule.name] = i
        rules.append(rule)
    return rules
