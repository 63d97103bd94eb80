"""Pretraining: determinism, resume = uninterrupted (DDP under torchrun: tests/test_fm_torchrun.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from payfm.events.workspace import Workspace
from payfm.fm.pretrain import PretrainConfig, load_checkpoint, pretrain
from payfm.synth import WorldConfig
from payfm.synth.generator import generate_world

CFG = PretrainConfig(
    seq_len=5, n_layer=1, n_head=2, n_embd=16, batch_size=32, steps=6, max_charges=3000, seed=4
)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    torch.set_num_threads(1)
    w = Workspace.open(Path(tmp_path_factory.mktemp("fmpre")), create=True)
    w.write_stream(generate_world(WorldConfig(charges=5_000, days=10, seed=5)), "replace")
    return w


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def test_pretraining_learns_and_is_deterministic(ws: Workspace, tmp_path: Path) -> None:
    a = pretrain(ws, CFG.__class__(**{**CFG.__dict__, "steps": 40, "lr": 1e-2}), out=tmp_path / "a")
    assert sum(a.losses[-5:]) / 5 < 0.8 * sum(a.losses[:5]) / 5  # the objective goes down
    b = pretrain(ws, CFG, out=tmp_path / "b")
    c = pretrain(ws, CFG, out=tmp_path / "c")
    wb, wc = _weights(b.path), _weights(c.path)
    assert all(torch.equal(wb[k], wc[k]) for k in wb)
    model, tok, meta = load_checkpoint(b.path)
    assert meta["tokenizer_version"] == tok.version and meta["step"] == 6
    assert model.config.seq_len == 5


def test_resume_equals_uninterrupted(ws: Workspace, tmp_path: Path) -> None:
    full = pretrain(ws, CFG, out=tmp_path / "full")
    part = pretrain(ws, CFG, out=tmp_path / "part", stop_at=3)
    assert part.step == 3
    resumed = pretrain(ws, CFG, out=tmp_path / "part")  # picks up at step 3 with the optimizer state
    assert resumed.step == 6
    wf, wr = _weights(full.path), _weights(resumed.path)
    assert all(torch.allclose(wf[k], wr[k], atol=1e-6) for k in wf)
    assert resumed.losses == pytest.approx(full.losses, abs=1e-6)


def test_losses_read_back_in_batches_are_the_same_losses(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU the losses are read back every few steps, not at every step (each read waits for the
    device); the losses, the weights and the progress's last figure must be the ones of a run that reads
    every step, the last partial group included."""
    import payfm.fm.pretrain as module

    each = pretrain(ws, CFG, out=tmp_path / "each")
    monkeypatch.setattr(module, "losses_read_every", lambda device: 4)  # 6 steps: a group of 4, then 2
    seen: list[tuple[int, int, float]] = []
    grouped = pretrain(ws, CFG, out=tmp_path / "grouped", progress=lambda *a: seen.append(a))
    assert grouped.losses == each.losses and len(grouped.losses) == 6
    wa, wb = _weights(each.path), _weights(grouped.path)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [s for s, _, _ in seen] == [1, 2, 3, 4, 5, 6]  # every step, the loss as last read
    assert all(math.isnan(loss) for _, _, loss in seen[:3]) and seen[3][2] == sum(each.losses[:4]) / 4
    assert seen[-1][2] == sum(each.losses) / 6


def test_pretraining_takes_the_targets_from_the_unmasked_outcome(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an audit: the batch handed to mask_batch had the target's outcome masked already, so the
    target there was MASK. Pretraining now hands it the real outcome (mask_batch masks the input)."""
    import numpy as np

    from payfm.fm import pretrain as pretrain_module
    from payfm.fm.tokenizer import MASK, OUTCOME_FIELD

    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real = pretrain_module.mask_batch

    def spy(x: np.ndarray, *args: object) -> tuple[np.ndarray, np.ndarray]:
        inputs, targets = real(x, *args)  # type: ignore[arg-type]
        seen.append((inputs, targets))
        return inputs, targets

    monkeypatch.setattr(pretrain_module, "mask_batch", spy)
    pretrain(ws, CFG.__class__(**{**CFG.__dict__, "steps": 2}), out=tmp_path / "t")
    inputs, targets = seen[0]
    assert (inputs[:, :, -1, OUTCOME_FIELD] == MASK).all()  # never an input
    assert (targets[:, :, -1, OUTCOME_FIELD] >= 4).all()  # always a real outcome to predict


def test_an_epoch_is_its_full_batches(ws: Workspace, tmp_path: Path) -> None:
    """An epoch's order is cut into n // batch full batches: one epoch of 1,045 rows at batch 64 is 16
    steps (17 ran the last one into the next epoch's order, and 21 rows were never seen)."""
    cfg = CFG.__class__(**{**CFG.__dict__, "steps": None, "epochs": 1, "batch_size": 64, "max_charges": 1045})
    done = pretrain(ws, cfg, out=tmp_path / "e")
    assert done.step == 1045 // 64 == 16
