"""The decision log: every decision, outcome and review, durable before the response is sent.

One interface (:class:`DecisionLog`), one module per backend: :mod:`payfm.serving.sqlite_log` (the embedded
default, a SQLite file in the workspace in WAL mode with ``synchronous=FULL``) and
:mod:`payfm.serving.postgres_log` (PostgreSQL through psycopg 3). :func:`open_log` picks one from a URL.

Writes go through one writer thread that commits whatever is queued in one transaction (group commit): a
request waits for the commit that holds its record, so a decision is on disk before its response, and one
fsync serves many concurrent requests.

The log is also the journal of the online state: decisions keep the charge payload and outcomes their
payload, each with the sequence number the scorer gave it when it applied it to the features. After a crash,
:meth:`DecisionLog.events_after` replays them in that order on top of the last state snapshot.

Its connections (a pool of read connections, the writer's, and the watchdog that shuts down one whose
statement stalled) are :mod:`payfm.serving.log_connections`'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from payfm.errors import shown_url
from payfm.events.schema import REVIEW_CLOSURES
from payfm.serving.charges import us_to_datetime
from payfm.serving.decision_codec import decode_decision, encode_decision, layout_names
from payfm.serving.decision_codec import dumps as _dumps
from payfm.serving.errors import Conflict, NotFound, not_committed
from payfm.serving.group_commit import GroupCommit
from payfm.serving.log_connections import MAX_IDLE_READS as MAX_IDLE_READS
from payfm.serving.log_connections import LogConnections, _close_quietly

REVIEW_REASONS = REVIEW_CLOSURES
# A closed review's reason as a fraud label: 1 (a fraud label source), 0 (genuine), None (no label).
REVIEW_LABELS: dict[str, int | None] = {
    "approved": 0,
    "refunded": None,
    "refunded_as_fraud": 1,
    "disputed": 1,
}
REVIEW_STATUSES = ("open", "closed")
# What "durable" means when a decision is acknowledged (``--durability``):
#   fsync: the commit is on disk (fsync; survives a power cut or a kernel crash), the default;
#   os:    the commit is in the operating system (survives a kill -9 of the server, not a power cut).
DURABILITY = ("fsync", "os")
# A shared (Redis) state, of features or of a foundation model's embedders, is up to date when the last this
# many charges and counted outcomes of the decision log are in it; else nobody fed it while they were logged
# and it is caught up (features) or loaded again (embedders) from the logs. A prune keeps them.
STALE_CHECK = 1_000


@dataclass(frozen=True)
class DecisionRecord:
    seq: int
    charge_id: str
    created_us: int
    decided_at: str
    outcome: str
    charge: dict[str, Any]  # the normalized charge: what rebuilds the online state
    decision: dict[str, Any]  # the response, with features, reasons, versions and shadow score
    review: bool
    # (charge, decision, the decision's feature layout) as stored (payfm.serving.decision_codec), encoded by
    # the request's thread so the writer thread holds the GIL as little as possible (it commits while the
    # next requests compute); encoded at write time when None.
    encoded: tuple[str, str, str | None] | None = None

    @classmethod
    def of(
        cls,
        seq: int,
        charge_id: str,
        created_us: int,
        decided_at: str,
        outcome: str,
        charge: dict[str, Any],
        decision: dict[str, Any],
        review: bool,
    ) -> DecisionRecord:
        """A record with its JSON encoded now."""
        return cls(
            seq,
            charge_id,
            created_us,
            decided_at,
            outcome,
            charge,
            decision,
            review,
            _encode(charge, decision),
        )


def _encode(charge: dict[str, Any], decision: dict[str, Any]) -> tuple[str, str, str | None]:
    return (_dumps(charge), *encode_decision(decision))


@dataclass(frozen=True)
class OutcomeRecord:
    seq: int
    kind: str  # the event table: disputes, early_fraud_warnings or refunds
    outcome_id: str
    charge_id: str
    created_us: int
    source: str | None  # the label source it feeds (fraud_disputes, efws, refunds), None if none
    applied: bool  # counted in the online features (False: its charge was never seen, or counted already)
    payload: dict[str, Any]
    received_at: str
    appended: bool = False  # True for what the event log never takes as its own row (authorization results)


# The outcome kind of a charge's authorization result (one per charge, its id the charge's): logged with
# the outcomes, replayed with them into the online state, read by `payfm serve export` as its outcome.
AUTHORIZATIONS = "authorizations"


@dataclass(frozen=True)
class ReviewClose:
    """Close a review and, in the same transaction, log its ``reviews`` event (appended to the event log
    after the commit, like an outcome; :meth:`DecisionLog.unappended_outcomes` lists it until then)."""

    charge_id: str
    reason: str
    note: str | None  # None without one, as in the event log's reviews
    closed_at: str
    seq: int = 0
    created_us: int = 0
    event: dict[str, Any] | None = None  # the ``reviews`` event (schema of payfm.events.schema.REVIEWS)


@dataclass(frozen=True)
class MarkAppended:
    kind: str
    outcome_id: str


Record = DecisionRecord | OutcomeRecord | ReviewClose | MarkAppended


def _encoding(r: DecisionRecord) -> tuple[str, str, str | None]:
    return r.encoded or _encode(r.charge, r.decision)


T = TypeVar("T")
PRUNED_THROUGH = "pruned_through"  # meta key: the highest sequence number a prune deleted
PRUNED_NEWEST = "pruned_newest_us"  # meta key: the latest event time (created_us) among the pruned rows


# After the backend lost the writer's connection, a batch is tried again on new connections for this many
# seconds (a failover's few seconds down), then fails.
RECONNECT_S = 5.0

log = logging.getLogger("payfm.serving")


# What export and prune need of a log (an older one's too: every payfm's log had them)
LOG_TABLES = ("decisions", "outcomes", "reviews", "meta")


def new_log_id() -> str:
    """A new decision log's id (random, 16 hex digits), kept in its ``meta`` table from its creation on."""
    return uuid.uuid4().hex[:16]


