"""`payfm rules` and `payfm lists`: rulesets and the value lists rules read.

Thin: parse options, call payfm.rules, render with rich.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path

import click
import pyarrow.parquet as pq
from rich.table import Table

from payfm.cli.render import console, err_console, plural
from payfm.errors import ConfigError, WorkspaceError
from payfm.events.workspace import Workspace
from payfm.features.catalog import FEATURE_SETS, feature_set
from payfm.rules import lists as lists_lib
from payfm.rules import rulesets
from payfm.rules.backtest import LABELS, BacktestReport, Tally, backtest
from payfm.rules.catalog import LIST_TYPES
from payfm.rules.compiler import Ruleset
from payfm.rules.grammar import parse_rule
from payfm.rules.limits import MAX_TEXT_BYTES, RuleError

SET_OPTION = click.option(
    "--set",
    "set_name",
    default=rulesets.DEFAULT_FEATURE_SET,
    show_default=True,
    type=click.Choice(sorted(FEATURE_SETS)),
    help="Feature set whose features rules may read.",
)


def _read(path: str) -> str:
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise RuleError(f"A ruleset has at most {MAX_TEXT_BYTES:,} bytes. '{path}' has {size:,}.")
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"Cannot read rules file '{path}': {e}") from None


def _day(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
    except ValueError:
        raise ConfigError(f"The '{name}' date must be YYYY-MM-DD. Got {value!r}.") from None


@click.group()
def rules() -> None:
    """Radar-style rules: check, backtest on history, apply as a new ruleset version."""


@rules.command()
@click.argument("file", type=click.Path(dir_okay=False))
@SET_OPTION
@click.pass_context
def check(ctx: click.Context, file: str, set_name: str) -> None:
    """Parse and type check a rules file (attributes, types, lists).

    \b
    Example:
      payfm rules check examples/rules/radar_basics.rules
    """
    ws = _maybe_workspace(ctx)
    found, errors = rulesets.type_errors(ws, _read(file), set_name)  # a syntax error stops the parse: one
    if len(errors) == 1:
        raise errors[0]
    if errors:
        for e in errors:
            err_console.print(f"{file}: {e}", highlight=False, markup=False, soft_wrap=True)
        raise ConfigError(f"{file}: {plural(len(errors), 'error')} (listed above).")
    console.print(f"OK: {plural(len(found), 'rule')} in {file}")


def _maybe_workspace(ctx: click.Context) -> Workspace | None:
    try:
        return Workspace.open(ctx.obj["workspace"])
    except WorkspaceError:  # no workspace: check without its lists (an `@list` is then unknown)
        return None


def _money(t: Tally) -> str:
    return f"{t.count:,} (${t.usd:,.0f})"


def print_report(report: BacktestReport, baseline: str) -> None:
    """Render a backtest: per rule, the decision mix and the change against the baseline."""
    out = report.outcomes
    console.print(
        f"{report.charges:,} charges: {_money(out['fraud'])} fraudulent, {_money(out['refunded'])} refunded, "
        f"{_money(out['legit'])} legitimate"
    )
    table = Table(title="Rules (matched on their own; decided = first match in action order)")
    table.add_column("rule", overflow="fold", min_width=8)
    for col in ("action", "line", "matched", "decided", "fraud", "refunded", "legit", "precision"):
        table.add_column(col, justify="left" if col == "action" else "right")
    for r in report.rules:
        prec = f"{r.outcomes['fraud'].count / r.matched:.1%}" if r.matched else "-"
        table.add_row(
            r.name,
            r.action,
            str(r.line),
            f"{r.matched:,}",
            f"{r.decided:,}",
            *(_money(r.outcomes[lab]) for lab in LABELS),
            prec,
        )
    console.print(table)
    mix = Table(title="Decision mix")
    for col in ("decision", "charges", *LABELS):
        mix.add_column(col, justify="left" if col == "decision" else "right")
    for action in ("request_3ds", "allow", "block", "review", "authorize"):
        if action in report.mix:
            row = report.mix[action]
            n = sum(t.count for t in row.values())
            mix.add_row(action, f"{n:,}", *(_money(row.get(lab, Tally())) for lab in LABELS))
    console.print(mix)
    c = report.change
    console.print(f"[bold]Change against {baseline}[/bold]: {c.changed:,} charges decided differently")
    console.print(f"  fraud newly blocked:          {_money(c.fraud_newly_blocked)}")
    console.print(f"  fraud no longer blocked:      {_money(c.fraud_no_longer_blocked)}")
    console.print(f"  good customers newly blocked: {_money(c.good_newly_blocked)}")
    console.print(f"  good customers unblocked:     {_money(c.good_no_longer_blocked)}")
    for lab, t in sorted(c.allow_overrides.items()):
        console.print(f"  allowed by an allow rule over another matching rule ({lab}): {_money(t)}")


def _run_backtest(
    ctx: click.Context,
    text: str,
    set_name: str,
    start: str | None,
    end: str | None,
    scores: str | None,
    model_ref: str | None = None,
    values: bool = True,
) -> tuple[Workspace, BacktestReport, str]:
    ws = Workspace.open(ctx.obj["workspace"])
    if scores is not None and model_ref is not None:
        raise ConfigError("Give --scores or --model, not both.")
    candidate = rulesets.compile_text(ws, text, set_name, values=values)
    current = rulesets.active(ws)
    baseline: Ruleset | None = None
    label = "no active ruleset (everything authorized)"
    if current is not None:
        baseline = rulesets.compile_text(ws, current.text, set_name, values=False)
        label = f"active ruleset v{current.version}"
    table = None
    if scores is not None:
        try:
            table = pq.read_table(scores)
        except (OSError, ValueError) as e:
            raise ConfigError(f"Cannot read scores Parquet '{scores}': {e}") from None
    if model_ref is not None:
        from payfm.training.predict import model_scores

        table = model_scores(ws, model_ref, _day(start, "--from"), _day(end, "--to"))
    report = backtest(
        ws,
        candidate,
        feature_set(set_name),
        baseline=baseline,
        scores=table,
        start=_day(start, "--from"),
        end=_day(end, "--to"),
    )
    return ws, report, label


WINDOW = [
    click.option("--from", "start", help="First day (UTC, YYYY-MM-DD) of charges to replay."),
    click.option("--to", "end", help="Day after the last (exclusive)."),
    click.option(
        "--scores", type=click.Path(dir_okay=False), help="Parquet: charge_id, risk_score, risk_level."
    ),
    click.option(
        "--model",
        "model_ref",
        default=None,
        help="Score the window with this registered model (risk_score and risk_level as the decision "
        "service gives them), instead of --scores.",
    ),
]


def _window(f: click.decorators.FC) -> click.decorators.FC:
    for opt in reversed(WINDOW):
        f = opt(f)
    return f


@rules.command(name="backtest")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--rule", "rule_text", help="One candidate rule, tested added to the active ruleset.")
@_window
@SET_OPTION
@click.pass_context
def backtest_cmd(
    ctx: click.Context,
    file: str | None,
    rule_text: str | None,
    start: str | None,
    end: str | None,
    scores: str | None,
    model_ref: str | None,
    set_name: str,
) -> None:
    """Replay a ruleset FILE, or one --rule added to the active ruleset, over past charges.

    \b
    Examples:
      payfm rules backtest examples/rules/radar_basics.rules
      payfm rules backtest --rule "block if :card.count_charges_1h: > 5" --from 2026-01-10
      payfm rules backtest --rule "block if :risk_score: >= 80" --model fraud-gbdt --from 2026-03-01
    """
    if (file is None) == (rule_text is None):
        raise ConfigError("Give either a rules FILE or --rule TEXT (not both).")
    if rule_text is not None:
        ws = Workspace.open(ctx.obj["workspace"])
        current = rulesets.active(ws)
        one = rule_text.replace("\n", " ")
        first = parse_rule(one)
        if first.name == f"{first.action}_line_1":
            one = "candidate: " + one
        rulesets.check(ws, one, set_name)  # the new rule gets every check; the saved ones load as saved
        text = (current.text + "\n" if current else "") + one
    else:
        assert file is not None
        text = _read(file)
    strict = rule_text is None
    _, report, label = _run_backtest(ctx, text, set_name, start, end, scores, model_ref, values=strict)
    print_report(report, label)


@rules.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--note", default="", help="Why this version (kept in the history).")
@_window
@SET_OPTION
@click.pass_context
def apply(
    ctx: click.Context,
    file: str,
    note: str,
    start: str | None,
    end: str | None,
    scores: str | None,
    model_ref: str | None,
    set_name: str,
) -> None:
    """Backtest FILE against the active ruleset, print the change, then save it and make it active."""
    text = _read(file)
    ws, report, label = _run_backtest(ctx, text, set_name, start, end, scores, model_ref)
    print_report(report, label)
    v = rulesets.save(ws, text, note=note, activate=True, set_name=set_name)
    console.print(f"Saved and activated ruleset v{v.version} (sha256 {v.sha256[:12]}).")


@rules.command()
@click.pass_context
def history(ctx: click.Context) -> None:
    """List every ruleset version, newest first."""
    ws = Workspace.open(ctx.obj["workspace"])
    current = rulesets.active(ws)
    table = Table(title="Ruleset versions")
    for col in ("version", "active", "created", "author", "rules", "sha256", "note"):
        table.add_column(col)
    for v in rulesets.history(ws):
        n = len([ln for ln in v.text.splitlines() if ln.strip() and not ln.strip().startswith("#")])
        is_active = "*" if current and current.version == v.version else ""
        table.add_row(str(v.version), is_active, v.created[:19], v.author, str(n), v.sha256[:12], v.note)
    console.print(table)


@rules.command()
@click.argument("version", required=False, type=int)
@click.pass_context
def show(ctx: click.Context, version: int | None) -> None:
    """Print a ruleset version's text (default: the active one)."""
    ws = Workspace.open(ctx.obj["workspace"])
    v = rulesets.get(ws, version) if version is not None else rulesets.active(ws)
    if v is None:
        raise RuleError("There is no active ruleset yet. Save one with `payfm rules apply FILE`.")
    console.print(f"# ruleset v{v.version} by {v.author} at {v.created[:19]}: {v.note}", markup=False)
    console.print(v.text, markup=False, highlight=False)


