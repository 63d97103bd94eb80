"""A running server notices a Redis that restarted under it, and catches the shared state up.

A Redis that restarts from an older save (an RDB snapshot, an AOF that lost its last second) comes back with
its load marker and an older state: the servers' features would miss every event since the save, silently,
until they restarted. Every server's workspace watcher (:mod:`payfm.serving.watch`, once a second) now reads
the ``run_id`` of each Redis its shared states live in (``INFO server``: a new one at every start of the
Redis). When it changed, the server:

- checks the features' state is still this log's (one loaded from another event log since is a
  ``/healthz`` problem, 503, checked again at every look until the namespace holds this log's state again:
  dropped and loaded anew by a server that starts), then replays every event of its decision log within the
  charge TTL onto it (ids counted already count once), as a joining server does when its check finds the
  state behind. The check alone is no proof here: the charges decided between the restart and the look are
  in the restarted state, and on a busy service they are all the last thousand it reads;
- checks each foundation-model embedder's state against the charges its decision log holds that were
  decided before the last look on the old run; an embedder state cannot be caught up in place (each charge's
  tokens are relative to the charges before it), so a stale one is a ``/healthz`` warning, checked again at
  every look, until a server that starts loads it again.

A Redis that came back empty (no save) is a ``/healthz`` problem already (the state is gone): a server that
starts loads it again from its logs, and this one, looking meanwhile, then catches it up with its own. A
Redis that fails while this runs is tried again at the next look (the run id is recorded only once the
check succeeded). Several servers on one Redis each catch up with their log; the ids make that safe.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from payfm.errors import ConfigError, shown_url
from payfm.events.cards import shown_text
from payfm.serving.decision_log import STALE_CHECK

if TYPE_CHECKING:
    from payfm.serving.scorer import Scorer

log = logging.getLogger("payfm.serving")


def run_id(client: Any) -> str:
    """The Redis server's run id: random, new at each start of the server."""
    return str(client.info("server")["run_id"])


