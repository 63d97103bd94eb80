# ruff: noqa: F811 (the tests take the imported `hand_ws` fixture as an argument)
"""Fixes from a review of the rules engine: an --as-of after the log's last event, attribute suggestions in
another case, `rules show`'s header after the text, glued keywords before a ':', thousands separators in
`in (...)`, and two saves at once."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from factories import T0
from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.rules import ast, rulesets
from payfm.rules.backtest import backtest
from payfm.rules.catalog import AttributeCatalog, type_errors
from payfm.rules.grammar import parse_rule, parse_rules
from payfm.rules.limits import RuleError
from test_rules_backtest import FSET, NEW, compile_, hand_ws  # noqa: F401 (hand_ws: the module's fixture)

# hand_ws: 10 charges 7 h apart from T0; its last event is an outcome at T0 + 10 days. With an 8-day horizon,
# the charges after T0 + 2 days (3 of them) are pending at the log's end.
H = timedelta(days=8)
LATE = T0 + timedelta(days=30)


def _run(ws: Workspace, *args: str) -> tuple[int, str]:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["-w", str(ws.root), *args])
    return result.exit_code, " ".join(result.output.split())


def test_an_as_of_after_the_logs_last_event_is_warned_of_with_the_charges_it_decides(
    hand_ws: Workspace,
) -> None:
    """No outcome after the log's last event is in the log: a later --as-of counted every charge whose
    horizon ended in between as final and legitimate, silently. It is taken (an export complete up to that
    date holds all there was), and warned of with how many charges it decides."""
    at_end = backtest(hand_ws, compile_(NEW), FSET, horizon=H)
    assert at_end.pending == 3
    late = backtest(hand_ws, compile_(NEW), FSET, horizon=H, as_of=LATE)
    assert late.pending == 0 and late.as_of == LATE and late.as_of_given
    [warning] = [w for w in late.warnings if "after the log's last event" in w]
    assert warning.startswith(
        "--as-of 2026-01-31T00:00:00 is after the log's last event (2026-01-11T00:00:00): the log holds no "
        "outcome after it, so 3 charges whose label horizon ends in between read final, legitimate unless a "
        "dispute or warning is recorded."
    )
    earlier = backtest(hand_ws, compile_(NEW), FSET, horizon=H, as_of=T0 + timedelta(days=9))
    assert not any("after the log's last event" in w for w in earlier.warnings)  # (one within the log)
    short = backtest(hand_ws, compile_(NEW), FSET, horizon=timedelta(days=1), as_of=LATE)
    assert not any("after the log's last event" in w for w in short.warnings)  # (it decides no label)


def test_backtest_apply_activate_and_rollback_warn_of_a_late_as_of_alike(
    hand_ws: Workspace, tmp_path: Path
) -> None:
    ws = Workspace.open(shutil.copytree(hand_ws.root, tmp_path / "ws"))
    (one := tmp_path / "one.rules").write_text("big: review if :amount_usd: >= 700\n")
    (two := tmp_path / "two.rules").write_text("big: review if :amount_usd: >= 800\n")
    window = ["--horizon-days", "8", "--as-of", "2027-01-01"]  # (activate and rollback: the version's set)
    said = "--as-of 2027-01-01T00:00:00 is after the log's last event (2026-01-11T00:00:00)"
    for args in (
        ["rules", "backtest", str(one), "--set", "tiny", *window],
        ["rules", "apply", str(one), "--note", "v1", "--set", "tiny", *window],
        ["rules", "apply", str(two), "--note", "v2", "--set", "tiny", *window],
        ["rules", "rollback", "--note", "back", *window],
        ["rules", "activate", "2", "--note", "again", *window],
    ):
        code, out = _run(ws, *args)
        assert code == 0, out
        assert f"warning: {said}" in out and "so 3 charges whose label horizon ends in between" in out, (
            args,
            out,
        )


def test_an_unknown_attribute_in_another_case_is_pointed_at_its_own_name() -> None:
    catalog = AttributeCatalog.for_feature_set(FSET)
    for written in ("Amount_USD", "AMOUNT_USD"):  # not ':amount:' (minor units: 100 times looser)
        assert catalog.suggest(written) == " Did you mean ':amount_usd:'?"
    assert catalog.suggest("CARD_COUNTRYY") == " Did you mean ':card_country:'?"  # spelling, in any case
    [error] = type_errors(parse_rules("block if :Amount_USD: is missing"), catalog)
    assert "Unknown attribute ':Amount_USD:'. Did you mean ':amount_usd:'?" in str(error)


def test_show_keeps_every_rules_line_so_unnamed_rules_keep_their_names(tmp_path: Path) -> None:
    """The header came first and moved every rule down: `rules show > current.rules` renamed each unnamed
    rule (block_line_1 became block_line_4) when applied again."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    text = "block if :amount_usd: > 900\n# a comment\nreview if :amount_usd: > 500\n"
    (f := tmp_path / "r.rules").write_text(text)
    code, out = _run(ws, "rules", "apply", str(f), "--note", "first\nsecond line", "--no-backtest")
    assert code == 0, out
    shown = CliRunner().invoke(cli, ["-w", str(ws.root), "rules", "show"]).output
    assert shown.startswith(text)  # the text first, as stored; then the header and note, commented
    blank, header, second = shown[len(text) :].splitlines()
    assert not blank and header.startswith("# ruleset v1 by ") and header.endswith(": first")
    assert second == "# second line"
    assert [(r.name, r.line) for r in parse_rules(shown)] == [(r.name, r.line) for r in parse_rules(text)]
    assert [r.name for r in parse_rules(shown)] == ["block_line_1", "review_line_3"]


