"""`payfm rules`: rulesets, their history and backtests (`payfm lists`: payfm.cli.lists).

Thin: parse options, call payfm.rules, render with rich.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import click
import pyarrow.parquet as pq
from click.core import ParameterSource
from rich.table import Table
from rich.text import Text

from payfm.cli.options import DAYS
from payfm.cli.render import console, ending_path, err_console, plural
from payfm.cli.rules_diff import diff, meaning
from payfm.cli.rules_guard import (
    MASS_BLOCK_OPTION,
    refuse_mass_decisions,
    say_removed,
    without_a_model,
)
from payfm.cli.rules_report import MATCHES_SHOWN, print_matches, print_report, warn
from payfm.cli.rules_views import Views, print_views, requested, view_options
from payfm.errors import ConfigError, WorkspaceError
from payfm.events.cards import shown_text
from payfm.events.outputs import output_file
from payfm.events.schema import iso_got
from payfm.events.text import escaped
from payfm.events.workspace import Workspace
from payfm.features.catalog import FEATURE_SETS, feature_set
from payfm.registry.store import ModelVersion, Registry, newest
from payfm.rules import ast, rulesets
from payfm.rules.backtest import BacktestReport, backtest
from payfm.rules.backtest_views import Period
from payfm.rules.catalog import SCORE_ATTRIBUTES
from payfm.rules.compiler import Ruleset
from payfm.rules.limits import MAX_TEXT_BYTES, RuleError, check_note
from payfm.training.labels import DEFAULT_HORIZON

SET_OPTION = click.option(
    "--set",
    "set_name",
    default=rulesets.DEFAULT_FEATURE_SET,
    show_default=True,
    help=f"Feature set whose features rules may read ({', '.join(sorted(FEATURE_SETS))}, or one this "
    "workspace defines).",
)


def _read(path: str) -> str:
    if path == "-":  # standard input: `generate-rules | payfm rules check -`
        data = sys.stdin.buffer.read(MAX_TEXT_BYTES + 1)
        if len(data) > MAX_TEXT_BYTES:
            raise RuleError(f"A ruleset has at most {MAX_TEXT_BYTES:,} bytes. Standard input has more.")
        return rulesets.decode_text(data, "<stdin>")
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise RuleError(f"A ruleset has at most {MAX_TEXT_BYTES:,} bytes. '{path}' has {size:,}.")
        with p.open("rb") as f:  # (a pipe or a device says size 0: read no more than the limit allows)
            data = f.read(MAX_TEXT_BYTES + 1)
        if len(data) > MAX_TEXT_BYTES:
            raise RuleError(f"A ruleset has at most {MAX_TEXT_BYTES:,} bytes. '{path}' has more.")
    except OSError as e:
        raise ConfigError(f"Cannot read rules file '{path}': {e}") from None
    return rulesets.decode_text(data, path)


@contextmanager
def _named(file: str) -> Iterator[None]:
    """A RuleError in the text of the rules FILE names it, as `rules check` lists type errors:
    `bad.rules: rule 'b' line 3, column 14: ...` (a --rule text has no file; its rule is 'candidate')."""
    try:
        yield
    except RuleError as e:
        raise e.prefixed(f"{file}: ") from None


def _day(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
    except ValueError as e:
        raise ConfigError(f"The '{name}' date must be YYYY-MM-DD. {iso_got(value, e)}") from None


@click.group()
def rules() -> None:
    """Radar-style rules: check, backtest on history, apply as a new ruleset version."""


@rules.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@SET_OPTION
@click.pass_context
def check(ctx: click.Context, file: str, set_name: str) -> None:
    """Parse and type check a rules file (attributes, types, lists).

    \b
    Example:
      payfm rules check examples/rules/radar_basics.rules
    """
    ws = _maybe_workspace(ctx)
    text = _read(file)
    with _named(file):
        found, errors = rulesets.type_errors(ws, text, set_name)  # a syntax error stops the parse: one
        if len(errors) == 1:
            raise errors[0]
    if errors:
        for e in errors:
            err_console.print(f"{file}: {e}", highlight=False, markup=False, soft_wrap=True)
        raise ConfigError(f"{file}: {plural(len(errors), 'error')} (listed above).")
    console.print(f"OK: {plural(len(found), 'rule')} in {file}", markup=False, highlight=False)
    if not found:
        warn(f"{file} holds no rule: made active, it would turn every rule off (apply needs --allow-empty).")
    first: dict[object, ast.Rule] = {}
    for r in found:  # the same action and condition twice: the later rule never decides a charge
        twin = first.setdefault(meaning(r), r)
        if twin is not r:
            warn(
                f"{file}: rule '{shown_text(r.name)}' (line {r.line}) has the action and condition of rule "
                f"'{shown_text(twin.name)}' (line {twin.line}): it never decides a charge. Remove one."
            )


def _maybe_workspace(ctx: click.Context) -> Workspace | None:
    """The workspace to check against; None (check without its lists: an `@list` is then unknown) when
    there is none at the default place. One named by -w or PAYFM_WORKSPACE that is not there is an error:
    a mistyped path must not pass for a check of no list."""
    try:
        return Workspace.open(ctx.obj["workspace"])
    except WorkspaceError:
        if ctx.find_root().get_parameter_source("workspace") is not ParameterSource.DEFAULT:
            raise
        return None


def _active_baseline(ws: Workspace) -> rulesets.Baseline:
    """The active ruleset as a backtest's baseline. One that no longer compiles (a list or a feature set it
    reads is gone) is said in a warning, and the change is counted against no ruleset: `apply`, `activate`
    and `rollback` are how an analyst replaces it, so they must not be refused for it."""
    try:
        return rulesets.baseline(ws)
    except RuleError as e:
        current = rulesets.active(ws)
        version = current.version if current is not None else None
        warn(
            f"the active ruleset cannot be the baseline: {e} The change is counted against no ruleset "
            "(everything authorized)."
        )
        return rulesets.Baseline(
            None, rulesets.DEFAULT_FEATURE_SET, f"no ruleset (active v{version} no longer compiles)", version
        )


def _run_backtest(
    ws: Workspace,
    candidate: Ruleset,
    set_name: str,
    start: str | None,
    end: str | None,
    scores: str | None,
    model_ref: str | None,
    horizon_days: float | None,
    base: rulesets.Baseline | None = None,
    as_of: str | None = None,
    matches: str | None = None,
    views: Views | None = None,
) -> tuple[BacktestReport, str]:
    """Backtest ``candidate`` (on ``set_name``) against ``base`` (default: the active ruleset); returns the
    report and the baseline's label."""
    if scores is not None and model_ref is not None:
        raise ConfigError("Give --scores or --model, not both.")
    # a stored version runs on the set it was saved with, as the decision service runs it (a feature of one
    # name may differ); a file baseline on the command's --set
    base = base if base is not None else _active_baseline(ws)
    label, baseline_fset = base.label, None
    if base.ruleset is not None:
        baseline_fset = feature_set(base.feature_set, ws.root)
        if base.feature_set != set_name:
            label += f" (on its feature set '{base.feature_set}')"
    first, until = _day(start, "--from"), _day(end, "--to")
    table = None
    source = "the scores table"
    if scores is not None:
        source = f"the scores file '{scores}'"
        if not Path(scores).is_file():
            raise ConfigError(f"The scores file '{scores}' does not exist.")
        try:
            table = pq.read_table(scores)
        except (OSError, ValueError) as e:
            raise ConfigError(f"Cannot read the scores file '{scores}' as Parquet: {e}") from None
    no_model = False  # the rules read the score, none was given, and no model is in production
    if scores is None and model_ref is None:  # rules reading the score: the decision service's model
        reads = candidate.attributes() | (base.ruleset.attributes() if base.ruleset is not None else set())
        production = _production_model(ws) if reads & set(SCORE_ATTRIBUTES) else None
        no_model = production is None and bool(reads & set(SCORE_ATTRIBUTES))
        if production is not None:
            model_ref = production.ref
            console.print(
                f"Scores: the production model {model_ref}, as the decision service scores (--model or "
                "--scores to choose others).",
                markup=False,
                highlight=False,
            )
    if model_ref is not None:  # the backtest scores the window with it (an in-sample window: a warning)
        source = f"model {model_ref}"
    with without_a_model(no_model):
        report = backtest(
            ws,
            candidate,
            feature_set(set_name, ws.root),
            baseline=base.ruleset,
            baseline_fset=baseline_fset,
            scores=table,
            start=first,
            end=until,
            horizon=timedelta(days=horizon_days) if horizon_days is not None else DEFAULT_HORIZON,
            scores_source=source,
            baseline_name=base.label[:1].upper() + base.label[1:],
            model=model_ref,
            as_of=as_of,
            matches=matches,
            by=views.series_by if views else None,
            overlap=bool(views and views.with_overlap),
        )
    return report, label


