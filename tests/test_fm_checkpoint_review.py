"""Foundation-model review fixes (second round): a checkpoint save the filesystem refuses is one error
naming the checkpoint; a checkpoint folder without its config.json is refused, not wiped, unless --fresh;
a wrong optimizer state or losses list is a damaged checkpoint, not a traceback or moments dropped; saves
and Parquet files are flushed to disk before their rename; the outputs of a model have one canonical order;
`fm embed` of a workspace without charges is refused."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.outputs import write_parquet
from payfm.events.workspace import Workspace
from payfm.fm import pretrain as pretrain_module
from payfm.fm.downstream import DownstreamConfig, evaluate_embeddings
from payfm.fm.embed import embed
from payfm.fm.identity import check_outputs
from payfm.fm.pretrain import PretrainConfig, pretrain
from payfm.synth import WorldConfig
from payfm.synth.generator import generate_world
from test_fm_cli_hygiene import _copy

TINY = PretrainConfig(
    seq_len=4, n_layer=1, n_head=2, n_embd=8, batch_size=32, steps=2, checkpoint_every=100, max_charges=800
)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    torch.set_num_threads(1)
    w = Workspace.open(Path(tmp_path_factory.mktemp("fmfix2")), create=True)
    w.write_stream(generate_world(WorldConfig(charges=1_000, days=4, seed=3, fraud_rate=0.03)), "replace")
    pretrain(w, TINY, out=w.root / "fm" / "base")
    return w


def _resume(ws: Workspace, path: Path) -> None:
    pretrain(ws, PretrainConfig(**{**TINY.__dict__, "steps": 3}), out=path)


# ---- 1. a save the filesystem refuses --------------------------------------------------------------------
def test_a_save_the_disk_refuses_is_one_error_naming_the_checkpoint(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _copy(ws, "efbig")
    before = (path / "model.safetensors").read_bytes()

    def full(p: Path, data: bytes) -> None:
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(pretrain_module, "_write_synced", full)
    with pytest.raises(ConfigError, match=r"Checkpoint '.*efbig' cannot be written: File too large\."):
        _resume(ws, path)
    assert (path / "model.safetensors").read_bytes() == before  # the checkpoint as it was
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".efbig.")]


def test_a_checkpoint_folder_under_a_file_is_one_error(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "fm").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"Checkpoint '.*fm/x' cannot be written \(.*\): "):
        pretrain(ws, TINY, out=tmp_path / "fm" / "x")


def test_the_cli_prints_one_line_when_a_save_fails(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(p: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pretrain_module, "_write_synced", full)
    args = ["-w", str(ws.root), "fm", "--threads", "1", "pretrain", "--name", "nospace", "--steps", "1"]
    got = CliRunner().invoke(cli, [*args, "--batch-size", "32", "--max-charges", "500", "--seq-len", "4"])
    assert got.exit_code == 1 and "Traceback" not in got.output, got.output
    assert "nospace' cannot be written: No space left on device" in got.output


# ---- 2. a checkpoint folder without its config.json -----------------------------------------------------
def test_a_folder_without_config_json_is_refused_unless_fresh(ws: Workspace) -> None:
    path = _copy(ws, "noconfig")
    (path / "config.json").unlink()
    with pytest.raises(ConfigError, match=r"expected config.json .* Got no such file: the checkpoint is "):
        _resume(ws, path)
    assert (path / "model.safetensors").is_file() and not (path / "config.json").exists()  # not wiped
    done = pretrain(ws, TINY, out=path, resume=False)  # --fresh starts over
    assert done.step == 2 and (path / "config.json").is_file()


# ---- 3. a wrong optimizer state, a wrong losses list ----------------------------------------------------
def _edit_optimizer(path: Path, edit: Any) -> None:
    tensors = load_file(path / "optimizer.safetensors")
    save_file(edit(tensors), path / "optimizer.safetensors")


def _edit_config(path: Path, edit: Any) -> None:
    doc = json.loads((path / "config.json").read_text())
    edit(doc)
    (path / "config.json").write_text(json.dumps(doc))


def _other_shape(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return t | {"0.exp_avg": torch.zeros(3, 3), "0.exp_avg_sq": torch.zeros(3, 3)}


DAMAGE = [
    ("shape", lambda p: _edit_optimizer(p, _other_shape), "optimizer.safetensors", "'exp_avg'"),
    (
        "no-sq",
        lambda p: _edit_optimizer(p, lambda t: {k: v for k, v in t.items() if "exp_avg_sq" not in k}),
        "optimizer.safetensors",
        "expected exp_avg, exp_avg_sq, step",
    ),
    (
        "index",
        lambda p: _edit_optimizer(p, lambda t: {"999." + k.split(".", 1)[1]: v for k, v in t.items()}),
        "optimizer.safetensors",
        "tensor '999.",
    ),
    (
        "betas",
        lambda p: _edit_config(p, lambda c: c["param_groups"][0].update(betas=[0.9])),
        "config.json",
        "'param_groups[0].betas' [0.9], expected a list of 2 numbers",
    ),
    (
        "groups",
        lambda p: _edit_config(p, lambda c: c["param_groups"].append(dict(c["param_groups"][0]))),
        "config.json",
        "'param_groups' 2 groups, expected 1",
    ),
    (
        "losses",
        lambda p: _edit_config(p, lambda c: c.update(losses=c["losses"][:1])),
        "config.json",
        "'losses' of 1 values, expected one per step",
    ),
    (
        "step",
        lambda p: _edit_config(p, lambda c: c.update(step=1)),
        "config.json",
        "'losses' of 2 values, expected one per step",
    ),
]


@pytest.mark.parametrize(("name", "damage", "file", "says"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_wrong_optimizer_state_or_losses_is_a_damaged_checkpoint(
    ws: Workspace, name: str, damage: Any, file: str, says: str
) -> None:
    path = _copy(ws, f"dmg-{name}")
    damage(path)
    with pytest.raises(ConfigError) as e:
        _resume(ws, path)
    text = str(e.value)
    assert f"expected {file} holding" in text and says in text and "incomplete or damaged" in text, text
    assert "\n" not in text


# ---- 4. flushed to disk before the rename ---------------------------------------------------------------
def _record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the synced files")
def test_checkpoint_files_and_folders_are_synced_before_the_swap(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _copy(ws, "synced")
    synced = _record_fsyncs(monkeypatch)
    _resume(ws, path)
    tmp = f".synced.{os.getpid()}.tmp"
    for name in ("model.safetensors", "optimizer.safetensors", "tokenizer.json", "config.json"):
        assert any(s.endswith(f"{tmp}/{name}") for s in synced), (name, synced)
    assert any(s.endswith(tmp) for s in synced)  # the new folder's entries
    assert str(path.parent.resolve()) in synced  # fm/, after the swap


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the synced files")
def test_write_parquet_syncs_the_file_and_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced = _record_fsyncs(monkeypatch)
    write_parquet(pa.table({"a": [1, 2]}), tmp_path / "out.parquet", "--out")
    assert any(Path(s).name.startswith(".out.parquet.") for s in synced)
    assert str(tmp_path.resolve()) in synced


# ---- 5. one order of the outputs ------------------------------------------------------------------------
def test_outputs_have_one_canonical_order() -> None:
    assert check_outputs(["surprise", "embedding"]) == ("embedding", "surprise")
    assert check_outputs(["surprise"]) == ("surprise",)


def test_an_evaluation_refuses_the_same_inputs_in_two_orders(ws: Workspace) -> None:
    cfg = DownstreamConfig(fm_inputs=(("surprise", "embedding"), ("embedding", "surprise")))
    with pytest.raises(ConfigError, match=r"expected each once. Got embedding\+surprise more than once"):
        evaluate_embeddings(ws, ws.root / "fm" / "base", cfg)


def test_fm_evaluate_takes_the_order_payfm_train_takes(ws: Workspace) -> None:
    args = ["-w", str(ws.root), "fm", "evaluate", "--name", "base", "--fm-inputs", "surprise+embedding"]
    got = CliRunner().invoke(cli, args)
    assert got.exit_code == 2 and "expected embedding+surprise" in got.output, got.output
    assert "Got surprise+embedding." in got.output


# ---- 6. fm embed without charges ------------------------------------------------------------------------
def test_embed_of_a_workspace_without_charges_is_refused(ws: Workspace, tmp_path: Path) -> None:
    empty = Workspace.open(tmp_path / "empty", create=True)
    with pytest.raises(ConfigError, match="holds no charges: generate or import some first"):
        embed(empty, ws.root / "fm" / "base")
    assert not (empty.root / "fm" / "base.embeddings.parquet").exists()
