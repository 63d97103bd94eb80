"""Feature sets that ship with payfm: the default Radar-like set, the benchmark set, and a tiny one for docs.

Example:
    >>> fs = default_set()
    >>> len(fs.features) >= 100, fs.get("card.count_charges_1h").window
    (True, datetime.timedelta(seconds=3600))
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from payfm.errors import ConfigError, PayfmError
from payfm.events.cards import shown_text
from payfm.features.definitions import (
    AGGS,
    ALL_TIME_ONLY,
    ENTITIES,
    Aggregate,
    Derived,
    Feature,
    FeatureSet,
    RequestFeature,
    refuse_card_numbers,
)
from payfm.inputs import kind

if TYPE_CHECKING:
    from payfm.events.workspace import Workspace
    from payfm.registry import ModelVersion

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


def feature_set(name: str, root: Workspace | str | os.PathLike[str] | None = None) -> FeatureSet:
    """A feature set by name: a bundled one, else one the workspace ``root`` (a Workspace, or its folder)
    defines (``payfm features define``, kept as JSON under ``features/sets/``)."""
    from payfm.events.workspace import Workspace

    if isinstance(root, Workspace):
        root = root.root
    elif root is not None and not isinstance(root, str | os.PathLike):
        raise ConfigError(
            f"The 'root' of feature_set must be a Workspace or its folder (a path). Got {kind(root)}."
        )
    if not isinstance(name, str):  # (a FeatureSet itself: its path was a 10 KB repr, 'File name too long')
        given = f"the FeatureSet '{name.name}'" if isinstance(name, FeatureSet) else type(name).__name__
        raise ConfigError(f"A feature set is named by a text (set_name='default'). Got {given}.")
    if name in FEATURE_SETS:
        return FEATURE_SETS[name]()
    if root is not None:
        path = set_path(Path(root), name)
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"Feature set file '{path}': expected JSON. Got an error ({e}).") from None
            fset = FeatureSet.from_json(data, f"Feature set file '{path}'")
            if fset.name != name:  # (it was loaded as the set it names: trained as 'other', not found so)
                raise ConfigError(
                    f"Feature set file '{path}': its 'name' must be {name!r}, the file's own name "
                    f"(`payfm features define` writes it so; rename the file or the set). Got {fset.name!r}."
                )
            # (not check_definable: a set defined before a check was added still loads, and serves the
            # rules saved with it; a card number in its names is refused where it would be written)
            return fset
    known = [*FEATURE_SETS, *(workspace_sets(Path(root)) if root is not None else [])]
    raise ConfigError(
        f"Unknown feature set {name!r}. Expected one of {', '.join(known)}"
        + ("" if root is not None else " (a workspace's own sets need its workspace)")
        + "; define one with `payfm features define FILE.json` (define_set(ws, fset) in Python)."
    )


def feature_set_arg(fset: object, who: str, param: str = "fset") -> FeatureSet:
    """``fset`` if it is a :class:`FeatureSet`; else a ConfigError naming ``param`` of ``who``, and for a
    set's name, how to get the set (an AttributeError deep inside, before).

    >>> feature_set_arg("default", "build_training_set")
    Traceback (most recent call last):
    ...
    payfm.errors.ConfigError: The 'fset' of build_training_set must be a FeatureSet. Got the str 'default': \
