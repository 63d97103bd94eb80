"""A Redis state is used only with the event log it was loaded from (found by a review: a server of another
workspace on the same feature set, or of this workspace after `generate --replace`, found the state loaded
and decided with the other world's counts, silently; its own charge was refused as "known already ... with
another 'amount'"). The marker records the workspace's and the log's identity; another log's server refuses
to start, in one line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from payfm.errors import ConfigError, shown_url
from payfm.events.workspace import Workspace
from payfm.serving.scorer import Scorer
from payfm.synth import WorldConfig, generate_world
from services import REDIS_SCRATCH_URL
from test_serving_redis_state import _copy, _new_charges


def _world(root: Path, seed: int) -> Workspace:
    ws = Workspace.open(root, create=True)
    ws.write_stream(generate_world(WorldConfig(charges=1_000, days=4, seed=seed)), "replace")
    return ws


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Workspace]:
    root = tmp_path_factory.mktemp("owners")
    return _world(root / "sm", 1), _world(root / "sm2", 2)


def _ns(scorer: Scorer) -> str:
    return str(scorer.online.store.ns)  # type: ignore[attr-defined]


def test_the_workspace_and_log_identity_follow_copies_appends_and_replaces(tmp_path: Path) -> None:
    from payfm.events.workspace import LEGACY_LOG_ID

    ws = _world(tmp_path / "a", 3)
    ident = ws.identity()
    assert ident[1] != LEGACY_LOG_ID and ident == _copy(ws, tmp_path / "copy").identity()  # a copy: the same
    with ws.writer("append", validate=False) as w:  # (the server's outcome appends, `serve export`)
        w.write("refunds", ws.read("refunds").slice(0, 1))
    ws.compact()
    assert ws.identity() == ident
    ws.write_stream(generate_world(WorldConfig(charges=1_000, days=2, seed=4)), "replace")
    assert ws.identity()[0] == ident[0] and ws.identity()[1] != ident[1]  # the same workspace, another log
    assert _world(tmp_path / "b", 3).identity()[0] != ident[0]  # another workspace, the same world
    # A manifest of an older payfm (no ids): its log is "legacy", the workspace named by its path (by its
    # secret.key once it has one: an HMAC, never the key)
    manifest = ws.manifest()
    for key in ("workspace_id", "log_id"):
        manifest.pop(key)
    (ws.root / "manifest.json").write_text(json.dumps(manifest))
    legacy = ws.identity()
    assert legacy[1] == LEGACY_LOG_ID and legacy == ws.identity()
    secret = ws.secret()
    assert ws.identity()[0] != legacy[0] and secret.hex() not in ws.identity()[0]


def test_a_server_of_another_workspace_refuses_the_state_in_one_line(
    worlds: tuple[Workspace, Workspace], tmp_path: Path, redis_scratch: Any
) -> None:
    """The review's repro: sm's server loads the state and stops; sm2's server (an empty decision log) found
    it loaded, said nothing and decided with sm's counts."""
    sm, sm2 = _copy(worlds[0], tmp_path / "sm"), _copy(worlds[1], tmp_path / "sm2")
    first = Scorer.open(sm, state=REDIS_SCRATCH_URL)
    ns = _ns(first)
    first.close(snapshot=False)
    with pytest.raises(ConfigError) as e:
        Scorer.open(sm2, state=REDIS_SCRATCH_URL)
    said = str(e.value)
    assert "\n" not in said, said
    for part in (
        ns,
        repr(shown_url(REDIS_SCRATCH_URL)),
        f"workspace {str(sm.root)!r}",  # whose log the state is from...
        f"workspace {str(sm2.root)!r}",  # ...and this server's
        "another workspace",
        f"payfm -w {str(sm2.root)!r} serve state drop {ns} --state {REDIS_SCRATCH_URL}",
        "another Redis database",
    ):
        assert part in said, (part, said)
    assert not list(redis_scratch.scan_iter(f"{ns}:live:*"))  # the refused server left nothing
    # `serve state list` says whose log each state holds, and whether it is the workspace's own
    for ws, mark in ((sm, "(this workspace's log)"), (sm2, "(another log)")):
        out = _state_list(ws)
        assert f"{ns}: loaded from workspace {str(sm.root)!r} on " in out and f" {mark}\n" in out, out
    # a copy of sm (another server of the same workspace) serves from it
    again = Scorer.open(_copy(worlds[0], tmp_path / "sm-copy"), state=REDIS_SCRATCH_URL)
    again.close(snapshot=False)


def _state_list(ws: Workspace) -> str:
    from click.testing import CliRunner

    from payfm.cli.main import cli

    r = CliRunner().invoke(cli, ["-w", str(ws.root), "serve", "state", "list", "--state", REDIS_SCRATCH_URL])
    assert r.exit_code == 0, r.output
    return r.output


