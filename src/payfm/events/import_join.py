"""The join of an imported file with a second file (a mapping's ``join``; :mod:`payfm.events.mapping_join`).

The second file has been read and scanned for card numbers as the imported one is. Its key column must hold
each key once (a second row for a key would be a guess of which one a row takes); the columns it adds must
not share a name with the imported file's. Only the columns the mapping reads are joined. Each row of the
imported file keeps its place, so a problem found later names the imported file's row.

    >>> import pyarrow as pa
    >>> from payfm.events.mapping_join import JoinSpec
    >>> left = pa.table({"id": ["t1", "t2", "t3"], "amt": ["5", "7", "9"]})
    >>> right = pa.table({"id": ["t3", "t1"], "device": ["android", "ios"]})
    >>> table, unmatched = join_columns(JoinSpec("id", "id"), left, right, ["device"], "tx.csv", "id.csv")
    >>> table.column("device").to_pylist(), unmatched
    (['ios', None, 'android'], 1)
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from payfm.errors import ConfigError
from payfm.events.cards import shown_text
from payfm.events.import_convert import as_text
from payfm.events.import_problems import RowLines, closest_column
from payfm.events.mapping import Mapping
from payfm.events.mapping_join import JoinSpec


def check_join(mapping: Mapping, join: object) -> None:
    """A mapping's ``join`` and the second file go together: one without the other is a mistake."""
    if mapping.join is not None and join is None:
        raise ConfigError(
            f"{mapping.name}: 'join': the mapping joins a second file on '{mapping.join.column}'; give it "
            "with --join FILE (import_file(..., join=FILE))."
        )
    if mapping.join is None and join is not None:
        raise ConfigError(
            f"--join {shown_text(str(join))}: expected a mapping with a `join` (e.g. join: {{column: id}}) "
            f"to say how the files match; received {mapping.name}, which has none."
        )


def join_columns(
    spec: JoinSpec,
    table: pa.Table,
    second: pa.Table,
    read: Sequence[str],
    source: str,
    joined: str,
    csv_file: RowLines | None = None,
    mapping_name: str = "the mapping",
) -> tuple[pa.Table, int]:
    """``table`` (of file ``source``) with the columns ``read`` of ``second`` (of file ``joined``) that
    it lacks, taken from the row of ``second`` whose ``spec.key`` equals the row's ``spec.column`` (as text),
    null without one; and the number of ``table``'s rows without one (a null ``column`` matches nothing).
    ``csv_file``: the lines of ``joined``'s rows when it is a CSV file (a repeated key's rows are given with
    their lines)."""
    _has(table, spec.column, source, f"{mapping_name}: 'join.column'")
    _has(second, spec.key, joined, f"{mapping_name}: 'join.key'")
    both = sorted(set(second.column_names) & set(table.column_names) - {spec.column, spec.key})
    if both:
        shown = ", ".join(repr(shown_text(c)) for c in both)
        raise ConfigError(
            f"Join of '{shown_text(joined)}': expected columns that '{shown_text(source)}' does not have; "
            f"received {shown} in both files: which one the mapping reads would be a guess. Rename it in "
            "one of them."
        )
    taken = [c for c in second.column_names if c in read and c not in table.column_names]
    for c in taken:
        if pa.types.is_nested(second.schema.field(c).type):
            raise ConfigError(
                f"Join of '{shown_text(joined)}': column {shown_text(c)!r}: expected text, numbers, booleans "
                f"or times (a nested column cannot be mapped); received a {second.schema.field(c).type}."
            )
    keys = _text(second, spec.key, joined)
    _unique(keys, spec.key, joined, csv_file)
    # Only the keys and row numbers are joined (Arrow's join refuses some column types, a null-typed one
    # among them); the columns are then taken by row number, null where a row found none.
    right = pa.table({"key": keys, "at": _numbers(second.num_rows)}).filter(pc.is_valid(keys))
    left = pa.table({"row": _numbers(table.num_rows), "key": _text(table, spec.column, source)})
    at = left.join(right, "key", join_type="left outer", use_threads=False).sort_by("row").column("at")
    out = table
    for c in taken:
        column = second.column(c)
        if pa.types.is_string_view(column.type):  # (take has no kernel for it)
            column = column.cast(pa.string())
        out = out.append_column(pa.field(c, column.type), column.take(at))
    return out, at.null_count


def _numbers(n: int) -> pa.Array:
    return pa.array(range(n), pa.int64())


def _has(table: pa.Table, column: str, source: str, path: str) -> None:
    if column in table.column_names:
        return
    close = closest_column(column, table.column_names)
    hint = f" (did you mean {shown_text(close)!r}?)" if close else ""
    raise ConfigError(
        f"{path}: expected a column of '{shown_text(source)}'{hint}; received {shown_text(column)!r}, "
        "which the file does not have."
    )


def _text(table: pa.Table, column: str, source: str) -> pa.ChunkedArray:
    """A key column as text: keys compare as the files write them (``7`` matches ``"7"``); an empty one is
    null (it matches nothing)."""
    try:
        text = pa.chunked_array([as_text(c) for c in table.column(column).chunks], pa.string())
        return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:  # (bytes that are not UTF-8, a nested type)
        raise ConfigError(
            f"Join: column {shown_text(column)!r} of '{shown_text(source)}': expected keys readable as text; "
            f"received a {table.schema.field(column).type} column ({shown_text(str(e).splitlines()[0])})."
        ) from None


def _unique(keys: pa.ChunkedArray, column: str, joined: str, csv_file: RowLines | None) -> None:
    """Each key once in the second file (nulls aside): a key twice names it, its count and its rows."""
    counts = pa.table({"k": keys}).filter(pc.is_valid(keys)).group_by("k").aggregate([("k", "count")])
    twice = counts.filter(pc.greater(counts.column("k_count"), 1))
    if not twice.num_rows:
        return
    key = twice.column("k")[0].as_py()
    rows = [i + 1 for i, k in enumerate(keys.to_pylist()) if k == key][:5]
    lines = f" (lines {', '.join(str(csv_file.line(r)) for r in rows)})" if csv_file is not None else ""
    more = f"; {twice.num_rows - 1} more keys are repeated" if twice.num_rows > 1 else ""
    raise ConfigError(
        f"Join of '{shown_text(joined)}': expected each {shown_text(column)!r} once (the row a row of the "
        f"imported file takes); received {shown_text(repr(key))} {twice.column('k_count')[0].as_py()} times, "
        f"rows {', '.join(map(str, rows))}{lines}{more}."
    )
