"""Import defects a second audit found: outcomes not checked against their charges, CSV null tokens, blank
texts as shared keys, e-mail addresses as domains, credential changes in the future, a duplicate header's
traceback, an empty `when`, unclear amount and time messages, and importable reviews."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from factories import charges as charge_table
from payfm.errors import ConfigError
from payfm.events.importer import import_file
from payfm.events.schema import DomainError, canonical_domain
from payfm.events.validate import ValidationError, shown_value, validate_events
from payfm.events.workspace import Workspace
from payfm.synth.config import WorldConfig
from payfm.synth.generator import generate_world
from test_import import MAPPING, ROWS, VISA, changed, failed_import, write_csv, write_mapping

# ROWS' charges in UTC (their local times are Europe/Paris, UTC+1 in March).
CHARGE_TIMES = [
    "2024-03-01T08:00:00Z",
    "2024-03-01T09:30:00Z",
    "2024-03-02T22:59:59Z",
    "2024-03-02T23:00:00Z",
]
CURRENCIES = {"ch_t1": "eur", "ch_t2": "usd", "ch_t3": "jpy", "ch_t4": "eur"}  # ROWS' charges'
REFUNDS: dict[str, Any] = {
    "table": "refunds",
    "columns": {
        "refund_id": {"column": "rid"},
        "charge_id": {"column": "charge"},
        "created": {"column": "at"},
        "amount": {"column": "amt", "scale": 100},
        "currency": {"column": "cur"},  # its charge's
        "reason": {"value": "requested_by_customer"},
    },
}


def charged(tmp_path: Path) -> Workspace:
    """A workspace holding ROWS' four charges (ch_t1 .. ch_t4)."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    import_file(ws, write_csv(tmp_path), write_mapping(tmp_path))
    return ws


def import_outcomes(
    tmp_path: Path, ws: Workspace, charge: list[str], at: list[str], mapping: dict[str, Any] = REFUNDS
) -> str:
    """Import outcome rows for ``charge`` at ``at``; return the error message ('' when it imported)."""
    rows = {"rid": [f"re_{i}" for i in range(len(charge))], "charge": charge, "at": at}
    rows |= {"amt": ["1.00"] * len(charge), "kind": ["misc"] * len(charge)}
    rows |= {"cur": [CURRENCIES.get(c, "eur") for c in charge]}
    path = write_csv(tmp_path, rows, name="outcomes.csv")
    try:
        import_file(ws, path, write_mapping(tmp_path, mapping, name="outcomes.yaml"))
    except ValidationError as e:
        return str(e)
    return ""


# ---- 1. outcomes follow their charge ---------------------------------------------------------------------
def test_an_outcome_of_an_unknown_charge_is_refused_naming_row_column_and_value(tmp_path: Path) -> None:
    ws = charged(tmp_path)
    before = ws.count("refunds")
    text = import_outcomes(tmp_path, ws, ["ch_t1", "ch_nope"], ["2024-03-05T00:00:00Z"] * 2)
    assert "1 problem(s)" in text
    assert (
        "outcomes.csv: row 2 (line 3), column 'charge' (charge_id): expected the charge_id of a charge in "
        "the workspace" in text
    )
    assert "received 'ch_nope'" in text and ws.count("refunds") == before


@pytest.mark.parametrize(
    "at", ["2024-03-01T09:30:00Z", "2024-03-01T09:29:59.999999Z", "2024-02-01T00:00:00Z"]
)
def test_an_outcome_at_or_before_its_charge_is_refused(tmp_path: Path, at: str) -> None:
    ws = charged(tmp_path)
    text = import_outcomes(tmp_path, ws, ["ch_t1", "ch_t2"], ["2024-03-05T00:00:00Z", at])
    assert "1 problem(s)" in text
    assert "row 2 (line 3), column 'at' (created): expected a time later than the charge's time" in text
    assert "the charge: 2024-03-01T09:30:00+00:00" in text
    assert ws.count("refunds") == 0


