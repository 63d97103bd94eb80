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
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

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


class Range(NamedTuple):
    """The values a number of a pretraining config or a checkpoint's ``config.json`` may take: an integer
    (never a bool) or any finite number, within [low, high] (``low_open``: > low), None too when ``none``."""

    integer: bool
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    none: bool = False

    def holds(self, value: object) -> bool:
        if value is None:
            return self.none
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self, none: str = "None") -> str:
        """'an integer >= 1 or None', 'a finite number > 0', 'a finite number in [0, 1]' (``none``: the
        word for None, 'null' in JSON)."""
        what = "an integer" if self.integer else "a finite number"
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            what += f" in {'(' if self.low_open else '['}{low}, {high}]"
        elif self.low is not None:
            what += f" {'>' if self.low_open else '>='} {low}"
        return f"{what} or {none}" if self.none else what


def _number(value: float | None) -> str:
    """A bound as written: an integer in full (2**64 - 1), others as :g (0.5); None, no bound, as ''."""
    return "" if value is None else str(value) if isinstance(value, int) else f"{value:g}"


# PretrainConfig's fields (payfm.fm.pretrain; the ranges of `payfm fm pretrain`'s options, which it checks
# in __post_init__) and the same fields in a checkpoint's config.json ("pretrain"). warmup 0 is no warm-up,
# as 1 is; the seed is what torch.manual_seed takes.
PRETRAIN_RANGES = {
    "seq_len": Range(True, 2),
    "n_layer": Range(True, 1),
    "n_head": Range(True, 1),
    "n_embd": Range(True, 1),
    "batch_size": Range(True, 1),
    "epochs": Range(False, 0, low_open=True),
    "steps": Range(True, 1, none=True),
    "lr": Range(False, 0, low_open=True),
    "weight_decay": Range(False, 0),
    "warmup": Range(True, 0),
    "mask_prob": Range(False, 0, 1),
    "next_prob": Range(False, 0, 1),
    "max_charges": Range(True, 1, none=True),
    "until_us": Range(True, none=True),
    "seed": Range(True, 0, 2**64 - 1),
    "checkpoint_every": Range(True, 1),
}
# The model config in a checkpoint's config.json ("model": payfm.fm.model.FMConfig), vocab_sizes aside
MODEL_RANGES = {
    "n_views": Range(True, 1),
    "seq_len": Range(True, 1),
    "n_layer": Range(True, 1),
    "n_head": Range(True, 1),
    "n_embd": Range(True, 1),
    "dropout": Range(False, 0, 1),
}
# What a resume reads of a checkpoint's config.json besides the model and the pretraining config (above)
RESUME_RANGES = {"step": Range(True, 0), "charges": Range(True, 0, none=True)}
# What every reader takes from it besides the model (payfm.fm.identity.seen_until)
SEEN_UNTIL = {"seen_until_us": Range(True, none=True)}


def range_problem(
    fields: Mapping[str, object], ranges: Mapping[str, Range]
) -> tuple[str, Range, object] | None:
    """The first field of ``fields`` outside its range: (name, range, value); None when every one of
    ``ranges`` that ``fields`` holds is within its range."""
    for key, allowed in ranges.items():
        if key in fields and not allowed.holds(fields[key]):
            return key, allowed, fields[key]
    return None


def _shown(value: object) -> str:
    return json.dumps(value)[:80] if isinstance(value, str | list | dict) or value is None else repr(value)


def _out_of_range(fields: Mapping[str, object], ranges: Mapping[str, Range], prefix: str = "") -> str | None:
    wrong = range_problem(fields, ranges)
    if wrong is None:
        return None
    key, allowed, value = wrong
    return f"'{prefix}{key}' {_shown(value)}, expected {allowed.describe('null')}"