def _version(value: str) -> int | None:
    """The version number ``value`` names (``3`` or ``v3``), None when it names none."""
    m = re.fullmatch(r"[vV]?([0-9]+)", value.strip())
    return int(m.group(1)) if m else None


def _number(version: str) -> int:
    """The VERSION argument of `activate` and `show` as a number; a one-line error when it names none."""
    number = _version(version)
    if number is None:
        raise ConfigError(f"VERSION must be a ruleset version number (3 or v3). Got '{shown_text(version)}'.")
    return number


def _against(ws: Workspace, against: str, set_name: str) -> rulesets.Baseline:
    """The baseline --against names: a stored version (on its own feature set) or a rules file (on --set)."""
    number = _version(against)
    if number is not None:
        return rulesets.baseline(ws, number)
    if not Path(against).exists():
        raise ConfigError(
            "--against takes a stored ruleset version (a number: 3 or v3) or a rules file. Got "
            f"'{shown_text(against)}', which is neither (no such file)."
        )
    text = _read(against)
    with _named(against):
        ruleset = rulesets.compile_text(ws, text, set_name)
    return rulesets.Baseline(ruleset, set_name, f"file '{shown_text(against, limit=4096, times=True)}'")


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
        "service gives them), instead of --scores. Warns when the window overlaps the model's training or "
        "validation period. [default: the production model, when the rules read :risk_score: or "
        ":risk_level: and no --scores is given]",
    ),
    click.option(
        "--horizon-days",
        type=DAYS,
        default=None,
        help=f"Label horizon: a charge's label is final (fraud, refunded, legit) once this many days have "
        f"passed by the log's end; later charges count as pending. [default: {DEFAULT_HORIZON.days}]",
    ),
    click.option(
        "--as-of",
        "as_of",
        metavar="TIME",
        help="Read the labels as known at TIME (YYYY-MM-DD or an ISO time, UTC) instead of the log's latest "
        "event: an export of past charges with outcomes written since (a review closed today) reads every "
        "label final otherwise.",
    ),
]


