"""A decision's features in the decision log: values in a list, their names once per log (feature_layouts);
read back as the object the scorer logged, on both backends, in a process that never met the layout, and
from rows logged before layouts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import test_decision_log
from payfm.serving.decision_codec import LAYOUT, VALUES, decode_decision, encode_decision, layout_id, remember
from payfm.serving.decision_log import DecisionLog, DecisionRecord
from payfm.serving.sqlite_log import SQLiteDecisionLog

any_log = test_decision_log.any_log  # the fixtures: each test on SQLite and on PostgreSQL
pg_log = test_decision_log.pg_log

# Values of every kind a feature takes: floats that need all 17 digits, None, integers, a negative zero.
FEATURES: dict[str, Any] = {
    "card.count_charges_all": 3.0,
    "merchant.sum_amount_usd_30d": 19.989999771118164,
    "ip.count_1h": None,
    "email.share": 0.1 + 0.2,
    "request.local_hour": 23,
    "card.since_first": -0.0,
}


def _decision(cid: str, features: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "charge_id": cid,
        "outcome": "authorized",
        "risk_score": 7,
        "reasons": [{"feature": "card.count_charges_all", "value": 3.0, "text": "3 charges"}],
        "features": dict(FEATURES if features is None else features),
        "embedding": None,
    }


def _record(seq: int, decision: dict[str, Any]) -> DecisionRecord:
    cid = decision["charge_id"]
    charge = {"charge_id": cid, "created_us": seq}
    return DecisionRecord.of(
        seq, cid, seq, "2026-01-01T00:00:00+00:00", "authorized", charge, decision, False
    )


def _stored(log: DecisionLog, cid: str) -> dict[str, Any]:
    return dict(json.loads(log._fetch("SELECT decision FROM decisions WHERE charge_id = ?", (cid,))[0][0]))


def test_a_decision_reads_back_as_logged_with_its_names_stored_once(any_log: DecisionLog) -> None:
    other = {"card.count_charges_all": 1.0, "card.count_1h": 2.0}  # a second feature set (another model)
    for i, d in enumerate([_decision("ch_1"), _decision("ch_2"), _decision("ch_3", other)], start=1):
        any_log.write(_record(i, d))
    got = any_log.get_decision("ch_1")
    assert got == _decision("ch_1")
    assert list(got["features"]) == list(FEATURES)  # in the order logged
    assert str(got["features"]["card.since_first"]) == "-0.0"
    assert any_log.get_decision("ch_3")["features"] == other  # type: ignore[index]
    stored = _stored(any_log, "ch_2")
    assert "features" not in stored and stored[VALUES] == list(FEATURES.values())
    assert stored[LAYOUT] == layout_id(tuple(FEATURES))
    layouts = dict(any_log._fetch("SELECT id, names FROM feature_layouts"))
    assert {k: json.loads(v) for k, v in layouts.items()} == {
        layout_id(tuple(FEATURES)): list(FEATURES),
        layout_id(tuple(other)): list(other),
    }


def test_a_decision_without_features_is_stored_as_it_is(any_log: DecisionLog) -> None:
    for i, features in enumerate([{}, None], start=1):
        d = {**_decision(f"ch_{i}"), "features": features}
        any_log.write(_record(i, d))
        assert any_log.get_decision(f"ch_{i}") == _stored(any_log, f"ch_{i}") == d
    assert any_log._fetch("SELECT count(*) FROM feature_layouts")[0][0] == 0


def test_a_row_logged_before_layouts_reads_as_it_is(any_log: DecisionLog) -> None:
    old = _decision("ch_old")
    with any_log._reading() as con:
        con.execute(
            any_log._sql("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?)"),
            ("ch_old", 1, 1, "2026-01-01T00:00:00+00:00", "authorized", "{}", json.dumps(old)),
        )
    assert any_log.get_decision("ch_old") == old


def test_a_retry_that_raced_the_first_write_gets_the_stored_decision(any_log: DecisionLog) -> None:
    first = _decision("ch_1")
    any_log.write(_record(1, first))
    second = _decision("ch_1", {"card.count_charges_all": 9.0})  # the same id, decided again meanwhile
    assert any_log.write(_record(2, second)) == first  # read back inside the writer's transaction


def test_a_batch_rolled_back_leaves_its_layout_to_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = SQLiteDecisionLog(tmp_path / "d.db")
    try:
        with monkeypatch.context() as m:  # the batch's transaction fails after the layout's insert
            m.setattr(log, "_apply", lambda cur, r: (_ for _ in ()).throw(RuntimeError("disk gone")))
            with pytest.raises(RuntimeError, match="disk gone"):
                log.write(_record(1, _decision("ch_1")))
        assert log._fetch("SELECT count(*) FROM feature_layouts")[0][0] == 0  # rolled back with it
        log.write(_record(2, _decision("ch_2")))
        assert log._fetch("SELECT count(*) FROM feature_layouts")[0][0] == 1  # so inserted again
    finally:
        log.close()
    assert _read_in_a_new_process(tmp_path / "d.db", "ch_2") == _decision("ch_2")


def _read_in_a_new_process(db: Path, cid: str) -> Any:
    """``get_decision(cid)`` of the log at ``db``, read by a process that never met its layouts."""
    code = (
        "import json, sys; from payfm.serving.sqlite_log import SQLiteDecisionLog; "
        "log = SQLiteDecisionLog(sys.argv[1]); print(json.dumps(log.get_decision(sys.argv[2])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(db), cid], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_a_process_that_never_met_a_layout_reads_it_from_the_log(tmp_path: Path) -> None:
    names = {f"zz.feature_{i}": float(i) for i in range(200)}  # met by no other test
    log = SQLiteDecisionLog(tmp_path / "d.db")
    try:
        log.write(_record(1, _decision("ch_1", names)))
    finally:
        log.close()
    got = _read_in_a_new_process(tmp_path / "d.db", "ch_1")
    assert got == _decision("ch_1", names) and list(got["features"]) == list(names)


def test_a_layout_that_does_not_match_its_id_is_refused() -> None:
    lid = layout_id(("a.x", "a.y"))
    assert remember(lid, '["a.x", "a.y"]') == ("a.x", "a.y")
    with pytest.raises(ValueError, match=f"feature layout '{lid}' does not match its names"):
        remember(lid, '["a.y", "a.x"]')  # the same names in another order would mislabel every value
    text, got = encode_decision({"features": {"q.never_met": 1.0}})
    assert got is not None
    with pytest.raises(ValueError, match="holds no feature layout '0000000000000000'"):
        decode_decision(text.replace(got, "0000000000000000"), lambda lid: None)


def test_no_feature_name_is_in_the_stored_text() -> None:
    features = {f"merchant.sum_amount_usd_{i}d": float(i % 3) for i in range(158)}
    text, lid = encode_decision(_decision("ch_1", features))
    assert not any(name in text for name in features) and lid in text
    assert decode_decision(text, lambda lid: None) == _decision("ch_1", features)


def test_the_sql_of_serving_md_reads_a_decisions_features(tmp_path: Path) -> None:
    doc = (Path(__file__).parents[1] / "docs" / "serving.md").read_text()
    sql = doc.split("```sql\n", 1)[1].split("```", 1)[0]
    assert "feature_layouts" in sql
    log = SQLiteDecisionLog(tmp_path / "d.db")
    try:
        log.write(_record(1, _decision("ch_1")))
        log.write(_record(2, _decision("ch_2", {"card.count_charges_all": 5.0})))
        got = log._fetch(sql)
    finally:
        log.close()
    assert [(name, value) for name, value in got] == [
        (n, None if v is None else float(v)) for n, v in FEATURES.items()
    ]


def test_a_new_sqlite_log_takes_8_kb_pages_and_an_older_one_keeps_its_own(tmp_path: Path) -> None:
    import sqlite3

    new = SQLiteDecisionLog(tmp_path / "new.db")
    try:
        assert new._fetch("PRAGMA page_size") == [(8192,)]
    finally:
        new.close()
    with sqlite3.connect(tmp_path / "old.db") as con:  # a log created before, with SQLite's 4 KB pages
        con.execute("PRAGMA page_size=4096")
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    old = SQLiteDecisionLog(tmp_path / "old.db")
    try:
        old.write(_record(1, _decision("ch_1")))
        assert old._fetch("PRAGMA page_size") == [(4096,)] and old.get_decision("ch_1") == _decision("ch_1")
    finally:
        old.close()


def test_a_layout_whose_commit_the_database_lost_is_written_again_on_the_new_connection(
    pg_log: DecisionLog,
) -> None:
    """Found by a review: PostgreSQL under synchronous_commit=off (or a failover to a replica behind) can lose
    a commit it acknowledged, its layout with it; the writer, sure it had stored the layout, went on logging
    decisions no other process could read."""
    import psycopg

    from services import POSTGRES_URL

    pg_log.write(_record(1, _decision("ch_1")))
    pid = pg_log._wcon.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[attr-defined]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:  # the commit lost, the connection gone
        admin.execute(f'DELETE FROM "{pg_log.schema}".feature_layouts')  # type: ignore[attr-defined]
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    pg_log.write(_record(2, _decision("ch_2")))  # on a new connection
    assert [lid for (lid,) in pg_log._fetch("SELECT id FROM feature_layouts")] == [layout_id(tuple(FEATURES))]
