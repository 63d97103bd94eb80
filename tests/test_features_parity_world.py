"""Parity at scale: 100k+ synthetic charges with their outcomes, every default feature, zero mismatches."""

from __future__ import annotations

from pathlib import Path

import pytest

from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set
from payfm.features.parity import workspace_parity
from payfm.synth import WorldConfig, generate_world


@pytest.mark.slow
def test_default_set_parity_on_100k_synthetic_charges(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path, create=True)
    rows = ws.write_stream(generate_world(WorldConfig(charges=102_000, days=45, seed=21)), "replace")
    assert rows["charges"] >= 100_000
    assert rows["disputes"] > 100 and rows["early_fraud_warnings"] > 50 and rows["refunds"] > 1000
    fset = default_set()
    report = workspace_parity(ws, fset)
    assert report.charges == rows["charges"]
    bad = {name: (n, report.examples[name]) for name, n in report.mismatches.items() if n}
    assert report.total_mismatches == 0, bad
