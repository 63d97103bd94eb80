"""The charges the decision service decided, into the workspace's event log, so its outcomes become labels.

The service logs every charge it decides in its decision log, and appends outcomes and review closures to the
event log; labels join outcomes to the event log's charges (``payfm.training.labels``), so a dispute of a
charge only the service saw labels nothing until the charge is in the event log too. :func:`export_charges`
appends those charges: each one the event log does not hold yet, once, validated like an import.

A charge of the event log needs the processor's ``outcome`` (authorized, issuer_declined or blocked). A
decided charge has it when the request carried it, when it was reported afterwards (the authorization result,
:meth:`payfm.serving.feedback.FeedbackMixin.record_authorization`), or when the service blocked it
(``blocked``: by the merchant's rules); a charge the service let through (authorized, request_3ds,
manual_review) without the processor's answer has none, and is left out and counted, unless a refund,
dispute or early fraud warning of it is logged: those follow a successful charge only (the service refuses a
decline reported after one), so it is authorized, and its outcomes, appended to the event log when they
came, get their charge; or unless ``assume_authorized``: then every such charge is taken as authorized
(true when the service decides after authorization, or when declines are rare enough to ignore; a declined
charge taken as authorized is a false genuine label), but for one the service sent to 3-D Secure
(``request_3ds``): it goes to authorization only once through the challenge, sent again as a new charge.

Example:
    >>> # summary = export_charges(ws, open_log("sqlite", ws.root))
    >>> # summary.exported, summary.unknown_outcome
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from payfm.events.schema import SCHEMAS
from payfm.events.validate import ValidationError, validate_events
from payfm.events.workspace import Workspace
from payfm.serving.decision_log import DecisionLog

PAGE = 5000  # decisions read and converted at a time: memory follows the new charges, not the log
MONEY_MOVED = ("refunds", "disputes", "early_fraud_warnings")  # outcomes of a successful charge only


@dataclass(frozen=True)
class ExportSummary:
    decided: int  # charges in the decision log
    already: int  # of them, in the event log already (imported, or exported before)
    exported: int  # appended now
    unknown_outcome: int  # left out: let through by the service, the processor's outcome unknown
    proven: int = 0  # exported as authorized without a reported result: a refund, dispute or EFW of it logged
    outcomes: dict[str, int] = field(default_factory=dict)  # exported, by event-log outcome
    refused: dict[str, str] = field(default_factory=dict)  # charge id -> why the event log refuses it


def _row(payload: dict[str, Any], outcome: str) -> dict[str, Any]:
    """A decision-log payload (a normalized charge) as an event-log row: times from the exact ``*_us``."""
    row: dict[str, Any] = {}
    for f in SCHEMAS["charges"]:
        if pa.types.is_timestamp(f.type):
            row[f.name] = payload.get(f"{f.name}_us")
        else:
            row[f.name] = payload.get(f.name)
    row["outcome"] = outcome
    if outcome != "issuer_declined":
        row["decline_code"] = None  # a declined charge's code only (one sent with another outcome is moot)
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


def _encodable(row: dict[str, Any]) -> str | None:
    """Why ``row`` cannot be stored as Arrow text (a lone surrogate of a JSON escape), or None."""
    for name, v in row.items():
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return f"column '{name}': a text that is not valid Unicode (a lone surrogate)"
    return None


def _valid(rows: list[dict[str, Any]], refused: dict[str, str]) -> pa.Table:
    """The rows the event log's validation takes, as its table; the others' ids and first problem go to
    ``refused`` (one bad charge must not stop every later export)."""
    kept = []
    for r in rows:
        why = _encodable(r)
        if why is None:
            kept.append(r)
        else:
            refused[str(r["charge_id"])] = why
    while kept:
        try:
            return validate_events("charges", _table(kept), source="the decision log")
        except ValidationError as e:
            bad = {p.row - 1: p for p in e.problems if p.row is not None}
            if not bad:  # a problem of a whole column: not one charge's
                raise
            for i, problem in bad.items():
                refused[str(kept[i]["charge_id"])] = str(replace(problem, row=None))
            kept = [r for i, r in enumerate(kept) if i not in bad]
    return _table([])


def export_charges(
    ws: Workspace, log: DecisionLog, *, assume_authorized: bool = False, wait_s: float = 60.0
) -> ExportSummary:
    """Append to ``ws``'s event log the charges of ``log`` it does not hold (see the module docstring).

    The charges it holds are read inside the write transaction, so two exports at once never append a charge
    twice (the second waits up to ``wait_s`` for the first, as for a server's outcome appends)."""
    decided = already = unknown = proven = 0
    refused: dict[str, str] = {}
    parts: list[pa.Table] = []
    moved = log.charges_with_outcomes(MONEY_MOVED)  # authorized, whatever was reported of them
    with ws.writer("append", wait_s=wait_s, validate=False) as w:  # (validated: _charges)
        held = (
            ws.read("charges", ["charge_id"])["charge_id"].combine_chunks()
            if ws.files("charges")
            else pa.array([], pa.string())
        )

        def convert(page: list[tuple[str, dict[str, Any]]]) -> None:
            nonlocal already, unknown, proven
            ids = pa.array([str(p.get("charge_id")) for _, p in page], pa.string())
            known = pc.is_in(ids, value_set=held).to_pylist()
            rows = []
            proven_ids: set[str] = set()
            for (service_outcome, payload), is_held in zip(page, known, strict=True):
                if is_held:
                    already += 1
                    continue
                outcome = payload.get("outcome")
                if outcome is None:
                    if service_outcome == "blocked":
                        outcome = "blocked"
                    elif str(payload.get("charge_id")) in moved:
                        outcome = "authorized"
                        proven_ids.add(str(payload.get("charge_id")))
                    elif assume_authorized and service_outcome != "request_3ds":
                        outcome = "authorized"  # (not one sent to 3-D Secure: authorized only once through)
                    else:
                        unknown += 1
                        continue
                rows.append(_row(payload, str(outcome)))
            if rows:
                valid = _valid(rows, refused)
                parts.append(valid)
                if proven_ids:  # those the event log's validation took
                    proven += sum(1 for c in valid["charge_id"].to_pylist() if c in proven_ids)

        page: list[tuple[str, dict[str, Any]]] = []
        for item in log.decided(batch=PAGE):
            decided += 1
            page.append(item)
            if len(page) == PAGE:
                convert(page)
                page = []
        convert(page)
        table = pa.concat_tables(parts) if parts else _table([])
        w.write("charges", table)
    counts = Counter(table["outcome"].to_pylist())
    return ExportSummary(
        decided,
        already,
        table.num_rows,
        unknown,
        proven=proven,
        outcomes=dict(sorted(counts.items())),
        refused=dict(sorted(refused.items())),
    )
