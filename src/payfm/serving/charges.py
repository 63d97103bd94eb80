"""Validation of one charge (or outcome) for the online path: fast, per row, with the event schema's rules.

:func:`payfm.events.validate.validate_events` checks whole Arrow tables (imports); a decision cannot afford
an Arrow round trip per charge, so this module applies the same contract to one mapping in plain Python:
the fields of :data:`payfm.events.schema.CHARGES`, each in its JSON type before anything converts it
(:func:`refuse_wrong_type`, which outcomes are checked with too), their vocabularies and patterns
(:data:`payfm.events.schema.RULES`), timezone-aware timestamps, empty and blank texts as missing (None in
optional fields, an error in required ones), the order of times (:data:`payfm.events.schema.ORDERED_TIMES`),
and no full card number in any value. Fields with a canonical form (IP addresses, e-mail domains) come back
in it, as imports store them and lists hold them. A charge accepted here is one an import would accept, so
features read the same inputs online and offline. Errors name the field and never echo a card number or an
e-mail address.

Example:
    >>> c = normalize_charge({"charge_id": "ch_1", "created": "2026-01-02T03:04:05Z", **EXAMPLE_FIELDS})
    >>> c["created_us"]
    1767323045000000
"""

from __future__ import annotations

import json
import numbers
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pyarrow as pa

from payfm.events.cards import contains_card_number, mask_long_numbers
from payfm.events.schema import (
    CHARGES,
    DECLINE_CODES,
    ORDERED_TIMES,
    RULES,
    SCHEMAS,
    TIME_MAX_US,
    TIMESTAMP,
    DomainError,
    FieldRule,
)
from payfm.events.validate import shown_number
from payfm.features.definitions import LATE_COLUMNS
from payfm.serving.errors import Conflict, InvalidInput, shown

# The fields of a charge the service reads; outcome-side fields of the log schema are accepted but optional.
CHARGE_FIELDS: dict[str, pa.Field] = {f.name: f for f in CHARGES}
TIMESTAMP_FIELDS = tuple(f.name for f in CHARGES if f.type == TIMESTAMP)
# Fields a live charge does not have yet (the processor's outcome, ground truth): optional at decision time.
OPTIONAL_AT_DECISION = frozenset({"outcome", "decline_code", "scenario"})
# String fields with a vocabulary, a pattern or a code set (countries).
_STRING_RULES = {
    name: rule
    for name, rule in RULES["charges"].items()
    if rule.choices is not None or rule.pattern is not None or rule.codes is not None
}
# Fields stored in a canonical form (IP addresses, e-mail domains): name -> (canonical, expected).
_CANONICAL = {
    name: (rule.canonical, rule.expected()) for name, rule in RULES["charges"].items() if rule.canonical
}
_BOUNDS = {
    name: (rule.min_value, rule.max_value if rule.max_value is not None else 2**63 - 1, rule.expected())
    for name, rule in RULES["charges"].items()
    if rule.min_value is not None
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

EXAMPLE_FIELDS: dict[str, Any] = {
    "merchant_id": "acct_1",
    "merchant_mcc": "5411",
    "merchant_country": "US",
    "card_fingerprint": "fp_1",
    "card_bin": "424242",
    "card_last4": "4242",
    "card_brand": "visa",
    "card_funding": "credit",
    "card_country": "US",
    "amount": 1999,
    "currency": "usd",
    "amount_usd": 1999,
    "channel": "ecommerce",
    "three_ds": "not_requested",
    "cvc_check": "pass",
    "address_check": "pass",
}


def parse_time(text: str) -> datetime:
    """An ISO 8601 time as every endpoint reads it (the score endpoint and the outcomes alike): what
    ``datetime.fromisoformat`` reads, with ``Z`` or ``z`` for UTC. Raises ValueError; naive is returned
    naive (the caller refuses it, naming the field).

    >>> parse_time("2026-01-02T03:04:05z").isoformat()
    '2026-01-02T03:04:05+00:00'
    """
    return datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)


