"""A mapping's `join`: an export in two files (IEEE-CIS's transactions and identities, AMLSim's transfers and
its accounts' labels) imported as one. Each row takes its columns from the second file's row of its key;
the second file is read and scanned as the first; a repeated key, a column in both files, a mapping and a
command that disagree are refused, naming what is at fault, and nothing is written."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from payfm.errors import ConfigError
from payfm.events.importer import import_file
from payfm.events.validate import ValidationError
from test_import import MAPPING, ROWS, VISA, state, write_csv, write_mapping, ws_at
from test_import_convert_text import cli_import

# Identities of three of the four transactions, in another order, keyed by the transaction id written as a
# number in one file and as text in the other (CSV reads "t1"... here; the Parquet file's are strings too).
IDENTITY: dict[str, list[Any]] = {
    "id": ["t3", "t1", "t4", "t9"],  # t2 has none; t9 is no transaction of the export
    "device": ["pixel-7", "iphone-15", None, "galaxy"],
    "email": ["c@x.com", "a@x.com", "d@z.net", "e@w.com"],
}


def join_mapping(**join: Any) -> dict[str, Any]:
    m = copy.deepcopy(MAPPING)
    m["drop"] = []
    m["join"] = join or {"column": "id"}
    m["columns"] |= {
        "device_id": {"column": "device", "prefix": "dev_"},
        "email_domain": {"column": "email", "convert": "email_domain"},
    }
    return m


def transactions(tmp_path: Path) -> Path:
    rows = {k: v for k, v in ROWS.items() if k != "email"}  # the e-mail is the identity file's
    return write_csv(tmp_path, rows, "transactions.csv")


def identities(
    tmp_path: Path, rows: dict[str, list[Any]] | None = None, name: str = "identity.parquet"
) -> Path:
    path = tmp_path / name
    pq.write_table(pa.table(rows or IDENTITY), path)
    return path


def test_each_row_takes_the_columns_of_its_key_and_keeps_its_place(tmp_path: Path) -> None:
    ws = ws_at(tmp_path / "ws")
    summary = import_file(
        ws, transactions(tmp_path), write_mapping(tmp_path, join_mapping()), join=identities(tmp_path)
    )
    assert summary.rows == {"charges": 4, "disputes": 2}
    got = ws.read("charges").sort_by("charge_id").to_pydict()
    assert got["charge_id"] == ["ch_t1", "ch_t2", "ch_t3", "ch_t4"]
    assert got["device_id"] == ["dev_iphone-15", None, "dev_pixel-7", None]  # t2 none; t4's is empty
    assert got["email_domain"] == ["x.com", None, "x.com", "z.net"]
    assert got["amount"] == [1050, 300, 1999, 7]  # the imported file's own columns as before
    assert summary.warnings == (
        f"1 of the 4 rows found no row of {tmp_path / 'identity.parquet'} by 'id': the columns they take "
        "from it are empty",
    )


def test_keys_match_as_text_and_the_key_may_have_another_name(tmp_path: Path) -> None:
    rows = {**{k: v for k, v in ROWS.items() if k != "email"}, "id": ["1", "2", "3", "4"]}
    csv = write_csv(tmp_path, rows, "transactions.csv")
    second = identities(
        tmp_path, {"tx": [3, 1, 4, 2], "device": ["c", "a", "d", "b"], "email": ["x@a.io"] * 4}
    )
    ws = ws_at(tmp_path / "ws")
    summary = import_file(ws, csv, write_mapping(tmp_path, join_mapping(column="id", key="tx")), join=second)
    got = ws.read("charges").sort_by("charge_id").to_pydict()
    assert got["device_id"] == ["dev_a", "dev_b", "dev_c", "dev_d"] and summary.warnings == ()


def test_a_key_twice_in_the_second_file_is_refused_naming_it_and_its_lines(tmp_path: Path) -> None:
    twice = {"id": ["t1", "t2", "t1"], "device": ["a", "b", "c"], "email": ["a@x.com"] * 3}
    second = tmp_path / "identity.csv"
    second.write_text("id,device,email\n" + "\n".join(",".join(r) for r in zip(*twice.values(), strict=True)))
    message = _refused(tmp_path, second)
    assert message == (
        f"Join of '{second}': expected each 'id' once (the row a row of the imported file takes); received "
        "'t1' 2 times, rows 1, 3 (lines 2, 4)."
    )
    # blank lines and a quoted line break before the repeat: the lines are the file's own
    second.write_text('id,device,email\n\nt1,"a\nb",a@x.com\n\nt2,b,a@x.com\nt1,c,a@x.com\n')
    assert _refused(tmp_path, second).endswith("'t1' 2 times, rows 1, 3 (lines 3, 7).")


def test_a_card_number_in_the_second_file_is_refused_naming_that_file_even_in_a_row_no_one_takes(
    tmp_path: Path,
) -> None:
    leaked = {**IDENTITY, "note": ["", "", "", VISA]}  # on t9, which no transaction takes
    message = _refused(tmp_path, identities(tmp_path, leaked), ValidationError)
    assert str(tmp_path / "identity.parquet") in message and "row 4" in message and "'note'" in message
    assert "full card number (not shown)" in message and VISA not in message


@pytest.mark.parametrize(
    ("mapping", "second", "said"),
    [
        (
            join_mapping(column="tx_id"),
            IDENTITY,
            "m.yaml: 'join.column': expected a column of '{csv}'; received 'tx_id'",
        ),
        (
            join_mapping(column="id", key="ID"),
            IDENTITY,
            "m.yaml: 'join.key': expected a column of '{second}' (did",
        ),
        (join_mapping(), {**IDENTITY, "shop": ["a"] * 4}, "received 'shop' in both files"),
    ],
)
def test_a_join_whose_columns_do_not_fit_is_refused(
    tmp_path: Path, mapping: dict[str, Any], second: dict[str, list[Any]], said: str
) -> None:
    path = identities(tmp_path, second)
    message = _refused(tmp_path, path, mapping=mapping)
    assert said.format(csv=tmp_path / "transactions.csv", second=path) in message, message


def test_a_column_neither_file_has_names_both(tmp_path: Path) -> None:
    m = join_mapping()
    m["columns"]["device_id"] = {"column": "device_name"}
    message = _refused(tmp_path, identities(tmp_path), mapping=m)
    assert (
        f"expected a column of '{tmp_path / 'transactions.csv'}' or '{tmp_path / 'identity.parquet'}'"
        in message
    )


def test_a_mapping_and_a_command_that_disagree_about_the_join_are_refused(tmp_path: Path) -> None:
    message = _refused(tmp_path, None)
    assert message == "m.yaml: 'join': the mapping joins a second file on 'id'; give it with --join FILE " + (
        "(import_file(..., join=FILE))."
    )
    plain = {**join_mapping()}
    del plain["join"]
    message = _refused(tmp_path, identities(tmp_path), mapping=plain)
    assert message.startswith(f"--join {tmp_path / 'identity.parquet'}: expected a mapping with a `join`")


def test_the_mapping_checks_its_join() -> None:
    from payfm.events.mapping import parse_mapping

    for join, said in (
        ("id", "'join': expected a mapping such as {column: TransactionID}"),
        ({"column": "id", "by": "x"}, "'join.by': expected one of column, key"),
        ({"column": ""}, "'join.column': expected a column name"),
    ):
        with pytest.raises(ConfigError, match=said):
            parse_mapping({**join_mapping(), "join": join}, "m.yaml")


def test_the_cli_imports_with_join_and_says_the_rows_without_a_match(tmp_path: Path) -> None:
    transactions(tmp_path)
    identities(tmp_path)
    write_mapping(tmp_path, join_mapping())
    said = cli_import(tmp_path, "transactions.csv", "m.yaml", "--join", str(tmp_path / "identity.parquet"))
    assert "Imported" in said and "4 charges" in said
    assert "warning: 1 of the 4 rows found no row of" in said


def _refused(
    tmp_path: Path,
    second: Path | None,
    error: type[Exception] = ConfigError,
    mapping: dict[str, Any] | None = None,
) -> str:
    """The message of an import of the transactions joined with ``second`` that must fail, writing nothing."""
    ws = ws_at(tmp_path / "ws")
    before = state(ws)
    with pytest.raises(error) as e:
        import_file(
            ws, transactions(tmp_path), write_mapping(tmp_path, mapping or join_mapping()), join=second
        )
    assert state(ws) == before
    return str(e.value)


def test_the_example_of_import_md_imports_as_it_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    from click.testing import CliRunner

    from payfm.cli.main import cli

    root = Path(__file__).parents[1]
    doc = (root / "docs" / "import.md").read_text().split("## Joining a second file", 1)[1]
    block = doc.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    commands = [line for line in block.splitlines() if line.startswith("payfm ")]
    said = [line[2:] for line in block.splitlines() if line.startswith("# ")]
    monkeypatch.chdir(root)  # (the example's paths are the repository's)
    ws = str(tmp_path / "join-ws")
    outputs = []
    for command in commands:
        args = [ws if a == "join-ws" else a for a in shlex.split(command)[1:]]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        outputs.append(" ".join(result.output.replace("│", " ").split()))
    imported, table = (re.sub(r" in [\d.]+ s:", " in N s:", out) for out in outputs)
    assert re.sub(r" in [\d.]+ s:", " in N s:", said[0]) in imported
    assert " ".join(said[1:3]) in imported
    for row in said[3:5]:
        assert " ".join(row.split()) in table


# ---- found by a review ----------------------------------------------------------------------------------


def test_columns_of_types_arrows_join_refuses_are_taken_all_the_same(tmp_path: Path) -> None:
    """A null-typed column (pandas writes an all-None column so) and a string_view one were tracebacks:
    Arrow's join cannot carry them; only keys and row numbers are joined now."""
    second = pa.table(
        {
            "id": ["t3", "t1", "t4"],
            "device": pa.array(["pixel-7", "iphone-15", None], pa.string_view()),
            "email": pa.nulls(3),
        }
    )
    pq.write_table(second, tmp_path / "identity.parquet")
    ws = ws_at(tmp_path / "ws")
    import_file(
        ws,
        transactions(tmp_path),
        write_mapping(tmp_path, join_mapping()),
        join=tmp_path / "identity.parquet",
    )
    got = ws.read("charges").sort_by("charge_id").to_pydict()
    assert got["device_id"] == ["dev_iphone-15", None, "dev_pixel-7", None]
    assert got["email_domain"] == [None, None, None, None]


