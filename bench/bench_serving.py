"""Benchmark: decisions in process and over HTTP (uvicorn on 127.0.0.1, load generator in separate processes).

A synthetic world warms the state; a GBDT on the default feature set (fit on random rows: its speed, not its
quality, is measured) is promoted and 20 rules applied. Usage:

    .venv/bin/python bench/bench_serving.py                 # in process (fsync and os) + HTTP curve
    .venv/bin/python bench/bench_serving.py --charges 20000 --http-seconds 5 --durability os
    .venv/bin/python bench/bench_serving.py --skip-in-process --rates 500,1000
    .venv/bin/python bench/bench_serving.py --skip-in-process --rates 500,1000 --serve-opts=--no-access-log
    .venv/bin/python bench/bench_serving.py --snapshot --charges 400000   # deciding during a state snapshot
    .venv/bin/python bench/bench_serving.py --fm embedding+surprise --skip-http   # a GBDT on FM inputs too
    .venv/bin/python bench/bench_serving.py --fm embedding --skip-http --state redis://127.0.0.1:6379/14

``--fm`` pretrains a default-size foundation model briefly (its speed is measured, not its quality) and
serves a GBDT on the features plus those FM outputs instead. ``--state redis://...`` keeps the online state
(features and FM embedders) in Redis for the in-process runs: give it a database of its own, which the bench
empties before each run and after.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
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

from machine import describe  # bench/machine.py
from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set
from payfm.registry.store import Registry
from payfm.rules import rulesets
from payfm.serving.app import SCORE_PATH
from payfm.serving.keys import KeyStore
from payfm.serving.replay import events
from payfm.serving.scorer import Scorer, ScorerConfig
from payfm.synth import WorldConfig, generate_world
from payfm.training.models.gbdt import GBDTModel

COUNTRIES = ("RU", "RO", "NG", "VN", "ID", "CN")
RULES = "\n".join(
    [f"r{i}: review if :amount_usd: > {1000 + i} and :card.count_charges_1h: > {i % 5}" for i in range(10)]
    + [f"b{i}: block if :risk_score: >= {90 + i % 5} and :ip_country: = '{COUNTRIES[i]}'" for i in range(6)]
    + [f"t{i}: request_3ds if :card.count_charges_1d: > {30 + i}" for i in range(3)]
    + ["a0: allow if :merchant_id: = 'nobody'"]
)


def setup(root: Path, charges: int, fm: str | None = None) -> tuple[Workspace, list[dict[str, Any]]]:
    ws = Workspace.open(root / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=charges, days=10, seed=3)), "replace")
    fset = default_set()
    names, extra = list(fset.names), dict[str, Any]()
    if fm is not None:
        from payfm.fm.identity import checkpoint_meta, input_names
        from payfm.fm.pretrain import PretrainConfig, pretrain

        outputs = tuple(fm.split("+"))
        ckpt = pretrain(ws, PretrainConfig(steps=20), out=root / "fm").path
        names += input_names(checkpoint_meta(ckpt), outputs)
        extra = {"foundation_model": ckpt, "fm_outputs": outputs}
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, len(names)))
    y = (X[:, 0] + X[:, -1] + rng.normal(size=4000) > 1).astype(int)  # the FM inputs are used too
    model = GBDTModel(n_estimators=200, calibration="none").fit(X, y, feature_names=names)
    reg = Registry(ws)
    reg.promote(reg.register(model, name="fraud-gbdt", task="fraud", fset=fset, **extra).ref)
    rulesets.save(ws, RULES, activate=True, author="bench")
    rows = [r for t, r in events(ws, None, None) if t == "charges"]
    return ws, rows


def in_process(
    ws: Workspace, rows: list[dict[str, Any]], warm: int, durability: str, state: str = "memory"
) -> dict[str, Any]:
    """One charge at a time: ``decide`` is validation + features + GBDT + reasons + 20 rules (the decision's
    own latency_ms); ``total`` adds writing the decision log and waiting for its commit (durable).

    The timed charges are new to the state, as a live charge is: the scorer does not warm from the event log
    (which holds the whole world, the timed charges too: they would be counted already, so no state update,
    no FM learning, no compare-and-set write on Redis, and one more decision-log lookup each); the charges
    before them, ``rows[:warm]``, warm it through the scorer instead, as in :func:`during_snapshot`."""
    db = ws.root / f"bench-inproc-{durability}.db"
    redis_db = None
    if state != "memory":
        import redis

        redis_db = redis.Redis.from_url(state)
        redis_db.flushdb()
    config = ScorerConfig(warm_from_event_log=False)
    scorer = Scorer.open(
        ws, decision_log=f"sqlite:///{db}", durability=durability, state=state, config=config
    )
    try:
        for r in rows[:warm]:
            scorer.score(r)
        _check_new(scorer, rows[warm:])
        total, decide = [], []
        for r in rows[warm:]:
            t0 = time.perf_counter()
            d = scorer.score(r)
            total.append((time.perf_counter() - t0) * 1000)
            decide.append(d.latency_ms)
        _check_counted(scorer, rows[warm])
    finally:
        scorer.close(snapshot=False)
        if redis_db is not None:
            redis_db.flushdb()
    t, d = np.asarray(total), np.asarray(decide)
    return {
        "state": state,
        "durability": durability,
        "n": len(t),
        "decide_p50_ms": round(float(np.percentile(d, 50)), 3),
        "decide_p99_ms": round(float(np.percentile(d, 99)), 3),
        "total_p50_ms": round(float(np.percentile(t, 50)), 3),
        "total_p99_ms": round(float(np.percentile(t, 99)), 3),
    }


def _check_new(scorer: Scorer, timed: list[dict[str, Any]], sample: int = 200) -> None:
    """Fail loudly when the state counted a timed charge before its decision (the first ``sample``: on Redis
    each look is a round trip): its decision would time a charge the state knows, not a live one."""
    store = scorer.online.store
    known = [
        str(r["charge_id"]) for r in timed[:sample] if store.charge_fields(str(r["charge_id"])) is not None
    ]
    if known:
        raise SystemExit(
            f"bench_serving: {len(known)} of the first {min(sample, len(timed))} timed charges are counted "
            f"in the state before their decision (e.g. {known[0]}): the bench would time charges the state "
            "knows. Open the scorer with ScorerConfig(warm_from_event_log=False) or give them new ids."
        )


def _check_counted(scorer: Scorer, first: dict[str, Any]) -> None:
    """Fail loudly when deciding the first timed charge did not count it in the state (no update timed)."""
    if scorer.online.store.charge_fields(str(first["charge_id"])) is None:
        raise SystemExit(
            f"bench_serving: the timed charge {first['charge_id']} is not counted in the state after its "
            "decision: the decisions timed did not update the state."
        )


def bare_fsync(root: Path, n: int = 2_000) -> dict[str, Any]:
    """A 4 KiB append then ``fsync``, n times, in the workspace's file system: the floor under a durable
    commit (``--durability fsync``) on this disk."""
    path = root / "bench-fsync.bin"
    lat = []
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND)
    try:
        for _ in range(n):
            os.write(fd, b"x" * 4096)
            t0 = time.perf_counter()
            os.fsync(fd)
            lat.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    a = np.asarray(lat)
    return {
        "n": n,
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
    }


def during_snapshot(ws: Workspace, rows: list[dict[str, Any]], warm: int, fork: bool) -> dict[str, Any]:
    """Decisions one at a time while another thread snapshots the memory state: with ``fork`` the state
    lock is held only for the fork (a child writes the file), else for the whole write."""
    import shutil
    import threading

    shutil.rmtree(ws.root / "serving" / "state", ignore_errors=True)  # start from an empty state each time
    db = ws.root / f"bench-snapshot-{fork}.db"
    config = ScorerConfig(fork_snapshots=fork, warm_from_event_log=False)
    scorer = Scorer.open(ws, decision_log=f"sqlite:///{db}", durability="os", config=config)
    try:
        for r in rows[:warm]:
            scorer.score(r)
        took: list[float] = []

        def snap() -> None:
            t0 = time.perf_counter()
            scorer.snapshot()
            took.append(time.perf_counter() - t0)

        t = threading.Thread(target=snap)
        lat = []
        _check_new(scorer, rows[warm:])
        t.start()
        for r in rows[warm:]:
            t0 = time.perf_counter()
            scorer.score(r)
            lat.append((time.perf_counter() - t0) * 1000)
            if not t.is_alive():
                break
        t.join()
    finally:
        scorer.close(snapshot=False)
    a = np.asarray(lat)
    return {
        "fork": fork,
        "states": len(scorer.online.store.states),  # type: ignore[attr-defined]
        "snapshot_s": round(took[0], 2),
        "decisions_during": len(a),
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "max_ms": round(float(a.max()), 1),
    }


async def _requests(
    port: int, key: str, bodies: list[str], rate: float, seconds: float, conns: int
) -> tuple[float, list[tuple[float, int, float]]]:
    """One load generator process on one event loop, raw HTTP/1.1 keep-alive connections: returns the time
    its first request was due and, for each request, (latency ms, HTTP status, ``time.perf_counter()`` when
    its response arrived); perf_counter is the system's monotonic clock, comparable between processes.

    Paced (``rate`` > 0, per process): request i is due at start + i / rate whatever happened to the earlier
    ones (open loop, as independent callers are); it takes an idle connection or opens one, up to ``conns``,
    and its latency counts from its due time, so a server that falls behind is charged for the wait (no
    coordinated omission). Closed loop (``rate`` 0): ``conns`` connections each send back to back."""
    import asyncio

    head = (
        f"POST {SCORE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    reqs = [head + str(len(b)).encode() + b"\r\n\r\n" + b.encode() for b in bodies]
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    slots = asyncio.Semaphore(conns)
    out: list[tuple[float, int, float]] = []
    clock = time.perf_counter

    async def send(req: bytes, due: float) -> None:
        async with slots:
            conn = idle.pop() if idle else await asyncio.open_connection("127.0.0.1", port)
            try:
                conn[1].write(req)
                resp = await conn[0].readuntil(b"\r\n\r\n")
                at = resp.lower().index(b"content-length:") + 15
                await conn[0].readexactly(int(resp[at : resp.index(b"\r\n", at)]))
                status = int(resp[9:12])
                idle.append(conn)
            except (OSError, ValueError, asyncio.IncompleteReadError):
                conn[1].close()
                status = 0
            done = clock()
            out.append(((done - due) * 1000, status, done))

    first_due = clock()
    t_end = first_due + seconds
    if rate:
        tasks = []
        for i, req in enumerate(reqs):
            due = first_due + i / rate
            if due >= t_end:
                break
            if due > clock():
                await asyncio.sleep(due - clock())
            tasks.append(asyncio.ensure_future(send(req, due)))
        await asyncio.gather(*tasks)
    else:
        it = iter(reqs)

        async def worker() -> None:
            for req in it:
                if clock() >= t_end:
                    return
                await send(req, clock())

        await asyncio.gather(*(worker() for _ in range(conns)))
    for _, w in idle:
        w.close()
    return first_due, out


def _client(port: int, key: str, bodies: list[str], rate: float, seconds: float, conns: int, q: Any) -> None:
    try:
        import uvloop

        q.put(uvloop.run(_requests(port, key, bodies, rate, seconds, conns)))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        import asyncio

        q.put(asyncio.run(_requests(port, key, bodies, rate, seconds, conns)))


def load(
    port: int, key: str, bodies: list[str], procs: int, rate: float, seconds: float, conns: int
) -> dict[str, Any]:
    """``procs`` client processes of up to ``conns`` connections each: paced at ``rate`` in all (open loop)
    or closed loop (rate 0). Latency is seen by the client; shed = 429 or 503.

    Requests are sent for ``seconds``, but their responses may come later (a server that falls behind):
    ``ok_per_s``, the decided rate achieved, counts the 200s over ``span_s``, from the first request due to
    the last response, or over ``seconds`` when that is longer (dividing by ``seconds`` alone counted the late
    responses as if they came within it: offered 1,352/s against a capacity of 676/s it said 1,007/s, the
    phase lasting 2.5 s). ``sent`` is the requests sent; ``wall_s`` the phase's, the client processes' start
    and end included."""
    q: Any = mp.Queue()
    chunks = [bodies[k::procs] for k in range(procs)]
    args = [(port, key, c, rate / procs, seconds, conns, q) for c in chunks]
    ps = [mp.Process(target=_client, args=a) for a in args]
    t0 = time.perf_counter()
    for p in ps:
        p.start()
    got = [q.get() for _ in ps]
    for p in ps:
        p.join()
    wall = time.perf_counter() - t0
    res = [(ms, s) for _, out in got for ms, s, _ in out]
    ends = [done for _, out in got for _, _, done in out]
    span = (max(ends) - min(first for first, _ in got)) if ends else seconds
    ok = np.asarray([ms for ms, s in res if s == 200])
    return {
        "offered_per_s": rate or f"closed, {procs * conns} connections",
        "sent": len(res),
        "ok": len(ok),
        "ok_per_s": round(len(ok) / max(span, seconds), 1),
        "span_s": round(span, 2),
        "p50_ms": round(float(np.percentile(ok, 50)), 2) if len(ok) else None,
        "p99_ms": round(float(np.percentile(ok, 99)), 2) if len(ok) else None,
        "shed": sum(1 for _, s in res if s in (429, 503)),
        "shed_p99_ms": round(float(np.percentile([ms for ms, s in res if s in (429, 503)] or [0], 99)), 2),
        "errors": sum(1 for _, s in res if s not in (200, 429, 503)),
        "wall_s": round(wall, 1),
    }


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) the process has used: /proc/<pid>/stat fields 14 and 15."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--charges", type=int, default=20_000)
    ap.add_argument("--http-seconds", type=float, default=5.0)
    ap.add_argument("--durability", choices=["fsync", "os"], default="fsync", help="of the HTTP server")
    ap.add_argument("--rates", default="250,500,750,1000,1250", help="paced rates of the latency curve")
    ap.add_argument("--skip-in-process", action="store_true")
    ap.add_argument("--snapshot", action="store_true", help="only: decisions during a state snapshot")
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument(
        "--fm", choices=["embedding", "surprise", "embedding+surprise"], help="serve a GBDT on FM inputs too"
    )
    ap.add_argument(
        "--serve-opts",
        default="",
        help="more options of the HTTP server, e.g. --serve-opts=--no-access-log (its stderr, the access log "
        "included, goes to a file: its line count is printed)",
    )
    ap.add_argument(
        "--state",
        default="memory",
        help="in-process runs: memory or redis://host:port/db (emptied by the bench)",
    )
    args = ap.parse_args()
    print(f"# {describe()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ws, rows = setup(Path(tmp), args.charges, args.fm)
        if args.fm:
            print(f"model: GBDT on {len(default_set().names)} features + FM {args.fm}", flush=True)
        warm = len(rows) // 2
        if args.snapshot:
            for fork in (True, False):
                print("during a snapshot:", during_snapshot(ws, rows, warm, fork), f"load {_load_avg()}")
            return
        if not args.skip_in_process:
            print("bare fsync:", bare_fsync(ws.root), f"load {_load_avg()}", flush=True)
            for durability in ("fsync", "os"):
                print(
                    "in process:",
                    in_process(ws, rows, warm, durability, args.state),
                    f"load {_load_avg()}",
                    flush=True,
                )
        if args.skip_http:
            return
        key = KeyStore(ws.root / "serving" / "keys.db").create("bench")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-c", "from payfm.cli.main import main; main()", "-w", str(ws.root), "serve"]
        opts = ["--port", str(port), "--max-in-flight", "32", "--durability", args.durability]
        server_log = Path(tmp) / "serve.log"
        with server_log.open("wb") as err:
            server = subprocess.Popen([*cmd, *opts, *args.serve_opts.split()], stderr=err)
        try:
            for _ in range(300):
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                    c.request("GET", "/healthz")
                    if c.getresponse().status == 200:
                        break
                except OSError:
                    time.sleep(0.1)
            # After the world's history and behind the server's clock (it refuses a charge dated more than
            # --max-future-s ahead: with 2030 here, every request was a 422 from 2026-12-04 to 2026-12-05).
            base = datetime.now(UTC) - timedelta(hours=1)
            n = 0

            def bodies(count: int) -> list[str]:
                nonlocal n
                out = []
                for k in range(count):
                    r = rows[k % len(rows)]
                    n += 1
                    created = (base + timedelta(microseconds=n * 1000)).isoformat()
                    out.append(json.dumps({**r, "charge_id": f"b_{n}", "created": created}))
                return out

            sec = args.http_seconds
            print(f"HTTP server: durability {args.durability}, max in flight 32", flush=True)

            def phase(name: str, procs: int, rate: float, conns: int = 64) -> dict[str, Any]:
                want = int((rate or 3000) * sec * 1.2) + 100
                cpu0 = _cpu_s(server.pid)
                r = load(port, key, bodies(want), procs, rate, sec, conns)
                # Server CPU per answered request: the capacity of a core free of the load generator and of
                # other work on the machine (1000 / this = requests/s per core).
                served = r["ok"] + r["shed"]
                r["server_cpu_ms_per_req"] = round(1000 * (_cpu_s(server.pid) - cpu0) / max(served, 1), 3)
                print(f"{name}:", r, f"load {_load_avg()}", flush=True)
                return r

            best = phase("closed loop", 2, 0, conns=8)
            for rate in (float(x) for x in args.rates.split(",")):
                phase(f"paced {rate:.0f}/s", 2, rate)
            twice = 2 * max(float(best["ok_per_s"]), 100.0)
            phase(f"overload at 2x sustainable ({twice:.0f}/s offered)", 2, twice, conns=256)
            phase("recovery at 250/s", 2, 250)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
            lines = server_log.read_text(errors="replace").splitlines()
            print(f"server log: {len(lines)} lines ({sum(' payfm.access ' in x for x in lines)} access log)")


if __name__ == "__main__":
    main()
