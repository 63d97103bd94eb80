"""Compile a checked ruleset once into (a) a one-charge evaluator and (b) one SQL expression per rule.

Both implement the same semantics (tested to decide identically, see tests/test_rules_parity.py):

- values are numbers (floats), strings or booleans; a missing value is ``None`` (SQL ``NULL``), and NaN
  counts as missing;
- a comparison, arithmetic, ``in``, or string operation with a missing operand is *unknown*; ``x / 0`` is
  missing, as is any arithmetic that gives NaN;
- ``and`` / ``or`` / ``not`` follow Kleene's three-valued logic (SQL's); ``is missing`` is always true/false;
- a rule matches only when its condition is TRUE (unknown does not match);
- actions are tried in the order request_3ds, allow, block, review; within an action, in file order; the
  first matching rule decides; no match authorizes (action ``None``).

The evaluator is a tree of Python closures built once (no eval/exec). The SQL is for DuckDB; identifiers
are quoted, string literals escaped, and every condition wrapped in ``coalesce(..., false)``.

Example:
    >>> from payfm.rules.grammar import parse_rules
    >>> rs = compile_rules(parse_rules("block if :amount_usd: > 500"))
    >>> rs.decide({"amount_usd": 900.0}), rs.decide({"amount_usd": None}).action is None
    (Decision(action='block', rule='block_line_1'), True)
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from payfm.events.schema import RULES
from payfm.rules import ast
from payfm.rules.catalog import CHARGE_STRING_FIELDS
from payfm.rules.domains import DOMAIN_FIELDS, FragmentError, canonical_fragment

Fn = Callable[[Mapping[str, object]], object]


@dataclass(frozen=True)
class Decision:
    """The deciding rule's action (None: authorize) and name (None when no rule matched)."""

    action: ast.Action | None
    rule: str | None


AUTHORIZE = Decision(None, None)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: ast.Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return f"CAST('{float(value)!r}' AS DOUBLE)"


# A list of BINs matches a charge whose card_bin starts with one of its entries (6 to 8 digits): issuers
# moved to 8-digit BINs, and a 6-digit entry must still catch their cards. Both engines test these prefixes.
BIN_PREFIXES = (6, 7, 8)


def _by_prefix(e: ast.InList) -> bool:
    return isinstance(e.operand, ast.Attr) and CHARGE_STRING_FIELDS.get(e.operand.name) == "bin"


def list_table(name: str) -> str:
    """The (quoted) table a backtest registers for list ``name``: one VARCHAR column ``value``."""
    return quote_ident(f"__payfm_list_{name}")


# Charge fields stored in one canonical spelling (e-mail domains, IP addresses): name -> canonical function.
_CANONICAL: dict[str, Callable[[str], str]] = {
    name: rule.canonical
    for name, rule in RULES["charges"].items()
    if rule.canonical is not None and name in CHARGE_STRING_FIELDS
}


def _canonical_value(name: str, value: ast.Value) -> ast.Value:
    canonical = _CANONICAL.get(name)
    if canonical is None or not isinstance(value, str):
        return value
    try:
        return canonical(value)
    except ValueError:  # a value no charge holds: it matches nothing, as written
        return value


def _canonical_fragment(name: str, op: str, value: ast.Value) -> ast.Value:
    if name == "ip_address" and isinstance(value, str):
        return value.lower()  # charges hold IPv6 addresses in lower case: 'starts_with '2001:DB8:''
    if name not in DOMAIN_FIELDS or not isinstance(value, str):
        return value
    try:
        return canonical_fragment(op, value)
    except FragmentError:  # a fragment no domain holds: it matches nothing, as written
        return value


