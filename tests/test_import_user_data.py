"""Imports of a user's own exports (found by a bring-your-own-data audit): codes written with leading zeros
in a mapping, epoch times beside card numbers, outcome files checked against their charges."""

from __future__ import annotations

from pathlib import Path

import yaml

from payfm.errors import ConfigError
from payfm.events.cards import luhn_valid
from payfm.events.importer import import_file
from test_import import ROWS, changed, failed_import, write_csv, write_mapping, ws_at


def test_epoch_times_in_a_dropped_column_are_no_card_numbers_and_a_uatp_number_is(tmp_path: Path) -> None:
    """A dropped column of epoch milliseconds (one in ten passes Luhn) refused a user's import at 10% of its
    rows: no card number starts with 1 unless it has 15 digits (UATP)."""
    epochs = ["1764957808124", "1735689600000", "1764957808132", "1764957808140"]
    assert sum(luhn_valid(e) for e in epochs) >= 3  # card-shaped but for their first digit and length
    mapping = changed()
    mapping["drop"] = ["email", "sent_ms"]
    import_file(
        ws_at(tmp_path / "ws"),
        write_csv(tmp_path, {**ROWS, "sent_ms": epochs}),
        write_mapping(tmp_path, mapping),
    )
    uatp = "122000000000003"  # a UATP test card number: 15 digits from a 1
    rows = {**ROWS, "sent_ms": [epochs[0], uatp, epochs[1], epochs[2]]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows, name="b.csv"), write_mapping(tmp_path, mapping))
    assert "row 2 (line 3), column 'sent_ms'" in text and uatp not in text


def test_a_file_of_outcomes_is_checked_against_its_charges_as_the_service_checks_one(tmp_path: Path) -> None:
    """Found by a bring-your-own-data audit: an import took what the decision service refuses (a EUR
    dispute of a GBP charge, one for more than its charge, a fraud dispute of a declined charge: a label on
    a charge that moved no money); refunds add up to at most their charge's amount, the workspace's first."""
    charges = {**ROWS, "cur": ["EUR", "usd", "JPY", "eur"]}
    declined = changed(outcome={"column": "status", "map": {"ok": "authorized", "no": "issuer_declined"}})
    ws = ws_at(tmp_path / "ws")
    import_file(
        ws,
        write_csv(tmp_path, {**charges, "status": ["ok", "ok", "ok", "no"]}),
        write_mapping(tmp_path, declined),
    )
    mapping = {
        "table": "refunds",
        "columns": {
            "refund_id": {"column": "rid"},
            "charge_id": {"column": "id", "prefix": "ch_"},
            "created": {"column": "ts", "format": "%Y-%m-%d %H:%M:%S", "timezone": "UTC"},
            "amount": {"column": "amount", "minor_units": {"column": "cur"}},
            "currency": {"column": "cur", "case": "lower"},
            "reason": {"value": "requested_by_customer"},
        },
    }
    later = "2024-03-20 00:00:00"
    first = {"rid": ["re_a"], "id": ["t1"], "ts": [later], "amount": ["6.00"], "cur": ["EUR"]}
    import_file(
        ws, write_csv(tmp_path, first, name="r1.csv"), write_mapping(tmp_path, mapping, name="r.yaml")
    )
    rows = {  # t1 (10.50 EUR, 6.00 refunded), t2 (3 USD), t3 (1999 JPY), t4 (0.07 EUR, declined)
        "rid": ["re_b", "re_c", "re_d", "re_e", "re_f", "re_g"],
        "id": ["t1", "t1", "t2", "t3", "t4", "t2"],
        "ts": [later] * 6,
        "amount": ["4.50", "0.01", "3.00", "2000", "0.07", "0.50"],
        "cur": ["EUR", "EUR", "GBP", "JPY", "EUR", "USD"],
    }
    text = failed_import(
        tmp_path, write_csv(tmp_path, rows, name="r2.csv"), write_mapping(tmp_path, mapping, name="r.yaml")
    )
    assert "6 problem(s)" not in text and "4 problem(s)" in text, text
    assert "row 2 (line 3), column 'amount': expected at most what is left to refund" in text
    assert "received 1, of a charge of 1050 refunded 1050 before it" in text  # 600 + 450, then 1 more
    assert "row 3 (line 4), column 'cur' (currency): expected the currency of its charge" in text
    assert "received 'gbp', its charge's 'usd'" in text
    assert "row 4 (line 5), column 'amount': expected at most its charge's amount" in text
    assert (
        "row 5 (line 6), column 'id' (charge_id): expected the charge_id of a charge that moved money" in text
    )
    assert "a charge with outcome 'issuer_declined'" in text


