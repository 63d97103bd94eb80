"""Card numbers that used to get past detection (an audit), and identifiers that must still pass it."""

from __future__ import annotations

import json
import random
import re
import uuid

import pyarrow as pa
import pytest

from payfm.events import cards
from payfm.events.cards import (
    card_number_rows,
    contains_card_number,
    mask_long_numbers,
    redact_card_numbers,
    shown_text,
)
from payfm.serving.errors import shown

PAN = "4111111111111111"


@pytest.mark.parametrize(
    "text",
    [
        "4111.1111.1111.1111",
        "4111/1111/1111/1111",
        "4111_1111_1111_1111",
        "4111  1111  1111  1111",
        "4111 - 1111 - 1111 - 1111",
        "3782.822463.10005",  # amex grouping
        f"x{PAN}x",
        f"card{PAN}",  # 'card' ends in a hex letter, but the token is not hexadecimal
        f"PAN{PAN}",
        f"qty 12 {PAN}",  # a number before the card number
    ],
)
def test_written_and_glued_card_numbers_are_found_and_redacted(text: str) -> None:
    assert contains_card_number(text)
    assert card_number_rows(pa.array(["ok", text])).tolist() == [1]
    redacted = redact_card_numbers(text)
    assert "[card number removed]" in redacted and sum(c.isdigit() for c in redacted) < 13


@pytest.mark.parametrize(
    "text",
    [
        "1234567.123456789",  # a decimal number: a dot needs three groups
        "2024-0001 / 1234567",  # mixed separators are not one written number
        f"ab{PAN}cd",  # inside a hexadecimal token
    ],
)
def test_numbers_and_identifiers_that_are_not_card_numbers(text: str) -> None:
    assert not contains_card_number(text)


def test_random_hex_ids_and_uuids_are_not_card_numbers() -> None:
    rng = random.Random(7)
    hex_ids = [
        "".join(rng.choice("0123456789abcdef") for _ in range(n)) for n in (32, 64) for _ in range(3000)
    ]
    uuids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(6000)]
    assert card_number_rows(pa.array(hex_ids + uuids)).tolist() == []


def test_a_uuid_with_a_luhn_valid_digit_window_is_not_a_card_number() -> None:
    # Groups 4-5 are all digits and 4111-111111111111 passes Luhn: a UUID, not a written card number.
    value = "9f86d081-8841-4c7d-4111-111111111111"
    assert not contains_card_number(value)
    assert contains_card_number("4111-111111111111")


def test_list_struct_and_map_columns_are_scanned() -> None:
    lists = pa.array([["a"], None, ["b", PAN], []], pa.list_(pa.string()))
    assert card_number_rows(lists).tolist() == [2]
    assert card_number_rows(lists.slice(1)).tolist() == [1]
    structs = pa.array([{"a": "x", "b": 1}, {"a": "y", "b": int(PAN)}])
    assert card_number_rows(structs).tolist() == [1]
    maps = pa.array([[("k", "x")], [("note", PAN)]], pa.map_(pa.string(), pa.string()))
    assert card_number_rows(maps).tolist() == [1]
    assert card_number_rows(pa.array([b"x", PAN.encode()])).tolist() == [1]


def _free(text: str, start: int, end: int) -> bool:
    """The digit group ``text[start:end]`` is free unless glued to the letters of a hexadecimal token: its
    run of ASCII letters and digits walked from scratch."""
    alnum = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    left, right = start, end
    while left > 0 and text[left - 1] in alnum:
        left -= 1
    while right < len(text) and text[right] in alnum:
        right += 1
    return (left, right) == (start, end) or re.search("[g-zG-Z]", text[left:right]) is not None


def _reference_spans(text: str) -> set[tuple[int, int]]:
    """The detection rules written plainly (every window of whole groups, checked from scratch)."""
    from payfm.events.cards import _SEQUENCE, _UUID, card_shaped

    uuids = [m.span() for m in _UUID.finditer(text)]
    out = set()
    for seq in _SEQUENCE.finditer(text):
        groups = [m.span() for m in re.finditer(r"[0-9]+", text[: seq.end()]) if m.start() >= seq.start()]
        for i in range(len(groups)):
            for j in range(i, len(groups)):
                digits = "".join(text[a:b] for a, b in groups[i : j + 1])
                seps = [text[groups[k][1] : groups[k + 1][0]] for k in range(i, j)]
                legacy = all(len(s) == 1 and s in " \t\u00a0-" for s in seps)
                kinds = {s.strip(" \t\u00a0") for s in seps}
                ok_seps = not seps or legacy or (len(kinds) == 1 and (kinds <= {"", "-"} or len(seps) >= 2))
                first_free = i > 0 or _free(text, *groups[0])
                ends_free = first_free and (j < len(groups) - 1 or _free(text, *groups[-1]))
                span = groups[i][0], groups[j][1]
                in_uuid = any(a <= span[0] and span[1] <= b for a, b in uuids)
                if card_shaped(digits) and ok_seps and ends_free and not in_uuid:
                    out.add(span)
    return out


def test_the_linear_scan_finds_what_the_plain_rules_find() -> None:
    import random

    from payfm.events.cards import _card_spans

    rng = random.Random(7)
    alphabet = "0123456789" * 6 + " -._/\t" + "\u00a0" + "abfgxZ"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(10, 60)))
        assert set(_card_spans(text)) == _reference_spans(text), repr(text)


class _Counting:
    """A stand-in for a compiled pattern that counts the characters its searches read."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern, self.read = pattern, 0

    def search(self, text: str, pos: int = 0, endpos: int | None = None) -> re.Match[str] | None:
        end = len(text) if endpos is None else endpos
        self.read += max(0, end - pos)
        return self.pattern.search(text, pos, end)


def test_the_scan_reads_a_text_of_many_hex_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body of hex letters and digits holding thousands of digit groups (``ab111...``): each group's check
    walked its whole run of letters and digits, so the scan read the body once per group (64 KB: 40 s, the
    decision service's event loop blocked meanwhile; a security review's find). It reads each run once."""
    body = json.dumps({"charge_id": ("ab" + "1" * 18) * 3200})
    counting = _Counting(cards._NON_HEX)
    monkeypatch.setattr(cards, "_NON_HEX", counting)
    assert not contains_card_number(body)
    assert counting.read <= 2 * len(body), counting.read
    assert contains_card_number(body + " zz" + PAN)  # (what it finds is as before)
    assert card_number_rows(pa.array([body, "ab" + PAN, "zz" + PAN])).tolist() == [2]


@pytest.mark.parametrize(
    "text",
    [
        "4111    1111    1111    1111",  # detected (fours over wide gaps), longer than the digit runs' gaps
        "4111\n1111\n1111\n1111",
        repr("4111\n1111\n1111\n1111"),  # (an error message quotes repr: its line breaks are \\n)
        json.dumps("4111\u20281111\u20281111\u20281111"),
        repr("4111\x0b1111\x0b1111\x0b1111"),
    ],
)
def test_every_card_number_the_detection_finds_is_masked_in_messages(text: str) -> None:
    """Messages mask what the detection finds: a number in fours over wide gaps or line breaks passed the
    masking of digit runs whole (`Got '4111    1111    1111    1111'.` in a 422 and the access log)."""
    said = mask_long_numbers(f"Got {text}.")
    assert "[card number removed]" in said and "1111" not in said, said
    path = shown(f"/v1/reviews/{text}")
    assert "[card number removed]" in path and "1111" not in path, path
    cli = shown_text(f"No feature {text}")  # (the CLI's: escapes its line breaks first, then masks)
    assert "[card number removed]" in cli and "1111" not in cli, cli