def test_an_empty_key_matches_nothing_and_is_never_a_repeat(tmp_path: Path) -> None:
    rows = {**{k: v for k, v in ROWS.items() if k != "email"}, "id": ["t1", "", "t3", "t4"]}
    csv = write_csv(tmp_path, rows, "transactions.csv")
    m = join_mapping()
    m["columns"]["charge_id"] = {"hash": ["id", "ts"], "prefix": "ch_"}  # (the empty id needs another)
    second = identities(tmp_path, {"id": ["", "", "t1"], "device": ["a", "b", "c"], "email": ["x@y.io"] * 3})
    ws = ws_at(tmp_path / "ws")
    summary = import_file(ws, csv, write_mapping(tmp_path, m), join=second)
    got = ws.read("charges").sort_by("created").to_pydict()
    assert got["device_id"] == ["dev_c", None, None, None]  # t1 only; the empty key took nothing
    assert summary.warnings[0].startswith("3 of the 4 rows found no row")


def test_keep_rows_keeps_the_warning_of_rows_without_a_match(tmp_path: Path) -> None:
    m = join_mapping()
    m["keep_rows"] = {"column": "kind", "when": ["web", "store"]}
    ws = ws_at(tmp_path / "ws")
    summary = import_file(ws, transactions(tmp_path), write_mapping(tmp_path, m), join=identities(tmp_path))
    assert summary.warnings == (
        f"1 of the 4 rows found no row of {tmp_path / 'identity.parquet'} by 'id': the columns they take "
        "from it are empty",
    )


