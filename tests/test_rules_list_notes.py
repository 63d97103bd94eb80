"""A list change says why (`--note`), as a ruleset version does: the audit trail keeps it on every entry of
the change. A rules.db made before notes existed gains the column, its old entries with no note."""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.rules import lists
from payfm.rules.limits import RuleError

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "ws", create=True)


def test_each_entry_of_a_change_keeps_its_note(ws: Workspace) -> None:
    lists.create_list(ws, "bad_ips", "ip_address", author="ana", at=AT, note="ticket FR-1")
    lists.add_values(ws, "bad_ips", ["203.0.113.7", "198.51.100.1"], author="ana", note="burst\r\nof tests")
    lists.remove_values(ws, "bad_ips", ["198.51.100.1"], author="bo")
    lists.create_list(ws, "old", "country")
    lists.delete_list(ws, "old", note="unused")
    trail = [(e.action, e.value, e.note) for e in lists.audit(ws, "bad_ips")]
    assert trail == [
        ("create", "ip_address", "ticket FR-1"),
        ("add", "203.0.113.7", "burst\nof tests"),  # (Windows line breaks kept as line feeds)
        ("add", "198.51.100.1", "burst\nof tests"),
        ("remove", "198.51.100.1", ""),
    ]
    assert [(e.action, e.note) for e in lists.audit(ws, "old")] == [("create", ""), ("delete", "unused")]


def test_a_note_with_a_card_number_or_a_control_character_is_refused_and_nothing_changes(
    ws: Workspace,
) -> None:
    lists.create_list(ws, "bad_ips", "ip_address")
    with pytest.raises(RuleError, match=re.escape("A list change's note must not contain a card")):
        lists.add_values(ws, "bad_ips", ["203.0.113.7"], note="card 4111 1111 1111 1111")
    with pytest.raises(
        RuleError, match=re.escape("A list change's note must not contain control characters")
    ):
        lists.add_values(ws, "bad_ips", ["203.0.113.7"], note="\x1b[31mred")
    assert lists.list_values(ws, "bad_ips") == []
    assert [e.action for e in lists.audit(ws, "bad_ips")] == ["create"]


def test_a_single_text_is_refused_not_added_character_by_character(ws: Workspace) -> None:
    """`add_values(ws, "cards", "fp_3")` added 'f', 'p', '_' and '3' (a text iterates over its characters)."""
    lists.create_list(ws, "names", "customer_id")
    with pytest.raises(
        RuleError,
        match=re.escape("must be a list of values. Got a single text; for one value, pass ['cus_3']."),
    ):
        lists.add_values(ws, "names", "cus_3")
    with pytest.raises(RuleError, match="Got a single text"):
        lists.remove_values(ws, "names", "cus_3")
    assert lists.list_values(ws, "names") == []


def test_a_rules_db_made_before_notes_gains_the_column(ws: Workspace) -> None:
    with sqlite3.connect(ws.root / "rules.db") as con:  # the schema of workspaces made before notes
        con.execute(
            "CREATE TABLE list_audit (id INTEGER PRIMARY KEY AUTOINCREMENT, list TEXT NOT NULL, at TEXT NOT "
            "NULL, author TEXT NOT NULL, action TEXT NOT NULL, value TEXT)"
        )
        con.execute(
            "CREATE TABLE lists (name TEXT PRIMARY KEY, type TEXT NOT NULL, created TEXT NOT NULL, "
            "author TEXT NOT NULL)"
        )
        con.execute("INSERT INTO lists VALUES ('bad', 'country', '2026-01-01T00:00:00+00:00', 'ana')")
        con.execute(
            "INSERT INTO list_audit (list, at, author, action, value) "
            "VALUES ('bad', '2026-01-01', 'ana', 'create', 'country')"
        )
    lists.add_values(ws, "bad", ["NG"], note="fraud ring")
    assert [(e.action, e.note) for e in lists.audit(ws, "bad")] == [("create", ""), ("add", "fraud ring")]


def test_cli_takes_a_note_and_audit_shows_it(ws: Workspace) -> None:
    run = CliRunner().invoke
    w = ["-w", str(ws.root)]
    assert run(cli, [*w, "lists", "create", "bad_ips", "--type", "ip_address"]).exit_code == 0
    r = run(cli, [*w, "lists", "audit", "bad_ips"])
    assert "note" not in r.output  # (no column while no change has one)
    r = run(cli, [*w, "lists", "add", "bad_ips", "203.0.113.7", "--note", "card testing, FR-12"])
    assert r.exit_code == 0, r.output
    r = run(cli, [*w, "lists", "audit", "bad_ips"], terminal_width=200)
    assert "note" in r.output and "card testing, FR-12" in r.output
    r = run(cli, [*w, "lists", "remove", "bad_ips", "203.0.113.7", "--note", "4111111111111111"])
    assert r.exit_code != 0 and "must not contain a card number" in r.output and "4111" not in r.output
