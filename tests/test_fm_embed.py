"""Embeddings: offline batch Parquet and the online embedder agree charge by charge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from payfm.events.workspace import Workspace
from payfm.fm.embed import OnlineEmbedder, embed, embedding_matrix
from payfm.fm.pretrain import PretrainConfig, pretrain
from payfm.fm.sequences import read_charges
from payfm.synth import WorldConfig
from payfm.synth.generator import generate_world


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    torch.set_num_threads(1)
    ws = Workspace.open(Path(tmp_path_factory.mktemp("fmemb")), create=True)
    ws.write_stream(generate_world(WorldConfig(charges=6_000, days=10, seed=6)), "replace")
    cfg = PretrainConfig(seq_len=6, n_layer=2, n_head=2, n_embd=16, batch_size=64, steps=15, seed=1)
    return ws, pretrain(ws, cfg).path


def test_online_embedding_equals_offline(trained: tuple[Workspace, Path]) -> None:
    ws, ckpt = trained
    path, table = embed(ws, ckpt)
    assert pq.read_table(path).num_rows == table.num_rows == ws.count("charges")
    offline = embedding_matrix(table)
    assert offline.shape[1] == 32 and np.isfinite(offline).all()
    online = OnlineEmbedder.load(ckpt)
    charges = read_charges(ws).slice(0, 1500).to_pylist()  # (created, charge_id) order, as served
    worst = 0.0
    for i, charge in enumerate(charges):
        pre_auth = {k: v for k, v in charge.items() if k not in ("outcome", "decline_code")}
        got = online.embed_one(pre_auth)
        worst = max(worst, float(np.abs(got - offline[i]).max()))
        online.learn_one(charge)
    assert worst < 1e-5
    # the embedding depends on the history: a charge with and without its card's past differs
    assert np.abs(offline[:2000] - offline[:2000].mean(axis=0)).max() > 1e-3


def test_outcome_of_the_current_charge_is_ignored(trained: tuple[Workspace, Path]) -> None:
    ws, ckpt = trained
    online = OnlineEmbedder.load(ckpt)
    charges = read_charges(ws).slice(0, 300).to_pylist()
    for charge in charges[:-1]:
        online.learn_one(charge)
    last = charges[-1]
    a = online.embed_one(last | {"outcome": "authorized", "decline_code": None})
    b = online.embed_one(last | {"outcome": "issuer_declined", "decline_code": "stolen_card"})
    assert np.array_equal(a, b)
    c = online.embed_one(last | {"amount_usd": last["amount_usd"] * 1000 + 1})
    assert not np.array_equal(a, c)  # while its pre-authorization fields do count


def test_batch_embedding_with_worker_threads_equals_one_worker(trained: tuple[Workspace, Path]) -> None:
    from payfm.fm.embed import embed_sequences
    from payfm.fm.pretrain import load_checkpoint
    from payfm.fm.sequences import build_sequences

    ws, ckpt = trained
    model, tok, _ = load_checkpoint(ckpt)
    seqs = build_sequences(read_charges(ws), tok, model.config.seq_len)
    rows = np.arange(len(seqs))[::-1]  # any order of rows
    one = embed_sequences(model, seqs, rows, batch_size=64)
    two = embed_sequences(model, seqs, rows, batch_size=64, workers=2)
    assert one.shape == (len(seqs), 32) and np.allclose(one, two, atol=1e-6)
    assert torch.get_num_threads() == 1  # the caller's torch threads are restored


def test_online_surprise_equals_offline_and_the_model_s_own_prediction(
    trained: tuple[Workspace, Path],
) -> None:
    from payfm.fm.embed import SURPRISE_FIELDS
    from payfm.fm.tokenizer import FIELDS, MASK

    ws, ckpt = trained
    _, table = embed(ws, ckpt, outputs=("embedding", "surprise"))
    offline = embedding_matrix(table, "surprise")
    assert offline.shape[1] == 2 * (len(FIELDS) - 1) and (offline >= 0).all()
    assert np.array_equal(embedding_matrix(table), embedding_matrix(embed(ws, ckpt)[1]))
    online = OnlineEmbedder.load(ckpt)
    charges = read_charges(ws).slice(0, 800).to_pylist()
    worst = 0.0
    for i, charge in enumerate(charges):
        x = online.inputs_then_learn(charge)
        got = online.fm_inputs(x, ("surprise",))
        worst = max(worst, float(np.abs(got - offline[i]).max()))
        if i in (0, 50, 799):  # against the full forward pass: the target masked whole, -log softmax
            masked = torch.from_numpy(x.copy())
            truth = masked[0, :, -1, :].clone()
            masked[0, :, -1, :] = MASK
            with torch.inference_mode():
                logits, _ = online.model(masked)  # (1, V, K, sum(vocab))
            parts = logits[0, :, -1].split(list(online.model.config.vocab_sizes), dim=-1)
            want = [
                -torch.log_softmax(parts[f][v], -1)[truth[v, f]].item()
                for v in range(2)
                for f in SURPRISE_FIELDS
            ]
            assert np.allclose(got, want, atol=1e-5)
        both = online.fm_inputs(x, ("embedding", "surprise"))
        assert np.array_equal(both, np.concatenate([online.fm_inputs(x), got]))
    assert worst < 1e-5
    # the surprise depends on the charge's history: a card's first charge is scored differently later on
    assert np.abs(offline - offline.mean(axis=0)).max() > 0.5
