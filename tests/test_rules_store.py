"""Lists with their audit trail, versioned rulesets, and the `payfm rules` / `payfm lists` commands."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.rules import lists, rulesets
from payfm.rules.compiler import Decision
from payfm.rules.limits import RuleError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rules" / "radar_basics.rules"
AT = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "ws", create=True)


def test_lists_validate_normalize_and_keep_an_audit_trail(ws: Workspace) -> None:
    lists.create_list(ws, "bad_countries", "country", author="ana", at=AT)
    assert lists.add_values(ws, "bad_countries", ["ng", "RU", "NG"], author="ana", at=AT) == 2
    assert lists.remove_values(ws, "bad_countries", ["ru", "FR"], author="bo", at=AT) == 1
    assert lists.list_values(ws, "bad_countries") == ["NG"]
    trail = [(e.author, e.action, e.value) for e in lists.audit(ws, "bad_countries")]
    assert trail == [
        ("ana", "create", "country"),
        ("ana", "add", "NG"),
        ("ana", "add", "RU"),
        ("bo", "remove", "RU"),
    ]
    assert lists.audit(ws, "bad_countries")[0].at == "2026-03-01T12:00:00.000000+00:00"
    with pytest.raises(RuleError, match=re.escape("must be an ISO 3166-1 alpha-2 country code")):
        lists.add_values(ws, "bad_countries", ["NG", "nga"])
    with pytest.raises(RuleError, match=re.escape("Got 'uk'. The United Kingdom's code is 'GB'.")):
        lists.add_values(ws, "bad_countries", ["uk"])
    assert lists.list_values(ws, "bad_countries") == ["NG"]  # the failed batch wrote nothing
    with pytest.raises(
        RuleError, match=re.escape("Unknown list 'bad_countrie'. Did you mean 'bad_countries'?")
    ):
        lists.list_values(ws, "bad_countrie")
    with pytest.raises(RuleError, match="already exists"):
        lists.create_list(ws, "bad_countries", "country")
    with pytest.raises(RuleError, match="must be one of"):
        lists.create_list(ws, "x", "phone")
    lists.create_list(ws, "ips", "ip_address")
    lists.add_values(ws, "ips", ["2001:DB8::1", "203.0.113.7"])
    assert lists.list_values(ws, "ips") == ["2001:db8::1", "203.0.113.7"]
    lists.create_list(ws, "cards", "card_fingerprint")
    with pytest.raises(RuleError) as info:
        lists.add_values(ws, "cards", ["4242424242424242"])
    assert "4242" not in str(info.value)


def test_a_version_saved_before_the_value_check_still_loads_but_new_text_is_checked(ws: Workspace) -> None:
    text = "block if :card_country: = 'UK'"
    with pytest.raises(RuleError, match="is never 'UK'"):
        rulesets.save(ws, text, activate=True)
    with pytest.raises(RuleError, match="is never 'UK'"):
        rulesets.compile_text(ws, text)  # what `rules check` and `rules backtest` compile
    saved = rulesets.save(ws, "block if :card_country: = 'GB'", activate=True)
    from payfm.rules.db import connect

    with connect(ws) as con:  # as a version saved by an older payfm would be
        con.execute("UPDATE rulesets SET text = ? WHERE version = ?", (text, saved.version))
    loaded = rulesets.load_active(ws)
    assert loaded is not None
    ok = CliRunner().invoke(cli, ["-w", str(ws.root), "rules", "backtest", "--rule", "block if :amount: > 5"])
    assert "is never 'UK'" not in ok.output  # a new rule is checked, not the saved ones it is added to
    bad = CliRunner().invoke(
        cli, ["-w", str(ws.root), "rules", "backtest", "--rule", "block if :ip_country: = 'EL'"]
    )
    assert bad.exit_code == 1 and "Greece's code is 'GR'" in bad.output
    assert loaded.decide({"card_country": "UK"}).action == "block"  # it runs as it was written
    assert loaded.decide({"card_country": "GB"}).action is None


def test_rulesets_are_versioned_checked_and_use_the_lists(ws: Workspace) -> None:
    lists.create_list(ws, "trusted", "email_domain")
    lists.add_values(ws, "trusted", ["Good.com"])
    with pytest.raises(RuleError, match=re.escape("Unknown list '@trustd'. Did you mean '@trusted'?")):
        rulesets.save(ws, "allow if :email_domain: in @trustd")
    assert rulesets.history(ws) == [] and rulesets.active(ws) is None
    with pytest.raises(RuleError, match="A ruleset's note must not contain a card number") as info:
        rulesets.save(ws, "big: block if :amount_usd: > 100", note="card 4242424242424242 again")
    assert "4242" not in str(info.value) and rulesets.history(ws) == []  # nothing stored
    v1 = rulesets.save(ws, "ok: allow if :email_domain: in @trusted", author="ana", note="one", activate=True)
    v2 = rulesets.save(ws, "big: block if :amount_usd: > 100", author="bo", note="two")
    assert (v1.version, v2.version) == (1, 2)
    assert [v.version for v in rulesets.history(ws)] == [2, 1]
    assert rulesets.active(ws) == v1  # saving without activate keeps the active version
    assert len(v2.sha256) == 64 and rulesets.get(ws, 2).text == "big: block if :amount_usd: > 100"
    live = rulesets.load_active(ws)
    assert live is not None and live.decide({"email_domain": "good.com"}) == Decision("allow", "ok")
    rulesets.activate(ws, 2)
    assert rulesets.active(ws) == v2
    with pytest.raises(RuleError, match="version 9 does not exist; the workspace has versions 1 to 2"):
        rulesets.get(ws, 9)


def test_cli_round_trip_with_clean_one_line_errors(ws: Workspace, tmp_path: Path) -> None:
    runner = CliRunner()
    w = ["--workspace", str(ws.root)]

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, [*w, *args])
        return result.exit_code, result.output

    assert run("rules", "check", str(EXAMPLE)) == (0, f"OK: 7 rules in {EXAMPLE}\n")
    bad = tmp_path / "bad.rules"
    bad.write_text("block if :amount_usd: > 1\nreview if :card.count_charge_1h: > 3\n")
    code, out = run("rules", "check", str(bad))
    assert code == 1
    assert out == (
        f"Error: {bad}: rule 'review_line_2' line 2, column 11: Unknown attribute ':card.count_charge_1h:'. "
        "Did you mean ':card.count_charges_1h:'?\n"
    )
    bad.write_text("block if :card_country: = 'UK'\nreview if :cvc_check: = 'failed'\nblock if :x: > 1\n")
    result = CliRunner().invoke(cli, [*w, "rules", "check", str(bad)])
    assert result.exit_code == 1 and result.stdout == ""
    listed = result.stderr.splitlines()  # every error, each with its file, line and column, then a summary
    assert [line.split(": rule ")[1].split(":")[0] for line in listed[:3]] == [
        "'block_line_1' line 1, column 10",
        "'review_line_2' line 2, column 11",
        "'block_line_3' line 3, column 10",
    ]
    assert listed[3] == f"Error: {bad}: 3 errors (listed above)."
    assert run("lists", "create", "doms", "--type", "email_domain")[0] == 0
    assert run("lists", "add", "doms", "a.com", "B.com") == (0, "Added 2 new values to 'doms'.\n")
    assert "b.com" in run("lists", "show", "doms")[1]
    assert run("lists", "remove", "doms", "a.com") == (0, "Removed 1 value from 'doms'.\n")
    assert "remove" in run("lists", "audit", "doms")[1]
    code, out = run("rules", "backtest")
    assert code == 1 and "Give a rules FILE to backtest, or --rule TEXT" in out and "not both" not in out
    code, out = run("rules", "show")
    assert code == 1 and "no active ruleset" in out


def test_cli_backtest_apply_history_on_a_small_world(tmp_path: Path) -> None:
    from payfm.synth import WorldConfig, generate_world

    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=5_000, days=10, seed=2)), "replace")
    rules = tmp_path / "r.rules"
    rules.write_text("big: review if :amount_usd: > 300\nvel: block if :card.count_charges_1h: > 2\n")
    runner = CliRunner()
    w = ["--workspace", str(ws.root)]
    result = runner.invoke(cli, [*w, "rules", "apply", str(rules), "--set", "tiny", "--note", "first"])
    assert result.exit_code == 0, result.output
    assert (
        "Change against no active ruleset" in result.output
        and "Saved and activated ruleset v1" in result.output
    )
    result = runner.invoke(
        cli, [*w, "rules", "backtest", "--set", "tiny", "--rule", "block if :amount_usd: > 300"]
    )
    assert result.exit_code == 0, result.output
    assert "Change against active ruleset v1" in result.output
    result = runner.invoke(cli, [*w, "rules", "history"])
    assert result.exit_code == 0 and "first" in result.output
    result = runner.invoke(cli, [*w, "rules", "show", "1"])
    assert "big: review if :amount_usd: > 300" in result.output
