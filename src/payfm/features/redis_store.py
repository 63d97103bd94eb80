"""The Redis backend of the online state, for more than one serving process.

Each (group, key) state is one Redis string holding its JSON (:func:`payfm.features.state.state_to_json`).
:meth:`RedisStore.run` is optimistic: WATCH the states and the claim, read them in one MGET, compute in Python
(the same code as in memory), then write the changed states and the claim in one MULTI / EXEC; a concurrent
writer makes EXEC fail and the step is retried. So two processes never lose each other's updates, and a charge
or outcome id is applied once however many processes see it.

Keys, under ``{prefix}:{feature set version}``: ``s:{group}:{key}`` states (windowed ones expire after their
longest window of inactivity), ``c:{charge_id}`` the fields of each charge (they make a charge idempotent and
attribute its outcomes; expire after ``charge_ttl``), ``o:{source}:{outcome_id}`` applied outcomes.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from datetime import timedelta
from typing import Any, TypeVar

import redis

from payfm.errors import ConfigError
from payfm.features.definitions import FeatureSet
from payfm.features.online import window_ttl_s
from payfm.features.state import State, StateKey, WindowState, state_from_json, state_to_json
from payfm.features.stores import Runner, StateStore

T = TypeVar("T")
_COMPACT = (",", ":")


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
        try:
            self.client = redis.Redis.from_url(url, decode_responses=True)
            self.client.ping()
        except (redis.RedisError, ValueError) as e:
            raise ConfigError(f"The Redis online store at {url!r} is not reachable: {e}") from None
        self.ns = f"{prefix}:{fset.version}"
        self.window_ttl_s = window_ttl_s(fset)
        self.charge_ttl_s = int(charge_ttl.total_seconds())

    def _skey(self, key: StateKey) -> str:
        return f"{self.ns}:s:{key[0]}:{json.dumps(key[1], separators=_COMPACT)}"

    def run(self, keys: list[StateKey], claim: str | None, fields: dict[str, Any] | None, fn: Runner[T]) -> T:
        names = [self._skey(k) for k in keys]
        if claim is None:
            raw = self.client.mget(names) if names else []
            return fn(self._decode(keys, raw), False)
        claim_key = f"{self.ns}:c:{claim}" if fields is not None else f"{self.ns}:o:{claim}"
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(claim_key, *names)  # type: ignore[no-untyped-call]
                    claimed = not pipe.exists(claim_key)
                    raw = pipe.mget(names) if names else []
                    states = self._decode(keys, raw)
                    result = fn(states, claimed)
                    pipe.multi()
                    if claimed:
                        value = json.dumps(fields, separators=_COMPACT) if fields is not None else "1"
                        pipe.set(claim_key, value, ex=self.charge_ttl_s)
                        self._encode(pipe, keys, names, raw, states)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue

    def _decode(self, keys: list[StateKey], raw: list[Any]) -> dict[StateKey, State]:
        return {k: state_from_json(json.loads(v)) for k, v in zip(keys, raw, strict=True) if v is not None}

    def _encode(
        self,
        pipe: Any,
        keys: list[StateKey],
        names: list[str],
        raw: list[Any],
        states: MutableMapping[StateKey, State],
    ) -> None:
        for k, name, before in zip(keys, names, raw, strict=True):
            st = states.get(k)
            if st is None:
                continue
            after = json.dumps(state_to_json(st), separators=_COMPACT)
            if after == before:
                continue
            ttl = self.window_ttl_s.get(k[0]) if isinstance(st, WindowState) else None
            pipe.set(name, after, ex=ttl)

    def charge_fields(self, charge_id: str) -> dict[str, Any] | None:
        raw = self.client.get(f"{self.ns}:c:{charge_id}")
        if raw is None:
            return None
        fields: dict[str, Any] = json.loads(raw)
        return fields

    def clear(self) -> int:
        """Delete every key of this feature-set version (tests, rebuilds). Returns how many."""
        n = 0
        for key in self.client.scan_iter(f"{self.ns}:*", count=1000):
            n += int(self.client.delete(key))
        return n
