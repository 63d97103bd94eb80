"""Tests of the synthetic payments world: contract, volumes, scenarios, label delays, config validation."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime, timedelta, timezone

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from payfm.events.cards import card_number_rows
from payfm.events.currency import exponent, usd_per_unit
from payfm.events.schema import PAYMENT_TABLES, RULES, SCENARIOS, SCHEMAS
from payfm.synth import WorldConfig, generate_world
from payfm.synth.outcomes import DELAYS
from payfm.synth.world import KIND_ONLINE, MCCS

MIX = {"stolen_card": 3, "card_testing": 2, "account_takeover": 1.5, "compromised_merchant": 1.5,
       "friendly_fraud": 1, "merchant_bust_out": 1}  # fmt: skip
CONFIG = WorldConfig(charges=200_000, days=120, seed=11, fraud_rate=0.01, scenario_mix=MIX)
Z90 = 1.2815515655446004  # standard normal 90% quantile
SHIPPED = ", ".join(sorted({f"'{m[0]}'" for m in MCCS if m[1] == KIND_ONLINE and m[4]}))  # goods shipped


@pytest.fixture(scope="module")
def world() -> dict[str, pa.Table]:
    days: list[pa.Table] = []
    out: dict[str, pa.Table] = {}
    for name, table in generate_world(CONFIG):
        if name == "charges":
            days.append(table)
        else:
            assert name not in out, f"{name} emitted twice"
            out[name] = table
    out["charges"] = pa.concat_tables(days)
    out["_days"] = pa.table({"rows": [t.num_rows for t in days]})
    return out


@pytest.fixture(scope="module")
def db(world: dict[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for name in PAYMENT_TABLES:
        con.register(name, world[name])
    return con


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[object, ...]:
    rows = con.execute(sql).fetchall()
    assert len(rows) == 1
    return tuple(rows[0])


def _ipc(tables: list[tuple[str, pa.Table]]) -> bytes:
    sink = io.BytesIO()
    for name, table in tables:
        sink.write(name.encode())
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return sink.getvalue()


def test_same_seed_gives_byte_identical_tables_and_other_seeds_differ() -> None:
    cfg = WorldConfig(charges=5_000, days=10, seed=5, fraud_rate=0.02)
    first = _ipc(list(generate_world(cfg)))
    assert first == _ipc(list(generate_world(cfg)))
    assert first != _ipc(list(generate_world(WorldConfig(charges=5_000, days=10, seed=6, fraud_rate=0.02))))


def test_stream_order_days_and_progress() -> None:
    calls: list[tuple[int, int]] = []
    cfg = WorldConfig(charges=3_000, days=6, seed=2)
    names = [name for name, _ in generate_world(cfg, progress=lambda i, n: calls.append((i, n)))]
    assert names == ["charges"] * 6 + ["disputes", "early_fraud_warnings", "refunds"]
    assert calls == [(i, 6) for i in range(1, 7)]


def test_schemas_and_vocabularies(world: dict[str, pa.Table]) -> None:
    for name in PAYMENT_TABLES:  # reviews come from the decision service, not the world
        schema = SCHEMAS[name]
        table = world[name]
        assert table.num_rows > 0, name
        assert table.schema.equals(schema, check_metadata=False), name
        for field in schema:
            if not field.nullable:
                assert table.column(field.name).null_count == 0, (name, field.name)
        for col, rule in RULES[name].items():
            values = table.column(col).drop_null()
            if rule.choices is not None:
                assert set(pc.unique(values).to_pylist()) <= set(rule.choices), (name, col)
            if rule.pattern is not None:
                assert pc.all(pc.match_substring_regex(values, f"^(?:{rule.pattern})$")).as_py(), (name, col)
            if rule.min_value is not None:
                assert pc.min(values).as_py() >= rule.min_value, (name, col)


def test_ids_cards_and_order(world: dict[str, pa.Table], db: duckdb.DuckDBPyConnection) -> None:
    ch = world["charges"]
    assert pc.count_distinct(ch.column("charge_id")).as_py() == ch.num_rows
    patterns = {
        "charge_id": r"^ch_[0-9]+$", "customer_id": r"^cus_[0-9]+$", "merchant_id": r"^acct_[0-9]+$",
        "card_fingerprint": r"^fp_[0-9a-f]{16}$", "card_bin": r"^[0-9]{6}$", "card_last4": r"^[0-9]{4}$",
    }  # fmt: skip
    for col, pattern in patterns.items():
        assert pc.all(pc.match_substring_regex(ch.column(col).drop_null(), pattern)).as_py(), col
    for name, prefix in (("disputes", "dp_"), ("early_fraud_warnings", "efw_"), ("refunds", "re_")):
        assert pc.all(pc.starts_with(world[name].column(0), prefix)).as_py()
    # Brand agrees with the BIN's leading digits.
    bad = _one(db, """select count(*) from charges where not (
        (card_brand = 'visa' and card_bin like '4%')
        or (card_brand = 'mastercard' and substr(card_bin, 1, 2) between '51' and '55')
        or (card_brand = 'amex' and substr(card_bin, 1, 2) in ('34', '37'))
        or (card_brand = 'discover' and card_bin like '6%')
        or (card_brand = 'jcb' and card_bin like '35%') or (card_brand = 'unionpay' and card_bin like '62%')
        or (card_brand = 'diners' and substr(card_bin, 1, 2) in ('36', '38')))""")  # fmt: skip
    assert bad == (0,)
    # Globally sorted by (created, charge_id) and each day's table within its UTC day.
    created = ch.column("created").cast(pa.int64()).to_numpy()
    assert np.all(np.diff(created) >= 0)
    ids = ch.column("charge_id").to_pylist()
    assert ids == sorted(ids)
    start = int(CONFIG.start.timestamp() * 1e6)
    sizes = world["_days"].column("rows").to_numpy()
    day_of_row = np.repeat(np.arange(sizes.size), sizes)
    assert sizes.size == CONFIG.days
    assert np.array_equal((created - start) // 86_400_000_000, day_of_row)
    assert ch.column("created").type.tz == "UTC"


def test_volume_fraud_rate_and_mix(world: dict[str, pa.Table], db: duckdb.DuckDBPyConnection) -> None:
    ch = world["charges"]
    assert abs(ch.num_rows / CONFIG.charges - 1) < 0.03
    fraud = ch.num_rows - ch.column("scenario").null_count
    assert abs(fraud / ch.num_rows / CONFIG.fraud_rate - 1) < 0.15
    counts = dict(
        db.execute("select scenario, count(*) from charges where scenario is not null group by 1").fetchall()
    )
    for name in SCENARIOS:
        share = counts.get(name, 0) / fraud
        assert abs(share - CONFIG.scenario_mix[name]) < 0.35 * CONFIG.scenario_mix[name] + 0.01, name


def test_genuine_traffic_is_realistic(db: duckdb.DuckDBPyConnection) -> None:
    decline, blocked = _one(
        db,
        """select avg((outcome = 'issuer_declined')::int), avg((outcome = 'blocked')::int)
        from charges where scenario is null""",
    )
    assert 0.04 <= float(decline) <= 0.08  # type: ignore[arg-type]
    assert 0.001 <= float(blocked) <= 0.006  # type: ignore[arg-type]
    shares = dict(
        db.execute(
            "select channel, count(*) / (select count(*) from charges) from charges group by 1"
        ).fetchall()
    )
    assert abs(shares["ecommerce"] - 0.6) < 0.05 and abs(shares["card_present"] - 0.3) < 0.05
    assert abs(shares["recurring"] - 0.1) < 0.03
    present = _one(
        db,
        """select count(*) from charges where channel = 'card_present'
        and (ip_address is not null or device_id is not null or email_domain is not null)""",
    )
    assert present == (0,)
    # Recurring: same card, merchant and amount, about 30 days apart.
    gaps = db.execute("""select count(distinct amount) n_amounts, max(gap) max_gap, min(gap) min_gap from (
        select card_fingerprint, merchant_id, amount, date_diff('day', lag(created) over w, created) gap
        from charges where channel = 'recurring' and retry_of is null and scenario is null
        window w as (partition by card_fingerprint, merchant_id order by created)) where gap is not null
        group by card_fingerprint, merchant_id""").fetchall()
    # (A customer may hold two subscriptions at one merchant on one card: allow a few such pairs.)
    single = [(lo, hi) for n, hi, lo in gaps if n == 1]
    assert len(single) > 0.9 * len(gaps) > 0
    assert np.mean([lo == hi == 30 for lo, hi in single]) > 0.9
    # jpy has no minor unit: amount_usd is the yen amount at the project's reference rate.
    for code in ("jpy", "eur", "usd"):
        got = db.execute(
            f"select amount, amount_usd from charges where currency = '{code}' limit 1000"
        ).fetchnumpy()
        cents = got["amount"] / 10 ** exponent(code) * usd_per_unit(code) * 100
        assert got["amount"].size > 0 and np.allclose(got["amount_usd"], cents, atol=1), code


def test_fraud_is_not_trivially_separable(db: duckdb.DuckDBPyConnection) -> None:
    rules = {
        "foreign_ip": "ip_country <> card_country",
        "big_amount": "amount_usd >= 30000",
        "high_risk_mcc": "merchant_mcc in ('5732', '5947', '5944', '4722', '5816')",
        "shipping_abroad": "shipping_country <> card_country",
        "three_ds_failed": "three_ds = 'failed'",
        "cvc_not_pass": "cvc_check in ('fail', 'unavailable')",
    }
    for name, cond in rules.items():
        recall, precision = _one(
            db,
            f"""select avg(coalesce({cond}, false)::int) filter (where scenario is not null),
                avg((scenario is not null)::int) filter (where coalesce({cond}, false)) from charges""",
        )
        assert float(recall) < 0.7 or float(precision) < 0.2, name  # type: ignore[arg-type]
    genuine_signals = _one(
        db,
        """select avg((ip_country <> card_country)::int), avg((amount_usd >= 30000)::int)
        from charges where scenario is null and channel = 'ecommerce'""",
    )
    assert all(float(x) > 0.01 for x in genuine_signals)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def default_db() -> duckdb.DuckDBPyConnection:
    """A world at the default fraud rate and mix (the module's world has 3x the fraud, on fewer customers)."""
    tables: dict[str, list[pa.Table]] = {}
    for name, table in generate_world(WorldConfig(charges=300_000, days=60, seed=5)):
        tables.setdefault(name, []).append(table)
    con = duckdb.connect()
    for name, parts in tables.items():
        con.register(name, pa.concat_tables(parts))
    return con


def test_no_value_of_a_field_is_frauds_alone(default_db: duckdb.DuckDBPyConnection) -> None:
    """An audit found six conditions that flagged fraud with no false positive (58% of it): e-mail domains
    and shipping countries no genuine customer had, card testers' missing e-mail and shipping, a takeover's
    shipping on goods never shipped, fraudsters' account ids numbered after every customer's."""
    db = default_db
    columns = ("email_domain", "shipping_country", "ip_country", "merchant_mcc", "card_brand", "three_ds",
               "cvc_check", "address_check", "currency", "billing_country")  # fmt: skip
    for col in columns:
        worst = db.execute(
            f"""select {col}, count(*) n, avg((scenario is not null)::int) p from charges
                where channel = 'ecommerce' group by 1 having count(*) >= 30 order by p desc limit 1"""
        ).fetchone()
        assert worst is not None and worst[2] < 0.9, (col, worst)
    for cond in (
        "email_domain is null",
        f"merchant_mcc in ({SHIPPED}) and shipping_country is null",
        f"merchant_mcc not in ({SHIPPED}) and shipping_country is not null",
    ):
        n, p = _one(
            db,
            f"""select count(*), avg((scenario is not null)::int) from charges
                where channel = 'ecommerce' and {cond}""",
        )
        assert n == 0 or float(p) < 0.5, (cond, n, p)  # type: ignore[arg-type]
    # account ids carry no order: fraudsters' accounts are not all above (or below) the customers'
    above = _one(
        db,
        """select avg((customer_id > (select max(customer_id) from charges where scenario is null))::int)
           from charges where scenario is not null and customer_id is not null""",
    )
    assert float(above[0]) < 0.2  # type: ignore[arg-type]
    # customers sign up all along: a late first charge is riskier, not a fraudster's almost surely
    late = _one(
        db,
        """with f as (select customer_id, min(created) t from charges
                      where customer_id is not null group by 1)
           select count(*), avg((c.scenario is not null)::int) from f join charges c
           on c.customer_id = f.customer_id and c.created = f.t where f.t >= timestamp '2026-02-01'""",
    )
    assert late[0] > 100 and float(late[1]) < 0.5, late  # type: ignore[arg-type]


def _quantiles(delays_days: np.ndarray, name: str) -> None:
    d = DELAYS[name]
    for q, z in ((0.1, -Z90), (0.5, 0.0), (0.9, Z90)):
        expected = d.median * math.exp(d.sigma * z)
        got = float(np.quantile(delays_days, q))
        assert abs(got / expected - 1) < 0.15, (name, q, got, expected)


def test_label_delays_match_documentation(db: duckdb.DuckDBPyConnection) -> None:
    end = CONFIG.end

    def delays(sql: str, horizon_days: float) -> np.ndarray:
        cutoff = end - timedelta(days=horizon_days)  # only charges whose whole delay range is observed
        got = db.execute(sql, [cutoff]).fetchnumpy()["d"]
        return np.asarray(got, dtype=float) / 86_400

    fraud_sql = """select epoch(o.created) - epoch(c.created) d
        from disputes o join charges c using (charge_id)
        where o.reason = 'fraudulent' and c.created < ?"""
    d = delays(fraud_sql, DELAYS["fraud_dispute"].high)
    assert d.size > 200 and d.min() >= 1 - 1e-9 and d.max() <= 90 + 1e-9
    _quantiles(d, "fraud_dispute")
    efw_sql = """select epoch(o.created) - epoch(c.created) d from early_fraud_warnings o join charges c
        using (charge_id) where c.created < ?"""
    d = delays(efw_sql, DELAYS["efw"].high)
    assert d.size > 200 and d.min() >= 1 - 1e-9 and d.max() <= 14 + 1e-9
    _quantiles(d, "efw")
    refund_sql = """select epoch(o.created) - epoch(c.created) d
        from refunds o join charges c using (charge_id)
        where c.scenario is null and c.created < ? and c.merchant_id not in
        (select merchant_id from charges where scenario = 'merchant_bust_out')"""
    _quantiles(delays(refund_sql, DELAYS["refund"].high), "refund")


def test_outcomes_follow_authorized_charges_and_stop_at_end(db: duckdb.DuckDBPyConnection) -> None:
    for name in ("disputes", "early_fraud_warnings", "refunds"):
        bad = _one(
            db,
            f"""select count(*) filter (where c.charge_id is null or c.outcome <> 'authorized'
            or o.created <= c.created or o.created >= ?)
            from {name} o left join charges c using (charge_id)""".replace(
                "?", f"'{CONFIG.end.isoformat()}'::timestamptz"
            ),
        )
        assert bad == (0,), name
        assert _one(db, f"select count(*) - count(distinct charge_id) from {name}") == (0,), name
    fraud_disputed, never, noise = _one(
        db,
        """select avg((d.charge_id is not null)::int) filter (where scenario is not null
            and c.created < ?::timestamptz - interval 90 day and amount_usd >= 1000),
        1 - avg((d.charge_id is not null or e.charge_id is not null)::int) filter (where scenario is not null
            and c.created < ?::timestamptz - interval 90 day),
        avg(coalesce(d.reason = 'fraudulent', false)::int) filter (where scenario is null)
        from charges c left join disputes d using (charge_id)
        left join early_fraud_warnings e using (charge_id)
        where c.outcome = 'authorized'""".replace("?", f"'{CONFIG.end.isoformat()}'"),
    )
    assert 0.7 < float(fraud_disputed) < 0.95  # type: ignore[arg-type]
    assert 0.03 < float(never) < 0.3  # type: ignore[arg-type]
    assert 0 < float(noise) < 0.001  # type: ignore[arg-type]
    refund_rate = _one(
        db,
        """select count(r.charge_id) / count(*) from charges c left join refunds r using (charge_id)
        where c.outcome = 'authorized' and c.scenario is null""",
    )[0]
    assert 0.01 < float(refund_rate) < 0.03  # type: ignore[arg-type]


def test_card_testing_bursts(db: duckdb.DuckDBPyConnection) -> None:
    bursts = db.execute("""select merchant_id, date_trunc('day', min(created)) burst_day, count(*) n,
            count(distinct card_fingerprint) cards, count(distinct card_bin) bins,
            count(distinct ip_address) ips, count(distinct device_id) devices,
            avg((outcome <> 'authorized')::int) failed
        from charges where scenario = 'card_testing' and amount_usd < 1000
        group by merchant_id, date_trunc('hour', created)""").fetchall()
    assert len(bursts) >= 5
    rotating = 0
    for _, _, n, cards, bins, ips, devices, _ in bursts:
        assert cards >= 0.5 * n and bins <= max(4, n // 10)
        # 1-3 IPs and 1-2 devices for the whole burst, or a new IP and device on every attempt (proxies)
        assert (ips <= 3 and devices <= 2) or (ips == n and devices == n), (n, ips, devices)
        rotating += n > 3 and ips == n
    assert 0 < rotating < len(bursts)
    assert np.mean([b[-1] for b in bursts]) > 0.7
    # Tested cards were never seen before the burst, and cards that passed are cashed out later.
    seen_before = _one(
        db,
        """select count(*) from charges t where scenario = 'card_testing' and amount_usd < 1000
        and exists (select 1 from charges c
        where c.card_fingerprint = t.card_fingerprint and c.scenario is null
        and c.created < t.created)""",
    )
    assert seen_before == (0,)
    cashouts = _one(
        db,
        """select count(*), count(*) filter (where exists (select 1 from charges t
        where t.card_fingerprint = c.card_fingerprint and t.amount_usd < 1000 and t.outcome = 'authorized'
        and t.scenario = 'card_testing' and t.created < c.created))
        from charges c where scenario = 'card_testing' and amount_usd >= 1000""",
    )
    assert cashouts[0] > 0 and cashouts[0] == cashouts[1]


def test_account_takeover_signals(db: duckdb.DuckDBPyConnection) -> None:
    n, recent_cred, old_device, old_address = _one(
        db,
        """
        with first_device as (
            select device_id, min(created) t from charges where device_id is not null group by 1),
             first_address as (select shipping_address_id a, min(created) t from charges group by 1)
        select count(*),
            count(*) filter (where credential_changed_at is not null and c.created > credential_changed_at
                             and c.created - credential_changed_at <= interval 36 hour),
            count(*) filter (where fd.t < c.created - interval 1 day),
            count(*) filter (where fa.t < c.created - interval 1 day)
        from charges c join first_device fd using (device_id)
        left join first_address fa on fa.a = c.shipping_address_id
        where scenario = 'account_takeover'""",
    )
    # 40% of takeovers change the credentials 10 minutes to 36 hours before; the rest leave them alone
    assert n > 50 and 0.25 * n < recent_cred < 0.55 * n and old_device == 0 and old_address == 0
    future = _one(
        db,
        """select count(*) from charges where scenario = 'account_takeover'
        and credential_changed_at >= created""",
    )
    assert future == (0,)
    # what is shipped goes to a new address; what is not (gift cards, travel) has no shipping at all: a
    # takeover once gave it an address and, a third of the time, the country "US" (a zero-precision leak)
    shipped, unshipped = _one(
        db,
        f"""select count(*) filter (where merchant_mcc in ({SHIPPED}) and shipping_address_id is not null),
                   count(*) filter (where merchant_mcc not in ({SHIPPED}) and (shipping_address_id is not null
                                    or shipping_country is not null))
            from charges where scenario = 'account_takeover'""",
    )
    assert shipped > 10 and unshipped == 0
    # The device is new for this customer: never used by them before the takeover.
    reused = _one(
        db,
        """select count(*) from charges a where scenario = 'account_takeover' and exists (
        select 1 from charges g where g.customer_id = a.customer_id and g.device_id = a.device_id
        and g.scenario is null and g.created < a.created)""",
    )
    assert reused == (0,)


def test_bust_out_merchants_disappear(db: duckdb.DuckDBPyConnection) -> None:
    rows = db.execute("""select m.merchant_id, max(b.created) last_bust, (select max(created) from charges c
            where c.merchant_id = m.merchant_id) last_any,
            (select count(*) from charges c where c.merchant_id = m.merchant_id
             and c.created >= max(b.created) - interval 7 day) recent,
            (select count(*) from charges c where c.merchant_id = m.merchant_id
             and c.created < min(b.created) and c.created >= min(b.created) - interval 7 day) before
        from (select distinct merchant_id from charges where scenario = 'merchant_bust_out') m
        join charges b on b.merchant_id = m.merchant_id and b.scenario = 'merchant_bust_out'
        group by m.merchant_id""").fetchall()
    assert rows
    end = CONFIG.end
    for _, last_bust, last_any, recent, before in rows:
        assert last_any < last_bust.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        assert last_any < end - timedelta(days=7)
        assert recent > 2 * before
    refunds = _one(
        db,
        """select avg((r.charge_id is not null)::int) from charges c left join refunds r using (charge_id)
        where c.scenario = 'merchant_bust_out' and c.outcome = 'authorized'""",
    )[0]
    assert float(refunds) > 0.1  # type: ignore[arg-type]


def test_retries_reference_earlier_declines(db: duckdb.DuckDBPyConnection) -> None:
    n, bad = _one(
        db,
        """select count(*), count(*) filter (where o.charge_id is null or o.outcome <> 'issuer_declined'
            or o.created >= r.created or o.card_fingerprint <> r.card_fingerprint or o.amount <> r.amount
            or o.merchant_id <> r.merchant_id or o.channel = 'card_present')
        from charges r left join charges o on o.charge_id = r.retry_of where r.retry_of is not null""",
    )
    assert n > 100 and bad == 0
    by_code = dict(
        db.execute("""select o.decline_code, avg((r.outcome = 'authorized')::int) from charges r
        join charges o on o.charge_id = r.retry_of group by 1""").fetchall()
    )
    assert by_code.get("stolen_card", 0.0) == 0.0 and by_code.get("lost_card", 0.0) == 0.0
    assert by_code["insufficient_funds"] > by_code["do_not_honor"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"charges": 10}, "'charges'"),
        ({"days": 0}, "'days'"),
        ({"seed": -1}, "'seed'"),
        ({"fraud_rate": 0.7}, "The 'fraud_rate' of WorldConfig must be in [0, 0.5). Got 0.7."),
        ({"fraud_rate": -0.1}, "'fraud_rate'"),
        ({"start": datetime(2026, 1, 1)}, "'start'"),
        ({"start": datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))}, "'start'"),
        ({"scenario_mix": {"phishing": 1.0}}, "'phishing'"),
        ({"scenario_mix": {"stolen_card": -1.0}}, "'stolen_card'"),
        ({"scenario_mix": {"stolen_card": 0.0}}, "positive"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        WorldConfig(**kwargs)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_unknown_scenario_error_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="card_testing"):
        WorldConfig(scenario_mix={"phishing": 1.0})