def _window(f: click.decorators.FC) -> click.decorators.FC:
    for opt in reversed(WINDOW):
        f = opt(f)
    return f


@rules.command(name="backtest")
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--rule",
    "rule_texts",
    multiple=True,
    help="A candidate rule, tested added to the active ruleset, on the active version's feature set; "
    "repeat it for several (added in the order given: a block rule and its review fallback).",
)
@click.option(
    "--against",
    metavar="VERSION_OR_FILE",
    help="Compare FILE with this baseline instead of the active ruleset: a stored version (3 or v3, on the "
    "feature set it was saved with) or another rules file (on --set). Not with --rule.",
)
@click.option(
    "--matches",
    metavar="RULE",
    help="Also list the charges RULE matched (a rule of the backtested ruleset: FILE's, or the active one's "
    "plus --rule): legitimate and refunded ones first (false positives), with the values the rule read; "
    f"the first {MATCHES_SHOWN} on screen.",
)
@click.option(
    "--matches-out",
    metavar="FILE.csv",
    type=click.Path(dir_okay=False),
    callback=ending_path(".csv"),
    help="Write every charge --matches lists to this CSV file, outside the workspace's folders (replaced "
    "whole, never half-written; missing folders are made).",
)
@view_options
@_window
@SET_OPTION
@click.pass_context
def backtest_cmd(
    ctx: click.Context,
    file: str | None,
    rule_texts: tuple[str, ...],
    against: str | None,
    start: str | None,
    end: str | None,
    scores: str | None,
    model_ref: str | None,
    horizon_days: float | None,
    as_of: str | None,
    set_name: str,
    matches: str | None,
    matches_out: str | None,
    by: Period | None,
    rule_detail: bool,
    overlap: bool,
    json_out: str | None,
) -> None:
    """Replay a ruleset FILE, or --rule texts added to the active ruleset, over past charges.

    The active ruleset (the baseline) runs on the feature set it was saved with; so does a --rule added to
    it (--set, if given, must be that set). --against compares FILE with a stored version or another file
    instead (a number is a version: write ./3 for a file named 3).

    \b
    Examples:
      payfm rules backtest examples/rules/radar_basics.rules --horizon-days 30
      payfm rules backtest new.rules --against 2              # baseline: ruleset v2 (`rules history`)
      payfm rules backtest new.rules --against old.rules      # baseline: another file
      payfm rules backtest --rule "block if :card.count_charges_1h: > 5" --from 2026-01-10
      payfm rules backtest --rule "block if :risk_score: >= 80" --model fraud-gbdt --from 2026-03-01 \\
        --horizon-days 30                             # labels final 30 days on (the log's last month)
      payfm rules backtest --rule "block if :risk_score: >= 90" --rule "review if :risk_score: >= 70" \\
        --model fraud-gbdt --from 2026-03-01 --horizon-days 30   # a block rule and its review fallback
      payfm rules backtest --rule "vel: block if :card.count_charges_1h: >= 4" --from 2026-03-01 \\
        --horizon-days 30 --matches vel --matches-out vel.csv    # what it matched, false positives first
      payfm rules backtest new.rules --by week --rule-detail --overlap --json report.json
    """
    if matches_out is not None and matches is None:
        raise ConfigError("--matches-out writes the charges --matches lists: give --matches RULE too.")
    if matches_out is not None:  # before the backtest, not after it (missing folders are made on writing)
        output_file(matches_out, "--matches-out", workspace=ctx.obj["workspace"])
    views = requested(ctx.obj["workspace"], by, rule_detail, overlap, json_out)  # (--json checked: before)
    rule_text = rule_texts or None
    if file is not None and rule_text is not None:
        raise ConfigError("Give either a rules FILE or --rule TEXT, not both.")
    if file is None and rule_text is None:
        raise ConfigError(
            "Give a rules FILE to backtest, or --rule TEXT (rules beside the active ones; repeatable)."
        )
    if rule_text is not None and against is not None:
        raise ConfigError(
            "--against sets the baseline of a rules FILE; a --rule joins the active ruleset, which is its "
            "baseline. Expected a FILE with --against, or --rule without it. Got --rule and --against "
            f"{against}."
        )
    ws = Workspace.open(ctx.obj["workspace"])
    if rule_text is not None:
        # on the active version's set, which it joins; --set given must be that set (a one-line error)
        given = ctx.get_parameter_source("set_name") is not click.core.ParameterSource.DEFAULT
        set_name = rulesets.candidate_set(ws, set_name if given else None)
        # the new rule gets every check, located in its own text; the saved ones load as saved
        candidate = rulesets.with_candidate(ws, rule_text, set_name)
    else:
        assert file is not None
        text = _read(file)
        with _named(file):
            candidate = rulesets.compile_text(ws, text, set_name)
    base = _against(ws, against, set_name) if against is not None else None
    report, label = _run_backtest(
        ws, candidate, set_name, start, end, scores, model_ref, horizon_days, base, as_of, matches, views
    )
    # (the only-columns with --overlap only: --json alone computes the overlap for the file, not the table)
    print_report(report if views.overlap else replace(report, overlap=None), label)
    print_views(report, views)
    if matches is not None and report.matched is not None:
        print_matches(report.matched, matches, Path(matches_out) if matches_out else None)


