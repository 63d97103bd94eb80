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
        hint_code, hint = run(ws, "3")
    finally:
        os.chdir(cwd)
    assert code == 0 and "1 added, 0 removed, 0 changed, 3 the same." in out and "+ tor: block" in out
    assert hint_code == 1 and "(A file '3' exists: give it as ./3.)" in hint
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


def test_a_moved_unnamed_rule_is_the_same_and_renames_and_reorders_are_said() -> None:
    """Found by an analyst: `rules show > f && rules diff f` listed the unnamed rules as changed (show adds a
    header line, so their line-based names moved). A rule renamed is one rule; two rules of one action that
    swap places decide the same but record another rule for a charge both match."""
    before = parse_rules(
        "a: review if :amount_usd: > 10\nb: review if :amount_usd: > 20\nblock if :ip_country: = 'XX'"
    )
    after = parse_rules(
        "# header\n# another\nb: review if :amount_usd: > 20\nc: review if :amount_usd: > 10\n"
        "block if :ip_country: = 'XX'"
    )
    d = diff_rules(before, after)
    assert d.changed == [] and d.added == [] and d.removed == []
    assert [(a.name, b.name) for a, b in d.renamed] == [("a", "c")]
    # renamed and moved past b: a charge both match is now recorded as decided by b
    assert d.same == 2 and d.reordered == {"review": (["a", "b"], ["b", "c"])}
    swapped = diff_rules(
        before, parse_rules("b: review if :amount_usd: > 20\na: review if :amount_usd: > 10")
    )
    assert swapped.reordered == {"review": (["a", "b"], ["b", "a"])} and swapped.differs
    assert not diff_rules(before, parse_rules("\n\n" + "\n".join(r for r in ACTIVE.splitlines()))).changed


def test_cli_says_renames_orders_and_drafts_that_do_not_compile(ws: Workspace, tmp_path: Path) -> None:
    draft = tmp_path / "draft.rules"
    draft.write_text(
        "# draft\nvel: block if :card.count_charges_1h: > 5\nblock if :ip_country: = 'XX'\n"
        "large: review if :amount_usd: > 1000\nx: block if :amount_usdd: > 5\n"
    )
    result = CliRunner().invoke(
        cli, ["-w", str(ws.root), "rules", "diff", str(draft), "--exit-code"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    out = " ".join(result.output.split())
    assert f"v1 (active) -> '{draft}': 1 added, 0 removed, 0 changed, 1 renamed, 2 the same." in out
    assert "~ renamed big -> large (the same action and condition)" in out
    assert "~ order of the block rules: vel, block_line_3 (was block_line_2, vel)" in out
    assert "Unknown attribute ':amount_usdd:'" in out and "(`rules check` and `apply` refuse it)" in out
    same = CliRunner().invoke(cli, ["-w", str(ws.root), "rules", "diff", "1", "1", "--exit-code"])
    assert same.exit_code == 0 and "no rule differs" in same.output
    both = CliRunner().invoke(cli, ["-w", str(ws.root), "rules", "diff", "-", "-"], input=ACTIVE)
    assert both.exit_code == 1 and "Standard input (-) can be one side of the diff, not both." in both.output


def test_an_unnamed_rules_new_line_name_is_said_and_errors_exit_2_with_exit_code(
    ws: Workspace, tmp_path: Path
) -> None:
    """A review's rule and a decision's are recorded by name: an unnamed rule moved a line is the same rule
    under another name (`review list --rule block_line_2` misses it from then on): said, and a difference
    for --exit-code. An error is 2 with --exit-code (1 would read as a difference)."""
    shifted = tmp_path / "shifted.rules"
    shifted.write_text("# a comment line more\n" + ACTIVE)
    result = CliRunner().invoke(
        cli, ["-w", str(ws.root), "rules", "diff", str(shifted), "--exit-code"], env={"COLUMNS": "200"}
    )
    out = " ".join(result.output.split())
    assert result.exit_code == 1 and "0 added, 0 removed, 0 changed, 3 the same." in out
    assert "~ unnamed rules named by their new line: block_line_2 -> block_line_3" in out
    missing = CliRunner().invoke(cli, ["-w", str(ws.root), "rules", "diff", "9", "--exit-code"])
    assert missing.exit_code == 2 and "Ruleset version 9 does not exist" in missing.output


def test_check_warns_of_a_rule_with_the_action_and_condition_of_an_earlier_one(tmp_path: Path) -> None:
    """The later one never decides a charge (and a diff, matching unnamed rules by what they do, counts the
    two as one): said by `rules check`, which still passes the file."""
    dup = tmp_path / "dup.rules"
    dup.write_text("a: block if :amount_usd: > 5\nb: block if :amount_usd:>5\nreview if :amount_usd: > 5\n")
    ws = Workspace.open(tmp_path / "ws", create=True)
    result = CliRunner().invoke(cli, ["-w", str(ws.root), "rules", "check", str(dup)])
    out = " ".join(result.output.split())
    assert result.exit_code == 0 and "OK: 3 rules" in out
    assert "rule 'b' (line 2) has the action and condition of rule 'a' (line 1): it never decides" in out
    assert "review_line_3" not in out  # another action: not a twin


def test_a_copy_of_an_unnamed_rule_is_a_rule_added_and_its_removal_a_rule_removed() -> None:
    """Two unnamed rules of one action and condition were one key: a copy added (or one of two removed) read
    as no change. Each copy is its own rule, matched to the other side's in order."""
    text = "block if :ip_country: = 'XX'\nbig: review if :amount_usd: > 1000\nblock if :ip_country:='XX'"
    one, two = parse_rules(text.rsplit("\n", 1)[0]), parse_rules(text)
    added = diff_rules(one, two)
    assert [r.name for r in added.added] == ["block_line_3"] and added.removed == [] and added.same == 2
    assert added.differs
    removed = diff_rules(two, one)
    assert [r.name for r in removed.removed] == ["block_line_3"] and removed.added == []
    # the copies on other lines (a header added) are still the same rules, in order
    moved = diff_rules(two, parse_rules("# header\n" + text))
    assert moved.added == moved.removed == moved.changed == [] and moved.same == 3
    assert [(a.name, b.name) for a, b in moved.relined] == [
        ("block_line_1", "block_line_2"),
        ("block_line_3", "block_line_4"),
    ]
