"""The checks of an import against what the workspace stores, and the outcomes they decide.

An import refuses the ids the workspace holds (or leaves their rows out, ``--skip-existing``), checks an
outcome table's rows against their stored charges (or leaves out those of charges it does not hold,
``--skip-orphans``), and makes its labels' outcomes, those of a row left out from the stored charge. All of
it depends on the workspace's contents, which another writer may change between these checks and the
import's write: :func:`check_stored` records the manifest version it read, and
:mod:`payfm.events.importer` runs it again under the write lock when a commit came in between, so what is
written holds against what the workspace holds at its commit (two imports of one file at once write it
once).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.events.import_outcomes import (
    OUTCOME_ID,
    LabelCounts,
    follow_charges,
    matching_rows,
    outcome_events,
)
from payfm.events.import_problems import Problems, values_at
from payfm.events.mapping import Mapping
from payfm.events.schema import ID_COLUMNS
from payfm.events.validate import ValidationError, validate_events
from payfm.events.workspace import Workspace

# What an outcome takes from its charge: its time (a delay counts from it; an outcome is later), whether
# it moved money (none follows one that did not), the amount and currency a dispute copies.
_OUTCOME_BASIS = ("created", "outcome", "amount", "currency")


@dataclass(frozen=True)
class Checked:
    """What the workspace's contents decided of an import, read at manifest ``version`` (or a later one)."""

    version: int
    held: np.ndarray  # rows whose id the workspace holds (a mask; --skip-existing leaves them out)
    orphans: np.ndarray  # rows of an outcome table whose charge it does not hold (--skip-orphans)
    outcomes: dict[str, pa.Table]  # the labels' outcome events to write, by table
    counts: LabelCounts
    warnings: tuple[str, ...]


def check_stored(
    ws: Workspace,
    mapping: Mapping,
    table: pa.Table,
    charges: pa.Table,
    secret: bytes,
    out: Problems,
    *,
    source: str,
    skip_existing: bool = False,
    skip_orphans: bool = False,
) -> Checked:
    """The checks of the computed ``charges`` (of the file's ``table``) that read the workspace: ids it holds
    (refused, or left out with ``skip_existing``), an outcome table's charges (``follow_charges``), and the
    labels' outcome events (validated, those it holds refused or left out), problems recorded in ``out``."""
    version = int(ws.manifest()["version"])  # (first: a commit after it is seen, and checked again)
    held = existing(ws, mapping.table, charges, ID_COLUMNS[mapping.table], out, skip=skip_existing)
    orphans = np.zeros(charges.num_rows, dtype=bool)
    if mapping.table != "charges":
        orphans = follow_charges(ws, mapping, charges, out, held, skip_orphans)
    basis, warnings = stored_charges(ws, mapping, table, charges, held, out)
    outcomes: dict[str, pa.Table] = {}
    counts = LabelCounts()  # (the labels of every row: a row left out may bring a new label of its charge)
    for name, (events, rows) in outcome_events(mapping, table, basis, secret, out, counts).items():
        try:
            outcomes[name] = validate_events(name, events, source=source)
        except ValidationError as e:
            out.absorb(e, rows)
            continue
        stored = existing(ws, name, outcomes[name], OUTCOME_ID[name], out, rows, skip=skip_existing)
        outcomes[name] = outcomes[name].filter(pa.array(~stored))
    counts.keep_written(outcomes)  # the late outcomes said are those written (--skip-existing)
    return Checked(version, held, orphans, outcomes, counts, tuple(warnings))


