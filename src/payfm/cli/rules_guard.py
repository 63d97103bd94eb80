"""What `payfm rules apply`, `activate` and `rollback` check and say before a version goes live: a ruleset
that blocks or sends to review most charges (a typo such as ``>= 0`` for ``>= 1000``) is refused unless on
purpose, the active rules a version turns off or renames are named, and a backtest of rules reading the
score without a production model says how to get one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from payfm.cli.render import plural
from payfm.cli.rules_diff import diff_rules
from payfm.cli.rules_report import per_day, warn
from payfm.errors import ConfigError
from payfm.events.cards import shown_text
from payfm.events.text import escaped
from payfm.rules import rulesets
from payfm.rules.backtest import BacktestReport, RuleStats
from payfm.rules.compiler import Ruleset
from payfm.rules.limits import RuleError

MASS_BLOCK_SHARE = 0.5  # of a backtest window's charges blocked, or sent to review: surely a mistake

MASS_BLOCK_OPTION = click.option(
    "--allow-mass-block",
    is_flag=True,
    help=f"Accept a ruleset that blocks, or sends to review, more than {MASS_BLOCK_SHARE:.0%} of the "
    "backtest window's charges and more than the active one (refused otherwise: a typo such as >= 0 for "
    ">= 1000 would stop every payment, or send every one to the review team).",
)

# What each guarded action does to a charge, in an error's words.
_DOES = {"block": "block", "review": "send to review"}


def refuse_mass_decisions(report: BacktestReport, what: str) -> None:
    """A ConfigError when the backtest ``report`` of ruleset ``what`` blocks, or sends to review, more than
    MASS_BLOCK_SHARE of its window's charges, and more than its baseline, naming the rules that decided
    them (a review rule with its daily load on the review team)."""
    for action in ("block", "review"):
        decided = sum(t.count for t in report.mix.get(action, {}).values())
        moved = report.change.transitions
        before = decided - sum(t.count for o, n, _, t in moved if n == action != o)
        before += sum(t.count for o, n, _, t in moved if o == action != n)
        # (a fix that decides less than the active ruleset, 70% after 100%, is no mistake to refuse)
        if not report.charges or decided <= MASS_BLOCK_SHARE * report.charges or decided <= before:
            continue
        rules = [r for r in report.rules if r.action == action and r.decided]
        rules.sort(key=lambda r: -r.decided)
        named = ", ".join(f"'{escaped(r.name)}' {r.decided:,}{_load(report, action, r)}" for r in rules[:3])
        raise ConfigError(
            f"Ruleset {what} would {_DOES[action]} {decided:,} of the window's {report.charges:,} charges "
            f"({decided / report.charges:.1%}; by {named}), more than the active ruleset ({before:,}): "
            f"nothing was saved or activated. Expected at most {MASS_BLOCK_SHARE:.0%}, or no more than the "
            "active one: check the thresholds, or give --allow-mass-block to do it on purpose."
        )


def _load(report: BacktestReport, action: str, rule: RuleStats) -> str:
    """A review rule's load on the review team: `` (120.5 a day to review)``; empty for a block rule."""
    rate = report.per_day(rule.decided) if action == "review" else None
    return "" if rate is None else f" ({per_day(rate)} a day to review)"


def say_removed(base: rulesets.Baseline, candidate: Ruleset, what: str) -> None:
    """Warn of the active version's rules that ``what`` (a file, a version) leaves out: a version replaces
    the active one whole, so a file of one new rule turns every other rule off (the change counts only what
    it decides). Unnamed rules are matched by action and condition, not by their line-based names; a rule of
    the same action and condition under another name is renamed, not turned off (as `rules diff` says)."""
    if base.ruleset is None or base.version is None:
        return
    d = diff_rules(base.ruleset.rules, candidate.rules)
    if d.removed:
        warn(
            f"{what} leaves out {plural(len(d.removed), 'rule')} of the active ruleset v{base.version}, "
            f"which it replaces whole: {', '.join(shown_text(r.name) for r in d.removed)} (turned off). To "
            "add a rule, start from `payfm rules show` and add it there (`payfm rules diff FILE` lists every "
            "change)."
        )
    named = [(a, b) for a, b in d.renamed if a.name != b.name]
    if named:
        pairs = ", ".join(f"{shown_text(a.name)} -> {shown_text(b.name)}" for a, b in named)
        warn(
            f"{what} renames {plural(len(named), 'rule')} of the active ruleset v{base.version} (the same "
            f"action and condition, still on): {pairs}. Decisions and reviews record the new name."
        )


NO_MODEL = (
    " No model is in production to score the window: train one with `payfm train` and promote it with "
    "`payfm models promote REF` (the decision service scores with it, and backtests use it by default)."
)


@contextmanager
def without_a_model(missing: bool) -> Iterator[None]:
    """Where ``missing`` (the rules read the score, no --model or --scores was given and no model is in
    production), a RuleError of the backtest (no scores) also says how to put a model in production."""
    try:
        yield
    except RuleError as e:
        if not missing or "no scores were given" not in e.detail:
            raise
        said = RuleError(str(e) + NO_MODEL)  # (its place kept, as RuleError.prefixed keeps it)
        said.line, said.column, said.rule, said.detail = e.line, e.column, e.rule, e.detail + NO_MODEL
        raise said from None
