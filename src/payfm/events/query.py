"""Read-only analyst SQL over the workspace tables, with DuckDB.

Three locks, each enough alone for its own threat:
1. only single ``SELECT`` statements are accepted (no COPY, ATTACH, INSERT, CREATE, SET, PRAGMA ...);
2. the connection may read exactly the workspace's committed data files, nothing else on disk
   (``allowed_paths`` + ``enable_external_access = false``): not /etc, not the workspace's secret key;
3. the configuration is then locked, so a query cannot undo 1 or 2; no DuckDB extension is installed or loaded
   on demand (``sqlite_scan``, ``read_xlsx``... are refused with a message saying what is allowed).

Example:
    >>> import tempfile
    >>> from payfm.events.workspace import Workspace
    >>> ws = Workspace.open(tempfile.mkdtemp(), create=True)
    >>> run_sql(ws, "SELECT count(*) AS n FROM charges").to_pylist()
    [{'n': 0}]
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa
from duckdb.sqltypes import DuckDBPyType

from payfm import interrupts
from payfm.errors import PayfmError
from payfm.events.cards import redact_card_numbers, shown_text
from payfm.events.schema import TABLES
from payfm.events.workspace import Workspace, opened


class QueryError(PayfmError):
    """A query was refused or failed."""


T = TypeVar("T")
BATCH_ROWS = 100_000  # rows a batch of :func:`sql_batches` holds at most


def run_sql(ws: Workspace, sql: str) -> pa.Table:
    """Run one read-only SELECT over the workspace tables and return its result as Arrow. A name the result
    repeats (``SELECT c.created, r.created``) gets ``_2``, ``_3`` after it: a table, JSON object or record
    shows one column per name, and the later one hid the first."""
    ws = opened(ws, "run_sql")
    with contextlib.closing(sql_batches(ws, sql)) as batches:
        return pa.Table.from_batches(list(batches))


def sql_batches(
    ws: Workspace, sql: str, batch_rows: int = BATCH_ROWS, *, printable: bool = False
) -> Generator[pa.RecordBatch, None, None]:
    """The result of one read-only SELECT (checked as :func:`run_sql` checks it), batch by batch, at least one
    (empty: the result's columns): a reader keeps one batch in memory however large the result (`payfm sql`
    printing 20 rows of ``SELECT * FROM range(1e11)`` took 15 GB). The query runs in a worker thread that
    this one interrupts on Ctrl-C or SIGTERM: DuckDB's own check let a long aggregate run on for minutes.
    With ``printable`` (what `payfm sql` prints), the values of the types Arrow or Python cannot show as
    DuckDB holds them come as DuckDB's text of them (:func:`printable_types`)."""
    ws = opened(ws, "sql_batches")
    con = ws.connect()
    abandoned = False

    def result() -> pa.RecordBatchReader:
        rel = con.sql(sql)
        return (printable_types(rel) if printable else rel).to_arrow_reader(batch_rows)

    try:
        _lock(con, ws, sql, feature_views(con, ws))
        with _refusals():
            reader = _interruptible(con, result)
            names = _unique(reader.schema.names)
            empty = True
            while True:
                batch = _interruptible(con, lambda: _next(reader))
                if batch is None:
                    break
                empty = False
                yield pa.RecordBatch.from_arrays(batch.columns, names=names)
            if empty:
                columns = pa.schema(map(pa.Field.with_name, reader.schema, names))
                yield pa.RecordBatch.from_pylist([], schema=columns)
    except interrupts.Abandoned:
        abandoned = True
        raise
    finally:
        if not abandoned:  # (DuckDB refuses to close a connection its thread still uses)
            con.close()


# DuckDB types whose values Arrow and Python hold as DuckDB does: kept by printable_types (a BLOB prints as
# DuckDB's text of it in payfm.cli.render, after the scan for card numbers, which reads its bytes). Dates and
# timestamps too (with ``times``): Python holds years 1 to 9999 only, and not DuckDB's infinities, which
# `payfm sql` prints as DuckDB's text (payfm.cli.render); every other value prints as before.
_KEPT = frozenset(
    (
        "boolean", "tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint",
        "uinteger", "ubigint", "float", "double", "decimal", "varchar", "uuid", "enum", "null", "blob",
    )
)  # fmt: skip
_TIMES = frozenset(
    (
        "date", "timestamp", "timestamp_s", "timestamp_ms", "timestamp_ns", "timestamp with time zone",
        "timestamptz_ns",
    )
)  # fmt: skip