def test_codes_written_with_leading_zeros_in_a_mapping_are_the_text_written(tmp_path: Path) -> None:
    """YAML 1.1 reads an unquoted 00 as the number 0 and 0742 as the octal 482: `map: {00: authorized}`
    never matched the file's '00', and with a default every charge took it, silently (a user's import came
    out all declined). In a mapping they are the text written; a key given twice is an error (YAML kept the
    last one: `007` and `7` were one key)."""
    m = changed(
        outcome={
            "column": "resp",
            "map": {"K00": "authorized", "K05": "issuer_declined"},
            "default": "blocked",
        },
        merchant_mcc={"column": "mcc", "map": {"K0742": "0742", "5411": "5411"}},
    )
    text = yaml.safe_dump(m, sort_keys=False).replace("K0", "0")
    assert "00: authorized" in text and "0742: '0742'" in text  # unquoted keys, as a user writes them
    mapping = tmp_path / "m.yaml"
    mapping.write_text(text)
    rows = {**ROWS, "resp": ["00", "05", "00", "99"], "mcc": ["0742", "5411", "0742", "5411"]}
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path, rows), mapping)
    charges = ws.read("charges", ["outcome", "merchant_mcc"])
    assert charges.column("outcome").to_pylist() == ["authorized", "issuer_declined", "authorized", "blocked"]
    assert charges.column("merchant_mcc").to_pylist() == ["0742", "5411", "0742", "5411"]
    twice = tmp_path / "twice.yaml"
    twice.write_text(text.replace("05: issuer_declined", "00: issuer_declined"))
    said = failed_import(tmp_path, write_csv(tmp_path, rows), twice, ConfigError)
    assert "twice.yaml: expected valid YAML" in said and "the key '00' is given twice (first on line" in said


def test_a_card_number_read_as_epoch_microseconds_is_refused_not_stored_as_a_time(tmp_path: Path) -> None:
    """Found by a security audit: a column read with `unit: us` was not scanned, and 378282246310005 (an
    Amex test number: a time of 1981) or 4000056655665556 (Visa: 2096) was stored as the time's exact
    microseconds. Epoch times of 2001-2033 start with a 1 in every unit and pass as before."""
    mapping = changed(created={"column": "us", "unit": "us"})
    ok = ["1709283600000000", "1709287200000000", "1709370000000000", "1709424000000000"]
    import_file(
        ws_at(tmp_path / "ok"), write_csv(tmp_path, {**ROWS, "us": ok}), write_mapping(tmp_path, mapping)
    )
    for i, card in enumerate(("378282246310005", "4000056655665556", "2223003122003222")):
        rows = {**ROWS, "us": [ok[0], card, ok[2], ok[3]]}
        path = write_csv(tmp_path, rows, name=f"c{i}.csv")
        text = failed_import(tmp_path, path, write_mapping(tmp_path, mapping))
        assert "row 2 (line 3), column 'us'" in text and "a full card number (not shown)" in text
        assert card not in text


def test_masked_card_numbers_read_without_a_transform_point_at_it(tmp_path: Path) -> None:
    """Found by a settlement-report import: `card_last4: {column: pan}` on 424242******4242 was refused row by
    row as 'a value matching [0-9]{4}', with no word of the transform that reads them."""
    rows = {**ROWS, "masked": ["424242******4242", "555555******4444", "378282*****0005", "411111******1111"]}
    mapping = changed(card_last4={"column": "masked"}, card_bin={"column": "masked"})
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, mapping))
    assert (
        "column 'masked' (card_last4): expected 4 digits (the column holds masked card numbers such as "
        "424242******4242: `card_last4: {column: masked, transform: last4}` reads them)" in text
    )
    assert "`card_bin: {column: masked, transform: bin}` reads them" in text and "[0-9]{4}" not in text
