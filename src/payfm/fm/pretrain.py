"""Self-supervised pretraining of the foundation model, checkpoints and resume, single process or DDP.

Objectives (one cross-entropy over masked tokens, :class:`payfm.fm.model.FoundationModel`):

- *masked field modeling*: each field of each real charge is masked with probability ``mask_prob``;
- *next-charge prediction* (the sequence objective): with probability ``next_prob`` a sample's target charge
  (the last of each view) is masked whole and predicted from the charges before it;
- the target's outcome is always masked in the input (point-in-time) and always predicted.

Determinism: the weights come from ``torch.manual_seed(seed)``; step ``s`` reads the rows and masks drawn
from ``numpy.random.default_rng((seed, ...))`` of its epoch and step, so resuming at step ``s`` replays
exactly what an uninterrupted run does. Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank takes a
contiguous slice of the same global batch and the loss is normalised by the global target count, so
DistributedDataParallel's gradient average equals the single-process gradient (gloo on CPU, nccl on CUDA).

A checkpoint is a directory: ``model.safetensors``, ``optimizer.safetensors``, ``tokenizer.json`` and
``config.json`` (model config, pretraining config, step, tokenizer version, losses). One pretraining of a
checkpoint at a time: it holds ``.<name>.lock`` beside the checkpoint (:func:`exclusive_run`).

Example (``payfm fm pretrain`` calls this)::

    result = pretrain(Workspace.open("payfm-workspace"), PretrainConfig(epochs=1))
"""

from __future__ import annotations

import fcntl
import functools
import json
import math
import numbers
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors

from payfm import interrupts
from payfm.errors import ConfigError
from payfm.events.cards import shown_text
from payfm.events.workspace import Workspace, fsync_dir, opened
from payfm.fm.identity import (
    PRETRAIN_RANGES,
    check_name,
    check_resumable,
    checkpoint_hash,
    checkpoint_meta,
    damaged_checkpoint,
    leftovers,
    one_folder,
    provenance,
    range_problem,
)
from payfm.fm.model import FMConfig, FoundationModel
from payfm.fm.resume import (
    RESUME_FIXED,
    check_resume,
    check_same_charges,
    check_still_unregistered,
    check_unregistered,
    load_optimizer,
)
from payfm.fm.sequences import Sequences, build_sequences, read_charges
from payfm.fm.tokenizer import MASK, OUTCOME_FIELD, PAD, Tokenizer
from payfm.inputs import kind

DEFAULT_NAME = "default"


@dataclass(frozen=True)
class PretrainConfig:
    seq_len: int = 16  # K charges per view
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 32
    batch_size: int = 256  # global batch, split across DDP ranks
    epochs: float = 1.0
    steps: int | None = None  # total optimizer steps; overrides epochs
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 20  # steps of linear learning-rate warm-up
    mask_prob: float = 0.15
    next_prob: float = 0.25
    max_charges: int | None = None  # the first N charges (time order) of the training window
    until_us: int | None = None  # the training window ends here (exclusive), e.g. before the test period
    seed: int = 0
    checkpoint_every: int = 200  # steps

    def __post_init__(self) -> None:
        """Every field within the range `payfm fm pretrain` takes for it (:data:`PRETRAIN_RANGES`): a
        ConfigError naming the field, what it takes and the value (the library took epochs=0 and steps=-1,
        which wrote an untrained checkpoint, batch_size=0, a ZeroDivisionError, seq_len=1, mask_prob=-1)."""
        for k in PRETRAIN_RANGES:  # NumPy numbers as Python's (config.json holds them: JSON)
            value = getattr(self, k)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool | int):
                object.__setattr__(self, k, int(value))
            elif isinstance(value, numbers.Real) and not isinstance(value, bool | int | float):
                object.__setattr__(self, k, float(value))
        fields = {k: getattr(self, k) for k in PRETRAIN_RANGES}
        wrong = range_problem(fields, PRETRAIN_RANGES)
        if wrong is not None:
            key, allowed, value = wrong
            raise ConfigError(f"The {key!r} of pretraining must be {allowed.describe()}. Got {value!r}.")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"The 'n_embd' of pretraining must be a multiple of its 'n_head' ({self.n_head}). "
                f"Got {self.n_embd}."
            )

    def model_config(self, tokenizer: Tokenizer) -> FMConfig:
        return FMConfig(
            vocab_sizes=tuple(tokenizer.vocab_sizes()),
            seq_len=self.seq_len,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
        )


