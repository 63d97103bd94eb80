"""The batch embedding's fast paths compute what the plain padded forward pass computes.

The batch path groups (charge, view) sequences by length and runs each group without its left padding
(``FoundationModel.embed_windows``); the last layer computes only the target's query. Both are exact in
the math (padding is masked, other queries are unused); these tests hold them to the plain path within
float rounding, on real sequences of a synthetic world and on the gradient that fine-tuning takes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from payfm.events.workspace import Workspace
from payfm.fm.embed import embed_sequences
from payfm.fm.model import FMConfig, FoundationModel
from payfm.fm.sequences import Sequences, build_sequences, read_charges
from payfm.fm.tokenizer import MASK, OUTCOME_FIELD, PAD, Tokenizer
from payfm.synth import WorldConfig
from payfm.synth.generator import generate_world

K = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[FoundationModel, Sequences]:
    torch.set_num_threads(1)
    ws = Workspace.open(Path(tmp_path_factory.mktemp("fmspeed")), create=True)
    ws.write_stream(generate_world(WorldConfig(charges=3_000, days=5, seed=8)), "replace")
    charges = read_charges(ws)
    tok = Tokenizer.fit(charges)
    torch.manual_seed(3)
    model = FoundationModel(FMConfig(vocab_sizes=tuple(tok.vocab_sizes()), seq_len=K, n_head=4, n_embd=16))
    with torch.no_grad():  # weights far from the tiny initial ones, so that a wrong path shows
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.eval(), build_sequences(charges, tok, K)


def plain(model: FoundationModel, seqs: Sequences, rows: np.ndarray) -> np.ndarray:
    """The reference: every query of every layer over the padded (B, V, K, F) batch, the last state taken."""
    with torch.inference_mode():
        h = model.encode(torch.from_numpy(seqs.batch(rows)))  # (B, V, K, C)
    out: np.ndarray = h[:, :, -1, :].reshape(len(rows), -1).numpy()
    return out


def test_windows_are_the_batch_without_its_padding(world: tuple[FoundationModel, Sequences]) -> None:
    _, seqs = world
    rows = np.arange(len(seqs))[::7]
    x = seqs.batch(rows)  # (B, V, K, F)
    lengths = seqs.lengths(rows)  # (B, V)
    real = (x != PAD).any(axis=-1)  # (B, V, K)
    assert (lengths == real.sum(axis=-1)).all()
    assert set(np.unique(lengths)) >= {1, K}  # new keys and full histories both occur in this world
    many = np.tile(rows, 160)  # more rows than one chunk of lengths()
    assert np.array_equal(seqs.lengths(many), np.tile(lengths, (160, 1)))
    for v in range(x.shape[1]):
        for t in np.unique(lengths[:, v]):
            sel = np.flatnonzero(lengths[:, v] == t)
            w = seqs.windows(rows[sel], np.full(len(sel), v), int(t))  # (S, t, F)
            assert np.array_equal(w, x[sel, v, K - t :])
            assert (x[sel, v, : K - t] == PAD).all()  # what the window leaves out is only padding
            assert (w[:, -1, OUTCOME_FIELD] == MASK).all()


def test_batch_embedding_equals_the_plain_padded_pass(world: tuple[FoundationModel, Sequences]) -> None:
    model, seqs = world
    rows = np.random.default_rng(0).permutation(len(seqs))[:1500]  # any order of rows
    ref = plain(model, seqs, rows)
    assert np.abs(ref).max() > 0.5  # not a degenerate model
    with torch.inference_mode():
        embed_padded = model.embed(torch.from_numpy(seqs.batch(rows))).numpy()  # last-layer query only
    got = embed_sequences(model, seqs, rows, batch_size=16)  # many short passes per length
    assert got.shape == ref.shape == (len(rows), 2 * 16)
    assert np.abs(embed_padded - ref).max() < 1e-5
    assert np.abs(got - ref).max() < 1e-5
    two = embed_sequences(model, seqs, rows, batch_size=16, workers=2)
    assert np.array_equal(got, two)  # the same passes, whichever thread runs them
    assert embed_sequences(model, seqs, np.arange(0)).shape == (0, 32)


def test_windows_with_padding_left_in_are_masked(world: tuple[FoundationModel, Sequences]) -> None:
    model, seqs = world
    rows = np.arange(len(seqs))[:400]
    x = torch.from_numpy(seqs.batch(rows))  # (B, V, K, F), padded
    views = torch.arange(2).repeat(len(rows))  # (B*V,)
    with torch.inference_mode():
        got = model.embed_windows(x.reshape(-1, K, x.size(-1)), views).reshape(len(rows), -1).numpy()
    assert np.abs(got - plain(model, seqs, rows)).max() < 1e-5


def test_embedding_gradient_equals_the_full_pass(world: tuple[FoundationModel, Sequences]) -> None:
    """Fine-tuning backpropagates through ``embed``: the last layer's query-only path gives the same grads."""
    model, seqs = world
    x = torch.from_numpy(seqs.batch(np.arange(64)))
    grads = []
    for fast in (True, False):
        model.zero_grad()
        h = model.embed(x) if fast else model.encode(x)[:, :, -1, :].reshape(len(x), -1)
        (h * torch.linspace(-1, 1, h.size(1))).sum().backward()  # type: ignore[no-untyped-call]
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]))
    assert grads[0].shape == grads[1].shape and grads[0].abs().max() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_a_long_arrow_column_is_tokenized_as_value_by_value() -> None:
    """The distinct-value path (long Arrow columns) gives the per-value tokens: known, unknown (OOV), null."""
    from payfm.fm.tokenizer import _DISTINCT_FROM, NULL, OOV, Tokenizer

    rng = np.random.default_rng(0)
    n = 4 * _DISTINCT_FROM
    values = [None if r < 0.1 else f"v{int(r * 1000) % 37}" for r in rng.random(n)]
    tok = Tokenizer.fit({"merchant_mcc": values[:50], "amount_usd": list(range(50))}, max_vocab=5)
    column = pa.chunked_array([pa.array(values[: n // 2]), pa.array(values[n // 2 :])])
    fast = tok.encode_field("merchant_mcc", column)
    slow = tok.encode_field("merchant_mcc", values)  # a list: one lookup per value
    assert np.array_equal(fast, slow)
    # a dictionary column with unsigned 8-bit indices (an imported Parquet file can hold one)
    small = pa.array(values).dictionary_encode().cast(pa.dictionary(pa.uint8(), pa.string()))
    assert np.array_equal(tok.encode_field("merchant_mcc", small), slow)
    assert {NULL, OOV} <= set(fast.tolist()) and len(set(fast.tolist())) > 2