@rules.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--note", default="", help="Why this version (kept in the history).")
@click.option(
    "--no-backtest",
    is_flag=True,
    help="Save and activate at once, without the backtest (an incident: no scores at hand for a version "
    "reading :risk_score:).",
)
@click.option(
    "--allow-empty", is_flag=True, help="Accept a file of no rules: it turns every rule off, on purpose."
)
@MASS_BLOCK_OPTION
@_window
@SET_OPTION
@click.pass_context
def apply(
    ctx: click.Context,
    file: str,
    note: str,
    no_backtest: bool,
    allow_empty: bool,
    allow_mass_block: bool,
    start: str | None,
    end: str | None,
    scores: str | None,
    model_ref: str | None,
    horizon_days: float | None,
    as_of: str | None,
    set_name: str,
) -> None:
    """Backtest FILE against the active ruleset, print the change, then save it and make it active."""
    text = _read(file)
    check_note(note)  # before the backtest, which may take a while
    ws = Workspace.open(ctx.obj["workspace"])
    with _named(file):
        candidate = rulesets.compile_text(ws, text, set_name)
    if not allow_empty:  # (said before the backtest, which may take a while)
        with _named(file):
            rulesets.require_rules(candidate.rules)
    base = _active_baseline(ws)
    if not no_backtest:
        report, label = _run_backtest(
            ws, candidate, set_name, start, end, scores, model_ref, horizon_days, base, as_of
        )
        print_report(report, label)
        if not allow_mass_block:
            refuse_mass_decisions(report, f"'{file}'")
    say_removed(base, candidate, f"'{file}'")
    with _named(file):  # (checked again at save: a list it reads may have gone meanwhile)
        v = rulesets.save(
            ws,
            text,
            note=note,
            activate=True,
            set_name=set_name,
            replacing=base.version,
            allow_empty=allow_empty,
        )
    console.print(f"Saved and activated ruleset v{v.version} (sha256 {v.sha256[:12]}).")
    if same := rulesets.same_text(ws, v):
        warn(
            f"v{v.version} has the text of v{same[-1]} (same sha256 and feature set): `payfm rules activate "
            f"{same[-1]}` switches to it without a new version."
        )
    _reload_hint(ws, v, base.version)


