"""The CLI is a thin edge: help that teaches, one-line errors with exit 1, no tracebacks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from factories import charges
from payfm.cli.main import cli
from payfm.events.schema import TABLES
from payfm.events.workspace import Workspace


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_help_lists_every_command_with_one_line() -> None:
    code, out = run("--help")
    assert code == 0
    for command in ("generate", "import", "sql", "summary", "demo"):
        lines = [line for line in out.splitlines() if line.strip().startswith(command + " ")]
        assert len(lines) == 1 and len(lines[0].split()) > 2, f"'{command}' has no one-line help"


def _commands(
    group: click.Group, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def test_every_option_says_what_it_does() -> None:
    """`--help` teaches: every option of every command has a description, not just a name and a type."""
    missing = [
        f"payfm {' '.join(path)} {param.opts[0]}"
        for path, command in _commands(cli)
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip()
    ]
    assert missing == [], f"options without a help text: {missing}"


def test_the_workspace_option_after_the_command_says_where_it_goes(tmp_path: Path) -> None:
    for args, command in (
        (["summary", "-w", "ws"], "summary"),
        (["features", "list", "--workspace", "ws"], "features list"),
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2
        assert f"The workspace goes before the command: payfm -w DIR {command} ..." in result.output
    result = CliRunner().invoke(cli, ["summary", "-x"])  # any other unknown option: click's own message
    assert (
        result.exit_code == 2 and "No such option '-x'." in result.output and "workspace" not in result.output
    )
    code, out = run("--help")
    assert code == 0 and "goes before the command" in out


def test_sql_help_names_every_table() -> None:
    code, out = run("sql", "--help")
    assert code == 0
    for table in TABLES:
        assert table in out, f"payfm sql --help does not name the table '{table}'"


def test_import_prints_the_columns_it_does_not_store(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sample = pq.read_table(Path(__file__).parent / "data" / "sparkov_sample.parquet")
    source = tmp_path / "sample.parquet"
    pq.write_table(sample.append_column("loyalty_tier", pa.array(["gold"] * sample.num_rows)), source)
    code, out = run("-w", str(tmp_path / "ws"), "import", str(source), "--mapping", "sparkov")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].endswith("384 charges, 78 disputes")
    # the mapping's `delay: 30d` dates the last month's disputes after the file's last charge: said
    assert lines[1].startswith("labels[0]: 32 outcomes dated after the file's last charge (2023-03-25T07:30")
    assert lines[2].startswith("Dropped by the mapping, not stored (15 columns): ssn, first, last, ")
    assert lines[3] == "Not in the mapping, not stored (1 column): loyalty_tier"
    # imported again, nothing is written: no late outcome is said of the ones left out
    code, out = run(
        "-w", str(tmp_path / "ws"), "import", str(source), "--mapping", "sparkov", "--skip-existing"
    )
    assert code == 0, out
    assert out.splitlines()[0].endswith("0 charges, 0 disputes")
    assert "Left out (--skip-existing): 384 rows" in out and "dated after the file's last charge" not in out


def test_skip_existing_counts_the_late_outcomes_it_writes(tmp_path: Path) -> None:
    """A file whose later half is new: of its late disputes, those of the charges written are said."""
    import pyarrow.parquet as pq

    from payfm.events.importer import import_file
    from payfm.events.workspace import Workspace

    sample = pq.read_table(Path(__file__).parent / "data" / "sparkov_sample.parquet")
    first, whole = tmp_path / "first.parquet", tmp_path / "whole.parquet"
    pq.write_table(sample, whole)
    fresh = import_file(Workspace.open(tmp_path / "alone", create=True), whole, "sparkov")
    assert fresh.labels_after_file == {"labels[0]": 32}  # the disputes of the file's last month
    for held, late in ((slice(0, 200), {"labels[0]": 32}), (slice(200, None), {})):
        pq.write_table(sample[held], first)
        ws = Workspace.open(tmp_path / f"ws{held.start}", create=True)
        import_file(ws, first, "sparkov")
        again = import_file(ws, whole, "sparkov", skip_existing=True)
        assert again.rows["charges"] == sample.num_rows - len(sample[held])
        # the late disputes are of the later rows: said when those are written, not when they were held
        assert again.labels_after_file == late


def test_training_set_horizon_takes_fractional_days(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    run("-w", ws, "generate", "--charges", "2000", "--days", "4", "--seed", "3")
    assert run("-w", ws, "features", "backfill", "--set", "tiny")[0] == 0
    code, out = run("-w", ws, "features", "training-set", "--set", "tiny", "--horizon-days", "0.5")
    assert code == 0 and "(horizon 0.5 d)" in out, out
    assert "no label is mature" not in out and "'scenario' is the synthetic world's ground truth" in out
    code, out = run("-w", ws, "features", "training-set", "--set", "tiny", "--horizon-days", "30")
    assert code == 0 and " 0 mature labels" in out and "warning: no label is mature" in out, out
    bad = CliRunner().invoke(
        cli, ["-w", ws, "features", "training-set", "--set", "tiny", "--horizon-days", "0"]
    )
    assert bad.exit_code == 2 and "--horizon-days" in bad.output


def test_generate_errors_name_the_options(tmp_path: Path) -> None:
    code, out = run("-w", str(tmp_path / "ws"), "generate", "--days", "0")
    assert code == 1 and "--days must be an integer >= 1. Got 0." in out and "WorldConfig" not in out
    code, out = run("-w", str(tmp_path / "ws"), "generate", "--mix", "stolen_card=0")
    assert code == 1 and "--mix must have a positive total weight" in out
    result = CliRunner().invoke(cli, ["-w", str(tmp_path), "features", "training-set", "--out", "ts.csv"])
    assert result.exit_code == 2 and "ending in .parquet. Got 'ts.csv'" in result.output


def test_missing_workspace_is_one_clean_error(tmp_path: Path) -> None:
    code, out = run("--workspace", str(tmp_path / "none"), "sql", "SELECT 1")
    assert code == 1
    assert "No payfm workspace at" in out
    assert "Traceback" not in out


def test_sql_prints_csv_and_refuses_writes(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path, create=True)
    with ws.writer() as w:
        w.write("charges", charges(4))
    code, out = run(
        "-w", str(tmp_path), "sql", "SELECT charge_id, amount FROM charges ORDER BY 1", "--format", "csv"
    )
    assert code == 0
    assert out.splitlines() == [
        '"charge_id","amount"',
        '"ch_000000",1000',
        '"ch_000001",1001',
        '"ch_000002",1002',
        '"ch_000003",1003',
    ]
    code, out = run("-w", str(tmp_path), "sql", "DELETE FROM charges")
    assert code == 1 and "read-only" in out and "Traceback" not in out
    for statement, said in (("INSTALL httpfs", "Got an INSTALL statement"), ("attach 'x.db'", "an ATTACH")):
        code, out = run("-w", str(tmp_path), "sql", statement)
        assert code == 1 and said in out
    assert ws.count("charges") == 4


def test_sql_csv_holds_lists_as_json_and_json_lines_are_strict(tmp_path: Path) -> None:
    import json

    ws = Workspace.open(tmp_path, create=True)
    with ws.writer() as w:
        w.write("charges", charges(3))
    query = "SELECT 'x' AS k, list(amount ORDER BY amount) AS amounts, {'a': 1} AS s, 'nan'::DOUBLE AS r"
    code, out = run("-w", str(tmp_path), "sql", query + " FROM charges", "--format", "csv")
    assert code == 0, out
    assert out.splitlines() == ['"k","amounts","s","r"', '"x","[1000, 1001, 1002]","{""a"": 1}",nan']
    query += ", 'inf'::DOUBLE AS i"
    code, out = run("-w", str(tmp_path), "sql", query + " FROM charges", "--format", "json")
    assert code == 0
    row = json.loads(out, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert row == {"k": "x", "amounts": [1000, 1001, 1002], "s": {"a": 1}, "r": None, "i": None}


def test_sql_shows_a_wide_result_as_records_and_a_narrow_one_as_a_table(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path, create=True)
    with ws.writer() as w:
        w.write("charges", charges(3))
    code, out = run("-w", str(tmp_path), "sql", "SELECT * FROM charges ORDER BY charge_id LIMIT 2")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[2] for line in lines if line.startswith("-[ row")] == ["1", "2"]
    assert "charge_id              ch_000000" in lines and "charge_id              ch_000001" in lines
    assert "…" not in out  # every value whole, which a 33-column table cannot do in 160 characters
    code, out = run("-w", str(tmp_path), "sql", "SELECT charge_id, amount FROM charges ORDER BY 1")
    assert code == 0 and "-[ row" not in out and "ch_000002" in out and "┃ charge_id" in out
    code, out = run("-w", str(tmp_path), "sql", "SELECT * FROM charges WHERE false")
    assert code == 0 and out.startswith("(no rows; columns: charge_id, created,")


def test_workspace_from_environment(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path, create=True)
    with ws.writer() as w:
        w.write("charges", charges(2))
    result = CliRunner(env={"PAYFM_WORKSPACE": str(tmp_path)}).invoke(
        cli, ["sql", "SELECT count(*) AS n FROM charges", "--format", "json"]
    )
    assert result.exit_code == 0
    assert result.output.strip() == '{"n": 2}'


def test_features_backfill_engines_write_the_same_values(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    ws = str(tmp_path / "ws")
    run("-w", ws, "generate", "--charges", "3000", "--days", "5", "--seed", "3")
    tables = {}
    for engine in ("columnar", "duckdb"):
        code, out = run("-w", ws, "features", "backfill", "--set", "tiny", "--engine", engine)
        assert code == 0 and "Backfilled 4 features x" in out
        (path,) = (tmp_path / "ws" / "features").glob("tiny-*.parquet")
        tables[engine] = pq.read_table(path)
    assert tables["columnar"].num_rows == Workspace.open(ws).count("charges") > 0
    assert tables["columnar"].equals(tables["duckdb"])
    bad = CliRunner().invoke(cli, ["-w", ws, "features", "backfill", "--engine", "flink"])
    assert bad.exit_code == 2 and "'flink' is not one of 'columnar', 'duckdb', 'spark'" in bad.output


def test_demo_replay_step_saves_the_starter_rules_once(tmp_path: Path) -> None:
    from payfm.cli.demo import DEMO_RULES, _replay_last_day
    from payfm.rules import rulesets
    from payfm.synth import WorldConfig, generate_world

    ws = Workspace.open(tmp_path, create=True)
    ws.write_stream(generate_world(WorldConfig(charges=2_000, days=3, seed=1)), "replace")
    _replay_last_day(ws)
    _replay_last_day(ws)  # the demo run again: the active starter rules are kept, not saved again
    assert [v.version for v in rulesets.history(ws)] == [1]
    rulesets.save(ws, "block if :amount_usd: > 999999", activate=True)  # an analyst's own rules
    _replay_last_day(ws)  # the demo applies its starter rules again, as a new version
    assert sorted(v.version for v in rulesets.history(ws)) == [1, 2, 3]
    active = rulesets.active(ws)
    assert active is not None and active.text == DEMO_RULES and active.version == 3


def test_demo_replaces_only_an_event_log_it_wrote_and_says_how_to_fit_a_short_world(tmp_path: Path) -> None:
    ws = str(tmp_path / "ws")
    run("-w", ws, "generate", "--charges", "3000", "--days", "5", "--seed", "3")
    before = Workspace.open(ws).read("charges")["charge_id"].to_pylist()
    code, out = run("-w", ws, "demo", "--charges", "2000", "--days", "5", "--skip-models")
    assert (
        code == 1 and "already holds 2,9" in out and "payfm demo did not write" in out and "--replace" in out
    )
    assert Workspace.open(ws).read("charges")["charge_id"].to_pylist() == before  # untouched
    # option values are checked before the workspace: their error, not "already holds"
    code, out = run("-w", ws, "demo", "--charges", "2000", "--days", "60")
    assert code == 1 and "--days must be more than 102" in out and "already holds" not in out, out
    code, out = run("-w", str(tmp_path / "new"), "demo", "--charges", "0", "--skip-models")
    assert code == 1 and "--charges must be an integer >= 1000. Got 0." in out, out
    assert not (tmp_path / "new").exists()  # nothing created for a refused command
    code, out = run("-w", ws, "demo", "--charges", "2000", "--days", "5", "--skip-models", "--replace")
    assert code == 0, out
    code, out = run("-w", ws, "demo", "--charges", "2000", "--days", "5", "--skip-models")
    assert code == 0, out  # a workspace the demo wrote is replaced again
    written = Workspace.open(ws).read("charges")["charge_id"].to_pylist()
    code, out = run("-w", ws, "demo", "--charges", "2000", "--days", "60")
    assert code == 1 and "Traceback" not in out and "--days must be more than 102" in out and "Got 60." in out
    assert Workspace.open(ws).read("charges")["charge_id"].to_pylist() == written  # refused before generating
    # long enough, too few charges: the trainer's own reason is said, not the length's
    code, out = run("-w", ws, "demo", "--charges", "1000", "--days", "120", "--seed", "1")
    assert code == 1 and "Traceback" not in out and "payfm train said:" in out, out
    assert "positives" in out and "payfm train --horizon-days 20" in out and "too short" not in out


def test_counts_of_rows_read_as_words() -> None:
    from payfm.cli.render import rows_of

    assert rows_of(1, "disputes") == "1 dispute"
    assert rows_of(1, "early_fraud_warnings") == "1 early fraud warning"
    assert rows_of(2_173, "disputes") == "2,173 disputes"
    assert rows_of(0, "refunds") == "0 refunds"


def test_the_cli_starts_without_pandas_or_torch() -> None:
    """Every payfm command imports the CLI first: pyarrow.dataset (which imports pandas) and torch are
    imported where they are used, not at start-up (they made `payfm --help` take about a second)."""
    import subprocess
    import sys

    code = "import sys, payfm.cli.main; print(sorted(m for m in ('pandas', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_ctrl_c_while_the_commands_import_ends_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import builtins
    import sys

    from payfm.cli import entry

    real_import = builtins.__import__

    def interrupted(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "payfm.cli.main":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "payfm.cli.main")
    monkeypatch.setattr(builtins, "__import__", interrupted)
    with pytest.raises(SystemExit) as e:
        entry.main()
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert err == "Aborted!\n" and "Traceback" not in err


def test_sql_never_cuts_or_folds_a_value_of_a_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nine columns fit 120 characters at 12 each, but not their values: folded into the columns (or cut
    with '…', as before), an id copied from the screen into a list or a rule would be a wrong id. A result
    whose values do not fit on one line each is printed as records; one that fits stays a table."""
    from payfm.cli.render import console

    monkeypatch.setattr(console, "width", 120)  # (read from the terminal when payfm.cli.render is imported)
    ws = Workspace.open(tmp_path, create=True)
    with ws.writer() as w:
        w.write("charges", charges(3))
    cols = (
        "charge_id, created, merchant_id, card_fingerprint, amount, amount_usd, currency, outcome, ip_address"
    )
    result = CliRunner().invoke(
        cli, ["-w", str(tmp_path), "sql", f"SELECT {cols} FROM charges ORDER BY 1"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "-[ row 1 ]" in result.output and "…" not in result.output
    fingerprints = [line.split()[1] for line in lines if line.startswith("card_fingerprint")]
    assert fingerprints == ws.read("charges").sort_by("charge_id")["card_fingerprint"].to_pylist()
    result = CliRunner().invoke(
        cli, ["-w", str(tmp_path), "sql", "SELECT charge_id, card_fingerprint FROM charges"]
    )
    assert result.exit_code == 0 and "┃ charge_id" in result.output and "-[ row" not in result.output
    wide = "SELECT repeat('漢字', 30) AS t, charge_id FROM charges LIMIT 1"  # 60 characters, 120 cells
    result = CliRunner().invoke(cli, ["-w", str(tmp_path), "sql", wide])
    assert result.exit_code == 0 and "-[ row 1 ]" in result.output and "漢字" * 30 in result.output
