"""`payfm sql`: read-only, one SELECT, nothing outside the workspace's data files."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from factories import charges
from payfm.cli.main import cli
from payfm.events.query import QueryError, run_sql, sql_batches
from payfm.events.workspace import Workspace


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    ws = Workspace.open(tmp_path / "ws", create=True)
    with ws.writer() as w:
        w.write("charges", charges(9))
    ws.secret()
    return ws


def test_select_over_the_tables(ws: Workspace) -> None:
    out = run_sql(ws, "SELECT merchant_id, count(*) AS n FROM charges GROUP BY 1 ORDER BY 1")
    assert out.to_pylist() == [{"merchant_id": f"mer_{i}", "n": 3} for i in range(3)]
    assert run_sql(ws, "SELECT count(*) AS n FROM disputes").to_pylist() == [{"n": 0}]


def test_select_star_has_exactly_the_schema_columns(ws: Workspace) -> None:
    from payfm.events.schema import CHARGES

    # not the partition directory's `day`, which the scoring API would refuse in a row piped to it
    assert run_sql(ws, "SELECT * FROM charges").column_names == CHARGES.names


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("DELETE FROM charges", "DELETE"),
        ("INSERT INTO disputes SELECT * FROM disputes", "INSERT"),
        ("CREATE TABLE x AS SELECT 1", "CREATE"),
        ("DROP VIEW charges", "DROP"),
        ("COPY charges TO 'out.csv'", "COPY"),
        ("ATTACH 'other.db'", "ATTACH"),
        ("SET enable_external_access = true", "SET"),
        ("INSTALL httpfs", "INSTALL"),  # DuckDB's statement type is LOAD: the message names the keyword
        ("/* hi */ CREATE TABLE z (a INT)", "CREATE"),  # (a fuzzer's audit: it said 'a /* statement')
        ("-- note\nDROP VIEW charges", "DROP"),
        ("WITH x AS (SELECT 1) INSERT INTO disputes SELECT * FROM disputes", "INSERT"),  # (said WITH)
    ],
)
def test_writes_and_settings_are_refused(ws: Workspace, sql: str, kind: str) -> None:
    with pytest.raises(QueryError, match=f"read-only.*Got an? {kind} statement"):
        run_sql(ws, sql)


def test_copy_into_the_workspace_writes_nothing(ws: Workspace) -> None:
    before = sorted(p.name for p in ws.root.rglob("*"))
    with pytest.raises(QueryError):
        run_sql(ws, f"COPY charges TO '{ws.root / 'charges' / 'evil.parquet'}'")
    assert sorted(p.name for p in ws.root.rglob("*")) == before


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('{root}/secret.key')",
        "SELECT * FROM glob('{root}/*')",
    ],
)
def test_reads_outside_the_data_files_are_refused(ws: Workspace, sql: str) -> None:
    with pytest.raises(
        QueryError, match="reads the workspace's tables by name, never a file by its path"
    ) as info:
        run_sql(ws, sql.format(root=ws.root))
    assert ws.secret().hex() not in str(info.value)


@pytest.mark.parametrize(
    "path",
    [
        "{root}/secret.key",  # in the workspace: "reads outside the workspace" was untrue
        "{root}/charges/*/*.parquet",  # the tables' own files, by a glob
        "/etc/passwd",
    ],
)
def test_a_file_read_by_its_path_is_refused_saying_how_to_read_the_tables(ws: Workspace, path: str) -> None:
    path = path.format(root=ws.root)
    with pytest.raises(QueryError) as info:
        run_sql(ws, f"SELECT * FROM read_text('{path}')")
    assert str(info.value) == (
        f'The query was refused: it reads "{path}". payfm sql reads the workspace\'s tables by name, never a '
        "file by its path (in the workspace or outside it): SELECT ... FROM charges (tables: charges, "
        "disputes, early_fraud_warnings, refunds, reviews; a feature set's backfill: features_<set>, e.g. "
        "features_default)."
    )


def test_only_one_statement(ws: Workspace) -> None:
    with pytest.raises(QueryError, match=r"exactly one SELECT statement\. Got 2"):
        run_sql(ws, "SELECT 1; SELECT 2")


def test_syntax_errors_are_clear(ws: Workspace) -> None:
    with pytest.raises(QueryError, match="could not be parsed"):
        run_sql(ws, "SELEC count(*) FROM charges")
    with pytest.raises(QueryError, match="The query failed"):
        run_sql(ws, "SELECT no_such_column FROM charges")


def test_a_name_the_result_repeats_is_numbered_so_no_column_hides_another(ws: Workspace) -> None:
    """Found by a settlement-report import: `SELECT 1 AS a, 2 AS a` printed one column, the later value
    under the first name (`{"a": 2}` in JSON); a join's `c.created, r.created` showed one of them."""
    t = run_sql(ws, "SELECT 1 AS a, 2 AS a, 3 AS a_2, 4 AS a")
    assert t.column_names == ["a", "a_3", "a_2", "a_4"] and t.to_pylist() == [
        {"a": 1, "a_3": 2, "a_2": 3, "a_4": 4}
    ]
    assert run_sql(ws, "SELECT 1 AS b").column_names == ["b"]


