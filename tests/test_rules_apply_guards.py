"""`payfm rules apply` guards found by a fraud analyst's audit: a file of no rules (a truncated file, a bad
redirect) silently turned every rule off; an old text applied again made a duplicate version without a word;
an incident had no way to apply without the backtest; `rules check -` could not read standard input."""

from __future__ import annotations

from pathlib import Path

import pytest

from factories import charges
from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.rules.limits import RuleError
from test_lists_cli import run

SCORED = "high: block if :risk_score: >= 90\n"
AMOUNT = "big: review if :amount_usd: > 5000\n"


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_file_of_no_rules_is_refused_unless_allowed(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    rulesets.save(ws, AMOUNT, activate=True, set_name="tiny", author="ana")
    empty = write(tmp_path, "empty.rules", "# rules of the night shift\n\n")
    code, out = run(ws, "rules", "apply", empty, "--set", "tiny")
    assert code == 1 and f"{empty}: A ruleset to activate must hold a rule" in out
    assert "--allow-empty" in out and rulesets.active(ws).version == 1  # type: ignore[union-attr]
    code, out = run(ws, "rules", "check", empty, "--set", "tiny")
    assert code == 0 and "OK: 0 rules" in out and "warning: " in out and "would turn every rule off" in out
    code, out = run(ws, "rules", "apply", empty, "--set", "tiny", "--allow-empty", "--no-backtest")
    assert code == 0 and "Saved and activated ruleset v2" in out, out
    with pytest.raises(RuleError, match="must hold a rule"):
        rulesets.save(ws, "", activate=True, set_name="tiny", author="ana")
    assert rulesets.save(ws, "", set_name="tiny", author="ana").version == 3  # stored, not activated: fine
    # activating a stored empty version needs the flag too (found by a review: activate bypassed the guard)
    rulesets.activate(ws, 1, author="ana")
    code, out = run(ws, "rules", "activate", "3", "--no-backtest")
    assert code == 1 and "A ruleset to activate must hold a rule" in out and rulesets.active(ws).version == 1  # type: ignore[union-attr]
    code, out = run(ws, "rules", "activate", "3", "--no-backtest", "--allow-empty")
    assert code == 0 and rulesets.active(ws).version == 3  # type: ignore[union-attr]
    code, out = run(ws, "rules", "rollback", "--no-backtest")  # back to v1, a ruleset with rules
    assert code == 0 and rulesets.active(ws).version == 1, out  # type: ignore[union-attr]
    # undoing the activation of v1 restores the empty v2 it replaced (activated with --allow-empty), as it was
    code, out = run(ws, "rules", "rollback", "--no-backtest")
    assert code == 0 and rulesets.active(ws).version == 2, out  # type: ignore[union-attr]


def test_no_backtest_applies_at_once_even_when_the_active_version_reads_the_score(
    tmp_path: Path,
) -> None:
    """The active version reads :risk_score:, so its backtest needs scores; an incident has none at hand."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    rulesets.save(ws, SCORED, activate=True, set_name="tiny", author="ana")
    fix = write(tmp_path, "fix.rules", AMOUNT)
    code, out = run(ws, "rules", "apply", fix, "--set", "tiny")
    assert code == 1 and "--model" in out  # the backtest asks for scores
    code, out = run(ws, "rules", "apply", fix, "--set", "tiny", "--no-backtest", "--note", "incident 42")
    assert code == 0 and "Saved and activated ruleset v2" in out and "decision mix" not in out.lower()
    assert rulesets.active(ws).text == AMOUNT  # type: ignore[union-attr]


def test_applying_an_old_text_again_points_at_its_version(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    rulesets.save(ws, AMOUNT, activate=True, set_name="tiny", author="ana")
    rulesets.save(ws, SCORED, activate=True, set_name="tiny", author="ana")
    code, out = run(
        ws, "rules", "apply", write(tmp_path, "old.rules", AMOUNT), "--set", "tiny", "--no-backtest"
    )
    assert code == 0 and "Saved and activated ruleset v3" in out
    assert "warning: v3 has the text of v1 (same sha256 and feature set): `payfm rules activate 1`" in out


def test_rules_check_reads_standard_input(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    assert run(ws, "rules", "check", "-", "--set", "tiny", stdin=AMOUNT) == (0, "OK: 1 rule in -")
    code, out = run(ws, "rules", "check", "-", "--set", "tiny", stdin="big: review if :amount_usdd: > 1\n")
    assert code == 1 and "Did you mean ':amount_usd:'?" in out


def test_a_rule_backtest_names_the_active_rule_that_needs_scores_as_the_active_ones(tmp_path: Path) -> None:
    """The --rule typed reads no score; the error blamed 'high' without saying it is the active ruleset's."""
    from payfm.synth import WorldConfig, generate_world

    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=2_000, days=5, seed=1)), mode="replace")
    rulesets.save(ws, SCORED, activate=True, set_name="tiny", author="ana")
    code, out = run(ws, "rules", "backtest", "--rule", "x: review if :amount_usd: > 3000")
    assert code == 1
    assert (
        "Error: Rule 'high' (active ruleset v1 has it too) read :risk_score: or :risk_level:, but no" in out
    )


