"""Trojan Source (CVE-2021-42574) in rules: invisible formatting characters (Unicode Cf: bidi controls, the
zero-width characters, U+FEFF...) are refused in new rule text, string literals and comments included, and in
a ruleset's note and author, naming line, column and code point, never the text; a version saved before the
check keeps loading and serving, and `rules show` / `rules history` print it escaped. A `--rule` argument that
is not UTF-8 (lone surrogates) is refused in one line too."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from factories import usd_consistent
from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.rules.db import connect
from payfm.rules.grammar import parse_rule, parse_rules
from payfm.rules.limits import RuleError
from payfm.serving.charges import EXAMPLE_FIELDS
from payfm.serving.scorer import Scorer

# Bidi embeddings and overrides, isolates, zero-width characters, the word joiner, a BOM, a soft hyphen.
INVISIBLE = [
    "\u202a",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2069",
    "\u200b",
    "\u2060",
    "\ufeff",
    "\u00ad",
    "\u2028",  # a line separator: editors break the line there, the parser reads on
    "\u2029",
]
RLO, LRI, PDI = "\u202e", "\u2066", "\u2069"


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "ws", create=True)


def _run(ws: Workspace, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-w", str(ws.root), *args])
    return result.exit_code, result.output


def _named(ch: str) -> str:
    return f"Got U+{ord(ch):04X} ({unicodedata.name(ch)})."


@pytest.mark.parametrize("ch", INVISIBLE)
@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("ok: review if :amount_usd: > 5\nvip: allow if :customer_id: = 'cus_secret{ch}gpj'", 2),  # literal
        ("vip: allow if :customer_id: in ('cus_1', 'secret{ch}gpj')", 1),  # a value of in (...)
        ("ok: review if :amount_usd: > 5  # secret{ch}gpj", 1),  # a comment after a rule
        ("ok: review if :amount_usd: > 5\n\n# secret{ch}gpj", 3),  # a comment line
        ("ok: review if {ch}:amount_usd: > 5", 1),  # between tokens: refused, not a syntax error
    ],
)
def test_new_rule_text_refuses_an_invisible_character_naming_where_and_which(
    ch: str, text: str, line: int
) -> None:
    column = text.split("\n")[line - 1].index("{ch}") + 1
    with pytest.raises(RuleError) as e:
        rulesets.check(None, text.format(ch=ch), "tiny")
    assert (e.value.line, e.value.column) == (line, column)
    assert "invisible formatting characters" in e.value.detail and e.value.detail.endswith(_named(ch))
    message = str(e.value)
    assert ch not in message and "secret" not in message and "gpj" not in message  # never the text


def test_the_trojan_source_rule_is_refused() -> None:
    """An allow rule that reads as commented out: RLO, LRI ... PDI reorder what editors and terminals show."""
    text = f"allow if :customer_id: = 'cus_1{RLO} {LRI}# admins only{PDI} {LRI}'"
    with pytest.raises(RuleError, match=r"U\+202E \(RIGHT-TO-LEFT OVERRIDE\)") as e:
        parse_rule(text)
    assert e.value.column == text.index(RLO) + 1
    with pytest.raises(RuleError, match=r"U\+202E"):
        parse_rules(f"# {RLO} reviewed\nallow if :amount_usd: > 5")


def test_a_candidate_rule_is_refused_where_it_was_written(ws: Workspace) -> None:
    """`backtest --rule`: the error's line and column are those of the text as given, line breaks included."""
    with pytest.raises(RuleError) as e:
        rulesets.with_candidate(ws, "block if :ip_country:\n  = 'U\u200bS'", "tiny")
    assert (e.value.line, e.value.column) == (2, 7) and e.value.detail.endswith(_named("\u200b"))


