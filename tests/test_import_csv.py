"""The importer on badly formed input: impossible dates in a `format`, card numbers in column names, CSV
files with ragged rows, another separator or another encoding. Every one is refused naming the file, the
row and line (or the column's position), what was expected and what was received, never a row's text or a
card number, and nothing is written."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from payfm.errors import ConfigError
from payfm.events.import_problems import Problems
from payfm.events.import_times import to_times
from payfm.events.importer import read_source
from payfm.events.mapping import parse_mapping
from test_import import ROWS, VISA, changed, failed_import, write_csv, write_mapping

SSN, NAME = "835-94-0955", "Rebecca"


# ---- impossible dates in a `format` ----------------------------------------------------------------------
def _times(fmt: str, texts: list[str], zone: str = "UTC") -> tuple[list[Any], Problems]:
    """``texts`` read by a time field in ``fmt`` (naive ones in ``zone``): the UTC datetimes, the problems."""
    m = changed(created={"column": "ts", "format": fmt})
    m["timezone"] = zone
    mapping = parse_mapping(m, "m.yaml")
    out = Problems()
    result = to_times(mapping.fields["created"], pa.table({"ts": pa.array(texts, pa.string())}), mapping, out)
    assert result is not None
    return result.to_pylist(), out


def _days() -> list[datetime]:
    """Every day of 2023 and 2024 (a leap year), each at another time of day."""
    start = datetime(2023, 1, 1)
    return [start + timedelta(days=i, seconds=(i * 7919) % 86400) for i in range(731)]


_OFFSETS = ["Z", "+02:00", "-0530", "+0100", "+00:00"]
# a format, and how a valid day is written in it (leading zeros left out, names in another case, zones)
VALID: list[tuple[str, Any]] = [
    ("%Y-%m-%d %H:%M:%S", lambda d, i: d.strftime("%Y-%m-%d %H:%M:%S")),
    ("%Y-%m-%d %H:%M:%S", lambda d, i: f"{d.year}-{d.month}-{d.day} {d.hour}:{d.minute}:{d.second}"),
    ("%Y-%m-%d", lambda d, i: d.strftime("%Y-%m-%d")),
    ("%d/%m/%y %H:%M", lambda d, i: d.strftime("%d/%m/%y %H:%M")),
    ("%d %b %Y", lambda d, i: d.strftime("%d %b %Y").upper() if i % 2 else d.strftime("%d %b %Y").lower()),
    ("%d %B %Y", lambda d, i: d.strftime("%d %B %Y")),
    ("%m/%d/%Y %I:%M:%S %p", lambda d, i: d.strftime("%m/%d/%Y %I:%M:%S %p")),
    ("%Y%m%d%H%M%S", lambda d, i: d.strftime("%Y%m%d%H%M%S")),
    ("%e.%m.%Y", lambda d, i: d.strftime("%d.%m.%Y").lstrip("0")),
    ("%a %b %d %H:%M:%S %Z %Y", lambda d, i: d.strftime(f"%a %b %d %H:%M:%S {('UTC', 'GMT')[i % 2]} %Y")),
    ("%Y-%m-%dT%H:%M:%S%z", lambda d, i: d.strftime("%Y-%m-%dT%H:%M:%S") + _OFFSETS[i % 5]),
    ("%d/%m/%Y %H:%M %z", lambda d, i: d.strftime("%d/%m/%Y %H:%M ") + _OFFSETS[i % 5]),
]


@pytest.mark.parametrize(("fmt", "write"), VALID)
def test_every_real_day_is_read_in_many_formats(fmt: str, write: Any) -> None:
    texts = [write(d, i) for i, d in enumerate(_days())]
    times, out = _times(fmt, texts)
    assert out.total == 0, [str(p) for p in out.items]
    # Python's strptime, which refuses impossible dates, is the reference (its %d also reads '5')
    python = [datetime.strptime(text, fmt.replace("%e", "%d")) for text in texts]
    assert times == [t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC) for t in python]


def _impossible() -> list[tuple[int, int, int]]:
    """(year, month, day) of every day 29-31 that does not exist in 2023 and 2024 (Python says which)."""
    days = []
    for year in (2023, 2024):
        for month in range(1, 13):
            for day in (29, 30, 31):
                try:
                    datetime(year, month, day)
                except ValueError:
                    days.append((year, month, day))
    return days


@pytest.mark.parametrize(
    ("fmt", "write"),
    [
        ("%Y-%m-%d %H:%M:%S", lambda y, m, d: f"{y}-{m:02d}-{d} 10:00:00"),
        ("%Y-%m-%d", lambda y, m, d: f"{y}-{m}-{d}"),
        ("%d %b %Y", lambda y, m, d: f"{d} {datetime(2000, m, 1):%b} {y}"),
        ("%Y%m%d", lambda y, m, d: f"{y}{m:02d}{d:02d}"),
        ("%Y-%m-%dT%H:%M:%S%z", lambda y, m, d: f"{y}-{m:02d}-{d}T10:00:00+02:00"),
        ("%a %b %d %H:%M:%S %Z %Y", lambda y, m, d: f"Mon {datetime(2000, m, 1):%b} {d} 10:00:00 UTC {y}"),
    ],
)
def test_an_impossible_date_is_a_problem_not_a_day_of_the_next_month(fmt: str, write: Any) -> None:
    days = _impossible()
    texts = [write(2023, 3, 1)] + [write(*day) for day in days]  # a real day first
    times, out = _times(fmt, texts)
    bad = [p.row for p in out.items if p.expected == f"a time in the format '{fmt}'"]
    assert len(days) == 13 and out.total == 13 and bad == list(range(2, 2 + 13))
    assert times[0] is not None and times[1:] == [None] * 13


def test_a_leap_second_is_a_problem() -> None:
    times, out = _times("%Y-%m-%d %H:%M:%S", ["2016-12-31 23:59:60", "2016-12-31 23:59:59"])
    assert out.total == 1 and times[0] is None and times[1] is not None


def test_an_import_with_an_impossible_date_writes_nothing(tmp_path: Path) -> None:
    rows = {
        **ROWS,
        "day": ["2023-02-28", "2023-02-30", "2023-03-01", "2023-02-31"],
        "time": ["00:00:19", "00:00:19", "10:00:00", "00:02:12"],
    }
    when = {"columns": ["day", "time"], "format": "%Y-%m-%d %H:%M:%S", "timezone": "America/Chicago"}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, changed(created=when)))
    assert text.startswith(f"{tmp_path / 'export.csv'}: 2 problem(s); nothing was written.")
    assert (
        "row 2 (line 3), columns 'day' and 'time' (created): expected a time in the format "
        "'%Y-%m-%d %H:%M:%S'; received '2023-02-30 00:00:19'" in text
    )
    assert "row 4 (line 5), columns 'day' and 'time' (created)" in text and "'2023-02-31 00:02:12'" in text
    date_only = changed(created={"column": "day", "format": "%Y-%m-%d", "timezone": "UTC"})
    text = failed_import(tmp_path / "2", write_csv(tmp_path, rows), write_mapping(tmp_path, date_only))
    assert (
        "2 problem(s)" in text and "row 2 (line 3), column 'day' (created)" in text and "'2023-02-30'" in text
    )


# ---- card numbers in column names ------------------------------------------------------------------------
def test_a_card_number_as_a_column_name_is_refused_and_never_shown(tmp_path: Path) -> None:
    rows = {**ROWS, VISA: ["x", "y", "z", "w"], "cc 4111 1111 1111 1111 x": ["a", "b", f"p {VISA}", "d"]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path))
    assert "3 problem(s); nothing was written." in text
    assert (
        "column '[card number removed] (column 10)': expected a column name without a card number "
        "(is the first line a data row? the file must start with a header line); "
        "received a full card number (not shown)"
    ) in text
    # the data of a column so named is still scanned, and its problems name it redacted
    assert "row 3 (line 4), column 'cc [card number removed] x (column 11)': expected no card numbers" in text
    assert VISA not in text and "4242" not in text and "4111" not in text


def test_a_headerless_export_is_refused_for_its_first_row(tmp_path: Path) -> None:
    path = tmp_path / "headerless.csv"
    path.write_text(f"t1,2024-03-01 09:00:00,10.50,EUR,{VISA},s1,web,0,a@x.com\n")
    text = failed_import(tmp_path, path, write_mapping(tmp_path))  # (before: no mapped column is there)
    assert "1 problem(s)" in text and "column '[card number removed] (column 5)'" in text
    assert "is the first line a data row?" in text and VISA not in text


def test_a_card_number_as_a_parquet_column_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "export.parquet"
    pq.write_table(pa.table({**ROWS, VISA: ["x"] * 4}), path)
    text = failed_import(tmp_path, path, write_mapping(tmp_path))
    assert "column '[card number removed] (column 10)': expected a column name without a card number;" in text
    assert VISA not in text


def test_the_cli_never_prints_a_card_number_from_a_header(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from payfm.cli.main import cli

    rows = {**ROWS, VISA: ["x", "y", "z", "w"]}
    args = ["-w", str(tmp_path / "ws"), "import", str(write_csv(tmp_path, rows)), "--mapping"]
    r = CliRunner().invoke(cli, [*args, str(write_mapping(tmp_path))])
    assert r.exit_code == 1 and VISA not in r.output and "Traceback" not in r.output
    assert "(column 10)" in r.output and not (tmp_path / "ws").exists()


# ---- ragged rows -----------------------------------------------------------------------------------------
def _lines(rows: dict[str, list[Any]] = ROWS) -> list[str]:
    names = list(rows)
    return [",".join(names)] + [",".join(str(rows[n][i]) for n in names) for i in range(len(rows[names[0]]))]


def test_ragged_rows_are_named_by_row_and_line_never_by_their_text(tmp_path: Path) -> None:
    lines = _lines()
    lines[2] += f",{SSN}"  # row 2: a cell too many
    lines[4] = lines[4].rsplit(",", 1)[0]  # row 4: a cell short
    path = tmp_path / "ragged.csv"
    path.write_text("\n".join(lines) + "\n")
    text = failed_import(tmp_path, path, write_mapping(tmp_path))
    assert text.startswith(f"{path}: 2 problem(s); nothing was written.")
    assert "row 2 (line 3): expected 9 cells, as many as the header has columns" in text
    assert "received 10 cells" in text and "row 4 (line 5)" in text and "received 8 cells" in text
    for secret in (SSN, VISA, "card number", "a@x.com", "t2"):
        assert secret not in text


@pytest.mark.parametrize("gz", [False, True])
def test_every_ragged_row_of_a_long_file_is_counted(tmp_path: Path, gz: bool) -> None:
    n = 20_000
    rows = {**{k: v * (n // 4) for k, v in ROWS.items()}, "id": [f"t{i}" for i in range(n)]}
    lines = _lines(rows)
    for row in (7, 12_345, *range(19_970, 19_998)):
        lines[row] += f",{NAME}"
    data = ("\n".join(lines) + "\n").encode()
    path = tmp_path / ("long.csv.gz" if gz else "long.csv")
    path.write_bytes(gzip.compress(data) if gz else data)
    text = failed_import(tmp_path, path, write_mapping(tmp_path))
    assert "30 problem(s); nothing was written." in text and "... and 25 more" in text
    assert "row 7 (line 8): expected 9 cells" in text and "row 12345 (line 12346)" in text
    assert NAME not in text


def test_a_gz_file_cut_short_is_one_clear_error(tmp_path: Path) -> None:
    """A .gz file that ends before its end-of-stream marker (a copy cut short): one line naming the file,
    nothing written. Python's gzip raised EOFError, which the CLI printed as "Aborted!"."""
    n = 20_000
    rows = {**{k: v * (n // 4) for k, v in ROWS.items()}, "id": [f"t{i}" for i in range(n)]}
    whole = gzip.compress(("\n".join(_lines(rows)) + "\n").encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    assert text == (
        f"Import source '{path}': expected a readable file; received an error (Truncated compressed stream)."
    )
    path.write_bytes(whole)  # the same file whole: every row read
    assert read_source(path)[0].num_rows == n


# ---- other separators and encodings ----------------------------------------------------------------------
@pytest.mark.parametrize(("separator", "named"), [(";", "';'"), ("\t", "tabs"), ("|", "'|'")])
def test_a_file_separated_by_another_character_gets_the_hint(
    tmp_path: Path, separator: str, named: str
) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("\n".join(line.replace(",", separator) for line in _lines()) + "\n")
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    assert (
        f"expected comma-separated columns; received a header of one column holding {named} 8 time(s)" in text
    )
    assert f"the file seems separated by {named}" in text and VISA not in text


def test_a_latin1_file_names_the_first_byte_that_is_not_utf8(tmp_path: Path) -> None:
    rows = {**ROWS, "shop": ["s1", "s2", "Café Müller", "s3"]}
    path = tmp_path / "latin1.csv"
    path.write_bytes(("\n".join(_lines(rows)) + "\n").encode("latin-1"))
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    assert (
        f"Import source '{path}': expected UTF-8 text; received the byte 0xe9 at row 3 (line 4), "
        "column 'shop', which is not UTF-8"
    ) in text
    assert f"iconv -f WINDOWS-1252 -t UTF-8 '{path}' > '{tmp_path / 'latin1'}.utf8.csv'" in text
    assert "Caf" not in text and "Müller" not in text


def test_a_bad_byte_far_into_the_file_or_in_the_header(tmp_path: Path) -> None:
    n = 4_000  # beyond the first block the header is read from: arrow finds this one
    rows = {**{k: v * (n // 4) for k, v in ROWS.items()}, "id": [f"t{i}" for i in range(n)]}
    rows["email"][3_000] = "jos\xe9@x.com"
    path = tmp_path / "far.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(_lines(rows)) + "\n").encode("latin-1")))
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    assert "row 3001 (line 3002), column 'email'" in text and "jos" not in text
    path = tmp_path / "header.csv"
    path.write_bytes("id,ts,montant d\xfb\n".encode("latin-1"))
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    assert "the byte 0xfb at line 1 (the header), column 3" in text


def test_a_utf16_file_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "utf16.csv"
    path.write_bytes(("\n".join(_lines()) + "\n").encode("utf-16"))
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    assert "expected UTF-8 text; received UTF-16 text" in text and "iconv -f UTF-16 -t UTF-8" in text


def test_a_valid_file_still_imports(tmp_path: Path) -> None:
    """The checks above cost a valid file nothing it did not already have to pass (control)."""
    from payfm.events.importer import import_file
    from test_import import ws_at

    summary = import_file(ws_at(tmp_path / "ws"), write_csv(tmp_path), write_mapping(tmp_path))
    assert summary.rows == {"charges": 4, "disputes": 2} and summary.unmapped_columns == ()
    assert np.array_equal(np.sort(summary.dropped_columns), ["email"])


def test_a_zone_name_other_than_utc_is_a_problem_and_utc_is_read_as_utc() -> None:
    """Arrow's %Z reads a zone's name and ignores it: '10:00 CET' would silently be 10:00 in the mapping's
    zone. Names of UTC are read as UTC, whatever the mapping's timezone; another name is its row's problem."""
    fmt = "%a %b %d %H:%M:%S %Z %Y"
    texts = ["Mon Jan 02 10:00:00 UTC 2023", "Mon Jan 02 10:00:00 CET 2023", "Mon Jan 02 10:00:00 UTC+2 2023"]
    got, out = _times(fmt, texts, "America/Chicago")
    assert got[0] == datetime(2023, 1, 2, 10, tzinfo=UTC)  # not 10:00 in Chicago
    assert got[1:] == [None, None]
    assert [p.row for p in out.items] == [2, 3] and "whose %Z zone is UTC or GMT" in out.items[0].expected
