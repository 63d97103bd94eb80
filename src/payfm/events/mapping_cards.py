"""The mapping's checks that keep a full card number out of the event log: what a card-number column may
feed, and the columns a mapping declares to hold no card numbers (``no_card_numbers``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from payfm.events.import_format import Error

if TYPE_CHECKING:
    from payfm.events.mapping import Mapping


def no_card_columns(error: Error, data: object) -> tuple[str, ...]:
    """``no_card_numbers``: a list of source column names."""
    if not isinstance(data, list) or not all(isinstance(c, str) and c for c in data):
        raise error("no_card_numbers", "a list of source column names, e.g. [Modification Reference]", data)
    return tuple(dict.fromkeys(data))


def check_card_columns(error: Error, mapping: Mapping, fingerprinted: frozenset[str]) -> None:
    """A card-number column may feed only card transforms (bin, last4 and brand of a column not fingerprinted
    read masked numbers: 424242******4242, which the scan finds no card number in).

    This is what keeps a full card number out of the log: the fingerprint, BIN, last4 and brand are the only
    things derived from it.
    """
    for spec in mapping.fields.values():
        if spec.transform is None and spec.kind != "hash" and fingerprinted & set(spec.columns):
            raise error(
                spec.path,
                "card-number columns used only with transform fingerprint, bin, last4 or brand, or in a "
                "keyed hash",
                f"<'{sorted(fingerprinted & set(spec.columns))[0]}' used as is>",
            )
        for cur in (spec.minor_units, spec.usd_cents):
            if cur is not None and cur.column in fingerprinted:
                raise error(spec.path, "a currency column that is not a card number", cur.column)
        zone = spec.zone_column.column if spec.zone_column is not None else None
        if zone in fingerprinted | set(mapping.no_card_numbers):  # (its values are quoted in errors)
            raise error(f"{spec.path}.timezone.column", "a zone column that holds no card numbers", zone)
    for label in mapping.labels:
        used = {label.column} | (set(label.time.read_columns) if label.time is not None else set())
        if fingerprinted & used:
            raise error(
                label.path, "a label column that is not a card number", sorted(fingerprinted & used)[0]
            )
    for keep in mapping.keep_rows:
        if keep.column in fingerprinted:
            raise error(f"{keep.path}.column", "a column that is not a card number", keep.column)
    _check_no_card_columns(error, mapping, fingerprinted)


def _check_no_card_columns(error: Error, mapping: Mapping, fingerprinted: frozenset[str]) -> None:
    """A column declared to hold no card numbers is not scanned, so it is never stored as it is: read only
    through a keyed hash, by a label or a row filter (compared, not stored), dropped, or unused."""
    for i, column in enumerate(mapping.no_card_numbers):
        path = f"no_card_numbers[{i}]"
        if column in fingerprinted:
            raise error(path, "a column that is not sent through transform: fingerprint", column)
        for spec in mapping.fields.values():
            if spec.kind != "hash" and column in spec.columns:
                raise error(
                    path,
                    "a column the mapping stores only as a keyed hash (or drops): a column not scanned for "
                    "card numbers is never stored as it is",
                    f"<'{column}', stored by '{spec.path}'>",
                )
