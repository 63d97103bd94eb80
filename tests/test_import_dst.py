"""Local times in the hour a DST change repeats: an error by default (never guessed), or read as the field's
`ambiguous` says: the first instant, the second, or as the file's order tells. A time the change skips is
always an error."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from payfm.errors import ConfigError
from payfm.events.importer import import_file
from test_import import ROWS, changed, failed_import, write_csv, write_mapping, ws_at

# Paris, 27 October 2024: the clocks go back from 03:00 CEST (UTC+2) to 02:00 CET (UTC+1).
NIGHT = ["01:50:00", "02:10:00", "02:40:00", "02:05:00", "02:35:00", "03:10:00"]  # in file (time) order
UTC_OF_NIGHT = ["23:50", "00:10", "00:40", "01:05", "01:35", "02:10"]


def rows_at(times: list[str], day: str = "2024-10-27") -> dict[str, list[Any]]:
    n = len(times)
    cycled = {k: (v * (n // len(v) + 1))[:n] for k, v in ROWS.items()}
    return {**cycled, "id": [f"t{i}" for i in range(n)], "ts": [f"{day} {t}" for t in times]}


def created_utc(tmp_path: Path, times: list[str], ambiguous: str) -> list[str]:
    m = changed(created={"column": "ts", "format": "%Y-%m-%d %H:%M:%S", "ambiguous": ambiguous})
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path, rows_at(times)), write_mapping(tmp_path, m))
    got = ws.read("charges", ["charge_id", "created"]).sort_by("charge_id").column("created").to_pylist()
    return [t.astimezone(UTC).strftime("%H:%M") for t in got]


@pytest.mark.parametrize(("ambiguous", "utc"), [("earliest", "00:30"), ("latest", "01:30")])
def test_a_repeated_local_time_takes_the_instant_asked_for(tmp_path: Path, ambiguous: str, utc: str) -> None:
    assert created_utc(tmp_path, ["02:30:00"], ambiguous) == [utc]


def test_infer_reads_the_night_in_file_order(tmp_path: Path) -> None:
    assert created_utc(tmp_path, NIGHT, "infer") == UTC_OF_NIGHT


@pytest.mark.parametrize(
    ("times", "rows"),
    [
        (["01:50:00", "02:10:00", "03:10:00"], [2]),  # one pass only: which one is unknown
        (["02:40:00", "02:10:00", "02:50:00", "02:05:00"], [1, 2, 3, 4]),  # back twice: not in time order
        (NIGHT[::-1], [2, 3, 4, 5]),  # newest first (found by a review: stored an hour off, unsaid)
        (["01:50:00", "02:10:05", "02:10:03", "02:40:00"], [2, 3, 4]),  # sorted to the minute only
    ],
)
def test_infer_refuses_a_night_it_cannot_tell(tmp_path: Path, times: list[str], rows: list[int]) -> None:
    m = changed(created={"column": "ts", "format": "%Y-%m-%d %H:%M:%S", "ambiguous": "infer"})
    text = failed_import(tmp_path, write_csv(tmp_path, rows_at(times)), write_mapping(tmp_path, m))
    said = " ".join(text.split())
    assert f"{len(rows)} problem(s)" in said
    for row in rows:
        assert (
            f"row {row} (line {row + 1}), column 'ts' (created): expected a local time in a file whose rows "
            "of that hour are in time order, the clock going back once (to infer which of its two instants "
            "each is): a DST change repeats it (set 'columns.created.ambiguous' to earliest or latest)"
        ) in said


def test_by_default_a_repeated_time_is_refused_naming_the_option(tmp_path: Path) -> None:
    text = failed_import(tmp_path, write_csv(tmp_path, rows_at(["02:30:00"])), write_mapping(tmp_path))
    assert (
        "row 1 (line 2), column 'ts' (created): expected a local time that exists once in Europe/Paris: a "
        "DST change repeats it (set 'columns.created.ambiguous' to earliest, latest or infer); received "
        "'2024-10-27 02:30:00'"
    ) in text


def test_a_skipped_local_time_is_refused_whatever_ambiguous_says(tmp_path: Path) -> None:
    m = changed(created={"column": "ts", "format": "%Y-%m-%d %H:%M:%S", "ambiguous": "latest"})
    rows = rows_at(["02:30:00"], day="2024-03-31")  # 02:00-03:00 never happens that night
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    assert "expected a local time that exists in Europe/Paris (a DST change skips it; set " in text
    assert "'columns.created.nonexistent' to earliest or latest" in text and "or shift to move it" in text


@pytest.mark.parametrize(
    ("nonexistent", "instant"),
    [
        ("earliest", "2024-03-31T00:59:59.999999+00:00"),
        ("latest", "2024-03-31T01:00:00.001800+00:00"),  # the gap's end + 1 µs per second into it (1,800 s)
        ("shift", "2024-03-31T01:30:00+00:00"),  # 02:30 read at +01:00, as the clock that wrote it meant
    ],
)
def test_nonexistent_reads_a_skipped_local_time_at_the_gaps_edge(
    tmp_path: Path, nonexistent: str, instant: str
) -> None:
    """An export written by a clock that ignores DST (Sparkov's) has times in the skipped hour: `nonexistent`
    reads them as the last instant before the gap or the first after it (pandas' shift_forward); the
    other rows are read as before."""
    created = {"column": "ts", "format": "%Y-%m-%d %H:%M:%S", "nonexistent": nonexistent}
    ws = ws_at(tmp_path / "ws")
    rows = rows_at(["02:30:00", "01:30:00", "03:30:00"], day="2024-03-31")
    import_file(ws, write_csv(tmp_path, rows), write_mapping(tmp_path, changed(created=created)))
    got = ws.read("charges", ["charge_id", "created"]).sort_by("charge_id").column("created").to_pylist()
    assert [t.isoformat() for t in got] == [instant, "2024-03-31T00:30:00+00:00", "2024-03-31T01:30:00+00:00"]
    bad = changed(created=created | {"nonexistent": "shift_forward"})
    text = failed_import(
        tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, bad, "b.yaml"), ConfigError
    )
    assert (
        "'columns.created.nonexistent': expected one of error, earliest, latest, shift; received "
        "'shift_forward'" in text
    )


def test_an_unknown_choice_is_refused_before_reading(tmp_path: Path) -> None:
    m = changed(created={"column": "ts", "format": "%Y-%m-%d %H:%M:%S", "ambiguous": "guess"})
    text = failed_import(tmp_path, write_csv(tmp_path), write_mapping(tmp_path, m), ConfigError)
    assert (
        "'columns.created.ambiguous': expected one of error, earliest, latest, infer; received 'guess'"
        in text
    )


def test_the_sparkov_mapping_keeps_a_skipped_hours_charges_in_order_before_the_hour_after(
    tmp_path: Path,
) -> None:
    """A Missouri card's charges at 02:13, 02:31 and 02:40 on 2023-03-12 (the hour the clocks skipped), then
    03:15: read as 03:00 CDT they were one instant, ordered by hashed ids (a feature-platform audit); moved
    forward by the gap (`shift`) they interleaved with 03:15 (a reviewer). Now the gap's end, a microsecond
    apart per second into the gap, in order, all before 03:15."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from test_import import SAMPLE

    rows = pq.read_table(SAMPLE).slice(0, 4).to_pylist()
    clocks = ("02:13:59", "02:31:58", "02:40:57", "03:15:40")
    for row, clock, trans in zip(rows, clocks, "abcd", strict=True):
        row |= {"state": "MO", "trans_date": "2023-03-12", "trans_time": clock, "trans_num": trans * 32}
    path = tmp_path / "dst.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(SAMPLE)), path)
    ws = ws_at(tmp_path / "ws")
    import_file(ws, path, "sparkov")
    stored = ws.read("charges", ["created", "amount"]).to_pylist()
    by_amount = {r["amount"]: r["created"].astimezone(UTC).isoformat() for r in stored}
    got = [by_amount[round(r["amt"] * 100)] for r in rows]
    assert got == [
        "2023-03-12T08:00:00.000839+00:00",
        "2023-03-12T08:00:00.001918+00:00",
        "2023-03-12T08:00:00.002457+00:00",
        "2023-03-12T08:15:40+00:00",
    ]
