"""Import defects a review found: two imports of one file at once wrote it twice; --skip-existing made a row's
outcomes from the file's copy of a stored charge; a text column over 2 GiB was a traceback; a hashed numeric
reference was refused as a card number; CSV lines were off after blank lines; a header-only file without a
final line break was refused; import_file's arguments were not checked; and three messages."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from payfm.errors import ConfigError, WorkspaceBusy
from payfm.events import import_scan
from payfm.events.importer import import_file, read_source
from payfm.events.validate import ValidationError
from payfm.events.workspace import Workspace
from test_import import ROWS, VISA, changed, failed_import, write_csv, write_mapping
from test_import_integrity import REFUNDS

NEW_ID = "expected an id not already in the workspace's 'charges'"


def ws_at(path: Path) -> Workspace:
    return Workspace.open(path, create=True)


def plain(**columns: Any) -> dict[str, Any]:
    """MAPPING read in UTC, with a numeric `fraud` label at a delay of 1h (and ``columns`` changed)."""
    m = changed(created={"column": "ts"}, **columns)
    m.pop("timezone")
    m["labels"] = [{"column": "fraud", "when": 1, "delay": "1h"}]
    return m


def one_row(ts: str, fraud: str, amount: str = "10.00", **more: str) -> dict[str, list[Any]]:
    row = {"id": "t1", "ts": ts, "amount": amount, "cur": "usd", "card": VISA, "shop": "s1", "kind": "web"}
    return {k: [v] for k, v in {**row, "fraud": fraud, **more}.items()}


def stored(ws: Workspace, table: str, *columns: str) -> list[tuple[Any, ...]]:
    data = ws.read(table, list(columns))
    return sorted(zip(*(data.column(c).to_pylist() for c in columns), strict=True))


# ---- (2) two imports of one file at once -------------------------------------------------------------------
def test_an_import_finishing_while_another_is_about_to_write_makes_that_one_fail(tmp_path: Path) -> None:
    # B runs whole while A is between its checks and its write (A's "writing" step): A used to write the
    # same 4 charges and 2 disputes again (ids stored twice).
    ws, csv, m = ws_at(tmp_path / "ws"), write_csv(tmp_path), write_mapping(tmp_path)
    other = Workspace.open(ws.root)  # (another process's handle)
    said: list[dict[str, int]] = []

    def meanwhile(step: str) -> None:
        if step == "writing":
            said.append(import_file(other, csv, m).rows)

    with pytest.raises(ValidationError) as e:
        import_file(ws, csv, m, progress=meanwhile)
    assert said == [{"charges": 4, "disputes": 2}]
    assert e.value.total == 4  # the 4 charge ids, now held (no outcome is made of charges with problems)
    assert f"row 1 (line 2), column 'id' (charge_id): {NEW_ID}" in str(e.value)
    assert "received 'ch_t1'" in str(e.value)
    assert stored(ws, "charges", "charge_id") == [("ch_t1",), ("ch_t2",), ("ch_t3",), ("ch_t4",)]
    assert ws.count("disputes") == 2


def test_with_skip_existing_the_later_import_leaves_out_what_the_earlier_wrote(tmp_path: Path) -> None:
    ws, csv, m = ws_at(tmp_path / "ws"), write_csv(tmp_path), write_mapping(tmp_path)
    other = Workspace.open(ws.root)

    def meanwhile(step: str) -> None:
        if step == "writing":
            import_file(other, csv, m, skip_existing=True)

    summary = import_file(ws, csv, m, progress=meanwhile, skip_existing=True)
    assert summary.rows == {"charges": 0, "disputes": 0}
    assert summary.skipped == {"existing": 4}
    assert ws.count("charges") == 4 and ws.count("disputes") == 2


def test_an_import_waits_for_another_writers_lock(tmp_path: Path) -> None:
    """Two overlapping --skip-existing imports (a cron job's): the later failed 'is being written by another
    process' when it came to write during the other's write (an import review). It waits (``wait_s``, a
    minute by default; what it checked is checked again if the other wrote). With no wait it fails, writing
    nothing."""
    import threading

    ws, csv, m = ws_at(tmp_path / "ws"), write_csv(tmp_path), write_mapping(tmp_path)
    ws.secret()  # (made now: the wait tested is the write's; a first import's key waits likewise)
    holding, release = threading.Event(), threading.Event()

    def another_writer() -> None:
        with Workspace.open(ws.root)._lock():  # (its write in progress)
            holding.set()
            release.wait(10)

    def meanwhile(step: str) -> None:
        if step == "writing":
            threading.Timer(0.5, release.set).start()

    busy = threading.Thread(target=another_writer)
    busy.start()
    holding.wait(10)
    with pytest.raises(WorkspaceBusy, match="being written by another process"):
        import_file(ws, csv, m, skip_existing=True, wait_s=0)
    assert ws.count("charges") == 0
    summary = import_file(ws, csv, m, progress=meanwhile, skip_existing=True)
    busy.join()
    assert summary.rows == {"charges": 4, "disputes": 2} and ws.count("charges") == 4


def test_a_write_in_between_of_other_charges_does_not_stop_an_import(tmp_path: Path) -> None:
    ws, csv, m = ws_at(tmp_path / "ws"), write_csv(tmp_path), write_mapping(tmp_path)
    others = write_csv(tmp_path, {**ROWS, "id": ["u1", "u2", "u3", "u4"]}, name="others.csv")

    def meanwhile(step: str) -> None:
        if step == "writing":
            import_file(Workspace.open(ws.root), others, m)

    assert import_file(ws, csv, m, progress=meanwhile).rows == {"charges": 4, "disputes": 2}
    assert ws.count("charges") == 8 and ws.count("disputes") == 4


def test_refunds_written_in_between_count_in_what_is_left_to_refund(tmp_path: Path) -> None:
    # ch_t1 is 10.50 eur: two refunds of 6.00 imported at once used to both pass the check of the total.
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path), write_mapping(tmp_path))
    refunds = write_mapping(tmp_path, REFUNDS, name="refunds.yaml")

    def refund(rid: str) -> Path:
        rows = {
            "rid": [rid],
            "charge": ["ch_t1"],
            "at": ["2024-03-05T00:00:00Z"],
            "amt": ["6.00"],
            "cur": ["eur"],
        }
        return write_csv(tmp_path, rows, name=f"{rid}.csv")

    def meanwhile(step: str) -> None:
        if step == "writing":
            import_file(Workspace.open(ws.root), refund("re_b"), refunds)

    with pytest.raises(ValidationError) as e:
        import_file(ws, refund("re_a"), refunds, progress=meanwhile)
    assert (
        "row 1 (line 2), column 'amt' (amount): expected at most what is left to refund of its charge"
        in str(e.value)
    )
    assert "received 600, of a charge of 1050 refunded 600 before it" in str(e.value)
    assert stored(ws, "refunds", "refund_id", "amount") == [("re_b", 600)]


# ---- (3) --skip-existing: the outcomes of a row left out follow the stored charge --------------------------
def test_a_label_of_a_row_left_out_is_dated_from_the_stored_charge(tmp_path: Path) -> None:
    ws, m = ws_at(tmp_path / "ws"), write_mapping(tmp_path, plain())
    import_file(ws, write_csv(tmp_path, one_row("2024-03-01T14:00:00Z", "0"), "day1.csv"), m)
    day2 = write_csv(tmp_path, one_row("2024-03-01T09:00:00Z", "1"), "day2.csv")
    summary = import_file(ws, day2, m, skip_existing=True)
    # 15:00, an hour after the stored 14:00 (the file's 09:00 + 1h was 10:00: before its charge, a leak)
    assert stored(ws, "disputes", "charge_id", "created") == [("ch_t1", datetime(2024, 3, 1, 15, tzinfo=UTC))]
    assert summary.rows == {"charges": 0, "disputes": 1}
    assert summary.warnings == (
        "--skip-existing: 1 labelled row left out differs from the charge the workspace holds "
        "(row 1 (line 2), column 'ts' (created): the file's '2024-03-01T09:00:00+00:00', stored "
        "'2024-03-01T14:00:00+00:00'): rows are compared by id only, and a label's outcome follows the "
        "stored charge (its time, outcome, amount and currency)",
    )


def test_a_label_of_a_row_left_out_makes_nothing_of_a_stored_declined_charge(tmp_path: Path) -> None:
    m = write_mapping(tmp_path, plain(outcome="out", decline_code="dc"))
    ws = ws_at(tmp_path / "ws")
    day1 = one_row("2024-03-01T09:00:00Z", "0", out="issuer_declined", dc="do_not_honor")
    import_file(ws, write_csv(tmp_path, day1, "d1.csv"), m)
    day2 = write_csv(tmp_path, one_row("2024-03-01T09:00:00Z", "1", out="authorized", dc=""), "d2.csv")
    summary = import_file(ws, day2, m, skip_existing=True)
    assert ws.count("disputes") == 0  # a fraud dispute of a declined charge, before
    assert summary.labels_without_money == {"labels[0]": 1}
    assert "column 'out' (outcome): the file's 'authorized', stored 'issuer_declined'" in summary.warnings[0]


def test_a_dispute_of_a_row_left_out_copies_the_stored_amount(tmp_path: Path) -> None:
    ws, m = ws_at(tmp_path / "ws"), write_mapping(tmp_path, plain())
    import_file(ws, write_csv(tmp_path, one_row("2024-03-01T09:00:00Z", "0"), "day1.csv"), m)
    day2 = write_csv(tmp_path, one_row("2024-03-01T09:00:00Z", "1", amount="12.00"), "day2.csv")
    summary = import_file(ws, day2, m, skip_existing=True)
    assert stored(ws, "disputes", "amount") == [(1000,)]
    assert "column 'amount': the file's 1200, stored 1000" in summary.warnings[0]


def test_an_unchanged_row_left_out_makes_its_outcome_without_a_warning(tmp_path: Path) -> None:
    ws, m = ws_at(tmp_path / "ws"), write_mapping(tmp_path, plain())
    import_file(ws, write_csv(tmp_path, one_row("2024-03-01T09:00:00Z", "0"), "day1.csv"), m)
    day2 = write_csv(tmp_path, one_row("2024-03-01T09:00:00Z", "1"), "day2.csv")
    summary = import_file(ws, day2, m, skip_existing=True)
    assert summary.warnings == () and ws.count("disputes") == 1


def test_a_label_time_of_a_row_left_out_must_be_later_than_the_stored_charge(tmp_path: Path) -> None:
    m = plain()
    m["labels"] = [{"column": "fraud", "when": 1, "time": {"column": "fraud_at"}}]
    mapping = write_mapping(tmp_path, m)
    ws = ws_at(tmp_path / "ws")
    import_file(
        ws, write_csv(tmp_path, one_row("2024-03-01T14:00:00Z", "0", fraud_at=""), "day1.csv"), mapping
    )
    day2 = one_row("2024-03-01T09:00:00Z", "1", fraud_at="2024-03-01T12:00:00Z")
    with pytest.raises(ValidationError) as e:
        import_file(ws, write_csv(tmp_path, day2, "day2.csv"), mapping, skip_existing=True)
    assert "row 1 (line 2), column 'fraud_at': expected an outcome time for 'labels[0]' later than" in str(
        e.value
    )
    assert "the charge: 2024-03-01T14:00:00+00:00" in str(e.value)
    assert ws.count("disputes") == 0


# ---- (5) a text column of more than 2 GiB ------------------------------------------------------------------
def chunked_notes(tmp_path: Path, notes: list[str]) -> Path:
    """ROWS (6 rows) with a `note` column, as a Parquet file of row groups of 2 rows (chunks of 2 values)."""
    rows = {k: (v + v)[:6] for k, v in ROWS.items()} | {"id": [f"t{i}" for i in range(6)], "note": notes}
    path = tmp_path / "export.parquet"
    pq.write_table(pa.table(rows), path, row_group_size=2)
    return path


def test_a_column_of_more_text_than_one_array_holds_is_scanned_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(import_scan, "TEXT_LIMIT", 130)  # (2 GiB in a real file: 'offset overflow' before)
    notes = [c * 60 for c in "abcdef"]  # (120 bytes a row group, 360 in all; the card column: 101)
    notes[4] = f"call back {VISA}".ljust(60)
    path = chunked_notes(tmp_path, notes)
    assert read_source(path)[0].column("note").num_chunks == 3  # (kept in pieces; the others are one)
    assert read_source(path)[0].column("id").num_chunks == 1
    with pytest.raises(ValidationError) as e:
        import_file(ws_at(tmp_path / "ws"), path, write_mapping(tmp_path))
    assert e.value.total == 1 and "row 5, column 'note': expected no card numbers" in str(e.value)
    notes[4] = "e" * 60
    summary = import_file(ws_at(tmp_path / "ws2"), chunked_notes(tmp_path, notes), write_mapping(tmp_path))
    assert summary.rows["charges"] == 6 and summary.unmapped_columns == ("note",)


def test_a_column_of_more_text_than_one_array_holds_that_the_mapping_reads_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(import_scan, "TEXT_LIMIT", 130)
    path = chunked_notes(tmp_path, ["n" * 60] * 6)
    text = failed_import(tmp_path, path, write_mapping(tmp_path, changed(merchant_id="note")), ConfigError)
    assert text == (
        f"Import source '{path}': expected a column the mapping reads to hold at most 130 bytes of text "
        "(2 GiB, what one Arrow array holds); received column 'note' holding 360 bytes. Split the file into "
        "files of fewer rows and import each (a column the mapping does not read may be larger: it is only "
        "scanned)."
    )


# ---- (9) a numeric reference read only through a keyed hash ------------------------------------------------
def test_an_integer_reference_read_only_through_a_hash_is_not_scanned(tmp_path: Path) -> None:
    refs = [4111111111111111, 4111111111111112, 8811111111111113, 5555555555554444]  # two pass Luhn
    rows = {**ROWS, "ref": pa.array(refs, pa.int64())}
    path = tmp_path / "psp.parquet"
    pq.write_table(pa.table(rows), path)
    m = changed(charge_id={"hash": ["ref"], "prefix": "ch_"})
    summary = import_file(ws_at(tmp_path / "ws"), path, write_mapping(tmp_path, m))
    assert summary.rows["charges"] == 4
    # read as it is by another field too: scanned, and refused
    m = changed(charge_id={"hash": ["ref"], "prefix": "ch_"}, merchant_id="ref")
    text = failed_import(tmp_path, path, write_mapping(tmp_path, m, "m2.yaml"))
    assert "row 1, column 'ref': expected no card numbers" in text


# ---- (10) CSV line numbers ---------------------------------------------------------------------------------
HEADER = "id,ts,shop,card,amount,cur,kind,fraud"


def line(id_: str, amount: str, shop: str = "s1") -> str:
    return f"{id_},2024-03-01 09:00:00,{shop},{VISA},{amount},eur,web,0"


def failed_lines(tmp_path: Path, text: str, error: type[Exception] = ValidationError) -> str:
    path = tmp_path / "export.csv"
    path.write_bytes(text.encode())
    return failed_import(tmp_path, path, write_mapping(tmp_path), error)


def test_a_row_after_blank_lines_is_named_by_its_own_line(tmp_path: Path) -> None:
    text = failed_lines(tmp_path, "\n".join([HEADER, "", line("t1", "x"), "", "", line("t2", "y")]) + "\n")
    assert "row 1 (line 3), column 'amount': expected a number; received 'x'" in text  # line 2 before
    assert "row 2 (line 6), column 'amount': expected a number; received 'y'" in text  # line 3 before


def test_a_row_after_a_quoted_line_break_is_named_by_its_own_line(tmp_path: Path) -> None:
    rows = [HEADER, "", line("t1", "1", shop='"two\r\nlines"'), line("t2", "x"), "", line("t3", "y")]
    text = failed_lines(tmp_path, "\r\n".join(rows) + "\r\n")
    assert "row 2 (line 5), column 'amount': expected a number; received 'x'" in text
    assert "row 3 (line 7), column 'amount': expected a number; received 'y'" in text


def test_a_ragged_row_after_blank_lines_is_named_by_its_own_line(tmp_path: Path) -> None:
    text = failed_lines(tmp_path, "\n".join([HEADER, "", line("t1", "1"), "", line("t2", "1") + ",extra"]))
    assert "row 2 (line 5): expected 8 cells, as many as the header has columns" in text  # line 3 before


def test_a_byte_not_utf8_after_blank_lines_is_named_by_its_row(tmp_path: Path) -> None:
    data = "\n".join([HEADER, "", line("t1", "1"), "", line("t2", "1", shop="Caf\xe9")]).encode("latin-1")
    path = tmp_path / "export.csv"
    path.write_bytes(data)
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    assert "received the byte 0xe9 at row 2 (line 5), column 'shop'" in text  # row 4 before


# ---- (13) a header line alone ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data", [HEADER.encode(), b"\xef\xbb\xbf" + HEADER.encode(), (HEADER + "\n").encode()]
)
def test_a_file_of_a_header_alone_imports_nothing(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(data)
    summary = import_file(ws_at(tmp_path / "ws"), path, write_mapping(tmp_path))
    assert summary.rows_read == 0 and summary.rows == {"charges": 0, "disputes": 0}


# ---- (14) import_file's arguments --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (
            {"path": None},
            "The 'path' of import_file must be the path of a CSV or Parquet file (a str or a pathlib.Path). "
            "Got None.",
        ),
        (
            {"mapping_path": {"table": "charges"}},
            "The 'mapping_path' of import_file must be the path of a mapping file or the name of a bundled "
            "mapping such as 'sparkov' (a str or a pathlib.Path). Got a dict (a mapping's content: write it "
            "to a YAML file and pass that file's path).",
        ),
        ({"skip_existing": "yes"}, "The 'skip_existing' of import_file must be True or False. Got a str."),
        ({"dry_run": 1}, "The 'dry_run' of import_file must be True or False. Got the int 1."),
        (
            {"progress": "steps"},
            "The 'progress' of import_file must be None or a function taking each step's name. Got a str.",
        ),
        (
            {"join": 3},
            "The 'join' of import_file must be None or the path of the second file of a mapping with a join "
            "(a str or a Path). Got the int 3.",
        ),
        ({"wait_s": -1}, "The 'wait_s' of import_file must be seconds, a number >= 0. Got -1."),
        ({"wait_s": float("nan")}, "The 'wait_s' of import_file must be seconds, a number >= 0. Got nan."),
        ({"wait_s": "60"}, "The 'wait_s' of import_file must be seconds, a number >= 0. Got '60'."),
    ],
)
def test_an_argument_of_the_wrong_kind_is_named(tmp_path: Path, arguments: dict[str, Any], said: str) -> None:
    given: dict[str, Any] = {"path": write_csv(tmp_path), "mapping_path": write_mapping(tmp_path)} | arguments
    with pytest.raises(ConfigError) as e:
        import_file(ws_at(tmp_path / "ws"), **given)
    assert str(e.value) == said


# ---- the messages of a NaN, a naive Parquet time and a .csv.gz in another encoding -------------------------
def test_a_nan_amount_is_said_to_be_nan(tmp_path: Path) -> None:
    path = tmp_path / "export.parquet"
    pq.write_table(pa.table({**ROWS, "amount": [float("nan"), 3.0, 1999.0, 0.07]}), path)
    text = failed_import(tmp_path, path, write_mapping(tmp_path))
    assert "row 1, column 'amount': expected a value (required field); received NaN" in text  # null before


def test_a_naive_parquet_time_is_quoted_as_iso_8601(tmp_path: Path) -> None:
    path = tmp_path / "export.parquet"
    times = [
        datetime(2024, 3, 31, 2, 30),
        *(datetime(2024, 3, 1, h) for h in (9, 10, 11)),
    ]  # (Paris skips 2:30)
    pq.write_table(pa.table({**ROWS, "ts": pa.array(times, pa.timestamp("us"))}), path)
    m = changed(created={"column": "ts"})
    text = failed_import(tmp_path, path, write_mapping(tmp_path, m))
    assert "row 1, column 'ts' (created): expected a local time that exists in Europe/Paris" in text
    assert text.endswith("received '2024-03-31T02:30:00'")  # datetime.datetime(2024, 3, 31, 2, 30) before


def test_a_gzipped_csv_in_another_encoding_is_converted_through_gunzip(tmp_path: Path) -> None:
    path = tmp_path / "export.csv.gz"
    path.write_bytes(gzip.compress("\n".join([HEADER, line("t1", "1", shop="Caf\xe9")]).encode("latin-1")))
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    command = f"gunzip -c '{path}' | iconv -f WINDOWS-1252 -t UTF-8 | gzip > '{tmp_path}/export.utf8.csv.gz'"
    assert text.endswith(f"e.g. `{command}`.")  # iconv read the compressed bytes before
