"""Human-readable reasons: a sentence per feature from its definition, with the training median as "typical".

Example:
    >>> from payfm.features.catalog import default_set
    >>> t = templates(default_set())
    >>> Reason("card.count_charges_1h", 9.0, 0.3, 1.2, t["card.count_charges_1h"]).text
    '9 charges on this card in the last hour; typical: 0.3'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from payfm.events.schema import SCHEMAS
from payfm.features.definitions import ENTITIES, Aggregate, Derived, FeatureSet, RequestFeature

_ENTITY = {
    "card": "this card",
    "email": "this e-mail domain",
    "ip": "this IP address",
    "customer": "this customer",
    "device": "this device",
    "merchant": "this merchant",
    "bin": "this BIN",
    "card_merchant": "this card at this merchant",
    "card_ip": "this card from this IP address",
}
_SOURCE = {
    "charges": "charges",
    "fraud_disputes": "fraud disputes",
    "efws": "early fraud warnings",
    "refunds": "refunds",
}
_SPAN = {3600: "the last hour", 86400: "the last day", 604800: "the last 7 days", 2592000: "the last 30 days"}
GENERIC = "{name} = {value}; typical: {typical}"
# A template that counts: "{value} charges on ...", "{value} distinct device ids seen with ...". With a value
# of 1 its noun is made singular when the text is built (not in the template), so models registered before
# with their templates in their metadata read "1 charge" too.
_COUNTED = re.compile(r"^\{value\} (?P<noun>[a-z0-9 -]+?) (?=on this |seen with this )")


def _plural(noun: str) -> str:
    """The plural of a column's noun: "device id" -> "device ids", "ip address" -> "ip addresses"."""
    if noun.endswith(("s", "x", "sh", "ch")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "o", "u"):
        return noun[:-1] + "ies"
    return noun + "s"


def _singular(noun: str) -> str:
    """The singular of :func:`_plural`'s nouns and of the source names: "charges" -> "charge", "ip
    addresses" -> "ip address" (and "ip addresss", "ip countrys", as earlier templates wrote them)."""
    if noun.endswith("ies"):
        return noun[:-3] + "y"
    if noun.endswith(("sses", "xes", "shes", "ches")):
        return noun[:-2]
    return noun[:-1] if noun.endswith("s") else noun


def _one(template: str) -> str:
    """``template`` for a value of 1: its counted noun singular ("{value} charge on this card ...")."""
    m = _COUNTED.match(template)
    if m is None:
        return template
    return template[: m.start("noun")] + _singular(m.group("noun")) + template[m.end("noun") :]


def _span(f: Aggregate) -> str:
    if f.window is None:
        return "all time"
    secs = int(f.window.total_seconds())
    text = _SPAN.get(
        secs, f"the last {secs // 3600} hours" if secs < 86400 else f"the last {secs // 86400} days"
    )
    if f.offset:
        text += f" ending {int(f.offset.total_seconds()) // 86400} days ago"
    return text


def template(f: Aggregate | RequestFeature | Derived) -> str:
    """The reason sentence of one feature, with ``{value}`` and ``{typical}`` placeholders."""
    if isinstance(f, Aggregate):
        who = _ENTITY.get(f.entity, f"this {f.entity}")
        what = _SOURCE.get(f.source, f.source)
        if f.filter:
            what = f"{f.filter.replace('_', ' ')} {what}"
        span = _span(f)
        # the typical value in the value's unit: dollars for amounts, seconds for times
        money = f.column == "amount_usd" and f.agg in ("sum", "mean", "min", "max", "std", "last")
        typical = "${typical}" if money else "{typical} s" if f.agg in ("since_prev", "since_first") else None
        if f.agg == "count":
            body = f"{{value}} {what} on {who} in {span}" if f.window else f"{{value}} {what} on {who} so far"
        elif f.agg == "sum":  # (an outcome's amount is its own: the amounts refunded or disputed)
            body = f"${{value}} of {what} on {who} in {span}"
        elif f.agg == "distinct":
            col = (f.column or "").replace("_", " ")
            body = f"{{value}} distinct {_plural(col)} seen with {who} in {span}"
        elif f.agg == "first_seen":
            body = f"first time {who} is seen: {{value}}"
        elif f.agg in ("since_prev", "since_first"):
            which = "previous" if f.agg == "since_prev" else "first"
            body = f"{{value}} s since the {which} charge of {who}"
        else:
            col = "amount" if money else (f.column or "").replace("_", " ")
            value = "${value}" if money else "{value}"
            body = f"{f.agg} {col} of {who} over {span}: {value}"
        return body + "; typical: " + (typical or "{typical}")
    if isinstance(f, RequestFeature):
        words = {
            "amount_usd": "amount ${value}; typical: ${typical}",
            "amount_usd_log": "log amount {value}; typical: {typical}",
            "local_hour": "local hour {value}; typical: {typical}",
            "since": "{value} s since " + " ".join(f.columns).replace("_", " ") + "; typical: {typical} s",
        }
        if f.kind in words:
            return words[f.kind]
        return f.name.replace("_", " ") + ": {value}; typical: {typical}"
    return _derived_template(f.name)


