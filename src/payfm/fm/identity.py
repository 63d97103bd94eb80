"""The identity of a foundation-model checkpoint: a content hash, and the names of its embedding columns.

Models that take embeddings as inputs depend on one exact checkpoint: the registry records its hash next to
them and refuses to promote or load them against another (:mod:`payfm.registry.store`). The hash covers
what determines an embedding: the weights, the tokenizer and the model config; not the optimizer state,
the training losses or the step count. No torch import: the registry checks hashes cheaply.

Example::

    checkpoint_hash(ws.root / "fm" / "default")  # '3f1c...' (64 hex digits)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from payfm.errors import ConfigError

EMBEDDING_PREFIX = "fm.emb_"


def checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's ``config.json`` (a clear error when there is no checkpoint at ``path``)."""
    root = Path(path)
    if not (root / "config.json").is_file():
        raise ConfigError(
            f"No foundation-model checkpoint at '{root}': expected config.json. Run `payfm fm pretrain`."
        )
    meta: dict[str, Any] = json.loads((root / "config.json").read_text())
    return meta


def checkpoint_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 over a checkpoint's weights, tokenizer and model config (64 hex digits)."""
    root = Path(path)
    meta = checkpoint_meta(root)
    h = hashlib.sha256()
    for name in ("model.safetensors", "tokenizer.json"):
        h.update(name.encode() + b"\0" + hashlib.sha256((root / name).read_bytes()).digest())
    h.update(json.dumps(meta["model"], sort_keys=True).encode())
    return h.hexdigest()


def embedding_dims(meta: dict[str, Any]) -> int:
    """Width of a checkpoint's charge embedding (views x channels), from its ``config.json``."""
    model = meta["model"]
    return int(model["n_views"]) * int(model["n_embd"])


def embedding_names(dims: int) -> list[str]:
    """Column names of the embedding dimensions as model inputs: ``fm.emb_0`` ... ``fm.emb_<dims-1>``."""
    return [f"{EMBEDDING_PREFIX}{i}" for i in range(dims)]
