"""The registry's entry.json, its index and `payfm models show` are standard JSON: a metric without a value
(the test AP of a test window without a fraud is NaN) is null, not a bare NaN no other JSON reader takes. An
entry written before, with NaN, still loads (a review found `"test_ap": NaN` in `models show` and entry.json).
A reference of the wrong type is refused naming it, not an AttributeError from inside the registry."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.registry import Registry, RegistryError, store
from payfm.registry.store import UnknownModelError
from payfm.training.models import model_class

FS = tiny_set()
METRICS = {"val_ap": 0.25, "test_ap": float("nan"), "test_auc": float("inf"), "test_positives": 0.0}


def strict(text: str) -> Any:
    """``text`` read as standard JSON: NaN, Infinity and -Infinity are refused, as other readers do."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not standard JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    registry = Registry(Workspace.open(tmp_path / "ws", create=True))
    X = np.random.default_rng(0).normal(size=(200, len(FS.names)))
    model = model_class("lr")(calibration="none").fit(X, (X[:, 0] > 0).astype(int), feature_names=FS.names)
    registry.register(model, name="fraud-lr", task="fraud", fset=FS, metrics=METRICS)
    return registry


def test_entry_json_and_the_index_hold_standard_json(reg: Registry) -> None:
    mv = reg.get("fraud-lr@1")
    on_disk = strict((reg.path(mv) / "entry.json").read_text())
    assert on_disk["metrics"] == {"val_ap": 0.25, "test_ap": None, "test_auc": None, "test_positives": 0.0}
    con = sqlite3.connect(reg.root / "registry.db")
    try:
        [(indexed,)] = con.execute("SELECT entry FROM versions").fetchall()
    finally:
        con.close()
    assert strict(indexed)["metrics"]["test_ap"] is None


def test_an_entry_reads_back_its_metrics_as_registered(reg: Registry) -> None:
    metrics = reg.get("fraud-lr").entry["metrics"]  # a metric without a value is NaN again, as given
    assert metrics["val_ap"] == 0.25 and math.isnan(metrics["test_ap"]) and math.isnan(metrics["test_auc"])
    assert math.isnan(
        store.read_entry('{"metrics": {"test_ap": NaN}}')["metrics"]["test_ap"]
    )  # (written before)
    assert strict(store.entry_json({"m": [float("-inf"), 1.0]}, indent=1)) == {"m": [None, 1.0]}


def test_payfm_models_show_prints_standard_json(reg: Registry) -> None:
    r = CliRunner().invoke(cli, ["-w", str(reg.ws.root), "models", "show", "fraud-lr@1"])
    assert r.exit_code == 0, r.output
    shown = strict(r.output)
    assert shown["entry"]["metrics"]["test_ap"] is None and shown["entry"]["metrics"]["val_ap"] == 0.25
    assert shown["name"] == "fraud-lr" and shown["version"] == 1


def test_an_entry_written_with_nan_before_still_loads_and_shows(reg: Registry) -> None:
    """A registry of an earlier payfm holds bare NaN in entry.json and in the index: it still loads, lists
    and shows, now as standard JSON."""
    mv = reg.get("fraud-lr@1")
    old = json.dumps(mv.entry)  # Python's json writes NaN, as the registry did
    assert "NaN" in old
    (reg.path(mv) / "entry.json").write_text(old)
    con = sqlite3.connect(reg.root / "registry.db")
    try:
        con.execute("UPDATE versions SET entry = ?", (old,))
        con.commit()
    finally:
        con.close()
    again, model = reg.load("fraud-lr@1", FS)
    assert math.isnan(again.entry["metrics"]["test_ap"]) and model.kind == "lr"
    ws = str(reg.ws.root)
    shown = CliRunner().invoke(cli, ["-w", ws, "models", "show", "fraud-lr"])
    assert shown.exit_code == 0 and strict(shown.output)["entry"]["metrics"]["test_ap"] is None
    listed = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["-w", ws, "models", "list"])
    assert listed.exit_code == 0 and "fraud-lr@1" in listed.output, listed.output


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            lambda r: r.load(1),
            r"The model reference \(name, name@<version> .*must be a text\. Got 1 \(int\)\.",
        ),
        (lambda r: r.get(None), r"must be a text\. Got None \(NoneType\)\."),
        (lambda r: r.promote(2), r"must be a text\. Got 2 \(int\)\."),
        (lambda r: r.rollback(3), r"The model name to roll back must be a text\. Got 3 \(int\)\."),
        (lambda r: r.list(5), r"The model name must be a text\. Got 5 \(int\)\."),
    ],
)
def test_a_reference_that_is_no_text_is_refused_naming_it(reg: Registry, call: Any, expected: str) -> None:
    with pytest.raises(UnknownModelError, match=expected):
        call(reg)


def test_load_refuses_a_feature_set_given_by_name(reg: Registry) -> None:
    with pytest.raises(
        RegistryError, match=r"The 'fset' of Registry\.load must be a FeatureSet .* Got 'tiny'"
    ):
        reg.load("fraud-lr", "tiny")  # type: ignore[arg-type]


def test_register_refuses_a_name_that_is_no_text(reg: Registry) -> None:
    X = np.random.default_rng(1).normal(size=(50, len(FS.names)))
    model = model_class("lr")(calibration="none").fit(X, (X[:, 0] > 0).astype(int), feature_names=FS.names)
    with pytest.raises(RegistryError, match=r"The registry name must be .* Got 7\."):
        reg.register(model, name=7, task="fraud", fset=FS)  # type: ignore[arg-type]


def test_models_list_of_a_workspace_without_models_says_how_to_train_one(tmp_path: Path) -> None:
    """A walkthrough got an empty table and no word."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "models", "list"])
    assert (
        r.exit_code == 0
        and "No model is registered in this workspace: train one with `payfm train`" in r.output
    )
    assert "Registered models" not in r.output
