"""`convert` in a mapping: an export's e-mail addresses to their domains (the event log never holds the rest
of an address) and its countries written as alpha-3 codes, numbers or English names to alpha-2 codes; values
that are neither are refused naming the file, row, column and option, an address never quoted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from payfm.errors import ConfigError
from payfm.events.import_text import country_codes_of
from payfm.events.importer import import_file
from payfm.events.validate import ValidationError
from test_import import MAPPING, ROWS, changed, failed_import, write_csv, write_mapping, ws_at

COUNTRIES = ["USA", "840", "UK", " germany "]
EMAILS = ["Ann.Lee@Example.COM", "b+shop@mail.y.org", '"a@b"@quoted.net', "d@z.net"]


def cli_import(
    tmp_path: Path, csv: str = "export.csv", mapping: str = "m.yaml", *flags: str, ws: str = "cli"
) -> str:
    """`payfm import` of ``tmp_path``'s ``csv`` with ``mapping`` into its workspace ``ws``: the output, one
    line."""
    from click.testing import CliRunner

    from payfm.cli.main import cli

    where, path, m = (str(tmp_path / name) for name in (ws, csv, mapping))
    result = CliRunner().invoke(cli, ["-w", where, "import", path, "--mapping", m, *flags])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def converted_mapping(**columns: Any) -> dict[str, Any]:
    m = changed(
        **{
            "email_domain": {"column": "email", "convert": "email_domain"},
            "card_country": {"column": "country", "convert": "country"},
            **columns,
        }
    )
    m["drop"] = []
    return m


def test_emails_become_domains_and_countries_alpha_2_codes(tmp_path: Path) -> None:
    rows = {**ROWS, "email": EMAILS, "country": COUNTRIES}
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path, rows), write_mapping(tmp_path, converted_mapping()))
    charges = ws.read("charges", ["charge_id", "email_domain", "card_country"]).sort_by("charge_id")
    assert charges.column("email_domain").to_pylist() == ["example.com", "mail.y.org", "quoted.net", "z.net"]
    assert charges.column("card_country").to_pylist() == ["US", "US", "GB", "DE"]
    stored = json.dumps(ws.read("charges").to_pylist(), default=str).lower()
    assert not any(local in stored for local in ("ann.lee", "b+shop", '"a@b"'))  # only the domains


def test_a_country_no_one_writes_so_is_refused_naming_it(tmp_path: Path) -> None:
    rows = {**ROWS, "email": EMAILS, "country": ["USA", "Atlantis", "United Kingdom", "FR"]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, converted_mapping()))
    assert (
        "row 2 (line 3), column 'country' (card_country): expected a country as ISO 3166-1 alpha-2 (US), "
        "alpha-3 (USA), numeric (840) or its name (in English, German, French, Spanish...: Germany, "
        "Deutschland, Allemagne) ('columns.card_country.convert'); "
        "received 'Atlantis'"
    ) in text
    assert "1 problem(s)" in text


def test_a_value_that_is_no_address_is_refused_without_quoting_it(tmp_path: Path) -> None:
    rows = {**ROWS, "email": ["ann@x.com", "ann.lee at example", "c@", "d@z.net"], "country": COUNTRIES}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, converted_mapping()))
    for row in ("row 2 (line 3)", "row 3 (line 4)"):
        assert f"{row}, column 'email' (email_domain): expected an e-mail address (name@example.com)" in text
    assert "another text (not shown)" in text and "ann.lee" not in text


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"column": "email", "convert": "domain"}, "one of email_domain, country"),
        ({"columns": ["email", "id"], "convert": "email_domain"}, "a conversion of one source `column`"),
        ({"column": "card", "convert": "country", "transform": "brand"}, "`convert` or a card `transform`"),
    ],
)
def test_convert_mistakes_are_refused_before_reading(
    tmp_path: Path, spec: dict[str, Any], expected: str
) -> None:
    m = {**MAPPING, "columns": {**MAPPING["columns"], "email_domain": spec}, "drop": []}
    text = failed_import(tmp_path, write_csv(tmp_path), write_mapping(tmp_path, m), ConfigError)
    assert "'columns.email_domain.convert': expected " + expected in text


def test_a_label_on_a_charge_that_moved_no_money_makes_no_dispute(tmp_path: Path) -> None:
    """Found by an audit of imports: a fraud label on a declined charge became a dispute of it, which the
    decision service refuses live (a dispute follows a successful charge). Now it makes none, and says so."""
    rows = {**ROWS, "status": ["ok", "declined", "ok", "ok"]}  # the labels are on t2 (declined) and t4
    m = changed(outcome={"column": "status", "map": {"ok": "authorized", "declined": "issuer_declined"}})
    ws = ws_at(tmp_path / "ws")
    summary = import_file(ws, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    assert ws.read("disputes", ["charge_id"]).column("charge_id").to_pylist() == ["ch_t4"]
    assert summary.rows == {"charges": 4, "disputes": 1}
    assert summary.labels_without_money == {"labels[0]": 1}
    said = cli_import(tmp_path)
    assert (
        "labels[0]: 1 label on charges that moved no money (declined or blocked) made no dispute or early "
        "fraud warning: those follow a successful charge." in said
    )


def test_empty_cells_and_values_mapped_to_null_take_the_missing_value(tmp_path: Path) -> None:
    """An export leaves 3-D Secure empty when it was not asked for and writes N/A when the issuer gave
    nothing: `missing` names the target value of both (before, a blank cell of a required field was an error
    and a value could not be mapped to null)."""
    rows = {**ROWS, "tds": ["Y", "", "N/A", "A"]}
    three_ds = {"column": "tds", "map": {"Y": "authenticated", "A": "attempted", "N/A": None}}
    m = changed(three_ds={**three_ds, "missing": "not_requested"})
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    got = ws.read("charges", ["charge_id", "three_ds"]).sort_by("charge_id").column("three_ds").to_pylist()
    assert got == ["authenticated", "not_requested", "not_requested", "attempted"]
    without = changed(three_ds=three_ds)  # no `missing`: a required field's empty and N/A rows are errors
    text = failed_import(tmp_path / "2", write_csv(tmp_path, rows), write_mapping(tmp_path, without))
    assert "2 problem(s)" in text and "row 2 (line 3)" in text and "row 3 (line 4)" in text


def test_missing_is_refused_with_a_card_transform(tmp_path: Path) -> None:
    m = changed(card_bin={"column": "card", "transform": "bin", "missing": "000000"})
    text = failed_import(tmp_path, write_csv(tmp_path), write_mapping(tmp_path, m), ConfigError)
    assert (
        "expected a card transform alone (no map, default, keep_unmapped, case, prefix, strip or missing)"
        in text
    )


def test_countries_as_exports_write_them_and_a_map_first_for_the_rest(tmp_path: Path) -> None:
    """Found by an import audit: `convert: country` refused codes the field accepts (ZZ, AN, XKX) and common
    English names (Turkey, Holland), and ran before `map`, so German names could not be named."""
    rows = {**ROWS, "email": EMAILS, "country": ["Turkey", "ZZ", "Schweiz", "xkx"]}
    card_country = {
        "column": "country",
        "map": {"Schweiz": "CH"},
        "keep_unmapped": True,
        "convert": "country",
    }
    ws = ws_at(tmp_path / "ws")
    import_file(
        ws, write_csv(tmp_path, rows), write_mapping(tmp_path, converted_mapping(card_country=card_country))
    )
    got = ws.read("charges", ["charge_id", "card_country"]).sort_by("charge_id").column("card_country")
    assert got.to_pylist() == ["TR", "ZZ", "CH", "XK"]
    names = ["Holland", "Ivory Coast", "AN", "Russia", "England", "Germany", "DEU", "276"]
    assert country_codes_of(pa.array(names)).to_pylist() == ["NL", "CI", "AN", "RU", "GB", "DE", "DE", "DE"]


def test_countries_named_in_the_languages_of_european_exports() -> None:
    """Exports of European acquirers write the card's country in their own language: German, French, Spanish
    names (with or without accents) were errors the mapping had to `map` one by one."""
    names = {
        "Deutschland": "DE", "Schweiz": "CH", "Österreich": "AT", "OSTERREICH": "AT", "Allemagne": "DE",
        "États-Unis": "US", "Etats-Unis": "US", "Royaume-Uni": "GB", "España": "ES", "espana": "ES",
        "Italia": "IT", "Nederland": "NL", "België": "BE", "Polska": "PL", "Sverige": "SE", "Ελλάδα": "GR",
        "Vereinigte Staaten": "US", "Spanien": "ES", "Frankreich": "FR", "Portugal": "PT",
    }  # fmt: skip
    assert country_codes_of(pa.array(list(names))).to_pylist() == list(names.values())
    # found by a review: keys and values folded alike (Turkish dotted and dotless i, Greek final sigma in
    # upper case, letters that do not decompose); a translated name of three letters or fewer is left out
    folded = {
        "İSVİÇRE": "CH",
        "Isvicre": "CH",
        "ΚΥΠΡΟΣ": "CY",
        "KIBRIS": "CY",
        "Ostrig": "AT",
        "Sor-Korea": "KR",
    }
    assert country_codes_of(pa.array(list(folded))).to_pylist() == list(folded.values())
    assert country_codes_of(pa.array(["CAD", "MAN", "Çad"])).to_pylist() == [None, None, None]
    # Russia's short names, which the catalogs lack (they translate "Russian Federation" only)
    russia = [
        "Russland",
        "Russie",
        "Rusia",
        "Rosja",
        "RYSSLAND",
        "Venäjä",
        "Rusya",
        "Ρωσία",
        "Россия",
        "Rusko",
    ]
    assert set(country_codes_of(pa.array(russia)).to_pylist()) == {"RU"}
    assert country_codes_of(pa.array(["Großbritannien", "Grossbritannien", "EE. UU."])).to_pylist() == [
        "GB", "GB", "US"
    ]  # fmt: skip
    # a code or an English name keeps its meaning, whatever a translation says
    assert country_codes_of(pa.array(["Niger", "Nigeria", "Dominica", "CH"])).to_pylist() == [
        "NE", "NG", "DM", "CH"
    ]  # fmt: skip


def test_label_outcomes_dated_after_the_files_last_charge_are_said(tmp_path: Path) -> None:
    """Found by an import audit: `delay: 7d` dated outcomes up to a week past the export's end, moving the
    labels' "now" with them, without a word."""
    ws = ws_at(tmp_path / "ws")
    summary = import_file(ws, write_csv(tmp_path), write_mapping(tmp_path))  # delay 12h; last charge at 00:00
    # the labels are on t2 (2024-03-01 10:30 Paris) and t4 (2024-03-03 00:00 Paris, the last charge)
    assert summary.labels_after_file == {"labels[0]": 1}
    assert summary.last_charge is not None and summary.last_charge.isoformat() == "2024-03-02T23:00:00+00:00"
    said = cli_import(tmp_path)
    assert "labels[0]: 1 outcome dated after the file's last charge (2024-03-02T23:00:00+00:00)" in said


