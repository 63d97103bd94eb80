"""A serving process's start on a state shared in Redis: loaded once from the logs, and only ever used with
the event log it was loaded from.

The first process of a feature set builds the state in memory from the event log and its decision log and
writes it to Redis under the namespace's load lock (:mod:`payfm.redis_load`); the marker it leaves records
whose event log that was (:class:`Owner`: the workspace's identity and its log's,
:meth:`payfm.events.workspace.Workspace.identity`). The namespace is named by the feature set alone
(``payfm:<version>.f3``), so the servers of another workspace on the same feature set, or of this workspace
after its log was replaced (`generate --replace`, `demo --replace`), found it loaded and decided with another
world's counts, silently (a review: a charge scored on the other log's history; the workspace's own charge
refused as "known already ... with another amount"). A process that finds the state loaded from another log
now refuses to start, in one line naming the Redis, the namespace, both logs and the remedies (drop the
namespace, or another Redis database); it never loads it again itself, as another deployment may be
serving from it. A state loaded by an older payfm (its marker a bare ``1``) is taken as this workspace's only
when this server's decision log shows it (its last decided charges are in it), and is then marked so.

The foundation-model embedders' states (:func:`payfm.serving.fm_embeddings.warm`) are checked the same way.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from payfm.errors import ConfigError, shown_url
from payfm.events.workspace import LEGACY_LOG_ID, Workspace
from payfm.redis_load import LoadLock, redis_errors, server_names
from payfm.serving.decision_log import STALE_CHECK

if TYPE_CHECKING:
    from payfm.features.redis_store import RedisStore
    from payfm.serving.scorer import Scorer

log = logging.getLogger("payfm.serving")


@dataclass(frozen=True)
class Owner:
    """Whose event log a shared state was loaded from: the workspace's identity and its log's (what is
    compared), and where and when, for people (the path, the host, the time, UTC)."""

    workspace: str
    log: str
    path: str
    host: str
    at: str

    @classmethod
    def of(cls, ws: Workspace) -> Owner:
        workspace, log_id = ws.identity()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(workspace, log_id, str(ws.root), socket.gethostname(), now)

    def encoded(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def parse(cls, raw: bytes) -> Owner | None:
        """The owner a marker records; None for an older payfm's marker (``1``) or one this payfm cannot
        read."""
        try:
            data = json.loads(raw)
            return cls(*(str(data[k]) for k in ("workspace", "log", "path", "host", "at")))
        except (ValueError, TypeError, KeyError):
            return None

    def same_log(self, other: Owner) -> bool:
        return (self.workspace, self.log) == (other.workspace, other.log)

    def describe(self) -> str:
        log_id = "from before log ids" if self.log == LEGACY_LOG_ID else self.log
        return f"workspace {self.path!r} on {self.host} (id {self.workspace}, log {log_id})"


def loaded_from(marker: bytes | None) -> str:
    """Whose event log a namespace's ``warm`` marker says its state holds, in words (for a listing such as
    `payfm serve state list`).

    >>> loaded_from(None), loaded_from(b"1")
    ('not loaded', 'an older payfm (not recorded)')
    """
    if marker is None:
        return "not loaded"
    owner = Owner.parse(marker)
    return "an older payfm (not recorded)" if owner is None else f"{owner.describe()} at {owner.at}"


def check_owner(
    lock: LoadLock,
    mine: Owner,
    *,
    verified: Callable[[], bool],
    others: Callable[[], list[str]],
    drop: str,
) -> None:
    """Return when the state of ``lock``'s namespace was loaded from ``mine``'s event log (or is not loaded);
    else raise a one-line ConfigError. A state loaded by an older payfm is taken as this one's, and marked
    so, when ``verified()`` (this server's decision log shows it is). ``others()``: the other serving
    processes that read it now; ``drop``: the command that drops it."""
    raw = lock.loaded_by()
    if raw is None:
        return  # dropped meanwhile: /healthz says it is gone
    theirs = Owner.parse(raw)
    where = f"The Redis state {lock.ns} at {shown_url(lock.url)!r}"
    if theirs is None:
        if verified():
            if lock.claim(raw, mine.encoded()):
                log.warning(
                    "%s was loaded by an older payfm, which did not record whose event log it holds; the "
                    "last charges of this server's decision log are in it, so it is taken as the state of "
                    "%s (recorded in its marker now)",
                    where,
                    mine.describe(),
                )
            return
        raise ConfigError(
            f"{where} was loaded by an older payfm, which did not record whose event log it holds, and this "
            f"server's decision log does not show that it is this one's ({mine.describe()}): it may hold "
            f"another workspace's history.{_remedy(lock, others(), drop)}"
        )
    if theirs.same_log(mine):
        return
    why = (
        "this workspace's event log was replaced since (generate, demo or import after --replace)"
        if theirs.workspace == mine.workspace
        else "another workspace"
    )
    raise ConfigError(
        f"{where} was loaded from the event log of {theirs.describe()} at {theirs.at}, not from this "
        f"server's, {mine.describe()}: {why}. Deciding on it would count that log's charges and take this "
        f"log's ids for its own.{_remedy(lock, others(), drop)}"
    )


def _remedy(lock: LoadLock, others: list[str], drop: str) -> str:
    """What to do about a state that is not this log's: another Redis database, or drop it (not while other
    serving processes read it: another deployment's state)."""
    if others:
        return (
            f" {len(others)} serving process(es) read it now ({', '.join(others)}): give this server another "
            f"Redis database (--state redis://host:6379/N), or stop them and drop it ({drop})."
        )
    return (
        f" Drop it ({drop}) and start again (the state is then loaded from this workspace's logs), or give "
        + ("this server another Redis database (--state redis://host:6379/N).")
    )


def drop_command(ws: Workspace, ns: str, url: str, force: bool) -> str:
    """The command that drops namespace ``ns``; ``force`` when a production or shadow model uses it."""
    return f"payfm -w {str(ws.root)!r} serve state drop {ns} --state {shown_url(url)}" + (
        " --force" if force else ""
    )


def other_servers(client: Any, ns: str, mine: str | None) -> list[str]:
    """The serving processes that read namespace ``ns`` now, but this one (its presence key ``mine``)."""
    keys = [k for k in client.scan_iter(f"{ns}:live:*", count=1_000) if k != (mine or "").encode()]
    return server_names(client, keys)


def begin_shared(scorer: Scorer, store: RedisStore) -> bool:
    """Whether this process loads the shared state (it holds the load lock; the marker will record this
    workspace's event log); False when another process loaded it (waited for while it loads)."""
    with redis_errors(
        store.url, f"The Redis online state {store.ns}", "waiting for its load or taking its lock"
    ):
        return store.begin_load(owner=Owner.of(scorer.ws).encoded())


def join_shared(scorer: Scorer, store: RedisStore) -> int:
    """A state another process loaded: refused unless it was loaded from this workspace's event log
    (:func:`check_owner`); then caught up with the charges and outcomes of this server's decision log it
    misses (the last decided charges and the last counted outcomes are checked; ids counted already count
    once, late ones land in their own tiles), e.g. after serving another feature set; only those within the
    charge TTL of its latest event, whose claims have not expired. When the decision log was pruned of
    events within that window (those missed may be in the event log only), it says so, and how to load the
    namespace again: not here, as a load empties it first, under servers that may be using it. Returns how
    many events it applied."""
    what = f"The Redis online state {store.ns}"
    with redis_errors(store.url, what, "checking whose event log it was loaded from"):
        check_features_owner(scorer, store)
    with redis_errors(store.url, what, "catching it up with this server's decision log"):
        return catch_up(scorer, store)


def check_features_owner(scorer: Scorer, store: RedisStore) -> None:
    """Raise a one-line ConfigError unless the features' state ``store`` was loaded from this server's event
    log (:func:`check_owner`); a Redis failure is raised as it is."""
    mine = Owner.of(scorer.ws)

    def verified() -> bool:
        recent = scorer.log.recent_charges(STALE_CHECK)[0]
        return bool(recent) and store.learned_all(recent)

    presence = scorer._presence
    bundle = scorer.bundle
    served = bundle.model_version is not None or bundle.shadow_version is not None
    check_owner(
        store.load_lock,
        mine,
        verified=verified,
        others=lambda: other_servers(store.client, store.ns, presence.key(store.ns) if presence else None),
        drop=drop_command(scorer.ws, store.ns, store.url, force=served),
    )


def catch_up(scorer: Scorer, store: RedisStore, always: bool = False) -> int:
    """Apply the events of this server's decision log that the loaded state misses (see
    :func:`join_shared`); returns how many it applied (0: it missed none). ``always``: apply them without
    first checking the last ones (ids counted count once). A Redis failure is raised as it is."""
    recent, latest_charge = scorer.log.recent_charges(STALE_CHECK)
    outcomes = scorer.log.recent_outcomes(STALE_CHECK)
    times = [t for t in (latest_charge, max((o[3] for o in outcomes), default=None)) if t is not None]
    if not times:
        return 0
    # Claims expire after the charge TTL: an older event's claim may be gone although it was counted,
    # so only the events within the TTL of the latest logged one are checked and applied.
    since = max(times) - store.charge_ttl_s * 1_000_000
    counted = [(source, oid, cid) for source, oid, cid, t in outcomes if t >= since]
    if always or not store.learned_all(recent) or not store.counted_all(counted):
        pruned = scorer.log.pruned_newest_us()
        if pruned is not None and pruned >= since:  # some events it misses may be in the event log only
            log.warning(  # (not loaded again here: a load empties the namespace other servers may use)
                "Redis online state %s misses events of this decision log, which was pruned of events "
                "within the charge TTL: caught up from the decision log alone, so pruned events it "
                "missed count in no feature. To count them, stop every server of this feature set, "
                "drop the namespace (payfm serve state drop %s) and start one: it loads the state "
                "from the event log and the decision log",
                store.ns,
                store.ns,
            )
        n = scorer._apply_logged(scorer.online, 0, since)
        log.info("Redis online state %s caught up with this decision log (%d events)", store.ns, n)
        return n
    return 0