def test_mix_is_normalised_and_defaults() -> None:
    cfg = WorldConfig(scenario_mix={"stolen_card": 2, "card_testing": 2})
    assert cfg.scenario_mix["stolen_card"] == 0.5 and cfg.scenario_mix["friendly_fraud"] == 0.0
    assert cfg.end == datetime(2026, 5, 1, tzinfo=UTC)
    assert WorldConfig().fraud_rate == 0.003
    assert hash(WorldConfig(seed=1)) == hash(WorldConfig(seed=1)) and WorldConfig(seed=1) == WorldConfig(
        seed=1
    )


def test_zero_fraud_world_has_no_scenarios() -> None:
    tables = [
        t
        for name, t in generate_world(WorldConfig(charges=2_000, days=3, fraud_rate=0.0))
        if name == "charges"
    ]
    assert all(t.column("scenario").null_count == t.num_rows for t in tables)


def test_compromised_cards_share_a_breached_merchant(db: duckdb.DuckDBPyConnection) -> None:
    cards, top_cover = _one(
        db,
        """with victims as (select card_fingerprint, min(created) t from charges
                where scenario = 'compromised_merchant' group by 1),
            seen as (select distinct v.card_fingerprint, c.merchant_id from victims v join charges c
                on c.card_fingerprint = v.card_fingerprint and c.created < v.t - interval 1 day
                and c.scenario is null and c.outcome = 'authorized'),
            common as (select merchant_id, count(*) n from seen group by 1 order by n desc limit 3)
        select (select count(*) from victims),
            (select count(distinct card_fingerprint) from seen
             where merchant_id in (select merchant_id from common))
        """,
    )
    assert cards > 50 and top_cover == cards  # every victim card was used at one of the breached merchants


def test_stolen_cards_come_with_new_devices_and_ips(db: duckdb.DuckDBPyConnection) -> None:
    n, familiar = _one(
        db,
        """select count(*), count(*) filter (where exists (select 1 from charges g
            where g.card_fingerprint = s.card_fingerprint and g.scenario is null and g.created < s.created
            and (g.device_id = s.device_id or g.ip_address = s.ip_address)))
        from charges s where scenario = 'stolen_card'""",
    )
    assert n > 100 and familiar == 0


def test_no_value_reads_as_a_card_number(world: dict[str, pa.Table]) -> None:
    for name in PAYMENT_TABLES:
        for col in world[name].column_names:
            assert card_number_rows(world[name].column(col)).size == 0, (name, col)
