"""European exports: files separated by semicolons (or tabs, or '|') whose numbers have decimal commas and
thousands separators (``1.234,50``). The mapping's ``csv`` block says so; the file then imports exactly as the
same data written with commas and points, every CSV check counts the mapping's separator, and a file or a
number written another way is refused naming the file, the row and line and the field, never a value that
could be a card number, with nothing written."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.import_convert import to_ints
from payfm.events.import_problems import Problems
from payfm.events.import_times import to_times
from payfm.events.importer import import_file
from payfm.events.mapping import load_mapping, parse_mapping
from payfm.events.validate import ValidationError
from payfm.events.workspace import Workspace
from test_import import MAPPING, ROWS, VISA, changed, failed_import, write_mapping, ws_at

DOCS = Path(__file__).resolve().parents[1] / "docs"
EUROPEAN = {"separator": ";", "decimal": ",", "thousands": "."}
# ROWS with more rows, an amount column 'amt' reaching the thousands and millions, shop names holding
# separators and quotes (merchant ids keep them as they are), and a dropped column holding a tab and a line
# break too.
AMOUNTS = ["10.50", "3", "1999", "0.07", "1234567.89", "1000", "12345.6", "999999.99"]
CURRENCIES = ["EUR", "usd", "JPY", "eur", "eur", "usd", "gbp", "eur"]
SHOPS = ['Café "Le Zinc"; Paris', "s2", "a,b;c|d", 's"1"', "s1", "Bäckerei", "s3", "x;y"]
N = len(AMOUNTS)
SEMICOLONS = 'semicolon-separated columns (the mapping\'s `csv: {separator: ";"}`)'
DATA: dict[str, list[Any]] = {
    **{k: (v * 2)[:N] for k, v in ROWS.items() if k != "amount"},
    "id": [f"t{i}" for i in range(N)],
    "ts": [f"2024-03-0{1 + i // 3} 0{i}:00:00" for i in range(N)],
    "shop": SHOPS,
    "amt": AMOUNTS,
    "cur": CURRENCIES,
    "email": ['a\tb;c|d,"e"@x.com', "b@y.org\r\non two lines", *ROWS["email"][2:], *ROWS["email"][:4]],
}
AMT = changed(
    amount={"column": "amt", "minor_units": {"column": "cur"}},
    amount_usd={"column": "amt", "usd_cents": {"column": "cur"}},
)


def mapping(csv: dict[str, Any] | None = None, base: dict[str, Any] = AMT) -> dict[str, Any]:
    """``base`` with the ``csv`` block ``csv`` (none: the default, commas and points)."""
    m = copy.deepcopy(base)
    if csv is not None:
        m["csv"] = csv
    return m


def written(amount: str, decimal: str, thousands: str | None) -> str:
    """``amount`` (written with a point, no separators) written with ``decimal`` and ``thousands``."""
    whole, _, fraction = amount.partition(".")
    if thousands is not None:
        whole = f"{int(whole):,}".replace(",", thousands)
    return whole + (decimal + fraction if fraction else "")


def write_rows(path: Path, rows: dict[str, list[Any]], separator: str) -> Path:
    """``rows`` as a CSV file separated by ``separator`` (Arrow quotes every text, doubling its quotes)."""
    pacsv.write_csv(pa.table(rows), path, pacsv.WriteOptions(delimiter=separator))
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def same_secret(ws: Workspace, like: Workspace) -> Workspace:
    """``ws`` keyed with ``like``'s secret: the same card, the same fingerprint in both."""
    shutil.copy(like.root / "secret.key", ws.root / "secret.key")
    return ws


def stored(ws: Workspace) -> dict[str, pa.Table]:
    return {name: ws.read(name) for name in ("charges", "disputes")}


