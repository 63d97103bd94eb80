"""The card-number checks of an imported file, before anything is read from it: column names (a header line
that is a data row) and every cell of every column but those a mapping fingerprints, hashes or declares
free of card numbers. A number found is reported by row and column, never shown."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.events.cards import (
    branded_card_rows,
    card_number_fields,
    card_number_rows,
    contains_card_number,
    redact_card_numbers,
)
from payfm.events.import_problems import Problems
from payfm.events.mapping import Mapping

TEXT_LIMIT = 2**31 - 1  # bytes of text one Arrow string or binary array holds (32-bit offsets)


def hide_card_headers(table: pa.Table, is_csv: bool, out: Problems) -> pa.Table:
    """Column names holding a card number (a header line that is really a data row, a number pasted into
    a header) are refused like a card number in a cell: reported, never shown. The column is renamed to its
    redacted name and position, so no later message, nor the summary, shows the number. So are the names of
    the fields nested in a column (a Parquet struct, map or union, at any depth), which no message shows."""
    names = table.column_names
    hidden = [i for i, name in enumerate(names) if contains_card_number(name)]
    renamed = list(names)
    hint = " (is the first line a data row? the file must start with a header line)" if is_csv else ""
    for i in hidden:
        renamed[i] = f"{redact_card_numbers(names[i])} (column {i + 1})"
        out.column(renamed[i], f"a column name without a card number{hint}", "a full card number (not shown)")
    for i, field in enumerate(table.schema):
        if card_number_fields(field.type):
            out.column(
                renamed[i],
                "field names without a card number (in a struct, map or union, at any depth)",
                "a nested field name holding a full card number (not shown)",
            )
    return table.rename_columns(renamed) if hidden else table


def scan_cards(mapping: Mapping, table: pa.Table, out: Problems) -> None:
    """Card numbers in any column but the fingerprinted ones: report row and column, never the number."""
    # Epoch columns: branded numbers only (a ms time passes Luhn 1 in 10; none of 2001-33 has a brand's digit)
    epoch = {c for spec in mapping.fields.values() if spec.unit is not None for c in spec.columns}
    # A column read only through a keyed hash is stored as one, as a fingerprint is: a processor's 16-digit
    # transaction reference passes the Luhn check one time in ten, and can be hashed into ids.
    hashed = {c for spec in mapping.fields.values() if spec.kind == "hash" for c in spec.columns}
    # Any type with a text form: 16-digit references are often integers. (A nested column is still scanned:
    # the hash refuses it, and the scan names its card numbers.)
    hashed = {c for c in hashed if c in table.column_names and not pa.types.is_nested(table.column(c).type)}
    if hashed:
        others = {k: s for k, s in mapping.fields.items() if s.kind != "hash"}
        hashed -= set(dataclasses.replace(mapping, fields=others).source_columns()) | set(mapping.drop)
        # (the join's keys are compared, and a repeated one quoted: scanned, as docs/import.md says)
        hashed -= {mapping.join.column, mapping.join.key} if mapping.join is not None else set()
    declared = set(mapping.no_card_numbers)  # (never stored as they are: mapping_cards checks it)
    for name in table.column_names:
        if name in mapping.fingerprinted or name in hashed or name in declared:
            continue
        rows = _in_pieces(branded_card_rows if name in epoch else card_number_rows, table.column(name))
        if len(rows):
            out.rows(
                name,
                rows,
                "no card numbers (only a column sent through transform: fingerprint, read only through a "
                "keyed `hash`, or listed under no_card_numbers, may hold them)",
                "a full card number (not shown)",
            )


def text_bytes(column: pa.Array | pa.ChunkedArray) -> int:
    """The bytes of the values of a text or binary ``column`` (0 for other types)."""
    t = column.type
    kinds = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    if not any(kind(t) for kind in kinds):
        return 0
    return int(pc.sum(pc.binary_length(column)).as_py() or 0)


Scan = Callable[[pa.ChunkedArray | pa.Array], np.ndarray]  # a card scan: the rows holding a card number


def _in_pieces(find: Scan, column: pa.ChunkedArray) -> np.ndarray:
    """``find``'s rows of ``column`` (the card scans), read piece by piece when it holds more text than one
    array does (over 2 GiB: its pieces each read as one)."""
    if text_bytes(column) <= TEXT_LIMIT:
        return find(column)
    found, start = [], 0
    for chunk in column.chunks:
        found.append(_piece_rows(find, chunk) + start)
        start += len(chunk)
    return np.concatenate(found)


def _piece_rows(find: Scan, piece: pa.Array) -> np.ndarray:
    """``find``'s rows of ``piece``, in halves while it holds more text than one array does."""
    if len(piece) < 2 or text_bytes(piece) <= TEXT_LIMIT:
        return find(piece)
    half = len(piece) // 2
    first, second = _piece_rows(find, piece.slice(0, half)), _piece_rows(find, piece.slice(half))
    return np.concatenate([first, second + half])
