"""Fixes from a review of the synthetic world: the customer pool of short worlds, the bust-out merchant's
signals before its bust, a start that is not midnight, numpy numbers in WorldConfig, and `payfm demo`'s
--days help."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.synth import WorldConfig, WorldConfigError, generate_world, generator
from payfm.synth.scenarios import Scenarios
from payfm.synth.world import build_world

US_PER_DAY = 86_400_000_000

# --- 1. the customer pool of a short world


def test_a_one_day_world_has_at_most_one_customer_per_charge() -> None:
    """Five customers per daily genuine charge made 4.9M customers (2.6 GB) for 1M charges in one day."""
    cfg = WorldConfig(charges=20_000, days=1)
    world = build_world(cfg, np.random.default_rng(0), genuine_per_day=cfg.charges / 1.02)
    assert world.n_customers == cfg.charges


@pytest.mark.parametrize(("charges", "days"), [(3_000, 5), (100_000, 30), (20_000, 120)])
def test_worlds_of_five_days_or_more_keep_five_customers_per_daily_genuine_charge(
    charges: int, days: int
) -> None:
    cfg = WorldConfig(charges=charges, days=days)
    per_day = charges / 1.02 / days
    world = build_world(cfg, np.random.default_rng(0), genuine_per_day=per_day)
    assert world.n_customers == int(max(300, per_day / 0.2))


# --- 2. the bust-out merchant shows its signals only from its bust on


def _bust_world(monkeypatch: pytest.MonkeyPatch) -> tuple[pa.Table, dict[str, pa.Table], Scenarios]:
    seen: list[Scenarios] = []

    class Recorded(Scenarios):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            seen.append(self)

    monkeypatch.setattr(generator, "Scenarios", Recorded)
    cfg = WorldConfig(
        charges=200_000, days=60, fraud_rate=0.1, scenario_mix={"merchant_bust_out": 1, "stolen_card": 1}
    )
    tables = list(generate_world(cfg))
    charges = pa.concat_tables(t for name, t in tables if name == "charges")
    return charges, {name: t for name, t in tables if name != "charges"}, seen[0]


def test_bust_out_refunds_and_disputes_start_with_the_bust_and_stop_when_it_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    charges, outcomes, s = _bust_world(monkeypatch)
    ids = [s.world.merchant_ids[int(m)].as_py() for m in s.bust_merchant]
    assert len(ids) >= 5
    starts = pa.array(s.start_us + s.bust_first_day * US_PER_DAY, pa.int64())
    gone = pa.array(s.gone[s.bust_merchant], pa.int64())
    at = pc.index_in(charges["merchant_id"], pa.array(ids))  # which bust-out merchant, null for others
    created = pc.cast(charges["created"], pa.int64())
    rows = pa.table(
        {
            "charge_id": charges["charge_id"],
            "genuine": pc.and_(pc.is_null(charges["scenario"]), pc.equal(charges["outcome"], "authorized")),
            "bust": pc.is_valid(at),
            "before": pc.less(created, pc.take(starts, at)),
            "gone": pc.take(gone, at),
        }
    ).filter(pc.field("bust"))
    refunds = rows.join(
        outcomes["refunds"].select(["charge_id", "created", "reason"]), "charge_id", join_type="inner"
    )
    disputes = rows.join(outcomes["disputes"].select(["charge_id", "reason"]), "charge_id", join_type="inner")

    # No refund once the merchant is gone (it disappeared): there were hundreds.
    assert pc.sum(pc.greater_equal(pc.cast(refunds["created"], pa.int64()), refunds["gone"])).as_py() == 0

    # Before its bust, its genuine charges are refunded and disputed as anywhere else (2%, 0.12%), never
    # "fraudulent" refunds nor 5% product_not_received disputes; they were from day 0 (10%, 5%).
    before = rows.filter(pc.field("genuine") & pc.field("before"))
    assert before.num_rows > 1_000
    refunded = refunds.filter(pc.field("genuine") & pc.field("before"))
    assert refunded.num_rows / before.num_rows < 0.04
    assert "fraudulent" not in refunded["reason"].to_pylist()
    disputed = disputes.filter(pc.field("genuine") & pc.field("before"))
    assert disputed.num_rows / before.num_rows < 0.01

    # From its bust on, its genuine charges are refunded quickly and often, some as "fraudulent".
    during = rows.filter(pc.field("genuine") & ~pc.field("before"))
    busted = refunds.filter(pc.field("genuine") & ~pc.field("before"))
    assert during.num_rows > 300
    assert 0.05 < busted.num_rows / during.num_rows < 0.15
    assert "fraudulent" in busted["reason"].to_pylist()


# --- 3. the start must be a midnight


@pytest.mark.parametrize(
    ("start", "shown"),
    [
        (datetime(2026, 1, 1, 12, tzinfo=UTC), "2026-01-01T12:00:00+00:00"),
        (datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC), "2026-01-01T00:00:00.000001+00:00"),
    ],
)
def test_a_start_that_is_not_midnight_is_refused(start: datetime, shown: str) -> None:
    """Daily patterns add local times of day to each day's start: noon shifted every one by 12 hours."""
    with pytest.raises(WorldConfigError) as err:
        WorldConfig(start=start)
    message = str(err.value)
    assert message.startswith("The 'start' of WorldConfig must be at midnight UTC")
    assert message.endswith(f"Got {shown}.")


