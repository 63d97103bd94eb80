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
    sock = socket.socket()  # bound here and handed to uvicorn: no other process can be given the port
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(scorer, KeyStore(ws.root / "serving" / "keys.db"))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the test server did not start within 10 s"
    try:
        yield f"http://127.0.0.1:{port}", key, scorer
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
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
        "Closed ch_3 as refunded_as_fraud: fraud (label 1); recorded refund re_review_ch_3."
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
    assert (
        first.exit_code == 0 and "3 reviews of 7 (open); more: --all, or --limit up to 500." in first.output
    )
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
    bad_url = run(["list"], "ftp://127.0.0.1:8000", key)
    assert bad_url.exit_code == 2 and "must be the service's address, such as http://127.0.0.1:8000" in (
        bad_url.output
    )
    assert run(["list"], url.removeprefix("http://"), key).exit_code == 0  # HOST:PORT, as replay --http takes
    # A key pasted into the URL (PAYFM_URL=$PAYFM_API_KEY, a path, a query) is never shown.
    encoded = "".join(f"%{ord(c):02X}" for c in key)
    for pasted in (key, f"http://{key}", f"{url}/{key}", f"{url}?k={key}", f"{url}/{encoded}"):
        said = run(["list"], pasted, key)
        assert said.exit_code in (1, 2) and key not in said.output and "Traceback" not in said.output, (
            said.output
        )
    (tmp_path / "key").write_text(key + "\n")
    from_file = CliRunner().invoke(
        cli, ["review", "--url", url, "--key-file", str(tmp_path / "key"), "list"], env={"PAYFM_API_KEY": ""}
    )
    assert from_file.exit_code == 0 and "No open reviews." in from_file.output
    empty = run(["show", " "], url, key)
    assert empty.exit_code == 1 and "CHARGE_ID is empty" in empty.output
    after = CliRunner().invoke(cli, ["review", "list", "--url", url, "--key-file", str(tmp_path / "key")])
    assert after.exit_code == 0 and "No open reviews." in after.output  # the options after the subcommand
    bad_reason = run(["close", "ch_1", "--as", "fraud"], url, key)
    assert bad_reason.exit_code == 2 and "'fraud' is not one of" in bad_reason.output
    for result in (no_key, wrong, missing, down, bad_url, bad_reason):
        assert "Traceback" not in result.output


def test_values_are_shown_as_text_never_markup_and_a_nul_id_is_no_review(
    service: tuple[str, str, Scorer],
) -> None:
    """A charge id or merchant id may hold [ and ]: rich read them as markup (an id shown cut, a link, or
    a traceback for '[/x]'). A %00 in a path is no review on either log backend (PostgreSQL refuses NUL)."""
    url, key, scorer = service
    scorer.score(charge(1, 90_000, charge_id="ord[abc]x", merchant_id="m[/m]", card_fingerprint="fp_a"))
    scorer.score(charge(2, 90_000, charge_id="ch[/]", card_fingerprint="fp_b"))
    listed = run(["list"], url, key)
    assert listed.exit_code == 0, listed.output
    assert "ord[abc]x" in listed.output and "m[/m]" in listed.output and "ch[/]" in listed.output
    shown = run(["show", "ord[abc]x"], url, key)
    assert shown.exit_code == 0 and "Review of ord[abc]x: open" in shown.output
    missing = run(["show", "a\x00b"], url, key)
    assert missing.exit_code == 1 and "The service answered 404: No review for charge" in missing.output


