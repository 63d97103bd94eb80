"""Fraud labels: which outcome events make a charge fraud, and when the label is known."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa

from factories import T0, charges, disputes
from payfm.events.schema import SCHEMAS
from payfm.events.workspace import Workspace
from payfm.training.labels import fraud_labels


def _reviews(rows: list[tuple[str, str]], hours_after: int) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "charge_id": cid,
                "created": T0 + timedelta(hours=hours_after),
                "opened": T0,
                "closed_as": closed_as,
                "rule": "review if :risk_score: > 60",
                "risk_score": 70,
                "reviewer": "analyst",
                "note": None,
            }
            for cid, closed_as in rows
        ],
        schema=SCHEMAS["reviews"],
    )


def test_a_review_closed_as_refunded_as_fraud_is_a_fraud_label(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ch = charges(6)
    ids = ch["charge_id"].to_pylist()
    with ws.writer() as w:
        w.write("charges", ch)
        w.write("disputes", disputes([ids[0]], T0 + timedelta(days=3)))
        w.write(
            "reviews",
            _reviews([(ids[1], "refunded_as_fraud"), (ids[2], "approved"), (ids[3], "refunded")], 100),
        )
    got = fraud_labels(ws.connect(), horizon=timedelta(days=30)).to_pylist()
    by = {r["charge_id"]: r for r in got}
    assert [by[c]["is_fraud"] for c in ids] == [1, 1, 0, 0, 0, 0]
    # the label is known from the closure's own time; a positive is mature only once its horizon has passed,
    # as a negative is (else the recent days would hold the frauds labelled early and no genuine charge)
    assert by[ids[1]]["label_time"] == T0 + timedelta(hours=100) and not by[ids[1]]["mature"]
    assert not any(r["mature"] for r in got)  # T0 + 100 h is within every charge's 30 days
    # The log's "now" includes the closures (T0 + 100 h, later than the dispute at T0 + 72 h): the charge at
    # T0 + 28 h with a 60 h horizon is mature at 88 h, so mature now, and would not be without the closures.
    as_of_now = fraud_labels(ws.connect(), horizon=timedelta(hours=60)).to_pylist()
    assert {r["charge_id"]: r["mature"] for r in as_of_now}[ids[4]] is True
