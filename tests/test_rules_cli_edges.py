"""Edges of rules, lists, `payfm sql`, `serve state drop` and the review queue's paging: an e-mail domain's
string tests compare the canonical fragment in both engines; invisible formatting characters are refused in
list values; `inf` / `nan` in a rule say a finite number was expected (a quoted string where one is); a query
needing a DuckDB extension (a function or a type of one) is refused in one whole line; a drop that would be
refused is refused before the question; the last page of reviews has no next offset."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from factories import usd_consistent
from payfm.cli.main import cli
from payfm.events.query import QueryError, run_sql
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.features.state import FORMAT
from payfm.registry import Registry
from payfm.rules import lists, rulesets
from payfm.rules.backtest import evaluate_table
from payfm.rules.compiler import Ruleset, compile_rules
from payfm.rules.domains import canonical_fragment
from payfm.rules.grammar import parse_rule, parse_rules
from payfm.rules.limits import RuleError
from payfm.serving.app import create_app
from payfm.serving.charges import EXAMPLE_FIELDS
from payfm.serving.keys import KeyStore
from payfm.serving.scorer import Scorer
from payfm.training.models.linear import LogisticModel

NOWHERE = "redis://127.0.0.1:1/0"  # nothing listens on port 1: refused at once, no Redis needed


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "ws", create=True)


def _run(ws: Workspace, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-w", str(ws.root), *args], input=stdin)
    return result.exit_code, result.output


def _charge(i: int, **kw: Any) -> dict[str, Any]:
    c = {"charge_id": f"ch_{i}", "created": f"2026-03-01T12:00:{i:02d}+00:00", **EXAMPLE_FIELDS, **kw}
    return usd_consistent(c, kw)


# ---- string tests on e-mail domains compare the canonical fragment -----------------------------------------

FRAGMENT_RULES = (
    "wide: block if :email_domain: ends_with 'ＥＶＩＬ.com'\n"  # fullwidth, upper case
    "rf: block if :email_domain: ends_with '.XN--P1AI'\n"  # punycode of .рф, upper case
    "de: block if :email_domain: ends_with '.xn--bcher-kva.de'\n"  # whole labels: .bücher.de
    "mail: review if :email_domain: starts_with 'ＭＡＩＬ。'\n"  # an ideographic full stop
    "part: review if :email_domain: contains 'ÜCHEREI'\n"  # part of a Unicode label, upper case
    "cust: review if :customer_id: ends_with 'ABC'\n"  # not a domain: compared as written
)
DOMAINS = {
    "evil.com": "wide",
    "login.evil.com": "wide",
    "пример.рф": "rf",
    "shop.bücher.de": "de",
    "bücher.de": None,  # '.bücher.de' needs a label before it
    "mail.example.org": "mail",
    "mailbox.org": None,  # 'mail.' ends at a label boundary
    "stadtbücherei.de": "part",
    "example.org": None,
}


def _sql_decisions(rs: Ruleset, rows: list[dict[str, Any]]) -> list[str | None]:
    """The backtest's decisions (its DuckDB SQL) for ``rows`` (email_domain, customer_id, ip_address)."""
    table = pa.table(
        {
            "charge_id": [f"ch_{i}" for i in range(len(rows))],
            "label": ["legit"] * len(rows),
            "usd": [1.0] * len(rows),
            "email_domain": pa.array([r["email_domain"] for r in rows], pa.string()),
            "customer_id": pa.array([r["customer_id"] for r in rows], pa.string()),
            "ip_address": pa.array([r.get("ip_address") for r in rows], pa.string()),
        }
    )
    con = duckdb.connect()
    try:
        con.register("t", table)
        report = evaluate_table(con, rs, table="t", keep_decisions=True)
    finally:
        con.close()
    assert report.decisions is not None
    return [r["rule"] for r in report.decisions.to_pylist()]


