"""The API's request and response models (pydantic, generated from the event schema for the outcomes) and
how a model's validation problem is worded: the field, what was expected, what was received (quoted through
``shown``: long numbers masked, cut short).

The score endpoint parses its body itself (:func:`payfm.serving.charges.normalize_charge`); ``ChargeIn``
documents it (OpenAPI). Times are parsed by one function for every endpoint
(:func:`payfm.serving.charges.parse_time`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import pyarrow as pa
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    create_model,
)

from payfm.events.schema import OUTCOMES, RULES, SCHEMAS
from payfm.events.validate import shown_number
from payfm.serving.charges import OPTIONAL_AT_DECISION, parse_time
from payfm.serving.errors import shown
from payfm.serving.openapi_doc import field_schema


def field_problem(field: str | None, error: Mapping[str, Any], msg: str) -> str:
    """One pydantic error as the service words every problem: the field, what was expected, what was
    received (quoted through ``shown``: long numbers masked, cut short)."""
    kind = error.get("type")
    if kind == "missing":
        return f"Field '{field}': required. Got none."
    if kind == "timezone_aware":  # a time it parsed, so no card number: quoted as sent
        given = error.get("input")
        return (
            f"Field '{field}': expected a time with a timezone (e.g. 2026-03-01T12:00:00Z). "
            f"Got a naive timestamp {(given if _is_time(given) else shown(given))!r}."
        )
    if kind in ("string_too_long", "string_too_short"):  # (a note is free text: its length, not its words)
        limit = (error.get("ctx") or {}).get("max_length" if kind == "string_too_long" else "min_length")
        most = "most" if kind == "string_too_long" else "least"
        return f"Field '{field}': expected at {most} {limit} characters. Got {len(str(error.get('input')))}."
    expected = msg.replace("Input should have ", "expected ").replace("Input should be ", "expected ")
    expected = expected.removeprefix("Value error, ")  # (a validator's own message: said as it is)
    if kind == "extra_forbidden" or "input" not in error or isinstance(error["input"], dict | list):
        return f"Field '{field}': {expected}."
    return f"Field '{field}': {expected}. Got {_received(error['input'])}."


def _is_time(value: object) -> bool:
    """Whether ``value`` is an ISO 8601 time (date and time, no more): a text safe to quote as it is."""
    if not isinstance(value, str) or len(value) > 40:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _received(value: object) -> str:
    """A JSON scalar as a message quotes it: a text quoted, a number, true, false or null as JSON writes it
    (a number of 13 or more digits by its length only: :func:`payfm.events.validate.shown_number`)."""
    if isinstance(value, str):
        return repr(shown(value))
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return shown_number(value)
    return shown(value)


def _iso_text(value: Any) -> Any:
    """A timestamp arrives as an ISO 8601 text, read as the score endpoint reads it
    (:func:`~payfm.serving.charges.parse_time`): a number is refused, not read as Unix time."""
    if isinstance(value, str):
        try:
            parsed = parse_time(value)
        except ValueError:
            pass
        else:  # a naive one as sent: refused by AwareDatetime, quoted as sent (field_problem)
            return parsed if parsed.tzinfo is not None else value
    raise ValueError("expected an ISO 8601 time with a timezone (e.g. 2026-03-01T12:00:00Z)")


IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso_text)]


def _model_of(table: str, name: str, optional: frozenset[str] = frozenset()) -> type[BaseModel]:
    """A pydantic model of one event table: Arrow types to Python types, timestamps timezone-aware."""
    fields: dict[str, Any] = {}
    for f in SCHEMAS[table]:
        if pa.types.is_timestamp(f.type):
            t: Any = IsoTime
        elif pa.types.is_integer(f.type):
            t = StrictInt  # not a bool, a float or a text: a refund of `true` is no 1-cent refund
        else:
            t = StrictStr
        doc = (f.metadata or {}).get(b"doc", b"").decode()
        nullable = f.nullable or f.name in optional
        extra = field_schema(RULES[table].get(f.name), nullable)  # the document's; the service checks them
        if nullable:
            fields[f.name] = (t | None, Field(None, description=doc, json_schema_extra=extra))
        else:
            fields[f.name] = (t, Field(..., description=doc, json_schema_extra=extra))
    model: type[BaseModel] = create_model(name, __config__=ConfigDict(extra="forbid"), **fields)
    return model


ChargeIn = _model_of("charges", "Charge", OPTIONAL_AT_DECISION)
DisputeIn = _model_of("disputes", "Dispute")
EarlyFraudWarningIn = _model_of("early_fraud_warnings", "EarlyFraudWarning")
RefundIn = _model_of("refunds", "Refund")


class Reason(BaseModel):
    """One reason of a decision: a feature, its value, its contribution to the score and a sentence."""

    feature: str
    value: float | None
    contribution: float
    text: str


class DecisionOut(BaseModel):
    """The decision on a charge: outcome, risk score and level, the rule that decided it, reasons."""

    charge_id: str
    outcome: Literal["authorized", "manual_review", "blocked", "request_3ds"]
    risk_score: int | None
    risk_level: Literal["normal", "elevated", "highest"] | None
    rule: str | None
    action: str | None
    reasons: list[Reason]
    model: str | None
    ruleset_version: int | None
    latency_ms: float
    decided_at: str


class OutcomeOut(BaseModel):
    """An outcome recorded (a dispute, early fraud warning or refund): whether it changed the state."""

    id: str
    charge_id: str
    label_source: str | None
    applied: bool
    duplicate: bool
    # when the service dated it later than the `created` sent (a late outcome counts from just after the
    # newest event it had seen: docs/serving.md), that time; null when it counts from its own
    counted_from: str | None = None


class AuthorizationIn(BaseModel):
    """The processor's answer for a decided charge: authorized, declined by the issuer, or blocked."""

    model_config = ConfigDict(extra="forbid")
    outcome: Literal["authorized", "issuer_declined", "blocked"]
    decline_code: str | None = None


class AuthorizationOut(BaseModel):
    """An authorization result recorded: whether it changed the charge's outcome."""

    charge_id: str
    outcome: str
    decline_code: str | None
    applied: bool
    duplicate: bool


assert tuple(AuthorizationIn.model_fields["outcome"].annotation.__args__) == OUTCOMES  # type: ignore[union-attr]
