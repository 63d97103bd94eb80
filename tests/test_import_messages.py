"""What an import's messages name: the file's own column (and the field computed from it), each bad cell once
at its root, a row without a zone offset by row and line, a Parquet file named .csv as such; and the docs'
examples of these messages and signatures, run as written."""

from __future__ import annotations

import gzip
import inspect
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.importer import import_file
from payfm.events.validate import ValidationError, validate_events
from test_import import ROWS, SAMPLE, VISA, changed, failed_import, write_csv, write_mapping, ws_at

DOCS = Path(__file__).resolve().parents[1] / "docs"
CURRENCY = "expected an ISO 4217 currency code, lower case (e.g. usd, eur); received"
BOUNDS = (
    "expected a value from 0 to 999,999,999,999 (minor units, after 'columns.amount' conversion); received"
)
# A disputes file whose columns are not the fields' names.
DISPUTES: dict[str, Any] = {
    "table": "disputes",
    "columns": {
        "dispute_id": {"column": "did"},
        "charge_id": {"column": "charge"},
        "created": {"column": "at"},
        "reason": "why",
        "amount": {"column": "amt", "scale": 100},
        "currency": "cur",
    },
}


def lines_of(text: str) -> list[str]:
    """The problems a message shows, without the file's path before each."""
    return [line.split(": ", 1)[1] for line in text.splitlines()[1:] if not line.startswith("  ...")]


def problems(tmp_path: Path, path: Path, mapping: dict[str, Any]) -> list[str]:
    """Every problem an import that must fail keeps (not only the five its message shows), as shown."""
    with pytest.raises(ValidationError) as e:
        import_file(ws_at(tmp_path / "ws"), path, write_mapping(tmp_path, mapping))
    return [str(p) for p in e.value.problems]


def sparkov_csv(tmp_path: Path, amt: list[float]) -> Path:
    """The first rows of the bundled Sparkov sample as CSV, their `amt` replaced."""
    table = pq.read_table(SAMPLE).slice(0, len(amt))
    table = table.set_column(table.schema.get_field_index("amt"), "amt", pa.array(amt))
    path = tmp_path / "sparkov.csv"
    pacsv.write_csv(table, path)
    return path


# ---- 1. the file's own column, and the field where it differs -------------------------------------------
def test_a_negative_sparkov_amount_names_amt_once_with_the_files_value(tmp_path: Path) -> None:
    text = failed_import(tmp_path, sparkov_csv(tmp_path, [13.8, -5.0, 2.0]), Path("sparkov"))
    assert lines_of(text) == [f"row 2 (line 3), column 'amt' (amount): {BOUNDS} '-5' (-500 in minor units)"]
    assert "1 problem(s)" in text and "column 'amount'" not in text and "amount_usd" not in text


def test_range_vocabulary_and_code_problems_name_the_files_columns(tmp_path: Path) -> None:
    rows: dict[str, list[Any]] = {
        "did": ["dp_1", "dp_2", "dp_3"],
        "charge": ["ch_1", "ch_2", "ch_3"],
        "at": ["2024-03-05T00:00:00Z"] * 3,
        "why": ["fraudulent", "fraud", None],
        "amt": ["1.00", "-2.00", "3.00"],
        "cur": ["eur", "EUR", "eru"],
    }
    found = problems(tmp_path, write_csv(tmp_path, rows, "disputes.csv"), DISPUTES)
    reasons = "fraudulent, product_not_received, product_unacceptable, duplicate, subscription_canceled"
    assert f"row 2 (line 3), column 'why' (reason): expected one of {reasons}, " in "\n".join(found)
    assert (
        f"row 2 (line 3), column 'cur' (currency): {CURRENCY} 'EUR'. Currency codes are lower case: 'eur'"
        in found
    )
    assert (
        f"row 3 (line 4), column 'cur' (currency): {CURRENCY} 'eru'. The nearest ISO 4217 code is 'eur'"
        in found
    )
    assert f"row 2 (line 3), column 'amt' (amount): {BOUNDS} '-2.00' (-200 in minor units)" in found
    # A null required field names its source column too, as the file has it: an empty cell.
    assert (
        "row 3 (line 4), column 'why' (reason): expected a value (required field); received an empty cell"
        in found
    )
    assert not [p for p in found if re.search(r"column '(reason|currency|amount)'", p)]


def test_a_null_in_parquet_is_named_by_its_column(tmp_path: Path) -> None:
    path = tmp_path / "export.parquet"
    pq.write_table(pa.table({**ROWS, "shop": ["s1", None, "s2", "s3"]}), path)
    text = failed_import(tmp_path, path, write_mapping(tmp_path))
    assert lines_of(text) == [
        "row 2, column 'shop' (merchant_id): expected a value (required field); received null"
    ]


