"""Numeric times counted from an `origin` rather than the Unix epoch, in seconds to days: IEEE-CIS's
TransactionDT (seconds from an unpublished reference), AMLSim's steps (one a day)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from payfm.errors import ConfigError
from payfm.events.importer import import_file
from payfm.events.mapping import parse_mapping
from payfm.events.validate import ValidationError
from test_import import MAPPING, ROWS, write_csv, write_mapping, ws_at


def _mapping(created: dict[str, Any]) -> dict[str, Any]:
    m = copy.deepcopy(MAPPING)
    m["columns"]["created"] = created
    return m


def _created(tmp_path: Path, values: list[str], created: dict[str, Any]) -> list[datetime]:
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path, {**ROWS, "ts": values}), write_mapping(tmp_path, _mapping(created)))
    got: list[datetime] = ws.read("charges").sort_by("charge_id").column("created").to_pylist()
    return got


def test_seconds_from_an_origin(tmp_path: Path) -> None:
    got = _created(
        tmp_path,
        ["86400", "86401", "100000.5", "0"],
        {"column": "ts", "unit": "s", "origin": "2017-12-01T00:00:00Z"},
    )
    assert got == [
        datetime(2017, 12, 2, tzinfo=UTC),
        datetime(2017, 12, 2, 0, 0, 1, tzinfo=UTC),
        datetime(2017, 12, 2, 3, 46, 40, 500000, tzinfo=UTC),
        datetime(2017, 12, 1, tzinfo=UTC),
    ]


def test_days_hours_and_minutes_from_an_origin_in_another_zone(tmp_path: Path) -> None:
    origin = "2024-01-01T00:00:00+01:00"  # (midnight in Paris is 23:00 UTC the day before)
    got = _created(tmp_path, ["1", "2", "149", "0.5"], {"column": "ts", "unit": "d", "origin": origin})
    assert [t.isoformat() for t in got] == [
        "2024-01-01T23:00:00+00:00",
        "2024-01-02T23:00:00+00:00",
        "2024-05-28T23:00:00+00:00",
        "2024-01-01T11:00:00+00:00",
    ]
    hours = _created(tmp_path / "h", ["1", "2", "3", "4"], {"column": "ts", "unit": "h", "origin": origin})
    assert [t.hour for t in hours] == [0, 1, 2, 3]
    since = ["28000000", "28000001", "28000002", "28000090"]  # minutes since 1970
    minutes = _created(tmp_path / "m", since, {"column": "ts", "unit": "m"})
    assert minutes[3] == datetime(2023, 3, 28, 12, 10, tzinfo=UTC)


def test_a_time_an_origin_puts_past_2100_is_an_error_naming_the_row(tmp_path: Path) -> None:
    ws = ws_at(tmp_path / "ws")
    csv = write_csv(tmp_path, {**ROWS, "ts": ["1", "2", "40000", "3"]})
    created = {"column": "ts", "unit": "d", "origin": "2000-01-01T00:00:00Z"}
    with pytest.raises(ValidationError, match=r"row 3 .*a time between 1990 and 2100.*received '40000'"):
        import_file(ws, csv, write_mapping(tmp_path, _mapping(created)))


@pytest.mark.parametrize(
    ("created", "said"),
    [
        (
            {"column": "ts", "origin": "2017-12-01T00:00:00Z"},
            "'columns.created.origin': expected a unit beside it",
        ),
        (
            {"column": "ts", "unit": "s", "origin": "2017-12-01"},
            "'columns.created.origin': expected an ISO 8601 time with a zone offset",
        ),
        ({"column": "ts", "unit": "s", "origin": "yesterday"}, "received 'yesterday'"),
        (
            {"column": "ts", "unit": "s", "origin": "1700-01-01T00:00:00Z"},
            "expected a time between 1800 and 2100",
        ),
        (
            {"column": "ts", "unit": "w"},
            "'columns.created.unit': expected a unit: d, h, m, s, ms, us, ns (m: minutes)",
        ),
    ],
)
def test_a_wrong_origin_or_unit_is_the_mappings_mistake(created: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError, match=said.replace("(", r"\(").replace(")", r"\)")):
        parse_mapping(_mapping(created), "m.yaml")


def test_yaml_reads_an_unquoted_origin_as_a_time_and_it_is_taken(tmp_path: Path) -> None:
    path = write_mapping(tmp_path, _mapping({"column": "ts", "unit": "s"}))
    text = path.read_text().replace("unit: s", "unit: s\n    origin: 2017-12-01T00:00:00Z")
    path.write_text(text)
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path, {**ROWS, "ts": ["0", "1", "2", "3"]}), path)
    assert ws.read("charges").sort_by("charge_id").column("created").to_pylist()[0] == datetime(
        2017, 12, 1, tzinfo=UTC
    )


def test_epoch_seconds_read_as_milliseconds_and_a_zero_for_no_time_are_errors(tmp_path: Path) -> None:
    """Both landed in January 1970, inside the old 1970-2100 check, and were imported silently (an import
    review): a payments export's times are from 1990 on."""
    ws = ws_at(tmp_path / "ws")
    csv = write_csv(tmp_path, {**ROWS, "ts": ["1709283600", "0", "1709420399", "1709420400"]})
    with pytest.raises(ValidationError) as e:
        import_file(ws, csv, write_mapping(tmp_path, _mapping({"column": "ts", "unit": "ms"})))
    assert [p.row for p in e.value.problems] == [1, 2, 3, 4]
    assert "epoch seconds read as milliseconds fall in January 1970" in str(e.value)
    with pytest.raises(ValidationError) as e:
        import_file(ws, csv, write_mapping(tmp_path, _mapping({"column": "ts", "unit": "s"})))
    assert [p.row for p in e.value.problems] == [2]  # the 0 alone
    assert "a 0 meaning no time is an empty cell" in str(e.value)


def test_a_spreadsheets_serial_days_import_from_its_1899_origin(tmp_path: Path) -> None:
    """Excel and LibreOffice write a date as days since 1899-12-30 (45000.5 is 2023-03-15 12:00)."""
    serial = {"column": "ts", "unit": "d", "origin": "1899-12-30T00:00:00Z"}
    got = _created(tmp_path, ["45000.5", "45001", "45001.25", "45002"], serial)
    assert [t.isoformat() for t in got] == [
        "2023-03-15T12:00:00+00:00",
        "2023-03-16T00:00:00+00:00",
        "2023-03-16T06:00:00+00:00",
        "2023-03-17T00:00:00+00:00",
    ]
