"""Features that carry no information in a backfill: missing on every charge, or one value on all of them.

An imported export fills only some of the event schema's fields (Sparkov has no IP address, device, e-mail or
3-D Secure result): the features reading the others are null on every charge, or constant, and a model
learns nothing from them. ``payfm features backfill`` says which, so that a user knows what the export
cannot tell (docs/features.md, "What an export fills").

Example:
    >>> import tempfile, pyarrow as pa, pyarrow.parquet as pq
    >>> path = tempfile.mktemp(suffix=".parquet")
    >>> pq.write_table(pa.table({"a": [1.0, 2.0], "b": [None, None], "c": [0.0, 0.0]}, pa.schema(
    ...     [("a", pa.float64()), ("b", pa.float64()), ("c", pa.float64())])), path)
    >>> uninformative(path, ["a", "b", "c"])
    Uninformative(missing=('b',), constant=('c',))
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb


@dataclass(frozen=True)
class Uninformative:
    missing: tuple[str, ...]  # null on every charge
    constant: tuple[str, ...]  # one value on every charge that has one

    def said(self, total: int, shown: int = 6) -> str | None:
        """One sentence naming them by group (``ip.* (12)``), or None when every feature varies."""
        parts = []
        for names, what in ((self.missing, "missing on every charge"), (self.constant, "constant")):
            if names:
                parts.append(f"{len(names)} {what} ({_groups(names, shown)})")
        if not parts:
            return None
        return (
            f"{' and '.join(parts)}, of {total} features: the log fills no field they read, or one value of "
            "it, so a model learns nothing from them"
        )


def _groups(names: tuple[str, ...], shown: int) -> str:
    """``ip.* (12), device.* (10), ...``: the names by the part before their first dot, largest first."""
    counts = Counter(n.split(".", 1)[0] if "." in n else n for n in names)
    listed = [f"{g}.* ({k})" if k > 1 or g not in names else g for g, k in counts.most_common(shown)]
    more = len(counts) - shown
    return ", ".join(listed) + (f" and {more} more group{'s' if more > 1 else ''}" if more > 0 else "")


def uninformative(path: str | Path, names: list[str]) -> Uninformative:
    """The features of the backfill at ``path`` (its columns ``names``) missing on every row, and those with
    one value on every row that has one; one DuckDB scan of the file."""
    if not names:
        return Uninformative((), ())
    quoted = [name.replace('"', '""') for name in names]
    stats = ", ".join(f'count("{q}"), min("{q}"), max("{q}")' for q in quoted)
    con = duckdb.connect()
    try:
        row = con.execute(f"SELECT {stats} FROM read_parquet(?)", [str(path)]).fetchone()
    finally:
        con.close()
    assert row is not None
    missing, constant = [], []
    for i, name in enumerate(names):
        count, low, high = row[3 * i : 3 * i + 3]
        if count == 0:
            missing.append(name)
        elif low == high:
            constant.append(name)
    return Uninformative(tuple(missing), tuple(constant))