# ---- lists ----------------------------------------------------------------------------------------------


@click.group()
def lists() -> None:
    """Typed value lists for rules (`:email_domain: in @trusted_domains`), with an audit trail."""


@lists.command()
@click.argument("name")
@click.option("--type", "list_type", required=True, type=click.Choice(LIST_TYPES), help="Value type.")
@click.pass_context
def create(ctx: click.Context, name: str, list_type: str) -> None:
    """Create an empty list NAME of a type."""
    ws = Workspace.open(ctx.obj["workspace"])
    lists_lib.create_list(ws, name, list_type)
    console.print(f"Created list '{name}' of type {list_type}.")


@lists.command()
@click.argument("name")
@click.argument("values", nargs=-1, required=True)
@click.pass_context
def add(ctx: click.Context, name: str, values: tuple[str, ...]) -> None:
    """Add VALUES to list NAME."""
    ws = Workspace.open(ctx.obj["workspace"])
    n = lists_lib.add_values(ws, name, values)
    console.print(f"Added {n} new value{'s' if n != 1 else ''} to '{name}'.")


@lists.command()
@click.argument("name")
@click.argument("values", nargs=-1, required=True)
@click.pass_context
def remove(ctx: click.Context, name: str, values: tuple[str, ...]) -> None:
    """Remove VALUES from list NAME."""
    ws = Workspace.open(ctx.obj["workspace"])
    n = lists_lib.remove_values(ws, name, values)
    console.print(f"Removed {n} value{'s' if n != 1 else ''} from '{name}'.")


@lists.command(name="show")
@click.argument("name")
@click.pass_context
def show_list(ctx: click.Context, name: str) -> None:
    """Show list NAME: its type and values."""
    ws = Workspace.open(ctx.obj["workspace"])
    info = lists_lib.get_list(ws, name)
    table = Table(title=f"List '{info.name}' ({info.type}, {info.size:,} values)")
    table.add_column("value")
    for v in lists_lib.list_values(ws, name):
        table.add_row(v)
    console.print(table)


@lists.command(name="audit")
@click.argument("name")
@click.pass_context
def audit_list(ctx: click.Context, name: str) -> None:
    """Show who changed list NAME, when, and how."""
    ws = Workspace.open(ctx.obj["workspace"])
    table = Table(title=f"Audit trail of '{name}'")
    for col in ("at", "author", "action", "value"):
        table.add_column(col)
    for e in lists_lib.audit(ws, name):
        table.add_row(e.at[:26], e.author, e.action, e.value or "")
    console.print(table)
