"""Benchmark the rules engine: (1) backtest of 1M charges x 20 rules, (2) one-charge evaluation p99.

The backtest table is synthesized directly in DuckDB (charge fields, default-set feature columns, outcome
labels), so the figure measures the rules engine, not the feature backfill. Targets (DESIGN.md): backtest
<= 10 s; one-charge evaluation of 20 rules p99 <= 50 us. Usage:

    .venv/bin/python bench/bench_rules.py                  # 1M charges, 20 rules, against a 20-rule baseline
    .venv/bin/python bench/bench_rules.py --charges 200000 --decisions 20000
"""

from __future__ import annotations

import argparse
import platform
import random
import time

import duckdb
import numpy as np

from machine import describe  # bench/machine.py
from payfm.features.catalog import default_set
from payfm.rules.backtest import FLAGS, evaluate_table
from payfm.rules.backtest_views import with_views
from payfm.rules.catalog import AttributeCatalog, check_types
from payfm.rules.compiler import Ruleset, compile_rules
from payfm.rules.grammar import parse_rules

RULES = """\
t1: request_3ds if :card.count_charges_1h: > 3 and :channel: = 'ecommerce'
t2: request_3ds if :card.distinct_ip_address_1d: > 3 and :amount_usd: > 100
a1: allow if :email_domain: in @trusted and :card.count_fraud_disputes_all: = 0
a2: allow if :customer.count_charges_30d: > 20 and :card.count_efws_all: = 0
b1: block if :card.count_declined_1h: >= 3 or :ip.count_declined_1h: >= 5
b2: block if :device.distinct_card_fingerprint_7d: >= 4 or :ip.distinct_card_fingerprint_1d: > 5
b3: block if :card.count_fraud_disputes_all: > 0 or :card.count_efws_all: > 0
b4: block if :ip_country: in ('NG', 'RU', 'VN', 'ID') and :amount_usd: > 300
b5: block if :amount_usd: / :card.sum_amount_usd_1d: > 5 and :card.count_charges_1d: > 2
b6: block if :email_domain: ends_with '.ru' and :card.first_seen: = 1
b7: block if :card.decline_rate_1d: > 0.5 and :card.count_charges_1d: >= 4
b8: block if :bin.decline_rate_1h: > 0.8 and :bin.count_charges_1h: > 10
r1: review if :card.first_seen: = 1 and :amount_usd: > 500
r2: review if :card.amount_zscore: > 4 and :amount_usd: > 200
r3: review if :ip_country: is not missing and :card_country: != :ip_country: and :amount_usd: > 300
r4: review if :ip_country: is missing and :channel: = 'ecommerce'
r5: review if :card.since_prev: < 60 and :card.count_charges_1h: > 1
r6: review if :email.count_charges_1d: > 10 or :device.count_charges_1d: > 15
r7: review if not (:card_funding: in ('credit', 'debit')) and :amount_usd: > 250
r8: review if :merchant.fraud_dispute_rate_all: > 0.02 and :amount_usd: * 2 > 400
"""

FEATURES = sorted(
    {
        "card.count_charges_1h", "card.distinct_ip_address_1d", "card.count_fraud_disputes_all",
        "customer.count_charges_30d", "card.count_efws_all", "card.count_declined_1h", "ip.count_declined_1h",
        "device.distinct_card_fingerprint_7d", "ip.distinct_card_fingerprint_1d", "card.sum_amount_usd_1d",
        "card.count_charges_1d", "card.first_seen", "card.decline_rate_1d", "bin.decline_rate_1h",
        "bin.count_charges_1h", "card.amount_zscore", "card.since_prev", "email.count_charges_1d",
        "device.count_charges_1d", "merchant.fraud_dispute_rate_all",
    }
)  # fmt: skip


