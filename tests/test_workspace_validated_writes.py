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


def test_an_outcome_at_or_before_its_charge_is_refused(
    tmp_path: Path, world: list[tuple[str, pa.Table]]
) -> None:
    """A feature-platform audit: an EFW written at its charge's own instant counted in that charge's own
    features (its label) in the backfill; an import and the decision service refuse it, Python writes now
    too, whether the charge is held already or written by the same transaction."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    charges = next(b for n, b in world if n == "charges").slice(0, 5)
    ws.write_stream([("charges", charges)])
    first = charges.to_pylist()[0]
    efw = {
        "efw_id": "efw_x",
        "charge_id": first["charge_id"],
        "created": first["created"],
        "fraud_type": "misc",
    }
    with pytest.raises(
        ValidationError, match=r"row 1, column 'created': expected a time later than its charge's"
    ):
        ws.write_stream([("early_fraud_warnings", pa.Table.from_pylist([efw]))])
    later = charges.to_pylist()[1] | {"charge_id": "ch_new"}
    refund = {
        "refund_id": "re_x",
        "charge_id": "ch_new",
        "created": charges.to_pylist()[0]["created"],  # before ch_new, written in the same transaction
        "amount": 1,
        "currency": later["currency"],
        "reason": "requested_by_customer",
    }
    with pytest.raises(ValidationError, match="expected a time later than its charge's"), ws.writer() as w:
        w.write("charges", pa.Table.from_pylist([later], schema=charges.schema))
        w.write("refunds", pa.Table.from_pylist([refund]))
    assert ws.count("charges") == 5 and ws.count("refunds") == 0 and ws.count("early_fraud_warnings") == 0
    from datetime import timedelta

    ws.write_stream(
        [
            (
                "early_fraud_warnings",
                pa.Table.from_pylist([efw | {"created": first["created"] + timedelta(seconds=1)}]),
            )
        ]
    )
    assert ws.count("early_fraud_warnings") == 1  # a moment later: taken
