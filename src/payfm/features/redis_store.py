"""The Redis backend of the online state, for more than one serving process.

Each entity key is one Redis string ``"<version>|<json>"``, a *record* holding every state of that key
(``{state index: state}``, see :mod:`payfm.features.state`): a charge reads and writes about ten records.
:meth:`RedisStore.run` is optimistic and takes two round trips: one pipeline reads the claim and the states,
Python computes (the same code as in memory), then one Lua script checks that neither the claim nor the
version of any state it changes moved, and writes the new states and the claim atomically; if something
moved, the step is retried. So two processes never lose each other's updates, and a charge or outcome id is
applied once however many processes see it.

Keys, under ``{prefix}:{feature set version}.f{state format}``: ``e:{entity}:{key}`` records (``p:...`` for a
pair key, as JSON; a record of windowed states only expires after their longest window of inactivity),
``c:{charge_id}`` the fields of each charge (they make a charge idempotent and attribute its outcomes; expire
after ``charge_ttl``),
``o:{claim}`` applied outcomes (:func:`~payfm.features.definitions.outcome_claim`). The state format is
part of the namespace, so states written by another version of the engine are never misread (they are
simply not seen, and expire).

The first serving process of a feature set loads the namespace from the logs (:meth:`RedisStore.load`, the
state built in memory as a memory-state server builds its own, then written in pipelines) under the load lock
of :mod:`payfm.redis_load` (``warming``, kept alive by a heartbeat); its marker ``warm`` records whose event
log that was (:mod:`payfm.serving.shared_state` refuses another log's servers); the others find it loaded.

A call that fails on the connection (refused, reset, no answer within the timeout) makes the calls of the
requests queued meanwhile for the scorer's state lock fail at once with the same kind of error
(:class:`payfm.redis_breaker.Breaker`): they waited a timeout each in turn behind it.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, TypeVar

import orjson

from payfm.features.definitions import AUTHORIZATION, FeatureSet, outcome_claim
from payfm.features.online import window_ttl_s
from payfm.features.online_plan import plan
from payfm.features.state import FORMAT, State, StateKey, state_from_json, state_to_json
from payfm.features.stores import MemoryStore, Runner, StateStore
from payfm.redis_breaker import breaker_for
from payfm.redis_load import LoadLock, all_claimed, connected, unlink_namespace
from payfm.redis_load import claimed as _claimed

T = TypeVar("T")
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _dumps(obj: Any) -> bytes:
    """Compact JSON (orjson); with the standard library, after one leading space, when an integer is beyond
    64 bits (a sum of squares can be), so that :func:`_loads` knows to read it back exactly."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return b" " + _JSON.encode(obj).encode()


def _loads(data: bytes | str) -> Any:
    """The inverse of :func:`_dumps` (orjson would read an integer beyond 64 bits as a float)."""
    return json.loads(data) if data[:1] in (b" ", " ") else orjson.loads(data)


# KEYS[1] the claim, KEYS[2..] changed states. ARGV[1] claim value, ARGV[2] claim ttl, then one argument per
# changed state: "<expected version, empty when absent>|<ttl, empty for none>|<version>|<json>". Only the
# head of a stored state is read to check its version (GETRANGE), however large the state. Returns 1 written,
# 0 already claimed, -1 a state moved.
_CAS = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = #KEYS - 1
local news = {}
for i = 1, n do
  local exp, ttl, val = string.match(ARGV[i + 2], '^(%d*)|(%d*)|(.*)$')
  local head = redis.call('GETRANGE', KEYS[i + 1], 0, 24)
  local ver = string.match(head, '^(%d+)|') or ''
  if ver ~= exp then return -1 end
  news[i] = {val, ttl}
