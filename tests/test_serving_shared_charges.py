"""Two servers sharing a PostgreSQL decision log and a Redis state record one charge's money at once: each
request holds the charge's lock in Redis from its first check until its record is durable. Found by an SRE
audit: the features kept one authorization result and the log the other (3 of 40 pairs), and two servers
did not see each other's refunds or declines in flight."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from payfm.events.workspace import Workspace
from payfm.serving.errors import Conflict, InvalidInput, Unavailable
from payfm.serving.postgres_log import PostgresDecisionLog
from payfm.serving.scorer import Scorer
from services import POSTGRES_URL, REDIS_SCRATCH_URL, require_postgres
from test_serving_outcome_race import REFUND, _ws
from test_serving_scorer import charge

DECLINED = {"outcome": "issuer_declined", "decline_code": "insufficient_funds"}


@pytest.fixture()
def servers(tmp_path: Any, redis_scratch: Any) -> Iterator[tuple[Scorer, Scorer]]:
    require_postgres(POSTGRES_URL)
    schema = f"payfm_test_{uuid.uuid4().hex[:8]}"
    ws = _ws(tmp_path / "ws")
    a = Scorer.open(
        ws, decision_log=PostgresDecisionLog(POSTGRES_URL, schema=schema), state=REDIS_SCRATCH_URL
    )
    b = Scorer.open(
        Workspace.open(ws.root),
        decision_log=PostgresDecisionLog(POSTGRES_URL, schema=schema),
        state=REDIS_SCRATCH_URL,
    )
    try:
        yield a, b
    finally:
        a.close(snapshot=False)
        b.close(snapshot=False)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _slow_writes(s: Scorer, started: threading.Event) -> None:
    """``s``'s log writes take 0.4 s (a slow commit): ``started`` is set when one begins."""
    real = s.log.write

    def write(record: Any, timeout: float = 30.0) -> Any:
        started.set()
        time.sleep(0.4)
        return real(record, timeout)

    s.log.write = write  # type: ignore[method-assign]


def _at_once(first: Any, second: Any, a: Scorer) -> tuple[Any, Any]:
    """Run ``first`` (on server a, whose log write is slow) and, once its write began, ``second``; each
    one's result or exception."""
    started = threading.Event()
    _slow_writes(a, started)
    out: list[Any] = [None, None]

    def run(i: int, call: Any) -> None:
        try:
            out[i] = call()
        except Exception as e:
            out[i] = e

    t = threading.Thread(target=run, args=(0, first))
    t.start()
    started.wait(10)
    run(1, second)
    t.join()
    return out[0], out[1]


def test_two_results_of_one_charge_leave_the_features_and_the_log_agreeing(
    servers: tuple[Scorer, Scorer],
) -> None:
    a, b = servers
    a.score({k: v for k, v in charge(1).items() if k != "outcome"})
    first, second = _at_once(
        lambda: a.record_authorization("ch_1", "authorized"),
        lambda: b.record_authorization("ch_1", **DECLINED),
        a,
    )
    assert first["duplicate"] is False and first["applied"] is True
    assert isinstance(second, Conflict) and "has outcome 'authorized' already" in str(second)
    assert a.log.get_charge("ch_1") is not None
    logged = [p for kind, p in b.log.outcomes_of("ch_1") if kind == "authorizations"]
    assert [p["outcome"] for p in logged] == ["authorized"]
    assert b.online.store.charge_fields("ch_1")["outcome"] == "authorized"  # the features took the same


def test_refunds_of_one_charge_on_two_servers_stay_within_its_amount(servers: tuple[Scorer, Scorer]) -> None:
    a, b = servers
    a.score(charge(1, amount=100, amount_usd=100))
    refund = {**REFUND, "amount": 60}
    first, second = _at_once(
        lambda: a.record_outcome("refunds", refund),
        lambda: b.record_outcome("refunds", {**refund, "refund_id": "re_2"}),
        a,
    )
    assert first["duplicate"] is False
    assert isinstance(second, InvalidInput) and second.field == "amount"  # 40 left, not 60
    refunds = [p["amount"] for kind, p in b.log.outcomes_of("ch_1") if kind == "refunds"]
    assert refunds == [60]


def test_a_refund_and_a_decline_on_two_servers_take_one(servers: tuple[Scorer, Scorer]) -> None:
    a, b = servers
    a.score({k: v for k, v in charge(1).items() if k != "outcome"})
    first, second = _at_once(
        lambda: a.record_outcome("refunds", {**REFUND, "amount": 10}),
        lambda: b.record_authorization("ch_1", **DECLINED),
        a,
    )
    assert first["duplicate"] is False
    assert isinstance(second, Conflict) and second.field == "outcome"
    assert [kind for kind, _ in b.log.outcomes_of("ch_1") if kind != "decision"] == ["refunds"]