@pytest.mark.parametrize("what", ["note", "author"])
def test_a_note_or_author_with_an_invisible_character_is_refused(ws: Workspace, what: str) -> None:
    meta = {"note": "ok", "author": "ana", what: f"approved{RLO}gpj"}
    with pytest.raises(RuleError) as e:
        rulesets.save(ws, "block if :amount_usd: > 5", set_name="tiny", **meta)
    assert str(e.value) == (
        f"A ruleset's {what} must not contain invisible formatting characters (Unicode Cf: bidi controls, "
        "zero-width characters; line and paragraph separators; bytes that are not UTF-8). Got U+202E "
        "(RIGHT-TO-LEFT OVERRIDE) at character 9."
    )
    assert rulesets.history(ws) == []


@pytest.mark.parametrize(
    ("note", "got"),
    [
        (f"approved{RLO}gpj", "U+202E (RIGHT-TO-LEFT OVERRIDE) at character 9"),
        ("approved\udcff", "U+DCFF (a lone surrogate: a byte that is not UTF-8) at character 9"),  # not UTF-8
        ("approved\u2028gpj", "U+2028 (LINE SEPARATOR) at character 9"),
    ],
)
def test_apply_refuses_a_bad_note_before_the_backtest(
    ws: Workspace, tmp_path: Path, note: str, got: str
) -> None:
    """`rules apply --note`: checked before the backtest runs and prints its report (it may take minutes),
    not once the report is out; a lone surrogate (bytes that are not UTF-8) is refused, not sent to sqlite."""
    f = tmp_path / "ok.rules"
    f.write_text("ok: review if :amount_usd: > 5\n")
    code, out = _run(ws, "rules", "apply", str(f), "--note", note, "--set", "tiny")
    assert code == 1 and out.count("\n") == 1 and out.startswith("Error: A ruleset's note must not contain")
    assert out.rstrip().endswith(f"Got {got}.") and "gpj" not in out and "Traceback" not in out
    assert rulesets.history(ws) == []


def test_joiners_are_spelling_in_rule_text_as_in_ids(ws: Workspace) -> None:
    """The zero-width non-joiner and joiner spell Persian, Indic and emoji names, which the event log takes
    as ids: a rule must be able to name them. Between tokens the parser refuses one, naming it escaped."""
    merchant = "Family \U0001f468\u200d\U0001f469 Store"
    text = f"fam: block if :merchant_id: = '{merchant}'  # \u0641\u0631\u0648\u0634\u200c\u06af\u0627\u0647\n"
    v = rulesets.save(ws, text, set_name="tiny", author="ana", note="\u0915\u094d\u200d\u0937", activate=True)
    live = rulesets.load_active(ws)
    assert rulesets.active(ws) == v and live is not None
    assert live.decide({"merchant_id": merchant}).rule == "fam"
    assert live.decide({"merchant_id": merchant.replace("\u200d", "")}).rule is None  # another id
    code, out = _run(ws, "rules", "show")
    assert code == 0 and merchant in out  # printed as written, not escaped
    with pytest.raises(RuleError) as e:
        parse_rule("ok: review if \u200d:amount_usd: > 5")
    assert e.value.column == 15 and e.value.detail.startswith("Unexpected '\\u200d'.")


def test_text_without_them_is_unchanged(ws: Workspace) -> None:
    text = "# Zürich, 東京 and 'quotes'\nok: review if :email_domain: = 'bücher.de'\t# a tab\r\n"
    v = rulesets.save(ws, text, set_name="tiny", author="ana", note="ünïcode\tfine", activate=True)
    assert rulesets.active(ws) == v


LEGACY = (
    f"# reviewed by {RLO}ana\nvip: allow if :customer_id: = 'cus_1{RLO}'\nbig: review if :amount_usd: > 500\n"
)


def _store_legacy(ws: Workspace) -> None:
    """A version as an older payfm stored it, before invisible characters were refused, and active."""
    rulesets.save(ws, "big: review if :amount_usd: > 500", set_name="tiny", author="test", activate=True)
    with connect(ws) as con:
        con.execute(
            "INSERT INTO rulesets VALUES (2, '2026-01-01T00:00:00', ?, 'x', ?, ?, 'tiny')",
            (f"ana{LRI}", LEGACY, f"vip{RLO}note"),
        )
        con.execute("INSERT OR REPLACE INTO active_ruleset (id, version) VALUES (1, 2)")


