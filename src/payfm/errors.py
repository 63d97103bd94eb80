"""Errors a user can cause and fix. The CLI prints them as one line and exits 1; no traceback.

Messages follow one template: who, what was expected, what was received, e.g.
"The 'window' of feature 'card.count_1h' must be positive. Got -1h."
"""

from __future__ import annotations


class PayfmError(Exception):
    """Base of every user-facing error in payfm."""


class ConfigError(PayfmError):
    """A parameter, option or configuration file is invalid."""


class WorkspaceError(PayfmError):
    """The workspace is missing, locked or inconsistent."""


class WorkspaceBusy(WorkspaceError):
    """Another process (or thread) holds the workspace's write lock."""
