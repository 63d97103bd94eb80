"""`payfm rules show > current.rules` gives back a file that parses to the same rules (the documented way to
edit the active set): a rule longer than the console is not wrapped, `:name:` in a literal is not read as an
emoji code, and every line of a multi-line note is a comment (its second line was a live rule)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.rules.grammar import parse_rules

COUNTRIES = ", ".join(
    f"'{c}'"
    for c in [
        "US",
        "CA",
        "GB",
        "FR",
        "DE",
        "IT",
        "ES",
        "NL",
        "BE",
        "SE",
        "NO",
        "DK",
        "FI",
        "IE",
        "PT",
        "AT",
        "CH",
        "PL",
        "CZ",
        "GR",
        "HU",
    ]
)
TEXT = (
    f"long_rule: review if :amount_usd: > 100 and :card_country: in ({COUNTRIES})\n"
    "emoji: block if :merchant_id: = 'x:fire:y'\n"
)


def _run(ws: Workspace, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-w", str(ws.root), *args])
    return result.exit_code, result.output


def test_show_gives_back_text_that_parses_to_the_same_rules(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    f = tmp_path / "r.rules"
    f.write_text(TEXT)
    assert len(TEXT.splitlines()[0]) > 160  # wider than piped output's console
    note = "tuning\nallow if :amount_usd: > 0\n\nrelease: v2"
    code, out = _run(ws, "rules", "apply", str(f), "--note", note, "--no-backtest")
    assert code == 0, out
    code, shown = _run(ws, "rules", "show")
    assert code == 0, shown
    lines = shown.splitlines()
    # the text first, line for line (an unnamed rule is named by its line), then the version and its note
    assert lines[: len(TEXT.splitlines())] == TEXT.splitlines()
    assert lines[-4].startswith("# ruleset v1 by ") and lines[-4].endswith(": tuning")
    assert lines[-3:] == ["# allow if :amount_usd: > 0", "#", "# release: v2"]
    assert "'x:fire:y'" in shown and "\U0001f525" not in shown
    assert parse_rules(shown) == parse_rules(TEXT)  # names, actions and conditions (lines aside)
    f.write_text(shown)
    assert _run(ws, "rules", "check", str(f))[0] == 0
    active = rulesets.active(ws)
    assert active is not None and active.note == note


def test_diff_does_not_wrap_a_long_rule_or_read_emoji_codes(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    f, empty = tmp_path / "r.rules", tmp_path / "empty.rules"
    f.write_text(TEXT)
    empty.write_text("")
    code, out = _run(ws, "rules", "diff", str(empty), str(f))
    assert code == 0, out
    added = [line for line in out.splitlines() if line.startswith("+ ")]
    assert len(added) == 2 and added[0].endswith("'GR', 'HU')") and "'x:fire:y'" in added[1]
