"""The library's write path checks what it writes, as an import does: `ws.write_stream` and `ws.writer()`
stored a card number in `merchant_id`, a negative amount and duplicate ids (only the schema was checked),
so "no card number at rest" held only for callers who validated first. payfm's own writers, whose data is
checked already, opt out; the generator's output is checked here instead."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from payfm.errors import ConfigError
from payfm.events.validate import ValidationError, validate_events
from payfm.events.workspace import Workspace
from payfm.synth import WorldConfig, generate_world


@pytest.fixture(scope="module")
def world() -> list[tuple[str, pa.Table]]:
    return list(generate_world(WorldConfig(charges=20_000, days=10, seed=3)))


def test_every_batch_the_generator_writes_passes_the_import_checks(world: list[tuple[str, pa.Table]]) -> None:
    """`payfm generate` writes unchecked (validate=False): the generator's every table must pass."""
    tables = {name for name, _ in world}
    assert {"charges", "disputes", "early_fraud_warnings", "refunds"} <= tables
    for name, batch in world:
        validate_events(name, batch)


def test_write_stream_refuses_bad_rows_naming_them_and_writes_nothing(
    tmp_path: Path, world: list[tuple[str, pa.Table]]
) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    assert ws.write_stream(world, mode="replace")["charges"] > 0  # (the README's call, validated)
    before = ws.count("charges")
    charges = next(b for n, b in world if n == "charges").slice(0, 3)
    bad = charges.set_column(
        charges.schema.get_field_index("merchant_id"), "merchant_id", pa.array(["4242424242424242"] * 3)
    )
    with pytest.raises(ValidationError) as e:
        ws.write_stream([("charges", bad)])
    text = str(e.value)
    assert "data written to 'charges'" in text and "merchant_id" in text and "4242424242424242" not in text
    amounts = charges.set_column(charges.schema.get_field_index("amount"), "amount", pa.array([-5, 1, 2]))
    with pytest.raises(ValidationError, match="amount"), ws.writer() as w:
        w.write("charges", amounts)
    assert ws.count("charges") == before


def test_a_table_that_is_not_arrow_or_a_wrong_mode_is_a_clear_error(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    with pytest.raises(ConfigError, match=r"must be a pyarrow Table\. Got a dict\."):
        ws.write_stream([("charges", {"charge_id": ["ch_1"]})])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=r"must be 'append' or 'replace'\. Got 'upsert'\."):
        ws.write_stream([], mode="upsert")  # type: ignore[arg-type]


def test_an_unvalidated_writer_still_refuses_another_schema(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    with (
        pytest.raises(ConfigError, match="must have the schema of 'refunds'"),
        ws.writer(validate=False) as w,
    ):
        w.write("refunds", pa.table({"refund_id": ["re_1"]}))
