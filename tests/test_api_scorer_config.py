"""ScorerConfig refuses a value no scorer can use when it is made, naming the field, what was expected and
what was given (top_k=-1 gave every reason; model=3 failed only at Scorer.open), as TrainConfig does; it is
still imported from payfm.serving.scorer (a notebook user's audit of the library)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from payfm.errors import ConfigError
from payfm.serving import scorer as scorer_module
from payfm.serving.scorer import ScorerConfig
from payfm.serving.scorer_config import ScorerConfig as Home
from payfm.training.scores import ScoreLevels


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("model", 3, "a registered model's name (e.g. 'fraud-gbdt') or None"),
        ("model", "", "a registered model's name"),
        ("model", " ", "a registered model's name"),
        ("top_k", -1, "an integer >= 0"),
        ("top_k", 2.5, "an integer >= 0"),
        ("top_k", True, "an integer >= 0"),
        ("top_k", "3", "an integer >= 0"),
        ("snapshot_every", -5, "an integer >= 0"),
        ("gc_freeze_every", None, "an integer >= 0"),
        ("levels", {"elevated": 65}, "a ScoreLevels"),
        ("warm_from_event_log", "no", "True or False"),
        ("fork_snapshots", 0, "True or False"),
        ("max_future_s", -1, "a number of seconds >= 0 or None"),
        ("max_future_s", math.nan, "a number of seconds >= 0 or None"),
        ("max_past_s", 0, "a number of seconds > 0 or None"),
        ("max_past_s", "60", "a number of seconds > 0 or None"),
        ("lists_refresh_s", 0.0, "a number of seconds > 0 or None"),
        ("lists_refresh_s", math.inf, "a number of seconds > 0 or None"),
    ],
)
def test_a_bad_field_is_refused_naming_it_the_expected_and_the_given(
    field: str, value: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as e:
        ScorerConfig(**{field: value})  # type: ignore[arg-type]
    said = str(e.value)
    assert said.startswith(f"The '{field}' of ScorerConfig") and expected in said, said
    assert said.endswith(f"Got {value!r}."), said
    with pytest.raises(ConfigError, match=f"'{field}'"):  # a copy with a changed field is checked too
        dataclasses.replace(ScorerConfig(), **{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"model": "fraud-gbdt", "top_k": 0, "snapshot_every": 0, "gc_freeze_every": 0},
        {"top_k": 1000, "snapshot_every": 100_000, "levels": ScoreLevels(50, 90)},
        {"max_future_s": 0, "max_past_s": 3600, "lists_refresh_s": 0.02},
        {"max_future_s": 300.5, "max_past_s": None, "lists_refresh_s": None},
        {"warm_from_event_log": False, "fork_snapshots": False},
    ],
)
def test_what_the_server_and_the_tests_use_is_accepted(fields: dict[str, object]) -> None:
    config = ScorerConfig(**fields)  # type: ignore[arg-type]
    assert all(getattr(config, k) == v for k, v in fields.items())


def test_scorer_config_is_one_class_importable_from_the_scorer_module() -> None:
    assert ScorerConfig is Home is scorer_module.ScorerConfig
    assert ScorerConfig().top_k == 3 and ScorerConfig().levels == ScoreLevels()
