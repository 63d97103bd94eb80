"""What a running server follows of its workspace, looking every ``ScorerConfig.lists_refresh_s`` seconds:

- the rules' lists: when ``rules.db`` changed (its ``PRAGMA data_version`` moves when another connection
  commits), the served ruleset is recompiled with the lists' new contents (:meth:`Scorer.refresh_lists`);
- with ``ScorerConfig.follow``, the active ruleset and the production and shadow models: when ``rules.db`` or
  the registry's ``registry.db`` changed and what a load would now serve (:func:`wanted_models`, read again
  only when the registry changed, and :func:`wanted_ruleset`) is not what is served, the server reloads
  (:meth:`Scorer.reload`), as ``POST /v1/admin/reload`` does. Every server that shares the workspace then
  follows `rules apply`, `rules activate`, `rules rollback`, `models promote` and `models rollback` within a
  second, each on its own.

Each look also checks whether a Redis the server's shared states live in restarted, and catches them up
(:mod:`payfm.serving.redis_restarts`).

A change that cannot be served (a model on another feature set, one that fails to load) leaves the server
deciding as before: it is logged once, said in ``/healthz``'s ``warnings``, and tried again after a back-off
(:data:`RETRY_S`) until it is served, undone, or served by a reload.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from payfm.errors import PayfmError
from payfm.events.cards import shown_text
from payfm.registry.store import Registry, newest
from payfm.rules import rulesets
from payfm.serving.bundle import Bundle
from payfm.serving.redis_restarts import RestartCheck

if TYPE_CHECKING:
    from payfm.serving.scorer import Scorer

log = logging.getLogger("payfm.serving")

Served = tuple[str | None, str | None, int | None]  # production model, shadow model, ruleset version


def _serving(bundle: Bundle) -> Served:
    """What ``bundle`` really serves, as messages say it: its production and shadow models' references and
    its ruleset's version."""
    prod, shadow = bundle.model_version, bundle.shadow_version
    return (prod.ref if prod else None, shadow.ref if shadow else None, bundle.ruleset_version)


def served(bundle: Bundle) -> Served:
    """:func:`_serving`, compared with what is wanted: a shadow ``bundle`` could not load counts (it was
    tried: a change elsewhere does not load it again; a new shadow version does, and :meth:`Watcher.look`
    tries it again after a back-off)."""
    prod, shadow, version = _serving(bundle)
    refused = bundle.shadow_refused[0] if bundle.shadow_refused is not None else None
    return (prod, shadow or refused, version)


Models = tuple[str | None, str | None]  # production model, shadow model


def wanted_models(scorer: Scorer) -> Models:
    """The models a load (:func:`payfm.serving.bundle.load_bundle`) would serve now, as :func:`served` names
    them: the newest production version (of ``ScorerConfig.model``'s name, if set) and the newest shadow
    version on the served feature set. Reads the registry."""
    ws, fset = scorer.ws, scorer.bundle.fset
    versions = Registry(ws).list(scorer.config.model) if (ws.root / "models").exists() else []
    prod = newest(v for v in versions if v.stage == "production")
    shadow = newest(
        v
        for v in versions
        if v.stage == "shadow" and (v.feature_set, v.feature_set_version) == (fset.name, fset.version)
    )
    return (prod.ref if prod is not None else None, shadow.ref if shadow is not None else None)


def wanted_ruleset(scorer: Scorer) -> int | None:
    """The version of the active ruleset, which a load would serve (None: none). Reads ``rules.db``."""
    active = rulesets.active(scorer.ws) if (scorer.ws.root / "rules.db").exists() else None
    return active.version if active is not None else None