def test_numeric_references_read_only_through_a_hash_are_not_card_numbers(tmp_path: Path) -> None:
    """Found by an import audit: a processor's 16-digit transaction references passed the Luhn check one time
    in ten and those rows were refused as card numbers; read only through a keyed hash they are stored as
    one, as a fingerprint is, and another file's rows hash to the same ids."""
    refs = ["8871582279803927", "4242424242424242", "5555555555554444", "1000000000000001"]  # Luhn-valid
    rows = {**ROWS, "ref": refs}
    m = changed(charge_id={"hash": ["ref"]})
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    ids = ws.read("charges", ["charge_id"]).column("charge_id").to_pylist()
    stored = json.dumps(ws.read("charges").to_pylist(), default=str)
    assert len(set(ids)) == 4 and not any(r in stored for r in refs)
    disputes = {
        "table": "disputes",
        "columns": {
            "dispute_id": {"column": "cb", "prefix": "dp_"},
            "charge_id": {"hash": ["ref"]},
            "created": {"column": "at", "format": "%Y-%m-%d %H:%M:%S", "timezone": "Europe/Paris"},
            "reason": {"value": "fraudulent"},
            "amount": {"value": 100},
            "currency": {"value": "eur"},
        },
    }
    cb = write_csv(tmp_path, {"cb": ["1"], "ref": [refs[0]], "at": ["2024-03-05 10:00:00"]}, "cb.csv")
    import_file(ws, cb, write_mapping(tmp_path, disputes, "cb.yaml"))
    [dispute] = (
        ws.read("disputes", ["charge_id", "dispute_id"])
        .filter(pc.equal(pc.field("dispute_id"), "dp_1"))
        .to_pylist()
    )
    assert dispute["charge_id"] in ids
    both = changed(charge_id={"hash": ["ref"]}, merchant_id="ref")  # also stored as it is: scanned
    text = failed_import(tmp_path / "2", write_csv(tmp_path, rows), write_mapping(tmp_path, both))
    assert "column 'ref': expected no card numbers" in text


