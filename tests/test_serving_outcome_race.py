"""Two servers sharing a decision log record one outcome id at the same instant: both read no record, one
log insert wins. Found by an SRE audit: the loser answered `duplicate: false` and appended its own amount to
the event log while the log held the winner's (4 of 20 pairs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.serving.errors import Conflict
from payfm.serving.scorer import Scorer
from test_serving_scorer import charge

RULES = "bad_country: block if :ip_country: = 'RU'\n"


def _ws(path: Path) -> Workspace:
    w = Workspace.open(path, create=True)
    rulesets.save(w, RULES, activate=True, set_name="default", author="test")
    return w


@pytest.fixture()
def servers(tmp_path: Path) -> Iterator[tuple[Scorer, Scorer]]:
    log = f"sqlite:///{tmp_path / 'shared.db'}"
    a = Scorer.open(_ws(tmp_path / "a"), decision_log=log, durability="os")
    b = Scorer.open(_ws(tmp_path / "b"), decision_log=log, durability="os")
    yield a, b
    a.close(snapshot=False)
    b.close(snapshot=False)


def _stale_until_written(s: Scorer) -> None:
    """``s`` reads the shared log as it was before the other server's write, until its own write."""
    real_get, real_of, real_write = s.log.get_outcome, s.log.outcomes_of, s.log.write
    wrote: list[bool] = []

    def get_outcome(kind: str, oid: str) -> Any:
        return real_get(kind, oid) if wrote else None

    def outcomes_of(cid: str) -> Any:
        return real_of(cid) if wrote else [(k, p) for k, p in real_of(cid) if k == "decision"]

    def write(record: Any, timeout: float = 30.0) -> Any:
        try:
            return real_write(record, timeout)
        finally:
            wrote.append(True)

    s.log.get_outcome = get_outcome  # type: ignore[method-assign]
    s.log.outcomes_of = outcomes_of  # type: ignore[method-assign]
    s.log.write = write  # type: ignore[method-assign]


def _refunds(s: Scorer) -> list[dict[str, Any]]:
    return s.ws.read("refunds", ["refund_id", "amount"]).to_pylist()


REFUND = {
    "refund_id": "re_1",
    "charge_id": "ch_1",
    "created": "2026-03-02T10:00:00Z",
    "currency": "usd",
    "reason": "requested_by_customer",
}


@pytest.mark.parametrize("amount", [100, 101])
def test_the_loser_of_the_logs_insert_answers_what_the_log_holds_and_appends_nothing(
    servers: tuple[Scorer, Scorer], amount: int
) -> None:
    a, b = servers
    a.score(charge(1, amount=5000))
    assert a.record_outcome("refunds", {**REFUND, "amount": 100})["duplicate"] is False
    _stale_until_written(b)
    if amount == 100:  # the same refund sent to both: a retry, answered as recorded
        assert b.record_outcome("refunds", {**REFUND, "amount": amount})["duplicate"] is True
    else:  # another refund under its id: refused, as when the first read finds it
        with pytest.raises(Conflict) as e:
            b.record_outcome("refunds", {**REFUND, "amount": amount})
        assert e.value.field == "amount"
    assert _refunds(a) == [{"refund_id": "re_1", "amount": 100}] and _refunds(b) == []
