"""Feature definitions are validated when built, and what they compute is what they say.

A definition that one engine would read differently from the other (a string value for an integer field), or
that the backfill would fail on with an Arrow traceback (a string field for a time kind), is refused by its
constructor with a message naming the feature, the parameter, what was expected and what was received.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from factories import charges as make_charges
from payfm.errors import ConfigError
from payfm.events.schema import SCHEMAS
from payfm.features.catalog import FEATURE_SETS, default_set, feature_set
from payfm.features.definitions import Aggregate, Derived, FeatureSet, RequestFeature
from payfm.features.offline import compute
from payfm.features.parity import replay
from payfm.features.request import request_value
from streams import connect, label_outcomes

H = timedelta(hours=1)
REFUSED: list[tuple[Callable[[], object], tuple[str, ...]]] = [
    # A string value for an integer field: Arrow's is_in cast it and matched, Python's `in` did not.
    (
        lambda: RequestFeature("is_amt", "is", ("amount",), ("1380",)),
        ("'is_amt'", "'amount'", "must be integers", "'1380' (str)"),
    ),
    (lambda: RequestFeature("x", "is", ("amount",), (True,)), ("'x'", "'amount'", "integers", "True (bool)")),
    (lambda: RequestFeature("x", "is", ("amount",), (-1,)), ("'x'", "'amount'", "from 0 to", "Got -1")),
    (lambda: RequestFeature("x", "is", ("channel",), (1,)), ("'x'", "'channel'", "strings", "1 (int)")),
    (
        lambda: RequestFeature("x", "is", ("channel",), ("ecomerce",)),
        ("'x'", "'channel'", "one of ecommerce", "Got 'ecomerce'", "Did you mean 'ecommerce'?"),
    ),
    (
        lambda: RequestFeature("x", "is", ("ip_address",), ("010.0.0.1",)),
        ("'x'", "'ip_address'", "IPv4 or IPv6", "Got '010.0.0.1'"),
    ),
    (lambda: RequestFeature("x", "is", ("channel",)), ("'x'", "'is' needs at least one value", "Got none")),
    # an unknown aggregation is named as given, not by a generated name ('card.cnt_None_all')
    (lambda: Aggregate("card", "cnt"), ("Feature 'card.cnt':", "Got 'cnt'", "Did you mean 'count'?")),
    (
        lambda: RequestFeature("x", "is", ("channel",), "ecommerce"),  # type: ignore[arg-type]
        ("'x'", "values must be a tuple", "Got 'ecommerce'"),
    ),
    (
        lambda: RequestFeature("x", "is", ("credential_changed_at",), ("2026",)),
        ("'x'", "string or integer field", "'credential_changed_at' (timestamp)"),
    ),
    (
        lambda: RequestFeature("x", "since", ("merchant_id",)),
        ("'x'", "'since' needs a timestamp field (credential_changed_at)", "'merchant_id' (string)"),
    ),
    (
        lambda: RequestFeature("x", "mismatch", ("amount", "currency")),
        ("'x'", "two string fields or two integer fields", "'amount' (integer)", "'currency' (string)"),
    ),
    (lambda: RequestFeature("x", "mismatch", ("ip_country", "ip_country")), ("'x'", "'ip_country' twice")),
    (lambda: RequestFeature("x", "missing", ("merchant_id",)), ("'x'", "nullable", "'merchant_id'")),
    (lambda: RequestFeature("x", "missing", ("created",)), ("'x'", "cannot read 'created'", "own time")),
    (lambda: RequestFeature("x", "since", ("created",)), ("'x'", "cannot read 'created'")),
    (lambda: RequestFeature("x", "is", ("outcome",), ("blocked",)), ("'x'", "cannot read 'outcome'")),
    (lambda: RequestFeature("x", "is", ("scenario",), ("stolen_card",)), ("'x'", "ground truth")),
    (lambda: RequestFeature("x", "local_hour", (), ("US",)), ("'x'", "takes no values", "('US',)")),
    (
        lambda: RequestFeature("x", "missing", "ip_address"),  # type: ignore[arg-type]
        ("'x'", "columns must be a tuple", "Got 'ip_address'"),
    ),
    (lambda: RequestFeature("x", 3), ("'x'", "kind must be a string", "3 (int)")),  # type: ignore[arg-type]
    (
        lambda: Aggregate("card", "count", window="1h"),  # type: ignore[arg-type]
        ("'card.count'", "window must be a datetime.timedelta", "Got '1h'"),
    ),
    (
        lambda: Aggregate("card", "count", window=3600),  # type: ignore[arg-type]
        ("'card.count'", "window must be a datetime.timedelta", "3600 (int)"),
    ),
    (
        lambda: Aggregate("card", "count", window=H, offset=None),  # type: ignore[arg-type]
        ("'card.count'", "offset must be a datetime.timedelta", "None"),
    ),
    (
        lambda: Aggregate("card", "count", window=H, resolution="1m"),  # type: ignore[arg-type]
        ("'card.count'", "resolution must be a datetime.timedelta", "'1m'"),
    ),
    (
        lambda: Aggregate("card", "count", window=timedelta(minutes=1, microseconds=5)),
        ("'card.count'", "window must be a whole number of seconds", "60.000005s"),
    ),
    (
        lambda: Aggregate("card", "count", resolution=timedelta(minutes=5)),
        ("'card.count_charges_all'", "all-time feature takes no resolution", "Got 5m"),
    ),
    (
        lambda: Aggregate(["card"], "count"),  # type: ignore[arg-type]
        ("entity must be a string", "Got ['card'] (list)"),
    ),
    (lambda: Aggregate("card", "sum", 7), ("'card.sum'", "column must be a string or None", "7 (int)")),  # type: ignore[arg-type]
    (lambda: Aggregate("card", "count", filter=1), ("filter must be a string or None", "1 (int)")),  # type: ignore[arg-type]
    (lambda: Aggregate("card", "count", name=5), ("name must be a string", "5 (int)")),  # type: ignore[arg-type]
    (
        lambda: FeatureSet("s", ("card.count_charges_1h",)),  # type: ignore[arg-type]
        ("Feature set 's'", "an Aggregate, a RequestFeature or a Derived", "Got 'card.count_charges_1h'"),
    ),
    (
        lambda: Derived("d", "ratio", "ab"),  # type: ignore[arg-type]
        ("'d'", "inputs must be a tuple", "Got 'ab'"),
    ),
]


@pytest.mark.parametrize(("build", "said"), REFUSED, ids=[said[-1] for _, said in REFUSED])
def test_a_bad_definition_is_refused_when_built_naming_the_feature(
    build: Callable[[], object], said: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as err:
        build()
    message = str(err.value)
    assert message.startswith(("Feature", "An aggregate feature", "A request feature", "A derived feature"))
    for part in said:
        assert part in message, message


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ({"kind": "aggregate", "entitty": "card", "agg": "count"}, "'entitty' for an aggregate feature"),
        (
            {"kind": "request", "name": "a", "type": "amount_usd", "colums": []},
            "'colums' for a request feature",
        ),
        ({"kind": "derived", "name": "d", "op": "ratio", "input": []}, "'input' for a derived feature"),
    ],
)
def test_a_set_file_names_an_unknown_field_with_the_kind_of_its_feature(
    spec: dict[str, object], said: str
) -> None:
    from payfm.features.set_json import set_from_json

    with pytest.raises(ConfigError) as err:
        set_from_json({"name": "mine", "features": [spec]}, "mine.json")
    assert "mine.json, feature 1" in str(err.value) and f"unknown field {said}. Expected:" in str(err.value)


def test_every_shipped_set_still_builds() -> None:
    # Validation refuses nothing the catalog defines (and changes no definition, so no version).
    for name in FEATURE_SETS:
        assert feature_set(name).features


T = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

REQUEST = FeatureSet(
    "request_kinds",
    (
        RequestFeature("amount_is_1380", "is", ("amount",), (1380, 99)),
        RequestFeature("usd_is_1380", "is", ("amount_usd",), (1380,)),
        RequestFeature("amount_fx_mismatch", "mismatch", ("amount", "amount_usd")),
        RequestFeature("card_ip_country_mismatch", "mismatch", ("card_country", "ip_country")),
        RequestFeature("channel_card_present", "is", ("channel",), ("card_present", "recurring")),
        RequestFeature("ip_missing", "missing", ("ip_address",)),
        RequestFeature("since_credential_change", "since", ("credential_changed_at",)),
        RequestFeature("local_hour", "local_hour"),
    ),
)


def _request_log() -> dict[str, pa.Table]:
    rows = make_charges(5, start=T, step=H).to_pylist()
    # ch 0: 1380 in both amounts; ch 1: 1380 in amount only (a foreign currency); ch 2: card present, no IP.
    rows[0].update(amount=1380, amount_usd=1380)
    rows[1].update(amount=1380, currency="eur", amount_usd=1500, ip_country="FR")
    rows[2].update(channel="card_present", ip_address=None, ip_country=None)
    rows[3].update(credential_changed_at=T - timedelta(days=1))
    return {
        "charges": pa.Table.from_pylist(rows, schema=SCHEMAS["charges"]),
        "disputes": SCHEMAS["disputes"].empty_table(),
        "early_fraud_warnings": SCHEMAS["early_fraud_warnings"].empty_table(),
        "refunds": SCHEMAS["refunds"].empty_table(),
    }


def _by_charge(table: pa.Table) -> dict[str, dict[str, Any]]:
    return {r["charge_id"]: r for r in table.to_pylist()}


@pytest.mark.parametrize("engine", ["columnar", "duckdb", "online", "reference"])
def test_request_kinds_have_the_same_values_in_every_engine(engine: str) -> None:
    log = _request_log()
    if engine == "online":
        got = _by_charge(replay(REQUEST, log["charges"], label_outcomes(log)))
    elif engine == "reference":  # payfm.features.request, the formulas both engines implement
        got = {}
        for row in log["charges"].to_pylist():
            ts = int(row["created"].timestamp()) * 1_000_000
            then = row["credential_changed_at"]
            row["credential_changed_at_us"] = None if then is None else int(then.timestamp()) * 1_000_000
            feats = [f for f in REQUEST.features if isinstance(f, RequestFeature)]
            got[row["charge_id"]] = {f.name: request_value(f, row, ts) for f in feats}
    else:
        got = _by_charge(compute(connect(log), REQUEST, engine=engine))  # type: ignore[arg-type]
    expected: dict[str, dict[str, float | None]] = {
        "ch_000000": {"amount_is_1380": 1, "usd_is_1380": 1, "amount_fx_mismatch": 0, "ip_missing": 0},
        "ch_000001": {"amount_is_1380": 1, "usd_is_1380": 0, "amount_fx_mismatch": 1},
        "ch_000002": {"amount_is_1380": 0, "channel_card_present": 1, "ip_missing": 1},
        "ch_000003": {"since_credential_change": 86400.0 + 3 * 3600, "card_ip_country_mismatch": 0},
        "ch_000004": {"since_credential_change": None, "channel_card_present": 0},
    }
    expected["ch_000001"]["card_ip_country_mismatch"] = 1  # card US, IP FR
    expected["ch_000002"]["card_ip_country_mismatch"] = None  # no IP
    for cid, values in expected.items():
        for name, value in values.items():
            assert got[cid][name] == value, f"{engine}: {cid} {name}"
    assert got["ch_000000"]["local_hour"] == 5.0  # 10:00 UTC at a US merchant (UTC-5)


def _refund_log() -> dict[str, pa.Table]:
    """One card's charges an hour apart with refunds, a dispute and an EFW of their own amounts:

    - ch_000000, $2.00: refunded $1.00 (partial), disputed as fraud for $1.50, an EFW;
    - ch_000002, EUR 100.00 (USD 108.37): refunded EUR 25.00 (USD 27.09 at the charge's rate, rounded down)
      and GBP 0.50 (not the charge's currency: its whole USD 108.37).
    """
    rows = make_charges(4, start=T, step=H).to_pylist()
    rows[0].update(amount=200, amount_usd=200, currency="usd")
    rows[2].update(amount=10_000, amount_usd=10_837, currency="eur")
    for r in rows[1:]:
        r.update(card_fingerprint=rows[0]["card_fingerprint"], merchant_id=rows[0]["merchant_id"])
    m = timedelta(minutes=1)
    refunds = [
        ("re_1", "ch_000000", T + 30 * m, 100, "usd"),
        ("re_2", "ch_000002", T + 2 * H + 30 * m, 2_500, "eur"),
        ("re_3", "ch_000002", T + 2 * H + 40 * m, 50, "gbp"),
    ]
    dispute = {
        "dispute_id": "dp_1",
        "charge_id": "ch_000000",
        "created": T + 40 * m,
        "reason": "fraudulent",
        "amount": 150,
        "currency": "usd",
    }
    efw = {"efw_id": "ef_1", "charge_id": "ch_000000", "created": T + 45 * m, "fraud_type": "misc"}
    return {
        "charges": pa.Table.from_pylist(rows, schema=SCHEMAS["charges"]),
        "disputes": pa.Table.from_pylist([dispute], schema=SCHEMAS["disputes"]),
        "early_fraud_warnings": pa.Table.from_pylist([efw], schema=SCHEMAS["early_fraud_warnings"]),
        "refunds": pa.Table.from_pylist(
            [
                {
                    "refund_id": i,
                    "charge_id": c,
                    "created": t,
                    "amount": a,
                    "currency": cur,
                    "reason": "other",
                }
                for i, c, t, a, cur in refunds
            ],
            schema=SCHEMAS["refunds"],
        ),
    }


REFUNDS = FeatureSet(
    "refunds",
    (
        Aggregate("card", "max", "amount_usd", source="refunds"),
        Aggregate("card", "min", "amount_usd", source="refunds"),
        Aggregate("merchant", "sum", "amount_usd", source="refunds", window=7 * 24 * H),
        Aggregate("card", "mean", "amount_usd", source="refunds"),
        Aggregate("card", "sum", "amount_usd", source="fraud_disputes"),
        Aggregate("card", "max", "amount_usd", source="efws"),
        Aggregate("card", "count", source="refunds"),
    ),
)


@pytest.mark.parametrize("engine", ["columnar", "duckdb", "online"])
def test_refund_and_dispute_aggregates_read_their_own_amounts_at_the_charges_rate(engine: str) -> None:
    log = _refund_log()
    if engine == "online":
        got = _by_charge(replay(REFUNDS, log["charges"], label_outcomes(log)))
    else:
        got = _by_charge(compute(connect(log), REFUNDS, engine=engine))  # type: ignore[arg-type]
    after_first = got["ch_000001"]
    assert after_first["card.max_amount_usd_refunds_all"] == 1.0  # $1.00 of the $2.00 charge
    assert after_first["merchant.sum_amount_usd_refunds_7d"] == 1.0
    assert after_first["card.sum_amount_usd_fraud_disputes_all"] == 1.5
    assert after_first["card.max_amount_usd_efws_all"] == 2.0  # an EFW has no amount: its charge's
    last = got["ch_000003"]
    assert last["card.count_refunds_all"] == 3.0
    assert last["card.min_amount_usd_refunds_all"] == 1.0
    assert last["card.max_amount_usd_refunds_all"] == 108.37  # in GBP, not the charge's currency: all of it
    assert last["merchant.sum_amount_usd_refunds_7d"] == pytest.approx(1.0 + 27.09 + 108.37)
    assert last["card.mean_amount_usd_refunds_all"] == pytest.approx((1.0 + 27.09 + 108.37) / 3)
    described = default_set().get("merchant.sum_amount_usd_refunds_7d").describe()
    assert described.endswith("(each refund's own amount, in USD at its charge's rate)")


def test_reading_an_outcomes_own_amount_is_part_of_the_version() -> None:
    """Sets whose values changed meaning got a new version: their models and backfills are not reused."""
    refunds = Aggregate("merchant", "sum", "amount_usd", source="refunds", window=7 * 24 * H)
    efws = Aggregate("card", "max", "amount_usd", source="efws")
    assert refunds.reads_outcome_amount and not efws.reads_outcome_amount
    assert refunds.spec()["value"] == "outcome_amount" and "value" not in efws.spec()
    assert "value" not in Aggregate("card", "count", source="refunds").spec()


def test_descriptions_say_what_each_kind_reads() -> None:
    f = Aggregate("card", "count", window=H, filter="declined")
    assert f.describe() == "count of the card's charges over the last 1h, only declined, 1m tiles"
    assert (
        Aggregate("card", "max", "amount_usd", source="efws")
        .describe()
        .endswith("(the amount of each EFW's charge, in USD)")
    )
    r = RequestFeature("x", "is", ("channel",), ("card_present",))
    assert r.describe() == "request: is(channel) in 'card_present'"
    assert Derived("d", "ratio", ("a", "b")).describe() == "ratio(a, b)"


def test_the_all_time_only_aggregations_are_described_in_words() -> None:
    """'first_seen of the card's charges over all time' explained nothing (a docs audit)."""
    assert Aggregate("card", "first_seen").describe() == (
        "1 if the card has no earlier charge (any outcome), else 0 (null when the charge has no card)"
    )
    assert (
        Aggregate("card", "since_prev").describe() == "seconds since the card's previous charge (any outcome)"
    )
    assert Aggregate("ip", "since_first", source="efws").describe() == (
        "seconds since the ip's first early fraud warning"
    )
    assert Aggregate("card", "first_seen", filter="authorized").describe() == (
        "1 if the card has no earlier charge, else 0 (null when the charge has no card), only authorized"
    )


def test_descriptions_name_what_an_entity_is_keyed_by() -> None:
    """`email.*` features count per e-mail domain (no event holds an address): their description said "the
    email's charges", and an analyst took them for per-address velocity (an analyst walkthrough's find)."""
    from payfm.features.catalog import default_set

    said = {f.name: f.describe() for f in default_set().features}
    assert said["email.count_charges_1h"] == "count of the e-mail domain's charges over the last 1h, 1m tiles"
    assert all("the email's" not in text for text in said.values())
    pair = Aggregate("card_merchant", "count", window=timedelta(hours=1))
    assert pair.describe().startswith("count of the card and merchant pair's charges")
