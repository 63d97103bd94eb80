"""Two ways an import took in less than the file held, silently: a CSV double quote never closed (Arrow read
the rest of the file, or the lines up to the next quote, into one cell, or lost rows) and card numbers in
Parquet columns the scan did not read (a struct's field names, decimals, unions). Both are refused naming the
file and where, never the text, and nothing is written; files without them import as before."""

from __future__ import annotations

import decimal
import gzip
import random
import time
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from payfm.errors import ConfigError
from payfm.events.cards import card_number_fields, card_number_rows
from payfm.events.importer import _check_quotes, import_file, read_source
from payfm.events.validate import ValidationError
from test_import import ROWS, SAMPLE, VISA, changed, failed_import, state, write_mapping, ws_at

NAME = "Rebecca Farrell"  # personal data in the row that must not be echoed either
UNCLOSED = "expected a closing double quote for every quoted value; received a quote opening a value at"
ADVICE = 'Close the quote, write a quote inside a quoted value twice (""), or leave the value unquoted.'


def _lines(n: int = 4, quoted_breaks: int = 0, quoted_shops: bool = False) -> list[str]:
    """The lines of a CSV file in ROWS' columns with ``n`` rows (ROWS repeated, ids unique); every
    ``quoted_breaks``-th row's shop is a quoted value holding a line break (0: none), or every shop quoted."""
    names = list(ROWS)
    lines = [",".join(names)]
    for i in range(n):
        row = {k: str(v[i % 4]) for k, v in ROWS.items()} | {"id": f"t{i}"}
        if quoted_breaks and i % quoted_breaks == 0:
            row["shop"] = f'"shop {i}\nsecond line"'
        elif quoted_shops:
            row["shop"] = f'"{row["shop"]}"'
        lines.append(",".join(row[k] for k in names))
    return lines


def _write(path: Path, lines: list[str], end: str = "\n") -> Path:
    data = ("\n".join(lines) + end).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _unclosed(lines: list[str], row: int, column: str) -> list[str]:
    """``lines`` with the value of ``column`` in data row ``row`` (1-based) opened by a quote and never
    closed there (a closing quote dropped); the row's email cell holds a name and a card number."""
    names = lines[0].split(",")
    cells = lines[row].split(",")
    cells[names.index("email")] = f"{NAME} {VISA}"
    cells[names.index(column)] = '"' + cells[names.index(column)].strip('"')
    return [*lines[:row], ",".join(cells), *lines[row + 1 :]]


# ---- a quote never closed ----------------------------------------------------------------------------------
def test_a_quote_in_the_last_column_is_refused_not_swallowing_the_rest(tmp_path: Path) -> None:
    # Before: rows 3 and 4 vanished into row 2's 'email' cell and the import wrote 2 charges, no error.
    path = _write(tmp_path / "export.csv", _unclosed(_lines(), 2, "email"))
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    assert text == (
        f"Import source '{path}': {UNCLOSED} row 2 (line 3), column 'email' that nothing closes: the rest of "
        f"the file (lines 3-5) would be read as that one value. {ADVICE}"
    )
    assert VISA not in text and NAME not in text and "t1" not in text


def test_a_quote_closed_only_by_the_next_quoted_value_is_refused(tmp_path: Path) -> None:
    # Every shop is quoted: row 2's unclosed quote ends at row 4's opening one, and before, rows 2-4 were
    # one charge whose shop held the lines between, with no error (the cells after it are row 4's).
    lines = _unclosed(_lines(6, quoted_shops=True), 2, "shop")
    text = failed_import(
        tmp_path, _write(tmp_path / "export.csv", lines), write_mapping(tmp_path), ConfigError
    )
    assert text == (
        f"Import source '{tmp_path / 'export.csv'}': {UNCLOSED} row 2 (line 3), column 'shop' that only a "
        "quote on line 4 closes, followed by more text (a quote opening another value?): the lines between "
        f"(lines 3-4) would be read as that one value. {ADVICE}"
    )
    assert VISA not in text and NAME not in text


