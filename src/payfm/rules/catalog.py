"""The attribute catalog (what a rule may read, with types) and the type checker run when rules are saved.

Attributes:
- the charge's fields as strings, except ``amount`` (number, minor units of ``currency``) and ``amount_usd``
  (number, US *dollars*: the event log's cents / 100, as analysts write thresholds);
- ``risk_score`` (number 0-100) and ``risk_level`` (string: normal, elevated, highest) from the model;
- every feature of the active feature set (numbers). A feature named like a charge field (``amount_usd`` in
  the default set) is shadowed by the field.

Fields that are outcomes of the charge or ground truth (``outcome``, ``decline_code``, ``scenario``) and
timestamps are not attributes.

Example:
    >>> from payfm.features.catalog import tiny_set
    >>> cat = AttributeCatalog.for_feature_set(tiny_set())
    >>> cat.type_of("card.count_charges_1h"), cat.type_of("ip_country")
    ('number', 'string')
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from payfm.events.schema import RULES, FieldRule
from payfm.features.definitions import FeatureSet
from payfm.rules import ast
from payfm.rules.domains import DOMAIN_FIELDS, FragmentError, canonical_fragment
from payfm.rules.limits import RuleError, control_character
from payfm.training.scores import RISK_LEVELS

Type = Literal["number", "string", "bool"]

# The value types of lists; an attribute with a kind may only be tested against a list of that type.
LIST_TYPES = (
    "card_fingerprint",
    "email",
    "email_domain",
    "ip_address",
    "bin",
    "country",
    "customer_id",
    "device_id",
    "merchant_id",
    "shipping_address_id",
)
# List types no attribute reads (yet): such a list can be kept, never used in a rule. Why, for a warning.
UNREAD_LIST_TYPES = {
    "email": "no rule can read an email list: a charge carries its e-mail domain (:email_domain:), never the "
    "address. Use an email_domain list to act on domains.",
}

# Charge fields readable by rules (all strings), with the list type their values belong to, if any.
CHARGE_STRING_FIELDS: dict[str, str | None] = {
    "merchant_id": "merchant_id",
    "merchant_mcc": None,
    "merchant_country": "country",
    "customer_id": "customer_id",
    "card_fingerprint": "card_fingerprint",
    "card_bin": "bin",
    "card_last4": None,
    "card_brand": None,
    "card_funding": None,
    "card_country": "country",
    "currency": None,
    "channel": None,
    "ip_address": "ip_address",
    "ip_country": "country",
    "device_id": "device_id",
    "email_domain": "email_domain",
    "billing_country": "country",
    "shipping_country": "country",
    "shipping_address_id": "shipping_address_id",
    "three_ds": None,
    "cvc_check": None,
    "address_check": None,
    "retry_of": None,
}
CHARGE_NUMBER_FIELDS = ("amount", "amount_usd")
SCORE_ATTRIBUTES: dict[str, Type] = {"risk_score": "number", "risk_level": "string"}
RISK_LEVEL_RULE = FieldRule(choices=RISK_LEVELS)


def similar_name(name: str, names: list[str]) -> str | None:
    """The name of ``names`` that ``name`` most likely meant: one differing only in case (``@BAD_BINS`` for
    ``bad_bins``), else the closest spelling; None when none is close."""
    same = [n for n in names if n.lower() == name.lower()]
    if same:
        return same[0]
    # spelling compared in lower case too: `:CARD.COUNT_CHARGE_1H:` is as close as its lower-case form
    lowered = {n.lower(): n for n in reversed(names)}  # (the first name of each lower-case form)
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


@dataclass(frozen=True)
class AttributeCatalog:
    """Attribute name -> type (and list kind) for one feature set."""

    types: Mapping[str, Type]
    kinds: Mapping[str, str] = field(default_factory=dict)
    features: frozenset[str] = frozenset()
    feature_set: str = ""

    @classmethod
    def for_feature_set(cls, fset: FeatureSet | None) -> AttributeCatalog:
        types: dict[str, Type] = {}
        features: set[str] = set()
        if fset is not None:
            for name in fset.names:
                types[name] = "number"
                features.add(name)
        for name in CHARGE_STRING_FIELDS:
            types[name] = "string"
        for name in CHARGE_NUMBER_FIELDS:
            types[name] = "number"
        types.update(SCORE_ATTRIBUTES)
        features -= set(CHARGE_STRING_FIELDS) | set(CHARGE_NUMBER_FIELDS) | set(SCORE_ATTRIBUTES)
        kinds = {k: v for k, v in CHARGE_STRING_FIELDS.items() if v is not None}
        return cls(types, kinds, frozenset(features), fset.name if fset else "")

    def type_of(self, name: str) -> Type:
        try:
            return self.types[name]
        except KeyError:
            raise RuleError(f"Unknown attribute ':{name}:'.{self.suggest(name)}") from None

    def suggest(self, name: str) -> str:
        """The hint after "Unknown attribute ':name:'.": why it cannot be read, the payfm name of a Stripe
        Radar attribute (:data:`RADAR_NAMES`), or the closest name, its window written as payfm writes it
        (``_24h`` is ``_1d``); empty when nothing is close."""
        if name in AFTER_THE_DECISION:
            return f" {AFTER_THE_DECISION[name]}"
        if (radar := RADAR_NAMES.get(name.lower())) is not None:
            ours, note = radar
            missing = "" if ours in self.types else f", which feature set '{self.feature_set}' does not have"
            return f" ':{name}:' is Stripe Radar's name: payfm's is ':{ours}:'{missing}.{note}"
        windowed = same_window(name)
        if windowed != name and windowed in self.types:
            return f" Did you mean ':{windowed}:'? (A window is written in its largest whole unit.)"
        close = similar_name(windowed, list(self.types))  # `:Amount_USD:` is ':amount_usd:', not ':amount:'
        return f" Did you mean ':{close}:'?" if close else ""


# A window at the end of a name part: `_24h`, `_60m`, `_1w` (payfm writes 1d, 1h, 7d: format_duration).
_WINDOW = re.compile(r"(?<=_)([0-9]+)([smhdw])(?=_|$)", re.I)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def same_window(name: str) -> str:
    """``name`` with each window written as payfm's feature names write it, in its largest whole unit.

    >>> same_window("card.count_charges_24h"), same_window("ip.count_charges_60m"), same_window("x_1w")
    ('card.count_charges_1d', 'ip.count_charges_1h', 'x_7d')
    """
    from payfm.features.durations import format_duration

    def whole(m: re.Match[str]) -> str:
        seconds = int(m.group(1)) * _UNIT_S[m.group(2).lower()]
        return format_duration(timedelta(seconds=seconds)) if seconds else m.group(0)

    return _WINDOW.sub(whole, name) if len(name) <= 200 else name


# Payfm's velocity counts hold earlier charges only (docs/features.md, "Time semantics").
_EARLIER = (
    " payfm counts earlier charges only, never the one being decided (docs/features.md, Time semantics); "
    "Radar's count may include it: check the threshold (Radar's > 5 may be > 4 here)."
)
# Stripe Radar's attribute names (lower case) that payfm reads under another name, with what to know: only
# attributes of the same meaning (Radar's :card_country:, :ip_country:, :email_domain:, :risk_score: and
# others are payfm's names too). Radar's "total" charges are every attempt, as payfm's count_charges; its
# "declined" ones the issuer's declines, as count_declined (a block is not a decline in either).
RADAR_NAMES: dict[str, tuple[str, str]] = {
    "amount_in_usd": ("amount_usd", " It is in US dollars, not cents."),
    "billing_address_country": ("billing_country", ""),
    "shipping_address_country": ("shipping_country", ""),
    **{
        f"{what}_charges_per_{radar}_{period}": (f"{entity}.count_{agg}_{window}", _EARLIER)
        for what, agg, entities, periods in (
            (
                "total",
                "charges",
                (("card_number", "card"), ("email", "email"), ("ip_address", "ip"), ("customer", "customer")),
                (("hourly", "1h"), ("daily", "1d"), ("weekly", "7d")),
            ),
            (
                "declined",
                "declined",
                (("card_number", "card"),),
                (("hourly", "1h"), ("daily", "1d"), ("weekly", "7d")),
            ),
            ("declined", "declined", (("ip_address", "ip"),), (("hourly", "1h"), ("daily", "1d"))),
            ("declined", "declined", (("email", "email"),), (("daily", "1d"),)),
        )
        for radar, entity in entities
        for period, window in periods
    },
}


# Charge fields of the event log that rules cannot read, and why: they are known only after the decision (or
# never, in production), so a rule on them could not run where rules run: before authorization.
AFTER_THE_DECISION = {
    name: f"':{name}:' is {what}, known only after the decision, when no rule runs any more."
    for name, what in (
        ("outcome", "the charge's outcome (authorized, declined, blocked)"),
        ("decline_code", "the issuer's decline code, part of the charge's outcome"),
        ("scenario", "the synthetic world's fraud scenario (ground truth no live charge carries)"),
    )
}


def charge_values(
    charge: Mapping[str, object],
    features: Mapping[str, object] | Sequence[object] | None = None,
    risk_score: float | None = None,
    risk_level: str | None = None,
    *,
    names: Sequence[str] | None = None,
) -> dict[str, object]:
    """The attribute values of one charge, as :meth:`Ruleset.decide` reads them.

    ``charge`` is a row of the event log (``amount_usd`` in cents); ``features`` the charge's features: a
    mapping feature name -> value, or a vector in the order of ``names`` (the feature set's ``names``, as
    :meth:`payfm.features.online.OnlineFeatures.vector_then_update` returns it). This is the one place that
    turns cents into the dollars rules are written in.

    >>> charge_values({"amount_usd": 1250}, [2.0], names=["card.count_charges_1h"])["card.count_charges_1h"]
    2.0
    """
    values: dict[str, object]
    if features is None or isinstance(features, Mapping):
        values = dict(features or {})
    elif names is None:
        raise RuleError(
            "charge_values needs names= (the feature set's names) to read a feature vector. "
            f"Got a {type(features).__name__} of {len(features)} values without names."
        )
    elif len(names) != len(features):
        raise RuleError(
            f"charge_values needs one feature value per name. Got {len(features)} values for "
            f"{len(names)} names."
        )
    else:
        values = dict(zip(names, features, strict=True))
    for name in CHARGE_STRING_FIELDS:
        values[name] = charge.get(name)
    amount, usd = charge.get("amount"), charge.get("amount_usd")
    values["amount"] = None if amount is None else float(amount)  # type: ignore[arg-type]
    values["amount_usd"] = None if usd is None else float(usd) / 100.0  # type: ignore[arg-type]
    values["risk_score"] = risk_score
    values["risk_level"] = risk_level
    return values


_DIGITS = re.compile(r"\[0-9\]\{(\d+)(?:,(\d+))?\}")  # a pattern of digits only: [0-9]{4}, [0-9]{6,8}


def _field_rule(name: str) -> FieldRule | None:
    """The values attribute ``name`` holds: a charge string field's rule, risk_level's levels; None else."""
    if name == "risk_level":
        return RISK_LEVEL_RULE
    return RULES["charges"].get(name) if name in CHARGE_STRING_FIELDS else None


def fragment_fits(rule: FieldRule, op: str, fragment: str) -> bool | None:
    """Whether a value ``rule`` accepts can pass the string test ``op fragment`` (``starts_with``,
    ``ends_with``, ``contains``): for a vocabulary or a code list, whether one of its values does; for a
    pattern of digits, whether the fragment is digits no longer than the values; None when it cannot tell
    (an id, a free text, a canonical form)."""
    test = ast.STR_TESTS[op]
    if rule.choices is not None:
        return any(test(v, fragment) for v in rule.choices)
    if rule.codes is not None:
        return any(test(v, fragment) for v in rule.codes())
    digits = _DIGITS.fullmatch(rule.pattern or "")
    if digits is not None:
        longest = int(digits.group(2) or digits.group(1))
        return len(fragment) <= longest and all("0" <= c <= "9" for c in fragment)
    return None


def _score_problem(e: ast.Compare) -> str | None:
    """Why comparing ``:risk_score:`` with a number literal is a mistake, or None. The score is an integer
    from 0 to 100: a literal between 0 and 1 is a probability's scale (``>= 0.8`` matched nearly every scored
    charge), and a test no score passes (``> 100``) or every score passes (``>= 0``) does nothing."""
    for attr, lit, left in ((e.left, e.right, True), (e.right, e.left, False)):
        if not (isinstance(attr, ast.Attr) and attr.name == "risk_score" and isinstance(lit, ast.Literal)):
            continue
        v = lit.value
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
        if 0 < v < 1:
            return (
                f":risk_score: is a score from 0 to 100, not a probability. Got {_literal(v)}: "
                f"did you mean {_literal(round(v * 100, 6))}?"
            )
        test = ast.COMPARE[e.op]
        passed = {test(s, v) if left else test(v, s) for s in range(101)}
        if len(passed) == 1:
            which = "every scored charge" if passed == {True} else "no charge"
            return (
                f"'{e.op}' with {_literal(v)} matches {which}: :risk_score: is an integer from 0 to 100 "
                "(test `:risk_score: is not missing` for a charge the model scored)."
            )
    return None


def _score_in_problem(e: ast.In) -> tuple[str, int | None] | None:
    """Why a value of ``:risk_score: in (...)`` is a mistake (as :func:`_score_problem` says of a comparison),
    with the value's column; None when every value is a score the model can give."""
    if not (isinstance(e.operand, ast.Attr) and e.operand.name == "risk_score"):
        return None
    for i, v in enumerate(e.values):
        at = e.value_cols[i] if i < len(e.value_cols) else None
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if 0 < v < 1:
            said = _literal(round(v * 100, 6))
            return (
                f":risk_score: is a score from 0 to 100, not a probability. Got {_literal(v)}: did you mean "
                f"{said}?",
                at,
            )
        if not (float(v).is_integer() and 0 <= v <= 100):
            return (
                f":risk_score: is an integer from 0 to 100: no charge has the score {_literal(v)}, so "
                "`in (...)` never matches it (and `not in (...)` always does).",
                at,
            )
    return None


