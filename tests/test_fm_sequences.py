"""Tokenizer and point-in-time sequences of the foundation model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.fm.sequences import VIEWS, build_sequences, read_charges, window_index
from payfm.fm.tokenizer import DT_FIELD, FIELDS, MASK, NULL, OOV, OUTCOME_FIELD, PAD, Tokenizer
from payfm.synth import WorldConfig
from payfm.synth.generator import generate_world


@pytest.fixture(scope="module")
def charges(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    ws = Workspace.open(Path(tmp_path_factory.mktemp("fmseq")), create=True)
    ws.write_stream(generate_world(WorldConfig(charges=20_000, days=20, seed=3, fraud_rate=0.02)), "replace")
    return read_charges(ws)


def test_tokenizer_vocab_oov_null_and_version(charges: pa.Table) -> None:
    tok = Tokenizer.fit(charges, max_vocab=5)
    assert len(tok.vocab["merchant_country"]) == 5
    top = tok.vocab["merchant_country"][0]
    ids = tok.encode_field("merchant_country", pa.array([top, "ZZ", None]))
    assert ids.tolist() == [4, OOV, NULL]
    again = Tokenizer.from_json(tok.to_json())
    assert again.version == tok.version
    assert Tokenizer.fit(charges, max_vocab=6).version != tok.version
    amounts = charges["amount_usd"].to_numpy()
    bins = tok.encode(charges, charges["created_us"].to_numpy(), np.full(len(amounts), -1))[
        :, FIELDS.index("amount")
    ]
    assert np.all(np.diff(bins[np.argsort(amounts)]) >= 0)  # quantile bins are monotone in the amount


def test_window_index_is_per_key_and_left_padded() -> None:
    assert window_index(np.array([5, 5, 5, 7, 7]), 3).tolist() == [
        [-1, -1, 0],
        [-1, 0, 1],
        [0, 1, 2],
        [-1, -1, 3],
        [-1, 3, 4],
    ]


def test_sequences_are_point_in_time(charges: pa.Table) -> None:
    tok = Tokenizer.fit(charges)
    k = 6
    seqs = build_sequences(charges, tok, k)
    n = len(seqs)
    keys = [charges[c].to_numpy(zero_copy_only=False) for c in VIEWS]
    for v in range(len(VIEWS)):
        idx = seqs.index[:, v, :]  # (N, K)
        assert (idx[:, -1] == np.arange(n)).all()  # the target is last
        real = idx < n
        rows = np.broadcast_to(np.arange(n)[:, None], idx.shape)
        # only earlier charges (in (created, charge_id) order) of the same key, in order
        assert (idx[real] <= rows[real]).all()
        assert (keys[v][idx[real]] == keys[v][rows[real]]).all()
        assert (np.diff(np.where(real, idx, -1), axis=1)[real[:, 1:]] > 0).all()
        # the window is full whenever the key has k earlier charges: nothing is skipped
        count_before = np.zeros(n, dtype=int)
        order = np.lexsort((np.arange(n), keys[v]))
        sk = keys[v][order]
        pos = np.arange(n) - np.searchsorted(sk, sk, side="left")
        count_before[order] = pos
        assert (real.sum(axis=1) == np.minimum(count_before + 1, k)).all()
    x = seqs.batch(np.arange(n))
    assert (x[:, :, -1, OUTCOME_FIELD] == MASK).all()  # the target's outcome is never an input
    history = x[:, :, :-1, OUTCOME_FIELD]
    assert ((history == PAD) | (history >= 4)).all()  # earlier charges keep their outcome
    assert ((x[..., DT_FIELD] == PAD) | (x[..., DT_FIELD] == NULL) | (x[..., DT_FIELD] >= 4)).all()


def test_pretraining_predicts_the_target_charges_real_outcome(charges: pa.Table) -> None:
    from payfm.fm.pretrain import mask_batch

    tok = Tokenizer.fit(charges)
    seqs = build_sequences(charges, tok, 5)
    rows = np.arange(0, charges.num_rows, 7)
    raw = seqs.batch(rows, mask_outcome=False)
    x, y = mask_batch(raw, np.random.default_rng(0), 0.15, 0.1)
    assert (x[:, :, -1, OUTCOME_FIELD] == MASK).all()  # never an input
    target = y[:, :, -1, OUTCOME_FIELD]
    # the target is the charge's own outcome token (an audit found MASK there: the model learned nothing)
    assert np.array_equal(target, raw[:, :, -1, OUTCOME_FIELD]) and (target >= 4).all()
    assert len(np.unique(target)) > 1  # authorized and declined both present
    masked = raw.copy()
    masked[:, :, -1, OUTCOME_FIELD] = MASK
    assert np.array_equal(seqs.batch(rows), masked)  # embedding and fine-tuning: masked, as before


def test_the_weekday_is_the_merchants_local_one_as_the_hour_is() -> None:
    from payfm.fm.tokenizer import N_SPECIAL

    tok = Tokenizer.fit(pa.table({"amount_usd": [100, 200], "merchant_country": ["US", "JP"]}))
    friday_evening_ny = 1_788_566_400_000_000 + 1 * 3_600_000_000  # Sat 2026-09-05 01:00 UTC = Fri 20:00
    hour, weekday = FIELDS.index("hour"), FIELDS.index("weekday")
    cols = {"amount_usd": [100], "merchant_country": ["US"]}
    t = np.array([friday_evening_ny])
    out = tok.encode(cols, t, np.array([-1]))
    assert out[0, hour] - N_SPECIAL == 20 and out[0, weekday] - N_SPECIAL == 4  # Friday (Monday = 0)
    # a tokenizer of an older checkpoint (no "weekday" in its JSON) keeps the UTC weekday it was trained on
    old_json = {k: v for k, v in tok.to_json().items() if k != "weekday"}
    old = Tokenizer.from_json(old_json)
    assert not old.local_weekday and old.encode(cols, t, np.array([-1]))[0, weekday] - N_SPECIAL == 5
    assert Tokenizer.from_json(tok.to_json()).local_weekday and old.version != tok.version
    with pytest.raises(ConfigError, match=r"'weekday' to be 'local' or 'utc' \(absent: 'utc'\)\. Got 'x'"):
        Tokenizer.from_json(old_json | {"weekday": "x"})


def test_later_charges_never_change_earlier_sequences(charges: pa.Table) -> None:
    tok = Tokenizer.fit(charges)
    full = build_sequences(charges, tok, 5)
    cut = charges.num_rows // 2
    part = build_sequences(charges.slice(0, cut), tok, 5)
    rows = np.arange(cut)
    assert np.array_equal(full.batch(rows), part.batch(rows))


def test_history_tokens_against_a_brute_force(charges: pa.Table) -> None:
    from payfm.fm.sequences import OTHER, REL_KEYS
    from payfm.fm.tokenizer import COUNT_FIELDS, REL_FIELD

    sub = charges.slice(0, 3000)
    seqs = build_sequences(sub, Tokenizer.fit(sub), 4)
    rows = sub.to_pylist()
    tokens = seqs.tokens  # (V, N + 1, F)
    for name, col in COUNT_FIELDS.items():
        seen: dict[object, int] = {}
        f = FIELDS.index(name)
        for i, r in enumerate(rows):
            key = r[col]
            want = NULL if key is None else 4 + min(int(np.floor(np.log2(seen.get(key, 0) + 1))), 11)
            assert tokens[0, i, f] == tokens[1, i, f] == want, (name, i)
            if key is not None:
                seen[key] = seen.get(key, 0) + 1
    for v, key_col in enumerate(VIEWS):
        last: dict[object, dict[str, object]] = {}
        for i, r in enumerate(rows):
            prev = last.get(r[key_col])
            if prev is None:
                want = NULL
            else:
                bits = [prev[c] is not None and prev[c] == r[c] for c in (*REL_KEYS, OTHER[key_col])]
                want = 4 + bits[0] + 2 * bits[1] + 4 * bits[2]
            assert tokens[v, i, REL_FIELD] == want, (key_col, i)
            last[r[key_col]] = r
    # a card-testing-like history shows: some charges share the previous charge's IP, many cards are new
    assert (tokens[1, :-1, REL_FIELD] > 4).any() and (tokens[0, :-1, FIELDS.index("card_n")] == 4).any()
    cred = tokens[0, :-1, FIELDS.index("cred")]
    assert ((cred == NULL) | (cred >= 4)).all() and (cred >= 4).any()