def test_a_domain_fragment_is_compared_in_canonical_form_by_the_backtest_and_the_service(
    ws: Workspace,
) -> None:
    rules = rulesets.check(ws, FRAGMENT_RULES, "tiny")  # each fragment can be compared: no error
    assert [r.name for r in rules] == ["wide", "rf", "de", "mail", "part", "cust"]
    rs = rulesets.compile_text(ws, FRAGMENT_RULES, "tiny")
    rows = [{"email_domain": d, "customer_id": "cus_abc"} for d in DOMAINS]
    python = [rs.decide(r).rule for r in rows]
    assert python == list(DOMAINS.values())
    assert _sql_decisions(rs, rows) == python  # one source of truth: the backtest decides the same

    rulesets.save(ws, FRAGMENT_RULES, activate=True, set_name="tiny", author="test")
    scorer = Scorer.open(ws)
    try:  # the decision service: its charges canonicalized too (a fullwidth domain is evil.com)
        assert scorer.score(_charge(1, email_domain="Login.ＥＶＩＬ.com")).rule == "wide"
        assert scorer.score(_charge(2, email_domain="xn--e1afmkfd.xn--p1ai")).rule == "rf"
        assert scorer.score(_charge(3, email_domain="example.org", customer_id="cus_abc")).rule is None
        assert scorer.score(_charge(4, email_domain="example.org", customer_id="cus_ABC")).rule == "cust"
    finally:
        scorer.close()


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        # an xn-- label the fragment may cut: its Unicode form is suggested
        ("ends_with 'xn--bcher-kva.de'", "an xn-- (ASCII) label is only compared whole"),
        ("ends_with 'xn--bcher-kva.de'", "Write the label in Unicode ('bücher')"),
        ("starts_with 'XN--P1'", "its label 'xn--p1' may be part of a longer label"),
        ("contains 'xn--'", "an xn-- (ASCII) label is only compared whole"),
        ("ends_with '.xn--zz.de'", "'xn--zz' is not a domain label"),  # a whole label that is not IDNA
        ("starts_with '.evil'", "a canonical domain never starts with a dot"),
        ("ends_with '.'", "a canonical domain never ends with a dot"),
        ("contains 'a..b'", "a canonical domain never has an empty label ('..')"),
        ("contains 'ev!l'", "'ev!l' is not part of a domain label"),
        ("ends_with '.evil com'", "a domain never holds a space"),
    ],
)
def test_a_fragment_no_domain_can_hold_is_refused_with_why(
    ws: Workspace, condition: str, expected: str
) -> None:
    with pytest.raises(RuleError, match=re.escape(expected)) as e:
        rulesets.check(ws, f"r: block if :email_domain: {condition}", "tiny")
    assert "cannot be compared with the domains charges hold" in str(e.value)
    assert e.value.line == 1 and e.value.column == 13  # the string test's position


def test_xn_inside_a_label_is_plain_text(ws: Workspace) -> None:
    """Only a label that starts with xn-- is punycode; charges hold 'axn--b.com' as written (found by a
    review: it was refused)."""
    text = "r: block if :email_domain: ends_with 'axn--b.com'"
    rulesets.check(ws, text, "tiny")
    rs = rulesets.compile_text(ws, text, "tiny")
    rows = [{"email_domain": d, "customer_id": None} for d in ("axn--b.com", "zaxn--b.com", "b.com")]
    assert [rs.decide(r).rule for r in rows] == ["r", "r", None] == _sql_decisions(rs, rows)


def test_an_ipv6_fragment_in_upper_case_matches_as_charges_hold_it(ws: Workspace) -> None:
    text = "r: block if :ip_address: starts_with '2001:DB8:'"
    rs = rulesets.compile_text(ws, text, "tiny")
    rows = [
        {"ip_address": ip, "email_domain": None, "customer_id": None} for ip in ("2001:db8::1", "10.0.0.1")
    ]
    assert [rs.decide(r).rule for r in rows] == ["r", None] == _sql_decisions(rs, rows)


