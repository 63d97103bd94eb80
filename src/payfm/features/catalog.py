"""Feature sets that ship with payfm: the default Radar-like set, the benchmark set, and a tiny one for docs.

Example:
    >>> fs = default_set()
    >>> len(fs.features) >= 100, fs.get("card.count_charges_1h").window
    (True, datetime.timedelta(seconds=3600))
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from payfm.errors import ConfigError
from payfm.features.definitions import Aggregate, Derived, Feature, FeatureSet, RequestFeature

H = timedelta(hours=1)
D = timedelta(days=1)
VELOCITY_WINDOWS = (H, D, 7 * D, 30 * D)
VELOCITY_ENTITIES = ("card", "email", "ip", "customer", "device", "merchant")


def _velocity() -> list[Feature]:
    """Counts and USD sums per entity over 1h/1d/7d/30d, and all-time counts."""
    out: list[Feature] = []
    for e in VELOCITY_ENTITIES:
        out += [Aggregate(e, "count", window=w) for w in VELOCITY_WINDOWS]
        out.append(Aggregate(e, "count"))
        out += [Aggregate(e, "sum", "amount_usd", window=w) for w in VELOCITY_WINDOWS]
    return out


def _distinct() -> list[Feature]:
    """Distinct cards per IP and device, distinct IPs and devices per card, and other linkage counts."""
    out: list[Feature] = []
    for entity, column in (
        ("ip", "card_fingerprint"),
        ("device", "card_fingerprint"),
        ("card", "ip_address"),
        ("card", "device_id"),
    ):
        out += [Aggregate(entity, "distinct", column, window=w) for w in (D, 7 * D, 30 * D)]
    out += [
        Aggregate("customer", "distinct", "card_fingerprint", window=30 * D),
        Aggregate("card", "distinct", "shipping_address_id", window=30 * D),
        Aggregate("card", "distinct", "ip_country", window=7 * D),
        Aggregate("card", "distinct", "merchant_id", window=D),
        Aggregate("device", "distinct", "customer_id", window=30 * D),
        Aggregate("card", "distinct", "ip_address"),
        Aggregate("card", "distinct", "device_id"),
    ]
    return out


def _declines() -> list[Feature]:
    """Declines, CVC failures and decline rates: card testing shows here."""
    out: list[Feature] = []
    for entity, windows in (
        ("card", (H, D, 7 * D)),
        ("ip", (H, D)),
        ("device", (H, D)),
        ("merchant", (H, D)),
        ("email", (D,)),
        ("bin", (H,)),
    ):
        out += [Aggregate(entity, "count", window=w, filter="declined") for w in windows]
    out += [
        Aggregate("bin", "count", window=H),
        Aggregate("card", "count", window=D, filter="cvc_fail"),
        Aggregate("ip", "count", window=D, filter="cvc_fail"),
        Aggregate("card", "count", window=30 * D, filter="card_present"),
    ]
    for entity, span in (
        ("card", "1d"),
        ("ip", "1d"),
        ("device", "1d"),
        ("merchant", "1h"),
        ("merchant", "1d"),
        ("bin", "1h"),
    ):
        out.append(
            Derived(
                f"{entity}.decline_rate_{span}",
                "ratio",
                (f"{entity}.count_declined_{span}", f"{entity}.count_charges_{span}"),
            )
        )
    return out


def _outcomes() -> list[Feature]:
    """Fraud outcomes known so far (each counts from its own time on): disputes, EFWs, refunds."""
    out: list[Feature] = []
    out += [
        Aggregate(e, "count", source="fraud_disputes")
        for e in ("card", "merchant", "ip", "device", "customer", "email")
    ]
    out += [Aggregate(e, "count", source="efws") for e in ("card", "merchant", "ip", "device")]
    out += [Aggregate(e, "count", source="refunds") for e in ("card", "merchant", "customer")]
    out += [
        Aggregate("merchant", "count", source="fraud_disputes", window=30 * D),
        Aggregate("merchant", "count", source="efws", window=30 * D),
        Aggregate("merchant", "count", source="refunds", window=7 * D),
        # The amounts refunded, in USD at their charges' rates (docs/features.md, "sources").
        Aggregate("merchant", "sum", "amount_usd", source="refunds", window=7 * D),
        Derived(
            "merchant.fraud_dispute_rate_all",
            "ratio",
            ("merchant.count_fraud_disputes_all", "merchant.count_charges_all"),
        ),
        Derived(
            "merchant.refund_rate_all", "ratio", ("merchant.count_refunds_all", "merchant.count_charges_all")
        ),
    ]
    return out


def _amount() -> list[Feature]:
    """The amount against the card's, customer's and merchant's history (USD)."""
    return [
        RequestFeature("amount_usd", "amount_usd"),
        RequestFeature("amount_usd_log", "amount_usd_log"),
        Aggregate("card", "mean", "amount_usd"),
        Aggregate("card", "std", "amount_usd"),
        Aggregate("card", "max", "amount_usd"),
        Aggregate("card", "min", "amount_usd"),
        Aggregate("card", "last", "amount_usd"),
        Aggregate("customer", "mean", "amount_usd", window=30 * D),
        Aggregate("customer", "std", "amount_usd", window=30 * D),
        Aggregate("customer", "max", "amount_usd", window=30 * D),
        Aggregate("merchant", "mean", "amount_usd", window=7 * D),
        Aggregate("merchant", "std", "amount_usd", window=7 * D),
        Derived(
            "card.amount_zscore",
            "zscore",
            ("amount_usd", "card.mean_amount_usd_all", "card.std_amount_usd_all"),
        ),
        Derived(
            "customer.amount_zscore_30d",
            "zscore",
            ("amount_usd", "customer.mean_amount_usd_30d", "customer.std_amount_usd_30d"),
        ),
        Derived(
            "merchant.amount_zscore_7d",
            "zscore",
            ("amount_usd", "merchant.mean_amount_usd_7d", "merchant.std_amount_usd_7d"),
        ),
        Derived("card.amount_to_max_ratio", "ratio", ("amount_usd", "card.max_amount_usd_all")),
    ]


