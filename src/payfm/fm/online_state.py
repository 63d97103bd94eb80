"""Where an :class:`~payfm.fm.embed.OnlineEmbedder` keeps its state: in process, or in Redis for more than one
serving process.

The state of a foundation model's online embedding is, per view key (a card, a merchant), the token rows of
its last K-1 charges and the keys of its last charge (time, IP, device, the other view's key), plus, per
counted field (card, device, IP, shipping address), how many earlier charges carried each value. Both stores
answer the same three calls: :meth:`read` (what a charge's tokens and window need), :meth:`learn` (add a
decided charge) and :meth:`set_token` (the processor's result of a charge decided without it: its outcome
token, in the rows of it the views still keep, so that later charges read the history the offline embedding
reads). :class:`MemoryState` holds dicts and deques; :class:`RedisState` holds one list per view key and one
counter per counted value, so every serving process embeds from the charges all of them decided.

Redis layout, under ``{prefix}:fm:{namespace}`` (the namespace is the checkpoint's content hash, so two
checkpoints never share a state and a new one starts clean):

- ``v{view}:{key}``: a list of the key's last K-1 charges, oldest first; each element is the charge's token
  row (F little-endian int32) followed by its keys as JSON ``[created_us, ip, device, other]``, and the
  charge's id as a fifth item when its outcome was not known when it was learned (a pending charge: its
  result finds the element by it);
- ``n:{field}:{value}``: the number of earlier charges with that value;
- ``c:{charge_id}``: the charge was learned (expires after ``charge_ttl_s``), so a charge that two processes
  see, or a client retries, is learned once; a load claims the decided charges it holds, so that a caller
  can tell whether a loaded state kept up with its decision log (:meth:`RedisState.learned_all`);
- ``r:{charge_id}``: the charge's authorization result was set (expires after ``charge_ttl_s``): the first
  result wins, as in the decision log, and the same staleness check finds results reported while no process
  served this checkpoint (a load marks those of the charges whose outcome it holds);
- ``warm``: set once the state was loaded from the event log (:meth:`RedisState.load`); ``warming``: the
  lock of the one process loading it (a token of its own; refreshed at every pipeline of the load, released
  by compare-and-delete, and released when the load fails).

A charge is learned by one Lua script (append + trim each view's list, count each value, claim the id), so
it is applied whole or not at all; a result is set by another (rewrite the pending element's token in
place). Two processes deciding charges of the same card at the same moment each read the state before the
other's charge: their charges are learned in arrival order, each with tokens relative to the state it read
(the offline job orders such charges by (created, charge_id)).

Example::

    state = RedisState("redis://127.0.0.1:6379/0", namespace=content_hash[:16], keep=15, n_fields=20)
    embedder = OnlineEmbedder(model, tokenizer, state=state)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from payfm.errors import ConfigError
from payfm.redis_breaker import breaker_for
from payfm.redis_load import LoadLock, all_claimed, connected, unlink_namespace


@dataclass
class KeyState:
    """A card's or merchant's recent history: tokens of its last K-1 charges and its last charge's keys."""

    rows: Sequence[np.ndarray]  # (F,) int64 token rows, oldest first
    created_us: int
    ip: Any
    device: Any
    other: Any
    # For a load (:meth:`EmbedderState.load`): the id of each row's charge when it is pending (its outcome
    # unknown: a result may set it), else None; None when no row is.
    pending: Sequence[str | None] | None = None


@dataclass(frozen=True)
class Learned:
    """What learning one charge adds: per view, its key, token row and keys; the counted values."""

    charge_id: str | None
    keys: tuple[str, ...]  # per view
    rows: tuple[np.ndarray, ...]  # per view, (F,)
    created_us: int
    ip: Any
    device: Any
    others: tuple[Any, ...]  # per view: the other view's key
    values: Mapping[str, Any]  # counted field -> the charge's value (None: not counted)
    pending: bool = False  # its outcome is not known yet: :meth:`EmbedderState.set_token` may set it


