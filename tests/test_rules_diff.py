"""`payfm rules diff`: what a ruleset adds, removes or changes against another, rule by rule, matched as
`rules apply` matches them when it warns of rules turned off (by name; unnamed ones by action and
condition)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.cli.rules_diff import diff_rules
from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.rules.grammar import parse_rules

ACTIVE = """big: review if :amount_usd: > 1000
block if :ip_country: = 'XX'
vel: block if :card.count_charges_1h: > 5
"""


def test_rules_are_matched_by_name_and_unnamed_ones_by_action_and_condition() -> None:
    before = parse_rules(ACTIVE)
    after = parse_rules(
        "# a comment moves every rule a line down\n"
        "block   if :ip_country:='XX'\n"  # respaced, on another line: the same rule
        "big: review if :amount_usd: > 500\n"  # named, condition changed
        "block if :ip_country: = 'YY'\n"  # unnamed, another condition: another rule
        "new: block if :card.count_declined_1h: >= 3\n"
    )
    d = diff_rules(before, after)
    assert [(a.name, b.name) for a, b in d.changed] == [("big", "big")]
    assert [r.name for r in d.added] == ["block_line_4", "new"]
    assert [r.name for r in d.removed] == ["vel"]
    assert d.same == 1
    # A value's type counts: `= 1` is not `= true`; another action on a named rule is a change.
    typed = diff_rules(
        parse_rules("block if :card.first_seen: = 1"), parse_rules("block if :card.first_seen: = true")
    )
    assert len(typed.added) == 1 and len(typed.removed) == 1 and typed.same == 0
    acted = diff_rules(
        parse_rules("big: review if :amount_usd: > 1000"), parse_rules("big: block if :amount_usd: > 1000")
    )
    assert [(a.action, b.action) for a, b in acted.changed] == [("review", "block")]


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    w = Workspace.open(tmp_path / "ws", create=True)
    rulesets.save(w, ACTIVE, activate=True, author="test")  # v1
    rulesets.save(w, ACTIVE.replace("> 5", "> 9"), activate=False, author="test")  # v2
    return w


def run(ws: Workspace, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-w", str(ws.root), "rules", "diff", *args], env={"COLUMNS": "200"})
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_cli_diffs_the_active_version_against_a_file_and_two_versions(ws: Workspace, tmp_path: Path) -> None:
    mine = tmp_path / "mine.rules"
    mine.write_text("vel: block if :card.count_charges_1h: > 5\nbig: review if :amount_usd: > 800\n")
    code, out = run(ws, str(mine))
    assert code == 0, out
    assert out.splitlines() == [
        f"v1 (active) -> '{mine}': 0 added, 1 removed, 1 changed, 1 the same.",
        "- block if :ip_country: = 'XX'",
        "~ big:",
        "    - big: review if :amount_usd: > 1000",
        "    + big: review if :amount_usd: > 800",
    ]
    code, out = run(ws, "1", "v2")
    assert (
        code == 0 and out.splitlines()[0] == "v1 (active) -> v2: 0 added, 0 removed, 1 changed, 2 the same."
    )
    assert "    + vel: block if :card.count_charges_1h: > 9" in out
    code, out = run(ws, "2", "1")
    assert "    + vel: block if :card.count_charges_1h: > 5" in out
    code, out = run(ws, "v1", "1")
    assert code == 0 and out.strip() == "v1 (active) -> v1 (active): no rule differs (3 rules the same)."


def test_cli_reads_a_file_named_like_a_version_by_its_path_and_standard_input(
    ws: Workspace, tmp_path: Path
) -> None:
    (tmp_path / "3").write_text(ACTIVE + "tor: block if :ip_country: = 'T1'\n")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code, out = run(ws, "./3")
    finally:
        os.chdir(cwd)
    assert code == 0 and "1 added, 0 removed, 0 changed, 3 the same." in out and "+ tor: block" in out
    result = CliRunner().invoke(cli, ["-w", str(ws.root), "rules", "diff", "-"], input=ACTIVE)
    assert result.exit_code == 0 and "no rule differs (3 rules the same)" in result.output


def test_cli_errors_name_the_version_or_file(ws: Workspace, tmp_path: Path) -> None:
    code, out = run(ws, "9")
    assert code == 1 and "Ruleset version 9 does not exist; the workspace has versions 1 to 2." in out
    code, out = run(ws, str(tmp_path / "missing.rules"))
    assert code == 1 and f"Cannot read rules file '{tmp_path / 'missing.rules'}'" in out
    (tmp_path / "bad.rules").write_text("big: review if :amount_usd: > 1000\nbad rule here\n")
    code, out = run(ws, str(tmp_path / "bad.rules"))
    assert code == 1 and f"{tmp_path / 'bad.rules'}: line 2, column 1: Unexpected 'bad'." in out
    empty = Workspace.open(tmp_path / "empty", create=True)
    code, out = run(empty, str(tmp_path / "bad.rules"))
    assert code == 1 and "There is no active ruleset to compare with. Give two versions or files." in out
