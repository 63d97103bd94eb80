"""Reason texts give the typical value in the value's own unit (dollars, seconds), and an outcome sum reads
as the amounts refunded (an outcome's amount is its own)."""

from __future__ import annotations

from payfm.features.catalog import default_set
from payfm.training.explain import Reason, templates

T = templates(default_set())


def text(name: str, value: float, typical: float) -> str:
    return Reason(name, value, typical, 1.0, T[name]).text


def test_typical_values_carry_the_values_unit() -> None:
    assert text("merchant.sum_amount_usd_1h", 0.0, 138.0) == (
        "$0 of charges on this merchant in the last hour; typical: $138"
    )
    assert text("card.since_first", 240.0, 718_538.0) == (
        "240 s since the first charge of this card; typical: 718,538 s"
    )
    assert text("card.min_amount_usd_all", 1.0, 17.7) == (
        "min amount of this card over all time: $1; typical: $17.7"
    )
    assert text("amount_usd", 950.0, 42.5) == "amount $950; typical: $42.5"
    assert text("card.count_charges_1h", 9.0, 0.3) == "9 charges on this card in the last hour; typical: 0.3"


def test_a_refund_sum_reads_as_the_amounts_refunded() -> None:
    assert text("merchant.sum_amount_usd_refunds_7d", 54.18, 0.0) == (
        "$54.2 of refunds on this merchant in the last 7 days; typical: $0"
    )


def test_a_missing_value_of_an_entity_a_charge_may_lack_says_so() -> None:
    """A guest checkout has no customer: its customer features are missing not for want of history alone
    (the reason said only "no history yet"); a card's are, as every charge names its card."""
    guest = Reason("customer.count_charges_1d", None, 2.0, 0.4).text
    said = "(no history yet, or the charge has no customer); typical: 2"
    assert guest == f"no value for customer.count_charges_1d {said}"
    assert "or the charge has no ip address" in Reason("card_ip.count_charges_1d", None, 1.0, 0.1).text
    card = Reason("card.since_last_s", None, 1.0, 0.1).text
    assert card.startswith("no value for card.since_last_s (no history yet);")


def test_a_missing_value_keeps_the_unit_of_its_typical_value() -> None:
    """A user's reason read "no value for card.since_first (no history yet); typical: 2,175,638": seconds,
    unsaid, where the value's own sentence says them."""
    assert Reason("card.since_first", None, 2_175_638.0, 0.1, T["card.since_first"]).text == (
        "no value for card.since_first (no history yet); typical: 2,175,638 s"
    )
    assert Reason("amount_usd", None, 42.5, 0.1, T["amount_usd"]).text.endswith("; typical: $42.5")
    assert Reason("x", None, 3.0, 0.1).text.endswith("; typical: 3")  # the generic template


def test_a_value_at_the_typical_one_is_not_compared_with_itself() -> None:
    """Found by an audit: "$0 of charges on this IP address in the last 30 days; typical: $0" (a tree's
    contribution is measured from the average charge, so a value at the median can still raise a score)."""
    assert text("ip.sum_amount_usd_30d", 0.0, 0.0) == "$0 of charges on this IP address in the last 30 days"
    assert text("card.count_charges_1h", 0.0, 0.0) == "0 charges on this card in the last hour"
    assert text("amount_usd", 42.5, 42.5) == "amount $42.5"
    # rounded the same way: the comparison is of what the reader would see
    assert text("amount_usd", 42.51, 42.5) == "amount $42.5"
    assert text("amount_usd", 43.0, 42.5) == "amount $43; typical: $42.5"
    assert Reason("x", 2.0, 2.0, 1.0).text == "x = 2"  # the generic template too


def test_a_derived_feature_reads_as_words_of_its_name() -> None:
    """'merchant: decline rate 1h 0' was the generic fallback (the docs and the analysts' audits)."""
    from payfm.features.definitions import Derived
    from payfm.training.explain import template

    def said(name: str) -> str:
        return template(Derived(name, "ratio", ("amount_usd", "amount_usd")))

    assert said("merchant.decline_rate_1h") == (
        "decline rate of this merchant in the last 1h: {value}; typical: {typical}"
    )
    assert (
        said("merchant.refund_rate_all") == "refund rate of this merchant so far: {value}; typical: {typical}"
    )
    assert said("card.amount_zscore") == "amount zscore of this card: {value}; typical: {typical}"
    assert said("my_ratio") == "my ratio: {value}; typical: {typical}"  # no entity: its words