def _charge(i: int, **kw: Any) -> dict[str, Any]:
    c = {"charge_id": f"ch_{i}", "created": f"2026-03-01T12:00:{i:02d}+00:00", **EXAMPLE_FIELDS, **kw}
    return usd_consistent(c, kw)


def test_a_version_saved_before_the_check_still_loads_and_serves(ws: Workspace) -> None:
    _store_legacy(ws)
    live = rulesets.load_active(ws)
    assert live is not None and [r.name for r in live.rules] == ["vip", "big"]
    assert live.decide({"customer_id": f"cus_1{RLO}", "amount_usd": 900.0}).rule == "vip"
    assert live.decide({"customer_id": "cus_1", "amount_usd": 900.0}).rule == "big"
    scorer = Scorer.open(ws)  # the decision service starts on it
    try:
        assert scorer.score(_charge(1, amount_usd=90_000)).rule == "big"
    finally:
        scorer.close()
    # `backtest --rule` adds a candidate to it; the candidate alone gets the new checks
    assert [r.name for r in rulesets.with_candidate(ws, "review if :amount_usd: > 5", "tiny").rules] == [
        "vip",
        "big",
        "candidate",
    ]
    with pytest.raises(RuleError, match=r"line 1, column 15: Rule text must not contain invisible"):
        rulesets.save(ws, LEGACY, set_name="tiny")  # saved again as new text: refused


def test_show_and_history_print_a_saved_version_escaped(ws: Workspace) -> None:
    _store_legacy(ws)
    code, out = _run(ws, "rules", "show")
    assert code == 0 and RLO not in out and LRI not in out
    assert "'cus_1\\u202e'" in out and "# reviewed by \\u202eana\n" in out and "vip\\u202enote" in out
    code, out = _run(ws, "rules", "history")
    assert code == 0 and RLO not in out and LRI not in out and "ana\\u2066" in out


def test_every_command_taking_rule_text_refuses_in_one_line(ws: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "trojan.rules"
    f.write_text(f"ok: review if :amount_usd: > 5\nvip: allow if :customer_id: = 'cus_1{RLO}gpj'\n")
    expected = f"Error: {f}: line 2, column 37: Rule text must not contain invisible formatting characters"
    for args in (("check", str(f)), ("backtest", str(f)), ("apply", str(f), "--note", "n")):
        code, out = _run(ws, "rules", *args, "--set", "tiny")
        assert code == 1 and out.startswith(expected) and out.count("\n") == 1, (args, out)
        assert "U+202E (RIGHT-TO-LEFT OVERRIDE)" in out and RLO not in out and "gpj" not in out
        assert "Traceback" not in out
    code, out = _run(ws, "rules", "backtest", "--rule", f"block if :customer_id: = 'x{RLO}'", "--set", "tiny")
    assert code == 1 and out.startswith("Error: line 1, column 28: Rule text must not contain invisible")
    assert out.count("\n") == 1 and RLO not in out and "Traceback" not in out
    assert rulesets.history(ws) == []


def test_a_rule_argument_that_is_not_utf8_is_refused_in_one_line(ws: Workspace) -> None:
    """A shell in another encoding passes `--rule` bytes that are not UTF-8 as lone surrogates (U+DC80 to
    U+DCFF): DuckDB refused the backtest's SQL with a traceback."""
    rule = "block if :customer_id: = 'x\udcff'"
    code, out = _run(ws, "rules", "backtest", "--rule", rule, "--set", "tiny")
    assert code == 1 and out.count("\n") == 1 and "Traceback" not in out
    assert out.startswith(
        "Error: line 1, column 28: Rule text must be UTF-8 text. Got a lone surrogate U+DCFF (byte 0xff)"
    )
    with pytest.raises(RuleError, match="lone surrogate"):  # saved versions never held one: refused always
        parse_rules(rule, saved=True)