# ---- 1. files separated by semicolons, tabs or '|' import as comma-separated ones --------------------------
def test_a_semicolon_file_with_quoted_semicolons_quotes_and_line_breaks_imports(tmp_path: Path) -> None:
    lines = [
        "id;ts;amt;cur;card;shop;kind;fraud;email",
        f't1;2024-03-01 09:00:00;10,50;EUR;{VISA};"Café ""Le Zinc""; Paris";web;0;a@x.com',
        't2;2024-03-01 10:30:00;3;usd;4242 4242 4242 4242;s2;store;1;"b@y.org; and\na ""second"" line"',
        't3;2024-03-02 23:59:59;1.999;JPY;5555555555554444;"x;y;z";web;0;c@x.com',
        't4;2024-03-03 00:00:00;"1.234,07";eur;378282246310005;5" screen;store;yes;d@z.net',
    ]
    path = write_lines(tmp_path / "export.csv", lines)
    ws = ws_at(tmp_path / "ws")
    summary = import_file(ws, path, write_mapping(tmp_path, mapping(EUROPEAN)))
    assert summary.rows == {"charges": 4, "disputes": 2} and summary.dropped_columns == ("email",)
    charges = ws.read("charges", ["charge_id", "merchant_id", "amount", "currency"]).to_pylist()
    assert charges == [
        {"charge_id": "ch_t1", "merchant_id": 'Café "Le Zinc"; Paris', "amount": 1050, "currency": "eur"},
        {"charge_id": "ch_t2", "merchant_id": "s2", "amount": 300, "currency": "usd"},
        {"charge_id": "ch_t3", "merchant_id": "x;y;z", "amount": 1999, "currency": "jpy"},
        {"charge_id": "ch_t4", "merchant_id": '5" screen', "amount": 123407, "currency": "eur"},
    ]


@pytest.mark.parametrize(
    ("csv", "texts", "minor"),
    [
        # decimal commas, no thousands separator
        (
            {"decimal": ","},
            ["1234,50", "12,5", "0,07", "3", ",5", "1,5e3"],
            [123450, 1250, 7, 300, 50, 150000],
        ),
        # decimal commas, dots between thousands
        (
            {"decimal": ",", "thousands": "."},
            ["1.234,50", "1.234.567,89", "1.234", "999,99", "12", "1234,5"],
            [123450, 123456789, 123400, 99999, 1200, 123450],
        ),
        # decimal commas, spaces between thousands (a no-break space, a narrow one: French exports)
        (
            {"decimal": ",", "thousands": " "},
            ["1 234,50", "1\u00a0234,50", "1\u202f234,50", "12 345 678", " 7,25 ", "0,1"],
            [123450, 123450, 123450, 1234567800, 725, 10],
        ),
        # points, commas between thousands (quoted in the file: the separator is ';' here anyway)
        ({"thousands": ","}, ["1,234.50", "1,234,567.89", "3", "0.07", "12,345", "1234.5"], None),
    ],
)
def test_decimal_commas_and_thousands_separators_read_as_the_number_written(
    tmp_path: Path, csv: dict[str, Any], texts: list[str], minor: list[int] | None
) -> None:
    rows = {k: (v * 2)[:6] for k, v in DATA.items()}
    rows = {**rows, "id": [f"t{i}" for i in range(6)], "amt": texts, "cur": ["eur"] * 6}
    ws = ws_at(tmp_path / "ws")
    path = write_rows(tmp_path / "export.csv", rows, ";")
    import_file(ws, path, write_mapping(tmp_path, mapping({"separator": ";", **csv})))
    got = ws.read("charges", ["amount"]).column("amount").to_pylist()
    expected = minor or [round(float(t.replace(",", "")) * 100) for t in texts]
    assert got == expected


@pytest.mark.parametrize(
    ("separator", "csv"),
    [
        (";", EUROPEAN),
        (";", {"separator": ";", "decimal": ","}),
        ("\t", {"separator": "\t", "decimal": ",", "thousands": " "}),
        ("|", {"separator": "|", "decimal": ",", "thousands": "'"}),
        ("\t", {"separator": "\t"}),  # a tab file with points
        (",", {"decimal": ",", "thousands": "."}),  # commas between cells and in numbers: quoted
    ],
)
def test_the_event_log_is_the_one_of_the_same_data_written_with_commas_and_points(
    tmp_path: Path, separator: str, csv: dict[str, Any]
) -> None:
    decimal, thousands = csv.get("decimal", "."), csv.get("thousands")
    european = {**DATA, "amt": [written(a, decimal, thousands) for a in AMOUNTS]}
    if thousands is not None:
        assert european["amt"][4] == f"1{thousands}234{thousands}567{decimal}89"
    plain_ws = ws_at(tmp_path / "plain")
    import_file(plain_ws, write_rows(tmp_path / "plain.csv", DATA, ","), write_mapping(tmp_path, mapping()))
    ws = same_secret(ws_at(tmp_path / "european"), plain_ws)
    path = write_rows(tmp_path / "european.csv", european, separator)
    summary = import_file(ws, path, write_mapping(tmp_path, mapping(csv), "eu.yaml"))
    assert summary.rows == {"charges": N, "disputes": 4}
    plain, got = stored(plain_ws), stored(ws)
    assert plain["charges"].column("amount").to_pylist()[4] == 123456789
    for name in plain:
        assert got[name].equals(plain[name]), name