def _recency() -> list[Feature]:
    """First-seen flags and time since previous / first event."""
    return [
        Aggregate("card", "first_seen"),
        Aggregate("device", "first_seen"),
        Aggregate("ip", "first_seen"),
        Aggregate("email", "first_seen"),
        Aggregate("card_merchant", "first_seen"),
        Aggregate("card_ip", "first_seen"),
        Aggregate("card_merchant", "count", window=30 * D),
        Aggregate("card_ip", "count", window=30 * D),
        Aggregate("card", "since_prev"),
        Aggregate("customer", "since_prev"),
        Aggregate("device", "since_prev"),
        Aggregate("card", "since_first"),
        Aggregate("customer", "since_first"),
        Aggregate("device", "since_first"),
    ]


def _request() -> list[Feature]:
    """Facts of the charge itself."""
    return [
        RequestFeature("local_hour", "local_hour"),
        RequestFeature("card_ip_country_mismatch", "mismatch", ("card_country", "ip_country")),
        RequestFeature("ip_billing_country_mismatch", "mismatch", ("ip_country", "billing_country")),
        RequestFeature(
            "billing_shipping_country_mismatch", "mismatch", ("billing_country", "shipping_country")
        ),
        RequestFeature("card_merchant_country_mismatch", "mismatch", ("card_country", "merchant_country")),
        RequestFeature("channel_ecommerce", "is", ("channel",), ("ecommerce",)),
        RequestFeature("channel_card_present", "is", ("channel",), ("card_present",)),
        RequestFeature("channel_recurring", "is", ("channel",), ("recurring",)),
        RequestFeature("cvc_fail", "is", ("cvc_check",), ("fail",)),
        RequestFeature("address_check_fail", "is", ("address_check",), ("fail",)),
        RequestFeature("three_ds_authenticated", "is", ("three_ds",), ("authenticated",)),
        RequestFeature("funding_prepaid", "is", ("card_funding",), ("prepaid",)),
        RequestFeature("ip_missing", "missing", ("ip_address",)),
        RequestFeature("device_missing", "missing", ("device_id",)),
        RequestFeature("since_credential_change", "since", ("credential_changed_at",)),
    ]


def default_set() -> FeatureSet:
    """The default payments feature set (Radar-like), >= 100 features."""
    feats = _request() + _amount() + _velocity() + _distinct() + _declines() + _outcomes() + _recency()
    return FeatureSet("default", tuple(feats))


def bench_set() -> FeatureSet:
    """The 15-feature benchmark set: per customer count and mean amount over 1/7/30 days; per merchant
    count and fraud rate over 1/7/30 days ending 7 days before the charge."""
    feats: list[Feature] = []
    week = 7 * D
    for w in (D, week, 30 * D):
        feats.append(Aggregate("customer", "count", window=w))
        feats.append(Aggregate("customer", "mean", "amount_usd", window=w))
    for w, span in ((D, "1d"), (week, "7d"), (30 * D, "30d")):
        charges = Aggregate("merchant", "count", window=w, offset=week, resolution=D)
        fraud = Aggregate("merchant", "count", window=w, offset=week, resolution=D, source="fraud_disputes")
        feats += [
            charges,
            fraud,
            Derived(f"merchant.fraud_rate_{span}_ending_7d_ago", "ratio", (fraud.name, charges.name)),
        ]
    return FeatureSet("bench15", tuple(feats))


def tiny_set() -> FeatureSet:
    """A few features for examples and quick tests."""
    return FeatureSet(
        "tiny",
        (
            Aggregate("card", "count", window=H),
            Aggregate("card", "sum", "amount_usd", window=D),
            Aggregate("card", "count", source="fraud_disputes"),
            RequestFeature("amount_usd", "amount_usd"),
        ),
    )


FEATURE_SETS: dict[str, Callable[[], FeatureSet]] = {
    "default": default_set,
    "bench15": bench_set,
    "tiny": tiny_set,
}


SETS_DIR = ("features", "sets")  # a workspace's own feature sets: <workspace>/features/sets/<name>.json


def set_path(root: Path, name: str) -> Path:
    """Where a workspace (at ``root``) keeps its feature set ``name`` (``payfm features define``)."""
    return root.joinpath(*SETS_DIR, f"{name}.json")


def workspace_sets(root: Path) -> list[str]:
    """The names of the feature sets a workspace (at ``root``) defines."""
    folder = root.joinpath(*SETS_DIR)
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def feature_set(name: str, root: str | os.PathLike[str] | None = None) -> FeatureSet:
    """A feature set by name: a bundled one, else one the workspace at ``root`` defines
    (``payfm features define``, kept as JSON under ``features/sets/``)."""
    if name in FEATURE_SETS:
        return FEATURE_SETS[name]()
    if root is not None:
        path = set_path(Path(root), name)
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"Feature set file '{path}': expected JSON. Got an error ({e}).") from None
            return FeatureSet.from_json(data, f"Feature set file '{path}'")
    known = [*FEATURE_SETS, *(workspace_sets(Path(root)) if root is not None else [])]
    raise ConfigError(
        f"Unknown feature set {name!r}. Expected one of {', '.join(known)}"
        + ("" if root is not None else " (a workspace's own sets need its workspace)")
        + "; define one with `payfm features define FILE.json`."
    )
