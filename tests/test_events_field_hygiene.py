"""The event schema's rules for what a text field may hold, on both paths (imports, the decision service):
ids refuse control, invisible formatting and line-separator characters, whitespace at either end and more
than 255 characters (245 for a charge id); free text refuses controls other than tab and line feed; a
currency is an ISO 4217 code; and no message shows a run of 13 or more digits of a number out of range.
Every refusal names the field and says what it found (a code point and its position, or a length), never the
value."""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest
from fastapi.testclient import TestClient

import test_serving_scorer
from factories import T0, disputes
from payfm.events import text
from payfm.events.currency import MINOR_UNITS, currency_codes
from payfm.events.importer import import_file
from payfm.events.schema import RULES, SCHEMAS
from payfm.events.validate import ValidationError, validate_events
from payfm.events.workspace import Workspace
from payfm.serving.app import create_app
from payfm.serving.charges import normalize_charge
from payfm.serving.errors import InvalidInput
from payfm.serving.scorer import Scorer
from payfm.synth.world import CURRENCIES as SYNTHETIC_CURRENCIES
from test_import import MAPPING, ROWS, write_mapping
from test_serving_scorer import charge
from test_validate import _with
from test_validate import charges as charge_table

ws = test_serving_scorer.ws  # the fixture: a workspace with a production model and the tiny ruleset

CHARS = (
    "without control characters, invisible formatting characters or line separators (Unicode Cc, Cf, Zl, Zp)"
)
# The audit's values, and what each refusal must say instead of the value.
AUDIT = [
    ("merchant_id", "a\u0000b", f"an id {CHARS}", "U+0000 (NULL) at character 2"),
    (
        "merchant_id",
        "acct_\u202e\u0000évil",
        f"an id {CHARS}",
        "U+202E (RIGHT-TO-LEFT OVERRIDE) at character 6",
    ),
    ("charge_id", "ch\nX-Injected: 1", f"a charge id {CHARS}", "U+000A (LINE FEED) at character 3"),
    ("charge_id", "\tch_t\t", f"a charge id {CHARS}", "U+0009 (CHARACTER TABULATION) at character 1"),
    ("charge_id", "c" * 60_000, "a charge id of at most 245 characters", "60,000 characters."),
    ("merchant_id", "m" * 5_000, "an id of at most 255 characters", "5,000 characters."),
    (
        "customer_id",
        "cus_1\u3000",
        "an id without whitespace at its start or end",
        "U+3000 (IDEOGRAPHIC SPACE)",
    ),
    ("device_id", " dev_1", "an id without whitespace at its start or end", "U+0020 (SPACE)"),
]


@pytest.fixture()
def client(scorer: Scorer) -> Iterator[TestClient]:
    with TestClient(create_app(scorer, None)) as c:
        yield c


def error(r: Any) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["type"] == "InvalidInput" and "\n" not in err["message"]
    return err


def long_runs(message: str) -> list[str]:
    return re.findall(r"\d{13,}", message)


# ---- 1. ids: characters, ends and length, online --------------------------------------------------------
@pytest.mark.parametrize(("field", "value", "expected", "found"), AUDIT)
def test_the_decision_service_refuses_the_audits_ids(
    client: TestClient, scorer: Scorer, field: str, value: str, expected: str, found: str
) -> None:
    body = charge(1, **{field: value})
    err = error(client.post("/v1/charges/score", json=body))
    assert err["field"] == field
    assert err["message"].startswith(f"Field '{field}' must be {expected}.") and found in err["message"]
    assert len(err["message"]) < 400  # a message names the value's fault, it does not reproduce it
    assert not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in err["message"])
    assert scorer.log.get_charge(body["charge_id"]) is None


def test_an_outcome_id_with_a_nul_is_refused_and_not_appended(client: TestClient, ws: Workspace) -> None:
    assert client.post("/v1/charges/score", json=charge(1)).status_code == 200
    refund = {"refund_id": "r\u0000x", "charge_id": "ch_1", "created": "2026-03-02T00:00:00Z", "amount": 1}
    err = error(client.post("/v1/refunds", json=refund | {"currency": "usd", "reason": "duplicate"}))
    assert err["field"] == "refund_id"
    assert (
        err["message"]
        == f"Field 'refund_id' of the refund must be an id {CHARS}. Got U+0000 (NULL) at character 2."
    )
    assert not ws.files("refunds")
    dispute = {"dispute_id": "dp_1", "charge_id": "ch_1", "created": "2026-03-02T00:00:00Z", "amount": 1}
    err = error(
        client.post(
            "/v1/disputes",
            json=dispute | {"currency": "usd", "reason": "fraudulent"} | {"dispute_id": "d" * 256},
        )
    )
    assert err["field"] == "dispute_id" and "Got a text of 256 characters." in err["message"]


