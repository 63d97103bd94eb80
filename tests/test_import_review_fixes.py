"""Fixes of a review of `payfm import` (docs/import.md): labels of CSV boolean words, label times read only
where a label makes an outcome, personal data in ids, quotes closed before more text on their line, float32
amounts, the `--separator` option, .tsv/.txt files, `ambiguous: infer` with sparse night traffic, Excel's
`sep=;` line and empty header names."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.importer import import_file, read_source
from payfm.events.validate import ValidationError
from payfm.events.workspace import Workspace

SAMPLE = Path(__file__).parent / "data" / "sparkov_sample.parquet"
VISA = "4242424242424242"
HEADER = "id,ts,shop,card,amt,cur,kind,note"
# The mapping of docs/import.md's Errors section.
MAPPING: dict[str, Any] = {
    "table": "charges",
    "columns": {
        "charge_id": {"column": "id", "prefix": "ch_"},
        "created": "ts",
        "merchant_id": "shop",
        "merchant_mcc": {"value": "5411"},
        "merchant_country": {"value": "FR"},
        "card_fingerprint": {"column": "card", "transform": "fingerprint"},
        "card_brand": {"column": "card", "transform": "brand"},
        "card_funding": {"value": "credit"},
        "card_country": {"value": "FR"},
        "amount": {"column": "amt", "minor_units": {"column": "cur"}},
        "currency": {"column": "cur", "case": "lower"},
        "amount_usd": {"column": "amt", "usd_cents": {"column": "cur"}},
        "channel": {"column": "kind", "map": {"web": "ecommerce", "store": "card_present"}},
        "three_ds": {"value": "not_requested"},
        "cvc_check": {"value": "pass"},
        "address_check": {"value": "unchecked"},
        "outcome": {"value": "authorized"},
    },
    "drop": ["note"],
}


def row(i: int, *extra: str, shop: str = "a", amt: str = "10", ts: str = "2024-03-01T09:00:00Z") -> str:
    return ",".join([f"t{i}", ts, shop, VISA, amt, "eur", "web", "", *extra])


def write(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.write_bytes(("\n".join(lines) + end).encode())
    return path


def mapping(tmp_path: Path, name: str = "m.yaml", **top: Any) -> Path:
    m = {**MAPPING, **top}
    columns = top.pop("columns", None)
    if columns is not None:
        m["columns"] = {**MAPPING["columns"], **columns}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(m, sort_keys=False))
    return path


def ws_at(path: Path) -> Workspace:
    return Workspace.open(path, create=True)


def refused(tmp_path: Path, path: Path, m: Path, error: type[Exception] = ValidationError, **kw: Any) -> str:
    with pytest.raises(error) as e:
        import_file(ws_at(tmp_path / "refused-ws"), path, m, **kw)
    return str(e.value)


# ---- 1. a numeric label matches boolean words as it matches booleans -------------------------------------
LABEL = [{"column": "fraud", "when": 1, "delay": "30d"}]


def test_a_label_when_1_finds_the_same_fraud_in_csv_words_as_in_parquet_booleans(tmp_path: Path) -> None:
    words = ["true", "false", "True", " YES ", "0", "n"]
    path = write(tmp_path / "l.csv", [HEADER + ",fraud"] + [row(i, w) for i, w in enumerate(words)])
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"card": pa.string()}))
    booleans = [w.strip().lower() in ("true", "yes") for w in words]
    table = table.set_column(table.schema.get_field_index("fraud"), "fraud", pa.array(booleans))
    pq.write_table(table, tmp_path / "l.parquet")
    m = mapping(tmp_path, labels=LABEL)
    from_csv = import_file(ws_at(tmp_path / "a"), path, m)
    from_parquet = import_file(ws_at(tmp_path / "b"), tmp_path / "l.parquet", m)
    assert from_csv.rows["disputes"] == from_parquet.rows["disputes"] == 3
    labelled = {
        name: sorted(ws_at(tmp_path / name).read("disputes").column("charge_id").to_pylist()) for name in "ab"
    }
    assert labelled["a"] == labelled["b"] == ["ch_t0", "ch_t2", "ch_t3"]
    # `when: 0` reads the false words; a boolean is never 2
    zero = mapping(tmp_path, "z.yaml", labels=[{**LABEL[0], "when": 0}])
    assert import_file(ws_at(tmp_path / "c"), path, zero).rows["disputes"] == 3
    two = mapping(tmp_path, "t.yaml", labels=[{**LABEL[0], "when": 2}])
    assert import_file(ws_at(tmp_path / "d"), tmp_path / "l.parquet", two).rows.get("disputes", 0) == 0


def test_a_label_that_matches_no_row_is_warned_of_naming_the_values_held(tmp_path: Path) -> None:
    path = write(tmp_path / "l.csv", [HEADER + ",fraud", row(1, "N"), row(2, "no"), row(3, "")])
    summary = import_file(ws_at(tmp_path / "ws"), path, mapping(tmp_path, labels=LABEL))
    assert summary.rows == {"charges": 3, "disputes": 0}
    assert summary.warnings == (
        "labels[0].when: 1 matched none of the 3 rows it read; column 'fraud' holds 'N', 'no': it made no "
        "outcome",
    )
    fine = write(tmp_path / "f.csv", [HEADER + ",fraud", row(1, "1"), row(2, "0")])
    assert import_file(ws_at(tmp_path / "ws2"), fine, mapping(tmp_path, labels=LABEL)).warnings == ()


# ---- 2. a label's time is read where the label makes an outcome only -------------------------------------
def test_a_label_time_is_read_only_on_the_rows_that_make_an_outcome(tmp_path: Path) -> None:
    labels = [{"column": "fraud", "when": 1, "time": {"column": "fts"}}]
    lines = [
        HEADER + ",fraud,fts",
        row(1, "0", "N/A"),
        row(2, "0", "0000-00-00 00:00:00"),
        row(3, "0", "1970-01-01T00:00:00Z"),  # (before its charge: no outcome, no problem)
        row(4, "1", "2024-03-20T00:00:00Z"),
    ]
    m = mapping(tmp_path, labels=labels)
    summary = import_file(ws_at(tmp_path / "ws"), write(tmp_path / "l.csv", lines), m)
    assert summary.rows == {"charges": 4, "disputes": 1}
    dispute = ws_at(tmp_path / "ws").read("disputes").to_pylist()[0]
    assert dispute["charge_id"] == "ch_t4" and dispute["created"].isoformat() == "2024-03-20T00:00:00+00:00"
    # a labelled row's time is still checked, and named by its row
    lines[4] = row(4, "1", "N/A")
    text = refused(tmp_path, write(tmp_path / "bad.csv", lines), m)
    assert "1 problem(s)" in text
    assert "row 4 (line 5), column 'fts': expected an ISO 8601 time" in text and "received 'N/A'" in text


# ---- 3. personal data in ids -----------------------------------------------------------------------------
def test_an_email_address_or_a_written_address_in_an_id_is_refused_never_shown(tmp_path: Path) -> None:
    lines = [
        HEADER + ",addr,cus",
        row(1, "1 Main St Springfield", "ann.lee@example.com"),
        row(2, '"12 Rue X, Paris"', "cus_2"),
        row(3, "addr_7f3a", '"""Ann Lee"" <ann@example.org>"'),
        row(4, "addr_9", "+1 555 123 4567"),
    ]
    path = write(tmp_path / "e.csv", lines)
    m = mapping(tmp_path, columns={"shipping_address_id": "addr", "customer_id": "cus"})
    text = refused(tmp_path, path, m)
    assert "5 problem(s)" in text
    assert (
        "row 1 (line 2), column 'cus' (customer_id): expected an id that is not an e-mail address (personal "
        "data: store its keyed hash, `customer_id: {hash: [cus]}`" in text
    )
    assert (
        "row 4 (line 5), column 'cus' (customer_id): expected an id that is not a phone number (personal "
        "data: store its keyed hash, `customer_id: {hash: [cus]}`); received a phone number (not shown)"
    ) in text
    assert "row 3 (line 4), column 'cus' (customer_id)" in text
    assert (
        "row 1 (line 2), column 'addr' (shipping_address_id): expected a keyed hash of the shipping " in text
    )
    assert "row 2 (line 3), column 'addr' (shipping_address_id)" in text
    assert "`shipping_address_id: {hash: [addr]}`" in text
    for value in ("ann.lee", "Ann Lee", "Main St", "Rue X", "example.org", "123 4567"):
        assert value not in text.replace("'example.com'", "")
    hashed = mapping(
        tmp_path,
        "h.yaml",
        columns={"shipping_address_id": {"hash": ["addr"]}, "customer_id": {"hash": ["cus"]}},
    )
    assert import_file(ws_at(tmp_path / "ws"), path, hashed).rows == {"charges": 4}
    stored = str(ws_at(tmp_path / "ws").read("charges").to_pylist())
    assert "ann.lee" not in stored and "Ann Lee" not in stored and "Main St" not in stored