def test_skip_existing_and_orphans_leave_rows_out_and_say_how_many(tmp_path: Path) -> None:
    """Found by an import audit: a cumulative chargebacks file could not be imported again, and one
    chargeback of a charge from before the export refused the whole file."""
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path), write_mapping(tmp_path))  # charges t1-t4 (and the labels' disputes)
    disputes = {
        "table": "disputes",
        "columns": {
            "dispute_id": {"column": "cb", "prefix": "dp_x"},
            "charge_id": {"column": "id", "prefix": "ch_"},
            "created": {"column": "at", "format": "%Y-%m-%d %H:%M:%S", "timezone": "Europe/Paris"},
            "reason": {"value": "fraudulent"},
            "amount": {"value": 1},
            "currency": {"column": "cur", "case": "lower"},
        },
    }
    day1 = {"cb": ["1", "2"], "id": ["t1", "t3"], "at": ["2024-03-05 10:00:00"] * 2, "cur": ["EUR", "JPY"]}
    cbm = write_mapping(tmp_path, disputes, "cb.yaml")
    import_file(ws, write_csv(tmp_path, day1, "cb1.csv"), cbm)
    day2 = {k: [*v, v[0]] for k, v in day1.items()} | {"cb": ["1", "2", "3"], "id": ["t1", "t3", "t0"]}
    cb2 = write_csv(tmp_path, day2, "cb2.csv")
    with pytest.raises(ValidationError) as e:
        import_file(ws, cb2, cbm)  # the first two are stored already, the third's charge is unknown
    assert "was this file imported before?" in str(e.value) and "import the charges first" in str(e.value)
    summary = import_file(ws, cb2, cbm, skip_existing=True, skip_orphans=True)
    assert summary.skipped == {"existing": 2, "orphans": 1} and summary.rows == {"disputes": 0}
    day3 = {k: [*v, v[1]] for k, v in day2.items()} | {
        "cb": ["1", "2", "3", "4"],
        "id": ["t1", "t3", "t0", "t2"],
    }
    day3["cur"][3] = "USD"  # (t2's currency)
    day3["at"][3] = "2024-03-06 25:00:00"  # a row's problem is said at its row in the file
    with pytest.raises(ValidationError) as e:
        import_file(ws, write_csv(tmp_path, day3, "cb3.csv"), cbm, skip_existing=True, skip_orphans=True)
    assert "1 problem(s)" in str(e.value) and "row 4 (line 5), column 'at' (created)" in str(e.value)
    day3["at"][3] = "2024-03-06 11:00:00"
    write_csv(tmp_path, day3, "cb3.csv")
    said = cli_import(tmp_path, "cb3.csv", "cb.yaml", "--skip-existing", "--skip-orphans", ws="ws")
    assert "Imported" in said and "1 dispute" in said
    assert "Left out (--skip-existing): 2 rows whose id the workspace holds already." in said
    assert "Left out (--skip-orphans): 1 row whose charge it does not hold." in said