@dataclass
class PretrainResult:
    path: Path
    step: int
    # each step's loss of this run (thousands of floats: the repr gives their count and the last one)
    losses: list[float] = field(default_factory=list, repr=False)
    charges_per_s: float = 0.0
    trained: bool = True  # False: the checkpoint was at or past the run's last step; nothing was changed
    # mean loss of the run's last 20 steps; under DDP the whole batch's (the mean of the ranks' shares, the
    # same on every rank), where ``losses`` holds this rank's share of each step's
    loss: float = math.nan

    def __repr__(self) -> str:
        """The fields, with the losses summed up (a notebook printed every step's).

        >>> PretrainResult(Path("fm/default"), 3, [2.5, 2.25, 2.0], 1000.0, True, 2.25)
        PretrainResult(path='fm/default', step=3, losses=<3 steps, last 2.0>, charges_per_s=1000.0, \
trained=True, loss=2.25)
        """
        last = f", last {round(self.losses[-1], 4)!r}" if self.losses else ""
        return (
            f"PretrainResult(path={str(self.path)!r}, step={self.step}, "
            f"losses=<{len(self.losses)} steps{last}>, charges_per_s={round(self.charges_per_s, 1)!r}, "
            f"trained={self.trained}, loss={round(self.loss, 4)!r})"
        )


def checkpoint_dir(ws: Workspace, name: str = DEFAULT_NAME, option: str = "--name") -> Path:
    """``fm/<name>`` of the workspace, after checking ``name`` (:func:`payfm.fm.identity.check_name`: an
    error naming ``option`` for '', '..', 'a/b' and the like, which would point at fm/ or outside it; a
    checkpoint there already keeps the name it was given before the rule)."""
    folder = ws.root / "fm"
    exists = one_folder(name) and (folder / name / "config.json").is_file()
    return folder / check_name(name, option, exists=exists)


# ---- checkpoints -----------------------------------------------------------------------------------------
def save_checkpoint(
    path: Path,
    model: FoundationModel,
    tokenizer: Tokenizer,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    before_swap: Callable[[], None] | None = None,
) -> None:
    """Write a checkpoint directory atomically (a new directory swapped in by rename); on any exception
    (an error, Ctrl-C, SIGTERM) the partial new directory is removed and the old checkpoint left as it was.
    ``before_swap()`` runs when the new directory is written, just before the swap: an exception it raises
    leaves the old checkpoint as it was (pretraining checks there that no model was registered on it since).

    The swap is two renames (the old directory away to ``.<name>.<pid>.old``, the new one in: a directory
    cannot be renamed over a non-empty one), so for an instant ``path`` does not exist; a reader then says
    there is no checkpoint. Killed outright in that instant (SIGKILL), the save leaves the checkpoint before
    it as ``.<name>.<pid>.old``: the next pretraining of the name puts it back (:func:`sweep_leftovers`)."""
    try:
        _save_checkpoint(path, model, tokenizer, meta, optimizer, before_swap)
    except OSError as e:  # a full disk, a read-only folder, fm/ a file: one line naming the path
        said = shown_text(str(e.strerror or e), 400)
        where = f" ('{shown_text(str(e.filename), 200)}')" if e.filename else ""
        raise ConfigError(
            f"Checkpoint '{shown_text(str(path), 200)}' cannot be written{where}: {said}. The checkpoint is "
            "left as it was before this save."
        ) from None