def test_a_result_is_read_a_batch_at_a_time(ws: Workspace) -> None:
    """`payfm sql` showing 20 rows of a huge result kept the whole result in memory (15 GB for
    range(1e11), a fuzzer's audit): the batches are bounded, and run_sql is their concatenation."""
    with contextlib.closing(sql_batches(ws, "SELECT range AS i FROM range(250000)", batch_rows=100_000)) as b:
        sizes = [batch.num_rows for batch in b]
    assert max(sizes) <= 100_000 and sum(sizes) == 250_000
    with contextlib.closing(sql_batches(ws, "SELECT 1 AS a, 2 AS a WHERE false")) as b:
        [empty] = list(b)  # an empty result is one empty batch with the result's (numbered) columns
    assert empty.num_rows == 0 and empty.schema.names == ["a", "a_2"]


def test_the_cli_counts_a_huge_result_without_holding_it(ws: Workspace) -> None:
    r = CliRunner().invoke(
        cli, ["-w", str(ws.root), "sql", "SELECT * FROM range(100000000000) t", "--limit", "3"]
    )
    assert r.exit_code == 0 and "3 of more than 10,000,000 rows shown" in r.output
    r = CliRunner().invoke(
        cli, ["-w", str(ws.root), "sql", "SELECT range AS i FROM range(250001)", "--format", "csv"]
    )
    lines = r.output.splitlines()
    assert r.exit_code == 0 and lines[0] == '"i"' and len(lines) == 250_002 and lines[-1] == "250000"