def test_skip_existing_takes_the_new_labels_of_rows_it_leaves_out(tmp_path: Path) -> None:
    """Found by a review: a cumulative export flags a charge as fraud days after first listing it; with the
    charge's row left out, its new label was lost, unsaid."""
    ws = ws_at(tmp_path / "ws")
    day1 = {**ROWS, "fraud": ["0", "0", "0", "0"]}
    import_file(ws, write_csv(tmp_path, day1, "day1.csv"), write_mapping(tmp_path))
    assert ws.read("disputes").num_rows == 0
    day2 = {k: [*v, v[0]] for k, v in ROWS.items()} | {"id": ["t1", "t2", "t3", "t4", "t5"]}
    day2["fraud"] = ["0", "1", "0", "yes", "1"]  # t2 and t4 flagged since, and a new fraudulent t5
    summary = import_file(
        ws, write_csv(tmp_path, day2, "day2.csv"), write_mapping(tmp_path), skip_existing=True
    )
    assert summary.skipped == {"existing": 4} and summary.rows == {"charges": 1, "disputes": 3}
    again = import_file(
        ws, write_csv(tmp_path, day2, "day2.csv"), write_mapping(tmp_path), skip_existing=True
    )
    assert again.skipped == {"existing": 5} and again.rows == {"charges": 0, "disputes": 0}  # none twice
    disputed = sorted(ws.read("disputes", ["charge_id"]).column("charge_id").to_pylist())
    assert disputed == ["ch_t2", "ch_t4", "ch_t5"]


