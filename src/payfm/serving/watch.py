"""What a running server follows of its workspace, looking every ``ScorerConfig.lists_refresh_s`` seconds:

- the rules' lists: when ``rules.db`` changed (its ``PRAGMA data_version`` moves when another connection
  commits), the served ruleset is recompiled with the lists' new contents (:meth:`Scorer.refresh_lists`);
- with ``ScorerConfig.follow``, the active ruleset and the production and shadow models: when ``rules.db`` or
  the registry's ``registry.db`` changed and what a load would now serve (:func:`wanted`) is not what is
  served, the server reloads (:meth:`Scorer.reload`), as ``POST /v1/admin/reload`` does. Every server that
  shares the workspace then follows `rules apply`, `rules activate`, `rules rollback`, `models promote` and
  `models rollback` within a second, each on its own.

A change that cannot be served (a model on another feature set, one that fails to load) leaves the server
deciding as before: it is logged once, and said in ``/healthz``'s ``warnings`` until a later change is served.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from payfm.errors import PayfmError
from payfm.events.cards import shown_text
from payfm.registry.store import Registry, newest
from payfm.rules import rulesets
from payfm.serving.bundle import Bundle

if TYPE_CHECKING:
    from payfm.serving.scorer import Scorer

log = logging.getLogger("payfm.serving")

Served = tuple[str | None, str | None, int | None]  # production model, shadow model, ruleset version


def served(bundle: Bundle) -> Served:
    """What ``bundle`` serves: its production and shadow models' references and its ruleset's version."""
    refs = (v.ref if v is not None else None for v in (bundle.model_version, bundle.shadow_version))
    return (*refs, bundle.ruleset_version)  # type: ignore[return-value]


def wanted(scorer: Scorer) -> Served:
    """What a load (:func:`payfm.serving.bundle.load_bundle`) would serve now, as :func:`served` says it: the
    newest production version (of ``ScorerConfig.model``'s name, if set), the newest shadow version on the
    served feature set, the active ruleset's version. Reads the registry and ``rules.db`` only."""
    ws, fset = scorer.ws, scorer.bundle.fset
    versions = Registry(ws).list(scorer.config.model) if (ws.root / "models").exists() else []
    prod = newest(v for v in versions if v.stage == "production")
    shadow = newest(
        v
        for v in versions
        if v.stage == "shadow" and (v.feature_set, v.feature_set_version) == (fset.name, fset.version)
    )
    active = rulesets.active(ws) if (ws.root / "rules.db").exists() else None
    return (
        prod.ref if prod is not None else None,
        shadow.ref if shadow is not None else None,
        active.version if active is not None else None,
    )


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


class Watcher:
    """The thread that follows the workspace for ``scorer`` (the module's docstring), looking every
    ``every_s`` seconds; ``follow`` adds the ruleset and the models to the lists."""

    def __init__(self, scorer: Scorer, every_s: float, follow: bool) -> None:
        self.scorer, self.every_s, self.follow = scorer, every_s, follow
        self._rules = _Version(scorer.ws.root / "rules.db")
        self._registry = _Version(scorer.ws.root / "models" / "registry.db")
        self._seen: tuple[int | None, int | None] | None = None
        self._refused: Served | None = None  # a change that could not be served (not tried again)
        self.problem: str | None = None  # why, for /healthz; None once what is wanted is served
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def look(self) -> None:
        """One look: refresh the lists when ``rules.db`` changed; with ``follow``, reload when either file
        changed and what is wanted is not what is served."""
        seen = (self._rules.read(), self._registry.read() if self.follow else None)
        before = self._seen
        if before is not None and seen != before:
            if seen[0] != before[0]:
                self.scorer.refresh_lists()
            if self.follow:
                self.reload_if_changed()
        self._seen = seen  # (after the work: one that failed is tried again at the next look)

    def reload_if_changed(self) -> None:
        """Reload when :func:`wanted` differs from what is served (once per refused change)."""
        want = wanted(self.scorer)
        if want == served(self.scorer.bundle):
            self._refused, self.problem = None, None
            return
        if want == self._refused:
            return
        try:
            new = self.scorer.reload()
        except PayfmError as e:  # (another feature set, a model that fails to load): keep deciding as before
            self._refused = want
            self.problem = (
                f"the workspace's models or rules changed to {_said(want)} but cannot be served "
                f"({shown_text(str(e), 300)}); still serving {_said(served(self.scorer.bundle))}"
            )
            log.error("following the workspace: %s", self.problem)
            return
        self._refused, self.problem = None, None
        log.info("followed the workspace's change: now serving %s", _said(served(new)))

    def start(self) -> None:
        """Take the files' versions now, serve any change since the bundle was loaded, then look every
        ``every_s`` seconds in a daemon thread."""
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
                        what = "following the workspace" if self.follow else "refreshing the rules' lists"
                        log.exception("%s failed (tried again until it works)", what)
                    failed = repr(e)
        finally:
            self._rules.close()
            self._registry.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def _said(s: Served) -> str:
    prod, shadow, version = s
    parts: list[str] = [f"model {prod}" if prod else "no model"]
    parts += [f"shadow {shadow}"] if shadow else []
    parts += [f"ruleset v{version}" if version is not None else "no ruleset"]
    return ", ".join(parts)
