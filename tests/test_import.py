"""Imports through mappings: the Sparkov example end to end, every conversion, and every way to fail."""

from __future__ import annotations

import copy
import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payfm.errors import ConfigError
from payfm.events.cards import luhn_valid
from payfm.events.importer import import_file
from payfm.events.mapping import _OPTIONS, load_mapping, parse_mapping, resolve_mapping
from payfm.events.validate import ValidationError
from payfm.events.workspace import Workspace

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "sparkov_sample.parquet"
VISA = "4242424242424242"
MC = "5555555555554444"


def instants(source: pa.Table) -> list[datetime]:
    """The instants of the Sparkov rows: local trans_date + trans_time in the main zone of the customer's
    state, as the shipped mapping reads them (its own state map; the sample has no time in a DST gap)."""
    from zoneinfo import ZoneInfo

    spec = yaml.safe_load((Path(resolve_mapping("sparkov"))).read_text())["columns"]["created"]
    zones = spec["timezone"]["map"]
    rows = zip(*(source.column(c).to_pylist() for c in ("trans_date", "trans_time", "state")), strict=True)
    return [
        datetime.fromisoformat(f"{d} {t}").replace(tzinfo=ZoneInfo(zones[s])).astimezone(UTC)
        for d, t, s in rows
    ]


def by_instant(source: pa.Table) -> pa.Table:
    """``source`` in the order of its instants (then trans_num), as the stored charges sort by created."""
    with_time = source.append_column("instant", pa.array(instants(source), pa.timestamp("us", tz="UTC")))
    return with_time.sort_by([("instant", "ascending"), ("trans_num", "ascending")])


PERSONAL = ("ssn", "first", "last", "street", "city", "zip", "dob", "job", "acct_num", "cc_num", "trans_num")


def ws_at(path: Path) -> Workspace:
    return Workspace.open(path, create=True)


def stored_text(ws: Workspace) -> str:
    """Every stored value of every table, as one text (decoded, so compression cannot hide anything)."""
    return json.dumps({t: ws.read(t).to_pylist() for t in ("charges", "disputes")}, default=str)


def state(ws: Workspace) -> tuple[str, list[str]]:
    """The manifest and every data file: what a failed import must leave untouched."""
    files = sorted(str(p.relative_to(ws.root)) for p in ws.root.rglob("*.parquet"))
    return (ws.root / "manifest.json").read_text(), files


# ---- a small foreign file and its mapping ----------------------------------------------------------------
ROWS: dict[str, list[Any]] = {
    "id": ["t1", "t2", "t3", "t4"],
    "ts": ["2024-03-01 09:00:00", "2024-03-01 10:30:00", "2024-03-02 23:59:59", "2024-03-03 00:00:00"],
    "amount": ["10.50", "3", "1999", "0.07"],
    "cur": ["EUR", "usd", "JPY", "eur"],
    "card": [VISA, "4242 4242 4242 4242", MC, "378282246310005"],
    "shop": ["s1", "s2", "s1", "s3"],
    "kind": ["web", "store", "web", "store"],
    "fraud": ["0", "1", "0", "yes"],
    "email": ["a@x.com", "b@y.org", "c@x.com", "d@z.net"],
}
MAPPING: dict[str, Any] = {
    "table": "charges",
    "timezone": "Europe/Paris",
    "columns": {
        "charge_id": {"column": "id", "prefix": "ch_"},
        "created": {"column": "ts", "format": "%Y-%m-%d %H:%M:%S"},
        "merchant_id": "shop",
        "merchant_mcc": {"value": "5411"},
        "merchant_country": {"value": "FR"},
        "card_fingerprint": {"column": "card", "transform": "fingerprint"},
        "card_bin": {"column": "card", "transform": "bin"},
        "card_last4": {"column": "card", "transform": "last4"},
        "card_brand": {"column": "card", "transform": "brand"},
        "card_funding": {"value": "credit"},
        "card_country": {"value": "FR"},
        "amount": {"column": "amount", "minor_units": {"column": "cur"}},
        "currency": {"column": "cur", "case": "lower"},
        "amount_usd": {"column": "amount", "usd_cents": {"column": "cur"}},
        "channel": {"column": "kind", "map": {"web": "ecommerce", "store": "card_present"}},
        "three_ds": {"value": "not_requested"},
        "cvc_check": {"value": "pass"},
        "address_check": {"value": "unchecked"},
        "outcome": {"value": "authorized"},
    },
    "drop": ["email"],
    "labels": [{"column": "fraud", "when": [1, "yes"], "reason": "fraudulent", "delay": "12h"}],
}


def write_csv(tmp_path: Path, rows: dict[str, list[Any]] | None = None, name: str = "export.csv") -> Path:
    path = tmp_path / name
    pacsv.write_csv(pa.table(rows or ROWS), path)
    return path


def write_mapping(tmp_path: Path, mapping: dict[str, Any] | None = None, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(mapping or MAPPING, sort_keys=False))
    return path


