"""May a pretraining run write over a checkpoint, and resume it?

A checkpoint a registered model version takes its outputs from is never pretrained again in place (the
version would no longer load, and a rollback could not help): :func:`check_unregistered`. A resumed run must
be the one its checkpoint's config describes: the same model config, window of the log, charges in that
window and settings that shape the run from its first step (:func:`check_resume`,
:func:`check_same_charges`); each refusal names the options that would resume it, or says to start over.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.fm.identity import damaged_checkpoint
from payfm.fm.model import FMConfig

if TYPE_CHECKING:
    from payfm.registry.store import ModelVersion

# Settings a resumed run must share with the checkpoint's (the CLI's options for those it has): each shapes
# the run from its first step (the schedule, each epoch's row order, the batches, the masks).
RESUME_FIXED = ("lr", "warmup", "batch_size", "seed", "weight_decay", "mask_prob", "next_prob")
CLI_OPTIONS = frozenset({"lr", "warmup", "batch_size", "seed"})  # those `payfm fm pretrain` takes
MODEL_OPTIONS = ("seq_len", "n_layer", "n_head", "n_embd")  # the model's shape, options of `fm pretrain`
log = logging.getLogger(__name__)


def _users(ws: Workspace, path: Path) -> list[ModelVersion]:
    """The model versions of ``ws``'s registry that take their outputs from the checkpoint ``path``."""
    from payfm.registry.store import Registry

    reg = Registry(ws)
    target = path.resolve()
    users = []
    for mv in reg.list():
        fm = mv.entry.get("foundation_model")
        if fm and reg.checkpoint_path(fm["checkpoint"]).resolve() == target:
            users.append(mv)
    return users


def _named(users: list[ModelVersion]) -> str:
    return ", ".join(f"{mv.ref} ({mv.stage})" for mv in users)


def check_unregistered(ws: Workspace, path: Path, warn: Callable[[str], None] | None = None) -> None:
    """Refuse (ConfigError) to write over the checkpoint ``path`` when a model version of ``ws``'s registry
    that is not archived takes its outputs: the version would no longer load (its recorded content hash),
    and a rollback to it could not help. Versions in stage ``archived`` only: ``warn`` (default: logged)
    that a rollback to them would fail, and go on."""
    users = _users(ws, path)
    named = _named(users)
    if any(mv.stage != "archived" for mv in users):
        raise ConfigError(
            f"Checkpoint '{path}' is the foundation model of registered model versions {named}: pretraining "
            "it again would change it under them (they would no longer load, and a rollback could not help). "
            "Pretrain under a new --name instead."
        )
    if users:
        (warn or log.warning)(
            f"Checkpoint '{path}' is the foundation model of archived model versions {named}: pretraining "
            "it again makes a rollback to them fail."
        )


def check_still_unregistered(ws: Workspace, path: Path, step: int, kept: str) -> None:
    """Before a running pretraining swaps in its save of ``step``: refuse (ConfigError) when a model version
    not archived was registered on the checkpoint ``path`` since the run began (:func:`check_unregistered`
    ran then, before any training: a model can be registered on one of the run's own saves, which the next
    save would change under it). The run stops with its checkpoint as ``kept`` describes (its last save)."""
    users = [mv for mv in _users(ws, path) if mv.stage != "archived"]
    if users:
        raise ConfigError(
            f"Checkpoint '{path}' became the foundation model of registered model versions {_named(users)} "
            f"while this run pretrained it: saving step {step} over it would change it under them (they "
            f"would no longer load). The run stops here; the checkpoint is kept {kept}. To pretrain "
            f"further, copy the folder to a new name and resume that one (`payfm fm pretrain --name NEW`)."
        )


def _refuse_model_config(path: Path, before: FMConfig, asked: FMConfig) -> None:
    """The refusal to resume ``path`` (model config ``before``) with another model config, naming the
    options that differ with the checkpoint's values."""
    changed = [k for k in MODEL_OPTIONS if getattr(before, k) != getattr(asked, k)]
    if not changed:  # not an option of `fm pretrain` (vocab sizes, views, dropout: library use)
        raise ConfigError(
            f"Checkpoint '{path}' has another model config: {before}. Got {asked}; resume it with its own, "
            "or pass another --name or --fresh."
        )
    flags = " ".join(f"--{k.replace('_', '-')} {exact(getattr(before, k))}" for k in changed)
    then = ", ".join(f"{k} {exact(getattr(asked, k))}" for k in changed)
    raise ConfigError(
        f"Checkpoint '{path}' was pretrained with {flags}; resuming with {then} would change the model's "
        f"shape. Resume with its model config ({flags}), or pass another --name or --fresh."
    )


