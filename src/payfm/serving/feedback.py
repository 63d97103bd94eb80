"""What comes back after a decision: outcome events (disputes, early fraud warnings, refunds) and review
closures, recorded in the decision log, applied to the label-aware online features and appended to the
workspace's event log, each exactly once.

:class:`FeedbackMixin` holds these methods of :class:`payfm.serving.scorer.Scorer`; it uses the scorer's
state lock, sequence numbers, decision log, online features and workspace.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from payfm.errors import WorkspaceBusy
from payfm.events.schema import ID_COLUMNS, SCHEMAS
from payfm.events.validate import ValidationError, validate_events
from payfm.events.workspace import Workspace
from payfm.features.definitions import AUTHORIZATION
from payfm.features.online import OnlineFeatures
from payfm.serving.authorizations import AuthorizationsMixin
from payfm.serving.charges import (
    refuse_card_numbers,
    refuse_untimely,
    refuse_wrong_types,
    to_us,
    us_to_datetime,
    us_to_iso,
)
from payfm.serving.decision_log import (
    REVIEW_LABELS,
    REVIEW_REASONS,
    DecisionLog,
    MarkAppended,
    OutcomeRecord,
    ReviewClose,
)
from payfm.serving.errors import Conflict, InvalidInput, NotFound, Unavailable, backend_failure, shown
from payfm.serving.event_lookup import matching, matching_rows
from payfm.serving.money_claims import charge_of_payload, per_charge
from payfm.serving.outcome_checks import (
    OUTCOME_TABLES,
    another_outcome,
    appendable,
    duplicate_answer,
    id_conflict,
    implied_outcome,
    invalid_outcome,
    python_ints,
    refuse_review_texts,
    refuse_wrong_outcome_types,
    refused_at_start,
    uncaptured,
    unfollowed,
    unlike_its_charge,
)
from payfm.serving.review_queue import closed_again, review_item, review_page
from payfm.serving.settles import Settles

if TYPE_CHECKING:
    from payfm.serving.bundle import Bundle
    from payfm.serving.clock import EventClock
    from payfm.serving.scorer import ScorerConfig

_NOT_EVENT_FIELDS = ("id", "created_us", "reported_us")  # a logged payload's own
log = logging.getLogger("payfm.serving")
APPEND_RETRY_S = 2.0  # how soon appends that found the workspace busy are tried again
DECLINE_WAIT_S = 60.0  # how long a review closure waits for a decline of its charge being recorded


def label_source(table: str, payload: Mapping[str, Any]) -> str | None:
    """The online label source an outcome feeds: fraudulent disputes, every EFW, every refund."""
    if table == "disputes":
        return "fraud_disputes" if payload.get("reason") == "fraudulent" else None
    return "efws" if table == "early_fraud_warnings" else "refunds"


class FeedbackMixin(AuthorizationsMixin):
    """Reviews and outcomes of a :class:`~payfm.serving.scorer.Scorer` (see the module docstring)."""

    ws: Workspace
    online: OnlineFeatures
    bundle: Bundle
    log: DecisionLog
    config: ScorerConfig
    clock: EventClock
    append_outcomes: bool
    _lock: threading.Lock
    _drained: threading.Condition
    _seq: int
    _pending: dict[str, Future[dict[str, Any]]]
    _pending_outcomes: dict[str, dict[str, Any]]  # key -> the outcome being recorded (its event, created_us)
    _inflight: int
    _append_lock: threading.Lock
    _settles: Settles  # outcome keys settled lately (a log read outside the state lock may be stale)
    _deferred: list[tuple[str, pa.Table]]
    _append_timer: threading.Timer | None
    _retry_scheduled: bool
    _appends_closed: bool
    _append_waiting: bool
    _closures_waiting: list[dict[str, Any]]  # logged closures whose implied outcome a backend refused

    def _init_feedback(self) -> None:
        """This mixin's state, empty: outcomes being recorded, money claims, event-log appends."""
        self._pending_outcomes = {}
        self._settles = Settles()
        self._append_lock = threading.Lock()  # one event-log append of this process at a time
        self._deferred = []  # events the event log could not take yet (busy)
        self._append_timer = None  # retries them (_flush_appends)
        self._retry_scheduled = False  # a retry timer is pending
        self._appends_closed = False  # set by close after its last flush: a late timer appends nothing
        self._append_waiting = False  # events wait for a busy workspace (logged once per busy spell)
        self._closures_waiting = []  # tried again with the appends (_retry_appends)
        self._init_claims()

    # ---- reviews -------------------------------------------------------------------------------------------
    def reviews(
        self,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
        starting_after: str | None = None,
        **which: Any,
    ) -> list[dict[str, Any]]:
        """The review queue (``status`` open, closed, else both), oldest first, from ``offset`` or after
        the review of ``starting_after``; ``which``: ``rule``, ``min_risk_score`` (:func:`review_page`)."""
        return review_page(self.log, status, limit, offset, starting_after, ws=self.ws, **which)

    def review(self, charge_id: str) -> dict[str, Any]:
        """The review of ``charge_id``, as :meth:`reviews` shows it (NotFound without one)."""
        return review_item(self.log, charge_id, self.ws)

    def close_review(
        self, charge_id: str, reason: str, note: str = "", reviewer: str | None = None
    ) -> dict[str, Any]:
        """Close the review of ``charge_id`` with ``reason``; the closure becomes a label event.

        The closure and its ``reviews`` event are logged in one transaction, then the event is appended to
        the workspace's event log. ``refunded_as_fraud`` and ``disputed`` also record the outcome they imply
        (a fraudulent refund or dispute, ids ``re_review_<charge_id>`` / ``dp_review_<charge_id>``, at the
        closing time) like ``POST /v1/refunds`` / ``/v1/disputes``, so label-aware features count it; not
        when the charge already has such an outcome. Closing again with the same reason and note by the same
        reviewer (a client retrying a lost answer) answers as the first closure did, with ``duplicate``
        true, and appends nothing; otherwise it is a Conflict saying what differs.
        """
        if reason not in REVIEW_REASONS:
            raise InvalidInput(
                f"The closing reason must be one of {', '.join(REVIEW_REASONS)}. Got {shown(repr(reason))}.",
                field="reason",
            )
        refuse_wrong_types({"note": note, "reviewer": reviewer}, SCHEMAS["reviews"], "review")
        note = note.replace("\r\n", "\n")  # a browser's textarea sends CR LF: kept as line feeds
        refuse_card_numbers({"note": note, "reviewer": reviewer}, "review", free_text=True)
        refuse_review_texts({"note": note or None, "reviewer": reviewer})
        review = self.log.get_review(charge_id)
        if review is None:
            raise NotFound(f"No review for charge '{shown(charge_id)}'.", field="charge_id")
        refuse_review_texts({"charge_id": charge_id})  # a charge decided before ids were checked
        if review["status"] != "open":
            return closed_again(self.log, review, reason, note, reviewer)  # a retry, or a Conflict
        now = datetime.now(UTC)  # when it was closed (the queue's closed_at)
        # The event's times are on the events' timeline (serving/clock.py): its charge's and the closure's.
        charge_us = int((self.log.get_charge(charge_id) or {}).get("created_us") or 0)
        created_us = max(self.clock.now_us() or 0, charge_us + 1)
        event = {
            "charge_id": charge_id,
            "created": us_to_iso(created_us),
            "opened": us_to_iso(charge_us) if charge_us else review["opened_at"],
            "closed_as": reason,
            "rule": review["rule"],
            "risk_score": review["risk_score"],
            "reviewer": reviewer,
            "note": note or None,
        }
        with self._lock:
            self._seq += 1
            seq = self._seq
        stored = {**event, "id": charge_id, "created_us": created_us}
        try:
            self.log.write(
                ReviewClose(charge_id, reason, note or None, now.isoformat(), seq, created_us, stored)
            )
        except Conflict:  # closed by another request meanwhile: answered as a closure after it is
            return closed_again(self.log, self.log.get_review(charge_id) or review, reason, note, reviewer)
        implied = self._close_review_events(event)
        return {
            "charge_id": charge_id,
            "status": "closed",
            "reason": reason,
            "label": REVIEW_LABELS[reason],
            "outcome": implied,
        }

    def _close_review_events(
        self, event: Mapping[str, Any], recovering: bool = False
    ) -> dict[str, Any] | None:
        """After a closure is logged: record the outcome it implies, append its ``reviews`` event, mark it.

        Idempotent (also run at startup, ``recovering``, for a closure logged but not yet appended): the
        implied outcome is recorded once by its id, and the event is appended unless the event log has it
        already (only a recovery can find it there: a crash after the append, before the mark)."""
        cid = str(event["charge_id"])
        charge = self.log.get_charge(cid) or {}
        implied = implied_outcome(event, charge)
        result = None
        if implied is not None:
            table, payload = implied
            oid = payload[OUTCOME_TABLES[table]]
            # A charge blocked or declined has no refund or dispute (record_outcome refuses them): the
            # closure is its label alone.
            moved = self._uncaptured(table, oid, cid, charge, None) is None
            already = [
                p
                for kind, p in self.log.outcomes_of(cid)
                if kind == table and p.get("reason") == "fraudulent" and p["id"] != oid
            ]
            if moved and not already:
                out: dict[str, Any] | None
                try:  # a refund: of what is left to refund
                    out = self.record_outcome(table, payload, clamp=True)
                except Conflict:  # a decline reported since the check above: no money moved after all
                    out = self._after_decline(table, payload, cid, charge)
                except Exception as e:  # a backend's failure is logged and the rest waits; a bug raises
                    if recovering or not (isinstance(e, Unavailable) or backend_failure(e)):
                        raise
                    self._wait_closure(event, e)
                    return {"table": table, "id": str(oid), "applied": None, "pending": True}
                if out is not None:
                    result = {"table": table, "id": out["id"], "applied": out["applied"]}
        if self.append_outcomes:
            have = (
                recovering
                and bool(self.ws.files("reviews"))
                and cid in set(self.ws.read("reviews", ["charge_id"])["charge_id"].to_pylist())
            )
            if not have:
                self._append_to_event_log("reviews", [dict(event)])
            else:
                self.log.write(_mark("reviews", cid))
        return result

    def _after_decline(
        self, table: str, payload: dict[str, Any], cid: str, charge: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The outcome a closure implies, refused by a decline of its charge (recorded since the closure's
        check, or being recorded): None once the decline is recorded (no money moved: the closure is its
        label alone); recorded after all when the decline lost (refused, failed), as the closure asks."""
        oid = str(payload[OUTCOME_TABLES[table]])
        deadline = time.monotonic() + DECLINE_WAIT_S
        while self._declining.get(cid) and time.monotonic() < deadline:  # its fate: recorded or refused
            time.sleep(0.005)
        if self._uncaptured(table, oid, cid, charge, None) is not None:
            return None
        return self.record_outcome(table, payload, clamp=True)  # (another conflict is raised)

    # ---- outcomes ------------------------------------------------------------------------------------------
    @per_charge(charge_of_payload)
    def record_outcome(self, table: str, payload: Mapping[str, Any], clamp: bool = False) -> dict[str, Any]:
        """Record a dispute, early fraud warning or refund: decision log, online features, event log.

        Idempotent by the outcome's id. Returns ``{id, charge_id, label_source, applied, duplicate,
        counted_from}`` (``counted_from``: the time it counts from when dated later than sent, else None); a
        duplicate (the id recorded already, on the same charge) returns the stored record's facts; the id
        recorded on another charge is a Conflict. Invalid fields are one InvalidInput naming the first; so is
        an outcome at or before its charge (as an import refuses it). An outcome of a charge neither the
        decision log nor the event log holds is a NotFound: appended, it would leave the event log an outcome
        without its charge (a replay in process, which appends nothing, takes it). A refund for more than
        what is left to refund of its charge is an InvalidInput, or with ``clamp`` (a review closure's) is
        taken for what is left (see :meth:`_claim_refund`).
        """
        if table not in OUTCOME_TABLES:
            raise InvalidInput(
                f"The outcome table must be one of {', '.join(OUTCOME_TABLES)}. Got {table!r}.", field="table"
            )
        payload = python_ints(table, payload)  # a NumPy amount as an int (the Python API)
        refuse_card_numbers(payload, table)
        refuse_wrong_outcome_types(table, payload)  # before Arrow converts a value (true to 1, "100" to 100)
        try:
            row = validate_events(table, pa.Table.from_pylist([dict(payload)]), source=f"POST {table}")
        except ValidationError as e:
            raise invalid_outcome(table, e) from None
        event = row.to_pylist()[0]
        oid, cid = str(event[OUTCOME_TABLES[table]]), str(event["charge_id"])
        created_us = to_us(event["created"], "created")
        try:
            # no bound in the past: a dispute or warning is dated when the issuer opened it, and processors'
            # reports deliver them hours or days later
            refuse_untimely(created_us, self.config.max_future_s, None, f"{table} event")
        except InvalidInput:  # a retry of an outcome recorded already is answered, whatever the clock
            if not self.log.has_outcome(table, oid):
                raise
        source = label_source(table, event)
        facts = {"id": oid, "charge_id": cid, "label_source": source, "applied": False, "counted_from": None}
        # Outside the lock. Replaying the event log in process (append_outcomes False) reads outcomes of the
        # log itself: no check against the charge applies, and the decision log alone dates decided charges.
        logged, charge, result = self._event_log_facts(table, oid, cid, self.append_outcomes)
        charge_us = None if charge is None else int(charge["created_us"])
        in_log = bool(logged)
        if in_log and all(str(r["charge_id"]) != cid for r in logged):  # a conflict, not a duplicate
            raise id_conflict(table, oid, str(logged[0]["charge_id"]), cid)
        known = self._known_outcome(table, oid, cid, logged)
        # A review closure's implied refund was taken for what was left to refund (clamp): its amount may
        # differ from what the closure asks, every time.
        skip = ("amount",) if clamp else ()
        if known is not None:  # a retry, or another outcome under a recorded id
            differs = another_outcome(table, event, created_us, known, skip)
            if differs is not None:
                raise differs
        refused = unfollowed(table, oid, cid, created_us, charge_us, self.append_outcomes and not in_log)
        live = self.append_outcomes and not in_log and charge is not None
        if refused is None and live:  # money moved (none of a blocked or declined charge), as much
            refused = self._uncaptured(table, oid, cid, charge or {}, result) or unlike_its_charge(
                table, event, charge or {}, implied=clamp
            )
        if refused is not None and not self.log.has_outcome(table, oid):  # a retry is answered as before
            raise refused
        # A new outcome of a live charge claims it moved money, against a decline reported meanwhile
        # (serving/money_claims.py: of the two, whichever comes second is refused).
        claim = live and refused is None and known is None
        counted_us = created_us
        if claim and not clamp:  # (a review closure's is dated by the clock already)
            counted_us = self._counted_from(created_us)
        if claim:
            self._claim_outcome(table, oid, cid)
        try:
            if table == "refunds" and live:  # capped at what is left to refund, counting refunds in flight
                self._claim_refund(cid, oid, event, charge or {}, clamp)
                try:
                    return self._record_event(
                        table, event, (oid, cid, created_us, counted_us), source, facts, logged, skip
                    )
                finally:
                    self._release_refund(cid, oid)
            return self._record_event(
                table, event, (oid, cid, created_us, counted_us), source, facts, logged, skip
            )
        finally:
            if claim:
                self._release_outcome(table, oid, cid)

    def _counted_from(self, created_us: int) -> int:
        """When a new outcome dated ``created_us`` counts: just after the newest event the service has seen
        (serving/clock.py, ``newest_us``) when it is dated at or before it, as a dispute reported days after
        the issuer opened it is. The charges decided meanwhile could not see it, so dated by the sender it
        would count offline (backfill, training) in charges it never reached online: a label leak. Not the
        wall-advanced clock: a fast client's charge or a restart's idle hours would date it past charges
        that see it online. Its reported time stays in the decision log."""
        newest = self.clock.newest_us()
        return created_us if newest is None or created_us > newest else newest + 1

    def _record_event(
        self,
        table: str,
        event: dict[str, Any],
        ids: tuple[str, str, int, int],
        source: str | None,
        facts: dict[str, Any],
        logged: list[dict[str, Any]],
        skip: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """The rest of :meth:`record_outcome`, for an outcome it takes: count it, log it, append it to the
        event log; a duplicate is answered with what is stored, another outcome under an id being recorded
        is a Conflict (``skip``: fields not compared). ``ids``: the outcome's id, its charge's, the time it
        was sent with (compared with a retry's) and the time it counts from (:meth:`_counted_from`)."""
        oid, cid, created_us, counted_us = ids
        key, in_log = f"{table}:{oid}", bool(logged)
        # (settles counted before it, the id's stored record), read outside the state lock: a decision log
        # that stalls holds this request, not every other one; read again once the id settled since (a
        # request racing this one recorded it: serving/settles.py)
        looked: tuple[int, dict[str, Any] | None] | None = None
        while True:
            with self._lock:
                other = self._pending.get(key)  # the same id being recorded: its facts once it is durable
                # another outcome under that id, sent meanwhile: refused as once durable
                if other is not None:
                    pending = self._pending_outcomes.get(key)
                    differs = (
                        None if pending is None else another_outcome(table, event, created_us, pending, skip)
                    )
                    if differs is not None:
                        raise differs
                read_log = other is None and (looked is None or self._settles.stale(key, looked[0]))
                since = self._settles.count
                stored = None if other is not None or looked is None or read_log else looked[1]
                if other is None and stored is None and not read_log:
                    applied = False
                    if source is not None:
                        applied = self.online.apply_outcome(
                            source, oid, cid, counted_us, event.get("amount"), event.get("currency")
                        )
                    self.clock.saw(counted_us)
                    if in_log and not applied:  # in the event log already: counted when the state was built
                        mine_in_log = next(r for r in logged if str(r["charge_id"]) == cid)
                        return {**facts, "label_source": label_source(table, mine_in_log), "duplicate": True}
                    self._seq += 1
                    seq = self._seq
                    mine: Future[dict[str, Any]] = Future()
                    self._pending[key] = mine
                    self._pending_outcomes[key] = {**event, "created_us": created_us}
                    self._inflight += 1
            if not read_log:
                break
            looked = (since, self.log.get_outcome(table, oid))
        if other is not None:
            stored = other.result(timeout=60)  # the log write's own timeout is 30 s
        if stored is not None:
            return duplicate_answer(table, oid, cid, stored)
        facts["applied"] = applied
        counted = {**event, "created": us_to_datetime(counted_us)}
        # a late outcome counts from after the newest event seen (docs/serving.md): the answer says when
        facts["counted_from"] = counted["created"].isoformat() if counted_us != created_us else None

        def record() -> OutcomeRecord:
            payload = {
                **counted,
                "created": counted["created"].isoformat(),
                "id": oid,
                "created_us": counted_us,
            }
            payload |= {"reported_us": created_us} if counted_us != created_us else {}
            return OutcomeRecord(
                seq, table, oid, cid, counted_us, source, applied, payload, datetime.now(UTC).isoformat()
            )

        if not self._log_pending(key, mine, record, facts):
            # Another server sharing the log recorded this id first (both read no record): answered as a
            # retry of what it recorded, or refused as another outcome, and not appended (the event log
            # took the other's amount while the log held the first, an SRE audit saw).
            stored = self.log.get_outcome(table, oid)
            if stored is not None:
                theirs = next(
                    (
                        p
                        for k, p in self.log.outcomes_of(str(stored["charge_id"]))
                        if k == table and p.get("id") == oid
                    ),
                    None,
                )
                differs = None if theirs is None else another_outcome(table, event, created_us, theirs, skip)
                if differs is not None and stored["charge_id"] == cid:
                    raise differs
                return duplicate_answer(table, oid, cid, stored)
        if self.append_outcomes and not in_log:
            self._append_to_event_log(table, [counted])
        elif in_log:
            self.log.write(_mark(table, oid))  # the event log has it (imported meanwhile): not a second row
        return {**facts, "duplicate": False}

    def _log_pending(
        self,
        key: str,
        mine: Future[dict[str, Any]],
        record: Callable[[], OutcomeRecord],
        facts: dict[str, Any],
    ) -> bool:
        """Log the ``record()`` of ``key``, which the online state counted while ``key`` was pending as
        ``mine``: ``mine`` resolves with ``facts`` once the record is durable (requests for the same key wait
        for it), or with the error, raised here too; ``key`` is no longer pending either way. False when the
        log held the record's id already (another server sharing the log recorded it first)."""
        try:
            written = bool(self.log.write(record()))
        except BaseException as e:
            mine.set_exception(e)
            raise
        else:
            mine.set_result(facts)
        finally:
            with self._lock:
                self._pending.pop(key, None)
                self._pending_outcomes.pop(key, None)
                self._settles.add(key)  # a read of the log outside the lock before now may have missed it
                self._inflight -= 1
                if not self._inflight:
                    self._drained.notify_all()
        return written

    def _uncaptured(
        self,
        table: str,
        oid: str,
        cid: str,
        charge: Mapping[str, Any],
        result: tuple[str, str, str | None] | None,
    ) -> Conflict | None:
        """:func:`~payfm.serving.outcome_checks.uncaptured` of charge ``cid``: with its outcome in the event
        log (``result``, for a charge only the event log holds) or as this service knows it (its request, its
        block, the event log, a result reported since); None while its result is outstanding."""
        return uncaptured(table, oid, cid, result or self._known_result(cid, charge) or self._reported(cid))

    def _known_outcome(
        self, table: str, oid: str, cid: str, logged: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        """What is recorded of outcome ``oid`` of charge ``cid``: its decision-log payload, else its event-log
        row (of ``logged``), else None."""
        for kind, payload in self.log.outcomes_of(cid):
            if kind == table and str(payload.get("id")) == oid:
                return payload
        return next((r for r in logged if str(r["charge_id"]) == cid), None)

    def _event_log_facts(
        self, table: str, oid: str, cid: str, look_in_log: bool
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None, tuple[str, str, str | None] | None]:
        """The event log's rows of outcome ``oid`` of ``table`` (every field; empty: none, or not
        ``look_in_log``), charge ``cid``'s time (``created_us``), amount and
        currency (from the decision log, else, with ``look_in_log``, the event log; None when unknown), and,
        for a charge only the event log holds, its outcome there (``("in the event log", outcome, code)``)."""
        decided = self.log.get_charge(cid)
        if not look_in_log:
            return [], decided, None
        columns = tuple(n for n in SCHEMAS[table].names if n != OUTCOME_TABLES[table])
        logged = matching_rows(self.ws, table, OUTCOME_TABLES[table], oid, columns)
        if decided is not None:
            return logged, decided, None
        facts = ("created", "amount", "currency", "outcome", "decline_code")
        found = matching_rows(self.ws, "charges", "charge_id", cid, facts)
        if not found:
            return logged, None, None
        row = found[0]
        result = ("in the event log", str(row.pop("outcome")), row.pop("decline_code"))
        return logged, {**row, "created_us": int(row["created"].timestamp() * 1_000_000)}, result

    def _append_to_event_log(self, table: str, events: list[dict[str, Any]]) -> None:
        """Append ``events`` (logged already) to the event log, then mark them appended in the decision log.

        Appends of this process take turns (concurrent requests would otherwise collide on the workspace's
        write lock). When another process holds that lock (``payfm compact``, an import, another server's
        append), the events wait in memory and go with a retry ``APPEND_RETRY_S`` later or this process's next
        append, in one transaction, or at close; until then they are unmarked in the decision log, so a crash
        meanwhile leaves them to the next start.
        """
        # Reviews have nullable columns that are often all null: give Arrow their types.
        schema = SCHEMAS[table] if table == "reviews" else None
        if schema is not None:
            events = [{**e, **{k: _ts(e[k]) for k in ("created", "opened")}} for e in events]
        data = validate_events(table, pa.Table.from_pylist(events, schema=schema))
        with self._append_lock:
            self._deferred.append((table, data))
        self._flush_appends()

    def events_waiting(self) -> int:
        """Outcomes and review closures recorded, not yet in the event log (a busy workspace); 0 normally.
        Lock-free (a flush holds the append lock through its disk writes): a snapshot of the list."""
        return _rows(list(self._deferred)) + len(self._closures_waiting)

    def _flush_appends(self) -> None:
        """Append every waiting event in one transaction, leaving out those the event log holds already
        (another server's start-up may have appended one that waited here) or that wait twice, and mark them
        all, under the append lock. On a busy workspace they keep waiting and a timer tries again
        (``APPEND_RETRY_S``); once :meth:`_close_appends` ran, nothing is appended."""
        with self._append_lock:
            if not self._deferred or self._appends_closed:
                return
            by_table: dict[str, pa.Table] = {}
            for table, data in self._deferred:
                by_table[table] = pa.concat_tables([by_table[table], data]) if table in by_table else data
            try:
                with self.ws.writer("append", validate=False) as w:  # a file per table and day (validated)
                    for table, data in by_table.items():
                        key, seen = ID_COLUMNS[table], set()
                        new = []
                        for v in map(str, data[key].to_pylist()):
                            new.append(v not in seen and not matching(self.ws, table, key, v, key))
                            seen.add(v)
                        w.write(table, data.filter(pa.array(new, pa.bool_())))
            except WorkspaceBusy:
                if not self._append_waiting:  # once a busy spell, not at every outcome
                    log.warning(
                        "the event log is being written by another process: events wait, tried again every "
                        "%g s and with each new one",
                        APPEND_RETRY_S,
                    )
                self._append_waiting = True
                self._schedule_retry()
                return
            if self._append_waiting:
                log.info("the event log took the %d event(s) that waited", _rows(self._deferred))
            self._append_waiting = False
            self._deferred = []
            for table, data in by_table.items():  # marked before the lock is let go: a close finds them done
                for oid in data.column(ID_COLUMNS[table]).to_pylist():
                    self.log.write(_mark(table, str(oid)))

    def _schedule_retry(self) -> None:
        """Start the retry timer unless it is pending (call with the append lock held)."""
        if not self._retry_scheduled and not self._appends_closed:
            self._retry_scheduled = True
            self._append_timer = threading.Timer(APPEND_RETRY_S, self._retry_appends)
            self._append_timer.daemon = True
            self._append_timer.start()

    def _wait_closure(self, event: Mapping[str, Any], error: BaseException) -> None:
        """A logged review closure whose implied outcome a backend refused (the charge's lock, Redis, the
        log): its outcome and event are tried again with the appends; a stop leaves them to the next start."""
        cid, what = shown(str(event["charge_id"])), type(error).__name__
        log.warning("the review closure of %s is logged; its outcome waits (%s), tried again", cid, what)
        with self._append_lock:
            self._closures_waiting.append(dict(event))
            self._schedule_retry()

    def _retry_appends(self) -> None:
        """The retry timer's work: the closures waiting, then a flush (each retries while something waits)."""
        with self._append_lock:
            self._retry_scheduled = False
            closures = list(self._closures_waiting)  # (each waits, counted, until it is done)
        for event in closures:
            try:
                self._close_review_events(event, recovering=True)
            except Exception:
                with self._append_lock:
                    self._schedule_retry()
                continue
            with self._append_lock:
                self._closures_waiting.remove(event)
        self._flush_appends()

    def _close_appends(self) -> None:
        """At close, before the decision log closes: a last flush, then no more appends (a retry timer that
        fires later does nothing), the timer stopped; events still waiting are left to the next start."""
        try:
            self._flush_appends()
        except Exception:  # the close goes on: what waits is unmarked in the decision log
            log.exception("the last append of waiting events failed; the next start appends them")
        with self._append_lock:
            self._appends_closed = True
            timer = self._append_timer
            waiting = _rows(self._deferred)
        if timer is not None:
            timer.cancel()
            if timer is not threading.current_thread():
                timer.join(timeout=10)
        if waiting:
            log.warning(
                "closing with %d event(s) not in the event log yet (busy): the next start adds them", waiting
            )

    def _append_pending_outcomes(self) -> None:
        """Outcomes and review closures logged but not yet marked appended (a crash in between, or a busy
        workspace): append those the event log does not hold (and record the outcome a closure implies, once).
        They are marked when appended (or found there), never before."""
        pending = self.log.unappended_outcomes()
        if not pending:
            return
        by_table: dict[str, list[dict[str, Any]]] = {}
        for table, payload in pending:
            by_table.setdefault(table, []).append(payload)
        for review in by_table.pop("reviews", []):
            event = {k: v for k, v in review.items() if k not in ("id", "created_us")}
            try:
                self._close_review_events(event, recovering=True)
            except ValidationError as e:  # logged before the event log's checks grew: left in the log
                refused_at_start("reviews", str(event.get("charge_id")), e)
        for table, payloads in by_table.items():
            todo = [{k: v for k, v in p.items() if k not in _NOT_EVENT_FIELDS} for p in payloads]
            try:
                self._append_to_event_log(table, todo)  # those there already are left out, and marked
            except ValidationError:  # one logged before a check it fails: the others go, it stays in the log
                self._append_to_event_log(table, [one for one in todo if appendable(table, one)])


def _rows(batches: list[tuple[str, pa.Table]]) -> int:
    return sum(data.num_rows for _, data in batches)


def _ts(v: Any) -> Any:
    return datetime.fromisoformat(v) if isinstance(v, str) else v


def _mark(table: str, oid: str) -> MarkAppended:
    return MarkAppended(table, oid)


def apply_logged_event(online: OnlineFeatures, kind: str, payload: dict[str, Any]) -> None:
    """Apply one decision-log event (:meth:`DecisionLog.events_after`) to ``online``."""
    if kind == "charge":
        online.update(payload)
    elif kind == AUTHORIZATION:
        online.apply_authorization(payload["charge"])
    else:
        online.apply_outcome(
            kind,
            payload["id"],
            payload["charge_id"],
            payload["created_us"],
            payload.get("amount"),
            payload.get("currency"),
        )