def canonical_literals(e: ast.Expr) -> ast.Expr:
    """``e`` with every string literal compared (``=``, ``!=``, ``in (...)``) with a field stored in a
    canonical form written in that form, as both engines then compare it: ``:email_domain: =
    'xn--bcher-kva.de'`` tests ``'bücher.de'``. The type checker refuses such spellings in new text (with a
    pointer to the canonical one); this keeps versions saved before a field's canonical form changed matching
    the charges they were written for.

    The fragment of ``starts_with``, ``ends_with`` or ``contains`` on an e-mail domain is canonicalized label
    by label (:func:`payfm.rules.domains.canonical_fragment`): ``ends_with '.XN--P1AI'`` tests ``'.рф'``. A
    literal on the left of a string test (the text searched, ``'mail.evil.com' ends_with :email_domain:``)
    is read as ``contains`` reads its fragment. Recursive, on a tree whose depth the parser bounded.
    """
    if isinstance(e, ast.Compare | ast.StrOp):
        left, right = canonical_literals(e.left), canonical_literals(e.right)  # (a = 'X') = true
        if isinstance(e, ast.StrOp):
            if isinstance(left, ast.Attr) and isinstance(right, ast.Literal):
                right = replace(right, value=_canonical_fragment(left.name, e.op, right.value))
            elif isinstance(right, ast.Attr) and isinstance(left, ast.Literal):
                left = replace(left, value=_canonical_fragment(right.name, "contains", left.value))
        elif e.op in ("=", "!="):
            if isinstance(left, ast.Attr) and isinstance(right, ast.Literal):
                right = replace(right, value=_canonical_value(left.name, right.value))
            elif isinstance(right, ast.Attr) and isinstance(left, ast.Literal):
                left = replace(left, value=_canonical_value(right.name, left.value))
        return e if (left, right) == (e.left, e.right) else replace(e, left=left, right=right)
    if isinstance(e, ast.In):
        operand = canonical_literals(e.operand)
        if isinstance(operand, ast.Attr):
            values = tuple(_canonical_value(operand.name, v) for v in e.values)
        else:
            values = e.values
        return e if (operand, values) == (e.operand, e.values) else replace(e, operand=operand, values=values)
    if isinstance(e, ast.Not | ast.IsMissing):
        operand = canonical_literals(e.operand)
        return e if operand == e.operand else replace(e, operand=operand)
    if isinstance(e, ast.And | ast.Or):
        return replace(e, operands=tuple(canonical_literals(o) for o in e.operands))
    return e


# ---- one-charge closures ------------------------------------------------------------------------------


def _number(x: object) -> float | None:
    """A number attribute's value: a float, an int (``True`` reads as 1.0) or a NumPy scalar (values read
    from a backfill's frame) as a float; NaN, text and anything else as missing, the same in every closure."""
    if x.__class__ is float:
        return None if x != x else x
    if x is None or isinstance(x, str) or not isinstance(x, numbers.Real):
        return None
    f = float(x)
    return None if f != f else f


def _number_attr(name: str) -> Fn:
    return lambda v: _number(v.get(name))


def _string_attr(name: str) -> Fn:
    def get(v: Mapping[str, object]) -> object:
        x = v.get(name)
        return x if isinstance(x, str) else None

    return get


def _attr(name: str, types: Mapping[str, str]) -> Fn:
    t = types.get(name)
    if t == "number":
        return _number_attr(name)
    if t == "string":
        return _string_attr(name)

    def get(v: Mapping[str, object]) -> object:
        x = v.get(name)
        return x if x is None or isinstance(x, str) else _number(x)

    return get


def _const(value: object) -> Fn:
    return lambda v: value


def _arith(op: str, left: Fn, right: Fn) -> Fn:
    def f(v: Mapping[str, object]) -> object:
        a = left(v)
        if a is None:
            return None
        b = right(v)
        if b is None:
            return None
        x, y = float(a), float(b)  # type: ignore[arg-type]
        if op == "+":
            r = x + y
        elif op == "-":
            r = x - y
        elif op == "*":
            r = x * y
        else:
            if y == 0.0:
                return None
            r = x / y
        return None if r != r else r

    return f


def _compare(op: str, left: Fn, right: Fn, const: object) -> Fn:
    cmp = ast.COMPARE[op]
    if const is not None:  # right side is a literal: the common case, one call fewer

        def fc(v: Mapping[str, object]) -> object:
            a = left(v)
            return None if a is None else cmp(a, const)

        return fc

    def f(v: Mapping[str, object]) -> object:
        a = left(v)
        if a is None:
            return None
        b = right(v)
        return None if b is None else cmp(a, b)

    return f


