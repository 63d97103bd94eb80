"""API keys: created once (the secret is shown once), stored as a salted SHA-256 hash, revocable.

A key is ``pfm_<id>_<secret>`` with a 256-bit random secret, so a fast salted hash is as safe as a slow one
(nobody can guess 2^256 secrets) and checking a key costs microseconds. Keys live in
``<workspace>/serving/keys.db``; the server re-reads them when that file changes (it looks at most every
half second: a stat per request cost more than the rest of the check), so a revocation takes effect without
a restart, within half a second.

Example:
    >>> import tempfile; from pathlib import Path
    >>> ks = KeyStore(Path(tempfile.mkdtemp()) / "keys.db")
    >>> key = ks.create("ops")
    >>> ks.verify(key), ks.verify(key + "x")
    ('ops', None)
    >>> ks.revoke("ops"); ks.verify(key), ks.is_revoked(key), ks.is_revoked(key + "x")
    (None, True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from payfm.errors import sqlite_file
from payfm.events.cards import contains_card_number
from payfm.events.text import MAX_ID_CHARS
from payfm.serving.errors import Conflict, InvalidInput, NotFound, shown

_RECHECK_S = 0.5  # how often verify() looks for a changed key file

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, salt BLOB NOT NULL, "
    "hash BLOB NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT)"
)


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


def _control_character(text: str) -> str | None:
    """As :func:`payfm.rules.limits.control_character` (same message), without importing the rules package
    into the key store."""
    for i, ch in enumerate(text, start=1):
        if unicodedata.category(ch) == "Cc":
            return f"Got {ch!r} at character {i}."
    return None


def check_name(name: str) -> None:
    """Raise :class:`InvalidInput` (field ``name``) unless ``name`` can name a key: letters, digits, '-' or
    '_', holding no card number. A key's name is printed by ``keys list`` and stored as the ``reviewer`` of
    every review it closes, where the event log refuses a card number (each closure would fail with 422).

    >>> check_name("ops-1")
    >>> try:
    ...     check_name("4111111111111111")
    ... except InvalidInput as e:
    ...     print(e.field, str(e)[:47])
    name A key name must not contain a card number (PAN)
    """
    if contains_card_number(name):
        raise InvalidInput(
            "A key name must not contain a card number (PAN): it is printed and stored as the reviewer of "
            "every review the key closes. Got a name holding one (not shown).",
            field="name",
        )
    if (control := _control_character(name)) is not None:
        raise InvalidInput(f"A key name must not contain control characters. {control}", field="name")
    if len(name) > MAX_ID_CHARS:  # stored as the reviewer of each closure: an id of the event log
        raise InvalidInput(
            f"A key name has at most {MAX_ID_CHARS} characters. Got {len(name):,} characters.", field="name"
        )
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise InvalidInput(
            f"A key name must be letters, digits, '-' or '_'. Got {shown(repr(name))}.", field="name"
        )


class KeyStore:
    """The decision service's API keys (``keys.json`` in the workspace: names and salted hashes, never the
    keys): create, list, revoke, and check a key in constant time (docs/serving.md, "Keys")."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, bytes, bytes]] = {}
        self._revoked: dict[str, tuple[str, bytes, bytes]] = {}  # the revoked keys, as _cache holds keys
        self._stamp: tuple[int, int] | None = None
        self._checked = -1e9  # time.monotonic() of the last look at the file

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection to the file (made on first use), closed after the block; in the whole block a
        damaged file, or a write the system refuses (a read-only workspace), is one error naming it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite_file(self.path, "The API key store"):
            con = sqlite3.connect(self.path, timeout=30)
            try:
                con.execute(_SCHEMA)
                yield con
            finally:
                con.close()

    def create(self, name: str) -> str:
        """A new key for ``name`` (a name :func:`check_name` accepts); the returned key is the only time the
        secret exists in clear."""
        check_name(name)
        kid, secret, salt = secrets.token_hex(4), secrets.token_urlsafe(32), os.urandom(16)
        with self._db() as con:
            try:
                with con:
                    con.execute(
                        "INSERT INTO keys VALUES (?, ?, ?, ?, ?, NULL)",
                        (kid, name, salt, _digest(salt, secret), datetime.now(UTC).isoformat()),
                    )
            except sqlite3.IntegrityError:
                row = con.execute("SELECT revoked_at FROM keys WHERE name = ?", (name,)).fetchone()
                if row is not None and row[0] is not None:
                    raise Conflict(
                        f"A key named {name!r} was revoked on {row[0][:10]}; a name never passes to another "
                        "key (what it did stays attributable to it): pick another name.",
                        field="name",
                    ) from None
                raise Conflict(
                    f"A key named {name!r} exists already; revoke it or pick another name."
                ) from None
        self._checked = -1e9  # this store sees its own changes at once
        return f"pfm_{kid}_{secret}"

    def list(self) -> list[dict[str, Any]]:
        with self._db() as con:
            rows = con.execute(
                "SELECT id, name, created_at, revoked_at FROM keys ORDER BY created_at"
            ).fetchall()
        return [dict(zip(("id", "name", "created_at", "revoked_at"), r, strict=True)) for r in rows]

    def revoke(self, name: str) -> None:
        with self._db() as con, con:
            cur = con.execute(
                "UPDATE keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (datetime.now(UTC).isoformat(), name),
            )
        self._checked = -1e9
        if cur.rowcount == 0:
            raise NotFound(
                f"No active key named {shown(repr(name))} (`payfm serve keys list` shows every key).",
                field="name",
            )

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < _RECHECK_S:
            return
        self._checked = now
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._cache, self._revoked, self._stamp = {}, {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        with self._db() as con:
            rows = con.execute("SELECT id, name, salt, hash, revoked_at FROM keys").fetchall()
        self._cache, self._revoked = {}, {}
        for key_id, name, salt, digest, revoked_at in rows:
            held = self._cache if revoked_at is None else self._revoked
            held[key_id] = (name, bytes(salt), bytes(digest))
        self._stamp = stamp

    def _matches(self, key: str, revoked: bool) -> str | None:
        """The name of the key of this store (an active one, or with ``revoked`` a revoked one) whose id and
        secret ``key`` holds, else None."""
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != "pfm":
            return None
        with self._lock:
            self._refresh()
            entry = (self._revoked if revoked else self._cache).get(parts[1])
        if entry is None:
            return None
        name, salt, digest = entry
        return name if hmac.compare_digest(_digest(salt, parts[2]), digest) else None

    def verify(self, key: str) -> str | None:
        """The key's name if ``key`` is valid and not revoked, else None."""
        return self._matches(key, revoked=False)

    def is_revoked(self, key: str) -> bool:
        """Whether ``key`` is a revoked key of this store: only the holder of the whole key learns it (a wrong
        secret is any invalid key)."""
        return self._matches(key, revoked=True) is not None