def test_a_quote_in_another_column_is_named_rather_than_a_ragged_row(tmp_path: Path) -> None:
    # The swallowing row is a cell short: the quote is the cause, and is named instead of "8 cells".
    path = _write(tmp_path / "export.csv", _unclosed(_lines(), 3, "shop"), end="")
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    assert (
        f"{UNCLOSED} row 3 (line 4), column 'shop' that nothing closes: the rest of the file (lines 4-5)"
        in text
    )
    assert "cells" not in text and VISA not in text and NAME not in text


def test_a_quote_in_the_header_is_named_by_line_and_position(tmp_path: Path) -> None:
    lines = _lines()
    lines[0] = lines[0].replace(",shop,", ',"shop,')
    text = failed_import(tmp_path, _write(tmp_path / "h.csv", lines), write_mapping(tmp_path), ConfigError)
    assert f"{UNCLOSED} line 1 (the header), column 6 that nothing closes" in text


@pytest.mark.parametrize("name", ["long.csv", "long.csv.gz"])
@pytest.mark.parametrize("row", [7, 25_000, 39_990])
def test_a_quote_in_a_file_of_many_blocks_is_found_wherever_it_is(
    tmp_path: Path, name: str, row: int
) -> None:
    # 40,000 rows (about 2 MiB): Arrow reads the file in blocks of 1 MiB. Before, a quote in an early block
    # lost the block's rows silently (the import wrote the others).
    lines = _lines(40_000)
    path = _write(tmp_path / name, _unclosed(lines, row, "kind"))
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    assert f"{UNCLOSED} row {row} (line {row + 1}), column 'kind' that nothing closes" in text
    assert VISA not in text and NAME not in text


def test_rows_and_lines_count_the_quoted_line_breaks_before(tmp_path: Path) -> None:
    lines = _lines(3_000, quoted_breaks=997)  # rows 1, 998, 1995 and 2992 span two lines
    path = _write(tmp_path / "breaks.csv", _unclosed(lines, 2_500, "shop"))
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    assert f"{UNCLOSED} row 2500 (line 2504), column 'shop' that only a quote on line 2996 closes" in text


def test_rows_are_numbered_as_arrow_numbers_them_past_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_bytes(b'a,b,c\n1,2,3\n\n4,5,6\r\n\r\n7,"x\n\ny",9\n10,11,"12\n13,14,15\n')
    with pytest.raises(ConfigError) as e:
        read_source(path)  # (Arrow skips blank lines: 10,11,"12 is its row 4, on line 9)
    assert (
        f"{UNCLOSED} row 4 (line 9), column 'c' that nothing closes: the rest of the file (lines 9-10)"
        in str(e.value)
    )