def test_an_address_in_a_fragment_is_refused_without_being_shown(ws: Workspace) -> None:
    with pytest.raises(RuleError, match="a domain never holds '@'") as e:
        rulesets.check(ws, "r: block if :email_domain: ends_with 'alice.smith@evil.com'", "tiny")
    assert "alice" not in str(e.value) and "(not shown)" in str(e.value)


def test_a_refused_fragment_of_an_earlier_version_matches_nothing_in_both_engines() -> None:
    # Saved before the check: loaded without it (values=False) and compared as written, in both engines.
    rs = compile_rules(parse_rules("r: block if :email_domain: ends_with 'xn--bcher-kva.de'"))
    assert rs.rules[0].condition.right.value == "xn--bcher-kva.de"  # type: ignore[union-attr]
    rows = [{"email_domain": "bücher.de", "customer_id": None}]
    assert rs.decide(rows[0]).rule is None and _sql_decisions(rs, rows) == [None]


def test_the_fragment_mapping_matches_the_charges_canonical_domain() -> None:
    assert canonical_fragment("ends_with", "ＥＶＩＬ.com.") == "evil.com"  # a final dot, as a domain's
    assert canonical_fragment("contains", "Σ") == "σ"  # nameprep's case folding, not str.lower's only
    assert canonical_fragment("contains", "ev\u00adil") == "evil"  # a soft hyphen: mapped to nothing
    assert canonical_fragment("starts_with", "") == ""


# ---- invisible formatting characters in list values --------------------------------------------------------


@pytest.mark.parametrize(
    "ch",
    [
        "\u202e",
        "\u202a",
        "\u2066",
        "\u2069",
        "\u200b",
        "\ufeff",
        "\u00ad",
        "\u2028",
        "\u2029",
    ],
)
def test_invisible_formatting_characters_in_list_values_are_refused(ws: Workspace, ch: str) -> None:
    lists.create_list(ws, "vips", "customer_id")
    secret = "cus_" + "7" * 12  # a long number: never quoted back
    with pytest.raises(RuleError) as e:
        lists.add_values(ws, "vips", ["cus_ok", secret + ch + "gpj.exe", "cus_2"])
    message = str(e.value)
    assert message.startswith("List 'vips', value 2 of 3: ")
    assert "invisible formatting characters" in message
    assert f"Got U+{ord(ch):04X} (" in message and f"at character {len(secret) + 1}." in message
    assert "7777" not in message and ch not in message and "gpj" not in message
    assert lists.list_values(ws, "vips") == []  # the batch is one transaction: nothing was added
    code, out = _run(ws, "lists", "add", "vips", "cus_ok", f"cus{ch}1")
    assert code == 1 and f"U+{ord(ch):04X}" in out and ch not in out and "value 2 of the command line" in out
    assert "Traceback" not in out and lists.list_values(ws, "vips") == []


def test_a_zero_width_character_in_a_domain_list_value_is_refused_not_dropped(ws: Workspace) -> None:
    # IDNA would map it to nothing ('evil.com'): a pasted value that prints alike is refused all the same.
    lists.create_list(ws, "doms", "email_domain")
    with pytest.raises(RuleError, match=re.escape("the value: A list value must not contain invisible")):
        lists.add_values(ws, "doms", ["evil\u200b.com"])
    with pytest.raises(RuleError, match=re.escape("Got U+200F (RIGHT-TO-LEFT MARK) at character 5.")):
        lists.remove_values(ws, "doms", ["evil\u200f.com"])
    assert lists.list_values(ws, "doms") == []