def test_skip_orphans_leaves_out_unknown_charges_only_not_invalid_ids(tmp_path: Path) -> None:
    """Found by a review: an empty charge id, or one with a trailing space, was left out as an orphan."""
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path), write_mapping(tmp_path))
    disputes = {
        "table": "disputes",
        "columns": {
            "dispute_id": {"column": "cb", "prefix": "dp_x"},
            "charge_id": {"column": "id"},
            "created": {"column": "at", "format": "%Y-%m-%d %H:%M:%S", "timezone": "Europe/Paris"},
            "reason": {"value": "fraudulent"},
            "amount": {"value": 1},
            "currency": {"value": "eur"},
        },
    }
    rows = {
        "cb": ["1", "2", "3", "4"],
        "id": ["ch_t1", "", "ch_t1 ", "ch_t0"],
        "at": ["2024-03-05 10:00:00"] * 4,
    }
    cb = write_csv(tmp_path, rows, "cb.csv")
    with pytest.raises(ValidationError) as e:
        import_file(ws, cb, write_mapping(tmp_path, disputes, "cb.yaml"), skip_orphans=True)
    text = str(e.value)
    assert "2 problem(s)" in text and "row 2 (line 3)" in text and "row 3 (line 4)" in text
    rows["id"][1:3] = ["ch_t1", "ch_t1"]
    summary = import_file(ws, write_csv(tmp_path, rows, "cb2.csv"), tmp_path / "cb.yaml", skip_orphans=True)
    assert summary.skipped == {"orphans": 1} and summary.rows == {"disputes": 3}