def test_a_tab_separated_gzip_file_imports(tmp_path: Path) -> None:
    import gzip

    rows = {**DATA, "amt": [written(a, ",", " ") for a in AMOUNTS]}
    text = write_rows(tmp_path / "export.tsv", rows, "\t").read_bytes()
    path = tmp_path / "export.csv.gz"
    path.write_bytes(gzip.compress(text))
    ws = ws_at(tmp_path / "ws")
    csv = {"separator": "\t", "decimal": ",", "thousands": " "}
    import_file(ws, path, write_mapping(tmp_path, mapping(csv)))
    assert ws.read("charges", ["merchant_id"]).column("merchant_id").to_pylist() == SHOPS


def test_a_field_reads_a_parquet_text_column_with_its_own_decimal_comma(tmp_path: Path) -> None:
    """A Parquet file has no `csv` block to follow: an integer field says how its text is written."""
    european = {**DATA, "amt": [written(a, ",", ".") for a in AMOUNTS]}
    plain_ws = ws_at(tmp_path / "plain")
    pq.write_table(pa.table(DATA), tmp_path / "plain.parquet")
    import_file(plain_ws, tmp_path / "plain.parquet", write_mapping(tmp_path, mapping()))
    ws = same_secret(ws_at(tmp_path / "european"), plain_ws)
    pq.write_table(pa.table(european), tmp_path / "european.parquet")
    own = {"decimal": ",", "thousands": "."}
    m = changed(
        amount={"column": "amt", "minor_units": {"column": "cur"}, **own},
        amount_usd={"column": "amt", "usd_cents": {"column": "cur"}, **own},
    )
    import_file(ws, tmp_path / "european.parquet", write_mapping(tmp_path, m, "eu.yaml"))
    plain, got = stored(plain_ws), stored(ws)
    for name in plain:
        assert got[name].equals(plain[name]), name


def test_minor_units_without_a_scale_read_thousands_and_refuse_fractions(tmp_path: Path) -> None:
    amounts = ["1.234", "7", "12.345.678", "0", "1.000", "12,00", "3", "1.234,5"]
    rows = {**DATA, "amt": amounts, "cur": ["eur"] * N}
    path = write_rows(tmp_path / "export.csv", rows, ";")
    m = mapping(EUROPEAN, changed(amount="amt", amount_usd="amt"))
    text = failed_import(tmp_path, path, write_mapping(tmp_path, m))
    assert text.startswith(f"{path}: 2 problem(s); nothing was written.")
    assert "row 6 (line 8), column 'amt' (amount): expected an integer; received '12,00'" in text
    assert "row 8 (line 10), column 'amt' (amount): expected an integer; received '1.234,5'" in text
    rows["amt"] = [*amounts[:5], "12", "3", "1.234"]
    ws = ws_at(tmp_path / "ok")
    import_file(ws, write_rows(tmp_path / "ok.csv", rows, ";"), write_mapping(tmp_path, m))
    got = ws.read("charges", ["amount"]).column("amount").to_pylist()
    assert got == [1234, 7, 12345678, 0, 1000, 12, 3, 1234]