class EmbedderState(Protocol):
    """The state an online embedder reads before a charge's decision and adds the charge to after it."""

    def read(
        self, keys: Sequence[str], values: Mapping[str, Any]
    ) -> tuple[list[KeyState | None], dict[str, int]]:
        """Each view key's history (None: never seen) and the earlier-charge count of each non-null value."""
        ...

    def learn(self, charge: Learned) -> bool:
        """Add a charge; False when its id was learned already (nothing changes)."""
        ...

    def set_token(self, charge_id: str, keys: Sequence[str], field: int, token: int) -> int:
        """Set token ``field`` of the rows of pending charge ``charge_id`` that the views' ``keys`` still
        keep (the outcome a result reports), once: the first result set wins; returns how many rows changed
        (0: none kept, not pending, or set already)."""
        ...

    def is_loaded(self) -> bool:
        """The state was loaded from a history already (here or, for a shared state, by another process)."""
        ...

    def begin_load(self) -> bool:
        """Before :meth:`load`: True when the caller should load the state, False when it is loaded already
        (a shared state another process loaded). Raises on an in-process state with learned charges."""
        ...

    def load(
        self,
        views: Sequence[Mapping[str, KeyState]],
        counts: Mapping[str, Mapping[Any, int]],
        claims: Sequence[str] = (),
        results: Sequence[str] = (),
    ) -> None:
        """Set the whole state at once (a warm start from the event log), after :meth:`begin_load`;
        ``claims``: ids of charges in it to mark learned (a shared state then learns them once);
        ``results``: ids of charges whose outcome it holds (their result marked set, as :meth:`set_token`
        marks it)."""
        ...

    def abort_load(self) -> None:
        """Give up a load begun by :meth:`begin_load` (the load failed): another process may load it."""
        ...

    def learned_all(self, charge_ids: Sequence[str], results: Sequence[str] = ()) -> bool:
        """Every one of ``charge_ids`` is marked learned and every one of ``results`` (charge ids) has its
        authorization result set (a shared state kept up to date)."""
        ...

    def clear(self) -> int:
        """Forget everything; returns how many entries (keys) went."""
        ...

    def unmark(self) -> None:
        """The state is stale: the next :meth:`begin_load` loads it again (a shared state: unless another
        process is reloading it already; its load is not disturbed, the load itself empties the state)."""
        ...


