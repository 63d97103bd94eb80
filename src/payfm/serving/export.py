"""The charges the decision service decided, into the workspace's event log, so its outcomes become labels.

The service logs every charge it decides in its decision log, and appends outcomes and review closures to the
event log; labels join outcomes to the event log's charges (``payfm.training.labels``), so a dispute of a
charge only the service saw labels nothing until the charge is in the event log too. :func:`export_charges`
appends those charges: each one the event log does not hold yet, once, validated like an import.

A charge of the event log needs the processor's ``outcome`` (authorized, issuer_declined or blocked). A
decided charge has it when the request carried it, or when the service blocked it (``blocked``: by the
merchant's rules); a charge the service let through (authorized, request_3ds, manual_review) without the
processor's answer has none, and is left out and counted, unless ``assume_authorized``: then it is taken as
authorized (true when the service decides after authorization, or when declines are rare enough to ignore;
a declined charge taken as authorized is a false genuine label).

Example:
    >>> # summary = export_charges(ws, open_log("sqlite", ws.root))
    >>> # summary.exported, summary.unknown_outcome
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from payfm.events.schema import SCHEMAS
from payfm.events.validate import validate_events
from payfm.events.workspace import Workspace
from payfm.serving.decision_log import DecisionLog


@dataclass(frozen=True)
class ExportSummary:
    decided: int  # charges in the decision log
    already: int  # of them, in the event log already (imported, or exported before)
    exported: int  # appended now
    unknown_outcome: int  # left out: let through by the service, the processor's outcome unknown
    outcomes: dict[str, int] = field(default_factory=dict)  # exported, by event-log outcome


def _row(payload: dict[str, Any], outcome: str) -> dict[str, Any]:
    """A decision-log payload (a normalized charge) as an event-log row: times from the exact ``*_us``."""
    row: dict[str, Any] = {}
    for f in SCHEMAS["charges"]:
        if pa.types.is_timestamp(f.type):
            row[f.name] = payload.get(f"{f.name}_us")
        else:
            row[f.name] = payload.get(f.name)
    row["outcome"] = outcome
    return row


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    schema = SCHEMAS["charges"]
    cols = []
    for f in schema:
        values = [r[f.name] for r in rows]
        if pa.types.is_timestamp(f.type):
            cols.append(pa.array(values, pa.int64()).cast(f.type))
        else:
            cols.append(pa.array(values, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def export_charges(ws: Workspace, log: DecisionLog, *, assume_authorized: bool = False) -> ExportSummary:
    """Append to ``ws``'s event log the charges of ``log`` it does not hold (see the module docstring)."""
    rows: list[dict[str, Any]] = []
    decided = unknown = 0
    for service_outcome, payload in log.decided():
        decided += 1
        outcome = payload.get("outcome")
        if outcome is None:
            if service_outcome == "blocked":
                outcome = "blocked"
            elif assume_authorized:
                outcome = "authorized"
            else:
                unknown += 1
                continue
        rows.append(_row(payload, str(outcome)))
    table = _table(rows)
    if ws.files("charges") and table.num_rows:
        held = ws.read("charges", ["charge_id"])["charge_id"]
        table = table.filter(pc.invert(pc.is_in(table["charge_id"], value_set=held.combine_chunks())))
    already = len(rows) - table.num_rows
    if table.num_rows:
        table = validate_events("charges", table, source="the decision log")
        with ws.writer("append") as w:
            w.write("charges", table)
    counts = Counter(table["outcome"].to_pylist())
    return ExportSummary(decided, already, table.num_rows, unknown, dict(sorted(counts.items())))