def changed(**columns: Any) -> dict[str, Any]:
    """MAPPING with some entries of `columns` replaced (None removes one)."""
    m = copy.deepcopy(MAPPING)
    for k, v in columns.items():
        if v is None:
            m["columns"].pop(k)
        else:
            m["columns"][k] = v
    return m


def failed_import(tmp_path: Path, csv: Path, mapping: Path, error: type[Exception] = ValidationError) -> str:
    """Run an import that must fail; check nothing was written; return the message."""
    ws = ws_at(tmp_path / "ws")
    before = state(ws)
    with pytest.raises(error) as e:
        import_file(ws, csv, mapping)
    assert state(ws) == before
    return str(e.value)


# ---- the Sparkov example ---------------------------------------------------------------------------------
def test_sparkov_sample_imports_with_the_right_counts(tmp_path: Path) -> None:
    source = pq.read_table(SAMPLE)
    fraud_rows = pc.sum(source.column("is_fraud")).as_py()
    ws = ws_at(tmp_path / "ws")
    steps: list[str] = []
    summary = import_file(ws, SAMPLE, "sparkov", progress=steps.append)
    assert summary.rows_read == source.num_rows == 384
    assert summary.rows == {"charges": 384, "disputes": fraud_rows}
    assert fraud_rows == 78
    assert ws.count("charges") == 384 and ws.count("disputes") == fraud_rows
    assert "ssn" in summary.dropped_columns and summary.unmapped_columns == ()
    assert steps[-1] == "writing"
    charges = ws.read("charges")
    assert pc.count_distinct(charges.column("charge_id")).as_py() == 384  # trans_num alone is not unique
    assert set(charges.column("channel").to_pylist()) == {"ecommerce", "card_present"}
    # amounts are cents of the dollar floats; created is the local date and time in the state's zone
    by_time = dict(zip(instants(source), source.column("amt").to_pylist(), strict=True))
    for created, amount in zip(
        charges.column("created").to_pylist(), charges.column("amount").to_pylist(), strict=True
    ):
        assert amount == round(by_time[created] * 100)
    unix = dict(zip(instants(source), source.column("unix_time").to_pylist(), strict=True))
    offsets = {int(unix[t] - t.timestamp()) // 3600 for t in charges.column("created").to_pylist()}
    assert offsets == {-5, -6, -7, -8, -10}  # (unix_time: the local time read as UTC; HI at -10)


def test_sparkov_cards_keep_five_digits_unknown(tmp_path: Path) -> None:
    """The sample's 12- to 14-digit numbers are stored without their last four (a BIN and last four would
    leave 2 to 4 digits unknown: with the key, the fingerprint finds the number among 10 to 1,000)."""
    source = pq.read_table(SAMPLE).column("cc_num").to_pylist()
    ws = ws_at(tmp_path / "ws")
    import_file(ws, SAMPLE, "sparkov")
    stored = ws.read("charges", ["created", "card_bin", "card_last4"]).to_pylist()
    by_time = {r["created"]: r for r in stored}
    times = instants(pq.read_table(SAMPLE))
    lengths = {len(str(n)) for n in source}
    assert {12, 13, 14, 15, 16} <= lengths
    for number, t in zip(source, times, strict=True):
        row, number = by_time[t], str(number)
        assert row["card_bin"] == number[:6]
        assert row["card_last4"] == (number[-4:] if len(number) >= 15 else None)
        assert len(number) - 6 - len(row["card_last4"] or "") >= 5


def test_sparkov_disputes_follow_fraud_rows_after_the_delay(tmp_path: Path) -> None:
    ws = ws_at(tmp_path / "ws")
    import_file(ws, SAMPLE, "sparkov")
    con = ws.connect()
    rows = con.execute(
        "SELECT d.created - c.created, d.reason, d.amount = c.amount, d.currency FROM disputes d "
        "JOIN charges c USING (charge_id)"
    ).fetchall()
    assert len(rows) == 78
    assert {r[0] for r in rows} == {timedelta(days=30)}
    assert {(r[1], r[2], r[3]) for r in rows} == {("fraudulent", True, "usd")}
    # the disputed charges are exactly the fraud rows (matched by time and amount)
    source = pq.read_table(SAMPLE).filter(pc.equal(pc.field("is_fraud"), 1))
    expected = sorted(
        zip((int(t.timestamp()) for t in instants(source)), source.column("amt").to_pylist(), strict=True)
    )
    got = con.execute(
        "SELECT epoch(c.created)::BIGINT, c.amount FROM disputes d JOIN charges c USING (charge_id) "
        "ORDER BY 1, 2"
    ).fetchall()
    assert [(t, round(a * 100)) for t, a in expected] == got


def test_sparkov_personal_data_and_card_numbers_are_not_stored(tmp_path: Path) -> None:
    ws = ws_at(tmp_path / "ws")
    import_file(ws, SAMPLE, "sparkov")
    source = pq.read_table(SAMPLE)
    text = stored_text(ws)
    values = {str(v) for t in ("charges", "disputes") for col in ws.read(t).columns for v in col.to_pylist()}
    for column in PERSONAL:
        personal = {str(v) for v in source.column(column).to_pylist()}
        assert not personal & values, f"a value of {column} is stored"
    for column in ("ssn", "street", "acct_num", "cc_num", "trans_num"):  # long enough to search as text
        assert not any(str(v) in text for v in set(source.column(column).to_pylist())), column
    raw = b"".join(p.read_bytes() for p in ws.root.rglob("*.parquet"))
    for card in set(source.column("cc_num").to_pylist()):
        assert card.encode() not in raw
    stored = set(ws.read("charges").column_names)
    assert not stored & set(PERSONAL)


def test_sparkov_card_fields(tmp_path: Path) -> None:
    ws = ws_at(tmp_path / "ws")
    import_file(ws, SAMPLE, "sparkov")
    source = by_instant(pq.read_table(SAMPLE))
    charges = ws.read("charges").sort_by([("created", "ascending")])
    pairs = set(
        zip(source.column("cc_num").to_pylist(), charges.column("card_fingerprint").to_pylist(), strict=True)
    )
    cards = {c for c, _ in pairs}
    assert len(pairs) == len(cards) == len({f for _, f in pairs})  # one fingerprint per card, and vice versa
    for card, bin_, last4 in zip(
        source.column("cc_num").to_pylist(),
        charges.column("card_bin").to_pylist(),
        charges.column("card_last4").to_pylist(),
        strict=True,
    ):
        assert (bin_, last4) == (card[:6], card[-4:] if len(card) >= 15 else None)  # 5 digits stay unknown
    brands = dict(
        zip(source.column("cc_num").to_pylist(), charges.column("card_brand").to_pylist(), strict=True)
    )
    for card, brand in brands.items():
        if card.startswith("4"):
            assert brand == "visa"
        if card.startswith(("34", "37")):
            assert brand == "amex"


def test_fingerprints_are_stable_in_a_workspace_and_differ_across_workspaces(tmp_path: Path) -> None:
    source = pq.read_table(SAMPLE)
    half = source.num_rows // 2
    pq.write_table(source.slice(0, half), tmp_path / "a.parquet")
    pq.write_table(source.slice(half), tmp_path / "b.parquet")
    ws = ws_at(tmp_path / "ws")
    import_file(ws, tmp_path / "a.parquet", "sparkov")
    import_file(ws, tmp_path / "b.parquet", "sparkov")
    assert ws.count("charges") == source.num_rows
    charges = ws.read("charges").sort_by([("created", "ascending")])
    ordered = by_instant(source)
    mapping: dict[str, set[str]] = {}
    for card, fp in zip(
        ordered.column("cc_num").to_pylist(), charges.column("card_fingerprint").to_pylist(), strict=True
    ):
        mapping.setdefault(card, set()).add(fp)
    assert all(len(fps) == 1 for fps in mapping.values())  # same card, same fingerprint, across both imports
    other = ws_at(tmp_path / "other")
    import_file(other, SAMPLE, "sparkov")
    mine = set(charges.column("card_fingerprint").to_pylist())
    theirs = set(other.read("charges").column("card_fingerprint").to_pylist())
    assert len(theirs) == len(mine) and not mine & theirs


def test_importing_the_same_file_twice_is_refused(tmp_path: Path) -> None:
    ws = ws_at(tmp_path / "ws")
    import_file(ws, SAMPLE, "sparkov")
    before = state(ws)
    with pytest.raises(ValidationError) as e:
        import_file(ws, SAMPLE, "sparkov")
    text = str(e.value)
    assert "384 problem(s)" in text and "already in the workspace" in text
    # names a few of the ids, and the file's columns they are hashed from
    assert (
        "columns 'trans_num', 'unix_time' and 'acct_num' (hashed into charge_id)" in text and "'ch_" in text
    )
    assert state(ws) == before


def test_csv_and_parquet_exports_give_the_same_events(tmp_path: Path) -> None:
    csv = tmp_path / "sparkov.csv"
    pacsv.write_csv(pq.read_table(SAMPLE), csv)
    a, b = ws_at(tmp_path / "a"), ws_at(tmp_path / "b")
    (b.root / "secret.key").write_text(a.secret().hex())  # same secret: same ids and fingerprints
    import_file(a, SAMPLE, "sparkov")
    import_file(b, csv, "sparkov")
    assert a.read("charges").equals(b.read("charges"))
    assert a.read("disputes").equals(b.read("disputes"))


def test_the_bundled_mapping_is_found_by_name(tmp_path: Path) -> None:
    assert resolve_mapping("sparkov").name == "sparkov.yaml"
    path = write_mapping(tmp_path, name="sparkov")  # an existing file wins over a bundled name
    assert resolve_mapping(path) == path
    with pytest.raises(ConfigError, match=r"Mapping 'sparkv'.*\(sparkov\).*did you mean 'sparkov'"):
        resolve_mapping("sparkv")
    assert load_mapping("sparkov").fingerprinted == frozenset({"cc_num"})


# ---- conversions -----------------------------------------------------------------------------------------
def test_a_foreign_csv_with_conversions(tmp_path: Path) -> None:
    ws = ws_at(tmp_path / "ws")
    summary = import_file(ws, write_csv(tmp_path), write_mapping(tmp_path))
    assert summary.rows == {"charges": 4, "disputes": 2}
    assert summary.dropped_columns == ("email",) and summary.unmapped_columns == ()
    c = ws.read("charges").sort_by("charge_id").to_pydict()
    assert c["charge_id"] == ["ch_t1", "ch_t2", "ch_t3", "ch_t4"]
    # Paris is UTC+1 in March (before the DST change on the 31st)
    assert c["created"][0] == datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
    assert c["created"][2] == datetime(2024, 3, 2, 22, 59, 59, tzinfo=UTC)
    assert c["amount"] == [1050, 300, 1999, 7]  # eur cents, usd cents, yen, eur cents
    assert c["currency"] == ["eur", "usd", "jpy", "eur"]
    # 10.50 eur * 1.08 = 11.34 usd; 1999 jpy * 0.0067 = 13.3933 usd; 0.07 eur * 1.08 = 0.0756 usd
    assert c["amount_usd"] == [1134, 300, 1339, 8]
    assert c["card_brand"] == ["visa", "visa", "mastercard", "amex"]
    assert c["card_bin"] == ["424242", "424242", "555555", "378282"]
    assert c["card_last4"] == ["4242", "4242", "4444", "0005"]
    assert c["card_fingerprint"][0] == c["card_fingerprint"][1] != c["card_fingerprint"][2]
    assert c["channel"] == ["ecommerce", "card_present", "ecommerce", "card_present"]
    d = ws.read("disputes").sort_by("charge_id").to_pydict()
    assert d["charge_id"] == ["ch_t2", "ch_t4"]
    assert d["created"][1] == datetime(2024, 3, 2, 23, 0, tzinfo=UTC) + timedelta(hours=12)
    assert d["amount"] == [300, 7] and d["currency"] == ["usd", "eur"]
    assert "a@x.com" not in stored_text(ws)


def test_jpy_amount_with_fractions_is_an_error_but_usd_conversion_rounds(tmp_path: Path) -> None:
    rows = {**ROWS, "amount": ["10.50", "3", "1999.5", "0.07"]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path))
    assert "export.csv: 1 problem(s); nothing was written." in text
    assert "row 3 (line 4), column 'amount': expected whole minor units after 'columns.amount'" in text
    assert "received '1999.5'" in text


