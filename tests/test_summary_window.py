"""`payfm summary --from --to`: the figures of one window's charges and of their outcomes (an analyst's "what
happened last week" took hand-written SQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.errors import ConfigError
from payfm.events.schema import SCHEMAS
from payfm.events.summary import summarize
from payfm.events.workspace import Workspace
from payfm.synth import WorldConfig, generate_world
from payfm.training.labels import fraud_labels


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    w = Workspace.open(tmp_path_factory.mktemp("summary") / "ws", create=True)
    w.write_stream(generate_world(WorldConfig(charges=20_000, days=20, seed=3, fraud_rate=0.02)), "replace")
    return w


def test_a_window_counts_its_charges_and_their_outcomes_only(ws: Workspace) -> None:
    lo, hi = datetime(2026, 1, 8, tzinfo=UTC), datetime(2026, 1, 15, tzinfo=UTC)
    s = summarize(ws, lo, hi)
    con = ws.connect()
    try:
        window = "created >= ? AND created < ?"
        [(n, auth, fraud)] = con.execute(
            f"SELECT count(*), count_if(outcome = 'authorized'), count(scenario) FROM charges WHERE {window}",
            [lo, hi],
        ).fetchall()
        [(refunds,)] = con.execute(
            f"SELECT count(*) FROM refunds WHERE charge_id IN (SELECT charge_id FROM charges WHERE {window})",
            [lo, hi],
        ).fetchall()
        [(all_refunds,)] = con.execute("SELECT count(*) FROM refunds").fetchall()
        mine = f"charge_id IN (SELECT charge_id FROM charges WHERE {window})"
        [(disputes, fraud_disputes, efws)] = con.execute(
            f"SELECT (SELECT count(*) FROM disputes WHERE {mine}), "
            f"(SELECT count(*) FROM disputes WHERE reason = 'fraudulent' AND {mine}), "
            f"(SELECT count(*) FROM early_fraud_warnings WHERE {mine})",
            [lo, hi] * 3,
        ).fetchall()
    finally:
        con.close()
    assert (s.charges, s.authorized, sum(s.fraud_by_scenario.values()), s.refunds) == (
        n,
        auth,
        fraud,
        refunds,
    )
    assert 0 < refunds < all_refunds and s.window == (lo, hi)
    assert (s.disputes, s.fraud_disputes, s.early_fraud_warnings) == (disputes, fraud_disputes, efws)
    assert s.delays["refunds"].events == refunds and s.delays["early fraud warnings"].events == efws
    assert efws > 0 and s.labelled_fraud_charges <= fraud_disputes + efws
    assert s.first is not None and s.first >= "2026-01-08" and s.last is not None and s.last < "2026-01-15"
    whole = summarize(ws)
    assert whole.refunds == all_refunds and whole.charges > s.charges and whole.window == (None, None)
    assert summarize(ws, "2026-01-08").charges + summarize(ws, None, "2026-01-08").charges == whole.charges
    with pytest.raises(ConfigError, match="must end after it starts"):
        summarize(ws, hi, lo)


def test_cli_summary_of_a_window_says_which(ws: Workspace) -> None:
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "summary", "--from", "2026-01-08", "--to", "2026-01-15"])
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert (
        "Event log: charges created 2026-01-08T00:00:00+00:00 .. 2026-01-15T00:00:00+00:00, "
        "and their outcomes" in flat
    )
    assert f"charges │ {summarize(ws, '2026-01-08', '2026-01-15').charges:,} │" in flat
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "summary", "--from", "soon"])
    assert (
        r.exit_code == 1 and "--from must be an ISO date or time" in r.output and "Traceback" not in r.output
    )


def test_charges_labelled_fraud_count_what_the_labels_count(tmp_path: Path) -> None:
    """A review closed as refunded_as_fraud labels its charge fraud (the training labels, the evaluation and
    the backtest read it): the summary counted fraudulent disputes and EFWs only."""
    w = Workspace.open(tmp_path / "ws", create=True)
    w.write_stream(generate_world(WorldConfig(charges=3_000, days=10, seed=5, fraud_rate=0.02)), "replace")
    before = summarize(w).labelled_fraud_charges
    con = w.connect()
    try:
        clean = con.execute(
            "SELECT charge_id, created FROM charges WHERE outcome = 'authorized' AND charge_id NOT IN "
            "(SELECT charge_id FROM disputes UNION SELECT charge_id FROM early_fraud_warnings) "
            "ORDER BY charge_id LIMIT 2"
        ).fetchall()
    finally:
        con.close()
    rows = [
        {"charge_id": cid, "created": at + timedelta(days=1), "opened": at, "closed_as": closed_as}
        for (cid, at), closed_as in zip(clean, ("refunded_as_fraud", "approved"), strict=True)
    ]
    with w.writer() as writer:
        writer.write("reviews", pa.Table.from_pylist(rows, schema=SCHEMAS["reviews"]))
    assert summarize(w).labelled_fraud_charges == before + 1
    assert fraud_labels(w.connect())["is_fraud"].to_numpy().sum() == before + 1
