"""The decision service in process and through the HTTP app (FastAPI TestClient): decisions, idempotency,
bad input, review queue, outcomes, shadow models, reload, and the PostgreSQL decision log."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from factories import usd_consistent
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.registry.store import Registry
from payfm.rules import rulesets
from payfm.serving.app import create_app
from payfm.serving.charges import EXAMPLE_FIELDS, to_us
from payfm.serving.errors import InvalidInput
from payfm.serving.keys import KeyStore
from payfm.serving.scorer import Scorer
from payfm.training.models.linear import LogisticModel
from services import POSTGRES_URL, require_postgres

PG_URL = POSTGRES_URL
T0 = "2026-03-01T12:00:00+00:00"
RULES = "big: review if :amount_usd: > 500\nbad_country: block if :ip_country: = 'RU'\n"


def charge(i: int, **kw: Any) -> dict[str, Any]:
    c = {"charge_id": f"ch_{i}", "created": f"2026-03-01T12:{i // 60 % 60:02d}:{i % 60:02d}+00:00"} | {
        **EXAMPLE_FIELDS,
        **kw,
    }
    return usd_consistent(c, kw)


def register(ws: Workspace, amount_weight: float, stage: str, name: str = "fraud-lr") -> str:
    """A logistic model on the tiny feature set whose probability grows with the amount (``amount_weight``
    > 0) or falls with it (< 0), fitted on values in the ranges charges take (counts 0-10, amounts $0.50 to
    $5,000: the amounts the tests send lie inside, where the model's inputs are not clipped)."""
    fset = tiny_set()
    rng = np.random.default_rng(0)
    X = rng.poisson(2.0, size=(400, len(fset.names))).astype(float)
    amount = np.exp(rng.uniform(np.log(0.5), np.log(5_000), 400)).round(2)  # (dollars)
    X[:, fset.names.index("amount_usd")] = amount
    X[:, fset.names.index("card.sum_amount_usd_1d")] *= amount
    z = np.log(amount) * amount_weight + rng.normal(size=400) * 0.5
    y = (z > np.median(z)).astype(int)
    model = LogisticModel(calibration="none").fit(X, y, feature_names=fset.names)
    mv = Registry(ws).register(model, name=name, task="fraud", fset=fset)
    if stage == "production":
        Registry(ws).promote(mv.ref)
    else:
        Registry(ws).set_stage(mv.ref, stage)
    return mv.ref


def served_workspace(root: Path) -> Workspace:
    """A workspace at ``root`` with a production model and the RULES active, on the tiny feature set."""
    w = Workspace.open(root, create=True)
    register(w, 1.0, "production")
    rulesets.save(w, RULES, activate=True, set_name="tiny", author="test")
    return w


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    return served_workspace(tmp_path / "ws")


@pytest.fixture()
def client(ws: Workspace, scorer: Scorer) -> Iterator[tuple[TestClient, dict[str, str]]]:
    keys = KeyStore(ws.root / "serving" / "keys.db")
    key = keys.create("tests")
    with TestClient(create_app(scorer, keys, max_body=4096)) as c:
        yield c, {"Authorization": f"Bearer {key}"}


def test_decision_has_score_reasons_rule_and_versions(scorer: Scorer) -> None:
    small = scorer.score(charge(1, amount=100, amount_usd=100))
    assert small.outcome == "authorized" and small.rule is None
    assert small.model == "fraud-lr@1" and small.ruleset_version == 1
    assert small.risk_score is not None and 0 <= small.risk_score <= 100
    assert small.risk_level in ("normal", "elevated", "highest")
    big = scorer.score(charge(2, amount=90_000, amount_usd=90_000))
    assert big.outcome == "manual_review" and big.rule == "big"
    assert big.risk_score is not None and big.risk_score > small.risk_score  # type: ignore[operator]
    assert big.reasons and big.reasons[0]["feature"] in tiny_set().names and len(big.reasons) <= 3
    blocked = scorer.score(charge(3, amount=90_000, amount_usd=90_000, ip_country="RU"))
    assert blocked.outcome == "blocked" and blocked.rule == "bad_country"  # block comes before review
    assert blocked.features["card.count_charges_1h"] == 2.0  # the two charges before it, not itself
    assert blocked.latency_ms > 0


def test_retry_returns_the_stored_decision_and_counts_once(scorer: Scorer) -> None:
    first = scorer.score(charge(1))
    again = scorer.score(charge(1))
    assert again == first
    nxt = scorer.score(charge(2))
    assert nxt.features["card.count_charges_1h"] == 1.0
    assert scorer.log.count("decisions") == 2


def test_no_model_means_null_score_and_rules_still_apply(tmp_path: Path) -> None:
    w = Workspace.open(tmp_path / "w", create=True)
    rulesets.save(w, RULES + "hi: block if :risk_score: >= 1\n", activate=True, set_name="tiny")
    s = Scorer.open(w)
    try:
        d = s.score(charge(1, amount_usd=90_000))
        assert d.risk_score is None and d.model is None
        assert d.outcome == "manual_review"  # ':risk_score: >= 1' is unknown, never true
    finally:
        s.close()


def test_shadow_scores_are_logged_but_never_decide(ws: Workspace) -> None:
    register(ws, -1.0, "shadow")  # the opposite model: it would flip every decision on risk score
    rulesets.save(ws, "hi: block if :risk_score: >= 60\n", activate=True, set_name="tiny")
    s = Scorer.open(ws)
    try:
        for i, amount in enumerate((100, 90_000)):
            d = s.score(charge(i, amount_usd=amount))
            assert d.model == "fraud-lr@1" and d.shadow is not None and d.shadow["model"] == "fraud-lr@2"
            assert (d.outcome == "blocked") == ((d.risk_score or 0) >= 60)
            assert d.shadow["risk_score"] != d.risk_score
            assert s.log.get_decision(f"ch_{i}")["shadow"]["model"] == "fraud-lr@2"  # type: ignore[index]
    finally:
        s.close()


def test_reload_swaps_model_and_ruleset_without_restart(scorer: Scorer, ws: Workspace) -> None:
    assert scorer.score(charge(1, ip_country="RU")).outcome == "blocked"
    ref = register(ws, 1.0, "candidate")
    Registry(ws).promote(ref)
    rulesets.save(ws, "allow_all: allow if :amount_usd: >= 0\n", activate=True, set_name="tiny")
    before = scorer.bundle
    scorer.reload()
    d = scorer.score(charge(2, ip_country="RU"))
    assert d.outcome == "authorized" and d.rule == "allow_all" and d.model == "fraud-lr@2"
    assert d.ruleset_version == 2 and before.ruleset_version == 1  # the old bundle was not mutated


def test_http_auth_size_schema_and_card_numbers(client: tuple[TestClient, dict[str, str]]) -> None:
    c, h = client
    assert c.post("/v1/charges/score", json=charge(1)).status_code == 401
    assert (
        c.post("/v1/charges/score", json=charge(1), headers={"Authorization": "Bearer pfm_x_y"}).status_code
        == 401
    )
    r = c.post("/v1/charges/score", json=charge(1), headers=h)
    assert r.status_code == 200 and r.json()["charge_id"] == "ch_1" and "features" not in r.json()
    naive = c.post("/v1/charges/score", json=charge(2, created="2026-03-01T12:00:00"), headers=h)
    assert naive.status_code == 422 and naive.json()["error"]["field"] == "created"
    huge = c.post("/v1/charges/score", json=charge(3, amount=10**23), headers=h)  # beyond the log's int64
    assert huge.status_code == 422 and huge.json()["error"]["field"] == "amount"
    big = c.post("/v1/charges/score", json=charge(3, amount_usd=2**63 - 1), headers=h)  # fits, but no payment
    assert big.status_code == 422 and "a value from 0 to 999,999,999,999" in big.json()["error"]["message"]
    nowhere = c.post("/v1/charge/score", json=charge(2), headers=h)  # a typo in the path
    assert nowhere.status_code == 404 and nowhere.json()["error"]["type"] == "NotFound"
    wrong = c.get("/v1/charges/score", headers=h)
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "MethodNotAllowed"
    broken = c.post(
        "/v1/disputes", content=b'{"dispute_id": ', headers={**h, "content-type": "application/json"}
    )
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["error"]["message"]
    extra = c.post("/v1/charges/score", json=charge(2, coupon="x"), headers=h)
    assert extra.status_code == 422 and extra.json()["error"]["field"] == "coupon"
    missing = c.post(
        "/v1/charges/score", json={k: v for k, v in charge(2).items() if k != "amount"}, headers=h
    )
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "amount"
    bad = c.post("/v1/charges/score", json=charge(2, channel="telepathy"), headers=h)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "channel"
    uk = c.post("/v1/charges/score", json=charge(2, ip_country="UK"), headers=h)  # two letters, not ISO
    assert uk.status_code == 422 and uk.json()["error"]["field"] == "ip_country"
    assert "ISO 3166-1" in uk.json()["error"]["message"] and "'GB'" in uk.json()["error"]["message"]
    typo = c.post("/v1/charges/score", json=charge(2, cvc_check="passed"), headers=h)
    assert typo.status_code == 422 and "Did you mean 'pass'?" in typo.json()["error"]["message"]
    pan = "4242 4242 4242 4242"
    card = c.post("/v1/charges/score", json=charge(2, device_id=pan), headers=h)
    assert card.status_code == 422 and "4242 4242" not in card.text and "card number" in card.text
    big = c.post("/v1/charges/score", json=charge(2, device_id="x" * 5000), headers=h)
    assert big.status_code == 413
    health = c.get("/healthz").json()
    assert health["model"] == "fraud-lr@1" and health["events_waiting"] == 0
    assert "/v1/charges/score" in c.get("/openapi.json").json()["paths"]


def test_review_queue_lists_pages_and_closes(
    client: tuple[TestClient, dict[str, str]], scorer: Scorer
) -> None:
    c, h = client
    for i in range(5):
        assert c.post("/v1/charges/score", json=charge(i, amount_usd=90_000), headers=h).json()[
            "outcome"
        ] == ("manual_review")
    page = c.get("/v1/reviews", params={"status": "open", "limit": 2}, headers=h).json()
    assert [r["charge_id"] for r in page["data"]] == ["ch_0", "ch_1"] and page["has_more"]
    first = page["data"][0]  # what the analyst decides on: the charge and the model's reasons
    assert first["charge"]["amount_usd"] == 90_000 and first["risk_score"] is not None
    assert first["reasons"] and first["reasons"] == scorer.log.get_decision("ch_0")["reasons"]  # type: ignore[index]
    page2 = c.get("/v1/reviews", params={"status": "open", "limit": 2, "offset": 2}, headers=h).json()
    assert [r["charge_id"] for r in page2["data"]] == ["ch_2", "ch_3"]
    r = c.post("/v1/reviews/ch_1/close", json={"reason": "refunded_as_fraud"}, headers=h)
    assert r.status_code == 200 and r.json()["label"] == 1
    assert c.post("/v1/reviews/ch_1/close", json={"reason": "approved"}, headers=h).status_code == 409
    assert c.post("/v1/reviews/ch_99/close", json={"reason": "approved"}, headers=h).status_code == 404
    assert c.post("/v1/reviews/ch_2/close", json={"reason": "maybe"}, headers=h).status_code == 422
    closed = c.get("/v1/reviews", params={"status": "closed"}, headers=h).json()["data"]
    assert [(x["charge_id"], x["reason"]) for x in closed] == [("ch_1", "refunded_as_fraud")]
    assert scorer.log.review_labels() == [("ch_1", 1)]


def test_outcomes_update_features_and_the_event_log(
    client: tuple[TestClient, dict[str, str]], scorer: Scorer, ws: Workspace
) -> None:
    c, h = client
    c.post("/v1/charges/score", json=charge(1), headers=h)
    dispute = {"dispute_id": "dp_1", "charge_id": "ch_1", "created": "2026-03-01T12:00:30Z"}
    dispute |= {"reason": "fraudulent", "amount": 1999, "currency": "usd"}
    r = c.post("/v1/disputes", json=dispute, headers=h).json()
    assert r["applied"] and r["label_source"] == "fraud_disputes" and not r["duplicate"]
    assert c.post("/v1/disputes", json=dispute, headers=h).json()["duplicate"]
    assert ws.count("disputes") == 1
    efw = {"efw_id": "efw_1", "charge_id": "ch_1", "created": "2026-03-01T12:00:40Z", "fraud_type": "misc"}
    assert c.post("/v1/early_fraud_warnings", json=efw, headers=h).json()["label_source"] == "efws"
    refund = {"refund_id": "re_1", "charge_id": "ch_1", "created": "2026-03-01T12:00:50Z", "amount": 5}
    refund |= {"currency": "usd", "reason": "duplicate"}
    assert c.post("/v1/refunds", json=refund, headers=h).status_code == 200
    assert (
        c.post("/v1/refunds", json={**refund, "refund_id": "re_2", "amount": -1}, headers=h).status_code
        == 422
    )
    d = scorer.score(charge(2))
    assert d.features["card.count_fraud_disputes_all"] == 1.0


def test_events_dated_past_the_clock_skew_are_refused_and_leave_the_state_alone(ws: Workspace) -> None:
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    from payfm.serving.scorer import ScorerConfig

    scorer = Scorer.open(ws, config=ScorerConfig(max_future_s=300))
    keys = KeyStore(ws.root / "serving" / "keys.db")
    h = {"Authorization": f"Bearer {keys.create('tests')}"}
    now = datetime.now(UTC)
    try:
        with TestClient(create_app(scorer, keys)) as c:
            assert c.post("/v1/charges/score", json=charge(1, created=now.isoformat()), headers=h).is_success
            r = c.post("/v1/charges/score", json=charge(2, created="2099-01-01T00:00:00Z"), headers=h)
            assert r.status_code == 422 and r.json()["error"]["field"] == "created"
            assert "at most 300 s ahead of the server's clock" in r.json()["error"]["message"]
            ahead = (now + timedelta(seconds=200)).isoformat()  # within the skew: decided
            assert c.post("/v1/charges/score", json=charge(3, created=ahead), headers=h).is_success
            dispute = {"dispute_id": "dp_1", "charge_id": "ch_1", "created": "2099-01-01T00:00:00Z"}
            dispute |= {"reason": "fraudulent", "amount": 1999, "currency": "usd"}
            r = c.post("/v1/disputes", json=dispute, headers=h)
            assert r.status_code == 422 and r.json()["error"]["field"] == "created"
            # a retry of a charge decided already gets its decision even past the bound (a server whose clock
            # is behind the first one's), a new charge does not
            soon = {"dispute_id": "dp_2", "charge_id": "ch_1", "created": ahead, "reason": "fraudulent"}
            soon |= {"amount": 1999, "currency": "usd"}
            assert c.post("/v1/disputes", json=soon, headers=h).json()["duplicate"] is False
            scorer.config = replace(scorer.config, max_future_s=100)
            assert c.post("/v1/disputes", json=soon, headers=h).json()["duplicate"] is True
            again = c.post("/v1/charges/score", json=charge(3, created=ahead), headers=h)
            assert again.status_code == 200 and again.json()["charge_id"] == "ch_3"
            r = c.post("/v1/charges/score", json=charge(5, created=ahead), headers=h)
            assert r.status_code == 422 and r.json()["error"]["field"] == "created"
            scorer.config = replace(scorer.config, max_future_s=300)
        later = (now + timedelta(seconds=250)).isoformat()
        # the refused charge moved no window: the 1-hour count holds the two decided ones
        assert scorer.score(charge(4, created=later)).features["card.count_charges_1h"] == 2.0
        assert scorer.log.get_decision("ch_2") is None
    finally:
        scorer.close()


def test_a_charge_dated_past_the_max_past_bound_is_refused(ws: Workspace) -> None:
    """--max-past-s: a back-dated charge would give its card a history it never had (card.since_first);
    off by default; a retry of a decided charge is answered whatever the clock; outcomes are not bound."""
    from datetime import UTC, datetime, timedelta

    from payfm.serving.scorer import ScorerConfig

    scorer = Scorer.open(ws, config=ScorerConfig(max_future_s=300, max_past_s=3600))
    try:
        now = datetime.now(UTC)
        old = charge(1, card_fingerprint="fp_new", created=(now - timedelta(days=90)).isoformat())
        with pytest.raises(InvalidInput) as e:
            scorer.score(old)
        assert e.value.field == "created" and "at most 3,600 s behind the server's clock" in str(e.value)
        # 90 days and the seconds a busy machine took since `now` (whole seconds: 0.5 s rounds up)
        assert re.search(r"\b7,776,0\d\d s behind", str(e.value))
        assert "payfm serve --max-past-s" in str(e.value)
        assert scorer.log.get_decision("ch_1") is None  # refused before anything was counted or logged
        fresh = scorer.score(charge(2, card_fingerprint="fp_new", created=now.isoformat()))
        assert fresh.features["card.count_charges_1h"] == 0.0
        late = {"dispute_id": "dp_1", "charge_id": "ch_2", "reason": "fraudulent", "amount": 1999}
        late |= {"currency": "usd", "created": (now + timedelta(seconds=1)).isoformat()}
        assert scorer.record_outcome("disputes", late)["duplicate"] is False
    finally:
        scorer.close()
    unbounded = Scorer.open(ws, config=ScorerConfig(max_future_s=300))  # the default: no bound in the past
    try:
        assert unbounded.score(old).charge_id == "ch_1"
        unbounded.config = ScorerConfig(max_future_s=300, max_past_s=60)
        assert unbounded.score(old).charge_id == "ch_1"  # a retry of a decided charge: answered
    finally:
        unbounded.close()


def test_postgres_decision_log_round_trip(tmp_path: Path) -> None:
    require_postgres(PG_URL)
    import psycopg

    from payfm.serving.postgres_log import PostgresDecisionLog

    schema = f"payfm_test_{uuid.uuid4().hex[:8]}"
    w = Workspace.open(tmp_path / "w", create=True)
    rulesets.save(w, RULES, activate=True, set_name="tiny")
    try:
        s = Scorer.open(w, decision_log=PostgresDecisionLog(PG_URL, schema=schema))
        first = s.score(charge(1, amount_usd=90_000))
        assert s.score(charge(1, amount_usd=90_000)) == first
        s.score(charge(2))
        s.close()
        # A new server on the same database: the decisions are there and the state is rebuilt from them.
        s2 = Scorer.open(w, decision_log=PostgresDecisionLog(PG_URL, schema=schema))
        assert s2.log.get_decision("ch_1") == first.to_json()
        assert s2.log.reviews("open")[0]["charge_id"] == "ch_1"
        assert s2.score(charge(3)).features["card.count_charges_1h"] == 2.0
        ids, latest = s2.log.recent_charges(2)  # a shared state's staleness check reads these
        assert ids == ["ch_2", "ch_3"] and latest == max(to_us(charge(i)["created"], "c") for i in (1, 2, 3))
        # A catch-up reads only the events within the TTL: the older ones are left out in SQL.
        since = to_us(charge(2)["created"], "c")
        assert [p["charge_id"] for _, _, p in s2.log.events_after(0, not_before_us=since)] == ["ch_2", "ch_3"]
        dispute = {
            "dispute_id": "dp_1",
            "charge_id": "ch_3",
            "reason": "fraudulent",
            "amount": 1,
            "currency": "usd",
        }
        s2.record_outcome("disputes", dispute | {"created": "2026-03-02T00:00:00+00:00"})
        s2.record_outcome(
            "disputes", dispute | {"dispute_id": "dp_2", "created": "2026-03-03T00:00:00+00:00"}
        )
        day = to_us("2026-03-02T00:00:00+00:00", "c")  # dp_2 was not counted (ch_3's dispute was already)
        assert s2.log.recent_outcomes(5) == [("fraud_disputes", "dp_1", "ch_3", day)]
        s2.close(snapshot=False)
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.parametrize("every", [0, 50])
def test_decisions_move_their_long_lived_state_out_of_the_cyclic_collector(
    ws: Workspace, every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ``gc_freeze_every`` decisions what survived is frozen, after a full collection (of what is not
    frozen yet): a full collection then scans only the records made since, not every one since start-up
    (0: the collector is left alone)."""
    import gc

    import payfm.serving.scorer as scorer_module
    from payfm.serving.scorer import ScorerConfig

    calls: list[str] = []

    class Recorder:  # the gc module as the scorer sees it, recording what it is asked to do
        def collect(self, generation: int = 2) -> int:
            calls.append(f"collect({generation})")
            return gc.collect(generation)

        def freeze(self) -> None:
            calls.append("freeze")
            gc.freeze()

    monkeypatch.setattr(scorer_module, "gc", Recorder())
    s = Scorer.open(ws, config=ScorerConfig(gc_freeze_every=every))
    try:
        for i in range(120):
            s.score(charge(1000 + i))
    finally:
        s.close(snapshot=False)
        gc.unfreeze()  # leave the test process as it was
    assert calls == (["collect(2)", "freeze"] * 2 if every else [])


def test_the_decision_log_is_checkpointed_in_the_background(scorer: Scorer, ws: Workspace) -> None:
    """Decisions reach the database file without a checkpoint on the commit path: far fewer than SQLite's
    automatic checkpoint (1,000 pages) are written, yet the file grows within a few checkpoint intervals."""
    import time

    from payfm.serving.sqlite_log import CHECKPOINT_EVERY_S

    db = ws.root / "serving" / "decisions.db"
    scorer.score(charge(5000))
    time.sleep(3 * CHECKPOINT_EVERY_S)
    before = db.stat().st_size
    for i in range(60):  # ~60 decisions with their features: well under 1,000 WAL pages
        scorer.score(charge(5001 + i))
    deadline = time.monotonic() + 20 * CHECKPOINT_EVERY_S
    while db.stat().st_size <= before and time.monotonic() < deadline:
        time.sleep(CHECKPOINT_EVERY_S / 4)
    assert db.stat().st_size > before
    wal = db.with_name(db.name + "-wal")
    assert wal.exists() and wal.stat().st_size < 1000 * 4096  # the automatic checkpoint was not due


def test_a_gbdt_decision_leaves_no_cyclic_garbage(tmp_path: Path) -> None:
    """Deciding makes no reference cycles (they would keep the cyclic GC busy, and a frozen one would never
    be freed): every object of 200 GBDT decisions is freed by reference counting alone."""
    import gc

    from payfm.training.models.gbdt import GBDTModel

    w = Workspace.open(tmp_path / "ws", create=True)
    fset = tiny_set()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, len(fset.names)))
    y = (X[:, 0] + rng.normal(size=600) > 0.5).astype(int)
    model = GBDTModel(n_estimators=20, calibration="none").fit(X, y, feature_names=fset.names)
    Registry(w).promote(Registry(w).register(model, name="fraud-gbdt", task="fraud", fset=fset).ref)
    rulesets.save(w, RULES, activate=True, set_name="tiny", author="test")
    s = Scorer.open(w)
    try:
        for i in range(20):  # first calls build caches (fast predictors, prepared statements)
            s.score(charge(i, amount=100 + i))
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for i in range(20, 220):
                assert s.score(charge(i, amount=100 + i)).reasons is not None
            gc.collect()
            cyclic = [type(o).__name__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    finally:
        s.close(snapshot=False)
    assert cyclic == []


def test_the_checkpointer_lives_between_start_and_close_and_restarts(tmp_path: Path) -> None:
    from payfm.serving.sqlite_log import SQLiteDecisionLog

    log = SQLiteDecisionLog(tmp_path / "d.db")
    assert log._checkpointer is None  # opening alone starts no thread (a failed open leaks none)
    for _ in range(2):
        log.start()
        thread = log._checkpointer
        assert thread is not None and thread.is_alive()
        log.close()
        assert not thread.is_alive() and log._checkpointer is None
    log.close()  # twice is harmless


def test_a_server_asked_for_a_model_it_cannot_serve_refuses_to_start(ws: Workspace) -> None:
    from payfm.errors import ConfigError
    from payfm.serving.scorer import ScorerConfig

    with pytest.raises(ConfigError, match=r"no registered model 'fraud-lrr' \(registered: fraud-lr\)"):
        Scorer.open(ws, config=ScorerConfig(model="fraud-lrr"))  # a typo would serve rules alone
    register(ws, 1.0, "candidate", name="fraud-next")
    with pytest.raises(ConfigError, match=r"no production version.*models promote fraud-next@1"):
        Scorer.open(ws, config=ScorerConfig(model="fraud-next"))
    served = Scorer.open(ws, config=ScorerConfig(model="fraud-lr"))
    assert served.bundle.model_version is not None and served.bundle.model_version.name == "fraud-lr"
    served.close(snapshot=False)


def test_a_revoked_key_name_is_not_given_again_and_says_so(ws: Workspace) -> None:
    from payfm.serving.errors import Conflict

    keys = KeyStore(ws.root / "serving" / "keys.db")
    keys.create("ops")
    with pytest.raises(Conflict, match="exists already; revoke it or pick another name"):
        keys.create("ops")
    keys.revoke("ops")
    with pytest.raises(Conflict, match=r"was revoked on \d{4}-\d\d-\d\d; a name never passes to another key"):
        keys.create("ops")
