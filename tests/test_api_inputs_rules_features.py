"""The rules, features and workspace functions check what a notebook passes them (a review of the Python
API): a workspace's path, ISO text for ``as_of``, days as an int for ``horizon``, a pandas DataFrame, a rule's
text or a set's name where the compiled object is expected, a Path for rule text, a BIN as an int, a column
tuple or a misspelled column, a table name without its 's' each gave an AttributeError, a TypeError or
pyarrow's schema dump from deep inside. Each is now a ConfigError naming the parameter, the function, what it
takes and what it got; and the objects a notebook prints say what they are."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import payfm.features.offline as offline
from payfm.errors import ConfigError
from payfm.events.validate import ValidationError, validate_events
from payfm.events.workspace import Workspace
from payfm.features.catalog import define_set, feature_set, tiny_set
from payfm.features.definitions import FeatureSet
from payfm.features.offline import backfill
from payfm.features.online import OnlineFeatures
from payfm.features.training_set import backfill_path, build_training_set, load_backfill
from payfm.rules import lists, rulesets
from payfm.rules.backtest import backtest
from payfm.synth import WorldConfig, generate_world
from payfm.training.labels import fraud_labels

START = datetime(2026, 1, 1, tzinfo=UTC)
RULE = "big: block if :amount_usd: > 1000"


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A small world, its tiny set backfilled once, a list of BINs."""
    ws = Workspace.open(tmp_path_factory.mktemp("inputs") / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=1_500, days=3, seed=11, start=START)))
    backfill(ws, tiny_set())
    lists.create_list(ws, "bad_bins", "bin", author="ana")
    return ws


def _said(who: str, path: str) -> str:
    return (
        f"The 'ws' of {who} must be what Workspace.open(path) gives. Got the str {path!r}: open it first, "
        f"ws = Workspace.open({path!r})."
    )


# ---- 1. a workspace's path where a Workspace is expected ------------------------------------------------
@pytest.mark.parametrize(
    ("who", "call"),
    [
        ("rulesets.compile_text", lambda p: rulesets.compile_text(p, RULE)),
        ("rulesets.check", lambda p: rulesets.check(p, RULE)),
        ("rulesets.save", lambda p: rulesets.save(p, RULE, author="ana")),
        ("rulesets.load_active", lambda p: rulesets.load_active(p)),
        ("rulesets.history", lambda p: rulesets.history(p)),
        ("rulesets.activate", lambda p: rulesets.activate(p, 1)),
        ("lists.create_list", lambda p: lists.create_list(p, "x", "bin")),
        ("lists.add_values", lambda p: lists.add_values(p, "bad_bins", ["411112"])),
        ("lists.remove_values", lambda p: lists.remove_values(p, "bad_bins", ["411112"])),
        ("lists.list_values", lambda p: lists.list_values(p, "bad_bins")),
        ("lists.all_lists", lambda p: lists.all_lists(p)),
        ("build_training_set", lambda p: build_training_set(p, tiny_set())),
        ("load_backfill", lambda p: load_backfill(p, tiny_set())),
        ("backfill_path", lambda p: backfill_path(p, tiny_set())),
    ],
)
def test_a_path_for_a_workspace_names_the_function_called(who: str, call: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "ws")
    with pytest.raises(ConfigError) as e:
        call(path)
    assert str(e.value) == _said(who, path)


def test_feature_set_takes_the_workspace_itself(ws: Workspace) -> None:
    define_set(ws, FeatureSet("mine", tiny_set().features[:2]))
    assert feature_set("mine", ws) == feature_set("mine", ws.root) == feature_set("mine", str(ws.root))
    with pytest.raises(ConfigError, match=r"The 'root' of feature_set must be a Workspace or its folder"):
        feature_set("mine", 3)  # type: ignore[arg-type]


# ---- 2. as_of as ISO text, horizon as an int ------------------------------------------------------------
def test_as_of_takes_iso_text_as_the_backtest_does(ws: Workspace, tmp_path: Path) -> None:
    at = datetime(2026, 1, 3, tzinfo=UTC)
    con = ws.connect()
    try:
        assert fraud_labels(con, "2026-01-03").equals(fraud_labels(con, at))
    finally:
        con.close()
    _, as_text = build_training_set(ws, tiny_set(), as_of="2026-01-03", out=tmp_path / "a.training.parquet")
    _, as_time = build_training_set(ws, tiny_set(), as_of=at, out=tmp_path / "b.training.parquet")
    assert as_text.equals(as_time)
    with pytest.raises(ConfigError, match=re.escape("The 'as_of' of build_training_set must be an ISO date")):
        build_training_set(ws, tiny_set(), as_of="03/01/2026", out=tmp_path / "c.training.parquet")