def test_joiners_in_list_values_are_taken_as_in_ids(ws: Workspace) -> None:
    """The zero-width non-joiner and joiner spell Persian, Indic and emoji names, which the event log takes as
    ids: a list must be able to hold them, and shows them as written."""
    lists.create_list(ws, "vips", "customer_id")
    names = ["\u0641\u0631\u0648\u0634\u200c\u06af\u0627\u0647", "Family \U0001f468\u200d\U0001f469"]
    assert lists.add_values(ws, "vips", names) == 2
    assert sorted(lists.list_values(ws, "vips")) == sorted(names)
    code, out = _run(ws, "lists", "show", "vips")
    assert code == 0 and all(n in out for n in names)
    live = compile_rules(parse_rules("vip: allow if :customer_id: in @vips"), lists.all_values(ws, ["vips"]))
    assert live.decide({"customer_id": names[1]}).rule == "vip"
    assert live.decide({"customer_id": names[1].replace("\u200d", "")}).rule is None


def test_a_value_stored_before_the_check_can_still_be_removed(ws: Workspace) -> None:
    """Found by a review: removal ran the same check, so a value stored by an older payfm stayed forever."""
    lists.create_list(ws, "vips", "customer_id")
    lists.add_values(ws, "vips", ["cus_1"])
    with sqlite3.connect(ws.root / "rules.db") as con:  # as an older payfm stored it
        con.execute("INSERT INTO list_values VALUES ('vips', ?)", ("cus\u202e2",))
    code, out = _run(ws, "lists", "show", "vips")  # shown escaped: it would reorder what is printed
    assert code == 0 and "cus\\u202e2" in out and "\u202e" not in out
    assert lists.remove_values(ws, "vips", ["cus\u202e2"]) == 1
    assert lists.list_values(ws, "vips") == ["cus_1"]
    with pytest.raises(RuleError, match="U\\+202E"):  # not stored: refused as before
        lists.remove_values(ws, "vips", ["cus\u202e3"])


def test_control_characters_in_list_values_are_still_refused_naming_the_list(ws: Workspace) -> None:
    lists.create_list(ws, "vips", "customer_id")
    with pytest.raises(
        RuleError, match=re.escape("List 'vips', value 1 of 2: A list value must not contain control")
    ):
        lists.add_values(ws, "vips", ["cus\x1b[31m", "cus_2"])


# ---- non-finite numbers in a rule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "got", "column"),
    [
        (":amount_usd: > inf", "'inf'", 25),
        (":amount_usd: > -inf", "'-inf'", 25),
        (":amount_usd: >= Infinity", "'Infinity'", 26),
        (":amount_usd: in (1, - inf)", "'-inf'", 30),
        (":risk_score: + INF > 3", "'INF'", 25),
    ],
)
def test_an_infinite_number_says_a_finite_number_was_expected(condition: str, got: str, column: int) -> None:
    with pytest.raises(RuleError) as e:
        parse_rule(f"block if {condition}")
    assert (
        e.value.detail
        == f"Expected a finite number. Got {got}: a rule's numbers are finite, at most 1e+15 in magnitude."
    )
    assert e.value.column == column


def test_nan_says_a_finite_number_was_expected_and_how_to_test_for_missing(
    ws: Workspace, tmp_path: Path
) -> None:
    with pytest.raises(RuleError, match=re.escape("Expected a finite number. Got 'nan'")) as e:
        parse_rule("block if :amount_usd: = nan")
    assert "is missing" in str(e.value) and "Unexpected" not in str(e.value)
    f = tmp_path / "r.rules"
    f.write_text("ok: block if :amount_usd: > 5\nbad: review if :amount_usd: > inf\n")
    code, out = _run(ws, "rules", "check", str(f))
    assert code == 1 and "line 2" in out and "Expected a finite number. Got 'inf'" in out
    assert "Unexpected 'in'" not in out and "Traceback" not in out
    # a word that only starts like one is still a plain syntax error
    with pytest.raises(RuleError, match=re.escape("Unexpected 'info'")):  # (the word, not its 'in')
        parse_rule("block if :amount_usd: > info")