def test_the_key_is_never_sent_on_a_redirect_nor_shown(
    service: tuple[str, str, Scorer], tmp_path: Path
) -> None:
    """urllib follows a redirect with the Authorization header, to any host: the CLI follows none. A key
    file's first line is the key; a key with other characters is refused without being quoted."""
    import http.server

    seen: list[str | None] = []

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    url, key, _ = service
    moved = run(["list"], f"http://127.0.0.1:{server.server_address[1]}", key)
    thread.join(10)
    server.server_close()
    assert moved.exit_code == 1 and "answered 302 (a redirect, not followed" in moved.output
    assert len(seen) == 1  # one request, to the address given; none to the redirect's
    (tmp_path / "two").write_text(f"\n{key}\nsecond line\n")
    first_line = CliRunner().invoke(
        cli, ["review", "--url", url, "--key-file", str(tmp_path / "two"), "list"]
    )
    assert first_line.exit_code == 0, first_line.output
    for bad in (f"{key}\nx", f"{key}\u2603"):
        refused = run(["list"], url, bad)
        assert refused.exit_code == 1 and "must be one word of printable ASCII characters" in refused.output
        assert key not in refused.output and "Traceback" not in refused.output


def test_list_keeps_one_rules_reviews(service: tuple[str, str, Scorer]) -> None:
    url, key, scorer = service
    for i in (1, 2):
        scorer.score(charge(i, 90_000, card_fingerprint=f"fp_{i}"))
    kept = run(["list", "--rule", "big", "--json"], url, key)
    assert [json.loads(x)["charge_id"] for x in kept.output.splitlines()] == ["ch_1", "ch_2"]
    none = run(["list", "--rule", "nobody", "--min-risk", "50"], url, key)
    assert none.exit_code == 0 and none.output.strip() == (
        "No open reviews sent by rule 'nobody' scored 50 or more. The queue holds 2 open reviews of other "
        "rules: `payfm review list` without --rule lists them with their rules' names."
    )
    typo = run(["list", "--rule", "bgi"], url, key)  # a misspelt rule, alone: the main case
    assert typo.exit_code == 0 and typo.output.strip() == (
        "No open reviews sent by rule 'bgi'. The queue holds 2 open reviews of other rules: `payfm review "
        "list` without --rule lists them with their rules' names."
    )
    riskier = run(["list", "--rule", "big", "--min-risk", "50"], url, key)  # the rule's, none that risky
    assert riskier.output.strip() == "No open reviews sent by rule 'big' scored 50 or more."
    closed = run(["list", "--rule", "nobody", "--status", "closed"], url, key)
    assert closed.output.strip() == "No closed reviews sent by rule 'nobody'."  # none of any rule
    scored = run(["list", "--min-risk", "1", "--json"], url, key)
    assert scored.exit_code == 0 and scored.output == ""  # no model served: no score, none kept
    bad = run(["list", "--min-risk", "101"], url, key)
    assert bad.exit_code == 2 and "101 is not in the range 0<=x<=100" in bad.output


def test_show_says_who_closed_it_and_close_says_what_it_recorded(service: tuple[str, str, Scorer]) -> None:
    """An analyst's wishes: who closed a review and its label; a fraud closure that records no refund
    says why; a card number in --note is refused before anything is sent."""
    url, key, scorer = service
    scorer.score(charge(1, 90_000, card_fingerprint="fp_1"))
    scorer.score(
        charge(2, 90_000, card_fingerprint="fp_2", outcome="issuer_declined", decline_code="do_not_honor")
    )
    closed = run(["close", "ch_1", "--as", "disputed", "--note", "chargeback expected"], url, key)
    assert (
        closed.output.strip() == "Closed ch_1 as disputed: fraud (label 1); recorded dispute dp_review_ch_1."
    )
    shown = run(["show", "ch_1"], url, key)
    assert "Review of ch_1: closed as disputed at 20" in shown.output
    assert "by alice: fraud (label 1)" in shown.output
    assert "disputes dp_review_ch_1: created " in shown.output and "amount 900.00 USD" in shown.output
    assert "Reasons (the model's, largest first): none" in shown.output  # (no model served)
    (item,) = [
        json.loads(x) for x in run(["list", "--status", "closed", "--json"], url, key).output.splitlines()
    ]
    assert item["reviewer"] == "alice" and item["label"] == 1
    declined = run(["close", "ch_2", "--as", "refunded_as_fraud"], url, key)
    assert (
        declined.exit_code == 0 and "; no refund in this answer: the charge moved no money" in declined.output
    )
    carded = run(["close", "ch_2", "--as", "approved", "--note", "card 4242 4242 4242 4242 called"], url, key)
    assert carded.exit_code == 1 and "--note holds a full card number" in carded.output
    assert "4242 4242 4242 4242" not in carded.output and "Nothing was sent." in carded.output