def test_a_field_of_several_columns_or_a_hash_names_them_all(tmp_path: Path) -> None:
    rows = {**ROWS, "day": ["2024-03-01"] * 4, "time": ["09:00:00", "25:00:00", "10:00:00", "11:00:00"]}
    rows["id"] = ["a", "b", "a", "c"]  # the hashed id of rows 1 and 3 is one id
    m = changed(
        created={"columns": ["day", "time"], "format": "%Y-%m-%d %H:%M:%S"},
        charge_id={"hash": ["id", "shop"], "prefix": "ch_"},
    )
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    assert "row 2 (line 3), columns 'day' and 'time' (created): expected a time in the format" in text
    assert "row 1 (line 2), columns 'id' and 'shop' (hashed into charge_id): expected unique ids" in text
    assert "'day+time'" not in text and "column 'charge_id'" not in text


def test_a_problem_of_a_constant_names_its_key(tmp_path: Path) -> None:
    rows = {**ROWS, "result": ["authorized", "issuer_declined", "authorized", "issuer_declined"]}
    m = changed(outcome="result", decline_code={"value": "insufficient_funds"})
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    assert "row 1 (line 2), the constant 'columns.decline_code.value': expected a decline code only" in text
    assert "column 'decline_code'" not in text


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("card_country", "uk", "expected an ISO 3166-1 alpha-2 country code"),
        ("channel", "web", "expected one of ecommerce, card_present, recurring; received 'web'."),
        ("merchant_id", f"m {VISA}", "expected no card numbers"),
        ("merchant_mcc", "", "expected a value (required field); received an empty text."),
    ],
)
def test_a_constant_the_table_refuses_is_a_mistake_of_the_mapping_said_once(
    tmp_path: Path, field: str, value: str, said: str
) -> None:
    """It used to be a problem of every row of the file (the mapping's `value` named as a column)."""
    m = changed(**{field: {"value": value}})
    text = failed_import(tmp_path, write_csv(tmp_path), write_mapping(tmp_path, m), ConfigError)
    assert text.startswith(f"m.yaml: 'columns.{field}.value': {said}") and VISA not in text


def test_importing_a_file_twice_names_the_id_column_of_the_file(tmp_path: Path) -> None:
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path), write_mapping(tmp_path))
    with pytest.raises(ValidationError) as e:
        import_file(ws, write_csv(tmp_path), write_mapping(tmp_path))
    said = "row 1 (line 2), column 'id' (charge_id): expected an id not already in the workspace's"
    assert said in str(e.value)


# ---- 2. a bad cell once, at its root -------------------------------------------------------------------
def test_a_bad_currency_is_one_problem_of_the_currency_with_its_hint(tmp_path: Path) -> None:
    rows = {**ROWS, "cur": ["eur", "eru", "usd", "eur"], "amount": ["1", "2", "3", "-4"]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path))
    assert lines_of(text) == [
        f"row 2 (line 3), column 'cur' (currency): {CURRENCY} 'eru'. The nearest ISO 4217 code is 'eur'",
        f"row 4 (line 5), column 'amount': {BOUNDS} '-4' (-400 in minor units)",
    ]
    assert "2 problem(s)" in text and "known to payfm" not in text


def test_a_currency_payfm_cannot_convert_is_said_once(tmp_path: Path) -> None:
    rows = {**ROWS, "cur": ["eur", "xof", "usd", "eur"]}  # the CFA franc: ISO 4217, no rate in payfm
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path))
    assert lines_of(text) == [
        "row 2 (line 3), column 'cur' (currency): expected a currency that payfm converts (for "
        "'columns.amount'; the codes of payfm.events.currency); received 'xof'"
    ]


