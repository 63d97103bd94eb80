"""Inputs a fuzzer found raising a traceback instead of a user error (each a ConfigError/ValidationError
naming what was expected, the workspace untouched)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from payfm.errors import ConfigError, WorkspaceError
from payfm.events.importer import import_file
from payfm.events.mapping import load_mapping
from payfm.events.workspace import Workspace
from payfm.synth import WorldConfig
from test_import import MAPPING, ROWS, SAMPLE, failed_import, write_csv, write_mapping


def test_a_gzip_file_with_corrupt_data_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + b"garbage" * 10)  # a gzip header, then no deflate stream
    text = failed_import(tmp_path, bad, write_mapping(tmp_path), ConfigError)
    assert "bad.csv.gz" in text and "expected a readable file" in text and "decompressing" in text


@pytest.mark.parametrize("value", [2**62, 2**64 - 1])
def test_an_integer_amount_beyond_2_to_the_53_is_a_bound_problem(tmp_path: Path, value: int) -> None:
    table = pq.read_table(SAMPLE)
    kind = pa.uint64() if value >= 2**63 else pa.int64()
    amounts = pa.array([value] + [1] * (table.num_rows - 1), kind)
    path = tmp_path / "big.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("amt"), "amt", amounts), path)
    text = failed_import(tmp_path, path, Path("sparkov"))
    assert "row 1, column 'amt' (amount): expected a value from 0 to 999,999,999,999" in text


def test_a_delay_beyond_what_a_duration_holds_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    mapping = write_mapping(tmp_path).read_text()
    path.write_text(mapping.replace("delay: 12h", "delay: 99999999999d", 1))
    with pytest.raises(ConfigError, match=r"'labels\[0\]\.delay': expected a duration .* at most 3650d"):
        load_mapping(path)


def test_yaml_nested_too_deeply_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("description: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(
        ConfigError, match=r"deep\.yaml: expected valid YAML; received values nested too deeply"
    ):
        load_mapping(path)


def test_a_world_of_more_charges_than_the_maximum_is_refused() -> None:
    with pytest.raises(ValueError, match="must be at most 1,000,000,000"):
        WorldConfig(charges=10**20)


def test_a_workspace_that_cannot_be_made_is_a_workspace_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(WorkspaceError, match=r"Cannot create the workspace .*afile/ws': Not a directory"):
        Workspace.open(tmp_path / "afile" / "ws", create=True)
    with pytest.raises(WorkspaceError, match="File name too long"):
        Workspace.open(tmp_path / ("a" * 300), create=True)


def test_a_nan_in_a_parquet_float_label_is_a_problem_not_a_silent_no(tmp_path: Path) -> None:
    table = pq.read_table(SAMPLE)
    labels = table.column("is_fraud").cast(pa.float64()).to_pylist()
    labels[0] = float("nan")
    path = tmp_path / "nan.parquet"
    at = table.schema.get_field_index("is_fraud")
    pq.write_table(table.set_column(at, "is_fraud", pa.array(labels, pa.float64())), path)
    text = failed_import(tmp_path, path, Path("sparkov"))
    assert "row 1, column 'is_fraud': expected a number, a boolean or an empty cell for 'labels[0]'" in text
    assert "received nan" in text


@pytest.mark.parametrize("scale", [".nan", ".inf"])
def test_a_scale_that_is_not_a_finite_number_is_a_mapping_error(tmp_path: Path, scale: str) -> None:
    path = tmp_path / "m.yaml"
    text = write_mapping(tmp_path).read_text()
    old = "    minor_units:\n      column: cur\n"
    assert old in text
    path.write_text(text.replace(old, f"    scale: {scale}\n", 1))
    with pytest.raises(ConfigError, match=r"\.scale': expected a positive number"):
        load_mapping(path)


def test_a_value_of_megabytes_is_read_with_larger_blocks_and_one_past_the_largest_is_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value longer than Arrow's 1 MiB CSV block (a gateway's raw JSON in a column the mapping drops) was
    refused, its message naming a wrong limit (an import review); Arrow's own said 'try to increase block
    size?', a size no user can set."""
    from payfm.events import import_csv

    rows = {**ROWS, "note": ["ok", "x" * 3_000_000, "ok", "ok"]}
    mapping = write_mapping(tmp_path, {**MAPPING, "drop": ["email", "note"]})
    ws = Workspace.open(tmp_path / "ok", create=True)
    assert import_file(ws, write_csv(tmp_path, rows), mapping).rows["charges"] == 4
    monkeypatch.setattr(import_csv, "BLOCK_SIZES", (1 << 20,))  # (a 3 MB line fits in no two of them)
    text = failed_import(tmp_path, write_csv(tmp_path, rows, name="b.csv"), mapping, ConfigError)
    assert "expected lines Arrow's largest CSV block (1 MiB) holds; received a longer one" in text
    assert "block size?" not in text


def test_a_nested_parquet_column_the_mapping_reads_is_a_problem_naming_it(tmp_path: Path) -> None:
    """A list<string> column read through `map` raised Arrow's cast error (a fuzzer's audit)."""
    table = pq.read_table(SAMPLE)
    at = table.schema.get_field_index("category")
    lists = pa.array([[c] for c in table.column("category").to_pylist()], pa.list_(pa.string()))
    path = tmp_path / "nested.parquet"
    pq.write_table(table.set_column(at, "category", lists), path)
    text = failed_import(tmp_path, path, Path("sparkov"))
    assert (
        "column 'category': expected text, numbers, booleans or times (a nested column cannot be mapped)"
        in text
    )
    assert "received a list<element: string>" in text