def to_us(value: object, field: str) -> int:
    """Microseconds since the epoch of a timezone-aware datetime or ISO 8601 string; naive is refused."""
    if isinstance(value, str):
        try:
            value = parse_time(value)
        except ValueError:
            raise InvalidInput(
                f"Field '{field}' must be an ISO 8601 timestamp with a timezone. Got an unparsable string.",
                field=field,
            ) from None
    if not isinstance(value, datetime):
        raise InvalidInput(
            f"Field '{field}' must be a timestamp with a timezone. Got {type(value).__name__}.", field=field
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(
            f"Field '{field}' must carry a timezone (e.g. '2026-01-02T03:04:05Z'). Got a naive timestamp.",
            field=field,
        )
    delta = value - _EPOCH
    us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if not 0 <= us < TIME_MAX_US:  # as an import: a time outside 1970-2100 is a wrong unit or a typo
        raise InvalidInput(
            f"Field '{field}' must be a time between 1970 and 2100. Got {value.isoformat()}.", field=field
        )
    return us


def us_to_iso(us: int) -> str:
    """Microseconds since the epoch (:func:`to_us`) as an exact UTC ISO 8601 text, as messages show times.

    >>> us_to_iso(1767323045000001)
    '2026-01-02T03:04:05.000001+00:00'
    """
    return us_to_datetime(us).isoformat()


def us_to_datetime(us: int) -> datetime:
    """Microseconds since the epoch (:func:`to_us`) as an exact UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


def refuse_untimely(
    created_us: int, max_future_s: float | None, max_past_s: float | None = None, what: str = "charge"
) -> None:
    """Raise if ``created_us`` is more than ``max_future_s`` seconds ahead of this machine's clock, or more
    than ``max_past_s`` behind it (None: no bound). One event dated far ahead would move its keys' velocity
    windows there: every later event on the card, IP or merchant would then count as the first in its window.
    One dated far back would give its card, customer or device a history it never had (``since_first``, the
    ``_all`` counts): a fraudster's new card made to look established."""
    if max_future_s is None and max_past_s is None:
        return
    now_us = time.time_ns() // 1000
    ahead = (created_us - now_us) / 1e6
    if max_future_s is not None and ahead > max_future_s:
        bound, off, option = (
            f"at most {max_future_s:,.0f} s ahead of",
            f"{ahead:,.0f} s ahead",
            "--max-future-s",
        )
    elif max_past_s is not None and -ahead > max_past_s:
        bound, off, option = f"at most {max_past_s:,.0f} s behind", f"{-ahead:,.0f} s behind", "--max-past-s"
    else:
        return
    raise InvalidInput(
        f"Field 'created' of the {what} must be {bound} the server's clock "
        f"({datetime.fromtimestamp(now_us / 1e6, UTC).isoformat(timespec='seconds')}). Got "
        f"{datetime.fromtimestamp(created_us / 1e6, UTC).isoformat(timespec='seconds')}, {off}: check the "
        f"sender's clock (payfm serve {option} sets the bound).",
        field="created",
    )


# The event log's field names: a request's key that is one of them holds no card number (not scanned).
_OWN_NAMES = frozenset(name for schema in SCHEMAS.values() for name in schema.names)


def card_number_advice(charge: bool) -> str:
    """What to send instead of a full card number: a charge identifies its card otherwise; anything else (a
    review's note, an outcome's id) names a card by its last 4 digits."""
    return "send card_fingerprint, card_bin and card_last4" if charge else "the last 4 digits name a card"


def refuse_card_numbers(values: Mapping[str, Any], who: str = "charge", *, free_text: bool = False) -> None:
    """Raise if any string value holds a full card number (the message names the field, never the value) or
    is not valid Unicode (a lone surrogate, which the decision log takes but no event file can hold).
    ``free_text``: the values are written by people (a review's note), not identifiers
    (:func:`~payfm.events.cards.contains_card_number`)."""
    for name, v in values.items():
        if isinstance(v, str) and not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                # a lone surrogate of a JSON escape (\ud800): no event file can hold it
                raise InvalidInput(
                    f"Field '{shown(name)}' of the {who} is not valid Unicode (a lone surrogate, such as "
                    "\\ud800).",
                    field=shown(name),
                ) from None
        if isinstance(v, str) and len(v) >= 13 and contains_card_number(v, free_text=free_text):
            raise InvalidInput(
                f"Field '{shown(name)}' of the {who} holds a full card number, which payfm never accepts "
                f"({card_number_advice(who == 'charge')}). The value is not shown.",
                field=shown(name),
            )
        if (
            name not in _OWN_NAMES
            and isinstance(name, str)
            and len(name) >= 13
            and contains_card_number(name)
        ):
            raise InvalidInput(
                f"A field name of the {who} holds a full card number. It is not shown.", field=None
            )


class _Field(NamedTuple):
    """How :func:`normalize_charge` checks one field, worked out once from the schema and its rules."""

    kind: str  # "string", "int" or "time": the JSON type the field takes
    required: bool  # at decision time (the processor's outcome is not known yet)
    type: pa.DataType
    bounds: tuple[int, int, str] | None  # an integer's (min, max, expected)
    canonical: tuple[Callable[[str], str], str] | None  # a text's canonical form and its expected
    rule: FieldRule | None  # a text's vocabulary, pattern or code set


def _field_plan(field: pa.Field) -> _Field:
    name, type_ = field.name, field.type
    kind = "int" if pa.types.is_integer(type_) else "time" if name in TIMESTAMP_FIELDS else "string"
    required = not field.nullable and name not in OPTIONAL_AT_DECISION
    return _Field(kind, required, type_, _BOUNDS.get(name), _CANONICAL.get(name), _STRING_RULES.get(name))


_PLAN = {name: _field_plan(field) for name, field in CHARGE_FIELDS.items()}
_REQUIRED = tuple(name for name, f in _PLAN.items() if f.required)
# Every field of a charge and the instants of its times, None: what a charge that sends none of them holds.
_ABSENT: dict[str, Any] = dict.fromkeys(
    key for name in CHARGE_FIELDS for key in (name, *((f"{name}_us",) if name in TIMESTAMP_FIELDS else ()))
)


# The instants normalize_charge derives from a charge's times: the library's callers may pass them, a client
# may not (its values would be thrown away, silently).
DERIVED_FIELDS = ("created_us", "credential_changed_at_us")


def refuse_derived(charge: Mapping[str, Any]) -> None:
    """Refuse a request body holding a field the service derives itself (:data:`DERIVED_FIELDS`).

    >>> refuse_derived({"created": "2026-03-01T12:00:00Z", "created_us": 1})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    payfm.serving.errors.InvalidInput: Field 'created_us' is not a field of a charge: the service derives ...
    """
    for name in DERIVED_FIELDS:
        if name in charge:
            raise InvalidInput(
                f"Field '{name}' is not a field of a charge: the service derives it from "
                f"'{name.removesuffix('_us')}' (docs/events.md).",
                field=name,
            )


def normalize_charge(charge: Mapping[str, Any]) -> dict[str, Any]:
    """A validated copy of ``charge`` with ``created_us`` and ``credential_changed_at_us`` (ints or None).

    Timestamps may be aware datetimes or ISO strings (stored back as UTC ISO strings, so the result is
    JSON-serializable: the decision log keeps it to rebuild the online state after a restart). Every field of
    a charge is in the result, None where the charge does not have it.
    """
    refuse_card_numbers(charge)
    out = dict(_ABSENT)
    for name, v in charge.items():
        if name in DERIVED_FIELDS:
            continue
        field = _PLAN.get(name)
        if field is None:
            # The client's name: masked and cut as the endpoints' extra fields are (a card number, 60 kB).
            said = shown(name)
            raise InvalidInput(f"Field '{said}' is not a field of a charge (docs/events.md).", field=said)
        if field.kind == "string" and isinstance(v, str) and is_blank(v):
            # Missing, as imports read a text (two guests with customer_id '' are not one customer).
            if field.required:
                got = "an empty text" if not v else "a text of only whitespace"
                raise InvalidInput(f"Field '{name}' is required. Got {got}.", field=name)
            v = None
        if v is None:
            if field.required:
                raise InvalidInput(f"Field '{name}' is required. Got null.", field=name)
            continue  # (None already, its instant too)
        if field.kind == "string":
            if not isinstance(v, str):
                refuse_wrong_type(name, v, field.type)
            if field.canonical is not None:
                canonical, expected = field.canonical
                try:
                    v = canonical(v)
                except ValueError as e:
                    # An e-mail address is described, never quoted (the log keeps the domain alone).
                    hidden = e.hidden if isinstance(e, DomainError) else None
                    got = hidden or mask_long_numbers(repr(v))[:42]
                    raise InvalidInput(f"Field '{name}' must be {expected}. Got {got}.", field=name) from None
            elif field.rule is not None and not field.rule.accepts(v):
                rule = field.rule
                expected, hint = rule.problem(v) or ("", "")
                # An id's refusal names the character and where, or the length, never the value (received).
                said = f"Got {rule.received(v)}." + (mask_long_numbers(hint) if rule.text is None else "")
                raise InvalidInput(f"Field '{name}' must be {expected}. {said}", field=name)
        elif field.kind == "int":
            if type(v) is not int and isinstance(v, numbers.Integral) and not isinstance(v, bool | int):
                v = int(v)  # a NumPy integer (a notebook's np.int64) as Python's; JSON never gives one
            if isinstance(v, bool) or not isinstance(v, int) or not -(2**63) <= v < 2**63:
                refuse_wrong_type(name, v, field.type)
            if field.bounds is not None and not field.bounds[0] <= v <= field.bounds[1]:
                raise InvalidInput(
                    f"Field '{name}' must be {field.bounds[2]}. Got {shown_number(v)}.", field=name
                )
        else:
            if not isinstance(v, str | datetime):
                refuse_wrong_type(name, v, field.type)
            us = to_us(v, name)
            out[name + "_us"] = us
            v = datetime.fromtimestamp(us / 1e6, UTC).isoformat()  # display only; _us is exact
        out[name] = v
    for name in _REQUIRED:
        if out[name] is None:  # (one sent null or blank was refused above)
            raise InvalidInput(f"Field '{name}' is required. Got no such field.", field=name)
    _check_order(out)
    refuse_stray_decline_code(out["outcome"], out["decline_code"])
    if out["currency"] == "usd" and out["amount"] != out["amount_usd"]:  # as an import checks
        raise InvalidInput(
            f"Field 'amount_usd' must be the charge's amount itself for a charge in usd (both in US cents): "
            f"{out['amount']}. Got {out['amount_usd']}.",
            field="amount_usd",
        )
    return out


# How a message names what was received in place of the JSON type a field has.
_JSON_KINDS: dict[type, str] = {
    bool: "a boolean",
    int: "an integer",
    float: "a number with a fraction or an exponent",
    str: "a string",
    list: "an array",
    dict: "an object",
}


def refuse_wrong_type(name: str, value: object, type_: pa.DataType, who: str | None = None) -> None:
    """Raise unless ``value`` (not None) has the JSON type of a field of Arrow type ``type_``, before anything
    converts it: an integer field takes a JSON integer only (not a boolean, a number with a fraction or a
    text of digits) that fits in 64 bits, a timestamp field a text (an ISO 8601 time with a zone, which the
    caller parses) or an aware datetime from Python callers (never a number: Unix seconds or milliseconds
    are not guessed), a string field a string. The charge and the outcome endpoints check with it alike;
    ``who`` names the event ("refund") in the message.

    >>> refuse_wrong_type("amount", True, pa.int64(), "refund")
    Traceback (most recent call last):
    payfm.serving.errors.InvalidInput: Field 'amount' of the refund must be an integer. Got a boolean (true).
    """
    if pa.types.is_integer(type_):
        if isinstance(value, int) and not isinstance(value, bool):
            if -(2**63) <= value < 2**63:  # what the event log's int64 columns hold
                return
            raise InvalidInput(f"{_of(name, who)} must fit in 64 bits. Got {_kind(value)}.", field=name)
        expected = "an integer"
    elif pa.types.is_timestamp(type_):
        if isinstance(value, str | datetime):
            return
        expected = "a timestamp with a timezone, as an ISO 8601 text (e.g. '2026-01-02T03:04:05Z')"
    elif isinstance(value, str):
        return
    else:
        expected = "a string"
    raise InvalidInput(f"{_of(name, who)} must be {expected}. Got {_kind(value)}.", field=name)


def _of(name: str, who: str | None) -> str:
    return f"Field '{name}'" + (f" of the {who}" if who else "")


def _kind(value: object) -> str:
    """What a value is, in JSON's words, with the value itself when it is a scalar (a number as long as a
    card number by its length only; a text quoted through :func:`~payfm.serving.errors.shown`)."""
    if type(value).__module__ == "numpy" and isinstance(value, numbers.Real):  # a Python caller's
        number = int(value) if isinstance(value, numbers.Integral) else float(value)
        return f"a NumPy {type(value).__name__} ({shown_number(number)})"  # ("Got int64." read as none)
    kind = _JSON_KINDS.get(type(value), type(value).__name__)
    if isinstance(value, int | float) and not isinstance(value, bool) and shown_number(value) != repr(value):
        return shown_number(
            value
        )  # a run of 13 digits or more, by its length only ("an integer of 17 digits")
    if isinstance(value, bool | int | float | str):
        return f"{kind} ({shown(json.dumps(value) if not isinstance(value, str) else repr(value))[:42]})"
    return kind


def refuse_wrong_types(values: Mapping[str, Any], schema: pa.Schema, who: str) -> None:
    """:func:`refuse_wrong_type` for every field of ``values`` that ``schema`` has (None, missing fields and
    fields not in it are left to the schema's own validation)."""
    for name, v in values.items():
        if v is not None and isinstance(name, str) and name in schema.names:
            refuse_wrong_type(name, v, schema.field(name).type, who)


def refuse_stray_decline_code(outcome: str | None, decline_code: str | None) -> None:
    """Raise if ``decline_code`` comes with another outcome than ``issuer_declined`` (or with none): the
    issuer's reason for a decline, the same rule for a charge's request and for its authorization result."""
    if decline_code is not None and outcome != "issuer_declined":
        with_ = f"outcome '{outcome}'" if outcome is not None else "no outcome"
        raise InvalidInput(
            "Field 'decline_code' is the issuer's reason for a decline: it goes with outcome "
            f"'issuer_declined'. Got {shown(repr(decline_code))} with {with_}.",
            field="decline_code",
        )


def checked_decline_code(outcome: str, decline_code: str | None) -> str | None:
    """The ``decline_code`` of an authorization result: blank is missing (as in a charge's fields), else one
    of :data:`~payfm.events.schema.DECLINE_CODES`, with outcome ``issuer_declined`` only."""
    if decline_code is not None and is_blank(decline_code):
        return None
    if decline_code is not None and decline_code not in DECLINE_CODES:
        raise InvalidInput(
            f"Field 'decline_code' must be one of {', '.join(DECLINE_CODES)}. "
            f"Got {shown(repr(decline_code))}.",
            field="decline_code",
        )
    refuse_stray_decline_code(outcome, decline_code)  # the score endpoint's rule
    return decline_code


def is_blank(text: str) -> bool:
    """Empty or only whitespace: :func:`payfm.events.validate.blank_rows` for one text (Arrow's
    ``utf8_is_space`` and ``str.isspace`` agree on every code point; a test holds them to it)."""
    return not text or text.isspace()


def _check_order(charge: Mapping[str, Any]) -> None:
    """Raise unless the times :data:`~payfm.events.schema.ORDERED_TIMES` orders are in order (a credential
    change at or before its charge: a later one would make ``since_credential_change`` read the future)."""
    for earlier, later, what in ORDERED_TIMES["charges"]:
        first, then = charge.get(earlier + "_us"), charge.get(later + "_us")
        if first is not None and then is not None and first > then:
            raise InvalidInput(
                f"Field '{earlier}' must be {what} at or before the charge's '{later}'. Got "
                f"{us_to_iso(first)}, after the {later} {us_to_iso(then)}.",
                field=earlier,
            )


_RESULT_FIELDS = frozenset({*LATE_COLUMNS, "decline_code"})  # the processor's answer: may come with a retry
_REQUEST_FIELD = {f"{name}_us": name for name in TIMESTAMP_FIELDS}  # created_us -> created


def refuse_another_charge(cid: str, known: Mapping[str, Any], charge: Mapping[str, Any]) -> None:
    """A charge id the service knows (it decided it or is deciding it, or the event log holds it) sent with
    other fields is another charge, not a retry: refused (409) rather than answered with the first one's
    decision, or its later outcomes (a review closed as fraud) would label the first. ``known``: the charge as
    logged (every field) or the fields the state keeps of it (entity keys, amounts). A field the retry leaves
    out (null) is not compared, nor the processor's result; times compare as instants (``*_us``)."""
    for name, value in known.items():
        if name in _RESULT_FIELDS or f"{name}_us" in known or charge.get(name) is None:
            continue
        if charge[name] != value:
            field = _REQUEST_FIELD.get(name, name)  # the request's field, not the instant kept of it
            raise Conflict(
                f"Charge {shown(cid)!r} is known already (decided by this service, or in the event log) with "
                f"another '{field}': a retry must send the same charge, and a new charge needs a new "
                "charge_id.",
                field=field,
            )
