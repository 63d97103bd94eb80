"""The library's entry points take a workspace and window bounds the same way (a notebook user's audit): a
path where a Workspace is expected gave an AttributeError deep inside; the backtest and the replay took no
ISO text for their window (AttributeError, ArrowTypeError), and the replay took a naive datetime silently."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from payfm.errors import ConfigError
from payfm.events.importer import import_file
from payfm.events.query import run_sql
from payfm.events.summary import summarize
from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set
from payfm.features.offline import backfill
from payfm.registry import Registry
from payfm.rules.backtest import backtest
from payfm.rules.limits import RuleError
from payfm.rules.rulesets import compile_text
from payfm.serving.replay import replay_in_process
from payfm.serving.scorer import Scorer
from payfm.synth import WorldConfig, generate_world


@pytest.mark.parametrize(
    ("who", "call"),
    [
        ("Registry", lambda p: Registry(p)),
        ("backfill", lambda p: backfill(p, default_set())),
        ("summarize", lambda p: summarize(p)),
        ("run_sql", lambda p: run_sql(p, "SELECT 1")),
        ("import_file", lambda p: import_file(p, "x.csv", "sparkov")),
        ("replay_in_process", lambda p: replay_in_process(p, None, None)),
        ("Scorer.open", lambda p: Scorer.open(p)),
    ],
)
def test_a_path_for_a_workspace_is_one_clear_error(who: str, call: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "ws")
    with pytest.raises(ConfigError) as e:
        call(path)
    assert str(e.value) == (
        f"The 'ws' of {who} must be what Workspace.open(path) gives. Got the str {path!r}: open it first, "
        f"ws = Workspace.open({path!r})."
    )


def test_the_backtest_and_the_replay_read_their_window_as_evaluate_does(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ws.write_stream(generate_world(WorldConfig(charges=3_000, days=3, seed=5, start=start)))
    ruleset = compile_text(ws, "big: block if :amount_usd: > 1000")
    as_text = backtest(ws, ruleset, default_set(), start="2026-01-02", end="2026-01-03")
    as_dates = backtest(ws, ruleset, default_set(), start=date(2026, 1, 2), end=date(2026, 1, 3))
    assert as_text.charges == as_dates.charges > 0
    with pytest.raises(
        RuleError, match=re.escape("The backtest start must be an ISO date or time (2026-03-01)")
    ):
        backtest(ws, ruleset, default_set(), start="02/01/2026")
    with pytest.raises(ConfigError, match=re.escape("The replay start must be timezone-aware (UTC)")):
        replay_in_process(ws, datetime(2026, 1, 3), None)
    report = replay_in_process(ws, "2026-01-03", None)
    assert report.charges > 0


def test_a_feature_set_given_where_its_name_is_expected_is_named(tmp_path: Path) -> None:
    """A notebook passed the FeatureSet itself to compile_text: 'File name too long' and a 10 KB repr."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    with pytest.raises(
        ConfigError, match=r"named by a text \(set_name='default'\)\. Got the FeatureSet 'default'"
    ):
        compile_text(ws, "block if :amount_usd: > 1", default_set())  # type: ignore[arg-type]