def printable_types(rel: duckdb.DuckDBPyRelation, *, times: bool = True) -> duckdb.DuckDBPyRelation:
    """``rel`` with every value of a type Arrow or Python cannot show as DuckDB holds it cast to VARCHAR,
    DuckDB's own text of it, inside the lists, structs, maps and unions that hold it: an INTERVAL
    (``26 days 05:18:32.812158``; Arrow's has no text, Python's repr is ``MonthDayNano(...)``), BIT, BIGNUM,
    UHUGEINT (Arrow's decimal wraps its upper half), TIME (``24:00:00``), TIME WITH TIME ZONE (Arrow drops the
    offset), GEOMETRY, and any type not named in :data:`_KEPT`. With ``times`` False, dates and timestamps
    too (``infinity``, a year after 9999). A result with none of them is returned as it is; columns are taken
    by position (a result may repeat a name).

    >>> import duckdb
    >>> rel = duckdb.connect().sql("SELECT INTERVAL 26 DAY + INTERVAL 90 MINUTE AS d, [1::UHUGEINT] AS n")
    >>> printable_types(rel).fetchall()
    [('26 days 01:30:00', ['1'])]
    """
    kept = _KEPT | _TIMES if times else _KEPT
    targets = [_printable_type(t, kept) for t in rel.types]
    if all(t is None for t in targets):
        return rel
    columns = [
        f"#{i + 1}" + ("" if t is None else f"::{t}") + f" AS {_quoted(name)}"
        for i, (name, t) in enumerate(zip(rel.columns, targets, strict=True))
    ]
    return rel.project(", ".join(columns))


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _printable_type(t: DuckDBPyType, kept: frozenset[str]) -> str | None:
    """The type ``t`` becomes in :func:`printable_types` (None: ``t`` as it is)."""
    kind = t.id
    if kind in kept:
        return None
    if kind not in ("list", "array", "struct", "map", "union", "tuple"):
        return "VARCHAR"
    listed = list(t.children)
    if kind == "union":
        listed = listed[1:]  # (the first is the tag)
    if kind == "array":  # (its child, then its size)
        listed = listed[:1]
    children = [(name, child) for name, child in listed if isinstance(child, DuckDBPyType)]
    inner = [_printable_type(child, kept) for _name, child in children]
    if all(c is None for c in inner):
        return None
    types = [str(child) if c is None else c for (_name, child), c in zip(children, inner, strict=True)]
    if kind == "list":
        return f"{types[0]}[]"
    if kind == "array":
        return f"{types[0]}[{t.children[1][1]}]"
    if kind == "map":
        return f"MAP({types[0]}, {types[1]})"
    if kind == "tuple":
        return f"TUPLE({', '.join(types)})"
    fields = ", ".join(f"{_quoted(name)} {c}" for (name, _child), c in zip(children, types, strict=True))
    return f"{kind.upper()}({fields})"


def _interruptible(con: duckdb.DuckDBPyConnection, work: Callable[[], T]) -> T:
    """``work()`` (DuckDB's) stopped by a Ctrl-C or SIGTERM: :func:`payfm.interrupts.interruptible`."""
    return interrupts.interruptible(work, con.interrupt, "payfm sql's query")


def _next(reader: pa.RecordBatchReader) -> pa.RecordBatch | None:
    """The next batch, None at the end."""
    try:
        return reader.read_next_batch()
    except StopIteration:
        return None


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """DuckDB's errors of a query, as payfm sql says them."""
    try:
        yield
    except duckdb.PermissionException as e:
        raise QueryError(_file_refused(e)) from None
    except duckdb.InterruptException:
        raise KeyboardInterrupt from None
    except (duckdb.Error, OSError, pa.ArrowException) as e:  # (DuckDB's error mid-result: Arrow's OSError)
        if isinstance(e, duckdb.Error) and (refused := _extension_refused(e)) is not None:
            raise QueryError(refused) from None
        raise QueryError(f"The query failed: {_first_line(e)}") from None


# A backfill's file: features/<set>-<version>.parquet (payfm.features.offline.backfill), a set's name a word
_BACKFILL = re.compile(r"([a-z][a-z0-9_]*)-([0-9a-f]{12})\.parquet")


def feature_views(con: duckdb.DuckDBPyConnection, ws: Workspace) -> tuple[Path, ...]:
    """A view ``features_<set>`` over each feature set's backfill in the workspace (its latest, when
    several versions were backfilled: features/<set>-<version>.parquet), so that a query can join the
    features a rule reads to the charges (``JOIN features_default USING (charge_id)``); the files read."""
    latest: dict[str, tuple[float, Path]] = {}
    folder = ws.root / "features"
    for path in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
        m = _BACKFILL.fullmatch(path.name)
        try:
            when = path.stat().st_mtime if m is not None and path.is_file() else None
        except OSError:  # (gone since the listing: a backfill replaced meanwhile)
            when = None
        if m is not None and when is not None and (m.group(1) not in latest or when > latest[m.group(1)][0]):
            latest[m.group(1)] = (when, path)
    read = []
    for name, (_, path) in sorted(latest.items()):
        quoted = str(path).replace("'", "''")
        try:  # (DuckDB reads the file's schema here: a damaged one must not fail every other query)
            con.execute(f"CREATE VIEW features_{name} AS SELECT * FROM read_parquet('{quoted}')")
            read.append(path)
        except duckdb.Error as e:
            said = f"features_{name}: {shown_text(str(path))} is not a readable backfill ({_first_line(e)})"
            literal = said.replace("'", "''")  # (a view takes no parameters)
            # (a view that fails whatever reads it, count(*) included: the file named, once asked for)
            con.execute(
                f"CREATE VIEW features_{name} AS SELECT * FROM range(1) WHERE error('{literal}') IS NULL"
            )
    return tuple(read)


