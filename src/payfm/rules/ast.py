"""The rule language's syntax tree: small frozen dataclasses, built by :mod:`payfm.rules.parser`.

Positions (``col``) are 1-based columns on the rule's line; they do not take part in equality, so two
trees that mean the same compare equal wherever they were written.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from typing import Literal as TypingLiteral

Action = TypingLiteral["request_3ds", "allow", "block", "review"]
# Evaluation order of the actions: the first matching rule in this order (then in file order) decides.
ACTIONS: tuple[Action, ...] = ("request_3ds", "allow", "block", "review")
COMPARE_OPS = ("=", "!=", "<", "<=", ">", ">=")
ARITH_OPS = ("+", "-", "*", "/")
STR_OPS = ("starts_with", "ends_with", "contains")
# What the operators do to two present values: the Python engine's meaning (payfm.rules.compiler), and the
# rules check's (payfm.rules.catalog: a test no value a field holds can pass).
COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
STR_TESTS: dict[str, Callable[[str, str], bool]] = {
    "starts_with": str.startswith,
    "ends_with": str.endswith,
    "contains": lambda s, t: t in s,
}

Value = float | str | bool


@dataclass(frozen=True)
class Attr:
    name: str
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Literal:
    value: Value
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Arith:
    op: str  # one of ARITH_OPS
    left: Expr
    right: Expr
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Compare:
    op: str  # one of COMPARE_OPS ("==" is normalized to "=")
    left: Expr
    right: Expr
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class In:
    operand: Expr
    values: tuple[Value, ...]
    col: int = field(default=0, compare=False)
    value_cols: tuple[int, ...] = field(default=(), compare=False)  # (each value's column, for errors)


@dataclass(frozen=True)
class InList:
    operand: Expr
    list_name: str
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class StrOp:
    op: str  # one of STR_OPS
    left: Expr
    right: Expr
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class IsMissing:
    operand: Expr
    negated: bool = False  # `is not missing`
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Not:
    operand: Expr
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class And:
    operands: tuple[Expr, ...]
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Or:
    operands: tuple[Expr, ...]
    col: int = field(default=0, compare=False)


Expr = Attr | Literal | Arith | Compare | In | InList | StrOp | IsMissing | Not | And | Or


@dataclass(frozen=True)
class Rule:
    """``name: action if condition`` on line ``line`` (default name ``<action>_line_<line>``)."""

    name: str
    action: Action
    condition: Expr
    line: int = field(default=0, compare=False)


def children(e: Expr) -> tuple[Expr, ...]:
    """The sub-expressions of ``e``, left to right."""
    if isinstance(e, Arith | Compare | StrOp):
        return (e.left, e.right)
    if isinstance(e, In | InList | IsMissing | Not):
        return (e.operand,)
    if isinstance(e, And | Or):
        return e.operands
    return ()


def attributes(e: Expr) -> set[str]:
    """Every attribute name ``e`` reads (explicit stack: no recursion)."""
    out: set[str] = set()
    stack = [e]
    while stack:
        node = stack.pop()
        if isinstance(node, Attr):
            out.add(node.name)
        stack.extend(children(node))
    return out


def lists(e: Expr) -> set[str]:
    """Every list name ``e`` reads."""
    out: set[str] = set()
    stack = [e]
    while stack:
        node = stack.pop()
        if isinstance(node, InList):
            out.add(node.list_name)
        stack.extend(children(node))
    return out
