"""Card numbers a spreadsheet wrote in scientific notation: a column of card numbers read as numbers and
saved as `4.11111111111111E+15` keeps 15 of the 16 digits, and the Luhn check digit gives the 16th back, so
it is as much a card number. Shorter mantissas (`4.11111E+15`, what a narrow cell shows) lose too much, and
other numbers in scientific notation (amounts, ids that start with 1) are no card numbers."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from payfm.events.cards import card_number_rows, contains_card_number, luhn_valid, redact_card_numbers
from test_import import ROWS, failed_import, write_csv, write_mapping


def excel(pan: str) -> str:
    """``pan`` as a spreadsheet writes a number column: 15 significant digits."""
    return f"{float(pan):.14E}".replace("E+0", "E+")


@pytest.mark.parametrize(
    "text",
    [
        excel("4111111111111111"),  # 4.11111111111111E+15
        excel("5555555555554444"),
        "4.242424242424242e+15",  # every digit written (a program's float64 repr)
        "3.78282246310005E+14",  # a 15-digit Amex, every digit written
        "card 4.11111111111111E15 declined",
        # (found by a review: trailing zeros were stripped before the length was compared)
        "5.105105105105100e+15",  # every digit written, the last ones zeros
        "5.1051051051051E+15",  # a program's repr drops the trailing zeros: 5105105105105100
        excel("4111111111111103"),  # 4.11111111111110E+15: the 15 kept digits end in 0
        "4,11111111111111E+15",  # a decimal-comma locale's spreadsheet
    ],
)
def test_a_card_number_in_scientific_notation_is_found_and_removed(text: str) -> None:
    assert contains_card_number(text)
    assert card_number_rows(pa.array(["x", text])).tolist() == [1]
    redacted = redact_card_numbers(text)
    assert "[card number removed]" in redacted and not contains_card_number(redacted)


@pytest.mark.parametrize(
    "text",
    [
        "4.11111E+15",  # a narrow cell's 6 digits: ten billion candidates
        "1.23456789012345E+15",  # no card number of 16 digits starts with 1
        "amount 1.5E+3",
        "9.99999999999999E+15",  # no card brand's prefix
        "4.24242424242424E+20",  # 21 digits: longer than any card number
        "4.242424242424241e+15",  # every digit written, and the Luhn check fails
    ],
)
def test_other_numbers_in_scientific_notation_are_not(text: str) -> None:
    assert not contains_card_number(text)


def test_the_examples_are_what_they_say() -> None:
    assert excel("4111111111111111") == "4.11111111111111E+15"
    assert not luhn_valid("4242424242424241")


def test_an_import_of_a_spreadsheet_mangled_card_column_is_refused_naming_the_row(tmp_path: Path) -> None:
    from test_import import MAPPING

    mapping = dict(MAPPING, drop=["email", "note"])
    rows = {**ROWS, "note": ["", excel("4111111111111111"), "", "1.5E+3"]}
    text = failed_import(tmp_path, write_csv(tmp_path, rows), write_mapping(tmp_path, mapping))
    assert "row 2 (line 3), column 'note': expected no card numbers" in text
    assert "4.111" not in text and "row 4" not in text
