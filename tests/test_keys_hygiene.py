"""API key names: a full card number or a control character is refused at creation, without being shown (a
key's name is printed by `keys list` and stored as the reviewer of every review it closes)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.serving.errors import InvalidInput, NotFound
from payfm.serving.keys import KeyStore

PAN = "4111111111111111"


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "ws", create=True)


def _store(ws: Workspace) -> KeyStore:
    return KeyStore(ws.root / "serving" / "keys.db")


def _run(ws: Workspace, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-w", str(ws.root), *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "name", [PAN, "ops" + PAN, "4111-1111-1111-1111", "ops_4111_1111_1111_1111", "４２４２" * 4]
)
def test_a_key_name_holding_a_card_number_is_refused_without_showing_it(ws: Workspace, name: str) -> None:
    with pytest.raises(InvalidInput) as e:
        _store(ws).create(name)
    assert e.value.field == "name" and "must not contain a card number" in str(e.value)
    assert name not in str(e.value) and "1111" not in str(e.value) and "４２４２" not in str(e.value)
    code, out = _run(ws, "serve", "keys", "create", name)
    assert (
        code == 1
        and out.count("\n") == 1
        and "card number" in out
        and "1111" not in out
        and "４２４２" not in out
    )
    assert "pfm_" not in out and _store(ws).list() == []


@pytest.mark.parametrize("name", ["ops\x1b[31m", "ops\x07", "ops\x7f", "ops\x9b", "ops\tx"])
def test_a_key_name_holding_a_control_character_is_refused(ws: Workspace, name: str) -> None:
    with pytest.raises(
        InvalidInput, match=re.escape("A key name must not contain control characters. Got '")
    ) as e:
        _store(ws).create(name)
    assert e.value.field == "name" and name not in str(e.value)
    code, out = _run(ws, "serve", "keys", "create", name)
    assert code == 1 and "\x1b" not in out and "\x07" not in out


def test_good_names_still_work_and_other_bad_ones_are_quoted_masked(ws: Workspace) -> None:
    assert _store(ws).create("ops-team_1").startswith("pfm_")
    with pytest.raises(InvalidInput, match=r"letters, digits, '-' or '_'. Got 'a b'\."):
        _store(ws).create("a b")
    with pytest.raises(NotFound) as e:
        _store(ws).revoke("x 1234567890123 y")
    assert "1234567890123" not in str(e.value)


def test_a_name_stored_before_the_check_is_never_printed(ws: Workspace) -> None:
    store = _store(ws)
    store.create("ops")
    with sqlite3.connect(store.path) as con:  # what an older payfm accepted
        con.execute("UPDATE keys SET name = ? WHERE name = 'ops'", (PAN,))
    code, out = _run(ws, "serve", "keys", "list")
    assert code == 0 and PAN not in out and "[card number removed]" in out
    code, out = _run(ws, "serve", "keys", "revoke", PAN)  # it can still be revoked
    assert code == 0 and PAN not in out and store.list()[0]["revoked_at"] is not None