def _attr_vs_literal(name: str, typ: str, op: str, const: object) -> Fn:
    """``:name: <op> literal`` in one closure: the hot path of most rules."""
    cmp = ast.COMPARE[op]
    if typ == "number":

        def num(v: Mapping[str, object]) -> object:
            x = v.get(name)
            if x.__class__ is float:
                return None if x != x else cmp(x, const)
            n = _number(x)
            return None if n is None else cmp(n, const)

        return num

    def text(v: Mapping[str, object]) -> object:
        x = v.get(name)
        return cmp(x, const) if isinstance(x, str) else None

    return text


def _member(operand: Fn, values: frozenset[object]) -> Fn:
    def f(v: Mapping[str, object]) -> object:
        a = operand(v)
        return None if a is None else a in values

    return f


def _member_prefix(operand: Fn, values: frozenset[object]) -> Fn:
    """Membership of a BIN by its first 6, 7 or 8 digits (see BIN_PREFIXES)."""

    def f(v: Mapping[str, object]) -> object:
        a = operand(v)
        if a is None:
            return None
        s = str(a)
        return any(s[:n] in values for n in BIN_PREFIXES)

    return f


def _strop(op: str, left: Fn, right: Fn) -> Fn:
    test = ast.STR_TESTS[op]

    def f(v: Mapping[str, object]) -> object:
        a = left(v)
        if a is None:
            return None
        b = right(v)
        if b is None:
            return None
        return test(str(a), str(b))

    return f


def _is_missing(operand: Fn, negated: bool) -> Fn:
    return lambda v: (operand(v) is not None) if negated else (operand(v) is None)


def _not(operand: Fn) -> Fn:
    def f(v: Mapping[str, object]) -> object:
        r = operand(v)
        return None if r is None else not r

    return f


def _and(fns: tuple[Fn, ...]) -> Fn:
    if len(fns) == 2:
        first, second = fns

        def pair(v: Mapping[str, object]) -> object:
            r = first(v)
            if r is False:
                return False
            s = second(v)
            if s is False:
                return False
            return None if r is None or s is None else True

        return pair

    def f(v: Mapping[str, object]) -> object:
        unknown = False
        for g in fns:
            r = g(v)
            if r is False:
                return False
            if r is None:
                unknown = True
        return None if unknown else True

    return f


def _or(fns: tuple[Fn, ...]) -> Fn:
    def f(v: Mapping[str, object]) -> object:
        unknown = False
        for g in fns:
            r = g(v)
            if r is True:
                return True
            if r is None:
                unknown = True
        return None if unknown else False

    return f


def compile_python(
    e: ast.Expr, lists: Mapping[str, frozenset[str]], types: Mapping[str, str] | None = None
) -> Fn:
    """The closure evaluating ``e`` on one mapping of attribute values (True / False / None = unknown)."""
    t = types or {}
    if isinstance(e, ast.Attr):
        return _attr(e.name, t)
    if isinstance(e, ast.Literal):
        return _const(e.value)
    if isinstance(e, ast.Arith):
        return _arith(e.op, compile_python(e.left, lists, t), compile_python(e.right, lists, t))
    if isinstance(e, ast.Compare):
        const = e.right.value if isinstance(e.right, ast.Literal) else None
        typ = t.get(e.left.name) if isinstance(e.left, ast.Attr) else None
        if (typ == "number" and isinstance(const, float)) or (typ == "string" and isinstance(const, str)):
            assert isinstance(e.left, ast.Attr)
            return _attr_vs_literal(e.left.name, typ, e.op, const)
        return _compare(e.op, compile_python(e.left, lists, t), compile_python(e.right, lists, t), const)
    if isinstance(e, ast.In):
        return _member(compile_python(e.operand, lists, t), frozenset(e.values))
    if isinstance(e, ast.InList):
        member = _member_prefix if _by_prefix(e) else _member
        return member(compile_python(e.operand, lists, t), frozenset(lists.get(e.list_name, ())))
    if isinstance(e, ast.StrOp):
        return _strop(e.op, compile_python(e.left, lists, t), compile_python(e.right, lists, t))
    if isinstance(e, ast.IsMissing):
        return _is_missing(compile_python(e.operand, lists, t), e.negated)
    if isinstance(e, ast.Not):
        return _not(compile_python(e.operand, lists, t))
    fns = tuple(compile_python(o, lists, t) for o in e.operands)
    return _and(fns) if isinstance(e, ast.And) else _or(fns)