def test_many_amounts_convert_exactly_as_the_same_amounts_written_with_a_point() -> None:
    """Independent reference: the amounts written with a point and no separators, converted as before."""
    rng = np.random.default_rng(7)
    cents = rng.integers(0, 10**11, 50_000) // (10 ** rng.integers(0, 10, 50_000))
    plain = [f"{c // 100}.{c % 100:02d}" if i % 3 else f"{c // 100}" for i, c in enumerate(cents)]
    cur = pa.array(["eur", "jpy", "usd", "kwd"] * (len(plain) // 4 + 1))[: len(plain)]
    reference = parse_mapping(mapping(), "m.yaml")
    for decimal, thousands in ((",", "."), (",", " "), (",", None), (".", ","), (".", "'")):
        m = parse_mapping(mapping({"decimal": decimal, "thousands": thousands}), "m.yaml")
        texts = [written(a, decimal, thousands) for a in plain]
        for field in ("amount", "amount_usd"):
            got_out, want_out = Problems(m.fields), Problems(m.fields)
            got = to_ints(m.fields[field], pa.table({"amt": texts, "cur": cur}), "charges", got_out)
            want = to_ints(reference.fields[field], pa.table({"amt": plain, "cur": cur}), "charges", want_out)
            assert got is not None and want is not None
            assert got.equals(want) and got.null_count == want.null_count
            assert got.null_count > 0 or field == "amount_usd"  # (amount: fractions of a yen are problems)
            # the same problems (fractions of a minor unit), quoting the file's own text
            assert got_out.total == want_out.total
            assert [(p.row, p.expected) for p in got_out.items] == [
                (p.row, p.expected) for p in want_out.items
            ]
            assert [p.received for p in got_out.items] == [repr(texts[p.row - 1]) for p in got_out.items]


def test_epoch_times_with_a_decimal_comma_read_as_with_a_point() -> None:
    epoch = changed(created={"column": "ts", "unit": "s"})
    m, reference = parse_mapping(mapping(EUROPEAN, epoch), "m.yaml"), parse_mapping(epoch, "m.yaml")
    texts = pa.table({"ts": ["1.709.283.600,5", "1709283600", "1.709.283.601"]})
    out = Problems()
    got = to_times(m.fields["created"], texts, m, out)
    plain = pa.table({"ts": ["1709283600.5", "1709283600", "1709283601"]})
    want = to_times(reference.fields["created"], plain, reference, out)
    assert out.total == 0 and got is not None and got.equals(want)


# ---- 2. a file or a number written another way than the mapping says -------------------------------------
@pytest.mark.parametrize(
    ("separator", "csv", "expected", "held", "write"),
    [
        (";", None, "comma-separated columns", "';' 8 time(s)", '`csv: {separator: ";"}`.'),
        ("\t", None, "comma-separated columns", "tabs 8 time(s)", '`csv: {separator: "\\t"}`.'),
        ("|", EUROPEAN, SEMICOLONS, "'|' 8 time(s)", '`csv: {separator: "|"}`.'),
        (
            ",",
            EUROPEAN,
            SEMICOLONS,
            "',' 8 time(s)",
            "`csv: {separator: \",\"}` (or leave it out: ',' is the default).",
        ),
        (
            ";",
            {"separator": "\t"},
            'tab-separated columns (the mapping\'s `csv: {separator: "\\t"}`)',
            "';'",
            "",
        ),
    ],
)
def test_a_file_separated_otherwise_than_the_mapping_says_names_the_option(
    tmp_path: Path, separator: str, csv: dict[str, Any] | None, expected: str, held: str, write: str
) -> None:
    path = write_lines(
        tmp_path / "export.csv", [",".join(ROWS)] + [",".join(r) for r in zip(*ROWS.values(), strict=True)]
    )
    path.write_text(path.read_text().replace(",", separator))
    m = mapping(csv, MAPPING)
    text = failed_import(tmp_path, path, write_mapping(tmp_path, m), ConfigError)
    assert text.startswith(f"Import source '{path}': expected {expected}; received a header of one column")
    assert f"holding {held}" in text and f"Set the mapping's separator to it: {write}" in text
    assert VISA not in text


def test_a_badly_written_number_names_file_line_and_field_and_never_a_card_number(tmp_path: Path) -> None:
    amounts = ["1.234,50", "12.50", "4111,1111,1111,1111", "1.23,4", "7,5", "12,345,678,901,234"]
    rows = {k: (v * 2)[:6] for k, v in DATA.items()}
    rows = {**rows, "id": [f"t{i}" for i in range(6)], "amt": amounts, "shop": ["s1"] * 6}
    path = write_rows(tmp_path / "export.csv", rows, ";")
    text = failed_import(tmp_path, path, write_mapping(tmp_path, mapping(EUROPEAN)))
    expected = (
        "expected a number with ',' as the decimal separator and '.' between thousands (set by 'csv'; "
        "e.g. 1.234,50); received"
    )
    # amount and amount_usd read 'amt': each bad cell is one problem, named once
    assert text.startswith(f"{path}: 4 problem(s); nothing was written.")
    assert f"{path}: row 2 (line 3), column 'amt' (amount): {expected} '12.50'" in text
    assert f"{path}: row 3 (line 5), column 'amt' (amount): {expected} '[card number removed]'" in text
    assert f"{path}: row 4 (line 6), column 'amt' (amount): {expected} '1.23,4'" in text
    assert f"{path}: row 6 (line 8), column 'amt' (amount): {expected} '[card number removed]'" in text
    for secret in ("4111", "1111", "678,901"):
        assert secret not in text
    assert "amount_usd" not in text


def test_a_number_a_field_writes_otherwise_names_the_fields_key(tmp_path: Path) -> None:
    rows = {**DATA, "amt": ["1,5"] * 6 + ["12.5", "1.234,5"], "cur": ["eur"] * N}
    path = write_rows(tmp_path / "export.csv", rows, ";")
    m = mapping({"separator": ";", "decimal": ","})
    m["columns"]["amount"]["thousands"] = "."  # amount_usd reads the same column without
    text = failed_import(tmp_path, path, write_mapping(tmp_path, m))
    assert text.startswith(f"{path}: 2 problem(s); nothing was written.")
    assert (
        "row 7 (line 9), column 'amt' (amount): expected a number with ',' as the decimal separator and '.' "
        "between thousands (set by 'columns.amount'; e.g. 1.234,50); received '12.5'"
    ) in text
    assert (
        "row 8 (line 10), column 'amt' (amount_usd): expected a number with ',' as the decimal separator and "
        "nothing between thousands (set by 'csv'; e.g. 1234,50); received '1.234,5'"
    ) in text


def test_ragged_rows_and_unclosed_quotes_count_the_mappings_separator(tmp_path: Path) -> None:
    header = "id;ts;amt;cur;card;shop;kind;fraud;email"
    rows = [f"t{i};2024-03-01 09:00:00;1,50;eur;{VISA};s{i};web;0;a@x.com" for i in range(1, 6)]
    ragged = [header, *rows]
    ragged[2] += ";Rebecca"  # row 2: a cell too many
    ragged[4] = ragged[4].rsplit(";", 1)[0]  # row 4: a cell short
    path = write_lines(tmp_path / "ragged.csv", ragged)
    text = failed_import(tmp_path, path, write_mapping(tmp_path, mapping(EUROPEAN)))
    assert text.startswith(f"{path}: 2 problem(s); nothing was written.")
    assert (
        "row 2 (line 3): expected 9 cells, as many as the header has columns (a missing or extra semicolon, "
        "or a semicolon inside an unquoted value?); received 10 cells"
    ) in text
    assert "row 4 (line 5)" in text and "received 8 cells" in text and "Rebecca" not in text
    # A quote that nothing closes, in the 6th column of row 3 (a quoted value with ';' and a line break
    # before it, on row 1): named by its row, line and column, the separators counted outside quotes.
    unclosed = [header, *rows]
    unclosed[1] = unclosed[1].replace(";s1;", ';"s;1\nstill s1";')
    unclosed[3] = unclosed[3].replace(";s3;", ';"s3 and the rest;')
    path = write_lines(tmp_path / "unclosed.csv", unclosed)
    text = failed_import(tmp_path, path, write_mapping(tmp_path, mapping(EUROPEAN)), ConfigError)
    assert text.startswith(
        f"Import source '{path}': expected a closing double quote for every quoted value; received a quote "
        "opening a value at row 3 (line 5), column 'shop' that nothing closes: the rest of the file "
        "(lines 5-7) would be read as that one value."
    )


def test_a_bad_byte_is_named_by_its_column_in_a_semicolon_file(tmp_path: Path) -> None:
    header = "id;ts;amt;cur;card;shop;kind;fraud;email"
    line = f't1;2024-03-01 09:00:00;"1,50";eur;{VISA};"a;b";web;0;jos\xe9@x.com'
    path = tmp_path / "latin1.csv"
    path.write_bytes(f"{header}\n{line}\n".encode("latin-1"))
    text = failed_import(tmp_path, path, write_mapping(tmp_path, mapping(EUROPEAN)), ConfigError)
    assert "received the byte 0xe9 at row 1 (line 2), column 'email', which is not UTF-8" in text


@pytest.mark.parametrize(
    ("csv", "said"),
    [
        ({"seperator": ";"}, "'csv.seperator': expected one of separator, decimal, thousands (did you mean"),
        ({"separator": "\\t"}, '\'csv.separator\': expected one of ",", ";", "\\t", "|" (a tab is written'),
        ({"separator": ""}, "(quoted: a bare | starts a YAML block); received ''"),
        ({"separator": ":"}, "'csv.separator': expected one of"),
        ({"decimal": ";"}, "'csv.decimal': expected \".\" or \",\" (quoted); received ';'"),
        ({"decimal": ",", "thousands": ","}, "'csv.thousands': expected a thousands separator other than"),
        ({"thousands": "_"}, '\'csv.thousands\': expected one of ".", ",", " ", "\'" (quoted), or null'),
        (";", "'csv': expected a mapping such as {separator: \";\", decimal: \",\"}; received ';'"),
    ],
)
def test_mistakes_in_the_csv_block_name_its_key(tmp_path: Path, csv: Any, said: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_mapping(write_mapping(tmp_path, mapping(csv)))
    assert str(e.value).startswith("m.yaml: ") and said in str(e.value)


def test_decimal_is_an_option_of_integer_fields_only(tmp_path: Path) -> None:
    m = changed(merchant_id={"column": "shop", "decimal": ","})
    with pytest.raises(ConfigError, match=r"'columns\.merchant_id\.decimal': expected one of column"):
        load_mapping(write_mapping(tmp_path, m))
    m = changed(amount={"value": 5, "decimal": ","})
    with pytest.raises(ConfigError, match=r"'columns\.amount': expected no conversion options on a constant"):
        load_mapping(write_mapping(tmp_path, m))
    parsed = load_mapping(write_mapping(tmp_path, mapping(EUROPEAN)))
    assert parsed.csv.separator == ";" and parsed.fields["amount"].numbers.decimal == ","


# ---- 3. the docs' example, run as written ----------------------------------------------------------------
def _section(page: str, heading: str) -> list[tuple[str, str]]:
    text = (DOCS / page).read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)


def test_the_european_example_of_import_md_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = _section("import.md", "\n## European exports")
    [csv_text] = [b for lang, b in blocks if lang == "csv"]
    [yaml_text] = [b for lang, b in blocks if lang == "yaml"]
    [code] = [b for lang, b in blocks if lang == "python"]
    plain = [b for lang, b in blocks if lang == ""]
    [refused] = [b for b in plain if b.startswith("Import source")]
    [printed] = [b for b in plain if b.startswith("{")]
    [problem] = [b for b in plain if b.startswith("export.csv: 1 problem(s)")]
    monkeypatch.chdir(tmp_path)
    Path("export.csv").write_text(csv_text)
    Path("m.yaml").write_text(yaml_text)
    exec(code, {})  # the docs' own example text
    assert capsys.readouterr().out == printed
    result = CliRunner().invoke(cli, ["-w", "ws", "import", "export.csv", "--mapping", "m.yaml"])
    assert result.exit_code == 0 and "3 charges" in result.output
    # the same file with 12.50 in row 2, and with the mapping's csv block left out
    Path("export.csv").write_text(csv_text.replace(";12,5;", ";12.50;"))
    with pytest.raises(ValidationError) as e:
        import_file(ws_at(tmp_path / "ws2"), "export.csv", "m.yaml")
    assert str(e.value) + "\n" == problem
    Path("export.csv").write_text(csv_text)
    Path("m.yaml").write_text("\n".join(x for x in yaml_text.splitlines() if not x.startswith("csv:")))
    with pytest.raises(ConfigError) as c:
        import_file(ws_at(tmp_path / "ws3"), "export.csv", "m.yaml")
    assert str(c.value) + "\n" == refused


def test_decimal_commas_read_with_the_default_point_say_how_to_set_them(tmp_path: Path) -> None:
    """Found by an import audit: `expected a number; received '6,70'` gave no pointer to `csv.decimal`."""
    rows = {**DATA, "amt": ["6,70", *AMOUNTS[1:]]}
    csv = write_rows(tmp_path / "export.csv", rows, ";")
    text = failed_import(tmp_path, csv, write_mapping(tmp_path, mapping({"separator": ";"})))
    assert (
        "row 1 (line 2), column 'amt' (amount): expected a number (the file writes decimal commas: set the "
        """mapping's `csv: {decimal: ","}`); received '6,70'"""
    ) in text
    rows["amt"][0] = "six"  # no comma: no hint
    text = failed_import(
        tmp_path / "2",
        write_rows(tmp_path / "b.csv", rows, ";"),
        write_mapping(tmp_path, mapping({"separator": ";"})),
    )
    assert "expected a number; received 'six'" in text
