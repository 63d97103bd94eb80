"""The Redis backend of the online state, for more than one serving process.

Each (group, key) state is one Redis string ``"<version>|<json>"`` (see :mod:`payfm.features.state`).
:meth:`RedisStore.run` is optimistic and takes two round trips: one pipeline reads the claim and the states,
Python computes (the same code as in memory), then one Lua script checks that neither the claim nor the
version of any state it changes moved, and writes the new states and the claim atomically; if something
moved, the step is retried. So two processes never lose each other's updates, and a charge or outcome id is
applied once however many processes see it.

Keys, under ``{prefix}:{feature set version}``: ``s:{group}:{key}`` states (windowed ones expire after their
longest window of inactivity), ``c:{charge_id}`` the fields of each charge (they make a charge idempotent and
attribute its outcomes; expire after ``charge_ttl``), ``o:{source}:{outcome_id}`` applied outcomes.
"""

from __future__ import annotations

import json
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

# KEYS[1] the claim, KEYS[2..] changed states; ARGV: claim value, claim ttl, n, then per state: expected
# version ("" when absent), new "version|json", ttl ("" for none). Returns 1 written, 0 already claimed,
# -1 a state moved.
_CAS = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = tonumber(ARGV[3])
for i = 1, n do
  local cur = redis.call('GET', KEYS[i + 1])
  local ver = ''
  if cur then ver = string.match(cur, '^(%d+)|') or '' end
  if ver ~= ARGV[3 + (i - 1) * 3 + 1] then return -1 end
end
for i = 1, n do
  local val = ARGV[3 + (i - 1) * 3 + 2]
  local ttl = ARGV[3 + (i - 1) * 3 + 3]
  if ttl == '' then
    redis.call('SET', KEYS[i + 1], val)
  else
    redis.call('SET', KEYS[i + 1], val, 'EX', ttl)
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
        try:
            self.client = redis.Redis.from_url(url, decode_responses=True)
            self.client.ping()
        except (redis.RedisError, ValueError) as e:
            raise ConfigError(f"The Redis online store at {url!r} is not reachable: {e}") from None
        self.ns = f"{prefix}:{fset.version}"
        self._cas = self.client.register_script(_CAS)
        self.window_ttl_s = window_ttl_s(fset)
        self.charge_ttl_s = int(charge_ttl.total_seconds())

    def _skey(self, key: StateKey) -> str:
        return f"{self.ns}:s:{key[0]}:{json.dumps(key[1], separators=_COMPACT)}"

    def run(self, keys: list[StateKey], claim: str | None, fields: dict[str, Any] | None, fn: Runner[T]) -> T:
        names = [self._skey(k) for k in keys]
        if claim is None:
            raw = self.client.mget(names) if names else []
            return fn(self._decode(keys, raw)[0], False)
        claim_key = f"{self.ns}:c:{claim}" if fields is not None else f"{self.ns}:o:{claim}"
        claim_value = json.dumps(fields, separators=_COMPACT) if fields is not None else "1"
        while True:
            pipe = self.client.pipeline(transaction=False)
            pipe.exists(claim_key)
            if names:
                pipe.mget(names)
            got = pipe.execute()
            raw = got[1] if names else []
            states, versions = self._decode(keys, raw)
            if got[0]:
                return fn(states, False)
            result = fn(states, True)
            args: list[Any] = [claim_value, self.charge_ttl_s, 0]
            changed: list[str] = []
            for k, name, before in zip(keys, names, raw, strict=True):
                st = states.get(k)
                if st is None:
                    continue
                body = json.dumps(state_to_json(st), separators=_COMPACT)
                if before is not None and before.partition("|")[2] == body:
                    continue
                old = versions.get(k)
                ttl = self.window_ttl_s.get(k[0]) if isinstance(st, WindowState) else None
                changed.append(name)
                args += [
                    "" if old is None else str(old),
                    f"{(old or 0) + 1}|{body}",
                    "" if ttl is None else ttl,
                ]
            args[2] = len(changed)
            if self._cas(keys=[claim_key, *changed], args=args) == 1:
                return result
            # 0: another process claimed the id meanwhile; -1: a state moved. Either way, read again.

    def _decode(
        self, keys: list[StateKey], raw: list[Any]
    ) -> tuple[dict[StateKey, State], dict[StateKey, int]]:
        states: dict[StateKey, State] = {}
        versions: dict[StateKey, int] = {}
        for k, v in zip(keys, raw, strict=True):
            if v is None:
                continue
            version, _, body = v.partition("|")
            versions[k] = int(version)
            states[k] = state_from_json(json.loads(body))
        return states, versions

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