def build_table(con: duckdb.DuckDBPyConnection, n: int) -> None:
    """n synthetic charges with the attributes the rules read (every ``request_3ds`` rule reads ``three_ds``
    too: it applies only before 3-D Secure); ~10% nulls in features, 0.5% fraud."""
    # Counts are mostly 0-2 (a geometric-like tail), rates mostly small: most charges match no rule.
    feats = ", ".join(
        "CASE WHEN random() < 0.1 THEN NULL ELSE "
        + ("random() * random() * 0.6" if "rate" in f else "floor(-ln(random() + 1e-12) * 0.4)")
        + f' END AS "{f}"'
        for f in FEATURES
    )
    con.execute(
        f"""CREATE TABLE bench AS SELECT
            'ch_' || i AS charge_id,
            CASE WHEN random() < 0.005 THEN 'fraud' WHEN random() < 0.02 THEN 'refunded' ELSE 'legit' END
                AS label,
            round(random() * 1000, 2) AS usd,
            round(random() * 1000, 2) AS amount_usd,
            (['US', 'GB', 'FR', 'NG', 'RU', NULL])[1 + (i % 6)] AS ip_country,
            CASE WHEN i % 10 = 0 THEN 'DE' ELSE coalesce(ip_country, 'US') END AS card_country,
            (['gmail.com', 'mail.ru', 'shop.com', NULL])[1 + (i % 4)] AS email_domain,
            (['ecommerce', 'card_present', 'recurring'])[1 + (i % 3)] AS channel,
            (['credit', 'debit', 'credit', 'debit', 'prepaid'])[1 + (i % 5)] AS card_funding,
            -- The 3-D Secure result (events.schema.THREE_DS_RESULTS), as the synthetic world spreads it
            -- (synth/genuine.py): only e-commerce charges go through 3-D Secure, about half of them; the
            -- request_3ds rules apply to 'not_requested' and missing ones. NULL, 2% of e-commerce: a
            -- charge sent for a decision before 3-D Secure ran, without the field.
            CASE WHEN i % 3 <> 0 THEN 'not_requested' WHEN u3 < 0.02 THEN NULL
                WHEN u3 < 0.50 THEN 'not_requested' WHEN u3 < 0.92 THEN 'authenticated'
                WHEN u3 < 0.98 THEN 'attempted' ELSE 'failed' END AS three_ds,
            {feats}
        FROM (SELECT i, random() AS u3 FROM range({n}) t(i))"""
    )


def compile_(text: str, catalog: AttributeCatalog) -> Ruleset:
    rules = parse_rules(text)
    check_types(rules, catalog, {"trusted": "email_domain"})
    return compile_rules(rules, {"trusted": frozenset({"shop.com"})}, catalog.types)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--charges", type=int, default=1_000_000)
    ap.add_argument("--decisions", type=int, default=100_000)
    args = ap.parse_args()
    print(f"# {describe()}", flush=True)
    catalog = AttributeCatalog.for_feature_set(default_set())
    rs = compile_(RULES, catalog)
    baseline = compile_(RULES.replace("> 3", "> 4").replace(">= 4", ">= 5"), catalog)
    print(f"python {platform.python_version()}, duckdb {duckdb.__version__}, {len(rs.rules)} rules")

    con = duckdb.connect()
    t0 = time.perf_counter()
    build_table(con, args.charges)
    print(f"synthetic table: {args.charges:,} charges in {time.perf_counter() - t0:.1f} s (not counted)")
    for label, base in (("no baseline", None), ("vs 20-rule baseline", baseline)):
        t0 = time.perf_counter()
        report = evaluate_table(con, rs, base, table="bench")
        elapsed = time.perf_counter() - t0
        print(
            f"backtest {args.charges:,} charges x {len(rs.rules)} rules ({label}): {elapsed:.2f} s "
            f"(target <= 10 s); {report.change.changed:,} decisions changed"
        )

    # The analyst's views (`rules backtest --by day --overlap`, or --json), over the last report's table:
    # charges spread over 30 days (the series reads each one's time from `charges`, as the backtest's does).
    con.execute(
        f"""CREATE TABLE charges AS SELECT 'ch_' || i AS charge_id,
            TIMESTAMPTZ '2026-01-01 00:00:00+00'
                + to_microseconds(i * {30 * 86_400_000_000} // {args.charges}) AS created
            FROM range({args.charges}) t(i)"""
    )
    for by, overlap in (("day", False), (None, True), ("day", True)):
        t0 = time.perf_counter()
        with_views(con, rs, report, FLAGS, by=by, overlap=overlap)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - t0
        print(
            f"views (series by {by or '-'}, overlap {'yes' if overlap else 'no'}): {elapsed:.2f} s "
            "(target <= 1 s)"
        )

    # One-charge evaluation: rows of the same table as attribute dicts.
    rows = con.execute(f"SELECT * FROM bench USING SAMPLE {args.decisions} ROWS").fetchall()
    names = [d[0] for d in con.description or []]
    charges = [dict(zip(names, r, strict=True)) for r in rows]
    random.Random(0).shuffle(charges)
    for c in charges[:1000]:
        rs.decide(c)  # warm-up
    times = np.empty(len(charges))
    clock = time.perf_counter_ns
    for i, c in enumerate(charges):
        t = clock()
        rs.decide(c)
        times[i] = clock() - t
    p50, p99, p999 = np.percentile(times / 1000, [50, 99, 99.9])
    none = np.array([rs.decide(c).action is None for c in charges])
    print(
        f"one-charge decision, {len(rs.rules)} rules, {len(charges):,} charges: p50 {p50:.1f} us, "
        f"p99 {p99:.1f} us (target <= 50 us), p99.9 {p999:.1f} us; {none.mean():.0%} matched no rule"
    )
    if none.any():  # the worst case: every rule evaluated
        w50, w99 = np.percentile(times[none] / 1000, [50, 99])
        print(
            f"  charges matching no rule (all {len(rs.rules)} evaluated): p50 {w50:.1f} us, p99 {w99:.1f} us"
        )


if __name__ == "__main__":
    main()
