"""The evaluation, foundation-model, training and serving entry points take what a notebook holds (a review
of the Python API): a path where a Workspace is expected, a DataFrame or lists where Arrow or NumPy is, a dict
for a config, a text for a number or a list of outputs, a Path for a checkpoint: each a payfm error naming
the parameter, the function, what it takes and what it got, or taken as meant; not an AttributeError, a
TypeError or a pyarrow KeyError from deep inside. Short reprs for the objects a notebook prints; the docs'
fragments import what they use."""

from __future__ import annotations

import ast
import builtins
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from payfm.errors import ConfigError
from payfm.evaluation import Preset, evaluate_predictions, feature_drift
from payfm.evaluation.checks import EvaluationError
from payfm.evaluation.synthetic import synthetic_predictions
from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set, tiny_set
from payfm.fm.embed import embed, embedding_matrix, outputs_for
from payfm.fm.identity import check_outputs, checkpoint_meta, input_names
from payfm.fm.pretrain import PretrainConfig, PretrainResult, pretrain
from payfm.fm.sequences import read_charges
from payfm.registry import Registry
from payfm.serving.charges import EXAMPLE_FIELDS, normalize_charge
from payfm.serving.errors import InvalidInput
from payfm.serving.replay import ReplayReport
from payfm.serving.scorer import Scorer
from payfm.synth import WorldConfig, generate_world
from payfm.training import trainer
from payfm.training.models.gbdt import GBDTModel
from payfm.training.tasks import task
from payfm.training.trainer import TrainConfig, train

