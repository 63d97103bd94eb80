"""Card-number detection and the keyed transforms: what counts as a card number, and that none is echoed."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from payfm.events.card_transforms import bin6, fingerprint, last4
from payfm.events.cards import (
    card_number_rows,
    contains_card_number,
    luhn_valid,
    mask_long_numbers,
    redact_card_numbers,
)

VISA = "4242424242424242"  # Luhn-valid, 16 digits
AMEX = "378282246310005"  # Luhn-valid, 15 digits
NOT_LUHN = "4242424242424241"


def rows(values: list[object], type_: pa.DataType | None = None) -> list[int]:
    return card_number_rows(pa.array(values, type=type_)).tolist()


def test_luhn() -> None:
    assert luhn_valid(VISA) and luhn_valid(AMEX)
    assert not luhn_valid(NOT_LUHN)


@pytest.mark.parametrize(
    "text",
    [
        VISA,
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
        "4242  4242 4242 4242",  # up to 3 separator characters between groups
        "4242\n4242\n4242\n4242",  # line breaks are spaces too
        "4242    4242    4242    4242",  # a longer run of spaces
        "4242\t\t\t\t4242\t\t\t\t4242\t\t\t\t4242",
        "4242\r\n4242\r\n4242\r\n4242",
        "4242.4242.4242.4242",  # dots, slashes and underscores too, one kind throughout
        f"card {VISA} used",
        f"x,{VISA};",
        "3782 822463 10005",
        "6011000990139424",  # discover
        "4222222222222",  # 13 digits, the shortest PAN
    ],
)
def test_card_numbers_are_found_in_text_with_separators(text: str) -> None:
    assert contains_card_number(text)
    assert rows(["hello", text, None]) == [1]


@pytest.mark.parametrize(
    "text",
    [
        NOT_LUHN,  # fails Luhn
        "424242424242",  # 12 digits: too short
        "42424242424242424242",  # 20 digits: too long
        f"a{VISA}",  # glued to hex letters: part of a hexadecimal identifier, not a card number
        f"{VISA}ff",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",  # hex hash
        "2023-01-01 00:00:03",
        "4242    4242    4242    4241",  # fails Luhn, however far apart its groups are
        # Over line breaks and wide gaps only numbers written in fours count (each of these has a Luhn-valid
        # 13-19 digit window across its lines, which the 1-3 character rule would have taken):
        "415-555-0107\n415-555-0173",  # two phone numbers on two lines
        "42    25455    619501    68915",  # a row of a table
        "",
    ],
)
def test_other_texts_are_not_card_numbers(text: str) -> None:
    assert not contains_card_number(text)
    assert rows([text]) == []


def test_a_hex_hash_with_a_long_digit_run_inside_is_not_flagged() -> None:
    # 16 Luhn-valid digits, but glued to hex letters on both sides.
    assert rows([f"ab{VISA}cd", f"{VISA}e0"]) == []


def test_integers_and_integral_floats_are_checked() -> None:
    assert rows([int(VISA), 42, None, int(NOT_LUHN)], pa.int64()) == [0]
    assert rows([float(AMEX), 1.5, float("nan"), None], pa.float64()) == [0]
    assert rows([float(AMEX) + 0.5], pa.float64()) == []  # not integral
    assert rows([424242424242], pa.int64()) == []  # 12 digits


def test_dictionary_and_chunked_columns() -> None:
    dictionary = pa.array(["a", VISA, "a", VISA]).dictionary_encode()
    assert card_number_rows(dictionary).tolist() == [1, 3]
    chunked = pa.chunked_array([["x"], ["y", VISA]])
    assert card_number_rows(chunked).tolist() == [2]


def test_other_types_never_hold_card_numbers() -> None:
    assert rows([True, False], pa.bool_()) == []
    assert len(card_number_rows(pa.array([1, 2], type=pa.timestamp("us", tz="UTC")))) == 0


def test_fingerprint_is_keyed_stable_and_separator_insensitive() -> None:
    a = fingerprint(pa.array([VISA, "4242 4242 4242 4242", None, AMEX]), b"k1").to_pylist()
    assert a[0] == a[1] and a[2] is None and a[3] != a[0]
    assert a[0] is not None and a[0].startswith("fp_") and len(a[0]) == 19
    assert VISA not in a[0]
    other = fingerprint(pa.array([VISA]), b"k2").to_pylist()
    assert other[0] != a[0]  # another workspace secret gives an unrelated fingerprint
    assert fingerprint(pa.array([int(VISA)]), b"k1").to_pylist()[0] == a[0]


def test_fingerprint_error_names_the_row_but_not_the_value() -> None:
    with pytest.raises(ValueError) as e:
        fingerprint(pa.array([VISA, "not-a-card-4242"]), b"k", source="f.csv: ")
    text = str(e.value)
    assert "row 2" in text and "f.csv" in text
    assert "not-a-card" not in text and VISA not in text


def test_bin_and_last4() -> None:
    values = pa.array([VISA, "3782-822463-10005", None])
    assert bin6(values).to_pylist() == ["424242", "378282", None]
    assert last4(values).to_pylist() == ["4242", "0005", None]


def test_detection_is_vectorized_over_many_rows() -> None:
    values = [f"txn_{i}" for i in range(50_000)]
    values[31_337] = VISA
    found = card_number_rows(pa.array(values))
    assert isinstance(found, np.ndarray) and found.tolist() == [31_337]


def test_a_fingerprint_never_reads_as_a_card_number() -> None:
    """1 card in 1,800 has an HMAC whose first 16 hex digits are all decimal; 1 in 10 of those passes Luhn:
    as a fingerprint it would be refused as a card number (and the whole import with it)."""
    import hashlib
    import hmac

    numbers = [str(4000000000000000 + i) for i in range(40_000)]
    digits_only = [
        n for n in numbers if hmac.new(b"k1", n.encode(), hashlib.sha256).hexdigest()[:16].isdigit()
    ]
    assert digits_only  # about 22 of them
    fps = fingerprint(pa.array(digits_only), b"k1").to_pylist()
    assert all(fp.startswith("fp_") and fp[3] in "abcdef" and not contains_card_number(fp) for fp in fps)
    assert len(set(fps)) == len(fps)
    others = [n for n in numbers[:100] if n not in digits_only]  # the others are as before
    want = ["fp_" + hmac.new(b"k1", n.encode(), hashlib.sha256).hexdigest()[:16] for n in others]
    assert fingerprint(pa.array(others), b"k1").to_pylist() == want


FULLWIDTH = "".join(chr(0xFF10 + int(d)) for d in VISA)  # ４２４２...: a keyboard in CJK input mode
ARABIC_INDIC = "".join(chr(0x0660 + int(d)) for d in VISA)
SUPERSCRIPT = "".join("\u00b2" if d == "2" else chr(0x2070 + int(d)) for d in VISA)  # ⁴²⁴²...: not decimal
CIRCLED = "".join(chr(0x245F + int(d)) for d in VISA)  # ④②④②...


@pytest.mark.parametrize(
    "text",
    [
        FULLWIDTH,
        ARABIC_INDIC,
        " ".join(FULLWIDTH[i : i + 4] for i in range(0, 16, 4)),
        f"carte n° {ARABIC_INDIC[:8]}{VISA[8:]}",  # scripts mixed in one number
        "\u3000".join(FULLWIDTH[i : i + 4] for i in range(0, 16, 4)),  # ideographic space
        "\uff0d".join(FULLWIDTH[i : i + 4] for i in range(0, 16, 4)),  # fullwidth hyphen
        "\u30fc".join(FULLWIDTH[i : i + 4] for i in range(0, 16, 4)),  # katakana prolonged sound mark
        "\uff0e".join(FULLWIDTH[i : i + 4] for i in range(0, 16, 4)),  # fullwidth full stop
        "\u2009".join(VISA[i : i + 4] for i in range(0, 16, 4)),  # thin space between ASCII digits
        "\u200f ".join(ARABIC_INDIC[i : i + 4] for i in range(0, 16, 4)),  # a right-to-left mark and a space
        # marks that combine with the digit before them, invisible or drawn on it (found by an audit):
        "\ufe0f".join(VISA[i : i + 4] for i in range(0, 16, 4)),  # a variation selector between groups
        VISA[0] + "\u034f" + VISA[1:],  # the combining grapheme joiner inside the run
        "".join(d + "\u20e3" for d in VISA),  # keycaps (Me)
        VISA[:7] + "\u0332" + VISA[7:],  # a combining low line (Mn)
        f"cafe{FULLWIDTH}",  # fullwidth digits are no hexadecimal token's, whatever letters they touch
        SUPERSCRIPT,
        CIRCLED,
    ],
)
def test_card_numbers_in_other_scripts_digits_are_found(text: str) -> None:
    assert contains_card_number(text)
    assert rows(["hello", text, None]) == [1]
    binary = pa.array([b"x", text.encode()], pa.binary())
    assert card_number_rows(binary).tolist() == [1]
    not_utf8 = pa.array([b"\xff x", b"\xff " + text.encode()], pa.binary())  # bytes read as Latin-1
    assert card_number_rows(not_utf8).tolist() == [1]
    redacted = redact_card_numbers(f"<{text}>")
    assert redacted.endswith("[card number removed]>") and not contains_card_number(redacted)


def test_other_scripts_digits_that_fail_luhn_are_not_card_numbers() -> None:
    wrong = "".join(chr(0xFF10 + int(d)) for d in NOT_LUHN)
    assert not contains_card_number(wrong) and rows([wrong, "é"]) == []
    assert redact_card_numbers(f"né {wrong}") == f"né {wrong}"  # positions kept: the text is unchanged


def test_a_card_in_other_scripts_digits_has_the_same_fingerprint_bin_and_last4() -> None:
    # A mapped card-number column typed in another script: the same card, not another one (nor an empty BIN)
    values = pa.array([VISA, FULLWIDTH, ARABIC_INDIC, SUPERSCRIPT])
    assert len(set(fingerprint(values, b"k1").to_pylist())) == 1
    assert bin6(values).to_pylist() == ["424242"] * 4 and last4(values).to_pylist() == ["4242"] * 4
    with pytest.raises(ValueError, match="row 1"):
        fingerprint(pa.array(["4242\u00bd424242424242"]), b"k1")  # a vulgar fraction is no digit


def test_a_message_masks_long_numbers_of_any_script() -> None:
    # What an error message quotes of a value: 13+ digits of any script removed, the rest kept as written
    wide_13 = "".join(chr(0xFF10 + int(d)) for d in "1234567890123")  # no card (Luhn), still masked
    text = f"é {SUPERSCRIPT} and {wide_13} then 12 ４５ ok"
    assert mask_long_numbers(text) == "é [card number removed] and [card number removed] then 12 ４５ ok"


def test_a_column_is_scanned_as_each_value_would_be_ascii_or_not() -> None:
    """ASCII values take a fast prefilter, the others the Unicode one; together they find exactly the
    values contains_card_number finds, in a column mixing both (random digit runs, separators, scripts)."""
    rng = np.random.default_rng(11)
    pieces = [
        "4111",
        "1111",
        "4242",
        "0000",
        " ",
        "-",
        ".",
        "x",
        "\u3000",
        "\u0664",
        "\uff14",
        "é",
        "\ufe0f",
        ":",
    ]
    values = ["".join(rng.choice(pieces, size=int(rng.integers(1, 12)))) for _ in range(3000)]
    values += [VISA, FULLWIDTH, "4111-1111-1111-1111", "card é 4111111111111111", None]  # type: ignore[list-item]
    expected = [i for i, v in enumerate(values) if v is not None and contains_card_number(v)]
    assert len(expected) > 30 and any(not values[i].isascii() for i in expected)  # type: ignore[union-attr]
    assert card_number_rows(pa.array(values, pa.string())).tolist() == expected


def test_a_short_card_number_keeps_five_digits_unknown() -> None:
    """First 6 and last 4 of a 12-digit number would leave 2 digits unknown (10 candidates with Luhn, one
    of them singled out by the fingerprint): a number keeps its last four only with 15+ digits, its BIN
    only with 11+."""
    numbers = {8: "49927398", 11: "49927398716", 12: "180012341230", 13: "4222222222222"}
    numbers |= {14: "36000000000008", 15: "378282246310005", 16: VISA, 19: "6200000000000000005"}
    values = pa.array(list(numbers.values()))
    bins, lasts = bin6(values).to_pylist(), last4(values).to_pylist()
    for (n, number), b, last in zip(numbers.items(), bins, lasts, strict=True):
        assert b == (number[:6] if n >= 11 else None), n
        assert last == (number[-4:] if n >= 15 else None), n
        assert n - len(b or "") - len(last or "") >= 5, n  # digits no stored field shows