# ---- SQL ----------------------------------------------------------------------------------------------

# Each sub-expression appears once in the SQL, so its size (and DuckDB's work) is linear in the rule's:
# ``nullif(x, y)`` and ``CASE WHEN x ... THEN ... ELSE x END`` repeat ``x``, and nested in an arithmetic chain
# they double the text per level (44 operators: hours). A one-element list with a lambda reads ``x`` once.


def _nan_to_null(x: str) -> str:
    """``x``, with NaN read as missing (NULL)."""
    return f"list_filter([{x}], lambda v: NOT isnan(v))[1]"


def _zero_to_null(x: str) -> str:
    """``x``, with 0 (and -0) read as missing: a divisor (DuckDB gives inf for ``x / 0``)."""
    return f"list_filter([{x}], lambda v: v != 0)[1]"


def _arith_sql(e: ast.Expr) -> str:
    """An arithmetic (sub)tree without NaN checks: NaN propagates through + - * / like NULL, so one check at
    the top of the tree (:func:`compile_sql`) gives the evaluator's result, which is missing as soon as one
    step is NaN or missing."""
    if not isinstance(e, ast.Arith):
        return compile_sql(e)
    a, b = _arith_sql(e.left), _arith_sql(e.right)
    if e.op == "/":
        if isinstance(e.right, ast.Literal) and isinstance(e.right.value, float):
            b = "CAST(NULL AS DOUBLE)" if e.right.value == 0.0 else b
        else:
            b = _zero_to_null(b)
    return f"({a} {e.op} {b})"


def compile_sql(e: ast.Expr) -> str:
    """A DuckDB expression for ``e`` over columns named like the attributes (NULL = missing/unknown).

    The SQL's size is linear in the rule's: no sub-expression is repeated (see :func:`_nan_to_null`).
    """
    if isinstance(e, ast.Attr):
        return quote_ident(e.name)
    if isinstance(e, ast.Literal):
        return sql_literal(e.value)
    if isinstance(e, ast.Arith):
        # NaN (inf - inf, inf * 0) is missing, as in the Python evaluator.
        return _nan_to_null(_arith_sql(e))
    if isinstance(e, ast.Compare):
        return f"({compile_sql(e.left)} {e.op} {compile_sql(e.right)})"
    if isinstance(e, ast.In):
        return f"({compile_sql(e.operand)} IN ({', '.join(sql_literal(v) for v in e.values)}))"
    if isinstance(e, ast.InList):
        return _in_list_sql(e)
    if isinstance(e, ast.StrOp):
        return f"{e.op}({compile_sql(e.left)}, {compile_sql(e.right)})"
    if isinstance(e, ast.IsMissing):
        return f"(({compile_sql(e.operand)}) IS {'NOT ' if e.negated else ''}NULL)"
    if isinstance(e, ast.Not):
        return f"(NOT {compile_sql(e.operand)})"
    joiner = " AND " if isinstance(e, ast.And) else " OR "
    return "(" + joiner.join(compile_sql(o) for o in e.operands) + ")"


def _in_list_sql(e: ast.InList) -> str:
    """``x in @list``: unknown when ``x`` is missing, whatever the list holds.

    SQL's ``NULL IN (subquery)`` is false, not NULL, when the subquery is empty, so an empty list would make
    ``not :email_domain: in @empty`` match every charge without a domain; the evaluator says unknown. The
    operand is an attribute (the type checker allows nothing else), so naming it twice costs nothing.
    """
    x = compile_sql(e.operand)
    table = f"(SELECT value FROM {list_table(e.list_name)})"
    if _by_prefix(e):
        test = " OR ".join(f"left({x}, {n}) IN {table}" for n in BIN_PREFIXES)
    else:
        test = f"{x} IN {table}"
    return f"(CASE WHEN {x} IS NULL THEN NULL ELSE ({test}) END)"


# ---- the ruleset ----------------------------------------------------------------------------------------


