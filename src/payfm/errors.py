"""Errors a user can cause and fix. The CLI prints them as one line and exits 1; no traceback.

Messages follow one template: who, what was expected, what was received, e.g.
"The 'window' of feature 'card.count_1h' must be positive. Got -1h."
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class PayfmError(Exception):
    """Base of every user-facing error in payfm."""


class ConfigError(PayfmError):
    """A parameter, option or configuration file is invalid."""


class WorkspaceError(PayfmError):
    """The workspace is missing, locked or inconsistent."""


class WorkspaceBusy(WorkspaceError):
    """Another process (or thread) holds the workspace's write lock."""


# scheme:// and the user:password before the host. A password written unencoded may hold '/', '?', '#' or
# '@' (where a URL parser ends the authority early): the userinfo runs to the LAST '@' of the URL.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)(.*)@", re.DOTALL)
_USERINFO_IN_TEXT = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)(\S*)@")  # a URL a message quotes: to a space
# A password= argument of a URL's query, to the next argument: a '#' or '?' in it ends nothing.
_QUERY_PASSWORD = re.compile(r"([?&;]password=)[^&;\s]*", re.IGNORECASE)
# A password of a libpq keyword DSN ("host=h password=pw dbname=d"): a bare word or a quoted value (\' in it).
_DSN_PASSWORD = re.compile(r"(?<![\w.-])(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s']\S*|)", re.IGNORECASE)
# Where a URL parser ends a password written unencoded: a driver may quote one of the pieces.
_BREAKS = re.compile(r"[#?/@]")


def shown_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages, titles and prompts: a Redis or PostgreSQL
    URL may carry one (``redis://user:pw@host:6379/0``, a ``password=`` query argument, or a libpq keyword
    DSN's ``password=pw``), and what payfm prints ends in terminals and logs. Everything else (scheme, user,
    host, port, path, query) is kept as written; a URL without a password is returned as it is.

        >>> shown_url("redis://app:s3cret@10.0.0.5:6380/2?socket_timeout=5")
        'redis://app:***@10.0.0.5:6380/2?socket_timeout=5'
        >>> shown_url("unix:///run/redis.sock?db=3&password=s3cret")
        'unix:///run/redis.sock?db=3&password=***'
        >>> shown_url("redis://127.0.0.1:6379/0")
        'redis://127.0.0.1:6379/0'
        >>> shown_url("postgresql://user:Ab3/xY@z9==@127.0.0.1:1/x?sslmode=require")
        'postgresql://user:***@127.0.0.1:1/x?sslmode=require'
        >>> shown_url("redis://u:S3cret#PW@127.0.0.1:1/0")
        'redis://u:***@127.0.0.1:1/0'
        >>> shown_url("host=127.0.0.1 password='a b' dbname=test")
        'host=127.0.0.1 password=*** dbname=test'
    """
    if "://" not in url:  # a libpq keyword DSN, or no URL at all
        return _DSN_PASSWORD.sub(r"\1***", url)
    m = _USERINFO.match(url)
    if m is not None:
        url = _masked_userinfo(m) + url[m.end() :]
    else:  # a text that quotes URLs ("... at redis://u:pw@h/0 is not reachable"): each one masked
        url = _USERINFO_IN_TEXT.sub(_masked_userinfo, url)
    return _QUERY_PASSWORD.sub(r"\1***", url)


def _masked_userinfo(m: re.Match[str]) -> str:
    """``scheme://user:***@`` of a match of scheme:// and userinfo; a user without a password as it is."""
    user, colon, _ = m.group(2).partition(":")
    return f"{m.group(1)}{user}{':***' if colon else ''}@"


def url_secrets(url: str) -> list[str]:
    """The passwords ``url`` carries (its userinfo's, its query's ``password=``, a keyword DSN's), each as
    written and percent-decoded, and the pieces a URL parser would cut an unencoded one into at '#', '?',
    '/' or '@' (redis-py quoted ``S3cret`` of ``redis://u:S3cret#PW@h/0`` as the port). A password equal to
    the user name, which :func:`shown_url` shows, is left out.

        >>> url_secrets("redis://u:S3cret#PW@127.0.0.1:1/0")
        ['S3cret#PW', 'S3cret', 'PW']
    """
    from urllib.parse import unquote

    found: list[str] = []
    user = ""
    m = _USERINFO.match(url)
    if m is not None and ":" in m.group(2):
        user, _, password = m.group(2).partition(":")
        found.append(password)
    found += [q.group(0).partition("=")[2] for q in _QUERY_PASSWORD.finditer(url)]
    if "://" not in url:
        for d in _DSN_PASSWORD.finditer(url):
            value = d.group(2)
            if value.startswith("'"):
                value = re.sub(r"\\(.)", r"\1", value[1:].removesuffix("'"))
            found.append(value)
    out: list[str] = []
    for secret in found:
        for s in (secret, unquote(secret)):
            for piece in (s, *_BREAKS.split(s)):
                if piece and piece != user and piece not in out:
                    out.append(piece)
    return out


def scrubbed(text: str, url: str) -> str:
    """``text`` (a driver's message about ``url``) without ``url``'s password: any URL it quotes masked
    (:func:`shown_url`), and every occurrence of a password or a piece of one (:func:`url_secrets`) replaced
    by ``***``; one shorter than 8 characters only where it stands alone, not inside a word (a password 'a'
    would mask the 'a' of 'failed').

        >>> scrubbed("Port could not be cast to integer value as 'S3cret'", "redis://u:S3cret#PW@h:1/0")
        "Port could not be cast to integer value as '***'"
    """
    text = shown_url(text) if "://" in text else text
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        if len(secret) >= 8:
            text = text.replace(secret, "***")
        else:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text


# SQLite's messages for a write the system refused (not a bug of payfm's, nor a lock to wait out)
_REFUSED_WRITES = (
    "attempt to write a readonly database",
    "unable to open database file",
    "database or disk is full",
    "disk I/O error",
)


@contextmanager
def sqlite_file(path: Path, what: str) -> Iterator[None]:
    """Inside the block, SQLite's "file is not a database" or "database disk image is malformed" for the file
    at ``path`` (``what``: "The model registry") becomes a ConfigError naming it, and so does a write the
    system refuses (a read-only file or folder, a full disk); a locked or busy database, and every other
    error, stay as they are."""
    try:
        yield
    except sqlite3.DatabaseError as e:
        if isinstance(e, sqlite3.OperationalError) and str(e).startswith(_REFUSED_WRITES):
            raise ConfigError(
                f"{what} {path} cannot be written: {e}. Expected a file payfm may write (in a folder that is "
                "not read-only, on a disk with free space)."
            ) from None
        if (
            type(e) is not sqlite3.DatabaseError
        ):  # (OperationalError, IntegrityError...: not the file's state)
            raise
        raise ConfigError(
            f"{what} {path} is damaged or not an SQLite database ({e}). payfm changed nothing in it: restore "
            "it from a backup, or move it aside to start an empty one."
        ) from None