def test_a_currency_column_that_no_currency_field_reads_is_named_as_the_amounts(tmp_path: Path) -> None:
    m = changed(currency={"value": "eur"})
    rows = {**ROWS, "cur": ["eur", "eru", "eur", "eur"]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    assert lines_of(text) == [
        f"row 2 (line 3), column 'cur' (the currency of amount): {CURRENCY} 'eru'. The nearest ISO 4217 code "
        "is 'eur'"
    ]


def test_an_empty_cell_read_by_two_required_fields_is_one_problem(tmp_path: Path) -> None:
    path = write_csv(tmp_path, {**ROWS, "amount": ["1", "", "3", "4"]})
    text = failed_import(tmp_path, path, write_mapping(tmp_path))
    assert lines_of(text) == [
        "row 2 (line 3), column 'amount': expected a value (required field); received an empty cell"
    ]


def test_a_refused_outcome_time_is_not_said_again_as_missing(tmp_path: Path) -> None:
    rows = {**ROWS, "ts": ["1709283600", "1709289000", "1709420399", "1709420400"]}
    rows["fraud_at"] = ["", "soon", "", "2024-04-02T12:00:00Z"]  # row 2 is fraud: its time is no time
    m = changed(created={"column": "ts", "unit": "s"})
    m["labels"] = [{"column": "fraud", "when": ["1", "yes"], "time": {"column": "fraud_at"}}]
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    assert lines_of(text) == [
        "row 2 (line 3), column 'fraud_at': expected an ISO 8601 time (e.g. 2023-01-01T12:00:00Z); "
        "received 'soon'"
    ]


# ---- 3. a row without a zone offset ----------------------------------------------------------------------
def test_a_row_without_a_zone_offset_is_named_like_any_row_problem(tmp_path: Path) -> None:
    rows = {**ROWS, "ts": ["2024-03-01T09:00:00Z", "2024-03-01T10:00:00+01:00", "2024-03-01 11:00:00", "x"]}
    m = changed(created="ts")
    del m["timezone"]
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    assert lines_of(text) == [
        "row 3 (line 4), column 'ts' (created): expected an ISO 8601 time with a zone offset, as the other "
        "rows have (e.g. 2023-01-01T12:00:00Z), or a `timezone` for its naive times in the mapping "
        "('columns.created.timezone' or top-level); received '2024-03-01 11:00:00'",
        "row 4 (line 5), column 'ts' (created): expected an ISO 8601 time (e.g. 2023-01-01T12:00:00Z); "
        "received 'x'",
    ]
    # A column of naive times only: the mapping's mistake, named by its key.
    naive = {**ROWS, "ts": ["2024-03-01T09:00:00", "2024-03-01 10:00:00", "2024-03-01 11:00:00", "x"]}
    text = failed_import(tmp_path / "2", write_csv(tmp_path, naive), write_mapping(tmp_path, m), ConfigError)
    assert text.startswith("m.yaml: 'columns.created.timezone': expected a time zone for the naive times of ")
    # With a zone, the row without an offset is read in it.
    m["columns"]["created"] = {"column": "ts", "timezone": "Europe/Paris"}
    ws = ws_at(tmp_path / "ok")
    path = write_csv(tmp_path, {**rows, "ts": [*rows["ts"][:3], "2024-03-02T00:00:00Z"]})
    import_file(ws, path, write_mapping(tmp_path, m))
    assert str(ws.read("charges").sort_by("charge_id")["created"][2].as_py()) == "2024-03-01 10:00:00+00:00"


# ---- 4. a file that is no CSV text ----------------------------------------------------------------------
def test_a_parquet_file_named_csv_is_named_as_parquet(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    shutil.copy(SAMPLE, path)
    text = failed_import(tmp_path, path, Path("sparkov"), ConfigError)
    assert text == (
        f"Import source '{path}': expected a CSV file (UTF-8 text); received a Parquet file (it starts with "
        f"the Parquet magic bytes PAR1). Name it .parquet, e.g. `mv {path} {tmp_path / 'x.parquet'}`, "
        "and import it again."
    )
    gz = tmp_path / "x.csv.gz"
    gz.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    text = failed_import(tmp_path, gz, Path("sparkov"), ConfigError)
    assert "received a Parquet file" in text and f"`gunzip -c {gz} > {tmp_path / 'x.parquet'}`" in text
    # the suggested command is quoted for a shell: a name holding quotes or $( ) runs nothing when pasted
    hostile = tmp_path / "x'; touch PWNED; echo '$(id).csv"
    shutil.copy(SAMPLE, hostile)
    text = failed_import(tmp_path, hostile, Path("sparkov"), ConfigError)
    command = text.split("e.g. `")[1].split("`")[0]
    assert shlex.split(command) == ["mv", str(hostile), str(hostile.with_suffix(".parquet"))]


def test_a_gzip_or_zip_file_named_csv_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(gzip.compress(write_csv(tmp_path, name="plain.csv").read_bytes()))
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    assert "received a gzip-compressed file" in text and "Name it .csv.gz" in text
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    assert "received a ZIP archive" in text and "Export the sheet as CSV" in text


def test_a_csv_file_named_parquet_still_says_it_is_no_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "export.parquet"
    shutil.copy(write_csv(tmp_path), path)
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    assert text.startswith(f"Import source '{path}': expected a readable file;")
    assert "not a parquet file" in text


# ---- 5. the docs say what the code does ------------------------------------------------------------------
def _blocks(page: str, heading: str) -> list[tuple[str, str]]:
    """The fenced blocks of the section ``heading`` of ``docs/<page>``, in order: (language, content)."""
    text = (DOCS / page).read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)


def test_the_errors_example_of_import_md_is_what_an_import_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = _blocks("import.md", "\n## Errors")
    [csv_text] = [b for lang, b in blocks if lang == "csv"]
    [yaml_text] = [b for lang, b in blocks if lang == "yaml"]
    [shown] = [b for _lang, b in blocks if b.startswith("Error: export.csv")]
    [sixth] = [b for _lang, b in blocks if b.startswith("  export.csv: row 7")]
    (tmp_path / "export.csv").write_text(csv_text)
    (tmp_path / "m.yaml").write_text(yaml_text)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["-w", "ws", "import", "export.csv", "--mapping", "m.yaml"])
    assert result.exit_code == 1 and result.output == shown
    with pytest.raises(ValidationError) as e:
        import_file(ws_at(tmp_path / "ws2"), "export.csv", "m.yaml")
    assert sixth.strip() in [f"export.csv: {p}" for p in e.value.problems]


