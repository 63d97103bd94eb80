"""`fm evaluate` and its training window (before the --train-frac cut): refused before any work on the
sequences when the GBDTs have nothing to learn there, and the detector's skip says what holds no attack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.fm import downstream
from payfm.fm.downstream import DownstreamConfig, evaluate_embeddings
from payfm.fm.pretrain import PretrainConfig, pretrain
from payfm.fm.sequences import time_cut
from payfm.synth import WorldConfig
from payfm.synth.generator import generate_world
from test_fm_downstream import _features

TINY = PretrainConfig(seq_len=4, n_layer=1, n_head=2, n_embd=8, batch_size=32, steps=1)
FAST = DownstreamConfig(n_estimators=5, resamples=2, finetune_steps=0, detector_steps=1, gbdt_seeds=1)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """2,000 charges over 6 days: authorized frauds labelled from the 40th charge, card-testing attacks
    (bursts at a merchant) only after the middle of the log."""
    torch.set_num_threads(1)
    w = Workspace.open(Path(tmp_path_factory.mktemp("fmwin")), create=True)
    w.write_stream(generate_world(WorldConfig(charges=2_000, days=6, seed=8, fraud_rate=0.03)), "replace")
    return w


def _checkpoint(ws: Workspace, frac: float, out: Path) -> Path:
    return pretrain(ws, PretrainConfig(**{**TINY.__dict__, "until_us": time_cut(ws, frac)}), out=out).path


def test_no_fraud_to_fit_on_is_refused_before_any_work_on_the_sequences(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: `fm evaluate --train-frac 0.01` (no fraud in the training window) failed only after
    every embedding, in LightGBM ("GBDTModel.fit: expected labels 0 and 1, both present"); docs/fm.md
    promised an early refusal naming --train-frac."""
    ckpt = _checkpoint(ws, 0.015, tmp_path / "early")

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("work on the sequences before the windows were checked")

    monkeypatch.setattr(downstream, "build_sequences", never)
    monkeypatch.setattr(downstream, "embed_sequences", never)
    cfg = DownstreamConfig(**{**FAST.__dict__, "train_frac": 0.015})
    with pytest.raises(ConfigError) as e:
        evaluate_embeddings(ws, ckpt, cfg, features=_features(ws))
    said = str(e.value)
    cut = str(np.datetime64(time_cut(ws, 0.015), "us")) + "Z"
    assert said.startswith("Evaluation: expected fraud and genuine charges among the ") and (
        "authorized charges (--train-on authorized) the GBDTs are fitted on" in said
    ), said
    assert f"the training window before {cut}" in said and "Got no fraud" in said, said
    assert said.endswith("take a larger --train-frac (now 0.015)."), said
    all_charges = DownstreamConfig(**{**cfg.__dict__, "train_on": "all"})
    with pytest.raises(ConfigError, match=r"among the \d+ charges the GBDTs are fitted on .*Got no fraud"):
        evaluate_embeddings(ws, ckpt, all_charges, features=_features(ws))


def test_a_training_window_without_attacks_is_named_as_such(ws: Workspace, tmp_path: Path) -> None:
    """Found by a review: with no card-testing attack before the cut, the detector's skip said "the log holds
    no card-testing attack (its scenario labels name none)" while the log and the test window held many."""
    ckpt = _checkpoint(ws, 0.5, tmp_path / "half")
    report = evaluate_embeddings(
        ws, ckpt, DownstreamConfig(**{**FAST.__dict__, "train_frac": 0.5}), features=_features(ws)
    )
    attacks = report.scores["gbdt"]["card_testing_attacks"].positives
    assert attacks > 0 and "ct-detector" not in report.scores and "ct-hand" not in report.scores
    cut = str(np.datetime64(time_cut(ws, 0.5), "us")) + "Z"
    assert report.skipped == (
        "the card-testing detector and its control ct-hand: the training window (the charges before "
        f"{cut}, --train-frac 0.5) holds no card-testing attack to fit them on, while the test window after "
        f"it holds {attacks:,} attack charges: take a larger --train-frac",
    )
    assert "the log holds no" not in report.skipped[0]
