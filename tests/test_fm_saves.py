"""Checkpoint saves during pretraining: a model registered on one of the run's own saves is never changed
under it by a later save, and what saves killed outright (SIGKILL) leave is neither listed nor kept."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.fm.identity import checkpoint_hash, checkpoint_meta
from payfm.fm.pretrain import PretrainConfig, pretrain
from payfm.synth import WorldConfig
from payfm.synth.generator import generate_world

# a tiny model (2 views x 8 channels) saving every 2 steps
TINY = PretrainConfig(
    seq_len=4, n_layer=1, n_head=2, n_embd=8, batch_size=32, steps=6, checkpoint_every=2, max_charges=1500
)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    torch.set_num_threads(1)
    w = Workspace.open(Path(tmp_path_factory.mktemp("fmsaves")), create=True)
    w.write_stream(generate_world(WorldConfig(charges=2_000, days=6, seed=8, fraud_rate=0.03)), "replace")
    return w


def _register_on(ws: Workspace, checkpoint: Path) -> Any:
    """A model version taking the embedding of ``checkpoint`` (what `payfm train --fm` registers)."""
    from payfm.features.catalog import tiny_set
    from payfm.fm.identity import embedding_names
    from payfm.registry import Registry
    from payfm.training.models import model_class

    fs = tiny_set()
    names = fs.names + embedding_names(16)
    X = np.random.default_rng(1).normal(size=(400, len(names)))
    m = model_class("lr")(calibration="none").fit(X, (X[:, -1] > 0).astype(int), feature_names=names)
    reg = Registry(ws)
    return reg, reg.register(m, name="fraud-fm", task="fraud", fset=fs, foundation_model=checkpoint)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_a_model_registered_on_a_save_of_the_running_pretraining_stops_its_next_save(
    ws: Workspace, tmp_path: Path
) -> None:
    """Found by a review: check_unregistered ran once, before training; a model registered on the step-200
    save (`payfm train --fm` while the run went on) was broken by the run's later saves (its recorded hash
    no longer matched: it could never be promoted or loaded). Every save now checks again before its swap."""
    own = Workspace.open(tmp_path / "ws", create=True)
    shutil.copytree(ws.root, own.root, dirs_exist_ok=True)
    ckpt = own.root / "fm" / "run"
    registered: list[Any] = []

    def register_after_the_first_save(step: int, total: int, loss: float) -> None:
        if step == 3 and not registered:  # the step-2 save is in place; the next save is step 4's
            assert checkpoint_meta(ckpt)["step"] == 2
            registered.append((*_register_on(own, ckpt), checkpoint_hash(ckpt)))

    with pytest.raises(ConfigError) as refused:
        pretrain(own, TINY, out=ckpt, progress=register_after_the_first_save)
    reg, mv, digest = registered[0]
    said = str(refused.value)
    assert (
        f"Checkpoint '{ckpt}' became the foundation model of registered model versions {mv.ref} (candidate)"
        in (said)
    ), said
    assert "saving step 4" in said and "kept as of its last save (step 2)" in said, said
    assert checkpoint_hash(ckpt) == digest and checkpoint_meta(ckpt)["step"] == 2
    assert reg.check_foundation_model(reg.get(mv.ref)) == ckpt  # still loads
    assert _hidden(ckpt.parent) == []  # the refused save's temporary is gone

    # a resumed run checks its saves too (here the last one), naming the step it resumed from
    reg.set_stage(mv.ref, "archived")
    resumed: list[Any] = []

    def register_again(step: int, total: int, loss: float) -> None:
        if step == 3 and not resumed:
            resumed.append(_register_on(own, ckpt)[1])

    cfg = PretrainConfig(**{**TINY.__dict__, "steps": 4})
    with pytest.raises(ConfigError, match=r"saving step 4 .*kept as of its last save \(step 2\)"):
        pretrain(own, cfg, out=ckpt, progress=register_again, warn=lambda _: None)
    assert checkpoint_hash(ckpt) == digest
    # archived versions only: the run goes on (a rollback to them fails, as check_unregistered warns)
    reg.set_stage(resumed[0].ref, "archived")
    done = pretrain(own, cfg, out=ckpt, warn=lambda _: None)
    assert done.step == 4 and checkpoint_hash(ckpt) != digest


def test_leftovers_of_killed_saves_are_not_listed_and_are_removed_at_the_next_save(
    ws: Workspace, tmp_path: Path
) -> None:
    """Found by a review: `.d.99999.tmp` (a save killed by SIGKILL) was listed as a checkpoint ("Checkpoints
    here: .d.99999.tmp, ...") and never removed."""
    from payfm.fm.identity import checkpoint_names

    own = Workspace.open(tmp_path / "ws", create=True)
    shutil.copytree(ws.root, own.root, dirs_exist_ok=True)
    fm = own.root / "fm"
    d = fm / "d"
    pretrain(own, PretrainConfig(**{**TINY.__dict__, "steps": 2}), out=d)
    dead = _dead_pid()
    for stray in (f".d.{dead}.tmp", f".d.{dead}.old", ".d.1.tmp", f".other.{dead}.tmp"):
        shutil.copytree(d, fm / stray)  # a complete copy: config.json there too
    with pytest.raises(ConfigError) as missing:
        checkpoint_meta(fm / "nope")
    assert "Checkpoints here: d." in str(missing.value), str(missing.value)
    assert checkpoint_names(fm) == ["d"]

    pretrain(own, PretrainConfig(**{**TINY.__dict__, "steps": 4}), out=d)  # resumes d and saves it
    # the dead writer's leftovers of d are gone; a live writer's (pid 1) and another name's stay
    assert _hidden(fm) == sorted([".d.1.tmp", f".other.{dead}.tmp"])


def test_a_save_killed_between_its_two_renames_is_put_back(ws: Workspace, tmp_path: Path) -> None:
    """A save swaps by two renames (no atomic swap of a directory): killed outright in between, it leaves no
    fm/<name> and the checkpoint before it as `.<name>.<pid>.old`. Readers say where it is; the next
    pretraining of the name puts it back and resumes it."""
    own = Workspace.open(tmp_path / "ws", create=True)
    shutil.copytree(ws.root, own.root, dirs_exist_ok=True)
    d = own.root / "fm" / "d"
    pretrain(own, PretrainConfig(**{**TINY.__dict__, "steps": 2}), out=d)
    digest = checkpoint_hash(d)
    old = d.with_name(f".d.{_dead_pid()}.old")
    d.rename(old)
    with pytest.raises(
        ConfigError, match=rf"left the checkpoint before it in '{old}': rename that folder to 'd'"
    ):
        checkpoint_meta(d)
    done = pretrain(own, PretrainConfig(**{**TINY.__dict__, "steps": 4}), out=d)
    assert done.step == 4 and len(done.losses) == 4  # resumed from step 2, not started over
    assert not old.exists() and _hidden(d.parent) == [] and checkpoint_hash(d) != digest
