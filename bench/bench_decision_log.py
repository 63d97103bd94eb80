"""Benchmark: what a decision costs the decision log, on disk and in time.

Copies ``--workspace`` (the demo's) to a scratch folder, opens the decision service in process on it
(memory state, the embedded SQLite log) and decides ``--charges`` charges one at a time, each waiting for
its commit (``--durability``). Prints the log's bytes on disk per decision (its pages after a checkpoint),
the mean stored charge and decision (the decision's feature values a list, their names once per log:
payfm.serving.decision_codec), and each decision's latency with its commit. Usage:

    .venv/bin/python bench/bench_decision_log.py --workspace payfm-workspace
    .venv/bin/python bench/bench_decision_log.py --workspace ws --charges 10000 --durability os
    .venv/bin/python bench/bench_decision_log.py --decision-log postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/bench_decision_log.py --page-size 4096   # a new SQLite log's pages of another size

With ``--decision-log postgresql://...`` the log is PostgreSQL's, in a schema of its own (dropped after):
the bytes are its table's (``pg_total_relation_size``, TOAST and indexes included) and the stored
decision's (``pg_column_size``: after PostgreSQL's own compression of long values).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from bench_prune import _charge  # bench/bench_prune.py: the same charges
from machine import describe  # bench/machine.py
from payfm.events.workspace import Workspace
from payfm.serving import sqlite_log
from payfm.serving.decision_log import DecisionLog
from payfm.serving.postgres_log import PostgresDecisionLog
from payfm.serving.scorer import Scorer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default="payfm-workspace")
    ap.add_argument("--charges", type=int, default=5_000)
    ap.add_argument("--cards", type=int, default=500)
    ap.add_argument("--durability", choices=("fsync", "os"), default="fsync")
    ap.add_argument("--decision-log", default="sqlite", help="sqlite (default) or a postgresql:// URL")
    ap.add_argument(
        "--page-size", type=int, help=f"a new SQLite log's page size (default {sqlite_log.PAGE_SIZE})"
    )
    args = ap.parse_args()
    if args.page_size:
        sqlite_log.PAGE_SIZE = args.page_size
    print(f"# {describe()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="payfm-bench-log-") as tmp:
        root = Path(tmp) / "ws"
        shutil.copytree(args.workspace, root, ignore=shutil.ignore_patterns("serving", "reports"))
        ws = Workspace.open(root)
        end = ws.connect().sql("SELECT max(created) FROM charges").fetchall()[0][0]
        log: str | DecisionLog = "sqlite"
        if args.decision_log != "sqlite":
            log = PostgresDecisionLog(args.decision_log, schema=f"payfm_bench_{uuid.uuid4().hex[:8]}")
        scorer = Scorer.open(ws, decision_log=log, durability=args.durability)
        ms: list[float] = []
        try:
            for i in range(args.charges):
                created = (end + timedelta(seconds=10 * (i + 1))).isoformat()
                t0 = time.perf_counter()
                scorer.score(_charge(i, created, args.cards))
                ms.append((time.perf_counter() - t0) * 1000)
            scorer.log.flush()
        finally:
            scorer.close(snapshot=False)
        ms.sort()
        latency = (
            f"decision with its commit p50 {ms[len(ms) // 2]:.2f} ms, p99 {ms[int(len(ms) * 0.99)]:.2f} ms"
        )
        if isinstance(log, PostgresDecisionLog):
            print(_postgres(log, args.durability, latency), flush=True)
            return
        db = root / "serving" / "decisions.db"
        with sqlite3.connect(db) as con:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pages, size = (con.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
            n, charge, decision = con.execute(
                "SELECT count(*), avg(length(charge)), avg(length(decision)) FROM decisions"
            ).fetchone()
        print(
            f"{n:,} decisions ({args.durability}): {pages * size / n:,.0f} bytes each on disk "
            f"({size}-byte pages); stored charge {charge:,.0f} B, decision {decision:,.0f} B; {latency}",
            flush=True,
        )


def _postgres(log: PostgresDecisionLog, durability: str, latency: str) -> str:
    """The PostgreSQL log's bytes a decision, then its schema dropped."""
    try:
        (n, table, stored, text), *_ = log._fetch(
            "SELECT count(*), pg_total_relation_size('decisions'), avg(pg_column_size(decision)), "
            "avg(octet_length(decision)) FROM decisions"
        )
        return (
            f"{n:,} decisions (PostgreSQL, {durability}): {table / n:,.0f} bytes each in the table "
            f"(TOAST and indexes included); stored decision {float(stored):,.0f} B ({float(text):,.0f} B "
            f"of JSON); {latency}"
        )
    finally:
        with log._reading() as con:
            con.execute(f'DROP SCHEMA "{log.schema}" CASCADE')
        log.close()


if __name__ == "__main__":
    main()
