"""Pruning the decision log: old rows whose facts the event log holds, archived to Parquet, then deleted.

The decision log grows with every decision (its charge, features and reasons: a few KB each). What reads a
row needs it for a while only, or finds the same facts in the event log once they are there: the outcome
endpoints look a charge up in the event log when the decision log has none, a restart rebuilds the state
from the last snapshot plus the log after it (or from the event log plus the whole decision log), and the
foundation model's embedders warm from the event log plus the decisions it lacks. So a prune deletes:

- a decision whose charge the event log holds (``payfm serve export`` appended it), whose review is not open,
  whose outcomes are all in the event log too (appended), and which, with all of them, was created more than
  ``keep_days`` before the newest charge the log holds; its closed review and its outcomes go with it;
- an outcome of a charge the service did not decide (the event log's own), appended, created before then.

Never a row logged after the newest state snapshot of this log (a restart replays those on top of it), nor
the newest :data:`~payfm.serving.decision_log.STALE_CHECK` decisions and counted outcomes (what a shared
state's staleness check reads). Work goes in batches of :data:`BATCH` decisions: each is written to the
archive first (``<workspace>/serving/archive/<log id>/<table>/<part>.parquet``, one file per table, synced),
then deleted in one transaction that records the part in the log (``meta``: ``pruned:<part>``) and raises
``pruned_through``, the highest sequence number pruned. A part whose transaction did not commit (a crash,
Ctrl-C) is removed at the next prune: its rows are still in the log. A server does not restore a snapshot that
covers less than ``pruned_through``: it rebuilds from the event log and the decision log, which hold every
pruned row between them. Servers go on deciding meanwhile (a batch's transaction takes milliseconds).

Example::

    report = prune(ws, open_log("sqlite", ws.root), keep_days=180, dry_run=True)
    report.pruned["decisions"], report.kept
"""

from __future__ import annotations

import fcntl
import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from payfm import interrupts
from payfm.errors import ConfigError
from payfm.events.workspace import Workspace, atomic_write_bytes, fsync_dir
from payfm.serving.decision_codec import dumps
from payfm.serving.decision_log import PRUNED_NEWEST, PRUNED_THROUGH, STALE_CHECK, DecisionLog
from payfm.serving.event_lookup import matching_rows_of
from payfm.serving.snapshot_child import newest_snapshot_seq

log = logging.getLogger(__name__)

DAY_US = 86_400 * 1_000_000
KEEP_DAYS = 180  # disputes mostly come within 120 days; a Redis state keeps a charge's fields 180
MAX_KEEP_DAYS = 36_500
BATCH = 2_000  # decisions looked at, archived and deleted at a time (one transaction each)
_IN = 400  # keys per IN (...): 800 variables for pairs, under SQLite's oldest limit (999)

# Why an old decision is kept, in the order checked (each one counted under the first that holds).
OPEN_REVIEW = "its review is open"
UNAPPENDED = "an outcome of it is not in the event log yet"
LATER_OUTCOME = "an outcome of it is more recent (within the kept days, or after the last snapshot)"
NOT_EXPORTED = "its charge is not in the event log (`payfm serve export` appends it)"
AFTER_SNAPSHOT = "logged after the last state snapshot, or among the newest"
REASONS = (OPEN_REVIEW, UNAPPENDED, LATER_OUTCOME, NOT_EXPORTED, AFTER_SNAPSHOT)

PRUNED_PART = "pruned:"  # the log's meta key of a committed archive part (value: its counts)