def test_ids_that_merely_hold_an_at_sign_or_spaces_are_kept(tmp_path: Path) -> None:
    # nor do ids of digits alone, or with a '+' and too few digits to be a phone number
    lines = [HEADER + ",addr,cus", row(1, "addr_1", "acct@2"), row(2, "tok-9", "a@b")]
    lines += [row(3, "addr_3", "4155550100"), row(4, "addr_4", "+1-2345"), row(5, "a5", "415-555-01")]
    lines += [row(6, "a6", "0012025550143"), row(7, "a7", "12-345-678-9012")]
    path = write(tmp_path / "e.csv", lines)
    m = mapping(tmp_path, columns={"shipping_address_id": "addr", "customer_id": "cus"})
    assert import_file(ws_at(tmp_path / "ws"), path, m).rows == {"charges": 7}
    spaced = write(tmp_path / "s.csv", [HEADER, row(1, shop="Koss and Sons")])  # (a merchant id may)
    assert import_file(ws_at(tmp_path / "ws2"), spaced, mapping(tmp_path)).rows == {"charges": 1}


# ---- 4. a closing quote that more text follows on its line -----------------------------------------------
@pytest.mark.parametrize("cell", ['"Joe"s Diner"', '"a "x" b"', '"Joe"s Diner'])
def test_a_closing_quote_followed_by_more_text_on_its_line_is_refused(tmp_path: Path, cell: str) -> None:
    path = write(tmp_path / "q.csv", [HEADER, row(1), row(2, shop=cell)])
    text = refused(tmp_path, path, mapping(tmp_path), ConfigError)
    assert text.startswith(
        f"Import source '{path}': expected a closing double quote for every quoted value; received a quote "
        "opening a value at row 2 (line 3), column 'shop' whose closing quote more text follows"
    )
    assert "Joe" not in text and "x" not in text.split("received")[1].split("(")[0]


