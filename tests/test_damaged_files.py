"""A damaged workspace file is said in one line naming it, and bad option values are usage errors, with no
traceback (the CLI audit of 2026-12-06)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.features.training_set import backfill_path
from payfm.synth import WorldConfig, generate_world

PAN = "4111 1111 1111 1111"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=2000, days=5, seed=3)), "replace", validate=False)
    return ws


@pytest.mark.parametrize(
    ("relative", "command", "what"),
    [
        ("models/registry.db", ("models", "list"), "The model registry"),
        ("rules.db", ("rules", "show"), "The rules database"),
        ("serving/keys.db", ("serve", "keys", "list"), "The API key store"),
        ("serving/decisions.db", ("serve", "export"), "The decision log"),
    ],
)
def test_a_damaged_sqlite_store_is_named(
    ws: Workspace, relative: str, command: tuple[str, ...], what: str
) -> None:
    path = ws.root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a database, but garbage of some length" * 40)
    code, out = run("-w", str(ws.root), *command)
    assert code == 1 and f"{what} {path} is damaged or not an SQLite database (file is not a database)" in out
    assert "Traceback" not in out
    assert path.read_bytes().startswith(b"not a database")  # left as it was


def test_a_manifest_that_is_not_an_object_is_named(ws: Workspace) -> None:
    manifest = ws.root / "manifest.json"
    manifest.write_text("[]")
    code, out = run("-w", str(ws.root), "summary")
    assert code == 1 and f"'{manifest}' holds a JSON list, not the manifest's object" in out


def test_a_cut_backfill_is_computed_again(ws: Workspace) -> None:
    fset = tiny_set()
    path = backfill_path(ws, fset)
    whole = pq.read_table(path)
    path.write_bytes(path.read_bytes()[:100])
    assert backfill_path(ws, fset) == path
    assert pq.read_table(path).equals(whole)


def test_empty_and_malformed_option_values_are_usage_errors(ws: Workspace) -> None:
    code, out = run("-w", "", "summary")
    assert code == 2 and "Invalid value for --workspace: expected a workspace directory. Got ''." in out
    w = str(ws.root)
    for url, shown in (
        ("", "''"),
        ("localhost :8000", "'http://localhost :8000'"),
        ("http://[::1", "'http://[::1'"),
    ):
        code, out = run("-w", w, "replay", "--from", "2026-01-02", "--http", url, "--key", "x")
        assert code == 2 and "Invalid value for --http: must be the service's address" in out and shown in out
    code, out = run("-w", w, "replay", "--from", "2026-01-02", "--http", PAN, "--key", "x")
    assert code == 2 and PAN not in out and "[card number removed]" in out
    code, out = run(
        "-w", w, "rules", "backtest", "--rule", "block if :amount_usd: > 1000", "--horizon-days", "1e9"
    )
    assert code == 2 and "--horizon-days" in out and "Traceback" not in out
    code, out = run("-w", w, "features", "parity", "--set", "tiny", "--show", "-1")
    assert code == 2 and "--show" in out and "-1 is not in the range x>=0" in out


def test_unknown_names_and_an_empty_log_say_where_to_look(ws: Workspace, tmp_path: Path) -> None:
    code, out = run("-w", str(ws.root), "features", "show", "zzz_nothing_like_it")
    assert code == 1 and "No feature 'zzz_nothing_like_it' in feature set 'default'." in out
    assert "`payfm features list --set default` lists its features." in out
    code, out = run("-w", str(ws.root), "serve", "keys", "revoke", "nobody")
    assert code == 1 and "No active key named 'nobody' (`payfm serve keys list` shows every key)." in out
    empty = Workspace.open(tmp_path / "empty", create=True)
    code, out = run("-w", str(empty.root), "features", "drift", "--set", "tiny", "--from", "2026-01-01")
    assert code == 1 and "holds no charges of the backfill, which is empty (the log holds no charges)." in out
    assert "None" not in out


def test_a_damaged_event_file_is_named(ws: Workspace) -> None:
    first, second = ws.files("charges")[:2]
    first.write_bytes(first.read_bytes()[:300])  # cut short
    for command in (
        ("summary",),
        ("features", "backfill", "--set", "tiny"),
        ("sql", "SELECT count(*) FROM charges"),
    ):
        code, out = run("-w", str(ws.root), *command)
        assert (
            code == 1
            and f"The event log's charges file '{first}' is not a whole Parquet file (300 bytes" in out
        )
        assert "Traceback" not in out
    first.unlink()
    code, out = run("-w", str(ws.root), "summary")
    assert (
        code == 1
        and f"The event log's charges file '{first}', which manifest.json lists, cannot be read" in out
    )
    assert str(second) not in out
