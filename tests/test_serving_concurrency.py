"""Concurrent decisions on one event loop (the HTTP hot path): group commit, retries racing the first attempt,
the durability setting, and the FastAPI route that documents the endpoint giving the Guard's answer."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from payfm.events.workspace import Workspace
from payfm.serving.app import create_app
from payfm.serving.decision import Decision
from payfm.serving.decision_log import open_log
from payfm.serving.errors import InvalidInput
from payfm.serving.scorer import Scorer
from test_serving_scorer import charge, served_workspace


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    return served_workspace(tmp_path / "ws")


def test_concurrent_decisions_and_racing_retries_count_each_charge_once(ws: Workspace) -> None:
    scorer = Scorer.open(ws)
    try:

        async def run() -> list[Decision]:
            # 40 charges, each sent twice at once (a client retrying before the first answer came back).
            calls = [scorer.score_async(charge(i % 40)) for i in range(80)]
            return list(await asyncio.gather(*calls))

        decisions = asyncio.run(run())
        by_id: dict[str, list[Decision]] = {}
        for d in decisions:
            by_id.setdefault(d.charge_id, []).append(d)
        assert len(by_id) == 40 and all(len(v) == 2 for v in by_id.values())
        for first, retry in by_id.values():
            assert first.to_json() == retry.to_json()  # the retry got the stored decision
        assert scorer.log.count("decisions") == 40
        # All 40 share one card: the next charge sees exactly 40 before it.
        assert scorer.score(charge(100)).features["card.count_charges_1h"] == 40.0
    finally:
        scorer.close(snapshot=False)


@pytest.mark.parametrize(("durability", "pragma"), [("fsync", 2), ("os", 1)])
def test_durability_sets_the_sqlite_sync_level(tmp_path: Path, durability: str, pragma: int) -> None:
    log = open_log("sqlite", tmp_path, durability)
    try:
        assert (
            log._write_connection().execute("PRAGMA synchronous").fetchone()[0] == pragma
        )  # 2 FULL, 1 NORMAL
    finally:
        log.close()
    with sqlite3.connect(tmp_path / "serving" / "decisions.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(InvalidInput, match="durability"):
        open_log("sqlite", tmp_path, "maybe")


def test_the_documenting_route_answers_like_the_guard(ws: Workspace) -> None:
    scorer = Scorer.open(ws)
    try:
        guard = create_app(scorer, None)
        with TestClient(guard) as fast, TestClient(guard.app) as routed:
            a = fast.post("/v1/charges/score", json=charge(1, amount_usd=90_000)).json()
            b = routed.post("/v1/charges/score", json=charge(1, amount_usd=90_000)).json()
            assert a == b and a["outcome"] == "manual_review"
            bad = routed.post("/v1/charges/score", json=charge(2, channel="telepathy"))
            assert bad.status_code == 422 and bad.json()["error"]["field"] == "channel"
            assert fast.post("/v1/charges/score", content=b"[1]").status_code == 422
            assert routed.post("/v1/charges/score", content=b"{").status_code == 422
    finally:
        scorer.close(snapshot=False)