IN_VALUES = "the values of `in (...)` are quoted strings, finite numbers or true/false, and "


@pytest.mark.parametrize(
    ("condition", "got", "reason"),
    [
        (":ip_country: in ('US', nan)", "nan", IN_VALUES + ":ip_country: holds strings"),
        (":ip_country: in (NaN)", "NaN", IN_VALUES + ":ip_country: holds strings"),
        (":ip_country: in ('US', -inf)", "-inf", IN_VALUES + ":ip_country: holds strings"),
        ("(:amount_usd: * 2) in ('a', inf)", "inf", IN_VALUES + "the values before it are strings"),
        (":ip_country: = nan", "nan", ":ip_country: holds strings"),
        (":amount_usd: > 5 and :risk_level: != inf", "inf", ":risk_level: holds strings"),
        (":email_domain: ends_with nan", "nan", "'ends_with' tests strings"),
    ],
)
def test_nan_or_inf_where_a_string_is_expected_says_so(condition: str, got: str, reason: str) -> None:
    """`:ip_country: in ('US', nan)` said a finite number was expected: a string is, and nan is none."""
    text = f"block if {condition}"
    with pytest.raises(RuleError) as e:
        parse_rule(text, 3)
    missing = "; a missing value is tested with `is missing`" if "nan" in got.lower() else ""
    assert e.value.detail == (
        f"Expected a quoted string: {reason}. Got {got} without quotes, which is not a value: write '{got}' "
        f"for the text{missing}."
    )
    assert (e.value.line, e.value.column) == (3, text.index(got) + 1)
    # a number still says a finite number was expected
    with pytest.raises(RuleError, match=re.escape("Expected a finite number. Got 'nan'")):
        parse_rule("block if :amount_usd: in (1, nan)")


# ---- payfm sql: a function or a type of a DuckDB extension -------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "function", "extension"),
    [
        ("SELECT * FROM sqlite_scan('x.db', 't')", "sqlite_scan", "sqlite_scanner"),
        ("SELECT * FROM read_xlsx('x.xlsx')", "read_xlsx", "excel"),
        ("SELECT * FROM st_read('x.shp')", "st_read", "spatial"),
    ],
)
def test_a_function_of_an_extension_is_refused_in_one_whole_line(
    ws: Workspace, sql: str, function: str, extension: str
) -> None:
    with pytest.raises(QueryError) as e:
        run_sql(ws, sql)
    message = str(e.value)
    assert message == (
        f"The query was refused: {function} comes from DuckDB's {extension} extension, and payfm sql loads "
        "no extension (they read files or the network). It reads the workspace's tables only (charges, "
        "disputes, early_fraud_warnings, refunds, reviews), with DuckDB's built-in functions: "
        "SELECT count(*) FROM charges."
    )
    code, out = _run(ws, "sql", sql)
    assert code == 1 and out.strip() == f"Error: {message}"  # one line, not DuckDB's INSTALL advice
    assert "INSTALL" not in out and ".duckdb" not in out
    assert run_sql(ws, "SELECT count(*) AS n FROM charges").to_pylist() == [{"n": 0}]  # built-ins work


@pytest.mark.parametrize(
    ("sql", "named"), [("SELECT '1.2.3.4'::INET AS ip", "INET"), ("SELECT CAST('10.0.0.1' AS inet)", "inet")]
)
def test_a_type_of_an_extension_is_refused_as_a_type(ws: Workspace, sql: str, named: str) -> None:
    """`'1.2.3.4'::INET` was refused as if INET were a function."""
    message = (
        f"The query was refused: the type {named} comes from DuckDB's inet extension, and payfm sql loads "
        "no extension (they read files or the network). It reads the workspace's tables only (charges, "
        "disputes, early_fraud_warnings, refunds, reviews), with DuckDB's built-in types and functions: "
        "SELECT count(*) FROM charges."
    )
    with pytest.raises(QueryError) as e:
        run_sql(ws, sql)
    assert str(e.value) == message
    code, out = _run(ws, "sql", sql)
    assert code == 1 and out.strip() == f"Error: {message}" and "INSTALL" not in out


