"""Benchmark: the cost of what every request and command pays before its real work.

- ``scan``: the card-number scan (``payfm.events.cards.contains_card_number``) over the strings of a typical
  charge (what the decision service scans per charge), and over 64 KiB request bodies of the worst kind
  (single digits between separators, which look most like card numbers) and of letters;
- ``request``: what the decision service does to a typical charge's body before deciding it: parse it
  (duplicate keys refused, ``payfm.serving.app._parse_body``) and validate it
  (``payfm.serving.charges.normalize_charge``: every field's type, vocabulary or pattern, canonical form,
  and the card-number scan of each value);
- ``middleware``: the whole ``payfm.serving.app.Guard`` path of one request with that body (read it, shed
  or count it, scan it, check its Content-Type, parse it) around an app that answers at once, without and
  with the request metrics (no access log), in one event loop;
- ``startup``: ``payfm --help`` as a new process (every command imports the CLI first), median of runs.

Usage:

    .venv/bin/python bench/bench_guard.py
    .venv/bin/python bench/bench_guard.py --runs 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import describe  # bench/machine.py
from payfm.events.cards import contains_card_number
from payfm.serving.app import _parse_body
from payfm.serving.charges import EXAMPLE_FIELDS, normalize_charge


def _timed(fn: object, n: int) -> float:
    """Median seconds of ``n`` calls of ``fn``."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _guard_path(body: bytes, calls: int, with_metrics: bool) -> float:
    """Seconds per request through :class:`Guard` (see the module's ``middleware``), mean of ``calls``."""
    import asyncio

    from payfm.serving.app import Guard
    from payfm.serving.metrics import ServiceMetrics

    async def app(scope: object, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"{}"})  # type: ignore[operator]

    guard = Guard(app, metrics=ServiceMetrics(lambda: {}) if with_metrics else None, max_lag_ms=50)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "path": "/v1/disputes", "method": "POST", "headers": headers, "client": None}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: object) -> None:
        pass

    async def run() -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            await guard(scope, receive, send)
        return (time.perf_counter() - t0) / calls

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="Runs of each measurement (median reported).")
    args = ap.parse_args()
    print(f"# {describe()}")
    charge = {**EXAMPLE_FIELDS, "charge_id": "ch_0000123456", "created": "2026-03-01T12:00:00+00:00"}
    charge |= {"ip_address": "203.0.113.7", "device_id": "dev_9f86d081884c7d65"}
    charge |= {"email_domain": "example.com"}
    strings = [v for v in charge.values() if isinstance(v, str)] + [json.dumps(charge)]
    per_charge = _timed(lambda: [contains_card_number(s) for s in strings], 2000 * args.runs)
    body = json.dumps(charge).encode()
    parse = _timed(lambda: _parse_body(body), 2000 * args.runs)
    validate = _timed(lambda: normalize_charge(charge), 2000 * args.runs)
    bodies = {
        "digits": "1 " * 32_000,
        "digits and dots": "1 . " * 16_000,
        "letters": "abc " * 16_000,
        # runs of hex letters and digits holding digit groups (each group's check once walked its whole run)
        "hex runs": ("ab" + "1" * 18) * 3_200,
    }
    scan = {name: _timed(lambda b=body: contains_card_number(b), args.runs) for name, body in bodies.items()}
    middleware = {m: min(_guard_path(body, 20_000, m) for _ in range(args.runs)) for m in (False, True)}
    payfm = Path(sys.executable).with_name("payfm")
    run = [str(payfm), "--help"]
    startup = _timed(lambda: subprocess.run(run, capture_output=True, check=True), args.runs)
    print(f"scan of a typical charge's {len(strings)} strings: {per_charge * 1e6:.1f} us")
    print(f"parse of its {len(body)}-byte body: {parse * 1e6:.1f} us; validation: {validate * 1e6:.1f} us")
    for name, seconds in scan.items():
        print(f"scan of a 64 KiB body of {name}: {seconds * 1000:.1f} ms")
    print(
        f"Guard path of one request with it (best of {args.runs} x 20,000): {middleware[False] * 1e6:.1f} "
        f"us, {middleware[True] * 1e6:.1f} us with the request metrics"
    )
    print(f"payfm --help (a new process): {startup:.2f} s")


if __name__ == "__main__":
    main()
