"""`payfm fm` hygiene: checkpoint names, registered checkpoints, a grown log, damaged checkpoints, temporary
files, NaN in the evaluation, messages, torchrun's last line, embedding progress, repeated --fm-inputs."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.fm.identity import checkpoint_hash
from payfm.synth import WorldConfig
from payfm.synth.generator import generate_world

# a tiny model on 2,000 charges, pretrained on the first 60% of the log (so `fm evaluate` takes it)
SHAPE = ["--seq-len", "4", "--n-layer", "1", "--n-head", "2", "--n-embd", "8", "--batch-size", "32"]
WINDOW = ["--until-frac", "0.6"]


def _run(root: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["-w", str(root), *args])


def _one_line_error(result: Any, code: int = 1) -> str:
    """The error of a refused command, asserted to be one clean message (no traceback)."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0] == result.output.rstrip().splitlines()[-1], result.output
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A 2,000-charge world with a checkpoint `base` (2 steps) and its embeddings."""
    torch.set_num_threads(1)
    w = Workspace.open(Path(tmp_path_factory.mktemp("fmhyg")), create=True)
    w.write_stream(generate_world(WorldConfig(charges=2_000, days=6, seed=8, fraud_rate=0.03)), "replace")
    done = _run(w.root, "fm", "pretrain", "--steps", "2", *SHAPE, *WINDOW, "--name", "base")
    assert done.exit_code == 0, done.output
    assert _run(w.root, "fm", "embed", "--name", "base").exit_code == 0
    return w


def _copy(ws: Workspace, name: str) -> Path:
    """A copy of checkpoint `base` as `name` (tests that change a checkpoint change a copy)."""
    dst = ws.root / "fm" / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(ws.root / "fm" / "base", dst)
    return dst


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---- 1. checkpoint names ---------------------------------------------------------------------------------
def test_checkpoint_names_are_checked_before_anything_runs(ws: Workspace, tmp_path: Path) -> None:
    before = sorted(p.name for p in (ws.root / "fm").iterdir())
    bad = ["", ".", "..", "../../outside", "a/b", "Upper", "v1.2", ".hidden", "x" * 65, "base.embeddings"]
    for name in bad:
        for command in (["pretrain", "--steps", "1", *SHAPE, *WINDOW], ["embed"], ["parity"], ["evaluate"]):
            said = _one_line_error(_run(ws.root, "fm", *command, "--name", name), code=2)
            assert "'--name'" in said and "lower-case letters, digits" in said and repr(name) in said, said
    assert sorted(p.name for p in (ws.root / "fm").iterdir()) == before  # nothing deleted, nothing new
    assert (
        not (ws.root.parent / "outside").exists() and not (ws.root / "fm" / "b.embeddings.parquet").exists()
    )
    from payfm.fm.identity import check_name
    from payfm.fm.pretrain import checkpoint_dir

    with pytest.raises(ConfigError, match=r"--fm must be .*Got '\.\.'"):
        checkpoint_dir(ws, "..", option="--fm")
    assert check_name("x" * 64) == "x" * 64 and check_name("fraud_v2-1") == "fraud_v2-1"
    said = _one_line_error(
        _run(ws.root, "train", "--fm", "..", "--model", "lr"), code=1
    )  # reads, but not fm/..
    assert "--fm must be lower-case letters" in said and "'..'" in said, said


def test_a_checkpoint_named_before_the_rule_keeps_its_name(ws: Workspace) -> None:
    """Found by a review: payfm before the rule took any name; such a checkpoint (and the models registered
    on it) must stay usable by that name, while a new checkpoint must follow the rule."""
    legacy = _copy(ws, "CardFM.v1")
    try:
        done = _run(ws.root, "fm", "embed", "--name", "CardFM.v1")
        assert done.exit_code == 0, done.output
        assert (ws.root / "fm" / "CardFM.v1.embeddings.parquet").is_file()
        said = _one_line_error(
            _run(ws.root, "fm", "pretrain", "--steps", "1", *SHAPE, *WINDOW, "--name", "New.v2"), 2
        )
        assert "'New.v2'" in said and not (ws.root / "fm" / "New.v2").exists()
        from payfm.fm.pretrain import checkpoint_dir

        assert checkpoint_dir(ws, "CardFM.v1", "--fm") == legacy
        for bad in ("..", ".base", "a/b"):  # never, existing or not
            with pytest.raises(ConfigError):
                checkpoint_dir(ws, bad)
    finally:
        shutil.rmtree(legacy, ignore_errors=True)
        (ws.root / "fm" / "CardFM.v1.embeddings.parquet").unlink(missing_ok=True)


# ---- 2. a checkpoint a registered model uses -------------------------------------------------------------
def _register_on(ws: Workspace, checkpoint: Path) -> Any:
    from payfm.features.catalog import tiny_set
    from payfm.fm.identity import embedding_names
    from payfm.registry import Registry
    from payfm.training.models import model_class

    fs = tiny_set()
    names = fs.names + embedding_names(16)  # 2 views x 8 channels
    X = np.random.default_rng(1).normal(size=(400, len(names)))
    m = model_class("lr")(calibration="none").fit(X, (X[:, -1] > 0).astype(int), feature_names=names)
    reg = Registry(ws)
    return reg, reg.register(m, name="fraud-fm", task="fraud", fset=fs, foundation_model=checkpoint)


def test_pretraining_a_checkpoint_a_registered_model_uses_is_refused(tmp_path: Path, ws: Workspace) -> None:
    own = Workspace.open(tmp_path / "ws", create=True)
    shutil.copytree(ws.root, own.root, dirs_exist_ok=True)
    ckpt = own.root / "fm" / "base"
    reg, mv = _register_on(own, ckpt)
    digest = checkpoint_hash(ckpt)
    for extra in (["--steps", "3"], ["--steps", "2", "--fresh"]):  # resume past its end; start over
        said = _one_line_error(_run(own.root, "fm", "pretrain", *extra, *SHAPE, *WINDOW, "--name", "base"))
        assert f"{mv.ref} (candidate)" in said and "Pretrain under a new --name" in said, said
        assert checkpoint_hash(ckpt) == digest
    reg.check_foundation_model(reg.get(mv.ref))  # still loads
    same = _run(own.root, "fm", "pretrain", "--steps", "2", *SHAPE, *WINDOW, "--name", "base")
    assert same.exit_code == 0 and "nothing to train" in " ".join(same.output.split())  # changes nothing
    # archived only: goes on, with a warning that a rollback to it would fail
    reg.set_stage(mv.ref, "archived")
    again = _run(own.root, "fm", "pretrain", "--steps", "3", *SHAPE, *WINDOW, "--name", "base")
    assert again.exit_code == 0, again.output
    said = " ".join(again.output.split())
    assert f"warning: Checkpoint '{ckpt}' is the foundation model of archived" in said, said
    assert "rollback to them fail" in said and checkpoint_hash(ckpt) != digest


# ---- 3. resuming after the log grew ----------------------------------------------------------------------
def test_resuming_on_a_log_that_changed_is_refused(tmp_path: Path) -> None:
    from payfm.fm.pretrain import PretrainConfig, pretrain

    own = Workspace.open(tmp_path / "ws", create=True)
    own.write_stream(generate_world(WorldConfig(charges=1_000, days=4, seed=2)), "replace")
    cfg = PretrainConfig(seq_len=4, n_layer=1, n_head=2, n_embd=8, batch_size=32, steps=2)  # the whole log
    out = tmp_path / "ckpt"
    pretrain(own, cfg, out=out)
    digest = checkpoint_hash(out)
    before = own.count("charges")
    own.write_stream(generate_world(WorldConfig(charges=1_300, days=5, seed=2)), "replace")  # grown
    with pytest.raises(
        ConfigError,
        match=rf"pretrained on {before:,} charges up to .*now holds {own.count('charges'):,} charges .*the "
        "log changed since",
    ):
        pretrain(own, PretrainConfig(**{**cfg.__dict__, "steps": 4}), out=out)
    assert checkpoint_hash(out) == digest


# ---- 4. damaged checkpoints ------------------------------------------------------------------------------
def test_an_incomplete_or_damaged_checkpoint_is_one_error_naming_the_file(ws: Workspace) -> None:
    def damage(name: str, file: str, how: str) -> Path:
        ckpt = _copy(ws, name)
        if how == "remove":
            (ckpt / file).unlink()
        elif how == "truncate":
            data = (ckpt / file).read_bytes()
            (ckpt / file).write_bytes(data[: len(data) // 2])
        else:
            (ckpt / file).write_text(how)
        return ckpt

    cases = [
        ("d-trunc", "model.safetensors", "truncate"),
        ("d-nomodel", "model.safetensors", "remove"),
        ("d-notok", "tokenizer.json", "remove"),
        ("d-conf", "config.json", "{"),
        ("d-tok", "tokenizer.json", "[1, 2"),
    ]
    for name, file, how in cases:
        ckpt = damage(name, file, how)
        for command in (["embed"], ["pretrain", "--steps", "3", *SHAPE, *WINDOW]):
            said = _one_line_error(_run(ws.root, "fm", *command, "--name", name))
            assert f"Checkpoint '{ckpt}': expected {file}" in said, (name, command, said)
            assert "incomplete or damaged" in said and "restore it" in said, said
    ckpt = damage("d-noopt", "optimizer.safetensors", "remove")  # only a resume reads it
    said = _one_line_error(
        _run(ws.root, "fm", "pretrain", "--steps", "3", *SHAPE, *WINDOW, "--name", "d-noopt")
    )
    assert f"Checkpoint '{ckpt}': expected optimizer.safetensors" in said and "no such file" in said, said
    with pytest.raises(ConfigError, match=r"expected model\.safetensors"):
        checkpoint_hash(damage("d-hash", "model.safetensors", "remove"))
    # a tokenizer of another format names the checkpoint
    ckpt = _copy(ws, "d-old")
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    (ckpt / "tokenizer.json").write_text(json.dumps(tok | {"fields": tok["fields"][:-1]}))
    said = _one_line_error(_run(ws.root, "fm", "embed", "--name", "d-old"))
    assert f"Checkpoint '{ckpt}', tokenizer.json: expected fields" in said and "another payfm version" in said


# ---- 5. temporary files ----------------------------------------------------------------------------------
def test_interrupted_writes_leave_no_temporary(ws: Workspace, tmp_path: Path, monkeypatch: Any) -> None:
    from payfm.fm import pretrain as pretrain_module
    from payfm.fm.embed import embed
    from payfm.fm.pretrain import load_checkpoint, save_checkpoint

    write_table = pq.write_table

    def interrupted(table: pa.Table, where: Any, **kw: Any) -> None:
        write_table(table.slice(0, 10), where, **kw)  # a part written, then SIGTERM (SystemExit in payfm)
        raise SystemExit(143)

    monkeypatch.setattr(pq, "write_table", interrupted)
    with pytest.raises(SystemExit):
        embed(ws, ws.root / "fm" / "base", out=tmp_path / "x.parquet")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    ckpt = _copy(ws, "t-save")
    digest = checkpoint_hash(ckpt)
    model, tok, meta = load_checkpoint(ckpt)
    calls: list[str] = []

    def save_file(tensors: Any, filename: Any) -> None:
        calls.append(str(filename))
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain_module, "save_file", save_file)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(ckpt, model, tok, meta)
    assert calls and _hidden(ckpt.parent) == [] and checkpoint_hash(ckpt) == digest


# ---- 6. NaN in the evaluation ----------------------------------------------------------------------------
def small_evaluation(ws: Workspace) -> tuple[pa.Table, Any]:
    """An amount feature of every charge and a quick downstream configuration (no fine-tuning, no detector,
    one GBDT seed): an evaluation of a tiny checkpoint in seconds."""
    from payfm.fm.downstream import DownstreamConfig

    con = ws.connect()
    try:
        feats = con.sql(
            "SELECT charge_id, created, amount_usd::DOUBLE AS amount FROM charges"
        ).to_arrow_table()
    finally:
        con.close()
    cfg = DownstreamConfig(
        train_frac=0.6, n_estimators=10, resamples=3, finetune_steps=0, detector_steps=0, gbdt_seeds=1
    )
    return feats, cfg


def test_evaluation_writes_json_and_shows_no_nan(ws: Workspace, monkeypatch: Any, tmp_path: Path) -> None:
    from payfm.fm import downstream
    from payfm.fm.downstream import DownstreamReport, Score, evaluate_embeddings

    feats, cfg = small_evaluation(ws)
    ckpt = _copy(ws, "e-json")
    report = evaluate_embeddings(ws, ckpt, cfg, features=(feats, ["amount"]))
    # a 6-day world's test window: slices where no fraud label matured (which ones depends on the world)
    empty = [k for k, s in report.scores["gbdt"].items() if s.positives == 0]
    assert empty and all(np.isnan(report.scores["gbdt"][k].ap) for k in empty)
    doc = json.loads(  # strict: NaN is not JSON
        (ckpt.parent / "e-json.evaluation.json").read_text(),
        parse_constant=lambda c: pytest.fail(f"{c} in the evaluation's JSON"),
    )
    assert all(
        doc["scores"]["gbdt"][k]["ap"] is None and doc["relative_gain"]["gbdt+fm"][k] is None for k in empty
    )

    # no positives on any slice: refused before any fit, naming --train-frac
    clean = Workspace.open(tmp_path / "clean", create=True)
    clean.write_stream(generate_world(WorldConfig(charges=1_000, days=4, seed=8, fraud_rate=0.0)), "replace")
    from payfm.fm.pretrain import PretrainConfig, pretrain
    from payfm.fm.sequences import time_cut

    small = PretrainConfig(seq_len=4, n_layer=1, n_head=2, n_embd=8, batch_size=32, steps=1)
    out = pretrain(
        clean, PretrainConfig(**{**small.__dict__, "until_us": time_cut(clean, 0.6)}), out=tmp_path / "m"
    )
    with pytest.raises(ConfigError, match=r"Got none on any slice.*--train-frac \(now 0\.6\)"):
        evaluate_embeddings(clean, out.path, cfg, features=(feats, ["amount"]))

    # the command line: "-" for no value, one line for the slices without positives
    nan = float("nan")
    fake = DownstreamReport(
        cut="2026-01-01T00:00:00Z", train_rows=10, test_rows=5, embedding_dims=16, hand_features=1
    )
    fake.scores = {
        "gbdt": {"overall": Score(nan, nan, nan, 0), "card_testing": Score(0.0, 0.0, 0.1, 2, 2)},
        "gbdt+fm": {"overall": Score(nan, nan, nan, 0), "card_testing": Score(0.5, 0.2, 0.9, 2, 2)},
    }
    fake.gain_intervals = {"gbdt+fm": {"overall": (nan, nan), "card_testing": (nan, nan)}}
    monkeypatch.setattr(downstream, "evaluate_embeddings", lambda *a, **k: fake)
    shown = _run(ws.root, "fm", "evaluate", "--name", "base")
    assert shown.exit_code == 0, shown.output
    assert (
        "nan" not in shown.output.lower()
        and "No positives in the test window (no AP) for: overall" in shown.output
    )
    assert "card_testing (2; 2)" in shown.output and "overall (0" not in shown.output


def test_a_slice_of_fewer_incidents_than_the_minimum_gets_no_interval() -> None:
    """Resampling one or two incidents varies the genuine charges only: an FM walkthrough got
    +733% [+282%, +1845%] on one account takeover. Below MIN_INCIDENTS, the AP alone."""
    import numpy as np

    from payfm.fm.downstream import MIN_INCIDENTS, _paired_gain, _score

    rng = np.random.default_rng(0)
    y = np.zeros(400, dtype=np.int64)
    y[:12] = 1
    base, other = rng.random(400), rng.random(400) + y * 0.5
    for n in (1, MIN_INCIDENTS - 1, MIN_INCIDENTS):
        groups = np.arange(400)
        groups[:12] = np.arange(12) % n  # the 12 frauds in n incidents
        score, gain = _score(y, other, groups, 50, 0), _paired_gain(y, base, other, groups, 50, 0)
        assert score.incidents == n and score.positives == 12 and np.isfinite(score.ap)
        few = n < MIN_INCIDENTS
        assert np.isnan(score.low) == few and np.isnan(gain[0]) == few, (n, score, gain)


# ---- 7. messages -----------------------------------------------------------------------------------------
def test_messages_name_the_caller_s_option_and_the_differing_value(ws: Workspace) -> None:
    said = _one_line_error(_run(ws.root, "train", "--fm", "nope"))
    assert (
        "No foundation-model checkpoint" in said
        and "Checkpoints here: base" in said
        and "(--name)" not in said
    )
    _copy(ws, "m-shape")
    other = [*SHAPE[:1], "6", *SHAPE[2:]]  # --seq-len 6, the checkpoint's is 4
    said = _one_line_error(
        _run(ws.root, "fm", "pretrain", "--steps", "3", *other, *WINDOW, "--name", "m-shape")
    )
    assert "pretrained with --seq-len 4; resuming with seq_len 6" in said and "(--seq-len 4)" in said, said
    hint = _run(ws.root, "fm", "pretrain", "--threads", "1")
    assert hint.exit_code == 2 and "payfm fm --threads N pretrain" in hint.output, hint.output
    assert (
        _run(ws.root, "fm", "pretrain", "--bogus").exit_code == 2
    )  # other options: click's error, as before


# ---- 8. torchrun: one last line ---------------------------------------------------------------------------
def test_torchrun_prints_the_last_line_once_with_the_whole_batch_loss(ws: Workspace, tmp_path: Path) -> None:
    from payfm.fm.pretrain import PretrainConfig, pretrain

    bin_dir = Path(sys.executable).parent
    cmd = [str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node", "2", str(bin_dir / "payfm")]
    cmd += ["-w", str(ws.root), "fm", "--threads", "1", "pretrain", "--steps", "3", *SHAPE, *WINDOW]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*cmd, "--name", "ddp"], capture_output=True, text=True, timeout=240, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Pretrained to step 3") == 1, done.stdout
    single = pretrain(
        ws,
        PretrainConfig(seq_len=4, n_layer=1, n_head=2, n_embd=8, batch_size=32, steps=3, until_us=_cut(ws)),
        out=tmp_path / "single",
    )
    said = done.stdout.split("loss ")[1].split(")")[0]
    assert abs(float(said) - single.loss) < 2e-3, (said, single.loss)  # the whole batch's, not a rank's share


def _cut(ws: Workspace) -> int:
    from payfm.fm.sequences import time_cut

    return time_cut(ws, 0.6)


# ---- 9. embedding progress --------------------------------------------------------------------------------
def test_embedding_reports_progress(ws: Workspace, tmp_path: Path) -> None:
    from payfm.fm.embed import embed, embedding_matrix

    seen: dict[str, list[tuple[int, int]]] = {}
    _, table = embed(
        ws,
        ws.root / "fm" / "base",
        out=tmp_path / "e.parquet",
        outputs=("embedding", "surprise"),
        workers=2,
        progress=lambda output, done, total: seen.setdefault(output, []).append((done, total)),
    )
    n = table.num_rows
    assert {o: v[-1] for o, v in seen.items()} == {"embedding": (2 * n, 2 * n), "surprise": (2 * n, 2 * n)}
    assert all(a[0] < b[0] for v in seen.values() for a, b in itertools.pairwise(v))
    before = pq.read_table(ws.root / "fm" / "base.embeddings.parquet")  # written without progress
    assert np.array_equal(embedding_matrix(before), embedding_matrix(table))


# ---- 10. repeated --fm-inputs -----------------------------------------------------------------------------
def test_a_repeated_fm_input_is_refused(ws: Workspace) -> None:
    from payfm.fm.downstream import DownstreamConfig, evaluate_embeddings

    twice = ["--fm-inputs", "embedding", "--fm-inputs", "surprise", "--fm-inputs", "embedding"]
    said = _one_line_error(_run(ws.root, "fm", "evaluate", "--name", "base", *twice), code=2)
    assert "--fm-inputs" in said and "Got embedding more than once" in said, said
    with pytest.raises(ConfigError, match="Got embedding\\+surprise more than once"):
        cfg = DownstreamConfig(fm_inputs=(("embedding", "surprise"), ("embedding", "surprise")))
        evaluate_embeddings(ws, ws.root / "fm" / "base", cfg)


def test_threads_beyond_what_torch_takes_are_a_usage_error(ws: Workspace) -> None:
    """Found by a review: --threads 99999999999 reached torch.set_num_threads, a ValueError traceback."""
    said = _one_line_error(_run(ws.root, "fm", "--threads", "99999999999", "embed", "--name", "base"), code=2)
    assert "'--threads'" in said and "1<=x<=1024" in said
