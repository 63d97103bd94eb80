"""Free text (a review's note and reviewer, a ruleset's or list change's note, a rule's comment) is written by
people: a card number glued to hex letters is one there (``ab4111111111111111``), not a hexadecimal token's
digits as in an identifier (a security review found such a note stored in the decision and event logs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.cards import contains_card_number
from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.rules.grammar import parse_rules
from payfm.rules.limits import RuleError
from payfm.serving.errors import InvalidInput
from payfm.serving.scorer import Scorer
from test_serving_reviews import charge

GLUED = ("ab4111111111111111", "4111111111111111e", "cc4111111111111111dd")


@pytest.mark.parametrize("text", GLUED)
def test_digits_glued_to_hex_letters_are_a_card_number_in_free_text_only(text: str) -> None:
    assert not contains_card_number(text)  # (an identifier: a digest's or a device id's digits)
    assert contains_card_number(f"customer said {text}", free_text=True)


def test_free_text_keeps_uuids_and_hex_ids_that_hold_no_card_number() -> None:
    for text in ("see 123e4567-e89b-12d3-a456-426614174000", "device a1b2c3d4e5f60718293a", "order 12345"):
        assert not contains_card_number(text, free_text=True), text


def test_a_review_note_or_a_rules_note_holding_one_is_refused(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    rulesets.save(ws, "big: review if :amount_usd: > 1000\n", activate=True, set_name="default", author="t")
    s = Scorer.open(ws)
    try:
        assert s.score(charge(1, amount=500_000, amount_usd=500_000)).outcome == "manual_review"
        with pytest.raises(InvalidInput, match="Field 'note' of the review holds a full card number") as e:
            s.close_review("ch_1", "approved", note="card ab4111111111111111 per call")
        assert "4111" not in str(e.value)
        with pytest.raises(InvalidInput, match="Field 'reviewer' of the review holds a full card number"):
            s.close_review("ch_1", "approved", reviewer="4111111111111111e")
        assert s.close_review("ch_1", "approved", note="device a1b2c3d4e5f60718293a")["status"] == "closed"
    finally:
        s.close(snapshot=False)
    with pytest.raises(RuleError, match="note must not contain a card number"):
        rulesets.save(ws, "big: review if :amount_usd: > 2000\n", note="from ab4111111111111111", author="t")
    for text in (
        "# card cc4111111111111111\nbig: review if :amount_usd: > 2000\n",
        "big: review if :amount_usd: > 2000  # card cc4111111111111111\n",  # (after a rule: it was stored)
    ):
        with pytest.raises(RuleError, match="comments included"):
            parse_rules(text)
    assert len(parse_rules("big: review if :ip_address: = 'ab4111111111111111'  # an id, quoted\n")) == 1
    r = CliRunner().invoke(
        cli,
        ["review", "close", "ch_1", "--as", "approved", "--note", "ab4111111111111111", "--url", "http://x"],
    )
    assert r.exit_code != 0 and "--note holds a full card number" in r.output and "4111" not in r.output
