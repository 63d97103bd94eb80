"""The registry: versions round-trip exactly, tampering is refused, stages move as promised."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.features.catalog import bench_set, tiny_set
from payfm.registry import ArtifactIntegrityError, FeatureSetMismatchError, Registry, RegistryError
from payfm.registry.store import UnknownModelError
from payfm.serving.bundle import load_bundle
from payfm.training.models import model_class

FS = tiny_set()


def fitted(kind: str, seed: int = 0) -> object:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(2000, len(FS.names)))
    y = (X[:, 0] + rng.normal(size=2000) > 2).astype(int)
    params = {"n_estimators": 30, "num_threads": 1} if kind == "gbdt" else {}
    return model_class(kind)(seed=seed, **params).fit(
        X[:1500], y[:1500], None, X[1500:], y[1500:], feature_names=FS.names
    )


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    return Registry(Workspace.open(tmp_path, create=True))


def register(reg: Registry, kind: str = "gbdt", seed: int = 0) -> str:
    m = fitted(kind, seed)
    mv = reg.register(
        m,
        name="fraud-x",
        task="fraud",
        fset=FS,
        metrics={"val_ap": 0.5},  # type: ignore[arg-type]
        data_window={"train_start": "2026-01-01"},
    )
    return mv.ref


@pytest.mark.parametrize("kind", ["lr", "gbdt"])  # every kind round-trips in test_models_contract
def test_round_trip_gives_identical_predictions(reg: Registry, kind: str) -> None:
    m = fitted(kind)
    mv = reg.register(m, name="fraud-" + kind, task="fraud", fset=FS)  # type: ignore[arg-type]
    X = np.random.default_rng(9).normal(size=(300, len(FS.names)))
    _, loaded = reg.load(mv.ref, FS)
    np.testing.assert_array_equal(loaded.predict_proba(X), m.predict_proba(X))  # type: ignore[attr-defined]
    entry = reg.get(mv.ref).entry
    assert entry["feature_set_version"] == FS.version and entry["kind"] == kind
    assert entry["code_version"] and len(entry["content_hash"]) == 64


def test_versions_refs_and_unknown_versions(reg: Registry) -> None:
    assert register(reg) == "fraud-x@1" and register(reg, seed=1) == "fraud-x@2"
    assert [v.version for v in reg.list("fraud-x")] == [1, 2]
    assert reg.get("fraud-x").version == 2  # no production: the latest
    assert reg.get("fraud-x@candidate").version == 2
    with pytest.raises(UnknownModelError, match=r"has no version 7\. Expected one of 1, 2"):
        reg.get("fraud-x@7")
    with pytest.raises(UnknownModelError, match="No registered model 'nope'"):
        reg.load("nope")


def test_a_killed_registrations_folder_is_swept_by_a_later_one(reg: Registry) -> None:
    """kill -9 skips a registration's cleanup: its .tmp-* folder stayed for good (an audit). The next
    registration of the name removes those untouched for an hour, never a fresh one (another process may
    be writing it)."""
    import os
    import time

    register(reg)
    folder = reg.root / "fraud-x"
    stale, fresh = folder / ".tmp-stale", folder / ".tmp-fresh"
    for d in (stale, fresh):
        d.mkdir()
        (d / "model.json").write_text("{}")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    register(reg, seed=1)
    assert not stale.exists() and fresh.exists()


def test_a_flipped_byte_is_refused(reg: Registry) -> None:
    ref = register(reg)
    path = reg.path(reg.get(ref)) / "model.lgb.txt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="refusing to load"):
        reg.load(ref)
    with pytest.raises(ArtifactIntegrityError, match="refusing to load"):
        reg.promote(ref)  # servers would refuse it at their next start or reload
    with pytest.raises(ArtifactIntegrityError, match="refusing to load"):
        reg.set_stage(ref, "shadow")
    assert reg.get(ref).stage == "candidate"
    # `models show` prints the entry, then says its files do not match it (it printed the hash unchecked)
    r = CliRunner().invoke(cli, ["-w", str(reg.ws.root), "models", "show", ref])
    assert r.exit_code == 1 and '"content_hash"' in r.output and "refusing to load" in r.output, r.output
    assert "Traceback" not in r.output


def test_feature_set_mismatch_at_load_and_register(reg: Registry) -> None:
    ref = register(reg)
    with pytest.raises(FeatureSetMismatchError, match="trained on feature set 'tiny'") as e:
        reg.load(ref, bench_set())
    assert "retrain" not in str(e.value)  # another set: nothing was redefined
    redefined = dataclasses.replace(FS, features=FS.features[:-1])  # `features define --replace` of the set
    with pytest.raises(
        FeatureSetMismatchError, match=r"changed since it was trained: retrain it \(payfm train"
    ):
        reg.load(ref, redefined)
    with pytest.raises(FeatureSetMismatchError):
        reg.register(fitted("lr"), name="other", task="fraud", fset=bench_set())  # type: ignore[arg-type]


def test_only_a_model_the_decision_service_can_compute_features_for_is_promoted(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from payfm.features.definitions import FeatureSet

    mine = FeatureSet("mine", FS.features)  # the same features under a set name payfm does not bundle
    m = fitted("lr")
    custom = reg.register(m, name="fraud-mine", task="fraud", fset=mine)  # type: ignore[arg-type]
    with pytest.raises(FeatureSetMismatchError, match="feature set 'mine', which neither this payfm nor the"):
        reg.promote(custom.ref)
    assert reg.get(custom.ref).stage == "candidate"
    # A model of a bundled set whose definitions changed since it was trained (its version is not computed)
    old, new = register(reg), register(reg, seed=1)
    reg.promote(old)
    reg.promote(new)
    con = sqlite3.connect(reg.root / "registry.db")
    con.execute(
        "UPDATE versions SET feature_set_version = '000000000000' WHERE name = 'fraud-x' AND version = 1"
    )
    con.commit()
    con.close()
    with pytest.raises(FeatureSetMismatchError, match="version 000000000000; this payfm computes version"):
        reg.rollback("fraud-x")  # would restore a model no server can load
    assert reg.get("fraud-x").version == 2


def test_promote_archives_the_previous_and_rollback_restores_it(reg: Registry) -> None:
    for seed in range(3):
        register(reg, seed=seed)
    reg.promote("fraud-x@1")
    reg.promote("fraud-x@2")
    assert {v.version: v.stage for v in reg.list()} == {1: "archived", 2: "production", 3: "candidate"}
    assert reg.get("fraud-x").version == 2  # the bare name resolves to production
    reg.promote("fraud-x@3")
    assert reg.rollback("fraud-x").version == 2
    assert {v.version: v.stage for v in reg.list()} == {1: "archived", 2: "production", 3: "archived"}
    assert reg.rollback("fraud-x").version == 1
    with pytest.raises(RegistryError, match="nothing to restore"):
        reg.rollback("fraud-x")
    with pytest.raises(RegistryError, match=r"No registered model 'fraud-y'\. Expected one of: fraud-x"):
        reg.rollback("fraud-y")
    reg.set_stage("fraud-x@3", "shadow")
    assert reg.get("fraud-x@shadow").version == 3


def test_a_workspace_has_one_production_version_whatever_its_name(reg: Registry) -> None:
    """Promoting another model family archives the one deciding (it stayed production: the decision service
    picked the newest, so a promoted older family never decided); rollback restores it across names."""
    for name in ("fraud-gbdt", "fraud-rf"):
        reg.register(fitted("gbdt"), name=name, task="fraud", fset=FS)  # type: ignore[arg-type]
    reg.promote("fraud-rf@1")
    reg.promote("fraud-gbdt@1")
    stages = {v.ref: v.stage for v in reg.list()}
    assert stages == {"fraud-gbdt@1": "production", "fraud-rf@1": "archived"}
    assert load_bundle(Workspace.open(reg.root.parent)).model_version.ref == "fraud-gbdt@1"  # type: ignore[union-attr]
    with pytest.raises(
        RegistryError, match="no production version to roll back: the production version is fraud-gbdt@1"
    ):
        reg.rollback("fraud-rf")
    assert reg.rollback("fraud-gbdt").ref == "fraud-rf@1"
    assert {v.ref: v.stage for v in reg.list()} == {"fraud-gbdt@1": "archived", "fraud-rf@1": "production"}
    with pytest.raises(RegistryError, match="nothing to restore"):
        reg.rollback("fraud-rf")


def test_only_a_fraud_model_becomes_production_or_shadow(reg: Registry) -> None:
    """Found by an ML engineer's audit: promoting a retry-success model archived the fraud model, and the
    decision service then decided fraud with a model of whether a retry succeeds."""
    fraud = register(reg)
    reg.promote(fraud)
    retry = reg.register(fitted("gbdt"), name="retry_success-gbdt", task="retry_success", fset=FS).ref  # type: ignore[arg-type]
    for stage in ("production", "shadow"):
        with pytest.raises(
            RegistryError, match=f"retry_success-gbdt@1 predicts 'retry_success', but the {stage}"
        ):
            reg.set_stage(retry, stage)
    assert {v.ref: v.stage for v in reg.list()} == {fraud: "production", retry: "candidate"}
    with reg._db() as con:  # a registry of before the check
        con.execute("UPDATE versions SET stage = 'production' WHERE name = 'retry_success-gbdt'")
        con.execute("UPDATE versions SET stage = 'archived' WHERE name = 'fraud-x'")
    with pytest.raises(RegistryError, match="expected a model of task 'fraud'"):
        load_bundle(Workspace.open(reg.root.parent))
    with reg._db() as con:  # the fraud model promoted over it (the log records what it replaced)
        con.execute("UPDATE versions SET stage = 'production' WHERE name = 'fraud-x'")
        con.execute("UPDATE versions SET stage = 'archived' WHERE name = 'retry_success-gbdt'")
        con.execute(
            "INSERT INTO stage_log (name, version, action, previous, previous_name, at) "
            "VALUES ('fraud-x', 1, 'promote', 1, 'retry_success-gbdt', '2026-12-06T00:00:00+00:00')"
        )
    with pytest.raises(RegistryError, match="retry_success-gbdt@1 predicts 'retry_success'"):
        reg.rollback("fraud-x")  # (found by a review: rollback restored it)
    assert reg.get("fraud-x").stage == "production"


def test_a_registry_written_before_one_production_version_is_mended_by_the_next_promotion(
    reg: Registry,
) -> None:
    """Older registries may hold several production versions and stage-log rows without previous_name."""
    for name in ("fraud-gbdt", "fraud-rf", "fraud-lr"):
        reg.register(fitted("gbdt"), name=name, task="fraud", fset=FS)  # type: ignore[arg-type]
    reg.register(fitted("gbdt", seed=1), name="fraud-gbdt", task="fraud", fset=FS)  # type: ignore[arg-type]
    with sqlite3.connect(reg.root / "registry.db") as con:  # as an older payfm left it
        con.execute("DROP TABLE stage_log")
        con.execute(
            "CREATE TABLE stage_log (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, "
            "version INTEGER NOT NULL, action TEXT NOT NULL, previous INTEGER, at TEXT NOT NULL)"
        )
        con.execute("UPDATE versions SET stage = 'production' WHERE name IN ('fraud-rf', 'fraud-lr')")
        con.execute("UPDATE versions SET stage = 'production' WHERE name = 'fraud-gbdt' AND version = 2")
        con.execute(
            "INSERT INTO stage_log (name, version, action, previous, at) VALUES "
            "('fraud-gbdt', 2, 'promote', 1, 'x')"
        )
    assert reg.rollback("fraud-gbdt").ref == "fraud-gbdt@1"  # NULL previous_name: the same name
    reg.promote("fraud-gbdt@2")
    assert {v.ref: v.stage for v in reg.list() if v.stage == "production"} == {"fraud-gbdt@2": "production"}
    # It replaced the one deciding: the newest of those production (fraud-lr@1, registered after the others)
    assert reg.rollback("fraud-gbdt").ref == "fraud-lr@1"
    with sqlite3.connect(reg.root / "registry.db") as con:  # several production again, fraud-gbdt@2 newest
        con.execute("UPDATE versions SET stage = 'production' WHERE version = 2 OR name = 'fraud-rf'")
    reg.promote("fraud-gbdt@2")  # it was deciding: it replaced none of them
    assert [v.ref for v in reg.list() if v.stage == "production"] == ["fraud-gbdt@2"]
    with pytest.raises(RegistryError, match="nothing to restore"):
        reg.rollback("fraud-gbdt")


def test_rollback_refuses_a_version_servers_would_refuse(reg: Registry) -> None:
    for name in ("fraud-a", "fraud-b"):
        reg.register(fitted("gbdt"), name=name, task="fraud", fset=FS)  # type: ignore[arg-type]
    reg.promote("fraud-a@1")
    reg.promote("fraud-b@1")
    artifact = next(p for p in (reg.root / "fraud-a" / "1").iterdir() if p.name != "entry.json")
    artifact.write_bytes(artifact.read_bytes() + b" ")
    with pytest.raises(ArtifactIntegrityError):
        reg.rollback("fraud-b")
    assert reg.get("fraud-b").stage == "production"  # nothing changed


def test_cli_models_list_show_promote_rollback(reg: Registry) -> None:
    register(reg)
    register(reg, seed=1)
    ws = str(reg.root.parent)

    def run(*args: str) -> tuple[int, str]:
        r = CliRunner().invoke(cli, ["-w", ws, "models", *args], catch_exceptions=False)
        return r.exit_code, r.output

    code, out = run("list")
    assert code == 0 and "fraud-x@1" in out and "fraud-x@2" in out and "candidate" in out
    assert "test AP" in out and "0.5000" in out  # the validation AP registered; no test AP: "-"
    assert run("promote", "fraud-x@1")[0] == 0
    code, out = run("promote", "fraud-x@2")
    assert code == 0 and "fraud-x@2 is now production (fraud-x@1 archived)" in out
    code, out = run("rollback", "fraud-x")
    assert code == 0 and "fraud-x@1 is production again" in out
    code, out = run("show", "fraud-x")
    assert code == 0 and '"version": 1' in out and '"stage": "production"' in out
    code, out = run("show", "fraud-x@9")
    assert code == 1 and "has no version 9" in out and "Traceback" not in out
    # a version's ref to rollback, an empty version or name, an unknown name to list: said as such
    code, out = run("rollback", "fraud-x@1")
    assert code == 1 and "Rollback takes a model name" in out and "`payfm models rollback fraud-x`" in out
    for ref in ("fraud-x@", "@1"):
        code, out = run("show", ref)
        assert code == 1 and f"Model reference {ref!r}: expected name, name@<version>" in out, out
    code, out = run("list", "--name", "fraud-y")
    assert code == 1 and "No registered model 'fraud-y'. Expected one of: fraud-x." in out
    code, out = run("list", "--name", "fraud-x@1")
    assert code == 1 and "--name takes a model name, not a version's reference. Got 'fraud-x@1'." in out
    # a bare name is its production version: promoting it again changes nothing, and says so
    code, out = run("promote", "fraud-x")
    assert code == 0 and out.strip() == (
        "fraud-x@1 is production already; nothing changed. A bare name is its production version: promote "
        "fraud-x@2 (the newest)."
    )
    code, out = run("promote", "fraud-x@1", "--stage", "archived")  # the production one: not "(... archived)"
    assert code == 0 and out.splitlines()[0] == "fraud-x@1 is now archived"
    # and it says that nothing is production now (found by an ML engineer's audit: it said nothing)
    assert out.splitlines()[1].startswith(
        "warning: the workspace has no production model now (fraud-x@1 was it)"
    )
    code, out = run("promote", "fraud-x@2", "--stage", "shadow")  # not the production one: no warning
    assert code == 0 and out.strip() == "fraud-x@2 is now shadow"


def _checkpoint(path: Path, seed: int, n_embd: int = 4) -> Path:
    """A tiny foundation-model checkpoint (random weights from ``seed``), no workspace needed."""
    import pyarrow as pa
    import torch

    from payfm.fm.model import FMConfig, FoundationModel
    from payfm.fm.pretrain import save_checkpoint
    from payfm.fm.tokenizer import Tokenizer

    tok = Tokenizer.fit({"amount_usd": pa.array([100, 250, 900]), "card_brand": pa.array(["visa"] * 3)})
    torch.manual_seed(seed)
    model = FoundationModel(
        FMConfig(vocab_sizes=tuple(tok.vocab_sizes()), seq_len=4, n_head=2, n_embd=n_embd)
    )
    save_checkpoint(path, model, tok, {"step": 0})
    return path


def test_a_model_on_embeddings_is_versioned_with_its_foundation_model(reg: Registry, tmp_path: Path) -> None:
    from payfm.fm.identity import checkpoint_hash, embedding_names
    from payfm.registry import FoundationModelMismatchError

    fm = _checkpoint(tmp_path / "fm" / "default", seed=0)
    names = FS.names + embedding_names(8)  # 2 views x 4 channels
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, len(names)))
    y = (X[:, -1] + rng.normal(size=1500) > 2).astype(int)
    m = model_class("gbdt")(n_estimators=20, num_threads=1, calibration="none").fit(X, y, feature_names=names)
    wider = _checkpoint(tmp_path / "wide", seed=0, n_embd=6)  # 12 dimensions: not what m was fitted on
    with pytest.raises(FeatureSetMismatchError, match=r"12 foundation-model inputs \(embedding\)"):
        reg.register(m, name="fraud-fm", task="fraud", fset=FS, foundation_model=wider)
    with pytest.raises(FeatureSetMismatchError):  # embeddings but no foundation model named
        reg.register(m, name="fraud-fm", task="fraud", fset=FS)
    mv = reg.register(m, name="fraud-fm", task="fraud", fset=FS, foundation_model=fm)
    recorded = mv.entry["foundation_model"]
    assert recorded["content_hash"] == checkpoint_hash(fm) and recorded["embedding_dims"] == 8
    assert reg.check_foundation_model(mv) == fm.resolve()
    _, loaded = reg.load(mv.ref, FS)
    np.testing.assert_array_equal(loaded.predict_proba(X[:50]), m.predict_proba(X[:50]))
    original = tmp_path / "kept"
    _checkpoint(original, seed=0)  # same seed: same weights, same hash
    _checkpoint(fm, seed=1)  # pretrained again: other weights under the recorded path
    with pytest.raises(FoundationModelMismatchError, match="retrain and register"):
        reg.promote(mv.ref)
    with pytest.raises(FoundationModelMismatchError):
        reg.load(mv.ref, FS)
    assert reg.load(mv.ref, FS, foundation_model=original)[0].version == mv.version
    assert reg.get(mv.ref).stage == "candidate"
    code = CliRunner().invoke(cli, ["-w", str(reg.root.parent), "models", "promote", mv.ref])
    assert code.exit_code == 1 and "trained on embeddings of foundation model" in code.output
    assert "Traceback" not in code.output
    _checkpoint(fm, seed=0)  # the original back in place: promotion goes through
    assert reg.promote(mv.ref).stage == "production"
    assert recorded["checkpoint"] == "fm/default"  # inside the workspace: recorded relative to it
    assert reg.get(mv.ref).entry["foundation_model"]["checkpoint"] == "fm/default"
    elsewhere = _checkpoint(tmp_path.parent / f"{tmp_path.name}-fm", seed=0)
    outside = reg.register(m, name="fraud-fm", task="fraud", fset=FS, foundation_model=elsewhere)
    assert outside.entry["foundation_model"]["checkpoint"] == str(elsewhere.resolve())  # outside: absolute


def test_a_copied_workspace_checks_and_serves_its_own_checkpoint(reg: Registry, tmp_path: Path) -> None:
    """Found by an audit: the entry held the checkpoint's absolute path, so a copy of the workspace
    checked (and its server loaded) the original's checkpoint, and failed once the original was gone."""
    import shutil

    from payfm.fm.identity import embedding_names
    from payfm.registry import FoundationModelMismatchError

    fm = _checkpoint(tmp_path / "fm" / "v1", seed=0)
    names = FS.names + embedding_names(8)
    X = np.random.default_rng(1).normal(size=(400, len(names)))
    m = model_class("lr")(calibration="none").fit(X, (X[:, -1] > 0).astype(int), feature_names=names)
    mv = reg.register(m, name="fraud-fm", task="fraud", fset=FS, foundation_model=fm)
    copy = tmp_path.parent / f"{tmp_path.name}-copy"
    shutil.copytree(tmp_path, copy)
    theirs = Registry(Workspace.open(copy))
    _checkpoint(fm, seed=1)  # the original pretrained again
    with pytest.raises(FoundationModelMismatchError):
        reg.check_foundation_model(mv)
    assert theirs.check_foundation_model(theirs.get(mv.ref)) == copy / "fm" / "v1"  # its own, unchanged
    shutil.rmtree(fm)
    assert theirs.promote(mv.ref).stage == "production"


def test_a_ruleset_on_another_set_than_the_production_model_is_refused_saying_how_to_pair_them(
    reg: Registry,
) -> None:
    from payfm.rules import rulesets
    from payfm.serving.errors import Conflict

    ref = register(reg, "lr")  # on the tiny set
    reg.promote(ref)
    ws = Workspace.open(reg.root.parent)
    rulesets.save(ws, "block if :amount_usd: > 900", set_name="bench15", activate=True)
    with pytest.raises(Conflict) as e:
        load_bundle(ws)
    assert str(e.value) == (
        "The active ruleset (version 1) is written for feature set 'bench15'; the server serves 'tiny', "
        "the production model fraud-x@1's. Activate a ruleset version on 'tiny' (`payfm rules activate "
        "VERSION`), or promote a model trained on 'bench15'."
    )
