"""Promoting a model of another feature set than the active ruleset's (found by an SRE): the promotion went
through without a word, a reload answered 409 saying to restart, and the restarted server did not start.
`models promote` and `rollback` now warn, as `rules apply` warns of the converse, and the reload's 409
names both sides."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import PayfmError
from payfm.events.workspace import Workspace
from payfm.features.catalog import feature_set
from payfm.serving.bundle import load_bundle
from payfm.synth import WorldConfig, generate_world

SPLIT = ["--horizon-days", "5", "--val-days", "3", "--test-days", "3", "--gap-days", "1"]


def test_promoting_a_model_the_active_ruleset_cannot_serve_beside_warns(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    # (2% fraud: every split part holds labelled fraud whatever the realization; 0.3% left the val period
    # without one after the world's outcomes were drawn anew, 2026-12-07)
    ws.write_stream(generate_world(WorldConfig(charges=20_000, days=20, seed=2, fraud_rate=0.02)), "replace")

    def run(*args: str) -> tuple[str, str]:
        r = CliRunner().invoke(cli, ["-w", str(ws.root), *args])
        assert r.exit_code == 0, r.output
        return " ".join(r.stdout.split()), " ".join(r.stderr.split())

    for s in ("default", "tiny"):
        run("features", "backfill", "--set", s)
        run("train", "--model", "lr", "--set", s, *SPLIT)
    (tmp_path / "r.rules").write_text("big: block if :amount_usd: > 5000\n")
    run("models", "promote", "fraud-lr@1")
    run("rules", "apply", str(tmp_path / "r.rules"), "--no-backtest")
    out, err = run("models", "promote", "fraud-lr@2")
    assert out.startswith("fraud-lr@2 is now production")
    assert (
        "warning: fraud-lr@2 runs on feature set 'tiny', and the active ruleset v1 on 'default': a decision "
        "service refuses them" in err
    )
    with pytest.raises(PayfmError, match="make the model and the rules share one set") as e:
        load_bundle(ws, fset=feature_set("default", ws.root))  # a server started on 'default', reloading
    assert "fraud-lr@2 runs on feature set 'tiny', the active ruleset v1 on 'default'" in str(e.value)
    out, err = run("models", "rollback", "fraud-lr")
    assert out == "fraud-lr@1 is production again" and err == ""  # (they agree again)
