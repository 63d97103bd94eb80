"""The review queue's pages: by offset, or after a review (a cursor that a queue shrinking as analysts close
its reviews cannot make skip any); the answer to a closure sent again."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from payfm.errors import ConfigError
from payfm.events.schema import SCHEMAS
from payfm.events.workspace import Workspace
from payfm.rules import ast, rulesets
from payfm.rules.catalog import charge_values
from payfm.rules.grammar import parse_rules
from payfm.rules.limits import RuleError
from payfm.serving.decision_log import REVIEW_LABELS, REVIEW_STATUSES, DecisionLog
from payfm.serving.errors import Conflict, InvalidInput, NotFound, shown
from payfm.serving.event_lookup import matching_rows_of
from payfm.serving.outcome_checks import OUTCOME_TABLES, implied_outcome


def review_page(
    log: DecisionLog,
    status: str | None,
    limit: int,
    offset: int = 0,
    starting_after: str | None = None,
    *,
    rule: str | None = None,
    min_risk_score: int | None = None,
    ws: Workspace | None = None,
) -> list[dict[str, Any]]:
    """Up to ``limit`` reviews of ``status`` (open, closed, or None for both), oldest first, each with its
    charge's fields and its decision's reasons; from ``offset``, or after the review of the charge
    ``starting_after`` (then ``offset`` must be 0). Offsets skip reviews when reviews before the page are
    closed meanwhile (the open queue shrinks under them); ``starting_after`` does not. ``rule`` and
    ``min_risk_score`` keep the reviews that rule sent, or scored at least that (0-100). With ``ws``, each
    review's outcomes include those only its event log holds (imported)."""
    status = None if status == "all" else status  # (both, as none)
    if status is not None and status not in REVIEW_STATUSES:
        raise InvalidInput(
            f"The review status must be one of {', '.join(REVIEW_STATUSES)} or all. "
            f"Got {shown(repr(status))}.",
            field="status",
        )
    if starting_after is None:
        page = log.reviews(status, limit, offset, rule=rule, min_risk_score=min_risk_score)
        return _with_outcomes(log, page, ws)
    if offset:
        raise InvalidInput(
            f"Give offset or starting_after, not both. Got offset {offset} and starting_after "
            f"{shown(repr(starting_after))}.",
            field="starting_after",
        )
    seq = log.review_seq(starting_after)
    if seq is None:
        raise InvalidInput(
            f"starting_after must be the charge id of a review (the last one of the page before). Got "
            f"{shown(repr(starting_after))}, which has no review.",
            field="starting_after",
        )
    after = (seq, starting_after)
    page = log.reviews(status, limit, after=after, rule=rule, min_risk_score=min_risk_score)
    return _with_outcomes(log, page, ws)


def review_item(log: DecisionLog, charge_id: str, ws: Workspace | None = None) -> dict[str, Any]:
    """The review of ``charge_id`` as a page of the queue shows it (its charge, reasons and outcomes); a
    NotFound when the charge has none."""
    items = log.reviews(None, 1, charge_id=charge_id)
    if not items:
        raise NotFound(f"No review for charge '{shown(charge_id)}'.", field="charge_id")
    item = _with_outcomes(log, items, ws)[0]
    if ws is not None:
        item["rule_detail"] = rule_detail(log, ws, charge_id, item.get("rule"), item.get("charge") or {})
    return item


def rule_detail(
    log: DecisionLog, ws: Workspace, charge_id: str, rule: str | None, charge: Mapping[str, Any]
) -> dict[str, Any] | None:
    """What sent the charge to review, for the reviewer (``charge``: its fields, as the review item holds
    them): the rule ``rule`` as the ruleset version that
    decided the charge wrote it (``condition``: its line) and the value of each attribute it read
    (``values``, as the rule read them: :func:`payfm.rules.catalog.charge_values`, dollars for
    ``amount_usd``; None: missing). None when the decision names no rule or version the workspace holds
    (a review opened by a model's score alone, a version pruned or another workspace's)."""
    decision = log.get_decision(charge_id)
    version = (decision or {}).get("ruleset_version")
    if decision is None or rule is None or not isinstance(version, int):
        return None
    try:
        text = rulesets.get(ws, version).text
        found = [r for r in parse_rules(text, saved=True) if r.name == rule]
    except (ConfigError, RuleError):  # (a version the workspace no longer holds, or not as saved)
        return None
    if not found:
        return None
    values = charge_values(
        charge,
        decision.get("features") or {},
        decision.get("risk_score"),
        decision.get("risk_level"),
    )
    read = sorted(ast.attributes(found[0].condition))
    return {
        "ruleset_version": version,
        "condition": text.split("\n")[found[0].line - 1].strip(),
        "values": {name: values.get(name) for name in read},
    }


