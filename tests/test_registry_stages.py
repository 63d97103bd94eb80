"""What a review of the registry found (2026-12-07): ``register(stage="production")`` skipped every check a
promotion makes (two production versions, a retry-success model deciding, no rollback), and several
versions could be shadow at once (the CLI said the last one was; servers ran the newest registered); and
``payfm evaluate --out`` into a folder that cannot be made failed only after all the scoring."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.registry import Registry, RegistryError
from payfm.serving.bundle import load_bundle
from test_registry import FS, fitted


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    return Registry(Workspace.open(tmp_path, create=True))


def test_registering_into_production_is_a_promotion(reg: Registry) -> None:
    first = reg.register(fitted("lr"), name="fraud-lr", task="fraud", fset=FS, stage="production")  # type: ignore[arg-type]
    second = reg.register(fitted("lr", 1), name="fraud-lr", task="fraud", fset=FS, stage="production")  # type: ignore[arg-type]
    assert first.stage == "production" and second.stage == "production"
    assert {v.ref: v.stage for v in reg.list()} == {"fraud-lr@1": "archived", "fraud-lr@2": "production"}
    assert reg.rollback("fraud-lr").ref == "fraud-lr@1"  # the promotion is in the log: rollback restores
    with pytest.raises(RegistryError, match="predicts 'retry_success', but the production model"):
        reg.register(fitted("lr"), name="retry-lr", task="retry_success", fset=FS, stage="production")  # type: ignore[arg-type]
    assert reg.get("retry-lr@1").stage == "candidate"  # registered, refused as production
    assert load_bundle(Workspace.open(reg.root.parent)).model_version.ref == "fraud-lr@1"  # type: ignore[union-attr]


def test_a_workspace_has_one_shadow_version_whatever_its_name(reg: Registry) -> None:
    for name in ("fraud-gbdt", "fraud-mlp", "fraud-lr"):
        reg.register(fitted("lr"), name=name, task="fraud", fset=FS)  # type: ignore[arg-type]
    reg.promote("fraud-gbdt@1")
    reg.set_stage("fraud-mlp@1", "shadow")
    result = CliRunner().invoke(
        cli, ["-w", str(reg.root.parent), "models", "promote", "fraud-lr@1", "--stage", "shadow"]
    )
    assert (
        result.exit_code == 0 and result.output.strip() == "fraud-lr@1 is now shadow (fraud-mlp@1 archived)"
    )
    stages = {v.ref: v.stage for v in reg.list()}
    assert stages == {"fraud-gbdt@1": "production", "fraud-mlp@1": "archived", "fraud-lr@1": "shadow"}
    bundle = load_bundle(Workspace.open(reg.root.parent))
    assert bundle.shadow_version is not None and bundle.shadow_version.ref == "fraud-lr@1"  # what it said
    reg.register(fitted("lr", 2), name="fraud-lr", task="fraud", fset=FS, stage="shadow")  # type: ignore[arg-type]
    assert [v.ref for v in reg.list() if v.stage == "shadow"] == ["fraud-lr@2"]


def test_evaluate_refuses_an_unwritable_report_folder_before_any_work(tmp_path: Path) -> None:
    """Found by the same review: ``payfm evaluate --out`` scored every model, then failed to write."""
    from payfm.errors import ConfigError
    from payfm.evaluation.pipeline import evaluate_models

    ws = Workspace.open(tmp_path / "ws", create=True)  # no charges: any work would fail on the window
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigError, match=r"^--out \(out_dir\): the folder of .* cannot be created"):
        evaluate_models(ws, [], out_dir=tmp_path / "a-file" / "report")