class MemoryState:
    """The state in this process: a dict of :class:`KeyState` per view and a dict of counts per field.

    The rows of a pending charge (learned without its outcome) are remembered by its id until its result sets
    them (:meth:`set_token`): the same arrays the views' deques hold, so setting one sets the history. A row
    a deque drops is forgotten with it, so what is remembered never outgrows the histories."""

    def __init__(self, n_views: int, keep: int, count_fields: Sequence[str]) -> None:
        self.keep = keep
        self.views: list[dict[str, KeyState]] = [{} for _ in range(n_views)]  # view -> key -> history
        self.counts: dict[str, dict[Any, int]] = {name: {} for name in count_fields}  # earlier charges
        self.pending: dict[str, list[np.ndarray]] = {}  # charge id -> its rows the histories keep
        self._pending_of: dict[int, str] = {}  # id() of a pending row -> its charge id

    def read(
        self, keys: Sequence[str], values: Mapping[str, Any]
    ) -> tuple[list[KeyState | None], dict[str, int]]:
        entries = [self.views[v].get(key) for v, key in enumerate(keys)]
        counts = {
            name: self.counts[name].get(value, 0) for name, value in values.items() if value is not None
        }
        return entries, counts

    def learn(self, charge: Learned) -> bool:
        for v, key in enumerate(charge.keys):
            entry = self.views[v].get(key)
            history = entry.rows if entry is not None else deque(maxlen=self.keep)
            assert isinstance(history, deque)
            if self._pending_of and len(history) == history.maxlen:
                self._forget(history[0])  # the row the append drops
            history.append(charge.rows[v])
            self.views[v][key] = KeyState(
                history, charge.created_us, charge.ip, charge.device, charge.others[v]
            )
        for name, value in charge.values.items():
            if value is not None:
                self.counts[name][value] = self.counts[name].get(value, 0) + 1
        if charge.pending and charge.charge_id is not None:
            for row in charge.rows:
                self._remember(charge.charge_id, row)
        return True

    def _remember(self, charge_id: str, row: np.ndarray) -> None:
        self.pending.setdefault(charge_id, []).append(row)
        self._pending_of[id(row)] = charge_id

    def _forget(self, row: np.ndarray) -> None:
        cid = self._pending_of.pop(id(row), None)
        if cid is None:
            return
        rows = [r for r in self.pending[cid] if r is not row]
        if rows:
            self.pending[cid] = rows
        else:
            del self.pending[cid]

    def set_token(self, charge_id: str, keys: Sequence[str], field: int, token: int) -> int:
        rows = self.pending.pop(charge_id, [])
        for row in rows:
            del self._pending_of[id(row)]
            row[field] = token
        return len(rows)

    def is_empty(self) -> bool:
        return not any(self.views) and not any(self.counts.values())

    def is_loaded(self) -> bool:
        return not self.is_empty()

    def begin_load(self) -> bool:
        if not self.is_empty():
            raise ValueError("OnlineEmbedder.warm: expected a fresh embedder. Got one with learned charges.")
        return True

    def load(
        self,
        views: Sequence[Mapping[str, KeyState]],
        counts: Mapping[str, Mapping[Any, int]],
        claims: Sequence[str] = (),
        results: Sequence[str] = (),
    ) -> None:
        for v, entries in enumerate(views):
            self.views[v] = {
                k: KeyState(deque(e.rows, maxlen=self.keep), *_keys(e)) for k, e in entries.items()
            }
            for e in entries.values():  # the deques hold the same row arrays: a result sets them
                for row, cid in zip(e.rows, e.pending or (), strict=False):
                    if cid is not None:
                        self._remember(cid, row)
        self.counts = {name: dict(counts.get(name, {})) for name in self.counts}

    def abort_load(self) -> None:
        pass

    def unmark(self) -> None:
        self.clear()

    def learned_all(self, charge_ids: Sequence[str], results: Sequence[str] = ()) -> bool:
        return False  # in process: never shared, never kept up to date by anyone else

    def clear(self) -> int:
        n = sum(len(v) for v in self.views) + sum(len(c) for c in self.counts.values())
        self.views = [{} for _ in self.views]
        self.counts = {name: {} for name in self.counts}
        self.pending.clear()
        self._pending_of.clear()
        return n


def _keys(e: KeyState) -> tuple[int, Any, Any, Any]:
    return e.created_us, e.ip, e.device, e.other


# KEYS[1] the claim (or "" for a charge without id), KEYS[2..1+V] the views' lists, then the counters.
# ARGV[1] claim ttl (s), ARGV[2] K-1, ARGV[3] V, ARGV[4..3+V] the views' elements. Returns 1 learned,
# 0 learned already.
_LEARN = """
if KEYS[1] ~= '' then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
end
local v = tonumber(ARGV[3])
local keep = tonumber(ARGV[2])
for i = 1, v do
  redis.call('RPUSH', KEYS[1 + i], ARGV[3 + i])
  redis.call('LTRIM', KEYS[1 + i], -keep, -1)
end
for i = 2 + v, #KEYS do
  redis.call('INCR', KEYS[i])
end
return 1
"""

# KEYS[1] the result's claim, KEYS[2..] the views' lists. ARGV[1] the charge id, ARGV[2] the token row's
# width in bytes, ARGV[3] the token's byte offset in the row, ARGV[4] the token (4 bytes), ARGV[5] the claim's
# ttl (s). The element of the charge carries its id as the fifth item of its JSON keys (a pending charge).
# Returns how many elements changed; -1 when a result was set already (the first one wins).
_SET_TOKEN = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[5]) then return -1 end
local width = tonumber(ARGV[2])
local at = tonumber(ARGV[3])
local n = 0
for i = 2, #KEYS do
  local elements = redis.call('LRANGE', KEYS[i], 0, -1)
  for j = #elements, 1, -1 do
    local e = elements[j]
    local ok, keys = pcall(cjson.decode, string.sub(e, width + 1))
    if ok and keys[5] == ARGV[1] then
      redis.call('LSET', KEYS[i], j - 1, string.sub(e, 1, at) .. ARGV[4] .. string.sub(e, at + 5))
      n = n + 1
      break
    end
  end
