"""The model scores a backtest reads: a ``--scores`` table checked before use, and the warning for a model
replayed on the charges it learned from.

A scores table has one row per charge: ``charge_id`` (string), ``risk_score`` (a number on the decision
service's 0-100 scale, or null) and ``risk_level`` (normal, elevated, highest, or null). Anything else would
be counted silently: a charge listed twice doubles its counts (the join repeats it), a 0-1 probability never
reaches a threshold like ``>= 80``, a level spelled ``'High'`` never equals ``'highest'``.

Example:
    >>> import pyarrow as pa
    >>> check_scores(pa.table({"charge_id": ["ch_1"], "risk_score": [87], "risk_level": ["highest"]}))
    >>> try:
    ...     check_scores(pa.table({"charge_id": ["ch_1"], "risk_score": [1.5], "risk_level": ["Max"]}))
    ... except RuleError as e:
    ...     print(e.detail[:60])
    Column 'risk_level' of the scores table must hold normal, el
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import duckdb
import pyarrow as pa

from payfm.events.workspace import Workspace
from payfm.rules.limits import RuleError
from payfm.training.scores import RISK_LEVELS

COLUMNS = ("charge_id", "risk_score", "risk_level")


def _shown(value: object) -> str:
    """A value of the scores table for a message. A float whose shortest form has more than 12 digits (a
    probability such as 0.9876543210123456) is cut to 8 significant ones, marked "...": 13 digits or more
    read as a card number, which messages mask (:func:`payfm.events.cards.mask_long_numbers`).

    >>> _shown(101.0), _shown(0.9876543210123456), _shown(Decimal("1.5")), _shown("High")
    ('101.0', '0.98765432...', '1.5', "'High'")
    """
    value = float(value) if isinstance(value, Decimal) else value
    text = repr(value)
    if isinstance(value, float) and sum(c.isdigit() for c in text) > 12:
        return f"{value:#.8g}..."  # (at most 12 digits: 0.000 and 8 more, or 8 and an exponent)
    return text if len(text) <= 42 else text[:39] + "..."


def _first(con: duckdb.DuckDBPyConnection, where: str) -> tuple[int, str, object] | None:
    """The first row (1-based), charge_id and value of the scores where ``where`` holds."""
    rows = con.execute(
        f"SELECT __row + 1, charge_id, __value FROM __payfm_check WHERE {where} ORDER BY __row LIMIT 1"
    ).fetchall()
    return (int(rows[0][0]), str(rows[0][1]), rows[0][2]) if rows else None


def check_scores(scores: pa.Table, source: str = "the scores table") -> None:
    """Raise a :class:`RuleError` naming ``source``, the column, a bad value and its row and charge when
    ``scores`` is not one row per charge of 0-100 scores and known levels."""
    missing = [c for c in COLUMNS if c not in scores.column_names]
    if missing:
        raise RuleError(
            f"{source[:1].upper()}{source[1:]} must have columns charge_id, risk_score, risk_level. "
            f"Missing: {', '.join(missing)}."
        )
    ids, score, level = (scores.schema.field(c).type for c in COLUMNS)
    if not (pa.types.is_string(ids) or pa.types.is_large_string(ids)):
        raise RuleError(f"Column 'charge_id' of {source} must hold strings (charge ids). Got type {ids}.")
    numeric = pa.types.is_integer(score) or pa.types.is_floating(score) or pa.types.is_decimal(score)
    if not (numeric or pa.types.is_null(score)):
        example = next((v for v in scores.column("risk_score").to_pylist() if v is not None), None)
        raise RuleError(
            f"Column 'risk_score' of {source} must hold numbers (0-100). Got type {score}"
            + (f", e.g. {_shown(example)}." if example is not None else ".")
        )
    if not (pa.types.is_string(level) or pa.types.is_large_string(level) or pa.types.is_null(level)):
        raise RuleError(
            f"Column 'risk_level' of {source} must hold strings ({', '.join(RISK_LEVELS)}). Got type {level}."
        )
    con = duckdb.connect()
    try:
        base = scores.select(list(COLUMNS)).append_column(
            "__row", pa.array(range(scores.num_rows), pa.int64())
        )
        con.register("__payfm_scores_in", base)
        con.execute(
            "CREATE TEMP VIEW __payfm_check AS SELECT *, CAST(risk_score AS DOUBLE) AS __score, "
            "risk_score AS __value FROM __payfm_scores_in"
        )
        if (bad := _first(con, "charge_id IS NULL")) is not None:
            raise RuleError(f"Column 'charge_id' of {source} must not be null. Got null at row {bad[0]}.")
        dups = con.execute(
            "SELECT charge_id, count(*), min(__row) + 1, count(*) OVER () FROM __payfm_scores_in "
            "GROUP BY charge_id HAVING count(*) > 1 ORDER BY min(__row) LIMIT 1"
        ).fetchall()
        if dups:
            dup = dups[0]
            raise RuleError(
                f"Column 'charge_id' of {source} must name each charge once (a repeated charge would be "
                f"counted once per row). Got {dup[0]!r} {dup[1]} times, first at row {dup[2]} "
                f"({dup[3]:,} charge ids repeated in all)."
            )
        out = _first(con, "NOT isnan(__score) AND (__score < 0 OR __score > 100)")
        if out is not None:
            raise RuleError(
                f"Column 'risk_score' of {source} must hold scores from 0 to 100 (the decision service's "
                f"scale). Got {_shown(out[2])} at row {out[0]} (charge {out[1]!r})."
            )
        [(top, fractions)] = con.execute(
            "SELECT max(__score) FILTER (WHERE NOT isnan(__score)), count_if(__score > 0 AND __score < 1) "
            "FROM __payfm_check"
        ).fetchall()
        if top is not None and top <= 1 and fractions:
            frac = _first(con, "__score > 0 AND __score < 1")
            assert frac is not None
            raise RuleError(
                f"Column 'risk_score' of {source} looks like probabilities (0 to 1; the largest is "
                f"{_shown(top)}): scores are on the decision service's 0-100 scale "
                f"(payfm.training.scores.risk_scores). Got {_shown(frac[2])} at row {frac[0]} "
                f"(charge {frac[1]!r})."
            )
        known = ", ".join(f"'{v}'" for v in RISK_LEVELS)
        con.execute(
            "CREATE OR REPLACE TEMP VIEW __payfm_check AS "
            "SELECT *, risk_level AS __value FROM __payfm_scores_in"
        )
        if (bad := _first(con, f"risk_level IS NOT NULL AND risk_level NOT IN ({known})")) is not None:
            raise RuleError(
                f"Column 'risk_level' of {source} must hold {', '.join(RISK_LEVELS[:-1])} or "
                f"{RISK_LEVELS[-1]} (or null). Got {_shown(bad[2])} at row {bad[0]} (charge {bad[1]!r})."
            )
    finally:
        con.close()


def in_sample_warning(ws: Workspace, ref: str, start: datetime | None, end: datetime | None) -> str | None:
    """A warning when the window [start, end) overlaps the training or validation period of model ``ref``
    (its registry entry's ``data_window``: :func:`payfm.evaluation.pipeline.seen_periods`, as ``payfm
    evaluate`` reads it): the model has seen those charges' labels, so a rule on its score looks better there
    than it will on new charges. A window in a gap (between validation and the test period) holds none. An
    entry that records neither period whole counts everything from ``train_start`` to ``test_start``.

    None when the window is outside those periods, or the entry records no window.
    """
    from payfm.evaluation.pipeline import seen_periods
    from payfm.registry.store import Registry

    mv = Registry(ws).get(ref)
    window = mv.entry.get("data_window") or {}
    test_start = window.get("test_start")
    if not test_start:
        return None
    learned_to = datetime.fromisoformat(test_start)
    periods = seen_periods(mv.ref, mv.entry)
    if not periods:  # (entries registered from Python may record only the test's start)
        first = datetime.fromisoformat(window["train_start"]) if window.get("train_start") else None
        periods = [("training and validation", first or datetime.min.replace(tzinfo=UTC), learned_to)]
    seen = [
        (what, a, b) for what, a, b in periods if (start is None or start < b) and (end is None or end > a)
    ]
    if not seen:
        return None

    def span(a: datetime, b: datetime) -> str:
        return f"until {b.isoformat()}" if a.year == 1 else f"{a.isoformat()} to {b.isoformat()}"

    names = " and ".join(what for what, _, _ in seen)
    spans = ", ".join(span(a, b) for _, a, b in seen)
    first_day = learned_to.date() + timedelta(days=0 if learned_to.time() == time() else 1)
    return (
        f"the window overlaps {mv.ref}'s {names} period{'s' if len(seen) > 1 else ''} ({spans}): the model "
        "learned those charges' labels, so rules on its score are in-sample there and look better than they "
        f"will on new charges. Give --from {first_day.isoformat()} or later (its held-out test period) for "
        "out-of-sample figures."
    )