def test_an_outcome_a_microsecond_after_its_charge_is_imported(tmp_path: Path) -> None:
    ws = charged(tmp_path)
    assert import_outcomes(tmp_path, ws, ["ch_t2", "ch_t4"], ["2024-03-01T09:30:00.000001Z", CHARGE_TIMES[3]])
    assert import_outcomes(tmp_path, ws, ["ch_t2"], ["2024-03-01T09:30:00.000001Z"]) == ""
    assert ws.read("refunds").column("charge_id").to_pylist() == ["ch_t2"]


@pytest.mark.parametrize("table", ["disputes", "early_fraud_warnings"])
def test_every_outcome_table_is_checked(tmp_path: Path, table: str) -> None:
    ws = charged(tmp_path)
    before = ws.count(table)  # disputes of ROWS' own labels
    columns: dict[str, Any] = {"charge_id": "charge", "created": "at"}
    if table == "disputes":
        columns |= {"dispute_id": "rid", "reason": {"value": "fraudulent"}, "currency": {"column": "cur"}}
        columns |= {"amount": {"column": "amt", "scale": 100}}
    else:
        columns |= {"efw_id": "rid", "fraud_type": {"column": "kind"}}
    mapping = {"table": table, "columns": columns}
    text = import_outcomes(
        tmp_path, ws, ["ch_gone", "ch_t3"], ["2024-03-05T00:00:00Z", CHARGE_TIMES[2]], mapping
    )
    assert "2 problem(s)" in text
    assert "row 1 (line 2), column 'charge'" in text and "row 2 (line 3), column 'at'" in text
    assert ws.count(table) == before


def test_the_synthetic_world_has_every_outcome_after_its_charge() -> None:
    tables: dict[str, list[pa.Table]] = {}
    for name, t in generate_world(WorldConfig(charges=20_000, days=20, seed=5, fraud_rate=0.05)):
        tables.setdefault(name, []).append(t)
    charges = pa.concat_tables(tables["charges"])
    for name in ("disputes", "early_fraud_warnings", "refunds"):
        outcomes = pa.concat_tables(tables[name])
        assert outcomes.num_rows > 10, name
        index = pc.index_in(outcomes["charge_id"], value_set=charges["charge_id"])
        assert index.null_count == 0, name
        charge_created = pc.take(charges["created"], index)
        assert pc.all(pc.greater(outcomes["created"], charge_created)).as_py(), name


# ---- 2. only an empty CSV cell is null -------------------------------------------------------------------
def test_csv_null_words_are_text(tmp_path: Path) -> None:
    rows = {**ROWS, "shop": ["NULL", "NA", "nan", "#N/A"]}
    ws = Workspace.open(tmp_path / "ws", create=True)
    import_file(ws, write_csv(tmp_path, rows), write_mapping(tmp_path))
    stored = ws.read("charges").sort_by("charge_id")
    assert stored["merchant_id"].to_pylist() == ["NULL", "NA", "nan", "#N/A"]


