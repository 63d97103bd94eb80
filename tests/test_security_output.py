"""What an attacker's audit of the session's changes found printed raw: names from a file (its columns, its
own name), paths and labels given on the command line, a malformed PostgreSQL URL's password, the author a
login name gives. Each is shown escaped (an ESC sequence, a bidi override or a line break cannot take over
the terminal or forge a line), without a full card number, and never as Rich markup."""

from __future__ import annotations

import getpass
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.cards import contains_card_number, shown_text
from payfm.events.schema import utc_time
from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.rules.limits import RuleError
from test_import import ROWS, changed, failed_import, write_csv, write_mapping

ESC = "\x1b"
PAN = "4111 1111 1111 1111"


def test_column_names_from_a_file_are_shown_escaped_in_its_errors(tmp_path: Path) -> None:
    hostile = f"shop{ESC}[31mRED\n\u202e"
    rows = dict(ROWS)
    rows[hostile] = ["s1 ", "s2", "s1", "s3"]  # a padded id: an error naming the column
    del rows["shop"]
    mapping = write_mapping(tmp_path, changed(merchant_id=hostile))
    text = failed_import(tmp_path, write_csv(tmp_path, rows), mapping)
    assert "column 'shop\\x1b[31mRED\\n\\u202e' (merchant_id)" in text
    assert ESC not in text and "\u202e" not in text


def test_a_problem_names_a_hostile_column_escaped_and_cut() -> None:
    from payfm.events.validate import Problem

    said = str(Problem(f"amt{ESC}[2J\n{'x' * 500}", 3, "a number", "'abc'"))
    assert ESC not in said and "\n" not in said and "\\x1b[2J\\n" in said and len(said) < 200


def test_shown_text_escapes_removes_card_numbers_and_cuts() -> None:
    assert shown_text(f"a{ESC}[31m\u202eb\nc {PAN}") == "a\\x1b[31m\\u202eb\\nc [card number removed]"
    assert shown_text("x" * 300, 10) == "x" * 9 + "\u2026"
    assert shown_text("plain [bold]path[/bold]") == "plain [bold]path[/bold]"  # markup is the printer's job


