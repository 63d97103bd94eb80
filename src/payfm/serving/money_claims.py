"""What a charge's money allows, checked and claimed under one lock: the refunds of a charge add up to at
most its amount, and a charge that moved no money (declined by its issuer, blocked) has no refund, dispute
or early fraud warning. Requests for one charge race: a check reads what is recorded and what other
requests of this process have in flight, and claims its own before it lets go of the lock; a claim ends
once its record is durable (or refused). So of a refund and a decline of one charge sent at the same
instant, whichever comes second is refused; of two refunds, the second is capped.

The checks and claims have their own lock: decisions never wait for them. Servers sharing a decision log
share a Redis state too (docs/serving.md), and there a request for a charge's money (an outcome or an
authorization result) also holds the charge's lock in Redis from its first check until its record is
durable (:func:`per_charge`): another server's request for that charge waits, then reads the record. Without
it, two servers each found the other's refund or decline missing, and the features could take one
authorization result while the log took the other.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

from payfm.events.workspace import Workspace
from payfm.serving.decision_log import AUTHORIZATIONS, DecisionLog
from payfm.serving.errors import Conflict, Unavailable, shown
from payfm.serving.event_lookup import matching_rows
from payfm.serving.outcome_checks import UNCAPTURED, outcome_before, over_refunded, uncaptured

if TYPE_CHECKING:
    from payfm.features.online import OnlineFeatures

log = logging.getLogger(__name__)

# How long a charge's lock lasts at most (Redis expires it: a server killed while holding it), well above the
# longest hold (event-log and decision-log reads, Redis calls of 10 s at most, the log write's 30 s), and how
# long another request waits for it before answering 503.
CHARGE_LOCK_S = 120.0
CHARGE_WAIT_S = 30.0
# How many requests of one server may wait for charges' locks at once: each waits in a thread of the pool the
# synchronous endpoints share (40 threads: /healthz, reviews, outcomes), so a peer stuck holding a charge with
# clients retrying must not take them all. One more is a 503 at once.
MAX_LOCK_WAITERS = 8
F = TypeVar("F", bound=Callable[..., Any])


def charge_of_payload(table: object, payload: object, *args: object, **kwargs: object) -> object:
    """The charge an outcome's payload names (``record_outcome``'s arguments), for :func:`per_charge`."""
    return payload.get("charge_id") if isinstance(payload, Mapping) else None


def per_charge(charge_of: Callable[..., object]) -> Callable[[F], F]:
    """Run the decorated method of a :class:`MoneyClaimsMixin` holding the lock of the charge its arguments
    name (``charge_of`` gets them without ``self``): see :meth:`MoneyClaimsMixin._charge_lock`."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def locked(self: MoneyClaimsMixin, *args: Any, **kwargs: Any) -> Any:
            with self._charge_lock(charge_of(*args, **kwargs)):
                return method(self, *args, **kwargs)

        return cast(F, locked)

    return decorate


