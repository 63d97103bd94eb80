"""Benchmark: decisions in process and over HTTP (uvicorn on 127.0.0.1, load generator in separate processes).

A synthetic world warms the state; a GBDT on the default feature set (fit on random rows: its speed, not its
quality, is measured) is promoted and 20 rules applied. Usage:

    .venv/bin/python bench/bench_serving.py                 # in process + HTTP
    .venv/bin/python bench/bench_serving.py --charges 20000 --http-seconds 5
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set
from payfm.registry.store import Registry
from payfm.rules import rulesets
from payfm.serving.keys import KeyStore
from payfm.serving.replay import events
from payfm.serving.scorer import Scorer
from payfm.synth import WorldConfig, generate_world
from payfm.training.models.gbdt import GBDTModel

RULES = "\n".join(
    [f"r{i}: review if :amount_usd: > {1000 + i} and :card.count_charges_1h: > {i % 5}" for i in range(10)]
    + [f"b{i}: block if :risk_score: >= {90 + i % 5} and :ip_country: = 'R{i % 10}'" for i in range(6)]
    + [f"t{i}: request_3ds if :card.count_charges_1d: > {30 + i}" for i in range(3)]
    + ["a0: allow if :merchant_id: = 'nobody'"]
)


def setup(root: Path, charges: int) -> tuple[Workspace, list[dict[str, Any]]]:
    ws = Workspace.open(root / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=charges, days=10, seed=3)), "replace")
    fset = default_set()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, len(fset.names)))
    y = (X[:, 0] + rng.normal(size=4000) > 1).astype(int)
    model = GBDTModel(n_estimators=200, calibration="none").fit(X, y, feature_names=fset.names)
    reg = Registry(ws)
    reg.promote(reg.register(model, name="fraud-gbdt", task="fraud", fset=fset).ref)
    rulesets.save(ws, RULES, activate=True, author="bench")
    rows = [r for t, r in events(ws, None, None) if t == "charges"]
    return ws, rows


def in_process(ws: Workspace, rows: list[dict[str, Any]], warm: int) -> dict[str, float]:
    scorer = Scorer.open(ws, decision_log=f"sqlite:///{ws.root / 'bench-inproc.db'}")
    try:
        for r in rows[:warm]:
            scorer.score(r)
        lat = []
        for r in rows[warm:]:
            t0 = time.perf_counter()
            scorer.score(r)
            lat.append((time.perf_counter() - t0) * 1000)
    finally:
        scorer.close(snapshot=False)
    a = np.asarray(lat)
    return {"n": len(a), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}


def _client(port: int, key: str, bodies: list[str], rate: float, seconds: float, q: Any) -> None:
    """One load generator process: paced (rate > 0, per process) or closed loop (rate 0)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    out: list[tuple[float, int]] = []
    t_end = time.perf_counter() + seconds
    nxt = time.perf_counter()
    i = 0
    while i < len(bodies) and time.perf_counter() < t_end:
        if rate:
            nxt += 1 / rate
            time.sleep(max(0.0, nxt - time.perf_counter()))
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/v1/charges/score", bodies[i], h)
            r = conn.getresponse()
            r.read()
            status = r.status
        except OSError:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            status = 0
        out.append(((time.perf_counter() - t0) * 1000, status))
        i += 1
    q.put(out)


def load(port: int, key: str, bodies: list[str], procs: int, rate: float, seconds: float) -> dict[str, Any]:
    q: Any = mp.Queue()
    chunks = [bodies[k::procs] for k in range(procs)]
    ps = [mp.Process(target=_client, args=(port, key, c, rate / procs, seconds, q)) for c in chunks]
    t0 = time.perf_counter()
    for p in ps:
        p.start()
    res = [x for _ in ps for x in q.get()]
    for p in ps:
        p.join()
    wall = time.perf_counter() - t0
    ok = np.asarray([ms for ms, s in res if s == 200])
    return {
        "offered_per_s": rate or "closed loop",
        "ok_per_s": round(len(ok) / wall, 1),
        "p50_ms": round(float(np.percentile(ok, 50)), 2) if len(ok) else None,
        "p99_ms": round(float(np.percentile(ok, 99)), 2) if len(ok) else None,
        "shed_503": sum(1 for _, s in res if s == 503),
        "errors": sum(1 for _, s in res if s not in (200, 503)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--charges", type=int, default=20_000)
    ap.add_argument("--http-seconds", type=float, default=5.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws, rows = setup(Path(tmp), args.charges)
        warm = len(rows) // 2
        print("in process:", in_process(ws, rows, warm), flush=True)
        key = KeyStore(ws.root / "serving" / "keys.db").create("bench")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-c", "from payfm.cli.main import main; main()", "-w", str(ws.root), "serve"]
        server = subprocess.Popen([*cmd, "--port", str(port), "--max-in-flight", "32"])
        try:
            for _ in range(300):
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                    c.request("GET", "/healthz")
                    if c.getresponse().status == 200:
                        break
                except OSError:
                    time.sleep(0.1)
            base = datetime(2030, 1, 1, tzinfo=UTC)

            def bodies(tag: str, n: int) -> list[str]:
                out = []
                for k, r in enumerate(rows[:n]):
                    created = (base + timedelta(microseconds=k * 1000)).isoformat()
                    out.append(json.dumps({**r, "charge_id": f"{tag}_{k}", "created": created}))
                return out

            sec = args.http_seconds
            print("closed loop, 8 clients:", load(port, key, bodies("a", 20_000), 8, 0, sec), flush=True)
            for rate in (250, 500, 1000):
                print(
                    f"paced {rate}/s:", load(port, key, bodies(f"r{rate}", 20_000), 4, rate, sec), flush=True
                )
            print("overload, 64 clients:", load(port, key, bodies("o", 20_000), 64, 0, sec), flush=True)
            print("recovery at 250/s:", load(port, key, bodies("z", 5000), 2, 250, sec), flush=True)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