def test_a_horizon_in_days_as_a_number_is_named(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        build_training_set(ws, tiny_set(), horizon=60, out=tmp_path / "t.training.parquet")  # type: ignore[arg-type]
    assert str(e.value) == (
        "The 'horizon' of build_training_set must be a positive timedelta. Got the int 60: for days, "
        "timedelta(days=60)."
    )
    ruleset = rulesets.compile_text(ws, RULE, "tiny")
    with pytest.raises(
        ConfigError, match=r"The 'horizon' of backtest must be a positive timedelta\. Got the int 30"
    ):
        backtest(ws, ruleset, tiny_set(), horizon=30)  # type: ignore[arg-type]


# ---- 3. a pandas DataFrame where an Arrow table is expected ---------------------------------------------
def test_backtest_scores_and_validate_events_take_a_pandas_dataframe(ws: Workspace) -> None:
    charges = ws.read("charges", ["charge_id"]).column("charge_id").to_pylist()
    scores = pa.table(
        {
            "charge_id": charges,
            "risk_score": [float(i % 100) for i in range(len(charges))],
            "risk_level": ["normal"] * len(charges),
        }
    )
    ruleset = rulesets.compile_text(ws, "hot: block if :risk_score: > 90", "tiny")
    as_arrow = backtest(ws, ruleset, tiny_set(), scores=scores)
    as_pandas = backtest(ws, ruleset, tiny_set(), scores=scores.to_pandas())
    [a], [b] = as_arrow.rules, as_pandas.rules  # (dollar sums: DuckDB adds in any order)
    assert (b.matched, b.decided) == (a.matched, a.decided) and a.matched > 0
    assert {k: t.count for k, t in b.outcomes.items()} == {k: t.count for k, t in a.outcomes.items()}
    with pytest.raises(ConfigError, match=r"The 'scores' of backtest must be an Arrow table .* Got a list"):
        backtest(ws, ruleset, tiny_set(), scores=[{"charge_id": "x"}])

    refunds = ws.read("refunds")
    assert refunds.num_rows > 0
    assert validate_events("refunds", refunds.to_pandas()).equals(validate_events("refunds", refunds))
    mixed = refunds.to_pandas()
    mixed["charge_id"] = mixed["charge_id"].astype(object)
    mixed.loc[0, "charge_id"] = 5
    with pytest.raises(ValidationError, match=r"column 'charge_id': expected values of one type"):
        validate_events("refunds", mixed)
    with pytest.raises(ConfigError, match=r"The 'table' of validate_events must be an Arrow table"):
        validate_events("refunds", [{"refund_id": "re_1"}])


# ---- 4. arguments of another kind -----------------------------------------------------------------------
def test_a_name_or_text_where_the_compiled_object_is_expected(ws: Workspace) -> None:
    ruleset = rulesets.compile_text(ws, RULE, "tiny")
    with pytest.raises(ConfigError) as e:
        backtest(ws, ruleset, "tiny")  # type: ignore[arg-type]
    assert str(e.value) == (
        "The 'fset' of backtest must be a FeatureSet. Got the str 'tiny': pass feature_set('tiny', ws) "
        "(payfm.features.catalog)."
    )
    with pytest.raises(
        ConfigError, match=r"The 'ruleset' of backtest must be a compiled Ruleset\. Got a str"
    ):
        backtest(ws, RULE, tiny_set())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=re.escape("rulesets.compile_text(ws, text) gives one")):
        backtest(ws, RULE, tiny_set())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"The 'baseline' of backtest must be a compiled Ruleset"):
        backtest(ws, ruleset, tiny_set(), baseline=3)  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=r"The 'fset' of build_training_set must be a FeatureSet\. Got the str"
    ):
        build_training_set(ws, "default")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"The 'fset' of OnlineFeatures must be a FeatureSet\. Got the str"):
        OnlineFeatures("default")  # type: ignore[arg-type]


