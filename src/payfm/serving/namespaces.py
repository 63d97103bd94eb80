"""The online state's namespaces in Redis: what each belongs to, how large it is, and dropping one.

A serving process keeps its features' state under ``payfm:<feature-set version>.f<format>``
(:class:`payfm.features.redis_store.RedisStore`) and each foundation-model checkpoint's embedder state under
``payfm:fm:<content hash[:16]>`` (:class:`payfm.fm.online_state.RedisState`). A promotion to a model on
another feature set or checkpoint starts a new namespace and leaves the old one in Redis (a rollback finds it
there, and reloads it if it went stale). Nothing expires them: this module lists them with the registered
models that use them and the serving processes that read them now (their presence keys
``{ns}:live:{id}``, :class:`payfm.redis_load.Presence`), so an operator can drop the ones nothing serves
from any more.

    >>> namespace_of(b"payfm:fm:0123456789abcdef:v0:fp_1", "payfm")
    ('payfm:fm:0123456789abcdef', 'foundation model')
    >>> namespace_of(b"payfm:3f9a12.f3:e:card:fp_1", "payfm")
    ('payfm:3f9a12.f3', 'features')
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from payfm.errors import ConfigError, shown_url
from payfm.features.state import FORMAT
from payfm.redis_load import connected, is_redis_url, live_servers, server_names, unlink_namespace
from payfm.registry import Registry

SERVED = ("(production)", "(shadow)")  # the stages a server runs


Marker = bytes  # (a name for it: the class below has a field named `bytes`)


@dataclass(frozen=True)
class Namespace:
    name: str
    kind: str  # "features", "foundation model" or "other"
    keys: int
    bytes: int  # estimated from a sample of its keys (MEMORY USAGE)
    used_by: tuple[str, ...]  # registered versions whose state lives here: "name@version (stage)"
    servers: tuple[str, ...] = ()  # serving processes reading it now: "host pid N"
    marker: Marker | None = None  # its load marker: whose event log it was loaded from (None: not loaded)

    @property
    def in_production(self) -> bool:
        """A model that servers run (production, or shadow beside it) uses it."""
        return any(u.endswith(SERVED) for u in self.used_by)


def namespace_of(key: bytes, prefix: str) -> tuple[str, str] | None:
    """(namespace, kind) of a key under ``prefix``; None for a key outside it."""
    parts = key.decode(errors="replace").split(":")
    if len(parts) < 3 or parts[0] != prefix:
        return None
    if parts[1] == "fm":
        return ":".join(parts[:3]), "foundation model"
    return ":".join(parts[:2]), "features" if re.fullmatch(r"[^.]+\.f\d+", parts[1]) else "other"


def _users(registry: Registry | None, prefix: str) -> dict[str, list[str]]:
    """Namespace -> the registered model versions whose online state it holds."""
    users: dict[str, list[str]] = {}
    if registry is None:
        return users
    for mv in registry.list():
        who = f"{mv.ref} ({mv.stage})"
        users.setdefault(f"{prefix}:{mv.feature_set_version}.f{FORMAT}", []).append(who)
        fm = mv.entry.get("foundation_model") or {}
        if fm.get("content_hash"):
            users.setdefault(f"{prefix}:fm:{str(fm['content_hash'])[:16]}", []).append(who)
    return users


def _client(url: str) -> Any:
    if not is_redis_url(url):
        raise ConfigError(f"--state must be a redis://, rediss:// or unix:// URL. Got {shown_url(url)!r}.")
    return connected(url, "The Redis online state")


def list_namespaces(
    url: str, registry: Registry | None = None, *, prefix: str = "payfm", sample: int = 200
) -> list[Namespace]:
    """Every namespace under ``prefix`` in the Redis at ``url`` (one SCAN of its keys), largest first, with
    the registered versions that use it; bytes estimated from ``sample`` keys of each."""
    client = _client(url)
    counts: dict[tuple[str, str], int] = {}
    samples: dict[tuple[str, str], list[bytes]] = {}  # a uniform sample of each namespace's keys
    live: dict[str, list[bytes]] = {}  # presence keys of the serving processes, per namespace
    rng = random.Random(0)
    for key in client.scan_iter(f"{prefix}:*", count=10_000):
        ns = namespace_of(key, prefix)
        if ns is None:
            continue
        if key.startswith(f"{ns[0]}:live:".encode()):
            live.setdefault(ns[0], []).append(key)
            counts.setdefault(ns, 0)  # listed even with no state: a server reads it (after a forced drop)
            continue
        n = counts[ns] = counts.get(ns, 0) + 1
        some = samples.setdefault(ns, [])
        if len(some) < sample:
            some.append(key)
        elif (j := rng.randrange(n)) < sample:  # reservoir sampling: memory bounded by the sample
            some[j] = key
    users = _users(registry, prefix)
    servers = {ns: tuple(server_names(client, keys)) for ns, keys in live.items()}
    out = []
    for (name, kind), n in counts.items():
        pipe = client.pipeline(transaction=False)
        for key in samples.get((name, kind), []):
            pipe.memory_usage(key)
        pipe.get(f"{name}:warm")  # (payfm.redis_load.LoadLock's marker)
        *got, marker = pipe.execute()
        sizes = [int(s or 0) for s in got]
        estimate = round(sum(sizes) * n / max(len(sizes), 1))
        used, live_ones = tuple(users.get(name, ())), servers.get(name, ())
        out.append(Namespace(name, kind, n, estimate, used, live_ones, marker))
    return sorted(out, key=lambda n: (-n.bytes, n.name))


def _refuse_unserved(name: str, registry: Registry | None, prefix: str, force: bool) -> None:
    """The checks of a drop that need no Redis: ``name`` is one namespace, not a production or shadow
    model's (unless ``force``)."""
    kind = namespace_of(f"{name}:x".encode(), prefix)
    if kind is None or kind[0] != name or kind[1] == "other" or re.search(r"[*?\[\]\\]", name):
        raise ConfigError(
            f"'{name}' is not a namespace of the online state: expected "
            f"'{prefix}:<feature-set version>.f<n>' or '{prefix}:fm:<checkpoint hash>', without wildcards "
            "(see `payfm serve state list`)."
        )
    used = [u for u in _users(registry, prefix).get(name, []) if u.endswith(SERVED)]
    if used and not force:
        raise ConfigError(
            f"Namespace '{name}' holds the online state of {', '.join(used)}; dropping it makes that model's "
            "servers rebuild it from the event log at their next start. Pass --force to drop it anyway."
        )