def _save_checkpoint(
    path: Path,
    model: FoundationModel,
    tokenizer: Tokenizer,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None,
    before_swap: Callable[[], None] | None,
) -> None:
    """:func:`save_checkpoint`'s writes: each file flushed to disk (fsync), then the new folder and fm/, so
    that a power loss after the swap finds the new checkpoint whole, never a renamed folder of lost files."""
    sweep_leftovers(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    try:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            tmp / "model.safetensors",
        )
        groups: list[dict[str, Any]] = []
        if optimizer is not None:
            state = optimizer.state_dict()
            flat = {f"{i}.{k}": v.cpu() for i, s in state["state"].items() for k, v in s.items()}
            save_file(flat, tmp / "optimizer.safetensors")
            groups = state["param_groups"]
        _write_synced(tmp / "tokenizer.json", json.dumps(tokenizer.to_json(), indent=1).encode())
        doc = meta | {
            "model": model.config.to_json(),
            "tokenizer_version": tokenizer.version,
            "param_groups": groups,
        }
        _write_synced(tmp / "config.json", json.dumps(doc, indent=1).encode())
        fsync_dir(tmp)
        if before_swap is not None:
            before_swap()
        interrupts.check()
        if path.exists():
            path.rename(old)
        try:
            tmp.rename(path)
        except BaseException:
            if old.exists() and not path.exists():
                old.rename(path)  # the old checkpoint back in place
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)  # the swap on disk before the old checkpoint goes
    shutil.rmtree(old, ignore_errors=True)


