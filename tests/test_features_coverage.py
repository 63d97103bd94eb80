"""`features backfill` names the features an export leaves missing or constant (an ML engineer importing
Sparkov found 96 of 158 features carrying nothing, with no word about it)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.features.coverage import uninformative

SAMPLE = Path(__file__).parent / "data" / "sparkov_sample.parquet"


def test_backfill_of_an_import_names_the_features_it_cannot_fill(tmp_path: Path) -> None:
    def run(*args: str) -> str:
        r = CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), *args])
        assert r.exit_code == 0, r.output
        return " ".join(r.output.split())

    run("import", str(SAMPLE), "--mapping", "sparkov")
    said = run("features", "backfill")
    assert "warning: 58 missing on every charge (device.* (21), ip.* (19), email.* (12)" in said, said
    assert "of 158 features: the log fills no field they read" in said


def test_missing_and_constant_are_told_apart_from_features_that_vary(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    columns = {
        "a.count": [1.0, 2.0, None],  # varies (a null on some rows is no matter)
        "a.none": [None, None, None],
        "b.flag": [0.0, 0.0, None],  # one value wherever it has one
        "b.amount": [3.0, 3.0, 3.5],
    }
    pq.write_table(pa.table({k: pa.array(v, pa.float64()) for k, v in columns.items()}), path)
    got = uninformative(path, list(columns))
    assert (got.missing, got.constant) == (("a.none",), ("b.flag",))
    assert got.said(4) == (
        "1 missing on every charge (a.* (1)) and 1 constant (b.* (1)), of 4 features: the log fills no field "
        "they read, or one value of it, so a model learns nothing from them"
    )
    assert uninformative(path, ["a.count", "b.amount"]).said(2) is None
