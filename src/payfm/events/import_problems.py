"""The problems of one import, collected over every step so a user fixes a file in one round, then raised
as one :class:`~payfm.events.validate.ValidationError` in file order, a CSV row naming its line, no value of a
row holding a card number shown (:func:`raise_problems`). :mod:`payfm.events.importer` records its own
checks here and merges :func:`~payfm.events.validate.validate_events`' less the problems it repeats.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import NoReturn

import numpy as np
import pyarrow as pa

from payfm.errors import ConfigError
from payfm.events.cards import card_number_rows, redact_card_numbers
from payfm.events.mapping import FieldSpec
from payfm.events.schema import schema_of
from payfm.events.validate import Problem, ValidationError, shown_value

KEEP = 20  # problems kept per check (the message shows the first few, and the total)
SHOWN = 5  # missing columns shown (the message then gives the count), as ValidationError shows problems


@dataclass(frozen=True)
class LineProblem(Problem):
    """A problem in a CSV file, which also names the line its row starts on (header = line 1)."""

    line: int | None = None

    def __str__(self) -> str:
        text = super().__str__()
        if self.row is not None and self.line is not None:
            text = text.replace(f"row {self.row}", f"row {self.row} (line {self.line})", 1)
        return text


class RowLines:
    """The line of a CSV file on which each of its rows starts (header = line 1): row n on line n + 1 when
    every line is a row; else ``find`` gives the line of each row, its header's first (blank lines are no
    row; a quoted value may hold line breaks), read when a message first names one: on an error path."""

    def __init__(self, find: Callable[[], np.ndarray] | None = None, offset: int = 0) -> None:
        self._find = find
        self._lines: np.ndarray | None = None
        self._offset = offset  # lines before the header (Excel's `sep=;` line), when every line is a row

    def line(self, row: int) -> int:
        """The line of the 1-based data ``row``."""
        if self._find is not None and self._lines is None:
            self._lines = self._find()
        if self._lines is None or row >= len(self._lines):
            return row + 1 + self._offset
        return int(self._lines[row])


class Problems:
    """Collects problems over all steps, so a user fixes a file in one round.

    While a target field is computed (``field``), the rows it could not compute are remembered (``bad``; a
    field that failed as a whole is in ``failed``): they are null in the table handed to validate_events,
    whose "required field is null" reports for them are dropped as repeats.

    Every problem names the file's own column(s): while the source expression ``spec`` is read, a problem of
    its source also names the target field it feeds (``column 'amt' (amount)``, :attr:`FieldSpec.where`);
    ``fields`` (the mapping's) names the source of a target field's problems found later (validate_events',
    ids already stored).
    """

    def __init__(self, fields: dict[str, FieldSpec] | None = None, csv_file: bool | RowLines = False) -> None:
        self.lines = csv_file if isinstance(csv_file, RowLines) else RowLines() if csv_file else None
        self.items: list[Problem] = []
        self.total = 0
        self._seen: dict[tuple[str, str], np.ndarray] = {}
        self.fields = fields or {}
        self.empty = "an empty cell" if csv_file else "null"  # a missing value, as the file has it
        self.field: str | None = None
        self.spec: FieldSpec | None = None
        self.bad: dict[str, np.ndarray] = {}
        self.failed: set[str] = set()
        # The file's 0-based row of each row of the table worked on, once ``keep_rows`` left rows out (None:
        # the same rows). Problems are recorded at the file's rows; everything else works on the table's.
        self.file_rows: np.ndarray | None = None

    def keep(self, kept: np.ndarray) -> None:
        """From now on the table worked on holds only its 0-based rows ``kept`` (sorted; of the table worked
        on so far, so that filters compose): the rows already reported (card numbers found in the whole
        file) are renumbered to it, so that the later steps' repeats of them are still known as repeats."""
        for key, seen in self._seen.items():
            inside = np.isin(seen, kept)
            self._seen[key] = np.searchsorted(kept, seen[inside])
        self.bad = {name: np.searchsorted(kept, rows[np.isin(rows, kept)]) for name, rows in self.bad.items()}
        self.file_rows = kept if self.file_rows is None else self.file_rows[kept]

    def _file_row(self, row: int) -> int:
        """The file's 1-based row of the table's 0-based ``row``."""
        return (row if self.file_rows is None else int(self.file_rows[row])) + 1

    def row_name(self, row: int) -> str:
        """The table's 0-based ``row`` as a message names it: ``row 3`` of the file, ``(line 4)`` in a CSV."""
        number = self._file_row(row)
        return f"row {number}" + ("" if self.lines is None else f" (line {self.lines.line(number)})")

    def snapshot(self) -> Problems:
        """A copy that records on its own from here (the later steps run again on it: the same rows and
        repeats known, none of its new problems in this one)."""
        copy = Problems(self.fields, self.lines or False)
        copy.items, copy.total, copy._seen = list(self.items), self.total, dict(self._seen)
        copy.empty, copy.field, copy.spec = self.empty, self.field, self.spec
        copy.bad, copy.failed, copy.file_rows = dict(self.bad), set(self.failed), self.file_rows
        return copy

    def where(self, column: str) -> str | None:
        """How a problem of the source ``column`` is named while ``spec`` is read (None: ``column 'x'``)."""
        return self.spec.where if self.spec is not None and column == self.spec.source else None

    def mark(self, target: str, rows: np.ndarray) -> None:
        """Rows of ``target`` that a problem already reported makes null (their nulls are no new problem)."""
        self.bad[target] = np.union1d(self.bad.get(target, np.zeros(0, dtype=np.int64)), rows)

    def rows(
        self,
        column: str,
        rows: np.ndarray,
        expected: str,
        received: list[str] | str,
        key: str | None = None,
        where: str | None = None,
    ) -> None:
        """Record problems at 0-based ``rows``; ``received`` is one text for all or one per row (first 20).

        A cell read by two fields (``amount`` and ``amount_usd`` from one column) is reported once per check
        (``key``, by default ``expected``), naming the first field. ``where``: how the message names the
        column (by default the source and the field being computed, :meth:`where`).
        """
        if self.field is not None:
            self.mark(self.field, rows)
        where = where or self.where(column)
        key = expected if key is None else key
        seen = self._seen.get((column, key), np.zeros(0, dtype=np.int64))
        if len(seen):
            keep = ~np.isin(rows, seen)
            rows = rows[keep]
            if not isinstance(received, str):
                received = [r for r, k in zip(received, keep[: len(received)], strict=False) if k]
        self._seen[(column, key)] = np.union1d(seen, rows)
        self.total += len(rows)
        for k, r in enumerate(rows[:KEEP]):
            text = received if isinstance(received, str) else received[k]
            self.items.append(Problem(column, self._file_row(int(r)), expected, text, where))

    def column(self, column: str, expected: str, received: str) -> None:
        if self.field is not None:
            self.failed.add(self.field)
        if (column, expected) in self._seen:
            return
        self._seen[(column, expected)] = np.zeros(0, dtype=np.int64)
        self.total += 1
        self.items.append(Problem(column, None, expected, received, self.where(column)))

    def absorb(
        self,
        error: ValidationError,
        rows: np.ndarray | None = None,
        repeats: Callable[[Problem], bool] = lambda _p: False,
        repeated: int = 0,
    ) -> None:
        """Add validate_events' problems, less the ``repeats`` of problems already recorded (``repeated`` of
        its total); ``rows`` maps the rows of a derived table (outcome events) back to the file's rows.

        A problem of a target field names the file's column(s) it is computed from (``fields``); a problem
        of a whole column said twice in the same words (two fields read from one source column, neither
        castable) is said once."""
        said: set[tuple[str | None, str, str]] = set()
        for p in error.problems:
            if repeats(p):
                continue
            row = p.row
            if row is not None:  # (the derived table's row, the table's, then the file's)
                row = self._file_row(row - 1 if rows is None else int(rows[row - 1]))
            spec = self.fields.get(p.column or "") if rows is None else None
            where = spec.where if spec is not None else None
            if row is None:  # (keyed by the source: two fields of one column that neither casts)
                said_as = (spec.source if spec is not None else p.column, p.expected, p.received)
                if said_as in said:
                    repeated += 1
                    continue
                said.add(said_as)
            self.items.append(Problem(p.column, row, p.expected, p.received, where))
        self.total += error.total - repeated


def closest_column(column: str, present: list[str], free: list[str] | None = None) -> str | None:
    """A plausible file column for the missing ``column``: the same name in another case among ``present``,
    or a close spelling (difflib ratio >= 0.8: 'merchnt' -> 'merchant', never 'amt' -> 'lat') among ``free``
    (the columns no other field reads; all of ``present`` when not given)."""
    same = [c for c in present if c.lower() == column.lower()]
    if same:
        return same[0]
    close = difflib.get_close_matches(column, present if free is None else free, n=1, cutoff=0.8)
    return close[0] if close else None


def values_at(col: pa.Array, rows: np.ndarray) -> list[str]:
    """The shown values at ``rows`` (only rows already known to be bad; card numbers were rejected before):
    a time as ISO 8601 text, as a file writes it, not Python's ``datetime.datetime(2024, 3, 10, 2, 30)``."""
    return [shown_value(_written(col[int(i)].as_py())) for i in rows[:KEEP]]


def _written(value: object) -> object:
    """A value as a file would write it: times as ISO 8601 text (a date or time alone too)."""
    return value.isoformat() if isinstance(value, datetime | date | time) else value


_HIDDEN = "a value of a row holding a card number (not shown)"


def _found_card(received: str) -> bool:
    """Whether a problem says its row holds a card number: the card scan's finding ("a full card number (not
    shown)"), not a quoted value with a long digit run masked (``'ch_3f[card number removed]b6db6'``: every
    run of 13 digits is masked in a message, and about one in 90 hashed ids of 24 hex characters holds one),
    which hid the row's other values at random."""
    return "card number" in received and not received.startswith(("'", '"'))


def missing_lines(missing: list[str]) -> list[str]:
    """The messages of the columns a mapping reads that the file lacks: the first few, and the count."""
    n = len(missing) - SHOWN
    return missing[:SHOWN] + (
        [f"... and {n} more column{'s' if n != 1 else ''} the file does not have"] if n > 0 else []
    )


class MissingColumns(ConfigError, ValidationError):
    """Columns the mapping reads that the file does not have (a mapping mistake: a ConfigError), raised in one
    run with the problems found before the fields could be computed, card numbers among them (a
    ValidationError). The mapping's lines come first: fixing them is what lets the other checks run."""

    def __init__(
        self, missing: list[str], source: str, problems: list[Problem], total: int, note: str | None = None
    ) -> None:
        ValidationError.__init__(self, source, problems, total)
        self.missing = missing
        lines = [*missing_lines(missing), *([note] if note else []), str(self.args[0])]
        Exception.__init__(self, "\n".join(lines))


# (a column misspelled in a `hash`: the column meant is then read by nothing, so it is scanned)
_CARDS_OF_MISSING = (
    "(card numbers found below may be in a column the mapping means to hash or fingerprint but names "
    "otherwise: once the mapping reads it so, it is not scanned)"
)


def raise_problems(
    source: str,
    problems: list[Problem],
    total: int,
    csv_file: bool | RowLines,
    missing: list[str] | None = None,
) -> NoReturn:
    """Raise ValidationError for ``source``, problems in file order (whole columns first, then by row).

    Every step runs even after a card number was found, so no value of a row holding one is shown, and any
    other quoted text is redacted too. ``csv_file``: the lines of a CSV file's rows (True: row n on line
    n + 1). ``missing``: the messages of columns the mapping reads that the file lacks; they come first,
    alone as a ConfigError, or with the problems as a :class:`MissingColumns`.
    """
    lines = csv_file if isinstance(csv_file, RowLines) else RowLines() if csv_file else None
    secret_rows = {p.row for p in problems if p.row is not None and _found_card(p.received)}
    fixed: list[Problem] = []
    for p in sorted(problems, key=lambda p: -1 if p.row is None else p.row):
        received = p.received
        if p.row in secret_rows and "card number" not in received:
            received = _HIDDEN
        received = redact_card_numbers(received)
        where = None if p.where is None else redact_card_numbers(p.where)
        if lines is not None and p.row is not None:
            fixed.append(LineProblem(p.column, p.row, p.expected, received, where, line=lines.line(p.row)))
        else:
            fixed.append(Problem(p.column, p.row, p.expected, received, where))
    if missing:
        if not total:  # a mapping mistake alone
            raise ConfigError("\n".join(missing_lines(missing)))
        note = _CARDS_OF_MISSING if secret_rows else None
        raise MissingColumns(missing, source, fixed, total, note)
    raise ValidationError(source, fixed, total)


_NULL_REQUIRED = "a value (required field)"  # validate_events' texts for the repeats dropped below
_NO_COLUMN = "a required column"
_NO_CARD = "no card numbers"


def card_rows(out: Problems) -> set[int]:
    """1-based rows already reported as holding a card number in a source column: every one, not only those
    the message lists (a total that subtracted only the listed ones counted the others twice)."""
    rows = [seen for (_, key), seen in out._seen.items() if key.startswith(_NO_CARD)]
    return {int(r) + 1 for seen in rows for r in seen}


def repeat_filter(out: Problems) -> Callable[[Problem], bool]:
    """Which of validate_events' problems repeat one already recorded: a null it finds where a cell could not
    be computed, a field left out because it failed as a whole, a card number found in its source column."""
    bad = {name: set((rows + 1).tolist()) for name, rows in out.bad.items()}
    cards = card_rows(out)

    def repeats(p: Problem) -> bool:
        if p.expected == _NULL_REQUIRED and p.column is not None:
            return p.row in bad.get(p.column, ())
        if p.expected == _NO_COLUMN:
            return p.column in out.failed
        if p.expected == _NO_CARD:
            return p.row in cards
        return False

    return repeats


def repeat_count(table_name: str, built: pa.Table, out: Problems) -> int:
    """How many of validate_events' total the repeats are (all of them, not only the ones it lists)."""
    required = {f.name for f in schema_of(table_name) if not f.nullable}
    count = sum(len(rows) for name, rows in out.bad.items() if name in required and name not in out.failed)
    count += sum(1 for name in out.failed if name in required)
    cards = np.array(sorted(card_rows(out)), dtype=np.int64) - 1
    if len(cards):
        for name in built.column_names:
            count += len(np.intersect1d(card_number_rows(built.column(name)), cards))
    return count
