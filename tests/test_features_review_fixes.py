"""Fixes of a review of the feature platform and the registry: an all-time distinct of outcomes' own amounts
on the warm path (and the parity tool's warm-path check), names a set may not take, names with a trailing
newline, and a shadow model the decision service could not serve."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.features import parity, warm
from payfm.features.catalog import define_set, tiny_set
from payfm.features.definitions import Aggregate, Derived, FeatureSet, RequestFeature
from payfm.features.online import OnlineFeatures
from payfm.features.parity import apply_log, workspace_parity
from payfm.features.state import TotalState
from payfm.features.stores import MemoryStore
from payfm.fm.identity import EMBEDDING_PREFIX, SURPRISE_PREFIX
from payfm.registry import FeatureSetMismatchError, Registry, RegistryError
from payfm.training.models import model_class
from streams import random_log

# An outcome's amount_usd is its own amount at its charge's rate: a distinct count of it over refunds or
# fraud disputes counts the amounts refunded or disputed, not the charges'.
OWN = FeatureSet(
    "own_amounts",
    (
        Aggregate("card", "distinct", "amount_usd", source="refunds"),
        Aggregate("merchant", "distinct", "amount_usd", source="refunds"),
        Aggregate("card", "distinct", "amount_usd", source="fraud_disputes"),
        Aggregate("card", "distinct", "amount_usd"),  # charges: their own amounts
    ),
)


def _partial_refunds(seed: int) -> dict[str, pa.Table]:
    """A random log where every refunded charge has two more partial refunds, each of another amount."""
    log = random_log(seed, 400, span_us=6 * 86_400_000_000, n_keys=5)
    refunds = log["refunds"]
    extra = []
    for r in refunds.to_pylist():
        for j, share in ((1, 3), (2, 7)):
            extra.append(
                r
                | {
                    "refund_id": f"{r['refund_id']}_part{j}",
                    "created": r["created"] + timedelta(hours=j),
                    "amount": r["amount"] * share // 10,
                }
            )
    log["refunds"] = pa.concat_tables([refunds, pa.Table.from_pylist(extra, schema=refunds.schema)])
    return log


@pytest.fixture(scope="module")
def partial_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = Workspace.open(tmp_path_factory.mktemp("partial") / "ws", create=True)
    with ws.writer("replace") as w:
        for table, rows in _partial_refunds(3).items():
            w.write(table, rows)
    return ws


def _columnar_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm-up must build the state column by column: applying charges one by one fails the test."""

    def refuse(*args: Any) -> None:
        raise AssertionError("the warm-up applied the charges one by one")

    monkeypatch.setattr(OnlineFeatures, "update_many", refuse)


