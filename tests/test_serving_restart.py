"""kill -9 under load: after a restart no acknowledged charge is missing and none is counted twice."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from payfm.events.workspace import Workspace
from payfm.serving.keys import KeyStore
from payfm.serving.sqlite_log import SQLiteDecisionLog
from test_serving_scorer import charge

N = 400


def serve_process(
    ws: Path, *args: str, stderr: Path | None = None, port: int = 0
) -> tuple[subprocess.Popen[bytes], int]:
    """`payfm serve --port PORT ARGS` (0: a free one) on workspace ``ws``, its stderr written to ``stderr``
    (a file beside the workspace by default), Ctrl-C handled as in a terminal; returns the process and its
    port, read from its start line, once /healthz answers 200. (A port picked by the test and handed to the
    command could be taken by another test process before the server binds it.)"""
    err = stderr or ws.parent / f"serve-{time.monotonic_ns()}.err"
    cmd = [sys.executable, "-c", "from payfm.cli.main import main; main()", "-w", str(ws), "serve"]
    with err.open("wb") as f:
        proc = subprocess.Popen(
            [*cmd, "--host", "127.0.0.1", "--port", str(port), *args],
            stdout=subprocess.DEVNULL,
            stderr=f,
            # (a child of a shell's background job starts with SIGINT ignored)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    deadline = time.monotonic() + 60
    port = 0  # (read from the start line, whatever was asked)
    while time.monotonic() < deadline and proc.poll() is None:
        if not port:
            found = re.search(r" on http://127\.0\.0\.1:(\d+)\n", err.read_text(errors="replace"))
            port = int(found.group(1)) if found else 0
        if port:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    c.close()
                    return proc, port
            except OSError:
                pass
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    said = err.read_text(errors="replace")[-2000:]
    raise AssertionError(f"the server did not start (exit status {proc.returncode}): {said}")


def _start(ws: Path, port: int = 0) -> tuple[subprocess.Popen[bytes], int]:
    return serve_process(ws, "--snapshot-every", "60", port=port)


def _post(port: int, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(
            "POST",
            "/v1/charges/score",
            json.dumps(body),
            {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def test_kill_9_mid_stream_then_restart_counts_each_charge_once(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    key = KeyStore(ws.root / "serving" / "keys.db").create("t")
    proc, port = _start(ws.root)
    acked: list[str] = []
    try:

        def send() -> None:
            for i in range(N):
                try:
                    status, body = _post(port, key, charge(i))
                except (OSError, http.client.HTTPException):
                    # the server died mid-request, or mid-response (IncompleteRead): not acknowledged
                    return
                if status == 200:
                    acked.append(body["charge_id"])

        t = threading.Thread(target=send)
        t.start()
        while len(acked) < N // 3 and t.is_alive():
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        t.join(30)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert N // 3 <= len(acked) < N
    db = ws.root / "serving" / "decisions.db"
    with sqlite3.connect(db) as con:
        logged = {r[0] for r in con.execute("SELECT charge_id FROM decisions")}
    assert set(acked) <= logged  # every acknowledged decision was durable before its response
    assert list((ws.root / "serving" / "state").glob("*.json.gz"))  # a snapshot was taken before the kill
    # the same port, at once: the killed server's connections do not keep it (SO_REUSEADDR); another test
    # process's server could take it meanwhile only by the system's random pick of a free port
    proc, port = _start(ws.root, port)
    try:
        for i in range(N):  # resend everything: acknowledged ones return the stored decision
            status, _ = _post(port, key, charge(i))
            assert status == 200
        status, _ = _post(port, key, charge(N, card_last4="0000"))
        assert status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM decisions").fetchone()[0] == N + 1
    log = SQLiteDecisionLog(db)
    try:
        features = log.get_decision(f"ch_{N}")["features"]  # type: ignore[index]
    finally:
        log.close()
    assert features["card.count_charges_all"] == N  # each of the N charges of this card counted exactly once


def test_a_second_server_on_the_workspace_or_the_port_is_refused_before_loading(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    proc, port = _start(ws.root)
    try:
        base = [sys.executable, "-c", "from payfm.cli.main import main; main()", "-w", str(ws.root), "serve"]
        for other, said in (
            (port, "cannot listen there"),
            (0, f"Another payfm serve (pid {proc.pid})"),
        ):
            second = subprocess.run(
                [*base, "--host", "127.0.0.1", "--port", str(other)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert second.returncode == 1 and said in second.stderr, second.stderr
            assert "Traceback" not in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_ctrl_c_stops_payfm_serve_cleanly(tmp_path: Path) -> None:
    """Found by a review: run on its own socket, uvicorn's Ctrl-C after its shutdown reached the command,
    which then said "Aborted!" and exited 1; it stops as SIGTERM does, status 0."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    proc, _ = serve_process(ws.root, stderr=tmp_path / "err")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    said = (tmp_path / "err").read_text()
    assert (
        "payfm serve: stopping (final state snapshot, decision log closed)" in said and "stopped in" in said
    )
    assert "Aborted!" not in said and "Traceback" not in said
    # the start line, for a person, and the warning that no charge will get a score
    assert "payfm serve: serving no model, no ruleset, feature set default@" in said
    assert "payfm serve: warning: no production model: every risk_score is null" in said