def test_epoch_times_and_a_label_time_column(tmp_path: Path) -> None:
    rows = {
        **ROWS,
        "ts": ["1709283600", "1709289000", "1709420399", "1709420400"],
        "fraud_at": ["", "2024-04-01T00:00:00Z", "", "2024-04-02 12:00:00"],
    }
    m = changed(created={"column": "ts", "unit": "s"})
    m["labels"] = [{"column": "fraud", "when": ["1", "yes"], "time": {"column": "fraud_at"}}]
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    assert ws.read("charges").column("created").to_pylist()[0] == datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    d = ws.read("disputes").sort_by("charge_id").to_pydict()
    # an ISO time with Z is absolute; one without a zone is read in the mapping's zone (Paris, UTC+2 in April)
    assert d["created"] == [datetime(2024, 4, 1, tzinfo=UTC), datetime(2024, 4, 2, 10, 0, tzinfo=UTC)]


def test_parquet_timestamps_aware_and_naive(tmp_path: Path) -> None:
    naive = [datetime(2024, 7, 1, 12, 0)] * 4
    table = pa.table({**{k: pa.array(v) for k, v in ROWS.items()}, "ts": pa.array(naive, pa.timestamp("ms"))})
    pq.write_table(table, tmp_path / "x.parquet")
    m = changed(created={"column": "ts", "timezone": "America/New_York"})
    ws = ws_at(tmp_path / "ws")
    import_file(ws, tmp_path / "x.parquet", write_mapping(tmp_path, m))
    assert ws.read("charges").column("created")[0].as_py() == datetime(2024, 7, 1, 16, 0, tzinfo=UTC)
    aware = table.set_column(1, "ts", pa.array(naive, pa.timestamp("s", tz="Asia/Tokyo")))
    pq.write_table(aware, tmp_path / "y.parquet")
    ws2 = ws_at(tmp_path / "ws2")
    import_file(ws2, tmp_path / "y.parquet", write_mapping(tmp_path, changed(created={"column": "ts"})))
    assert ws2.read("charges").column("created")[0].as_py() == datetime(2024, 7, 1, 12, 0, tzinfo=UTC)


