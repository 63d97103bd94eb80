"""A charge id the decision service knows, sent with other fields, is another charge, not a retry: refused
(409) instead of answered with the first charge's decision (whose later outcomes would then label it)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from payfm.events.workspace import Workspace
from payfm.serving.errors import Conflict
from payfm.serving.scorer import Scorer
from payfm.synth import WorldConfig, generate_world
from test_serving_scorer import charge


def test_a_decided_charge_id_with_other_fields_is_refused_and_a_true_retry_answered(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    s = Scorer.open(ws)
    try:
        first = s.score(charge(1, amount=1_999, amount_usd=1_999))
        with pytest.raises(Conflict, match=r"known already .* with another 'amount'") as e:
            s.score(charge(1, amount=99_999_999, amount_usd=99_999_999))
        assert e.value.field == "amount"
        with pytest.raises(Conflict, match="another 'card_fingerprint'"):
            s.score(charge(1, amount=1_999, amount_usd=1_999, card_fingerprint="fp_other"))
        again = s.score(charge(1, amount=1_999, amount_usd=1_999))  # the same charge: a retry
        assert again.to_json() == first.to_json()
        # The processor's result may come with a retry, and an optional field left out: not another charge.
        assert s.score(charge(1, amount=1_999, amount_usd=1_999, outcome="authorized")).to_json() == (
            first.to_json()
        )
        assert s.score(charge(1, amount=1_999, amount_usd=1_999, device_id=None)).to_json() == first.to_json()
        # A field the state does not keep (the decision log has the whole charge): its time, its channel.
        with pytest.raises(Conflict, match="another 'created':") as e:  # the request's field, not created_us
            s.score(charge(1, amount=1_999, amount_usd=1_999, created="2026-03-02T12:00:01+00:00"))
        assert e.value.field == "created"
        with pytest.raises(Conflict, match="another 'channel'"):
            s.score(charge(1, amount=1_999, amount_usd=1_999, channel="card_present"))
        # The same instant written otherwise is the same charge.
        assert s.score(
            charge(1, amount=1_999, amount_usd=1_999, created="2026-03-01T12:00:01Z")
        ).to_json() == (first.to_json())
    finally:
        s.close(snapshot=False)


def test_an_event_log_charge_id_sent_with_other_fields_is_refused(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=3_000, days=5, seed=4)), "replace")
    logged = ws.read("charges").to_pylist()[5]
    same = {k: v for k, v in logged.items() if k not in ("outcome", "decline_code", "scenario")}
    s = Scorer.open(ws)
    try:
        later = logged["created"] + timedelta(days=60)
        other = {**same, "created": later.isoformat(), "amount": 99_999_999, "amount_usd": 99_999_999}
        with pytest.raises(Conflict, match=f"Charge '{logged['charge_id']}' is known already"):
            s.score(other)
        # sent as the log holds it (a replay of history), it is decided, counted once
        assert s.score({**same, "created": logged["created"].isoformat()}).outcome
    finally:
        s.close(snapshot=False)


def test_a_charge_id_being_decided_is_refused_to_another_charge_sent_meanwhile(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    s = Scorer.open(ws)
    try:
        first = s.begin(charge(3, amount=100, amount_usd=100))  # in flight: not yet durable
        with pytest.raises(Conflict, match="Charge 'ch_3' is known already"):
            s.begin(charge(3, amount=99_999_999, amount_usd=99_999_999, card_fingerprint="fp_zzz"))
        retry = s.begin(charge(3, amount=100, amount_usd=100))
        assert retry.result(10).to_json() == first.result(10).to_json()
    finally:
        s.close(snapshot=False)
