"""Charge embeddings from a pretrained foundation model: offline in batch, online one charge at a time.

Offline, :func:`embed` builds every charge's point-in-time sequences from the event log and writes
``charge_id``, ``created`` and ``embedding`` (fixed-size list of float32) to Parquet. Online,
:class:`OnlineEmbedder` keeps the last K-1 tokenized charges of every card and merchant (a deque per key) and
embeds a charge from that state and the charge's pre-authorization fields; after the decision, ``learn_one``
adds the charge with its outcome. Fed the charges in (created, charge_id) order, it returns the offline
embedding of every charge (within float rounding; tests/test_fm_embed.py checks 1e-5).

Example::

    path = embed(Workspace.open("payfm-workspace"), checkpoint_dir(ws))
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from payfm.events.workspace import Workspace
from payfm.fm.model import FoundationModel
from payfm.fm.pretrain import load_checkpoint
from payfm.fm.sequences import VIEWS, Sequences, build_sequences, read_charges
from payfm.fm.tokenizer import COLUMNS, DT_FIELD, MASK, OUTCOME_FIELD, PAD, Tokenizer, dt_tokens


def embed_sequences(
    model: FoundationModel, sequences: Sequences, rows: np.ndarray | None = None, batch_size: int = 4096
) -> np.ndarray:
    """(n, D) float32 embeddings of the charges ``rows`` (default all) of ``sequences``."""
    rows = np.arange(len(sequences)) if rows is None else rows
    device = next(model.parameters()).device
    out = np.empty((len(rows), model.config.n_views * model.config.n_embd), dtype=np.float32)
    with torch.inference_mode():
        for i in range(0, len(rows), batch_size):
            x = torch.from_numpy(sequences.batch(rows[i : i + batch_size])).to(device)
            out[i : i + batch_size] = model.embed(x).float().cpu().numpy()
    return out


def embed(
    ws: Workspace, checkpoint: str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None
) -> tuple[Path, pa.Table]:
    """Embed all charges of ``ws``; write Parquet (default ``fm/<checkpoint name>.embeddings.parquet``)."""
    model, tokenizer, _ = load_checkpoint(checkpoint)
    charges = read_charges(ws)
    seqs = build_sequences(charges, tokenizer, model.config.seq_len)
    vectors = embed_sequences(model, seqs)
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    table = pa.table(
        {
            "charge_id": seqs.charge_id,
            "created": pa.array(seqs.created_us, type=pa.timestamp("us", tz="UTC")),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        }
    )
    path = Path(out) if out else ws.root / "fm" / f"{Path(checkpoint).name}.embeddings.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path, table


def embedding_matrix(table: pa.Table) -> np.ndarray:
    """(n, D) float32 of an embeddings table's ``embedding`` column."""
    col = table["embedding"].combine_chunks()
    out: np.ndarray = col.values.to_numpy().reshape(len(col), col.type.list_size)
    return out


def _created_us(charge: Mapping[str, Any]) -> int:
    if "created_us" in charge:
        return int(charge["created_us"])
    created = charge["created"]
    if not isinstance(created, datetime) or created.tzinfo is None:
        raise ValueError(f"OnlineEmbedder: expected 'created' as a timezone-aware datetime. Got {created!r}.")
    return int(pa.scalar(created, type=pa.timestamp("us", tz="UTC")).cast(pa.int64()).as_py())


class OnlineEmbedder:
    """In-process online state (last K-1 charges per card and per merchant) and single-charge embedding."""

    def __init__(self, model: FoundationModel, tokenizer: Tokenizer) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.k = model.config.seq_len
        # view -> key -> (tokens of the key's last K-1 charges, created_us of its last charge)
        self.state: list[dict[str, tuple[deque[np.ndarray], int]]] = [{} for _ in VIEWS]

    @classmethod
    def load(cls, checkpoint: str | os.PathLike[str]) -> OnlineEmbedder:
        model, tokenizer, _ = load_checkpoint(checkpoint)
        return cls(model, tokenizer)

    def _tokens(self, charge: Mapping[str, Any]) -> tuple[int, np.ndarray]:
        created = _created_us(charge)
        cols = {c: [charge.get(c)] for c in COLUMNS}
        base = self.tokenizer.encode(cols, np.array([created]), np.array([-1]))[0]  # (F,)
        return created, base

    def _view_row(self, base: np.ndarray, created: int, v: int, key: str) -> np.ndarray:
        entry = self.state[v].get(key)
        prev = entry[1] if entry is not None else -1
        row = base.copy()
        row[DT_FIELD] = dt_tokens(np.array([created]), np.array([prev]))[0]
        return row

    def embed_one(self, charge: Mapping[str, Any]) -> np.ndarray:
        """The embedding (D,) of a charge about to be decided (its outcome, if given, is ignored)."""
        created, base = self._tokens(charge)
        x = np.full((1, len(VIEWS), self.k, len(base)), PAD, dtype=np.int64)  # (1, V, K, F)
        for v, key_col in enumerate(VIEWS):
            key = str(charge[key_col])
            entry = self.state[v].get(key)
            history = list(entry[0]) if entry is not None else []
            if history:
                x[0, v, self.k - 1 - len(history) : self.k - 1] = np.stack(history)
            x[0, v, -1] = self._view_row(base, created, v, key)
        x[:, :, -1, OUTCOME_FIELD] = MASK
        with torch.inference_mode():
            out: np.ndarray = self.model.embed(torch.from_numpy(x)).numpy()[0]
        return out

    def learn_one(self, charge: Mapping[str, Any]) -> None:
        """Add a decided charge (with ``outcome`` and ``decline_code``) to its card's and merchant's state."""
        created, base = self._tokens(charge)
        for v, key_col in enumerate(VIEWS):
            key = str(charge[key_col])
            row = self._view_row(base, created, v, key)
            entry = self.state[v].get(key)
            history = entry[0] if entry is not None else deque(maxlen=self.k - 1)
            history.append(row)
            self.state[v][key] = (history, created)