# ---- data errors -----------------------------------------------------------------------------------------
def test_a_card_number_in_an_unmapped_column_is_rejected_and_never_echoed(tmp_path: Path) -> None:
    rows = {**ROWS, "note": ["ok", "ok", f"paid with {MC}", "ok"]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path))
    assert "export.csv: 1 problem(s); nothing was written." in text
    assert "row 3 (line 4), column 'note': expected no card numbers" in text
    assert "received a full card number (not shown)" in text
    assert MC not in text and "5555" not in text


def test_a_row_the_csv_parser_cannot_read_is_not_echoed_with_its_card_number(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text(f"id,ts,shop,card,amount\n1,2024-01-01T10:00:00Z,m1,{VISA}\n")  # a column short
    text = failed_import(tmp_path, path, write_mapping(tmp_path))
    assert "row 1 (line 2): expected 5 cells" in text and "received 4 cells" in text
    assert VISA not in text and "m1" not in text and "card number" not in text  # no text of the row at all


def test_a_failed_first_import_or_generate_leaves_no_workspace_behind(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from payfm.cli.main import cli

    bad = tmp_path / "short.csv"
    bad.write_text("id,ts\n1\n")
    r = CliRunner().invoke(cli, ["-w", str(tmp_path / "new"), "import", str(bad), "--mapping", "sparkov"])
    assert r.exit_code == 1 and not (tmp_path / "new").exists()
    r = CliRunner().invoke(cli, ["-w", str(tmp_path / "new2"), "generate", "--charges", "5"])
    assert r.exit_code == 1 and not (tmp_path / "new2").exists()
    ws = ws_at(tmp_path / "kept")  # an existing workspace is never removed
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "import", str(bad), "--mapping", "sparkov"])
    assert r.exit_code == 1 and (ws.root / "manifest.json").exists()