def test_the_second_files_key_may_be_read_as_a_field_too(tmp_path: Path) -> None:
    m = join_mapping(column="id", key="tx")
    m["columns"]["customer_id"] = {"column": "tx", "prefix": "cus_"}
    second = identities(tmp_path, {"tx": ["t3", "t1"], "device": ["c", "a"], "email": ["x@y.io"] * 2})
    ws = ws_at(tmp_path / "ws")
    import_file(ws, transactions(tmp_path), write_mapping(tmp_path, m), join=second)
    got = ws.read("charges").sort_by("charge_id").to_pydict()
    assert got["customer_id"] == ["cus_t1", None, "cus_t3", None]


def test_the_imported_files_card_numbers_come_first(tmp_path: Path) -> None:
    """Both files held a card number: only the second file's were said (the first's were lost)."""
    rows = {**{k: v for k, v in ROWS.items() if k != "email"}, "shop": ["s1", VISA, "s1", "s3"]}
    csv = write_csv(tmp_path, rows, "transactions.csv")
    leaked = identities(tmp_path, {**IDENTITY, "note": ["", "", "", VISA]})
    ws = ws_at(tmp_path / "ws")
    with pytest.raises(ValidationError) as e:
        import_file(ws, csv, write_mapping(tmp_path, join_mapping()), join=leaked)
    assert str(tmp_path / "transactions.csv") in str(e.value) and "'shop'" in str(e.value)


def test_the_summary_lists_the_second_files_columns_not_stored_too(tmp_path: Path) -> None:
    m = join_mapping(column="id", key="tx")
    m["drop"] = ["holder"]
    rows = {"tx": ["t3", "t1"], "device": ["c", "a"], "email": ["x@y.io"] * 2, "browser": ["ff", "safari"]}
    second = identities(tmp_path, {**rows, "holder": ["Ann Lee", "Bo Li"]})
    ws = ws_at(tmp_path / "ws")
    summary = import_file(ws, transactions(tmp_path), write_mapping(tmp_path, m), join=second)
    assert summary.unmapped_columns == ("browser",)  # the second file's key, read to join, is not listed
    assert summary.dropped_columns == ("holder",)


def test_the_second_files_key_is_scanned_even_when_a_field_only_hashes_it(tmp_path: Path) -> None:
    """Found by a review of the docs: the second file's key, read by a field only through a hash, escaped the
    card-number scan (the docs say the join's keys are scanned: compared, and a repeated one quoted)."""
    m = join_mapping(column="id", key="tx")
    m["columns"]["customer_id"] = {"hash": ["tx"], "prefix": "cus_"}
    second = identities(tmp_path, {"tx": ["t3", VISA], "device": ["c", "a"], "email": ["x@y.io"] * 2})
    message = _refused(tmp_path, second, ValidationError, mapping=m)
    assert "column 'tx'" in message and "full card number (not shown)" in message and VISA not in message
