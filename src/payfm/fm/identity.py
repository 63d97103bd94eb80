"""The identity of a foundation-model checkpoint: a content hash, and the names of its output columns.

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
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from payfm.errors import ConfigError
from payfm.events.cards import name_holds_card_number

EMBEDDING_PREFIX = "fm.emb_"
SURPRISE_PREFIX = "fm.surprise_"
# What a model can take from a checkpoint, per charge (docs/fm.md): "embedding", the target charge's final
# state in every view (V * C floats); "surprise", -log p(value | history) of each pre-authorization field in
# every view (V * S floats).
OUTPUTS = ("embedding", "surprise")
VIEW_NAMES = ("card", "merchant")  # payfm.fm.sequences.VIEWS, in model order
# A checkpoint's name (`fm/<name>/` of a workspace): the registry's rule for model names, at most 64
# characters. No '/' or '.': a name is one directory inside fm/, never fm/ itself ('', '.'), a parent
# ('..'), a hidden temporary (.<name>.<pid>.tmp) or one of the files beside the checkpoints
# (<name>.embeddings.parquet, <name>.evaluation.json).
NAME_RULE = "lower-case letters, digits, '_' or '-', starting with a letter or digit, at most 64 characters"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# What each file of a checkpoint holds (for the error when one is missing or damaged)
CHECKPOINT_FILES = {
    "model.safetensors": "the model's weights (safetensors)",
    "optimizer.safetensors": "the AdamW state (safetensors)",
    "tokenizer.json": "the fitted tokenizer (JSON)",
    "config.json": "the model's and the run's config (a JSON object)",
}


def check_name(name: str, option: str = "--name", exists: bool = False) -> str:
    """``name`` after checking it is a valid checkpoint name (:data:`NAME_RULE`); a one-line error naming
    ``option`` (the caller's: ``--name``, ``--fm``) otherwise. A checkpoint that ``exists`` already, named
    before the rule (payfm before 2026-12-05 took any name: ``CardFM.v1``), keeps its name as long as it is
    one folder inside fm/ (:func:`one_folder`): never fm/ itself, a parent or a hidden temporary."""
    if name_holds_card_number(name):  # a folder name, printed and recorded in the registry: never a PAN
        raise ConfigError(f"The checkpoint name {option} must not hold a card number (PAN).")
    if _NAME.fullmatch(name) or (exists and one_folder(name)):  # (named before the rule: kept)
        return name
    raise ConfigError(f"The checkpoint name {option} must be {NAME_RULE}. Got {name!r}.")


def one_folder(name: str) -> bool:
    """Whether ``name`` names one folder inside fm/: not empty, '.' or '..', no path separator, no leading
    dot (the writers' temporaries), no control character."""
    return (
        bool(name)
        and name not in (".", "..")
        and not name.startswith(".")
        and name.isprintable()
        and not (set(name) & {"/", "\\"})
    )


def checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's ``config.json`` (a clear error when there is no checkpoint at ``path``, or when its
    config.json is not a JSON object with the model's config)."""
    root = Path(path)
    if not (root / "config.json").is_file():
        raise missing_checkpoint(root)
    try:
        meta = json.loads((root / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged_checkpoint(root, "config.json", e) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        got = "an object without 'model'" if isinstance(meta, dict) else f"a JSON {type(meta).__name__}"
        raise damaged_checkpoint(root, "config.json", got)
    return meta


def missing_checkpoint(root: Path) -> ConfigError:
    """The error for no checkpoint at ``root``, naming the checkpoints beside it."""
    others = sorted(p.name for p in root.parent.glob("*") if (p / "config.json").is_file())
    have = f"Checkpoints here: {', '.join(others)}." if others else "There is none yet."
    return ConfigError(
        f"No foundation-model checkpoint at '{root}': expected config.json. {have} "
        "Run `payfm fm pretrain --name NAME` to make one."
    )


def damaged_checkpoint(root: Path, file: str, got: object) -> ConfigError:
    """The error for a checkpoint whose ``file`` is missing or unreadable (an interrupted copy, a full disk):
    names the checkpoint, the file and what it should hold; ``got`` is the exception (or words) received."""
    what = "no such file" if isinstance(got, FileNotFoundError) else _first_line(got)
    return ConfigError(
        f"Checkpoint '{root}': expected {file} holding {CHECKPOINT_FILES[file]}. Got {what}: the checkpoint "
        f"is incomplete or damaged; restore it, or pretrain it again (`payfm fm pretrain --name {root.name} "
        "--fresh`, refused while a registered model takes it)."
    )


def _first_line(got: object) -> str:
    text = str(got).strip().splitlines()
    return (text[0] if text else type(got).__name__)[:200]


def seen_until(meta: dict[str, Any]) -> int | None:
    """The end (exclusive, microseconds) of the charges a checkpoint's weights have seen over all its runs;
    None when it cannot be told (a checkpoint from before this was recorded, pretrained on the whole log)."""
    if meta.get("seen_until_us") is not None:
        return int(meta["seen_until_us"])
    until = meta.get("pretrain", {}).get("until_us")
    return None if until is None else int(until)


def checkpoint_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 over a checkpoint's weights, tokenizer and model config (64 hex digits)."""
    root = Path(path)
    meta = checkpoint_meta(root)
    h = hashlib.sha256()
    for name in ("model.safetensors", "tokenizer.json"):
        try:
            data = (root / name).read_bytes()
        except OSError as e:
            raise damaged_checkpoint(root, name, e) from None
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    h.update(json.dumps(meta["model"], sort_keys=True).encode())
    return h.hexdigest()


def embedding_dims(meta: dict[str, Any]) -> int:
    """Width of a checkpoint's charge embedding (views x channels), from its ``config.json``."""
    model = meta["model"]
    return int(model["n_views"]) * int(model["n_embd"])


def embedding_names(dims: int) -> list[str]:
    """Column names of the embedding dimensions as model inputs: ``fm.emb_0`` ... ``fm.emb_<dims-1>``."""
    return [f"{EMBEDDING_PREFIX}{i}" for i in range(dims)]


def check_outputs(outputs: Sequence[str]) -> tuple[str, ...]:
    """``outputs`` as a tuple after checking each is one of :data:`OUTPUTS`, once (a clear error if not)."""
    out = tuple(outputs)
    if not out or any(o not in OUTPUTS for o in out) or len(set(out)) != len(out):
        raise ConfigError(
            f"Foundation-model outputs: expected one or more of {', '.join(OUTPUTS)}, each once. "
            f"Got {', '.join(out) or 'none'}."
        )
    return out


def surprise_names(meta: dict[str, Any]) -> list[str]:
    """Column names of a checkpoint's surprise output, view-major: ``fm.surprise_card_amount``, ...,
    ``fm.surprise_merchant_cred``: each pre-authorization token field (``payfm.fm.embed.SURPRISE_FIELDS``)."""
    from payfm.fm.tokenizer import FIELDS

    fields = [f for f in FIELDS if f != "outcome"]
    views = VIEW_NAMES[: int(meta["model"]["n_views"])]
    return [f"{SURPRISE_PREFIX}{view}_{f}" for view in views for f in fields]


def input_names(meta: dict[str, Any], outputs: Sequence[str]) -> list[str]:
    """Column names of ``outputs`` (``embedding``, ``surprise``) of a checkpoint, in that order: what a
    model registered with them takes after its features (``OnlineEmbedder.fm_inputs``)."""
    names: list[str] = []
    for output in outputs:
        names += embedding_names(embedding_dims(meta)) if output == "embedding" else surprise_names(meta)
    return names