_S, _I, _B = pa.string(), pa.int64(), pa.bool_()
ARCHIVE_SCHEMAS = {
    "decisions": pa.schema(
        [
            ("charge_id", _S),
            ("seq", _I),
            ("created_us", _I),
            ("decided_at", _S),
            ("outcome", _S),
            ("charge", _S),  # JSON, as in the log
            ("decision", _S),  # JSON, its features an object (payfm.serving.decision_codec)
        ]
    ),
    "outcomes": pa.schema(
        [
            ("kind", _S),
            ("outcome_id", _S),
            ("charge_id", _S),
            ("seq", _I),
            ("created_us", _I),
            ("source", _S),
            ("applied", _B),
            ("appended", _B),
            ("payload", _S),
            ("received_at", _S),
        ]
    ),
    "reviews": pa.schema(
        [
            ("charge_id", _S),
            ("seq", _I),
            ("opened_at", _S),
            ("status", _S),
            ("rule", _S),
            ("risk_score", _I),
            ("reason", _S),
            ("note", _S),
            ("closed_at", _S),
            ("label", _I),
        ]
    ),
}


@dataclass(frozen=True)
class PrunedPart:
    """Rows archived as part ``name``, to delete in one transaction; ``max_seq``: the highest sequence
    number among them."""

    name: str
    decisions: tuple[str, ...]  # charge ids
    outcomes: tuple[tuple[str, str], ...]  # (kind, outcome id)
    reviews: tuple[str, ...]  # charge ids (closed reviews)
    max_seq: int
    newest_us: int  # the latest event time (created_us) among them


class PruneRaced(Exception):
    """Some rows of a :class:`PrunedPart` were gone when it was deleted (another prune took them): the
    transaction was rolled back, nothing deleted."""


@dataclass
class PruneReport:
    """What a prune did (or, ``dry_run``, would do)."""

    keep_days: float
    dry_run: bool
    archive: Path  # <workspace>/serving/archive/<log id>
    newest_us: int | None = None  # the newest charge the log holds (None: no decisions)
    cutoff_us: int | None = None  # rows created before it were looked at
    max_seq: int = 0  # rows logged after it are kept (the last snapshot, the newest rows)
    snapshot_seq: int | None = None  # the newest state snapshot of this log, None without one
    old: int = 0  # decisions created before the cutoff
    looked: int = 0  # of them, looked at so far
    pruned: Counter[str] = field(default_factory=Counter)  # rows by table: decisions, outcomes, reviews
    kept: Counter[str] = field(default_factory=Counter)  # old decisions kept, by reason (the constants above)
    parts: list[str] = field(default_factory=list)  # archive parts written and committed
    removed: list[str] = field(default_factory=list)  # parts of an earlier prune that did not commit
    free_bytes: int | None = None  # a SQLite log: its freed pages, which new rows reuse (the file keeps them)


def prune(
    ws: Workspace,
    decisions: DecisionLog,
    *,
    keep_days: float = KEEP_DAYS,
    dry_run: bool = False,
    keep_newest: int = STALE_CHECK,
    batch: int = BATCH,
    progress: Callable[[PruneReport], None] | None = None,
) -> PruneReport:
    """Archive and delete the rows of ``decisions`` (the log of servers on workspace ``ws``) that nothing
    needs any more (the module's docstring says which); ``dry_run``: count them, change nothing.
    ``progress`` is called with the report after each batch. Returns the report."""
    if not 0 <= keep_days <= MAX_KEEP_DAYS:
        raise ConfigError(
            f"keep_days must be a number of days from 0 to {MAX_KEEP_DAYS:,}. Got {keep_days!r}."
        )
    if keep_newest < 0 or batch < 1:
        raise ConfigError(f"keep_newest must be 0 or more and batch 1 or more. Got {keep_newest}, {batch}.")
    report = PruneReport(keep_days, dry_run, ws.root / "serving" / "archive" / decisions.log_id())
    with nullcontext() if dry_run else _one_prune(report.archive):  # (a dry run writes nothing)
        if not dry_run:
            report.removed = _remove_uncommitted(report.archive, pruned_parts(decisions))
        newest = decisions._fetch("SELECT max(created_us) FROM decisions")[0][0]
        if newest is None:
            return report
        report.newest_us = int(newest)
        cutoff = report.cutoff_us = int(newest) - int(keep_days * DAY_US)
        report.snapshot_seq = newest_snapshot_seq(ws.root / "serving" / "state", decisions.log_id())
        report.max_seq = _max_seq(decisions, report.snapshot_seq, keep_newest)
        count = "SELECT count(*) FROM decisions WHERE created_us < ?"
        report.old = int(decisions._fetch(count, (cutoff,))[0][0])
        late = int(decisions._fetch(count + " AND seq > ?", (cutoff, report.max_seq))[0][0])
        if late:
            report.kept[AFTER_SNAPSHOT] += late
        report.looked = late
        for page in _old_decisions(decisions, cutoff, report.max_seq, batch):
            interrupts.check()
            report.looked += len(page)
            ids = _classify(ws, page, report.kept)
            if ids:
                _prune_part(decisions, report, _rows_of(decisions, ids), decided=True)
            if progress is not None:
                progress(report)
        for keys in _old_outcomes(decisions, cutoff, report.max_seq, batch):
            interrupts.check()
            _prune_part(decisions, report, _outcome_rows(decisions, keys), decided=False)
            if progress is not None:
                progress(report)
        report.free_bytes = decisions.free_bytes()
    return report