pass feature_set('default', ws) (payfm.features.catalog).
    """
    if isinstance(fset, FeatureSet):
        return fset
    if isinstance(fset, str):
        shown = shown_text(fset, 60)
        raise ConfigError(
            f"The '{param}' of {who} must be a FeatureSet. Got the str '{shown}': pass "
            f"feature_set('{shown}', ws) (payfm.features.catalog)."
        )
    raise ConfigError(
        f"The '{param}' of {who} must be a FeatureSet (feature_set(name, ws) gives one). Got {kind(fset)}."
    )


def generated_form(name: str) -> bool:
    """``name`` has the form of an aggregate's generated name (``card.count_charges_1h``,
    ``merchant.sum_amount_usd_refunds_all``, ``card.since_prev``): an entity, a dot, an aggregation, and a
    window's span or an all-time aggregation's end.

    >>> [generated_form(n) for n in ("card.count_charges_1h", "card.my_velocity", "card.since_prev")]
    [True, False, True]
    """
    return _GENERATED.fullmatch(name) is not None


_GENERATED = re.compile(
    rf"({'|'.join(ENTITIES)})\.(({'|'.join(AGGS)})_[a-z0-9_]*_(all|[0-9]+[smhdw](_ending_[0-9]+[smhdw]_ago)?)"
    rf"|({'|'.join(ALL_TIME_ONLY)})(_[a-z0-9_]+)?)"
)


def check_definable(fset: FeatureSet) -> FeatureSet:
    """``fset`` as a workspace would store it, or a ConfigError: a set payfm bundles keeps its name; a card
    number in the set's name or a feature's is refused (:func:`refuse_card_numbers`: a set's name is a file
    name, and its features' names are every decision's reasons); the name must be what a set file takes (a
    lower-case word), and the set must read back from its JSON as it is. Needs no workspace:
    ``payfm features define`` says these before it opens one."""
    if not isinstance(fset, FeatureSet):
        raise ConfigError(
            f"The 'fset' of define_set must be a FeatureSet (FeatureSet(name, features), or "
            f"feature_set(name, ws.root)). Got {type(fset).__name__}."
        )
    refuse_card_numbers(fset)  # first: the other errors quote the name
    if fset.name in FEATURE_SETS:
        raise ConfigError(
            f"Feature set '{fset.name}' is a set payfm bundles ({', '.join(FEATURE_SETS)}); give yours "
            "another name."
        )
    for i, f in enumerate(fset.features, start=1):
        if isinstance(f, Aggregate) and f.name != (made := f.generated_name()) and generated_form(f.name):
            raise ConfigError(
                f"Feature {i} ('{f.name}'): its name has the form of a generated name, but its definition "
                f"generates '{made}' (a name left from `payfm features list --json` after the definition was "
                "edited?). Decisions give the name as a reason: remove 'name' to take the generated one, or "
                "name it in another form (no window at the end)."
            )
    return FeatureSet.from_json(fset.to_json(), f"Feature set '{fset.name}'")  # as feature_set() reads it


def define_set(ws: Workspace, fset: FeatureSet, *, replace: bool = False) -> tuple[Path, bool]:
    """Define ``fset`` in the workspace (``features/sets/<name>.json``, written atomically), so that
    :func:`feature_set` (every command's ``--set``), promotion and the decision service find it; what
    ``payfm features define`` does. Returns the file and whether it was written (False: the same
    definitions were there already).

    Refused (ConfigError, nothing written): what :func:`check_definable` refuses; a set of that name
    defined with other definitions, unless ``replace``; with ``replace``, new definitions while a production
    or shadow model was trained on the old ones (the decision service could not compute its features), or
    ones that drop a feature the active ruleset reads. Models trained on replaced definitions no longer load
    or promote.

    Example:
        >>> import tempfile
        >>> from payfm.events.workspace import Workspace
        >>> ws = Workspace.open(tempfile.mkdtemp(), create=True)
        >>> mine = FeatureSet("mine", (Aggregate("card", "count", window=H),))
        >>> path, written = define_set(ws, mine)
        >>> path.name, written, feature_set("mine", ws.root).version == mine.version
        ('mine.json', True, True)
        >>> define_set(ws, mine)[1]  # the same definitions again: unchanged
        False
    """
    from payfm.events.workspace import opened

    ws = opened(ws, "define_set")
    if not isinstance(replace, bool):
        raise ConfigError(f"The 'replace' of define_set must be True or False. Got {replace!r}.")
    fset = check_definable(fset)
    path = set_path(ws.root, fset.name)
    if path.exists():
        old = feature_set(fset.name, ws.root)
        if old.version == fset.version:
            return path, False
        if not replace:
            raise ConfigError(
                f"Workspace '{ws.root}' defines feature set '{fset.name}' already (version {old.version}; "
                f"the new definitions give {fset.version}). Replace it with replace=True (--replace): models "
                "trained on the old version will not load against the new one."
            )
        from payfm.registry import Registry

        # Checked and written under the registry's lock, which a promotion holds while it checks the set's
        # definitions: one of the two sees what the other did.
        with Registry(ws).locked() as versions:
            _refuse_served(versions, fset)
            _check_active_ruleset(ws, old, fset)
            _write(path, fset)
        return path, True
    _write(path, fset)
    return path, True


def _write(path: Path, fset: FeatureSet) -> None:
    from payfm.events.workspace import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(fset.to_json(), indent=2, default=list).encode())


def _refuse_served(versions: list[ModelVersion], new: FeatureSet) -> None:
    """Refuse new definitions of a set a production or shadow model (of ``versions``, the registry's) was
    trained on: every server start would fail, as the decision service could not compute that model's
    features any more."""
    serving = [
        v.ref
        for v in versions
        if v.feature_set == new.name
        and v.stage in ("production", "shadow")
        and v.feature_set_version != new.version
    ]
    if serving:
        raise ConfigError(
            f"Feature set '{new.name}' is served: {', '.join(serving)} (production or shadow) were trained "
            "on its current definitions, which the decision service would no longer compute. Archive them "
            "first (payfm models promote REF --stage archived; Registry.set_stage(ref, 'archived')), or "
            "define the new set under another name."
        )


def _check_active_ruleset(ws: Workspace, old: FeatureSet, new: FeatureSet) -> None:
    """Refuse new definitions of a set that drop a feature the active ruleset reads: a decision service
    could not load that ruleset any more, and `rules activate` would then be the only way out."""
    from payfm.rules import rulesets
    from payfm.rules.catalog import AttributeCatalog

    active = rulesets.active(ws) if (ws.root / "rules.db").exists() else None
    if active is None or active.feature_set != old.name:
        return
    try:
        # features only: an attribute that is also a charge field (tiny's amount_usd) reads the field
        reads = (
            rulesets.compile_version(ws, active).attributes() & AttributeCatalog.for_feature_set(old).features
        )
    except PayfmError:  # it does not load already: the new definitions may be what mends it
        return
    dropped = sorted(reads - set(new.names))
    if dropped:
        raise ConfigError(
            f"Feature set '{old.name}' cannot drop {', '.join(dropped)}: the active ruleset "
            f"v{active.version} reads them, and a decision service could not load it. Activate a version "
            "that does not (payfm rules activate VERSION) first, or keep them."
        )
