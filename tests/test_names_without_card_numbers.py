"""No name payfm stores or prints holds a card number, and no usage error echoes one (found by a security
audit: a feature named amt_4111111111111111 reached the registry, every decision's reasons and the decision
log; a checkpoint named 4111111111111111 the registry; click's usage errors quoted the value given)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError, PayfmError
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.features.definitions import FeatureSet, RequestFeature, refuse_card_numbers
from payfm.fm.identity import check_name
from payfm.registry import Registry
from payfm.training.models import model_class

PAN = "4111111111111111"


def test_a_feature_or_a_feature_set_named_with_a_card_number_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"feature 1: a feature name must not hold a card number") as e:
        refuse_card_numbers(FeatureSet("mine", (RequestFeature(f"amt_{PAN}", "amount_usd"),)))
    assert PAN not in str(e.value)
    with pytest.raises(ConfigError, match=r"A feature set's name must not hold a card number") as e:
        refuse_card_numbers(FeatureSet(f"set{PAN}", tiny_set().features))
    assert PAN not in str(e.value)
    # a timestamp or an epoch is no card number, even when it passes Luhn (no brand starts with 20 or 1)
    refuse_card_numbers(
        FeatureSet("fraud_20261205143005", (RequestFeature("amt_1767226127770", "amount_usd"),))
    )
    f = tmp_path / "pan.json"
    f.write_text(json.dumps({**tiny_set().to_json(), "name": f"set_{PAN}"}))
    said = CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), "features", "define", str(f)])
    assert said.exit_code == 1 and "must not hold a card number" in said.output and PAN not in said.output
    # a set stored before the check still loads (its models keep serving): only new definitions are refused
    FeatureSet(f"set{PAN}", tiny_set().features)


def test_a_checkpoint_or_a_model_named_with_a_card_number_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        check_name(PAN, "--name")
    assert PAN not in str(e.value) and "card number" in str(e.value)
    with pytest.raises(ConfigError, match="card number"):  # even one stored before: a PAN is the leak itself
        check_name(PAN, "--name", exists=True)
    assert check_name("cardfm_20261205143005") == "cardfm_20261205143005"  # a timestamp: no card number
    for name in (f"x0{PAN}", "m6759000000000000", "m2200000000000004"):  # a leading zero; Maestro, Mir
        with pytest.raises(ConfigError, match="card number"):
            check_name(name)
    reg = Registry(Workspace.open(tmp_path / "ws", create=True))
    fs = tiny_set()
    X = np.random.default_rng(0).normal(size=(200, len(fs.names)))
    m = model_class("lr")(calibration="none").fit(X, (X[:, 0] > 0).astype(int), feature_names=fs.names)
    with pytest.raises(PayfmError) as e:
        reg.register(m, name=f"fraud-{PAN}", task="fraud", fset=fs)
    assert PAN not in str(e.value) and reg.list() == []


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--model", PAN],  # a choice
        ["generate", "--charges", f"{PAN}x"],  # an integer
        ["serve", "--port", PAN],  # a range
        ["sql", "--format", PAN, "SELECT 1"],
        ["summary", f"--bogus-{PAN}"],  # an unknown option
        [f"--{PAN}"],  # the root's own options, parsed before any command
        ["fm", "pretrain", "--name", "4111 1111 1111 1111"],  # a callback's message
    ],
)
def test_usage_errors_never_echo_a_card_number(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), *args])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "[card number removed]" in said or "must not hold a card number (PAN)" in said, said
    assert "4111" not in result.output, result.output
    assert "Traceback" not in result.output


def test_payfm_sql_never_prints_a_card_number_a_query_writes(tmp_path: Path) -> None:
    """The tables hold none; a query holding one is refused, and the rows a table shows are scanned (a
    number put together from pieces); values are printed as text, never as markup."""
    ws = tmp_path / "ws"
    Workspace.open(ws, create=True)
    run = CliRunner().invoke
    refused = run(cli, ["-w", str(ws), "sql", f"SELECT '{PAN}' AS c"])
    assert (
        refused.exit_code == 1
        and "must not hold a card number" in refused.output
        and PAN not in refused.output
    )
    pieces = "SELECT '4111' || '1111' || '1111' || '1111' AS c, '[red]acct' AS m"
    shown = run(cli, ["-w", str(ws), "sql", pieces])
    assert shown.exit_code == 0 and "[card number removed]" in shown.output and PAN not in shown.output
    assert "[red]acct" in shown.output  # as written, not as markup
    # a computed epoch in milliseconds, Luhn-valid or not, is no card number (no brand's prefix)
    zwsp = " || chr(8203) || ".join(["'4111'", *["'1111'"] * 3])  # in a list str() escaped the separators
    listed = run(cli, ["-w", str(ws), "sql", f"SELECT [{zwsp}, 'ok'] AS l"])
    assert '["[card number removed]", "ok"]' in listed.output and "4111" not in listed.output
    zero = run(cli, ["-w", str(ws), "sql", "SELECT '0' || '4111' || '1111' || '1111' || '1111' AS c"])
    assert "[card number removed]" in zero.output and "04111" not in zero.output  # a leading zero
    epochs = run(cli, ["-w", str(ws), "sql", "SELECT 1767226127770 + range AS t FROM range(20)"])
    assert epochs.exit_code == 0 and "[card number removed]" not in epochs.output
    assert all(str(1767226127770 + i) in epochs.output for i in range(20))
    wide = ", ".join(f"{i} AS c{i}" for i in range(30))  # too many columns for a table: one block per row
    markup = run(cli, ["-w", str(ws), "sql", f'SELECT 1 AS "[/x]", {wide} WHERE false'])  # no rows: names
    assert markup.exit_code == 0 and "[/x]" in markup.output and "Traceback" not in markup.output


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_payfm_sql_scans_every_row_it_prints_as_csv_or_json(tmp_path: Path, fmt: str) -> None:
    """Every row of a CSV or JSON result is scanned, not only the rows a table shows: a number put
    together from pieces in row 500 prints removed, the rest of the result as the query computes it."""
    ws = tmp_path / "ws"
    Workspace.open(ws, create=True)
    query = (
        "SELECT range AS i, CASE WHEN range = 500 THEN '4111' || '1111' || '1111' || '1111'"
        " ELSE 'v' || range END AS c, 1767226127770 + range AS t FROM range(1000)"
    )
    out = CliRunner().invoke(cli, ["-w", str(ws), "sql", query, "--format", fmt])
    assert out.exit_code == 0, out.output
    assert "4111" not in out.output and out.stdout.count("[card number removed]") == 1
    assert out.stderr.startswith("note: 1 value printed with [card number removed]")  # never silently
    lines = out.stdout.splitlines()
    if fmt == "csv":
        assert lines[0] == '"i","c","t"' and lines[501] == '500,"[card number removed]",1767226128270'
        assert lines[2] == '1,"v1",1767226127771'
    else:
        rows = [json.loads(line) for line in lines]
        assert rows[500] == {"i": 500, "c": "[card number removed]", "t": 1767226128270}
        assert rows[1] == {"i": 1, "c": "v1", "t": 1767226127771} and len(rows) == 1000