@pytest.mark.parametrize("word", ["N/A", "NA", "NULL", "null", "nan", "#N/A"])
def test_a_csv_null_word_in_a_numeric_label_is_an_error(tmp_path: Path, word: str) -> None:
    m = copy.deepcopy(MAPPING)
    m["labels"] = [{"column": "fraud", "when": 1, "delay": "12h"}]
    rows = {**ROWS, "fraud": ["0", word, "1", ""]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    assert "1 problem(s)" in text
    assert "row 2 (line 3), column 'fraud': expected a number, a boolean or an empty cell" in text
    assert f"received {word!r}" in text


# ---- 3. empty and blank texts are missing values ---------------------------------------------------------
def _customers(tmp_path: Path, values: list[Any], parquet: bool, **column: Any) -> list[Any]:
    tmp_path.mkdir(exist_ok=True)
    rows = {**ROWS, "cust": values}
    m = changed(customer_id=column or {"column": "cust"})
    if parquet:
        path = tmp_path / "export.parquet"
        pq.write_table(pa.table(rows), path)
    else:
        path = write_csv(tmp_path, rows)
    ws = Workspace.open(tmp_path / "ws", create=True)
    import_file(ws, path, write_mapping(tmp_path, m))
    return ws.read("charges").sort_by("charge_id")["customer_id"].to_pylist()


@pytest.mark.parametrize("parquet", [False, True])
def test_blank_optional_texts_are_null_in_csv_and_parquet(tmp_path: Path, parquet: bool) -> None:
    assert _customers(tmp_path, ["", " ", "\t", "c1"], parquet) == [None, None, None, "c1"]


@pytest.mark.parametrize("parquet", [False, True])
def test_guests_get_no_shared_prefixed_or_hashed_customer_id(tmp_path: Path, parquet: bool) -> None:
    prefixed = _customers(tmp_path / "p", ["", "  ", "c1", "c1"], parquet, column="cust", prefix="cus_")
    assert prefixed == [None, None, "cus_c1", "cus_c1"]
    hashed = _customers(tmp_path / "h", ["", "  ", "c1", "c1"], parquet, hash=["cust"], prefix="cus_")
    assert hashed[:2] == [None, None] and hashed[2] == hashed[3] is not None


def test_a_blank_required_text_in_parquet_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "export.parquet"
    pq.write_table(pa.table({**ROWS, "shop": ["s1", "", " ", "s3"]}), path)
    text = failed_import(tmp_path, path, write_mapping(tmp_path))
    assert "2 problem(s)" in text
    assert (
        "row 2, column 'shop' (merchant_id): expected a value (required field); received an empty text"
        in text
    )
    assert "row 3, column 'shop' (merchant_id)" in text and "column 'merchant_id'" not in text


def test_validate_treats_blank_texts_as_missing() -> None:
    t = charge_table(3)
    t = t.set_column(t.schema.get_field_index("customer_id"), "customer_id", pa.array(["", "\u00a0 ", "c"]))
    assert validate_events("charges", t)["customer_id"].to_pylist() == [None, None, "c"]
    t = t.set_column(t.schema.get_field_index("merchant_id"), "merchant_id", pa.array(["m", "", "m"]))
    with pytest.raises(ValidationError) as e:
        validate_events("charges", t)
    assert str(e.value).count("problem") == 1 and e.value.total == 1
    assert "row 2, column 'merchant_id': expected a value (required field); received an empty text" in str(
        e.value
    )


# ---- 4. an e-mail domain is a domain ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("Evil.COM.", "evil.com"),
        (" x.org ", "x.org"),
        ("_dmarc.example.com", "_dmarc.example.com"),
        ("MÜNCHEN.de", "münchen.de"),
        ("xn--mnchen-3ya.de", "münchen.de"),  # one form: the Unicode one (IDNA)
        ("localhost", "localhost"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
def test_canonical_domain_accepts_domain_names(value: str, canonical: str) -> None:
    assert canonical_domain(value) == canonical


@pytest.mark.parametrize(
    "value",
    [
        "exa mple.com",
        "@@@",
        "a;drop table",
        "",
        " . ",
        ".",
        "a..b",
        ".example.com",
        "example.com..",
        "tab\there.com",
        "ctl\x00.com",
        "a" * 64 + ".com",
        ("a" * 62 + ".") * 4 + "com",  # 255 characters
        "ex!ample.com",
    ],
)
def test_canonical_domain_refuses_what_is_not_a_domain(value: str) -> None:
    with pytest.raises(ValueError):
        canonical_domain(value)


def test_an_email_address_is_refused_without_being_quoted(tmp_path: Path) -> None:
    with pytest.raises(DomainError) as e:
        canonical_domain("alice@example.com")
    assert "alice" not in str(e.value) and e.value.hidden == "an e-mail address, not a domain (not shown)"
    rows = {**ROWS, "dom": ["alice@example.com", "Example.COM", "exa mple.com", "x.org"]}
    text = failed_import(
        tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, changed(email_domain="dom"))
    )
    assert "2 problem(s)" in text
    assert (
        "row 1 (line 2), column 'dom' (email_domain): expected a domain name; received an e-mail address"
        in text
    )
    assert "alice" not in text
    assert (
        "row 3 (line 4), column 'dom' (email_domain): expected a domain name; received 'exa mple.com'" in text
    )


def test_the_canonical_fast_path_takes_only_domains() -> None:
    t = charge_table(3)
    domains = pa.array(["a..b", "-", "x" * 300])
    t = t.set_column(t.schema.get_field_index("email_domain"), "email_domain", domains)
    assert _problems_total(t) == 2  # "-" is a label of its own; "a..b" has an empty label, x*300 is too long


def _problems_total(t: pa.Table) -> int:
    with pytest.raises(ValidationError) as e:
        validate_events("charges", t)
    return e.value.total


# ---- 5. a credential change is known at or before its charge ---------------------------------------------
def test_a_credential_change_after_the_charge_is_refused(tmp_path: Path) -> None:
    rows = {**ROWS, "cred": ["2024-03-05T00:00:00Z", CHARGE_TIMES[1], "2024-02-01T00:00:00Z", ""]}
    m = changed(credential_changed_at="cred")
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    assert "1 problem(s)" in text
    assert (
        "row 1 (line 2), column 'cred' (credential_changed_at): expected a credential change at or before"
        in text
    )
    assert "2024-03-05T00:00:00+00:00" in text
    rows["cred"][0] = CHARGE_TIMES[0]  # at the charge's own time: known by then
    ws = Workspace.open(tmp_path / "ok", create=True)
    import_file(ws, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    assert ws.read("charges")["credential_changed_at"].null_count == 1


# ---- 6. a duplicate header -------------------------------------------------------------------------------
def test_a_duplicate_column_name_is_one_line_naming_file_and_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + ",note,note"] + [line + ",a,b" for line in lines[1:]]) + "\n")
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    assert "\n" not in text and str(path) in text and "'note' twice" in text


