"""The decision service's OpenAPI document, as the API answers: Bearer keys on every route but the health
check, and every error in the service's one shape, ``{"error": {"type", "message", "field"}}``, with the
statuses each route can answer. FastAPI's generated document knows neither (it documents its own validation
error body and no security), so a client generated from it would send no key and parse no error."""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

from payfm.events.schema import FieldRule

ERROR = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {
                    "type": "string",
                    "description": "InvalidInput, Conflict, NotFound, Unauthorized...",
                },
                "message": {"type": "string", "description": "What was expected and what was received."},
                "field": {"type": ["string", "null"], "description": "The request field at fault, if one."},
            },
        }
    },
}
_WHY = {
    "401": "No valid API key: send 'Authorization: Bearer <key>' (`payfm serve keys create NAME`).",
    "404": "No such charge (or review).",
    "409": "Conflicts with what is recorded: the same id with other fields, a result given before.",
    "413": "The body is over the size limit (64 KiB by default).",
    "422": "Invalid input: the field, what was expected and what was received (a card number never echoed).",
    "503": "Overloaded (shed before parsing) or Unavailable (a backend failed; the request was not "
    "recorded): retry after the Retry-After header's seconds.",
}
# the statuses a route answers beyond 200, 401 (keyed routes), 422 and 503 (every route): by path prefix
_MORE = {
    "/v1/charges/score": ("409", "413"),
    "/v1/charges/": ("404", "409", "413"),
    "/v1/disputes": ("404", "409", "413"),
    "/v1/early_fraud_warnings": ("404", "409", "413"),
    "/v1/refunds": ("404", "409", "413"),
    "/v1/reviews/": ("404", "409", "413"),
}
_READS = ("404",)  # GET /v1/reviews/{charge_id}: no body, no conflict


def field_schema(rule: FieldRule | None, nullable: bool) -> dict[str, Any]:
    """What the event schema's rule of a field adds to its JSON schema, so a generated client knows the
    values it may send: a vocabulary or code list as an enum (with null for an optional field), a pattern
    (anchored: JSON schema's are not), bounds, an id's or a text's length. The service checks them all
    (``payfm.events.schema.RULES``), and more: the characters an id may hold, canonical forms (an IP
    address, a domain), which the fields' descriptions state."""
    if rule is None:
        return {}
    out: dict[str, Any] = {}
    values = rule.choices if rule.choices is not None else (sorted(rule.codes()) if rule.codes else None)
    if values is not None:
        out["enum"] = [*values, None] if nullable else list(values)
    if rule.pattern is not None and rule.text is None:  # an id's is in Python's regex dialect, not ECMA's
        out["pattern"] = f"^(?:{rule.pattern})$"
    if rule.min_value is not None:
        out["minimum"] = rule.min_value
    if rule.max_value is not None:
        out["maximum"] = rule.max_value
    if rule.text is not None:
        out["maxLength"] = rule.text.max_chars
    return out


def shaped(spec: dict[str, Any], open_paths: Collection[str]) -> dict[str, Any]:
    """``spec`` (FastAPI's document) with the service's security and error responses."""
    out = copy.deepcopy(spec)
    components = out.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Error"] = ERROR
    components["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API key of `payfm serve keys`."}
    }
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in out.get("paths", {}).items():
        for method, op in operations.items():
            statuses = ["422", "503"]
            if path not in open_paths:
                op["security"] = [{"bearerAuth": []}]
                statuses.append("401")
            more = next((more for prefix, more in _MORE.items() if path.startswith(prefix)), ())
            statuses += _READS if method == "get" and more else more
            responses = op.setdefault("responses", {})
            for status in sorted(set(statuses)):
                responses[status] = {"description": _WHY[status], "content": error}
    return out