def test_a_closure_without_an_answer_says_a_retry_is_safe(service: tuple[str, str, Scorer]) -> None:
    """A POST that was sent and never answered may have been recorded: not "cannot reach"."""
    import socket as sockets

    from payfm.cli import review as review_cli

    _, key, _ = service
    with sockets.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()  # accepts the connection, never answers
        port = s.getsockname()[1]
        old = review_cli.TIMEOUT_S
        review_cli.TIMEOUT_S = 0.5
        try:
            result = run(["close", "ch_1", "--as", "approved"], f"http://127.0.0.1:{port}", key)
        finally:
            review_cli.TIMEOUT_S = old
    assert (
        result.exit_code == 1 and "No answer from the decision service at http://127.0.0.1:" in result.output
    )
    assert "the closure may be recorded or not. Run the same command again" in " ".join(result.output.split())


def test_a_narrow_terminal_leaves_columns_out_whole_and_says_so(
    service: tuple[str, str, Scorer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """rich squeezed the columns that did not fit, down to an amount of "1,50" (an analyst's session)."""
    from payfm.cli.render import console

    url, key, scorer = service
    scorer.score(charge(1, 150_000, card_fingerprint="fp_1"))  # columns 6, 12, 6, 4, 4, 12, 8 and 12 wide
    cases = ((120, ""), (70, "top reason left out"), (50, "opened (UTC), merchant, top reason left out"))
    for width, gone in cases:
        monkeypatch.setattr(console, "width", width)
        out = " ".join(run(["list"], url, key).output.split())
        assert "1,500.00 USD" in out and "ch_1" in out, (width, out)  # never cut
        assert (not gone) == ("a narrow terminal" not in out) and gone in out, (width, out)
    # Too narrow for even charge, status and amount (a Stripe-length id): a line each, nothing cut.
    scorer.score(charge(2, 150_000, charge_id="ch_3MtwBwLkdIwHu7ix28a3tqPa", card_fingerprint="fp_2"))
    monkeypatch.setattr(console, "width", 30)
    out = run(["list"], url, key).output
    assert "ch_3MtwBwLkdIwHu7ix28a3tqPa" in out and out.count("1,500.00 USD") == 2, out


GEO = "geo: review if :card_country: != :ip_country: and :amount_usd: > 100 and :card.first_seen: = 1"


def test_show_gives_the_rule_that_sent_it_and_the_values_it_read(service: tuple[str, str, Scorer]) -> None:
    """A reviewer saw "by rule geo" only, not what the rule tested nor what the charge held: the rule's line
    as its ruleset version wrote it, and each attribute it read as the rule read it (dollars)."""
    url, key, scorer = service
    rulesets.save(
        scorer.ws,
        f"# v2\n{GEO}\n",
        activate=True,
        author="test",
    )
    scorer.reload()
    scorer.score(charge(7, 25_000, card_fingerprint="fp_7", card_country="DE", ip_country="TR"))
    item = scorer.review("ch_7")
    assert item["rule_detail"] == {
        "ruleset_version": 2,
        "condition": GEO,
        "values": {"amount_usd": 250.0, "card.first_seen": 1.0, "card_country": "DE", "ip_country": "TR"},
    }
    shown = run(["show", "ch_7"], url, key)
    assert shown.exit_code == 0, shown.output
    assert "rule (ruleset v2): geo: review if :card_country: != :ip_country:" in shown.output
    assert (
        "it read: amount_usd = 250.0, card.first_seen = 1.0, card_country = 'DE', ip_country = 'TR'"
        in shown.output
    )
