"""The scorer: one charge in, one decision out; no HTTP inside.

``Scorer.open(ws)`` loads the production model (and a shadow model when one is in stage ``shadow``), the
active ruleset and their feature set into an immutable :class:`Bundle`; :meth:`Scorer.reload` builds a new
bundle and swaps the reference, so a promotion or a ruleset apply takes effect without a restart and a
request in flight finishes with the bundle it started with.

``score(charge)``: validate; if the charge id was decided before, return the stored decision (idempotent);
else read the online features and count the charge (one atomic step, under the state lock, which also hands
out the sequence number that orders the decision log); model probability -> risk score 0-100 and level; the
top 3 reasons; the rules (first match in the order request_3ds, allow, block, review; no match: authorized);
record the decision (durable before returning). With no model registered the score is null and rules on
``:risk_score:`` never match (three-valued logic); every other rule still applies.

A model trained on foundation-model embeddings (registered with ``foundation_model=``) takes the charge's
embedding after the features, from an online embedder of its checkpoint that learns every decided charge
(:mod:`payfm.serving.fm_embeddings`); other models load no torch.

Restart: :meth:`Scorer.open` restores the last state snapshot (memory state) and replays the decision log's
charges and outcomes logged after it, in sequence order; ids already counted count once. Writing snapshots
(:meth:`Scorer.snapshot`, periodic and at close) is :class:`payfm.serving.snapshots.SnapshotMixin`'s;
outcomes and reviews are :class:`payfm.serving.feedback.FeedbackMixin`'s.

Example:
    >>> import tempfile
    >>> from payfm.events.workspace import Workspace
    >>> from payfm.serving.charges import EXAMPLE_FIELDS
    >>> scorer = Scorer.open(Workspace.open(tempfile.mkdtemp(), create=True))
    >>> d = scorer.score({"charge_id": "ch_1", "created": "2026-01-02T03:04:05Z", **EXAMPLE_FIELDS})
    >>> d.outcome, d.risk_score
    ('authorized', None)
    >>> scorer.close()
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from payfm.errors import scrubbed, shown_url
from payfm.events.workspace import Workspace, opened
from payfm.features.definitions import AUTHORIZATION
from payfm.features.online import OnlineFeatures
from payfm.features.stores import MemoryStore, SnapshotError, StateStore
from payfm.redis_breaker import QueuedLock, queued_since
from payfm.redis_load import Presence, is_redis_url, redis_errors, redis_failure
from payfm.rules import charge_values
from payfm.serving.bundle import Bundle, load_bundle, log_relisting, relisted
from payfm.serving.charges import normalize_charge, refuse_another_charge, refuse_untimely
from payfm.serving.clock import EventClock, known_times
from payfm.serving.decision import Decision
from payfm.serving.decision_log import (
    DecisionLog,
    DecisionRecord,
    open_log,
    settled,
)
from payfm.serving.errors import InvalidInput, not_committed
from payfm.serving.feedback import FeedbackMixin, apply_logged_event
from payfm.serving.fm_embeddings import (
    describe_fm,
    embedder_charge,
    explain,
    fm_hash,
    fm_parts,
    model_vector,
    unseen,
    warm,
)
from payfm.serving.health import Probe, release_memory
from payfm.serving.scorer_config import ScorerConfig as ScorerConfig  # (its home; imported from here too)
from payfm.serving.shared_state import begin_shared, join_shared
from payfm.serving.snapshot_child import snapshot_seq
from payfm.serving.snapshots import SnapshotMixin
from payfm.training.scores import risk_score

if TYPE_CHECKING:
    from payfm.features.redis_store import RedisStore
    from payfm.fm.embed import OnlineEmbedder
    from payfm.serving.watch import Watcher

log = logging.getLogger("payfm.serving")
_DURABLE_TIMEOUT_S = 30.0
COMMIT_STALLED_S = 2.0  # a write of the decision log in progress longer than this: /healthz says 503

OUTCOMES = ("authorized", "manual_review", "blocked", "request_3ds")
_ACTION_OUTCOME = {None: "authorized", "allow": "authorized", "review": "manual_review", "block": "blocked"}
_ACTION_OUTCOME["request_3ds"] = "request_3ds"


class Scorer(FeedbackMixin, SnapshotMixin):
    """Decisions for one workspace: features + model + reasons + rules, recorded in the decision log."""

    def __init__(
        self,
        ws: Workspace,
        bundle: Bundle,
        online: OnlineFeatures,
        decisions: DecisionLog,
        config: ScorerConfig,
        seq: int = 0,
    ) -> None:
        self.ws = ws
        self.bundle = bundle
        self.online = online
        self.log = decisions
        self.config = config
        # the online state + sequence numbers; a Redis state fails at once the requests queued for it behind
        # one whose Redis call failed (payfm.redis_breaker): they waited its timeout each in turn
        self._lock = QueuedLock()  # type: ignore[assignment]  # (threading.Lock's interface)
        self._seq = seq
        self._pending: dict[str, Future[dict[str, Any]]] = {}
        self._init_feedback()  # outcomes in flight, money claims, event-log appends (serving/feedback.py)
        self.clock = EventClock(lambda: known_times(ws, decisions))  # dates closures (serving/clock.py)
        self._deciding: dict[str, dict[str, Any]] = {}  # the charges of _pending (a same id: a retry?)
        self._inflight = 0  # applied to the state, not yet committed to the log
        self._drained = threading.Condition(self._lock)
        self._since_snapshot = 0
        self._since_freeze = 0
        self._snapshot_due = False  # set when a decision completes the snapshot interval
        self._snapshotting = False  # a snapshot's child process is writing
        self._reloading = threading.Lock()  # one reload at a time (it may warm a new embedder)
        self._fm_state = "memory"  # where new foundation-model embedders keep their state (see open)
        self._presence: Presence | None = None  # on a Redis state: the namespaces this process serves from
        self.append_outcomes = True  # False when replaying: the outcomes are in the log already
        self.watcher: Watcher | None = None  # what follows the workspace (ScorerConfig.lists_refresh_s)
        self._log_probe = Probe(lambda: self.log.get_decision(""))  # (a key lookup: the log answers)

    def __repr__(self) -> str:
        """What decides, for a notebook: ``Scorer('fraud-gbdt@3', ruleset 2, feature set 'default@<version>',
        state memory)``; a Redis state by its URL without the password. Reads nothing."""
        b, store = self.bundle, self.online.store
        model = repr(b.model_version.ref) if b.model_version else "no model"
        ruleset = f"ruleset {b.ruleset_version}" if b.ruleset_version is not None else "no ruleset"
        url = getattr(store, "url", None)
        state = (
            "memory"
            if isinstance(store, MemoryStore)
            else f"redis {shown_url(url)}"
            if isinstance(url, str)
            else type(store).__name__
        )
        return f"Scorer({model}, {ruleset}, feature set '{b.fset.name}@{b.fset.version}', state {state})"

    # ---- life cycle ----------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        ws: Workspace,
        *,
        decision_log: str | DecisionLog = "sqlite",
        state: str | StateStore = "memory",
        config: ScorerConfig | None = None,
        durability: str = "fsync",
    ) -> Scorer:
        """Load the bundle, open the log, rebuild the online state (snapshot + the log's tail).

        ``durability`` (``fsync`` or ``os``, see :data:`payfm.serving.decision_log.DURABILITY`) applies to a
        log opened from a spec string."""
        ws, config = opened(ws, "Scorer.open"), config or ScorerConfig()
        if not isinstance(state, StateStore) and state != "memory" and not is_redis_url(state):
            raise InvalidInput(
                "The state must be 'memory' or a redis://, rediss:// or unix:// URL. "
                f"Got {shown_url(state)!r}.",
                field="state",
            )
        fm_state = state if isinstance(state, str) else "memory"  # embedders share Redis with the features
        bundle = load_bundle(ws, config.model, fm_state=fm_state)
        if bundle.shadow_refused is not None:
            log.error("%s", bundle.shadow_refused[1])
        fset = bundle.fset
        dlog = (
            decision_log
            if isinstance(decision_log, DecisionLog)
            else open_log(decision_log, ws.root, durability)
        )
        shared: RedisStore | None = None
        if isinstance(state, StateStore):
            store: StateStore = state
        elif state == "memory":
            store = MemoryStore()
        else:
            from payfm.features.redis_store import RedisStore

            store = shared = RedisStore(state, fset)
        presence: Presence | None = None
        try:
            seq = dlog.max_seq()
            online = OnlineFeatures(fset, store)
            scorer = cls(ws, bundle, online, dlog, config, seq)
            scorer._fm_state = fm_state
            if isinstance(store, MemoryStore) and not isinstance(state, StateStore):
                scorer._rebuild()
            elif shared is not None:  # Redis, from a URL
                scorer._presence = presence = Presence(shared.client)
                presence.serve([shared.ns])  # from the start: a drop while it loads would empty its state
                scorer._load_shared(shared)
            if bundle.embedders and not isinstance(state, StateStore):  # a caller's own state: it warms them
                scorer._warm_embedders(bundle.embedders, None)
            scorer._mark_live()
            for mv in (bundle.model_version, bundle.shadow_version):
                if mv is not None and describe_fm(mv):
                    log.info("serving %s on foundation-model embeddings: %s", mv.ref, describe_fm(mv))
            scorer._append_pending_outcomes()
            dlog.start()
            if config.lists_refresh_s is not None:
                scorer._watch(config.lists_refresh_s)
        except BaseException as e:
            if presence is not None:
                presence.close()
            if dlog is not decision_log:  # opened here: nothing else will close it
                dlog.close()
            failed = redis_failure(e, shared.url, "The Redis online state", "starting") if shared else None
            if failed is not None:  # one line, not a driver's traceback (the steps above name theirs)
                raise failed from None
            raise
        return scorer

    def _mark_live(self) -> None:
        """On a Redis state, say which namespaces this process serves from now: the features' and each
        embedder's (`payfm serve state drop` refuses them while it runs)."""
        if self._presence is None:
            return
        names = [getattr(self.online.store, "ns", "")]
        names += [getattr(e.store, "ns", "") for e in self.bundle.embedders.values()]
        self._presence.serve(n for n in names if n)

    def _rebuild(self) -> None:
        """Restore the newest snapshot of this feature set and decision log, then replay the log after its
        sequence number."""
        version = self.bundle.fset.version
        snaps = sorted(self._snapshot_dir().glob(f"{self._snapshot_prefix()}*.json.gz"), key=snapshot_seq)
        others = [p.name for p in self._snapshot_dir().glob(f"{version}-*.json.gz") if p not in snaps]
        if others and not snaps:
            log.info(
                "state snapshots %s are of another decision log than %s: rebuilding from the logs",
                ", ".join(sorted(others)),
                shown_url(self.log.url),
            )
        since = 0
        restored = False
        pruned = self.log.pruned_through()
        if snaps and snapshot_seq(snaps[-1]) < pruned:  # pruned events after it: not in the replay
            log.warning(
                "state snapshot %s covers the decision log up to seq %d, which was pruned up to seq %d "
                "since: rebuilding from the event log and the decision log (the pruned events are in the "
                "event log)",
                snaps[-1].name,
                snapshot_seq(snaps[-1]),
                pruned,
            )
            snaps = []
        if not snaps:
            self._warn_unwarmed()
        if snaps:
            try:
                self.online = OnlineFeatures(self.bundle.fset, MemoryStore.restore(snaps[-1], version))
                since = snapshot_seq(snaps[-1])
                restored = True
            except SnapshotError as e:  # another state format: rebuild from the logs instead
                log.warning("%s: ignoring it", e)
        if not restored:
            self._warm_from_event_log(self.online)
        n = self._apply_logged(self.online, since)
        log.info("online state rebuilt: snapshot seq %d + %d logged events", since, n)

    def _warn_unwarmed(self) -> None:
        """A state built from a pruned decision log without the event log misses the pruned events: said."""
        if not self.config.warm_from_event_log and (pruned := self.log.pruned_through()):
            log.warning(
                "the decision log was pruned up to seq %d and this server does not warm its state from the "
                "event log: the pruned charges and outcomes count in no feature",
                pruned,
            )

    def _warm_from_event_log(self, online: OnlineFeatures) -> None:
        if self.config.warm_from_event_log:
            from payfm.features.parity import apply_log

            t0 = time.perf_counter()
            warmed = apply_log(online, self.ws)
            log.info(
                "online state warmed from the event log: %d charges in %.1f s",
                warmed,
                time.perf_counter() - t0,
            )

    def _apply_logged(self, online: OnlineFeatures, since: int, not_before_us: int | None = None) -> int:
        """Apply the decision log's charges and outcomes after sequence number ``since``, in order (ids
        already counted count once), those created before ``not_before_us`` left out; returns how many."""
        n = 0
        # Servers sharing one log number events each from its own count, so a result or outcome recorded by
        # one server can precede (in seq) the charge another decided: those wait for the pass's end.
        later: list[tuple[str, dict[str, Any]]] = []
        for _, kind, payload in self.log.events_after(since, not_before_us=not_before_us):
            if kind != "charge" and online.store.charge_fields(str(payload["charge_id"])) is None:
                later.append((kind, payload))
                continue
            apply_logged_event(online, kind, payload)
            n += 1
        for kind, payload in later:
            apply_logged_event(online, kind, payload)
            n += 1
        return n

    def _load_shared(self, store: RedisStore) -> None:
        """Start a Redis state as a memory state starts: the first serving process of this feature set
        builds the state in memory from the event log and its decision log, then writes it to Redis once
        (:meth:`RedisStore.load`, under the namespace's load lock), recording whose event log it is; a process
        that finds it loaded checks it is this workspace's log's, and catches it up with its decision log
        (:func:`payfm.serving.shared_state.join_shared`). A Redis failing meanwhile is one line naming the URL
        and what was under way."""
        if not begin_shared(self, store):
            join_shared(self, store)
            return
        try:
            t0 = time.perf_counter()
            memory = MemoryStore()
            built = OnlineFeatures(self.bundle.fset, memory)
            self._warn_unwarmed()
            self._warm_from_event_log(built)
            n = self._apply_logged(built, 0)
            doing = f"writing the state built from the logs ({len(memory.states):,} records)"
            with redis_errors(store.url, f"The Redis online state {store.ns}", doing):
                keys = store.load(memory)
            del memory, built
            release_memory()  # (the state built in memory: hundreds of MB a serving process keeps else)
        except BaseException:
            store.abort_load()  # another process may load it (it never raises: the first error says why)
            raise
        log.info(
            "Redis online state %s loaded: event log + %d logged events, %d keys in %.1f s",
            store.ns,
            n,
            keys,
            time.perf_counter() - t0,
        )

    def refresh_lists(self) -> bool:
        """Recompile the served ruleset with the current contents of the lists it uses; swap it in (one
        reference assignment, as a reload) when they changed. Returns whether it did."""
        with self._reloading:
            b, new = self.bundle, relisted(self.ws, self.bundle)
            if new is None:
                return False
            self.bundle = new
        log_relisting(b, new)
        return True

    def _watch(self, every_s: float) -> None:
        """Start following the workspace (the lists; with ``ScorerConfig.follow``, the ruleset and the models
        too), looking every ``every_s`` seconds (:mod:`payfm.serving.watch`)."""
        from payfm.serving.watch import Watcher

        self.watcher = Watcher(self, every_s, self.config.follow)
        self.watcher.start()

    def health(self) -> list[str]:
        """What keeps this server from deciding as it should, for ``/healthz`` (empty when nothing): the
        decision log not answering a read; a shared state in Redis (the features', a foundation model
        embedder's) not answering, or gone (its load marker missing: Redis restarted empty or was flushed, and
        every feature or embedding would start from nothing). Each Redis call gives up after its timeout."""
        problems = []
        if (said := self._log_probe()) is not None:  # (within 2 s: a stalled log is a 503, not a hang)
            problems.append(f"the decision log does not answer ({_short(self.scrub(said))})")
        elif (busy := self.log.write_busy_s()) > COMMIT_STALLED_S:  # (reads answer while writes wait)
            problems.append(
                f"the decision log has not committed a write for {busy:.0f} s (a lock held on it, a full "
                "disk?): decisions and outcomes wait for their commit"
            )
        shared: list[tuple[str, Any]] = [("online state", self.online.store)]  # memory ones: loaded at start
        shared += [(f"embedder state of {h}", e.store) for h, e in self.bundle.embedders.items()]
        for what, store in [(w, s) for w, s in shared if hasattr(s, "client")]:  # (Redis ones)
            try:
                if not store.is_loaded():
                    problems.append(
                        f"the {what} in Redis is gone (its load marker is missing: Redis restarted empty or "
                        "was flushed); restart the servers to load it from the logs again"
                    )
            except Exception as e:
                said = _short(self.scrub(str(e)))
                problems.append(f"the {what} does not answer ({type(e).__name__}: {said})")
        if self.watcher is not None and self.watcher.restarts.problem:  # (Redis restarted with another's)
            problems.append(self.watcher.restarts.problem)
        return problems

    def _stores(self) -> list[Any]:
        """The online state's store and each foundation-model embedder's (memory or Redis ones)."""
        return [self.online.store, *(e.store for e in self.bundle.embedders.values())]

    def scrub(self, said: str) -> str:
        """``said`` (a driver's message) without the password of the decision log's URL nor of a Redis
        state's (:func:`payfm.errors.scrubbed`), for /healthz and the log."""
        for url in [getattr(self.log, "url", ""), *(getattr(s, "url", "") for s in self._stores())]:
            said = scrubbed(said, url)
        return said

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        """``with Scorer.open(ws) as scorer:`` closes it (its snapshot written) when the block ends."""
        self.close()

    def close(self, snapshot: bool = True) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        with self._reloading:  # a reload in progress (the watcher's, warming an embedder) ends first
            pass
        self._log_probe.close()
        with self._lock:  # a periodic snapshot being written: let it finish, then take the final one
            while self._snapshotting:
                self._drained.wait()
        try:
            if snapshot:
                self.snapshot()
        finally:
            try:
                self._close_appends()  # even when the snapshot failed: no timer may outlive the log
            finally:
                if self._presence is not None:
                    self._presence.close()
                self.log.close()

    def _settled(self) -> int:
        """Wait for decisions in flight, commit the log; the sequence number everything up to is logged.
        Call with the state lock held."""
        while self._inflight:
            self._drained.wait()
        self.log.flush()
        return self._seq

    def warm_embedders(self, events: Workspace) -> int:
        """Warm the foundation-model embedders from ``events`` (and the decision log), for a scorer opened
        on a state the caller manages (``state=`` a :class:`StateStore`, as a replay does: it warms both
        with the history before its period). Only before the first decision; returns the charges learned."""
        return (
            self._warm_embedders(self.bundle.embedders, None, events).num_rows if self.bundle.embedders else 0
        )

    def _warm_embedders(
        self, fresh: Mapping[str, OnlineEmbedder], upto: int | None, events: Workspace | None = None
    ) -> pa.Table:
        """Warm ``fresh`` embedders from the event log (of ``events``, default the scorer's workspace) and the
        decided charges logged up to ``upto`` (all: None); returns the charges they learned."""
        return warm(fresh, events or self.ws, self.log, upto, self.config.warm_from_event_log)

    def reload(self) -> Bundle:
        """Load the current production/shadow models and active ruleset; swap them in atomically.

        A model on another foundation-model checkpoint brings its own embedder, warmed (outside the state
        lock) from the event log and the decisions logged so far, then caught up, under the lock, with the
        charges decided meanwhile: it has seen every charge once when the swap makes it serve."""
        with self._reloading:
            old = self.bundle
            new = load_bundle(self.ws, self.config.model, old.fset, old.embedders, self._fm_state)
            if new.shadow_refused is not None and new.shadow_refused != old.shadow_refused:
                log.error("%s", new.shadow_refused[1])  # (once: not at each retry of the same failure)
            fresh = {h: e for h, e in new.embedders.items() if old.embedders.get(h) is not e}
            if not fresh:
                self.bundle = new  # one reference assignment: requests in flight keep their bundle
            else:
                with self._lock:
                    upto = self._settled()
                learned = self._warm_embedders(fresh, upto)
                with self._lock:
                    self._settled()
                    events = list(self.log.events_after(upto))
                    late = unseen([p for _, k, p in events if k == "charge"], learned)
                    results = [p["charge"] for _, k, p in events if k == AUTHORIZATION]
                    reported = {str(p["charge_id"]) for p in results}
                    for p in late:  # on a shared state, one learned already is not learned again (claims)
                        for embedder in fresh.values():
                            embedder.learn_one(embedder_charge(p))
                        # its result, logged before it when servers share the log (their own counts)
                        cid = str(p["charge_id"])
                        known = (
                            self._reported(cid) if p.get("outcome") is None and cid not in reported else None
                        )
                        if known is not None:
                            results.append({**p, "outcome": known[1], "decline_code": known[2]})
                    for p in results:  # the charges learned without their result; set once (first wins)
                        for embedder in fresh.values():
                            embedder.set_outcome(p)
                    self.bundle = new
            self._mark_live()
        log.info("reloaded: %s", new.describe())
        return new

    # ---- deciding ------------------------------------------------------------------------------------------
    def score(self, charge: Mapping[str, Any]) -> Decision:
        """Decide ``charge`` (a mapping of the event schema's charge fields; ``created`` timezone-aware).

        Returns once the decision is durable in the decision log."""
        decision = self.begin(charge).result(_DURABLE_TIMEOUT_S)
        if self._snapshot_due:
            self._snapshot_due = False
            self._snapshot_in_background()
        return decision

    async def score_async(self, charge: Mapping[str, Any]) -> Decision:
        """:meth:`score` for an event loop: decides in the calling thread, awaits durability without
        blocking the loop (concurrent requests share the decision log's commits). On a shared state in Redis
        the decision runs in a worker thread: its calls wait on the network (up to their timeout), and on the
        loop a Redis that stopped answering froze the whole server, /healthz and /metrics with it (an SRE's
        audit). So does it on a decision log on the network (PostgreSQL): a retry of a decided charge reads
        the log, and on the loop a PostgreSQL that stalled froze the server (a review: 46 s without /healthz
        nor any decision, on the memory state). The request's arrival is taken before the thread hop: a
        request the thread pool holds back behind a stalled Redis call fails with it, as one queued for the
        state lock does (:func:`payfm.redis_breaker.queued_since`)."""
        if self.log.remote or any(hasattr(store, "client") for store in self._stores()):  # (a Redis one)
            pending = await asyncio.to_thread(self._begin_queued, charge, time.monotonic())
        else:
            pending = self.begin(charge)
        if not await settled(pending, _DURABLE_TIMEOUT_S):
            # The log did not commit in time: a 503, not a request hung for good (the commit goes on).
            raise not_committed(_DURABLE_TIMEOUT_S)
        decision = pending.result()
        if self._snapshot_due:
            self._snapshot_due = False
            self._snapshot_in_background()
        return decision

    def _begin_queued(self, charge: Mapping[str, Any], arrived: float) -> Future[Decision]:
        """:meth:`begin` in a worker thread, its waits for the state lock counted from ``arrived``."""
        with queued_since(arrived):
            return self.begin(charge)

    def begin(self, charge: Mapping[str, Any]) -> Future[Decision]:
        """Decide ``charge`` now and queue its record; the future resolves with the decision once the record
        is committed (durable), or with the error. Validation errors raise here."""
        t0 = time.perf_counter()
        c = normalize_charge(charge)
        try:
            refuse_untimely(c["created_us"], self.config.max_future_s, self.config.max_past_s)
        except InvalidInput:  # a retry of a charge decided already gets its decision, whatever the clock
            if self.log.get_decision(str(c["charge_id"])) is None:
                raise
        cid = str(c["charge_id"])
        mine: Future[dict[str, Any]] | None = None
        fm_inputs: dict[str, np.ndarray] = {}
        # (stored decision, its logged charge) of a charge the state counts, read from the log outside the
        # state lock: a decision log that stalls holds this request, not every other one (a review: one retry
        # during a PostgreSQL stall left every request waiting on the lock).
        looked: tuple[dict[str, Any] | None, dict[str, Any] | None] | None = None
        while True:
            with self._lock:
                bundle = self.bundle  # read under the lock: a reload swaps embedders under it
                other = self._pending.get(cid)
                stored = None
                known = None if other is not None else self.online.store.charge_fields(cid)
                counted = known is not None
                deciding = self._deciding.get(cid)
                if other is not None and deciding is not None:  # being decided now: a retry, or another one
                    refuse_another_charge(cid, deciding, c)
                read_log = known is not None and looked is None
                if known is not None and looked is not None:
                    stored, logged = looked
                    # what the decision log holds of it (every field), else what the state keeps (event log's)
                    refuse_another_charge(cid, logged if logged is not None else known, c)
                if other is None and stored is None and not read_log:
                    vector, claimed = self.online.vector_then_claim(c)
                    if not claimed and not counted:
                        # Another server sharing the state claimed the id since it was read above: its
                        # charge was counted (ours was not). Sent with other fields it is another charge:
                        # refused, as when the first read finds it (its decision log's insert would win or
                        # lose at random).
                        theirs = self.online.store.charge_fields(cid)
                        if theirs is not None:
                            refuse_another_charge(cid, theirs, c)
                    self.clock.saw(c["created_us"])
                    if bundle.embedders:  # the embedding's inputs now, the forward pass outside the lock
                        ec = embedder_charge(c)
                        for h, embedder in bundle.embedders.items():
                            # a charge counted already (it is in the event log) is learned once, as a feature
                            fm_inputs[h] = embedder.inputs_then_learn(ec, learn=not counted)
                    self._seq += 1
                    seq = self._seq
                    mine = Future()
                    self._pending[cid] = mine
                    self._deciding[cid] = c
                    self._inflight += 1
            if not read_log:
                break
            found = self.log.get_decision(cid)
            looked = (found, self.log.get_charge(cid) if found is not None else None)
        out: Future[Decision] = Future()
        if other is not None:  # the same charge is being decided: its stored decision, once durable
            other.add_done_callback(lambda f: _settle(out, f))
            return out
        if stored is not None:
            out.set_result(Decision.from_json(stored))
            return out
        assert mine is not None
        try:
            embeddings = {}
            if fm_inputs:  # the outputs the model and the shadow take, once per checkpoint
                needs = bundle.fm_needs
                embeddings = {h: fm_parts(bundle.embedders[h], x, needs[h]) for h, x in fm_inputs.items()}
            decision = self._decide(bundle, c, vector, t0, embeddings)
            if decision.outcome == "blocked" and c.get("outcome") is None:
                # Never sent for authorization: its outcome is the block, counted (and logged) as a
                # processor's result reported later would be (record_authorization).
                c = {**c, "outcome": "blocked"}
                with self._lock:
                    self._count_result(bundle, c)
            record = DecisionRecord.of(
                seq,
                cid,
                int(c["created_us"]),
                decision.decided_at,
                decision.outcome,
                c,
                decision.to_json(),
                decision.outcome == "manual_review",
            )
            committed = self.log.submit(record)
        except BaseException as e:
            mine.set_exception(e)
            self._finished(cid)
            raise

        def durable(f: Future[Any]) -> None:  # on the log's writer thread, after the commit
            try:
                saved = f.result()
            except BaseException as e:
                mine.set_exception(e)
                self._finished(cid)
                out.set_exception(e)
                return
            mine.set_result(saved)
            self._finished(cid)
            # A retry that raced the first attempt gets the decision stored first.
            out.set_result(decision if saved is record.decision else Decision.from_json(saved))

        committed.add_done_callback(durable)
        return out

    def _finished(self, key: str) -> None:
        freeze = False
        with self._lock:
            self._pending.pop(key, None)
            self._deciding.pop(key, None)
            self._inflight -= 1
            self._since_snapshot += 1
            self._since_freeze += 1
            if 0 < self.config.gc_freeze_every <= self._since_freeze:
                self._since_freeze = 0
                freeze = True
            if not self._inflight:
                self._drained.notify_all()
            if 0 < self.config.snapshot_every <= self._since_snapshot:
                self._since_snapshot = 0
                self._snapshot_due = True
        if freeze:  # outside the state lock
            # A full collection first: it scans only what was made since the last freeze (the rest is frozen),
            # and frees every cycle that is garbage now, so none is frozen for good.
            gc.collect()
            gc.freeze()

    def _decide(
        self,
        bundle: Bundle,
        c: Mapping[str, Any],
        vector: list[float | None],
        t0: float,
        embeddings: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    ) -> Decision:
        feats = dict(zip(self.online.names, vector, strict=True))
        embeddings = embeddings or {}
        score: int | None = None
        level: str | None = None
        reasons: list[dict[str, Any]] = []
        embedding = None
        if bundle.model is not None:
            h = fm_hash(bundle.model_version)
            x = model_vector(vector, bundle.model_version, embeddings[h] if h is not None else None)
            p = bundle.model.predict_one(x)
            score = risk_score(p)
            level = self.config.levels.level(score)
            if h is not None:
                taken = embeddings[h].get("embedding")
                embedding = taken.tolist() if taken is not None else None
                reasons = explain(bundle.model, x, self.config.top_k)
            else:
                reasons = [
                    {"feature": r.feature, "value": r.value, "contribution": r.contribution, "text": r.text}
                    for r in bundle.model.explain_one(vector, self.config.top_k)
                ]
        shadow = None
        if bundle.shadow is not None and bundle.shadow_version is not None:
            try:  # logged beside the decision, never deciding; a failing shadow never fails a charge
                hs = fm_hash(bundle.shadow_version)
                ps = bundle.shadow.predict_one(
                    model_vector(vector, bundle.shadow_version, embeddings[hs] if hs is not None else None)
                )
                shadow = {"model": bundle.shadow_version.ref, "risk_score": risk_score(ps), "probability": ps}
            except Exception as e:  # pragma: no cover - defensive
                shadow = {"model": bundle.shadow_version.ref, "error": type(e).__name__}
        action = rule = None
        if bundle.ruleset is not None:
            d = bundle.ruleset.decide(charge_values(c, feats, score, level))
            action, rule = d.action, d.rule
        return Decision(
            charge_id=str(c["charge_id"]),
            outcome=_ACTION_OUTCOME[action],
            risk_score=score,
            risk_level=level,
            rule=rule,
            action=action,
            reasons=reasons,
            model=bundle.model_version.ref if bundle.model_version else None,
            ruleset_version=bundle.ruleset_version,
            latency_ms=round((time.perf_counter() - t0) * 1000, 3),
            decided_at=datetime.now(UTC).isoformat(),
            shadow=shadow,
            features=feats,
            embedding=embedding,
        )


def _settle(out: Future[Decision], stored: Future[dict[str, Any]]) -> None:
    """Resolve ``out`` with the decision another request stored (or its error)."""
    e = stored.exception()
    if e is not None:
        out.set_exception(e)
    else:
        out.set_result(Decision.from_json(stored.result()))


def _short(said: str) -> str:
    """An exception's message on one line, cut, escaped, without a card number (a backend's text)."""
    from payfm.events.cards import shown_text

    return shown_text(" ".join(said.split()), 200)
