"""Writes of the event log: a write the filesystem refuses is one line naming the path (no traceback), a
replace keeps the old log's files for the readers that listed them (as a compaction does), an interrupted
replace leaves no empty day folder, and `payfm demo` replaces only a log it wrote and nothing wrote since."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner, Result

from factories import T0, charges
from payfm.cli.demo import _replay_last_day, demo_wrote_log
from payfm.cli.main import cli
from payfm.errors import ConfigError, WorkspaceError
from payfm.events import workspace
from payfm.events.workspace import Workspace

SPARKOV = Path(__file__).parent / "data" / "sparkov_sample.parquet"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def one_line_error(out: Result, *needles: str) -> None:
    assert out.exit_code == 1, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    assert "Traceback" not in out.output and len(out.output.strip().splitlines()) == 1, out.output
    for needle in needles:
        assert needle in out.output, (needle, out.output)


def small_world(root: Path) -> Workspace:
    out = run("-w", str(root), "generate", "--charges", "1000", "--days", "2", "--seed", "1")
    assert out.exit_code == 0, out.output
    return Workspace.open(root)


# ---- a write the filesystem refuses ------------------------------------------------------------------------
@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Path]:
    """A workspace whose folder cannot be written, even by root (tests run as root: chmod does not stop
    it): ``chattr +i``; skipped where the filesystem or the tool does not allow it."""
    root = tmp_path / "ro"
    small_world(root)
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(root)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        yield root
    finally:
        subprocess.run([chattr, "-i", str(root)], check=True)


def test_a_read_only_workspace_is_one_line_naming_the_path(immutable: Path) -> None:
    before = (immutable / "manifest.json").read_text()
    for args in (("generate", "--charges", "1000", "--days", "2", "--replace"), ("compact",)):
        out = run("-w", str(immutable), *args)
        one_line_error(out, f"Cannot write the workspace '{immutable}'", f"'{immutable}/", "not permitted")
    assert (immutable / "manifest.json").read_text() == before
    # a write outside the event log (a backfill's feature files): the CLI's net for a path the system refuses
    out = run("-w", str(immutable), "features", "backfill", "--set", "tiny")
    one_line_error(out, f"Cannot write '{immutable}/features': Operation not permitted")


def test_a_refused_write_of_the_workspace_is_a_workspace_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where chattr is not: the marker a writer makes, refused (a read-only folder); the log is unchanged."""
    ws = small_world(tmp_path / "ws")
    before = ws.manifest()
    real = Path.touch

    def refused(self: Path, *args: object, **kwargs: object) -> None:
        if self.name == workspace.WRITING:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "touch", refused)
    out = run("-w", str(ws.root), "generate", "--charges", "1000", "--days", "2", "--replace")
    one_line_error(out, f"writing '{ws.root / workspace.WRITING}' failed: Permission denied")
    assert ws.manifest() == before


def test_a_full_disk_is_one_line_and_leaves_the_log_and_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = small_world(tmp_path / "ws")
    before, files = ws.manifest(), sorted(p for p in ws.root.rglob("*") if p.is_file())
    written = 0
    real = workspace.pq.write_table

    def full(table: pa.Table, where: object, **options: object) -> None:
        nonlocal written
        written += 1
        if written >= 3:  # part-way: two files written, the third one's half on disk
            Path(str(where)).write_bytes(b"PAR1")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(table, where, **options)

    monkeypatch.setattr(workspace.pq, "write_table", full)
    out = run("-w", str(ws.root), "generate", "--charges", "1000", "--days", "2", "--replace")
    one_line_error(out, "Cannot write the workspace", ".parquet' failed: No space left on device")
    assert ws.manifest() == before
    assert sorted(p for p in ws.root.rglob("*") if p.is_file()) == files  # its files and temporary gone
    with pytest.raises(WorkspaceError, match="No space left on device"), ws.writer() as w:
        w.write("charges", charges(3, prefix="ch_x"))


