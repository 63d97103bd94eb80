"""`payfm rules check` checks against the workspace's lists and feature sets. Without one at the default
place it checks without them; a workspace named by -w or PAYFM_WORKSPACE that is not there is an error (a
mistyped path passed for a check of no list, and the unknown list's hint pointed the wrong way)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace

LISTED = "allow if :email_domain: in @trusted_domains\n"


def test_a_named_workspace_that_is_not_there_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "l.rules"
    f.write_text(LISTED)
    missing = tmp_path / "typo"
    for args, env in (((("-w", str(missing))), {}), ((), {"PAYFM_WORKSPACE": str(missing)})):
        result = CliRunner().invoke(cli, [*args, "rules", "check", str(f)], env=env)
        assert result.exit_code == 1 and result.output.startswith(f"Error: No payfm workspace at '{missing}'")
        assert "Unknown list" not in result.output and "Traceback" not in result.output


def test_without_a_workspace_at_the_default_place_it_checks_without_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PAYFM_WORKSPACE", raising=False)
    f = tmp_path / "ok.rules"
    f.write_text("review if :amount_usd: > 500\n")
    assert CliRunner().invoke(cli, ["rules", "check", str(f)]).output == f"OK: 1 rule in {f}\n"
    f.write_text(LISTED)
    result = CliRunner().invoke(cli, ["rules", "check", str(f)])
    assert result.exit_code == 1 and "Unknown list '@trusted_domains'" in result.output


def test_a_named_workspace_gives_its_lists(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    f = tmp_path / "l.rules"
    f.write_text(LISTED)
    runner = CliRunner()
    created = runner.invoke(
        cli, ["-w", str(ws.root), "lists", "create", "trusted_domains", "--type", "email_domain"]
    )
    assert created.exit_code == 0, created.output
    result = runner.invoke(cli, ["-w", str(ws.root), "rules", "check", str(f)])
    assert result.exit_code == 0 and result.output == f"OK: 1 rule in {f}\n"