@contextmanager
def _one_prune(archive: Path) -> Iterator[None]:
    """One prune at a time per workspace and log: another one is refused (it would take the same rows, and
    its cleanup remove this one's parts before they commit)."""
    archive.mkdir(parents=True, exist_ok=True)
    with open(archive / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"Another prune of this decision log is running (it holds {archive / '.lock'})."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_uncommitted(archive: Path, committed: set[str]) -> list[str]:
    """Remove the archive files of parts the log does not record as pruned (their delete never committed:
    the rows are still in the log); returns their names."""
    removed: set[str] = set()
    for table in ARCHIVE_SCHEMAS:
        for f in (archive / table).glob("*.parquet"):
            if f.stem not in committed:
                f.unlink()
                removed.add(f.stem)
        for tmp in (archive / table).glob(".*.tmp"):  # an atomic write interrupted (its writer is gone)
            tmp.unlink(missing_ok=True)
    for name in sorted(removed):
        log.warning("removed archive part %s: its prune did not commit (its rows are still in the log)", name)
    return sorted(removed)


def _max_seq(decisions: DecisionLog, snapshot_seq: int | None, keep_newest: int) -> int:
    """The highest sequence number a prune may take: below the newest ``keep_newest`` decisions and counted
    outcomes, and not after the newest state snapshot (when there is one)."""
    bound = 2**62 if snapshot_seq is None else snapshot_seq
    if keep_newest:
        for sql in (
            "SELECT seq FROM decisions ORDER BY seq DESC LIMIT ?",
            "SELECT seq FROM outcomes WHERE applied = 1 AND source IS NOT NULL ORDER BY seq DESC LIMIT ?",
        ):
            rows = decisions._fetch(sql, (keep_newest,))
            if rows:
                bound = min(bound, int(rows[-1][0]) - 1)
    return bound


_OLD_DECISIONS = (
    "SELECT d.charge_id, "
    "EXISTS (SELECT 1 FROM reviews r WHERE r.charge_id = d.charge_id AND r.status = 'open'), "
    "EXISTS (SELECT 1 FROM outcomes o WHERE o.charge_id = d.charge_id AND o.appended = 0), "
    "EXISTS (SELECT 1 FROM outcomes o WHERE o.charge_id = d.charge_id AND (o.created_us >= ? OR o.seq > ?)), "
    # d.seq >= ?: a range of the seq index (each page reads from where the last ended, not from the start)
    "d.seq FROM decisions d WHERE d.created_us < ? AND d.seq <= ? AND d.seq >= ? AND (d.seq > ? OR "
    "(d.seq = ? AND d.charge_id > ?)) ORDER BY d.seq, d.charge_id LIMIT ?"
)


def _old_decisions(
    decisions: DecisionLog, cutoff: int, max_seq: int, batch: int
) -> Iterator[list[tuple[str, bool, bool, bool]]]:
    """Pages of ``(charge_id, open review, an outcome not appended, an outcome more recent)`` of the
    decisions created before ``cutoff`` and logged at or before ``max_seq``, in (seq, charge_id) order."""
    last, tie = -(2**62), ""
    while True:
        args = (cutoff, max_seq, cutoff, max_seq, last, last, last, tie, batch)
        rows = decisions._fetch(_OLD_DECISIONS, args)
        if rows:
            yield [(str(c), bool(o), bool(u), bool(r)) for c, o, u, r, _ in rows]
        if len(rows) < batch:
            return
        last, tie = int(rows[-1][4]), str(rows[-1][0])


def _classify(ws: Workspace, page: Sequence[tuple[str, bool, bool, bool]], kept: Counter[str]) -> list[str]:
    """The ids of ``page`` to prune; the others counted in ``kept`` by why."""
    candidates = []
    for cid, open_review, unappended, later in page:
        if open_review:
            kept[OPEN_REVIEW] += 1
        elif unappended:
            kept[UNAPPENDED] += 1
        elif later:
            kept[LATER_OUTCOME] += 1
        else:
            candidates.append(cid)
    found = matching_rows_of(ws, "charges", "charge_id", candidates, ()) if candidates else {}
    exported = [cid for cid in candidates if found[cid]]
    if len(exported) < len(candidates):
        kept[NOT_EXPORTED] += len(candidates) - len(exported)
    return exported


def _chunks(keys: Sequence[Any]) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """``keys`` (ids, or pairs of ids) :data:`_IN` at a time: each chunk's ``?`` marks and arguments."""
    for i in range(0, len(keys), _IN):
        chunk = keys[i : i + _IN]
        pairs = isinstance(chunk[0], tuple)
        marks = ", ".join("(?, ?)" if pairs else "?" for _ in chunk)
        yield marks, tuple(v for k in chunk for v in k) if pairs else tuple(chunk)


def _select(decisions: DecisionLog, table: str, where: str, keys: Sequence[Any]) -> list[dict[str, Any]]:
    """The rows of ``table`` (the archive's columns) whose ``where`` (with one ``{marks}``) holds, read
    :data:`_IN` keys at a time."""
    cols = ARCHIVE_SCHEMAS[table].names
    out: list[dict[str, Any]] = []
    for marks, args in _chunks(keys):
        sql = f"SELECT {', '.join(cols)} FROM {table} WHERE {where.format(marks=marks)}"
        out += [dict(zip(cols, row, strict=True)) for row in decisions._fetch(sql, args)]
    flags = [f.name for f in ARCHIVE_SCHEMAS[table] if f.type == pa.bool_()]  # (SQLite: 0 and 1)
    for row in out:
        row.update({c: bool(row[c]) for c in flags})
    return out


@dataclass
class _Rows:
    decisions: list[dict[str, Any]]
    outcomes: list[dict[str, Any]]
    reviews: list[dict[str, Any]]

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        return {"decisions": self.decisions, "outcomes": self.outcomes, "reviews": self.reviews}


def _rows_of(decisions: DecisionLog, ids: list[str]) -> _Rows:
    """The rows of decided charges ``ids``: their decisions, outcomes and reviews."""
    return _Rows(
        _select(decisions, "decisions", "charge_id IN ({marks})", ids),
        _select(decisions, "outcomes", "charge_id IN ({marks})", ids),
        _select(decisions, "reviews", "charge_id IN ({marks})", ids),
    )


def _prune_part(decisions: DecisionLog, report: PruneReport, rows: _Rows, decided: bool) -> None:
    """Archive ``rows`` as one part, then delete them; a charge that changed since it was classified (an
    outcome logged for it meanwhile, not yet appended or more recent; checked again in the delete's
    transaction, and the part written again without it) is kept whole."""
    cutoff, max_seq = report.cutoff_us or 0, report.max_seq
    if decided:
        changed = {
            str(o["charge_id"])
            for o in rows.outcomes
            if not o["appended"] or o["created_us"] >= cutoff or o["seq"] > max_seq
        }
        changed |= {str(r["charge_id"]) for r in rows.reviews if r["status"] != "closed"}
        rows = _without(rows, changed, report)
    if report.dry_run:
        _count(rows, report)
        return
    for d in rows.decisions:  # the archive is self-contained: features by name, not by the log's layout id
        d["decision"] = dumps(decisions.decoded(d["decision"]))
    for _ in range(3):
        if not (rows.decisions or rows.outcomes):
            return
        name = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
        files = [_write_part(report.archive, t, name, part) for t, part in rows.tables().items() if part]
        for folder in (report.archive, report.archive.parent, report.archive.parent.parent):  # (maybe new)
            fsync_dir(folder)
        part = PrunedPart(
            name,
            tuple(str(r["charge_id"]) for r in rows.decisions),
            tuple((str(r["kind"]), str(r["outcome_id"])) for r in rows.outcomes),
            tuple(str(r["charge_id"]) for r in rows.reviews),
            max(int(r["seq"]) for t in rows.tables().values() for r in t),
            max(int(r["created_us"]) for r in (*rows.decisions, *rows.outcomes)),
        )
        interrupts.check()  # (Ctrl-C before the delete: the part is removed at the next prune)
        try:
            delete_part(decisions, part)
        except (PruneRaced, PartChanged) as e:  # rolled back: nothing deleted, the files go
            for f in files:
                f.unlink(missing_ok=True)
            if isinstance(e, PruneRaced):
                raise ConfigError(
                    f"Another prune deleted some of these rows meanwhile ({e}): run it again, from one place "
                    "only."
                ) from None
            rows = _without(rows, e.charges, report)
            continue
        report.parts.append(name)
        _count(rows, report)
        return
    raise ConfigError(
        "The decision log's rows kept changing under the prune (servers logging outcomes of old "
        "charges): run it again."
    )


def _without(rows: _Rows, charges: set[str], report: PruneReport) -> _Rows:
    """``rows`` without those of ``charges`` (counted as kept: an outcome of theirs is more recent)."""
    if not charges:
        return rows
    report.kept[LATER_OUTCOME] += len({str(r["charge_id"]) for r in rows.decisions} & charges)
    return _Rows(*([r for r in t if str(r["charge_id"]) not in charges] for t in rows.tables().values()))


def _count(rows: _Rows, report: PruneReport) -> None:
    for table, part in rows.tables().items():
        if part:
            report.pruned[table] += len(part)


class PartChanged(Exception):
    """Outcomes or reviews of ``charges`` were logged after their part was archived: rolled back."""

    def __init__(self, charges: set[str]) -> None:
        super().__init__(f"{len(charges)} charges changed")
        self.charges = charges


def delete_part(decisions: DecisionLog, part: PrunedPart) -> None:
    """Delete ``part``'s rows (archived already) and record it in the log's ``meta`` (``pruned:<name>``;
    ``pruned_through`` and ``pruned_newest_us`` raised to its ``max_seq`` and ``newest_us``), in one
    transaction. Every row must still be there, else :class:`PruneRaced`; no outcome or review of its
    charges may have been logged since it was read, else :class:`PartChanged`; either way nothing is
    deleted. On SQLite the transaction holds the log's write lock from its start, so the check is exact; on
    PostgreSQL (no table lock: it deadlocked with the servers' transactions) an outcome committed between
    the check and the delete outlives its decision, whose charge the event log holds, as for an outcome of
    an imported charge."""
    counts = {"decisions": len(part.decisions), "outcomes": len(part.outcomes), "reviews": len(part.reviews)}
    q = decisions._sql

    def work(cur: Any) -> None:
        archived, changed = set(part.outcomes), set()
        for marks, args in _chunks(part.decisions):
            where = f"charge_id IN ({marks})"
            for kind, oid, cid in cur.execute(
                q(f"SELECT kind, outcome_id, charge_id FROM outcomes WHERE {where}"), args
            ).fetchall():
                if (str(kind), str(oid)) not in archived:
                    changed.add(str(cid))
            sql = f"SELECT charge_id FROM reviews WHERE {where} AND status <> 'closed'"
            changed |= {str(r[0]) for r in cur.execute(q(sql), args).fetchall()}
        if changed:
            raise PartChanged(changed)
        deleted = dict.fromkeys(counts, 0)
        for table, keys in (("decisions", part.decisions), ("reviews", part.reviews)):
            for marks, args in _chunks(keys):
                cur.execute(q(f"DELETE FROM {table} WHERE charge_id IN ({marks})"), args)
                deleted[table] += cur.rowcount
        for marks, args in _chunks(part.outcomes):
            cur.execute(q(f"DELETE FROM outcomes WHERE (kind, outcome_id) IN ({marks})"), args)
            deleted["outcomes"] += cur.rowcount
        if deleted != counts:
            raise PruneRaced(f"archive part {part.name}: deleted {deleted}, archived {counts}")
        for key, value in ((PRUNED_THROUGH, part.max_seq), (PRUNED_NEWEST, part.newest_us)):
            cur.execute(q(_RAISE), (key, str(value)))  # (the max taken by the upsert: atomic)
        cur.execute(
            q("INSERT INTO meta (key, value) VALUES (?, ?)"), (PRUNED_PART + part.name, json.dumps(counts))
        )

    decisions.in_transaction(work)


# A meta key raised to a value (both integers as text), in one statement: two prunes of one PostgreSQL log
# reading then writing it could lower it.
_RAISE = (
    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = CASE WHEN "
    "CAST(meta.value AS BIGINT) < CAST(excluded.value AS BIGINT) THEN excluded.value ELSE meta.value END"
)


def pruned_parts(decisions: DecisionLog) -> set[str]:
    """The names of the archive parts whose rows a prune deleted (committed)."""
    rows = decisions._fetch("SELECT key FROM meta WHERE key LIKE ?", (PRUNED_PART + "%",))
    return {str(r[0])[len(PRUNED_PART) :] for r in rows}


def _write_part(archive: Path, table: str, name: str, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` of ``table`` to ``archive/<table>/<name>.parquet``, synced with its folder (the rows
    are deleted next: the archive must be on disk first; the caller syncs the folders above)."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=ARCHIVE_SCHEMAS[table]), sink, compression="zstd")
    path = archive / table / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())  # (its folder synced)
    return path


_OLD_OUTCOMES = (
    "SELECT o.kind, o.outcome_id, o.seq FROM outcomes o WHERE o.appended = 1 AND o.created_us < ? "
    "AND o.seq <= ? AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.charge_id = o.charge_id) "
    "AND o.seq >= ? AND (o.seq > ? OR (o.seq = ? AND (o.kind > ? OR (o.kind = ? AND o.outcome_id > ?)))) "
    "ORDER BY o.seq, o.kind, o.outcome_id LIMIT ?"
)


def _old_outcomes(
    decisions: DecisionLog, cutoff: int, max_seq: int, batch: int
) -> Iterator[list[tuple[str, str]]]:
    """Pages of ``(kind, outcome_id)`` of the appended outcomes of charges the service did not decide,
    created before ``cutoff`` and logged at or before ``max_seq``."""
    last, kind, oid = -(2**62), "", ""
    while True:
        args = (cutoff, max_seq, last, last, last, kind, kind, oid, batch)
        rows = decisions._fetch(_OLD_OUTCOMES, args)
        if rows:
            yield [(str(k), str(o)) for k, o, _ in rows]
        if len(rows) < batch:
            return
        last, kind, oid = int(rows[-1][2]), str(rows[-1][0]), str(rows[-1][1])


def _outcome_rows(decisions: DecisionLog, keys: list[tuple[str, str]]) -> _Rows:
    """The rows of outcomes ``keys`` still appended and without a decision (one may have come meanwhile)."""
    rows = _select(decisions, "outcomes", "(kind, outcome_id) IN ({marks})", keys)
    charges = [str(r["charge_id"]) for r in rows]
    decided = {
        str(d["charge_id"]) for d in _select(decisions, "decisions", "charge_id IN ({marks})", charges)
    }
    return _Rows([], [r for r in rows if r["appended"] and str(r["charge_id"]) not in decided], [])
