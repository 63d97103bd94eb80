"""An import review's findings on reading cells: bytes of a Parquet binary column that are not UTF-8 (a
traceback before), ISO dates without a time (their day read as a zone offset), and `format`s with `%f`
(every row refused: Arrow's strptime has no %f)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from payfm.errors import ConfigError
from payfm.events.import_convert import as_text
from payfm.events.import_problems import Problems
from payfm.events.importer import import_file
from test_import import ROWS, VISA, changed, failed_import, write_csv, write_mapping, ws_at

LATIN1 = "the byte 0xe9 at byte {}, which is not UTF-8 (the column seems to be in another encoding"


def _binary(values: list[str]) -> pa.Array:
    return pa.array([v.encode("latin-1") for v in values], pa.binary())


def latin1_parquet(tmp_path: Path, **columns: list[str]) -> Path:
    """ROWS as a Parquet file in which ``columns`` replace or add binary columns (BYTE_ARRAY without the UTF8
    annotation, as some writers make them), in Latin-1."""
    table = pa.table({name: pa.array(values) for name, values in ROWS.items()})
    for name, values in columns.items():
        if name in table.column_names:
            table = table.drop([name])
        table = table.append_column(name, _binary(values))
    path = tmp_path / "export.parquet"
    pq.write_table(table, path)
    return path


def created(tmp_path: Path, mapping: dict[str, Any], ts: list[str], ws: str = "ws") -> list[datetime]:
    """The stored ``created`` of ROWS with ``ts``, in file order."""
    rows = {**ROWS, "ts": ts, "id": [f"t{i}" for i in range(len(ts))]}
    rows = {k: (v * len(ts))[: len(ts)] for k, v in rows.items()}
    workspace = ws_at(tmp_path / ws)
    import_file(workspace, write_csv(tmp_path, rows), write_mapping(tmp_path, mapping))
    got = workspace.read("charges", ["charge_id", "created"]).sort_by("charge_id")
    return [t.astimezone(UTC) for t in got.column("created").to_pylist()]


# ---- (4) bytes that are not UTF-8 in a binary column ------------------------------------------------------
def test_a_binary_column_in_latin1_is_a_problem_of_each_row_and_column(tmp_path: Path) -> None:
    """Every way a field reads a column: as it is (merchant_id), as a currency and the currency of amounts,
    through card transforms, hashed into charge_id, and as the parts of a time. Each cell is said once, by
    row and column, and no byte of it is quoted (the card column's could be a card number)."""
    path = latin1_parquet(
        tmp_path,
        shop=["s1", "s\xe9", "s1", "s3"],
        cur=["EUR", "usd", "\xe9ur", "eur"],
        card=[VISA, "4242 4242 4242 4242", "4242 4242 4242 4242\xe9", "378282246310005"],
        id=["t1", "t2", "t3", "t\xe94"],
        ts=["2024-03-01", "2024-03-01", "2024-03-02", "2024-03-0\xe9"],
        h=["09:00", "10:00", "11:00", "12:00"],
    )
    m = changed(
        charge_id={"hash": ["id", "card"], "prefix": "ch_"},
        created={"columns": ["ts", "h"], "format": "%Y-%m-%d %H:%M"},
    )
    m["labels"] = []
    text = failed_import(tmp_path, path, write_mapping(tmp_path, m))
    assert "export.parquet: 5 problem(s); nothing was written." in text
    expected = "expected UTF-8 text (the bytes of a binary column are read as UTF-8); received "
    assert f"row 2, column 'shop' (merchant_id): {expected}{LATIN1.format(2)}" in text
    assert f"row 3, column 'cur' (currency): {expected}{LATIN1.format(1)}" in text
    assert f"row 3, column 'card' (hashed into charge_id): {expected}{LATIN1.format(20)}" in text
    assert f"row 4, column 'id' (hashed into charge_id): {expected}{LATIN1.format(2)}" in text
    assert f"row 4, column 'ts': {expected}{LATIN1.format(10)}" in text
    assert "4242" not in text  # (no byte of a cell quoted)


def test_a_binary_column_in_utf8_imports_as_text(tmp_path: Path) -> None:
    table = pa.table({name: pa.array(values) for name, values in ROWS.items()})
    shops = ["s1", "Café", "s1", "s3"]
    table = table.set_column(table.column_names.index("shop"), "shop", pa.array([s.encode() for s in shops]))
    pq.write_table(table, tmp_path / "export.parquet")
    ws = ws_at(tmp_path / "ws")
    import_file(ws, tmp_path / "export.parquet", write_mapping(tmp_path, changed()))
    stored = ws.read("charges", ["charge_id", "merchant_id"]).sort_by("charge_id").column("merchant_id")
    assert stored.to_pylist() == shops


def test_as_text_reports_a_cell_once_however_many_read_it_and_raises_without_a_place() -> None:
    """The shared helper of every reader (fields, currencies, zones, labels, keep_rows): a cell read twice
    is one problem; without ``out`` the cast's own error is raised (a join's keys word it)."""
    col = _binary(["ok", "caf\xe9", "\xe9"])
    out = Problems()
    assert as_text(col, out, "note").to_pylist() == ["ok", None, None]
    assert as_text(col, out, "note").to_pylist() == ["ok", None, None]
    assert out.total == 2 and [p.row for p in out.items] == [2, 3]
    assert out.items[1].received.startswith("the byte 0xe9 at byte 1, which is not UTF-8")
    with pytest.raises(pa.ArrowInvalid):
        as_text(col)
    assert as_text(pa.array([b"ok"]), None).to_pylist() == ["ok"]


# ---- (6) ISO dates without a time ------------------------------------------------------------------------
def test_an_iso_date_alone_is_midnight_in_the_mappings_zone(tmp_path: Path) -> None:
    m = changed(created="ts")
    m["timezone"] = "Asia/Tokyo"
    got = created(tmp_path, m, ["2024-03-01", "2024-03-02T09:00:00+01:00", "2024-03-03 12:00", "2024-03-04"])
    assert got == [
        datetime(2024, 2, 29, 15, tzinfo=UTC),
        datetime(2024, 3, 2, 8, tzinfo=UTC),
        datetime(2024, 3, 3, 3, tzinfo=UTC),
        datetime(2024, 3, 3, 15, tzinfo=UTC),
    ]


def test_an_iso_date_alone_without_a_zone_is_the_mappings_mistake(tmp_path: Path) -> None:
    m = changed(created="ts")
    del m["timezone"]
    rows = {**ROWS, "ts": ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, m), ConfigError)
    assert "'columns.created.timezone': expected a time zone for the naive times of column 'ts'" in text
    assert "received ISO times without a zone offset and no zone" in text


