"""A server that follows its workspace (`payfm serve`'s default, ScorerConfig.follow) serves a ruleset
activated or a model promoted by another process within its look interval, without POST /v1/admin/reload; a
change it cannot serve leaves it deciding as before, logged once and said in /healthz."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.features.catalog import bench_set
from payfm.registry.store import ArtifactIntegrityError, Registry
from payfm.rules import rulesets
from payfm.serving.app import create_app
from payfm.serving.scorer import Scorer, ScorerConfig
from test_serving_lists import _until
from test_serving_scorer import RULES, charge, register, served_workspace


def _caught_up(scorer: Scorer) -> bool:
    """Wait until the scorer's watcher has looked at (and acted on) the workspace's files as they are now:
    two looks completed from now (one may have begun before the change)."""
    watcher = scorer.watcher
    assert watcher is not None
    start = watcher.looks
    return _until(lambda: watcher.looks >= start + 2)


def _counting(scorer: Scorer, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The scorer's reloads, counted."""
    calls: list[int] = []
    reload = scorer.reload

    def counted() -> Any:
        calls.append(1)
        return reload()

    monkeypatch.setattr(scorer, "reload", counted)
    return calls


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    return served_workspace(tmp_path / "ws")


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
    ws: Workspace, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model promoted on another feature set needs a restart: the server keeps the model and rules it has,
    logs it once, says it in /healthz's warnings, and follows the next change it can serve."""
    import numpy as np

    from payfm.training.models.linear import LogisticModel

    scorer = Scorer.open(ws, config=ScorerConfig(lists_refresh_s=0.05, follow=True))
    served = scorer.bundle.model_version
    assert served is not None
    calls = _counting(scorer, monkeypatch)
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
            assert _caught_up(scorer) and calls == [1]
            rulesets.save(ws, RULES + "\n", activate=False, set_name="tiny", author="ana")  # a later look
            assert _caught_up(scorer) and calls == [1]  # not tried again before its back-off (5 s)
            assert scorer.watcher is not None and scorer.watcher.problem is not None
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


