"""The rule syntax an analyst writes from Radar's docs: keywords as words of their own, in any case, `not in`
and the negated string tests, `.5`, and errors that say what a rule name is and where it went wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set
from payfm.rules import ast, rulesets
from payfm.rules.catalog import AttributeCatalog, type_errors
from payfm.rules.compiler import Ruleset, compile_rules
from payfm.rules.db import connect
from payfm.rules.grammar import parse_rule, parse_rules
from payfm.rules.limits import RuleError
from test_rules_parity import sql_decisions

CATALOG = AttributeCatalog.for_feature_set(default_set())
LISTS = {"trusted_domains": "email_domain", "bad_countries": "country"}


def A(name: str) -> ast.Attr:
    return ast.Attr(name)


def L(value: ast.Value) -> ast.Literal:
    return ast.Literal(value)


def _error(text: str, *, saved: bool = False) -> RuleError:
    with pytest.raises(RuleError) as info:
        parse_rules(text, saved=saved)
    return info.value


# ---- 1. a keyword is a word of its own ---------------------------------------------------------------------

GLUED = "keywords are words of their own. Expected"
NAME = "A rule name is ASCII letters, digits, '_' and '-', starting with a letter or '_'. Got"
COLON = "A rule name is followed directly by ':'. Got"


@pytest.mark.parametrize(
    ("text", "column", "detail"),
    [
        ("blockif :amount_usd: > 5", 1, f"Unexpected 'blockif': {GLUED} 'block if'."),
        ("BlockIf :amount_usd: > 5", 1, f"Unexpected 'BlockIf': {GLUED} 'Block If'."),
        ("block if :amount_usd: > 5 andnot :risk_score: > 1", 27, f"Unexpected 'andnot': {GLUED} 'and not'."),
        (
            "block if :amount_usd: > 5or :risk_score: > 1",
            26,
            f"Unexpected 'or' right after '5': {GLUED} '5 or'.",
        ),
        (
            "block if :amount_usd: > 1.5and :risk_score: > 1",
            28,
            f"Unexpected 'and' right after '1.5': {GLUED} '1.5 and'.",
        ),
        ("block if :ip_country: notin ('US')", 23, f"Unexpected 'notin': {GLUED} 'not in'."),
        ("review if :ip_country: isnot missing", 24, f"Unexpected 'isnot': {GLUED} 'is not'."),
        ("review if :ip_country: is notmissing", 27, f"Unexpected 'notmissing': {GLUED} 'not missing'."),
        ("block if trueor false", 10, f"Unexpected 'trueor': {GLUED} 'true or'."),
        # a word that only starts with a keyword, and no keyword follows: the whole word is what is unexpected
        ("block ifx :amount_usd: > 5", 7, "Unexpected 'ifx'. Expected 'if'."),
        (
            "block if :amount_usd: > 5 orange",
            27,
            "Unexpected 'orange'. Expected ')', '*', '+', '-', '/', 'and', 'in', 'is', 'not', 'or', "
            "a comparison (= != < <= > >=), starts_with, ends_with or contains.",
        ),
    ],
)
def test_a_keyword_glued_to_a_word_is_an_error_saying_how_to_write_it(
    text: str, column: int, detail: str
) -> None:
    e = _error("# header\n" + text)
    assert (e.line, e.column, e.detail) == (2, column, detail)
    assert str(e) == f"line 2, column {column}: {detail}"


def test_keywords_may_touch_punctuation_and_well_spaced_rules_are_unchanged() -> None:
    pairs = {
        "block if:amount_usd:>5": "block if :amount_usd: > 5",
        "x:block if(:amount_usd:>5)or:risk_score:>=8": "x: block if (:amount_usd: > 5) or :risk_score: >= 8",
        "allow if:email_domain:in@trusted_domains": "allow if :email_domain: in @trusted_domains",
        "block if :ip_country: in('NG','RU')and not:amount_usd:<1": (
            "block if :ip_country: in ('NG', 'RU') and not :amount_usd: < 1"
        ),
        "review if :email_domain: ends_with'.ru'": "review if :email_domain: ends_with '.ru'",
        "block if 'a'<:ip_country:": "block if 'a' < :ip_country:",
    }
    for tight, spaced in pairs.items():
        assert parse_rule(tight) == parse_rule(spaced), tight
    # a rule name may be an action or a keyword: it ends in ':'
    assert parse_rule("block: block if true") == ast.Rule("block", "block", L(True))
    assert parse_rule("if: review if false").name == "if"


def test_a_version_saved_with_glued_keywords_keeps_loading() -> None:
    """A stored version loads with saved=True (the decision service, a rollback): it read `5and` as `5 and`
    before keywords needed word boundaries, and still does; new text is refused."""
    text = "g: block if :amount_usd: > 5and :risk_score: >= 80\nh: reviewif :ip_country: isnot missing"
    assert parse_rules(text, saved=True) == [
        ast.Rule(
            "g",
            "block",
            ast.And((ast.Compare(">", A("amount_usd"), L(5.0)), ast.Compare(">=", A("risk_score"), L(80.0)))),
        ),
        ast.Rule("h", "review", ast.IsMissing(A("ip_country"), negated=True)),
    ]
    assert _error(text).detail == f"Unexpected 'and' right after '5': {GLUED} '5 and'."


def test_an_active_version_saved_with_glued_keywords_still_serves(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    rulesets.save(ws, "big: review if :amount_usd: > 500", set_name="tiny", author="test", activate=True)
    legacy = "g: block if :amount_usd: > 5and :ip_country: = 'NG'\nbig: review if :amount_usd: > 500\n"
    with connect(ws) as con:  # as an older payfm stored it, and active
        con.execute(
            "INSERT INTO rulesets VALUES (2, '2026-01-01T00:00:00', 'ana', 'x', ?, 'old', 'tiny')", (legacy,)
        )
        con.execute("INSERT OR REPLACE INTO active_ruleset (id, version) VALUES (1, 2)")
    live = rulesets.load_active(ws)
    assert live is not None and [r.name for r in live.rules] == ["g", "big"]
    assert live.decide({"amount_usd": 6.0, "ip_country": "NG"}).rule == "g"
    assert live.decide({"amount_usd": 600.0, "ip_country": "US"}).rule == "big"
    with pytest.raises(RuleError, match=r"line 1, column 29: Unexpected 'and' right after '5'"):
        rulesets.save(ws, legacy, set_name="tiny")  # saved again as new text: refused


def test_a_word_starting_with_a_keyword_not_taken_there_is_named_whole() -> None:
    e = _error("block if :amount_usd: > info")  # the word, not its `in` (keywords are words of their own)
    assert (e.column, e.detail) == (
        25,
        "Unexpected 'info'. Expected '(', '-', a 'string', a number, an attribute like :amount_usd:, "
        "true or false.",
    )
    assert _error("block if :ip_country: = café").detail.startswith("Unexpected 'café'. Expected '(',")


# ---- 2. keywords in any case -------------------------------------------------------------------------------


def test_keywords_are_case_insensitive_as_radar_writes_them() -> None:
    cases = {
        "Block if :card_country: != :ip_country:": "block if :card_country: != :ip_country:",
        "BLOCK IF :amount_usd: > 5 AND :risk_score: >= 80 OR NOT :ip_country: IS MISSING": (
            "block if :amount_usd: > 5 and :risk_score: >= 80 or not :ip_country: is missing"
        ),
        "Request_3DS If :ip_country: In ('NG') And :card_country: Is Not Missing": (
            "request_3ds if :ip_country: in ('NG') and :card_country: is not missing"
        ),
        "Allow if :email_domain: IN @trusted_domains": "allow if :email_domain: in @trusted_domains",
        "Review if :email_domain: ENDS_WITH '.ru' or :ip_country: Starts_With 'N'": (
            "review if :email_domain: ends_with '.ru' or :ip_country: starts_with 'N'"
        ),
        "review if (:channel: Contains 'com') = TRUE and (FALSE or True)": (
            "review if (:channel: contains 'com') = true and (false or true)"
        ),
    }
    for upper, lower in cases.items():
        rule = parse_rule(upper)
        assert rule == parse_rule(lower), upper
        assert rule.action == parse_rule(lower).action and rule.name == parse_rule(lower).name
        assert type_errors([rule], CATALOG, LISTS) == []
    assert parse_rule("Block if true") == ast.Rule("block_line_1", "block", L(True))
    assert parse_rules("High: REVIEW if true")[0] == ast.Rule("High", "review", L(True))  # names keep case


def test_attributes_lists_and_strings_keep_their_case() -> None:
    rule = parse_rule("Block if :Amount_USD: > 5 AND :ip_country: = 'NG'")
    errors = type_errors([rule], CATALOG, LISTS)
    assert [(e.column, e.detail) for e in errors] == [
        (
            10,
            "Unknown attribute ':Amount_USD:'. Did you mean ':amount_usd:'?",
        )  # (':amount' is in minor units)
    ]
    assert parse_rule("allow if :email_domain: IN @Trusted").condition == ast.InList(
        A("email_domain"), "Trusted"
    )
    assert parse_rule("block if :ip_country: = 'Ng'").condition == ast.Compare("=", A("ip_country"), L("Ng"))


def test_a_capitalised_rule_decides_as_the_lower_case_one() -> None:
    rs = compile_rules(parse_rules("Block if :ip_country: = 'NG' AND :amount_usd: > 5"))
    assert rs.decide({"ip_country": "NG", "amount_usd": 6.0}).action == "block"
    assert rs.decide({"ip_country": "NG", "amount_usd": 4.0}).action is None


# ---- 3. not in, not starts_with / ends_with / contains -----------------------------------------------------


def test_not_in_and_negated_string_tests_parse_to_not_of_the_test() -> None:
    cases = {
        "block if :ip_country: not in ('US')": ast.Not(ast.In(A("ip_country"), ("US",))),
        "block if :ip_country: NOT IN ('US', 'CA') and :amount_usd: > 5": ast.And(
            (ast.Not(ast.In(A("ip_country"), ("US", "CA"))), ast.Compare(">", A("amount_usd"), L(5.0)))
        ),
        "allow if :email_domain: not in @trusted_domains": ast.Not(
            ast.InList(A("email_domain"), "trusted_domains")
        ),
        "review if :email_domain: not ends_with '.ru'": ast.Not(
            ast.StrOp("ends_with", A("email_domain"), L(".ru"))
        ),
        "review if :email_domain: not starts_with 'mail'": ast.Not(
            ast.StrOp("starts_with", A("email_domain"), L("mail"))
        ),
        "review if :channel: not contains 'com'": ast.Not(ast.StrOp("contains", A("channel"), L("com"))),
        "block if not :ip_country: not in ('US')": ast.Not(ast.Not(ast.In(A("ip_country"), ("US",)))),
        "block if :amount_usd: * 2 not in (1, -2)": ast.Not(
            ast.In(ast.Arith("*", A("amount_usd"), L(2.0)), (1.0, -2.0))
        ),
    }
    for text, expected in cases.items():
        rule = parse_rule(text)
        assert rule.condition == expected, text
        assert type_errors([rule], CATALOG, LISTS) == [], text
    rule = parse_rule("block if :ip_country: not in ('US')")
    assert isinstance(rule.condition, ast.Not) and rule.condition.col == 23  # the `not`
    assert rule.condition.operand.col == 10  # the test


def test_not_in_is_type_checked_as_in() -> None:
    (e,) = type_errors(parse_rules("inl: block if :ip_country: not in ('NG', 5)"), CATALOG, LISTS)
    assert (e.column, e.detail) == (  # (the column of the value: it was the attribute's, 15)
        42,
        "Every value of `in (...)` must be a string like :ip_country:. Got 5.",
    )
    (e,) = type_errors(parse_rules("block if :ip_country: not in @trusted_domains"), CATALOG, LISTS)
    assert "must be of type country. Got '@trusted_domains'" in e.detail


def test_not_in_with_an_unquoted_nan_says_a_quoted_string_was_expected() -> None:
    e = _error("block if :ip_country: not in ('US', nan)")
    assert (e.column, e.detail) == (
        37,
        "Expected a quoted string: the values of `in (...)` are quoted strings, finite numbers or "
        "true/false, and :ip_country: holds strings. Got nan without quotes, which is not a value: write "
        "'nan' for the text; a missing value is tested with `is missing`.",
    )


def test_not_after_an_operand_takes_only_in_and_the_string_tests() -> None:
    e = _error("block if :amount_usd: not > 5")
    assert (e.column, e.detail) == (27, "Unexpected '>'. Expected 'in', starts_with, ends_with or contains.")


def _sql(rs: Ruleset, charges: list[dict[str, object]]) -> list[object]:
    """The rule the backtest's SQL decides each charge with (the parity test's table)."""
    return [rule for _, rule in sql_decisions(rs, charges)[0]]


def test_not_in_decides_as_not_of_in_a_missing_value_matches_neither() -> None:
    """`x not in (...)` is `not (x in (...))`: a missing x is unknown, so neither matches (three-valued)."""
    text = (
        "a: block if :ip_country: not in ('US', 'CA')\n"
        "b: review if not (:ip_country: in ('US', 'CA'))\n"
        "c: review if :email_domain: not in @trusted\n"
        "d: review if :email_domain: not ends_with '.ru'"
    )
    rs = compile_rules(
        parse_rules(text),
        {"trusted": frozenset({"good.com"})},
        {"ip_country": "string", "email_domain": "string"},
    )
    charges: list[dict[str, object]] = [
        {"ip_country": "FR", "email_domain": "good.com"},
        {"ip_country": "US", "email_domain": "evil.com"},
        {"ip_country": None, "email_domain": "good.com"},
        {"ip_country": None, "email_domain": None},
    ]
    python = [rs.decide(c).rule for c in charges]
    assert python == ["a", "c", "d", None]  # `a`, `b` match no charge without an IP country
    assert _sql(rs, charges) == python
    assert [sorted(rs.matches(c)) for c in charges] == [["a", "b", "d"], ["c", "d"], ["d"], []]


# ---- 4. numbers with a leading dot -------------------------------------------------------------------------


def test_a_number_may_start_with_its_decimal_point() -> None:
    assert parse_rule("block if :amount_usd: > .5").condition == ast.Compare(">", A("amount_usd"), L(0.5))
    assert parse_rule("block if :amount_usd: > -.25 * .5e2").condition == ast.Compare(
        ">", A("amount_usd"), ast.Arith("*", L(-0.25), L(50.0))
    )
    assert parse_rule("block if :amount_usd: in (.5, -.5)").condition == ast.In(A("amount_usd"), (0.5, -0.5))
    e = _error("block if :amount_usd: > 1..5")  # `1.` is no number: `1`, then `..5`
    assert e.column == 26 and e.detail.startswith("Unexpected '.'. Expected ')', '*', '+', '-', '/', 'and',")
    e = _error("block if :amount_usd: > .")
    assert e.column == 25 and e.detail.startswith("Unexpected '.'. Expected '(', '-', a 'string', a number,")


# ---- 5. and 6. what a rule name is -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column", "detail"),
    [
        ("b3 : review if :amount_usd: > 1", 3, f"{COLON} a space between 'b3' and ':': write 'b3:'."),
        ("  b3\t: Review if :amount_usd: > 1", 5, f"{COLON} whitespace between 'b3' and ':': write 'b3:'."),
        (
            "block : review if :amount_usd: > 1",
            6,
            f"{COLON} a space between 'block' and ':': write 'block:'.",
        ),
        ("règle_é: review if :amount_usd: > 1", 2, f"{NAME} 'è' in 'règle_é'."),
        ("high.score: block if true", 5, f"{NAME} '.' in 'high.score'."),
        ("3ds: block if true", 1, f"{NAME} '3ds', which starts with '3'."),
        ("-x: block if true", 1, f"{NAME} '-x', which starts with '-'."),
    ],
)
def test_a_rule_name_error_says_what_a_name_is_at_the_offending_character(
    text: str, column: int, detail: str
) -> None:
    e = _error("# a\n# b\n" + text)
    assert (e.line, e.column, e.detail) == (3, column, detail)


def test_valid_names_and_a_missing_if_keep_their_errors() -> None:
    assert [r.name for r in parse_rules("a-b_3: block if true\n_x: review if true")] == ["a-b_3", "_x"]
    e = _error("block :amount_usd: > 1")  # an action, then an attribute: `if` is missing, not a name's colon
    assert (e.column, e.detail) == (7, "Unexpected ':amount_usd:'. Expected 'if'.")
    e = _error("deny if :amount_usd: > 1")
    assert (
        e.detail == "Unexpected 'deny'. Expected a rule name, an action (request_3ds, allow, block, review)."
    )


# ---- the command line --------------------------------------------------------------------------------------


def test_rules_check_reports_the_hints_with_file_line_and_column(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    runner = CliRunner()
    good = tmp_path / "good.rules"
    good.write_text(
        "Block if :card_country: != :ip_country: AND :amount_usd: > .5\n"
        "geo: review if :ip_country: not in ('US', 'CA')\n"
    )
    result = runner.invoke(cli, ["-w", str(ws.root), "rules", "check", str(good)])
    assert result.exit_code == 0 and "OK: 2 rules" in result.output, result.output
    for text, where in (
        (
            "blockif :amount_usd: > 5\n",
            "line 1, column 1: Unexpected 'blockif': keywords are words of their own.",
        ),
        (
            "# a\n# b\nb3 : review if :amount_usd: > 1\n",
            "line 3, column 3: A rule name is followed directly by ':'.",
        ),
        ("# a\n# b\nrègle_é: review if :amount_usd: > 1\n", "line 3, column 2: A rule name is ASCII letters"),
    ):
        bad = tmp_path / "bad.rules"
        bad.write_text(text)
        result = runner.invoke(cli, ["-w", str(ws.root), "rules", "check", str(bad)])
        assert result.exit_code == 1 and f"bad.rules: {where}" in result.output, result.output
        assert "Traceback" not in result.output


TOKENS = [
    "Block", "IF", "if", "AND", "Or", "NOT", "not", "In", "IS", "Missing", "True", "CONTAINS", "review",
    ":amount_usd:", ":ip_country:", "@l", "(", ")", "'US'", ".5", "5", "1.5", "=", ">", ",", "-", ":", " ",
    " ", "b3", "é", "#", "notin", "blockif", "n:",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=25).map("".join), st.booleans())
def test_glued_and_capitalised_text_parses_or_raises_rule_error(text: str, saved: bool) -> None:
    """Tokens glued with no space between: every hint above runs on it, and never fails otherwise."""
    try:
        rules = parse_rules(text, saved=saved)
        type_errors(rules, CATALOG, LISTS)
    except RuleError as e:
        assert str(e) and e.line == 1


# ---- slips of other languages, documents and people (a fraud analyst's audit) ------------------------------


@pytest.mark.parametrize(
    ("text", "column", "hint"),
    [
        ("a: block if :amount_usd: => 1000", 27, "Comparisons are written '>=', not '=>'."),
        ("a: block if :amount_usd: =< 5", 27, "Comparisons are written '<=', not '=<'."),
        ("a: block if :amount_usd: > 1 && :amount_usd: < 9", 30, "Write 'and' for '&&'."),
        ("a: block if :amount_usd: > 1 || :amount_usd: < 9", 30, "Write 'or' for '||'."),
        ("a: block if !(:amount_usd: > 5)", 13, "Write 'not' for '!'."),
        (
            "a: block if :ip_country: = \u2018NG\u2019",
            28,
            "is a typographic quote (from a document or a chat)",
        ),
        ("a: block if :ip_country: = \u201cNG\u201d", 28, "quote strings with ' or \"."),
        ("a: block if :amount_usd: > 1,000", 29, "Numbers are written without separators: 1000, not 1,000."),
        ("a: block if :amount_usd: > 10k", 30, "Numbers are written in full: 10000, not 10k."),
        ("a: block if :amount_usd: > 2M", 29, "Numbers are written in full: 2000000, not 2M."),
        ("a: block if :amount_usd: > 1.5k", 31, "Numbers are written in full: 1500, not 1.5k."),
        ("a: block if :amount_usd: > 2.5M", 31, "Numbers are written in full: 2500000, not 2.5M."),
        (
            "a: block if :amount_usd: > 5 or :card.count_charges_1h >= 5",
            33,
            "The attribute ':card.count_charges_1h' has no closing colon: write ':card.count_charges_1h:'.",
        ),
        ("velocity rule: block if :amount_usd: > 5", 1, "A rule's name is one word: write 'velocity_rule:'."),
    ],
)
def test_a_common_slip_gets_its_fix_after_the_parsers_message(text: str, column: int, hint: str) -> None:
    e = _error(text)
    assert (e.line, e.column) == (1, column)
    assert e.detail.startswith("Unexpected ") and ". Expected " in e.detail  # the parser's message first
    assert e.detail.endswith(hint) or hint in e.detail, e.detail


@pytest.mark.parametrize(
    "text",
    [
        "a: block if :amount_usd: > 5 and :ip_country: = 'NG' or",  # ended early: nothing to add
        "a: block if :ip_country: in ('NG', 'GH',)",
        "a: block if :amount_usd: > 1.000.5",
        "a: block if :amount_usd: > 1, 2",
    ],
)
def test_no_hint_where_no_slip_is_seen(text: str) -> None:
    e = _error(text)
    for hint in ("Comparisons are written", "Write '", "typographic", "Numbers are written", "closing colon"):
        assert hint not in e.detail, e.detail
    assert "A rule's name is one word" not in e.detail


@pytest.mark.parametrize(
    ("name", "said"), [("decline_code", "the issuer's decline code"), ("outcome", "the charge's outcome")]
)
def test_an_outcome_field_in_a_rule_is_said_to_come_after_the_decision(name: str, said: str) -> None:
    """Not 'Did you mean :ip.decline_rate_1d:?': the field exists, but no rule can read it where rules run."""
    errors = type_errors(parse_rules(f"a: block if :{name}: = 'x'"), CATALOG, {})
    [e] = errors
    assert f"Unknown attribute ':{name}:'. ':{name}:' is {said}" in str(e)
    assert "known only after the decision" in str(e) and "Did you mean" not in str(e)