def test_a_charge_held_past_the_wait_is_a_503(
    servers: tuple[Scorer, Scorer], redis_scratch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = servers
    a.score(charge(1))
    with a._charge_lock("ch_1"):  # held (30 s at most), and b waits 0.3 s for it
        monkeypatch.setattr("payfm.serving.money_claims.CHARGE_WAIT_S", 0.3)
        with pytest.raises(
            Unavailable, match=r"another request \(on this server or another\) for more than 0\.3 s"
        ):
            b.record_outcome("refunds", {**REFUND, "amount": 10})
    assert b.record_outcome("refunds", {**REFUND, "amount": 10})["duplicate"] is False  # free again
    assert not list(redis_scratch.scan_iter("payfm:lock:*"))  # released, not left to expire


def test_requests_waiting_for_charges_locks_are_bounded(
    servers: tuple[Scorer, Scorer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each request waiting for a charge's lock holds a thread of the pool /healthz needs too: past
    MAX_LOCK_WAITERS of them (2 here), one more is a 503 at once, not a thread held for CHARGE_WAIT_S; the
    waiters are recorded once the lock is free."""
    a, b = servers
    a.score(charge(1))
    monkeypatch.setattr(b, "_lock_waiters", threading.BoundedSemaphore(2))
    monkeypatch.setattr("payfm.serving.money_claims.MAX_LOCK_WAITERS", 2)
    monkeypatch.setattr("payfm.serving.money_claims.CHARGE_WAIT_S", 20.0)
    answers: list[Any] = []

    def refund(i: int) -> None:
        try:
            answers.append(b.record_outcome("refunds", {**REFUND, "refund_id": f"re_{i}", "amount": 10}))
        except Exception as e:
            answers.append(e)

    waiting = [threading.Thread(target=refund, args=(i,)) for i in (1, 2)]
    try:
        with a._charge_lock("ch_1"):
            for t in waiting:
                t.start()
            deadline = time.monotonic() + 10
            while b._lock_waiters._value > 0 and time.monotonic() < deadline:  # both waiting
                time.sleep(0.01)
            t0 = time.monotonic()
            with pytest.raises(Unavailable, match="2 requests of this server already wait for charges"):
                b.record_outcome("refunds", {**REFUND, "refund_id": "re_3", "amount": 10})
            assert time.monotonic() - t0 < 1.0  # at once, not after CHARGE_WAIT_S
            assert answers == []  # the two still wait
    finally:  # (never left holding the charge's lock in Redis for the next test)
        for t in waiting:
            if t.is_alive() or t.ident is not None:
                t.join(20)
    assert len(answers) == 2 and all(isinstance(x, dict) and x["duplicate"] is False for x in answers), (
        answers
    )


def test_a_lock_wait_503_over_http_is_counted_as_the_backends(
    servers: tuple[Scorer, Scorer], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from payfm.serving.app import create_app
    from test_serving_metrics import samples

    a, b = servers
    a.score(charge(1))
    with a._charge_lock("ch_1"), TestClient(create_app(b, None)) as client:
        monkeypatch.setattr("payfm.serving.money_claims.CHARGE_WAIT_S", 0.2)
        r = client.post("/v1/refunds", json={**REFUND, "amount": 10})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "on this server or another" in r.json()["error"]["message"]
        assert samples(client)[("payfm_backend_errors_total", (("backend", "shared online state"),))] == 1


def test_a_closure_whose_outcome_waits_for_the_charges_lock_is_answered_and_recorded_later(
    servers: tuple[Scorer, Scorer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: the closure was logged, then the dispute it implies failed on the charge's lock;
    the client was told "not recorded, retry", its retry got a 409, and the dispute came only at a restart."""
    from payfm.rules import rulesets
    from payfm.serving import feedback

    a, b = servers
    rulesets.save(a.ws, "big: review if :amount_usd: > 500\n", activate=True, set_name="default", author="t")
    a.reload()
    assert a.score(charge(1, amount=90_000, amount_usd=90_000)).outcome == "manual_review"
    monkeypatch.setattr(feedback, "APPEND_RETRY_S", 0.1)
    with b._charge_lock("ch_1"):  # another server records an outcome of the charge meanwhile
        monkeypatch.setattr("payfm.serving.money_claims.CHARGE_WAIT_S", 0.2)
        closed = a.close_review("ch_1", "disputed", "stolen card")
        assert closed["status"] == "closed" and closed["label"] == 1
        assert closed["outcome"] == {
            "table": "disputes",
            "id": "dp_review_ch_1",
            "applied": None,
            "pending": True,
        }
        assert a.events_waiting() == 1
    deadline = time.monotonic() + 10
    while a.events_waiting() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a.events_waiting() == 0
    assert [k for k, _ in a.log.outcomes_of("ch_1") if k in ("disputes", "reviews")] == [
        "reviews",
        "disputes",
    ]
    assert a.ws.read("disputes", ["dispute_id"]).column("dispute_id").to_pylist() == ["dp_review_ch_1"]
    assert a.ws.read("reviews", ["charge_id"]).column("charge_id").to_pylist() == ["ch_1"]


def test_a_log_write_that_does_not_commit_in_time_is_a_503(servers: tuple[Scorer, Scorer]) -> None:
    from concurrent.futures import Future

    a, _ = servers
    a.log.submit = lambda record: Future()  # type: ignore[method-assign] # a commit that never returns
    with pytest.raises(Unavailable, match=r"did not commit within 0\.2 s") as e:
        a.log.write(None, timeout=0.2)  # type: ignore[arg-type]
    assert e.value.backend == "decision log" and e.value.status == 503
