"""Every error path of validate_events, and the message format users read."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest

from factories import T0, disputes
from factories import charges as _charges
from payfm.events.schema import SCHEMAS
from payfm.events.validate import Problem, ValidationError, validate_events

VISA = "4242424242424242"


def charges(n: int) -> pa.Table:
    """factories.charges with hex fingerprints: its "fp_0000000000000000" is 16 Luhn-valid digits."""
    t = _charges(n)
    return t.set_column(
        t.schema.get_field_index("card_fingerprint"),
        "card_fingerprint",
        pa.array([f"fp_{i % 4:015x}a" for i in range(n)]),
    )


def _with(table: pa.Table, name: str, values: list[object], type_: pa.DataType | None = None) -> pa.Table:
    """``table`` with column ``name`` replaced by ``values`` (as given, not cast to the schema)."""
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, pa.array(values, type=type_))


def _problems(table_name: str, table: pa.Table, source: str = "input") -> ValidationError:
    with pytest.raises(ValidationError) as e:
        validate_events(table_name, table, source=source)
    return e.value


def test_a_valid_table_comes_back_in_the_exact_schema() -> None:
    t = charges(5)
    out = validate_events("charges", t)
    assert out.schema.equals(SCHEMAS["charges"], check_metadata=False)
    assert out.num_rows == 5


def test_strings_and_other_types_are_cast_to_the_schema() -> None:
    t = disputes(["ch_1"], T0)
    t = _with(t, "created", ["2026-01-02T03:04:05+01:00"])
    t = _with(t, "amount", [500.0])
    out = validate_events("disputes", t)
    assert out.column("created")[0].as_py() == datetime.fromisoformat("2026-01-02T02:04:05+00:00")
    assert out.column("amount").type == pa.int64()


def test_missing_required_column_is_named() -> None:
    e = _problems("charges", charges(2).drop_columns(["merchant_mcc"]), "f.parquet")
    assert e.total == 1
    assert e.problems == [Problem("merchant_mcc", None, "a required column", "no such column")]
    assert "f.parquet: column 'merchant_mcc': expected a required column; received no such column" in str(e)


def test_missing_nullable_column_becomes_null() -> None:
    out = validate_events("charges", charges(2).drop_columns(["device_id"]))
    assert out.column("device_id").null_count == 2


def test_unexpected_column_is_named() -> None:
    e = _problems("charges", charges(1).append_column("ssn", pa.array(["123-45-6789"])))
    assert e.problems[0].column == "ssn"
    assert e.problems[0].received == "an unexpected column"
    assert "only the columns of 'charges'" in e.problems[0].expected


def test_bad_types_are_reported_by_row_with_the_value() -> None:
    t = _with(charges(4), "amount", ["100", "12x", "300", "oops"])
    e = _problems("charges", t)
    assert [(p.column, p.row, p.received) for p in e.problems] == [
        ("amount", 2, "'12x'"),
        ("amount", 4, "'oops'"),
    ]
    assert e.problems[0].expected == "an integer"


def test_fractional_amounts_are_not_silently_rounded() -> None:
    e = _problems("charges", _with(charges(3), "amount", [1.0, 2.5, 3.0]))
    assert [p.row for p in e.problems] == [2]
    assert "2.5" in e.problems[0].received  # (validate shows "np.float64(2.5)" under numpy 2: reported)
    assert "integer" in e.problems[0].expected


def test_row_base_shifts_row_numbers() -> None:
    t = _with(charges(2), "amount", ["1", "x"])
    with pytest.raises(ValidationError) as e:
        validate_events("charges", t, row_base=101)
    assert e.value.problems[0].row == 102


def test_naive_timestamps_are_rejected_never_guessed() -> None:
    naive = [datetime(2026, 1, 1, 12), datetime(2026, 1, 2, 12)]
    e = _problems("charges", _with(charges(2), "created", naive, pa.timestamp("us")))
    assert e.problems[0].column == "created" and e.problems[0].row is None
    assert "naive" in e.problems[0].received and "zone" in e.problems[0].received


def test_naive_timestamp_strings_are_rejected_by_row() -> None:
    t = _with(charges(2), "created", ["2026-01-01T00:00:00Z", "2026-01-01 00:00:00"])
    e = _problems("charges", t)
    assert [(p.column, p.row) for p in e.problems] == [("created", 2)]
    assert "zone offset" in e.problems[0].expected


def test_dates_are_not_timestamps() -> None:
    e = _problems("disputes", _with(disputes(["ch_1"], T0), "created", [T0.date()], pa.date32()))
    assert e.problems[0].received.startswith("dates")


def test_nulls_in_required_fields() -> None:
    e = _problems("charges", _with(charges(3), "merchant_id", ["m", None, None]))
    assert [(p.column, p.row, p.received) for p in e.problems] == [
        ("merchant_id", 2, "null"),
        ("merchant_id", 3, "null"),
    ]
    assert e.problems[0].expected == "a value (required field)"


def test_nulls_are_fine_in_nullable_fields() -> None:
    out = validate_events("charges", _with(charges(2), "customer_id", [None, "cus_1"]))
    assert out.column("customer_id").to_pylist() == [None, "cus_1"]


def test_values_outside_the_vocabulary() -> None:
    e = _problems("charges", _with(charges(3), "channel", ["ecommerce", "moto", "web"]))
    assert [(p.row, p.received) for p in e.problems] == [(2, "'moto'"), (3, "'web'")]
    assert e.problems[0].expected.startswith("one of ecommerce, card_present, recurring")


def test_values_not_matching_the_pattern() -> None:
    e = _problems("charges", _with(charges(3), "card_bin", ["424242", "4242", "42424x"]))
    assert [(p.column, p.row, p.received) for p in e.problems] == [
        ("card_bin", 2, "'4242'"),
        ("card_bin", 3, "'42424x'"),
    ]
    assert "[0-9]{6,8}" in e.problems[0].expected


def test_countries_are_iso_3166_codes_not_any_two_letters() -> None:
    t = _with(charges(6), "card_country", ["US", "usa", "UK", "XK", "YU", "U1"])
    e = _problems("charges", t)
    assert [(p.column, p.row, p.received) for p in e.problems] == [
        ("card_country", 2, "'usa'"),
        ("card_country", 3, "'UK'. The United Kingdom's code is 'GB'"),  # reserved, and named
        ("card_country", 6, "'U1'"),
    ]  # XK (user-assigned, Kosovo) and YU (withdrawn, in old exports) pass
    assert e.problems[0].expected.startswith("an ISO 3166-1 alpha-2 country code")


def test_negative_and_impossibly_large_amounts() -> None:
    e = _problems("disputes", _with(disputes(["a", "b", "c"], T0), "amount", [5, -1, 10**12]))
    assert [(p.column, p.row, p.received) for p in e.problems] == [
        ("amount", 2, "-1"),
        ("amount", 3, "an integer of 13 digits"),  # never a run of 13 digits (docs/serving.md)
    ]
    assert e.problems[0].expected == "a value from 0 to 999,999,999,999"


def test_duplicate_ids_are_reported_on_every_copy() -> None:
    t = _with(charges(4), "charge_id", ["a", "b", "a", "c"])
    e = _problems("charges", t)
    assert [(p.column, p.row, p.received) for p in e.problems] == [
        ("charge_id", 1, "'a'"),
        ("charge_id", 3, "'a'"),
    ]
    assert e.problems[0].expected == "unique ids"


def test_card_numbers_are_reported_by_row_and_column_and_never_echoed() -> None:
    t = _with(charges(3), "device_id", ["d1", f"pan {VISA}", "d3"])
    e = _problems("charges", t, "upload.csv")
    assert [(p.column, p.row) for p in e.problems] == [("device_id", 2)]
    assert VISA not in str(e) and "4242" not in str(e)
    assert all(VISA not in repr(p) for p in e.problems)


def test_every_problem_is_collected_in_one_round() -> None:
    t = _with(charges(3), "channel", ["x", "ecommerce", "y"])
    t = _with(t, "amount", [-1, 2, 3])
    t = _with(t, "amount_usd", [1, 2, 3])  # (usd charges: amount_usd is the amount)
    t = t.drop_columns(["outcome"])
    e = _problems("charges", t)
    assert e.total == 4
    assert {p.column for p in e.problems} == {"channel", "amount", "outcome"}


def test_a_usd_charge_has_the_same_amount_twice() -> None:
    t = _with(charges(3), "amount_usd", [1000, 999, 1000])
    t = _with(t, "currency", ["usd", "usd", "eur"])  # a eur charge's amount_usd is converted: any value
    t = _with(t, "amount", [1000, 1000, 1234])
    e = _problems("charges", t)
    assert [(p.column, p.row, p.received) for p in e.problems] == [("amount_usd", 2, "999 with amount 1000")]
    assert "usd" in e.problems[0].expected


def test_a_decline_code_goes_with_a_decline_only() -> None:
    """As the decision service's score and authorization endpoints take it: the issuer's reason for a
    decline, never on an authorized or blocked charge."""
    t = _with(charges(4), "outcome", ["issuer_declined", "authorized", "blocked", "issuer_declined"])
    t = _with(t, "decline_code", ["insufficient_funds", "do_not_honor", "fraudulent", None])
    e = _problems("charges", t)
    assert [(p.column, p.row, p.received) for p in e.problems] == [
        ("decline_code", 2, "'do_not_honor' with outcome 'authorized'"),
        ("decline_code", 3, "'fraudulent' with outcome 'blocked'"),
    ]
    assert e.problems[0].expected == "a decline code only with outcome 'issuer_declined'"


def test_message_format_shows_five_problems_and_a_count() -> None:
    t = _with(charges(8), "channel", ["bad"] * 8)
    e = _problems("charges", t, "data/in.csv")
    lines = str(e).splitlines()
    assert lines[0] == "data/in.csv: 8 problem(s); nothing was written."
    assert lines[1] == (
        "  data/in.csv: row 1, column 'channel': "
        "expected one of ecommerce, card_present, recurring; received 'bad'"
    )
    assert len(lines) == 1 + 5 + 1
    assert lines[-1] == "  ... and 3 more"


def test_long_values_are_shortened_in_messages() -> None:
    e = _problems("charges", _with(charges(1), "channel", ["x" * 100]))
    assert len(e.problems[0].received) <= 40 and e.problems[0].received.endswith("...")


def test_unknown_table_name() -> None:
    with pytest.raises(ValueError, match="Unknown event table 'charge'"):
        validate_events("charge", charges(1))
