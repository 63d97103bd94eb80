"""Replay in process: the state is warmed with the history before the period only, and every replayed
decision sees exactly the features a single online pass over the whole log gives (point in time)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set
from payfm.features.parity import log_outcomes, replay
from payfm.rules import rulesets
from payfm.serving.decision import Decision
from payfm.serving.replay import replay_in_process
from payfm.serving.scorer import Scorer, ScorerConfig
from payfm.synth import WorldConfig, generate_world

RULES = "big: review if :amount_usd: > 300\nburst: request_3ds if :card.count_charges_1h: > 2\n"


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    w = Workspace.open(tmp_path_factory.mktemp("replay") / "ws", create=True)
    w.write_stream(generate_world(WorldConfig(charges=4000, days=4, seed=7)), "replace")
    rulesets.save(w, RULES, activate=True, author="test")
    return w


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
        return a is None and (b is None or math.isnan(b))
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_replay_of_the_last_day_sees_point_in_time_features(ws: Workspace) -> None:
    charges = ws.read("charges")
    last = pc.max(charges["created"]).as_py()
    start = datetime(last.year, last.month, last.day, tzinfo=last.tzinfo)
    in_period = pc.sum(pc.greater_equal(charges["created"], start)).as_py()
    # A serving snapshot holding the whole log must not leak into the replay's state.
    Scorer.open(ws, config=ScorerConfig(warm_from_event_log=True)).close()
    decisions: list[Decision] = []
    rep = replay_in_process(ws, start, None, on_decision=decisions.append)
    assert rep.charges == len(decisions) == in_period > 100
    assert rep.warmed == charges.num_rows - in_period
    assert sum(rep.mix.values()) == rep.charges and rep.mix["manual_review"] > 0
    assert len(rep.latencies_ms) == rep.charges and not rep.errors
    assert dict(rep.rulesets) == {1: rep.charges}  # the ruleset version that made each decision
    fset = default_set()
    reference = replay(fset, charges, log_outcomes(ws)).to_pylist()
    want = {r["charge_id"]: r for r in reference}
    checked = 0
    for d in decisions:
        for name in fset.names:
            assert _same(d.features[name], want[d.charge_id][name]), (d.charge_id, name)
        checked += 1
    assert checked == in_period
    # Something history-dependent is really compared (a card seen before the period).
    assert any((d.features["card.count_charges_all"] or 0) > 0 for d in decisions)


def test_replay_of_a_window_stops_at_its_end(ws: Workspace) -> None:
    charges = ws.read("charges")
    first = pc.min(charges["created"]).as_py()
    start, end = first + timedelta(days=1), first + timedelta(days=1, hours=2)
    mask = pc.and_(pc.greater_equal(charges["created"], start), pc.less(charges["created"], end))
    rep = replay_in_process(ws, start, end)
    assert rep.charges == pc.sum(mask).as_py() > 0


def test_a_replay_keeps_the_logs_time_even_ahead_of_the_clock(tmp_path: Path) -> None:
    """A server refuses events dated past its clock skew; a replay decides at the log's time, wherever it is
    (here a world generated into next year), whatever bound the caller's config sets."""
    w = Workspace.open(tmp_path / "ws", create=True)
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=365)
    w.write_stream(generate_world(WorldConfig(charges=1000, days=2, seed=3, start=start)), "replace")
    rep = replay_in_process(w, start + timedelta(days=1), None, config=ScorerConfig(max_future_s=300))
    assert rep.charges > 100 and not rep.errors


def test_replay_options_and_a_replay_where_every_request_fails_are_one_line_errors(ws: Workspace) -> None:
    from click.testing import CliRunner

    from payfm.cli.main import cli

    base = ["-w", str(ws.root), "replay"]
    cases = [
        (["--from", "tomorrow"], "--from must be an ISO date"),
        (["--from", "2026-01-03", "--to", "2026-01-02"], "must be after --from"),
        (["--from", "2026-01-03", "--http", "http://127.0.0.1:1", "--key", "k"], "No decision service"),
        (["--from", "2027-01-01"], "The replay window 2027-01-01 .. end of log holds no charges"),
        (["--from", "2025-01-01", "--to", "2025-02-01"], "the event log's charges run from 2026-01-01"),
    ]
    for args, said in cases:
        r = CliRunner().invoke(cli, [*base, *args])
        assert r.exit_code == 1 and said in r.output and "Traceback" not in r.output, (args, r.output)


