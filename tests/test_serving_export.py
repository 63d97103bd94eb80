"""`payfm serve export`: the charges the service decided, into the event log, so their outcomes label them."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

import test_serving_scorer
from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.serving.decision_log import open_log
from payfm.serving.errors import InvalidInput
from payfm.serving.export import export_charges
from payfm.serving.scorer import Scorer
from payfm.training.labels import fraud_labels
from test_serving_scorer import charge

ws = test_serving_scorer.ws  # the fixture: a workspace with a production model and the tiny ruleset


def _labels(w: Workspace) -> dict[str, int]:
    t = fraud_labels(w.connect())
    return dict(zip(t["charge_id"].to_pylist(), t["is_fraud"].to_pylist(), strict=True))


def test_decided_charges_are_appended_once_with_a_known_outcome_and_then_labelled(
    ws: Workspace, scorer: Scorer
) -> None:
    scorer.score(charge(1, outcome="issuer_declined", decline_code="insufficient_funds"))  # processor's
    scorer.score(charge(2, ip_country="RU"))  # the tiny ruleset blocks it
    scorer.score(charge(3, credential_changed_at="2026-02-01T00:00:00.123456Z"))  # let through: unknown
    scorer.score(charge(4, outcome="authorized"))
    dispute = {"dispute_id": "dp_4", "charge_id": "ch_4", "created": "2026-03-20T00:00:00Z"}
    scorer.record_outcome("disputes", dispute | {"reason": "fraudulent", "amount": 100, "currency": "usd"})
    scorer.log.flush()
    assert "ch_4" not in _labels(ws)  # its dispute is in the event log, its charge is not: no label

    first = export_charges(ws, scorer.log)
    assert (first.decided, first.exported, first.already, first.unknown_outcome) == (4, 3, 0, 1)
    assert first.outcomes == {"authorized": 1, "blocked": 1, "issuer_declined": 1}
    rows = {r["charge_id"]: r for r in ws.read("charges").to_pylist()}
    assert sorted(rows) == ["ch_1", "ch_2", "ch_4"]
    assert (rows["ch_1"]["outcome"], rows["ch_1"]["decline_code"]) == (
        "issuer_declined",
        "insufficient_funds",
    )
    assert rows["ch_2"]["outcome"] == "blocked" and rows["ch_2"]["ip_country"] == "RU"
    assert rows["ch_4"]["created"].isoformat() == "2026-03-01T12:00:04+00:00"
    assert _labels(ws)["ch_4"] == 1  # the dispute the service appended now labels its charge

    again = export_charges(ws, scorer.log)
    assert (again.exported, again.already, again.unknown_outcome) == (0, 3, 1) and ws.count("charges") == 3

    assumed = export_charges(ws, scorer.log, assume_authorized=True)
    assert (assumed.exported, assumed.already, assumed.outcomes) == (1, 3, {"authorized": 1})
    ch3 = ws.read("charges").filter(pc.equal(ws.read("charges")["charge_id"], "ch_3")).to_pylist()[0]
    assert ch3["outcome"] == "authorized"
    assert (
        ch3["credential_changed_at"].isoformat() == "2026-02-01T00:00:00.123456+00:00"
    )  # exact microseconds


def test_a_charge_with_a_refund_dispute_or_efw_logged_is_exported_as_authorized(
    ws: Workspace, scorer: Scorer
) -> None:
    """Found by an audit: a charge let through without a reported result kept its appended refund (or
    dispute, EFW, closure-implied outcome) without its charge in the event log, as no export took it.
    Those follow a successful charge only (a decline reported after one is refused): exported authorized."""
    for i in (1, 2, 3):
        scorer.score(charge(i))  # let through, no result reported
    refund = {"refund_id": "re_1", "charge_id": "ch_1", "created": "2026-03-05T00:00:00Z", "amount": 100}
    scorer.record_outcome("refunds", refund | {"currency": "usd", "reason": "requested_by_customer"})
    efw = {"efw_id": "efw_2", "charge_id": "ch_2", "created": "2026-03-06T00:00:00Z", "fraud_type": "misc"}
    scorer.record_outcome("early_fraud_warnings", efw)
    scorer.log.flush()
    said = " ".join(CliRunner().invoke(cli, ["-w", str(ws.root), "serve", "export"]).output.split())
    assert "2 appended to the event log (2 authorized)" in said, said
    assert "2 of them without a reported result, as authorized: a refund, dispute or early fraud" in said
    assert "1 left out" in said
    assert sorted(ws.read("charges")["charge_id"].to_pylist()) == ["ch_1", "ch_2"]
    orphans = (
        ws.connect()
        .sql(
            "SELECT count(*) FROM (SELECT charge_id FROM refunds UNION ALL SELECT charge_id FROM "
            "early_fraud_warnings) o ANTI JOIN charges USING (charge_id)"
        )
        .fetchall()[0][0]
    )
    assert orphans == 0 and _labels(ws)["ch_2"] == 1  # its EFW labels it now
    again = export_charges(ws, scorer.log)
    assert (again.exported, again.proven, again.already, again.unknown_outcome) == (0, 0, 2, 1)


def test_cli_export_reports_and_refuses_a_workspace_without_a_decision_log(
    tmp_path: Path, ws: Workspace
) -> None:
    empty = Workspace.open(tmp_path / "empty", create=True)
    r = CliRunner().invoke(cli, ["-w", str(empty.root), "serve", "export"])
    assert r.exit_code == 1 and "has no decision log" in r.output and "Traceback" not in r.output
    s = Scorer.open(ws)
    try:
        s.score(charge(1, outcome="authorized"))
        s.score(charge(2))
    finally:
        s.close()
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "serve", "export"])
    assert r.exit_code == 0, r.output
    assert "2 decided charges: 1 appended to the event log (1 authorized), 0 there already." in r.output
    assert "1 left out" in r.output and "--assume-authorized" in r.output


def test_a_server_started_after_an_export_counts_each_charge_once(ws: Workspace) -> None:
    """The exported charges are in both logs: a state rebuilt from them must not count them twice."""
    s = Scorer.open(ws)
    try:
        for i in range(1, 5):  # one card, four charges within the hour
            s.score(charge(i, outcome="authorized"))
    finally:
        s.close(snapshot=False)
    log = open_log("sqlite", ws.root)
    try:
        assert export_charges(ws, log).exported == 4
    finally:
        log.close()
    for snap in (ws.root / "serving" / "state").glob("*"):
        snap.unlink()  # a first start: from the event log (the exported charges) and the decision log (too)
    s = Scorer.open(ws)
    try:
        d = s.score(charge(5, outcome="authorized"))
    finally:
        s.close(snapshot=False)
    assert d.features["card.count_charges_1h"] == 4.0


def test_a_charge_the_event_log_refuses_is_named_and_the_others_exported(
    ws: Workspace, scorer: Scorer
) -> None:
    scorer.score(charge(1, outcome="authorized"))
    scorer.score(charge(2, outcome="authorized"))
    scorer.score(charge(3, outcome="authorized"))
    scorer.log.flush()
    with scorer.log._reading() as con:  # a charge logged under an older rule, which the event log now refuses
        payload = json.loads(
            con.execute("SELECT charge FROM decisions WHERE charge_id = 'ch_2'").fetchone()[0]
        )
        payload["card_brand"] = "not-a-brand"
        con.execute("UPDATE decisions SET charge = ? WHERE charge_id = 'ch_2'", (json.dumps(payload),))
    first = export_charges(ws, scorer.log)
    assert first.exported == 2 and list(first.refused) == ["ch_2"] and "card_brand" in first.refused["ch_2"]
    assert sorted(ws.read("charges")["charge_id"].to_pylist()) == ["ch_1", "ch_3"]
    again = export_charges(ws, scorer.log)  # refused again, nothing else appended, no unknown counted twice
    assert (again.exported, again.already, list(again.refused), again.unknown_outcome) == (0, 2, ["ch_2"], 0)


def test_a_lone_surrogate_is_refused_when_decided(scorer: Scorer) -> None:
    with pytest.raises(InvalidInput, match="'customer_id' of the charge is not valid Unicode") as e:
        scorer.score(charge(1, customer_id="cus_\ud800x"))
    assert e.value.field == "customer_id"
    with pytest.raises(InvalidInput, match="between 1970 and 2100"):
        scorer.score(charge(2, created="0001-01-01T00:00:00+23:59"))


def test_two_exports_at_once_append_each_charge_once(ws: Workspace, scorer: Scorer) -> None:
    for i in range(1, 40):
        scorer.score(charge(i, outcome="authorized"))
    scorer.log.flush()
    results: list[int] = []

    def run() -> None:
        log = open_log("sqlite", ws.root)
        try:
            results.append(export_charges(ws, log, wait_s=30).exported)
        finally:
            log.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = ws.read("charges")["charge_id"].to_pylist()
    assert sorted(results) == [0, 0, 39] and len(ids) == len(set(ids)) == 39


def test_cli_export_refuses_a_decision_log_that_does_not_exist(tmp_path: Path, ws: Workspace) -> None:
    missing = tmp_path / "typo" / "decisions.db"
    r = CliRunner().invoke(
        cli, ["-w", str(ws.root), "serve", "export", "--decision-log", f"sqlite:///{missing}"]
    )
    assert r.exit_code == 1 and "No decision log at" in r.output and not missing.parent.exists()


def test_assume_authorized_leaves_out_a_charge_sent_to_3ds(ws: Workspace) -> None:
    """A charge the service answered request_3ds went to no authorization (the authenticated attempt is a
    charge of its own): --assume-authorized exported it as authorized (a fraud analyst's audit)."""
    from payfm.rules import rulesets

    rulesets.save(ws, "challenge: request_3ds if :ip_country: = 'RU'\n", activate=True, set_name="tiny")
    s = Scorer.open(ws)
    try:
        assert s.score(charge(1, ip_country="RU")).outcome == "request_3ds"
        assert s.score(charge(2, ip_country="RU", three_ds="authenticated")).outcome != "request_3ds"
        summary = export_charges(ws, s.log, assume_authorized=True)
    finally:
        s.close(snapshot=False)
    assert (summary.exported, summary.unknown_outcome) == (1, 1)
    assert ws.read("charges")["charge_id"].to_pylist() == ["ch_2"]
