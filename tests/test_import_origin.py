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
    minutes = _created(tmp_path / "m", ["1", "2", "3", "90"], {"column": "ts", "unit": "m"})  # since 1970
    assert minutes[3] == datetime(1970, 1, 1, 1, 30, tzinfo=UTC)


def test_a_time_an_origin_puts_past_2100_is_an_error_naming_the_row(tmp_path: Path) -> None:
    ws = ws_at(tmp_path / "ws")
    csv = write_csv(tmp_path, {**ROWS, "ts": ["1", "2", "40000", "3"]})
    created = {"column": "ts", "unit": "d", "origin": "2000-01-01T00:00:00Z"}
    with pytest.raises(ValidationError, match=r"row 3 .*a time between 1970 and 2100.*received '40000'"):
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
            {"column": "ts", "unit": "s", "origin": "1900-01-01T00:00:00Z"},
            "expected a time between 1970 and 2100",
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