def _cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process ``pid`` has used so far (Linux's /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads CPU time from Linux's /proc")
def test_ctrl_c_stops_a_long_query_at_once(ws: Workspace) -> None:
    """DuckDB did not see Ctrl-C during a long aggregate (it ran on for minutes); the query now runs in a
    worker thread that the main one interrupts."""
    cmd = [str(Path(sys.executable).parent / "payfm"), "-w", str(ws.root), "sql"]
    proc = subprocess.Popen(
        [*cmd, "SELECT count(*) FROM range(1000000000000) t"],
        stderr=subprocess.PIPE,
        # a child of a shell's background job starts with SIGINT ignored; the test needs Python's handler
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # Deep in the query (it takes minutes) once the process used 3 s of CPU: starting takes under 1 s of it,
    # and wall time alone is no sign on a loaded machine (a Ctrl-C during Python's imports is a traceback).
    deadline = time.monotonic() + 60
    while _cpu_seconds(proc.pid) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and b"Aborted!" in err


def test_a_ctrl_c_that_comes_before_duckdb_starts_the_query_still_stops_it() -> None:
    """On a loaded machine a Ctrl-C could come between the submission and DuckDB's start of the query: the one
    interrupt was lost and the query (here ~100 s) ran to its end; the interrupt is now repeated until the
    work stops."""
    import _thread

    def late_query(con: Any) -> object:
        _thread.interrupt_main()  # the Ctrl-C comes before the query begins
        time.sleep(0.5)
        return con.sql("SELECT sum(i % 7) FROM range(20000000000) t(i)").fetchall()

    assert _seconds_to_stop(late_query) < 10


def test_a_second_ctrl_c_stops_waiting_for_work_that_ignores_the_interrupt() -> None:
    import _thread
    import threading

    from payfm import interrupts

    def deaf(con: Any) -> None:
        _thread.interrupt_main()  # the first Ctrl-C
        threading.Timer(0.5, _thread.interrupt_main).start()  # the second, while the interrupts go unheard
        time.sleep(4)  # (no DuckDB work: con.interrupt() does not stop it)

    try:
        assert _seconds_to_stop(deaf) < 2.5
        assert interrupts.abandoned == ["payfm sql's query"]  # the CLI leaves without waiting for it
    finally:
        interrupts.abandoned.clear()


DEAF_QUERY = """
import signal, sys, time
from payfm.events import workspace
connect = workspace.Workspace.connect
class Deaf:  # a query that ignores DuckDB's interrupt, for 60 s
    def __init__(self, con): self.con = con
    def __getattr__(self, name): return getattr(self.con, name)
    def interrupt(self): pass
    def sql(self, query):
        con = self
        class Relation:
            types = columns = ()  # (no column of a type to print as text)
            def to_arrow_reader(self, rows):
                print("running", file=sys.stderr, flush=True)
                time.sleep(60)
        return Relation()
workspace.Workspace.connect = lambda self, *a, **k: Deaf(connect(self, *a, **k))
signal.signal(signal.SIGINT, signal.default_int_handler)  # (a background job's child has it ignored)
from payfm.cli.main import main
sys.argv = ["payfm", "-w", sys.argv[1], "sql", "SELECT 1"]
main()
"""


def test_a_second_ctrl_c_ends_payfm_sql_at_once(ws: Workspace) -> None:
    """The second Ctrl-C stopped the interrupting, but the process then waited for DuckDB's thread (the
    pool's shutdown, then the interpreter's exit) until the query ended: it now leaves at once."""
    proc = subprocess.Popen(
        [sys.executable, "-c", DEAF_QUERY, str(ws.root)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    assert proc.stderr is not None and select.select([proc.stderr], [], [], 60)[0]  # (no hang if it stalls)
    assert proc.stderr.readline() == b"running\n"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - began < 5 and proc.returncode == 1 and b"Aborted!" in err, err


def _seconds_to_stop(work: Callable[[Any], object]) -> float:
    """The seconds until ``payfm sql``'s wait for ``work(con)`` (in its worker thread; the work sends the
    Ctrl-C) raised the KeyboardInterrupt."""
    import duckdb

    from payfm.events.query import _interruptible

    con = duckdb.connect()
    # Ctrl-C's handler as in a terminal: pytest started in a shell's background job has SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    began = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            _interruptible(con, lambda: work(con))
        return time.monotonic() - began
    finally:
        signal.signal(signal.SIGINT, previous)
        con.close()


def test_the_table_prints_null_apart_from_an_empty_text(ws: Workspace) -> None:
    """A null email_domain printed as an empty cell, like '' (a fraud analyst's audit)."""
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "sql", "SELECT NULL AS x, '' AS y"])
    [row] = [line for line in r.output.splitlines() if "NULL" in line]
    assert [c.strip() for c in row.split("│")][1:3] == ["NULL", ""]


def test_an_error_in_the_middle_of_a_result_is_a_query_error(ws: Workspace) -> None:
    """DuckDB's error after the first batches came through Arrow's stream as an OSError (a traceback in the
    CLI; a reviewer's find)."""
    late = "SELECT CASE WHEN i > 150000 THEN error('boom') ELSE i END AS i FROM range(300000) t(i)"
    with pytest.raises(QueryError, match="The query failed: Invalid Input Error: boom"):
        run_sql(ws, late)
    r = CliRunner().invoke(cli, ["-w", str(ws.root), "sql", late, "--format", "csv"])
    assert r.exit_code == 1 and "Error: The query failed: Invalid Input Error: boom" in r.output


def test_a_feature_sets_backfill_is_a_view_of_its_latest_version(tmp_path: Path) -> None:
    """An analyst checks a rule's velocity figures against the charges: `features_<set>` is the set's
    latest backfill (its files were out of payfm sql's reach, a glob of them refused as any path is)."""
    import pyarrow.parquet as pq

    from payfm.features.catalog import tiny_set
    from payfm.features.offline import backfill
    from payfm.synth import WorldConfig, generate_world

    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=2_000, days=5, seed=2)), "replace")
    path, _ = backfill(ws, tiny_set())
    older = path.with_name(f"tiny-{'0' * 12}.parquet")  # another version of the set, backfilled before
    pq.write_table(pq.read_table(path).slice(0, 3), older)
    os.utime(older, (1, 1))
    (ws.root / "features" / "tiny-1.training.parquet").write_bytes(path.read_bytes())  # (not a backfill)
    name = "card.count_charges_1h"
    got = run_sql(ws, f'SELECT charge_id, "{name}" FROM charges JOIN features_tiny USING (charge_id)')
    want = pq.read_table(path, columns=["charge_id", name])
    assert got.num_rows == want.num_rows == ws.read("charges").num_rows
    assert sorted(got.to_pylist(), key=str) == sorted(want.to_pylist(), key=str)
    with pytest.raises(QueryError, match="never a file by its path"):
        run_sql(ws, f"SELECT count(*) FROM read_parquet('{ws.root}/features/*.parquet')")
    with pytest.raises(QueryError):
        run_sql(ws, "SELECT count(*) FROM features_default")  # (no backfill of it: no view)
    # a damaged file named as a backfill: every other query runs (it failed each with a traceback), and one
    # reading its view is refused naming the file
    (ws.root / "features" / f"other-{'1' * 12}.parquet").write_text("not parquet")
    assert run_sql(ws, "SELECT count(*) AS n FROM features_tiny").to_pylist() == [{"n": want.num_rows}]
    for sql in ("SELECT count(*) FROM features_other", "SELECT * FROM features_other"):
        with pytest.raises(
            QueryError, match=r"features_other: .*other-1{12}\.parquet is not a readable backfill"
        ):
            run_sql(ws, sql)
