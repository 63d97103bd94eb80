"""Rows an import leaves out when asked: those whose id the workspace holds already (``--skip-existing``: a
cumulative export imported again), and outcomes whose charge it does not hold (``--skip-orphans``: chargebacks
of charges from before the charges export). Without these, either is an error naming the rows: events are
immutable, and an outcome follows its charge. Rows are compared by id only: a row left out is not checked
against the stored one.

The ids are computed as the import computes them (the mapping's prefix, hash or constant) from the whole file
before anything else; a file whose ids cannot be computed skips nothing (the import then names the problem).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.events.import_convert import to_strings
from payfm.events.import_problems import Problems
from payfm.events.mapping import Mapping
from payfm.events.schema import ID_COLUMNS
from payfm.events.validate import Problem
from payfm.events.workspace import Workspace


def _ids(ws: Workspace, mapping: Mapping, table: pa.Table, field: str) -> pa.Array | None:
    """The values of target ``field`` as the import computes them, or None when they cannot be (a problem)."""
    spec = mapping.fields.get(field)
    if spec is None:
        return None
    scratch = Problems(mapping.fields, False)
    ids = to_strings(spec, table, ws.secret(), scratch, True)
    return None if ids is None or scratch.total else ids


def rows_to_skip(
    ws: Workspace, mapping: Mapping, table: pa.Table, existing: bool, orphans: bool
) -> tuple[np.ndarray, dict[str, int]]:
    """The rows of ``table`` to keep (a boolean mask) and how many each reason leaves out (``existing``,
    ``orphans``; only the reasons asked for)."""
    keep = np.ones(table.num_rows, dtype=bool)
    counts: dict[str, int] = {}
    id_column = ID_COLUMNS[mapping.table]
    if existing:
        ids = _ids(ws, mapping, table, id_column)
        stored = ws.read(mapping.table, columns=[id_column]).column(id_column).combine_chunks()
        if ids is not None and len(stored):
            held = pc.fill_null(pc.is_in(ids, value_set=stored.cast(ids.type)), False).to_numpy(False)
            counts["existing"] = int(held.sum())
            keep &= ~held
    if orphans and mapping.table != "charges":
        charge_ids = _ids(ws, mapping, table, "charge_id")
        stored = ws.read("charges", columns=["charge_id"]).column("charge_id").combine_chunks()
        if charge_ids is not None:
            known = pc.fill_null(pc.is_in(charge_ids, value_set=stored.cast(charge_ids.type)), False)
            lone = keep & ~known.to_numpy(False)
            counts["orphans"] = int(lone.sum())
            keep &= ~lone
    return keep, counts


def remap_rows(problems: list[Problem], start: int, origin: np.ndarray) -> None:
    """Problems from ``start`` on were found in the kept rows: give each its row in the file (``origin``:
    the file's 0-based row of each kept row)."""
    for i in range(start, len(problems)):
        p = problems[i]
        if p.row is not None:
            problems[i] = dataclasses.replace(p, row=int(origin[p.row - 1]) + 1)