# ---- serve state drop: refused before the question ---------------------------------------------------------


def test_a_drop_that_would_be_refused_is_refused_before_asking(ws: Workspace) -> None:
    fset = tiny_set()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, len(fset.names)))
    y = (X[:, 0] > 0).astype(int)
    model = LogisticModel(calibration="none").fit(X, y, feature_names=fset.names)
    reg = Registry(ws)
    mv = reg.register(model, name="fraud-lr", task="fraud", fset=fset)
    reg.promote(mv.ref)
    ns = f"payfm:{mv.feature_set_version}.f{FORMAT}"
    # The registry says the production model uses it: refused without a question and without Redis.
    code, out = _run(ws, "serve", "state", "drop", ns, "--state", NOWHERE, stdin="y\n")
    assert code == 1 and "Delete every key" not in out and "Aborted" not in out
    assert f"{mv.ref} (production)" in out and "--force" in out and "Traceback" not in out
    for wrong in ("payfm:*", "payfm"):  # not a namespace: refused before the question too
        code, out = _run(ws, "serve", "state", "drop", wrong, "--state", NOWHERE, stdin="y\n")
        assert code == 1 and "is not a namespace" in out and "Delete every key" not in out
    # --force passes the registry check; the unreachable Redis is then the error, still before asking.
    code, out = _run(ws, "serve", "state", "drop", ns, "--state", NOWHERE, "--force", stdin="y\n")
    assert code == 1 and "not reachable" in out and "Delete every key" not in out


# ---- the review queue's last page --------------------------------------------------------------------------


@pytest.fixture()
def client(ws: Workspace) -> Iterator[tuple[TestClient, dict[str, str]]]:
    rulesets.save(ws, "big: review if :amount_usd: > 500\n", activate=True, set_name="tiny", author="test")
    scorer = Scorer.open(ws)
    key = KeyStore(ws.root / "serving" / "keys.db").create("tests")
    try:
        with TestClient(create_app(scorer, KeyStore(ws.root / "serving" / "keys.db"))) as c:
            yield c, {"Authorization": f"Bearer {key}"}
    finally:
        scorer.close()


def test_the_last_page_of_reviews_has_no_next_offset(client: tuple[TestClient, dict[str, str]]) -> None:
    c, h = client
    for i in range(5):
        assert (
            c.post("/v1/charges/score", json=_charge(i, amount_usd=90_000), headers=h).json()["outcome"]
            == "manual_review"
        )

    def page(limit: int, offset: int) -> dict[str, Any]:
        r = c.get("/v1/reviews", params={"status": "open", "limit": limit, "offset": offset}, headers=h)
        assert r.status_code == 200
        return dict(r.json())

    first = page(2, 0)
    assert len(first["data"]) == 2 and first["has_more"] is True and first["next_offset"] == 2
    middle = page(2, first["next_offset"])
    assert middle["has_more"] is True and middle["next_offset"] == 4
    last = page(2, middle["next_offset"])
    assert [r["charge_id"] for r in last["data"]] == ["ch_4"]
    assert last["has_more"] is False and last["next_offset"] is None
    exact = page(5, 0)  # a page that ends exactly at the last review
    assert len(exact["data"]) == 5 and exact["has_more"] is False and exact["next_offset"] is None
    past = page(2, 10)
    assert past["data"] == [] and past["has_more"] is False and past["next_offset"] is None
    # Following next_offset until it is null visits every review once.
    seen, offset = [], 0
    while offset is not None:
        p = page(2, offset)
        seen += [r["charge_id"] for r in p["data"]]
        offset = p["next_offset"]
    assert seen == [f"ch_{i}" for i in range(5)]
