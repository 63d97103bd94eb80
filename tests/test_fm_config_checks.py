"""Pretraining configs and checkpoints' config.json are checked field by field: one error naming the field,
what it takes and the value, never an untrained checkpoint or a traceback later."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.fm.identity import checkpoint_hash
from payfm.fm.pretrain import PretrainConfig, load_checkpoint, pretrain
from payfm.synth import WorldConfig
from payfm.synth.generator import generate_world

TINY = PretrainConfig(seq_len=4, n_layer=1, n_head=2, n_embd=8, batch_size=32, steps=2, max_charges=1000)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    """A 1,500-charge world and a checkpoint `base` of 2 steps on its first 1,000 charges."""
    torch.set_num_threads(1)
    w = Workspace.open(Path(tmp_path_factory.mktemp("fmconf")), create=True)
    w.write_stream(generate_world(WorldConfig(charges=1_500, days=4, seed=3)), "replace")
    return w, pretrain(w, TINY, out=w.root / "fm" / "base").path


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("epochs", 0, "a finite number > 0"),
        ("epochs", math.nan, "a finite number > 0"),
        ("steps", -1, "an integer >= 1 or None"),
        ("steps", 0, "an integer >= 1 or None"),
        ("steps", 2.5, "an integer >= 1 or None"),
        ("steps", True, "an integer >= 1 or None"),
        ("batch_size", 0, "an integer >= 1"),
        ("seq_len", 1, "an integer >= 2"),
        ("n_layer", 0, "an integer >= 1"),
        ("n_head", 0, "an integer >= 1"),
        ("n_embd", 0, "an integer >= 1"),
        ("lr", 0.0, "a finite number > 0"),
        ("lr", math.inf, "a finite number > 0"),
        ("weight_decay", -0.1, "a finite number >= 0"),
        ("warmup", -1, "an integer >= 0"),
        ("mask_prob", -1.0, "a finite number in [0, 1]"),
        ("next_prob", 1.5, "a finite number in [0, 1]"),
        ("max_charges", 0, "an integer >= 1 or None"),
        ("until_us", "2026-01-01", "an integer or None"),
        ("seed", -1, "an integer in [0, 18446744073709551615]"),
        ("checkpoint_every", 0, "an integer >= 1"),
    ],
)
def test_every_pretraining_field_is_checked_naming_it(field: str, value: Any, expected: str) -> None:
    """Found by a review: the Python API took epochs=0 and steps=-1 (an untrained checkpoint, whose step -1
    then crashed the CLI's resume), batch_size=0 (ZeroDivisionError), seq_len=1 and mask_prob=-1."""
    with pytest.raises(ConfigError) as e:
        PretrainConfig(**{**TINY.__dict__, field: value})
    assert str(e.value) == f"The {field!r} of pretraining must be {expected}. Got {value!r}.", str(e.value)


def test_pretraining_configs_in_range_are_taken() -> None:
    PretrainConfig()
    PretrainConfig(epochs=0.5, steps=None, warmup=0, mask_prob=0.0, next_prob=1.0, seed=2**64 - 1, seq_len=2)
    # NumPy numbers are taken as Python's (config.json must hold them)
    taken = PretrainConfig(steps=np.int64(5), lr=np.float32(0.5), until_us=np.int64(7))
    assert (type(taken.steps), type(taken.lr), type(taken.until_us)) == (int, float, int)
    assert json.loads(json.dumps(taken.__dict__))["until_us"] == 7
    with pytest.raises(
        ConfigError, match=r"'n_embd' of pretraining must be a multiple of its 'n_head' \(4\)"
    ):
        PretrainConfig(n_embd=10, n_head=4)


def _mutate(ckpt: Path, name: str, change: Callable[[dict[str, Any]], None]) -> Path:
    dst = ckpt.with_name(name)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(ckpt, dst)
    doc = json.loads((dst / "config.json").read_text())
    change(doc)
    (dst / "config.json").write_text(json.dumps(doc))
    return dst


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = key.split(".")
        inner = doc
        for p in parents:
            inner = inner[p]
        inner[last] = value

    return change


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.pop(key)


# (name, change, what the error says, whether every reader takes the field or only a resume)
CASES = [
    ("c-step", _set("step", "abc"), "'step' \"abc\", expected an integer >= 0", False),
    ("c-negstep", _set("step", -1), "'step' -1, expected an integer >= 0", False),
    ("c-groups", _drop("param_groups"), "no 'param_groups' (the AdamW settings)", False),
    (
        "c-badgroups",
        _set("param_groups", {"lr": 1}),
        "'param_groups' {\"lr\": 1}, expected a list of objects",
        False,
    ),
    ("c-losses", _set("losses", None), "'losses' null, expected a list of numbers", False),
    ("c-lossval", _set("losses", [1.0, "x"]), "expected a list of numbers", False),
    (
        "c-seed",
        _set("pretrain.seed", -4),
        "'pretrain.seed' -4, expected an integer in [0, 18446744073709551615]",
        False,
    ),
    ("c-lr", _set("pretrain.lr", "fast"), "'pretrain.lr' \"fast\", expected a finite number > 0", False),
    ("c-charges", _set("charges", "1000"), "'charges' \"1000\", expected an integer >= 0 or null", False),
    ("c-heads", _set("model.n_head", 3), "'model.n_embd' 8, expected a multiple of 'model.n_head' 3", True),
    ("c-views", _set("model.n_views", 0), "'model.n_views' 0, expected an integer >= 1", True),
    (
        "c-vocab",
        _set("model.vocab_sizes", []),
        "'model.vocab_sizes' [], expected a list of integers >= 1",
        True,
    ),
    ("c-nomodel", _drop("model"), "an object without 'model'", True),
    ("c-pretrain", _set("pretrain", None), "'pretrain' null, expected an object", True),
    (
        "c-until",
        _set("pretrain.until_us", "soon"),
        "'pretrain.until_us' \"soon\", expected an integer or null",
        True,
    ),
    ("c-seen", _set("seen_until_us", 1.5), "'seen_until_us' 1.5, expected an integer or null", True),
    ("c-tok", _set("tokenizer_version", 7), "'tokenizer_version' 7, expected a text", True),
]


def test_a_config_json_with_a_bad_field_is_one_error_naming_the_checkpoint_and_the_field(
    trained: tuple[Workspace, Path],
) -> None:
    """Found by a review: a config.json that is valid JSON with a bad field gave a traceback on resume
    ("step": "abc" a ValueError, no param_groups a KeyError, "losses": null a TypeError), and a model whose
    n_embd n_head does not divide an error naming neither the checkpoint nor config.json. Fields only a
    resume reads (the step, losses, AdamW settings, run config) do not stop the other readers: a model
    registered on such a checkpoint still loads."""
    ws, base = trained
    resume = PretrainConfig(**{**TINY.__dict__, "steps": 3})
    for name, change, what, everyone in CASES:
        ckpt = _mutate(base, name, change)
        head = f"Checkpoint '{ckpt}': expected config.json holding the model's and the run's config"
        readers: list[Callable[[], object]] = [lambda: pretrain(ws, resume, out=ckpt)]  # noqa: B023
        others: list[Callable[[], object]] = [lambda: load_checkpoint(ckpt), lambda: checkpoint_hash(ckpt)]  # noqa: B023
        for read in readers + (others if everyone else []):
            with pytest.raises(ConfigError) as e:
                read()
            said = str(e.value)
            assert said.startswith(head) and what in said and "incomplete or damaged" in said, (name, said)
        if not everyone:
            for read in others:
                read()  # the embedder, the registry: they do not read it
        shutil.rmtree(ckpt)


def test_the_cli_says_it_in_one_line(trained: tuple[Workspace, Path]) -> None:
    ws, base = trained
    ckpt = _mutate(base, "c-cli", _set("step", "abc"))
    shape = ["--seq-len", "4", "--n-layer", "1", "--n-head", "2", "--n-embd", "8", "--batch-size", "32"]
    done = CliRunner().invoke(
        cli,
        [
            "-w",
            str(ws.root),
            "fm",
            "pretrain",
            "--name",
            "c-cli",
            "--steps",
            "3",
            *shape,
            "--max-charges",
            "1000",
        ],
    )
    assert done.exit_code == 1 and "Traceback" not in done.output, done.output
    lines = done.output.strip().splitlines()
    assert lines[-1].startswith(f"Error: Checkpoint '{ckpt}': expected config.json") and "'step'" in lines[-1]