def test_quotes_written_as_csv_writes_them_still_import(tmp_path: Path) -> None:
    cells = ['"Joe""s ""Diner"""', 'a 5" b', '"x"  ', '""', '"a, ""b"""\t']
    path = write(
        tmp_path / "q.csv", [HEADER] + [row(i).removesuffix(",") + "," + c for i, c in enumerate(cells)]
    )
    assert import_file(ws_at(tmp_path / "ws"), path, mapping(tmp_path)).rows == {"charges": 5}
    table, _ = read_source(path)
    assert table.column("note").to_pylist() == ['Joe"s "Diner"', 'a 5" b', "x  ", None, 'a, "b"\t']


# ---- 5. float32 amounts ----------------------------------------------------------------------------------
def test_float32_amounts_import_at_their_shortest_decimal(tmp_path: Path) -> None:
    amounts = [13.8, 0.29, 12345.67, 99.99, 1.15]
    table = pa.table(
        {
            "id": [f"t{i}" for i in range(5)],
            "ts": ["2024-03-01T09:00:00Z"] * 5,
            "shop": ["a"] * 5,
            "card": [VISA] * 5,
            "amt": pa.array(np.array(amounts, dtype=np.float32)),
            "cur": ["eur"] * 5,
            "kind": ["web"] * 5,
        }
    )
    pq.write_table(table, tmp_path / "f32.parquet")
    m = mapping(tmp_path, drop=[])
    import_file(ws_at(tmp_path / "ws"), tmp_path / "f32.parquet", m)
    stored = ws_at(tmp_path / "ws").read("charges", ["charge_id", "amount"]).sort_by("charge_id")
    assert stored.column("amount").to_pylist() == [1380, 29, 1234567, 9999, 115]
    # a real fraction of a cent is still refused, quoted at its shortest decimal
    table = table.set_column(4, "amt", pa.array(np.array([12.345] * 5, dtype=np.float32)))
    pq.write_table(table, tmp_path / "frac.parquet")
    text = refused(tmp_path, tmp_path / "frac.parquet", m)
    assert "received 12.345" in text and "digits after the point" not in text


