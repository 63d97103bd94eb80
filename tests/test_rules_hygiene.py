"""Input hygiene of rules and lists: one spelling of an e-mail domain everywhere (Unicode, punycode, fullwidth
and decomposed spellings of one name match), no card numbers or control characters in list names and values,
and rules files saved by Windows editors (a UTF-8 BOM, UTF-16) read or refused clearly."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from factories import charges as charge_table
from payfm.cli.main import cli
from payfm.events.schema import CANONICAL_DOMAIN, EMAIL_DOMAIN, DomainError, canonical_domain
from payfm.events.validate import ValidationError, validate_events
from payfm.events.workspace import Workspace
from payfm.rules import lists, rulesets
from payfm.rules.compiler import compile_rules
from payfm.rules.db import connect
from payfm.rules.grammar import parse_rules
from payfm.rules.limits import RuleError
from payfm.serving.charges import normalize_charge
from payfm.serving.scorer import Scorer
from test_canonical_values import charge

BUECHER = ("bücher.de", "xn--bcher-kva.de", "bu\u0308cher.de", "ＢÜＣＨＥＲ.de", "XN--BCHER-KVA.DE.")
EVIL = ("evil.com", "ｅｖｉｌ.com", "ＥＶＩＬ.ＣＯＭ", "evil\u3002com", "ev\u00adil.com")
RULE = "bad_dom: block if :email_domain: in @bad_domains\n"
PAN = "4111111111111111"


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    w = Workspace.open(tmp_path / "ws", create=True)
    lists.create_list(w, "bad_domains", "email_domain")
    lists.add_values(w, "bad_domains", ["evil.com", "bücher.de"])
    rulesets.save(w, RULE, activate=True, set_name="tiny", author="test")
    return w


def _run(ws: Workspace, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-w", str(ws.root), *args])
    return result.exit_code, result.output


# ---- one canonical e-mail domain ----------------------------------------------------------------------


def test_every_spelling_of_a_domain_has_one_canonical_form() -> None:
    assert {canonical_domain(d) for d in BUECHER} == {"bücher.de"}
    assert {canonical_domain(d) for d in EVIL} == {"evil.com"}
    for d in ("bücher.de", "мой-сайт.рф", "例え.テスト", "_dmarc.example.com", "xn--mgbh0fb.com"):
        once = canonical_domain(d)
        assert canonical_domain(once) == once  # idempotent: a stored value is canonical
    assert canonical_domain("xn--mgbh0fb.com") == "مثال.com"


@pytest.mark.parametrize(
    "bad",
    [
        "xn--evil-.com",
        "xn--zz.com",
        "xn--.com",
        "☃.com",
        "exa mple.com",
        "a..b",
        "evil.com\x1b",
        "ü" * 60 + ".de",
    ],
)
def test_invalid_domains_still_fail_clearly(bad: str) -> None:
    with pytest.raises(DomainError, match="An e-mail domain must be a domain name"):
        canonical_domain(bad)


def test_the_columns_fast_path_leaves_punycode_to_the_canonical_function() -> None:
    fast = re.compile(CANONICAL_DOMAIN)
    assert fast.fullmatch("evil.com") and fast.fullmatch("xn.com") and fast.fullmatch("axn--b.com")
    assert not fast.fullmatch("xn--bcher-kva.de") and not fast.fullmatch("shop.xn--p1ai")
    t = charge_table(len(BUECHER) + 1)
    domains = pa.array([*BUECHER, "ｅｖｉｌ.com"])
    t = t.set_column(t.schema.get_field_index("email_domain"), "email_domain", domains)
    out = validate_events("charges", t)
    assert out["email_domain"].to_pylist() == ["bücher.de"] * len(BUECHER) + ["evil.com"]
    bad = t.set_column(
        t.schema.get_field_index("email_domain"), "email_domain", pa.array(["xn--evil-.com"] * 6)
    )
    with pytest.raises(ValidationError, match="row 1, column 'email_domain': expected a domain name"):
        validate_events("charges", bad)


def test_a_charge_posted_to_the_service_is_canonical() -> None:
    for d in BUECHER:
        assert normalize_charge(charge(1, email_domain=d))["email_domain"] == "bücher.de"


def test_list_entries_are_canonical_and_old_entries_are_read_canonical(ws: Workspace) -> None:
    lists.add_values(ws, "bad_domains", ["ｅｖｉｌ.com", "xn--bcher-kva.de", "bu\u0308cher.de"])
    assert lists.list_values(ws, "bad_domains") == ["bücher.de", "evil.com"]
    with connect(ws) as con:  # what an older payfm stored for these spellings
        for old in ("ｅｖｉｌ2.com", "xn--mnchen-3ya.de", "xn--evil-.com"):
            con.execute("INSERT INTO list_values VALUES ('bad_domains', ?)", (old,))
    held = lists.all_values(ws, ["bad_domains"])["bad_domains"]
    assert {"evil2.com", "münchen.de", "xn--evil-.com"} <= held


def test_a_domain_blocklist_cannot_be_bypassed_by_another_spelling(scorer: Scorer) -> None:
    for i, domain in enumerate((*BUECHER, *EVIL)):
        d = scorer.score(charge(i, email_domain=domain))
        assert (d.outcome, d.rule) == ("blocked", "bad_dom"), domain
    assert scorer.score(charge(30, email_domain="good.com")).outcome == "authorized"


def test_the_cli_scenario_of_the_audit(ws: Workspace, tmp_path: Path) -> None:
    assert _run(ws, "lists", "add", "bad_domains", "ｅｖｉｌ.com", "xn--bcher-kva.de") == (
        0,
        "Added 0 new values to 'bad_domains'.\n"  # each is a value on the list, in another form: named
        "warning: on 'bad_domains' already, so not added again: 'evil.com', 'bücher.de'.\n",
    )
    f = tmp_path / "lit.rules"
    for literal, meant in (("ｅｖｉｌ.com", "evil.com"), ("xn--bcher-kva.de", "bücher.de")):
        f.write_text(f"block if :email_domain: in ('{literal}')\n", encoding="utf-8")
        code, out = _run(ws, "rules", "check", str(f))
        assert code == 1 and f"Did you mean '{meant}'?" in out, out
        f.write_text(f"block if :email_domain: = '{literal}'\n", encoding="utf-8")
        code, out = _run(ws, "rules", "check", str(f))
        assert code == 1 and f"Did you mean '{meant}'?" in out, out


def test_a_saved_rule_with_another_spelling_matches_the_canonical_charges() -> None:
    # a version saved before (loaded without the value check) keeps matching what it was written for
    text = (
        "a: block if :email_domain: in ('ｅｖｉｌ.com')\nb: review if :email_domain: = 'xn--bcher-kva.de'\n"
    )
    rs = compile_rules(parse_rules(text), {}, {"email_domain": "string"})
    assert rs.decide({"email_domain": "evil.com"}).rule == "a"
    assert rs.decide({"email_domain": "bücher.de"}).rule == "b"
    assert "'bücher.de'" in rs.sql_conditions[1] and "'evil.com'" in rs.sql_conditions[0]


def test_the_canonical_literal_is_accepted_and_a_hint_points_to_it() -> None:
    assert EMAIL_DOMAIN.problem("bücher.de") is None
    assert EMAIL_DOMAIN.problem("xn--bcher-kva.de") == ("a domain name", " Did you mean 'bücher.de'?")


# ---- card numbers and control characters in names and values --------------------------------------------


@pytest.mark.parametrize("name", ["x" + PAN, "list_" + PAN + "_a", PAN])
def test_a_list_name_holding_a_card_number_is_refused_without_showing_it(ws: Workspace, name: str) -> None:
    with pytest.raises(RuleError, match="must not contain a card number") as e:
        lists.create_list(ws, name, "country")
    assert PAN not in str(e.value)
    code, out = _run(ws, "lists", "create", name, "--type", "country")
    assert code == 1 and "card number" in out and PAN not in out
    assert name not in lists.list_types(ws)


def test_an_unknown_list_name_is_quoted_escaped_and_masked(ws: Workspace) -> None:
    for name in ("\x1b[31mred", "x" + PAN):
        with pytest.raises(RuleError, match="Unknown list") as e:  # the message itself, not only the CLI's
            lists.get_list(ws, name)
        assert "\x1b" not in str(e.value) and PAN not in str(e.value)
        code, out = _run(ws, "lists", "show", name)
        assert code == 1 and "\x1b" not in out and PAN not in out and "Unknown list" in out


@pytest.mark.parametrize("value", ["\x1b[31mred", "cus\x07_1", "cus\x7f", "cus\x9b31m", "cus\t1", "a\x00b"])
def test_control_characters_in_list_values_are_refused(ws: Workspace, value: str) -> None:
    lists.create_list(ws, "custs", "customer_id")
    with pytest.raises(
        RuleError, match=re.escape("A list value must not contain control characters. Got '")
    ) as e:
        lists.add_values(ws, "custs", [value])
    assert "\x1b" not in str(e.value) and "\x07" not in str(e.value)
    code, out = _run(ws, "lists", "add", "custs", value)
    assert code == 1 and "control characters" in out and "\x1b" not in out
    assert lists.list_values(ws, "custs") == []


def test_a_control_character_stored_before_is_shown_escaped(ws: Workspace) -> None:
    lists.create_list(ws, "custs", "customer_id")
    with connect(ws) as con:  # what an older payfm stored
        con.execute("INSERT INTO list_values VALUES ('custs', ?)", ("\x1b[31mred",))
        con.execute(
            "INSERT INTO list_audit (list, at, author, action, value) VALUES (?, ?, ?, ?, ?)",
            ("custs", "2026-01-01T00:00:00", "\x1b]0;x\x07", "add", "\x1b[31mred"),
        )
    for command in ("show", "audit"):
        code, out = _run(ws, "lists", command, "custs")
        assert code == 0 and "\x1b" not in out and "\x07" not in out and "\\x1b[31mred" in out


def test_rule_literals_comments_and_notes_refuse_every_control_character(ws: Workspace) -> None:
    for ch in ("\x1b", "\x7f", "\x9b"):
        with pytest.raises(
            RuleError, match=re.escape(f"A string literal must not contain control characters. Got {ch!r}")
        ):
            rulesets.check(ws, f"block if :customer_id: = 'a{ch}'", "tiny")
        with pytest.raises(RuleError, match="control characters, comments included"):
            rulesets.check(ws, f"# a comment {ch}[31m\nblock if :amount: > 1", "tiny")
        with pytest.raises(RuleError, match="note must not contain control characters"):
            rulesets.save(ws, "block if :amount: > 1", note=f"x{ch}", set_name="tiny")
    assert rulesets.check(ws, "block if :amount: > 1\t# a tab\r", "tiny")  # layout is fine


# ---- rules files from Windows editors -------------------------------------------------------------------


def test_a_utf8_bom_is_dropped(ws: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "bom.rules"
    f.write_bytes("\ufeffblock if :email_domain: = 'bücher.de'\r\n".encode())
    assert _run(ws, "rules", "check", str(f)) == (0, f"OK: 1 rule in {f}\n")


@pytest.mark.parametrize(
    ("encoding", "convert"),
    [("utf-16", "-f UTF-16 "), ("utf-16-le", "-f UTF-16LE "), ("utf-16-be", "-f UTF-16BE "), ("utf-32", "")],
)
def test_utf16_is_refused_with_how_to_convert(
    ws: Workspace, tmp_path: Path, encoding: str, convert: str
) -> None:
    f = tmp_path / "wide.rules"
    f.write_bytes("block if :risk_score: >= 80\n".encode(encoding))
    code, out = _run(ws, "rules", "check", str(f))
    assert code == 1 and out.count("\n") == 1 and "Traceback" not in out
    assert f"Rules file '{f}' must be UTF-8 text" in out and "UTF-16" in out and f"iconv {convert}" in out


def test_other_bytes_are_refused_naming_the_place(ws: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "latin1.rules"
    f.write_bytes("block if :amount: > 1\nblock if :email_domain: = 'café.com'\n".encode("latin-1"))
    for command in ("check", "apply"):
        code, out = _run(ws, "rules", command, str(f))
        assert code == 1 and "Traceback" not in out and "codec" not in out
        assert f"Rules file '{f}' must be UTF-8 text. Got byte 0xe9 on line 2, byte 31" in out
        assert "iconv -f WINDOWS-1252 -t UTF-8" in out
