"""Where the online feature state lives: behind one small interface, one module per backend.

A store keeps three things: the per-(group, key) states, the fields of each charge that its later outcomes
need (and that make applying a charge idempotent), and the ids of outcomes already applied. Its one operation,
:meth:`StateStore.run`, hands a function the stored states of some keys, atomically: in process memory that is
the live dictionary; on Redis it is a read plus a Lua compare-and-set over versioned, serialized states
(:mod:`payfm.features.redis_store`).
"""

from __future__ import annotations

import gc
import gzip
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

from payfm import interrupts
from payfm.errors import WorkspaceError
from payfm.features.state import FORMAT, State, StateKey, state_from_json, state_to_json

T = TypeVar("T")
Runner = Callable[[MutableMapping[StateKey, State], bool], T]


class SnapshotError(WorkspaceError, ValueError):
    """A snapshot that cannot be restored: another feature-set version or another state format."""


class StateStore(ABC):
    """The online state of one feature set (identified by its version)."""

    @abstractmethod
    def run(self, keys: list[StateKey], claim: str | None, fields: dict[str, Any] | None, fn: Runner[T]) -> T:
        """Call ``fn(states, claimed)`` atomically and save what it changed.

        ``states`` holds the stored state of each of ``keys`` that exists (``fn`` may add missing ones).
        ``claimed`` is True if ``claim`` (a charge or outcome id, or None for a read) was not claimed before;
        it is claimed now, and ``fields`` (for a charge: what its outcomes need) is stored with it. When
        ``claimed`` is False, ``fn`` must not change ``states``.
        """

    @abstractmethod
    def charge_fields(self, charge_id: str) -> dict[str, Any] | None:
        """The fields stored when ``charge_id`` was claimed, or None if it never was."""

    @abstractmethod
    def set_charge_fields(self, charge_id: str, fields: dict[str, Any]) -> None:
        """Replace the fields stored with ``charge_id`` (with its outcome, reported after it was claimed);
        nothing when it was never claimed."""

    def advance(self, ts_us: int) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Note that an event at ``ts_us`` was applied (a snapshot records the latest, to resume from)."""


class MemoryStore(StateStore):
    """The embedded default: plain dictionaries in this process; snapshots to a gzip JSON file."""

    def __init__(self) -> None:
        self.states: dict[StateKey, State] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.outcomes: set[str] = set()
        self.watermark_us: int | None = None  # the latest event time applied

    def run(self, keys: list[StateKey], claim: str | None, fields: dict[str, Any] | None, fn: Runner[T]) -> T:
        claimed = False
        if claim is not None:
            if fields is not None:
                claimed = self.claim_charge(claim, fields)
            else:
                claimed = claim not in self.outcomes
                if claimed:
                    self.outcomes.add(claim)
        return fn(self.states, claimed)

    def claim_charge(self, charge_id: str, fields: dict[str, Any]) -> bool:
        """Claim ``charge_id`` (storing ``fields``); False if it was claimed before."""
        if charge_id in self.charges:
            return False
        self.charges[charge_id] = fields
        return True

    def charge_fields(self, charge_id: str) -> dict[str, Any] | None:
        return self.charges.get(charge_id)

    def set_charge_fields(self, charge_id: str, fields: dict[str, Any]) -> None:
        if charge_id in self.charges:
            self.charges[charge_id] = fields

    def advance(self, ts_us: int) -> None:
        if self.watermark_us is None or ts_us > self.watermark_us:
            self.watermark_us = ts_us

    def snapshot(self, path: str | os.PathLike[str], version: str) -> None:
        """Write the whole state to ``path`` atomically (gzip JSON lines; no pickle)."""
        path = Path(path)  # (a str failed: 'str' object has no attribute 'with_name')
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with gzip.open(tmp, "wt", compresslevel=1) as f:
                head = {
                    "format": FORMAT,
                    "version": version,
                    "watermark_us": self.watermark_us,
                    "outcomes": sorted(self.outcomes),
                }
                f.write(json.dumps(head) + "\n")
                f.write(json.dumps(self.charges, separators=(",", ":")) + "\n")
                for (gi, key), st in self.states.items():
                    f.write(json.dumps([gi, key, state_to_json(st)], separators=(",", ":")) + "\n")
            interrupts.check()
            os.replace(tmp, path)
        except BaseException:  # an interrupt or a full disk: no temporary left
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def restore(cls, path: str | os.PathLike[str], version: str) -> MemoryStore:
        """Load a snapshot; a :class:`SnapshotError` (a ValueError) if it belongs to another feature-set
        version or was written in another state format (by an older payfm: rebuild it from the event log).

        The restored state is moved out of the cyclic garbage collector's reach (``gc.freeze``), as after
        :func:`payfm.features.parity.apply_log`.
        """
        store = cls()
        was_enabled = gc.isenabled()
        gc.disable()  # millions of long-lived objects: do not rescan them while loading
        try:
            store._load(Path(path), version)
        finally:
            if was_enabled:
                gc.enable()
        gc.freeze()
        return store

    def _load(self, path: Path, version: str) -> None:
        store = self
        with gzip.open(path, "rt") as f:
            try:
                head = json.loads(f.readline())
            except (json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as e:
                raise SnapshotError(f"Snapshot '{path}' is not an online-state snapshot: {e}") from None
            found = head.get("format", 1) if isinstance(head, dict) else None
            if found != FORMAT:
                raise SnapshotError(
                    f"Snapshot '{path}' is in online-state format {found}; this payfm reads format {FORMAT}. "
                    "Delete it: the state is rebuilt from the event log."
                )
            if head["version"] != version:
                raise SnapshotError(
                    f"Snapshot '{path}' is of feature-set version {head['version']}; expected {version}."
                )
            store.watermark_us = head["watermark_us"]
            store.outcomes = set(head["outcomes"])
            store.charges = json.loads(f.readline())
            for line in f:
                gi, key, data = json.loads(line)
                store.states[(gi, tuple(key) if isinstance(key, list) else key)] = state_from_json(data)