def test_the_cli_says_it_in_one_line_and_creates_no_workspace(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from payfm.cli.main import cli

    path = _write(tmp_path / "export.csv", _unclosed(_lines(), 2, "email"))
    args = ["-w", str(tmp_path / "ws"), "import", str(path), "--mapping", str(write_mapping(tmp_path))]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "Traceback" not in r.output and not (tmp_path / "ws").exists()
    assert len(r.output.strip().splitlines()) == 1 and "row 2 (line 3), column 'email'" in r.output
    assert VISA not in r.output and NAME not in r.output


@pytest.mark.parametrize("name", ["many.csv", "many.csv.gz"])
def test_quoted_line_breaks_are_read_in_a_file_of_many_blocks(tmp_path: Path, name: str) -> None:
    # A quoted line break at a block's end made a ragged row before (Arrow cut the block there).
    n = 40_000
    path = _write(tmp_path / name, _lines(n, quoted_breaks=7))
    # The shop, holding line breaks, is read and scanned, not stored: an id holds none (docs/events.md).
    mapping = changed(merchant_id={"value": "acct_1"})
    summary = import_file(ws_at(tmp_path / "ws"), path, write_mapping(tmp_path, mapping))
    assert summary.rows_read == n and summary.rows["charges"] == n
    table, _ = read_source(path)
    assert table.column("id").to_pylist() == [f"t{i}" for i in range(n)]
    assert table.column("shop")[39_998].as_py() == "shop 39998\nsecond line"


@pytest.mark.parametrize(
    "tail",
    [
        '"closed at the end"',  # no line break after the last value
        '""',  # an empty quoted value last
        '"a quote "" inside"\n',
        '"two\r\nlines"\r\n',
        '5" screen\n',  # a quote inside an unquoted value is read as is
        '"ends with a quote """\n',
    ],
)
def test_files_whose_quotes_all_close_import(tmp_path: Path, tail: str) -> None:
    lines = _lines()
    lines[-1] = lines[-1].rsplit(",", 1)[0] + "," + tail.rstrip("\r\n")
    path = _write(tmp_path / "ok.csv", lines, end=tail[len(tail.rstrip("\r\n")) :])
    assert import_file(ws_at(tmp_path / "ws"), path, write_mapping(tmp_path)).rows["charges"] == 4


def _swallows(text: str) -> bool:
    """Reference, read character by character as Arrow's parser reads: a quoted value open at the end of the
    file, or closed by a quote that more text follows (on its line, or after the line breaks it holds: Arrow
    would add that text to the value, changing it; since 2026-12-07 refused on one line too)."""
    state, i = "start", 0  # state: start (of a value), quoted, unquoted
    while i < len(text):
        c = text[i]
        if state == "quoted":
            if c == '"' and text[i + 1 : i + 2] == '"':
                i += 1  # a doubled quote is one quote inside the value
            elif c == '"':
                after = text[i + 1 :].lstrip(" \t")[:1]  # (spaces or tabs may follow the closing quote)
                if after not in ("", ",", "\r", "\n"):
                    return True
                state = "unquoted"
        elif c in ",\r\n":
            state = "start"
        else:
            state = "quoted" if state == "start" and c == '"' else "unquoted"
        i += 1
    return state == "quoted"


def test_random_files_are_refused_exactly_when_a_quote_swallows_lines(tmp_path: Path) -> None:
    _refused_as_swallowing(
        tmp_path, ["a", "b", ",", '"', '""', "\n", "\r\n", "\r", "x y", '"q"', "a,b,c\n"], 5
    )


def test_random_files_with_spaces_after_quotes_are_refused_exactly_when_a_quote_swallows_lines(
    tmp_path: Path,
) -> None:
    pieces = ["a", ",", '"', '""', "\n", "\r\n", " ", "\t", '" ', '"\t,', '"q" ', "x y", "a,b,c\n"]
    _refused_as_swallowing(tmp_path, pieces, 6)


def _refused_as_swallowing(tmp_path: Path, pieces: list[str], seed: int) -> None:
    """Random files of ``pieces`` are refused for a quote exactly when :func:`_swallows` says so."""
    rng = random.Random(seed)
    seen = {True: 0, False: 0}
    for trial in range(800):
        text = "h1,h2,h3\n" + "".join(rng.choice(pieces) for _ in range(rng.randint(0, 25)))
        path = _write(tmp_path / ("t.csv.gz" if trial % 3 == 0 else "t.csv"), [text], end="")
        try:
            read_source(path)
            refused = False
        except ConfigError as e:
            assert UNCLOSED in str(e), (text, str(e))
            refused = True
        except ValidationError:  # a ragged row
            refused = False
        assert refused == _swallows(text), repr(text)
        seen[refused] += 1
    assert seen[True] > 100 and seen[False] > 100


def test_a_quoted_sparkov_export_imports(tmp_path: Path) -> None:
    # Arrow's writer quotes every text value: 26 columns, every one quoted (the check reads only the end)
    csv = tmp_path / "sparkov.csv"
    pacsv.write_csv(pq.read_table(SAMPLE), csv)
    assert (
        import_file(ws_at(tmp_path / "ws"), csv, "sparkov").rows["charges"] == pq.read_table(SAMPLE).num_rows
    )


# ---- cells over 128 KiB, many multi-line values, spaces after a closing quote ------------------------------
@pytest.mark.parametrize(
    ("body", "where"),
    [
        (
            "x" * 200_000 + ',"y\n1,2\n',
            "row 1 (line 2), column 'b' that nothing closes: the rest of the file (lines 2-3)",
        ),
        (
            '"' + "x\n" * 100_000 + '","y\n1,2\n',
            "row 1 (line 100002), column 'b' that nothing closes: the rest of the file (lines 100002-100003)",
        ),
    ],
    ids=["unquoted", "quoted-lines"],
)
def test_a_cell_over_128_kib_before_the_quote_is_counted(tmp_path: Path, body: str, where: str) -> None:
    # Before: a traceback (_csv.Error: field larger than field limit (131072)), the column counted by csv
    path = tmp_path / "big.csv"
    path.write_bytes(("a,b\n" + body).encode())
    with pytest.raises(ConfigError) as e:
        read_source(path)
    assert f"{UNCLOSED} {where}" in str(e.value)


@pytest.mark.parametrize("name", ["h.csv", "h.csv.gz"])
def test_a_header_quote_in_a_file_over_128_kib_is_one_line_at_the_cli(tmp_path: Path, name: str) -> None:
    # Before: the header, read by the csv module, ran into the rest of the file past 128 KiB: a traceback
    from click.testing import CliRunner

    from payfm.cli.main import cli

    lines = _lines(5_000)  # (about 400 KiB)
    lines[0] = lines[0].replace(",shop,", ',"shop,')
    path = _write(tmp_path / name, lines)
    args = ["-w", str(tmp_path / "ws"), "import", str(path), "--mapping", str(write_mapping(tmp_path))]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert (
        f"{UNCLOSED} line 1 (the header), column 6 that nothing closes: the rest of the file (lines 1-5001)"
        in r.output
    )


def test_a_header_name_over_128_kib_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_bytes(b'"' + b"n" * 200_000 + b'",b\n1,2\n')
    with pytest.raises(ConfigError) as e:
        read_source(path)
    assert str(e.value) == (
        f"Import source '{path}': expected a header line of column names; received a header that cannot be "
        "read (field larger than field limit (131072)): a name over 128 KiB, or a quoted name running over "
        "many lines?"
    )


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"a,b\n" + b"x" * 200_000 + b",\xff\n1,2\n", "row 1 (line 2), column 'b'"),
        (b"a," + b"n" * 200_000 + b"\n\xff,2\n", "row 1 (line 2), column 1"),  # (names over 128 KiB: numbers)
    ],
    ids=["cell", "header"],
)
def test_a_byte_not_utf8_after_a_cell_over_128_kib_is_named(tmp_path: Path, data: bytes, where: str) -> None:
    # Before: a traceback (the cells before the byte, and the header's names, counted by the csv module)
    path = tmp_path / "latin1.csv"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as e:
        read_source(path)
    assert f"expected UTF-8 text; received the byte 0xff at {where}, which is not UTF-8" in str(e.value)


