"""Benchmark: a page of the review queue (``GET /v1/reviews``, ``Scorer.reviews``), with each review's
outcomes from the decision log and from the event log (those only imported), on a workspace's event log.

Decides ``--reviews`` charges in process into a scratch decision log: each a new card's first charge of
$1,500, which the active ruleset must send to review (the starter rule ``new_card_large`` of ``make demo``
does). Then times the first page (which builds each outcome file's index of charge ids) and the next ones.
Usage:

    .venv/bin/python bench/bench_reviews.py --workspace payfm-workspace     # the demo's workspace
    .venv/bin/python bench/bench_reviews.py --workspace ws --reviews 200 --limit 50 --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from machine import describe  # bench/machine.py
from payfm.events.workspace import Workspace
from payfm.serving.charges import EXAMPLE_FIELDS
from payfm.serving.scorer import Scorer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default="payfm-workspace")
    ap.add_argument("--reviews", type=int, default=60, help="charges sent to review")
    ap.add_argument("--limit", type=int, default=50, help="reviews a page")
    ap.add_argument("--runs", type=int, default=5, help="pages timed after the first")
    args = ap.parse_args()
    print(f"# {describe()}", flush=True)
    ws = Workspace.open(args.workspace)
    files = {t: len(ws.files(t)) for t in ("disputes", "early_fraud_warnings", "refunds")}
    with tempfile.TemporaryDirectory() as tmp:
        scorer = Scorer.open(ws, decision_log=f"sqlite:///{Path(tmp) / 'reviews.db'}", durability="os")
        try:
            for i in range(args.reviews):
                charge = {
                    "charge_id": f"bench_rv_{i}",
                    "created": f"2026-05-01T{i // 60:02d}:{i % 60:02d}:00+00:00",
                }
                charge |= {**EXAMPLE_FIELDS, "card_fingerprint": f"fp_bench_rv_{i}"}
                scorer.score(charge | {"amount": 150_000, "amount_usd": 150_000})
            t0 = time.perf_counter()
            page = scorer.reviews("all", args.limit)
            first = time.perf_counter() - t0
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                scorer.reviews("all", args.limit)
                times.append(time.perf_counter() - t0)
        finally:
            scorer.close(snapshot=False)
    if not page:
        raise SystemExit("No charge was sent to review: the active ruleset must review a new card's $1,500.")
    print(
        f"a page of {len(page)} reviews, outcome files {files}: first {first * 1000:.0f} ms (indexes built), "
        f"then median {statistics.median(times) * 1000:.1f} ms of {args.runs}"
    )


if __name__ == "__main__":
    main()
