"""Radar-style rules: a safe language over charge fields, model scores, features and lists.

Public API::

    from payfm.rules import parse_rules, compile_rules, Ruleset, Decision, RuleError
    from payfm.rules import rulesets, lists            # versioned rulesets and value lists in rules.db
    from payfm.rules.backtest import backtest          # vectorized replay on history

See docs/rules.md for the language, the meaning of missing values and the limits.
"""

from __future__ import annotations

from payfm.rules.catalog import AttributeCatalog, charge_values, check_types
from payfm.rules.compiler import AUTHORIZE, Decision, Ruleset, compile_rules
from payfm.rules.grammar import parse_rule, parse_rules
from payfm.rules.limits import RuleError

__all__ = [
    "AUTHORIZE",
    "AttributeCatalog",
    "Decision",
    "RuleError",
    "Ruleset",
    "charge_values",
    "check_types",
    "compile_rules",
    "parse_rule",
    "parse_rules",
]
