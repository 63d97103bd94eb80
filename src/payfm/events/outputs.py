"""Files payfm writes outside the event log (a training set, embeddings, a report's figures): checked before
the work that produces them, and written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from payfm import interrupts
from payfm.errors import ConfigError
from payfm.events.cards import shown_text
from payfm.events.workspace import fsync_dir


def output_file(
    path: str | os.PathLike[str],
    who: str,
    *,
    workspace: str | os.PathLike[str] | None = None,
    within: str | None = None,
) -> Path:
    """``path``, a file about to be written, checked before the work that produces it: no folder, and its
    nearest existing ancestor a writable folder (the missing ones are made when it is written, so a command
    that fails first leaves none behind). A :class:`ConfigError` naming ``who`` (the option: ``--out``)
    otherwise, rather than an OSError traceback once the work is done.

    Given ``workspace`` (the folder of the workspace the command reads), a path in its folders is refused
    too, as is a file at its top other than a ``.parquet`` or ``.csv`` one (the workspace keeps none there): a
    write there could replace the workspace's own files (its manifest, secret key, event log or rules.db) and
    destroy it. ``within`` (``"features/*.training.parquet"``: an output whose default place is in the
    workspace) allows a file directly in that subfolder whose name ends so (or, without a ``*``, that one
    file), and no other file there: the subfolder holds other files too (a backfill beside the training
    sets, checkpoints and other checkpoints' embeddings beside embeddings).

    >>> import tempfile
    >>> output_file(Path(tempfile.mkdtemp()), "--out")
    Traceback (most recent call last):
    payfm.errors.ConfigError: --out: '...' is a folder. Expected a file path.
    """
    p = Path(path)
    shown = shown_text(str(p))  # a path from the command line: escaped, no card number
    if p.is_dir():
        raise ConfigError(f"{who}: '{shown}' is a folder. Expected a file path.")
    if workspace is not None:
        _outside_workspace(p, who, Path(workspace), within)
    above = p.absolute().parent
    while not above.exists() and above != above.parent:
        above = above.parent
    there = shown_text(str(above))
    if not above.is_dir():
        raise ConfigError(f"{who}: the folder of '{shown}' cannot be created: '{there}' is a file.")
    if not os.access(above, os.W_OK | os.X_OK):
        raise ConfigError(f"{who}: the folder of '{shown}' cannot be written: '{there}' is not writable.")
    return p


def _real(path: Path) -> Path:
    """``path`` absolute, its links followed (a link to the workspace's manifest is the manifest)."""
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError):  # (a loop of links: RuntimeError before Python 3.13)
        return path.expanduser().absolute()


def _is_own(real: Path, root: Path, within: str) -> bool:
    """Whether ``real`` is a file that ``within`` (``"features/*.training.parquet"``, or one name:
    ``"fm/v3.embeddings.parquet"``) allows: directly in that subfolder of ``root``, its name ending as the
    pattern's does (and not only that ending), or the name itself."""
    folder, _, pattern = within.partition("/")
    if real.parent != root / folder:
        return False
    if not pattern.startswith("*"):
        return real.name == pattern
    ending = pattern.removeprefix("*")
    return real.name.endswith(ending) and len(real.name) > len(ending)


def _outside_workspace(path: Path, who: str, workspace: Path, within: str | None) -> None:
    root = _real(workspace)
    real = _real(path)
    if not real.is_relative_to(root) or (within is not None and _is_own(real, root, within)):
        return
    if real.parent == root and real.suffix.lower() in (".parquet", ".csv"):  # (it keeps none at its top)
        return
    where = f", or a file {within}" if within is not None else ""
    raise ConfigError(
        f"{who}: '{shown_text(str(path))}' is inside the workspace '{shown_text(str(root))}': writing there "
        "could replace the workspace's own files (its manifest, secret key, event log or rules.db) and "
        "destroy it. Expected a path outside the workspace's folders (a .parquet or .csv file at its top"
        f"{where})."
    )


def write_parquet(table: pa.Table, path: Path, who: str, **options: Any) -> None:
    """Write ``table`` to ``path`` (checked by :func:`output_file`) through a temporary beside it, renamed
    over it: an interrupt (Ctrl-C, SIGTERM) or a full disk leaves the old file or none, and no temporary;
    an OSError is a :class:`ConfigError` naming ``who``. ``options`` go to ``pq.write_table``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp, **options)
        _fsync_file(tmp)  # on disk before the rename: a power loss leaves the old file or the new, whole
        interrupts.check()
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        said = shown_text(str(e.strerror or e), 400)
        raise ConfigError(f"{who}: '{shown_text(str(path))}' cannot be written: {said}.") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
