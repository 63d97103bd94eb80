"""Arrow schemas of the payment event log: the one contract every later stage reads.

Five tables. ``charges`` are payment attempts; ``disputes``, ``early_fraud_warnings`` and ``refunds`` are
outcome events that arrive later and point back at a charge by ``charge_id``; ``reviews`` are the closures of
manual reviews, written by the decision service (a label source; not part of a generated or imported
world). Every field is documented in docs/events.md; this module is the source of truth and a test checks
that the two agree.

Conventions (see ../shared/DESIGN.md, "Contracts"):
- timestamps are ``timestamp[us, tz=UTC]``; naive timestamps are rejected at the edge;
- amounts are integers in minor units of ``currency``; ``amount_usd`` is the same amount in US cents;
- cards are known only by fingerprint, BIN and last4;
- ids are strings; categorical fields are lower-case strings from the vocabularies below.

Example:
    >>> from payfm.events.schema import SCHEMAS
    >>> SCHEMAS["charges"].field("created").type
    TimestampType(timestamp[us, tz=UTC])
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from encodings import idna
from functools import cached_property, lru_cache

import pyarrow as pa

from payfm.errors import ConfigError, PayfmError
from payfm.events import countries, currency
from payfm.events.cards import mask_long_numbers, shown_text
from payfm.events.text import CHARGE_ID, FREE_TEXT, IDENTIFIER, TextRule
from payfm.inputs import kind

TIMESTAMP = pa.timestamp("us", tz="UTC")
# Event times are from 1970 to 2100 (UTC microseconds): outside, a time is a wrong unit, format or typo.
TIME_MAX_US = 4_102_444_800_000_000  # 2100-01-01


class OutOfRange(ValueError):
    """An ISO time that parses but has no UTC datetime (its offset takes it past year 1 or 9999)."""


def utc_time(text: str) -> datetime:
    """An ISO 8601 date or time as an aware UTC datetime, UTC when it names no zone (how a window bound of a
    command or an evaluation is read); ValueError when it is not one.

    >>> utc_time("2026-03-01").isoformat(), utc_time("2026-03-01T02:00:00+02:00").isoformat()
    ('2026-03-01T00:00:00+00:00', '2026-03-01T00:00:00+00:00')
    """
    t = datetime.fromisoformat(text)
    try:
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first UTC time Python has
        raise OutOfRange(f"{text!r} lies outside the times Python represents in UTC") from None


def iso_got(value: str, e: ValueError) -> str:
    """What an ISO date or time that did not parse received, with why when it has the shape of one and names
    no real time (the calendar's or the clock's reason).

    >>> iso_got("2026-02-30", ValueError("day is out of range for month"))
    "Got '2026-02-30': day is out of range for month."
    >>> iso_got("01/03/2026", ValueError("Invalid isoformat string: '01/03/2026'"))
    "Got '01/03/2026'."
    """
    why = str(e)
    if why.startswith("offset must be a timedelta"):
        why = "a UTC offset must be less than 24 hours"
    return f"Got {value!r}." if why.startswith("Invalid isoformat") else f"Got {value!r}: {why}."


def time_bound(value: object, who: str, error: type[PayfmError]) -> datetime | None:
    """A window bound as an aware datetime (None stays None): an aware datetime, a date (its midnight UTC) or
    ISO text (:func:`utc_time`: UTC when it names no zone), as ``--from``/``--to`` take them; else ``error``
    naming ``who`` ("The evaluation start"). One reading for every window of the library.

    >>> time_bound("2026-03-01", "The start", PayfmError).isoformat()
    '2026-03-01T00:00:00+00:00'
    >>> time_bound("01/03/2026", "The start", PayfmError)
    Traceback (most recent call last):
    payfm.errors.PayfmError: The start must be an ISO date or time (2026-03-01). Got '01/03/2026'.
    """
    if value is None or isinstance(value, datetime):
        if value is not None and value.tzinfo is None:
            raise error(f"{who} must be timezone-aware (UTC). Got {value.isoformat()}.")
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, str):
        raise error(
            f"{who} must be a datetime, a date or an ISO date or time text (2026-03-01). "
            f"Got {type(value).__name__}."
        )
    try:
        return utc_time(value)
    except OutOfRange as e:
        raise error(f"{who} must be a time Python can represent in UTC: {e}.") from None
    except ValueError as e:
        raise error(f"{who} must be an ISO date or time (2026-03-01). {iso_got(value, e)}") from None


# Vocabularies of the categorical fields. None (null) is allowed where the field is nullable.
CHANNELS = ("ecommerce", "card_present", "recurring")
OUTCOMES = ("authorized", "issuer_declined", "blocked")
# Charge outcomes that moved no money: such a charge has no refund, dispute or early fraud warning.
MOVED_NO_MONEY = frozenset({"blocked", "issuer_declined"})
DECLINE_CODES = (
    "do_not_honor",
    "insufficient_funds",
    "generic_decline",
    "card_velocity_exceeded",
    "incorrect_cvc",
    "expired_card",
    "lost_card",
    "stolen_card",
    "fraudulent",
    "transaction_not_allowed",
    "try_again_later",
    "processing_error",
)
CARD_BRANDS = ("visa", "mastercard", "amex", "discover", "jcb", "unionpay", "diners", "unknown")
CARD_FUNDING = ("credit", "debit", "prepaid", "unknown")
THREE_DS_RESULTS = ("not_requested", "authenticated", "attempted", "failed")
CHECK_RESULTS = ("pass", "fail", "unavailable", "unchecked")
DISPUTE_REASONS = (
    "fraudulent",
    "product_not_received",
    "product_unacceptable",
    "duplicate",
    "subscription_canceled",
    "credit_not_processed",
    "general",
)
EFW_FRAUD_TYPES = (
    "made_with_stolen_card",
    "made_with_lost_card",
    "unauthorized_use_of_card",
    "card_never_received",
    "made_with_counterfeit_card",
    "fraudulent_card_application",
    "misc",
)
REFUND_REASONS = ("requested_by_customer", "duplicate", "fraudulent")
# How a manual review is closed: refunded_as_fraud and disputed are fraud labels, approved a genuine one.
REVIEW_CLOSURES = ("approved", "refunded", "refunded_as_fraud", "disputed")
SCENARIOS = (
    "stolen_card",
    "card_testing",
    "account_takeover",
    "compromised_merchant",
    "friendly_fraud",
    "merchant_bust_out",
)


@dataclass(frozen=True)
class FieldRule:
    """Value constraints beyond the Arrow type, checked by :mod:`payfm.events.validate`.

    ``choices`` restricts a string field to a vocabulary; ``pattern`` is a full-match regular expression;
    ``codes`` a set of codes too large to list in messages (countries, currencies), described by
    ``described``, with ``hint`` pointing from a refused value to the code meant; ``min_value`` and
    ``max_value`` bound an integer field. ``canonical`` maps a string value to its one canonical spelling (a
    ValueError: not a valid value), so that equal values compare equal in lists, rules and feature keys;
    ``canonical_form`` is a full-match regular expression that only canonical values match (a fast path for
    whole columns: values matching it skip ``canonical``). ``text`` holds an id's or a free text's characters
    and length (:mod:`payfm.events.text`; made by :func:`text_field`, whose ``pattern`` says the same for
    readers of patterns); its problems name the character and its position, never the value.
    """

    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    min_value: int | None = None
    max_value: int | None = None
    codes: Callable[[], frozenset[str]] | None = None
    described: str | None = None
    canonical: Callable[[str], str] | None = None
    canonical_form: str | None = None
    hint: Callable[[str], str] | None = None
    text: TextRule | None = None

    def expected(self) -> str:
        """What a valid value is, in words (the start of an error message's 'expected')."""
        if self.described is not None:
            return self.described
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        if self.pattern is not None:
            return f"a value matching {self.pattern}"
        if self.max_value is None:
            return f"a value >= {self.min_value}"
        return f"a value from {self.min_value} to {self.max_value:,}"

    @cached_property
    def regex(self) -> re.Pattern[str] | None:
        return None if self.pattern is None else re.compile(self.pattern)

    @cached_property
    def accepts(self) -> Callable[[str], bool]:
        """A fast test of a string value for the decision service's hot path (:meth:`problem` says why)."""
        if self.text is not None:
            return self.text.accepts
        kinds = [self.choices is not None, self.pattern is not None, self.codes is not None]
        if kinds == [True, False, False]:
            return frozenset(self.choices or ()).__contains__
        if kinds == [False, True, False] and self.regex is not None:
            match = self.regex.fullmatch
            return lambda value: match(value) is not None
        if kinds == [False, False, True] and self.codes is not None:
            return self.codes().__contains__
        return lambda value: self.problem(value) is None

    def problem(self, value: str) -> tuple[str, str] | None:
        """None when the string ``value`` is valid (and canonical, for a field with a canonical form);
        otherwise (what was expected, a hint or "").

        A hint is a sentence with a leading space: the value meant, when one is close; for an id or a free
        text, where it is refused (the character and its position, or its length).
        """
        if self.text is not None:
            fault = self.text.fault(value)
            return None if fault is None else (fault.expected, fault.hint)
        if self.choices is not None and value not in self.choices:
            close = difflib.get_close_matches(value.strip().lower(), self.choices, n=1, cutoff=0.6)
            return self.expected(), f" Did you mean {close[0]!r}?" if close else ""
        if self.regex is not None and not self.regex.fullmatch(value):
            fixed = [v for v in (value.strip().lower(), value.strip().upper()) if self.regex.fullmatch(v)]
            return self.expected(), f" Did you mean {fixed[0]!r}?" if fixed else ""
        if self.codes is not None and value not in self.codes():
            return self.expected(), self.hint(value) if self.hint is not None else ""
        if self.canonical is not None:
            try:
                canonical = self.canonical(value)
            except ValueError:
                return self.expected(), ""
            if canonical != value:  # stored and compared canonical: this spelling is never held as such
                return self.expected(), f" Did you mean {canonical!r}?"
        return None

    @cached_property
    def canonical_regex(self) -> re.Pattern[str] | None:
        return None if self.canonical_form is None else re.compile(self.canonical_form)

    def received(self, value: str) -> str:
        """What a message says was received for the refused string ``value``: for an id or a free text, where
        it is refused (``U+0000 (NULL) at character 2``, ``a text of 60,000 characters``), never the value;
        otherwise the value quoted, its runs of 13 or more digits masked, cut to 60 characters.

        >>> text_field(IDENTIFIER).received("a\\x1b[31m"), RULES["charges"]["currency"].received("USD")
        ('U+001B (ESCAPE) at character 2', "'USD'")
        """
        fault = self.text.fault(value) if self.text is not None else None
        return fault.received if fault is not None else mask_long_numbers(repr(value))[:60]


def text_field(text: TextRule) -> FieldRule:
    """The rule of an id or free-text field: its characters and length (``text``), the same said as a
    full-match ``pattern`` (so that every reader of patterns applies it) and in words (``described``)."""
    return FieldRule(pattern=text.pattern, text=text, described=text.described)


_MAX_IP_CHARS = 64  # the longest IPv6 text is 45 characters, plus a zone id


@lru_cache(maxsize=65_536)
def canonical_ip(value: str) -> str:
    """The canonical text of an IPv4 or IPv6 address; a ValueError if ``value`` is not one.

    IPv6 is compressed and lower case; an IPv4-mapped IPv6 address (``::ffff:10.0.0.2``) is its IPv4
    address, so one client has one spelling whichever stack it came through. Cached: the decision service
    sees the same addresses again and again.

    >>> canonical_ip("2001:0DB8:0000::0001"), canonical_ip("::ffff:10.0.0.2"), canonical_ip(" 10.0.0.2")
    ('2001:db8::1', '10.0.0.2', '10.0.0.2')
    """
    if len(value) > _MAX_IP_CHARS:  # an IPv6 zone id is free text: keep long strings out of the cache
        raise ValueError(f"{len(value)} characters is too long for an IP address")
    address = ipaddress.ip_address(value.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.compressed
    return address.compressed


_MAX_DOMAIN_CHARS = 253  # RFC 1035: a name of at most 253 characters, in labels of 1 to 63
_MAX_LABEL_CHARS = 63
DOMAIN_NAME = (
    "a domain name: dot-separated labels of 1 to 63 letters, digits, hyphens or underscores, "
    f"at most {_MAX_DOMAIN_CHARS} characters"
)


class DomainError(ValueError, PayfmError):
    """Not a domain name. A ValueError for the canonical-form machinery (:attr:`FieldRule.canonical`), and a
    user error (one line at the CLI, a JSON error over HTTP) where it reaches a caller, such as a list entry.

    ``hidden`` says what the value is where a message must not quote it: an e-mail address (personal data;
    the log holds the domain, never the address); None for a value that may be quoted.
    """

    def __init__(self, value: str) -> None:
        self.hidden = "an e-mail address, not a domain (not shown)" if "@" in value else None
        quoted = mask_long_numbers(repr(value if len(value) <= 40 else value[:37] + "..."))
        super().__init__(f"An e-mail domain must be {DOMAIN_NAME}. Got {self.hidden or quoted}.")


def _label_char(c: str) -> bool:
    # Letters (any script, for internationalized names), digits, hyphens, underscores (_dmarc, SRV names) and
    # the combining marks of scripts that need them; never spaces, control characters or punctuation.
    return c.isalnum() or c in "-_" or unicodedata.category(c).startswith("M")


# Full stops of other scripts that IDNA (RFC 3490, 3.1) reads as the label separator.
_IDNA_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_MAX_DOMAIN_INPUT = 4 * _MAX_DOMAIN_CHARS  # longer input is refused before any Unicode work (and caching)


def _checked_labels(text: str) -> bool:
    return all(
        0 < len(label) <= _MAX_LABEL_CHARS and all(map(_label_char, label)) for label in text.split(".")
    )


@lru_cache(maxsize=65_536)
def _canonical_idn(text: str) -> str:
    """The canonical (Unicode, U-label) form of an internationalized domain name ``text``; a ValueError if it
    is not one. Each label goes through IDNA 2003 (``encodings.idna``, RFC 3490): ToASCII (nameprep: case
    folding and NFKC, then punycode) and back with ToUnicode, which also decodes and verifies A-labels
    (``xn--...``). Cached: a few distinct domains recur in a column and in the decision service's traffic."""
    text = text.translate(_IDNA_DOTS)
    if text.endswith("."):
        text = text[:-1]
    labels: list[str] = []
    ascii_chars = -1  # the name's length in its ASCII (A-label) form, which DNS limits
    for label in text.split("."):
        if label.isascii():
            label = label.lower()  # ToASCII leaves ASCII labels as they are
        ascii_label = idna.ToASCII(label)  # UnicodeError (a ValueError) if invalid
        unicode_label = idna.ToUnicode(ascii_label)  # an xn-- label: decoded, and its round trip checked
        ascii_chars += len(ascii_label) + 1
        if not 0 < len(unicode_label) <= _MAX_LABEL_CHARS or not all(map(_label_char, unicode_label)):
            raise ValueError("not a domain label")
        labels.append(unicode_label)
    if ascii_chars > _MAX_DOMAIN_CHARS:
        raise ValueError("too long")
    return ".".join(labels)


def canonical_domain(value: str) -> str:
    """The canonical text of a domain name; a :class:`DomainError` (a ValueError) if ``value`` is not one.

    One domain has one spelling, whichever way it was written: lower case, without surrounding spaces or a
    trailing dot, and internationalized names in their Unicode form (U-labels). A name that is not plain
    lower-case ASCII goes through IDNA 2003 (RFC 3490: nameprep's case folding and NFKC, then punycode and
    back), so a fullwidth ``ｅｖｉｌ.com`` is ``evil.com`` and ``bücher.de``, its ASCII form
    ``xn--bcher-kva.de``, ``bu\u0308cher.de`` (a combining diaeresis) and ``ＢÜＣＨＥＲ.de`` are all
    ``bücher.de``. The Unicode form is the one an analyst types in a list or a rule and reads in a report;
    it is also what domains were stored as before, so earlier entries keep their spelling.

    A domain is dot-separated labels of 1 to 63 letters (any script), digits, hyphens or underscores, at most
    253 characters in all (in its ASCII form, as DNS counts). An e-mail address is refused without being
    quoted; so is a malformed ``xn--`` label (IDNA's round trip fails).

    >>> canonical_domain("Evil.COM."), canonical_domain("ｅｖｉｌ.com"), canonical_domain("XN--BCHER-KVA.de")
    ('evil.com', 'evil.com', 'bücher.de')
    >>> try:
    ...     canonical_domain("alice@example.com")
    ... except DomainError as e:
    ...     print(e.hidden)
    an e-mail address, not a domain (not shown)
    """
    if "@" in value:
        raise DomainError(value)
    text = value.strip()
    if text.isascii():
        text = text.lower()
        if "xn--" not in text:  # the fast path: plain ASCII (every name of most data)
            if text.endswith("."):
                text = text[:-1]
            if not 0 < len(text) <= _MAX_DOMAIN_CHARS or not _checked_labels(text):
                raise DomainError(value)
            return text
    if not 0 < len(text) <= _MAX_DOMAIN_INPUT:
        raise DomainError(value)
    try:
        return _canonical_idn(text)
    except ValueError:  # UnicodeError too: IDNA's own errors
        raise DomainError(value) from None


# Only canonical values match these (IPv4 in dotted decimal without leading zeros; domains of up to four
# labels of lower-case ASCII letters, digits, hyphens and underscores, at most 251 characters, none starting
# with IDNA's ``xn--``, whose canonical form is Unicode): what synthetic and most real data hold. Other values
# are checked by the canonical function itself. (RE2 has no lookahead: a label not starting with ``xn--`` is
# one starting with another letter, or with ``x``, ``xn`` or ``xn-`` followed by something else.)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
CANONICAL_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_LDH = "[a-z0-9_-]"
_ASCII_LABEL = (
    rf"(?:[a-wyz0-9_-]{_LDH}{{0,61}}|x(?:[a-mo-z0-9_-]{_LDH}{{0,60}})?"
    rf"|xn(?:[a-z0-9_]{_LDH}{{0,59}})?|xn-(?:[a-z0-9_]{_LDH}{{0,58}})?)"
)
CANONICAL_DOMAIN = rf"(?:{_ASCII_LABEL}\.){{0,3}}{_ASCII_LABEL}"
# The largest amount, in any currency's minor unit: twelve digits, Stripe's limit for the currencies that
# allow the most (eight for most, e.g. $999,999.99). Larger is a unit or parsing error, not a payment.
MAX_AMOUNT = 999_999_999_999
AMOUNT = FieldRule(min_value=0, max_value=MAX_AMOUNT)
IP_ADDRESS = FieldRule(
    canonical=canonical_ip,
    canonical_form=CANONICAL_IPV4,
    described="an IPv4 or IPv6 address (e.g. 203.0.113.7 or 2001:db8::1)",
)
EMAIL_DOMAIN = FieldRule(
    canonical=canonical_domain, canonical_form=CANONICAL_DOMAIN, described="a domain name"
)


def _f(name: str, type_: pa.DataType, nullable: bool, doc: str) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


COUNTRY = FieldRule(codes=countries.country_codes, described=countries.DESCRIBED, hint=countries.country_hint)
CURRENCY = FieldRule(codes=currency.currency_codes, described=currency.DESCRIBED, hint=currency.currency_hint)
ID = text_field(IDENTIFIER)
CHARGE_ID_RULE = text_field(CHARGE_ID)
NOTE = text_field(FREE_TEXT)
CHARGES = pa.schema(
    [
        _f("charge_id", pa.string(), False, "Unique id of the payment attempt."),
        _f("created", TIMESTAMP, False, "When the charge was attempted (UTC, microseconds)."),
        _f("merchant_id", pa.string(), False, "The merchant (the platform's connected account) charging."),
        _f("merchant_mcc", pa.string(), False, "Merchant category code, four digits (ISO 18245)."),
        _f("merchant_country", pa.string(), False, "Merchant's country, ISO 3166-1 alpha-2."),
        _f("customer_id", pa.string(), True, "The merchant's customer account; null for guest checkout."),
        _f(
            "card_fingerprint",
            pa.string(),
            False,
            "Stable keyed fingerprint of the card number; never the PAN.",
        ),
        _f(
            "card_bin",
            pa.string(),
            True,
            "Issuer identification number: first 6 or 8 digits; an import's `bin` leaves it null for a "
            "card number under 11 digits (5 digits of every number stay unknown).",
        ),
        _f(
            "card_last4",
            pa.string(),
            True,
            "Last four digits of the card number; an import's `last4` leaves it null for a card number "
            "under 15 digits.",
        ),
        _f("card_brand", pa.string(), False, "Card network."),
        _f("card_funding", pa.string(), False, "credit, debit or prepaid."),
        _f("card_country", pa.string(), False, "Issuing country, ISO 3166-1 alpha-2."),
        _f("amount", pa.int64(), False, "Amount in minor units of `currency` (cents for usd, yen for jpy)."),
        _f("currency", pa.string(), False, "ISO 4217 code, lower case."),
        _f("amount_usd", pa.int64(), False, "The amount in US cents (at fixed reference rates by default)."),
        _f("channel", pa.string(), False, "ecommerce, card_present or recurring."),
        _f(
            "ip_address",
            pa.string(),
            True,
            "Client IP address, IPv4 or IPv6 in canonical form; null when card present.",
        ),
        _f("ip_country", pa.string(), True, "Country of the IP address, ISO 3166-1 alpha-2."),
        _f("device_id", pa.string(), True, "Device fingerprint of the client (browser or app)."),
        _f(
            "email_domain",
            pa.string(),
            True,
            "Domain of the customer's e-mail address (never the address), lower case, internationalized "
            "names in Unicode form.",
        ),
        _f("billing_country", pa.string(), True, "Billing address country, ISO 3166-1 alpha-2."),
        _f("shipping_country", pa.string(), True, "Shipping address country; null for non-shipped goods."),
        _f("shipping_address_id", pa.string(), True, "Keyed hash of the full shipping address."),
        _f(
            "credential_changed_at",
            TIMESTAMP,
            True,
            "Last password or e-mail change of the customer account before the charge, if known.",
        ),
        _f("three_ds", pa.string(), False, "3-D Secure result."),
        _f("cvc_check", pa.string(), False, "CVC verification result."),
        _f("address_check", pa.string(), False, "Address (AVS) verification result."),
        _f(
            "outcome", pa.string(), False, "authorized, issuer_declined or blocked (by the merchant's rules)."
        ),
        _f("decline_code", pa.string(), True, "Issuer's decline code when outcome is issuer_declined."),
        _f("retry_of", pa.string(), True, "charge_id of the declined charge this attempt retries."),
        _f(
            "scenario",
            pa.string(),
            True,
            "Ground-truth fraud scenario (synthetic data only); null if genuine.",
        ),
    ]
)

DISPUTES = pa.schema(
    [
        _f("dispute_id", pa.string(), False, "Unique id of the dispute."),
        _f("charge_id", pa.string(), False, "The disputed charge."),
        _f("created", TIMESTAMP, False, "When the dispute was opened (UTC): the label's own time."),
        _f("reason", pa.string(), False, "Dispute reason; `fraudulent` makes the charge a fraud label."),
        _f("amount", pa.int64(), False, "Disputed amount in minor units of `currency`."),
        _f("currency", pa.string(), False, "ISO 4217 code, lower case."),
    ]
)

EARLY_FRAUD_WARNINGS = pa.schema(
    [
        _f("efw_id", pa.string(), False, "Unique id of the early fraud warning (issuer TC40 / SAFE report)."),
        _f("charge_id", pa.string(), False, "The charge the issuer reported."),
        _f("created", TIMESTAMP, False, "When the warning arrived (UTC)."),
        _f("fraud_type", pa.string(), False, "Issuer's fraud type."),
    ]
)

REFUNDS = pa.schema(
    [
        _f("refund_id", pa.string(), False, "Unique id of the refund."),
        _f("charge_id", pa.string(), False, "The refunded charge."),
        _f("created", TIMESTAMP, False, "When the refund was made (UTC)."),
        _f("amount", pa.int64(), False, "Refunded amount in minor units of `currency`."),
        _f("currency", pa.string(), False, "ISO 4217 code, lower case."),
        _f("reason", pa.string(), False, "Refund reason."),
    ]
)

REVIEWS = pa.schema(
    [
        _f("charge_id", pa.string(), False, "The reviewed charge (closed at most once)."),
        _f(
            "created",
            TIMESTAMP,
            False,
            "When the review was closed (UTC), on the events' timeline: the wall clock when serving live, "
            "the replay's time when serving history (docs/serving.md). The label's own time.",
        ),
        _f(
            "opened",
            TIMESTAMP,
            False,
            "When the decision service sent the charge to review: the charge's time (UTC).",
        ),
        _f(
            "closed_as",
            pa.string(),
            False,
            "How it was closed; `refunded_as_fraud` and `disputed` are fraud labels, `approved` genuine.",
        ),
        _f("rule", pa.string(), True, "The rule that sent the charge to review."),
        _f("risk_score", pa.int64(), True, "The risk score (0-100) of the decision; null without a model."),
        _f("reviewer", pa.string(), True, "Name of the API key that closed the review."),
        _f("note", pa.string(), True, "The reviewer's note."),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "charges": CHARGES,
    "disputes": DISPUTES,
    "early_fraud_warnings": EARLY_FRAUD_WARNINGS,
    "refunds": REFUNDS,
    "reviews": REVIEWS,
}
TABLES: tuple[str, ...] = tuple(SCHEMAS)

# The events that make a charge fraud, each with its own time: a fraudulent dispute, an early fraud warning, a
# manual review closed as refunded_as_fraud (the decision service's). The one definition read by the training
# labels, the evaluation, the rules backtest and `payfm summary`.
FRAUD_OUTCOMES_SQL = """SELECT charge_id, created FROM disputes WHERE reason = 'fraudulent'
    UNION ALL SELECT charge_id, created FROM early_fraud_warnings
    UNION ALL SELECT charge_id, created FROM reviews WHERE closed_as = 'refunded_as_fraud'"""
# The tables of the payments world itself (what `payfm generate` and imports produce); ``reviews`` come from
# the decision service only.
PAYMENT_TABLES: tuple[str, ...] = ("charges", "disputes", "early_fraud_warnings", "refunds")

# The id column of each table (unique within the table).
ID_COLUMNS: dict[str, str] = {
    "charges": "charge_id",
    "disputes": "dispute_id",
    "early_fraud_warnings": "efw_id",
    "refunds": "refund_id",
    "reviews": "charge_id",
}

# Every string field has a rule (a test holds it): a vocabulary, a pattern, a code list, a canonical form, or
# the characters and length of an id or a free text (payfm.events.text).
RULES: dict[str, dict[str, FieldRule]] = {
    "charges": {
        "charge_id": CHARGE_ID_RULE,
        "merchant_id": ID,
        "merchant_mcc": FieldRule(pattern=r"[0-9]{4}"),
        "merchant_country": COUNTRY,
        "customer_id": ID,
        "card_fingerprint": ID,
        "card_bin": FieldRule(pattern=r"[0-9]{6,8}"),
        "card_last4": FieldRule(pattern=r"[0-9]{4}"),
        "card_brand": FieldRule(choices=CARD_BRANDS),
        "card_funding": FieldRule(choices=CARD_FUNDING),
        "card_country": COUNTRY,
        "amount": AMOUNT,
        "currency": CURRENCY,
        "amount_usd": AMOUNT,
        "channel": FieldRule(choices=CHANNELS),
        "ip_address": IP_ADDRESS,
        "ip_country": COUNTRY,
        "device_id": ID,
        "email_domain": EMAIL_DOMAIN,
        "billing_country": COUNTRY,
        "shipping_country": COUNTRY,
        "shipping_address_id": ID,
        "three_ds": FieldRule(choices=THREE_DS_RESULTS),
        "cvc_check": FieldRule(choices=CHECK_RESULTS),
        "address_check": FieldRule(choices=CHECK_RESULTS),
        "outcome": FieldRule(choices=OUTCOMES),
        "decline_code": FieldRule(choices=DECLINE_CODES),
        "retry_of": CHARGE_ID_RULE,
        "scenario": FieldRule(choices=SCENARIOS),
    },
    "disputes": {
        "dispute_id": ID,
        "charge_id": CHARGE_ID_RULE,
        "reason": FieldRule(choices=DISPUTE_REASONS),
        "amount": AMOUNT,
        "currency": CURRENCY,
    },
    "early_fraud_warnings": {
        "efw_id": ID,
        "charge_id": CHARGE_ID_RULE,
        "fraud_type": FieldRule(choices=EFW_FRAUD_TYPES),
    },
    "refunds": {
        "refund_id": ID,
        "charge_id": CHARGE_ID_RULE,
        "reason": FieldRule(choices=REFUND_REASONS),
        "amount": AMOUNT,
        "currency": CURRENCY,
    },
    "reviews": {
        "charge_id": CHARGE_ID_RULE,
        "closed_as": FieldRule(choices=REVIEW_CLOSURES),
        "rule": ID,
        "risk_score": FieldRule(min_value=0),
        "reviewer": ID,
        "note": NOTE,
    },
}

# Time fields of one event that must be in order: (earlier, later, what the earlier one is). A credential
# change is known at or before its charge; a later one would make `since_credential_change` read the future.
ORDERED_TIMES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "charges": (("credential_changed_at", "created", "a credential change"),),
}


class UnknownTable(ConfigError, ValueError):
    """A table name that is none of the event log's (a ValueError as well: what it was before)."""


def schema_of(table: str) -> pa.Schema:
    """The Arrow schema of ``table``; a clear error for an unknown name, with the name it likely meant.

    >>> schema_of("charge")
    Traceback (most recent call last):
    ...
    payfm.events.schema.UnknownTable: Unknown event table 'charge' (did you mean 'charges'?). Expected one \
of charges, disputes, early_fraud_warnings, refunds, reviews.
    """
    if isinstance(table, str) and table in SCHEMAS:
        return SCHEMAS[table]
    close = difflib.get_close_matches(table, TABLES, n=1) if isinstance(table, str) else []
    shown = f"'{shown_text(table, 60)}'" if isinstance(table, str) else f"named by {kind(table)} (not a str)"
    raise UnknownTable(
        f"Unknown event table {shown}{f' (did you mean {close[0]!r}?)' if close else ''}. "
        f"Expected one of {', '.join(TABLES)}."
    )


def column_names(columns: object, have: Sequence[str], param: str, who: str, table: str) -> list[str]:
    """``columns`` (any sequence of column names: a list, a tuple) as a list, each one of ``have``, the
    columns of ``table``; else a ConfigError naming ``param`` of ``who``, the unknown names and the known
    ones they likely meant (pyarrow's own errors took only a list, and dumped the whole schema).

    >>> column_names(("amount",), ["amount", "created"], "columns", "Workspace.read", "table 'charges'")
    ['amount']
    >>> column_names(["amout"], ["amount", "created"], "columns", "Workspace.read", "table 'charges'")
    Traceback (most recent call last):
    ...
    payfm.errors.ConfigError: The 'columns' of Workspace.read must name columns of table 'charges'. Got \
'amout' (did you mean 'amount'?).
    """
    if isinstance(columns, str):
        shown = shown_text(columns, 60)
        raise ConfigError(
            f"The '{param}' of {who} must be a list of column names. Got the str '{shown}': for one column, "
            f"['{shown}']."
        )
    if not isinstance(columns, Iterable):
        raise ConfigError(f"The '{param}' of {who} must be a list of column names. Got {kind(columns)}.")
    names = list(columns)
    odd = next((c for c in names if not isinstance(c, str)), None)
    if len(names) != sum(isinstance(c, str) for c in names):
        raise ConfigError(
            f"The '{param}' of {who} must be a list of column names (texts). Got {kind(odd)} among them."
        )
    unknown = [c for c in dict.fromkeys(names) if c not in have]
    if unknown:
        got = []
        for name in unknown[:10]:
            close = difflib.get_close_matches(name, list(have), n=1)
            got.append(f"'{shown_text(name, 60)}'" + (f" (did you mean {close[0]!r}?)" if close else ""))
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise ConfigError(f"The '{param}' of {who} must name columns of {table}. Got {', '.join(got)}{more}.")
    return names
