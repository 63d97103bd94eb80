"""The Python API's training arguments of a wrong type are refused naming the field (found by an ML engineer's
audit: they failed far inside, "'str' object has no attribute 'key'", or were read wrongly, "no" as True)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.training.tasks import task
from payfm.training.trainer import TrainConfig, train


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"as_of": "2026-02-01"}, "The 'as_of' of TrainConfig must be a datetime with a time zone"),
        ({"as_of": datetime(2026, 2, 1)}, "The 'as_of' of TrainConfig must be a datetime with a time zone"),
        ({"mature_test": "no"}, "The 'mature_test' of TrainConfig must be True or False. Got 'no'."),
        (
            {"params": {"num_leaves": 3}},
            "The 'params' of TrainConfig must map a model kind to its parameters",
        ),
        ({"params": {"xgb": {}}}, "Unknown model kind 'xgb'. Expected one of"),
    ],
)
def test_a_train_config_field_of_the_wrong_type_is_refused(fields: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError) as e:
        TrainConfig(**fields)
    assert str(e.value).startswith(said), e.value
    assert TrainConfig(as_of=datetime(2026, 2, 1, tzinfo=UTC), mature_test=False).mature_test is False


def test_train_names_an_argument_of_the_wrong_type(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    with pytest.raises(
        ConfigError, match=r"train's 'task' must be what payfm.training.tasks.task\('fraud'\) gives"
    ):
        train(ws, "gbdt", "fraud", tiny_set())  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=r"The 'ws' of train must be what Workspace.open\(path\) gives. Got the str"
    ):
        train(str(tmp_path), "gbdt", task("fraud"), tiny_set())  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=r"train's 'config' must be what TrainConfig\(horizon_days=60\) gives"
    ):
        train(ws, "gbdt", task("fraud"), tiny_set(), {"trials": 2})  # type: ignore[arg-type]