def _reload_hint(ws: Workspace, v: rulesets.RulesetVersion, replaced: int | None) -> None:
    """What a running decision service does about a new active version (docs/serving.md, "Safe change"):
    it serves it after a reload, unless the production model runs on another feature set (then it refuses
    it, at a reload and at a start, until the two share one) or, without a model, the version it replaced
    ran on another set (the service's online state is of that set: a restart)."""
    model = _production_model(ws)
    before = rulesets.get(ws, replaced).feature_set if replaced is not None else None
    if model is None and before is not None and before != v.feature_set:
        warn(
            f"ruleset v{v.version} runs on feature set '{v.feature_set}', the version it replaced on "
            f"'{before}': a running decision service without a model keeps its online state of '{before}' "
            "and does not serve the change (it says so in /healthz; POST /v1/admin/reload answers 409): "
            "restart it to serve the new version."
        )
        return
    if model is not None and model.feature_set != v.feature_set:
        warn(
            f"the production model {model.ref} runs on feature set '{model.feature_set}', and ruleset "
            f"v{v.version} on '{v.feature_set}': a decision service does not serve it (it says so in "
            f"/healthz; 409 on POST /v1/admin/reload; it does not start) until they share one. Activate a "
            f"version on "
            f"'{model.feature_set}' (`payfm rules activate VERSION`), or promote a model trained on "
            f"'{v.feature_set}'."
        )
        return
    console.print(
        f"A running decision service (`payfm serve`) serves v{v.version} within a second (it follows the "
        "workspace); one started with --no-follow keeps the ruleset it loaded until `POST /v1/admin/reload`.",
        markup=False,
        highlight=False,
    )


def _production_model(ws: Workspace) -> ModelVersion | None:
    """The production model the decision service decides with (the newest, as it picks), if any."""
    if not (ws.root / "models").exists():
        return None
    return newest(m for m in Registry(ws).list() if m.stage == "production")


def _activated(ws: Workspace, what: str, v: rulesets.RulesetVersion, replaced: int | None) -> None:
    was = f"replacing v{replaced}" if replaced is not None else "no ruleset was active"
    console.print(
        f"{what} ruleset v{v.version} (sha256 {v.sha256[:12]}, feature set '{v.feature_set}'); {was}.",
        markup=False,
        highlight=False,
    )
    _reload_hint(ws, v, replaced)