def _literal(v: object) -> str:
    """A literal as the rule wrote it: ``424242``, not the parser's float ``424242.0``; ``'x'``; ``true``."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v)


def _describe(e: ast.Expr) -> str:
    if isinstance(e, ast.Attr):
        return f":{e.name}:"
    if isinstance(e, ast.Literal):
        return _literal(e.value)
    return f"the expression at column {e.col}"


class _Checker:
    def __init__(
        self, rule: ast.Rule, catalog: AttributeCatalog, lists: Mapping[str, str], values: bool
    ) -> None:
        self.rule, self.catalog, self.lists, self.values = rule, catalog, lists, values
        self.errors: list[RuleError] = []

    def check_value(self, e: ast.Expr, attr: ast.Expr, value: object, column: int | None = None) -> bool:
        """Record an error when a charge field ``attr`` can never hold the string ``value`` (at ``column``,
        the value's own in an ``in (...)``; by default ``e``'s).

        The event log and the decision service refuse such values (:data:`payfm.events.schema.RULES`), so a
        test of ``=`` or ``in`` against one never matches, and of ``!=`` always does: a typo ('failed' for
        'fail', 'UK' for 'GB', 'USD' for 'usd') that would pass a type check and silently do nothing.
        """
        if not (self.values and isinstance(attr, ast.Attr) and isinstance(value, str)):
            return True
        rule = _field_rule(attr.name)
        problem = rule.problem(value) if rule is not None else None
        if problem is None:
            return True
        expected, hint = problem
        self.error(e, f"{_describe(attr)} is never {value[:40]!r}: it holds {expected}.{hint}", column)
        return False

    def check_fragment(self, e: ast.StrOp) -> None:
        """Record an error when the fragment of a string test cannot match what the field holds: on an
        e-mail domain, a fragment that cannot be compared with the domains charges hold
        (:func:`payfm.rules.domains.canonical_fragment`; a spelling it canonicalizes, ``'ＥＶＩＬ.com'`` or
        ``'.xn--p1ai'``, is compared in its canonical form by both engines); on a field of a vocabulary, a
        code list or digits (``:card_brand: starts_with 'Visa'``, ``:currency: ends_with 'USD'``,
        ``:card_bin: starts_with '4242 '``), a fragment none of its values has: a test that never matches,
        as ``=`` against such a value is refused (:meth:`check_value`)."""
        attr, value = e.left, e.right.value if isinstance(e.right, ast.Literal) else None
        if not (self.values and isinstance(attr, ast.Attr)):
            return
        if not isinstance(value, str) or control_character(value) is not None:
            return  # a number (a type error) or a control character: reported already
        if attr.name not in DOMAIN_FIELDS:
            rule = _field_rule(attr.name)
            if rule is not None and fragment_fits(rule, e.op, value) is False:
                fixed = [
                    v for v in (value.lower(), value.upper(), value.strip()) if fragment_fits(rule, e.op, v)
                ]
                hint = f" Did you mean {fixed[0]!r}?" if fixed else ""
                self.error(
                    e,
                    f"{_describe(attr)} {e.op} {value[:40]!r} never matches: {_describe(attr)} holds "
                    f"{rule.expected()}.{hint}",
                )
            return
        try:
            canonical_fragment(e.op, value)
        except FragmentError as problem:
            shown = "a part of an e-mail address (not shown)" if "@" in value else repr(value[:40])
            self.error(
                e,
                f"{_describe(attr)} {e.op} {shown} cannot be compared with the domains charges hold: "
                f"{problem.reason}{problem.hint}",
            )

    def vocabulary(self, e: ast.Expr) -> str | None:
        """The name of ``e`` when it is a field whose values are a vocabulary (risk_level, channel...)."""
        if not isinstance(e, ast.Attr):
            return None
        rule = _field_rule(e.name)
        return e.name if rule is not None and rule.choices is not None else None

    def error(self, e: ast.Expr, message: str, column: int | None = None) -> None:
        at = e.col if column is None else column
        self.errors.append(RuleError(message, line=self.rule.line, column=at, rule=self.rule.name))

    def expect(self, e: ast.Expr, want: Type, role: str) -> None:
        got = self.infer(e)
        if got is not None and got != want:
            self.error(e, f"{role} must be a {want}. Got a {got} ({_describe(e)}).")

    def infer(self, e: ast.Expr) -> Type | None:
        """The type of ``e``, or None if an error was already recorded inside it (no cascades)."""
        if isinstance(e, ast.Attr):
            t = self.catalog.types.get(e.name)
            if t is None:
                self.error(e, f"Unknown attribute ':{e.name}:'.{self.catalog.suggest(e.name)}")
            return t
        if isinstance(e, ast.Literal):
            if isinstance(e.value, bool):
                return "bool"
            if isinstance(e.value, str):
                if (control := control_character(e.value)) is not None:
                    self.error(e, f"A string literal must not contain control characters. {control}")
                return "string"
            return "number"
        if isinstance(e, ast.Arith):
            self.expect(e.left, "number", f"The left side of '{e.op}'")
            self.expect(e.right, "number", f"The right side of '{e.op}'")
            return "number"
        if isinstance(e, ast.Compare):
            lt, rt = self.infer(e.left), self.infer(e.right)
            if lt is None or rt is None:
                return "bool"
            if lt != rt:
                self.error(
                    e,
                    f"'{e.op}' compares values of one type. Got a {lt} ({_describe(e.left)}) "
                    f"and a {rt} ({_describe(e.right)}).",
                )
            elif lt == "bool" and e.op not in ("=", "!="):
                self.error(e, f"'{e.op}' needs numbers or strings. Got true/false values.")
            elif (
                self.values
                and e.op not in ("=", "!=")
                and (named := self.vocabulary(e.left) or self.vocabulary(e.right))
            ):
                hint = " (for the model's risk, compare :risk_score:, 0-100)" if named == "risk_level" else ""
                self.error(
                    e,
                    f"'{e.op}' would compare :{named}: alphabetically: its values are names, not an order. "
                    f"Use = or in (...){hint}.",
                )
            elif self.values and (problem := _score_problem(e)) is not None:
                self.error(e, problem)
            elif e.op in ("=", "!=") and isinstance(e.right, ast.Literal):
                self.check_value(e, e.left, e.right.value)
            elif e.op in ("=", "!=") and isinstance(e.left, ast.Literal):
                self.check_value(e, e.right, e.left.value)
            return "bool"
        if isinstance(e, ast.In):
            t = self.infer(e.operand)
            if self.values and (score := _score_in_problem(e)) is not None:
                self.error(e, score[0], score[1])
                return "bool"
            for i, v in enumerate(e.values):
                vt: Type = "bool" if isinstance(v, bool) else "string" if isinstance(v, str) else "number"
                at = e.value_cols[i] if i < len(e.value_cols) else e.col
                if t is not None and vt != t:
                    like = _describe(e.operand)
                    message = f"Every value of `in (...)` must be a {t} like {like}. Got {_literal(v)}."
                    self.errors.append(
                        RuleError(message, line=self.rule.line, column=at, rule=self.rule.name)
                    )
                    break
                if isinstance(v, str) and (control := control_character(v)) is not None:
                    self.error(e, f"A string literal must not contain control characters. {control}", at)
                    break
                if t is not None and not self.check_value(e, e.operand, v, at):
                    break
            return "bool"
        if isinstance(e, ast.InList):
            self._check_list(e)
            return "bool"
        if isinstance(e, ast.StrOp):
            self.expect(e.left, "string", f"The left side of '{e.op}'")
            self.expect(e.right, "string", f"The right side of '{e.op}'")
            self.check_fragment(e)
            return "bool"
        if isinstance(e, ast.IsMissing):
            self.infer(e.operand)
            return "bool"
        if isinstance(e, ast.Not):
            self.expect(e.operand, "bool", "The operand of 'not'")
            return "bool"
        for op in e.operands:
            self.expect(op, "bool", f"Each side of '{'and' if isinstance(e, ast.And) else 'or'}'")
        return "bool"

    def _check_list(self, e: ast.InList) -> None:
        t = self.infer(e.operand)
        list_type = self.lists.get(e.list_name)
        if list_type is None:
            close = similar_name(e.list_name, list(self.lists))
            hint = f" Did you mean '@{close}'?" if close else " Create it with `payfm lists create`."
            self.error(e, f"Unknown list '@{e.list_name}'.{hint}")
            return
        if t is None:
            return
        kind = self.catalog.kinds.get(e.operand.name) if isinstance(e.operand, ast.Attr) else None
        if kind is None:
            self.error(
                e,
                f"`in @list` needs an attribute holding {', '.join(LIST_TYPES)} values. "
                f"Got {_describe(e.operand)} (a {t}).",
            )
        elif kind != list_type:
            self.error(
                e,
                f"{_describe(e.operand)} holds {kind} values, so its list must be of type {kind}. "
                f"Got '@{e.list_name}' of type {list_type}.",
            )


def type_errors(
    rules: list[ast.Rule],
    catalog: AttributeCatalog,
    lists: Mapping[str, str] | None = None,
    *,
    values: bool = True,
) -> list[RuleError]:
    """Every type error of ``rules`` (``lists``: list name -> list type), in rule order.

    ``values`` also refuses a literal that a charge field compared with it can never hold (see
    ``_Checker.check_value``); rules saved before that check load with ``values=False``.
    """
    errors: list[RuleError] = []
    for rule in rules:
        checker = _Checker(rule, catalog, lists or {}, values)
        checker.expect(rule.condition, "bool", "The condition of a rule")
        errors.extend(checker.errors)
    return errors


def check_types(
    rules: list[ast.Rule],
    catalog: AttributeCatalog,
    lists: Mapping[str, str] | None = None,
    *,
    values: bool = True,
) -> None:
    """Raise the first type error of ``rules`` (saying how many more there are)."""
    errors = type_errors(rules, catalog, lists, values=values)
    if errors:
        first = errors[0]
        more = f" ({len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise RuleError(first.detail + more, line=first.line, column=first.column, rule=first.rule)