_NAMED_SPAN = re.compile(r"_(\d+[mhd])$|_all$")


def _derived_template(name: str) -> str:
    """A derived feature's reason from its name, ``<entity>.<what>[_<window>]``: ``merchant.decline_rate_1h``
    says "decline rate of this merchant in the last 1h: {value}", ``card.amount_zscore`` "amount zscore of
    this card: {value}"; a name of another shape, its words."""
    entity, dot, rest = name.partition(".")
    if not dot or entity not in _ENTITY:
        return name.replace(".", ": ").replace("_", " ") + ": {value}; typical: {typical}"
    m = _NAMED_SPAN.search(rest)
    span = "" if m is None else " so far" if m.group(1) is None else f" in the last {m.group(1)}"
    what = rest[: m.start()] if m is not None else rest
    return f"{what.replace('_', ' ')} of {_ENTITY[entity]}{span}: {{value}}; typical: {{typical}}"


def templates(fset: FeatureSet) -> dict[str, str]:
    """Feature name -> reason template, for every feature of the set."""
    return {f.name: template(f) for f in fset.features}


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "missing"
    if float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"


# Entities keyed by a field a charge may lack (a guest checkout has no customer, a card-present one no IP): a
# feature of theirs is missing for such a charge as much as for a first one.
_OPTIONAL_KEYS = {
    name: " or ".join(f.removesuffix("_id").replace("_", " ") for f in optional)
    for name, fields in ENTITIES.items()
    if (optional := [f for f in fields if SCHEMAS["charges"].field(f).nullable])
}


def _why_missing(feature: str) -> str:
    """Why ``feature`` may have no value: no history yet, or (for an entity keyed by a field a charge may
    lack) no key at all: ``customer.count_charges_1d`` of a guest checkout."""
    key = _OPTIONAL_KEYS.get(feature.split(".", 1)[0])
    return "no history yet" if key is None else f"no history yet, or the charge has no {key}"


@dataclass(frozen=True)
class Reason:
    """One feature's contribution to a score (in log-odds for trees and linear models)."""

    feature: str
    value: float | None
    typical: float | None
    contribution: float
    template_: str = GENERIC

    @property
    def text(self) -> str:
        if self.value is None or math.isnan(self.value):
            # the typical value in its unit, as the template writes it ("{typical} s", "${typical}")
            _, said, unit = self.template_.rpartition("; typical: ")
            typical = (unit if said else "{typical}").format(typical=_fmt(self.typical))
            return f"no value for {self.feature} ({_why_missing(self.feature)}); typical: {typical}"
        value = _fmt(self.value)
        template = _one(self.template_) if value == "1" else self.template_
        if value == _fmt(self.typical) and "; typical: " in template:
            # "0 charges on this IP address in the last 30 days; typical: 0" explained nothing: a tree's
            # contribution is measured from the average charge, not the median one, and a value at the
            # median can still raise the score (a new IP); the sentence keeps the value alone
            template = template.rpartition("; typical: ")[0]
        return template.format(name=self.feature, value=value, typical=_fmt(self.typical))

    def to_json(self) -> dict[str, object]:
        return {
            "feature": self.feature,
            "value": None if self.value is None or math.isnan(self.value) else self.value,
            "typical": self.typical,
            "contribution": self.contribution,
            "text": self.text,
        }