end
for i = 1, n do
  if news[i][2] == '' then
    redis.call('SET', KEYS[i + 1], news[i][1])
  else
    redis.call('SET', KEYS[i + 1], news[i][1], 'EX', news[i][2])
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class RedisStore(StateStore):
    """Online state in Redis. ``url`` like ``redis://127.0.0.1:6379/0``."""

    def __init__(
        self,
        url: str,
        fset: FeatureSet,
        *,
        prefix: str = "payfm",
        charge_ttl: timedelta = timedelta(days=180),
    ) -> None:
        self.url = url  # (kept to scrub its password from a driver's message: /healthz)
        self.client = connected(url, "The Redis online store")
        # The state format is part of the namespace: states of another format are never read as this one.
        self.ns = f"{prefix}:{fset.version}.f{FORMAT}"
        self._cas = self.client.register_script(_CAS)
        plans = plan(fset)
        self._entity = {sp.index: sp.entity for sp in plans}
        # A record expires after its states' longest window of inactivity, unless it holds all-time ones.
        ttl_s = window_ttl_s(fset)
        self._ttl: dict[str, bytes] = {}
        for entity in {sp.entity for sp in plans}:
            mine = [sp for sp in plans if sp.entity == entity]
            timed = all(sp.res for sp in mine)
            self._ttl[entity] = str(max(ttl_s[sp.index] for sp in mine)).encode() if timed else b""
        self.window_ttl_s = ttl_s
        self.charge_ttl_s = int(charge_ttl.total_seconds())
        self._names: dict[tuple[str, Any], bytes] = {}  # (entity, key) -> Redis key name (a bounded cache)
        self.load_lock = LoadLock(self.client, self.ns, f"feature set {fset.name} ({fset.version})", url=url)
        self._load = self.load_lock
        # A call fails at once when its caller queued for the scorer's state lock before a call failed on the
        # connection (payfm.redis_breaker): requests queued behind a stalled call waited a timeout each.
        self.breaker = breaker_for(url)  # (the embedders' states on this Redis share it)

    def _record(self, entity: str, k: Any) -> bytes:
        name = self._names.get((entity, k))
        if name is None:
            # Injective: a plain string key after "e:", a pair (or any other key) as JSON after "p:".
            text = f"e:{entity}:{k}" if isinstance(k, str) else f"p:{entity}:{_JSON.encode(k)}"
            name = f"{self.ns}:{text}".encode()
            if len(self._names) > 100_000:
                self._names.clear()
            self._names[(entity, k)] = name
        return name

    def run(self, keys: list[StateKey], claim: str | None, fields: dict[str, Any] | None, fn: Runner[T]) -> T:
        return self.breaker.guarded(self._run, keys, claim, fields, fn)  # type: ignore[no-any-return]

    def _run(
        self, keys: list[StateKey], claim: str | None, fields: dict[str, Any] | None, fn: Runner[T]
    ) -> T:
        # One record per (entity, key) holds all the states of that key: {state index: state}.
        entity = self._entity
        where = [self._record(entity[k[0]], k[1]) for k in keys]  # the record of each state key
        ttl = dict(zip(where, (self._ttl[entity[k[0]]] for k in keys), strict=True))
        order = list(ttl)
        if claim is None:
            raw = self.client.mget(order) if order else []
            return fn(self._decode(order, raw, keys, where)[0], False)
        claim_key = f"{self.ns}:c:{claim}" if fields is not None else f"{self.ns}:o:{claim}"
        claim_value = _dumps(fields) if fields is not None else b"1"
        while True:
            pipe = self.client.pipeline(transaction=False)
            pipe.exists(claim_key)
            if order:
                pipe.mget(order)
            got = pipe.execute()
            raw = got[1] if order else []
            states, records = self._decode(order, raw, keys, where)
            if got[0]:
                return fn(states, False)
            result = fn(states, True)
            for k, name in zip(keys, where, strict=True):
                st = states.get(k)
                if st is not None:
                    records[name][1][str(k[0])] = st
            args: list[bytes | int] = [claim_value, self.charge_ttl_s]
            changed: list[bytes] = []
            for name, before in zip(order, raw, strict=True):
                version, record = records[name]
                if not record:
                    continue
                body = _dumps({i: _as_json(st) for i, st in record.items()})
                if (
                    before is not None
                    and len(before) - before.index(b"|") - 1 == len(body)
                    and before.endswith(body)
                ):
                    continue
                changed.append(name)
                expected = b"" if version is None else str(version).encode()
                new = str((version or 0) + 1).encode()
                args.append(b"|".join((expected, ttl[name], new, body)))
            if self._cas(keys=[claim_key, *changed], args=args) == 1:
                return result
            # 0: another process claimed the id meanwhile; -1: a state moved. Either way, read again.

    @staticmethod
    def _decode(
        order: list[bytes], raw: list[Any], keys: list[StateKey], where: list[bytes]
    ) -> tuple[dict[StateKey, State], dict[bytes, tuple[int | None, dict[str, Any]]]]:
        """The requested states, and each record as (version, {state index: state or its JSON})."""
        records: dict[bytes, tuple[int | None, dict[str, Any]]] = {}
        for name, v in zip(order, raw, strict=True):
            if v is None:
                records[name] = (None, {})
            else:
                version, _, body = v.partition(b"|")
                records[name] = (int(version), _loads(body))
        states: dict[StateKey, State] = {}
        for k, name in zip(keys, where, strict=True):
            data = records[name][1].get(str(k[0]))
            if data is not None:
                states[k] = state_from_json(data)
        return states, records

    def charge_fields(self, charge_id: str) -> dict[str, Any] | None:
        raw = self.breaker.guarded(self.client.get, f"{self.ns}:c:{charge_id}")
        if raw is None:
            return None
        fields: dict[str, Any] = _loads(raw)
        return fields

    def set_charge_fields(self, charge_id: str, fields: dict[str, Any]) -> None:
        # the key's TTL kept, only while it exists (XX)
        self.breaker.guarded(
            self.client.set, f"{self.ns}:c:{charge_id}", _dumps(fields), xx=True, keepttl=True
        )

    def clear(self) -> int:
        """Delete every key of this feature-set version (tests, rebuilds). Returns how many."""
        return unlink_namespace(self.client, self.ns)

    # ---- loading a whole state: the first serving process of this feature set --------------------------
    def is_loaded(self) -> bool:
        """The namespace was loaded from the logs (by this process or another)."""
        return bool(self.breaker.guarded(self._load.is_loaded))

    def begin_load(self, timeout_s: float = 1800.0, owner: bytes | None = None) -> bool:
        """True when this process should load the namespace (it holds the load lock, renewed by a heartbeat
        until the load ends); False when another process loaded it (waits up to ``timeout_s`` while it does:
        a holder that died frees the lock within seconds). ``owner``: whose event log this process would load
        it from, recorded in the marker (:class:`payfm.redis_load.LoadLock`)."""
        self._load.owner = owner
        return self._load.begin(timeout_s)

    def abort_load(self) -> None:
        self._load.release()

    def load(self, memory: MemoryStore, *, batch: int = 5_000) -> int:
        """Write the whole state of ``memory`` (built from the logs) in pipelines of ``batch`` keys, each
        refreshing the load lock: one record per entity key (version 1, with its entity's TTL), each counted
        charge's fields and each applied outcome's claim (expiring after ``charge_ttl``); then mark the
        namespace loaded and release the lock. What the namespace held before is deleted first. Returns the
        keys written."""
        self._load.start_writing()
        records: dict[bytes, dict[str, list[Any]]] = {}
        ttl: dict[bytes, bytes] = {}
        for (index, key), st in memory.states.items():
            entity = self._entity[index]
            name = self._record(entity, key)
            records.setdefault(name, {})[str(index)] = state_to_json(st)
            ttl[name] = self._ttl[entity]
        pipe, n, total = self.client.pipeline(transaction=False), 0, 0

        def put(name: bytes | str, value: bytes, ex: bytes | int) -> None:
            nonlocal pipe, n, total
            if ex:
                pipe.set(name, value, ex=int(ex))
            else:
                pipe.set(name, value)
            n += 1
            total += 1
            if n >= batch:
                self._load.keep()
                pipe.execute()
                pipe, n = self.client.pipeline(transaction=False), 0

        for name, body in records.items():
            put(name, b"1|" + _dumps(body), ttl[name])
        for cid, fields in memory.charges.items():
            put(f"{self.ns}:c:{cid}", _dumps(fields), self.charge_ttl_s)
        for claim in memory.outcomes:
            put(f"{self.ns}:o:{claim}", b"1", self.charge_ttl_s)
        self._load.keep()
        pipe.execute()
        self._load.done()
        return total

    def learned_all(self, charge_ids: list[str]) -> bool:
        """Every one of ``charge_ids`` was counted in this namespace."""
        return bool(self.breaker.guarded(all_claimed, self.client, self.ns, charge_ids))

    def counted_all(self, outcomes: list[tuple[str, str, str]]) -> bool:
        """Every one of ``outcomes`` (label source, outcome id, charge id) was counted in this namespace. An
        authorization result counts as counted without its claim when its charge was counted with its
        outcome (read from the event log, after `payfm serve export`): applying it then takes no claim
        (:meth:`OnlineFeatures.apply_authorization`), and a review found every server that joined such a
        state replaying its whole decision log, warning of a prune that was not the cause, at every start."""
        claims = [outcome_claim(source, oid, cid) for source, oid, cid in outcomes]
        there = self.breaker.guarded(_claimed, self.client, self.ns, claims, kind="o")
        unclaimed = [(source, cid) for (source, _, cid), t in zip(outcomes, there, strict=True) if not t]
        if any(source != AUTHORIZATION for source, _ in unclaimed):
            return False
        if not unclaimed:
            return True
        keys = [f"{self.ns}:c:{cid}" for _, cid in unclaimed]  # (one round trip: a start may check 1,000)
        stored = self.breaker.guarded(self.client.mget, keys)
        return all(raw is not None and _loads(raw).get("outcome") is not None for raw in stored)


def _as_json(st: State | list[Any]) -> list[Any]:
    return st if isinstance(st, list) else state_to_json(st)
