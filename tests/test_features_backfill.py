"""The columnar backfill engine against the relational (DuckDB) plan, its exact sums, its output file."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from payfm.events.workspace import Workspace
from payfm.features.catalog import bench_set, default_set
from payfm.features.definitions import Aggregate, Derived, FeatureSet, RequestFeature
from payfm.features.offline import _narrow, backfill, compute, compute_chunks, isclose
from payfm.features.offline_columnar import _range_max
from streams import connect, random_log

H, D = timedelta(hours=1), timedelta(days=1)

# Every aggregate kind over charges (windows, offsets, filters, all-time) and outcomes, including the outcome
# aggregates the columnar engine leaves to SQL (min/max/last/times of outcomes).
EVERY_KIND = FeatureSet(
    "every_kind",
    (
        Aggregate("card", "count", window=timedelta(minutes=5)),
        Aggregate("card", "count", window=H, filter="declined"),
        Aggregate("card", "sum", "amount_usd", window=2 * H, offset=H),
        Aggregate("card_ip", "mean", "amount_usd", window=D, filter="card_present"),
        Aggregate("ip", "std", "amount_usd", window=3 * D),
        Aggregate("device", "std", "amount_usd"),
        Aggregate("merchant", "min", "amount_usd", window=D),
        Aggregate("merchant", "max", "amount_usd", window=D, offset=H, filter="declined"),
        Aggregate("card", "max", "amount_usd", window=timedelta(minutes=30), offset=timedelta(minutes=10)),
        Aggregate("customer", "min", "amount_usd"),
        Aggregate("card", "distinct", "ip_address", window=7 * D),
        Aggregate("card", "distinct", "device_id", window=H, filter="declined"),
        Aggregate("merchant", "distinct", "customer_id"),
        Aggregate("email", "distinct", "card_fingerprint", filter="ecommerce"),
        Aggregate("card", "last", "amount_usd"),
        Aggregate("card", "last", "amount_usd", filter="declined"),
        Aggregate("customer", "since_prev"),
        Aggregate("customer", "since_first", filter="cvc_fail"),
        Aggregate("card_merchant", "first_seen"),
        Aggregate("ip", "first_seen", filter="blocked"),
        Aggregate("card", "count", source="fraud_disputes"),
        Aggregate("merchant", "count", source="efws", window=7 * D),
        Aggregate("device", "count", source="refunds", window=2 * D, offset=D),
        Aggregate("ip", "sum", "amount_usd", source="refunds"),
        Aggregate("card", "mean", "amount_usd", source="fraud_disputes", filter="card_present"),
        Aggregate("merchant", "std", "amount_usd", source="refunds", window=30 * D),
        Aggregate("card", "first_seen", source="efws"),
        Aggregate("card", "max", "amount_usd", source="efws"),
        Aggregate("customer", "since_first", source="refunds"),
        RequestFeature("amount_usd", "amount_usd"),
        Derived("card.declined_share_1h", "ratio", ("card.count_declined_1h", "card.count_charges_5m")),
    ),
)


def _mismatches(a: pa.Table, b: pa.Table, names: list[str]) -> dict[str, int]:
    assert a["charge_id"].equals(b["charge_id"])
    out = {}
    for name in names:
        x, y = a[name].to_pylist(), b[name].to_pylist()
        bad = sum(not isclose(u, v) for u, v in zip(x, y, strict=True))
        if bad:
            out[name] = bad
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_columnar_engine_equals_the_relational_plan(seed: int) -> None:
    log = random_log(seed, 2000, n_keys=6 + 30 * seed)
    for fset in (EVERY_KIND, default_set(), bench_set()):
        columnar = compute(connect(log), fset)
        relational = compute(connect(log), fset, engine="duckdb")
        assert _mismatches(columnar, relational, fset.names) == {}, fset.name


def test_the_comparison_sees_a_wrong_value() -> None:
    log = random_log(5, 400)
    good = compute(connect(log), EVERY_KIND)
    name = "card.distinct_ip_address_7d"
    values = good[name].to_pylist()
    values[123] = (values[123] or 0.0) + 1.0
    bad = good.set_column(good.column_names.index(name), name, pa.array(values, pa.float64()))
    assert _mismatches(good, bad, EVERY_KIND.names) == {name: 1}


def test_sums_beyond_int64_stay_exact() -> None:
    """Amounts near 2^40 cents: squares overflow int64, so sums of squares switch to Python integers."""
    log = random_log(3, 300, n_keys=2)
    big = pc.add(log["charges"]["amount_usd"], pa.scalar(2**40, pa.int64()))
    log["charges"] = log["charges"].set_column(
        log["charges"].column_names.index("amount_usd"), "amount_usd", big
    )
    fset = FeatureSet(
        "big",
        (
            Aggregate("card", "std", "amount_usd"),
            Aggregate("card", "mean", "amount_usd", window=D),
            Aggregate("card", "sum", "amount_usd"),
        ),
    )
    got = compute(connect(log), fset)
    assert _mismatches(got, compute(connect(log), fset, engine="duckdb"), fset.names) == {}
    # and against Python integers, charge by charge
    charges = log["charges"].sort_by([("created", "ascending"), ("charge_id", "ascending")]).to_pylist()
    seen: dict[str, list[int]] = {}
    stds = got["card.std_amount_usd_all"].to_pylist()
    for row, std in zip(charges, stds, strict=True):
        xs = seen.setdefault(row["card_fingerprint"], [])
        c, s, q = len(xs), sum(xs), sum(x * x for x in xs)
        want = math.sqrt(float(c * q - s * s) / float(c * (c - 1))) / 100.0 if c > 1 else None
        assert isclose(std, want)
        xs.append(row["amount_usd"])


def test_range_max_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    v = rng.integers(-50, 50, 300).astype(np.float64)
    v[rng.random(300) < 0.2] = -np.inf
    lo = rng.integers(0, 300, 2000)
    hi = np.minimum(lo + rng.integers(0, 120, 2000), 300)
    got = _range_max(v, lo, hi)
    want = [v[a:b].max() if b > a else -np.inf for a, b in zip(lo, hi, strict=True)]
    assert np.array_equal(got, np.array(want))


def test_narrow_keeps_integers_and_missing() -> None:
    for top, dtype in ((254.0, np.uint8), (255.0, np.uint16), (70_000.0, np.uint32), (5e9, np.float64)):
        values = np.array([0.0, np.nan, top, 3.0])
        narrow = _narrow(values)
        assert narrow.dtype == dtype
        back = narrow.astype(np.float64)
        if dtype != np.float64:
            back[narrow == np.iinfo(dtype).max] = np.nan
        assert np.array_equal(back, values, equal_nan=True)


def test_chunks_spilled_to_files_equal_the_in_memory_table(tmp_path: Path) -> None:
    log = random_log(6, 1500)
    fset = default_set()
    whole = compute(connect(log), fset)
    chunks = list(compute_chunks(connect(log), fset, chunk_rows=400, spill_dir=tmp_path, memory_bytes=0))
    assert [c.num_rows for c in chunks] == [400, 400, 400, 300]
    assert pa.concat_tables(chunks).equals(whole)
    assert list(tmp_path.iterdir()) == []  # the column files are removed


def test_backfill_file(tmp_path: Path) -> None:
    log = random_log(8, 1200)
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(iter(log.items()), "replace")
    fset = default_set()
    path, rows = backfill(ws, fset, chunk_rows=500)
    table = pq.read_table(path)
    assert rows == table.num_rows == 1200
    assert table.schema.field("created").type == pa.timestamp("us", tz="UTC")
    assert all(table.schema.field(n).type == pa.float64() for n in fset.names)
    assert table.schema.metadata[b"payfm.version"] == fset.version.encode()
    want = compute(ws.connect(), fset)
    assert _mismatches(table, want, fset.names) == {}
    assert not any(p.name.endswith(".tmp") for p in path.parent.iterdir())


def test_a_backfill_older_than_the_event_log_is_computed_again(tmp_path: Path) -> None:
    from payfm.errors import ConfigError
    from payfm.features.training_set import load_backfill

    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(iter(random_log(8, 1200).items()), "replace")
    fset = default_set()
    path, _ = backfill(ws, fset)
    written = path.stat().st_mtime_ns
    assert load_backfill(ws, fset).num_rows == 1200 and path.stat().st_mtime_ns == written  # current: read
    ws.write_stream(iter(random_log(9, 700).items()), "replace")  # a new world under the same charge ids
    table = load_backfill(ws, fset)
    assert table.num_rows == 700 and path.stat().st_mtime_ns != written
    assert _mismatches(table, compute(ws.connect(), fset), fset.names) == {}
    with pytest.raises(ConfigError, match="--memory-limit"):  # pasted into DuckDB's SET: checked first
        backfill(ws, fset, memory_limit="1GB'; COPY (SELECT 42) TO 'x.csv'; SET memory_limit='1GB")


def test_a_backfill_stopped_by_sigterm_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kill` (SIGTERM) unwinds like Ctrl-C: the spill folder and the partial Parquet file go; what a
    process killed outright left (its pid gone) is swept by the next backfill, another live one's is not."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    from payfm.synth import WorldConfig, generate_world

    ws = Workspace.open(tmp_path / "ws", create=True)
    # A world whose backfill takes seconds, so the signal lands while it runs: on 20,000 charges (~0.5 s) a
    # busy CI machine once delivered it after the backfill had finished (exit 0).
    ws.write_stream(generate_world(WorldConfig(charges=120_000, days=20, seed=1)), "replace")
    temp = tmp_path / "temp"
    temp.mkdir()
    cmd = [sys.executable, "-c", "from payfm.cli.main import main; main()", "-w", str(ws.root)]
    cmd += ["features", "backfill", "--engine", "duckdb"]
    proc = subprocess.Popen(cmd, env={**os.environ, "TMPDIR": str(temp)}, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(temp.glob(f"payfm-spill-{proc.pid}-*")):  # the backfill has begun
        assert proc.poll() is None and time.monotonic() < deadline, "the backfill did not start"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM  # interrupted, not finished
    assert not list(temp.glob("payfm-spill-*"))
    assert not list((ws.root / "features").glob(".*.tmp"))
    assert not list((ws.root / "features").glob("*.parquet"))
    # strays of a writer killed outright (a pid that no longer exists) and of a live one (this process)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    gone = int(dead.stdout)
    stray = ws.root / "features" / f".tiny-x.parquet.{gone}.1.tmp"
    live = ws.root / "features" / f".tiny-x.parquet.{os.getpid()}.1.tmp"
    for p in (stray, live):
        p.write_bytes(b"partial")
    (temp / f"payfm-spill-{gone}-abc").mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    backfill(ws, bench_set())
    assert not stray.exists() and live.exists()
    assert not list(temp.glob("payfm-spill-*"))


def test_a_backfill_out_of_duckdb_memory_names_the_limit_and_leaves_nothing(tmp_path: Path) -> None:
    from payfm.errors import ConfigError

    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(iter(random_log(8, 20_000).items()), "replace")
    said = r"ran out of memory under --memory-limit 2MB \(.*larger --memory-limit"
    with pytest.raises(ConfigError, match=said):
        backfill(ws, default_set(), memory_limit="2MB", engine="duckdb")
    assert list((ws.root / "features").iterdir()) == []