def test_a_ruleset_that_blocks_most_charges_is_refused_unless_on_purpose(tmp_path: Path) -> None:
    """`>= 0` for `>= 1000`: a one-character typo put a rule blocking every payment live with a warning
    among a dozen others (a fraud analyst's audit); an empty ruleset, far less harmful, was refused."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream([("charges", charges(40))], "replace")
    rulesets.save(ws, AMOUNT, activate=True, set_name="tiny", author="ana")
    oops = write(tmp_path, "oops.rules", AMOUNT + "oops: block if :amount_usd: >= 0\n")
    window = ("--set", "tiny", "--horizon-days", "1")
    code, out = run(ws, "rules", "apply", oops, *window)
    assert code == 1, out
    assert f"Ruleset '{oops}' would block 40 of the window's 40 charges (100.0%; by 'oops' 40)" in out
    assert "--allow-mass-block" in out
    assert rulesets.active(ws).version == 1 and len(rulesets.history(ws)) == 1  # type: ignore[union-attr]
    half = write(tmp_path, "half.rules", "half: block if :amount_usd: > 99999999\n")  # blocks none: fine
    code, out = run(ws, "rules", "apply", half, *window)
    assert code == 0 and "Saved and activated ruleset v2" in out, out
    # a stored version made active again is guarded too; on purpose it goes
    rulesets.save(ws, AMOUNT + "oops: block if :amount_usd: >= 0\n", set_name="tiny", author="ana")
    code, out = run(ws, "rules", "activate", "3", "--horizon-days", "1")
    assert code == 1 and "Ruleset v3 would block 40 of the window's 40 charges" in out, out
    code, out = run(ws, "rules", "activate", "3", "--horizon-days", "1", "--allow-mass-block")
    assert code == 0 and rulesets.active(ws).version == 3, out  # type: ignore[union-attr]
    # the emergency undo is never refused
    code, out = run(ws, "rules", "rollback", "--horizon-days", "1")
    assert code == 0 and rulesets.active(ws).version == 2, out  # type: ignore[union-attr]
    # a ruleset blocking most charges but fewer than the active one (a fix: 67% after 100%) goes through
    two = write(tmp_path, "two.rules", "two: block if :merchant_id: in ('mer_0', 'mer_1')\n")  # 27 of 40
    code, out = run(ws, "rules", "apply", two, *window)
    assert code == 1 and "would block 27 of the window's 40 charges (67.5%" in out, out
    assert run(ws, "rules", "activate", "3", "--horizon-days", "1", "--allow-mass-block")[0] == 0
    code, out = run(ws, "rules", "apply", two, *window)
    assert code == 0 and "Saved and activated ruleset v4" in out, out