def test_the_joiners_of_persian_indic_and_emoji_names_are_taken() -> None:
    """The zero-width non-joiner and joiner are spelling: a Persian shop name, an emoji family."""
    for name in ("فروشگاه\u200cهای تهران", "क्\u200dष shop", "Family 👨\u200d👩\u200d👧 Store"):
        assert normalize_charge(charge(1, merchant_id=name))["merchant_id"] == name
        assert validate_events("charges", _with(charge_table(1), "merchant_id", [name])).num_rows == 1
    assert text.IDENTIFIER.fault("a\u200bb") is not None  # a zero-width space is still refused


def test_ids_at_the_bounds_and_those_a_review_closure_derives_are_taken() -> None:
    cid = "c" * text.MAX_CHARGE_ID_CHARS
    assert normalize_charge(charge(1, charge_id=cid, merchant_id="m" * 255))["charge_id"] == cid
    assert text.IDENTIFIER.fault("re_review_" + cid) is None  # the refund a closure implies fits as an id
    assert text.CHARGE_ID.fault(cid + "c") is not None
    kept = normalize_charge(charge(1, merchant_id="fraud_Kirlin and Sons", customer_id="cus ü 1"))
    assert kept["merchant_id"] == "fraud_Kirlin and Sons"  # spaces inside an id, and any letter, are fine


# ---- 2. the same rule on both paths ---------------------------------------------------------------------
EDGY = [
    "ok", " a", "a ", "a\u00a0", "\u3000a", "a b", "a\x7fb", "a\x85b", "a\u200bb", "a\ufeffb", "a\u2028b",
    "a\u180eb", "a\U00013439b", "é", "a\tb", "x" * 255, "x" * 256, "🙂", "a\U000e0041b", "a\u0600",
    "فروشگاه\u200cهای تهران", "Family 👨\u200d👩\u200d👧 Store", "a\u200c", "\u200da",
]  # fmt: skip


def test_imports_and_the_decision_service_refuse_the_same_ids() -> None:
    table = charge_table(1)
    online = set()
    for i, v in enumerate(EDGY):
        try:
            normalize_charge(charge(1, merchant_id=v))
        except InvalidInput:
            online.add(i)
    offline = set()
    for i, v in enumerate(EDGY):
        try:
            validate_events("charges", _with(table, "merchant_id", [v]))
        except ValidationError:
            offline.add(i)
    assert online == offline and 0 not in online and 1 in online  # some pass, some do not