def test_a_card_number_in_a_dropped_column_is_rejected(tmp_path: Path) -> None:
    rows = {**ROWS, "email": ["a", VISA, "c", "d"]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path))
    assert "row 2 (line 3), column 'email'" in text and VISA not in text


def test_card_numbers_are_scanned_in_mapped_columns_and_parquet_integers(tmp_path: Path) -> None:
    table = pa.table({**{k: pa.array(v) for k, v in ROWS.items()}, "shop": pa.array([1, int(VISA), 2, 3])})
    pq.write_table(table, tmp_path / "x.parquet")
    text = failed_import(tmp_path, tmp_path / "x.parquet", write_mapping(tmp_path))
    assert "x.parquet: row 2, column 'shop': expected no card numbers" in text
    assert "(line" not in text and VISA not in text


def test_a_bad_value_in_the_card_column_is_not_shown(tmp_path: Path) -> None:
    rows = {**ROWS, "card": [VISA, "n/a 4242", MC, "378282246310005"]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path))
    assert "row 2 (line 3), column 'card' (card_fingerprint): expected a card number of 8-19 digits" in text
    assert "n/a" not in text


def test_a_card_number_typed_in_fullwidth_digits_is_the_same_card(tmp_path: Path) -> None:
    wide = "".join(chr(0xFF10 + int(d)) for d in MC)  # a CJK input mode's digits: the same card as MC
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path, {**ROWS, "card": [VISA, VISA, MC, wide]}), write_mapping(tmp_path))
    charges = ws.read("charges").sort_by([("created", "ascending")])
    fps = charges.column("card_fingerprint").to_pylist()
    assert fps[2] == fps[3] != fps[0]
    assert charges.column("card_last4").to_pylist()[3] == "4444" and wide not in stored_text(ws)


def test_every_problem_is_reported_with_a_count(tmp_path: Path) -> None:
    rows = {**ROWS, "kind": ["web", "moto", "phone", "fax"], "amount": ["1", "x", "2", "3"]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path))
    lines = text.splitlines()
    assert lines[0].endswith("/export.csv: 4 problem(s); nothing was written.")
    assert any("row 2 (line 3), column 'amount': expected a number; received 'x'" in x for x in lines)
    assert any(
        "column 'kind' (channel): expected one of the keys of 'columns.channel.map'" in x for x in lines
    )
    assert any("received 'moto'" in x for x in lines) and any("received 'fax'" in x for x in lines)


def test_map_default_covers_unknown_values(tmp_path: Path) -> None:
    rows = {**ROWS, "kind": ["web", "moto", "store", "fax"]}
    m = changed(channel={"column": "kind", "map": {"web": "ecommerce"}, "default": "card_present"})
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    assert ws.read("charges").column("channel").to_pylist() == ["ecommerce"] + ["card_present"] * 3