def existing(
    ws: Workspace,
    table_name: str,
    table: pa.Table,
    id_column: str,
    out: Problems,
    rows: np.ndarray | None = None,
    skip: bool = False,
) -> np.ndarray:
    """Ids already stored in the workspace cannot be imported again (events are immutable); ``rows`` maps the
    rows of a derived table (outcome events) back to the file's rows. With ``skip`` (``--skip-existing``)
    they are no problem: the rows to leave out are returned (a mask; none otherwise)."""
    held = np.zeros(table.num_rows, dtype=bool)
    if id_column not in table.column_names:
        return held
    stored = ws.read(table_name, columns=[id_column]).column(id_column)
    if len(stored) == 0:
        return held
    ids = table.column(id_column).combine_chunks()
    bad = np.flatnonzero(pc.is_in(ids, value_set=stored.combine_chunks().cast(ids.type)).to_numpy(False))
    if len(bad) and skip:
        held[bad] = True
    elif len(bad):
        spec = out.fields.get(id_column) if rows is None else None
        out.rows(
            id_column,
            bad if rows is None else rows[bad],
            f"an id not already in the workspace's '{table_name}' (was this file imported before? "
            "--skip-existing leaves such rows out)",
            values_at(ids, bad),
            where=spec.where if spec is not None else None,
        )
    return held


def stored_charges(
    ws: Workspace, mapping: Mapping, table: pa.Table, charges: pa.Table, held: np.ndarray, out: Problems
) -> tuple[pa.Table, list[str]]:
    """``charges`` with each row the workspace holds (``held``: ``--skip-existing`` leaves it out) as it is
    stored: the labels' outcomes of such a row follow the stored charge, not the file's copy of it (a delay
    counts from the stored time, a `time` must be later than it, a charge stored as declined gets none, a
    dispute copies the stored amount and currency), as the outcomes of a charge imported before must. A
    warning names the labelled rows whose copy differs from the stored charge in any of these."""
    if not held.any() or not mapping.labels:
        return charges, []
    basis = [c for c in _OUTCOME_BASIS if c in charges.column_names]
    stored = ws.read("charges", columns=["charge_id", *basis])
    ids = charges.column("charge_id").combine_chunks()
    at = pc.index_in(ids, value_set=stored.column("charge_id").combine_chunks().cast(ids.type))
    keep = pa.array(held & pc.is_valid(at).to_numpy(False))
    quiet = Problems()  # (the labels' own problems are said by outcome_events)
    labelled = np.zeros(charges.num_rows, dtype=bool)
    for label in mapping.labels:
        labelled[matching_rows(label, table.column(label.column).chunk(0), quiet)] = True
    differ: dict[str, tuple[np.ndarray, pa.Array, pa.Array]] = {}  # field: rows, the file's, stored
    for name in basis:
        column = charges.column(name).combine_chunks()
        if column.type != stored.schema.field(name).type:
            continue  # (the file's charges have problems: no outcome is made of them)
        kept = pc.take(stored.column(name), at)
        same = pc.fill_null(pc.equal(column, kept), pc.and_(pc.is_null(column), pc.is_null(kept)))
        rows = np.flatnonzero(held & labelled & ~same.to_numpy(False))
        if len(rows):
            differ[name] = (rows, column, kept)
        charges = charges.set_column(
            charges.schema.get_field_index(name), name, pc.if_else(keep, kept, column)
        )
    return charges, [_differ_warning(differ, mapping, out)] if differ else []


def _differ_warning(
    differ: dict[str, tuple[np.ndarray, pa.Array, pa.Array]], mapping: Mapping, out: Problems
) -> str:
    """The warning of labelled rows left out by ``--skip-existing`` whose copy differs from the stored
    charge (``differ``: per field, the rows, the file's values and the stored ones): the first of each."""
    rows = np.unique(np.concatenate([bad for bad, _file, _stored in differ.values()]))
    said = []
    for name, (bad, file, stored) in differ.items():
        first = bad[:1]
        said.append(
            f"{out.row_name(int(first[0]))}, {mapping.fields[name].where}: the file's "
            f"{values_at(file, first)[0]}, stored {values_at(stored, first)[0]}"
        )
    return (
        f"--skip-existing: {len(rows):,} labelled row{'s' if len(rows) != 1 else ''} left out "
        f"differ{'s' if len(rows) == 1 else ''} from the charge the workspace holds ({'; '.join(said)}): "
        "rows are compared by id only, and a label's outcome follows the stored charge (its time, outcome, "
        "amount and currency)"
    )


__all__ = ["Checked", "check_stored", "existing", "stored_charges"]
