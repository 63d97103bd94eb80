"""An import review's findings on the mapping and the command: a label `delay` without a bound (a timedelta
overflow, or disputes dated in the year 10237 that no read could load), a failed first import removing the
workspace another import was filling, a card number in `keep_rows.when` printed in a warning, and an
unreadable workspace key called unwritable."""

from __future__ import annotations

import copy
import errno
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from payfm.cli.events import _created_workspace
from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.importer import import_file
from payfm.events.mapping import parse_delay
from payfm.events.workspace import Workspace
from test_import import MAPPING, ROWS, failed_import, write_csv, write_mapping

DELAY = (
    "expected a duration such as 30d, 12h, 90m, 45s or 2w, of at most 3650d (ten years; card networks' "
    "dispute windows are at most 540 days)"
)


def labelled(delay: str) -> dict[str, Any]:
    m = copy.deepcopy(MAPPING)
    m["labels"][0]["delay"] = delay
    return m


# ---- (7) the bound of a label's delay --------------------------------------------------------------------
@pytest.mark.parametrize("delay", ["999999999d", "3000000d", "3651d", "522w", "87601h", "999999999999999w"])
def test_a_delay_past_ten_years_is_refused_at_load_naming_the_key(tmp_path: Path, delay: str) -> None:
    m = write_mapping(tmp_path, labelled(delay))
    text = failed_import(tmp_path, write_csv(tmp_path), m, ConfigError)
    assert text == f"m.yaml: 'labels[0].delay': {DELAY}; received {delay!r}."


def test_a_delay_of_ten_years_is_the_longest(tmp_path: Path) -> None:
    assert parse_delay("3650d") == parse_delay("87600h") == timedelta(days=3650)
    assert parse_delay("521w") == timedelta(weeks=521)
    with pytest.raises(ValueError, match="of at most 3650d"):
        parse_delay("315360001s")
    ws = Workspace.open(tmp_path / "ws", create=True)
    summary = import_file(ws, write_csv(tmp_path), write_mapping(tmp_path, labelled("3650d")))
    assert summary.rows == {"charges": 4, "disputes": 2}
    disputes = ws.read("disputes").to_pylist()  # (an outcome of the year 10237 raised OverflowError here)
    assert {d["created"].year for d in disputes} == {2034}


# ---- (11) a failed first import and another process's import into the same new workspace -----------------
def _context(root: Path) -> click.Context:
    return click.Context(click.Command("import"), obj={"workspace": str(root)})


def _fail(cm: Any) -> None:
    """End the command of ``cm`` (an entered _created_workspace) with an error, as a failed import does."""
    error = ValueError("the import failed")
    assert cm.__exit__(ValueError, error, None) is False  # (the error goes on)


def test_a_failed_first_import_keeps_the_workspace_another_import_works_in(tmp_path: Path) -> None:
    """B makes the workspace and fails while A, which found it made, still imports: B's failure removed the
    folder under A before (A then failed with 'manifest.json is missing', leaving stray folders)."""
    root = tmp_path / "nw"
    made_by_b = _created_workspace(_context(root))
    made_by_b.__enter__()
    found_by_a = _created_workspace(_context(root))
    ws_a = found_by_a.__enter__()
    _fail(made_by_b)
    assert (root / "manifest.json").exists()
    summary = import_file(ws_a, write_csv(tmp_path), write_mapping(tmp_path))
    found_by_a.__exit__(None, None, None)
    assert summary.rows == {"charges": 4, "disputes": 2}
    assert Workspace.open(root).count("charges") == 4


def test_a_failed_first_import_keeps_what_another_import_committed_meanwhile(tmp_path: Path) -> None:
    root = tmp_path / "nw"
    made_by_b = _created_workspace(_context(root))
    made_by_b.__enter__()
    with _created_workspace(_context(root)) as ws_a:  # A imports and is done before B fails
        import_file(ws_a, write_csv(tmp_path), write_mapping(tmp_path))
    _fail(made_by_b)
    assert Workspace.open(root).count("charges") == 4


def test_the_importer_that_made_the_workspace_and_failed_alone_removes_it(tmp_path: Path) -> None:
    root = tmp_path / "nw"
    found_later = _created_workspace(_context(root))
    with _created_workspace(_context(root)):  # (A made it: A's failure is no business of B, which found it)
        found_later.__enter__()
    assert root.exists()
    _fail(found_later)
    assert (root / "manifest.json").exists()  # (B did not make it)
    alone = _created_workspace(_context(tmp_path / "alone"))
    alone.__enter__()
    _fail(alone)
    assert not (tmp_path / "alone").exists()
    csv, mapping = write_csv(tmp_path, {**ROWS, "amount": ["x"] * 4}), write_mapping(tmp_path)
    r = CliRunner().invoke(cli, ["-w", str(tmp_path / "cli"), "import", str(csv), "--mapping", str(mapping)])
    assert r.exit_code == 1 and "expected a number; received 'x'" in r.output
    assert not (tmp_path / "cli").exists()


# ---- (12) warnings with card numbers ---------------------------------------------------------------------
def test_a_card_number_in_keep_rows_when_is_never_printed(tmp_path: Path) -> None:
    m = copy.deepcopy(MAPPING)
    m["keep_rows"] = {"column": "shop", "when": ["s1", "4111 1111 1111 1111"]}
    csv, mapping = write_csv(tmp_path), write_mapping(tmp_path, m)
    r = CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), "import", str(csv), "--mapping", str(mapping)])
    assert r.exit_code == 0, r.output
    said = " ".join(r.stderr.split())
    assert (
        "warning: keep_rows.when: '[card number removed]' matched none of the 4 rows it read; column 'shop' "
        "holds 's1', 's2', 's3'."
    ) in said
    assert "4111" not in r.output + r.stderr


# ---- an unreadable workspace key -------------------------------------------------------------------------
def test_an_unreadable_key_is_said_to_be_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.secret()
    key = ws.root / "secret.key"

    def refused(self: Workspace, wait_s: float = 60.0) -> bytes:  # (as root, chmod 000 would not refuse it)
        raise PermissionError(errno.EACCES, "Permission denied", str(key))

    monkeypatch.setattr(Workspace, "secret", refused)
    csv, mapping = write_csv(tmp_path), write_mapping(tmp_path)
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "import", str(csv), "--mapping", str(mapping)])
    said = " ".join(r.output.split())
    assert r.exit_code == 1
    assert f"Cannot read the workspace's key '{key}': Permission denied. Expected a key payfm may" in said
    assert "Cannot write" not in said
    assert json.loads((ws.root / "manifest.json").read_text())["version"] == 0