def test_a_midnight_a_dst_change_skips_follows_nonexistent(tmp_path: Path) -> None:
    """São Paulo's clocks went from 2018-11-04 00:00 (-03) to 01:00 (-02): that day's midnight never was."""
    m = changed(created={"column": "ts", "timezone": "America/Sao_Paulo"})
    rows = {**ROWS, "ts": ["2018-11-03", "2018-11-04", "2018-11-05", "2018-11-04T12:00:00Z"]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    assert (
        "row 2 (line 3), column 'ts' (created): expected a local time that exists in America/Sao_Paulo (a "
        "DST change skips it; set 'columns.created.nonexistent'" in " ".join(text.split())
    )
    assert "export.csv: 1 problem(s)" in text
    m["columns"]["created"]["nonexistent"] = "latest"
    assert created(tmp_path, m, rows["ts"], "ws2") == [
        datetime(2018, 11, 3, 3, tzinfo=UTC),
        datetime(2018, 11, 4, 3, tzinfo=UTC),  # 01:00 -02, the gap's end
        datetime(2018, 11, 5, 2, tzinfo=UTC),
        datetime(2018, 11, 4, 12, tzinfo=UTC),
    ]


# ---- (8) fractions of a second in a format --------------------------------------------------------------
@pytest.mark.parametrize(
    ("fmt", "ts", "utc"),
    [
        ("%d.%m.%Y %H:%M:%S,%f", "01.03.2024 09:00:00,123", "2024-03-01T08:00:00.123000"),
        ("%Y-%m-%d %H:%M:%S.%f", "2024-03-01 09:00:00.123456", "2024-03-01T08:00:00.123456"),
        ("%Y-%m-%d %H:%M:%S.%f", "2024-03-01 09:00:00.5", "2024-03-01T08:00:00.500000"),
        ("%Y-%m-%d %H:%M:%S.%f", "2024-03-01 09:00:00.123456789", "2024-03-01T08:00:00.123456"),  # floored
        ("%Y-%m-%dT%H:%M:%S.%f%z", "2024-03-01T09:00:00.25+0200", "2024-03-01T07:00:00.250000"),
        ("%d/%m/%Y %I:%M:%S.%f %p", "01/03/2024 09:05:00.75 PM", "2024-03-01T20:05:00.750000"),
    ],
)
def test_a_format_with_f_reads_the_fraction(tmp_path: Path, fmt: str, ts: str, utc: str) -> None:
    m = changed(created={"column": "ts", "format": fmt})  # (Europe/Paris: +01:00 in March)
    (got,) = created(tmp_path, m, [ts])
    assert got == datetime.fromisoformat(utc).replace(tzinfo=UTC)


def test_a_text_the_f_format_does_not_describe_is_a_problem_of_its_row(tmp_path: Path) -> None:
    m = changed(created={"column": "ts", "format": "%Y-%m-%d %H:%M:%S.%f"})
    rows = {
        **ROWS,
        "ts": ["2024-03-01 09:00:00.1", "2024-03-01 09:00:00", "2023-02-30 09:00:00.5", "01/03/2024 9:05 PM"],
    }
    text = " ".join(failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, m)).split())
    assert "export.csv: 3 problem(s)" in text
    for row, value in ((2, "2024-03-01 09:00:00"), (3, "2023-02-30 09:00:00.5"), (4, "01/03/2024 9:05 PM")):
        assert (
            f"row {row} (line {row + 1}), column 'ts' (created): expected a time in the format "
            f"'%Y-%m-%d %H:%M:%S.%f'; received '{value}'"
        ) in text


