"""Authorization results: the processor's answer to a charge the decision service decided without it
(``POST /v1/charges/{id}/authorization``), counted by the declines features and logged once per charge.

:class:`AuthorizationsMixin` holds these methods of :class:`payfm.serving.scorer.Scorer` (through
:class:`~payfm.serving.feedback.FeedbackMixin`, which logs the result it counts: ``_log_pending``); it uses
the scorer's state lock, sequence numbers, decision log, online features and workspace.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from payfm.events.schema import OUTCOMES, SCHEMAS
from payfm.events.workspace import Workspace
from payfm.features.definitions import AUTHORIZATION
from payfm.features.online import OnlineFeatures
from payfm.serving.charges import checked_decline_code, refuse_wrong_types
from payfm.serving.decision_log import AUTHORIZATIONS, DecisionLog, OutcomeRecord
from payfm.serving.errors import InvalidInput, NotFound, shown
from payfm.serving.event_lookup import event_log_result
from payfm.serving.money_claims import MoneyClaimsMixin, per_charge
from payfm.serving.outcome_checks import known_answer
from payfm.serving.settles import Settles

if TYPE_CHECKING:
    from collections.abc import Mapping

    from payfm.serving.bundle import Bundle


class AuthorizationsMixin(MoneyClaimsMixin):
    """Authorization results of a :class:`~payfm.serving.scorer.Scorer` (see the module docstring)."""

    ws: Workspace
    online: OnlineFeatures
    bundle: Bundle
    log: DecisionLog
    append_outcomes: bool
    _lock: threading.Lock
    _seq: int
    _pending: dict[str, Future[dict[str, Any]]]
    _inflight: int
    _settles: Settles

    if TYPE_CHECKING:  # FeedbackMixin's

        def _log_pending(
            self,
            key: str,
            mine: Future[dict[str, Any]],
            record: Callable[[], OutcomeRecord],
            facts: dict[str, Any],
        ) -> bool: ...

    @per_charge(lambda charge_id, *_, **__: charge_id)
    def record_authorization(
        self, charge_id: str, outcome: str, decline_code: str | None = None
    ) -> dict[str, Any]:
        """Record the processor's answer to a charge this service decided without it: ``outcome``
        authorized, issuer_declined or blocked, with the issuer's ``decline_code`` for a decline.

        The features filtered on a charge's outcome (declines and decline rates, where card testing shows)
        count the charge from now on, at its own time, as if its request had carried the outcome, and `payfm
        serve export` appends the charge with it. Once per charge: sent again with the same answer it is a
        duplicate; with another, a Conflict, as it is for a charge whose request carried its outcome, one the
        service blocked (never sent for authorization; recorded as ``blocked``) and one the event log holds
        with another outcome (one whose decision was pruned included). A charge neither this service's log
        nor the event log holds is a NotFound. Returns
        ``{charge_id, outcome, decline_code, applied, duplicate}`` (``applied``: counted in the features now).
        """
        answer = {"charge_id": str(charge_id), "outcome": outcome, "decline_code": decline_code}
        refuse_wrong_types(answer, SCHEMAS["charges"], "authorization result")  # as a charge's fields
        if outcome not in OUTCOMES:
            raise InvalidInput(
                f"Field 'outcome' must be one of {', '.join(OUTCOMES)}. Got {shown(repr(outcome))}.",
                field="outcome",
            )
        decline_code = answer["decline_code"] = checked_decline_code(outcome, decline_code)
        charge = self.log.get_charge(cid := str(charge_id))
        # a charge whose decision was pruned, or an imported one: its outcome in the event log answers
        in_log = event_log_result(self.ws, cid) if charge is None and self.append_outcomes else None
        if in_log is not None:
            return known_answer(in_log, answer)
        if charge is None:
            raise NotFound(
                f"Unknown charge '{shown(cid)}': this service did not decide it and the event log does not "
                "hold it (an authorization result follows the decision).",
                field="charge_id",
            )
        known = self._known_result(cid, charge)
        if known is not None:
            return known_answer(known, answer)
        # A decline or block claims the charge moved no money, against its refunds, disputes and EFWs
        # recorded or in flight (serving/money_claims.py); released once this result is durable or answered.
        self._claim_result(cid, outcome)
        try:
            return self._record_result(cid, outcome, decline_code, charge, answer)
        finally:
            self._release_result(cid, outcome)

    def _record_result(
        self,
        cid: str,
        outcome: str,
        decline_code: str | None,
        charge: dict[str, Any],
        answer: dict[str, Any],
    ) -> dict[str, Any]:
        """The rest of :meth:`record_authorization`, for a result it takes: count it, log it."""
        key = f"{AUTHORIZATIONS}:{cid}"
        # a result recorded already, or by a request racing this one: read as in _record_event
        looked: tuple[int, tuple[str, str, str | None] | None] | None = None
        while True:
            with self._lock:
                other = self._pending.get(key)
                read_log = other is None and (looked is None or self._settles.stale(key, looked[0]))
                since = self._settles.count
                known = None if other is not None or looked is None or read_log else looked[1]
                if other is None and known is None and not read_log:
                    result = {**charge, "outcome": outcome, "decline_code": decline_code}
                    applied = self._count_result(self.bundle, result)
                    self._seq += 1
                    seq = self._seq
                    mine: Future[dict[str, Any]] = Future()
                    self._pending[key] = mine
                    self._inflight += 1
            if not read_log:
                break
            looked = (since, self._reported(cid))
        if other is not None:  # the same charge's result being recorded: answered once that is durable
            stored = other.result(timeout=60)
            return known_answer(("reported before", stored["outcome"], stored["decline_code"]), answer)
        if known is not None:
            return known_answer(known, answer)
        facts = {**answer, "applied": applied}

        def record() -> OutcomeRecord:
            created_us = int(charge["created_us"])
            payload = {**answer, "id": cid, "created_us": created_us, "charge": result}
            return OutcomeRecord(
                seq,
                AUTHORIZATIONS,
                cid,
                cid,
                created_us,
                AUTHORIZATION,
                applied,
                payload,
                datetime.now(UTC).isoformat(),
                appended=True,  # the charge takes it to the event log (`payfm serve export`)
            )

        if not self._log_pending(key, mine, record, facts):  # another server logged one first (shared log)
            return known_answer(self._reported(cid) or ("reported before", outcome, decline_code), answer)
        return {**facts, "duplicate": False}

    def _count_result(self, bundle: Bundle, charge: Mapping[str, Any]) -> bool:
        """Count the outcome of ``charge``, decided without it, in the features and (when they take it) in
        ``bundle``'s embedders' histories, so that later charges read it as offline. Call with the state
        lock held; returns whether the features took it (:meth:`OnlineFeatures.apply_authorization`)."""
        applied = self.online.apply_authorization(charge)
        for embedder in bundle.embedders.values() if applied else ():
            embedder.set_outcome(charge)
        return applied

    def _known_result(self, cid: str, charge: Mapping[str, Any]) -> tuple[str, str, str | None] | None:
        """``(where, outcome, decline_code)`` of decided charge ``cid`` when its outcome is known already:
        its request carried it (or the service blocked it), or (when this service appends to the event log)
        the event log holds the charge; None otherwise. A result recorded before is read under the state
        lock (:meth:`_reported`), once."""
        if charge.get("outcome") is not None:
            return "with the decision", str(charge["outcome"]), charge.get("decline_code")
        decision = self.log.get_decision(cid) or {}
        if decision.get("outcome") == "blocked":  # logged without it by a server older than results
            return "with the decision", "blocked", None
        return event_log_result(self.ws, cid) if self.append_outcomes else None
