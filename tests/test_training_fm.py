"""`payfm train --fm`: models on the hand-made features + a foundation model's outputs, registered with the
checkpoint and served with it; a checkpoint pretrained on the validation period is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import average_precision_score

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.evaluation.drift import column_drift, window_drift
from payfm.evaluation.pipeline import model_drift, training_window
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.fm.embed import embed, embedding_matrix, outputs_for
from payfm.fm.identity import checkpoint_hash, checkpoint_meta, input_names, seen_until
from payfm.fm.pretrain import PretrainConfig, pretrain
from payfm.fm.sequences import read_charges, time_cut
from payfm.registry import Registry
from payfm.serving.scorer import Scorer
from payfm.synth import WorldConfig, generate_world
from payfm.training.predict import score_window
from payfm.training.tasks import task
from payfm.training.trainer import TrainConfig, prepare, with_fm_inputs

FS = tiny_set()
TINY = PretrainConfig(seq_len=4, n_layer=1, n_head=2, n_embd=8, batch_size=64, steps=4, seed=1)
SPLIT = ["--horizon-days", "10", "--val-days", "7", "--test-days", "7", "--gap-days", "3"]
OUTPUTS = ("embedding", "surprise")


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    torch.set_num_threads(1)
    w = Workspace.open(tmp_path_factory.mktemp("trainfm"), create=True)
    w.write_stream(generate_world(WorldConfig(charges=20_000, days=40, seed=7, fraud_rate=0.03)), "replace")
    return w


@pytest.fixture(scope="module")
def early(ws: Workspace) -> Path:
    """A checkpoint pretrained on the first 8 days (the validation period starts after day 15)."""
    first = int(read_charges(ws)["created_us"][0].as_py())
    cfg = PretrainConfig(**{**TINY.__dict__, "until_us": first + 8 * 86_400_000_000})
    return pretrain(ws, cfg, out=ws.root / "fm" / "early").path


def test_fm_inputs_are_each_charges_batch_outputs(ws: Workspace, early: Path) -> None:
    cfg = TrainConfig(horizon_days=10, val_days=7, test_days=7, gap_days=3, foundation_model=str(early))
    cfg = TrainConfig(**{**cfg.__dict__, "fm_outputs": OUTPUTS})
    data, split = prepare(ws, task("fraud"), FS, cfg)
    got = with_fm_inputs(ws, data, split, cfg)
    n = len(FS.names)
    assert got.feature_names == [*FS.names, *input_names(checkpoint_meta(early), OUTPUTS)]
    assert np.array_equal(got.X[:, :n], data.X, equal_nan=True)
    _, table = embed(ws, early, out=ws.root / "check.parquet", outputs=OUTPUTS)  # the batch job, by charge id
    position = {cid: i for i, cid in enumerate(table["charge_id"].to_pylist())}
    rows = np.array([position[c] for c in data.table["charge_id"].to_pylist()])
    expect = np.hstack([embedding_matrix(table)[rows], embedding_matrix(table, "surprise")[rows]])
    assert got.X.shape[1] == n + expect.shape[1]
    assert np.abs(got.X[:, n:] - expect).max() < 1e-6  # each row carries its own charge's outputs
    # any subset, in any order: the rows follow the ids asked for
    ids = table["charge_id"].to_pylist()[::-7][:300]
    rows = np.array([position[c] for c in ids])
    some = outputs_for(ws, early, ids, OUTPUTS)
    full = np.hstack([embedding_matrix(table), embedding_matrix(table, "surprise")])
    assert np.abs(some - full[rows]).max() < 1e-6
    with pytest.raises(ConfigError, match="charge 'ch_nope' is not in the event log"):
        outputs_for(ws, early, [ids[0], "ch_nope"], OUTPUTS)


def test_train_on_fm_inputs_registers_with_the_checkpoint_and_serves(ws: Workspace, early: Path) -> None:
    runner = CliRunner()
    args = [
        "-w",
        str(ws.root),
        "train",
        "--set",
        "tiny",
        *SPLIT,
        "--fm",
        "early",
        "--fm-inputs",
        "embedding+surprise",
    ]
    result = runner.invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    reg = Registry(ws)
    [mv] = reg.list("fraud-gbdt-fm")
    fm = mv.entry["foundation_model"]
    assert fm["content_hash"] == checkpoint_hash(early) and fm["outputs"] == list(OUTPUTS)
    assert mv.entry["metrics"]["test_rows"] > 0
    # Scored for evaluation on its features and the checkpoint's outputs, as in training.
    lo, hi = (datetime.fromtimestamp(t / 1e6, UTC) for t in mv.entry["split"]["bounds_us"]["test"])
    scored = score_window(ws, mv.ref, lo, hi).filter(pc.field("mature"))
    assert scored.num_rows == mv.entry["metrics"]["test_rows"]
    ap = average_precision_score(scored["is_fraud"].to_numpy(), scored["score"].to_numpy())
    assert ap == pytest.approx(mv.entry["metrics"]["test_ap"], abs=1e-9)
    evaluated = runner.invoke(cli, ["-w", str(ws.root), "evaluate", "--model", mv.ref, "--bootstrap", "0"])
    assert evaluated.exit_code == 0, evaluated.output
    # Its drift since training covers what it reads: the features and each dimension of the FM's outputs.
    names = input_names(checkpoint_meta(early), OUTPUTS)
    assert f"of {len(FS.names) + len(names)} features shifted" in " ".join(evaluated.output.split())
    report = model_drift(ws, mv.ref, lo, None)
    got = {d.feature: d for d in report.features}
    assert set(got) == {*FS.names, *names}
    trained = training_window(ws, mv.ref)
    charges = ws.read("charges")
    created = charges["created"]
    in_ref = pc.and_(pc.greater_equal(created, trained[0]), pc.less(created, trained[1]))
    ids = [charges.filter(in_ref)["charge_id"], charges.filter(pc.greater_equal(created, lo))["charge_id"]]
    ref, cur = (outputs_for(ws, early, i.combine_chunks(), OUTPUTS) for i in ids)
    for j in (0, len(names) - 1):  # the first embedding dimension, the last surprise
        expect = column_drift(names[j], ref[:, j], cur[:, j])
        assert got[names[j]].psi == pytest.approx(expect.psi, rel=1e-9), names[j]
    assert not report.sampled
    # The reference (training) window holds charges the checkpoint was pretrained on: said, with when.
    until = datetime.fromtimestamp(seen_until(checkpoint_meta(early)) / 1e6, UTC)
    assert trained[0] < until <= lo and report.fm_seen == ("reference",)
    assert report.fm_seen_until == until.isoformat() == report.to_json()["fm_seen_until"]
    shown = until.isoformat()[:16].replace("T", " ")
    assert f"pretrained on charges up to {shown}, reference ones among them" in report.summary()
    later = window_drift(ws, FS, (until, lo), (lo, None), fm=(early, OUTPUTS))  # a reference it never saw
    assert later.fm_seen == () and "pretrained" not in later.summary()
    both = window_drift(ws, FS, trained, (trained[0], until), fm=(early, OUTPUTS))  # the current one too
    assert both.fm_seen == ("reference", "current") and "of both windows" in both.summary()
    few = window_drift(ws, FS, trained, (lo, None), fm=(early, OUTPUTS), fm_max_rows=50)
    assert few.sampled and {d.feature for d in few.features} == {*FS.names, *names}
    assert "(the foundation model's outputs on at most 50 of each, evenly spaced)" in few.rows_text()
    # A window the checkpoint was pretrained on is refused: its outputs would carry what is measured.
    with pytest.raises(ConfigError, match=r"pretrained on charges up to 2026-01-0.*the window starts at"):
        score_window(ws, mv.ref, lo - timedelta(days=20), hi)
    reg.promote(mv.ref)
    scorer = Scorer.open(ws)
    try:
        charge = {k: v for k, v in ws.read("charges").to_pylist()[-1].items() if k != "scenario"}
        charge["charge_id"] = "ch_new_after_the_log"
        inputs = len(input_names(checkpoint_meta(early), OUTPUTS))
        assert f"embedding + surprise, {inputs} inputs" in scorer.bundle.describe()["foundation_model"]
        decision = scorer.score(charge)
        assert decision.embedding is not None and len(decision.embedding) == 2 * TINY.n_embd
    finally:
        scorer.close(snapshot=False)


def test_a_checkpoint_pretrained_on_the_validation_period_is_refused(ws: Workspace) -> None:
    pretrain(ws, TINY, out=ws.root / "fm" / "late")  # the whole log
    runner = CliRunner()
    result = runner.invoke(cli, ["-w", str(ws.root), "train", "--set", "tiny", *SPLIT, "--fm", "late"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "fm/late' was pretrained on charges up to 20" in result.output  # the end of its data
    assert "after the validation period starts" in result.output
    assert "pretrain --name late --until-frac 0." in result.output
    # resuming on another window would misstate what the weights have seen: refused, naming its window
    with pytest.raises(
        ConfigError, match=r"another window of the log.*resume with its window \(--until-frac 1\)"
    ):
        pretrain(
            ws, PretrainConfig(**{**TINY.__dict__, "until_us": 1, "steps": 4}), out=ws.root / "fm" / "late"
        )
    cut = time_cut(ws, 0.3)
    pretrain(ws, PretrainConfig(**{**TINY.__dict__, "until_us": cut}), out=ws.root / "fm" / "cut")
    with pytest.raises(ConfigError, match=r"resume with its window \(--until-frac 0\.3\)"):
        pretrain(ws, PretrainConfig(**{**TINY.__dict__, "until_us": None}), out=ws.root / "fm" / "cut")
    missing = runner.invoke(cli, ["-w", str(ws.root), "train", "--set", "tiny", *SPLIT, "--fm", "nope"])
    assert missing.exit_code == 1 and "No foundation-model checkpoint" in missing.output


def test_prequential_fits_take_the_fm_outputs_and_a_checkpoint_that_saw_a_test_week_is_refused(
    ws: Workspace, early: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import payfm.training.trainer as trainer

    widths: list[int] = []
    real = trainer.model_class

    def recording(kind: str) -> type:
        cls = real(kind)

        class Recording(cls):  # type: ignore[misc, valid-type]
            def fit(self, X: np.ndarray, *args: object, **kwargs: object) -> object:
                widths.append(X.shape[1])
                return super().fit(X, *args, **kwargs)

        return Recording

    monkeypatch.setattr(trainer, "model_class", recording)
    base = TrainConfig(horizon_days=10, val_days=7, gap_days=3)
    plain = trainer.prequential(ws, "lr", task("fraud"), FS, base, weeks=1)  # (40 days, 10 to mature)
    cfg = TrainConfig(**{**base.__dict__, "foundation_model": str(early), "fm_outputs": ("surprise",)})
    with_fm = trainer.prequential(ws, "lr", task("fraud"), FS, cfg, weeks=1)
    assert len(plain) == 1 and [r["week_start"] for r in with_fm] == [r["week_start"] for r in plain]
    extra = len(input_names(checkpoint_meta(early), ("surprise",)))
    assert widths == [len(FS.names), len(FS.names) + extra]  # the weekly fit took them
    assert [r["test_ap"] for r in with_fm] != [r["test_ap"] for r in plain]

    first = int(read_charges(ws)["created_us"][0].as_py())
    cfg30 = PretrainConfig(**{**TINY.__dict__, "until_us": first + 30 * 86_400_000_000})
    saw = pretrain(ws, cfg30, out=ws.root / "fm" / "day30").path  # the week's validation starts ~day 13
    refused = TrainConfig(**{**cfg.__dict__, "foundation_model": str(saw)})
    with pytest.raises(ConfigError, match="after the first prequential week's validation period starts"):
        trainer.prequential(ws, "lr", task("fraud"), FS, refused, weeks=1)


def test_a_checkpoint_pretrained_again_while_the_model_trained_is_refused_at_registration(
    ws: Workspace, early: Path
) -> None:
    """Found by a review: `payfm train --fm h` while `payfm fm pretrain --name h` still ran read the outputs
    of one save and registered the hash of a later one: the model loaded, silently on other weights. The
    trainer keeps the hash its inputs were computed with, and registration refuses a checkpoint that moved."""
    import shutil

    from payfm.registry.store import RegistryError
    from payfm.training.trainer import register_result, train

    moving = ws.root / "fm" / "moving"
    shutil.copytree(early, moving)
    cfg = TrainConfig(
        horizon_days=10,
        val_days=7,
        test_days=7,
        gap_days=3,
        foundation_model=str(moving),
        fm_outputs=("surprise",),
    )
    [res] = train(ws, "lr", task("fraud"), FS, cfg)
    assert res.fm_hash == checkpoint_hash(moving)
    first = int(read_charges(ws)["created_us"][0].as_py())
    again = PretrainConfig(**{**TINY.__dict__, "until_us": first + 8 * 86_400_000_000, "seed": 2})
    pretrain(ws, again, out=moving, resume=False)  # another run saves over it meanwhile
    assert checkpoint_hash(moving) != res.fm_hash
    reg = Registry(ws)
    before = len(reg.list())
    with pytest.raises(RegistryError, match=r"changed since the model's inputs were computed from it"):
        register_result(reg, res, FS, name="moving-lr")
    assert len(reg.list()) == before