def _refuse_busy(client: Any, name: str, force: bool) -> None:
    """The checks of a drop that read Redis: no serving process loads ``name`` or reads it (unless
    ``force``)."""
    if client.exists(f"{name}:warming"):
        raise ConfigError(f"Namespace '{name}' is being loaded by a serving process; drop it after the load.")
    running = live_servers(client, name)
    if running and not force:
        raise ConfigError(
            f"Namespace '{name}' is read now by {len(running)} serving process(es) ({', '.join(running)}); "
            "dropping it would leave them deciding on an empty state. Stop them (or promote a model on "
            "another feature set or checkpoint) first, or pass --force and restart them."
        )


def _empty(url: str, name: str) -> ConfigError:
    return ConfigError(f"Namespace '{name}' holds no keys in {shown_url(url)}: see `payfm serve state list`.")


def check_drop(
    url: str, name: str, registry: Registry | None = None, *, prefix: str = "payfm", force: bool = False
) -> None:
    """Raise the ConfigError with which :func:`drop_namespace` would refuse to drop ``name`` now; return if
    it would not (nor would it find the namespace empty). What `payfm serve state drop` checks before it asks
    for confirmation; the drop checks again, as a server may start in between. The registry is read before
    Redis is reached."""
    _refuse_unserved(name, registry, prefix, force)
    client = _client(url)
    _refuse_busy(client, name, force)
    if next(iter(client.scan_iter(f"{name}:*", count=10_000)), None) is None:
        raise _empty(url, name)


def drop_namespace(
    url: str, name: str, registry: Registry | None = None, *, prefix: str = "payfm", force: bool = False
) -> int:
    """Delete every key of namespace ``name`` (UNLINK, in batches); returns how many. Refused for a
    namespace a production or shadow model uses, or that a serving process reads now, unless ``force``:
    running servers would go on from an empty state, and servers of the model would start it again from the
    logs (:func:`check_drop` says so without deleting)."""
    _refuse_unserved(name, registry, prefix, force)
    client = _client(url)
    _refuse_busy(client, name, force)
    n = unlink_namespace(client, name)
    if n == 0:
        raise _empty(url, name)
    return n