def test_the_character_classes_are_pythons_and_arrow_reads_them_alike() -> None:
    """The ranges are what unicodedata puts in Cc, Cf, Zl, Zp (and str.isspace calls whitespace); Arrow's
    RE2 (a later Unicode) and Python's re read the classes alike on every code point, inside a text and at
    its ends."""
    every = [chr(i) for i in range(0x110000) if not 0xD800 <= i <= 0xDFFF]
    joiners = {"\u200c", "\u200d"}  # spelling in Persian, Indic scripts and emoji sequences: taken
    refused = {c for c in every if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")} - joiners
    middle = pc.match_substring_regex(
        pa.array(["a" + c + "a" for c in every]), text.IDENTIFIER.forbidden_class
    )
    assert {c for c, m in zip(every, middle.to_pylist(), strict=True) if m} == refused
    for rule in (text.IDENTIFIER, text.FREE_TEXT):
        python = [rule.fault("a" + c + "a") is None for c in every]
        arrow = pa.array(["a" + c + "a" for c in every])
        flagged = set()
        for rows, _, _ in rule.faulty_rows(arrow):
            flagged |= set(rows.tolist())
        assert flagged == {i for i, ok in enumerate(python) if not ok}
    ends = pa.array([c + "a" for c in every] + ["a" + c for c in every])
    flagged = set()
    for rows, _, _ in text.IDENTIFIER.faulty_rows(ends):
        flagged |= set(rows.tolist())
    values = ends.to_pylist()
    assert flagged == {i for i, v in enumerate(values) if text.IDENTIFIER.fault(v) is not None}
    assert {values[i][0] for i in flagged if i < len(every)} == refused | {c for c in every if c.isspace()}


def test_the_ascii_fast_path_refuses_what_the_exact_check_refuses() -> None:
    """Printable ASCII is read off the column's buffers (no regular expression); every ASCII character, in a
    text and at its ends, in sliced arrays and beside nulls, is judged as :meth:`TextRule.fault` judges it."""
    texts = [t for c in map(chr, range(128)) for t in ("a" + c + "a", c + "a", "a" + c)]
    for rule in (text.IDENTIFIER, text.FREE_TEXT):
        for t in [*texts, "x" * rule.max_chars, "x" * (rule.max_chars + 1)]:
            for arr in (pa.array(["ok", None, t]), pa.array(["ok", t, "x"]).slice(1, 1)):
                refused = [r for rows, _, _ in rule.faulty_rows(arr) for r in rows.tolist()]
                assert refused == ([len(arr) - 1] if rule.fault(t) is not None else []), (rule.what, t)
        assert rule.faulty_rows(pa.array(["ok", "fine"]).slice(1)) == []


def test_the_rules_pattern_says_what_the_rule_does() -> None:
    """FieldRule.pattern (what every reader of patterns applies) and FieldRule.accepts (the decision
    service's fast test) say what the characters-and-length rule does."""
    for rule in (RULES["charges"]["merchant_id"], RULES["charges"]["charge_id"], RULES["reviews"]["note"]):
        assert rule.regex is not None and rule.text is not None
        for v in [*EDGY, "a\nb", "c" * 245, "c" * 246, "n" * 10_000, "n" * 10_001]:
            assert (rule.regex.fullmatch(v) is not None) == (rule.text.fault(v) is None), (rule.text.what, v)
            assert rule.accepts(v) == (rule.text.fault(v) is None)  # the decision service's fast test


def test_every_text_field_of_every_table_has_a_rule() -> None:
    """A text field with no vocabulary, pattern, code list or canonical form is an id or free text: a new
    field cannot slip past the rule."""
    missing = [
        f"{table}.{f.name}"
        for table, schema in SCHEMAS.items()
        for f in schema
        if pa.types.is_string(f.type) and f.name not in RULES[table]
    ]
    assert missing == []
    assert {n for t in RULES.values() for n, r in t.items() if r.text is text.FREE_TEXT} == {"note"}


# ---- 3. imports: every row, vectorized, never the value -------------------------------------------------
def test_an_import_names_each_bad_id_by_row_and_character_and_writes_nothing(tmp_path: Path) -> None:
    rows = {k: list(v) for k, v in ROWS.items()}
    rows["shop"] = ["s1", "s\x1b[31m2", " s3", "s" * 300]
    pacsv.write_csv(pa.table(rows), tmp_path / "export.csv")
    w = Workspace.open(tmp_path / "ws", create=True)
    with pytest.raises(ValidationError) as e:
        import_file(w, tmp_path / "export.csv", write_mapping(tmp_path, MAPPING))
    got = [(p.row, p.column, p.received) for p in e.value.problems if p.column == "merchant_id"]
    assert sorted(got) == [
        (2, "merchant_id", "U+001B (ESCAPE) at character 2"),
        (3, "merchant_id", "U+0020 (SPACE) at character 1"),
        (4, "merchant_id", "a text of 300 characters"),
    ]
    assert "[31m" not in str(e.value) and "s" * 50 not in str(e.value) and "row 2 (line 3)" in str(e.value)
    assert not w.files("charges")


def test_the_column_check_runs_python_only_for_the_rows_it_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fault = text.TextRule.fault
    monkeypatch.setattr(text.TextRule, "fault", lambda self, v: calls.append(v) or fault(self, v))
    n = 200_000
    ids = pa.chunked_array([pa.array([f"ch_{i}" if i % 3 else f"ch_{i}\n" for i in range(n)])])
    start = time.perf_counter()
    [(rows, _, received)] = text.CHARGE_ID.faulty_rows(ids)
    assert len(rows) == len(range(0, n, 3)) and rows[:3].tolist() == [0, 3, 6] and len(received) == 20
    assert len(calls) == 20 and time.perf_counter() - start < 2.0


def test_free_text_takes_tabs_and_line_feeds_and_refuses_other_controls() -> None:
    review = {"charge_id": "ch_1", "created": T0, "opened": T0, "closed_as": "approved", "rule": "big"}
    ok = {**review, "note": "called the cardholder:\n\tnot theirs ", "reviewer": "ops-1"}
    assert validate_events("reviews", pa.Table.from_pylist([ok], schema=SCHEMAS["reviews"])).num_rows == 1
    for note, found in [("a\x1b[2Jb", "U+001B (ESCAPE) at character 2"), ("a\rb", "U+000D (CARRIAGE RETURN)"),
                        ("x\u202e", "U+202E"), ("n" * 10_001, "a text of 10,001 characters")]:  # fmt: skip
        table = pa.Table.from_pylist([{**review, "note": note}], schema=SCHEMAS["reviews"])
        with pytest.raises(ValidationError) as e:
            validate_events("reviews", table)
        assert e.value.problems[0].column == "note" and found in e.value.problems[0].received


def test_a_message_for_a_refused_id_never_quotes_it() -> None:
    rule = RULES["charges"]["merchant_id"]
    assert rule.received("acct_\x1b[31m") == "U+001B (ESCAPE) at character 6"
    assert rule.received("m" * 5000) == "a text of 5,000 characters"
    assert RULES["charges"]["currency"].received("USD") == "'USD'"


# ---- 4. currencies --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("xyz", ""),
        ("USD", " Currency codes are lower case: 'usd'."),
        (" eur", " Currency codes have no spaces: 'eur'."),
        ("eru", " The nearest ISO 4217 code is 'eur'."),
    ],
)
def test_a_currency_not_in_iso_4217_is_refused_online_with_a_hint(value: str, hint: str) -> None:
    with pytest.raises(InvalidInput) as e:
        normalize_charge(charge(1, currency=value, amount_usd=5))
    assert e.value.field == "currency"
    assert str(e.value).startswith("Field 'currency' must be an ISO 4217 currency code, lower case")
    assert str(e.value).endswith(f"Got {value!r}.{hint}")


