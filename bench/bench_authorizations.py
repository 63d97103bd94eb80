"""Benchmark: authorization results reported after the decision (``POST /v1/charges/{id}/authorization``).

A live charge is decided before authorization; the processor's answer follows. This measures, in process (no
HTTP), on a world whose event log the server warmed from, with the server appending to the event log (so each
result of a charge without one checks that the event log does not hold the charge already):

- ``decide``: ``Scorer.score`` of new charges without their outcome (the decision log committed);
- ``authorize``: ``Scorer.record_authorization`` of each, right after its decision (its decision-log commit
  included); the first one also builds the event log's key index of charge ids (once per process);
- the same decisions with the outcome in the request, for comparison (``decide_with_outcome``).

The new charges are the world's last ``--n`` charges, moved past its end (new ids, same fields).

Usage:

    .venv/bin/python bench/bench_authorizations.py                 # 200k charges, 2,000 decided
    .venv/bin/python bench/bench_authorizations.py --charges 1000000 --n 5000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from machine import describe  # bench/machine.py
from payfm.events.workspace import Workspace
from payfm.rules import rulesets
from payfm.serving.scorer import Scorer, ScorerConfig
from payfm.synth import WorldConfig, generate_world

RULES = "many_declines: block if :card.count_declined_1d: > 5\n"


def _stats(lat_ms: list[float]) -> dict[str, float]:
    a = np.asarray(lat_ms)
    return {f"p{q}_ms": round(float(np.percentile(a, q)), 3) for q in (50, 90, 99)}


def run(root: Path, charges: int, n: int) -> dict[str, Any]:
    ws = Workspace.open(root / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=charges, days=30, seed=3)), "replace")
    rulesets.save(ws, RULES, activate=True, set_name="default", author="bench")
    con = ws.connect()
    try:
        query = f"SELECT * EXCLUDE (scenario) FROM charges ORDER BY created DESC LIMIT {int(n)}"
        rows = con.sql(query).to_arrow_table().to_pylist()[::-1]
    finally:
        con.close()
    shift = timedelta(days=1)
    out: dict[str, Any] = {"machine": describe(), "charges": ws.count("charges"), "n": n}
    for with_outcome in (False, True):
        t0 = time.perf_counter()
        scorer = Scorer.open(
            ws,
            decision_log=f"sqlite:///{root / f'decisions-{with_outcome}.db'}",
            durability="os",
            config=ScorerConfig(max_future_s=None),
        )
        out.setdefault("scorer_open_s", round(time.perf_counter() - t0, 1))
        decide, authorize, blocked = [], [], 0
        try:
            for r in rows:
                charge = {k: (v + shift).isoformat() if hasattr(v, "isoformat") else v for k, v in r.items()}
                charge["charge_id"] = f"new_{r['charge_id']}"
                outcome, code = charge.pop("outcome"), charge.pop("decline_code")
                code = code if outcome == "issuer_declined" else None
                if with_outcome:
                    charge |= {"outcome": outcome, "decline_code": code}
                t = time.perf_counter()
                d = scorer.score(charge)
                decide.append((time.perf_counter() - t) * 1000)
                if d.outcome == "blocked":
                    blocked += 1
                elif not with_outcome:
                    t = time.perf_counter()
                    scorer.record_authorization(charge["charge_id"], outcome, code)
                    authorize.append((time.perf_counter() - t) * 1000)
        finally:
            scorer.close(snapshot=False)
        if with_outcome:
            out["decide_with_outcome"] = {**_stats(decide), "blocked": blocked}
        else:
            out["decide"] = {**_stats(decide), "blocked": blocked}
            out["authorize"] = {**_stats(authorize), "first_ms": round(authorize[0], 1), "n": len(authorize)}
        print(json.dumps(out))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--charges", type=int, default=200_000)
    p.add_argument("--n", type=int, default=2000, help="new charges decided (and their results reported)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(Path(tmp), args.charges, args.n), indent=1))


if __name__ == "__main__":
    main()