end
return n
"""


CHARGE_TTL_S = 7 * 86_400  # how long a shared state remembers a learned charge and a set result (claims)


class RedisState:
    """The state in Redis (redis-py), shared by every serving process of one checkpoint (``namespace``).

    ``n_fields`` is the width F of a token row; ``charge_ttl_s`` how long a learned charge's id is
    remembered (a retry or a second process seeing it within that time learns nothing)."""

    def __init__(
        self,
        url: str,
        namespace: str,
        keep: int,
        n_fields: int,
        *,
        n_views: int = 2,
        count_fields: Sequence[str] = (),
        prefix: str = "payfm",
        charge_ttl_s: int = CHARGE_TTL_S,
    ) -> None:
        if keep < 1:
            raise ConfigError(f"RedisState: 'keep' (K-1 charges per key) must be >= 1. Got {keep!r}.")
        self.url = url  # (kept to scrub its password from a driver's message: /healthz)
        self.client = connected(url, "The Redis state of the foundation model")
        self.ns = f"{prefix}:fm:{namespace}"
        self.keep, self.n_fields, self.n_views = keep, n_fields, n_views
        self.count_fields = tuple(count_fields)
        self.charge_ttl_s = charge_ttl_s
        self._learn = self.client.register_script(_LEARN)
        self._set_token = self.client.register_script(_SET_TOKEN)
        self._load = LoadLock(self.client, self.ns, "the foundation model")
        # Asked under the scorer's state lock, as the online feature state is: a call queued behind one that
        # failed on the connection fails at once (payfm.redis_breaker; one breaker for both on a URL).
        self.breaker = breaker_for(url)

    # ---- keys and elements ----------------------------------------------------------------------------
    def _view_key(self, v: int, key: str) -> str:
        return f"{self.ns}:v{v}:{key}"

    def _count_key(self, name: str, value: Any) -> str:
        return f"{self.ns}:n:{name}:{value}"

    def _element(
        self, row: np.ndarray, created_us: int, ip: Any, device: Any, other: Any, pending: str | None = None
    ) -> bytes:
        keys = [created_us, ip, device, other] + ([] if pending is None else [pending])
        return np.asarray(row, dtype="<i4").tobytes() + orjson.dumps(keys)

    def _entry(self, elements: list[bytes]) -> KeyState | None:
        if not elements:
            return None
        width = 4 * self.n_fields
        rows = [np.frombuffer(e[:width], dtype="<i4").astype(np.int64) for e in elements]
        created_us, ip, device, other = orjson.loads(elements[-1][width:])[:4]  # a pending one's id: 5th
        return KeyState(rows, int(created_us), ip, device, other)

    # ---- the protocol -----------------------------------------------------------------------------------
    def read(
        self, keys: Sequence[str], values: Mapping[str, Any]
    ) -> tuple[list[KeyState | None], dict[str, int]]:
        return self.breaker.guarded(self._read, keys, values)  # type: ignore[no-any-return]

    def _read(
        self, keys: Sequence[str], values: Mapping[str, Any]
    ) -> tuple[list[KeyState | None], dict[str, int]]:
        counted = [(name, value) for name, value in values.items() if value is not None]
        pipe = self.client.pipeline(transaction=False)
        for v, key in enumerate(keys):
            pipe.lrange(self._view_key(v, key), 0, -1)
        if counted:
            pipe.mget([self._count_key(name, value) for name, value in counted])
        out = pipe.execute()
        entries = [self._entry(out[v]) for v in range(len(keys))]
        raw = out[len(keys)] if counted else []
        counts = {name: int(r) if r is not None else 0 for (name, _), r in zip(counted, raw, strict=True)}
        return entries, counts

    def learn(self, charge: Learned) -> bool:
        claim = f"{self.ns}:c:{charge.charge_id}" if charge.charge_id is not None else ""
        keys = [claim, *(self._view_key(v, k) for v, k in enumerate(charge.keys))]
        keys += [self._count_key(name, value) for name, value in charge.values.items() if value is not None]
        pending = charge.charge_id if charge.pending else None
        elements = [
            self._element(
                charge.rows[v], charge.created_us, charge.ip, charge.device, charge.others[v], pending
            )
            for v in range(len(charge.keys))
        ]
        args: list[bytes | int] = [self.charge_ttl_s, self.keep, len(charge.keys), *elements]
        return int(self.breaker.guarded(self._learn, keys=keys, args=args)) == 1

    def set_token(self, charge_id: str, keys: Sequence[str], field: int, token: int) -> int:
        names = [self._result_key(charge_id), *(self._view_key(v, key) for v, key in enumerate(keys))]
        value = np.array([token], dtype="<i4").tobytes()
        args: list[bytes | int | str] = [charge_id, 4 * self.n_fields, 4 * field, value, self.charge_ttl_s]
        return max(0, int(self.breaker.guarded(self._set_token, keys=names, args=args)))

    def _result_key(self, charge_id: str) -> str:
        return f"{self.ns}:r:{charge_id}"

    def is_loaded(self) -> bool:
        """The state was loaded from an event log (by this process or another)."""
        return self._load.is_loaded()

    def begin_load(self, timeout_s: float = 600.0) -> bool:
        """True when this process should load the state (:meth:`payfm.redis_load.LoadLock.begin`); False when
        another process loaded it (waits up to ``timeout_s`` while it does)."""
        return self._load.begin(timeout_s)

    def abort_load(self) -> None:
        self._load.release()

    def unmark(self) -> None:
        self._load.unmark()

    def load(
        self,
        views: Sequence[Mapping[str, KeyState]],
        counts: Mapping[str, Mapping[Any, int]],
        claims: Sequence[str] = (),
        results: Sequence[str] = (),
        *,
        batch: int = 5_000,
    ) -> None:
        """Write a whole state in pipelines of ``batch`` keys (each extends the lock), claim ``claims`` and
        ``results``, then mark it loaded and release the lock. What the namespace held before is deleted
        first."""
        self._load.start_writing()
        pipe = self.client.pipeline(transaction=False)
        n = 0

        def flush(force: bool = False) -> None:
            nonlocal pipe, n
            if n >= batch or (force and n):
                self._load.keep()
                pipe.execute()
                pipe = self.client.pipeline(transaction=False)
                n = 0

        for v, entries in enumerate(views):
            for key, e in entries.items():
                name = self._view_key(v, key)
                ids = list(e.pending or [None] * len(e.rows))
                elements = [
                    self._element(row, -1, None, None, None, cid)
                    for row, cid in zip(list(e.rows)[:-1], ids[:-1], strict=True)
                ]
                elements.append(self._element(e.rows[-1], *_keys(e), ids[-1]))
                pipe.delete(name)
                pipe.rpush(name, *elements)
                n += 1
                flush()
        for field_name, per_value in counts.items():
            items = list(per_value.items())
            for i in range(0, len(items), batch):
                pipe.mset({self._count_key(field_name, value): c for value, c in items[i : i + batch]})
                n += batch
                flush()
        for claim in [*(f"{self.ns}:c:{cid}" for cid in claims), *map(self._result_key, results)]:
            pipe.set(claim, b"1", ex=self.charge_ttl_s)
            n += 1
            flush()
        flush(force=True)
        self._load.done()  # marked loaded, the lock released

    def learned_all(self, charge_ids: Sequence[str], results: Sequence[str] = ()) -> bool:
        return all_claimed(self.client, self.ns, list(charge_ids)) and all_claimed(
            self.client, self.ns, list(results), kind="r"
        )

    def clear(self) -> int:
        """Delete every key of this namespace; returns how many."""
        return unlink_namespace(self.client, self.ns)
