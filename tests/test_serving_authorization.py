"""Authorization results reported after the decision (POST /v1/charges/{id}/authorization): the declines
features count them at the charge's time, as if the request had carried them; once per charge; kept across
restarts and exported with the charge."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.serving.app import create_app
from payfm.serving.errors import Conflict, InvalidInput, NotFound
from payfm.serving.export import export_charges
from payfm.serving.keys import KeyStore
from payfm.serving.scorer import Scorer, ScorerConfig
from services import REDIS_SCRATCH_URL
from test_serving_scorer import charge

RULES = "bad_country: block if :ip_country: = 'RU'\n"
DECLINED = {"outcome": "issuer_declined", "decline_code": "insufficient_funds"}


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    """Rules on the default feature set (declines, decline rates), no model."""
    w = Workspace.open(tmp_path / "ws", create=True)
    rulesets.save(w, RULES, activate=True, set_name="default", author="test")
    return w


def _second_ws(tmp_path: Path) -> Workspace:
    w = Workspace.open(tmp_path / "other", create=True)
    rulesets.save(w, RULES, activate=True, set_name="default", author="test")
    return w


def _probe(s: Scorer, i: int = 9) -> dict[str, Any]:
    """The features of a new charge of the same card, merchant, IP and device (decided, so counted)."""
    return s.score(charge(i)).features


DECLINES = ("card.count_declined_1h", "merchant.count_declined_1h", "merchant.decline_rate_1h")


def test_a_reported_decline_counts_as_if_the_request_had_carried_it(ws: Workspace, tmp_path: Path) -> None:
    reported = Scorer.open(ws)
    carried = Scorer.open(_second_ws(tmp_path))
    try:
        for i, outcome in ((1, DECLINED), (2, {"outcome": "authorized"}), (3, DECLINED)):
            reported.score(charge(i))
            carried.score(charge(i, **outcome))
        before = reported.score(charge(4)).features
        carried.score(charge(4))
        assert [before[n] for n in DECLINES] == [0.0, 0.0, 0.0]  # not reported yet: no decline known
        r1 = reported.record_authorization("ch_1", **DECLINED)
        assert r1 == {"charge_id": "ch_1", "applied": True, "duplicate": False, **DECLINED}
        reported.record_authorization("ch_2", "authorized")
        reported.record_authorization("ch_3", **DECLINED)
        got, want = _probe(reported), _probe(carried)
        assert [got[n] for n in DECLINES] == [2.0, 2.0, 0.5]  # 2 of the 4 charges before it
        assert got == want  # every feature, as if the requests had carried the outcomes
    finally:
        reported.close()
        carried.close()


def test_a_result_counts_once_and_a_charge_has_one(ws: Workspace) -> None:
    s = Scorer.open(ws)
    try:
        s.score(charge(1))
        s.score(charge(2, **DECLINED))  # the request carried it
        s.score(charge(3, ip_country="RU"))  # blocked by the rules: never sent for authorization
        assert s.record_authorization("ch_1", **DECLINED)["applied"]
        again = s.record_authorization("ch_1", **DECLINED)
        assert (again["applied"], again["duplicate"]) == (False, True)
        with pytest.raises(Conflict, match=r"has outcome 'issuer_declined' \(insufficient_funds\) already"):
            s.record_authorization("ch_1", "authorized")
        assert s.record_authorization("ch_2", **DECLINED)["duplicate"]
        with pytest.raises(Conflict, match="with the decision"):
            s.record_authorization("ch_2", "authorized")
        assert s.record_authorization("ch_3", "blocked")["duplicate"]
        with pytest.raises(Conflict, match="has outcome 'blocked'"):
            s.record_authorization("ch_3", "authorized")
        with pytest.raises(NotFound, match="did not decide it"):
            s.record_authorization("ch_404", "authorized")
        with pytest.raises(InvalidInput, match="goes with outcome 'issuer_declined'"):
            s.record_authorization("ch_1", "authorized", "insufficient_funds")
        with pytest.raises(InvalidInput, match="Field 'outcome' must be one of"):
            s.record_authorization("ch_1", "declined")
        assert _probe(s)["card.count_declined_1h"] == 2.0  # ch_1 once, ch_2 with its request
    finally:
        s.close()


@pytest.mark.parametrize("snapshot", [False, True])
def test_results_survive_a_restart_and_count_once(ws: Workspace, snapshot: bool) -> None:
    s = Scorer.open(ws)
    for i in (1, 2, 3):
        s.score(charge(i))
    s.record_authorization("ch_1", **DECLINED)
    s.close(snapshot=snapshot)
    s = Scorer.open(ws)
    try:
        s.record_authorization("ch_2", **DECLINED)  # after the restart
        assert s.record_authorization("ch_1", **DECLINED)["duplicate"]
        assert _probe(s)["card.count_declined_1h"] == 2.0
    finally:
        s.close()


def test_export_takes_the_reported_outcome_and_a_restart_then_counts_it_once(ws: Workspace) -> None:
    s = Scorer.open(ws)
    for i in (1, 2, 3):
        s.score(charge(i))
    s.score(charge(4, ip_country="RU"))
    s.record_authorization("ch_1", **DECLINED)
    s.record_authorization("ch_2", "authorized")
    s.close(snapshot=False)  # the next start rebuilds its state from both logs
    summary = export_charges(ws, s.log)
    assert (summary.exported, summary.unknown_outcome) == (3, 1)  # ch_3: no result yet
    assert summary.outcomes == {"authorized": 1, "blocked": 1, "issuer_declined": 1}
    rows = {r["charge_id"]: r for r in ws.read("charges").to_pylist()}
    assert (rows["ch_1"]["outcome"], rows["ch_1"]["decline_code"]) == (
        "issuer_declined",
        "insufficient_funds",
    )
    s = Scorer.open(ws)  # the event log and the decision log both hold ch_1 and its result now
    try:
        assert _probe(s)["card.count_declined_1h"] == 1.0
        with pytest.raises(Conflict, match="has outcome 'authorized'"):
            s.record_authorization("ch_2", **DECLINED)
    finally:
        s.close()


def test_a_result_reaches_the_shared_redis_state(ws: Workspace, tmp_path: Path, redis_scratch: Any) -> None:
    # Another server of the same event log (a copy of the workspace: a Redis state belongs to one event log,
    # and a server of another is refused), with its own decision log.
    other = Workspace.open(Path(shutil.copytree(ws.root, tmp_path / "other")))
    first = Scorer.open(ws, state=REDIS_SCRATCH_URL)
    try:
        first.score(charge(1))
        first.record_authorization("ch_1", **DECLINED)
        second = Scorer.open(other, state=REDIS_SCRATCH_URL)
        try:
            assert _probe(second)["card.count_declined_1h"] == 1.0
        finally:
            second.close()
    finally:
        first.close()


@pytest.fixture()
def client(ws: Workspace) -> Iterator[tuple[TestClient, dict[str, str]]]:
    s = Scorer.open(ws, config=ScorerConfig())
    keys = KeyStore(ws.root / "serving" / "keys.db")
    key = keys.create("tests")
    with TestClient(create_app(s, keys, max_body=4096)) as c:
        yield c, {"Authorization": f"Bearer {key}"}
    s.close()


def test_http_route(client: tuple[TestClient, dict[str, str]]) -> None:
    c, auth = client
    assert c.post("/v1/charges/score", json=charge(1), headers=auth).status_code == 200
    url = "/v1/charges/ch_1/authorization"
    assert c.post(url, json={"outcome": "authorized"}).status_code == 401
    r = c.post(url, json=DECLINED, headers=auth)
    assert r.status_code == 200 and r.json() == {
        "charge_id": "ch_1",
        "applied": True,
        "duplicate": False,
        **DECLINED,
    }
    assert c.post(url, json={"outcome": "authorized"}, headers=auth).status_code == 409
    r = c.post("/v1/charges/ch_2/authorization", json={"outcome": "authorized"}, headers=auth)
    assert r.status_code == 404 and "did not decide" in r.text
    r = c.post(url, json={"outcome": "declined"}, headers=auth)
    assert r.status_code == 422 and "outcome" in r.text
    r = c.post(url, json={"outcome": "authorized", "extra": 1}, headers=auth)
    assert r.status_code == 422 and "extra" in r.text


def test_a_charge_id_holding_a_slash_can_be_named_in_the_route(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    c, auth = client
    cid = "order/2026/ch_1"
    assert c.post("/v1/charges/score", json=charge(1, charge_id=cid), headers=auth).status_code == 200
    r = c.post(f"/v1/charges/{quote(cid, safe='')}/authorization", json=DECLINED, headers=auth)
    assert r.status_code == 200 and r.json()["charge_id"] == cid and r.json()["applied"]
    # Written as is (a client that does not encode it), it names the same charge: a duplicate.
    r = c.post(f"/v1/charges/{cid}/authorization", json=DECLINED, headers=auth)
    assert r.status_code == 200 and r.json()["duplicate"]
    r = c.post("/v1/charges/order/2026/authorization", json=DECLINED, headers=auth)
    assert r.status_code == 404 and "order/2026" in r.text


def test_a_different_result_racing_the_first_is_a_conflict_not_a_silent_200(ws: Workspace) -> None:
    s = Scorer.open(ws)
    try:
        s.score(charge(1))
        s.record_authorization("ch_1", **DECLINED)
        # A request that checked before the first was recorded: the check under the state lock answers it.
        s._known_result = lambda cid, c: None  # type: ignore[method-assign]
        with pytest.raises(Conflict, match="reported before"):
            s.record_authorization("ch_1", "authorized")
        assert s.record_authorization("ch_1", **DECLINED)["duplicate"]
    finally:
        s.close()


def test_a_block_logged_without_its_outcome_still_refuses_a_result(ws: Workspace) -> None:
    s = Scorer.open(ws)
    s.score(charge(1, ip_country="RU"))
    s.close()
    import sqlite3

    con = sqlite3.connect(ws.root / "serving" / "decisions.db")  # as a server before results logged it
    payload = con.execute("SELECT charge FROM decisions WHERE charge_id = 'ch_1'").fetchone()[0]
    con.execute(
        "UPDATE decisions SET charge = ?", (payload.replace('"outcome":"blocked"', '"outcome":null'),)
    )
    con.commit()
    con.close()
    s = Scorer.open(ws)
    try:
        assert s.log.get_charge("ch_1")["outcome"] is None  # type: ignore[index]
        with pytest.raises(Conflict, match="has outcome 'blocked'"):
            s.record_authorization("ch_1", "authorized")
    finally:
        s.close()
    assert export_charges(ws, s.log).outcomes == {"blocked": 1}


def test_a_result_another_server_logged_before_the_charge_counts_after_a_rebuild(ws: Workspace) -> None:
    import uuid

    from payfm.serving.postgres_log import PostgresDecisionLog
    from services import POSTGRES_URL, require_postgres

    require_postgres(POSTGRES_URL)
    import psycopg

    schema = f"payfm_test_{uuid.uuid4().hex[:8]}"
    try:
        a = Scorer.open(ws, decision_log=PostgresDecisionLog(POSTGRES_URL, schema=schema))
        b = Scorer.open(ws, decision_log=PostgresDecisionLog(POSTGRES_URL, schema=schema))
        for i in (1, 2, 3):
            a.score(charge(i))  # seqs 1-3, numbered by a
        b.record_authorization("ch_3", **DECLINED)  # seq 1, numbered by b: before its charge in the log
        a.close(snapshot=False)
        b.close(snapshot=False)
        rebuilt = Scorer.open(ws, decision_log=PostgresDecisionLog(POSTGRES_URL, schema=schema))
        try:
            assert _probe(rebuilt)["card.count_declined_1h"] == 1.0
        finally:
            rebuilt.close(snapshot=False)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