class MoneyClaimsMixin:
    """Refund caps and money-state claims of a :class:`~payfm.serving.scorer.Scorer`."""

    ws: Workspace
    log: DecisionLog
    online: OnlineFeatures
    _refund_lock: threading.Lock  # every check and claim below
    # Requests for one outcome id may be in flight at once (a retry, or another outcome under that id, which
    # is refused later): each holds its own claim, and a claim ends with the last of them.
    _refunding: dict[str, dict[str, int]]  # charge id -> refunds in flight: id -> amount
    _refund_holds: Counter[tuple[str, str]]  # (charge id, refund id) -> requests holding its claim
    _moving: dict[
        str, Counter[tuple[str, str]]
    ]  # charge id -> refunds, disputes, EFWs in flight: (table, id)
    _declining: dict[str, list[str]]  # charge id -> the declines or blocks being reported for it
    _lock_waiters: threading.BoundedSemaphore  # requests waiting for a charge's lock in Redis

    def _init_claims(self) -> None:
        """No claims yet."""
        self._refund_lock = threading.Lock()
        self._refunding = {}
        self._refund_holds = Counter()
        self._moving = {}
        self._declining = {}
        self._lock_waiters = threading.BoundedSemaphore(MAX_LOCK_WAITERS)

    @contextmanager
    def _charge_lock(self, charge_id: object) -> Iterator[None]:
        """Hold charge ``charge_id``'s lock shared by the servers on this Redis state (a redis-py lock: a key
        set if absent, with this holder's token and an expiry, deleted by compare-and-delete) while the
        block runs; nothing with a state in this process, which no other server shares. A charge whose lock
        is not free within :data:`CHARGE_WAIT_S` is an Unavailable (503: the client retries)."""
        client = getattr(self.online.store, "client", None)
        if client is None:
            yield
            return
        prefix = str(self.online.store.ns).rsplit(":", 1)[0]  # type: ignore[attr-defined]
        digest = hashlib.blake2b(str(charge_id).encode(), digest_size=16).hexdigest()  # any id, one length
        name, wait = f"{prefix}:lock:charge:{digest}", CHARGE_WAIT_S
        lock = client.lock(name, timeout=CHARGE_LOCK_S, sleep=0.02, blocking_timeout=wait)
        if not lock.acquire(blocking=False):  # held: wait for it, in one of a bounded number of threads
            if not self._lock_waiters.acquire(blocking=False):
                raise Unavailable(
                    f"Charge '{shown(charge_id)}' is being recorded by another request, and "
                    f"{MAX_LOCK_WAITERS} requests of this server already wait for charges being recorded: "
                    "this one was not recorded. Retry after the Retry-After header's seconds.",
                    backend="shared online state",
                )
            try:
                got = lock.acquire()
            finally:
                self._lock_waiters.release()
        else:
            got = True
        if not got:
            raise Unavailable(
                f"Charge '{shown(charge_id)}' is being recorded by another request (on this server or "
                f"another) for more than {wait:g} s: this one was not recorded. Retry after the Retry-After "
                "header's seconds.",
                backend="shared online state",
            )
        try:
            yield
        finally:
            try:
                lock.release()
            except Exception as e:  # held past CHARGE_LOCK_S (another request may have taken the money too),
                # or Redis gone (it expires anyway)
                log.error(
                    "could not release the lock of charge %s in Redis: %s", shown(charge_id), type(e).__name__
                )

    def _reported(self, cid: str) -> tuple[str, str, str | None] | None:
        """``("reported before", outcome, decline_code)`` of the result logged for charge ``cid``, or None."""
        for kind, p in self.log.outcomes_of(cid):
            if kind == AUTHORIZATIONS:
                return "reported before", str(p["outcome"]), p.get("decline_code")
        return None

    def _event_log_refunds(self, cid: str) -> dict[str, tuple[int, str]]:
        """``{refund_id: (amount, currency)}`` of the event log's refunds of charge ``cid``."""
        rows = matching_rows(self.ws, "refunds", "charge_id", cid, ("refund_id", "amount", "currency"))
        return {str(r["refund_id"]): (int(r["amount"]), str(r["currency"])) for r in rows}

    def _claim_refund(
        self, cid: str, oid: str, event: dict[str, Any], charge: Mapping[str, Any], clamp: bool
    ) -> None:
        """Count refund ``oid`` of charge ``cid`` as in flight, or refuse it (an InvalidInput) when it is for
        more than what is left to refund: the charge's amount less its refunds in its currency in the event
        log, the decision log and in flight in this process, each id once (Stripe caps a charge's refunds at
        its amount). With ``clamp`` its ``amount`` is lowered to what is left instead. Checks and claims are
        serialized by their own lock (decisions never wait for them); :meth:`_release_refund` ends the
        claim once the refund is durable, answered as a duplicate, or failed."""
        currency = str(charge.get("currency"))
        in_event_log = self._event_log_refunds(cid)
        with self._refund_lock:
            refunds = {rid: amount for rid, (amount, cur) in in_event_log.items() if cur == currency}
            logged = [p for kind, p in self.log.outcomes_of(cid) if kind == "refunds"]
            if any(str(p["id"]) == oid for p in logged):
                return  # a retry: answered with what is stored, whatever its amount, as other outcomes are
            if self._refund_holds[(cid, oid)]:  # in flight: the first request's claim
                claimed = self._refunding.get(cid, {}).get(oid)
                if not clamp and claimed is not None and int(event["amount"]) != claimed:
                    raise Conflict(  # another refund under the id: its amount is not checked against the cap
                        f"The refund '{shown(oid)}' of charge '{shown(cid)}' is being recorded with another "
                        "'amount': a retry must send the same refund, and another refund needs a new "
                        "refund_id.",
                        field="amount",
                    )
                self._refund_holds[(cid, oid)] += 1  # the same refund again: held once more
                return
            refunds.update(
                {str(p["id"]): int(p.get("amount") or 0) for p in logged if p.get("currency") == currency}
            )
            refunds.update(self._refunding.get(cid, {}))
            refunds.pop(oid, None)  # (a retry of a refund is not over the cap for itself)
            refunded = sum(refunds.values())
            left = max(int(charge.get("amount") or 0) - refunded, 0)
            if int(event["amount"]) > left:
                if not clamp:
                    raise over_refunded(event, charge, refunded, left)
                event["amount"] = left
            self._refunding.setdefault(cid, {})[oid] = int(event["amount"])
            self._refund_holds[(cid, oid)] = 1

    def _release_refund(self, cid: str, oid: str) -> None:
        """End one request's hold of refund ``oid``'s claim (none when it took none: a logged retry)."""
        with self._refund_lock:
            held = self._refund_holds[(cid, oid)]
            if held > 1:
                self._refund_holds[(cid, oid)] = held - 1
                return
            self._refund_holds.pop((cid, oid), None)
            flying = self._refunding.get(cid, {})
            flying.pop(oid, None)
            if not flying:
                self._refunding.pop(cid, None)

    def _claim_outcome(self, table: str, oid: str, cid: str) -> None:
        """Claim outcome ``oid`` (a refund, dispute or EFW) of charge ``cid`` as in flight, or refuse it (a
        Conflict naming the charge's outcome) when a decline or block of the charge is recorded or being
        reported. :meth:`_release_outcome` ends the claim."""
        with self._refund_lock:
            declining = self._declining.get(cid)
            result = ("being reported", declining[0], None) if declining else self._reported(cid)
            refused = uncaptured(table, oid, cid, result)
            if refused is not None:
                raise refused
            self._moving.setdefault(cid, Counter())[(table, oid)] += 1

    def _release_outcome(self, table: str, oid: str, cid: str) -> None:
        """End one request's claim on outcome ``oid`` (others for the same id hold theirs)."""
        with self._refund_lock:
            moving = self._moving.get(cid, Counter())
            moving[(table, oid)] -= 1
            if moving[(table, oid)] <= 0:
                del moving[(table, oid)]
            if not moving:
                self._moving.pop(cid, None)

    def _claim_result(self, cid: str, outcome: str) -> None:
        """Claim the authorization result ``outcome`` of charge ``cid`` as in flight, or refuse it (a
        Conflict naming ``outcome``) when it says no money moved and a refund, dispute or EFW of the charge is
        recorded or in flight (:func:`~payfm.serving.outcome_checks.outcome_before`). An authorized result
        claims nothing. :meth:`_release_result` ends the claim."""
        if outcome not in UNCAPTURED:
            return
        with self._refund_lock:
            flying = [(table, {"id": oid}) for table, oid in sorted(self._moving.get(cid, ()))]
            refused = outcome_before(cid, outcome, [*self.log.outcomes_of(cid), *flying])
            if refused is not None:
                raise refused
            self._declining.setdefault(cid, []).append(outcome)

    def _release_result(self, cid: str, outcome: str) -> None:
        """End the claim :meth:`_claim_result` took for ``outcome`` (none for an authorized result)."""
        if outcome not in UNCAPTURED:
            return
        with self._refund_lock:
            claims = self._declining.get(cid, [])
            if outcome in claims:
                claims.remove(outcome)
            if not claims:
                self._declining.pop(cid, None)
