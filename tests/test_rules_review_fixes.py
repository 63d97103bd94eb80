"""What a review of the rules engine found (2026-12-07): a carriage return inside a line hid the rule that
ran (`allow if ... #<CR>review if ...`: a terminal showed the review, the allow ran); a rules file that is
a pipe or a device was read without a limit; `lists add --file` split values at U+2028 and other separators
that a value from the command line is refused for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.rules.grammar import parse_rules
from payfm.rules.limits import MAX_TEXT_BYTES, RuleError

HIDDEN = "allow if :amount_usd: > 0 #\rreview if :amount_usd: > 5000 #\n"


def test_a_carriage_return_inside_a_line_is_refused_where_it_is() -> None:
    with pytest.raises(RuleError, match="must not contain a carriage return inside a line") as e:
        parse_rules(HIDDEN)
    assert (e.value.line, e.value.column) == (1, 28)
    assert [
        r.action for r in parse_rules("review if :amount_usd: > 5000\r\nallow if :amount_usd: < 1\r\n")
    ] == [
        "review",
        "allow",
    ]  # CRLF line ends are layout


def test_a_saved_version_holding_one_still_loads_and_is_shown_escaped(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    rulesets.save(ws, "review if :amount_usd: > 5000\n", activate=True, author="t")
    from payfm.rules.db import connect

    with connect(ws) as con:  # a version saved before the refusal
        con.execute("UPDATE rulesets SET text = ?", (HIDDEN,))
    assert [r.action for r in parse_rules(HIDDEN, saved=True)] == ["allow"]
    shown = CliRunner().invoke(cli, ["-w", str(ws.root), "rules", "show"])
    assert shown.exit_code == 0 and "#\\rreview" in shown.output and "\r" not in shown.output, repr(
        shown.output
    )


def test_a_rules_file_that_never_ends_is_refused_at_the_limit(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    script = (
        "import sys; from payfm.cli.main import cli; "
        f"sys.argv = ['payfm', '-w', {str(ws.root)!r}, 'rules', 'check', '/dev/zero']; cli()"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"A ruleset has at most {MAX_TEXT_BYTES:,} bytes. '/dev/zero' has more." in done.stderr


def test_a_list_file_is_split_at_line_ends_only(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    values = tmp_path / "v.txt"
    values.write_bytes("cus_1\r\ncus_2\u2028cus_evil\n".encode())
    assert (
        CliRunner()
        .invoke(cli, ["-w", str(ws.root), "lists", "create", "vips", "--type", "customer_id"])
        .exit_code
        == 0
    )
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "lists", "add", "vips", "--file", str(values)])
    assert r.exit_code == 1 and "line 2 of" in r.output and "U+2028" in r.output, r.output
