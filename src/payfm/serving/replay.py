"""Replay history through the decision service as production would see it: in process or over HTTP.

Charges of ``[start, end)`` and their outcomes are merged in time order (an outcome at time tau before any
charge at t >= tau, as :func:`payfm.features.parity.replay` orders them) and sent one by one. In process, the
online state is first warmed with every event before ``start`` and decisions go to a scratch decision log, so
a replay never touches the serving log or the event log. Reports latency percentiles and the decision mix.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from payfm.events.schema import SCHEMAS
from payfm.events.workspace import Workspace
from payfm.serving.errors import InvalidInput
from payfm.serving.scorer import OUTCOME_TABLES, Scorer, ScorerConfig

_CHARGE_DROP = ("outcome", "decline_code", "scenario")


@dataclass
class ReplayReport:
    charges: int = 0
    outcomes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    mix: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def percentiles(self) -> dict[str, float]:
        if not self.latencies_ms:
            return {}
        a = np.asarray(self.latencies_ms)
        return {f"p{q}": float(np.percentile(a, q)) for q in (50, 90, 99, 99.9)} | {"max": float(a.max())}


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def events(
    ws: Workspace, start: datetime | None, end: datetime | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(table, row)`` of ``[start, end)`` in time order; outcomes first at equal times."""
    con = ws.connect()
    try:
        where = []
        if start is not None:
            where.append(f"created >= TIMESTAMPTZ '{start.isoformat()}'")
        if end is not None:
            where.append(f"created < TIMESTAMPTZ '{end.isoformat()}'")
        w = ("WHERE " + " AND ".join(where)) if where else ""
        tables: dict[str, list[dict[str, Any]]] = {}
        for t in ("charges", *OUTCOME_TABLES):
            tables[t] = con.sql(f"SELECT * FROM {t} {w}").to_arrow_table().to_pylist() if ws.files(t) else []
    finally:
        con.close()
    merged: list[tuple[Any, int, str, str, dict[str, Any]]] = []
    for t, rows in tables.items():
        idc = "charge_id" if t == "charges" else OUTCOME_TABLES[t]
        for r in rows:
            merged.append((r["created"], 1 if t == "charges" else 0, str(r[idc]), t, r))
    merged.sort(key=lambda x: x[:3])
    for _, _, _, t, r in merged:
        names = SCHEMAS[t].names
        yield t, {k: _iso(r[k]) for k in names if k in r and not (t == "charges" and k in _CHARGE_DROP)}


def replay_in_process(
    ws: Workspace,
    start: datetime | None,
    end: datetime | None,
    config: ScorerConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Warm the online state with the history before ``start``, then decide every charge of the period."""
    with tempfile.TemporaryDirectory(prefix="payfm-replay-") as tmp:
        scorer = Scorer.open(ws, decision_log=f"sqlite:///{Path(tmp) / 'replay.db'}", config=config)
        scorer.append_outcomes = False
        try:
            if start is not None:
                for t, row in events(ws, None, start):
                    if t == "charges":
                        from payfm.serving.charges import normalize_charge

                        scorer.online.update(normalize_charge(row))
                    else:
                        _send_outcome(scorer, t, row)
            return _run(events(ws, start, end), lambda t, r: _in_process(scorer, t, r), progress)
        finally:
            scorer.close(snapshot=False)


def _send_outcome(scorer: Scorer, table: str, row: dict[str, Any]) -> None:
    scorer.record_outcome(table, row)


def _in_process(scorer: Scorer, table: str, row: dict[str, Any]) -> str | None:
    if table == "charges":
        return scorer.score(row).outcome
    scorer.record_outcome(table, row)
    return None


def replay_http(
    ws: Workspace,
    start: datetime | None,
    end: datetime | None,
    url: str,
    key: str | None,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Send the period's charges and outcomes to a running service at ``url`` (latency seen by the client)."""
    import http.client
    import json
    from urllib.parse import urlsplit

    paths = {"charges": "/v1/charges/score", "disputes": "/v1/disputes", "refunds": "/v1/refunds"}
    paths["early_fraud_warnings"] = "/v1/early_fraud_warnings"
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=30)
    try:

        def send(table: str, row: dict[str, Any]) -> str | None:
            conn.request("POST", paths[table], body=json.dumps(row), headers=headers)
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                raise InvalidInput(f"HTTP {r.status}")
            out: str | None = json.loads(data).get("outcome") if table == "charges" else None
            return out

        return _run(events(ws, start, end), send, progress)
    finally:
        conn.close()


def _run(
    stream: Iterator[tuple[str, dict[str, Any]]],
    send: Callable[[str, dict[str, Any]], str | None],
    progress: Callable[[int], None] | None,
) -> ReplayReport:
    rep = ReplayReport()
    t_start = time.perf_counter()
    for table, row in stream:
        t0 = time.perf_counter()
        try:
            outcome = send(table, row)
        except Exception as e:
            rep.errors[str(e)[:80] or type(e).__name__] += 1
            continue
        if table == "charges":
            rep.latencies_ms.append((time.perf_counter() - t0) * 1000)
            rep.charges += 1
            if outcome:
                rep.mix[outcome] += 1
            if progress and rep.charges % 1000 == 0:
                progress(rep.charges)
        else:
            rep.outcomes += 1
    rep.wall_s = time.perf_counter() - t_start
    return rep