@pytest.mark.parametrize(
    ("text", "column", "said"),
    [
        ("block if :amount_usd: > 5or:amount_usd: < 1", 26, "Unexpected 'or' right after '5'"),
        ("blockif:amount_usd: > 5", 1, "Unexpected 'blockif'"),
        ("x: reviewif:amount_usd: > 5", 4, "Unexpected 'reviewif'"),
        ("block if :a: > 5 andnot:b: > 1", 18, "Unexpected 'andnot'"),
    ],
)
def test_a_keyword_glued_before_a_colon_gets_the_glued_keyword_error(
    text: str, column: int, said: str
) -> None:
    """A ':' after the glued word made it a rule name to the lexer: `or:` gave "Unexpected 'or'. Expected
    ... 'or'", `blockif:` an error at the attribute after it."""
    with pytest.raises(RuleError) as e:
        parse_rule(text)
    assert e.value.column == column and said in str(e.value)
    assert "keywords are words of their own. Expected" in str(e.value)
    assert parse_rule("blockif: block if :a: > 5").name == "blockif"  # a rule of that name is still one


def test_a_thousands_separator_in_an_in_list_is_refused() -> None:
    with pytest.raises(RuleError) as e:
        parse_rule("review if :amount_usd: in (1,000, 2,500)")  # read as (1, 0, 2, 500) before
    assert e.value.column == 29 and "Unexpected ',' in '1,000'" in str(e.value)
    assert str(e.value).endswith(
        "Numbers are written without separators: 1000, not 1,000. For several values (three-digit codes), "
        "put a space after the comma: in (1, 000)."
    )
    with pytest.raises(RuleError, match="in '2,500'"):
        parse_rule("review if :amount_usd: not in (5, 2,500)")
    for fine in ("in (1, 000)", "in (1,2,3)", "in (1,50)", "in ('a',100)"):
        parse_rule(f"review if :amount_usd: {fine}")
    [saved] = parse_rules("review if :amount_usd: in (1,000)", saved=True)  # a stored version loads
    assert isinstance(saved.condition, ast.In) and saved.condition.values == (1.0, 0.0)


def test_two_saves_at_once_get_two_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next version was read before the write lock was taken (without activate): a save between the read
    and the insert made the insert collide, a raw sqlite3.IntegrityError."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    real = rulesets.connect
    other: list[threading.Thread] = []
    failed: list[Exception] = []

    def save_other() -> None:
        try:
            rulesets.save(ws, "review if :amount_usd: > 2")
        except Exception as e:  # (reported by the test below)
            failed.append(e)

    class Racing:
        """``con``, running another save just before the first save's insert."""

        def __init__(self, con: sqlite3.Connection) -> None:
            self.con = con

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql.startswith("INSERT INTO rulesets") and not other:
                other.append(threading.Thread(target=save_other))
                other[0].start()
                other[0].join(timeout=0.5)  # done at once without the lock; waiting for it with it
            return self.con.execute(sql, *args)

    @contextmanager
    def connect(ws: Workspace, *, immediate: bool = False) -> Iterator[Any]:
        with real(ws, immediate=immediate) as con:
            yield Racing(con) if threading.current_thread() is threading.main_thread() else con

    monkeypatch.setattr(rulesets, "connect", connect)
    first = rulesets.save(ws, "block if :amount_usd: > 1")
    other[0].join()
    assert not failed, failed
    assert first.version == 1 and sorted(v.version for v in rulesets.history(ws)) == [1, 2]
