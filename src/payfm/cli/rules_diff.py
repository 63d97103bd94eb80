"""`payfm rules diff`: which rules two rulesets (versions or files) add, remove or change, rule by rule.

A rule is the same rule in both when it has the same name; an unnamed rule (the parser names it
``<action>_line_<n>``, so a line shift renames it) when it has the same action and condition. What
`rules apply` warns of as "turned off" is what this lists as removed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import click

from payfm.cli.render import console, plural
from payfm.errors import ConfigError
from payfm.events.cards import shown_text
from payfm.events.text import escaped
from payfm.events.workspace import Workspace
from payfm.rules import ast, rulesets
from payfm.rules.grammar import parse_rules
from payfm.rules.limits import RuleError


def rule_key(rule: ast.Rule) -> object:
    """What identifies a rule across versions: its name, or, unnamed (the parser's ``block_line_3`` for a
    rule on line 3: a line shift renames it), its action and condition, without the columns a respacing moves
    and with each value's type (``= true`` is not ``= 1``)."""
    if rule.name == f"{rule.action}_line_{rule.line}":
        return (rule.action, canonical(rule.condition))
    return rule.name


def canonical(x: object) -> object:
    """``x`` (a syntax tree) as nested tuples of its compared fields, each value with its type's name."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        fields = (getattr(x, f.name) for f in dataclasses.fields(x) if f.compare)
        return (type(x).__name__, *(canonical(v) for v in fields))
    if isinstance(x, tuple):
        return tuple(canonical(v) for v in x)
    return (type(x).__name__, x)


@dataclass(frozen=True)
class RulesDiff:
    """How the rules ``after`` differ from ``before``: rules only in one (by :func:`rule_key`), rules of one
    name whose action or condition changed (before, after), and how many are the same."""

    added: list[ast.Rule]
    removed: list[ast.Rule]
    changed: list[tuple[ast.Rule, ast.Rule]]
    same: int


def diff_rules(before: Sequence[ast.Rule], after: Sequence[ast.Rule]) -> RulesDiff:
    """The rule-by-rule difference from ``before`` to ``after``, each list in its ruleset's order.

    >>> old = parse_rules("big: review if :amount_usd: > 1000\\nblock if :ip_country: = 'XX'")
    >>> new = parse_rules("# a line more\\nblock if :ip_country: = 'XX'\\nbig: review if :amount_usd: > 500")
    >>> d = diff_rules(old, new)
    >>> [(a.name, b.name) for a, b in d.changed], d.added, d.removed, d.same
    ([('big', 'big')], [], [], 1)
    """
    old = {rule_key(r): r for r in before}
    new = {rule_key(r): r for r in after}
    changed = [
        (old[k], r) for k, r in new.items() if k in old and canonical(old[k]) != canonical(r)
    ]  # (a named rule: same name, another action or condition; an unnamed one is its condition)
    return RulesDiff(
        added=[r for k, r in new.items() if k not in old],
        removed=[r for k, r in old.items() if k not in new],
        changed=changed,
        same=sum(1 for k, r in new.items() if k in old and canonical(old[k]) == canonical(r)),
    )


def _side(ws: Workspace, value: str | None) -> tuple[str, list[ast.Rule], str]:
    """(what it is, its rules, its text) for a DIFF argument: a version (3 or v3), a rules file (- for
    standard input), or None for the active version."""
    from payfm.cli.rules import _read, _version

    if value is None:
        v = rulesets.active(ws)
        if v is None:
            raise ConfigError("There is no active ruleset to compare with. Give two versions or files.")
        return f"v{v.version} (active)", parse_rules(v.text, saved=True), v.text
    number = _version(value)
    if number is not None:
        v = rulesets.get(ws, number)
        active = rulesets.active(ws)
        said = f"v{v.version}" + (" (active)" if active is not None and active.version == v.version else "")
        return said, parse_rules(v.text, saved=True), v.text
    text = _read(value)
    try:
        return f"'{shown_text(value)}'", parse_rules(text), text
    except RuleError as e:  # named by its file, as `rules check` names it
        raise e.prefixed(f"{value}: ") from None


def _source(rule: ast.Rule, text: str) -> str:
    """The line of ``text`` that holds ``rule``, as written (escaped: no terminal control, no reordering)."""
    lines = text.split("\n")
    line = lines[rule.line - 1].strip() if 0 < rule.line <= len(lines) else rule.name
    return escaped(line)


@click.command(name="diff")
@click.argument("first")
@click.argument("second", required=False)
@click.pass_context
def diff(ctx: click.Context, first: str, second: str | None) -> None:
    """The rules that a ruleset adds, removes or changes against another, rule by rule.

    With one argument, the active version against FIRST; with two, FIRST against SECOND. Each is a version
    (3 or v3) or a rules file (- reads standard input; a file named like a version: ./3). Rules are matched
    by name; unnamed rules by action and condition. A version replaces the active one whole, so what this
    lists as removed is what `rules apply` of the file would turn off.

    \b
    Example:
      payfm rules diff new.rules         # what applying new.rules would change, rule by rule
      payfm rules diff 3 5               # from version 3 to version 5
      payfm rules show > my.rules && $EDITOR my.rules && payfm rules diff my.rules
    """
    ws = Workspace.open(ctx.obj["workspace"])
    before = _side(ws, None if second is None else first)
    after = _side(ws, first if second is None else second)
    (a_name, a_rules, a_text), (b_name, b_rules, b_text) = before, after
    d = diff_rules(a_rules, b_rules)
    counts = [f"{len(d.added)} added", f"{len(d.removed)} removed", f"{len(d.changed)} changed"]
    out = console.print
    if not (d.added or d.removed or d.changed):
        out(f"{a_name} -> {b_name}: no rule differs ({plural(d.same, 'rule')} the same).", markup=False)
        return
    out(f"{a_name} -> {b_name}: {', '.join(counts)}, {d.same} the same.", markup=False, highlight=False)
    for r in d.removed:
        out(f"- {_source(r, a_text)}", markup=False, highlight=False, style="red")
    for r in d.added:
        out(f"+ {_source(r, b_text)}", markup=False, highlight=False, style="green")
    for old, new in d.changed:
        out(f"~ {escaped(new.name)}:", markup=False, highlight=False, style="yellow")
        out(f"    - {_source(old, a_text)}", markup=False, highlight=False)
        out(f"    + {_source(new, b_text)}", markup=False, highlight=False)