def check_same_charges(path: Path, meta: dict[str, Any], n: int, last_us: int) -> None:
    """Refuse to resume when the window selects other charges than the checkpoint's runs trained on: the
    same options over a log that changed since (charges imported or generated after, --until-frac 1)."""
    charges, seen = meta.get("charges"), meta.get("seen_until_us")
    if (charges is None or int(charges) == n) and (seen is None or int(seen) == last_us):
        return
    then = f"{int(charges):,} charges" if charges is not None else "its charges"
    now = f"{n:,} charges" if charges is not None else "other charges"
    until = f" up to {_when(int(seen) - 1)}" if seen is not None else ""
    raise ConfigError(
        f"Checkpoint '{path}' was pretrained on {then}{until}; its window of the log now holds {now}"
        f"{f' up to {_when(last_us - 1)}' if seen is not None else ''} (the log changed since). Resuming "
        "would misstate what it has seen: start over with --fresh, or pretrain under a new --name."
    )


def _window_flags(ws: Workspace, until_us: int | None, max_charges: int | None) -> str:
    """The `payfm fm pretrain` options that select a checkpoint's window of this log: the shortest
    ``--until-frac`` whose cut (:func:`~payfm.fm.sequences.time_cut`) is ``until_us``, and --max-charges."""
    parts = [] if max_charges is None else [f"--max-charges {exact(max_charges)}"]
    if until_us is None:
        return " ".join(["--until-frac 1", *parts])
    con = ws.connect()
    try:
        row = con.execute(
            f"SELECT count(*), count_if(epoch_us(created) < {int(until_us)}), "
            f"count_if(epoch_us(created) = {int(until_us)}) FROM charges"
        ).fetchone()
    finally:
        con.close()
    n, before, at = (int(v or 0) for v in row) if row else (0, 0, 0)
    # time_cut takes the charge at offset floor(n * frac): any offset among the charges at until_us. The
    # fraction is printed as checked (repr: the shortest text that reads back as the same float; :g kept 6
    # significant digits, another cut on a log of over a million charges).
    for digits in range(1, 10):
        frac = round((before + 0.5) / max(n, 1), digits)
        if 0 < frac < 1 and before <= math.floor(n * frac) < before + at:
            return " ".join([f"--until-frac {exact(frac)}", *parts])
    return " ".join(["its --until-frac (this log changed since: none selects the same charges)", *parts])


def exact(value: object) -> str:
    """A value as a user passes it back: an integer in full (``1234567``, not ``1.23457e+06``), a float by
    repr, the shortest text that reads back as the same float (``0.0012345678``, ``0.003``); a value shown
    with 6 significant digits was refused again (another seed, another learning rate, another cut)."""
    return repr(value) if isinstance(value, float) else str(value)


def _when(us: int | None) -> str:
    return "the end of the log" if us is None else datetime.fromtimestamp(us / 1e6, tz=UTC).isoformat()


def _first(n: int | None) -> str:
    return "every charge" if n is None else f"the first {n:,} charges (--max-charges {exact(n)})"


def check_resume(
    ws: Workspace,
    path: Path,
    meta: dict[str, Any],
    before: FMConfig,
    asked: FMConfig,
    settings: dict[str, Any],
) -> None:
    """Refuse (ConfigError) to resume checkpoint ``path`` (its ``config.json``: ``meta``; its model config
    ``before``) with another model config (``asked``), another window of the log or other settings of
    :data:`RESUME_FIXED` (``settings``: the run's, with ``until_us`` and ``max_charges``): the resumed run
    would not be the one its config describes."""
    if before != asked:
        _refuse_model_config(path, before, asked)
    done = meta.get("pretrain", {})
    window = (done.get("until_us"), done.get("max_charges"))
    if window != (settings["until_us"], settings["max_charges"]):
        flags = _window_flags(ws, window[0], window[1])
        raise ConfigError(
            f"Checkpoint '{path}' was pretrained on another window of the log: charges before "
            f"{_when(window[0])}, {_first(window[1])}; this run asks for charges before "
            f"{_when(settings['until_us'])}, {_first(settings['max_charges'])}. Resuming would misstate what "
            f"it has seen: resume with its window ({flags}), or start over with --fresh."
        )
    changed = [k for k in RESUME_FIXED if k in done and done[k] != settings[k]]
    if changed:
        then = ", ".join(f"{k} {exact(done[k])}" for k in changed)
        flags = " ".join(f"--{k.replace('_', '-')} {exact(done[k])}" for k in changed if k in CLI_OPTIONS)
        raise ConfigError(
            f"Checkpoint '{path}' was pretrained with {then}; resuming with "
            f"{', '.join(f'{k} {exact(settings[k])}' for k in changed)} would change its training "
            "midway (learning-rate schedule, batches, masks) and misstate it in its config. Resume with "
            f"its settings{f' ({flags})' if flags else ''}, or start over with --fresh."
        )