def test_zone_names_with_a_fraction(tmp_path: Path) -> None:
    m = changed(
        created={
            "column": "ts",
            "format": "%Y-%m-%d %H:%M:%S.%f %Z",
            "zone_names": {"CET": "+01:00", "CEST": "+02:00"},
        }
    )
    got = created(tmp_path, m, ["2024-10-27 02:20:00.250 CEST", "2024-10-27 02:10:00.5 CET"])
    assert got == [
        datetime(2024, 10, 27, 0, 20, 0, 250000, UTC),
        datetime(2024, 10, 27, 1, 10, 0, 500000, UTC),
    ]


@pytest.mark.parametrize("fmt", ["%H:%M.%f %d/%m/%Y", "%d/%m/%Y %H:%M:%S%f", "%Y %H:%M:%S.%f %d", "%S.%f.%f"])
def test_a_fraction_the_format_cannot_place_is_refused_at_load_saying_what_to_write(
    tmp_path: Path, fmt: str
) -> None:
    m = changed(created={"column": "ts", "format": fmt})
    text = failed_import(tmp_path, write_csv(tmp_path), write_mapping(tmp_path, m), ConfigError)
    assert text == (
        "m.yaml: 'columns.created.format': expected a format whose %f (a fraction of a second, 1 to 9 "
        "digits) follows %S and a separator, such as '%Y-%m-%d %H:%M:%S.%f' or '%d.%m.%Y %H:%M:%S,%f', "
        f"with only text, %z, %Z or %p after it; received {fmt!r}."
    )


def test_a_literal_percent_f_is_no_fraction(tmp_path: Path) -> None:
    m = changed(created={"column": "ts", "format": "%Y-%m-%d %H:%M:%S %%f"})
    (got,) = created(tmp_path, m, ["2024-03-01 09:00:00 %f"])
    assert got == datetime(2024, 3, 1, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    "col",
    [
        pa.array([b"ok", b"caf\xe9"], pa.large_binary()),
        pa.array([b"okok", b"caf\xe9"], pa.binary(4)),
        pa.array([b"ok", b"caf\xe9"]).dictionary_encode(),
    ],
)
def test_as_text_reports_each_binary_type(col: pa.Array) -> None:
    out = Problems()
    text = as_text(col, out, "note")
    assert text.to_pylist()[1] is None and pa.types.is_string(text.type)
    assert out.total == 1 and out.items[0].row == 2