DOCS = Path(__file__).resolve().parents[1] / "docs"
TINY = PretrainConfig(seq_len=4, n_layer=1, n_head=2, n_embd=8, batch_size=32, steps=2, seed=1)
START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A small world with a tiny checkpoint at fm/default, pretrained on its first 5 days."""
    torch.set_num_threads(1)
    w = Workspace.open(tmp_path_factory.mktemp("apifm") / "ws", create=True)
    w.write_stream(generate_world(WorldConfig(charges=4_000, days=30, seed=3, fraud_rate=0.03, start=START)))
    until = int((START + timedelta(days=5)).timestamp() * 1e6)
    pretrain(w, PretrainConfig(**{**TINY.__dict__, "until_us": until}), out=w.root / "fm" / "default")
    return w


@pytest.fixture(scope="module")
def table(ws: Workspace) -> pa.Table:
    return embed(ws, ws.root / "fm" / "default", outputs=("embedding", "surprise"))[1]


# ---- 1. a path where a Workspace is expected ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("who", "call"),
    [
        ("pretrain", lambda p, out: pretrain(p, TINY, out=out)),
        ("embed", lambda p, out: embed(p, out)),
        ("outputs_for", lambda p, out: outputs_for(p, out, ["ch_1"])),
        ("read_charges", lambda p, out: read_charges(p)),
    ],
)
def test_a_path_for_a_workspace_is_one_clear_error(who: str, call: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "ws")
    with pytest.raises(ConfigError) as e:
        call(path, tmp_path / "fm")
    assert str(e.value) == (
        f"The 'ws' of {who} must be what Workspace.open(path) gives. Got the str {path!r}: open it first, "
        f"ws = Workspace.open({path!r})."
    )
    assert not (tmp_path / "fm").exists()  # refused before any work


# ---- 2. DataFrames and lists where Arrow or NumPy is expected ----------------------------------------------
def test_evaluate_predictions_takes_a_dataframe_and_names_anything_else() -> None:
    preds = synthetic_predictions(3_000, seed=1)
    as_table = evaluate_predictions(preds, name="m", bootstrap=0)
    as_frame = evaluate_predictions(preds.to_pandas(), name="m", bootstrap=0)
    assert as_frame.average_precision == as_table.average_precision
    assert as_frame.evaluated == as_table.evaluated
    with pytest.raises(EvaluationError) as e:  # docs/evaluation.md: every check of it is an EvaluationError
        evaluate_predictions(preds.to_pylist(), name="m", bootstrap=0)  # type: ignore[arg-type]
    assert str(e.value) == (
        "The 'preds' of evaluate_predictions must be an Arrow table (a pyarrow.Table; a pandas or Polars "
        "DataFrame is converted). Got a list."
    )


def test_embedding_matrix_takes_a_dataframe_and_names_a_column_it_lacks(table: pa.Table) -> None:
    expect = embedding_matrix(table, "surprise")
    assert np.array_equal(embedding_matrix(table.to_pandas(), "surprise"), expect)
    with pytest.raises(ConfigError) as e:
        embedding_matrix(table, "surprises")
    assert str(e.value) == (
        "The 'column' of embedding_matrix must be a list column of the table (embedding, surprise). Got "
        "'surprises': did you mean 'surprise'?"
    )
    with pytest.raises(ConfigError, match=r"The 'table' of embedding_matrix must be an Arrow table"):
        embedding_matrix([[1.0]])  # type: ignore[arg-type]


def test_feature_drift_takes_lists_of_rows_and_names_ragged_ones() -> None:
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(size=(200, 2)), rng.normal(1.0, size=(200, 2))
    as_arrays = feature_drift(ref, cur, ["a", "b"])
    assert feature_drift(ref.tolist(), cur.tolist(), ["a", "b"]) == as_arrays
    with pytest.raises(EvaluationError) as e:
        feature_drift([[1.0, 2.0], [1.0]], cur, ["a", "b"])
    assert str(e.value) == (
        "The 'reference' of feature_drift must be a (rows, features) matrix of numbers (a NumPy array, a "
        "list of equal rows, a DataFrame). Got a list: rows of different lengths."
    )


# ---- 3. wrong kinds ----------------------------------------------------------------------------------------
def test_a_preset_value_as_text_is_named() -> None:
    with pytest.raises(EvaluationError) as e:
        Preset("p", "fixed", "0.4")  # type: ignore[arg-type]
    assert str(e.value) == (
        "The 'value' of preset 'p' must be a number (a budget, a minimum recall or a threshold: "
        "Preset('p', 'fixed', 0.4)). Got a str ('0.4')."
    )
    numpy = Preset("p", "fixed", np.float32(0.5))  # type: ignore[arg-type]
    assert numpy.value == 0.5 and type(numpy.value) is float


def test_a_dict_for_the_pretraining_config_says_what_to_pass(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    with pytest.raises(ConfigError) as e:
        pretrain(ws, {"steps": 1}, out=tmp_path / "fm")  # type: ignore[arg-type]
    assert str(e.value) == (
        "The 'config' of pretrain must be a PretrainConfig. Got a dict: pass PretrainConfig(steps=1)."
    )
    assert not (tmp_path / "fm").exists()


# ---- 4. a checkpoint as a Path, or relative to the workspace -----------------------------------------------
def test_train_config_takes_a_path_and_finds_a_relative_one_in_the_workspace(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert TrainConfig(foundation_model=ws.root / "fm" / "default").foundation_model == str(  # type: ignore[arg-type]
        ws.root / "fm" / "default"
    )
    monkeypatch.chdir(tmp_path)  # (no fm/ here: the registry records fm/default relative to the workspace)
    split = {"horizon_days": 10, "val_days": 5, "test_days": 5, "gap_days": 2, "downsample": 0.5}
    config = TrainConfig(**split, foundation_model="fm/default")  # type: ignore[arg-type]
    assert trainer.in_workspace(config, ws).foundation_model == str(ws.root / "fm" / "default")
    [result] = train(ws, "gbdt", task("fraud"), tiny_set(), config)
    assert result.foundation_model == str(ws.root / "fm" / "default")
    assert result.model.feature_names_[-1].startswith("fm.emb_")
    with pytest.raises(ConfigError) as e:
        train(ws, "gbdt", task("fraud"), tiny_set(), TrainConfig(**split, foundation_model="fm/nope"))  # type: ignore[arg-type]
    assert str(e.value).startswith(
        "The 'foundation_model' of TrainConfig must be a checkpoint's path. Got 'fm/nope', which is neither "
        f"in the current directory ('{tmp_path / 'fm/nope'}') nor in the workspace ('{ws.root / 'fm/nope'}')."
    )


# ---- 5. messages and the numbers a notebook holds ----------------------------------------------------------
def test_outputs_given_as_one_name_are_that_output(ws: Workspace, tmp_path: Path, table: pa.Table) -> None:
    assert check_outputs("surprise") == ("surprise",)
    _, alone = embed(ws, ws.root / "fm" / "default", outputs="surprise", out=tmp_path / "s.parquet")
    assert alone.column_names == ["charge_id", "created", "surprise"]
    assert np.array_equal(embedding_matrix(alone, "surprise"), embedding_matrix(table, "surprise"))
    ids = table["charge_id"].to_pylist()[:5]
    got = outputs_for(ws, ws.root / "fm" / "default", ids, "surprise")
    assert np.allclose(got, embedding_matrix(table, "surprise")[:5], atol=1e-6)


def test_numpy_integers_are_integers_and_a_wrong_one_is_named_as_numpy() -> None:
    charge = {"charge_id": "ch_np", "created": "2026-02-01T00:00:00Z", **EXAMPLE_FIELDS}
    c = normalize_charge({**charge, "amount": np.int64(100), "amount_usd": np.int32(100)})
    assert c["amount"] == c["amount_usd"] == 100 and type(c["amount"]) is int
    json.dumps(c)  # the decision log keeps it as JSON
    with pytest.raises(InvalidInput) as e:  # (said "must be an integer. Got float32.")
        normalize_charge({**charge, "amount": np.float32(100)})
    assert str(e.value) == "Field 'amount' must be an integer. Got a NumPy float32 (100.0)."
    with pytest.raises(InvalidInput, match=re.escape("must be an integer. Got a boolean (true).")):
        normalize_charge({**charge, "amount": True})


def test_the_scorer_decides_a_charge_with_numpy_amounts(ws: Workspace) -> None:
    last = read_charges(ws)["created_us"][-1].as_py()
    created = datetime.fromtimestamp(last / 1e6 + 60, UTC)
    with Scorer.open(ws) as scorer:
        assert re.fullmatch(
            r"Scorer\(no model, no ruleset, feature set 'default@\w+', state memory\)", repr(scorer)
        )
        charge = {**EXAMPLE_FIELDS, "charge_id": "ch_np", "created": created}
        decision = scorer.score({**charge, "amount": np.int64(1999), "amount_usd": np.int64(1999)})
        assert decision.charge_id == "ch_np"


def test_rates_as_a_numpy_array() -> None:
    preds = synthetic_predictions(3_000, seed=1)
    as_array = evaluate_predictions(preds, name="m", bootstrap=0, fpr_levels=np.array([0.01]))
    as_tuple = evaluate_predictions(preds, name="m", bootstrap=0, fpr_levels=(0.01,))
    assert as_array.recall_at_fpr == as_tuple.recall_at_fpr and list(as_array.recall_at_fpr) == ["1%"]


# ---- 6. reprs a notebook prints ----------------------------------------------------------------------------
def test_short_reprs(ws: Workspace, tmp_path: Path) -> None:
    assert repr(Registry(ws)) == f"Registry({str(ws.root)!r}, 0 versions)"
    assert not (ws.root / "models").exists()  # (a repr writes nothing)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 2)), (rng.random(300) < 0.3).astype(int)
    model = GBDTModel(n_estimators=7, early_stopping=0, calibration="none")
    assert repr(model) == "GBDTModel(not fitted, calibration 'none')"
    model.fit(X, y)
    assert repr(model) == f"GBDTModel({model.booster_.num_trees()} trees, 2 features, calibration 'none')"
    report = ReplayReport(charges=834, latencies_ms=[float(i) for i in range(834)])
    assert len(repr(report)) < 400 and "latencies_ms=<834: p50 416 ms, p99 825 ms>" in repr(report)
    result = PretrainResult(Path("fm/x"), 900, [1.0] * 899 + [0.5], 10.0, True, 0.6)
    assert repr(result) == (
        "PretrainResult(path='fm/x', step=900, losses=<900 steps, last 0.5>, charges_per_s=10.0, "
        "trained=True, loss=0.6)"
    )


# ---- 7. the docs' fragments --------------------------------------------------------------------------------
def _block(page: str, marker: str) -> str:
    [block] = [b for b in re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S) if marker in b]
    return block


def _unbound(code: str) -> set[str]:
    """The names ``code`` reads that it neither imports nor assigns (nor are builtins)."""
    tree = ast.parse(code)
    bound = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - bound


def test_fm_md_by_hand_runs_as_written(ws: Workspace) -> None:
    code = _block("fm.md", "embedder.inputs_then_learn(charge)")
    assert _unbound(code) == set()
    fset, ckpt = default_set(), ws.root / "fm" / "default"
    names = [*fset.names, *input_names(checkpoint_meta(ckpt), ("embedding",))]
    rng = np.random.default_rng(0)
    gbdt = GBDTModel(n_estimators=5, early_stopping=0, calibration="none")
    gbdt.fit(rng.normal(size=(400, len(names))), (rng.random(400) < 0.2).astype(int), feature_names=names)
    reg = Registry(ws)
    reg.register(gbdt, name="fraud-fm", task="fraud", fset=fset, foundation_model=ckpt)
    assert repr(reg) == f"Registry({str(ws.root)!r}, 1 version)"
    scope: dict[str, Any] = {}
    exec(code.replace('"payfm-workspace"', repr(str(ws.root))), scope)  # (the docs' own code)
    assert 0.0 <= scope["p"] <= 1.0


def test_features_md_says_what_feature_drift_gives() -> None:
    block = _block("features.md", "feature_drift")
    said = " ".join(
        line for line in block.splitlines() if "feature_drift(reference" in line or "DriftReport" in line
    )
    assert "tuple of FeatureDrift" in block and "no .summary()" in block, said
