"""A server that follows its workspace (`payfm serve`'s default, ScorerConfig.follow) serves a ruleset
activated or a model promoted by another process within its look interval, without POST /v1/admin/reload; a
change it cannot serve leaves it deciding as before, logged once and said in /healthz."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.features.catalog import bench_set
from payfm.registry.store import Registry
from payfm.rules import rulesets
from payfm.serving.app import create_app
from payfm.serving.scorer import Scorer, ScorerConfig
from test_serving_lists import _until
from test_serving_scorer import RULES, charge, register


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    w = Workspace.open(tmp_path / "ws", create=True)
    register(w, 1.0, "production")
    rulesets.save(w, RULES, activate=True, set_name="tiny", author="test")
    return w


def test_a_ruleset_activated_and_a_model_promoted_elsewhere_are_served(ws: Workspace) -> None:
    scorer = Scorer.open(ws, config=ScorerConfig(lists_refresh_s=0.05, follow=True))
    try:
        first = scorer.bundle.model_version
        assert first is not None and scorer.bundle.ruleset_version == 1
        assert scorer.score(charge(1, ip_country="RU")).outcome == "blocked"
        # `payfm rules apply` in another process: the next decisions use v2
        rulesets.save(ws, "big: review if :amount_usd: > 500\n", activate=True, set_name="tiny", author="ana")
        assert _until(lambda: scorer.bundle.ruleset_version == 2)
        d = scorer.score(charge(2, ip_country="RU"))
        assert d.outcome == "authorized" and d.ruleset_version == 2
        # `payfm models promote`: the new version decides; a candidate registered meanwhile changes nothing
        second = register(ws, -1.0, "production")
        assert _until(
            lambda: scorer.bundle.model_version is not None and scorer.bundle.model_version.ref == second
        )
        loaded = scorer.bundle
        register(ws, 2.0, "candidate")
        rulesets.rollback(ws, note="back")  # and a rollback is followed too
        assert _until(lambda: scorer.bundle.ruleset_version == 1)
        assert scorer.bundle.model_version is not None and scorer.bundle.model_version.ref == second
        assert scorer.bundle is not loaded
        assert scorer.score(charge(3, ip_country="RU")).outcome == "blocked"
    finally:
        scorer.close()


def test_without_follow_only_a_reload_changes_the_ruleset(ws: Workspace) -> None:
    scorer = Scorer.open(ws, config=ScorerConfig(lists_refresh_s=0.05))
    try:
        rulesets.save(ws, "big: review if :amount_usd: > 500\n", activate=True, set_name="tiny", author="ana")
        assert not _until(lambda: scorer.bundle.ruleset_version == 2, timeout_s=0.5)
        scorer.reload()
        assert scorer.bundle.ruleset_version == 2
    finally:
        scorer.close()
    with pytest.raises(ConfigError, match=r"follow=True.*lists_refresh_s"):
        ScorerConfig(follow=True)


def test_a_change_that_cannot_be_served_is_said_once_and_decided_as_before(
    ws: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    """A model promoted on another feature set needs a restart: the server keeps the model and rules it has,
    logs it once, says it in /healthz's warnings, and follows the next change it can serve."""
    import numpy as np

    from payfm.training.models.linear import LogisticModel

    scorer = Scorer.open(ws, config=ScorerConfig(lists_refresh_s=0.05, follow=True))
    served = scorer.bundle.model_version
    assert served is not None
    try:
        fset = bench_set()
        X = np.random.default_rng(0).normal(size=(100, len(fset.names)))
        y = (X[:, 0] > 0).astype(int)
        other = Registry(ws).register(
            LogisticModel(calibration="none").fit(X, y, feature_names=fset.names),
            name="fraud-lr",
            task="fraud",
            fset=fset,
        )
        with caplog.at_level("ERROR", logger="payfm.serving"):
            Registry(ws).promote(other.ref)
            assert _until(lambda: scorer.watcher is not None and scorer.watcher.problem is not None)
            rulesets.save(ws, RULES + "\n", activate=False, set_name="tiny", author="ana")  # a later look
            assert _until(lambda: scorer.watcher is not None and scorer.watcher.problem is not None)
        said = [r.message for r in caplog.records if "following the workspace" in r.getMessage()]
        assert len(said) == 1, said
        assert scorer.bundle.model_version is not None and scorer.bundle.model_version.ref == served.ref
        assert scorer.score(charge(1, ip_country="RU")).outcome == "blocked"
        with TestClient(create_app(scorer, None)) as client:
            health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["model"] == served.ref
        [warning] = health["warnings"]
        assert f"model {other.ref}" in warning and "cannot be served" in warning and "bench15" in warning
        assert f"still serving model {served.ref}" in warning
        # the change undone (`payfm models rollback`): served again as it was, the warning gone
        Registry(ws).promote(served.ref)
        assert _until(lambda: scorer.watcher is not None and scorer.watcher.problem is None)
    finally:
        scorer.close()