# What a reviewer sees of an outcome of the charge (the decision log's payload has the service's keys too).
_SHOWN = ("id", "created", "reason", "fraud_type", "amount", "currency")


def _with_outcomes(
    log: DecisionLog, items: list[dict[str, Any]], ws: Workspace | None = None
) -> list[dict[str, Any]]:
    """``items`` with the disputes, early fraud warnings and refunds of each charge (``outcomes``: a review
    the network has decided already, a fraudulent dispute, need not be worked blind): those the service has
    taken, then, with ``ws``, those only its event log holds (an import of the processor's export; marked
    ``imported``); the ``reviewer`` who closed it (the API key's name; None while open); and without the
    charge's ``scenario`` (a synthetic world's ground truth, sent by a replay:
    the answer) or the service's own microsecond times (``created_us``: the charge's fields as the API takes
    them)."""
    ids = [str(item["charge_id"]) for item in items]
    held = _event_log_outcomes(ws, ids) if ws is not None and ids else {}
    for item, cid in zip(items, ids, strict=True):
        if isinstance(item.get("charge"), dict):
            item["charge"].pop("scenario", None)
            for key in [k for k in item["charge"] if k.endswith("_us")]:  # the service's own (created_us)
                del item["charge"][key]
        logged = log.outcomes_of(cid)
        taken = [
            {"table": kind, **{k: payload[k] for k in _SHOWN if k in payload}, "imported": False}
            for kind, payload in logged
            if kind in OUTCOME_TABLES
        ]
        # who closed it: the API key's name, in the closure's logged event (None while open)
        item["reviewer"] = next((p.get("reviewer") for kind, p in logged if kind == "reviews"), None)
        known = {(o["table"], o.get("id")) for o in taken}
        imported = [o for o in held.get(cid, []) if (o["table"], o["id"]) not in known]
        item["outcomes"] = taken + imported
    return items


def _event_log_outcomes(ws: Workspace, charge_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The disputes, early fraud warnings and refunds the event log holds of each of ``charge_ids``, oldest
    first, as :func:`_with_outcomes` shows them (marked ``imported``). One pass over each table's files for
    the whole page, each file's index of charge-id hashes searched for every id at once
    (:func:`payfm.serving.event_lookup.matching_rows_of`): only the files that may hold one are read."""
    out: dict[str, list[dict[str, Any]]] = {cid: [] for cid in charge_ids}
    for table, key in OUTCOME_TABLES.items():
        columns = tuple(c for c in SCHEMAS[table].names if c != "charge_id")
        for cid, rows in matching_rows_of(ws, table, "charge_id", charge_ids, columns).items():
            for row in rows:
                shown_row = {k: row[k] for k in _SHOWN[1:] if k in row}
                if isinstance(shown_row.get("created"), datetime):
                    shown_row["created"] = shown_row["created"].isoformat()
                out[cid].append({"table": table, "id": row[key], **shown_row, "imported": True})
    for rows in out.values():
        rows.sort(key=lambda o: str(o.get("created")))
    return out


def closed_again(
    log: DecisionLog, review: dict[str, Any], reason: str, note: str, reviewer: str | None
) -> dict[str, Any]:
    """The answer to a closure of ``review``, closed already: a retry of the first (the same reason, note and
    reviewer, who is the API key's name) gets the first answer's facts (the implied outcome as ``log`` holds
    it) marked a duplicate, and nothing is logged or appended again; any other closure is a Conflict saying
    what differs (another reviewer closing it the same way included: their verdict is not recorded)."""
    charge_id = str(review["charge_id"])
    first = next((p for kind, p in log.outcomes_of(charge_id) if kind == "reviews"), {})
    said = (
        f"The review of charge '{shown(charge_id)}' is already closed: as '{review['reason']}' at "
        f"{review['closed_at']}"
    )
    if review["reason"] != reason:
        raise Conflict(f"{said}.", field="charge_id")
    if (review["note"] or "") != note:
        raise Conflict(f"{said}, with another note (a retry sends the same note).", field="note")
    if "reviewer" in first and first["reviewer"] != reviewer:  # (a log from before closures kept it: unknown)
        by = first["reviewer"]
        raise Conflict(
            f"{said}, by {'another reviewer' if by else 'a caller without a key'}.", field="charge_id"
        )
    implied = implied_outcome(
        {"charge_id": charge_id, "closed_as": reason, "created": None}, log.get_charge(charge_id) or {}
    )
    outcome = None
    if implied is not None:
        table, payload = implied
        oid = str(payload[OUTCOME_TABLES[table]])
        if (held := log.get_outcome(table, oid)) is not None:
            outcome = {"table": table, "id": oid, "applied": held["applied"]}
    return {
        "charge_id": charge_id,
        "status": "closed",
        "reason": reason,
        "label": REVIEW_LABELS[reason],
        "outcome": outcome,
        "duplicate": True,
    }