def _lock(con: duckdb.DuckDBPyConnection, ws: Workspace, sql: str, backfills: tuple[Path, ...] = ()) -> None:
    """Refuse all but one SELECT, and lock ``con`` to the workspace's data files (the module's docstring)
    and its backfills (:func:`feature_views`)."""
    files = [str(f) for t in TABLES for f in ws.files(t)] + [str(f) for f in backfills]
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(f"The SQL could not be parsed: {_first_line(e)}") from None
    if not statements:  # (only comments, or nothing)
        raise QueryError(
            "payfm sql runs exactly one SELECT statement. Got a query that holds no statement (only comments "
            "or blanks): a comment starting with -- runs to the end of its line, so the SELECT goes on a "
            "line after it."
        )
    if len(statements) != 1:
        raise QueryError(f"payfm sql runs exactly one SELECT statement. Got {len(statements)} statements.")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        # INSTALL, not DuckDB's LOAD; after comments; the statement's own kind behind WITH (an INSERT)
        word = (_COMMENTS.sub("", statements[0].query).split() or [kind.name])[0].upper()
        word = word if word.isalpha() and word != "WITH" else kind.name
        article = "an" if word[:1] in ("A", "E", "I", "O", "U") else "a"
        raise QueryError(
            f"payfm sql is read-only: it runs SELECT statements only. Got {article} {word} statement."
        )
    con.execute("SET allowed_paths = ?", [files])
    con.execute("SET enable_external_access = false")
    # No extension is installed or loaded on demand: sqlite_scan, read_xlsx, iceberg_scan... read files
    # (or the network) through one, and the attempt would only fail on the locks above, mid-message.
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")


_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)  # leading ones


def _unique(columns: list[str]) -> list[str]:
    """``columns`` with every repeated name numbered (``a``, ``a_2``), none taken by another column."""
    names: list[str] = []
    taken = set(columns)
    for name in columns:
        if name not in names:
            names.append(name)
            continue
        k = 2
        while f"{name}_{k}" in taken or f"{name}_{k}" in names:
            k += 1
        names.append(f"{name}_{k}")
    return names


# DuckDB's message for a function or a type of an extension that is not loaded: what it is ("Table Function",
# "Scalar Function", "Type"...), its name and the extension.
_EXTENSION = re.compile(
    r'([A-Z][a-z]+(?: [A-Z][a-z]+)*) with name "?([^"\s]+?)"? is not in the catalog, '
    r"but it exists in the (\w+) extension"
)
_AUTOINSTALL = re.compile(r"install the required extension '?(\w+)")


def _extension_refused(e: duckdb.Error) -> str | None:
    """The refusal of a query that needs a DuckDB extension (sqlite_scan needs sqlite_scanner, the type INET
    inet), saying what payfm sql reads instead; None for another error. DuckDB's own message spans lines
    (and suggests an INSTALL, which payfm sql refuses)."""
    text = str(e)
    builtins = "functions"
    if (found := _EXTENSION.search(text)) is not None:
        kind, name, extension = found.groups()
        if "Function" not in kind:  # a type ('1.2.3.4'::INET), not a function: say which
            name, builtins = f"the {kind.lower()} {name}", f"{kind.lower()}s and functions"
        what = f"{name} comes from DuckDB's {extension} extension"
    elif (needed := _AUTOINSTALL.search(text)) is not None:
        what = f"it needs DuckDB's {needed.group(1)} extension"
    else:
        return None
    return (
        f"The query was refused: {what}, and payfm sql loads no extension (they read files or the network). "
        f"It reads the workspace's tables only ({', '.join(TABLES)}), with DuckDB's built-in {builtins}: "
        "SELECT count(*) FROM charges."
    )


_FILE = re.compile(r'Cannot access (?:file|directory) "(.*)" - ')


def _file_refused(e: duckdb.PermissionException) -> str:
    """The refusal of a query that reads a file by its path (``read_text('payfm-workspace/secret.key')``, a
    glob of the workspace's Parquet files, /etc/passwd): inside the workspace or outside it, payfm sql reads
    the tables, by name. (Its views may read each committed data file, so a query naming one exact data file
    by its path runs; nothing else it names does.)"""
    found = _FILE.search(str(e))
    what = redact_card_numbers(f'it reads "{found.group(1)}"' if found else _first_line(e))
    return (
        f"The query was refused: {what}. payfm sql reads the workspace's tables by name, never a file by its "
        f"path (in the workspace or outside it): SELECT ... FROM charges (tables: {', '.join(TABLES)}; a "
        "feature set's backfill: features_<set>, e.g. features_default)."
    )


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
