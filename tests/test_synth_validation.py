"""Input validation of the synthetic world: scenario weights, the world's time span, and `payfm generate`
checking its options (named as options) before the workspace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.schema import TIME_MAX_US
from payfm.events.workspace import Workspace
from payfm.synth import WorldConfig, generate_world
from payfm.synth.config import EARLIEST_START, LATEST_END, MAX_DAYS


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


# --- scenario weights


@pytest.mark.parametrize(
    ("weight", "shown"),
    [
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        (float("nan"), "nan"),
        (-1.0, "-1.0"),
        (10**400, str(10**400)),  # an int past the largest float
        (True, "True"),
        ("1", "'1'"),
    ],
)
def test_mix_weights_must_be_finite_numbers_at_least_zero(weight: object, shown: str) -> None:
    with pytest.raises(ValueError) as err:
        WorldConfig(scenario_mix={"card_testing": 1.0, "stolen_card": weight})  # type: ignore[dict-item]
    assert str(err.value) == (
        f"The 'scenario_mix' of WorldConfig must have finite weights >= 0. Got {shown} for 'stolen_card'."
    )


def test_huge_weights_keep_their_proportions() -> None:
    """Their total overflows a float: dividing by it made every weight 0 (and the world had no fraud)."""
    huge = WorldConfig(scenario_mix={"stolen_card": 1e308, "card_testing": 1e308})
    assert dict(huge.scenario_mix) == dict(
        WorldConfig(scenario_mix={"stolen_card": 1, "card_testing": 1}).scenario_mix
    )
    assert huge.scenario_mix["stolen_card"] == huge.scenario_mix["card_testing"] == 0.5
    skewed = WorldConfig(
        scenario_mix={"stolen_card": 1.5e308, "card_testing": 0.5e308, "friendly_fraud": 1e308}
    )
    assert skewed.scenario_mix["stolen_card"] == pytest.approx(0.5)
    assert skewed.scenario_mix["card_testing"] == pytest.approx(1 / 6)
    ints = WorldConfig(scenario_mix={"stolen_card": 10**308, "card_testing": 3 * 10**308 // 2})  # sum > max
    assert ints.scenario_mix["stolen_card"] == pytest.approx(0.4)
    assert sum(ints.scenario_mix.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("mix", [{}, {"stolen_card": 0}, {"stolen_card": 0.0, "card_testing": 0.0}])
def test_mix_without_positive_weight_is_refused(mix: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must have a positive total weight"):
        WorldConfig(scenario_mix=mix)


def test_mix_must_be_a_mapping() -> None:
    with pytest.raises(ValueError, match=r"must be a mapping of scenario names to weights\. Got list"):
        WorldConfig(scenario_mix=[("stolen_card", 1.0)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mix", "message"),
    [
        ("stolen_card=inf", "Error: --mix must have finite weights >= 0. Got inf for 'stolen_card'."),
        ("stolen_card=nan", "Error: --mix must have finite weights >= 0. Got nan for 'stolen_card'."),
        (
            "stolen_card=-1,card_testing=2",
            "Error: --mix must have finite weights >= 0. Got -1.0 for 'stolen_card'.",
        ),
        ("stolen_card=0,card_testing=0", "Error: --mix must have a positive total weight."),
        ("stolen_card=1,stolen_card=2", "Error: The '--mix' option must name each scenario once."),
        ("", "Error: The '--mix' option must be a list like 'stolen_card=2,card_testing=1' (leave it out"),
        (" ", "Error: The '--mix' option must be a list like 'stolen_card=2,card_testing=1' (leave it out"),
    ],
)
def test_generate_mix_errors_name_the_option(tmp_path: Path, mix: str, message: str) -> None:
    code, out = run("-w", str(tmp_path / "ws"), "generate", "--charges", "5000", "--days", "20", "--mix", mix)
    assert code == 1 and out.startswith(message), out
    assert "WorldConfig" not in out and "scenario_mix" not in out and "Traceback" not in out
    assert not (tmp_path / "ws").exists()


def test_generate_with_huge_weights_makes_the_same_world(tmp_path: Path) -> None:
    tables = {}
    for name, mix in (
        ("huge", "stolen_card=1e308,card_testing=1e308"),
        ("unit", "stolen_card=1,card_testing=1"),
    ):
        code, out = run(
            "-w", str(tmp_path / name), "generate", "--charges", "3000", "--days", "5", "--mix", mix
        )
        assert code == 0, out
        tables[name] = Workspace.open(tmp_path / name).read("charges")
    assert tables["huge"].equals(tables["unit"])
    assert pc.sum(pc.is_valid(tables["huge"].column("scenario"))).as_py() > 0


# --- the world's time span


def test_days_are_at_most_ten_years() -> None:
    assert WorldConfig(days=MAX_DAYS).days == 3660
    with pytest.raises(ValueError) as err:
        WorldConfig(days=100_000)
    assert str(err.value) == "The 'days' of WorldConfig must be at most 3,660 (ten years). Got 100000."


@pytest.mark.parametrize(
    ("start", "days", "message"),
    [
        (
            datetime(1900, 1, 1, tzinfo=UTC),
            10,
            "The 'start' of WorldConfig must be on or after 1970-01-03: event times begin in 1970, and a "
            "takeover changes credentials up to 36 h before its first charge. Got 1900-01-01.",
        ),
        (datetime(1970, 1, 2, 23, tzinfo=UTC), 10, "Got 1970-01-02T23:00:00+00:00."),
        (
            datetime(9999, 12, 1, tzinfo=UTC),
            1,
            "The 'start' of WorldConfig must be on or before 2099-12-31: the world must end by 2100-01-01, "
            "where event times stop. Got 9999-12-01.",
        ),
        (datetime.max.replace(tzinfo=UTC), 1, "must be on or before 2099-12-31"),  # no OverflowError
        (
            datetime(2099, 12, 2, tzinfo=UTC),
            31,
            "The 'days' of WorldConfig must end the world by 2100-01-01, where event times stop: at most 30 "
            "days from a start of 2099-12-02. Got 31.",
        ),
        (datetime(2095, 1, 1, tzinfo=UTC), MAX_DAYS, "at most 1,826 days from a start of 2095-01-01"),
    ],
)
def test_world_lies_within_the_platforms_timeline(start: datetime, days: int, message: str) -> None:
    with pytest.raises(ValueError) as err:
        WorldConfig(start=start, days=days)
    assert message in str(err.value)


def test_worlds_at_the_bounds_are_accepted_and_stay_inside() -> None:
    last = WorldConfig(start=datetime(2099, 12, 2, tzinfo=UTC), days=30)
    assert last.end == LATEST_END == datetime(2100, 1, 1, tzinfo=UTC)
    assert (LATEST_END - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) == TIME_MAX_US
    first = WorldConfig(
        charges=20_000, days=2, start=EARLIEST_START, fraud_rate=0.3, scenario_mix={"account_takeover": 1}
    )
    charges = pa.concat_tables(t for name, t in generate_world(first) if name == "charges")
    changed = charges.column("credential_changed_at")
    assert pc.sum(pc.less(changed, EARLIEST_START)).as_py() > 0  # takeovers changed credentials before it
    assert pc.min(changed).as_py() >= datetime(1970, 1, 1, tzinfo=UTC)
    assert pc.min(charges.column("created")).as_py() >= EARLIEST_START


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--days", "100000"), "Error: --days must be at most 3,660 (ten years). Got 100000."),
        (("--start", "9999-12-01"), "Error: --start must be on or before 2099-12-31"),
        (("--start", "1970-01-01"), "Error: --start must be on or after 1970-01-03"),
        (
            ("--start", "2099-12-02", "--days", "40"),
            "Error: --days must end the world by 2100-01-01, where event times stop: at most 30 days from a "
            "start of 2099-12-02. Got 40.",
        ),
    ],
)
def test_generate_refuses_worlds_off_the_timeline(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    code, out = run("-w", str(tmp_path / "ws"), "generate", "--charges", "1000", *args)
    assert code == 1 and out.startswith(message) and "WorldConfig" not in out, out
    assert not (tmp_path / "ws").exists()


# --- options before the workspace


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--seed", "-1"), "Error: --seed must be a non-negative integer. Got -1."),
        (("--days", "0"), "Error: --days must be an integer >= 1. Got 0."),
        (("--mix", "stolen_card=inf"), "Error: --mix must have finite weights >= 0."),
        (("--mix", "bogus"), "Error: The '--mix' option must be a list like"),
        (("--fraud-rate", "nan"), "Error: --fraud-rate must be in [0, 0.5). Got nan."),
    ],
)
def test_generate_checks_options_before_the_workspace(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    ws = str(tmp_path / "ws")
    assert run("-w", ws, "generate", "--charges", "1000", "--days", "2")[0] == 0
    code, out = run("-w", ws, "generate", *args)
    assert code == 1 and out.startswith(message) and "already holds" not in out, out
    code, out = run("-w", ws, "generate", "--charges", "1000", "--days", "2")
    assert code == 1 and "already holds" in out and "--replace" in out


@pytest.mark.parametrize(
    "bad",
    [{"charges": 10}, {"days": 0}, {"seed": -1}, {"fraud_rate": 0.7}, {"scenario_mix": {"nope": 1.0}}],
)
def test_world_config_errors_are_payfm_errors(bad: dict[str, object]) -> None:
    """Every knob's error is a user error (a notebook's `except PayfmError` catches it, as it catches
    TrainConfig's) and still a ValueError (a bad argument, as Python code expects)."""
    from payfm.errors import PayfmError
    from payfm.synth import WorldConfigError

    with pytest.raises(WorldConfigError) as err:
        WorldConfig(**bad)  # type: ignore[arg-type]
    assert isinstance(err.value, PayfmError) and isinstance(err.value, ValueError)
    assert "of WorldConfig" in str(err.value)