def test_a_currency_not_in_iso_4217_is_refused_in_outcomes_and_imports(client: TestClient) -> None:
    with pytest.raises(ValidationError) as e:
        validate_events("disputes", _with(disputes(["ch_1", "ch_2"], T0), "currency", ["xyz", "USD"]))
    assert [(p.column, p.row, p.received) for p in e.value.problems] == [
        ("currency", 1, "'xyz'"),
        ("currency", 2, "'USD'. Currency codes are lower case: 'usd'"),
    ]
    client.post("/v1/charges/score", json=charge(1))
    refund = {"refund_id": "re_1", "charge_id": "ch_1", "created": "2026-03-02T00:00:00Z", "amount": 1}
    err = error(client.post("/v1/refunds", json=refund | {"currency": "xyz", "reason": "duplicate"}))
    assert err["field"] == "currency" and err["message"].endswith("Got 'xyz'.")


def test_every_currency_payfm_converts_or_generates_and_old_codes_are_taken() -> None:
    codes = currency_codes()
    assert set(MINOR_UNITS) <= codes and set(SYNTHETIC_CURRENCIES) <= codes
    assert {"isk", "uah", "hrk", "xau"} <= codes and not {"xyz", "USD", "us"} & codes
    for code in ("isk", "hrk"):  # no rate needed to hold it
        assert normalize_charge(charge(1, currency=code, amount_usd=5))["currency"] == code


# ---- 5. numbers out of range: never a run of 13 or more digits ------------------------------------------
@pytest.mark.parametrize(
    ("amount", "got"), [(10**13, "an integer of 14 digits"), (10**18, "an integer of 19 digits")]
)
def test_an_outcome_amount_out_of_range_says_its_length_not_its_digits(
    client: TestClient, amount: int, got: str
) -> None:
    client.post("/v1/charges/score", json=charge(1))
    refund = {"refund_id": "re_1", "charge_id": "ch_1", "created": "2026-03-02T00:00:00Z", "amount": amount}
    err = error(client.post("/v1/refunds", json=refund | {"currency": "usd", "reason": "duplicate"}))
    assert (
        err["message"]
        == f"Field 'amount' of the refund must be a value from 0 to 999,999,999,999. Got {got}."
    )


def test_import_problems_never_show_a_long_number() -> None:
    table = _with(disputes(["a", "b", "c"], T0), "amount", [10**13, -(10**15), 10**18])
    with pytest.raises(ValidationError) as e:
        validate_events("disputes", table)
    assert [p.received for p in e.value.problems] == [
        "an integer of 14 digits",
        "a negative integer of 16 digits",
        "an integer of 19 digits",
    ]
    usd = _with(_with(charge_table(1), "amount", [10**13]), "amount_usd", [5])
    with pytest.raises(ValidationError) as e:
        validate_events("charges", usd)
    assert long_runs(str(e.value)) == [] and "with amount an integer of 14 digits" in str(e.value)