def test_countries_are_iso_codes_and_a_map_can_fix_some_and_keep_the_rest(tmp_path: Path) -> None:
    rows = {**ROWS, "ctry": ["uk", "US", "de", "FR"]}
    plain = changed(card_country={"column": "ctry", "case": "upper"})
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, plain))
    assert "row 1 (line 2), column 'ctry' (card_country): expected an ISO 3166-1 alpha-2 country code" in text
    assert "received 'UK'" in text
    fixed = changed(
        card_country={"column": "ctry", "case": "upper", "map": {"UK": "GB"}, "keep_unmapped": True}
    )
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path, rows), write_mapping(tmp_path, fixed))
    assert ws.read("charges").sort_by("charge_id").column("card_country").to_pylist() == [
        "GB",
        "US",
        "DE",
        "FR",
    ]
    alone = changed(card_country={"column": "ctry", "keep_unmapped": True})
    with pytest.raises(
        ConfigError, match="expected `keep_unmapped` together with `map`; received 'no `map`'"
    ):
        import_file(ws_at(tmp_path / "ws2"), write_csv(tmp_path, rows), write_mapping(tmp_path, alone))


def test_schema_problems_after_mapping_name_the_file_row_and_column(tmp_path: Path) -> None:
    m = changed(channel={"column": "kind"})  # 'web' is not a channel
    text = failed_import(tmp_path, write_csv(tmp_path), write_mapping(tmp_path, m))
    assert "export.csv: row 1 (line 2), column 'kind' (channel): expected one of ecommerce" in text
    assert "received 'web'" in text


def test_duplicate_ids_in_the_file(tmp_path: Path) -> None:
    rows = {**ROWS, "id": ["a", "b", "a", "c"]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path))
    assert "row 1 (line 2), column 'id' (charge_id): expected unique ids; received 'ch_a'" in text
    assert "row 3 (line 4)" in text


def test_unparseable_and_dst_ambiguous_times(tmp_path: Path) -> None:
    rows = {**ROWS, "ts": ["2024-03-01 09:00:00", "yesterday", "2024-10-27 02:30:00", "2024-03-31 02:30:00"]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path))
    assert (
        "row 2 (line 3), column 'ts' (created): expected a time in the format '%Y-%m-%d %H:%M:%S'; "
        "received 'yesterday'" in text
    )
    rows["ts"][1] = "2024-03-01 10:00:00"
    text = failed_import(tmp_path / "2", write_csv(tmp_path, rows), write_mapping(tmp_path))
    # 02:30 happens twice on 27 October and never on 31 March in Paris: not guessed
    assert "2 problem(s)" in text and "a local time that exists once in Europe/Paris" in text
    assert "row 3 (line 4)" in text and "row 4 (line 5)" in text


def test_naive_times_without_a_zone_are_never_guessed(tmp_path: Path) -> None:
    m = copy.deepcopy(MAPPING)
    del m["timezone"]
    text = failed_import(tmp_path, write_csv(tmp_path), write_mapping(tmp_path, m), ConfigError)
    assert text.startswith("m.yaml: 'columns.created.timezone': expected a time zone for the naive times")
    assert "column 'ts'" in text
    naive_iso = {**ROWS, "ts": ["2024-03-01T09:00:00"] * 4}
    m2 = copy.deepcopy(m)
    m2["columns"]["created"] = {"column": "ts"}
    text = failed_import(
        tmp_path / "2", write_csv(tmp_path, naive_iso), write_mapping(tmp_path, m2), ConfigError
    )
    assert "'columns.created.timezone'" in text and "without a zone offset" in text


# ---- mapping errors --------------------------------------------------------------------------------------
MISTAKES: list[tuple[Any, str]] = [
    (
        lambda m: m.update(tabel="charges"),
        "m.yaml: 'tabel': expected one of table,",
    ),
    (
        lambda m: m.update(tabel="charges"),
        "(did you mean 'table'?); received <an unknown key 'tabel'>",
    ),
    (
        lambda m: m.update(table="charge"),
        "'table': expected one of charges, disputes",
    ),
    (
        lambda m: m["columns"].update(amout={"column": "amount"}),
        "'columns.amout': expected a field of 'charges' (did you mean 'amount'?)",
    ),
    (
        lambda m: m["columns"].pop("merchant_id"),
        "'columns.merchant_id': expected a source for the required field",
    ),
    (
        lambda m: m["columns"].update(created={"column": "ts", "unit": "days"}),
        "'columns.created.unit': expected a unit: d, h, m, s, ms, us, ns (m: minutes); received 'days'",
    ),
    (
        lambda m: m["columns"]["created"].update(timezone="Europe/Pari"),
        "'columns.created.timezone': expected an IANA time zone name",
    ),
    (
        lambda m: m["columns"]["created"].update(timezone="Europe/Pari"),
        "did you mean 'Europe/Paris'?",
    ),
    (
        lambda m: m["labels"][0].update(delay="30 days"),
        "'labels[0].delay': expected a duration such as 30d",
    ),
    (
        lambda m: m["labels"][0].update(reason="fraud"),
        "'labels[0].reason': expected one of fraudulent",
    ),
    (
        lambda m: m["columns"].update(amount={"column": "amount", "scale": -1}),
        "'columns.amount.scale': expected a positive number",
    ),
    (
        lambda m: m["columns"].update(amount={"column": "amount", "scale": 100, "usd_cents": "usd"}),
        "at most one of scale",
    ),
    (
        lambda m: m["columns"].update(amount={"column": "amount", "unit": "s"}),
        "'columns.amount.unit': expected one of column, columns, value, hash, separator, scale",
    ),
    (
        lambda m: m["columns"].update(merchant_mcc={"value": "5411", "column": "shop"}),
        "'columns.merchant_mcc': expected exactly one of column, columns, value, hash",
    ),
    (
        lambda m: m["columns"].update(card_country={"value": False}),
        "'columns.card_country.value': expected a text value (quote it in YAML",
    ),
    (
        lambda m: m["columns"].update(customer_id={"column": "card"}),
        "'columns.customer_id': expected card-number columns used only with transform",
    ),
    (
        lambda m: m["columns"].update(card_bin={"column": "card", "transform": "bins"}),
        "did you mean 'bin'?",
    ),
    (
        lambda m: m["columns"].update(amount={"hash": ["amount"]}),
        "'columns.amount.hash': expected a text field",
    ),
    (
        lambda m: m.update(drop=["email", "shop"]),
        "'drop[1]': expected columns the mapping does not use; "
        "received <'shop', used by 'columns.merchant_id'>",
    ),
    (
        lambda m: m["labels"][0].pop("delay"),
        "'labels[0]': expected exactly one of delay (e.g. 30d) or time",
    ),
]


