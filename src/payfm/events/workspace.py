"""The workspace: a directory of day-partitioned Parquet files, opened as DuckDB tables.

Layout::

    payfm-workspace/
      manifest.json                      # the committed state: the files of each table
      secret.key                         # per-workspace HMAC key for card fingerprints (mode 0600)
      charges/day=2026-01-01/part-<txid>-<n>.parquet
      disputes/day=.../...

Atomicity comes from one mechanism: readers see only the files that ``manifest.json`` lists, and a write
becomes visible in a single ``os.replace`` of that manifest. A writer first writes its Parquet files under new
names (never overwriting a listed file), then commits the new manifest. A write that fails or is killed
leaves the previous manifest, so the previous state, intact; its stray files are removed by the next writer.
Writers take an exclusive lock (``.lock``), so two writers never interleave. The files a commit drops (a
compaction's, a replace's) stay an hour for the readers that listed them (:meth:`Workspace._expire_retired`).
A write the filesystem refuses (a read-only folder, a full disk) is a :class:`WorkspaceError` naming the path
and the system's reason (:func:`write_failed`).

Example:
    >>> import tempfile, pyarrow as pa
    >>> ws = Workspace.open(tempfile.mkdtemp(), create=True)
    >>> ws.count("charges")
    0
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import hmac
import json
import math
import os
import secrets
import shutil
import string
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from payfm import interrupts
from payfm.errors import ConfigError, WorkspaceBusy, WorkspaceError
from payfm.events.cards import shown_text
from payfm.events.durable import alive as alive
from payfm.events.durable import atomic_write_bytes as atomic_write_bytes
from payfm.events.durable import fsync_dir as fsync_dir
from payfm.events.durable import synced_temp as synced_temp
from payfm.events.schema import SCHEMAS, TABLES, column_names, schema_of

DEFAULT_WORKSPACE = "payfm-workspace"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_US_PER_DAY = 86_400_000_000
_FOLLOW_CHARGES = ("disputes", "early_fraud_warnings", "refunds")  # outcomes strictly later than their charge

WriteMode = Literal["append", "replace"]
WRITING = ".writing"  # present while a writer runs (see Workspace._transaction)
SWEEP_EVERY = 64
RETIRE_AFTER_S = 3600.0  # how long files a compaction or a replace dropped stay for readers that listed them
LEGACY_LOG_ID = "legacy"  # the log id of a manifest written before logs had one (see Workspace.identity)
RETRIES = 3  # lists of a table's files a reader tries before it fails (see Workspace.retrying)
_T = TypeVar("_T")


def json_ready(value: Any) -> Any:
    """``value`` as strict JSON holds it: dataclasses as dicts, tuples as lists, dict keys as texts, NaN
    and infinities as null (JSON has neither). For every JSON payfm writes: reports, evaluations, output.

    >>> json_ready({"ap": float("nan"), "ci": (0.1, float("inf"))})
    {'ap': None, 'ci': [0.1, None]}
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_ready(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def day_of(created: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Days since the Unix epoch (UTC) of microsecond UTC timestamps."""
    micros = created.cast(pa.int64()).to_numpy()
    days: np.ndarray = np.floor_divide(micros, _US_PER_DAY)
    return days


def day_name(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


def write_failed(root: Path, e: OSError, path: Path | None = None) -> WorkspaceError:
    """The error of a workspace write the filesystem refused (a read-only folder, a full disk): one line
    naming the path (``e``'s own, else ``path``) and the system's reason. The commit is the manifest's rename,
    so the event log is as it was before (the writer removes what it wrote)."""
    where = e.filename if e.filename is not None else path
    said = shown_text(str(e.strerror or e), 400)
    at = f" '{shown_text(os.fsdecode(where), 4096, times=True)}'" if where is not None else ""
    shown = shown_text(str(root), 4096, times=True)
    return WorkspaceError(
        f"Cannot write the workspace '{shown}': writing{at} failed: {said}. The event log is unchanged. "
        "Expected a folder payfm may write in, with free space."
    )


@contextmanager
def _writing(root: Path, path: Path | None = None) -> Iterator[None]:
    """An OSError of the workspace's own writes inside as :func:`write_failed`'s error (not the caller's:
    only the workspace's file operations are wrapped, so another OSError stays what it is)."""
    try:
        yield
    except OSError as e:
        raise write_failed(root, e, path) from None


def _unreadable(table: str, path: Path, e: OSError) -> WorkspaceError:
    return WorkspaceError(
        f"The event log's {table} file '{path}', which {MANIFEST} lists, cannot be read ({e.strerror or e}); "
        "the workspace is damaged: restore the file, or write the log again (`payfm generate` or `payfm "
        "import`)."
    )


class Workspace:
    """A payfm workspace directory. Open with :meth:`open`; read with :meth:`connect` or :meth:`read`."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)  # (a str from the Python API: every method joins paths to it)
        self._whole: dict[Path, tuple[int, int]] = {}  # files found whole Parquet: (size, mtime_ns)
        # The manifest version this object's last write committed (None before one): what it wrote, not
        # another process's later write (`payfm demo` records it, to know whether the log is still its own).
        self.written_version: int | None = None
        self._renaming: os.stat_result | None = None  # the manifest's temporary being renamed (_commit)

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = False) -> Workspace:
        """Open the workspace at ``path``; with ``create`` make it (and its secret) if it does not exist."""
        root = Path(path).expanduser().resolve()
        manifest = root / MANIFEST
        try:
            present = manifest.exists()
        except OSError as e:  # (a name too long)
            raise WorkspaceError(f"Cannot open the workspace '{root}': {e.strerror or e}.") from None
        if not present:
            if not create:
                raise WorkspaceError(
                    f"No payfm workspace at '{root}': expected a directory with {MANIFEST}. "
                    "Create one with `payfm generate` or `payfm import`, or pass --workspace."
                )
            if root.exists() and not root.is_dir():
                raise WorkspaceError(f"Workspace path '{root}' exists and is not a directory.")
            try:
                root.mkdir(parents=True, exist_ok=True)
                ws = cls(root)
                with ws._lock():
                    if not manifest.exists():
                        empty: dict[str, list[str]] = {t: [] for t in TABLES}
                        ids = {"workspace_id": _new_id(), "log_id": _new_id()}
                        ws._commit({"format": FORMAT_VERSION, "version": 0, **ids, "tables": empty})
                        fsync_dir(root)
            except OSError as e:  # under a file, in /proc, not permitted, a name too long
                raise WorkspaceError(
                    f"Cannot create the workspace '{root}': {e.strerror or e}. Expected a path where a "
                    "directory can be made (pass another --workspace)."
                ) from None
            return ws
        return cls(root)

    # ---- state -------------------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            raise WorkspaceError(f"No payfm workspace at '{self.root}' ({MANIFEST} is missing).") from None
        except json.JSONDecodeError as e:
            raise WorkspaceError(f"'{path}' is not valid JSON ({e}); the workspace is damaged.") from None
        except (IsADirectoryError, UnicodeDecodeError) as e:
            raise WorkspaceError(
                f"'{path}' is not a readable manifest ({e}); the workspace is damaged."
            ) from None
        if not isinstance(data, dict):
            raise WorkspaceError(
                f"'{path}' holds a JSON {type(data).__name__}, not the manifest's object; the workspace is "
                "damaged."
            )
        if data.get("format") != FORMAT_VERSION:
            raise WorkspaceError(
                f"'{path}' has format {data.get('format')!r}; this payfm reads format {FORMAT_VERSION}."
            )
        return data

    def files(self, table: str) -> list[Path]:
        schema_of(table)
        return self._committed((table,))[table]

    def _committed(self, tables: Sequence[str]) -> dict[str, list[Path]]:
        """The files the manifest lists for ``tables``, each checked present and whole (Parquet's magic bytes
        at both ends: a file cut short or overwritten); a WorkspaceError naming the first that is not, rather
        than the reader's error, which names no file. A file gone because a commit replaced it since the
        manifest was read (another process compacting or replacing the log) is not damage: the files are
        listed again, as :meth:`retrying` does. A file seen whole is checked again only once changed."""
        for attempt in range(RETRIES):
            manifest = self.manifest()
            out: dict[str, list[Path]] = {}
            try:
                for table in tables:
                    out[table] = [self.root / rel for rel in manifest["tables"].get(table, [])]
                    for path in out[table]:
                        self._check_whole(table, path)
                return out
            except FileNotFoundError as e:
                if attempt + 1 < RETRIES and self.manifest()["version"] != manifest["version"]:
                    continue  # a commit in between
                raise _unreadable(table, Path(e.filename), e) from None
        raise AssertionError("unreachable")

    def _check_whole(self, table: str, path: Path) -> None:
        """``path`` present (FileNotFoundError otherwise) and whole Parquet (a WorkspaceError otherwise)."""
        try:
            st = path.stat()
            stamp = (st.st_size, st.st_mtime_ns)
            if self._whole.get(path) == stamp:
                return
            with path.open("rb") as fh:
                head = fh.read(4)
                fh.seek(max(0, st.st_size - 4))
                tail = fh.read(4)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise _unreadable(table, path, e) from None
        if st.st_size < 12 or head != b"PAR1" or tail != b"PAR1":
            raise WorkspaceError(
                f"The event log's {table} file '{path}' is not a whole Parquet file ({st.st_size:,} bytes, "
                "cut short or overwritten); the workspace is damaged: restore the file, or write the log "
                "again (`payfm generate` or `payfm import`)."
            )
        self._whole[path] = stamp

    def secret(self, wait_s: float = 60.0) -> bytes:
        """The workspace's HMAC key for card fingerprints, created on first use (0600, never logged), under
        the write lock (waiting up to ``wait_s`` for another writer's write)."""
        path = self.root / "secret.key"
        if not path.exists():
            with self._lock(wait_s):
                if not path.exists():
                    with _writing(self.root, path):
                        atomic_write_bytes(path, secrets.token_hex(32).encode(), mode=0o600)
        return bytes.fromhex(path.read_text().strip())

    def identity(self) -> tuple[str, str]:
        """(workspace, log): whose event log this is, for a state loaded from it (a Redis state's marker).
        Both are the manifest's, made at creation (``workspace_id``, ``log_id``): a copy of the workspace
        (servers on several machines) has the same. A replace (`generate`, `demo`) makes another ``log_id``;
        appends and compactions carry both. A manifest of an older payfm without them: the workspace's is an
        HMAC of a constant under its secret.key (it reveals nothing of the key), or a hash of its path when
        it has none (made by a first import); the log's :data:`LEGACY_LOG_ID`."""
        manifest, key = self.manifest(), self.root / "secret.key"
        ws = manifest.get("workspace_id")
        if not ws and key.exists():
            ws = hmac.new(self.secret(), b"payfm workspace identity", hashlib.sha256).hexdigest()[:16]
        ws = ws or hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        return str(ws), str(manifest.get("log_id") or LEGACY_LOG_ID)

    # ---- reading -----------------------------------------------------------------------------------------
    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with one view per table over the committed files (UTC session)."""
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        committed = self._committed(TABLES)
        for table in TABLES:
            files = [str(path) for path in committed[table]]
            if files:
                listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                # Exactly the schema's columns: without hive_partitioning=false DuckDB adds the path's `day`,
                # which no consumer of the tables (the scoring API, an import) takes as a field.
                source = f"read_parquet([{listing}], hive_partitioning = false)"
                con.execute(f"CREATE VIEW {table} AS SELECT * FROM {source}")
            else:
                empty = SCHEMAS[table].empty_table()  # noqa: F841 - read by DuckDB's replacement scan
                con.execute(f"CREATE TABLE {table} AS SELECT * FROM empty")
        return con

    def read(self, table: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole table in Arrow, in the schema's types (rows in file order: by day, then as written);
        ``columns`` (a list or tuple of its column names) only, when given."""
        schema = schema_of(table)
        wanted = (
            None
            if columns is None
            else column_names(columns, schema.names, "columns", "Workspace.read", f"table '{table}'")
        )

        def read_files(files: list[Path]) -> pa.Table:
            if not files:
                empty: pa.Table = schema.empty_table()
                return empty.select(wanted) if wanted else empty
            return pq.ParquetDataset([str(f) for f in files], schema=schema).read(columns=wanted)

        return self.retrying(table, read_files)

    def retrying(self, table: str, read: Callable[[list[Path]], _T]) -> _T:
        """``read(files)`` of ``table``'s committed files, listed again when a commit in between removed one
        (a compaction or a replace by another process): a reader never fails for racing a writer."""
        for _ in range(RETRIES):
            files = self.files(table)
            try:
                return read(files)
            except FileNotFoundError:
                if self.files(table) == files:
                    raise  # not a commit in between: the workspace is damaged
        return read(self.files(table))

    def count(self, table: str) -> int:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files(table))

    # ---- writing -----------------------------------------------------------------------------------------
    @contextmanager
    def _lock(self, wait_s: float = 0.0) -> Iterator[None]:
        """The exclusive write lock; ``wait_s`` seconds of waiting for it before :class:`WorkspaceBusy`."""
        with _writing(self.root, self.root / ".lock"):
            self.root.mkdir(parents=True, exist_ok=True)
            f = open(self.root / ".lock", "a")  # noqa: SIM115 - closed below
        deadline = time.monotonic() + wait_s
        with f:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        waited = f" (waited {wait_s:g} s)" if wait_s else ""
                        raise WorkspaceBusy(
                            f"Workspace '{self.root}' is being written by another process{waited}."
                        ) from None
                    time.sleep(0.02)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _commit(self, manifest: dict[str, Any]) -> None:
        """Rename a new manifest over the old: the commit point. The temporary's identity is kept first
        (``_renaming``), so that a caller seeing an exception reads from the disk whether the rename happened
        (:meth:`_commit_or_abort`); the folder is flushed by the caller."""
        path = self.root / MANIFEST
        tmp = synced_temp(path, json.dumps(manifest, indent=1).encode())
        try:
            self._renaming = os.stat(tmp)
            interrupts.check()
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # (a name no longer there once renamed)
            raise

    def _commit_or_abort(self, manifest: dict[str, Any], w: WorkspaceWriter) -> None:
        """Commit ``manifest`` (:meth:`_commit`); if that fails before the rename, remove ``w``'s files (not
        strays of a writer that died); the version committed is :attr:`written_version` after. Whether the
        rename happened is read from the disk: a signal's exception (Ctrl-C, the CLI's SIGTERM) may land just
        after ``os.replace`` returned, and the files of a committed manifest must then stay."""
        path = self.root / MANIFEST
        self._renaming = None
        try:
            with _writing(self.root, path):
                self._commit(manifest)
        except BaseException:
            if not _is_file(path, self._renaming):
                w._abort()
                raise
            self.written_version = int(manifest["version"])  # committed: the files stay
            raise
        self.written_version = int(manifest["version"])
        try:
            fsync_dir(self.root)
        except OSError as e:
            raise WorkspaceError(
                f"The write to the workspace '{shown_text(str(self.root), 4096, times=True)}' is committed "
                f"(readers see it), but its folder could not be flushed to disk ({e.strerror or e}): a crash "
                "of the machine now may undo it."
            ) from None

    def _collect_garbage(self, manifest: dict[str, Any]) -> None:
        """Remove data files no manifest lists (left by replaced state or by a killed writer); files retired
        by a compaction are kept until they expire (see :meth:`_expire_retired`)."""
        listed = {rel for files in manifest["tables"].values() for rel in files}
        listed |= {rel for rel, _ in manifest.get("retired", [])}
        for table in TABLES:
            base = self.root / table
            if not base.is_dir():
                continue
            for path in base.rglob("*"):
                if path.is_file() and str(path.relative_to(self.root)) not in listed:
                    path.unlink(missing_ok=True)
            _remove_empty_days(base.glob("day=*"))
        staging = self.root / ".staging"
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

    def write_stream(
        self, stream: Iterable[tuple[str, pa.Table]], mode: WriteMode = "append", *, validate: bool = True
    ) -> dict[str, int]:
        """Write every ``(table, data)`` of ``stream`` in one transaction; return the rows written per table.
        Each batch is checked as an import's rows are (``validate``, :meth:`WorkspaceWriter.write`).

        Parquet encoding runs on a background thread (Arrow releases the GIL) while the producer of
        ``stream`` computes the next batch, with at most two batches in flight, so memory stays bounded.
        """
        with self.writer(mode, validate=validate) as w, ThreadPoolExecutor(max_workers=1) as pool:
            pending: deque[Future[None]] = deque()
            for table, data in stream:
                pending.append(pool.submit(w.write, table, data))
                while len(pending) > 2:
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
            return dict(w.rows)

    def compact(
        self,
        tables: Iterable[str] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        wait_s: float = 60.0,
    ) -> dict[str, Compacted]:
        """Rewrite each day of ``tables`` (default: all) held in several files as one file, in one commit.

        Appends leave a file per write and day (the decision service appends each outcome as its own file),
        and every read opens every file. The rows of a day keep their order (its files in manifest order);
        the manifest then lists each table by day. Readers see the old files or the new ones, never both
        (the old ones are retired, deleted by the first transaction ``RETIRE_AFTER_S`` later, as a replace's);
        the manifest version advances, so backfills computed before are computed again. A workspace with
        nothing to rewrite is left as it is. ``progress(table, done, total)`` counts the days to rewrite.
        It waits up to ``wait_s`` for the write lock: servers append outcomes in short transactions.
        """
        chosen = list(TABLES) if tables is None else list(dict.fromkeys(tables))
        for t in chosen:
            schema_of(t)  # a clear error for an unknown name, before the lock
        result: dict[str, Compacted] = {}
        with self._transaction(wait_s) as before:
            w = WorkspaceWriter(self, _txid())
            listing: dict[str, list[str]] = {t: list(before["tables"].get(t, [])) for t in TABLES}
            try:
                for table in chosen:
                    by_day: dict[str, list[str]] = {}
                    for rel in listing[table]:
                        by_day.setdefault(Path(rel).parent.name, []).append(rel)
                    todo = [day for day, files in by_day.items() if len(files) > 1]
                    rows = 0
                    for i, day in enumerate(sorted(todo)):
                        parts = [pq.ParquetFile(self.root / rel).read() for rel in by_day[day]]
                        data = pa.concat_tables([t.cast(SCHEMAS[table]) for t in parts])
                        w._write_file(table, day.removeprefix("day="), data)
                        by_day[day] = [w._written[table][-1]]
                        rows += data.num_rows
                        if progress is not None:
                            progress(table, i + 1, len(todo))
                    after = [rel for day in sorted(by_day) for rel in by_day[day]]
                    result[table] = Compacted(len(listing[table]), len(after), len(todo), rows)
                    listing[table] = after
                written = w._finish()
            except BaseException:
                w._abort()
                raise
            if written:
                now = time.time()
                replaced = {rel for files in before["tables"].values() for rel in files}
                replaced -= {rel for files in listing.values() for rel in files}
                committed = {
                    "format": FORMAT_VERSION,
                    "version": before["version"] + 1,
                    **{k: before[k] for k in ("workspace_id", "log_id") if before.get(k)},  # the same log
                    "tables": listing,
                    "retired": before["retired"] + [[rel, now] for rel in sorted(replaced)],
                }
                self._commit_or_abort(committed, w)
        return result

    @contextmanager
    def writer(
        self, mode: WriteMode = "append", wait_s: float = 0.0, *, validate: bool = True
    ) -> Iterator[WorkspaceWriter]:
        """A transaction: everything written inside becomes visible at once on a clean exit, or not at all.

        ``replace`` swaps every table for what is written (the files it drops are retired, as a compaction's:
        a reader that listed them goes on reading them for ``RETIRE_AFTER_S``); ``append`` adds to what is
        there. ``wait_s``: seconds to wait for another writer's transaction to end before
        :class:`WorkspaceBusy`. ``validate`` checks each table written as
        :func:`payfm.events.validate.validate_events` does (its fields, types, domains, and no card number
        anywhere); payfm's own writers, whose data is checked already (an import, the decision service) or
        made by the tested generator, pass False.
        """
        if mode not in ("append", "replace"):
            raise ConfigError(f"The 'mode' of a workspace write must be 'append' or 'replace'. Got {mode!r}.")
        with self._transaction(wait_s) as before:
            w = WorkspaceWriter(self, _txid(), validate, held=mode == "append")
            try:
                yield w
                written = w._finish()
            except BaseException:
                w._abort()
                raise
            if mode == "append" and not written:
                return  # nothing to commit: the version stays (a backfill of it stays current)
            tables: dict[str, list[str]] = {
                t: ([] if mode == "replace" else list(before["tables"].get(t, []))) + written.get(t, [])
                for t in TABLES
            }
            after: dict[str, Any] = {"format": FORMAT_VERSION, "version": before["version"] + 1}
            ids = {"workspace_id": before.get("workspace_id"), "log_id": before.get("log_id")}
            if mode == "replace":  # another log (of the same workspace: one of an older payfm gets an id)
                ids = {"workspace_id": ids["workspace_id"] or _new_id(), "log_id": _new_id()}
            after.update({k: v for k, v in ids.items() if v})
            after["tables"] = tables
            retired = before["retired"]
            if mode == "replace":  # (an append drops no file from the manifest)
                now = time.time()
                dropped = {rel for files in before["tables"].values() for rel in files}
                dropped -= {rel for files in tables.values() for rel in files}
                retired = retired + [[rel, now] for rel in sorted(dropped)]
            if retired:
                after["retired"] = retired
            self._commit_or_abort(after, w)

    @contextmanager
    def _transaction(self, wait_s: float = 0.0) -> Iterator[dict[str, Any]]:
        """The write lock for one transaction; yields the manifest before it.

        Stray files (of a writer killed before its commit) are collected first, but only when they may exist:
        a writer leaves ``.writing`` from its start until it ends, so one found at the start means the last
        writer died. (And every ``SWEEP_EVERY`` versions, for strays of workspaces written before the marker.)
        A walk of every table's files at every append made outcome appends slow down as files piled up.
        """
        with self._lock(wait_s):
            before = self.manifest()
            marker = self.root / WRITING
            with _writing(self.root):  # (a read-only folder: the first of these to write says which path)
                if marker.exists() or before["version"] % SWEEP_EVERY == 0:
                    self._collect_garbage(before)
                before["retired"] = self._expire_retired(before.get("retired", []))
                marker.touch()
            try:
                yield before
            finally:
                marker.unlink(missing_ok=True)

    def _expire_retired(self, retired: list[list[Any]]) -> list[list[Any]]:
        """Delete the files a compaction or a replace retired more than ``RETIRE_AFTER_S`` ago (and the day
        folders that leaves empty); return those kept.

        Neither commit deletes the files it drops: a reader that listed them before (a DuckDB view of
        `payfm sql`, a backfill, training) goes on reading them. The next transaction after the grace period
        deletes them; the manifest it commits no longer names them."""
        now, kept, gone = time.time(), [], set()
        for rel, at in retired:
            if now - float(at) >= RETIRE_AFTER_S:
                (self.root / rel).unlink(missing_ok=True)
                gone.add((self.root / rel).parent)
            else:
                kept.append([rel, at])
        _remove_empty_days(gone)
        return kept


@dataclass(frozen=True)
class Compacted:
    """What :meth:`Workspace.compact` did to one table."""

    files_before: int
    files_after: int
    days_rewritten: int
    rows_rewritten: int


class WorkspaceWriter:
    """Writes event tables as day-partitioned Parquet files for one :meth:`Workspace.writer` transaction."""

    def __init__(self, ws: Workspace, txid: str, validate: bool = True, *, held: bool = True) -> None:
        self._ws = ws
        self._held = held  # whether the workspace's charges stay (an append), not replaced
        self._txid = txid
        self._validate = validate
        self._n = 0
        self._written: dict[str, list[str]] = {}
        self._days: set[Path] = set()  # the day folders it writes into
        self._charges: list[pa.Table] = []  # (charge_id, created) of the charges this transaction wrote
        self.rows: dict[str, int] = {}

    def write(self, table: str, data: pa.Table) -> None:
        """Append ``data`` to ``table``, one file per UTC day of ``created``: checked and cast to the table's
        schema (a :class:`~payfm.events.validate.ValidationError` naming its rows and fields) unless the
        writer was opened with ``validate=False``, when it must have exactly the table's schema."""
        from payfm.events.validate import validate_events

        if self._validate and isinstance(data, pa.Table):
            data = validate_events(table, data, source=f"data written to '{table}'")
            if table in _FOLLOW_CHARGES and data.num_rows:
                self._refuse_early_outcomes(table, data)
            elif table == "charges":
                self._charges.append(data.select(["charge_id", "created"]))
        schema = schema_of(table)
        if not isinstance(data, pa.Table):
            got = type(data).__name__
            raise ConfigError(f"Data written to '{table}' must be a pyarrow Table. Got a {got}.")
        if not data.schema.equals(schema, check_metadata=False):
            raise ConfigError(
                f"Data written to '{table}' must have the schema of '{table}'. Got:\n{data.schema}"
            )
        if data.num_rows == 0:
            return
        data = data.replace_schema_metadata(None).cast(schema)
        days = day_of(data.column("created"))
        if np.all(days[1:] >= days[:-1]):
            order = None
        else:
            order = np.argsort(days, kind="stable")
            days = days[order]
            data = data.take(pa.array(order))
        bounds = np.flatnonzero(np.diff(days)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(days)]])
        for s, e in zip(starts, ends, strict=True):
            self._write_file(table, day_name(int(days[s])), data.slice(int(s), int(e - s)))
        self.rows[table] = self.rows.get(table, 0) + data.num_rows

    def _refuse_early_outcomes(self, table: str, data: pa.Table) -> None:
        """A ValidationError for the outcomes of ``data`` at or before their charge (held by the workspace, in
        an append, or written by this transaction): the backfill would count one in its own charge's features
        (its label), as an import and the decision service refuse it. One of a charge found nowhere passes."""
        from payfm.events.validate import Problem, ValidationError

        con = self._ws.connect()
        try:
            con.register("outcome_ids", data.select(["charge_id"]))
            held = con.sql(
                "SELECT charge_id, created FROM charges SEMI JOIN outcome_ids USING (charge_id)"
                if self._held and self._ws.files("charges")
                else "SELECT NULL::VARCHAR AS charge_id, NULL::TIMESTAMPTZ AS created WHERE false"
            ).to_arrow_table()
        finally:
            con.close()
        known = pa.concat_tables([t.cast(held.schema) for t in self._charges] + [held])
        at = pc.index_in(data["charge_id"], value_set=known["charge_id"])
        charge_created = pc.take(known["created"], at)
        early = np.flatnonzero(
            pc.fill_null(pc.less_equal(data["created"], charge_created), False).to_numpy(False)
        )
        if len(early):
            problems = [
                Problem(
                    "created",
                    int(i) + 1,
                    f"a time later than its charge's ({charge_created[int(i)].as_py().isoformat()})",
                    data["created"][int(i)].as_py().isoformat(),
                )
                for i in early[:5]
            ]
            raise ValidationError(f"data written to '{table}'", problems, len(early))

    def _write_file(self, table: str, day: str, part: pa.Table) -> None:
        rel = f"{table}/day={day}/part-{self._txid}-{self._n:05d}.parquet"
        self._n += 1
        final = self._ws.root / rel
        tmp = final.with_name(final.name + ".tmp")
        self._days.add(final.parent)  # (before it exists: an abort removes it if it is left empty)
        try:
            with _writing(self._ws.root, final):
                final.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(part, tmp, compression="zstd", compression_level=1, row_group_size=256 * 1024)
                os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)  # (a full disk, Ctrl-C: no stray the next writer may not look for)
            raise
        self._written.setdefault(table, []).append(rel)

    def _finish(self) -> dict[str, list[str]]:
        # Data files must be on disk before the manifest that lists them.
        for files in self._written.values():
            for rel in files:
                with _writing(self._ws.root, self._ws.root / rel):
                    fd = os.open(self._ws.root / rel, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        return self._written

    def _abort(self) -> None:
        """Remove what this transaction wrote: its files, and the day folders it made that are left empty (a
        replace interrupted after writing a hundred days left a hundred empty folders: the next writer looks
        for strays only after a writer that died)."""
        for files in self._written.values():
            for rel in files:
                (self._ws.root / rel).unlink(missing_ok=True)
        _remove_empty_days(self._days)


def _is_file(path: Path, st: os.stat_result | None) -> bool:
    """Whether ``path`` is the file ``st`` was taken of (same device and inode): a renamed temporary."""
    if st is None:
        return False
    try:
        now = os.stat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _remove_empty_days(days: Iterable[Path]) -> None:
    """Remove those of the day folders ``days`` that are empty (a file written meanwhile keeps its folder: a
    folder that is not empty is not removed)."""
    for day in sorted(days, reverse=True):
        with contextlib.suppress(OSError):  # not empty, gone already, or not ours to remove
            day.rmdir()


def _txid() -> str:
    """A writer's id in its files' names: 12 random letters (a hex id all digits, 1 in 280, made with the
    file's number a run of digits that could pass the card-number check: the name was then redacted)."""
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(12))


def _new_id() -> str:
    """A new workspace's or event log's id (the manifest's): random, so that two never share one."""
    return uuid.uuid4().hex[:16]


def opened(ws: object, who: str) -> Workspace:
    """``ws`` if it is a :class:`Workspace`; else the error a library user needs, who passed a path where
    the functions take what ``Workspace.open(path)`` gives (an AttributeError deep inside, before)."""
    if isinstance(ws, Workspace):
        return ws
    shown = f" {str(ws)!r}" if isinstance(ws, str | os.PathLike) else ""
    raise ConfigError(
        f"The 'ws' of {who} must be what Workspace.open(path) gives. Got the {type(ws).__name__}{shown}: "
        f"open it first, ws = Workspace.open({str(ws)!r})."
        if shown
        else f"The 'ws' of {who} must be what Workspace.open(path) gives. Got {type(ws).__name__}."
    )
