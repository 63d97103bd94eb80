"""Rules, from an analyst's walkthrough: "did you mean" reads windows as payfm writes them (`_24h` is `_1d`)
and knows Stripe Radar's names; the slips of other languages (`is null`, `like`, `between`, `= US`,
`> $1000`) get their fix; a ruleset sending most charges to review is refused as a mass block is; a renamed
rule is said renamed, not turned off; a backtest of the score without a production model says how to get
one."""

from __future__ import annotations

from pathlib import Path

import pytest

from factories import charges
from payfm.events.workspace import Workspace
from payfm.features.catalog import feature_set
from payfm.rules import rulesets
from payfm.rules.catalog import RADAR_NAMES, AttributeCatalog, same_window
from payfm.rules.grammar import parse_rule
from payfm.rules.limits import RuleError
from test_lists_cli import run

DEFAULT = AttributeCatalog.for_feature_set(feature_set("default"))


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("card.count_charges_24h", "card.count_charges_1d"),
        ("card.count_charges_1440m", "card.count_charges_1d"),
        ("ip.count_charges_60m", "ip.count_charges_1h"),
        ("card.sum_amount_usd_168h", "card.sum_amount_usd_7d"),
        ("email.count_charges_1w", "email.count_charges_7d"),
    ],
)
def test_did_you_mean_reads_a_window_as_payfm_writes_it(written: str, meant: str) -> None:
    assert same_window(written) == meant
    assert f"Did you mean ':{meant}:'?" in DEFAULT.suggest(written)  # (`_24h` suggested `_1h` before)


def test_radar_names_point_at_payfm_attributes_of_the_same_meaning() -> None:
    for radar, (ours, _note) in RADAR_NAMES.items():
        assert ours in DEFAULT.types, radar  # only attributes that exist
        assert radar not in DEFAULT.types  # (a name payfm shares needs no alias)
    hourly = DEFAULT.suggest("total_charges_per_card_number_hourly")
    assert "Stripe Radar's name: payfm's is ':card.count_charges_1h:'" in hourly
    assert "earlier charges only, never the one being decided" in hourly  # Radar's may count it
    assert "':card.count_charges_1d:'" in DEFAULT.suggest("total_charges_per_card_number_daily")
    assert "':ip.count_declined_1h:'" in DEFAULT.suggest("declined_charges_per_ip_address_hourly")
    assert "payfm's is ':amount_usd:'" in DEFAULT.suggest("amount_in_usd")
    assert "payfm's is ':billing_country:'" in DEFAULT.suggest("Billing_Address_Country")
    assert (
        DEFAULT.types["billing_country"] == "string" and DEFAULT.types["card.count_declined_7d"] == "number"
    )
    tiny = AttributeCatalog.for_feature_set(feature_set("tiny"))
    assert "which feature set 'tiny' does not have" in tiny.suggest("total_charges_per_email_weekly")


def test_rules_check_says_the_radar_name(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    path = tmp_path / "radar.rules"
    path.write_text("v: block if :total_charges_per_card_number_daily: > 5\n")
    code, out = run(ws, "rules", "check", str(path))
    assert code == 1 and "payfm's is ':card.count_charges_1d:'" in out, out


def _hint(text: str) -> str:
    with pytest.raises(RuleError) as e:
        parse_rule(text)
    return e.value.detail


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("block if :ip_country: is null", "Write 'is missing' for 'is null'."),
        ("block if :ip_country: IS NOT NULL", "Write 'is not missing' for 'is not null'."),
        ("block if :ip_country: = null", "A missing value is tested with 'is missing', not = null."),
        ("block if :email_domain: like '%.ru'", "There is no 'like': write starts_with 'abc' for 'abc%'"),
        ("block if :email_domain: not like 'x%'", "ends_with 'abc' for '%abc', contains 'abc' for '%abc%'."),
        (
            "review if :amount_usd: between 500 and 1000",
            "There is no 'between': write two comparisons, :amount_usd: >= 500 and :amount_usd: <= 1000.",
        ),
        ("block if :ip_country: = US", "Strings are quoted: write 'US'."),
        ("block if :card_brand: != visa and :amount_usd: > 5", "Strings are quoted: write 'visa'."),
        ("block if :ip_country: in ('RU', NG)", "Strings are quoted: write 'NG'."),
        ("block if :ip_country: = card_country", "Attributes are written between colons: :card_country:."),
        (
            "block if :amount_usd: > $1000",
            "sign (:amount_usd: is in dollars): 1000, not $1000.",
        ),
        ("block if :amount_usd: >= $1,500.50", "1500.50, not $1,500.50."),
    ],
)
def test_a_slip_of_another_language_gets_its_fix(text: str, hint: str) -> None:
    assert hint in _hint(text)


