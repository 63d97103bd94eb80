"""An --out that cannot be written is one line naming --out, found before the work (an audit: `fm embed --out
afile/x.parquet` computed every embedding, then ended in a FileExistsError traceback)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.outputs import output_file, write_parquet
from payfm.events.workspace import Workspace
from payfm.fm.embed import embed
from payfm.synth import WorldConfig, generate_world


def test_an_out_below_a_file_or_on_a_folder_is_refused_naming_the_option(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(
        ConfigError, match=r"^--out: the folder of '.*afile/x.parquet' cannot be created: '.*' is a"
    ):
        output_file(tmp_path / "afile" / "x.parquet", "--out")
    with pytest.raises(ConfigError, match=r"cannot be created: '.*afile' is a file"):
        output_file(tmp_path / "afile" / "deeper" / "x.parquet", "--out")
    with pytest.raises(ConfigError, match=r"^--out: '.*' is a folder\. Expected a file path\.$"):
        output_file(tmp_path, "--out")
    deep = output_file(tmp_path / "a" / "b" / "x.parquet", "--out")  # checked: nothing made yet
    assert not (tmp_path / "a").exists()
    write_parquet(pa.table({"a": [1]}), deep, "--out")  # the folders are made when it is written
    assert pa.parquet.read_table(deep).num_rows == 1


def test_embed_checks_its_out_before_reading_the_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    ws = Workspace.open(tmp_path / "ws", create=True)
    # the checkpoint does not exist: the --out error comes first, so no work precedes it
    with pytest.raises(ConfigError, match=r"^--out: the folder of"):
        embed(ws, tmp_path / "no-such-checkpoint", out=tmp_path / "afile" / "x.parquet")


def test_a_failed_parquet_write_is_one_error_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out" / "x.parquet"
    target.parent.mkdir()
    target.parent.chmod(0o500)  # not writable (root ignores it: then the write succeeds)
    try:
        write_parquet(pa.table({"a": [1]}), target, "--out")
    except ConfigError as e:
        assert str(e).startswith(f"--out: '{target}' cannot be written:")
    else:
        assert pa.parquet.read_table(target).num_rows == 1
    finally:
        target.parent.chmod(0o700)
    assert [p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_training_set_out_below_a_file_is_one_line(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=3_000, days=10, seed=2)), "replace")
    (tmp_path / "afile").write_text("x")
    args = ["-w", str(ws.root), "features", "training-set", "--set", "tiny", "--horizon-days", "3"]
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "afile" / "x.parquet")])
    assert r.exit_code == 1, r.output
    assert "Error: --out: the folder of" in r.output and "Traceback" not in r.output
    assert not (ws.root / "features").exists()  # refused before the backfill it would have needed