_WINDOW_OPTIONS = {
    "start": "--from",
    "end": "--to",
    "scores": "--scores",
    "model_ref": "--model",
    "horizon_days": "--horizon-days",
    "as_of": "--as-of",
}


def _compared(
    ctx: click.Context,
    ws: Workspace,
    candidate: Ruleset,
    set_name: str,
    no_backtest: bool,
    p: dict[str, Any],
    guarded: str | None = None,
) -> int | None:
    """Backtest ``candidate`` against the active version over the window options ``p`` and print the change
    (unless ``no_backtest``); return the active version it was compared with (None: none), which the switch
    then expects. ``guarded``: the version's name, refused when it blocks most charges
    (:func:`payfm.cli.rules_guard.refuse_mass_decisions`)."""
    if no_backtest:
        given = [option for name, option in _WINDOW_OPTIONS.items() if p.get(name) is not None]
        if given:
            raise ConfigError(f"--no-backtest takes no backtest window. Got {', '.join(given)}.")
        with contextlib.suppress(
            RuleError
        ):  # (an active version that no longer compiles: nothing to compare)
            say_removed(rulesets.baseline(ws), candidate, "The version made active")
        current = rulesets.active(ws)
        return current.version if current is not None else None
    base = _active_baseline(ws)
    say_removed(base, candidate, "The version made active")
    report, label = _run_backtest(
        ws,
        candidate,
        set_name,
        p["start"],
        p["end"],
        p["scores"],
        p["model_ref"],
        p["horizon_days"],
        base,
        p["as_of"],
    )
    print_report(report, label)
    if guarded is not None:
        refuse_mass_decisions(report, guarded)
    return base.version


def _switching(f: click.decorators.FC) -> click.decorators.FC:
    """The options of a command that switches the active version (`activate`, `rollback`): --note,
    --no-backtest and the backtest's window."""
    for opt in reversed(_SWITCH_OPTIONS):
        f = opt(f)
    return _window(f)


_SWITCH_OPTIONS = [
    click.option("--note", default="", help="Why (kept in the activation log, `payfm rules history`)."),
    click.option(
        "--no-backtest",
        is_flag=True,
        help="Switch at once, without the backtest (an incident: a version reading :risk_score: needs scores "
        "to be backtested). The activation log records it alike.",
    ),
]


@rules.command(name="activate")
@click.argument("version")
@click.option(
    "--allow-empty", is_flag=True, help="Accept a version of no rules: it turns every rule off, on purpose."
)
@MASS_BLOCK_OPTION
@_switching
@click.pass_context
def activate_cmd(
    ctx: click.Context,
    /,
    version: str,
    note: str,
    no_backtest: bool,
    allow_empty: bool,
    allow_mass_block: bool,
    **window: Any,
) -> None:
    """Backtest stored VERSION against the active ruleset, print the change, then make it active.

    VERSION (3 or v3; `payfm rules history` lists them) runs on the feature set it was saved with. It is
    refused when it is already active or no longer compiles (a list it uses or a feature it reads is gone).
    The activation log records who, when, the version replaced and --note.

    \b
    Example:
      payfm rules activate 2 --note "v3 blocks too many good customers" --from 2026-02-01
    """
    number = _number(version)
    check_note(note)  # before the backtest, which may take a while
    ws = Workspace.open(ctx.obj["workspace"])
    v, candidate = rulesets.activatable(ws, number, allow_empty)
    guarded = None if allow_mass_block else f"v{v.version}"
    replacing = _compared(ctx, ws, candidate, v.feature_set, no_backtest, window, guarded)
    v = rulesets.activate(ws, v.version, note=note, replacing=replacing, allow_empty=allow_empty)
    _activated(ws, "Activated", v, replacing)