def test_a_word_compared_with_a_number_gets_no_quotes_hint() -> None:
    assert "quoted" not in _hint("block if :amount_usd: > info")
    assert "quoted" not in _hint("block if :amount_usd: = info")


def _world(tmp_path: Path) -> Workspace:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream([("charges", charges(40))], "replace")  # 40 charges over 11.7 days, $10.00 to $10.39
    return ws


def test_a_ruleset_sending_most_charges_to_review_is_refused_unless_on_purpose(tmp_path: Path) -> None:
    """`oops: review if :amount_usd: >= 0` was saved and made active, every charge sent to the review team:
    the mass-block guard covered block rules only."""
    ws = _world(tmp_path)
    rulesets.save(ws, "big: review if :amount_usd: > 5000\n", activate=True, set_name="tiny", author="ana")
    oops = tmp_path / "oops.rules"
    oops.write_text("oops: review if :amount_usd: >= 0\n")
    window = ("--set", "tiny", "--horizon-days", "1")
    code, out = run(ws, "rules", "apply", str(oops), *window)
    assert code == 1, out
    assert (
        f"Ruleset '{oops}' would send to review 40 of the window's 40 charges (100.0%; by 'oops' 40 (" in out
    )
    assert "a day to review)), more than the active ruleset (0): nothing was saved or activated" in out
    assert "--allow-mass-block" in out and rulesets.active(ws).version == 1  # type: ignore[union-attr]
    code, out = run(ws, "rules", "apply", str(oops), *window, "--allow-mass-block")
    assert code == 0 and rulesets.active(ws).version == 2, out  # type: ignore[union-attr]
    # a stored version made active again is guarded too; the emergency undo is not
    rulesets.activate(ws, 1, author="ana")
    code, out = run(ws, "rules", "activate", "2", "--horizon-days", "1")
    assert code == 1 and "Ruleset v2 would send to review 40 of the window's 40 charges" in out, out
    # fewer than the active one sends (a fix: 50% after 100%) goes through
    rulesets.activate(ws, 2, author="ana")
    half = tmp_path / "half.rules"
    half.write_text("half: review if :amount_usd: >= 10.20\n")
    code, out = run(ws, "rules", "apply", str(half), *window)
    assert code == 0 and "Saved and activated ruleset v3" in out, out


def test_a_renamed_rule_is_said_renamed_not_turned_off(tmp_path: Path) -> None:
    ws = _world(tmp_path)
    rulesets.save(
        ws,
        "big: review if :amount_usd: > 5000\nvel: block if :amount_usd: > 9000\n",
        activate=True,
        set_name="tiny",
        author="ana",
    )
    path = tmp_path / "renamed.rules"
    path.write_text("large: review if :amount_usd: > 5000\n")
    code, out = run(ws, "rules", "apply", str(path), "--set", "tiny", "--horizon-days", "1")
    assert code == 0, out
    assert "leaves out 1 rule of the active ruleset v1, which it replaces whole: vel (turned off)" in out
    assert "big" not in out.split("(turned off)")[0].split("whole:")[-1]  # same action and condition
    assert (
        "renames 1 rule of the active ruleset v1 (the same action and condition, still on): big -> large"
        in out
    )


def test_a_score_rule_without_a_production_model_says_how_to_get_one(tmp_path: Path) -> None:
    ws = _world(tmp_path)
    rule = ("--rule", "hi: block if :risk_score: >= 80")
    code, out = run(ws, "rules", "backtest", *rule, "--horizon-days", "1")
    assert code == 1 and "no scores were given" in out, out
    assert "No model is in production to score the window: train one with `payfm train`" in out
    assert "`payfm models promote REF`" in out
    # with --scores or --model asked, the hint is not the point
    code, out = run(ws, "rules", "backtest", *rule, "--model", "nope")
    assert code == 1 and "No model is in production" not in out, out