def _meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with a ``config.json`` object in the fields every reader takes (the model config, the
    tokenizer version, the end of the charges seen); None when nothing is."""
    model = meta.get("model")
    if not isinstance(model, dict):
        return (
            "an object without 'model'" if "model" not in meta else f"'model' {_shown(model)}, not an object"
        )
    missing = [k for k in ("vocab_sizes", *MODEL_RANGES) if k not in model]
    unknown = sorted(set(model) - {"vocab_sizes", *MODEL_RANGES})
    if missing or unknown:
        return (
            f"'model' {'without ' + ', '.join(missing) if missing else 'with unknown ' + ', '.join(unknown)}"
        )
    sizes = model["vocab_sizes"]
    if not isinstance(sizes, list) or not sizes or not all(Range(True, 1).holds(v) for v in sizes):
        return f"'model.vocab_sizes' {_shown(sizes)}, expected a list of integers >= 1"
    problem = _out_of_range(model, MODEL_RANGES, "model.")
    if problem:
        return problem
    if model["n_embd"] % model["n_head"]:
        return f"'model.n_embd' {model['n_embd']}, expected a multiple of 'model.n_head' {model['n_head']}"
    if not isinstance(meta.get("tokenizer_version", ""), str):
        return f"'tokenizer_version' {_shown(meta['tokenizer_version'])}, expected a text"
    pretrain = meta.get("pretrain", {})
    if not isinstance(pretrain, dict):
        return f"'pretrain' {_shown(pretrain)}, expected an object"
    return _out_of_range(meta, SEEN_UNTIL) or _out_of_range(
        pretrain, {"until_us": PRETRAIN_RANGES["until_us"]}, "pretrain."
    )


def _resume_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with a ``config.json`` object (checked by :func:`checkpoint_meta`) in the fields only a
    resume reads: the step, the losses, the AdamW settings, the run's charges and pretraining config."""
    problem = _out_of_range(meta, RESUME_RANGES) or _out_of_range(
        meta.get("pretrain", {}), PRETRAIN_RANGES, "pretrain."
    )
    if problem:
        return problem
    losses = meta.get("losses", [])
    if not isinstance(losses, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in losses
    ):
        return f"'losses' {_shown(losses)}, expected a list of numbers"
    if len(losses) != meta.get("step", 0):  # one per step over every run (a resume appends to them)
        return f"'losses' of {len(losses)} values, expected one per step ('step' {meta.get('step', 0)})"
    groups = meta.get("param_groups")
    if groups is None and meta.get("step", 0) > 0:
        return "no 'param_groups' (the AdamW settings)"
    if groups is not None and (not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups)):
        return f"'param_groups' {_shown(groups)}, expected a list of objects"
    return None


def check_resumable(root: Path, meta: dict[str, Any]) -> None:
    """Raise :func:`damaged_checkpoint` naming ``root``, config.json and the field when ``meta`` (its
    config.json, from :func:`checkpoint_meta`) holds a field a resume reads of another type or out of its
    range (``"step": "abc"``, ``"losses": null``, no ``param_groups``, a ``pretrain`` setting out of
    :data:`PRETRAIN_RANGES`). Other readers do not take these fields and do not check them."""
    problem = _resume_problem(meta)
    if problem:
        raise damaged_checkpoint(root, "config.json", problem)


def checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's ``config.json`` (a clear error when there is no checkpoint at ``path``, or when its
    config.json is not a JSON object with the model's config, or a field every reader takes is of another
    type or out of its range: a model whose n_embd its n_head does not divide, ``"seen_until_us": "x"``;
    :func:`damaged_checkpoint`, naming the checkpoint, config.json and the field). A resume checks the
    fields it alone reads too (:func:`check_resumable`)."""
    root = Path(path)
    if not (root / "config.json").is_file():
        raise missing_checkpoint(root)
    try:
        meta = json.loads((root / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise damaged_checkpoint(root, "config.json", e) from None
    if not isinstance(meta, dict):
        raise damaged_checkpoint(root, "config.json", f"a JSON {type(meta).__name__}")
    problem = _meta_problem(meta)
    if problem:
        raise damaged_checkpoint(root, "config.json", problem)
    return meta


def checkpoint_names(folder: Path) -> list[str]:
    """The checkpoints in ``folder`` (a workspace's fm/), by name: folders with a config.json, not the hidden
    temporaries of a save (``.<name>.<pid>.tmp``, ``.<name>.<pid>.old``)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if one_folder(p.name) and (p / "config.json").is_file())


