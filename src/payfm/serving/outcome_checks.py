"""Whether an outcome event (a dispute, an early fraud warning, a refund) reported to the decision service
can be taken: its fields' JSON types, the event schema's rules, and its charge.

Each check is a pure function of the outcome and what the service knows of its charge, returning the error
to raise (None: it can be taken), so :meth:`payfm.serving.feedback.FeedbackMixin.record_outcome` decides in
one place which apply: the schema's always; the charge's only to an outcome reported live (appended to the
event log), never to a replay of the event log's own outcomes, which an import took already.

Example:
    >>> uncaptured("refunds", "re_1", "ch_1", ("in the event log", "issuer_declined", "do_not_honor")).status
    409
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from payfm.events.schema import ID_COLUMNS, MOVED_NO_MONEY, RULES, SCHEMAS
from payfm.events.validate import ValidationError, validate_events
from payfm.features.definitions import REVIEW_DISPUTE_PREFIX
from payfm.serving.charges import refuse_wrong_type, refuse_wrong_types, to_us, us_to_iso
from payfm.serving.errors import Conflict, InvalidInput, NotFound, ServingError, shown

OUTCOME_TABLES = {"disputes": "dispute_id", "early_fraud_warnings": "efw_id", "refunds": "refund_id"}
OUTCOME_NAMES = {"disputes": "dispute", "early_fraud_warnings": "early fraud warning", "refunds": "refund"}


def typed_problem(path: str, error: Mapping[str, Any]) -> InvalidInput | None:
    """A request model's type error (pydantic's ``int_type``, ``string_type``... of one field) worded as
    the score endpoint words it (:func:`refuse_wrong_type`: ``Field 'amount' of the refund must be an
    integer. Got a string ('1999').``), for the endpoints of an event table's fields; None for any other
    error (said in pydantic's terms)."""
    loc = [x for x in error.get("loc", ()) if x != "body"]
    kind = str(error.get("type", ""))
    if len(loc) != 1 or not kind.endswith("_type") or "input" not in error:
        return None
    table = next((t for t in OUTCOME_NAMES if path == f"/v1/{t}"), None)
    if table is None and path.startswith("/v1/reviews/") and path.endswith("/close"):
        table = "reviews"
    if table is None or loc[0] not in SCHEMAS[table].names or error["input"] is None:
        return None
    try:
        refuse_wrong_type(str(loc[0]), error["input"], SCHEMAS[table].field(loc[0]).type, _WHO.get(table))
    except InvalidInput as e:
        return e
    return None


_WHO = {**OUTCOME_NAMES, "reviews": "review"}
log = logging.getLogger("payfm.serving")
# A charge with one of these outcomes moved no money: the service or the merchant's rules blocked it (never
# sent for authorization) or its issuer declined it. Stripe has no refund and no dispute of such a charge,
# and issuers send early fraud warnings of settled transactions only.
UNCAPTURED = MOVED_NO_MONEY


def python_ints(table: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` with each integer field of ``table`` holding a NumPy integer (a notebook's ``np.int64``
    amount) as Python's ``int``, as :func:`~payfm.serving.charges.normalize_charge` takes a charge's; a
    boolean stays one (refused). JSON never gives one: for the Python API."""
    schema = SCHEMAS[table]
    return {
        k: int(v)
        if isinstance(v, numbers.Integral)
        and not isinstance(v, bool | int)
        and k in schema.names
        and pa.types.is_integer(schema.field(k).type)
        else v
        for k, v in payload.items()
    }


def refuse_wrong_outcome_types(table: str, payload: Mapping[str, Any]) -> None:
    """Raise (422 naming the field) unless each field of outcome ``payload`` has its JSON type, before the
    event schema's validation converts it (:func:`payfm.serving.charges.refuse_wrong_type`, as a charge's)."""
    refuse_wrong_types(payload, SCHEMAS[table], OUTCOME_NAMES[table])


def invalid_outcome(table: str, e: ValidationError) -> InvalidInput:
    """The event schema's problems with an outcome as the API's 422: a sentence per problem, on one line,
    naming the first problem's field (as the score endpoint does)."""
    name = OUTCOME_NAMES[table]
    parts = []
    for p in e.problems:
        who = f"Field '{p.column}' of the {name}" if p.column else f"The {name}"
        parts.append(f"{who} must be {p.expected}. Got {shown(p.received)}.")
    if e.total > len(e.problems):
        parts.append(f"And {e.total - len(e.problems)} more.")
    field = e.problems[0].column if e.problems else None
    return InvalidInput(" ".join(parts) or str(e).splitlines()[0], field=field)


def unfollowed(
    table: str, oid: str, cid: str, created_us: int, charge_us: int | None, appending: bool
) -> ServingError | None:
    """Why outcome ``oid`` of charge ``cid`` (at ``created_us``; the charge at ``charge_us``, None: unknown)
    cannot be taken, as an import would refuse it (docs/events.md); None when it can.

    An outcome is strictly later than its charge: one at its charge's instant would be counted offline by
    that charge's own features, online only after it. The charge must be known (decided here or in the event
    log) when the outcome is to be appended (``appending``): the event log would otherwise hold an outcome
    whose charge it lacks. A replay in process appends nothing; its outcomes' charges are in the event log.
    """
    name = OUTCOME_NAMES[table]
    if charge_us is None:
        if not appending:
            return None
        return NotFound(
            f"Unknown charge '{shown(cid)}' of the {name} '{shown(oid)}': decide or import the charge first "
            "(neither the decision log nor the event log holds it).",
            field="charge_id",
        )
    if created_us > charge_us:
        return None
    return InvalidInput(
        f"Field 'created' of the {name} '{shown(oid)}' must be later than its charge '{shown(cid)}' "
        f"({us_to_iso(charge_us)}). Got {us_to_iso(created_us)}, at or before its charge: an outcome follows "
        "its charge.",
        field="created",
    )


def uncaptured(table: str, oid: str, cid: str, result: tuple[str, str, str | None] | None) -> Conflict | None:
    """Why outcome ``oid`` cannot follow charge ``cid`` whose outcome is ``result`` (where it is known,
    outcome, decline code; None: not known yet): a charge blocked or declined moved no money, so it has no
    refund, dispute or early fraud warning (a 409: the outcome is well formed, the charge's state refuses
    it). None when it can: the charge was authorized, or its result is still outstanding."""
    if result is None or result[1] not in UNCAPTURED:
        return None
    where, outcome, code = result
    name = OUTCOME_NAMES[table]
    return Conflict(
        f"The {name} '{shown(oid)}' must follow a charge that moved money (authorized, or its result not "
        "reported yet): a refund, dispute or early fraud warning follows a successful charge only. Got "
        f"charge '{shown(cid)}' with outcome '{outcome}'{f' ({code})' if code else ''} ({where}).",
        field="charge_id",
    )


def outcome_before(
    cid: str, outcome: str, recorded: Sequence[tuple[str, Mapping[str, Any]]]
) -> Conflict | None:
    """Why an authorization result ``outcome`` cannot be taken for charge ``cid`` whose ``recorded`` outcomes
    (``(table, payload)``, the decision log's) hold a refund, dispute or early fraud warning: a decline or a
    block says the charge moved no money, and those say it did (the mirror of :func:`uncaptured`: whichever
    comes second is refused). None when it can."""
    if outcome not in UNCAPTURED:
        return None
    found = next(((table, p) for table, p in recorded if table in OUTCOME_NAMES), None)
    if found is None:
        return None
    table, payload = found
    return Conflict(
        f"An authorization result '{outcome}' says charge '{shown(cid)}' moved no money, but its "
        f"{OUTCOME_NAMES[table]} '{shown(str(payload.get('id')))}' is recorded: a refund, dispute or early "
        "fraud warning follows a successful charge only. Report a charge's result before its outcomes.",
        field="outcome",
    )


def unlike_its_charge(
    table: str, event: Mapping[str, Any], charge: Mapping[str, Any], implied: bool = False
) -> InvalidInput | None:
    """Why a refund or dispute reported live cannot be one of ``charge`` (None if it can): it is in its
    charge's currency, for an amount no larger than the charge's (Stripe's rules for both), and a refund
    moves money: at least 1 in the minor unit, unless ``implied`` by a review closure (the fraudulent refund
    of a charge refunded in full already is 0: its label, without the money twice)."""
    if table == "refunds" and not implied and int(event["amount"]) < 1:
        return InvalidInput(
            f"Field 'amount': expected a refund of at least 1 in the minor unit of {event['currency']} (a "
            "refund moves money). Got 0.",
            field="amount",
        )
    if table not in ("refunds", "disputes") or charge.get("amount") is None:
        return None
    what = "refund" if table == "refunds" else "dispute"
    if event["currency"] != charge.get("currency"):
        return InvalidInput(
            f"Field 'currency': expected the currency of its charge, {charge.get('currency')!r} (a {what} is "
            f"in its charge's currency). Got {shown(event['currency'])!r}.",
            field="currency",
        )
    most = int(charge["amount"])
    if int(event["amount"]) > most:  # (0 is taken: a review closure of a $0 charge implies a 0 refund)
        return InvalidInput(
            f"Field 'amount': expected an amount no larger than its charge's ({most} in the minor "
            f"unit of {charge.get('currency')}). Got {int(event['amount'])}.",
            field="amount",
        )
    return None


def another_outcome(
    table: str,
    event: Mapping[str, Any],
    created_us: int,
    known: Mapping[str, Any],
    skip: tuple[str, ...] = (),
) -> Conflict | None:
    """A Conflict (409 naming the first field that differs) when outcome ``event`` (at ``created_us``) is not
    the outcome ``known`` recorded under its id on the same charge (the decision log's payload or the event
    log's row), None when it is. An outcome is an immutable event: a retry sends it again as it was, and
    another dispute, refund or warning needs another id (answered as a duplicate, it would be dropped, its
    amount or reason never counted). Times compare as instants; a field ``known`` lacks (a payload logged
    by an older payfm) is not compared, nor those in ``skip``.
    """
    name = OUTCOME_NAMES[table]
    for field in SCHEMAS[table].names:
        if field in (ID_COLUMNS[table], "charge_id") or field in skip or field not in known:
            continue
        if field == "created":
            # a late outcome counts from when it came (its payload's created_us, the event log's row) and
            # its payload keeps the time it was sent with (reported_us): a retry sends the latter, a replay
            # of the event log the former, and both are this outcome again
            times = {int(known[k]) for k in ("reported_us", "created_us") if known.get(k) is not None}
            same = created_us in (times or {to_us(known["created"], "created")})
        else:
            same = known[field] == event.get(field)
        if not same:
            oid = str(event[ID_COLUMNS[table]])
            return Conflict(
                f"The {name} '{shown(oid)}' of charge '{shown(str(event['charge_id']))}' is recorded already "
                f"with another '{field}': a retry must send the same {name}, and another {name} needs a new "
                f"{ID_COLUMNS[table]}.",
                field=field,
            )
    return None


def over_refunded(
    event: Mapping[str, Any], charge: Mapping[str, Any], refunded: int, left: int
) -> InvalidInput:
    """A refund above what is left to refund of its charge (Stripe caps a charge's refunds at its amount)."""
    return InvalidInput(
        f"Field 'amount': expected at most {left}, what is left to refund of its charge (its amount "
        f"{int(charge.get('amount') or 0)} in the minor unit of {charge.get('currency')}, less {refunded} "
        f"refunded already or being refunded). Got {int(event['amount'])}.",
        field="amount",
    )


def refuse_review_texts(values: Mapping[str, Any]) -> None:
    """Raise (422 naming the field) unless each text of a review closure is one the event log's ``reviews``
    table takes (payfm.events.text: an id's characters and length, a note's): checked before the closure is
    logged, since its append to the event log would refuse it after (a closure logged before these checks is
    left unappended at start, :func:`payfm.serving.feedback._refused_at_start`)."""
    for name, value in values.items():
        rule = RULES["reviews"][name]
        if isinstance(value, str) and value.strip() and not rule.accepts(value):
            expected, _ = rule.problem(value) or ("", "")
            got = rule.received(value)
            raise InvalidInput(f"Field '{name}' of the review must be {expected}. Got {got}.", field=name)


def known_answer(known: tuple[str, str, str | None], answer: dict[str, Any]) -> dict[str, Any]:
    """The answer to a charge's authorization result ``answer`` when the charge's outcome is ``known``
    (where, outcome, decline code): a duplicate when they agree, else a Conflict (a charge has one)."""
    cid, outcome, code = answer["charge_id"], answer["outcome"], answer["decline_code"]
    if known[1:] != (outcome, code):
        raise Conflict(
            f"Charge '{shown(cid)}' has outcome '{known[1]}'{f' ({known[2]})' if known[2] else ''} already "
            f"({known[0]}); a charge has one authorization result. Got '{outcome}'"
            f"{f' ({code})' if code else ''}.",
            field="outcome",
        )
    return {**answer, "applied": False, "duplicate": True}


def implied_outcome(
    review: Mapping[str, Any], charge: Mapping[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """The outcome event a review closure implies: refunded_as_fraud -> a fraudulent refund, disputed -> a
    fraudulent dispute, of the charge's amount (a refund is then taken for what is left to refund: 0 when
    refunded in full, the label without the money twice), at the closing time; None for approved and
    refunded."""
    cid, reason = str(review["charge_id"]), review["closed_as"]
    money = {"amount": int(charge.get("amount") or 0), "currency": str(charge.get("currency") or "usd")}
    if reason == "refunded_as_fraud":
        refund = {"refund_id": f"re_review_{cid}", "charge_id": cid, "created": review["created"]}
        return "refunds", {**refund, **money, "reason": "fraudulent"}
    if reason == "disputed":
        dispute_id = f"{REVIEW_DISPUTE_PREFIX}{cid}"  # what the counted-dispute rule recognizes
        dispute = {"dispute_id": dispute_id, "charge_id": cid, "created": review["created"]}
        return "disputes", {**dispute, "reason": "fraudulent", **money}
    return None


def duplicate_answer(table: str, oid: str, cid: str, stored: Mapping[str, Any]) -> dict[str, Any]:
    """The answer to outcome ``oid`` of charge ``cid`` sent again: ``stored`` (its recorded facts) marked a
    duplicate; a Conflict naming the recorded charge when that is another one (an id names one outcome)."""
    if stored["charge_id"] != cid:
        raise id_conflict(table, oid, str(stored["charge_id"]), cid)
    return {**stored, "duplicate": True}


def id_conflict(table: str, oid: str, recorded: str, cid: str) -> Conflict:
    return Conflict(
        f"The {OUTCOME_NAMES[table]} '{shown(oid)}' is recorded on charge '{shown(recorded)}'; an id names "
        f"one outcome of one charge. Got charge '{shown(cid)}'.",
        field=OUTCOME_TABLES[table],
    )


def appendable(table: str, event: Mapping[str, Any]) -> bool:
    """Whether the event log takes ``event``, logged by this service; a warning when it does not."""
    try:
        validate_events(table, pa.Table.from_pylist([dict(event)]), source=f"{table} of the decision log")
    except ValidationError as e:  # as `serve export` leaves it: in the decision log, not appended
        refused_at_start(table, str(event.get(ID_COLUMNS[table])), e)
        return False
    return True


def refused_at_start(table: str, key: str, e: ValidationError) -> None:
    """A record of the decision log that the event log refuses (logged before a check it fails came in):
    the service starts, and the record stays in the decision log, unappended, as `serve export` leaves it."""
    log.warning(
        "%s %s of the decision log was refused by the event log's validation and left unappended: %s",
        table,
        shown(key),
        e.problems[0] if e.problems else e,
    )