def test_a_replay_over_http_stops_at_the_first_refused_key(ws: Workspace) -> None:
    """Every later request would meet the same 401: the replay stops there, not after the whole period."""
    from payfm.serving.replay import Aborted, replay_http

    refused = {"error": {"type": "Unauthorized", "message": "bad key", "field": None}}
    posts: list[str] = []
    first = pc.min(ws.read("charges")["created"]).as_py()
    with _answering(lambda n: (401, refused), posts) as url:
        with pytest.raises(Aborted, match=r"refused the API key \(401\): bad key Check --key-file, --key or"):
            replay_http(ws, first, None, url, "wrong")
        with pytest.raises(Aborted, match=r"asks for an API key \(401\) and none was given: pass --key-file"):
            replay_http(ws, first, None, url, None)
    assert posts == ["/v1/charges/score"] * 2


def test_replay_takes_the_key_from_a_file_and_says_the_services_reason(ws: Workspace, tmp_path: Path) -> None:
    """--key-file, as `payfm review` takes it (a key on the command line is seen by `ps`); a 401 gives the
    service's reason (a revoked key says so) and the options to check."""
    from click.testing import CliRunner

    from payfm.cli.main import cli

    revoked = {
        "error": {"type": "Unauthorized", "message": "This API key ('bot') was revoked", "field": None}
    }
    keyfile = tmp_path / "replay.key"
    keyfile.write_text("\npfm_abc_secret\n")
    base = ["-w", str(ws.root), "replay", "--from", "2026-01-03"]
    env = {"PAYFM_API_KEY": ""}
    with _answering(lambda n: (401, revoked)) as url:
        r = CliRunner().invoke(cli, [*base, "--http", url, "--key-file", str(keyfile)], env=env)
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert "refused the API key (401): This API key ('bot') was revoked Check --key-file" in r.output
        assert "pfm_abc_secret" not in r.output
    # every request failing otherwise: the options to check name where the key came from
    broken = {"error": {"type": "Internal", "message": "down", "field": None}}
    with _answering(lambda n: (500, broken)) as url:
        for args, where, name in (
            ([], {"PAYFM_API_KEY": "pfm_abc_env"}, "PAYFM_API_KEY"),
            (["--key", "pfm_abc_opt"], env, "--key"),
            (["--key-file", str(keyfile)], env, "--key-file"),
        ):
            r = CliRunner().invoke(cli, [*base, "--to", "2026-01-03T02:00", "--http", url, *args], env=where)
            assert r.exit_code == 1 and "no request succeeded" in r.output, r.output
            assert f"check --http and {name}." in r.output and "pfm_abc" not in r.output, r.output
    for args, said in (
        (["--key-file", str(keyfile)], "--key-file is the API key of --http: give --http URL too."),
        (["--http", "http://127.0.0.1:1", "--key", "k", "--key-file", str(keyfile)], "--key or --key-file"),
        (["--http", "http://127.0.0.1:1", "--key-file", str(tmp_path / "none")], "Cannot read the API key"),
    ):
        r = CliRunner().invoke(cli, [*base, *args], env=env)
        assert r.exit_code == 1 and said in r.output and "Traceback" not in r.output, (args, r.output)


def test_a_replay_with_outcomes_reported_after_the_decisions_sees_the_same_features(ws: Workspace) -> None:
    charges = ws.read("charges")
    last = pc.max(charges["created"]).as_py()
    start = datetime(last.year, last.month, last.day, tzinfo=last.tzinfo)
    decisions: list[Decision] = []
    rep = replay_in_process(ws, start, None, on_decision=decisions.append, authorize_after=True)
    assert rep.authorizations == rep.charges == len(decisions) > 100  # these rules block nothing
    fset = default_set()
    want = {r["charge_id"]: r for r in replay(fset, charges, log_outcomes(ws)).to_pylist()}
    for d in decisions:
        for name in fset.names:
            assert _same(d.features[name], want[d.charge_id][name]), (d.charge_id, name)
    # An hour into the period, the declines in the hour's windows were all counted from reported results.
    later = [d for d in decisions if want[d.charge_id]["created"] >= start + timedelta(hours=1)]
    assert sum(d.features["merchant.count_declined_1h"] or 0 for d in later) > 0