# ---- a replace keeps the old files for the readers that listed them ----------------------------------------
def test_a_reader_that_listed_the_files_before_a_replace_still_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`generate --replace` deleted the old files at its commit: a `payfm sql` or a backfill reading them
    failed part-way ("Cannot open file"). They are retired, as a compaction's, for RETIRE_AFTER_S."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    with ws.writer() as w:
        w.write("charges", charges(20))
    old = set(ws.files("charges"))
    con = ws.connect()  # a long job's view, opened before the replace
    try:
        with ws.writer("replace") as w:
            w.write("charges", charges(3, prefix="ch_new"))
        assert con.execute("SELECT count(*) FROM charges").fetchone() == (20,)
        assert ws.count("charges") == 3 and all(p.exists() for p in old)
        assert sorted(rel for rel, _ in ws.manifest()["retired"]) == sorted(
            str(p.relative_to(ws.root)) for p in old
        )
        monkeypatch.setattr(workspace, "RETIRE_AFTER_S", 0.0)  # an hour later
        with ws.writer() as w:
            w.write("charges", charges(1, start=T0.replace(year=2027), prefix="ch_late"))
        assert not any(p.exists() for p in old) and "retired" not in ws.manifest()
        assert not [d for d in (ws.root / "charges").iterdir() if not any(d.iterdir())]  # no empty day
    finally:
        con.close()


def test_an_interrupted_replace_leaves_no_empty_day_folder(tmp_path: Path) -> None:
    """Ctrl-C in `generate --replace` left a folder per day written (~120), which no writer removed."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    with ws.writer() as w:
        w.write("charges", charges(3))
    before = sorted(str(p.relative_to(ws.root)) for p in ws.root.rglob("*"))

    def stream() -> Iterator[tuple[str, pa.Table]]:
        for k in range(30):  # a day apiece
            yield "charges", charges(2, start=T0.replace(month=3, day=k + 1), prefix=f"ch_{k}_")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ws.write_stream(stream(), mode="replace")
    assert sorted(str(p.relative_to(ws.root)) for p in ws.root.rglob("*")) == before


# ---- generate's line ---------------------------------------------------------------------------------------
def test_generate_says_a_world_without_outcomes(tmp_path: Path) -> None:
    # a world whose charges drew no outcome within its one day (seed 5; seed 2 drew 2 refunds once the
    # customer pool of worlds under 5 days was capped, 2026-12-07)
    args = ("generate", "--charges", "1000", "--days", "1", "--fraud-rate", "0", "--seed", "5")
    out = run("-w", str(tmp_path / "z"), *args)
    assert out.exit_code == 0, out.output
    assert "no outcomes" in out.output and not out.output.rstrip().endswith(":"), out.output


# ---- payfm demo replaces only a log it wrote ---------------------------------------------------------------
def demo(ws: Path, *extra: str) -> Result:
    return run("-w", str(ws), "demo", "--charges", "2000", "--days", "5", "--skip-models", *extra)


def test_demo_refuses_a_log_another_command_wrote_after_it(tmp_path: Path) -> None:
    """The demo trusted its demo.json, which nothing invalidated: an import into a demo's workspace, or a
    generate --replace, was silently replaced by the next demo. The marker records the version the demo's
    write committed; any later write moves the manifest on."""
    ws = tmp_path / "dm"
    first = demo(ws)
    assert first.exit_code == 0, first.output
    marker = json.loads((ws / "demo.json").read_text())
    assert marker["log_version"] == Workspace.open(ws).manifest()["version"]
    _replay_last_day(Workspace.open(ws))  # the demo's last step: its rules saved, the day replayed
    assert demo_wrote_log(Workspace.open(ws))  # (the steps after the log write no event)
    again = demo(ws)  # the demo's own log (its backfill wrote features, not the log): replaced again
    assert again.exit_code == 0, again.output

    imported = run("-w", str(ws), "import", str(SPARKOV), "--mapping", "sparkov")
    assert imported.exit_code == 0, imported.output
    held = Workspace.open(ws).read("charges")["charge_id"].to_pylist()
    refused = demo(ws)
    one_line_error(refused, "payfm demo did not write", "--replace")
    assert Workspace.open(ws).read("charges")["charge_id"].to_pylist() == held  # the import is there

    assert demo(ws, "--replace").exit_code == 0
    generated = run("-w", str(ws), "generate", "--charges", "1000", "--days", "2", "--replace")
    assert generated.exit_code == 0, generated.output
    one_line_error(demo(ws), "payfm demo did not write")
    assert Workspace.open(ws).count("charges") == int(generated.output.split()[1].replace(",", ""))


def test_a_demo_marker_without_a_version_proves_nothing(tmp_path: Path) -> None:
    """An older payfm's marker (no version): the log may have been written since, so the demo asks."""
    ws = small_world(tmp_path / "ws")
    (ws.root / "demo.json").write_text(json.dumps({"written_by": "payfm demo", "seed": 0}))
    one_line_error(
        demo(ws.root), "a demo of an earlier payfm wrote, whose marker records no version", "--replace"
    )