@pytest.mark.parametrize("source", ["refunds", "fraud_disputes"])
def test_a_warm_up_counts_outcomes_own_amounts_in_distinct_as_event_by_event(
    partial_ws: Workspace, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """The value sets equal, not only their sizes: a charge's one fraud dispute of part of its amount has
    the size of its charge's amount's set, but not its value."""
    fset = FeatureSet(
        "own", tuple(Aggregate(e, "distinct", "amount_usd", source=source) for e in ("card", "merchant"))
    )
    fast = OnlineFeatures(fset)
    with monkeypatch.context() as m:
        _columnar_only(m)
        apply_log(fast, partial_ws)  # a fresh in-memory state: built column by column
    monkeypatch.setattr(parity, "_warm_columnar", lambda *args: False)
    slow = OnlineFeatures(fset)
    apply_log(slow, partial_ws)  # event by event
    a, b = fast.store, slow.store
    assert isinstance(a, MemoryStore) and isinstance(b, MemoryStore)
    assert a.states.keys() == b.states.keys()
    partial = 0
    for key, st in a.states.items():
        other = b.states[key]
        assert isinstance(st, TotalState) and isinstance(other, TotalState)
        assert st.seen == other.seen, key
        partial += any(len(s) > 1 for s in st.seen)
    assert partial > 3  # not vacuous: keys with several amounts refunded or disputed
    probes = [
        {"charge_id": f"probe_{fp}", "created_us": 2**62, "card_fingerprint": fp, "merchant_id": "mer_0"}
        for fp in sorted({k[1] for k in a.states if isinstance(k[1], str) and k[1].startswith("fp_")})
    ]
    assert probes and [fast.features(p) for p in probes] == [slow.features(p) for p in probes]


def test_parity_compares_the_warm_path_too(partial_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    _columnar_only(monkeypatch)  # the charges of the log's end are read after a columnar warm-up
    report = workspace_parity(partial_ws, OWN)
    assert report.charges == 400
    assert report.total_mismatches == 0, report.examples


def test_parity_reports_a_warm_path_difference(
    partial_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm-up that loses what the events before the cut added shows as mismatches, the example giving
    the warmed value."""
    monkeypatch.setattr(warm, "states", lambda *args: {})
    report = workspace_parity(partial_ws, OWN)
    assert report.mismatches["card.distinct_amount_usd_all"] > 0
    _, offline, online = report.examples["card.distinct_amount_usd_all"]
    assert offline is not None and online is not None and online < offline


def test_the_columnar_backfill_counts_distinct_charge_amounts_as_duckdb() -> None:
    """A distinct of amount_usd over charges stopped the default engine with a KeyError."""
    from payfm.features.offline import compute
    from streams import connect

    fset = FeatureSet(
        "amounts",
        (
            Aggregate("card", "distinct", "amount_usd"),
            Aggregate("card", "distinct", "amount_usd", window=timedelta(days=1)),
        ),
    )
    log = random_log(1, 300)
    columnar = compute(connect(log), fset, engine="columnar")
    assert columnar == compute(connect(log), fset, engine="duckdb")
    assert max(columnar["card.distinct_amount_usd_all"].to_pylist()) > 5


# ---- names a feature may not take -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["charge_id", "created", "is_fraud", "label_time", "mature", "scenario", "fm.emb_0", "fm.mine"]
)
def test_a_feature_named_as_a_column_beside_the_features_is_refused(name: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"^Feature '{name}': a feature's name must not .* Got '{name}'\.$"
    ):
        FeatureSet("mine", (RequestFeature(name, "amount_usd"),))
    data = {"name": "mine", "features": [{"kind": "request", "name": name, "type": "amount_usd"}]}
    with pytest.raises(ConfigError, match=f"Feature '{name}'"):
        FeatureSet.from_json(data)
    FeatureSet("mine", (RequestFeature(f"{name.replace('.', '_')}_usd", "amount_usd"),))  # a name beside it


def test_the_foundation_models_outputs_are_the_names_refused() -> None:
    from payfm.features.names import FM_PREFIX

    assert EMBEDDING_PREFIX.startswith(FM_PREFIX) and SURPRISE_PREFIX.startswith(FM_PREFIX)
    with pytest.raises(ConfigError, match="foundation model"):
        FeatureSet("mine", (Derived(f"{SURPRISE_PREFIX}x", "diff", ("a", "b")),))


@pytest.mark.parametrize(
    "feature",
    [
        Aggregate("card", "count", window=timedelta(hours=2), name="card.count_charges_1h\n"),
        RequestFeature("amount\n", "amount_usd"),
    ],
    ids=["generated-form", "request"],
)
def test_a_name_with_a_line_break_is_refused(feature: Aggregate | RequestFeature) -> None:
    shown = feature.name.replace("\n", "\\\\n")
    with pytest.raises(ConfigError, match=f"Feature '{shown}': a feature's name must be lower-case words"):
        FeatureSet("mine", (feature,))


def test_a_model_name_with_a_line_break_is_refused(tmp_path: Path) -> None:
    reg = Registry(Workspace.open(tmp_path, create=True))
    with pytest.raises(RegistryError, match=r"Got 'fraud-x\\n'"):
        reg.register(_fitted(tiny_set()), name="fraud-x\n", task="fraud", fset=tiny_set())  # type: ignore[arg-type]
    assert reg.list() == []


# ---- a shadow model is one a server can serve ------------------------------------------------------------


def _fitted(fset: FeatureSet) -> object:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, len(fset.names)))
    y = (X[:, 0] + rng.normal(size=400) > 1.5).astype(int)
    return model_class("lr")(seed=0, calibration="none").fit(X, y, feature_names=fset.names)


def _served_on_mine(tmp_path: Path) -> tuple[Workspace, Registry, str, FeatureSet]:
    """A workspace defining set 'mine' and a fraud model registered on it (a candidate)."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    mine = FeatureSet("mine", tiny_set().features)
    define_set(ws, mine)
    reg = Registry(ws)
    return ws, reg, reg.register(_fitted(mine), name="fraud-mine", task="fraud", fset=mine).ref, mine  # type: ignore[arg-type]


def test_a_model_whose_set_was_redefined_is_not_made_shadow(tmp_path: Path) -> None:
    ws, reg, ref, mine = _served_on_mine(tmp_path)
    define_set(ws, FeatureSet("mine", mine.features[:-1]), replace=True)  # a candidate does not stop it
    with pytest.raises(FeatureSetMismatchError, match=f"version {mine.version}; this payfm computes version"):
        reg.set_stage(ref, "shadow")
    assert reg.get(ref).stage == "candidate"
    from click.testing import CliRunner

    from payfm.cli.main import cli

    out = CliRunner().invoke(cli, ["-w", str(ws.root), "models", "promote", ref, "--stage", "shadow"])
    assert out.exit_code == 1 and "Traceback" not in out.output and reg.get(ref).stage == "candidate"


def test_a_model_whose_foundation_model_is_missing_is_not_made_shadow(tmp_path: Path) -> None:
    from payfm.registry import FoundationModelMismatchError

    _, reg, ref, _ = _served_on_mine(tmp_path)
    entry = reg.get(ref).entry | {"foundation_model": {"checkpoint": "fm/gone", "content_hash": "ab" * 32}}
    with reg._db() as con:  # (as registered with a checkpoint since removed)
        con.execute("UPDATE versions SET entry = ? WHERE name = 'fraud-mine'", (json.dumps(entry),))
    with pytest.raises(FoundationModelMismatchError, match="which is missing"):
        reg.set_stage(ref, "shadow")
    assert reg.get(ref).stage == "candidate"


def _registry_is_locked(reg: Registry) -> bool:
    con = sqlite3.connect(reg.root / "registry.db", timeout=0, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        con.close()


def _lock_seen(monkeypatch: pytest.MonkeyPatch, reg: Registry, owner: Any, attr: str) -> list[bool]:
    """Whether the registry was locked at each call of ``owner.attr`` (called through)."""
    seen: list[bool] = []
    original = getattr(owner, attr)

    def spy(*args: Any) -> Any:
        seen.append(_registry_is_locked(reg))
        return original(*args)

    monkeypatch.setattr(owner, attr, spy)
    return seen


@pytest.mark.parametrize("stage", ["production", "shadow"])
def test_a_promotion_checks_the_set_under_the_registrys_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    """A redefinition (define_set with replace, which holds the lock while it checks and writes) cannot
    slip between a promotion's check of the set's definitions and its write."""
    _, reg, ref, _ = _served_on_mine(tmp_path)
    seen = _lock_seen(monkeypatch, reg, Registry, "check_servable_features")
    assert reg.set_stage(ref, stage).stage == stage
    assert seen == [True]


def test_a_redefinition_checks_and_writes_under_the_registrys_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import payfm.events.workspace as workspace

    ws, reg, _, mine = _served_on_mine(tmp_path)
    seen = _lock_seen(monkeypatch, reg, workspace, "atomic_write_bytes")
    assert define_set(ws, FeatureSet("mine", mine.features[:-1]), replace=True)[1]
    assert seen == [True]