def save_file(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors' ``save_file``, flushed to disk (its own writer neither syncs nor reports a full disk as
    an OSError: a SafetensorError)."""
    _write_synced(path, save_tensors(tensors))


def _write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to the new file ``path`` and flush it to disk (fsync)."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def sweep_leftovers(path: Path) -> None:
    """Remove what saves of checkpoint ``path`` killed outright (SIGKILL, out of memory) left beside it, the
    temporaries of processes that no longer exist (:func:`payfm.fm.identity.leftovers`; other exceptions
    clean up after themselves). A save killed between its two renames left no ``path`` and the checkpoint
    before it as ``.<name>.<pid>.old``: that one is put back in place, not removed."""
    strays = leftovers(path)
    if not path.exists():
        old = [p for p in strays if p.suffix == ".old" and (p / "config.json").is_file()]
        if old:
            newest = max(old, key=lambda p: p.stat().st_mtime)
            newest.rename(path)
            strays.remove(newest)
    for stray in strays:
        shutil.rmtree(stray, ignore_errors=True)


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[FoundationModel, Tokenizer, dict[str, Any]]:
    """The model (eval mode, CPU), its tokenizer and the checkpoint's ``config.json``.

    A missing or damaged file (an interrupted copy, a full disk) is one :class:`ConfigError` naming the
    checkpoint and the file (:func:`payfm.fm.identity.damaged_checkpoint`), not a traceback."""
    root = Path(path)
    meta = checkpoint_meta(root)
    try:
        data = json.loads((root / "tokenizer.json").read_text())
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}")
        tokenizer = Tokenizer.from_json(data, source=f"Checkpoint '{root}', tokenizer.json")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise damaged_checkpoint(root, "tokenizer.json", e) from None
    if tokenizer.version != meta.get("tokenizer_version"):
        raise ConfigError(
            f"Checkpoint '{root}': expected tokenizer version {meta.get('tokenizer_version')}. "
            f"Got {tokenizer.version} (tokenizer.json was changed)."
        )
    try:
        model = FoundationModel(FMConfig.from_json(meta["model"]))
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise damaged_checkpoint(root, "config.json", f"a model config that does not build ({e})") from None
    try:
        model.load_state_dict(load_file(root / "model.safetensors"))
    except (OSError, SafetensorError, RuntimeError) as e:  # RuntimeError: other tensors than the config's
        raise damaged_checkpoint(root, "model.safetensors", e) from None
    model.eval()
    return model, tokenizer, meta


def load_identified(
    path: str | os.PathLike[str],
) -> tuple[FoundationModel, Tokenizer, dict[str, Any], dict[str, Any]]:
    """:func:`load_checkpoint` and the identity of what it loaded (:func:`payfm.fm.identity.provenance`:
    the content hash, the step, the tokenizer version), for the files made from it to record. The hash is
    taken before and after loading: a save of a running pretraining swapped in between (other weights) is
    read again, so the identity recorded is that of the weights used."""
    root = Path(path)
    for _ in range(3):
        digest = checkpoint_hash(root)
        model, tokenizer, meta = load_checkpoint(root)
        if checkpoint_hash(root) == digest:
            return model, tokenizer, meta, provenance(root, meta, digest)
    raise ConfigError(
        f"Checkpoint '{root}' changed each time it was read (a pretraining of it is saving): run again "
        "when it ends."
    )


READ_EVERY = 20  # on CUDA, steps between reads of the losses back to the host


def losses_read_every(device: torch.device) -> int:
    """Steps between reads of the losses: every step on the CPU (they are there already), READ_EVERY on a
    GPU (each read waits for the device)."""
    return READ_EVERY if device.type == "cuda" else 1


# ---- data ------------------------------------------------------------------------------------------------
def batch_rows(n: int, batch: int, step: int, seed: int) -> np.ndarray:
    """The rows of global step ``step``: slices of a per-epoch permutation (the last partial one dropped)."""
    per_epoch = max(n // batch, 1)
    epoch, i = divmod(step, per_epoch)
    return _permutation(n, seed, epoch)[i * batch : (i + 1) * batch]


@functools.lru_cache(maxsize=1)
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """One epoch's order, drawn once per epoch (a permutation of 700k rows costs more than a step's batch)."""
    perm = np.random.default_rng((seed, epoch)).permutation(n)
    perm.flags.writeable = False
    return perm


def mask_batch(
    x: np.ndarray, rng: np.random.Generator, mask_prob: float, next_prob: float
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of a (B, V, K, F) batch whose target outcome is not masked yet
    (``Sequences.batch(rows, mask_outcome=False)``): masked tokens become MASK; targets hold them, else -1."""
    real = (x != PAD).any(axis=-1, keepdims=True)  # (B, V, K, 1)
    m = (rng.random(x.shape) < mask_prob) & real
    m[:, :, -1, OUTCOME_FIELD] = True  # the target's outcome is never an input
    whole = rng.random(x.shape[0]) < next_prob  # next-charge prediction for these samples
    m[whole, :, -1, :] = True
    return np.where(m, MASK, x), np.where(m, x, -1)


def _world() -> tuple[int, int]:
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_config(config: object, who: str) -> PretrainConfig:
    """``config`` if it is a :class:`PretrainConfig`; else a ConfigError naming ``who``'s parameter, with the
    config to write for a dict of its fields (a dict reached ``config.batch_size`` as an AttributeError).

    >>> check_config({"steps": 1}, "pretrain")
    Traceback (most recent call last):
    ...
    payfm.errors.ConfigError: The 'config' of pretrain must be a PretrainConfig. Got a dict: pass \
PretrainConfig(steps=1).
    """
    if isinstance(config, PretrainConfig):
        return config
    if isinstance(config, dict) and all(isinstance(k, str) for k in config):
        given = ", ".join(f"{k}={v!r}" for k, v in config.items())
        hint = f": pass PretrainConfig({given})"
    else:
        hint = " (PretrainConfig(steps=100), or PretrainConfig() for the defaults)"
    raise ConfigError(f"The 'config' of {who} must be a PretrainConfig. Got {kind(config)}{hint}.")