# ---- 6. --separator --------------------------------------------------------------------------------------
def test_the_separator_option_reads_sparkovs_own_pipe_separated_output(tmp_path: Path) -> None:
    source = pq.read_table(SAMPLE)
    path = tmp_path / "sparkov.csv"
    pacsv.write_csv(source, path, pacsv.WriteOptions(delimiter="|", quoting_style="needed"))
    text = refused(tmp_path, path, "sparkov", ConfigError)
    assert "the file seems separated by '|'" in text
    assert "`payfm import --separator '|'` (`import_file(..., separator=\"|\")`)" in text
    summary = import_file(ws_at(tmp_path / "ws"), path, "sparkov", separator="|")
    assert summary.rows == {"charges": 384, "disputes": 78}
    result = CliRunner().invoke(
        cli, ["-w", str(tmp_path / "cli"), "import", str(path), "-m", "sparkov", "--separator", "|"]
    )
    assert result.exit_code == 0, result.output
    assert "384 charges, 78 disputes" in result.output


@pytest.mark.parametrize("given", ["\t", "\\t", "tab"])
def test_the_separator_option_takes_a_tab_as_written(tmp_path: Path, given: str) -> None:
    path = write(tmp_path / "t.csv", [HEADER.replace(",", "\t"), row(1).replace(",", "\t")])
    assert import_file(ws_at(tmp_path / "ws"), path, mapping(tmp_path), separator=given).rows == {
        "charges": 1
    }


def test_a_separator_payfm_does_not_read_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", [HEADER, row(1)])
    text = refused(tmp_path, path, mapping(tmp_path), ConfigError, separator=":")
    assert text.startswith("The 'separator' of import_file must be None or one of ',', ';', '|' and a tab")
    assert text.endswith("Got ':'.")
    result = CliRunner().invoke(
        cli,
        ["-w", str(tmp_path / "cli"), "import", str(path), "-m", str(mapping(tmp_path)), "--separator", ":"],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output


# ---- 7. .tsv and .txt ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["t.tsv", "t.txt", "t.tsv.gz", "t.TXT.gz"])
def test_tsv_and_txt_files_are_read_as_separated_text(tmp_path: Path, name: str) -> None:
    data = ("\n".join([HEADER.replace(",", "\t"), row(1).replace(",", "\t")]) + "\n").encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    m = mapping(tmp_path, csv={"separator": "\t"})
    assert import_file(ws_at(tmp_path / "ws"), path, m).rows == {"charges": 1}
    # without the tab separator: the usual advice, not a refused suffix
    text = refused(tmp_path, path, mapping(tmp_path, "c.yaml"), ConfigError)
    assert "the file seems separated by tabs" in text


def test_other_suffixes_are_refused_naming_the_readable_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "t.xls", [HEADER, row(1)])
    text = refused(tmp_path, path, mapping(tmp_path), ConfigError)
    assert (
        "expected a .csv, .csv.gz, .parquet or .pq file (or text separated as the mapping says named " in text
    )
    assert text.endswith("received '.xls'.")


# ---- 8. ambiguous: infer with sparse night traffic -------------------------------------------------------
def berlin(tmp_path: Path, times: list[str]) -> tuple[Path, Path]:
    lines = [HEADER] + [row(i, ts=f"2024-10-27 {t}") for i, t in enumerate(times)]
    created = {"column": "ts", "timezone": "Europe/Berlin", "ambiguous": "infer"}
    return write(tmp_path / "b.csv", lines), mapping(tmp_path, columns={"created": created})


def test_infer_reads_a_repeated_hour_whose_rows_step_back_less_than_half_an_hour(tmp_path: Path) -> None:
    path, m = berlin(tmp_path, ["01:50:00", "02:30:00", "02:10:00", "03:10:00"])
    import_file(ws_at(tmp_path / "ws"), path, m)
    created = ws_at(tmp_path / "ws").read("charges", ["charge_id", "created"]).sort_by("charge_id")
    utc = [t.strftime("%H:%M") for t in created.column("created").to_pylist()]
    assert utc == ["23:50", "00:30", "01:10", "02:10"]


