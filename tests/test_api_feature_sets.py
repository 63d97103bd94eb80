"""A feature set defined from Python (`payfm.features.catalog.define_set`), with every check `payfm features
define` makes, so a model trained on it promotes without the CLI; a set named with a card number is refused
where it would reach a file name, and the registry's error names the Python function (a notebook user's
audit of the library)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.features.catalog import define_set, feature_set, set_path, tiny_set
from payfm.features.definitions import Aggregate, FeatureSet, RequestFeature
from payfm.features.offline import backfill
from payfm.registry import FeatureSetMismatchError, Registry
from payfm.synth import WorldConfig, generate_world
from payfm.training.models import model_class

PAN = "4111111111111111"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _mine(*extra: Aggregate) -> FeatureSet:
    return FeatureSet("mine", (*tiny_set().features, *extra))


def _register(ws: Workspace, fs: FeatureSet) -> str:
    X = np.random.default_rng(0).normal(size=(200, len(fs.names)))
    m = model_class("lr")(calibration="none").fit(X, (X[:, 0] > 0).astype(int), feature_names=fs.names)
    return Registry(ws).register(m, name="fraud-lr", task="fraud", fset=fs).ref


def _files(ws: Workspace) -> list[str]:
    return sorted(p.name for p in ws.root.rglob("*") if p.is_file())


def test_a_python_set_is_defined_then_its_model_promotes(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    fs = _mine(Aggregate("merchant", "count", filter="declined"))
    ref = _register(ws, fs)
    with pytest.raises(FeatureSetMismatchError) as e:
        Registry(ws).promote(ref)
    assert "define_set(ws, fset)" in str(e.value) and "payfm features define" in str(e.value)
    path, written = define_set(ws, fs)
    assert written and path == set_path(ws.root, "mine")
    assert json.loads(path.read_text()) == json.loads(json.dumps(fs.to_json(), default=list))
    assert feature_set("mine", ws.root) == fs
    assert Registry(ws).promote(ref).stage == "production"
    assert define_set(ws, fs) == (path, False)  # the same definitions: nothing to write
    leftovers = [p.name for p in path.parent.iterdir() if p.name != "mine.json"]
    assert leftovers == []  # written atomically: no temporary file left beside it


def test_redefining_needs_replace_and_is_refused_while_a_model_on_it_is_served(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    fs = _mine()
    define_set(ws, fs)
    ref = _register(ws, fs)
    Registry(ws).promote(ref)
    other = _mine(Aggregate("card", "count", window=None, filter="declined"))
    with pytest.raises(ConfigError, match=r"defines feature set 'mine' already .*replace=True"):
        define_set(ws, other)
    with pytest.raises(ConfigError, match=rf"Feature set 'mine' is served: {re.escape(ref)}"):
        define_set(ws, other, replace=True)
    assert feature_set("mine", ws.root).version == fs.version  # unchanged by either refusal
    Registry(ws).set_stage(ref, "archived")
    _, written = define_set(ws, other, replace=True)
    assert written and feature_set("mine", ws.root).version == other.version
    with pytest.raises(FeatureSetMismatchError, match="version"):
        Registry(ws).promote(ref)  # trained on the old definitions


@pytest.mark.parametrize(
    ("fset", "said"),
    [
        (tiny_set(), "'tiny' is a set payfm bundles"),
        (FeatureSet(f"set_{PAN}", tiny_set().features), "A feature set's name must not hold a card number"),
        (
            FeatureSet("mine", (RequestFeature(f"amt_{PAN}", "amount_usd"),)),
            "a feature name must not hold a card number",
        ),
        ("mine", "The 'fset' of define_set must be a FeatureSet"),
    ],
)
def test_define_set_refuses_what_features_define_refuses(tmp_path: Path, fset: object, said: str) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    before = _files(ws)
    with pytest.raises(ConfigError) as e:
        define_set(ws, fset)  # type: ignore[arg-type]
    assert said in str(e.value) and PAN not in str(e.value)
    assert _files(ws) == before and not (tmp_path / "escape.json").exists()


def test_define_set_takes_a_workspace_not_a_path(tmp_path: Path) -> None:
    Workspace.open(tmp_path / "ws", create=True)
    with pytest.raises(ConfigError, match=r"'ws' of define_set must be what Workspace.open\(path\) gives"):
        define_set(str(tmp_path / "ws"), _mine())  # type: ignore[arg-type]


def test_the_cli_and_the_library_define_the_same_file(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    spec = tmp_path / "mine.json"
    spec.write_text(json.dumps(_mine().to_json(), default=list))
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "features", "define", str(spec)])
    assert r.exit_code == 0 and "Defined feature set 'mine'" in r.output, r.output
    assert define_set(ws, _mine()) == (set_path(ws.root, "mine"), False)
    other = _mine(Aggregate("card", "count", filter="declined"))
    spec.write_text(json.dumps(other.to_json(), default=list))
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "features", "define", str(spec)])
    assert r.exit_code == 1 and "--replace" in r.output and "Traceback" not in r.output, r.output


def test_a_set_named_with_a_card_number_is_never_backfilled(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=1500, days=5, seed=3)), "replace")
    for fs in (
        FeatureSet(f"set_{PAN}", tiny_set().features),
        FeatureSet("mine", (RequestFeature(f"amt_{PAN}", "amount_usd"),)),
    ):
        with pytest.raises(ConfigError, match="must not hold a card number") as e:
            backfill(ws, fs)
        assert PAN not in str(e.value)
    assert not any(PAN in p for p in _files(ws))
    path, rows = backfill(ws, FeatureSet("fraud_20261205143005", tiny_set().features))  # a time: no PAN
    assert rows > 0 and path.exists()


def test_an_unknown_set_names_the_python_function_too() -> None:
    with pytest.raises(ConfigError, match=r"payfm features define FILE.json.*define_set\(ws, fset\)"):
        feature_set("nope")


def test_the_python_example_of_features_md_runs_as_printed(capsys: pytest.CaptureFixture[str]) -> None:
    text = (DOCS / "features.md").read_text().split("### Your own feature set", 1)[1].split("\n## ", 1)[0]
    [block] = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "define_set" in b]
    exec(block, {})  # the docs' own example text
    [printed] = re.findall(r"^# (.*)$", block, re.M)[-1:]
    assert capsys.readouterr().out.strip() == printed


@pytest.mark.parametrize("name", ["../escape", "Mine", "", None, 7, f"s-{PAN}"])
def test_a_set_name_no_file_could_take_is_refused_when_the_set_is_made(tmp_path: Path, name: object) -> None:
    """Checked by FeatureSet itself, not only by define_set: a backfill of a Python-made set wrote
    features/../../escape-<version>.parquet, outside the workspace, and a None name was an AttributeError."""
    with pytest.raises(ConfigError, match="A feature set's 'name' must be a lower-case word") as e:
        FeatureSet(name, tiny_set().features)  # type: ignore[arg-type]
    assert PAN not in str(e.value)


def test_a_backfill_of_no_feature_is_refused(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    with pytest.raises(
        ConfigError, match=r"A backfill needs a FeatureSet of at least one feature\. Got set 'e'"
    ):
        backfill(ws, FeatureSet("e", ()))
    assert not (ws.root / "features").exists() or not any((ws.root / "features").glob("e-*"))


def test_a_set_file_whose_name_is_another_is_refused_when_loaded(tmp_path: Path) -> None:
    """A set file is the set its file names: one whose 'name' says another is refused when loaded (it was
    loaded, and a model trained on it recorded a set of a name no file has)."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    path, _ = define_set(ws, _mine())
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "name": "other"}))
    with pytest.raises(ConfigError) as e:
        feature_set("mine", ws.root)
    assert str(e.value) == (
        f"Feature set file '{path}': its 'name' must be 'mine', the file's own name (`payfm features define` "
        "writes it so; rename the file or the set). Got 'other'."
    )
    r = CliRunner().invoke(
        cli, ["-w", str(ws.root), "features", "show", "card.count_charges_1h", "--set", "mine"]
    )
    assert r.exit_code != 0 and "its 'name' must be 'mine'" in r.output and "Traceback" not in r.output
    path.write_text(json.dumps(data))
    assert feature_set("mine", ws.root) == _mine()