def leftovers(root: Path) -> list[Path]:
    """The temporaries that saves of checkpoint ``root`` killed outright (SIGKILL, out of memory) left
    beside it: ``.<name>.<pid>.tmp`` (a checkpoint half written) and ``.<name>.<pid>.old`` (the checkpoint
    before, renamed away for the swap) of processes that no longer exist."""
    from payfm.events.workspace import alive

    prefix = f".{root.name}."
    found = []
    if root.parent.is_dir():
        for p in root.parent.iterdir():
            pid, dot, suffix = p.name[len(prefix) :].rpartition(".")
            ours = p.name.startswith(prefix) and dot and suffix in ("tmp", "old") and pid.isdigit()
            if ours and not alive(int(pid)):
                found.append(p)
    return sorted(found)


def missing_checkpoint(root: Path) -> ConfigError:
    """The error for no checkpoint at ``root``, naming the checkpoints beside it (and the previous version of
    this one, when a save was killed in the instant between its two renames)."""
    others = checkpoint_names(root.parent)
    have = f"Checkpoints here: {', '.join(others)}." if others else "There is none yet."
    old = [p for p in leftovers(root) if p.suffix == ".old" and (p / "config.json").is_file()]
    if old:
        have += (
            f" A save killed mid-swap left the checkpoint before it in '{old[-1]}': rename that folder to "
            f"'{root.name}' to restore it."
        )
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


def provenance(root: Path, meta: dict[str, Any], digest: str) -> dict[str, Any]:
    """What a file made from checkpoint ``root`` records of it (its embeddings' Parquet, its evaluation's
    JSON), so that a file older than the checkpoint's last run can be told from a current one: the name,
    the content hash ``digest`` (:func:`checkpoint_hash`), the step of the weights (``config.json``'s
    ``step``; None if it has none) and the tokenizer version."""
    return {
        "name": root.name,
        "hash": digest,
        "step": meta.get("step"),
        "tokenizer_version": meta.get("tokenizer_version"),
    }


def provenance_metadata(source: dict[str, Any]) -> dict[bytes, bytes]:
    """:func:`provenance` as Parquet schema metadata: ``payfm.checkpoint`` (the name),
    ``payfm.checkpoint_hash``, ``payfm.checkpoint_step`` (decimal; '' when unknown) and
    ``payfm.tokenizer_version``."""
    return {
        b"payfm.checkpoint": str(source["name"]).encode(),
        b"payfm.checkpoint_hash": str(source["hash"]).encode(),
        b"payfm.checkpoint_step": b"" if source["step"] is None else str(source["step"]).encode(),
        b"payfm.tokenizer_version": str(source["tokenizer_version"] or "").encode(),
    }


def embedding_dims(meta: dict[str, Any]) -> int:
    """Width of a checkpoint's charge embedding (views x channels), from its ``config.json``."""
    model = meta["model"]
    return int(model["n_views"]) * int(model["n_embd"])


def embedding_names(dims: int) -> list[str]:
    """Column names of the embedding dimensions as model inputs: ``fm.emb_0`` ... ``fm.emb_<dims-1>``."""
    return [f"{EMBEDDING_PREFIX}{i}" for i in range(dims)]


def check_outputs(outputs: Sequence[str]) -> tuple[str, ...]:
    """``outputs`` in the order of :data:`OUTPUTS` (``surprise, embedding`` is ``embedding, surprise``: one
    set of inputs, one name, one column order) after checking each is one of them, once (a clear error if
    not). A lone name is taken as one output (a text is a sequence of its letters: "Got s, u, r, p...").

    >>> check_outputs("surprise"), check_outputs(["surprise", "embedding"])
    (('surprise',), ('embedding', 'surprise'))
    """
    out = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    if not out or any(o not in OUTPUTS for o in out) or len(set(out)) != len(out):
        raise ConfigError(
            f"Foundation-model outputs: expected one or more of {', '.join(OUTPUTS)}, each once. "
            f"Got {', '.join(out) or 'none'}."
        )
    return tuple(sorted(out, key=OUTPUTS.index))


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