def test_only_a_change_of_what_would_be_served_reloads(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A candidate registered, a shadow on another feature set, a shadow of another name than the served
    model's (ScorerConfig.model) and a list-only edit change the files, not what a load would serve: no
    reload. A shadow on the served set does reload."""
    import numpy as np

    from payfm.training.models.linear import LogisticModel

    scorer = Scorer.open(ws, config=ScorerConfig(model="fraud-lr", lists_refresh_s=0.02, follow=True))
    calls = _counting(scorer, monkeypatch)
    try:
        register(ws, 2.0, "candidate")
        assert _caught_up(scorer) and calls == []
        fset = bench_set()
        X = np.random.default_rng(0).normal(size=(100, len(fset.names)))
        other_set = LogisticModel(calibration="none").fit(
            X, (X[:, 0] > 0).astype(int), feature_names=fset.names
        )
        mv = Registry(ws).register(other_set, name="fraud-lr", task="fraud", fset=fset)
        Registry(ws).set_stage(mv.ref, "shadow")  # on bench15: not servable beside tiny
        assert _caught_up(scorer) and calls == []
        register(ws, 0.5, "shadow", name="fraud-other")  # another name than ScorerConfig.model's
        assert _caught_up(scorer) and calls == [] and scorer.bundle.shadow_version is None
        rulesets.save(ws, RULES + "\n", activate=False, set_name="tiny", author="ana")  # not activated
        assert _caught_up(scorer) and calls == []
        shadow = register(ws, 0.5, "shadow")  # fraud-lr on tiny: served beside the production model
        assert _caught_up(scorer) and calls == [1]
        assert scorer.bundle.shadow_version is not None and scorer.bundle.shadow_version.ref == shadow
    finally:
        scorer.close()


def test_a_change_while_the_server_starts_is_served_from_the_start(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = Scorer._watch

    def late(self: Scorer, every_s: float) -> None:
        rulesets.save(ws, "big: review if :amount_usd: > 9\n", activate=True, set_name="tiny", author="ana")
        watch(self, every_s)

    monkeypatch.setattr(Scorer, "_watch", late)
    scorer = Scorer.open(ws, config=ScorerConfig(lists_refresh_s=3600.0, follow=True))  # no look in the test
    try:
        assert scorer.bundle.ruleset_version == 2
    finally:
        scorer.close()


def test_a_failing_reload_is_retried_after_a_back_off_and_a_manual_reload_clears_the_warning(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import payfm.serving.bundle as bundle_module
    import payfm.serving.scorer as scorer_module
    import payfm.serving.watch as watch_module

    monkeypatch.setattr(watch_module, "RETRY_S", (0.3, 0.6))
    scorer = Scorer.open(ws, config=ScorerConfig(lists_refresh_s=0.02, follow=True))
    calls = _counting(scorer, monkeypatch)
    load = bundle_module.load_bundle
    broken = [True]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if broken[0]:
            raise OSError("model file not there yet")
        return load(*args, **kwargs)

    monkeypatch.setattr(scorer_module, "load_bundle", flaky)
    try:
        with caplog.at_level("ERROR", logger="payfm.serving"):
            rulesets.save(ws, "big: review if :amount_usd: > 9\n", activate=True, set_name="tiny", author="a")
            assert _until(lambda: scorer.watcher is not None and scorer.watcher.problem is not None)
            assert _until(lambda: len(calls) >= 3, timeout_s=5)  # tried again, not at every look (20 ms)
            assert len(calls) <= 6 and scorer.bundle.ruleset_version == 1
        said = [r.getMessage() for r in caplog.records if "following the workspace" in r.getMessage()]
        assert len(said) == 1 and "OSError: model file not there yet" in said[0], said
        assert "changed to model fraud-lr@1, ruleset v2 but cannot be served" in said[0]
        broken[0] = False  # the files arrived: the next try serves it
        assert _until(lambda: scorer.bundle.ruleset_version == 2)
        assert scorer.watcher is not None and scorer.watcher.problem is None
        # a refused change served by hand (POST /v1/admin/reload) clears the warning at the next look
        broken[0] = True
        monkeypatch.setattr(watch_module, "RETRY_S", (3600.0, 3600.0))
        rulesets.save(ws, "big: review if :amount_usd: > 8\n", activate=True, set_name="tiny", author="a")
        assert _until(lambda: scorer.watcher is not None and scorer.watcher.problem is not None)
        broken[0] = False
        scorer.reload()
        assert _until(lambda: scorer.watcher is not None and scorer.watcher.problem is None)
    finally:
        scorer.close()


def test_a_shadow_whose_files_changed_is_not_served_and_the_server_starts_and_follows_without_it(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A shadow decides nothing: one whose files were changed (or are missing) no longer stops a server from
    starting or from following the workspace; production and the rules are served, the shadow is not, and
    /healthz says why. A change elsewhere does not load it again; a back-off does (its files may arrive
    late), and a new shadow version is loaded at once."""
    from payfm.serving import watch

    monkeypatch.setattr(watch, "RETRY_S", (0.3, 0.6))
    caplog.set_level(logging.INFO, logger="payfm.serving")
    ref = register(ws, -1.0, "shadow")
    reg = Registry(ws)
    model_file = reg.path(reg.get(ref)) / "model.json"
    original = model_file.read_text()
    model_file.write_text("{}")  # changed after registration
    scorer = Scorer.open(ws, config=ScorerConfig(lists_refresh_s=0.05, follow=True))
    try:
        assert scorer.bundle.model_version is not None and scorer.bundle.shadow_version is None
        assert scorer.score(charge(1, ip_country="RU")).outcome == "blocked"  # production and the rules
        with TestClient(create_app(scorer, None)) as client:
            health = client.get("/healthz")
            metrics = client.get("/metrics").text
        assert health.status_code == 200 and health.json()["shadow_model"] is None
        assert "\npayfm_health_warnings 1.0\n" in metrics  # (what an alert can watch: /healthz is 200)
        [warning] = health.json()["warnings"]
        assert warning.startswith(f"The shadow model {ref} is not served (production and the rules are): ")
        assert "the artifact's sha256" in warning
        reloads = _counting(scorer, monkeypatch)
        rulesets.save(ws, "big: review if :amount_usd: > 500\n", activate=True, set_name="tiny", author="ana")
        assert _until(lambda: scorer.bundle.ruleset_version == 2)
        # (the watcher logs the change just after it serves it: wait for the line, not only the bundle)
        assert _until(lambda: any("now serving" in r.getMessage() for r in caplog.records))
        followed = [r.getMessage() for r in caplog.records if "now serving" in r.getMessage()]
        assert followed and all(ref not in m for m in followed)  # (it is not served: not said to be)
        assert len(reloads) == 1  # the change, not the refused shadow
        model_file.write_text(original)  # its files as registered (a sync that was late)
        assert _until(lambda: scorer.bundle.shadow_version is not None)  # by the back-off's retry
        assert scorer.bundle.shadow_version.ref == ref and scorer.bundle.shadow_refused is None
        assert "warnings" not in scorer.bundle.describe()
    finally:
        scorer.close(snapshot=False)


def test_a_refused_shadow_is_not_loaded_again_at_each_change_and_a_new_version_is_loaded_at_once(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = register(ws, -1.0, "shadow")
    reg = Registry(ws)
    (reg.path(reg.get(ref)) / "model.json").write_text("{}")
    scorer = Scorer.open(ws, config=ScorerConfig(lists_refresh_s=0.05, follow=True))
    try:
        reloads = _counting(scorer, monkeypatch)
        register(ws, 1.0, "candidate", name="other")  # the registry changed, not what it selects
        assert _caught_up(scorer) and reloads == []
        fixed = register(ws, -1.0, "shadow")  # registered again: a new version, loaded at the change
        assert _until(lambda: scorer.bundle.shadow_version is not None)
        assert scorer.bundle.shadow_version.ref == fixed and len(reloads) == 1
    finally:
        scorer.close(snapshot=False)


def test_a_production_model_whose_files_changed_still_refuses_the_start(ws: Workspace) -> None:
    reg = Registry(ws)
    mv = reg.get(str(reg.list()[0].ref))
    (reg.path(mv) / "model.json").write_text("{}")
    with pytest.raises(ArtifactIntegrityError, match=r"the artifact's sha256 is"):
        Scorer.open(ws).close(snapshot=False)


def test_a_shadow_whose_foundation_model_checkpoint_fails_to_load_is_left_out_too(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shadow's checkpoint is loaded after the shadow itself (its embedder): a checkpoint with files
    missing (a ConfigError, not a registry error) left the server unable to start."""
    from payfm.serving import bundle

    ref = register(ws, -1.0, "shadow")
    real = bundle.load_embedders

    def load_embedders(reg: Any, versions: Any, *args: Any) -> Any:
        if versions[1] is not None:  # the shadow's checkpoint
            raise ConfigError("Checkpoint 'fm/late': expected tokenizer.json in it.")
        return real(reg, versions, *args)

    monkeypatch.setattr(bundle, "load_embedders", load_embedders)
    scorer = Scorer.open(ws)
    try:
        assert scorer.bundle.model_version is not None and scorer.bundle.shadow_version is None
        assert scorer.bundle.shadow_refused == (
            ref,
            f"The shadow model {ref} is not served (production and the rules are): Checkpoint 'fm/late': "
            "expected tokenizer.json in it.",
        )
        assert scorer.score(charge(1, ip_country="RU")).outcome == "blocked"
    finally:
        scorer.close(snapshot=False)


def test_a_shadow_retry_that_cannot_load_production_backs_off_and_keeps_saying_so(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused shadow's retry reloads everything: with production's files changed meanwhile the reload
    fails. It was tried again every look, its warning coming and going; now it backs off and stays said."""
    import time

    from payfm.serving import watch

    monkeypatch.setattr(watch, "RETRY_S", (0.2, 0.8))
    ref = register(ws, -1.0, "shadow")
    reg = Registry(ws)
    (reg.path(reg.get(ref)) / "model.json").write_text("{}")
    scorer = Scorer.open(ws, config=ScorerConfig(lists_refresh_s=0.05, follow=True))
    try:
        production = scorer.bundle.model_version
        assert production is not None
        (reg.path(production) / "model.json").write_text("{}")  # changed while it is served
        reloads = _counting(scorer, monkeypatch)
        watcher = scorer.watcher
        assert watcher is not None and _until(lambda: watcher.problem is not None)
        said = []
        for _ in range(40):  # 2 s
            said.append(watcher.problem)
            time.sleep(0.05)
        again = f"trying the shadow model {ref} again failed"
        assert all(p is not None and p.startswith(again) for p in said)
        assert 2 <= len(reloads) <= 4  # at 0.2, 0.6 (0.4 later), 1.4, 2.2 s: backing off
        assert scorer.bundle.model_version == production  # still deciding with what it loaded
    finally:
        scorer.close(snapshot=False)
