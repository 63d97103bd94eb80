"""Errors a user can cause and fix. The CLI prints them as one line and exits 1; no traceback.

Messages follow one template: who, what was expected, what was received, e.g.
"The 'window' of feature 'card.count_1h' must be positive. Got -1h."
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit


class PayfmError(Exception):
    """Base of every user-facing error in payfm."""


class ConfigError(PayfmError):
    """A parameter, option or configuration file is invalid."""


class WorkspaceError(PayfmError):
    """The workspace is missing, locked or inconsistent."""


class WorkspaceBusy(WorkspaceError):
    """Another process (or thread) holds the workspace's write lock."""


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^?#\s]*)@")  # scheme://, up to the last '@'


def shown_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages, titles and prompts: a Redis URL may carry
    one (``redis://user:pw@host:6379/0``, or a ``password=`` query argument), and what payfm prints ends in
    terminals and logs. Everything else (scheme, user, host, port, path, query) is kept as written; a URL
    without a password is returned as it is.

        >>> shown_url("redis://app:s3cret@10.0.0.5:6380/2?socket_timeout=5")
        'redis://app:***@10.0.0.5:6380/2?socket_timeout=5'
        >>> shown_url("unix:///run/redis.sock?db=3&password=s3cret")
        'unix:///run/redis.sock?db=3&password=***'
        >>> shown_url("redis://127.0.0.1:6379/0")
        'redis://127.0.0.1:6379/0'
        >>> shown_url("postgresql://user:Ab3/xY@z9==@127.0.0.1:1/x?sslmode=require")
        'postgresql://user:***@127.0.0.1:1/x?sslmode=require'
    """
    # A password written unencoded may hold '/' or '@', where a URL parser ends the authority early: the
    # user:password part runs to the last '@' before the query. Masked as a whole first.
    m = _USERINFO.match(url)
    if m is not None and ":" in m.group(2):
        url = f"{m.group(1)}{m.group(2).partition(':')[0]}:***@{url[m.end() :]}"
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL (an unbalanced "[" of an IPv6 host): hide everything before a host
        return re.sub(r"//[^/@]*@", "//***@", url, count=1)
    shown = url
    if parts.password and parts.password != "***":
        userinfo, _, host = parts.netloc.rpartition("@")
        shown = shown.replace(f"//{parts.netloc}", f"//{userinfo.partition(':')[0]}:***@{host}", 1)
    query = re.sub(r"(^|[&;])(password=)[^&;#]*", r"\1\2***", parts.query)
    if query != parts.query:
        shown = shown.replace(f"?{parts.query}", f"?{query}", 1)
    return shown
