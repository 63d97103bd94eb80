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

import math
import re
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from payfm.events.cards import contains_card_number
from payfm.rules import ast
from payfm.rules.limits import (
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
)

GRAMMAR = r"""
start: (RULE_NAME ":")? action "if" or_expr

!action: "request_3ds" | "allow" | "block" | "review"

?or_expr: and_expr ("or" and_expr)*
?and_expr: not_expr ("and" not_expr)*
?not_expr: NOT not_expr -> not_
         | predicate
?predicate: sum
          | sum COMP_OP sum -> compare
          | sum IN "(" in_item ("," in_item)* ")" -> in_values
          | sum IN LIST_REF -> in_list
          | sum STR_OP sum -> strop
          | sum "is" "missing" -> is_missing
          | sum "is" NOT "missing" -> is_not_missing
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
NUMBER: /[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?/
STRING: /'[^'\n]*'/ | /"[^"\n]*"/
BOOL: "true" | "false"
NOT: "not"
IN: "in"
COMP_OP: "==" | "!=" | "<=" | ">=" | "=" | "<" | ">"
STR_OP: "starts_with" | "ends_with" | "contains"
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
COMMENT: /#[^\n]*/

%ignore COMMENT
%ignore /[ \t\r]+/
"""

_PARSER = Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)

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
    "IF": "'if'",
    "OR": "'or'",
    "AND": "'and'",
    "NOT": "'not'",
    "IN": "'in'",
    "IS": "'is'",
    "MISSING": "'missing'",
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


def _non_finite(expected: set[str], line: int, text: str, column: int) -> RuleError | None:
    """Where a number was expected and ``inf``, ``-inf`` or ``nan`` was written (the lexer reads the ``in``
    of ``inf`` as the keyword), the error saying that numbers are finite; None otherwise."""
    word = re.match(r"[A-Za-z0-9_]+", text[column - 1 :]) if column > 0 else None
    if "NUMBER" not in expected or word is None or word.group(0).lower() not in _NON_FINITE:
        return None
    before = text[: column - 1].rstrip()
    if before.endswith("-"):  # `-inf`: the sign belongs to what was written
        got, column = "-" + word.group(0), len(before)
    else:
        got = word.group(0)
    if word.group(0).lower() == "nan":
        why = "a rule's numbers are finite, and a NaN value counts as missing (test it with `is missing`)"
    else:
        why = f"a rule's numbers are finite, at most {MAX_ABS_NUMBER:.0e} in magnitude"
    return RuleError(f"Expected a finite number. Got {got!r}: {why}.", line=line, column=column)


def _syntax_error(e: UnexpectedInput, line: int, text: str) -> RuleError:
    if isinstance(e, UnexpectedToken | UnexpectedCharacters):
        allowed = set((e.accepts or e.expected) if isinstance(e, UnexpectedToken) else (e.allowed or ()))
        if (non_finite := _non_finite(allowed, line, text, e.column)) is not None:
            return non_finite
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
        word = re.match(r"[A-Za-z0-9_]{1,40}|\S", text[e.column - 1 :])
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
    return str(toks[0]) == "true"


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
        return ast.Literal(str(ch[0]) == "true", col=col)
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
    if kind == "strop":
        return ast.StrOp(str(ch[1]), _expr(ch[0], line), _expr(ch[2], line), col=col)
    if kind == "in_values":
        items = [c for c in ch[2:] if isinstance(c, Tree)]
        if len(items) > MAX_IN_VALUES:
            raise RuleError(
                f"An `in (...)` holds at most {MAX_IN_VALUES} values; use a list (@name) for more. "
                f"Got {len(items)}.",
                line=line,
                column=col,
            )
        return ast.In(_expr(ch[0], line), tuple(_item(i, line) for i in items), col=col)
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


def parse_rule(text: str, line: int = 1) -> ast.Rule:
    """Parse one rule (one line, without its comment-only or blank neighbours)."""
    if len(text) > MAX_RULE_CHARS:
        raise RuleError(
            f"A rule has at most {MAX_RULE_CHARS:,} characters. Got {len(text):,}.", line=line, column=1
        )
    if contains_card_number(text):
        # Never echo the text: it may hold a full card number.
        raise RuleError("Rule text must not contain a card number (PAN).", line=line)
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, line, text) from None
    _check_depth(tree, line)
    children: list[Any] = list(tree.children)
    name_tok = children[0] if isinstance(children[0], Token) and children[0].type == "RULE_NAME" else None
    if name_tok is not None:
        children = children[1:]
    action_tree = children[0]
    action = str(action_tree.children[0])
    name = str(name_tok) if name_tok is not None else f"{action}_line_{line}"
    if len(name) > MAX_NAME_CHARS:
        raise RuleError(f"A rule name has at most {MAX_NAME_CHARS} characters.", line=line, column=1)
    return ast.Rule(name, action, _expr(children[1], line), line=line)  # type: ignore[arg-type]


def parse_rules(text: str) -> list[ast.Rule]:
    """Parse a ruleset: one rule per non-blank, non-comment line; rule names must be unique."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_TEXT_BYTES:
        raise RuleError(f"A ruleset has at most {MAX_TEXT_BYTES:,} bytes. Got {size:,}.")
    rules: list[ast.Rule] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") and contains_card_number(stripped):  # comments are stored too
            raise RuleError("Rule text must not contain a card number (PAN), comments included.", line=i)
        if "#" in raw and (control := control_character(raw.replace("\t", " ").replace("\r", " "))):
            # Comments are stored and printed (`rules show`); elsewhere the parser or the type checker refuses
            # a control character. Tabs and the CR of a CRLF line end are layout.
            raise RuleError(
                f"Rule text must not contain control characters, comments included. {control}", line=i
            )
        if not stripped or stripped.startswith("#"):
            continue
        if len(rules) >= MAX_RULES:
            raise RuleError(f"A ruleset has at most {MAX_RULES:,} rules.", line=i)
        rule = parse_rule(raw, i)
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