def test_the_validation_example_of_events_md_prints_what_it_shows(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = _blocks("events.md", "\n## Validation")
    languages = [lang for lang, _ in blocks]
    code, shown = blocks[languages.index("python")][1], blocks[languages.index("python") + 1][1]
    exec(code, {})  # the docs' own example text
    assert capsys.readouterr().out == shown


def _params(f: Any) -> str:
    """``(a, b, *, c=None)``: the signature without annotations, as the docs write it."""
    parts: list[str] = []
    for p in inspect.signature(f).parameters.values():
        if p.kind is p.KEYWORD_ONLY and "*" not in parts:
            parts.append("*")
        parts.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return f"({', '.join(parts)})"


def test_the_signatures_the_docs_give_are_the_codes() -> None:
    assert f"`payfm.events.importer.import_file{_params(import_file)}" in (DOCS / "import.md").read_text()
    events = (DOCS / "events.md").read_text()
    assert f"`payfm.events.validate.validate_events{_params(validate_events)}" in events


def test_a_generated_workspace_has_no_secret_until_its_first_import(tmp_path: Path) -> None:
    """docs/events.md, Storage: secret.key is made on first use, by an import."""
    from payfm.synth import WorldConfig, generate_world

    ws = ws_at(tmp_path / "ws")
    ws.write_stream(generate_world(WorldConfig(charges=1000, days=2, seed=1)), "replace")
    assert not (ws.root / "secret.key").exists()
    import_file(ws, write_csv(tmp_path), write_mapping(tmp_path))
    assert (ws.root / "secret.key").stat().st_mode & 0o777 == 0o600
    assert "`payfm generate` filled" in (DOCS / "events.md").read_text()


def test_every_kind_of_problem_is_shown_not_only_the_first_rows(tmp_path: Path) -> None:
    """Found by an import audit: 177,938 problems showed five lines of two kinds (the first rows'); the other
    kinds, further down the file, came out one run at a time, six runs in all."""
    n = 40
    rows = {k: (v * n)[:n] for k, v in ROWS.items()}
    rows |= {"id": [f"t{i}" for i in range(n)], "amount": ["x"] * 30 + ["1"] * 10}
    rows["cur"] = ["usd"] * 35 + ["eru"] + ["usd"] * 4  # a second kind, after 30 of the first
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path))
    lines = text.splitlines()
    assert lines[0].endswith("31 problem(s); nothing was written.")
    assert sum("expected a number; received 'x'" in line for line in lines) == 4  # 5 lines in all
    assert any("row 36 (line 37), column 'cur' (currency)" in line for line in lines)
    assert lines[-1] == "  ... and 26 more"


def test_kinds_beyond_twelve_are_counted() -> None:
    from payfm.events.validate import Problem

    problems = [Problem(f"c{k}", k + 1, "a number", "'x'") for k in range(15)]
    text = str(ValidationError("f.csv", problems, 15))
    assert text.count("expected a number") == 12
    assert text.splitlines()[-1] == "  ... and 3 more (3 more kind(s) of problem among them)"


def test_a_card_number_in_a_stored_column_is_one_problem_per_row_however_many(tmp_path: Path) -> None:
    """Found by an import audit: with more than 20 such rows the total counted those past the 20 listed twice
    (the scan's problem, then validation's of the field computed from it): 30 rows said 40 problems."""
    n = 30
    rows = {k: (v * n)[:n] for k, v in ROWS.items()} | {"id": [f"t{i}" for i in range(n)], "shop": [VISA] * n}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path))
    assert text.splitlines()[0].endswith(": 30 problem(s); nothing was written.")
