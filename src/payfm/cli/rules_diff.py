"""`payfm rules diff`: which rules two rulesets (versions or files) add, remove or change, rule by rule.

A rule is the same rule in both when it has the same name; an unnamed rule (the parser names it
``<action>_line_<n>``, so a line shift renames it) when it has the same action and condition. What
`rules apply` warns of as "turned off" is what this lists as removed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from payfm.cli.render import console, err_console, plural
from payfm.cli.rules_report import warn
from payfm.errors import ConfigError, PayfmError
from payfm.events.cards import shown_text
from payfm.events.text import escaped
from payfm.events.workspace import Workspace
from payfm.rules import ast, rulesets
from payfm.rules.grammar import parse_rules
from payfm.rules.limits import RuleError


def rule_keys(rules: Sequence[ast.Rule]) -> list[object]:
    """What identifies each rule of a ruleset across versions: its name, or, unnamed (the parser's
    ``block_line_3`` for a rule on line 3: a line shift renames it), its action and condition, without the
    columns a respacing moves and with each value's type (``= true`` is not ``= 1``), and which of the
    ruleset's unnamed rules of that action and condition it is (a copy added is a rule added).

    >>> [k[2] for k in rule_keys(parse_rules("block if :amount_usd: > 1\\nblock if :amount_usd: > 1"))]
    [0, 1]
    """
    seen: dict[object, int] = {}
    keys: list[object] = []
    for rule in rules:
        if rule.name == f"{rule.action}_line_{rule.line}":
            what = (rule.action, canonical(rule.condition))
            seen[what] = seen.get(what, -1) + 1
            keys.append((*what, seen[what]))
        else:
            keys.append(rule.name)
    return keys


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
    """How the rules ``after`` differ from ``before``: rules only in one (by :func:`rule_keys`), rules of one
    name whose action or condition changed (before, after), rules renamed (a removed and an added rule with
    one action and condition: before, after), how many are the same, and the actions whose rules common to
    both come in another order (the first match within an action is the rule a decision records)."""

    added: list[ast.Rule]
    removed: list[ast.Rule]
    changed: list[tuple[ast.Rule, ast.Rule]]
    same: int
    renamed: list[tuple[ast.Rule, ast.Rule]] = field(default_factory=list)
    # action -> (names before, names after)
    reordered: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    # unnamed rules whose line, so whose name (``review_line_9``), moved: decisions and reviews record it
    relined: list[tuple[ast.Rule, ast.Rule]] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        moved = self.renamed or self.reordered or self.relined
        return bool(self.added or self.removed or self.changed or moved)


def meaning(rule: ast.Rule) -> object:
    """What a rule does, whatever its name: its action and condition (:func:`canonical`)."""
    return (rule.action, canonical(rule.condition))


def diff_rules(before: Sequence[ast.Rule], after: Sequence[ast.Rule]) -> RulesDiff:
    """The rule-by-rule difference from ``before`` to ``after``, each list in its ruleset's order.

    >>> old = parse_rules("big: review if :amount_usd: > 1000\\nblock if :ip_country: = 'XX'")
    >>> new = parse_rules("# a line more\\nblock if :ip_country: = 'XX'\\nbig: review if :amount_usd: > 500")
    >>> d = diff_rules(old, new)
    >>> [(a.name, b.name) for a, b in d.changed], d.added, d.removed, d.same
    ([('big', 'big')], [], [], 1)
    """
    old = dict(zip(rule_keys(before), before, strict=True))
    new = dict(zip(rule_keys(after), after, strict=True))
    common = [k for k in new if k in old]
    # A rule of one name with another action or condition (an unnamed rule is its action and condition).
    changed = [(old[k], new[k]) for k in common if meaning(old[k]) != meaning(new[k])]
    added = [r for k, r in new.items() if k not in old]
    removed = [r for k, r in old.items() if k not in new]
    renamed = []
    for r in list(added):  # a rule removed under one name and added under another, unchanged
        twin = next((g for g in removed if meaning(g) == meaning(r)), None)
        if twin is not None:
            renamed.append((twin, r))
            added.remove(r)
            removed.remove(twin)
    reordered: dict[str, tuple[list[str], list[str]]] = {}
    # (old key, new key) of the rules in both, a renamed one included: its place counts as any other's
    key_of = {id(r): k for k, r in (*old.items(), *new.items())}
    pairs = [(k, k) for k in common] + [(key_of[id(a)], key_of[id(b)]) for a, b in renamed]
    at_old, at_new = {k: i for i, k in enumerate(old)}, {k: i for i, k in enumerate(new)}
    for action in dict.fromkeys(r.action for r in after):
        shared = [(o, n) for o, n in pairs if old[o].action == new[n].action == action]
        was, now = sorted(shared, key=lambda p: at_old[p[0]]), sorted(shared, key=lambda p: at_new[p[1]])
        if was != now:
            reordered[action] = ([old[o].name for o, _ in was], [new[n].name for _, n in now])
    relined = [(old[k], new[k]) for k in common if old[k].name != new[k].name]
    return RulesDiff(
        added=added,
        removed=removed,
        changed=changed,
        same=len(common) - len(changed),
        renamed=renamed,
        reordered=reordered,
        relined=relined,
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
        try:
            v = rulesets.get(ws, number)
        except RuleError as e:
            if Path(value).is_file():  # a file named like a version: said, as the help says how to name it
                raise RuleError(
                    f"{e.detail} (A file '{shown_text(value)}' exists: give it as ./{shown_text(value)}.)"
                ) from None
            raise
        active = rulesets.active(ws)
        said = f"v{v.version}" + (" (active)" if active is not None and active.version == v.version else "")
        return said, parse_rules(v.text, saved=True), v.text
    text = _read(value)
    try:
        rules = parse_rules(text)
    except RuleError as e:  # named by its file, as `rules check` names it
        raise e.prefixed(f"{value}: ") from None
    try:  # diffed all the same (a draft), but `apply` would refuse it: said before the diff
        rulesets.compile_text(ws, text, rulesets.candidate_set(ws))
    except RuleError as e:
        warn(f"{e.prefixed(f'{value}: ')} (`rules check` and `apply` refuse it)")
    return f"'{shown_text(value)}'", rules, text


def _source(rule: ast.Rule, text: str) -> str:
    """The line of ``text`` that holds ``rule``, as written (escaped: no terminal control, no reordering)."""
    lines = text.split("\n")
    line = lines[rule.line - 1].strip() if 0 < rule.line <= len(lines) else rule.name
    return escaped(line)


@click.command(name="diff")
@click.argument("first")
@click.argument("second", required=False)
@click.option(
    "--exit-code",
    is_flag=True,
    help="Exit 1 when the rulesets differ, 0 when not, 2 on an error (as diff(1)).",
)
@click.pass_context
def diff(ctx: click.Context, first: str, second: str | None, exit_code: bool) -> None:
    """The rules that a ruleset adds, removes or changes against another, rule by rule.

    With one argument, the active version against FIRST; with two, FIRST against SECOND. Each is a version
    (3 or v3) or a rules file (- reads standard input; a file named like a version: ./3). Rules are matched
    by name; unnamed rules by action and condition; a rule removed under one name and added under another
    is said renamed. A version replaces the active one whole, so what this lists as removed is what `rules
    apply` of the file would turn off. Rules of one action that come in another order are said too: a
    charge two of them match is recorded as decided by the first (its action is the same either way).

    \b
    Example:
      payfm rules diff new.rules         # what applying new.rules would change, rule by rule
      payfm rules diff 3 5               # from version 3 to version 5
      payfm rules show > my.rules && $EDITOR my.rules && payfm rules diff my.rules
    """
    try:
        if first == second == "-":
            raise ConfigError("Standard input (-) can be one side of the diff, not both. Got - and -.")
        ws = Workspace.open(ctx.obj["workspace"])
        before = _side(ws, None if second is None else first)
        after = _side(ws, first if second is None else second)
    except PayfmError as e:
        if not exit_code:
            raise
        err_console.print(f"Error: {e}", markup=False, highlight=False)  # 2: trouble, as diff(1) says it
        ctx.exit(2)
    (a_name, a_rules, a_text), (b_name, b_rules, b_text) = before, after
    d = diff_rules(a_rules, b_rules)

    def out(text: str, **kw: Any) -> None:  # a rule's text as it is: not wrapped, no `:emoji:` codes read
        console.print(text, soft_wrap=True, emoji=False, **kw)

    if not d.differs:
        out(f"{a_name} -> {b_name}: no rule differs ({plural(d.same, 'rule')} the same).", markup=False)
        return
    counts = [f"{len(d.added)} added", f"{len(d.removed)} removed", f"{len(d.changed)} changed"]
    counts += [f"{len(d.renamed)} renamed"] if d.renamed else []
    out(f"{a_name} -> {b_name}: {', '.join(counts)}, {d.same} the same.", markup=False, highlight=False)
    for r in d.removed:
        out(f"- {_source(r, a_text)}", markup=False, highlight=False, style="red")
    for r in d.added:
        out(f"+ {_source(r, b_text)}", markup=False, highlight=False, style="green")
    for old, new in d.changed:
        out(f"~ {escaped(new.name)}:", markup=False, highlight=False, style="yellow")
        out(f"    - {_source(old, a_text)}", markup=False, highlight=False)
        out(f"    + {_source(new, b_text)}", markup=False, highlight=False)
    for old, new in d.renamed:
        said = f"~ renamed {escaped(old.name)} -> {escaped(new.name)} (the same action and condition)"
        out(said, markup=False, highlight=False, style="yellow")
    for action, (was, now) in d.reordered.items():
        out(
            f"~ order of the {action} rules: {', '.join(escaped(n) for n in now)} (was "
            f"{', '.join(escaped(n) for n in was)}): a charge two of them match is recorded as decided by "
            "the first",
            markup=False,
            highlight=False,
            style="yellow",
        )
    if d.relined:
        moved = ", ".join(f"{escaped(a.name)} -> {escaped(b.name)}" for a, b in d.relined)
        out(
            f"~ unnamed rules named by their new line: {moved} (decisions and reviews record the name: "
            "name a rule, `name: block if ...`, to keep it)",
            markup=False,
            highlight=False,
            style="yellow",
        )
    if exit_code:
        ctx.exit(1)