def test_a_rules_file_path_where_its_text_is_expected(ws: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "x.rules"
    path.write_text(RULE)
    with pytest.raises(ConfigError) as e:
        rulesets.compile_text(ws, path)  # type: ignore[arg-type]
    assert str(e.value) == (
        f"The 'text' of rulesets.compile_text must be the rules' text (a str). Got the PosixPath '{path}': "
        f"pass the file's text, Path('{path}').read_text()."
    )
    assert [r.name for r in rulesets.compile_text(ws, path.read_text()).rules] == ["big"]
    with pytest.raises(ConfigError, match=r"The 'text' of rulesets\.save must be the rules' text"):
        rulesets.save(ws, path, author="ana")  # type: ignore[arg-type]


def test_a_bin_given_as_a_number(ws: Workspace) -> None:
    with pytest.raises(ConfigError) as e:
        lists.add_values(ws, "bad_bins", [411112])  # type: ignore[list-item]
    assert str(e.value) == (
        "The 'values' of lists.add_values (list 'bad_bins') must be texts, e.g. \"411112\" for a BIN. Got "
        'the int 411112: write it as text, "411112".'
    )
    with pytest.raises(ConfigError, match=r"Got the int \[card number removed\] \(value 2 of 2\)"):
        lists.add_values(ws, "bad_bins", ["411112", 4111111111111111])  # type: ignore[list-item]
    assert lists.list_values(ws, "bad_bins") == []  # nothing written
    assert lists.add_values(ws, "bad_bins", ["411112"]) == 1


def test_backfill_checks_chunk_rows_and_memory_limit_before_any_work(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_work(*_: object) -> None:
        raise AssertionError("the backfill ran")

    monkeypatch.setattr(offline, "_backfill", no_work)
    with pytest.raises(ConfigError) as e:
        backfill(ws, tiny_set(), chunk_rows=0)
    assert (
        str(e.value)
        == "The 'chunk_rows' of backfill must be an integer >= 1 (rows written at a time). Got 0."
    )
    with pytest.raises(
        ConfigError, match=r"The 'chunk_rows' of backfill must be an integer >= 1 .* Got a str"
    ):
        backfill(ws, tiny_set(), chunk_rows="1000")  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as e:
        backfill(ws, tiny_set(), memory_limit=6)  # type: ignore[arg-type]
    assert str(e.value) == (
        "The 'memory_limit' of backfill must be a size text such as '6GB' or '512MiB' (--memory-limit). "
        "Got the int 6."
    )
    with pytest.raises(ConfigError, match=r"The 'memory_limit' of build_training_set must be a size text"):
        build_training_set(ws, tiny_set(), memory_limit=6)  # type: ignore[arg-type]


# ---- 5. column lists ------------------------------------------------------------------------------------
def test_column_lists_take_any_sequence_and_name_unknown_columns(ws: Workspace) -> None:
    assert ws.read("charges", ("amount",)).column_names == ["amount"]
    assert ws.read("charges", ["amount"]).equals(ws.read("charges", ("amount",)))
    with pytest.raises(ConfigError) as e:
        ws.read("charges", ["amout", "created"])
    assert str(e.value) == (
        "The 'columns' of Workspace.read must name columns of table 'charges'. Got 'amout' (did you mean "
        "'amount'?)."
    )
    with pytest.raises(ConfigError, match=re.escape("Got the str 'amount': for one column, ['amount'].")):
        ws.read("charges", "amount")
    feats = load_backfill(ws, tiny_set(), ("charge_id", "card.count_charges_1h"))
    assert feats.column_names == ["charge_id", "card.count_charges_1h"]
    with pytest.raises(ConfigError) as e:
        load_backfill(ws, tiny_set(), ["nope", "card.count_charge_1h"])
    assert str(e.value) == (
        "The 'columns' of load_backfill must name columns of the backfill of set 'tiny'. Got 'nope', "
        "'card.count_charge_1h' (did you mean 'card.count_charges_1h'?)."
    )


# ---- 6. an unknown table name ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda ws: ws.read("charge"),
        lambda ws: ws.count("charge"),
        lambda ws: validate_events("charge", pa.table({"charge_id": ["ch_1"]})),
        lambda ws: ws.write_stream([("charge", pa.table({"charge_id": ["ch_1"]}))]),
    ],
)
def test_an_unknown_table_is_a_config_error_with_a_close_match(ws: Workspace, call: Any) -> None:
    with pytest.raises(ConfigError) as e:
        call(ws)
    assert isinstance(e.value, ValueError)  # (caught as before)
    assert str(e.value) == (
        "Unknown event table 'charge' (did you mean 'charges'?). Expected one of charges, disputes, "
        "early_fraud_warnings, refunds, reviews."
    )


# ---- 7. what a notebook prints --------------------------------------------------------------------------
def test_reprs_say_what_the_objects_are(ws: Workspace) -> None:
    assert repr(ws) == f"Workspace({str(ws.root)!r})"
    fs = tiny_set()
    assert repr(OnlineFeatures(fs)) == f"OnlineFeatures(tiny@{fs.version}, memory store)"
    ruleset = rulesets.compile_text(ws, f"{RULE}\nreview if :amount_usd: > 500")
    assert repr(ruleset) == "Ruleset(2 rules: big, review_line_2; feature set 'default')"
    many = "\n".join(f"r{i}: block if :amount_usd: > {i}" for i in range(7))
    assert repr(rulesets.compile_text(None, many, "tiny")) == (
        "Ruleset(7 rules: r0, r1, r2, r3, r4, ... (2 more); feature set 'tiny')"
    )


def test_a_dataframe_arrow_cannot_convert_is_named_and_its_cells_masked() -> None:
    """arrow_table quoted Arrow's message, which may quote a cell: a card number in it is masked."""
    import pandas as pd

    from payfm.inputs import arrow_table

    df = pd.DataFrame({"amount": [1, "4111111111111111"]})
    with pytest.raises(ConfigError) as e:
        arrow_table(df, "scores", "backtest")
    assert str(e.value).startswith("The 'scores' of backtest: a pandas DataFrame Arrow cannot convert (")
    assert "4111111111111111" not in str(e.value)
