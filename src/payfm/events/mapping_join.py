"""A mapping's ``join``: the imported file's rows take the columns of a second file, matched by a key.

Exports often come as two files of one table: IEEE-CIS's transactions and their identities (device, browser)
by ``TransactionID``, AMLSim's transfers and its accounts' labels by account id. A mapping that declares

    join: {column: TransactionID}                  # the same column name in both files
    join: {column: sourceNodeId, key: nodeid}      # the imported file's column, the second file's

reads the second file, given to ``payfm import --join FILE`` (``import_file(..., join=FILE)``), as the
imported one is read (its CSV form, its card-number scan), and its columns become source columns of the
mapping: every row of the imported file takes the columns of the one row of the second file whose ``key``
equals its ``column`` (compared as text), or nulls where there is none. (Not ``on``: YAML 1.1 reads
``on`` as the boolean true.) :mod:`payfm.events.import_join` does
the join.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from payfm.errors import ConfigError

JOIN_KEYS = ("column", "key")


@dataclass(frozen=True)
class JoinSpec:
    column: str  # the imported file's column
    key: str  # the second file's column that it matches (unique there)


def parse_join(error: Callable[[str, str, object], ConfigError], data: object) -> JoinSpec:
    """``join`` of a mapping file; ``error(path, expected, received)`` names the mapping file."""
    if not isinstance(data, dict) or "column" not in data:
        if isinstance(data, dict) and True in data:  # (YAML 1.1: on, yes, y are true)
            data = {"on (YAML reads it as true: write column)": data[True]}
        raise error(
            "join", "a mapping such as {column: TransactionID} or {column: sourceNodeId, key: nodeid}", data
        )
    for k in data:
        if k not in JOIN_KEYS:
            raise error(f"join.{k}", "one of " + ", ".join(JOIN_KEYS), f"<an unknown key {str(k)!r}>")
    names: dict[str, Any] = {k: data.get(k, data["column"]) for k in JOIN_KEYS}
    for k, v in names.items():
        if not isinstance(v, str) or not v.strip():
            raise error(f"join.{k}", "a column name", v)
    return JoinSpec(names["column"], names["key"])