@pytest.mark.parametrize(("edit", "expected"), MISTAKES)
def test_mapping_mistakes_name_the_file_and_key(tmp_path: Path, edit: Any, expected: str) -> None:
    m = copy.deepcopy(MAPPING)
    edit(m)
    text = failed_import(tmp_path, write_csv(tmp_path), write_mapping(tmp_path, m), ConfigError)
    assert text.startswith("m.yaml: '") or text.startswith("m.yaml: ")
    assert expected in text


def test_a_source_column_missing_from_the_file(tmp_path: Path) -> None:
    m = changed(merchant_id={"column": "shopp"})
    text = failed_import(tmp_path, write_csv(tmp_path), write_mapping(tmp_path, m), ConfigError)
    assert "m.yaml: 'columns.merchant_id': expected a column of '" in text
    assert "(did you mean 'shop'?); received 'shopp', which the file does not have" in text


def test_unreadable_inputs_are_config_errors(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("table: [charges\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: expected valid YAML"):
        load_mapping(bad_yaml)
    with pytest.raises(ConfigError, match=r"expected a \.csv, \.csv\.gz, \.parquet or \.pq file"):
        import_file(ws_at(tmp_path / "ws"), tmp_path / "x.json", write_mapping(tmp_path))
    with pytest.raises(ConfigError, match="expected a readable file"):
        import_file(ws_at(tmp_path / "ws"), tmp_path / "missing.csv", write_mapping(tmp_path))


def test_the_mapping_parses_to_frozen_values() -> None:
    m = parse_mapping(copy.deepcopy(MAPPING), "m.yaml")
    assert m.fields["amount"].minor_units is not None and m.fields["amount"].minor_units.column == "cur"
    assert m.labels[0].delay == timedelta(hours=12) and m.labels[0].when == (1, "yes")
    assert m.fingerprinted == frozenset({"card"})
    with pytest.raises(AttributeError):
        m.table = "refunds"  # type: ignore[misc]


def test_every_mapping_option_is_documented() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "import.md").read_text()
    options = {o for opts in _OPTIONS.values() for o in opts} | {"column", "columns", "value", "hash"}
    options |= {"table", "timezone", "drop", "labels", "when", "reason", "fraud_type", "delay", "time"}
    missing = sorted(o for o in options if f"`{o}`" not in doc)
    assert not missing, f"docs/import.md does not document {missing}"


def test_milliseconds_read_as_seconds_are_implausible_times(tmp_path: Path) -> None:
    # 13-digit epoch milliseconds, half of them Luhn-valid: a column declared as epoch times is not scanned
    # for card numbers (its values must be times in 1990-2100 instead).
    valid = [str(v) for v in range(1709283600000, 1709283600100) if luhn_valid(str(v))][:2]
    ms = valid + [str(v) for v in range(1709283600000, 1709283600100) if not luhn_valid(str(v))][:2]
    m = changed(created={"column": "ts", "unit": "s"})
    text = failed_import(tmp_path, write_csv(tmp_path, {**ROWS, "ts": ms}), write_mapping(tmp_path, m))
    assert "4 problem(s)" in text
    assert (
        "row 1 (line 2), column 'ts' (created): expected a time between 1990 and 2100 (check the unit, "
        "origin or format" in text
    )
    ws = ws_at(tmp_path / "ok")
    import_file(
        ws,
        write_csv(tmp_path, {**ROWS, "ts": ms}),
        write_mapping(tmp_path, changed(created={"column": "ts", "unit": "ms"})),
    )
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert ws.read("charges").column("created")[0].as_py() == epoch + timedelta(milliseconds=int(ms[0]))


