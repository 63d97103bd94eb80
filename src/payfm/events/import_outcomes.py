"""Outcome events from labels, and the check that outcome events follow their charge.

A label column of a charges file becomes outcome events (disputes or early fraud warnings) for the rows whose
value is one of the label's ``when``, at a delay after the charge or at a time the file gives; an outcome
table imported on its own (refunds, disputes, early fraud warnings) must point at charges of the workspace.
Either way an outcome is strictly later than its charge (docs/features.md), and problems are reported by the
file's rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.events.cards import shown_text
from payfm.events.import_convert import NUMBER, as_text, keyed_hash
from payfm.events.import_problems import KEEP, Problems, values_at
from payfm.events.import_times import to_times
from payfm.events.mapping import LabelSpec, Mapping, RowFilter
from payfm.events.schema import MOVED_NO_MONEY, TIMESTAMP
from payfm.events.validate import shown_value
from payfm.events.workspace import Workspace

_OUTCOME_PREFIX = {"disputes": "dp_", "early_fraud_warnings": "efw_"}
_NO_MONEY = pa.array(sorted(MOVED_NO_MONEY))
OUTCOME_ID = {"disputes": "dispute_id", "early_fraud_warnings": "efw_id"}  # id column per table

_TRUE_WORDS = ("true", "t", "yes", "y", "1")
_FALSE_WORDS = ("false", "f", "no", "n", "0")


def matching_rows(label: LabelSpec | RowFilter, col: pa.Array, out: Problems) -> np.ndarray:
    """0-based rows whose label (or ``keep_rows``) value is one of ``when``.

    Numbers compare as numbers, also in text (CSV ``1``, ``1.0`` and `` 1 `` all equal ``when: 1``), and text
    case-insensitively. When ``when`` holds only numbers or booleans the label is numeric, so a value that is
    neither a number nor a boolean word (``abc``, ``nan``) is reported by row rather than read as "no
    outcome"; with a text in ``when`` other values are categories of their own and make no event. Nulls make
    no event.
    """
    nums = [float(w) for w in label.when if isinstance(w, int | float) and not isinstance(w, bool)]
    bools = [w for w in label.when if isinstance(w, bool)]
    texts = [w.strip().lower() for w in label.when if isinstance(w, str)]
    if pa.types.is_boolean(col.type):
        # (as a text column's words are: true is 1 and the true words, false 0 and the false words)
        wanted = bools + [w in _TRUE_WORDS for w in texts if w in _TRUE_WORDS + _FALSE_WORDS]
        wanted += [n == 1 for n in nums if n in (0, 1)]
        mask = pc.is_in(col, value_set=pa.array(wanted, type=pa.bool_()))
        return np.flatnonzero(pc.fill_null(mask, False).to_numpy(False))
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_decimal(col.type):
        numbers = pc.cast(col, pa.float64())
        texts_as_numbers = []
        for w in texts:
            try:
                texts_as_numbers.append(float(w))
            except ValueError:
                continue
        mask = pc.is_in(numbers, value_set=pa.array(nums + texts_as_numbers + [float(b) for b in bools]))
        if not texts:  # a numeric label: NaN and infinities are no yes or no (as a CSV's `nan` is not)
            odd = np.flatnonzero(pc.fill_null(pc.invert(pc.is_finite(numbers)), False).to_numpy(False))
            if len(odd):
                _unreadable(label, odd, col, out)
        return np.flatnonzero(pc.fill_null(mask, False).to_numpy(False))
    text = pc.utf8_lower(pc.utf8_trim_whitespace(as_text(col, out, label.column)))
    is_number = pc.fill_null(pc.match_substring_regex(text, NUMBER), False)
    number = pc.cast(pc.if_else(is_number, text, pa.scalar(None, pa.string())), pa.float64())
    wanted_numbers = nums + [1.0 for b in bools if b] + [0.0 for b in bools if not b]
    mask = pc.or_(
        pc.fill_null(pc.is_in(text, value_set=pa.array(texts, type=pa.string())), False),
        pc.fill_null(pc.is_in(number, value_set=pa.array(wanted_numbers, type=pa.float64())), False),
    )
    true_words = pc.is_in(text, value_set=pa.array(_TRUE_WORDS))
    false_words = pc.is_in(text, value_set=pa.array(_FALSE_WORDS))
    # A boolean word is the number it stands for (true 1, false 0), as a Parquet boolean is: `when: 1`
    # matches `true` in a CSV file as it matches the boolean true.
    if True in bools or 1.0 in nums:
        mask = pc.or_(mask, true_words)
    if False in bools or 0.0 in nums:
        mask = pc.or_(mask, false_words)
    if not texts:
        # A numeric or boolean label: every value must be one the mapping can read as yes or no.
        known = pc.or_(pc.or_(mask, is_number if nums else pa.scalar(False)), pc.or_(true_words, false_words))
        if not nums:  # booleans only: numbers other than 1 and 0 mean nothing
            known = pc.or_(mask, pc.or_(true_words, false_words))
        bad = np.flatnonzero(pc.and_(pc.is_valid(text), pc.invert(known)).to_numpy(False))
        if len(bad):
            _unreadable(label, bad, col, out)
    return np.flatnonzero(pc.fill_null(mask, False).to_numpy(False))


def _unreadable(label: LabelSpec | RowFilter, bad: np.ndarray, col: pa.Array, out: Problems) -> None:
    """The rows ``bad`` of a numeric or boolean label (or filter) that hold neither yes nor no."""
    yes = ", ".join(_as_written(w) for w in label.when)
    means = (
        "imported; other values: left out"
        if isinstance(label, RowFilter)
        else "an outcome; other values: none"
    )
    out.rows(
        label.column,
        bad,
        f"a number, a boolean or an empty cell for '{label.path}' ({yes}: {means})",
        values_at(col, bad),
    )


def keep_rows(mapping: Mapping, table: pa.Table, out: Problems) -> tuple[pa.Table, list[str]]:
    """The rows ``keep_rows`` imports (every filter matching, in turn: a filter reads only the rows the ones
    before it kept), and a warning for each ``when`` value that matched none of the rows it read (a
    misspelled record type imports nothing, silently: it names the values the column holds). The other rows
    were scanned for card numbers and are not read further. Problems of the rows kept go on naming the file's
    rows."""
    warnings = []
    for keep in mapping.keep_rows:
        col = table.column(keep.column).combine_chunks()
        kept = matching_rows(keep, col, out)
        if len(keep.when) > 1 or not len(kept):
            quiet = Problems()  # (each value alone: its problems are the whole filter's, said once above)
            unmatched = [w for w in keep.when if not len(matching_rows(replace(keep, when=(w,)), col, quiet))]
            if unmatched:
                warnings.append(_matched_none(keep, unmatched, col))
        out.keep(kept)
        table = table.take(pa.array(kept, type=pa.int64()))
    return table, warnings


def label_warnings(mapping: Mapping, table: pa.Table) -> list[str]:
    """A warning for each label whose ``when`` matched none of the rows it read (those ``keep_rows`` kept),
    naming the values its column holds: a label value the export writes otherwise (``Y`` for ``1``) makes
    no outcome at all, silently, and the model would learn from a file without fraud. A file of no rows
    warns of nothing."""
    warnings = []
    for label in mapping.labels:
        col = table.column(label.column).combine_chunks()
        if len(col) and not len(matching_rows(label, col, Problems())):  # (its problems: said by the import)
            warnings.append(_matched_none(label, label.when, col) + ": it made no outcome")
    return warnings


def _matched_none(spec: LabelSpec | RowFilter, unmatched: Sequence[object], col: pa.Array) -> str:
    """The warning of ``when`` values of a label or filter that matched none of the rows of ``col``."""
    held = pc.unique(pc.drop_null(col)).to_pylist()
    values = ", ".join(shown_value(v) for v in sorted(held, key=str)[:KEEP]) or "only empty cells"
    more = f" and {len(held) - KEEP} more" if len(held) > KEEP else ""
    said = ", ".join(_as_written(w) for w in unmatched)
    return (
        f"{spec.path}.when: {said} matched none of the {len(col):,} rows it read; column "
        f"'{shown_text(spec.column)}' holds {values}{more}"
    )


def all_orphans(rows: int) -> str:
    """The warning of ``--skip-orphans`` leaving out every row of a file."""
    return (
        f"--skip-orphans left out all {rows:,} rows: the workspace holds none of their charges (import the "
        "charges first, with the same charge_id mapping)"
    )


def _early_outcomes(
    created: pa.Array | pa.ChunkedArray,
    charge_created: pa.Array | pa.ChunkedArray,
    rows: np.ndarray,
    column: str,
    what: str,
    out: Problems,
) -> np.ndarray:
    """Positions of outcomes at or before their charge's ``created``, reported at the file's ``rows``.

    An outcome is strictly later than its charge: features count it from its own time on, so one at the
    charge's instant (or before) would be counted by that charge's features and earlier ones (a leak), and
    the online engine, which sees it only after the charge, would disagree.
    """
    early = np.flatnonzero(pc.fill_null(pc.less_equal(created, charge_created), False).to_numpy(False))
    if len(early):
        got = [
            f"a time at or before the charge ({_iso(created[int(i)])}; "
            f"the charge: {_iso(charge_created[int(i)])})"
            for i in early[:KEEP]
        ]
        out.rows(column, rows[early], f"{what} later than the charge's time", got)
    return early


def _iso(value: pa.Scalar) -> str:
    return str(value.as_py().isoformat())


def follow_charges(
    ws: Workspace,
    mapping: Mapping,
    events: pa.Table,
    out: Problems,
    held: np.ndarray | None = None,
    skip_orphans: bool = False,
) -> np.ndarray:
    """Outcome events imported as a table (refunds, disputes, early fraud warnings) must point at a charge of
    the workspace and be later than it (docs/features.md: an outcome is always later than its own charge).
    ``held``: rows the workspace holds already (``--skip-existing``: not counted again in a charge's refunds).
    With ``skip_orphans``, a row whose charge the workspace does not hold is no problem: the rows to leave
    out are returned (a mask; none otherwise)."""
    orphans = np.zeros(events.num_rows, dtype=bool)
    if "charge_id" not in events.column_names or not pa.types.is_string(events.column("charge_id").type):
        return orphans
    ids = events.column("charge_id").combine_chunks()
    stored = ws.read("charges", columns=["charge_id", "created", "outcome", "currency", "amount"])
    stored = stored.filter(pc.is_in(stored.column("charge_id"), value_set=ids))
    index = pc.index_in(ids, value_set=stored.column("charge_id").combine_chunks())
    unknown = np.flatnonzero(pc.and_(pc.is_valid(ids), pc.is_null(index)).to_numpy(False))
    if len(unknown) and skip_orphans:
        orphans[unknown] = True
    elif len(unknown):
        spec = mapping.fields["charge_id"]
        out.rows(
            spec.source,
            unknown,
            "the charge_id of a charge in the workspace (import the charges first, or give --skip-orphans)",
            values_at(ids, unknown),
            where=spec.where,
        )
    _moved_money(ws, mapping, events, stored, index, out, held)
    created = events.column("created") if "created" in events.column_names else None
    if created is None or created.type != TIMESTAMP:
        return orphans
    charge_created = pc.take(stored.column("created"), index)
    rows = np.arange(events.num_rows)
    out.spec = mapping.fields["created"]  # (problems name its source column and the field)
    _early_outcomes(created, charge_created, rows, out.spec.source, "a time", out)
    out.spec = None
    return orphans


def _moved_money(
    ws: Workspace,
    mapping: Mapping,
    events: pa.Table,
    stored: pa.Table,
    index: pa.Array,
    out: Problems,
    held: np.ndarray | None = None,
) -> None:
    """The checks the decision service makes of an outcome reported live, on a file of them: its charge
    moved money (not blocked or declined by its issuer); a refund or dispute is in its charge's currency
    and for at most its amount; a charge's refunds, those in the workspace and the file's in file order, add
    up to at most its amount (Stripe's rules; docs/serving.md)."""
    known = np.flatnonzero(pc.is_valid(index).to_numpy(False))
    if not len(known):
        return
    at = pa.array(known, pa.int64())
    taken = index.take(at)
    outcome = stored.column("outcome").take(taken)
    spec = mapping.fields["charge_id"]
    ids = events.column("charge_id").take(at)
    idle = _where(pc.is_in(outcome, value_set=_NO_MONEY))
    if len(idle):
        out.rows(
            spec.source,
            known[idle],
            "the charge_id of a charge that moved money (authorized): a refund, dispute or early fraud "
            "warning follows a successful charge only",
            [f"'{shown_text(ids[k].as_py())}', a charge with outcome '{outcome[k]}'" for k in idle[:KEEP]],
            where=spec.where,
        )
    if mapping.table not in ("refunds", "disputes") or not {"currency", "amount"} <= set(events.column_names):
        return
    what = "refund" if mapping.table == "refunds" else "dispute"
    currency, amount = events.column("currency").take(at), events.column("amount").take(at)
    charge_currency = stored.column("currency").take(taken)
    charge_amount = stored.column("amount").take(taken)
    other = _where(pc.not_equal(currency, charge_currency))
    if len(other):
        out.spec = mapping.fields["currency"]
        out.rows(
            out.spec.source,
            known[other],
            f"the currency of its charge (a {what} is in its charge's currency)",
            [f"'{currency[k]}', its charge's '{charge_currency[k]}'" for k in other[:KEEP]],
            where=out.spec.where,
        )
    out.spec = mapping.fields["amount"]
    same = np.ones(len(known), dtype=bool)
    same[other] = False
    more = np.flatnonzero(same & pc.fill_null(pc.greater(amount, charge_amount), False).to_numpy(False))
    if len(more):
        out.rows(
            out.spec.source,
            known[more],
            f"at most its charge's amount (a {what} is for at most what was charged)",
            [
                f"{amount[k]}, its charge's {charge_amount[k]} (minor units of {currency[k]})"
                for k in more[:KEEP]
            ],
            where=out.spec.where,
        )
    if mapping.table == "refunds":
        # each refund with those of its charge before it: the workspace's, then the file's rows before it
        rows = np.flatnonzero(same & pc.is_valid(amount).to_numpy(False))
        rows = rows[~np.isin(rows, more)]
        if held is not None:  # stored already: in the workspace's sums, not counted twice
            rows = rows[~held[known[rows]]]
        charge = taken.to_numpy(False)[rows]
        # (a negative amount, refused by the schema's check, must not make room for the next refund)
        cents = np.maximum(pc.fill_null(amount, 0).to_numpy(False)[rows].astype(np.int64), 0)
        order = np.argsort(charge, kind="stable")
        running = np.cumsum(cents[order])
        starts = np.flatnonzero(np.r_[True, charge[order][1:] != charge[order][:-1]])
        running -= np.repeat(np.r_[0, running[starts[1:] - 1]], np.diff(np.r_[starts, len(order)]))
        before = np.empty(len(rows), dtype=np.int64)
        before[order] = running - cents[order]
        refunded_ids = ids.take(pa.array(rows, pa.int64())).to_pylist()
        # (a row stored already, imported again without --skip-existing, is a repeated id: its stored copy is
        # not also counted before it)
        again = set(events.column("refund_id").take(at).take(pa.array(rows, pa.int64())).to_pylist())
        stored_sums = _refunded(ws, set(refunded_ids), again)
        before += np.array([stored_sums.get(c, 0) for c in refunded_ids], dtype=np.int64)
        cap = charge_amount.to_numpy(False)[rows].astype(np.int64)
        over = np.flatnonzero(before + cents > cap)
        if len(over):
            out.rows(
                out.spec.source,
                known[rows[over]],
                "at most what is left to refund of its charge (its refunds in the workspace and those of the "
                "file's rows before it add up to at most its amount)",
                [f"{cents[k]}, of a charge of {cap[k]} refunded {before[k]} before it" for k in over[:KEEP]],
                where=out.spec.where,
            )
    out.spec = None


def _where(mask: pa.Array) -> np.ndarray:
    """The positions where ``mask`` is true (null counts false)."""
    return np.flatnonzero(pc.fill_null(mask, False).to_numpy(False))


def _refunded(ws: Workspace, charge_ids: set[str], besides: set[str]) -> dict[str, int]:
    """The amount the workspace's refunds of each of ``charge_ids`` add up to, less those whose id is one of
    ``besides`` (the file's own rows)."""
    refunds = ws.read("refunds", columns=["refund_id", "charge_id", "amount"])
    mine = pc.is_in(refunds.column("charge_id"), value_set=pa.array(sorted(charge_ids), pa.string()))
    others = pc.invert(
        pc.is_in(refunds.column("refund_id"), value_set=pa.array(sorted(besides), pa.string()))
    )
    refunds = refunds.filter(pc.and_(mine, others))
    if not refunds.num_rows:
        return {}
    sums = refunds.group_by("charge_id").aggregate([("amount", "sum")])
    return dict(zip(sums.column("charge_id").to_pylist(), sums.column("amount_sum").to_pylist(), strict=True))


@dataclass
class LabelCounts:
    """What an import's labels made no event of, or made late, per label (its key path): rows on charges
    that moved no money; events dated after the file's last charge (``last_charge``)."""

    without_money: Counter[str] = field(default_factory=Counter)
    after_file: Counter[str] = field(default_factory=Counter)
    last_charge: datetime | None = None
    late_ids: dict[str, list[pa.Array]] = field(default_factory=dict)  # label -> ids of its late events

    def keep_written(self, outcomes: dict[str, pa.Table]) -> None:
        """Count as late only the events written (``outcomes``: the tables an import writes, by name):
        ``--skip-existing`` leaves out those the workspace holds, which move nothing."""
        written = [t.column(OUTCOME_ID[n]).combine_chunks().cast(pa.string()) for n, t in outcomes.items()]
        ids = pa.concat_arrays([pa.array([], pa.string()), *written])
        for label, parts in self.late_ids.items():
            kept = sum(int(pc.sum(pc.is_in(part, value_set=ids)).as_py() or 0) for part in parts)
            if kept:
                self.after_file[label] = kept
            else:
                del self.after_file[label]
        if not self.after_file:
            self.last_charge = None


def outcome_events(
    mapping: Mapping,
    table: pa.Table,
    charges: pa.Table,
    secret: bytes,
    out: Problems,
    counts: LabelCounts,
) -> dict[str, tuple[pa.Table, np.ndarray]]:
    """Outcome events per table, with the source rows they came from (to report problems by source row).
    ``counts`` takes, per label, how many of its rows were on charges that moved no money (no event), and
    how many of its events are dated after the file's last charge.

    ``charges`` is the validated table, or when it has problems the computed one: then the labels and outcome
    times are still checked, but no events are made (their problems would only repeat the charges').
    """
    valid = "created" in charges.column_names and not out.total
    last = pc.max(charges.column("created")) if valid else None  # the file's last charge
    parts: dict[str, list[tuple[pa.Table, np.ndarray]]] = {}
    for k, label in enumerate(mapping.labels):
        rows = matching_rows(label, table.column(label.column).chunk(0), out)
        if "outcome" in charges.column_names and len(rows):
            # A charge that moved no money (declined, blocked) has no dispute or early fraud warning: its
            # label makes none (counted for the summary), as the decision service refuses one reported live.
            idle = pc.is_in(charges.column("outcome").take(pa.array(rows)), value_set=_NO_MONEY)
            unmoved = pc.fill_null(idle, False).to_numpy(zero_copy_only=False)
            if unmoved.any():
                counts.without_money[label.path] += int(unmoved.sum())
                rows = rows[~unmoved]
        take = pa.array(rows, type=pa.int64())
        picked = charges.take(take)
        if label.delay is not None:
            if not valid:
                continue
            created = pc.add(picked.column("created"), pa.scalar(label.delay, type=pa.duration("us")))
        else:
            assert label.time is not None
            # (problems name its source columns; the rows it could not read are remembered as a field's)
            out.field, out.spec = f"{label.path}.time", label.time
            times = to_times(label.time, _only_rows(table, label.time.read_columns, rows), mapping, out)
            out.field = None
            if times is None:
                out.spec = None
                continue
            created = pc.take(times, take)
            late = np.ones(len(rows), dtype=bool)
            missing = pc.is_null(created).to_numpy(False)
            # A matching row without a time; one whose time was refused is reported once, as that.
            said = np.isin(rows, out.bad.get(f"{label.path}.time", np.zeros(0, dtype=np.int64)))
            if (missing & ~said).any():
                out.rows(
                    label.time.source,
                    rows[missing & ~said],
                    f"an outcome time for '{label.path}'",
                    "no value (an empty cell or a null)",
                )
            if "created" in picked.column_names:
                early = _early_outcomes(
                    created,
                    picked.column("created"),
                    rows,
                    label.time.source,
                    f"an outcome time for '{label.path}'",
                    out,
                )
                late[early] = False
            out.spec = None
            if not valid or missing.any() or not late.all():
                continue
        ids = keyed_hash(
            [picked.column("charge_id").combine_chunks(), pa.repeat(pa.scalar(str(k)), len(rows))], secret
        )
        data = {
            OUTCOME_ID[label.table]: pc.binary_join_element_wise(_OUTCOME_PREFIX[label.table], ids, ""),
            "charge_id": picked.column("charge_id"),
            "created": created,
        }
        if label.table == "disputes":
            data |= {
                "reason": pa.repeat(pa.scalar(label.category), len(rows)),
                "amount": picked.column("amount"),
                "currency": picked.column("currency"),
            }
        else:
            data["fraud_type"] = pa.repeat(pa.scalar(label.category), len(rows))
        if label.delay is not None and last is not None:  # a `delay` past the export's end moves "now" too
            late = pc.greater(created, last)
            later = int(pc.sum(pc.cast(late, pa.int64())).as_py() or 0)
            if later:
                counts.after_file[label.path] += later
                counts.last_charge = last.as_py()
                counts.late_ids.setdefault(label.path, []).append(
                    pc.filter(data[OUTCOME_ID[label.table]], late).cast(pa.string())
                )
        parts.setdefault(label.table, []).append((pa.table(data), rows))
    return {
        name: (pa.concat_tables([t for t, _ in items]), np.concatenate([r for _, r in items]))
        for name, items in parts.items()
    }


def _only_rows(table: pa.Table, columns: tuple[str, ...], rows: np.ndarray) -> pa.Table:
    """``table`` with its ``columns`` null but at ``rows``: a label's outcome time is read (and checked) only
    where the label makes an outcome, as an export writes it only there (``N/A`` or ``0000-00-00`` on the
    other rows, which are no problem)."""
    keep = np.zeros(table.num_rows, dtype=bool)
    keep[rows] = True
    mask = pa.array(keep)
    for name in dict.fromkeys(columns):
        if name in table.column_names:
            at = table.schema.get_field_index(name)
            col = table.column(name)
            table = table.set_column(at, name, pc.if_else(mask, col, pa.scalar(None, col.type)))
    return table


def _as_written(value: object) -> str:
    """A label's ``when`` value as the mapping's YAML writes it (``true``, not Python's ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)
