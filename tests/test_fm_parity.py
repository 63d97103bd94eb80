"""`payfm fm parity`: the online embedder's inputs and outputs equal the batch job's, on 100k charges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.fm.embed import OnlineEmbedder
from payfm.fm.parity import fm_parity
from payfm.fm.pretrain import PretrainConfig, checkpoint_dir, pretrain
from payfm.synth import WorldConfig
from payfm.synth.generator import generate_world
from services import REDIS_URL, require_redis


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    torch.set_num_threads(1)
    ws = Workspace.open(Path(tmp_path_factory.mktemp("fmparity")), create=True)
    ws.write_stream(generate_world(WorldConfig(charges=110_000, days=20, seed=11)), "replace")
    cfg = PretrainConfig(seq_len=6, n_layer=1, n_head=2, n_embd=16, batch_size=64, steps=20, seed=3)
    return ws, pretrain(ws, cfg, out=checkpoint_dir(ws, "default")).path


def test_online_equals_offline_on_100k_replayed_charges(trained: tuple[Workspace, Path]) -> None:
    ws, ckpt = trained
    n = ws.count("charges")
    assert n > 100_000
    seen: list[tuple[int, int]] = []
    outputs = ("embedding", "surprise")
    report = fm_parity(ws, ckpt, charges=100_000, outputs=outputs, progress=lambda d, t: seen.append((d, t)))
    assert (report.charges, report.warmed) == (100_000, n - 100_000)
    assert report.input_mismatches == 0 and report.first_input_mismatch is None
    assert report.single_checked == 1_000  # every 100th charge also through the one-charge call
    assert max(report.max_abs_diff.values()) < 1e-5 and report.single_max_abs_diff < 1e-5
    assert report.ok and seen[-1] == (100_000, 100_000)


def test_a_wrong_online_state_is_caught_and_named(
    trained: tuple[Workspace, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, ckpt = trained
    learn = OnlineEmbedder._learn

    def forgets_devices(self: OnlineEmbedder, charge: Any, created: int, rows: list[np.ndarray]) -> None:
        learn(self, charge, created, rows)
        self.counts["device_n"].pop(charge.get("device_id"), None)  # a state that loses device counts

    monkeypatch.setattr(OnlineEmbedder, "_learn", forgets_devices)
    report = fm_parity(ws, ckpt, charges=3_000)
    assert not report.ok and 0 < report.input_mismatches <= 3_000
    first = report.first_input_mismatch
    assert first is not None and first["field"] == "device_n" and first["online"] != first["offline"]
    assert report.over_tolerance["embedding"] > 0  # the inputs differ, so do the embeddings


def test_parity_cli(trained: tuple[Workspace, Path]) -> None:
    ws, _ = trained
    runner = CliRunner()
    ok = runner.invoke(cli, ["-w", str(ws.root), "fm", "parity", "--charges", "500", "--surprise"])
    assert ok.exit_code == 0, ok.output
    assert "500 charges replayed" in ok.output and "0 input mismatches" in ok.output
    bad = runner.invoke(cli, ["-w", str(ws.root), "fm", "parity", "--charges", "0"])
    assert bad.exit_code == 2 and "--charges" in bad.output
    missing = runner.invoke(cli, ["-w", str(ws.root), "fm", "parity", "--name", "nope"])
    assert missing.exit_code != 0 and "nope" in missing.output and "Traceback" not in missing.output
    with pytest.raises(ConfigError, match="charges to replay"):
        fm_parity(ws, checkpoint_dir(ws, "default"), charges=-1)


def test_parity_through_a_redis_state(trained: tuple[Workspace, Path]) -> None:
    client = require_redis(REDIS_URL)
    ws, ckpt = trained
    # (the keys of parity runs killed before their clean-up, by another test run, are not this run's)
    before = set(client.scan_iter("payfm:fm:parity-*", count=1000))
    report = fm_parity(ws, ckpt, charges=10_000, outputs=("embedding", "surprise"), state=REDIS_URL)
    assert (report.charges, report.warmed) == (10_000, ws.count("charges") - 10_000)
    assert report.input_mismatches == 0 and max(report.max_abs_diff.values()) < 1e-5 and report.ok
    assert set(client.scan_iter("payfm:fm:parity-*", count=1000)) <= before  # its own namespace cleaned up


@pytest.mark.parametrize("state", ["memory", "redis"])
def test_results_reported_after_the_decision_keep_parity(trained: tuple[Workspace, Path], state: str) -> None:
    # Learned without outcome, each result reported before the next charge: the inputs are exact. Reported
    # a few charges late, the charges decided meanwhile read the outstanding outcomes as null, and only those:
    # the mismatch's position is a history row (never the charge's own, masked) and its field the outcome.
    ws, ckpt = trained
    where = "memory" if state == "memory" else REDIS_URL
    if state == "redis":
        require_redis(REDIS_URL)
    exact = fm_parity(ws, ckpt, charges=5_000, state=where, authorize_after=0)
    assert exact.input_mismatches == 0 and exact.ok
    lagged = fm_parity(ws, ckpt, charges=5_000, state=where, authorize_after=20)
    first = lagged.first_input_mismatch
    assert 0 < lagged.input_mismatches < 5_000 and first is not None
    assert first["field"] == "outcome" and first["online"] == 2 and first["position"] < 5  # NULL, K-1 = 5
    with pytest.raises(ConfigError, match="authorize_after"):
        fm_parity(ws, ckpt, charges=10, authorize_after=-1)


def test_parity_cli_authorize_after(trained: tuple[Workspace, Path]) -> None:
    ws, _ = trained
    argv = ["-w", str(ws.root), "fm", "parity", "--charges", "800", "--authorize-after"]
    ok = CliRunner().invoke(cli, [*argv, "0"])
    assert ok.exit_code == 0 and "0 input mismatches" in ok.output, ok.output
    late = CliRunner().invoke(cli, [*argv, "50"])
    assert late.exit_code == 1 and "'field': 'outcome'" in late.output, late.output