def test_an_empty_file_imports_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(",".join(ROWS) + "\n")
    ws = ws_at(tmp_path / "ws")
    summary = import_file(ws, path, write_mapping(tmp_path))
    assert summary.rows == {"charges": 0, "disputes": 0} and ws.count("charges") == 0


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"", "received an empty file."),
        (b"\n\r\n  \n", "received only blank lines."),
        (b"\n" + b"id,ts\n1,2\n", "received a blank line (the rows follow it: remove the blank lines"),
    ],
)
def test_a_file_without_a_header_line_is_refused_before_arrow_reads_it(
    tmp_path: Path, body: bytes, said: str
) -> None:
    """An import review: 'expected a readable file; received an error (Empty CSV file)', from Arrow's reader,
    which now and then aborted the process (status 134) after raising it on a stream."""
    path = tmp_path / "nothing.csv.gz"
    path.write_bytes(gzip.compress(body))
    ws = ws_at(tmp_path / "ws")
    with pytest.raises(ConfigError) as e:
        import_file(ws, path, write_mapping(tmp_path))
    assert f"'{path}': expected a header line of column names on line 1; {said}" in str(e.value)
    assert not ws.root.exists() or ws.count("charges") == 0


def test_other_tables_can_be_imported(tmp_path: Path) -> None:
    mapping = {
        "table": "refunds",
        "columns": {
            "refund_id": {"hash": ["id"], "prefix": "re_"},
            "charge_id": {"column": "id", "prefix": "ch_"},
            "created": {"column": "ts", "format": "%Y-%m-%d %H:%M:%S", "timezone": "UTC"},
            "amount": {"column": "amount", "minor_units": {"column": "cur"}},
            "currency": {"column": "cur", "case": "lower"},
            "reason": {"value": "requested_by_customer"},
        },
        "drop": ["card"],
    }
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path), write_mapping(tmp_path))  # the charges the refunds point at
    rows = {k: v for k, v in ROWS.items() if k != "card"}
    rows["ts"] = [t.replace("2024-03-0", "2024-03-1") for t in ROWS["ts"]]  # nine days after each charge
    refunds = write_csv(tmp_path, rows, name="refunds.csv")
    summary = import_file(ws, refunds, write_mapping(tmp_path, mapping, name="refunds.yaml"))
    assert summary.rows == {"refunds": 4}
    assert summary.unmapped_columns == ("shop", "kind", "fraud", "email")
    assert ws.read("refunds").column("amount").to_pylist() == [1050, 300, 1999, 7]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=st.integers(2, 9),  # (a card number starting with 1 has 15 digits: the airlines' UATP cards)
    digits=st.lists(st.integers(0, 9), min_size=11, max_size=17),
    separator=st.sampled_from(["", " ", "-"]),
    column=st.sampled_from(["shop", "email", "new"]),
)
def test_no_card_number_is_ever_echoed(
    tmp_path: Path, first: int, digits: list[int], separator: str, column: str
) -> None:
    body = str(first) + "".join(map(str, digits))
    card = next(body + str(c) for c in range(10) if luhn_valid(body + str(c)))
    shown = separator.join(card[i : i + 4] for i in range(0, len(card), 4))
    rows = {**ROWS, column: ["x", f"ref {shown}", "y", "z"]}
    with pytest.raises(ValidationError) as e:
        import_file(ws_at(tmp_path / "ws"), write_csv(tmp_path, rows), write_mapping(tmp_path))
    text = str(e.value)
    assert f"row 2 (line 3), column '{column}'" in text
    assert card not in text and shown not in text and card[-8:] not in text


def test_an_outcome_must_follow_its_charge(tmp_path: Path) -> None:
    mapping = changed()
    mapping["labels"] = [{"column": "fraud", "when": 1, "reason": "fraudulent", "delay": "0d"}]
    with pytest.raises(ConfigError, match=r"delay': expected a positive delay"):
        import_file(ws_at(tmp_path / "ws"), write_csv(tmp_path, ROWS), write_mapping(tmp_path, mapping))


def test_a_label_time_at_or_before_its_charge_is_refused(tmp_path: Path) -> None:
    rows = {
        **ROWS,
        "ts": ["1709283600", "1709289000", "1709420399", "1709420400"],
        "fraud_at": ["", "2024-03-01T10:30:00Z", "", "2024-04-02T12:00:00Z"],  # row 2: the charge's own time
    }
    m = changed(created={"column": "ts", "unit": "s"})
    m["labels"] = [{"column": "fraud", "when": ["1", "yes"], "time": {"column": "fraud_at"}}]
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    assert "row 2 (line 3), column 'fraud_at': expected an outcome time for" in text
    assert "later than the charge's time; received a time at or before the charge" in text