def test_import_success_and_against_labels_show_file_names_safely(tmp_path: Path) -> None:
    from payfm.synth import WorldConfig, generate_world

    src = write_csv(tmp_path, dict(ROWS))
    named = tmp_path / f"[bold red]card {PAN}.csv"
    shutil.copy(src, named)
    ws = tmp_path / "ws"
    r = CliRunner().invoke(
        cli, ["-w", str(ws), "import", str(named), "--mapping", str(write_mapping(tmp_path))]
    )
    assert r.exit_code == 0, r.output
    assert "[bold red]card [card number removed].csv" in r.output  # literal, no card number
    assert not contains_card_number(r.output) and "Traceback" not in r.output

    w = Workspace.open(tmp_path / "world", create=True)
    w.write_stream(generate_world(WorldConfig(charges=2_000, days=5, seed=1)), "replace")
    rules = tmp_path / "r.rules"
    rules.write_text("block if :amount_usd: > 900\n")
    old = tmp_path / f"old {PAN}{ESC}[2J.rules"
    old.write_text("block if :amount_usd: > 500\n")
    args = ["-w", str(w.root), "rules", "backtest", str(rules), "--against", str(old), "--horizon-days", "2"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "Change against file '" in r.output and "[card number removed]\\x1b[2J.rules'" in r.output
    assert ESC not in r.output and not contains_card_number(r.output)


def test_a_malformed_postgresql_url_is_one_error_without_its_password() -> None:
    pytest.importorskip("psycopg")
    from payfm.serving.postgres_log import PostgresDecisionLog

    for url in ("postgresql://user:secretpass@[::1/x", "postgresql://user:secretpass@127.0.0.1:1/x?foo=bar"):
        with pytest.raises(ConfigError) as e:
            PostgresDecisionLog(url)
        assert "secretpass" not in str(e.value) and "is not valid" in str(e.value)


def test_a_time_past_pythons_utc_range_is_a_value_error_not_an_overflow(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside the times Python represents in UTC"):
        utc_time("0001-01-01T00:00:00+01:00")
    r = CliRunner().invoke(cli, ["-w", str(tmp_path), "evaluate", "--from", "0001-01-01T00:00:00+01:00"])
    assert r.exit_code != 0 and "Traceback" not in r.output and "OverflowError" not in r.output


def test_the_login_name_as_author_is_stored_escaped_and_without_a_card_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from payfm.rules import lists

    ws = Workspace.open(tmp_path, create=True)
    rulesets.save(ws, "block if :amount_usd: > 100", activate=True, author="ana")
    monkeypatch.setattr(getpass, "getuser", lambda: f"ana {PAN}{ESC}[2J")
    v = rulesets.save(ws, "block if :amount_usd: > 200", activate=True)
    assert v.author == "ana [card number removed]\\x1b[2J" == rulesets.activations(ws)[0].author
    lists.create_list(ws, "bad", "email_domain")
    assert lists.get_list(ws, "bad").author == v.author
    with pytest.raises(RuleError, match="must not contain a card number"):  # one given is refused, as before
        rulesets.activate(ws, 1, author=f"bo {PAN}")


def test_blank_letters_between_groups_still_make_a_card_number() -> None:
    for blank in ("\u2800", "\u3164", "\u115f", "\u1160", "\uffa0"):
        assert contains_card_number(blank.join(PAN.split())), repr(blank)


def test_names_keep_their_joiners_and_paths_are_shown_whole() -> None:
    from payfm.cli.render import shown_path

    persian = "\u0634\u0646\u0627\u0633\u0647\u200c\u0641\u0631\u0648\u0634\u06af\u0627\u0647"  # with a ZWNJ
    assert shown_text(persian) == persian
    deep = "/work/" + "/".join(f"level-{i:02d}" for i in range(40)) + "/ws/features/tiny-1a2b.parquet"
    assert len(deep) > 300 and shown_path(deep) == deep  # a cut path names no file


def test_a_password_with_a_slash_or_an_at_sign_is_masked_whole() -> None:
    from payfm.errors import shown_url

    assert shown_url("postgresql://user:Ab3/xYz9+Qw==@127.0.0.1:1/x?foo=bar") == (
        "postgresql://user:***@127.0.0.1:1/x?foo=bar"
    )
    assert "hunter" not in shown_url("postgresql://user:hunter2@very@127.0.0.1/x")
    pytest.importorskip("psycopg")
    from payfm.serving.postgres_log import PostgresDecisionLog

    with pytest.raises(ConfigError) as e:
        PostgresDecisionLog("postgresql://user:Ab3/xYz9+Qw==@127.0.0.1:1/x?foo=bar")
    assert "xYz9" not in str(e.value) and "Ab3" not in str(e.value)


def test_an_out_of_range_time_says_so(tmp_path: Path) -> None:
    Workspace.open(tmp_path, create=True)
    r = CliRunner().invoke(cli, ["-w", str(tmp_path), "evaluate", "--from", "0001-01-01T00:30:00+01:00"])
    assert "must be a time Python can represent in UTC" in r.output, r.output


def test_a_path_keeps_its_epochs_and_loses_its_card_numbers() -> None:
    from payfm.cli.render import shown_path

    epoch = "1764957808124"  # a millisecond epoch that passes Luhn, as one in ten do: 13 digits from a 1
    assert not contains_card_number(epoch)  # no card number starts with 1 unless it has 15 digits
    stamp = "20261205143005"  # a date stamp that passes Luhn
    assert contains_card_number(stamp)
    assert shown_path(f"runs/{stamp}/ws") == f"runs/{stamp}/ws"
    # (its brackets escaped for Rich markup: printed, it reads "[card number removed]")
    assert shown_path(f"runs/{stamp}/4111111111111111") == f"runs/{stamp}/\\[card number removed]"
    assert shown_path("reports/20261205T182328Z") == "reports/20261205T182328Z"
