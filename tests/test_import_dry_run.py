"""`payfm import --dry-run`: every check of an import, the summary of what it would write, and nothing
written: no event, no new workspace, not even the workspace's key."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.importer import import_file
from payfm.events.validate import ValidationError
from test_import import ROWS, changed, state, write_csv, write_mapping, ws_at


def test_a_dry_run_says_what_the_import_writes_and_writes_nothing(tmp_path: Path) -> None:
    ws = ws_at(tmp_path / "ws")
    before = state(ws)
    csv, mapping = write_csv(tmp_path), write_mapping(tmp_path)
    dry = import_file(ws, csv, mapping, dry_run=True)
    assert state(ws) == before and not (ws.root / "secret.key").exists()
    assert dry.dry_run and dry.rows == {"charges": 4, "disputes": 2}
    real = import_file(ws, csv, mapping)
    assert (real.rows, real.warnings, real.unmapped_columns) == (dry.rows, dry.warnings, dry.unmapped_columns)
    assert not real.dry_run and ws.count("charges") == 4
    again = import_file(ws, csv, mapping, dry_run=True, skip_existing=True)  # (now with the workspace's key)
    assert again.rows == {"charges": 0, "disputes": 0} and again.skipped == {"existing": 4}
    assert ws.count("charges") == 4


def test_a_dry_run_finds_what_the_import_would_refuse(tmp_path: Path) -> None:
    ws = ws_at(tmp_path / "ws")
    csv = write_csv(tmp_path, {**ROWS, "cur": ["EUR", "usd", "XXQ", "eur"]})
    mapping = write_mapping(tmp_path)
    with pytest.raises(ValidationError) as dry:
        import_file(ws, csv, mapping, dry_run=True)
    with pytest.raises(ValidationError) as real:
        import_file(ws, csv, mapping)
    assert str(dry.value) == str(real.value) and "XXQ" in str(dry.value)
    ws_csv = write_csv(tmp_path, name="again.csv")
    import_file(ws, ws_csv, mapping)
    with pytest.raises(ValidationError, match="already"):  # ids the workspace holds: refused as for real
        import_file(ws, ws_csv, write_mapping(tmp_path, changed(), name="m2.yaml"), dry_run=True)


def test_the_cli_dry_run_creates_no_workspace(tmp_path: Path) -> None:
    csv, mapping = write_csv(tmp_path), write_mapping(tmp_path)
    where = tmp_path / "new-ws"
    r = CliRunner().invoke(
        cli, ["-w", str(where), "import", str(csv), "--mapping", str(mapping), "--dry-run"]
    )
    said = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert f"Would import {csv} in" in said and "4 charges, 2 disputes (a dry run: nothing written)" in said
    assert not where.exists()


def test_a_dry_run_reads_the_workspace_a_tilde_names_and_refuses_one_that_cannot_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: `-w ~/ws` (a tilde the shell left) was checked against an empty scratch workspace,
    so ids the workspace held passed; and a workspace under a file passed the dry run but not the import."""
    monkeypatch.setenv("HOME", str(tmp_path))
    csv, mapping = write_csv(tmp_path), write_mapping(tmp_path)
    import_file(ws_at(tmp_path / "ws"), csv, mapping)
    args = ["import", str(csv), "--mapping", str(mapping), "--dry-run"]
    r = CliRunner().invoke(cli, ["-w", "~/ws", *args])
    assert r.exit_code == 1 and "an id not already in the workspace" in " ".join(r.output.split()), r.output
    (tmp_path / "afile").write_text("")
    r = CliRunner().invoke(cli, ["-w", str(tmp_path / "afile" / "ws"), *args])
    assert r.exit_code == 1 and "Cannot create the workspace" in r.output and "Traceback" not in r.output