def test_a_rules_database_the_system_will_not_write_is_one_line(tmp_path: Path) -> None:
    """`payfm rules apply` in a read-only workspace was a sqlite3.OperationalError traceback. Here the
    database's path is a folder (SQLite cannot open it), which needs no chattr."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    (ws.root / "rules.db").mkdir()
    rules = tmp_path / "r.rules"
    rules.write_text("review if :amount_usd: > 100\n")
    out = run("-w", str(ws.root), "rules", "apply", str(rules), "--no-backtest", "--note", "x")
    one_line_error(
        out, f"The rules database {ws.root / 'rules.db'} cannot be written: unable to open database"
    )


@pytest.fixture
def chattr_i() -> Iterator[list[Path]]:
    """Paths appended to the list are made immutable (``chattr +i``: even root cannot write them) and freed
    at the end; skipped where the filesystem or the tool does not allow it."""
    chattr = shutil.which("chattr")
    frozen: list[Path] = []
    if chattr is None:
        pytest.skip("chattr is not available here")
    try:
        yield frozen
    finally:
        for path in frozen:
            subprocess.run([chattr, "-i", str(path)], check=False)


def _freeze(frozen: list[Path], *paths: Path) -> None:
    for path in paths:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not allowed on this filesystem")
        frozen.append(path)


def test_the_registry_and_key_store_of_a_read_only_workspace_are_one_line(
    tmp_path: Path, chattr_i: list[Path]
) -> None:
    """Found by a read-through of the read-only cases: an existing registry.db or keys.db that cannot be
    written opened (its schema is there) and then failed at the write, outside the block that words SQLite's
    refusals: `payfm models promote` and `payfm serve keys create|revoke` were sqlite3 tracebacks."""
    from payfm.registry import Registry
    from payfm.serving.keys import KeyStore
    from payfm.serving.sqlite_log import SQLiteDecisionLog
    from test_registry import register

    ws = Workspace.open(tmp_path / "ws", create=True)
    ref = register(Registry(ws))
    assert run("-w", str(ws.root), "serve", "keys", "create", "ops").exit_code == 0
    log_path = ws.root / "serving" / "decisions.db"
    SQLiteDecisionLog(log_path)
    models, serving = ws.root / "models", ws.root / "serving"
    _freeze(chattr_i, models, models / "registry.db", serving, serving / "keys.db", log_path)

    out = run("-w", str(ws.root), "models", "promote", ref)
    one_line_error(out, f"The model registry {models / 'registry.db'} cannot be written: attempt to write a ")
    for args in (("create", "ci"), ("revoke", "ops")):
        out = run("-w", str(ws.root), "serve", "keys", *args)
        one_line_error(out, f"The API key store {serving / 'keys.db'} cannot be written: ")
    with pytest.raises(ConfigError, match=r"The decision log .* cannot be written: "):
        SQLiteDecisionLog(log_path)
    assert Registry(ws).get(ref).stage == "candidate"  # reading still works, and nothing changed
    assert [k["name"] for k in KeyStore(serving / "keys.db").list()] == ["ops"]