class Ruleset:
    """A compiled ruleset: ``decide`` for one charge, ``sql_conditions`` for a whole table.

    ``lists`` (list name -> values) is snapshotted at compile time; recompile after a list changes.
    ``feature_set``: the name of the set it was compiled on, where known (what its repr shows).
    """

    def __init__(
        self,
        rules: list[ast.Rule],
        lists: Mapping[str, frozenset[str]] | None = None,
        types: Mapping[str, str] | None = None,
        *,
        feature_set: str | None = None,
    ) -> None:
        self.feature_set = feature_set
        rules = [replace(r, condition=canonical_literals(r.condition)) for r in rules]
        self.rules: tuple[ast.Rule, ...] = tuple(rules)
        used = set().union(*(ast.lists(r.condition) for r in rules)) if rules else set()
        self.lists: dict[str, frozenset[str]] = {
            name: frozenset(vals) for name, vals in (lists or {}).items() if name in used
        }
        self.types = dict(types or {})
        # Evaluation order: by action, then file order.
        self.order: tuple[int, ...] = tuple(
            sorted(range(len(rules)), key=lambda i: (ast.ACTIONS.index(rules[i].action), i))
        )
        self._fns = [
            (rules[i].name, rules[i].action, compile_python(effective(rules[i]), self.lists, self.types))
            for i in self.order
        ]
        self.sql_conditions: tuple[str, ...] = tuple(
            f"coalesce({compile_sql(effective(r))}, false)" for r in rules
        )

    def __repr__(self) -> str:
        """``Ruleset(2 rules: big, velocity; feature set 'default')``: what a notebook prints (at most 5
        names, then how many more)."""
        names = [r.name for r in self.rules]
        shown = ", ".join(names[:5]) + (f", ... ({len(names) - 5} more)" if len(names) > 5 else "")
        count = f"{len(names)} rule{'' if len(names) == 1 else 's'}" + (f": {shown}" if names else "")
        on = f"; feature set '{self.feature_set}'" if self.feature_set is not None else ""
        return f"Ruleset({count}{on})"

    def decide(self, values: Mapping[str, object]) -> Decision:
        """The decision for one charge's attribute values (see :func:`payfm.rules.catalog.charge_values`)."""
        for name, action, fn in self._fns:
            if fn(values) is True:
                return Decision(action, name)
        return AUTHORIZE

    def matches(self, values: Mapping[str, object]) -> list[str]:
        """Names of every rule whose condition is TRUE for ``values`` (in file order)."""
        return [
            r.name for r in self.rules if compile_python(effective(r), self.lists, self.types)(values) is True
        ]

    def attributes(self) -> set[str]:
        out: set[str] = set()
        for r in self.rules:
            out |= ast.attributes(effective(r))
        return out

    def decision_sql(self, flag: Callable[[int], str]) -> tuple[str, str]:
        """SQL for the deciding rule's index and action, given ``flag(i)``, rule i.s flag column."""
        if not self.rules:
            return "CAST(NULL AS INTEGER)", "CAST(NULL AS VARCHAR)"
        idx = " ".join(f"WHEN {flag(i)} THEN {i}" for i in self.order)
        act = " ".join(f"WHEN {flag(i)} THEN '{self.rules[i].action}'" for i in self.order)
        return f"CASE {idx} END", f"CASE {act} END"


_NOT_YET_3DS = ast.Or(
    (
        ast.Compare("=", ast.Attr("three_ds"), ast.Literal("not_requested")),
        ast.IsMissing(ast.Attr("three_ds")),
    )
)


def effective(rule: ast.Rule) -> ast.Expr:
    """The condition ``rule`` is evaluated with: a ``request_3ds`` rule applies only to a charge that has not
    been through 3-D Secure (``:three_ds:`` not_requested or missing), as Radar's: a charge sent again after
    the customer authenticated is decided by the allow, block and review rules; asking it again would loop,
    and a block rule would never see it."""
    if rule.action != "request_3ds":
        return rule.condition
    return ast.And((_NOT_YET_3DS, rule.condition))


def compile_rules(
    rules: list[ast.Rule],
    lists: Mapping[str, frozenset[str]] | None = None,
    types: Mapping[str, str] | None = None,
    *,
    feature_set: str | None = None,
) -> Ruleset:
    """Compile parsed (and type-checked) ``rules`` once. ``types`` (attribute -> "number"/"string") makes
    a value of the wrong type read as missing instead of failing; ``feature_set`` names the set they were
    checked on (shown by the repr)."""
    return Ruleset(rules, lists, types, feature_set=feature_set)