def test_infer_refuses_a_step_back_within_one_minute(tmp_path: Path) -> None:
    # a file sorted to the minute only: 02:30:40 then 02:30:10 may be one pass
    path, m = berlin(tmp_path, ["01:50:00", "02:30:40", "02:30:10", "03:10:00"])
    text = refused(tmp_path, path, m)
    assert (
        "row 2 (line 3), column 'ts' (created): expected a local time in a file whose rows of that hour"
        in text
    )


# ---- 9. Excel's sep= line; empty header names ------------------------------------------------------------
def test_an_excel_separator_line_is_skipped_and_lines_still_count_from_the_file_start(tmp_path: Path) -> None:
    semi = [HEADER.replace(",", ";"), row(1).replace(",", ";"), row(2, amt="x").replace(",", ";")]
    m = mapping(tmp_path, csv={"separator": ";"})
    for end in ("\n", "\r\n"):
        good = write(tmp_path / "s.csv", ["sep=;", *semi[:2]]).read_bytes().replace(b"\n", end.encode())
        (tmp_path / "s.csv").write_bytes(good)
        assert import_file(ws_at(tmp_path / f"ws{len(end)}"), tmp_path / "s.csv", m).rows == {"charges": 1}
    text = refused(tmp_path, write(tmp_path / "bad.csv", ["sep=;", *semi]), m)
    assert "row 2 (line 4), column 'amt' (amount): expected a number; received 'x'" in text
    ragged = write(tmp_path / "r.csv", ["sep=;", semi[0], semi[1] + ";extra", semi[1]])
    assert "row 1 (line 3): expected 8 cells" in refused(tmp_path, ragged, m)
    quoted = write(tmp_path / "q.csv", ["sep=;", semi[0], semi[1], semi[1].replace(";a;", ';"a"b;')])
    assert "at row 2 (line 4), column 'shop'" in refused(tmp_path, quoted, m, ConfigError)
    blank = write(tmp_path / "n.csv", ["sep=;", semi[0], "", semi[2]])
    assert "row 1 (line 4), column 'amt' (amount)" in refused(tmp_path, blank, m)


def test_an_excel_separator_line_naming_another_separator_says_what_to_set(tmp_path: Path) -> None:
    path = write(tmp_path / "s.csv", ["sep=;", HEADER.replace(",", ";"), row(1).replace(",", ";")])
    text = refused(tmp_path, path, mapping(tmp_path), ConfigError)
    assert text == (
        f"Import source '{path}': expected comma-separated columns; received a first line `sep=;` (Excel's "
        "line naming the separator): the file is separated by ';'. Set the mapping's separator to it: "
        "`csv: {separator: \";\"}`, or give it to the import: `payfm import --separator ';'`."
    )
    assert import_file(ws_at(tmp_path / "ws"), path, mapping(tmp_path), separator=";").rows == {"charges": 1}


def test_an_empty_header_name_is_listed_by_its_position(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", [HEADER + ",", row(1) + ","])
    summary = import_file(ws_at(tmp_path / "ws"), path, mapping(tmp_path))
    assert summary.unmapped_columns == ("(empty name, column 9)",)
    result = CliRunner().invoke(
        cli, ["-w", str(tmp_path / "cli"), "import", str(path), "-m", str(mapping(tmp_path))]
    )
    assert "Not in the mapping, not stored (1 column): (empty name, column 9)" in result.output


@pytest.mark.parametrize(
    "phone", ["1-800-555-0100", "1 (415) 555-0100", "001-202-555-0143", "tel:+14155550100", "(415) 555-0100"]
)
def test_phone_numbers_written_in_other_common_forms_are_refused_too(tmp_path: Path, phone: str) -> None:
    path = write(tmp_path / "p.csv", [HEADER + ",cus", row(1, phone)])
    text = refused(tmp_path, path, mapping(tmp_path, columns={"customer_id": "cus"}))
    assert "received a phone number (not shown)" in text and phone not in text
