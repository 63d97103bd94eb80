"""Found by a review of `payfm fm`: a refused resume printed values rounded to 6 significant digits (a seed
click refuses, a learning rate or a cut that is not the checkpoint's); two pretrainings of one name raced
their saves; the embeddings and the evaluation did not say which checkpoint made them; bench_fm took any
--device and failed after its work."""

from __future__ import annotations

import fcntl
import json
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import duckdb
import pyarrow.parquet as pq
import pytest
import torch

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.fm import pretrain as pretrain_module
from payfm.fm.identity import checkpoint_hash, checkpoint_meta
from payfm.fm.model import FMConfig
from payfm.fm.pretrain import PretrainConfig, exclusive_run, load_identified, pretrain
from payfm.fm.resume import _window_flags, check_resume, exact
from payfm.fm.sequences import time_cut
from payfm.synth import WorldConfig
from payfm.synth.generator import generate_world
from test_fm_cli_hygiene import SHAPE, WINDOW, _one_line_error, _run, small_evaluation

ROOT = Path(__file__).resolve().parents[1]
TINY = PretrainConfig(seq_len=4, n_layer=1, n_head=2, n_embd=8, batch_size=32, steps=2)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A 2,000-charge world (as tests/test_fm_cli_hygiene.py's), no checkpoint yet."""
    torch.set_num_threads(1)
    w = Workspace.open(Path(tmp_path_factory.mktemp("fmrev")), create=True)
    w.write_stream(generate_world(WorldConfig(charges=2_000, days=6, seed=8, fraud_rate=0.03)), "replace")
    return w


# ---- 1. a refused resume names the checkpoint's values exactly -------------------------------------------
def test_exact_values_read_back_as_the_same_value() -> None:
    for value in (1234567, 2**64 - 1, 0.0012345678, 3e-3, 0.1 + 0.2, 1e-05, 1.0):
        shown = exact(value)
        assert type(value)(shown) == value, (value, shown)
    assert exact(1234567) == "1234567" and exact(0.0012345678) == "0.0012345678"


def test_a_refused_resume_names_the_settings_exactly(ws: Workspace) -> None:
    """`--seed 1234567` was shown as `--seed 1.23457e+06` (no integer: click refused it) and `--lr
    0.0012345678` as `0.00123457` (another value: refused again)."""
    config = FMConfig(vocab_sizes=(4, 4))
    done = {"lr": 0.0012345678, "seed": 1234567, "until_us": None, "max_charges": None}
    settings = {"lr": 0.003, "seed": 0, "until_us": None, "max_charges": None}
    with pytest.raises(ConfigError) as refused:
        check_resume(ws, ws.root / "fm" / "x", {"pretrain": done}, config, config, settings)
    said = str(refused.value)
    assert "(--lr 0.0012345678 --seed 1234567)" in said and "lr 0.003, seed 0 would change" in said, said

    # Following the advice on the command line resumes the checkpoint.
    base = ["fm", "pretrain", *SHAPE, *WINDOW, "--name", "exact"]
    first = _run(ws.root, *base, "--steps", "1", "--seed", "1234567", "--lr", "0.0012345678")
    assert first.exit_code == 0, first.output
    said = _one_line_error(_run(ws.root, *base, "--steps", "2"))
    advice = re.search(r"Resume with its settings \(([^)]*)\)", said)
    assert advice and advice.group(1) == "--lr 0.0012345678 --seed 1234567", said
    again = _run(ws.root, *base, "--steps", "2", *advice.group(1).split())
    assert again.exit_code == 0 and checkpoint_meta(ws.root / "fm" / "exact")["step"] == 2, again.output


# ---- 2. the suggested --until-frac selects the checkpoint's cut ------------------------------------------
class _Log:
    """A stand-in for a workspace of 1.5M charges (one a second) in a DuckDB file: what _window_flags and
    time_cut read of a workspace (``connect()``, ``root``). Generating 1.5M charges would take minutes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        con = duckdb.connect(str(root / "log.duckdb"))
        con.execute(
            "CREATE TABLE charges AS SELECT TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i) AS created, "
            "lpad(i::VARCHAR, 8, '0') AS charge_id FROM range(1500000) t(i)"
        )
        con.close()

    def connect(self) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(str(self.root / "log.duckdb"), read_only=True)


def test_the_suggested_until_frac_selects_the_checkpoint_s_cut(tmp_path: Path) -> None:
    """The fraction was checked at up to 9 decimals but printed with 6 significant digits: on a log of over
    a million charges the printed one selected another cut (7 of 20 random cuts on 1.5M charges)."""
    log = cast(Workspace, _Log(tmp_path))
    n = 1_500_000
    rng = random.Random(0)
    for offset in [1_234_567, 987_654, *(rng.randrange(n // 2, n * 9 // 10) for _ in range(4))]:
        until = time_cut(log, (offset + 0.5) / n)  # the cut at that offset
        flags = _window_flags(log, until, None)
        shown = re.fullmatch(r"--until-frac (\S+)", flags)
        assert shown, flags
        assert time_cut(log, float(shown.group(1))) == until, (offset, flags)


# ---- 3. one pretraining of a checkpoint at a time -------------------------------------------------------
@pytest.fixture
def held_elsewhere(ws: Workspace) -> Iterator[Path]:
    """`fm/.busy.lock` held by another process (a pretraining of `busy` running)."""
    lock = ws.root / "fm" / ".busy.lock"
    lock.parent.mkdir(exist_ok=True)
    code = (
        "import fcntl, sys\n"
        f"f = open({str(lock)!r}, 'a')\n"
        "fcntl.flock(f, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"
        yield ws.root / "fm" / "busy"
    finally:
        assert other.stdin is not None and other.stdout is not None
        other.stdin.close()  # the other process ends (and its lock with it)
        other.wait(timeout=30)
        other.stdout.close()


def test_a_second_pretraining_of_a_checkpoint_is_refused_at_once(ws: Workspace, held_elsewhere: Path) -> None:
    """Two runs of one --name swapped their saves over each other's: a raw OSError ("Directory not empty")
    and a `.<name>.<pid>.old` left behind."""
    ckpt = held_elsewhere
    with pytest.raises(ConfigError) as refused:
        pretrain(ws, TINY, out=ckpt)
    said = str(refused.value)
    assert f"Checkpoint '{ckpt}': another pretraining of it is running" in said, said
    assert not ckpt.exists()  # refused before any work
    said = _one_line_error(_run(ws.root, "fm", "pretrain", "--steps", "2", *SHAPE, *WINDOW, "--name", "busy"))
    assert "another pretraining of it is running" in said and "busy" in said, said
    assert not ckpt.exists()


def test_the_lock_is_held_for_the_run_and_removed_after(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = tmp_path / "fm" / "solo"
    lock = ckpt.with_name(".solo.lock")
    during: list[bool] = []

    def progress(step: int, total: int, loss: float) -> None:  # another run tries while this one trains
        try:
            with exclusive_run(ckpt):
                during.append(False)
        except ConfigError:
            during.append(True)

    done = pretrain(ws, TINY, out=ckpt, progress=progress)
    assert done.step == 2 and during == [True, True]
    assert not lock.exists() and sorted(p.name for p in ckpt.parent.iterdir()) == ["solo"]

    # a lock file left by a run killed outright (no holder) does not stop the next one, which removes it
    lock.touch()
    again = pretrain(ws, PretrainConfig(**{**TINY.__dict__, "steps": 3}), out=ckpt)
    assert again.step == 3 and not lock.exists()

    # A run that opened the file just before its holder removed it, then locked it, holds a removed file
    # while the next run holds the one at the path: it must open the path again (and be refused).
    opened: list[Any] = []

    def open_then_swapped(file: Any, mode: str = "r") -> Any:
        f = open(file, mode)  # noqa: SIM115 - closed below
        if not opened:
            Path(file).unlink()  # the holder ended: removed
            holder = open(file, "a")  # noqa: SIM115 - the next run's file, held
            fcntl.flock(holder, fcntl.LOCK_EX)
            opened.extend([f, holder])
        return f

    monkeypatch.setattr(pretrain_module, "open", open_then_swapped, raising=False)
    try:
        with pytest.raises(ConfigError, match="another pretraining of it is running"), exclusive_run(ckpt):
            pass
    finally:
        for f in opened:
            f.close()


# ---- 4. the embeddings and the evaluation name their checkpoint ------------------------------------------
def test_embeddings_and_evaluation_record_the_checkpoint(ws: Workspace, tmp_path: Path) -> None:
    from payfm.fm.downstream import evaluate_embeddings
    from payfm.fm.embed import embed

    ckpt = ws.root / "fm" / "prov"
    config = PretrainConfig(**{**TINY.__dict__, "until_us": time_cut(ws, 0.6)})
    pretrain(ws, config, out=ckpt)
    path, _ = embed(ws, ckpt, out=tmp_path / "e.parquet")
    meta = pq.read_schema(path).metadata
    first = checkpoint_hash(ckpt)
    tokenizer_version = checkpoint_meta(ckpt)["tokenizer_version"]
    assert meta[b"payfm.checkpoint"] == b"prov" and meta[b"payfm.checkpoint_hash"] == first.encode()
    assert meta[b"payfm.checkpoint_step"] == b"2"
    assert meta[b"payfm.tokenizer_version"] == tokenizer_version.encode()

    pretrain(ws, PretrainConfig(**{**config.__dict__, "steps": 3}), out=ckpt)  # resumed: other weights
    again = pq.read_schema(embed(ws, ckpt, out=tmp_path / "e.parquet")[0]).metadata
    assert again[b"payfm.checkpoint_hash"] == checkpoint_hash(ckpt).encode() != first.encode()
    assert again[b"payfm.checkpoint_step"] == b"3"

    feats, cfg = small_evaluation(ws)
    report = evaluate_embeddings(ws, ckpt, cfg, features=(feats, ["amount"]))
    doc = json.loads((ckpt.with_name("prov.evaluation.json")).read_text())
    expected = {
        "name": "prov",
        "hash": checkpoint_hash(ckpt),
        "step": 3,
        "tokenizer_version": tokenizer_version,
    }
    assert doc["checkpoint"] == expected and report.checkpoint == expected


def test_a_checkpoint_swapped_while_loaded_is_loaded_again(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hash recorded is that of the weights used: a save swapped in while they were loaded (the hash
    before and after differ) is loaded again, and a checkpoint that keeps changing is one error."""
    ckpt = pretrain(ws, TINY, out=tmp_path / "fm" / "swap").path
    digests = iter(["a", "b", "b", "b"])
    monkeypatch.setattr(pretrain_module, "checkpoint_hash", lambda path: next(digests))
    assert load_identified(ckpt)[3]["hash"] == "b"
    changing = iter(range(100))
    monkeypatch.setattr(pretrain_module, "checkpoint_hash", lambda path: str(next(changing)))
    with pytest.raises(ConfigError, match="changed each time it was read"):
        load_identified(ckpt)


# ---- 5. bench_fm checks --device before its work ---------------------------------------------------------
@pytest.mark.parametrize("device", ["gpu", "cuda"])
def test_bench_fm_refuses_a_device_it_cannot_use_before_any_work(device: str) -> None:
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: cuda is a device it can use")
    args = [sys.executable, str(ROOT / "bench" / "bench_fm.py"), "--device", device]
    done = subprocess.run(
        [*args, "--charges", "1000", "--steps", "1"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1 and done.stdout == "", (done.stdout, done.stderr)  # nothing generated
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "--device must be cpu, or cuda" in lines[0] and f"Got {device!r}" in lines[0], lines[0]