class RestartCheck:
    """Which Redis run each shared state of ``scorer`` was last checked on, and what a restart left wrong
    (the module's docstring)."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self._runs: dict[tuple[str, str], str] = {}  # (url, namespace) -> the run id it was checked on
        self._failed: dict[tuple[str, str], str] = {}  # the last failure of each store, logged once
        self.problem: str | None = None  # the features' state holds another log's (a /healthz problem)
        # embedder states a restart left stale: their checkpoint's hash and when they were last seen before
        # (the charges decided before it are the ones checked again; /healthz warns of each)
        self._stale: dict[tuple[str, str], tuple[str, str]] = {}
        self._gone: set[tuple[str, str]] = set()  # states a restart emptied (said once)
        # when each store was last seen on its run (ISO, as the decision log's decided_at): the charges
        # decided before it are those a restart from an older save may have lost
        self._seen_at: dict[tuple[str, str], str] = {}

    def _stores(self) -> list[tuple[str, Any]]:
        """The Redis stores the server reads now: ``("features", store)`` and ``(checkpoint hash, store)``."""
        scorer = self.scorer
        stores: list[tuple[str, Any]] = [("features", scorer.online.store)]
        stores += [(h, e.store) for h, e in scorer.bundle.embedders.items()]
        return [(what, s) for what, s in stores if hasattr(s, "client")]

    def look(self) -> None:
        """Check every Redis store whose server's run id changed since it was last checked (one ``INFO``
        each); a store seen for the first time (at start, or an embedder a reload added) is recorded."""
        stores = self._stores()
        current = {(s.url, s.ns) for _, s in stores}
        self._stale = {k: v for k, v in self._stale.items() if k in current}  # (an embedder reloaded away)
        for what, store in stores:
            key = (store.url, store.ns)
            try:
                looked_at = datetime.now(UTC).isoformat()  # (before INFO: a charge after it may be lost)
                now = run_id(store.client)
                before = self._runs.get(key)
                if before is not None and now != before:
                    if not self._restarted(what, store, before, now, self._seen_at.get(key, looked_at)):
                        continue  # the state is gone: looked at again until a server that starts loads it
                elif what == "features" and self.problem is not None and store.is_loaded():
                    self._catch_up(store)  # another log's: checked again (it may have been loaded anew)
                elif key in self._stale:
                    self._check_embedder(what, store, self._stale[key][1])  # loaded anew since?
                self._runs[key] = now
                self._seen_at[key] = looked_at
                self._failed.pop(key, None)
            except Exception as e:  # a Redis down or restarting: tried again at the next look
                said = self.scorer.scrub(f"{type(e).__name__}: {e}")
                if said != self._failed.get(key):
                    self._failed[key] = said
                    log.warning(
                        "checking whether the Redis at %s restarted failed (tried again every look): %s",
                        shown_url(store.url),
                        shown_text(said, 300),
                    )

    def _restarted(self, what: str, store: Any, before: str, now: str, seen_at: str) -> bool:
        """Check ``store`` after its Redis restarted; False while its state is gone (not loaded: /healthz
        says so, and a server that starts loads it from its logs, after which this one catches up).
        ``seen_at``: when it was last seen on the run before (the charges decided before are checked)."""
        where = shown_url(store.url)
        if not store.is_loaded():
            if (store.url, store.ns) not in self._gone:
                self._gone.add((store.url, store.ns))
                log.error(
                    "Redis at %s restarted (run %s, was %s) without the state %s: restart a server to load "
                    "it from the logs (this one then catches it up with its decision log)",
                    where,
                    now[:8],
                    before[:8],
                    store.ns,
                )
            return False
        self._gone.discard((store.url, store.ns))
        log.warning(
            "Redis at %s restarted (run %s, was %s): checking the state %s against this server's decision "
            "log (a restart from an older save loses the events since)",
            where,
            now[:8],
            before[:8],
            store.ns,
        )
        if what == "features":
            self._catch_up(store, replay=True)
        else:
            self._check_embedder(what, store, seen_at)
        return True

    def _catch_up(self, store: Any, replay: bool = False) -> None:
        """Check the features' state is this log's (else :attr:`problem`); with ``replay`` (after a
        restart), apply every event of the decision log within the charge TTL again: checking the last
        charges first, as a joining server does, is no proof here, as the charges decided since the restart
        are in the restarted state (a busy service's last thousand)."""
        from payfm.serving.shared_state import catch_up, check_features_owner

        t0 = time.perf_counter()
        try:
            check_features_owner(self.scorer, store)
        except ConfigError as e:  # loaded from another event log since: deciding on it is wrong
            problem = f"the online state in Redis changed under this server: {e}"
            if problem != self.problem:
                log.error("%s", problem)
            self.problem = problem
            return
        if self.problem is not None:
            log.warning("Redis online state %s holds this server's event log's state again", store.ns)
        self.problem = None
        if replay:
            n = catch_up(self.scorer, store, always=True)
            log.warning(
                "Redis online state %s: %d events of this decision log replayed onto it after Redis "
                "restarted, in %.1f s (those it held count once; a restart from an older save lost the "
                "events since)",
                store.ns,
                n,
                time.perf_counter() - t0,
            )

    def _check_embedder(self, h: str, store: Any, before: str) -> None:
        """Warn (:meth:`warnings`) while the embedder state misses charges this server's decision log holds
        that were decided ``before`` (ISO: when the state was last seen before its Redis restarted; those
        decided since are in the restarted state whatever it lost); clear the warning once it holds them (a
        server that started loaded it again)."""
        key = (store.url, store.ns)
        rows = self.scorer.log._fetch(
            "SELECT charge_id FROM decisions WHERE decided_at < ? ORDER BY seq DESC LIMIT ?",
            (before, STALE_CHECK),
        )
        if store.learned_all([str(r[0]) for r in rows]):
            again = self._stale.pop(key, None) is not None
            log.log(
                logging.WARNING if again else logging.INFO,
                "foundation model %s: its Redis state holds this decision log's charges%s",
                h[:12],
                " again" if again else "",
            )
            return
        if key not in self._stale:
            log.error("%s", _stale_text(h))
        self._stale[key] = (h, before)

    def warnings(self) -> list[str]:
        """What ``/healthz`` warns of: the embedder states a Redis restart left stale."""
        return [_stale_text(h) for h, _ in self._stale.values()]


def _stale_text(h: str) -> str:
    return (
        f"the state of foundation model {h[:12]} in Redis misses charges of this server's decision log "
        "(Redis restarted from an older save): its embeddings read a shorter history until a server "
        "restarts (a server that starts loads it again from the logs)"
    )