def test_a_state_another_deployment_serves_from_is_not_offered_to_drop(
    worlds: tuple[Workspace, Workspace], tmp_path: Path, redis_scratch: Any
) -> None:
    serving = Scorer.open(_copy(worlds[0], tmp_path / "sm"), state=REDIS_SCRATCH_URL)
    try:
        with pytest.raises(ConfigError) as e:
            Scorer.open(_copy(worlds[1], tmp_path / "sm2"), state=REDIS_SCRATCH_URL)
        said = str(e.value)
        assert (
            "1 serving process(es) read it now" in said and "give this server another Redis database" in said
        )
        assert "\n" not in said
    finally:
        serving.close(snapshot=False)


def test_a_replaced_event_log_is_another_log(
    worlds: tuple[Workspace, Workspace], tmp_path: Path, redis_scratch: Any
) -> None:
    ws = _copy(worlds[0], tmp_path / "sm")
    Scorer.open(ws, state=REDIS_SCRATCH_URL).close(snapshot=False)
    ws.write_stream(
        generate_world(WorldConfig(charges=1_000, days=4, seed=9)), "replace"
    )  # generate --replace
    with pytest.raises(ConfigError, match=r"this workspace's event log was replaced since") as e:
        Scorer.open(ws, state=REDIS_SCRATCH_URL)
    assert "serve state drop" in str(e.value) and "\n" not in str(e.value)


def test_a_state_an_older_payfm_loaded_is_taken_only_when_this_log_shows_it_is_its_own(
    worlds: tuple[Workspace, Workspace], tmp_path: Path, redis_scratch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sm = _copy(worlds[0], tmp_path / "sm")
    first = Scorer.open(sm, state=REDIS_SCRATCH_URL)
    ns = _ns(first)
    try:
        for charge in _new_charges(sm, 3):
            first.score(charge)  # in the state and in sm's decision log
    finally:
        first.close(snapshot=False)
    redis_scratch.set(f"{ns}:warm", b"1")  # as an older payfm marked it: no owner
    with pytest.raises(
        ConfigError, match=r"was loaded by an older payfm.*does not show that it is this one's"
    ):
        Scorer.open(_copy(worlds[1], tmp_path / "sm2"), state=REDIS_SCRATCH_URL)  # nothing to show it
    assert redis_scratch.get(f"{ns}:warm") == b"1"
    with caplog.at_level(logging.WARNING, logger="payfm.serving"):
        Scorer.open(sm, state=REDIS_SCRATCH_URL).close(snapshot=False)  # its decisions are in it: taken
    assert "was loaded by an older payfm" in caplog.text and "taken as the state of" in caplog.text
    marker = json.loads(redis_scratch.get(f"{ns}:warm"))
    assert (marker["workspace"], marker["log"]) == sm.identity()
    with pytest.raises(ConfigError, match="another workspace"):  # and another workspace is refused now
        Scorer.open(_copy(worlds[1], tmp_path / "sm2-again"), state=REDIS_SCRATCH_URL)


def test_an_embedder_state_loaded_from_another_log_is_refused(
    worlds: tuple[Workspace, Workspace], redis_scratch: Any
) -> None:
    """The foundation model's embedder states share the marker: the same check (serving/fm_embeddings.py)."""
    from payfm.fm.online_state import RedisState
    from payfm.serving.fm_embeddings import warm

    state = RedisState(REDIS_SCRATCH_URL, "t-owner", keep=3, n_fields=20)
    theirs = {"workspace": "0" * 16, "log": "1" * 16, "path": "/srv/other", "host": "h", "at": "2026-12-01"}
    redis_scratch.set("payfm:fm:t-owner:warm", json.dumps(theirs))  # loaded from another workspace's log
    learned: list[str] = []
    embedder = SimpleNamespace(store=state, warm=lambda *a, **k: learned.append("warm") or 0)
    decisions = SimpleNamespace(
        recent_charges=lambda n, upto: ([], None), recent_outcomes=lambda n: [], decided=lambda upto: []
    )
    with pytest.raises(ConfigError, match=r"payfm:fm:t-owner.*another workspace") as e:
        warm({"h" * 64: embedder}, worlds[0], decisions, None, False)  # type: ignore[arg-type, dict-item]
    assert "\n" not in str(e.value) and "'/srv/other'" in str(e.value) and not learned
    from payfm.serving.shared_state import Owner

    redis_scratch.set("payfm:fm:t-owner:warm", Owner.of(worlds[0]).encoded())  # this log's: used as it is
    warm({"h" * 64: embedder}, worlds[0], decisions, None, False)  # type: ignore[arg-type, dict-item]
    assert not learned
