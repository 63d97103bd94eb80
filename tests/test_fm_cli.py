"""`payfm fm`: pretrain and embed from the command line; a missing checkpoint is one clean error."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import torch
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.synth import WorldConfig
from payfm.synth.generator import generate_world


def test_pretrain_then_embed_and_clean_error(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    ws = Workspace.open(tmp_path, create=True)
    ws.write_stream(generate_world(WorldConfig(charges=2_000, days=5, seed=2)), "replace")
    runner = CliRunner()
    missing = runner.invoke(cli, ["-w", str(tmp_path), "fm", "embed", "--name", "nope"])
    assert missing.exit_code == 1 and "No foundation-model checkpoint" in missing.output
    assert "Traceback" not in missing.output
    args = ["-w", str(tmp_path), "fm", "pretrain", "--steps", "2", "--seq-len", "4", "--batch-size", "32"]
    trained = runner.invoke(cli, args, catch_exceptions=False)
    assert trained.exit_code == 0 and "step 2" in trained.output
    embedded = runner.invoke(cli, ["-w", str(tmp_path), "fm", "embed"], catch_exceptions=False)
    assert embedded.exit_code == 0
    table = pq.read_table(tmp_path / "fm" / "default.embeddings.parquet")
    assert table.num_rows == ws.count("charges") and table.column_names == [
        "charge_id",
        "created",
        "embedding",
    ]
    with_surprise = runner.invoke(
        cli, ["-w", str(tmp_path), "fm", "embed", "--surprise"], catch_exceptions=False
    )
    assert with_surprise.exit_code == 0
    table = pq.read_table(tmp_path / "fm" / "default.embeddings.parquet")
    assert table.column_names == ["charge_id", "created", "embedding", "surprise"]
    assert table.schema.field("surprise").type.list_size == 2 * 21  # 21 pre-authorization fields, 2 views
    bad = runner.invoke(cli, ["-w", str(tmp_path), "fm", "evaluate", "--fm-inputs", "embedding+novelty"])
    assert bad.exit_code == 2 and "--fm-inputs" in bad.output and "novelty" in bad.output
    assert "Traceback" not in bad.output
    missing = runner.invoke(cli, ["-w", str(tmp_path), "fm", "embed", "--name", "nope"])
    assert "Checkpoints here: default." in missing.output  # the ones that exist, named (no option: --fm too)

    # Run again past its end, a checkpoint is left as it is: no rewound step counter, no new weights (a
    # model registered on it would otherwise be refused for a changed content hash).
    from payfm.fm.identity import checkpoint_hash

    before = checkpoint_hash(tmp_path / "fm" / "default")
    again = runner.invoke(cli, [*args[:4], "--steps", "1", *args[6:]], catch_exceptions=False)
    said = " ".join(again.output.split())
    assert again.exit_code == 0 and "at step 2 already" in said and "nothing to train" in said
    assert checkpoint_hash(tmp_path / "fm" / "default") == before
    assert '"step": 2' in (tmp_path / "fm" / "default" / "config.json").read_text()


def test_bad_fm_options_are_one_line_errors_naming_the_option(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path, create=True)
    ws.write_stream(generate_world(WorldConfig(charges=1_000, days=2, seed=2)), "replace")
    base = ["-w", str(tmp_path), "fm"]
    cases = [
        (["pretrain", "--batch-size", "0"], "--batch-size"),
        (["pretrain", "--steps", "-1"], "--steps"),
        (["pretrain", "--epochs", "0"], "--epochs"),
        (["pretrain", "--max-charges", "0"], "--max-charges"),
        (["pretrain", "--n-embd", "30", "--n-head", "4"], "--n-embd"),
        (["pretrain", "--seed", "-1"], "--seed"),
        (["evaluate", "--resamples", "0"], "--resamples"),
        (["--threads", "0", "embed"], "--threads"),
        (["evaluate", "--train-frac", "1.5"], "--train-frac"),
        (["parity", "--tolerance", "-1"], "--tolerance"),
        (["embed", "--out", "embeddings/"], "--out"),  # a file named 'embeddings' was written
    ]
    for args, option in cases:
        r = CliRunner().invoke(cli, [*base, *args])
        assert r.exit_code == 2 and option in r.output and "Traceback" not in r.output, (args, r.output)
    assert not (tmp_path / "fm").exists()  # refused before any work
    empty = tmp_path / "empty"
    Workspace.open(empty, create=True)
    r = CliRunner().invoke(cli, ["-w", str(empty), "fm", "pretrain", "--steps", "1"])
    assert r.exit_code == 1 and "holds no charges: generate or import some first" in r.output, r.output


def test_pretrain_options_reach_the_checkpoint_and_progress_counts_steps(tmp_path: Path) -> None:
    from payfm.cli.fm import pretrain as pretrain_command
    from payfm.fm.pretrain import PretrainConfig, load_checkpoint, pretrain

    torch.set_num_threads(1)
    defaults = {p.name: p.default for p in pretrain_command.params}
    assert (defaults["lr"], defaults["warmup"]) == (PretrainConfig.lr, PretrainConfig.warmup)
    ws = Workspace.open(tmp_path, create=True)
    ws.write_stream(generate_world(WorldConfig(charges=1_500, days=5, seed=3)), "replace")
    args = ["-w", str(tmp_path), "fm", "pretrain", "--steps", "3", "--seq-len", "4", "--batch-size", "32"]
    result = CliRunner().invoke(cli, [*args, "--lr", "0.02", "--warmup", "5"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _, _, meta = load_checkpoint(tmp_path / "fm" / "default")
    assert (meta["pretrain"]["lr"], meta["pretrain"]["warmup"]) == (0.02, 5)
    bad = CliRunner().invoke(cli, [*args, "--lr", "0"])
    assert bad.exit_code == 2 and "--lr" in bad.output and "Traceback" not in bad.output
    more = [*args[:4], "--steps", "4", *args[6:]]  # resume to step 4: the schedule must be the same
    resumed = CliRunner().invoke(cli, more)  # the default lr, not the run's 0.02
    assert resumed.exit_code == 1 and "--lr 0.02 --warmup 5" in resumed.output, resumed.output
    resumed = CliRunner().invoke(cli, [*more, "--lr", "0.02", "--warmup", "5"], catch_exceptions=False)
    assert resumed.exit_code == 0 and "step 4" in resumed.output
    for flag, value, was in (("--seed", "1", "--seed 0"), ("--batch-size", "64", "--batch-size 32")):
        other = CliRunner().invoke(cli, [*more, "--lr", "0.02", "--warmup", "5", flag, value])
        assert other.exit_code == 1 and f"Resume with its settings ({was})" in other.output, other.output
    assert load_checkpoint(tmp_path / "fm" / "default")[2]["pretrain"]["seed"] == 0  # left as it was

    seen: list[tuple[int, int, float]] = []
    cfg = PretrainConfig(seq_len=4, batch_size=32, steps=5)
    run = pretrain(ws, cfg, out=tmp_path / "p", stop_at=3, progress=lambda *a: seen.append(a))
    run = pretrain(ws, cfg, out=tmp_path / "p", progress=lambda *a: seen.append(a))  # resumes at 3
    assert [(s, t) for s, t, _ in seen] == [(1, 3), (2, 3), (3, 3), (4, 5), (5, 5)]
    recent = run.losses[-20:]
    assert seen[-1][2] == sum(recent) / len(recent)
