"""Naive times read each in its row's own zone, from a source column (`timezone: {column: tz}`), or from a
column a map turns into zones (`timezone: {column: state, map: {TX: America/Chicago}}`): a POS export
writes each store's local time beside the store's zone, and Sparkov its customers' wall-clock times beside
their state. One zone per column (the only choice before) read some rows hours off."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from payfm.errors import ConfigError
from payfm.events.importer import import_file
from test_import import MAPPING, ROWS, failed_import, write_csv, write_mapping, ws_at


def _mapping(zone: Any) -> dict[str, Any]:
    m = copy.deepcopy(MAPPING)
    del m["timezone"]  # (each row's zone, or nothing: no file-wide zone to fall back on)
    m["columns"]["created"] = {"column": "ts", "format": "%Y-%m-%d %H:%M:%S", "timezone": zone}
    return m


def _created(tmp_path: Path, rows: dict[str, list[Any]], m: dict[str, Any], name: str = "ws") -> list[str]:
    ws = ws_at(tmp_path / name)
    import_file(ws, write_csv(tmp_path, rows, f"{name}.csv"), write_mapping(tmp_path, m, f"{name}.yaml"))
    table = ws.read("charges", ["charge_id", "created"]).sort_by("charge_id")
    return [t.isoformat() for t in table.column("created").to_pylist()]


def test_each_row_is_read_in_the_zone_its_column_names(tmp_path: Path) -> None:
    rows = ROWS | {
        "ts": ["2024-03-01 09:30:00"] * 3 + ["2024-07-01 09:30:00"],
        "tz": ["America/Chicago", "Europe/Berlin", " America/Los_Angeles ", "Europe/Berlin"],
    }
    assert _created(tmp_path, rows, _mapping({"column": "tz"})) == [
        "2024-03-01T15:30:00+00:00",  # CST, -6
        "2024-03-01T08:30:00+00:00",  # CET, +1
        "2024-03-01T17:30:00+00:00",  # PST, -8 (spaces around the name ignored)
        "2024-07-01T07:30:00+00:00",  # CEST, +2: each row's own offset on its own date
    ]


def test_a_map_turns_a_state_into_a_zone_and_zone_names_pass_through(tmp_path: Path) -> None:
    rows = ROWS | {"ts": ["2024-03-01 09:30:00"] * 4, "state": ["TX", "CA", "Asia/Tokyo", "TX"]}
    zone = {"column": "state", "map": {"TX": "America/Chicago", "CA": "America/Los_Angeles"}}
    assert _created(tmp_path, rows, _mapping(zone)) == [
        "2024-03-01T15:30:00+00:00",
        "2024-03-01T17:30:00+00:00",
        "2024-03-01T00:30:00+00:00",  # (not in the map: read as a zone's own name)
        "2024-03-01T15:30:00+00:00",
    ]


def test_the_hour_a_clock_change_repeats_is_inferred_within_each_zone(tmp_path: Path) -> None:
    """`ambiguous: infer` reads the file order of each zone's rows: the Paris rows' step back is theirs, the
    Chicago row of the same wall time (a week later its own change) is not in a repeated hour."""
    rows = ROWS | {
        "ts": ["2024-10-27 02:40:00", "2024-10-27 02:40:00", "2024-10-27 02:10:00", "2024-10-28 01:00:00"],
        "tz": ["Europe/Paris", "America/Chicago", "Europe/Paris", "America/Chicago"],
    }
    m = _mapping({"column": "tz"})
    m["columns"]["created"]["ambiguous"] = "infer"
    assert _created(tmp_path, rows, m) == [
        "2024-10-27T00:40:00+00:00",  # Paris, first pass (CEST)
        "2024-10-27T07:40:00+00:00",  # Chicago, CDT
        "2024-10-27T01:10:00+00:00",  # Paris, second pass (CET): the Chicago row between did not hide it
        "2024-10-28T06:00:00+00:00",
    ]


def test_iso_rows_with_an_offset_need_no_zone(tmp_path: Path) -> None:
    rows = ROWS | {
        "ts": [
            "2024-03-01T09:30:00+01:00",
            "2024-03-01 09:30:00",
            "2024-03-01 09:30:00",
            "2024-03-01T09:30Z",
        ],
        "tz": [None, "America/New_York", "UTC", None],
    }
    m = _mapping({"column": "tz"})
    del m["columns"]["created"]["format"]
    assert _created(tmp_path, rows, m) == [
        "2024-03-01T08:30:00+00:00",
        "2024-03-01T14:30:00+00:00",
        "2024-03-01T09:30:00+00:00",
        "2024-03-01T09:30:00+00:00",
    ]


def test_rows_without_a_zone_or_with_an_unknown_one_are_errors_naming_the_zone_column(tmp_path: Path) -> None:
    rows = ROWS | {
        "ts": ["2024-03-01 09:30:00", "2024-03-10 02:30:00", "2024-03-01 09:30:00", "2024-03-01 09:30:00"],
        "tz": [None, "America/Chicago", "Mars/Base", "CA"],
    }
    zone = {"column": "tz", "map": {"TX": "America/Chicago", "CA": "America/Los_Angeles"}}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, _mapping(zone)))
    assert [line.split(str(tmp_path) + "/")[-1] for line in text.splitlines()[1:]] == [
        "export.csv: row 1 (line 2), column 'tz': expected a time zone for the naive time of column 'ts'; "
        "received an empty cell",
        "export.csv: row 2 (line 3), column 'ts' (created): expected a local time that exists in "
        "America/Chicago (a DST change skips it; set 'columns.created.nonexistent' to earliest or latest to "
        "read it as the instant before or after the gap, or shift to move it forward by the gap); received "
        "'2024-03-10 02:30:00'",
        "export.csv: row 3 (line 4), column 'tz': expected an IANA time zone name such as America/New_York "
        "or a key of the field's timezone map (TX, CA); received 'Mars/Base'",
    ]


@pytest.mark.parametrize(
    ("where", "zone", "said"),
    [
        (
            "field",
            {"column": "tz", "map": {"TX": "America/Chikago"}},
            "'columns.created.timezone.map.TX': expected an IANA time zone name such as UTC or "
            "America/New_York (did you mean 'America/Chicago'?); received 'America/Chikago'.",
        ),
        (
            "field",
            {"colum": "tz"},
            "'columns.created.timezone.colum': expected column or map",
        ),
        ("field", {"map": {}}, "'columns.created.timezone.column': expected the source column holding"),
        (
            "field",
            7,
            "'columns.created.timezone': expected an IANA time zone name such as UTC or America/New_York, or "
            "{column: tz} for each row's zone from a source column; received 7.",
        ),
        ("top", {"column": "tz"}, "'timezone': expected one IANA zone name for the whole file"),
    ],
)
def test_mapping_mistakes_name_the_key(tmp_path: Path, where: str, zone: Any, said: str) -> None:
    m = _mapping(zone) if where == "field" else copy.deepcopy(MAPPING) | {"timezone": zone}
    rows = ROWS | {"tz": ["UTC"] * 4}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, m), ConfigError)
    assert said in text, text


def test_the_zone_column_is_read_so_it_is_scanned_and_cannot_be_a_card_column(tmp_path: Path) -> None:
    """A zone column is read (its values are quoted in errors): it is scanned for card numbers like any
    other, and a card-number column cannot be one."""
    m = _mapping({"column": "card"})
    text = failed_import(tmp_path, write_csv(tmp_path, ROWS), write_mapping(tmp_path, m), ConfigError)
    assert "'columns.created.timezone.column': expected a zone column that holds no card numbers" in text
    rows = ROWS | {"tz": ["UTC", "UTC", "4111 1111 1111 1111", "UTC"]}
    text = failed_import(
        tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, _mapping({"column": "tz"}))
    )
    assert "row 3 (line 4), column 'tz'" in text and "4111" not in text


def test_zones_python_reads_but_arrow_does_not_are_errors_not_a_traceback(tmp_path: Path) -> None:
    """Found by a review: zoneinfo reads 'posix/Europe/Paris', 'Factory' and 'right/UTC', Arrow does not, and
    one such cell ended the import with an ArrowInvalid traceback; 'localtime' read the host's own zone."""
    rows = ROWS | {
        "ts": ["2024-03-01 09:30:00"] * 4,
        "tz": ["UTC", "posix/Europe/Paris", "localtime", "Factory"],
    }
    text = failed_import(
        tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, _mapping({"column": "tz"}))
    )
    for row, zone in ((2, "posix/Europe/Paris"), (3, "localtime"), (4, "Factory")):
        assert f"row {row} (line {row + 1}), column 'tz': expected an IANA time zone name" in text, text
        assert f"received '{zone}'" in text
    for zone in ("Factory", "localtime", "right/UTC"):
        m = copy.deepcopy(MAPPING) | {"timezone": zone}
        text = failed_import(tmp_path, write_csv(tmp_path, ROWS), write_mapping(tmp_path, m), ConfigError)
        assert "'timezone': expected an IANA time zone name such as UTC or America/New_York" in text, text


def test_a_map_key_yaml_reads_as_a_boolean_is_refused_asking_for_quotes(tmp_path: Path) -> None:
    """Found by a review: `map: {NO: Europe/Oslo}` (Norway) became the key False, and every 'NO' row an error
    quoting the map's keys as (False, SE)."""
    path = tmp_path / "m.yaml"
    m = _mapping({"column": "tz", "map": {"SE": "Europe/Stockholm"}})
    text = write_mapping(tmp_path, m).read_text().replace("SE: Europe/Stockholm", "NO: Europe/Oslo")
    path.write_text(text)
    said = failed_import(tmp_path, write_csv(tmp_path, ROWS | {"tz": ["NO"] * 4}), path, ConfigError)
    assert "'columns.created.timezone.map': expected text keys (quote them in YAML" in said
    assert "received False" in said