def test_a_quote_after_many_multi_line_values_and_blank_lines_is_found_in_linear_time(tmp_path: Path) -> None:
    # A double-spaced export with multi-line addresses. Before: every blank line was compared with every
    # multi-line value before the quote (20,000 of each: 18 s; 40,000: 71 s)
    n = 20_000
    path = tmp_path / "double.csv"
    path.write_bytes(b"a,b\n" + b'1,"street\ncity"\n\n' * n + b'2,"unclosed\n3,4\n')
    start = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        read_source(path)
    assert time.perf_counter() - start < 3
    line = 3 * n + 2
    assert (
        f"{UNCLOSED} row {n + 1} (line {line}), column 'b' that nothing closes: the rest of the file (lines "
        f"{line}-{line + 1})"
    ) in str(e.value)


def test_a_file_of_multi_line_values_is_checked_in_one_pass_with_no_copy(tmp_path: Path) -> None:
    # Quoted line breaks make rows and lines disagree: the file is read again and checked. Before, the check
    # kept each multi-line value's start and end (about 120 bytes each) and copied the file without its
    # byte-order mark: the peak was 18 times the file's size, now the file once.
    n = 1_000_000
    data = b"\xef\xbb\xbfa,b\n" + b'"a\nb",1\n' * n
    path = tmp_path / "lines.csv"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        table, _ = read_source(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert table.num_rows == n and table.column("a")[n - 1].as_py() == "a\nb"
    assert peak < 1.25 * len(data)


@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_spaces_after_a_multi_line_values_closing_quote_are_read_as_after_a_one_line_one(
    tmp_path: Path, end: str
) -> None:
    # Before: '"x<line break>y" ,2' was refused (a quote on a later line followed by more text), '"x" ,2' read
    path = tmp_path / "spaces.csv"
    path.write_bytes(end.join(["a,b", '"x', 'y" ,2', '"z"\t,"3', '4"  \t', '5,"6"', ""]).encode())
    table, _ = read_source(path)
    assert table.to_pylist() == [
        {"a": f"x{end}y ", "b": "2"},
        {"a": "z\t", "b": f"3{end}4  \t"},
        {"a": "5", "b": "6"},
    ]
    path.write_bytes(end.join(["a,b", '"x', 'y" z,2', ""]).encode())  # (text after the spaces: refused)
    with pytest.raises(ConfigError) as e:
        read_source(path)
    assert f"{UNCLOSED} row 1 (line 2), column 'a' that only a quote on line 3 closes" in str(e.value)


_MIB = 1 << 20


@pytest.mark.parametrize(
    "body",
    [
        b'"' * (8 * _MIB + 1),  # (one quoted value of quotes, never closed)
        b',"' * (4 * _MIB),
        b'\n"' * (4 * _MIB),  # (a blank line, then a multi-line value of one line break, and again)
        b'"a\nb",1\n' * _MIB,
        b'x"y"z,w"\n' * _MIB,  # (quotes inside unquoted values)
        b'"a",' * (2 * _MIB) + b'"x\n',  # (a row of 2 million cells, then a quote)
        b'1,"street\ncity"\n\n' * (_MIB // 2) + b'2,"x\n3,4\n',
        b'1,"x' + b"\n" * (8 * _MIB),
        b'"a\nb"' + b" " * (8 * _MIB) + b"x",
        b'"' + b'""' * (4 * _MIB) + b"\n",
    ],
    ids=[
        "quotes",
        "comma-quote",
        "break-quote",
        "multi-line",
        "inside",
        "cells",
        "double",
        "breaks",
        "spaces",
        "doubled",
    ],
)
def test_the_check_of_quotes_is_linear_on_adversarial_files(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "adversarial.csv"
    path.write_bytes(b"a,b\n" + body)  # (8 MiB)
    start = time.perf_counter()
    try:
        _check_quotes(path, ["a", "b"])
    except ConfigError as e:
        assert UNCLOSED in str(e)
    # 0.7 s here idle, 4 s with six busy processes on two cores; quadratic would take minutes
    assert time.perf_counter() - start < 30


# ---- nested columns ----------------------------------------------------------------------------------------
def _parquet(tmp_path: Path, extra: dict[str, pa.Array]) -> Path:
    path = tmp_path / "export.parquet"
    pq.write_table(pa.table({**{k: pa.array(v) for k, v in ROWS.items()}, **extra}), path)
    return path


def test_a_card_number_as_a_nested_field_name_is_refused_and_never_shown(tmp_path: Path) -> None:
    meta = pa.array([{"plan": "a", f"card {VISA}": None}] * 4)
    deep = pa.array([[{"k": {VISA: 1}}]] * 4, pa.list_(pa.struct([("k", pa.struct([(VISA, pa.int8())]))])))
    text = failed_import(tmp_path, _parquet(tmp_path, {"meta": meta, "deep": deep}), write_mapping(tmp_path))
    assert "2 problem(s); nothing was written." in text
    for column in ("meta", "deep"):
        assert (
            f"column '{column}': expected field names without a card number (in a struct, map or union, at "
            "any depth); received a nested field name holding a full card number (not shown)"
        ) in text
    assert VISA not in text and "4242" not in text


@pytest.mark.parametrize(
    "column",
    [
        pa.array(
            [[{"note": "ok"}], [], None, [{"note": f"paid {VISA}"}]],
            pa.list_(pa.struct([("note", pa.string())])),
        ),
        pa.array(
            [[("k", ["x"])], [], None, [("k", ["y", VISA])]], pa.map_(pa.string(), pa.list_(pa.string()))
        ),
        pa.array([1, 2, None, decimal.Decimal(VISA)], pa.decimal128(19, 0)),  # a DECIMAL card column
        pa.array([b"x" * 16, b"y" * 16, None, VISA.encode()], pa.binary(16)),
    ],
    ids=["list<struct>", "map<list>", "decimal", "fixed_size_binary"],
)
def test_card_numbers_in_nested_and_other_parquet_values_are_refused(
    tmp_path: Path, column: pa.Array
) -> None:
    text = failed_import(tmp_path, _parquet(tmp_path, {"extra": column}), write_mapping(tmp_path))
    assert "1 problem(s)" in text and "row 4, column 'extra': expected no card numbers" in text
    assert VISA not in text


def test_clean_nested_columns_are_read_scanned_and_not_stored(tmp_path: Path) -> None:
    # The choice docs/events.md explains: a nested column is scanned like any other, not refused
    meta = pa.array([{"plan": "gold", "tags": ["a", "b"]}] * 4)
    attrs = pa.array([[("color", "red")]] * 4, pa.map_(pa.string(), pa.string()))
    ws = ws_at(tmp_path / "ws")
    before = state(ws)
    summary = import_file(ws, _parquet(tmp_path, {"meta": meta, "attrs": attrs}), write_mapping(tmp_path))
    assert summary.rows["charges"] == 4 and summary.unmapped_columns == ("meta", "attrs")
    assert state(ws) != before and "gold" not in str(ws.read("charges").to_pylist())


def test_unions_run_ends_list_views_and_decimals_are_scanned() -> None:
    sparse = pa.UnionArray.from_sparse(
        pa.array([0, 1, 1], pa.int8()), [pa.array(["x", "y", "z"]), pa.array([1, int(VISA), 2])]
    )
    assert card_number_rows(sparse).tolist() == [1]
    dense = pa.UnionArray.from_dense(
        pa.array([0, 1, 0], pa.int8()),
        pa.array([0, 0, 1], pa.int32()),
        [pa.array(["x", VISA]), pa.array([3])],
    )
    assert card_number_rows(dense).tolist() == [2]
    runs = pa.RunEndEncodedArray.from_arrays(pa.array([2, 5], pa.int32()), pa.array(["x", VISA]))
    assert card_number_rows(runs).tolist() == [2, 3, 4]
    assert card_number_rows(pa.array([["x"], [], [VISA]], pa.list_view(pa.string()))).tolist() == [2]
    assert card_number_rows(pa.array([[1.0], [float(VISA)]], pa.large_list(pa.float64()))).tolist() == [1]
    decimals = pa.array([decimal.Decimal(VISA + ".00"), decimal.Decimal(VISA + ".50")], pa.decimal128(21, 2))
    assert card_number_rows(decimals).tolist() == [0]  # (a fraction is no card number, as for floats)


def test_nested_field_names_are_read_at_any_depth() -> None:
    assert card_number_fields(pa.map_(pa.string(), pa.struct([(f"x{VISA}", pa.int8())])))
    assert card_number_fields(pa.sparse_union([pa.field(VISA, pa.int8())]))
    assert card_number_fields(
        pa.list_(pa.struct([("a", pa.struct([(f"{VISA[:8]} {VISA[8:]}", pa.int8())]))]))
    )
    assert not card_number_fields(pa.struct([("a", pa.list_(pa.struct([("b", pa.string())])))]))
    assert not card_number_fields(pa.dictionary(pa.int8(), pa.string()))
    assert not card_number_fields(pa.struct([("fp_0123456789abcdef", pa.string())]))