@contextmanager
def _answering(
    answer: Callable[[int], tuple[int, dict[str, Any]]], posts: list[str] | None = None
) -> Iterator[str]:
    """A stand-in decision service at the URL yielded: `/healthz` answers 200 without a key, and the n-th
    POST (from 1) gets ``answer(n)``, a status and a JSON body; ``posts`` collects the paths posted to."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answered = [0]

    class Service(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def do_POST(self) -> None:
            if posts is not None:
                posts.append(self.path)
            self.rfile.read(int(self.headers["Content-Length"]))
            answered[0] += 1
            status, payload = answer(answered[0])
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_replay_over_http_counts_the_ruleset_versions_that_decided(ws: Workspace) -> None:
    """A charge the service decided before is answered with its stored decision (idempotent), made by the
    ruleset active then: after a rollback, a replay's mix is the old version's for those charges, and the
    summary says which versions decided (an analyst read the old mix as a rollback that did not work)."""
    from payfm.cli.serve import ruleset_line
    from payfm.serving.replay import replay_http

    last = pc.max(ws.read("charges")["created"]).as_py()
    # two in three decided before, by v2
    with _answering(lambda n: (200, {"outcome": "blocked", "ruleset_version": 2 if n % 3 else 3})) as url:
        rep = replay_http(ws, last - timedelta(hours=2), None, url, "k")
    assert rep.charges > 10 and rep.rulesets[2] + rep.rulesets[3] == rep.charges and rep.rulesets[3] > 0
    assert ruleset_line(rep).startswith(f"Decided by ruleset v2: {rep.rulesets[2]:,} charges, v3: ")
    # the service's word only: a version that is no number is an error, never printed or sorted
    for bad in ("\x1b[2J4111 1111 1111 1111", [1], True, 0):
        with _answering(lambda n, bad=bad: (200, {"outcome": "blocked", "ruleset_version": bad})) as url:
            rep = replay_http(ws, last - timedelta(hours=1), None, url, "k")
        assert rep.rulesets == {} and list(rep.errors) == [
            "HTTP 200 with a ruleset_version that is no version number"
        ], bad


def test_a_replay_and_a_server_without_a_production_model_say_so_and_how_to_promote_one(
    ws: Workspace, tmp_path: Path
) -> None:
    """A newcomer who trained but did not promote got null scores from `payfm serve` and `payfm replay`
    with no word of it (the start line printed a Python dict holding 'model': None)."""
    import numpy as np
    from click.testing import CliRunner

    from payfm.cli.main import cli
    from payfm.registry import Registry
    from payfm.serving.bundle import no_model_warning
    from payfm.training.models import model_class

    r = CliRunner().invoke(cli, ["-w", str(ws.root), "replay", "--from", "2026-01-04"])
    assert r.exit_code == 0, r.output
    assert "warning: no production model: every risk_score is null" in r.output
    assert "train one with `payfm train`" in r.output

    fs = default_set()
    X = np.random.default_rng(0).normal(size=(200, len(fs.names)))
    m = model_class("lr")(calibration="none").fit(X, (X[:, 0] > 0).astype(int), feature_names=fs.names)
    other = Workspace.open(tmp_path / "ws", create=True)
    reg = Registry(other)
    for name in ("fraud-lr", "fraud-lr", "fraud-gbdt"):
        reg.register(m, name=name, task="fraud", fset=fs)
    said = no_model_warning(other)
    assert said is not None and "promote one of fraud-gbdt@1, fraud-lr@2" in said  # each name's newest
    reg.promote("fraud-lr@1")
    assert no_model_warning(other) is None
