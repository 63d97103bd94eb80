"""Files written whole and durably: a temporary flushed to disk beside its target, renamed over it, the
folder flushed (:func:`atomic_write_bytes`); readers see the old content or the new, never a part, and a
crash keeps one of them. Strays of a writer that died are found by its pid (:func:`alive`). The workspace's
manifest, the registry's and every report use these.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

from payfm import interrupts


def fsync_dir(path: Path) -> None:
    """Flush ``path``'s (a directory's) entries to disk: a rename into it is durable. A filesystem that cannot
    flush a directory (EINVAL, as some network and FUSE mounts answer) is taken as it is, as PostgreSQL
    takes it: the rename stands, and such a filesystem gives no more durability than that."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine): a temporary file or folder named with a dead
    writer's pid is a stray to remove."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def synced_temp(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """A new temporary file beside ``path`` holding ``data``, flushed to disk: to be renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a part."""
    tmp = synced_temp(path, data, mode)
    try:
        interrupts.check()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