@rules.command(name="rollback")
@_switching
@click.pass_context
def rollback_cmd(ctx: click.Context, /, note: str, no_backtest: bool, **window: Any) -> None:
    """Undo the last activation: backtest the version active before it, print the change, make it active.

    Rollbacks walk back through the activation log like an editor's undo: after v1, v2, v3 were made
    active, `rollback` makes v2 active, a second one v1, and a third is refused (nothing before v1). An
    activation made after a rollback is undone first; a rollback is never undone by another (make a
    version active by number: `payfm rules activate VERSION`).

    \b
    Example:
      payfm rules rollback --note "v4 blocks a merchant's whole traffic"
    """
    check_note(note)
    ws = Workspace.open(ctx.obj["workspace"])
    point = rulesets.rollback_point(ws)
    assert point.previous is not None  # rollback_point refuses an activation without one
    v, candidate = rulesets.activatable(ws, point.previous, allow_empty=True)
    console.print(
        f"Rolling back activation #{point.id} ({point.at[:19]}, by {escaped(point.author)}): "
        f"v{point.version} -> v{v.version}",
        markup=False,
        highlight=False,
    )
    replacing = _compared(ctx, ws, candidate, v.feature_set, no_backtest, window)
    v = rulesets.rollback(ws, note=note, to=v.version, undoing=point.id)
    _activated(ws, "Rolled back to", v, replacing)


@rules.command()
@click.pass_context
def history(ctx: click.Context) -> None:
    """List every ruleset version, then every activation (the activation log), newest first.

    An activation says when, by whom and how (apply, activate, rollback of #N) a version was made active,
    the version it replaced and its note; "rolled back by #N" marks one a rollback undid. `payfm rules
    rollback` undoes the newest activation neither a rollback nor rolled back.

    \b
    Example:
      payfm rules history
    """
    ws = Workspace.open(ctx.obj["workspace"])
    current = rulesets.active(ws)
    table = Table(title="Ruleset versions")
    for col in ("version", "active", "created", "author", "rules", "sha256", "note"):
        table.add_column(col)
    for v in rulesets.history(ws):
        n = len([ln for ln in v.text.splitlines() if ln.strip() and not ln.strip().startswith("#")])
        is_active = "*" if current and current.version == v.version else ""
        author, note = Text(escaped(v.author)), Text(escaped(v.note, keep="\t\n"))
        table.add_row(str(v.version), is_active, v.created[:19], author, str(n), v.sha256[:12], note)
    console.print(table)
    log = rulesets.activations(ws)
    if not log:
        before = f": v{current.version} was made active before activations were logged" if current else ""
        console.print(f"No activation recorded{before}.", markup=False, highlight=False)
        return
    acts = Table(title="Activations, newest first")
    for col in ("#", "at", "author", "version", "previous", "how", "note"):
        acts.add_column(col)
    for a in log:
        how = f"rollback of #{a.rollback_of}" if a.rollback_of is not None else a.action
        if a.undone_by is not None:
            how += f", rolled back by #{a.undone_by}"
        previous = str(a.previous) if a.previous is not None else "-"
        author, note = Text(escaped(a.author)), Text(escaped(a.note, keep="\t\n"))
        acts.add_row(str(a.id), a.at[:19], author, str(a.version), previous, how, note)
    console.print(acts)


@rules.command()
@click.argument("version", required=False)
@click.pass_context
def show(ctx: click.Context, version: str | None) -> None:
    """Print a ruleset version's text: VERSION (3 or v3), by default the active one; then its version,
    author, time and note as `#` comments (after the text: every rule keeps its line)."""
    number = _number(version) if version is not None else None
    ws = Workspace.open(ctx.obj["workspace"])
    v = rulesets.get(ws, number) if number is not None else rulesets.active(ws)
    if v is None:
        raise RuleError("There is no active ruleset yet. Save one with `payfm rules apply FILE`.")
    # Escaped: a version saved before invisible formatting characters were refused must not reorder what
    # the reader is shown (Trojan Source); its line breaks and tabs are layout.
    # Written as it is, not through Rich: `show > current.rules` must give back a file that parses, so no
    # wrapping at the console's width, no `:emoji:` codes read in a literal, and each line of a note
    # commented (its second line would otherwise be a rule). The header comes after the text: before it, it
    # would move every rule down, and an unnamed rule is named by its line (block_line_3).
    note, author = escaped(v.note, keep="\t\n"), escaped(v.author)
    header = f"ruleset v{v.version} by {author} at {v.created[:19]}: {note}"
    click.echo(escaped(v.text.replace("\r\n", "\n"), keep="\t\n"))  # (a lone CR shown escaped: \r)
    click.echo("\n".join(f"# {line}".rstrip() for line in header.split("\n")))


rules.add_command(diff)
