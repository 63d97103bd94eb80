"""Day-by-day orchestration of the synthetic world: entities once, then each day's charges, then outcomes.

Memory stays bounded by the entity pools plus one day: each day's charges are generated, ordered, given ids
and yielded as one Arrow table before the next day starts. Charges that belong to a later day (retries a few
days later, card-testing cash-outs, breach victims defrauded weeks later) wait in a small pending batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from payfm.synth.config import WorldConfig
from payfm.synth.genuine import US_PER_DAY, WEEKLY, genuine_day, plan_retries, recurring_day
from payfm.synth.outcomes import OutcomeLog
from payfm.synth.rows import Rows, concat, empty, to_table
from payfm.synth.scenarios import Scenarios
from payfm.synth.world import build_world

# Expected retries per genuine first attempt (measured): the genuine volume is scaled down by it so that
# the total number of charges matches the config.
RETRY_RATE = 0.02
# Share of customers changing their password or e-mail on a given day (genuine credential changes).
CREDENTIAL_CHANGE_P = 0.0005
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def generate_world(
    config: WorldConfig, progress: Callable[[int, int], None] | None = None
) -> Iterator[tuple[str, pa.Table]]:
    """Generate the world of ``config`` as (table name, Arrow table) pairs.

    For each day in order: ``("charges", table)`` sorted by (created, charge_id). At the very end:
    ``disputes``, ``early_fraud_warnings`` and ``refunds``, each once, sorted by created. Only outcomes
    before ``config.end`` are emitted. ``progress(day + 1, days)`` is called after each day. The same config
    always yields byte-identical tables.

    Example:
        >>> cfg = WorldConfig(charges=5_000, days=7, seed=3)
        >>> names = [name for name, _ in generate_world(cfg)]
        >>> names.count("charges"), names[-3:]
        (7, ['disputes', 'early_fraud_warnings', 'refunds'])
    """
    seeds = np.random.SeedSequence(config.seed).spawn(4)
    rng_world, rng_genuine, rng_fraud, rng_outcome = (np.random.default_rng(s) for s in seeds)
    fraud = config.fraud_rate * config.charges
    friendly = fraud * config.scenario_mix["friendly_fraud"]  # taken out of genuine traffic, not added to it
    genuine_per_day = (config.charges - fraud + friendly) / (1 + RETRY_RATE) / config.days
    world = build_world(config, rng_world, genuine_per_day)
    scenarios = Scenarios(config, world, rng_fraud, genuine_per_day)
    start_us, end_us = _us(config.start), _us(config.end)
    outcomes = OutcomeLog(world, rng_outcome, end_us, scenarios.bust_start, scenarios.gone)
    one_off_per_day = genuine_per_day - world.sub_phase.size / 30  # recurring charges come from subscriptions
    weekday = (config.start.weekday() + np.arange(config.days)) % 7
    weekly = WEEKLY[weekday] / WEEKLY[weekday].mean()
    cred = np.full(world.n_customers, -1, np.int64)  # last credential change per customer (us), -1 never
    pending = empty(0)
    next_serial = 0
    for d in range(config.days):
        day_start = start_us + d * US_PER_DAY
        day_end = day_start + US_PER_DAY
        n = int(rng_genuine.poisson(max(one_off_per_day, 0.0) * weekly[d]))
        shoppers = world.customer_cdf(d)
        genuine = concat(
            [
                genuine_day(world, rng_genuine, day_start, n, cred, shoppers),
                recurring_day(world, rng_genuine, d, day_start),
            ]
        )
        scenarios.friendly_fraud(genuine)
        batch = concat(
            [
                genuine,
                scenarios.stolen_card(day_start),
                scenarios.card_testing(day_start),
                scenarios.account_takeover(day_start, cred, shoppers),
                scenarios.merchant_bust_out(d, day_start),
                pending,
            ]
        )
        kept = np.flatnonzero(scenarios.alive(batch) & (batch.created < end_us))
        today = batch.created[kept] < day_end
        pending = batch.take(kept[~today])
        kept = kept[today]
        base = batch.take(kept[np.argsort(batch.created[kept], kind="stable")])
        breached = scenarios.compromised_merchant(base)
        charges, serial, later = _with_retries(
            base, rng_genuine, scenarios.alive, day_end, end_us, next_serial
        )
        next_serial += len(charges)
        pending = concat([pending, later, breached.take(np.flatnonzero(breached.created < end_us))])
        outcomes.add_day(charges, serial)
        # Genuine credential changes (effective from the next day): the signal of takeover is not unique.
        who = rng_genuine.integers(
            0, world.n_customers, int(rng_genuine.poisson(world.n_customers * CREDENTIAL_CHANGE_P))
        )
        cred[who] = day_start + rng_genuine.integers(0, US_PER_DAY, who.size)
        yield "charges", to_table(world, charges, serial)
        if progress is not None:
            progress(d + 1, config.days)
    yield from outcomes.tables()


def _with_retries(
    base: Rows,
    rng: np.random.Generator,
    alive: Callable[[Rows], np.ndarray],
    day_end: int,
    end_us: int,
    first_serial: int,
) -> tuple[Rows, np.ndarray, Rows]:
    """Add today's retries of today's declines to ``base`` (sorted): (day's rows, serials, later retries)."""
    retries, origin = plan_retries(rng, base)
    ok = np.flatnonzero(alive(retries) & (retries.created < end_us))
    retries, origin = retries.take(ok), origin[ok]
    same = retries.created < day_end
    combined = concat([base, retries.take(np.flatnonzero(same))])
    order = np.argsort(combined.created, kind="stable")
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    serial_of = first_serial + rank  # serial number of each combined row
    combined.retry_of[len(base) :] = serial_of[origin[same]]
    later = retries.take(np.flatnonzero(~same))
    later.retry_of[:] = serial_of[origin[~same]]
    return combined.take(order), first_serial + np.arange(order.size, dtype=np.int64), later