class DecisionLog(LogConnections):
    """Decisions, outcomes and reviews; SQL shared by the backends (``?`` placeholders per driver)."""

    url: str
    placeholder = "?"
    # On the network (PostgreSQL): a read may wait on it, so a server decides in a worker thread, and a
    # watchdog shuts down a connection whose statement stalled (:meth:`interrupt_stalled`).
    remote = False
    reconnect_s = RECONNECT_S
    close_timeout_s = 30.0  # how long close() waits for the writer to commit what is queued

    def __init__(self) -> None:
        super().__init__()
        self._writer: GroupCommit | None = None
        self._log_id: str | None = None
        self._layouts: set[str] = set()  # feature layouts committed to this log (the writer's)
        self.unwritten = 0  # records the writer left unwritten at close() (it did not finish in time)

    def _write_retried(self, records: Sequence[Record]) -> list[Any]:
        """:meth:`_write_batch`, again on a new connection when the backend lost the one it had (a database
        restart, a failover, an idle connection the server ended: the next decision failed, its request a
        500, though nothing was in flight): at once, then, while new connections fail too, for
        :attr:`reconnect_s` seconds (a review: the one retry of a batch fell in a failover's seconds down,
        and none of its records was logged, though the online state had counted them); not on errors of a
        connection still usable (a statement timeout, a deadlock). The inserts are ON CONFLICT DO NOTHING: a
        batch that committed before the loss was reported is found, not written twice (its outcomes then
        answer as duplicates of themselves)."""
        deadline, pause, tries = None, 0.25, 0
        while True:
            try:
                return self._write_batch(records)
            except self._lost:
                if self._usable(self._wcon):  # the connection is fine (a timeout, a deadlock): no retry
                    raise
                _close_quietly(self._wcon)
                self._wcon = None
                # A commit the database lost with the connection (a crash under synchronous_commit=off, a
                # failover to a replica behind) may have held a layout: written again from now on.
                self._layouts.clear()
                tries += 1
                deadline = deadline or time.monotonic() + self.reconnect_s
                if tries > 1:  # (the first retry at once: a connection the server ended while idle)
                    if time.monotonic() + pause > deadline:
                        raise
                    time.sleep(pause)
                    pause = min(2 * pause, 2.0)

    def _write_batch(self, records: Sequence[Record]) -> list[Any]:
        """Write ``records`` in one transaction; per record a result or an Exception (that record only). The
        feature layouts of its decisions that this log may not hold yet go in the same transaction, first."""
        layouts = {lid for r in records if isinstance(r, DecisionRecord) and (lid := _encoding(r)[2])}
        layouts -= self._layouts

        def work(cur: Any) -> list[Any]:
            for lid in sorted(layouts):
                cur.execute(self._sql(self._INSERT_LAYOUT), (lid, _dumps(layout_names(lid))))
            return [self._apply(cur, r) for r in records]

        con = self._write_connection()
        with self._running_on(con):
            out = self._transaction(con, work)
        self._layouts |= layouts  # (only once committed: a batch rolled back inserts them again next time)
        return out

    @abstractmethod
    def _transaction(self, con: Any, work: Callable[[Any], T]) -> T:
        """``work(cursor)`` in one transaction on ``con``: committed when it returns, rolled back when it
        raises."""

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if any(isinstance(a, str) and "\x00" in a for a in args):
            # No id the log holds has a NUL (ids refuse control characters), and PostgreSQL refuses one in a
            # text parameter: a lookup of such an id (a path's %00) finds nothing, on either backend.
            return []
        try:
            return self._fetch_once(sql, args)
        except self._lost:  # tried once more, on a new connection; the idle ones went to the same server
            self._drop_idle()
            return self._fetch_once(sql, args)

    def _fetch_once(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._reading() as con:
            rows: list[tuple[Any, ...]] = con.execute(self._sql(sql), tuple(args)).fetchall()
            return rows

    def start(self) -> None:
        if self._writer is None:
            self._writer = GroupCommit(self)
        if self.remote:
            self._start_watchdog()

    def close(self) -> None:
        """Commit what is queued (waiting at most :attr:`close_timeout_s` for the writer) and close. A writer
        that does not finish in time is left behind: :attr:`unwritten` says how many records it did not write,
        and an error is logged (a stop said "decision log closed" with records left unwritten)."""
        abandoned, timeout = 0, self.close_timeout_s
        if self._writer is not None:
            abandoned = self._writer.close(timeout)
            self._writer = None
        self._stop_watchdog()
        if abandoned:
            self.unwritten = abandoned
            log.error(
                "the decision log at %s did not commit within %g s: %d record(s) left unwritten (their "
                "requests were not acknowledged, though the online state may count them)",
                shown_url(self.url),
                timeout,
                abandoned,
            )
            # The writer still waits on its connection: shut it down under it, not closed (a connection freed
            # while another thread is inside the driver), so the thread ends.
            self.interrupt_stalled(-1.0)
        elif self._wcon is not None:
            self._wcon.close()
            self._wcon = None
        self._layouts.clear()
        self._drop_idle()

    # ---- writing (through the group commit) ----------------------------------------------------------------
    def submit(self, record: Record) -> Future[Any]:
        """Queue ``record``; the future resolves once committed (DecisionRecord: the stored decision)."""
        self.start()
        assert self._writer is not None
        return self._writer.submit(record)

    def write(self, record: Record, timeout: float = 30.0) -> Any:
        """Queue ``record`` and wait for its commit; a commit not done in ``timeout`` seconds is an
        Unavailable (503: the log did not answer in time; the record may still be committed, and a retry of
        the request finds it)."""
        try:
            return self.submit(record).result(timeout)
        except FutureTimeout:
            raise not_committed(timeout) from None

    def write_busy_s(self) -> float:
        """How long the write in progress has taken so far (0: none): a stalled commit, for ``/healthz``."""
        return 0.0 if self._writer is None else self._writer.busy_s()

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything queued before is committed."""
        if self._writer is not None:
            self._writer.submit(None).result(timeout)

    # Statements used by the backends' _write_batch (one transaction).
    _INSERT_LAYOUT = "INSERT INTO feature_layouts (id, names) VALUES (?, ?) ON CONFLICT (id) DO NOTHING"
    _INSERT_DECISION = (
        "INSERT INTO decisions (charge_id, seq, created_us, decided_at, outcome, charge, decision) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (charge_id) DO NOTHING"
    )
    _INSERT_REVIEW = (
        "INSERT INTO reviews (charge_id, seq, opened_at, status, rule, risk_score) "
        "VALUES (?, ?, ?, 'open', ?, ?) ON CONFLICT (charge_id) DO NOTHING"
    )
    _INSERT_OUTCOME = (
        "INSERT INTO outcomes (kind, outcome_id, charge_id, seq, created_us, source, applied, appended, "
        "payload, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (kind, outcome_id) DO NOTHING"
    )

    def _apply(self, cur: Any, r: Record) -> Any:
        """Execute one record on cursor ``cur`` inside the batch's transaction; returns its result."""
        q = self._sql
        if isinstance(r, DecisionRecord):
            charge_json, decision_json, _ = _encoding(r)
            cur.execute(
                q(self._INSERT_DECISION),
                (
                    r.charge_id,
                    r.seq,
                    r.created_us,
                    r.decided_at,
                    r.outcome,
                    charge_json,
                    decision_json,
                ),
            )
            if cur.rowcount == 0:  # a retry raced the first attempt: the stored decision wins
                row = cur.execute(q("SELECT decision FROM decisions WHERE charge_id = ?"), (r.charge_id,))
                try:
                    return self.decoded(row.fetchone()[0], cur)
                except ValueError as e:  # (its layout missing: this record fails, not the whole batch)
                    return e
            if r.review:
                d = r.decision
                cur.execute(
                    q(self._INSERT_REVIEW),
                    (r.charge_id, r.seq, r.decided_at, d.get("rule"), d.get("risk_score")),
                )
            return r.decision
        if isinstance(r, OutcomeRecord):
            cur.execute(
                q(self._INSERT_OUTCOME),
                (
                    r.kind,
                    r.outcome_id,
                    r.charge_id,
                    r.seq,
                    r.created_us,
                    r.source,
                    int(r.applied),
                    int(r.appended),
                    _dumps(r.payload),
                    r.received_at,
                ),
            )
            return cur.rowcount == 1
        if isinstance(r, ReviewClose):
            cur.execute(
                q(
                    "UPDATE reviews SET status = 'closed', reason = ?, note = ?, closed_at = ?, label = ? "
                    "WHERE charge_id = ? AND status = 'open'"
                ),
                (r.reason, r.note, r.closed_at, REVIEW_LABELS[r.reason], r.charge_id),
            )
            if cur.rowcount == 0:
                row = cur.execute(
                    q("SELECT status FROM reviews WHERE charge_id = ?"), (r.charge_id,)
                ).fetchone()
                if row is None:
                    return NotFound(f"No review for charge '{r.charge_id}'.", field="charge_id")
                return Conflict(f"The review of charge '{r.charge_id}' is already closed.", field="charge_id")
            if r.event is not None:
                cur.execute(
                    q(self._INSERT_OUTCOME),
                    (
                        "reviews",
                        r.charge_id,
                        r.charge_id,
                        r.seq,
                        r.created_us,
                        None,
                        0,
                        0,
                        _dumps(r.event),
                        r.closed_at,
                    ),
                )
            return True
        cur.execute(
            q("UPDATE outcomes SET appended = 1 WHERE kind = ? AND outcome_id = ?"), (r.kind, r.outcome_id)
        )
        return True

    # ---- pruning (payfm.serving.prune) ---------------------------------------------------------------------
    def in_transaction(self, work: Callable[[Any], T]) -> T:
        """``work(cursor)`` in one transaction on a connection of its own, not the group commit's (a prune's
        refusal must not fail the decisions of a batch); ``work`` passes its SQL through :meth:`_sql`."""
        con = self._connect()
        try:
            return self._transaction(con, work)
        finally:
            _close_quietly(con)

    def free_bytes(self) -> int | None:
        """The space deleted rows left for new ones inside the log's storage (a file that does not shrink);
        None where the backend gives it back itself (PostgreSQL's autovacuum)."""
        return None

    def pruned_through(self) -> int:
        """The highest sequence number a prune deleted (0: never pruned): a state snapshot that covers less
        cannot be used (a pruned event after it would be missing from the replay)."""
        rows = self._fetch("SELECT value FROM meta WHERE key = ?", (PRUNED_THROUGH,))
        return int(rows[0][0]) if rows else 0

    def pruned_newest_us(self) -> int | None:
        """The latest event time (``created_us``) among the rows a prune deleted; None: never pruned. A
        catch-up from this log of events created before it may miss pruned ones."""
        rows = self._fetch("SELECT value FROM meta WHERE key = ?", (PRUNED_NEWEST,))
        return int(rows[0][0]) if rows else None

    # ---- reading -------------------------------------------------------------------------------------------
    def get_decision(self, charge_id: str) -> dict[str, Any] | None:
        rows = self._fetch("SELECT decision FROM decisions WHERE charge_id = ?", (charge_id,))
        return self.decoded(rows[0][0]) if rows else None

    def decoded(self, text: str, cur: Any = None) -> dict[str, Any]:
        """A stored decision (a ``decision`` column's JSON) with its features by name again; its layout's
        names read on ``cur`` (inside a transaction) or a read connection, when this process lacks them."""

        def fetch(lid: str) -> str | None:
            sql = self._sql("SELECT names FROM feature_layouts WHERE id = ?")
            rows = cur.execute(sql, (lid,)).fetchall() if cur is not None else self._fetch(sql, (lid,))
            return str(rows[0][0]) if rows else None

        return decode_decision(text, fetch)

    def get_charge(self, charge_id: str) -> dict[str, Any] | None:
        """The normalized charge payload of a decided charge."""
        rows = self._fetch("SELECT charge FROM decisions WHERE charge_id = ?", (charge_id,))
        return json.loads(rows[0][0]) if rows else None

    def get_review(self, charge_id: str) -> dict[str, Any] | None:
        rows = self._fetch(f"SELECT {self._REVIEW_COLS} FROM reviews WHERE charge_id = ?", (charge_id,))
        names = [c.strip() for c in self._REVIEW_COLS.split(",")]
        return dict(zip(names, rows[0], strict=True)) if rows else None

    def outcomes_of(self, charge_id: str) -> list[tuple[str, dict[str, Any]]]:
        """``(kind, payload)`` of every outcome (and review event) logged for ``charge_id``."""
        rows = self._fetch(
            "SELECT kind, payload FROM outcomes WHERE charge_id = ? ORDER BY seq", (charge_id,)
        )
        return [(str(k), json.loads(p)) for k, p in rows]

    def charges_with_outcomes(self, kinds: tuple[str, ...]) -> set[str]:
        """The ids of the charges with an outcome of one of ``kinds`` (refunds, disputes...) logged."""
        marks = ", ".join("?" for _ in kinds)
        rows = self._fetch(f"SELECT DISTINCT charge_id FROM outcomes WHERE kind IN ({marks})", kinds)
        return {str(r[0]) for r in rows}

    def has_outcome(self, kind: str, outcome_id: str) -> bool:
        return bool(
            self._fetch("SELECT 1 FROM outcomes WHERE kind = ? AND outcome_id = ?", (kind, outcome_id))
        )

    def get_outcome(self, kind: str, outcome_id: str) -> dict[str, Any] | None:
        """What the log holds of outcome ``outcome_id`` of table ``kind``: ``{id, charge_id, label_source,
        applied, counted_from}`` (None if it holds none); ``counted_from``: the time it counts from when the
        service dated it later than it was sent (a late outcome), else None."""
        rows = self._fetch(
            "SELECT charge_id, source, applied, created_us, payload FROM outcomes "
            "WHERE kind = ? AND outcome_id = ?",
            (kind, outcome_id),
        )
        if not rows:
            return None
        cid, source, applied, created_us, payload = rows[0]
        late = "reported_us" in (json.loads(payload) if payload else {})
        return {
            "id": outcome_id,
            "charge_id": str(cid),
            "label_source": source,
            "applied": bool(applied),
            "counted_from": us_to_datetime(int(created_us)).isoformat() if late else None,
        }

    def recent_charges(self, n: int, upto: int | None = None) -> tuple[list[str], int | None]:
        """The ids of the last ``n`` decided charges (oldest first; with ``upto``, of those logged at or
        before that sequence number) and the latest charge time (us) of all decided ones, None without any:
        what a shared state's staleness check reads, without the payloads."""
        rows = self._fetch(
            "SELECT charge_id FROM decisions WHERE seq <= ? ORDER BY seq DESC LIMIT ?",
            (2**62 if upto is None else upto, n),
        )
        ids = [str(r[0]) for r in rows]
        latest = self._fetch("SELECT max(created_us) FROM decisions")[0][0]
        return ids[::-1], (int(latest) if latest is not None else None)

    def newest_times(self) -> list[tuple[int, str]]:
        """``(created_us, logged_at)`` of the last decision and of the last outcome logged (by sequence
        number; ``logged_at`` the wall time, ISO 8601), and the latest charge time with its decision's:
        where :class:`payfm.serving.clock.EventClock` starts."""
        rows = self._fetch("SELECT created_us, decided_at FROM decisions ORDER BY seq DESC LIMIT 1")
        rows += self._fetch("SELECT created_us, received_at FROM outcomes ORDER BY seq DESC LIMIT 1")
        rows += self._fetch("SELECT created_us, decided_at FROM decisions ORDER BY created_us DESC LIMIT 1")
        return [(int(t), str(at)) for t, at in rows]

    def recent_outcomes(self, n: int) -> list[tuple[str, str, str, int]]:
        """``(label source, outcome id, charge id, created_us)`` of the last ``n`` outcomes this log's process
        counted in its features (oldest first): what a shared state's staleness check reads."""
        rows = self._fetch(
            "SELECT source, outcome_id, charge_id, created_us FROM outcomes "
            "WHERE applied = 1 AND source IS NOT NULL ORDER BY seq DESC LIMIT ?",
            (n,),
        )
        return [(str(s), str(o), str(c), int(t)) for s, o, c, t in rows][::-1]

    def log_id(self) -> str:
        """This log's id, made when its tables were created: a state snapshot names the log whose sequence
        numbers it counts (another log numbers its events from 1 again)."""
        if self._log_id is None:
            self._log_id = str(self._fetch("SELECT value FROM meta WHERE key = 'log_id'")[0][0])
        return self._log_id

    def max_seq(self) -> int:
        """The highest sequence number logged, pruned rows included (a server numbers its events after it:
        one reused would be taken for covered by a snapshot)."""
        rows = self._fetch(
            "SELECT max(s) FROM (SELECT max(seq) AS s FROM decisions "
            "UNION ALL SELECT max(seq) FROM outcomes) t"
        )
        return max(int(rows[0][0] or 0), self.pruned_through())

    def count(self, table: str) -> int:
        if table not in ("decisions", "outcomes", "reviews"):
            raise ValueError(table)
        return int(self._fetch(f"SELECT count(*) FROM {table}")[0][0])

    def events_after(
        self, seq: int, batch: int = 5000, not_before_us: int | None = None
    ) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """``(seq, kind, payload)`` after ``seq`` in sequence order: kind ``charge`` or a label source; with
        ``not_before_us``, only the events created at or after it (left out in SQL: their payloads are not
        read)."""
        # Pages follow (seq, tie): servers sharing one log number their events each from its own count, so
        # several events can share a seq, and a page ending inside such a run must not skip the rest of it.
        # The first page starts after all of seq's events (no tie key: a sentinel such as "~" sorts after
        # every key in the C collation only; in PostgreSQL's en-US it sorts first).
        last, tie = seq, None
        since = -(2**62) if not_before_us is None else int(not_before_us)
        while True:
            after = "seq > ?" if tie is None else "(seq > ? OR (seq = ? AND t > ?))"
            rows = self._fetch(
                "SELECT seq, k, p, t FROM ("
                "SELECT seq, 'charge' AS k, charge AS p, 'c:' || charge_id AS t FROM decisions "
                "WHERE seq >= ? AND created_us >= ? "
                "UNION ALL SELECT seq, source AS k, payload AS p, 'o:' || kind || ':' || outcome_id AS t "
                f"FROM outcomes WHERE seq >= ? AND created_us >= ? AND source IS NOT NULL) u WHERE {after} "
                "ORDER BY seq, t LIMIT ?",
                (last, since, last, since, *((last,) if tie is None else (last, last, tie)), batch),
            )
            for s, k, p, _ in rows:
                yield int(s), str(k), json.loads(p)
            if len(rows) < batch:
                return
            last, tie = int(rows[-1][0]), str(rows[-1][3])

    def decided(self, batch: int = 5000, upto: int | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(outcome, charge payload)`` of every logged decision (with ``upto``, those logged at or before
        that sequence number), in ``(seq, charge_id)`` order; ``outcome`` is the service's: authorized,
        blocked, manual_review or request_3ds. A charge whose authorization result was reported after the
        decision carries it (its ``outcome`` and ``decline_code``)."""
        last, tie = -(2**62), ""
        top = 2**62 if upto is None else upto
        while True:
            rows = self._fetch(
                "SELECT d.seq, d.charge_id, d.outcome, d.charge, a.payload FROM decisions d "
                f"LEFT JOIN outcomes a ON a.kind = '{AUTHORIZATIONS}' AND a.outcome_id = d.charge_id "
                # d.seq >= ?: a range of the seq index
                "WHERE d.seq >= ? AND d.seq <= ? AND (d.seq > ? OR d.charge_id > ?) "
                "ORDER BY d.seq, d.charge_id LIMIT ?",
                (last, top, last, tie, batch),
            )
            for _, _, outcome, payload, result in rows:
                charge = json.loads(payload)
                if result is not None and outcome != "blocked":  # (blocked: never sent for authorization)
                    reported = json.loads(result)
                    charge["outcome"], charge["decline_code"] = reported["outcome"], reported["decline_code"]
                yield str(outcome), charge
            if len(rows) < batch:
                return
            last, tie = int(rows[-1][0]), str(rows[-1][1])

    def unappended_outcomes(self) -> list[tuple[str, dict[str, Any]]]:
        rows = self._fetch("SELECT kind, payload FROM outcomes WHERE appended = 0 ORDER BY seq")
        return [(str(k), json.loads(p)) for k, p in rows]

    _REVIEW_COLS = "charge_id, status, opened_at, rule, risk_score, reason, note, closed_at, label"

    def reviews(
        self,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
        after: tuple[int, str] | None = None,
        charge_id: str | None = None,
        *,
        rule: str | None = None,
        min_risk_score: int | None = None,
    ) -> list[dict[str, Any]]:
        """Reviews in ``(seq, charge_id)`` order, optionally of one status; ``limit``/``offset`` page through
        them, or ``after`` (a review's ``(seq, charge_id)``: those after it, so a queue that shrinks as it is
        worked skips none; two servers may give two reviews one seq); ``charge_id``: that charge's only;
        ``rule``, ``min_risk_score``: those the rule sent, those scored at least that. Each comes with its
        charge's fields and its decision's reasons (``charge``, ``reasons``)."""
        conditions, args = self._review_filter(status, charge_id, rule, min_risk_score)
        if after is not None:  # (the comparison and the order by one collation: the database's)
            conditions.append("(r.seq > ? OR (r.seq = ? AND r.charge_id > ?))")
            args += [after[0], after[0], after[1]]
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        cols = ", ".join(f"r.{c.strip()}" for c in self._REVIEW_COLS.split(","))
        rows = self._fetch(
            f"SELECT {cols}, d.charge, d.decision FROM reviews r LEFT JOIN decisions d "
            f"ON d.charge_id = r.charge_id {where} ORDER BY r.seq, r.charge_id LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        names = [c.strip() for c in self._REVIEW_COLS.split(",")]
        out = []
        for *review, charge, decision in rows:
            item = dict(zip(names, review, strict=True))
            item["charge"] = json.loads(charge) if charge is not None else None
            decided = json.loads(decision) if decision is not None else {}
            item["risk_level"] = decided.get("risk_level")  # (the score is the review's own column)
            item["reasons"] = decided.get("reasons", [])
            out.append(item)
        return out

    @staticmethod
    def _review_filter(
        status: str | None, charge_id: str | None, rule: str | None, min_risk_score: int | None
    ) -> tuple[list[str], list[Any]]:
        """The conditions (on ``reviews r``) and arguments that keep the reviews :meth:`reviews` pages."""
        conditions: list[str] = ["r.status = ?"] if status else []  # (None or "": both)
        args: list[Any] = [status] if status else []
        for column, value in (("r.charge_id = ?", charge_id), ("r.rule = ?", rule)):
            if value is not None:
                conditions.append(column)
                args.append(value)
        if min_risk_score is not None:
            conditions.append("r.risk_score >= ?")
            args.append(min_risk_score)
        return conditions, args

    def review_count(
        self, status: str | None = None, *, rule: str | None = None, min_risk_score: int | None = None
    ) -> int:
        """How many reviews :meth:`reviews` pages through with these filters (the queue's length)."""
        conditions, args = self._review_filter(status, None, rule, min_risk_score)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self._fetch(f"SELECT count(*) FROM reviews r {where}", args)
        return int(rows[0][0]) if rows else 0  # (none: an argument no review can hold, a NUL)

    def review_seq(self, charge_id: str) -> int | None:
        """The ``seq`` of ``charge_id``'s review (where a page that starts after it starts), None without."""
        rows = self._fetch("SELECT seq FROM reviews WHERE charge_id = ?", (charge_id,))
        return int(rows[0][0]) if rows else None

    def review_labels(self) -> list[tuple[str, int]]:
        """(charge_id, label) of closed reviews that are label sources (refunded_as_fraud, disputed: 1)."""
        rows = self._fetch("SELECT charge_id, label FROM reviews WHERE label IS NOT NULL ORDER BY seq")
        return [(str(c), int(v)) for c, v in rows]


def open_log(spec: str, workspace_root: Path, durability: str = "fsync", create: bool = True) -> DecisionLog:
    """``sqlite`` (the default: ``<workspace>/serving/decisions.db``), ``sqlite:///path`` or ``postgresql://...``;
    ``durability`` one of :data:`DURABILITY`; ``create=False`` refuses, unchanged, a file or database that
    holds no decision log (its tables are made by a server's first start)."""
    from payfm.serving.errors import InvalidInput

    if durability not in DURABILITY:
        raise InvalidInput(
            f"The durability must be one of {', '.join(DURABILITY)}. Got {durability!r}.", field="durability"
        )
    if spec.startswith("sqlite:") and (not spec.startswith("sqlite:///") or spec == "sqlite:///"):
        raise InvalidInput(
            "The decision log must be 'sqlite', 'sqlite:///<path>' (a path from the working folder) or "
            f"'sqlite:////<absolute path>'. Got {shown_url(spec)!r}.",
            field="decision_log",
        )
    if spec == "sqlite" or spec.startswith("sqlite:"):
        from payfm.serving.sqlite_log import SQLiteDecisionLog

        path = Path(spec[len("sqlite:///") :]) if spec.startswith("sqlite:///") else None
        path = path or workspace_root / "serving" / "decisions.db"
        return SQLiteDecisionLog(path, durability=durability, create=create)
    if spec.startswith(("postgresql://", "postgres://")):
        from payfm.serving.postgres_log import PostgresDecisionLog

        return PostgresDecisionLog(spec, durability=durability, create=create)
    raise InvalidInput(
        "The decision log must be 'sqlite', 'sqlite:///<path>' or 'postgresql://...'. "
        f"Got {shown_url(spec)!r}.",
        field="decision_log",
    )


async def settled(pending: Future[Any], timeout: float) -> bool:
    """Wait until ``pending`` (resolved by another thread) is done, at most ``timeout`` seconds, without
    blocking the loop: True when done. A timeout or a cancelled request leaves ``pending`` alone (a commit is
    never cancelled). One loop future and one timer: ``asyncio.wait_for(asyncio.shield(wrap_future(...)))``
    made three futures and a task per decision on the hot path."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[bool] = loop.create_future()

    def settle(done: bool) -> None:
        if not waiter.done():
            waiter.set_result(done)

    def done(_: Future[Any]) -> None:  # on the log's writer thread (or here, when done already)
        with suppress(RuntimeError):  # a loop closed while the commit ran: nobody waits now
            loop.call_soon_threadsafe(settle, True)

    pending.add_done_callback(done)
    timer = loop.call_later(timeout, settle, False)
    try:
        return await waiter
    finally:
        timer.cancel()
