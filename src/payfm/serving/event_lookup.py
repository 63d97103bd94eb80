"""Event-log rows by key, for the decision service's outcome checks: is this outcome in the event log
already, when was its charge, what are its refunds? Each file of a table gets an index of its key's hashes,
built once per process, so a lookup reads only the files that may hold the value.

Example::

    rows = matching_rows(ws, "refunds", "charge_id", "ch_1", ("refund_id", "amount"))
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from payfm.events.workspace import Workspace

# (table directory, key column) -> {file: the sorted hashes of the key's values in that file}. The event
# log's files never change (a write makes new names), so a file's index is built once per process, at its
# first lookup; a lookup is then a binary search per file, and only a file that may hold the value is read.
# Files no longer listed (compacted away) are dropped at the next lookup, so memory is 8 bytes per live row.
# Footer statistics were not enough: they prune only keys that grow with time; a compacted day spans every id.
_KEY_INDEX: dict[tuple[str, str], dict[str, np.ndarray]] = {}
_KEY_INDEX_LOCK = threading.Lock()


def _file_index(path: str, key: str) -> np.ndarray:
    values = pq.ParquetFile(path).read(columns=[key])[key].to_pylist()
    return np.sort(np.fromiter((hash(v) for v in values if v is not None), dtype=np.int64))


def matching(ws: Workspace, table: str, key: str, value: str, column: str) -> list[Any]:
    """``column`` of the rows of event table ``table`` whose ``key`` is ``value`` (:func:`matching_rows`)."""
    return [row[column] for row in matching_rows(ws, table, key, value, (column,))]


def matching_rows(
    ws: Workspace, table: str, key: str, value: str, columns: tuple[str, ...]
) -> list[dict[str, Any]]:
    """``columns`` of the rows of event table ``table`` whose ``key`` is ``value``; only files whose index
    (``_KEY_INDEX``) has the value's hash are read."""
    return matching_rows_of(ws, table, key, [value], columns)[value]


def matching_rows_of(
    ws: Workspace, table: str, key: str, values: Sequence[str], columns: tuple[str, ...]
) -> dict[str, list[dict[str, Any]]]:
    """:func:`matching_rows` of each of ``values`` at once (a page of reviews): the table's files are listed
    once and each file's index searched for every value in one pass, so a page costs one pass over the files,
    not one per value."""
    hashes = np.array([hash(v) for v in values], dtype=np.int64)

    def read(files: list[Path]) -> dict[str, list[dict[str, Any]]]:
        listed = [str(f) for f in files]
        with _KEY_INDEX_LOCK:
            cache = _KEY_INDEX.setdefault((str(ws.root / table), key), {})
            for gone in cache.keys() - set(listed):
                del cache[gone]
            todo = [f for f in listed if f not in cache]
        for f in todo:  # outside the lock: reading a file
            index = _file_index(f, key)
            with _KEY_INDEX_LOCK:
                cache[f] = index
        out: dict[str, list[dict[str, Any]]] = {v: [] for v in values}
        for f in listed:
            found = cache.get(f)
            index = found if found is not None else _file_index(f, key)  # evicted meanwhile: read it
            at = np.minimum(np.searchsorted(index, hashes), max(len(index) - 1, 0))
            hit = [v for v, i, h in zip(values, at, hashes, strict=True) if len(index) and index[i] == h]
            if hit:
                part = pq.ParquetFile(f).read(columns=list(dict.fromkeys((key, *columns))))
                rows = part.filter(pc.is_in(part[key], value_set=pa.array(hit, pa.string())))
                for row in rows.to_pylist():
                    out[row[key]].append({c: row[c] for c in columns})
        return out

    return ws.retrying(table, read)


def event_log_result(ws: Workspace, charge_id: str) -> tuple[str, str, str | None] | None:
    """``("in the event log", outcome, decline_code)`` of charge ``charge_id`` in the event log, None if it
    holds none."""
    rows = matching_rows(ws, "charges", "charge_id", charge_id, ("outcome", "decline_code"))
    return ("in the event log", str(rows[0]["outcome"]), rows[0]["decline_code"]) if rows else None