def test_a_value_a_map_sends_to_null_in_a_required_field_is_named(tmp_path: Path) -> None:
    """Found by a review: 'N/A' mapped to null was reported as "an empty cell"."""
    rows = {**ROWS, "tds": ["Y", "", "N/A", "A"]}
    three_ds = {"column": "tds", "map": {"Y": "authenticated", "A": "attempted", "N/A": None}}
    text = failed_import(
        tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, changed(three_ds=three_ds))
    )
    assert (
        "row 3 (line 4), column 'tds' (three_ds): expected a value (required field); received 'N/A', which "
        "'columns.three_ds.map' sends to null (give `missing`)"
    ) in text
    assert (
        "row 2 (line 3), column 'tds' (three_ds): expected a value (required field); received an empty cell"
        in text
    )


def test_a_hash_of_a_column_without_text_is_a_clear_error(tmp_path: Path) -> None:
    """Found by a review: a hash of a Parquet list column was a raw Arrow traceback (and the hash exemption
    from the card scan applies to text columns only)."""
    import pyarrow.parquet as pq

    rows = {**ROWS, "refs": [["a", "b"], ["c"], [], ["d"]]}
    pq.write_table(pa.table(rows), tmp_path / "export.parquet")
    m = changed(charge_id={"hash": ["refs"]})
    text = failed_import(tmp_path, tmp_path / "export.parquet", write_mapping(tmp_path, m))
    assert (  # (the nested-column check of every mapped column comes first)
        "column 'refs': expected text, numbers, booleans or times (a nested column cannot be mapped); "
        "received a list<element: string>" in text
    )


def test_a_label_with_its_own_time_is_not_counted_as_after_the_file(tmp_path: Path) -> None:
    m = changed()
    m["labels"] = [{"column": "fraud", "when": [1, "yes"], "time": {"column": "cb_at", "format": "%Y-%m-%d"}}]
    rows = {**ROWS, "cb_at": ["2024-04-01"] * 4}  # chargebacks a month after the last charge, as exported
    summary = import_file(ws_at(tmp_path / "ws"), write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    assert summary.rows["disputes"] == 2 and summary.labels_after_file == {}


@pytest.mark.parametrize("missing", ["bogus", ""])
def test_a_missing_value_the_field_refuses_is_refused_at_load(tmp_path: Path, missing: str) -> None:
    """Found by a review: `missing: bogus` was taken at load, then failed on every empty row."""
    m = changed(three_ds={"column": "kind", "map": {"web": "authenticated"}, "missing": missing})
    text = failed_import(tmp_path, write_csv(tmp_path), write_mapping(tmp_path, m), ConfigError)
    assert text.startswith("m.yaml: 'columns.three_ds.missing': expected ")


def test_a_fingerprinted_card_column_may_feed_a_keyed_hash_and_display_addresses_give_their_domain(
    tmp_path: Path,
) -> None:
    """Found by an import audit: a card-number column both fingerprinted and hashed into an id was refused as
    "used as is", and `"Ann Lee" <ann@b.de>` was no address."""
    rows = {**ROWS, "email": ['"Ann Lee" <Ann@B.de>', "b@y.org", "c@x.com", "<d@z.net>"]}
    m = converted_mapping(charge_id={"hash": ["card", "ts"]}, card_country={"value": "FR"})
    ws = ws_at(tmp_path / "ws")
    import_file(ws, write_csv(tmp_path, rows), write_mapping(tmp_path, m))
    charges = ws.read("charges", ["charge_id", "email_domain"])
    stored = json.dumps(charges.to_pylist())
    assert sorted(charges.column("email_domain").to_pylist()) == ["b.de", "x.com", "y.org", "z.net"]
    # The ids are keyed hashes under a workspace's random key: a hex id holds a 4-digit run such as "4242" by
    # chance (about 1 run in 250), so what is looked for is every 8-digit stretch of each card number.
    digits = ["".join(ch for ch in card if ch.isdigit()) for card in ROWS["card"]]
    stretches = {d[i : i + 8] for d in digits for i in range(len(d) - 7)}
    assert charges.num_rows == 4 and not any(s in stored for s in stretches) and "ann" not in stored.lower()