# ---- training --------------------------------------------------------------------------------------------
def pretrain(
    ws: Workspace,
    config: PretrainConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    resume: bool = True,
    sequences: Sequences | None = None,
    stop_at: int | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> PretrainResult:
    """Pretrain (or resume pretraining) the foundation model on ``ws``'s charges; checkpoint to ``out``.

    ``stop_at`` ends the run after that many total steps (an interruption, for tests and time limits).
    ``progress(step, total, loss)`` is called on rank 0 after each step, with the mean loss of the last 20.
    A run that would write over a checkpoint a registered model version uses (not archived) is refused
    before any training (:func:`check_unregistered`); ``warn(message)`` (default: logged) is told when only
    archived versions use it (their rollback would then fail). One pretraining of a checkpoint at a time:
    another, while this one runs, is refused at once (:func:`exclusive_run`).
    """
    ws = opened(ws, "pretrain")
    check_config(config, "pretrain")
    path = Path(out) if out is not None else checkpoint_dir(ws)
    rank, world = _world()
    if config.batch_size % world:
        raise ConfigError(
            f"The 'batch_size' of pretraining must be divisible by the {world} processes. "
            f"Got {config.batch_size}."
        )
    device = torch.device(f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    with _one_run(path, rank, world, device):
        return _pretrain(ws, config, path, rank, world, device, resume, sequences, stop_at, progress, warn)


@contextmanager
def exclusive_run(path: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside checkpoint ``path`` (an exclusive flock) while one pretraining of it runs;
    another is refused at once (ConfigError naming the checkpoint): two runs of one name swapped their saves
    over each other's (a raw "Directory not empty" from the rename, a ``.<name>.<pid>.old`` left behind).

    The file is removed at the end while still held, so nothing is left beside the checkpoint: a run that
    opened it before then holds a removed file, sees that it is no longer the one at that path, and opens
    the path again (two runs never hold two different files)."""
    lock = path.with_name(f".{path.name}.lock")
    while True:
        try:  # fm/ a file, a read-only workspace: one line naming the checkpoint, not a traceback
            lock.parent.mkdir(parents=True, exist_ok=True)
            f = open(lock, "a")  # noqa: SIM115 - closed below (closing releases the lock)
        except OSError as e:
            raise ConfigError(
                f"Checkpoint '{shown_text(str(path), 200)}' cannot be written ('{shown_text(str(lock), 200)}'"
                f"): {shown_text(str(e.strerror or e), 400)}."
            ) from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise ConfigError(
                f"Checkpoint '{path}': another pretraining of it is running (it holds '{lock}'). Wait for "
                "it to end, or pretrain under another --name."
            ) from None
        if _same_file(f.fileno(), lock):
            break
        f.close()  # the file of a run that ended (removed): lock the one at the path now
    try:
        yield
    finally:
        if _same_file(f.fileno(), lock):
            lock.unlink(missing_ok=True)
        f.close()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


@contextmanager
def _one_run(path: Path, rank: int, world: int, device: torch.device) -> Iterator[None]:
    """:func:`exclusive_run` on rank 0 (under torchrun every rank of one run is one pretraining); a refusal
    stops every rank with the same error."""
    refused: str | None = None
    with ExitStack() as held:
        if rank == 0:
            try:
                held.enter_context(exclusive_run(path))
            except Exception as e:  # (an OSError too: the other ranks would wait for rank 0 forever)
                if world == 1:
                    raise
                refused = (
                    str(e) if isinstance(e, ConfigError) else f"Checkpoint '{path}': {type(e).__name__}: {e}"
                )
        if world > 1:
            box = [refused]
            dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
            if box[0] is not None:
                raise ConfigError(str(box[0]))
        yield


def _pretrain(
    ws: Workspace,
    config: PretrainConfig,
    path: Path,
    rank: int,
    world: int,
    device: torch.device,
    resume: bool,
    sequences: Sequences | None,
    stop_at: int | None,
    progress: Callable[[int, int, float], None] | None,
    warn: Callable[[str], None] | None,
) -> PretrainResult:
    """:func:`pretrain`'s run, while it holds the checkpoint (:func:`exclusive_run`)."""
    meta: dict[str, Any] = {}
    if rank == 0:  # a save killed outright (SIGKILL) left temporaries, or the checkpoint renamed away
        sweep_leftovers(path)
    if world > 1:
        dist.barrier()
    resuming = resume and (path / "config.json").exists()
    if resume and not resuming and _holds_something(path):  # a copy cut short, a config.json removed
        raise damaged_checkpoint(path, "config.json", FileNotFoundError())
    if path.exists() and not resuming:  # --fresh over a checkpoint: refused before any work
        check_unregistered(ws, path, warn if rank == 0 else lambda _: None)
    if resuming:
        model, tokenizer, meta = load_checkpoint(path)
        check_resumable(
            path, meta
        )  # the step, losses, AdamW settings, run config: a clear error, not a crash
        check_resume(ws, path, meta, model.config, config.model_config(tokenizer), _run_settings(config))
        model.train()
    else:
        tokenizer = Tokenizer.fit(read_charges(ws, until_us=config.until_us, limit=config.max_charges))
        torch.manual_seed(config.seed)
        model = FoundationModel(config.model_config(tokenizer))
    if sequences is None:
        charges = read_charges(ws, until_us=config.until_us, limit=config.max_charges)
        sequences = build_sequences(charges, tokenizer, config.seq_len)
    n = len(sequences)
    if n == 0:
        raise ConfigError(
            "Pretraining: expected charges in the training window (--until-frac, --max-charges). Got none."
        )
    if meta:
        check_same_charges(path, meta, n, int(sequences.created_us.max()) + 1)
    # The end (exclusive) of the charges the weights have seen, over every run: what a downstream model's
    # validation period must start after (``payfm train --fm``, ``fm evaluate``).
    seen_until_us = max(int(meta.get("seen_until_us", 0)), int(sequences.created_us.max()) + 1)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start = int(meta.get("step", 0))  # (check_resumable checked the fields of config.json)
    if start:
        load_optimizer(path, optimizer, meta["param_groups"])
    losses: list[float] = list(meta.get("losses", []))
    train_model: torch.nn.Module = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model)
    batch = min(config.batch_size, n - n % world) if n >= world else n
    # an epoch is the full batches of its permutation (batch_rows drops the partial last one)
    total = config.steps if config.steps is not None else math.ceil(config.epochs * max(n // batch, 1))
    end = min(total, stop_at) if stop_at is not None else total
    if start >= end and start > 0:  # run again after it finished: the checkpoint is left as it is
        return PretrainResult(path=path, step=start, losses=losses, trained=False)
    if resuming:  # this run writes over the checkpoint: refused if a served model takes it
        check_unregistered(ws, path, warn if rank == 0 else lambda _: None)
    use_amp = device.type == "cuda"

    # What the checkpoint is if a save is refused: check_unregistered ran before any training, but a model
    # can be registered on one of this run's saves (`payfm train --fm` while it runs); every save checks
    # again just before its swap, and a refused one stops the run with the last save in place.
    kept = f"as of its last save (step {start})" if resuming else "as it was before this run"

    def save(step: int) -> None:
        nonlocal kept
        refused: str | None = None
        if rank == 0:
            run = {
                "step": step,
                "losses": losses,
                "pretrain": asdict(config),
                "charges": n,
                "seen_until_us": seen_until_us,
            }
            try:
                save_checkpoint(
                    path,
                    model,
                    tokenizer,
                    run,
                    optimizer,
                    before_swap=lambda: check_still_unregistered(ws, path, step, kept),
                )
            except ConfigError as e:
                if world == 1:
                    raise
                refused = str(e)
        if world > 1:  # every rank stops on a refused save (and waits for rank 0's save, as a barrier)
            box = [refused]
            dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
            if box[0] is not None:
                raise ConfigError(str(box[0]))
        kept = f"as of its last save (step {step})"

    def prepare(step: int) -> tuple[int, torch.Tensor, torch.Tensor, float]:
        """Step ``step``'s rows and masks, this rank's slice (pinned for an asynchronous copy on CUDA)."""
        if device.type == "cuda":
            torch.cuda.set_device(device)  # this thread's pinning, on this rank's GPU (not GPU 0)
        rows = batch_rows(n, batch, step, config.seed)
        x, y = mask_batch(
            # the real target outcome: masked in the input, predicted (not the MASK a batch would hold)
            sequences.batch(rows, mask_outcome=False),
            np.random.default_rng((config.seed, 7, step)),
            *_probs(config),
        )
        norm = max(int((y >= 0).sum()), 1) / world  # global mean across ranks (see the module docstring)
        lo, hi = rank * len(rows) // world, (rank + 1) * len(rows) // world
        xt, yt = torch.from_numpy(x[lo:hi]), torch.from_numpy(y[lo:hi])
        if device.type == "cuda":
            xt, yt = xt.pin_memory(), yt.pin_memory()
        return len(rows), xt, yt, norm

    # The next step's batch is prepared on a thread of its own while this one trains (NumPy releases the
    # GIL), and on CUDA the losses are read back every READ_EVERY steps, not at every step: each read waits
    # for the device to finish, which left it idle while the CPU prepared the next batch.
    unread: list[torch.Tensor] = []
    read_every = losses_read_every(device)

    def read_losses() -> None:
        if unread:
            losses.extend(torch.stack(unread).float().tolist())  # under DDP: this rank's share of each
            unread.clear()

    t0, done = time.perf_counter(), 0
    with ThreadPoolExecutor(1, thread_name_prefix="payfm-batch") as pool:
        upcoming = pool.submit(prepare, start) if start < end else None
        for step in range(start, end):
            assert upcoming is not None
            size, xc, yc, norm = upcoming.result()
            upcoming = pool.submit(prepare, step + 1) if step + 1 < end else None
            xt, yt = xc.to(device, non_blocking=True), yc.to(device, non_blocking=True)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * min(1.0, (step + 1) / max(config.warmup, 1))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                _, loss = train_model(xt, yt, norm)
            assert loss is not None  # targets were given
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            unread.append(loss.detach())
            checkpoint = (step + 1) % config.checkpoint_every == 0 and step + 1 < end
            if len(unread) >= read_every or checkpoint or step + 1 == end:
                read_losses()
            done += size
            if progress is not None and rank == 0:  # every step; the loss as last read (NaN before)
                recent = losses[-20:]
                progress(step + 1, end, sum(recent) / len(recent) if recent else math.nan)
            if checkpoint:
                save(step + 1)
    read_losses()
    elapsed = time.perf_counter() - t0
    save(end)
    model.eval()
    recent = losses[-20:]
    last = sum(recent) / len(recent) if recent else math.nan
    if world > 1:  # the ranks' shares of a step's loss average to the step's loss (module docstring)
        shared = torch.tensor([last], dtype=torch.float64, device=device)
        dist.all_reduce(shared)
        last = float(shared.item()) / world
    return PretrainResult(
        path=path, step=end, losses=losses, charges_per_s=done / elapsed if elapsed > 0 else 0.0, loss=last
    )


def _holds_something(path: Path) -> bool:
    """Whether ``path`` is a file or a folder with anything in it: without a config.json, a checkpoint
    incomplete or damaged, which only ``--fresh`` (``resume=False``) may write over."""
    try:
        return not path.is_dir() or any(path.iterdir()) if path.exists() else False
    except OSError:
        return True


def _run_settings(config: PretrainConfig) -> dict[str, Any]:
    """What a resumed run must share with its checkpoint's runs (:func:`payfm.fm.resume.check_resume`)."""
    return {k: getattr(config, k) for k in (*RESUME_FIXED, "until_us", "max_charges")}


def _probs(config: PretrainConfig) -> tuple[float, float]:
    return config.mask_prob, config.next_prob
