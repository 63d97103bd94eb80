"""The backfill's Spark plan against the columnar engine, and `payfm features backfill --engine spark`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.features.catalog import bench_set, default_set
from payfm.features.definitions import Aggregate, FeatureSet
from payfm.features.offline import backfill, compute
from streams import connect, random_log
from test_features_backfill import EVERY_KIND, _mismatches

D = timedelta(days=1)
# pyspark warns of pandas 3 when it turns Arrow tables into DataFrames (the tests' inputs, not payfm's path).
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")

# What EVERY_KIND leaves out: the last outcome of an instant (by id), outcomes' distinct counts, windowed min.
OUTCOME_KINDS = FeatureSet(
    "outcome_kinds",
    (
        Aggregate("card", "last", "amount_usd", source="refunds"),
        Aggregate("merchant", "distinct", "card_fingerprint", source="refunds"),
        Aggregate("device", "min", "amount_usd", source="fraud_disputes", window=2 * D, offset=D),
        Aggregate("customer", "since_prev", source="efws"),
    ),
)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """A local Spark session (2 cores), else skip (fail under PAYFM_REQUIRE_SERVICES, as CI sets)."""
    missing = None
    try:
        import pyspark  # noqa: F401
    except ImportError:
        missing = "PySpark is not installed (pip install -e '.[dev]' installs it)"
    if missing is None and shutil.which("java") is None:
        missing = "Java 17+ is not on PATH (Spark runs on a JVM)"
    if missing:
        if os.environ.get("PAYFM_REQUIRE_SERVICES"):
            pytest.fail(f"Spark is required (PAYFM_REQUIRE_SERVICES): {missing}")
        pytest.skip(missing)
    from payfm.features.offline_spark import session

    yield session("local[2]", "2g")


def _plan(spark: Any, log: dict[str, Any], fset: FeatureSet) -> Any:
    from payfm.features.offline_spark import plan

    tables = {name: spark.createDataFrame(table) for name, table in log.items()}
    want = compute(connect(log), fset)
    got = plan(tables, fset).orderBy("created", "charge_id").toArrow()
    return got.cast(want.schema), want


@pytest.mark.parametrize(
    ("seed", "sets"),
    [(0, (EVERY_KIND, OUTCOME_KINDS, default_set())), (2, (EVERY_KIND, OUTCOME_KINDS))],
)
def test_spark_plan_equals_the_columnar_engine(spark: Any, seed: int, sets: tuple[FeatureSet, ...]) -> None:
    """Every aggregate kind, window, offset, filter and outcome source, with null keys, equal timestamps and
    outcomes at a charge's instant (random_log): the same values, missing where the others' are."""
    log = random_log(seed, 1500, n_keys=6 + 30 * seed)
    for fset in sets:
        got, want = _plan(spark, log, fset)
        assert got["created"].equals(want["created"]), fset.name
        assert _mismatches(got, want, fset.names) == {}, fset.name


def test_workspace_backfill_on_spark_writes_the_columnar_file(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from payfm.cli.main import cli

    ws = Workspace.open(tmp_path / "ws[1]", create=True)  # (Spark reads it as a name, not a glob pattern)
    ws.write_stream(iter(random_log(4, 1000, n_keys=20).items()), "replace")
    fset = bench_set()  # (the default set's values: test_spark_plan_equals_the_columnar_engine)
    path, _ = backfill(ws, fset)
    want = pq.read_table(path)
    path.unlink()
    args = ["-w", str(ws.root), "features", "backfill", "--set", "bench15", "--engine", "spark"]
    result = CliRunner().invoke(cli, [*args, "--spark-master", "local[2]"])
    assert result.exit_code == 0, result.output
    assert "Backfilled 15 features x 1,000 charges" in result.output
    got = pq.read_table(path)
    assert got.schema == want.schema and got.schema.metadata == want.schema.metadata
    assert _mismatches(got, want, fset.names) == {}
    assert not any(p.name.endswith(".tmp") for p in path.parent.iterdir())
    # in chunks: the rows in order across Spark's part files and the chunk boundaries; in a temporary folder
    # whose name would be a glob pattern
    path.unlink()
    (tmp_path / "tmp[1]").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp[1]"))
    backfill(ws, fset, engine="spark", chunk_rows=170)
    assert pq.read_table(path).equals(got)
    assert not list((tmp_path / "tmp[1]").iterdir())  # (Spark's parts removed with the backfill's folder)


def test_a_failed_spark_job_is_one_line(
    spark: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from payfm.features.offline_spark import failure, plan

    log = random_log(1, 50)
    tables = {name: spark.createDataFrame(table) for name, table in log.items()}
    tables["charges"] = tables["charges"].drop("card_fingerprint")
    with pytest.raises(Exception) as info:
        plan(tables, EVERY_KIND).count()
    said = failure(info.value)
    assert said is not None and "\n" not in str(said)
    assert str(said).startswith("The Spark backfill failed: ") and "card_fingerprint" in str(said)
    assert failure(ValueError("not Spark's")) is None
    # an error PySpark does not translate ("An error occurred while calling o43.parquet."): its Java cause
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(iter(random_log(4, 300).items()), "replace")
    broken = ws.files("charges")[0]
    # a footer that is not one, between Parquet's magic bytes (payfm's own check of the files passes it)
    broken.write_bytes(broken.read_bytes()[:200] + b"\x10\x00\x00\x00PAR1")
    with pytest.raises(ConfigError) as err:
        backfill(ws, bench_set(), engine="spark")
    assert "\n" not in str(err.value) and "An error occurred while calling" not in str(err.value)
    assert str(err.value).startswith("The Spark backfill failed: ")
    assert broken.name in str(err.value) and "footer" in str(err.value)
    assert not list((ws.root / "features").glob("*.parquet"))
    from payfm.training.labels_spark import workspace_labels

    with pytest.raises(ConfigError) as err:  # a failure of the labels' plan is said as the labels'
        workspace_labels(ws)
    assert str(err.value).startswith("The Spark labels job failed: ") and broken.name in str(err.value)
    # From the command line (a JVM of its own, started with payfm's log configuration): the JVM logs the
    # failure a line an error, with no Java stack trace, and payfm's one-line error comes last.
    command = ["features", "backfill", "--set", "bench15", "--engine", "spark", "--spark-master", "local[1]"]
    done = subprocess.run(
        [sys.executable, "-c", "from payfm.cli.main import main; main()", "-w", str(ws.root), *command],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "SPARK_CONF_DIR"},
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "spark: ERROR Executor: Exception in task" in done.stderr, done.stderr[-2000:]
    assert "\tat org.apache" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: The Spark backfill failed: ") and broken.name in last


def test_spark_options_are_refused_where_they_do_not_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from payfm.cli.main import cli

    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(iter(random_log(4, 100).items()), "replace")
    args = ["-w", str(ws.root), "features", "backfill", "--spark-master", "local[2]"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert "--spark-master applies to --engine spark only (the engine is columnar)" in result.output
    args = ["-w", str(ws.root), "features", "training-set", "--engine", "duckdb", "--spark-master", "yarn"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "applies to --engine spark only (the engine is duckdb)" in result.output
    result = CliRunner().invoke(cli, ["-w", str(ws.root), "features", "training-set", "--memory-limit", "6"])
    assert result.exit_code == 1 and "--memory-limit: expected a size such as 4GB" in result.output
    with pytest.raises(ValueError, match="backfills a workspace"):
        compute(connect(random_log(4, 100)), EVERY_KIND, engine="spark")
    with pytest.raises(ConfigError, match="must be one of columnar, duckdb, spark"):
        backfill(ws, EVERY_KIND, engine="flink")  # type: ignore[arg-type]
    # a master Spark does not take: refused before the JVM starts (it printed the launcher's Java stack
    # trace, then a gateway error telling to install PySpark and Java, both there)
    for master in ("bogus://x", "local[0]", "spark://", "local[2"):
        args = ["-w", str(ws.root), "features", "backfill", "--engine", "spark", "--spark-master", master]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and result.output == (
            "Error: --spark-master must be a Spark master URL: local, local[N], local[*], spark://HOST:PORT, "
            f"yarn or k8s://HOST:PORT. Got {master!r}.\n"
        ), result.output
        with pytest.raises(ConfigError, match="--spark-master must be a Spark master URL"):
            backfill(ws, EVERY_KIND, engine="spark", spark_master=master)
    # without PySpark: how to install it, before any work
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(ConfigError, match=r"pip install 'payfm\[spark\]'"):
        backfill(ws, EVERY_KIND, engine="spark")
    assert not list((ws.root / "features").glob("*.parquet"))


def _reviews(charges: Any, picks: list[tuple[int, float, str]]) -> Any:
    """A reviews table closing charge ``i`` (in the table's order) ``days`` after it, as ``closed_as``."""
    import pyarrow as pa

    from payfm.events.schema import SCHEMAS

    rows = []
    for i, days, closed_as in picks:
        created = charges["created"][i].as_py()
        rows.append(
            {
                "charge_id": charges["charge_id"][i].as_py(),
                "created": created + timedelta(days=days),
                "opened": created,
                "closed_as": closed_as,
            }
        )
    return pa.Table.from_pylist(rows, schema=SCHEMAS["reviews"])


def test_spark_labels_and_training_set_equal_the_one_machine_ones(spark: Any, tmp_path: Path) -> None:
    """Fraud labels from disputes, EFWs and reviews (in and beyond the horizon, as of the log's end and of an
    earlier time) and the training set of a workspace: the same rows as payfm.training.labels and
    build_training_set."""
    from payfm.cli.main import cli
    from payfm.features.offline_spark import read_workspace
    from payfm.features.training_set import build_training_set
    from payfm.training.labels import fraud_labels
    from payfm.training.labels_spark import fraud_labels as spark_labels
    from payfm.training.labels_spark import training_set

    log = random_log(3, 800, n_keys=12)
    picks = [
        (5, 2.0, "refunded_as_fraud"),
        (9, 50.0, "refunded_as_fraud"),
        (12, 1.0, "approved"),
        (700, 0.5, "disputed"),
    ]
    log["reviews"] = _reviews(log["charges"], picks)
    tables = {name: spark.createDataFrame(table) for name, table in log.items()}
    mid = log["charges"]["created"][400].as_py()
    cols = ["charge_id", "created", "is_fraud", "label_time", "mature"]
    late = log["charges"]["charge_id"][9].as_py()  # closed as fraud 50 days after the charge
    frauds = {}
    for as_of, horizon in [(None, timedelta(days=120)), (mid, timedelta(days=5)), (mid, timedelta(hours=1))]:
        want = fraud_labels(connect(log), as_of, horizon)
        got = spark_labels(tables, as_of, horizon).orderBy("created", "charge_id").toArrow()
        assert got.num_rows == want.num_rows == 800
        for c in cols:
            assert got[c].to_pylist() == want[c].to_pylist(), (as_of, horizon, c)
        pairs = zip(got["charge_id"].to_pylist(), got["is_fraud"].to_pylist(), strict=True)
        frauds[horizon] = {charge for charge, y in pairs if y}
    assert late in frauds[timedelta(days=120)] and late not in frauds[timedelta(days=5)]
    assert len(frauds[timedelta(days=120)]) > len(frauds[timedelta(days=5)]) > 0

    ws = Workspace.open(tmp_path / "ws{a,b}", create=True)
    wlog = random_log(4, 600, n_keys=20)
    wlog["reviews"] = _reviews(wlog["charges"], [(3, 1.0, "refunded_as_fraud"), (30, 0.2, "approved")])
    ws.write_stream(iter(wlog.items()), "replace")
    fset = bench_set()
    _, want_set = build_training_set(ws, fset, horizon=timedelta(days=10))
    reviewed = wlog["charges"]["charge_id"][3].as_py()
    fraud = dict(zip(want_set["charge_id"].to_pylist(), want_set["is_fraud"].to_pylist(), strict=True))
    assert fraud[reviewed] == 1  # (the review's fraud)
    # The command line's Spark engine: the labels computed by Spark over the workspace (its reviews
    # included), joined with the backfill, are the same file.
    out = tmp_path / "spark.training.parquet"
    args = ["features", "training-set", "--set", "bench15", "--horizon-days", "10", "--engine", "spark"]
    done = CliRunner().invoke(cli, ["-w", str(ws.root), *args, "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert pq.read_table(out).equals(want_set)
    got_set = training_set(read_workspace(spark, ws, ("reviews",)), fset, horizon=timedelta(days=10))
    got_set = got_set.orderBy("created", "charge_id").toArrow()
    assert got_set.column_names == want_set.column_names
    assert _mismatches(got_set, want_set, fset.names) == {}
    for c in ("is_fraud", "label_time", "mature", "scenario"):
        assert got_set[c].to_pylist() == want_set[c].to_pylist(), c


def test_spark_labels_refuse_what_the_one_machine_ones_refuse(spark: Any) -> None:
    from datetime import datetime

    from payfm.training.labels_spark import fraud_labels as spark_labels

    tables = {name: spark.createDataFrame(table) for name, table in random_log(1, 20).items()}
    with pytest.raises(ConfigError, match="timezone-aware"):
        spark_labels(tables, datetime(2026, 1, 1))
    with pytest.raises(ConfigError, match="must be positive"):
        spark_labels(tables, None, timedelta(0))
    with pytest.raises(ConfigError, match=r"Missing: \['early_fraud_warnings'\]"):
        spark_labels({k: v for k, v in tables.items() if k != "early_fraud_warnings"})
