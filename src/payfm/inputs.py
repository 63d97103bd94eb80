"""What the Python API's functions take, checked where they are called: an argument of another kind is a
:class:`~payfm.errors.ConfigError` naming the parameter, the function, what it takes and what it got, not an
AttributeError from deep inside (``'DataFrame' object has no attribute 'column_names'``).

A table may come as a pyarrow Table or RecordBatch, or as a pandas or Polars DataFrame (converted: a
notebook's user holds those); nothing else.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from payfm.errors import ConfigError


def kind(value: object) -> str:
    """A wrong argument as a message names it.

    >>> kind(None), kind(3), kind("x"), kind({}), kind([1])
    ('None', 'the int 3', 'a str', 'a dict', 'a list')
    """
    if value is None:
        return "None"
    name = type(value).__name__
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"the {name} {value!r}"
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def arrow_table(value: Any, param: str, who: str) -> pa.Table:
    """``value`` as an Arrow table: a Table as it is, a RecordBatch as a table of it, a pandas DataFrame
    without its index, a Polars DataFrame by its ``to_arrow``; else a ConfigError naming ``param`` of
    ``who``.

    >>> arrow_table(pa.table({"a": [1]}), "predictions", "f").num_rows
    1
    >>> arrow_table([{"a": 1}], "scores", "f")
    Traceback (most recent call last):
    ...
    payfm.errors.ConfigError: The 'scores' of f must be an Arrow table (a pyarrow.Table; a pandas or Polars \
DataFrame is converted). Got a list.
    """
    if isinstance(value, pa.Table):
        return value
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    module = type(value).__module__.split(".")[0]
    if module == "pandas" and hasattr(value, "columns"):
        try:
            return pa.Table.from_pandas(value, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
            from payfm.events.cards import redact_card_numbers  # (Arrow's message may quote a cell)

            raise ConfigError(
                f"The '{param}' of {who}: a pandas DataFrame Arrow cannot convert "
                f"({redact_card_numbers(str(e))})."
            ) from None
    if module == "polars" and hasattr(value, "to_arrow"):
        table = value.to_arrow()
        if isinstance(table, pa.Table):
            return table
    raise ConfigError(
        f"The '{param}' of {who} must be an Arrow table (a pyarrow.Table; a pandas or Polars DataFrame is "
        f"converted). Got {kind(value)}."
    )