# ---- the optimizer's state -------------------------------------------------------------------------------
def load_optimizer(path: Path, optimizer: torch.optim.Optimizer, groups: list[dict[str, Any]]) -> None:
    """Load checkpoint ``path``'s AdamW state (``optimizer.safetensors``, its ``config.json``'s
    ``param_groups``) into ``optimizer``, built on the resumed model's parameters. State that does not fit
    them (a parameter index the model has not, a moment missing or of another shape, a group setting of
    another type: a file of another checkpoint, or edited) is :func:`payfm.fm.identity.damaged_checkpoint`
    naming the file, not a traceback at the first step nor moments silently dropped."""
    try:
        flat = load_file(path / "optimizer.safetensors")
    except (OSError, SafetensorError) as e:
        raise damaged_checkpoint(path, "optimizer.safetensors", e) from None
    params = [p for g in optimizer.param_groups for p in g["params"]]
    problem = _groups_problem(optimizer, groups, len(params))
    if problem:
        raise damaged_checkpoint(path, "config.json", problem)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        i, _, name = key.partition(".")
        if not i.isdigit() or int(i) >= len(params):
            has = f"tensor {key!r}: the model has parameters 0 to {len(params) - 1}"
            raise damaged_checkpoint(path, "optimizer.safetensors", has)
        state.setdefault(int(i), {})[name] = value
    amsgrad = any(g.get("amsgrad") for g in groups)
    for index, moments in sorted(state.items()):
        problem = _state_problem(moments, tuple(params[index].shape), amsgrad)
        if problem:
            raise damaged_checkpoint(path, "optimizer.safetensors", f"parameter {index}: {problem}")
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError) as e:  # (what the checks above did not foresee)
        raise damaged_checkpoint(path, "optimizer.safetensors", e) from None


def _state_problem(moments: dict[str, torch.Tensor], shape: tuple[int, ...], amsgrad: bool) -> str | None:
    """What is wrong with one parameter's AdamW state (``step``, ``exp_avg``, ``exp_avg_sq``, with amsgrad
    ``max_exp_avg_sq``) for a parameter of ``shape``; None when nothing is."""
    wanted = {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if amsgrad else set())
    if set(moments) != wanted:
        return f"state {', '.join(sorted(moments))}, expected {', '.join(sorted(wanted))}"
    if moments["step"].numel() != 1:
        return f"'step' of shape {list(moments['step'].shape)}, expected one number"
    for name in sorted(wanted - {"step"}):
        if tuple(moments[name].shape) != shape or not moments[name].is_floating_point():
            return (
                f"{name!r} {moments[name].dtype} of shape {list(moments[name].shape)}, expected floats of "
                f"the parameter's shape {list(shape)}"
            )
    return None


def _groups_problem(optimizer: torch.optim.Optimizer, groups: list[dict[str, Any]], n: int) -> str | None:
    """What is wrong with a checkpoint's ``param_groups`` for ``optimizer`` (built on ``n`` parameters):
    the number of groups, their parameter indices, a setting of another type than AdamW's; None if nothing."""
    if len(groups) != len(optimizer.param_groups):
        return f"'param_groups' {len(groups)} groups, expected {len(optimizer.param_groups)}"
    at = 0
    for g, (group, ours) in enumerate(zip(groups, optimizer.param_groups, strict=True)):
        indices = list(range(at, at + len(ours["params"])))
        at += len(indices)
        if group.get("params") != indices:
            return f"'param_groups[{g}].params' {_short(group.get('params'))}, expected {_short(indices)}"
        for key, default in ours.items():
            if key == "params" or key not in group:  # (a setting of another torch version: its default)
                continue
            if not _same_kind(group[key], default):
                return f"'param_groups[{g}].{key}' {_short(group[key])}, expected {_kind(default)}"
    return None


def _same_kind(value: object, default: object) -> bool:
    if isinstance(default, bool) or default is None:  # (None: torch picks; foreach, fused)
        return isinstance(value, bool) or value is None
    if isinstance(default, tuple | list):
        return (
            isinstance(value, list | tuple)
            and len(value) == len(default)
            and all(_same_kind(v, d) for v, d in zip(value, default, strict=True))
        )
    if isinstance(default, int | float):
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return True


def _kind(default: object) -> str:
    if isinstance(default, bool) or default is None:
        return "true, false or null"
    if isinstance(default, tuple | list):
        return f"a list of {len(default)} numbers"
    return "a finite number"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