def test_a_midnight_start_is_accepted() -> None:
    assert WorldConfig(start=datetime(2030, 6, 15, tzinfo=UTC)).end == datetime(2030, 10, 13, tzinfo=UTC)


# --- 4. numpy numbers


def test_numpy_numbers_are_accepted_and_stored_as_plain_numbers() -> None:
    mixed = WorldConfig(
        charges=np.int64(20_000),  # type: ignore[arg-type]
        days=np.int32(5),  # type: ignore[arg-type]
        seed=np.uint16(3),  # type: ignore[arg-type]
        fraud_rate=np.float64(0.01),  # type: ignore[arg-type]
        scenario_mix={"stolen_card": np.float32(3), "card_testing": np.int64(1)},  # type: ignore[dict-item]
    )
    plain = WorldConfig(
        charges=20_000, days=5, seed=3, fraud_rate=0.01, scenario_mix={"stolen_card": 3, "card_testing": 1}
    )
    assert mixed == plain and hash(mixed) == hash(plain)
    assert [type(v) for v in (mixed.charges, mixed.days, mixed.seed, mixed.fraud_rate)] == [
        int,
        int,
        int,
        float,
    ]
    assert {type(w) for w in mixed.scenario_mix.values()} == {float}
    assert WorldConfig(fraud_rate=np.float32(0.25)).fraud_rate == 0.25  # type: ignore[arg-type]
    assert WorldConfig(fraud_rate=Fraction(1, 4)).fraud_rate == 0.25  # type: ignore[arg-type]
    huge = WorldConfig(scenario_mix={"stolen_card": np.float64(1e308), "card_testing": np.float64(1e308)})
    assert huge.scenario_mix["stolen_card"] == 0.5  # no overflow warning (pytest runs with -W error)


@pytest.mark.parametrize(
    ("knob", "value", "message"),
    [
        ("charges", np.bool_(True), "The 'charges' of WorldConfig must be an integer >= 1000. Got np.True_."),
        ("charges", 20_000.0, "The 'charges' of WorldConfig must be an integer >= 1000. Got 20000.0."),
        (
            "charges",
            np.int64(10),
            "The 'charges' of WorldConfig must be an integer >= 1000. Got np.int64(10).",
        ),
        ("days", np.float64(5), "The 'days' of WorldConfig must be an integer >= 1. Got np.float64(5.0)."),
        ("seed", True, "The 'seed' of WorldConfig must be a non-negative integer. Got True."),
        ("seed", np.int64(-1), "The 'seed' of WorldConfig must be a non-negative integer. Got np.int64(-1)."),
        (
            "fraud_rate",
            np.bool_(False),
            "The 'fraud_rate' of WorldConfig must be in [0, 0.5). Got np.False_.",
        ),
        ("fraud_rate", "0.1", "The 'fraud_rate' of WorldConfig must be in [0, 0.5). Got '0.1'."),
        (
            "fraud_rate",
            np.float32("nan"),
            "The 'fraud_rate' of WorldConfig must be in [0, 0.5). Got np.float32(nan).",
        ),
    ],
)
def test_other_values_are_still_refused(knob: str, value: object, message: str) -> None:
    with pytest.raises(WorldConfigError) as err:
        WorldConfig(**{knob: value})  # type: ignore[arg-type]
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("weight", "shown"), [(np.float32("inf"), "np.float32(inf)"), (np.bool_(True), "np.True_")]
)
def test_numpy_mix_weights_that_are_not_finite_numbers_are_refused(weight: object, shown: str) -> None:
    with pytest.raises(WorldConfigError) as err:
        WorldConfig(scenario_mix={"card_testing": 1.0, "stolen_card": weight})  # type: ignore[dict-item]
    assert str(err.value) == (
        f"The 'scenario_mix' of WorldConfig must have finite weights >= 0. Got {shown} for 'stolen_card'."
    )


# --- 5. payfm demo --help


def test_demo_days_help_says_how_many_days_the_models_need() -> None:
    out = CliRunner().invoke(cli, ["demo", "--help"], terminal_width=200).output
    line = next(line for line in out.splitlines() if "--days" in line)
    assert "more than 102 for the models" in line and "with --skip-models" in line