def test_a_duplicate_column_name_in_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "export.parquet"
    table = pa.table(ROWS)
    pq.write_table(pa.Table.from_arrays([*table.columns, table["shop"]], [*table.column_names, "shop"]), path)
    text = failed_import(tmp_path, path, write_mapping(tmp_path), ConfigError)
    assert "'shop' twice" in text


# ---- 7. an empty `when` ----------------------------------------------------------------------------------
def test_an_empty_when_is_refused_naming_the_mapping_and_key(tmp_path: Path) -> None:
    m = copy.deepcopy(MAPPING)
    m["labels"][0]["when"] = []
    text = failed_import(tmp_path, write_csv(tmp_path), write_mapping(tmp_path, m), ConfigError)
    assert text.startswith("m.yaml: 'labels[0].when': expected at least one source value")


# ---- 8. clear messages for huge amounts and for times ----------------------------------------------------
@pytest.mark.parametrize("amount", ["1e30", "1e400", "-1e19"])
def test_an_amount_beyond_64_bits_shows_the_files_value(tmp_path: Path, amount: str) -> None:
    # (pytest turns the RuntimeWarning the cast used to print into an error)
    rows = {**ROWS, "amount": ["10.50", amount, "1", "2"], "cur": ["eur", "usd", "usd", "usd"]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path))
    assert "1 problem(s)" in text
    assert "row 2 (line 3), column 'amount': expected a value from 0 to 999,999,999,999" in text
    assert f"received {amount!r}" in text and "-9223372036854775808" not in text


@pytest.mark.parametrize(
    ("cents", "unparsed"),
    [
        (["100", "x", "200", "300", "-500"], "expected an integer; received 'x'"),
        ([100.0, 2.5, 200.0, 300.0, -500.0], "expected an integer (minor units); received 2.5"),
    ],
)
@pytest.mark.parametrize("scale", [None, 1])
def test_an_unparsed_amount_hides_no_other_amounts_bounds(
    tmp_path: Path, cents: list[Any], unparsed: str, scale: int | None
) -> None:
    """An amount read as it is (no scale): one cell that is not an integer hid every out-of-bounds value of
    the column (the bounds were checked only when the whole column cast), and the total was short."""
    rows = {k: [*v, v[0]] for k, v in ROWS.items()} | {"id": ["t1", "t2", "t3", "t4", "t5"], "cents": cents}
    read = {"column": "cents"} | ({} if scale is None else {"scale": scale})
    m = changed(amount=read, amount_usd=read)
    if isinstance(cents[0], str):
        path = write_csv(tmp_path, rows)
    else:
        path = tmp_path / "export.parquet"
        pq.write_table(pa.table(rows), path)
    text = failed_import(tmp_path, path, write_mapping(tmp_path, m))
    line = " (line 6)" if isinstance(cents[0], str) else ""
    outside = f"row 5{line}, column 'cents' (amount): expected a value from 0 to 999,999,999,999"
    # Each cell once, by the file's column, though amount and amount_usd both read it.
    assert "2 problem(s)" in text and "amount_usd" not in text
    if scale is None:  # validate_events' words
        assert f"{outside}; received -500" in text and text.count(unparsed) == 1
    else:  # the file's value, and what the conversion made of it
        assert f"{outside} (minor units, after 'columns.amount' conversion); received " in text
        assert "(-500 in minor units)" in text