class _Version:
    """``PRAGMA data_version`` of one SQLite file, read on a read-only connection of its own (None while the
    file does not exist)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._con: sqlite3.Connection | None = None

    def read(self) -> int | None:
        if self._con is None:
            if not self.path.exists():
                return None
            self._con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        return int(self._con.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        if self._con is not None:
            self._con.close()


# A change that could not be served is tried again after this many seconds, doubling up to the last (a model
# whose files were still arriving on a synced workspace; a registry locked for long).
RETRY_S = (5.0, 300.0)


class Watcher:
    """The thread that follows the workspace for ``scorer`` (the module's docstring), looking every
    ``every_s`` seconds; ``follow`` adds the ruleset and the models to the lists."""

    def __init__(self, scorer: Scorer, every_s: float, follow: bool) -> None:
        self.scorer, self.every_s, self.follow = scorer, every_s, follow
        self._rules = _Version(scorer.ws.root / "rules.db")
        self._registry = _Version(scorer.ws.root / "models" / "registry.db")
        self._seen: tuple[int | None, int | None] | None = None
        self._models: Models | None = None  # what the registry selects, read when registry.db changed
        self._failed = False  # a change could not be served (tried again at _retry_at)
        self._refused: Served | None = None  # which (None: reading what is wanted failed)
        self._retry_at = 0.0  # (time.monotonic()) when it is tried again
        self._backoff = RETRY_S[0]
        self._said: tuple[Served | None, str] | None = None  # the failure logged last
        self.problem: str | None = None  # why, for /healthz; None once what is wanted is served
        self.looks = 0  # looks completed (a test waits for the next ones)
        # a shadow the bundle could not load: (its reference, when it is tried again, the back-off, the
        # bundle that refused it: a reload since, for any reason, was a try too)
        self._shadow: tuple[str, float, float, Bundle] | None = None
        self._shadow_said = ""  # the last failure of such a try, logged once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = RestartCheck(scorer)  # a Redis restarted under the server

    def look(self) -> None:
        """One look: catch a Redis state up after its Redis restarted; refresh the lists when ``rules.db``
        changed; with ``follow``, reload when either file changed (or a refused change is due to be tried
        again) and what is wanted is not what is served."""
        self.restarts.look()
        seen = (self._rules.read(), self._registry.read() if self.follow else None)
        before = self._seen
        if before is not None and seen != before:
            if seen[0] != before[0]:
                self.scorer.refresh_lists()
            if self.follow:
                if seen[1] != before[1]:
                    self._models = None  # read the registry again
                self.reload_if_changed()
        elif self.follow and self._failed:
            if served(self.scorer.bundle) == self._refused:  # served since (a POST /v1/admin/reload)
                self._served()
            elif time.monotonic() >= self._retry_at:
                self.reload_if_changed()
        if self.follow and not self._failed:  # (each look: frequent list edits must not starve it)
            self._retry_shadow()
        self._seen = seen  # (after the work: one that failed is tried again at the next look)
        self.looks += 1

    def reload_if_changed(self) -> None:
        """Reload when what a load would serve differs from what is served; a failure keeps what is served,
        is logged once and said in :attr:`problem`, and is tried again after a back-off."""
        want: Served | None = None
        try:
            if self._models is None:
                self._models = wanted_models(self.scorer)
            want = (*self._models, wanted_ruleset(self.scorer))
            if want == served(self.scorer.bundle):
                self._served()
                return
            due = not (self._failed and want == self._refused) or time.monotonic() >= self._retry_at
            if not due or self._stop.is_set():
                return
            new = self.scorer.reload()
        except Exception as e:  # (another feature set; a model that fails to load; a locked registry)
            self._refuse(want, e)
            return
        self._served()
        log.info("followed the workspace's change: now serving %s", _said(_serving(new)))

    def _retry_shadow(self) -> None:
        """Try a shadow the served bundle could not load again after a back-off (:data:`RETRY_S`), as a change
        that failed is: its files may not have arrived yet (a workspace synced file by file). Any reload
        since counts as a try. A try that fails to load anything keeps what is served, is said in
        :attr:`problem` and logged once, and doubles the back-off too."""
        bundle, now = self.scorer.bundle, time.monotonic()
        refused = bundle.shadow_refused
        if refused is None or self._shadow is None or self._shadow[0] != refused[0]:
            self._shadow = None if refused is None else (refused[0], now + RETRY_S[0], RETRY_S[0], bundle)
            return
        ref, due, backoff, tried = self._shadow
        if bundle is not tried:  # reloaded since (a change followed, a POST /v1/admin/reload): a try
            self._shadow = (ref, now + backoff, backoff, bundle)
            return
        if now < due or self._stop.is_set():
            return
        backoff = min(backoff * 2, RETRY_S[1])
        try:
            new = self.scorer.reload()
        except Exception as e:  # (production cannot be loaded now either: what is served stays)
            said = self._error_text(e)
            self.problem = (
                f"trying the shadow model {ref} again failed to load the workspace's models ({said}); still "
                f"serving {_said(_serving(bundle))}"
            )
            if said != self._shadow_said:
                self._shadow_said = said
                log.error("following the workspace: %s (tried again in %.0f s)", self.problem, backoff)
            self._shadow = (ref, now + backoff, backoff, bundle)
            return
        self.problem, self._shadow_said = None, ""
        if new.shadow_refused is None or new.shadow_refused[0] != ref:
            self._shadow = None
            log.info("followed the workspace: now serving %s", _said(_serving(new)))
        else:
            self._shadow = (ref, now + backoff, backoff, new)

    def _error_text(self, e: Exception) -> str:
        """``e`` as :attr:`problem` quotes it: no URL password, no card number, at most 300 characters."""
        said = str(e) if isinstance(e, PayfmError) else f"{type(e).__name__}: {e}"
        return shown_text(self.scorer.scrub(said), 300)

    def _served(self) -> None:
        self._failed, self._refused, self.problem, self._backoff = False, None, None, RETRY_S[0]

    def _refuse(self, want: Served | None, e: Exception) -> None:
        said = self._error_text(e)
        change = "changed" if want is None else f"changed to {_said(want)}"
        self.problem = (
            f"the workspace's models or rules {change} but cannot be served ({said}); still serving "
            f"{_said(_serving(self.scorer.bundle))}"
        )
        if want != self._refused or not self._failed:
            self._backoff = RETRY_S[0]
        self._failed, self._refused = True, want
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, RETRY_S[1])
        if (want, said) != self._said:  # (each failure logged once, not at every retry)
            self._said = (want, said)
            log.error(
                "following the workspace: %s (tried again in %.0f s)",
                self.problem,
                self._retry_at - time.monotonic(),
            )

    def start(self) -> None:
        """Take the files' versions now, serve any change since the bundle was loaded, then look every
        ``every_s`` seconds in a daemon thread."""
        self.restarts.look()  # (the Redis runs the states were loaded on)
        self._seen = (self._rules.read(), self._registry.read() if self.follow else None)
        self.scorer.refresh_lists()  # a change between the bundle's load and the first look
        if self.follow:
            self.reload_if_changed()
        self._thread = threading.Thread(target=self._run, name="payfm-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failed = ""  # the last failure, logged once: the look is tried again every every_s
        try:
            while not self._stop.wait(self.every_s):
                try:
                    self.look()
                    failed = ""
                except Exception as e:  # a failed look keeps what is served; it is tried again
                    if repr(e) != failed:
                        log.exception("refreshing the rules' lists failed (tried again until it works)")
                    failed = repr(e)
        finally:
            self._rules.close()
            self._registry.close()

    def stop(self) -> None:
        """Stop looking; wait for a look in progress (a reload may warm an embedder: the scorer's close then
        waits for it too, under its reload lock)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def _said(s: Served) -> str:
    prod, shadow, version = s
    parts: list[str] = [f"model {prod}" if prod else "no model"]
    parts += [f"shadow {shadow}"] if shadow else []
    parts += [f"ruleset v{version}" if version is not None else "no ruleset"]
    return ", ".join(parts)
