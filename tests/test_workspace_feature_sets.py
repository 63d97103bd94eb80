"""A workspace's own feature set (`payfm features define FILE.json`): every --set takes it, models train on
it, and the decision service serves them, as for a bundled set; bad files are refused naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.features.catalog import feature_set, tiny_set
from payfm.registry import Registry
from payfm.serving.scorer import Scorer
from payfm.synth import WorldConfig, generate_world


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    w = Workspace.open(tmp_path_factory.mktemp("mine") / "ws", create=True)
    w.write_stream(generate_world(WorldConfig(charges=20_000, days=40, seed=7, fraud_rate=0.03)), "replace")
    return w


def _mine(tmp_path: Path, ws: Workspace, extra: list[dict[str, object]] | None = None) -> Path:
    code, out = run("-w", str(ws.root), "features", "list", "--set", "tiny", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["version"] == tiny_set().version
    data.pop("version")
    data["name"] = "mine"
    data["features"] += extra or [
        {"kind": "aggregate", "entity": "merchant", "agg": "count", "window_s": 86_400, "filter": "declined"}
    ]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(data))
    return path


def test_a_defined_set_is_backfilled_trained_on_and_served(ws: Workspace, tmp_path: Path) -> None:
    w = str(ws.root)
    code, out = run("-w", w, "features", "define", str(_mine(tmp_path, ws)))
    assert code == 0 and "Defined feature set 'mine'" in out and "5 features" in out, out
    mine = feature_set("mine", ws.root)
    assert mine.names[-1] == "merchant.count_declined_1d" and mine.names[:4] == tiny_set().names
    code, out = run("-w", w, "features", "define", str(tmp_path / "mine.json"))
    assert code == 0 and "unchanged" in out  # the same definitions again
    code, out = run("-w", w, "features", "backfill", "--set", "mine")
    assert code == 0 and "Backfilled 5 features" in out, out
    split = ["--horizon-days", "10", "--val-days", "7", "--test-days", "7", "--gap-days", "3"]
    code, out = run("-w", w, "train", "--set", "mine", "--model", "gbdt", *split)
    assert code == 0, out
    reg = Registry(ws)
    [mv] = reg.list("fraud-gbdt")
    assert (mv.feature_set, mv.feature_set_version) == ("mine", mine.version)
    reg.promote(mv.ref)  # servable: the workspace defines its set
    scorer = Scorer.open(ws)
    try:
        charge = {k: v for k, v in ws.read("charges").to_pylist()[-1].items() if k != "scenario"}
        decision = scorer.score({**charge, "charge_id": "ch_after_the_log"})
        assert set(decision.features) == set(mine.names) and decision.model == mv.ref
    finally:
        scorer.close(snapshot=False)
    # Redefined with other features: refused without --replace; refused with it while a model on it is served
    # (every server start would fail); once it is archived, replaced, and the old model no longer promotes.
    other = _mine(tmp_path, ws, [{"kind": "aggregate", "entity": "card", "agg": "count", "window_s": 600}])
    code, out = run("-w", w, "features", "define", str(other))
    assert code == 1 and "defines feature set 'mine' already" in out and "--replace" in out
    code, out = run("-w", w, "features", "define", str(other), "--replace")
    assert code == 1 and f"Feature set 'mine' is served: {mv.ref}" in out, out
    assert feature_set("mine", ws.root).version == mine.version  # unchanged
    assert run("-w", w, "models", "promote", mv.ref, "--stage", "archived")[0] == 0
    assert run("-w", w, "features", "define", str(other), "--replace")[0] == 0
    code, out = run("-w", w, "models", "promote", mv.ref)
    assert code == 1 and f"version {mine.version}; this payfm computes version" in out


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"name": "tiny"}, "'tiny' is a set payfm bundles"),
        ({"name": "Bad Name"}, "'name' must be a lower-case word"),
        ({"features": [{"kind": "aggregate", "entity": "card", "agg": "count", "windw_s": 60}]}, "'windw_s'"),
        ({"features": [{"kind": "aggregate", "entity": "card", "agg": "cnt"}]}, "Did you mean 'count'?"),
        ({"features": [{"kind": "request", "type": "amount_usd"}]}, "feature 1"),
        (
            {"features": [{"kind": "aggregate", "entity": "card", "agg": "count", "window_s": 1e400}]},
            "31536000 (365d)",  # a window's real bound (it said 10 years, the offset's)
        ),
        ({"features": [{"kind": "aggregate", "entity": "card", "agg": "count", "offset_s": -1}]}, "10 years"),
        ({"features": []}, "at least one feature"),
        ({"featurez": []}, "unknown field 'featurez'"),
        ({"note": "x"}, "unknown field 'note'"),
    ],
)
def test_a_bad_set_file_is_refused_naming_the_field(
    ws: Workspace, tmp_path: Path, change: dict[str, object], said: str
) -> None:
    data = {**tiny_set().to_json(), "name": "other", **change}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data, default=list))
    code, out = run("-w", str(ws.root), "features", "define", str(path))
    assert code == 1 and said in out and "Traceback" not in out, out
    assert not (ws.root / "features" / "sets" / "other.json").exists()


def test_a_set_file_with_a_byte_order_mark_is_read(ws: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(
        b"\xef\xbb\xbf" + json.dumps({**tiny_set().to_json(), "name": "bom"}, default=list).encode()
    )
    code, out = run("-w", str(ws.root), "features", "define", str(path))
    assert code == 0 and "Defined feature set 'bom'" in out, out


def test_an_unknown_set_names_the_bundled_and_the_workspaces(ws: Workspace) -> None:
    code, out = run("-w", str(ws.root), "features", "list", "--set", "nope")
    assert code == 1 and "Unknown feature set 'nope'" in out and "features define" in out


def test_an_edited_export_is_defined_as_the_docs_teach(ws: Workspace, tmp_path: Path) -> None:
    """docs/features.md: `features list --set tiny --json > mine.json`, edit "name" and remove a feature,
    `features define mine.json`: defined at its definitions' version, with a note that the exported one no
    longer holds. The library still refuses the mismatch (a file is not silently another version)."""
    from payfm.errors import ConfigError
    from payfm.features.definitions import FeatureSet

    code, out = run("features", "list", "--set", "tiny", "--json")
    assert code == 0, out
    data = json.loads(out)
    exported = data["version"]
    data["name"], data["features"] = "edited", data["features"][:-1]
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    code, out = run("-w", str(ws.root), "features", "define", str(path))
    mine = feature_set("edited", ws.root)
    assert code == 0, out
    assert len(mine.features) == len(tiny_set().features) - 1 and mine.version != exported
    assert f"says version '{exported}', written before its features were edited" in out
    assert f"Defined feature set 'edited' version {mine.version}" in out
    with pytest.raises(ConfigError, match=f"'version' is '{exported}', but its definitions give"):
        FeatureSet.from_json(data)


def test_an_edited_definition_under_its_exported_name_is_refused(ws: Workspace, tmp_path: Path) -> None:
    """`list --json` writes each aggregate's generated name; an analyst who edits a window and keeps it
    would define 'card.count_charges_1h' counting two hours, the name every decision gives as a reason.
    Refused, naming the feature and what its definition generates; a name of another form stays free."""
    code, out = run("features", "list", "--set", "tiny", "--json")
    data = json.loads(out)
    data.pop("version")
    data["name"] = "stale"
    i, spec = next((i, f) for i, f in enumerate(data["features"]) if f.get("window_s") == 3600)
    old = spec["name"]
    assert old.endswith("_1h")
    spec["window_s"] = 7200
    path = tmp_path / "stale.json"
    path.write_text(json.dumps(data))
    code, out = run("-w", str(ws.root), "features", "define", str(path))
    said = " ".join(out.split())
    assert code == 1 and "Traceback" not in out
    assert (
        f"Feature {i + 1} ('{old}'): its name has the form of a generated name, but its definition " in said
    )
    assert f"generates '{old[: -len('1h')]}2h'" in said
    assert not (ws.root / "features" / "sets" / "stale.json").exists()
    spec.pop("name")  # the generated name
    path.write_text(json.dumps(data))
    assert run("-w", str(ws.root), "features", "define", str(path))[0] == 0
    assert old[: -len("1h")] + "2h" in feature_set("stale", ws.root).names
    spec["name"] = "card.my_two_hours"  # a name of the analyst's own
    data["name"] = "own"
    path.write_text(json.dumps(data))
    assert run("-w", str(ws.root), "features", "define", str(path))[0] == 0
    assert "card.my_two_hours" in feature_set("own", ws.root).names