def test_an_epoch_time_beyond_64_bits_is_implausible_without_a_warning(tmp_path: Path) -> None:
    rows = {**ROWS, "ts": ["1709283600", "1e30", "1709420399", "1709420400"]}
    m = changed(created={"column": "ts", "unit": "s"})
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    assert "row 2 (line 3), column 'ts' (created): expected a time between 1990 and 2100" in text
    assert "received '1e30'" in text


def test_times_are_quoted_as_written(tmp_path: Path) -> None:
    rows = {**ROWS, "ts": ["2024-03-01 09:00:00", "2024-03-31 02:30:00", "2024-03-01 10:00:00", "x"]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path))
    assert "received '2024-03-31 02:30:00'" in text and "card number removed" not in text
    assert shown_value("2024-03-01T10:00:00.1234567890123Z") == "'2024-03-01T10:00:00.1234567890123Z'"
    assert shown_value("01/03/2024 10:00:00") == "'01/03/2024 10:00:00'"
    # with a zone's name beside it, as a settlement report writes it (was '[card number removed] CET')
    assert shown_value("2024-02-10 03:32:37 CET") == "'2024-02-10 03:32:37 CET'"
    assert shown_value("2024-02-10 03:32:37 Europe/Amsterdam") == "'2024-02-10 03:32:37 Europe/Amsterdam'"
    assert VISA not in shown_value(f"2024-02-10 {VISA}") and VISA not in shown_value(f"{VISA} CET")
    # A card number stays hidden, in any text and in a time's digits.
    assert VISA not in shown_value(f"2024-03-01T10:00:00.{VISA}Z")
    assert VISA not in shown_value(f"ref {VISA}") and VISA[:13] not in shown_value(f"x{VISA[:13]}")


def test_iso_fractions_finer_than_microseconds_are_floored(tmp_path: Path) -> None:
    rows = {
        **ROWS,
        "ts": [
            "2024-03-01T08:00:00.1234567Z",
            "2024-03-01T09:30:00.999999999+00:00",
            "2024-03-02 23:59:59.0000009",
            "2024-03-02T23:00:00Z",
        ],
    }
    ws = Workspace.open(tmp_path / "ws", create=True)
    import_file(ws, write_csv(tmp_path, rows), write_mapping(tmp_path, changed(created={"column": "ts"})))
    created = [t.isoformat() for t in ws.read("charges").sort_by("charge_id")["created"].to_pylist()]
    assert created == [
        "2024-03-01T08:00:00.123456+00:00",
        "2024-03-01T09:30:00.999999+00:00",
        "2024-03-02T22:59:59+00:00",
        "2024-03-02T23:00:00+00:00",
    ]
    t = charge_table(1)
    t = t.set_column(
        t.schema.get_field_index("created"), "created", pa.array(["2024-03-01T10:00:00.1234567Z"])
    )
    assert validate_events("charges", t)["created"][0].as_py().microsecond == 123456


# ---- 9. reviews are never imported -----------------------------------------------------------------------
def test_reviews_cannot_be_imported(tmp_path: Path) -> None:
    m = {"table": "reviews", "columns": {"charge_id": "id", "created": "ts", "opened": "ts"}}
    m["columns"]["closed_as"] = {"value": "approved"}
    text = failed_import(tmp_path, write_csv(tmp_path), write_mapping(tmp_path, m), ConfigError)
    assert text.startswith(
        "m.yaml: 'table': expected one of charges, disputes, early_fraud_warnings, refunds"
    )
    assert "decision service" in text and "received 'reviews'" in text
