"""`payfm review`: the review queue worked from a terminal, against a real decision service over HTTP (a
uvicorn server on a free port, in a thread): list, show, close, and clear one-line errors."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner, Result

from factories import usd_consistent
from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.serving.app import create_app
from payfm.serving.charges import EXAMPLE_FIELDS
from payfm.serving.keys import KeyStore
from payfm.serving.scorer import Scorer


def charge(i: int, amount: int, **kw: Any) -> dict[str, Any]:
    c = {"charge_id": f"ch_{i}", "created": f"2026-03-01T12:00:{i:02d}+00:00", **EXAMPLE_FIELDS}
    return usd_consistent(c | {"amount": amount, "amount_usd": amount, **kw}, kw)


@pytest.fixture()
def service(tmp_path: Path) -> Iterator[tuple[str, str, Scorer]]:
    """A decision service with rule `big` (review above $500) and the key of reviewer alice: (url, key)."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    rulesets.save(ws, "big: review if :amount_usd: > 500\n", activate=True, author="test")
    key = KeyStore(ws.root / "serving" / "keys.db").create("alice")
    scorer = Scorer.open(ws)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(scorer, KeyStore(ws.root / "serving" / "keys.db"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", key, scorer
    finally:
        server.should_exit = True
        thread.join(10)
        scorer.close(snapshot=False)


def run(args: list[str], url: str, key: str | None) -> Result:
    env = {"PAYFM_URL": url, "PAYFM_API_KEY": key or "", "COLUMNS": "200"}
    return CliRunner().invoke(cli, ["review", *args], env=env)


def test_an_analyst_lists_shows_and_closes_reviews(service: tuple[str, str, Scorer]) -> None:
    url, key, scorer = service
    for i, amount in ((1, 90_000), (2, 100), (3, 120_000)):
        scorer.score(charge(i, amount, card_fingerprint=f"fp_{i}"))
    listed = run(["list"], url, key)
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert [ln.split()[0] for ln in lines if ln.lstrip().startswith("ch_")] == [
        "ch_1",
        "ch_3",
    ]  # oldest first
    assert any("ch_3" in ln and "open" in ln and "big" in ln and "1,200.00 USD" in ln for ln in lines)
    assert "2 reviews (open)." in listed.output

    shown = run(["show", "ch_3"], url, key)
    assert shown.exit_code == 0, shown.output
    assert "Review of ch_3: open" in shown.output and "by rule big" in shown.output
    assert "amount                 120000" in shown.output and "Outcomes: none so far" in shown.output

    closed = run(["close", "ch_3", "--as", "refunded_as_fraud", "--note", "cardholder confirmed"], url, key)
    assert closed.exit_code == 0, closed.output
    assert closed.output.strip() == (
        "Closed ch_3 as refunded_as_fraud: fraud (label 1); recorded refunds re_review_ch_3."
    )
    (done,) = scorer.reviews("closed")
    assert done["charge_id"] == "ch_3" and done["reason"] == "refunded_as_fraud"
    assert done["note"] == "cardholder confirmed"
    again = run(["close", "ch_3", "--as", "refunded_as_fraud", "--note", "cardholder confirmed"], url, key)
    assert again.exit_code == 0 and "(it was closed so already: nothing new recorded)" in again.output
    other = run(["close", "ch_3", "--as", "approved"], url, key)
    assert other.exit_code == 1 and "Traceback" not in other.output
    assert (
        "The service answered 409: The review of charge 'ch_3' is already closed: as 'refunded_as_fraud'"
        in (other.output)
    )
    after = run(["show", "ch_3"], url, key)
    assert "closed as refunded_as_fraud at" in after.output and "note: cardholder confirmed" in after.output
    assert "refunds re_review_ch_3: " in after.output and "reason fraudulent" in after.output

    assert [
        ln.split()[0] for ln in run(["list"], url, key).output.splitlines() if ln.lstrip().startswith("ch_")
    ] == ["ch_1"]
    rows = [json.loads(x) for x in run(["list", "--status", "all", "--json"], url, key).output.splitlines()]
    assert [(r["charge_id"], r["status"]) for r in rows] == [("ch_1", "open"), ("ch_3", "closed")]


def test_every_page_with_all_and_a_hint_without(service: tuple[str, str, Scorer]) -> None:
    url, key, scorer = service
    for i in range(1, 8):
        scorer.score(charge(i, 90_000 + i, card_fingerprint=f"fp_{i}"))
    first = run(["list", "--limit", "3"], url, key)
    assert first.exit_code == 0 and "3 reviews (open); more: --all, or --limit up to 500." in first.output
    every = run(["list", "--limit", "3", "--all", "--json"], url, key)
    assert [json.loads(x)["charge_id"] for x in every.output.splitlines()] == [f"ch_{i}" for i in range(1, 8)]


def test_errors_are_one_line_naming_what_to_do(service: tuple[str, str, Scorer], tmp_path: Path) -> None:
    url, key, _ = service
    no_key = run(["list"], url, None)
    assert no_key.exit_code == 1 and "set PAYFM_API_KEY or give --key-file" in no_key.output
    wrong = run(["list"], url, "not-a-key")
    assert wrong.exit_code == 1 and "The service refused the API key (401)" in wrong.output
    missing = run(["show", "ch_404"], url, key)
    assert (
        missing.exit_code == 1
        and "The service answered 404: No review for charge 'ch_404'." in missing.output
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    down = run(["list"], f"http://127.0.0.1:{closed_port}", key)
    assert down.exit_code == 1 and f"Cannot reach the decision service at http://127.0.0.1:{closed_port}" in (
        down.output
    )
    bad_url = run(["list"], "localhost:8000", key)
    assert bad_url.exit_code == 2 and "must be the service's address, such as http://127.0.0.1:8000" in (
        bad_url.output
    )
    (tmp_path / "key").write_text(key + "\n")
    from_file = CliRunner().invoke(
        cli, ["review", "--url", url, "--key-file", str(tmp_path / "key"), "list"], env={"PAYFM_API_KEY": ""}
    )
    assert from_file.exit_code == 0 and "No open reviews." in from_file.output
    bad_reason = run(["close", "ch_1", "--as", "fraud"], url, key)
    assert bad_reason.exit_code == 2 and "'fraud' is not one of" in bad_reason.output
    for result in (no_key, wrong, missing, down, bad_url, bad_reason):
        assert "Traceback" not in result.output
