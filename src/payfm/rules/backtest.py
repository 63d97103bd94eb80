"""Backtest a ruleset (or one candidate rule) on history: what each rule matches and what changes.

The charges of a window are joined with their backfilled features (only those the rules read), the model's
scores if given, and their outcomes: *fraud* (a fraudulent dispute, an early fraud warning or a manual review
closed as ``refunded_as_fraud``), else *refunded* (a refund), else *legit*. Every rule compiles to one SQL
condition (:mod:`payfm.rules.compiler`); the whole backtest is a handful of DuckDB queries over the table,
with no per-row Python.

Dollar amounts are ``amount_usd / 100``. The baseline is the active ruleset (or none: everything authorized).

Example (see docs/rules.md)::

    report = backtest(ws, compile_text(ws, text), baseline=load_active(ws))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import pyarrow as pa

from payfm.events.workspace import Workspace
from payfm.features.definitions import FeatureSet
from payfm.rules import ast
from payfm.rules.catalog import CHARGE_STRING_FIELDS, SCORE_ATTRIBUTES
from payfm.rules.compiler import Ruleset, list_table, quote_ident, sql_literal
from payfm.rules.limits import RuleError
from payfm.training.labels import FRAUD_OUTCOMES_SQL

LABELS = ("fraud", "refunded", "legit")
BASE = "__payfm_bt"
FLAGS = "__payfm_bt_m"
_NAN = "CAST('nan' AS DOUBLE)"


@dataclass(frozen=True)
class Tally:
    count: int = 0
    usd: float = 0.0


@dataclass(frozen=True)
class RuleStats:
    """One rule's matches on its own (``matched``) and the charges it decided (``decided``)."""

    name: str
    action: str
    line: int
    matched: int
    decided: int
    outcomes: dict[str, Tally]  # label -> matched charges with that outcome


@dataclass(frozen=True)
class Change:
    """The new ruleset against the baseline. "Good" charges are those not fraudulent."""

    changed: int
    fraud_newly_blocked: Tally
    fraud_no_longer_blocked: Tally
    good_newly_blocked: Tally
    good_no_longer_blocked: Tally
    allow_overrides: dict[str, Tally]  # label -> charges an allow rule let through that another rule caught
    transitions: list[tuple[str, str, str, Tally]]  # (old action, new action, label, tally)


@dataclass(frozen=True)
class BacktestReport:
    charges: int
    outcomes: dict[str, Tally]
    rules: list[RuleStats]
    mix: dict[str, dict[str, Tally]]  # action ("authorize" for none) -> label -> tally
    change: Change
    decisions: pa.Table | None = field(default=None, repr=False)  # charge_id, rule, action when kept


def _attr_sql(name: str, features: set[str]) -> str:
    if name in CHARGE_STRING_FIELDS:
        return f"c.{quote_ident(name)}"
    if name == "amount":
        return "CAST(c.amount AS DOUBLE)"
    if name == "amount_usd":
        return "CAST(c.amount_usd AS DOUBLE) / CAST(100 AS DOUBLE)"
    if name == "risk_score":
        return f"nullif(CAST(s.risk_score AS DOUBLE), {_NAN})"
    if name == "risk_level":
        return "CAST(s.risk_level AS VARCHAR)"
    if name in features:
        return f"nullif(CAST(f.{quote_ident(name)} AS DOUBLE), {_NAN})"
    raise RuleError(f"Unknown attribute ':{name}:'.")  # the type checker catches this first


def _ts(value: datetime) -> str:
    if value.tzinfo is None:
        raise RuleError(f"Backtest window bounds must be timezone-aware (UTC). Got {value.isoformat()}.")
    return f"CAST('{value.isoformat()}' AS TIMESTAMPTZ)"


def prepare(
    con: duckdb.DuckDBPyConnection,
    ws: Workspace,
    attributes: set[str],
    fset: FeatureSet,
    *,
    scores: pa.Table | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    needs: str = "",
) -> None:
    """Create the backtest table: charge_id, label, usd and one column per attribute in ``attributes``."""
    features = (attributes & set(fset.names)) - set(CHARGE_STRING_FIELDS) - {"amount", "amount_usd"}
    features -= set(SCORE_ATTRIBUTES)
    joins = ""
    if features:
        from payfm.features.training_set import load_backfill

        feats = load_backfill(ws, fset, columns=["charge_id", *sorted(features)])
        con.register("__payfm_features", feats)
        joins += " LEFT JOIN __payfm_features f ON f.charge_id = c.charge_id"
    if attributes & set(SCORE_ATTRIBUTES):
        if scores is None:
            raise RuleError(
                f"{needs or 'The rules'} read :risk_score: or :risk_level:, but no scores were given. "
                "Give --model NAME (a registered model scores the window) or --scores FILE (Parquet with "
                "columns charge_id, risk_score, risk_level)."
            )
        missing = {"charge_id", "risk_score", "risk_level"} - set(scores.column_names)
        if missing:
            raise RuleError(
                f"The scores table must have columns charge_id, risk_score, risk_level. "
                f"Missing: {', '.join(sorted(missing))}."
            )
        con.register("__payfm_scores", scores.select(["charge_id", "risk_score", "risk_level"]))
        joins += " LEFT JOIN __payfm_scores s ON s.charge_id = c.charge_id"
    where = []
    if start is not None:
        where.append(f"c.created >= {_ts(start)}")
    if end is not None:
        where.append(f"c.created < {_ts(end)}")
    cols = "".join(f", {_attr_sql(a, features)} AS {quote_ident(a)}" for a in sorted(attributes))
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {BASE} AS
        WITH fraud AS (SELECT DISTINCT charge_id FROM ({FRAUD_OUTCOMES_SQL})),
        refunded AS (SELECT DISTINCT charge_id FROM refunds)
        SELECT c.charge_id,
               CASE WHEN c.charge_id IN (SELECT charge_id FROM fraud) THEN 'fraud'
                    WHEN c.charge_id IN (SELECT charge_id FROM refunded) THEN 'refunded'
                    ELSE 'legit' END AS label,
               CAST(c.amount_usd AS DOUBLE) / 100 AS usd{cols}
        FROM charges c{joins}
        {"WHERE " + " AND ".join(where) if where else ""}
        """
    )


def _register_lists(con: duckdb.DuckDBPyConnection, *rulesets: Ruleset) -> None:
    for rs in rulesets:
        for name, values in rs.lists.items():
            con.register(
                list_table(name).strip('"'), pa.table({"value": pa.array(sorted(values), pa.string())})
            )


def _tally(row: tuple[object, ...], i: int) -> Tally:
    return Tally(int(row[i] or 0), float(row[i + 1] or 0.0))  # type: ignore[call-overload, arg-type]


def evaluate_table(
    con: duckdb.DuckDBPyConnection,
    ruleset: Ruleset,
    baseline: Ruleset | None = None,
    *,
    table: str = BASE,
    keep_decisions: bool = False,
) -> BacktestReport:
    """The backtest over ``table`` (columns charge_id, label, usd and the attributes both rulesets read)."""
    base = baseline or Ruleset([])
    _register_lists(con, ruleset, base)
    new_idx, new_act = ruleset.decision_sql(lambda i: f"n{i}")
    old_idx, old_act = base.decision_sql(lambda i: f"o{i}")
    conds = "".join(f", {c} AS n{i}" for i, c in enumerate(ruleset.sql_conditions))
    conds += "".join(f", {c} AS o{i}" for i, c in enumerate(base.sql_conditions))
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {FLAGS} AS
        SELECT *, {new_idx} AS new_rule, {new_act} AS new_action, {old_act} AS old_action
        FROM (SELECT charge_id, label, usd{conds} FROM {table})"""
    )
    del old_idx
    # One pass grouped by outcome; per rule: matched, matched dollars, decided (no FILTER: faster in DuckDB).
    aggs = ["count(*)", "sum(usd)"]
    for i in range(len(ruleset.rules)):
        aggs += [f"count_if(n{i})", f"sum(CASE WHEN n{i} THEN usd ELSE 0 END)", f"count_if(new_rule = {i})"]
    by_label = {
        str(row[0]): row[1:]
        for row in con.execute(f"SELECT label, {', '.join(aggs)} FROM {FLAGS} GROUP BY label").fetchall()
    }
    empty: tuple[object, ...] = (0, 0.0) * (1 + 2 * len(ruleset.rules))
    rows = {lab: by_label.get(lab, empty) for lab in LABELS}
    outcomes = {lab: _tally(rows[lab], 0) for lab in LABELS}
    total = sum(t.count for t in outcomes.values())
    stats = []
    for i, r in enumerate(ruleset.rules):
        outs = {lab: _tally(rows[lab], 2 + 3 * i) for lab in LABELS}
        decided = sum(int(rows[lab][4 + 3 * i] or 0) for lab in LABELS)
        stats.append(RuleStats(r.name, r.action, r.line, sum(t.count for t in outs.values()), decided, outs))
    mix: dict[str, dict[str, Tally]] = {}
    for action, lab, n, usd in con.execute(
        f"SELECT coalesce(new_action, 'authorize'), label, count(*), sum(usd) FROM {FLAGS} GROUP BY ALL"
    ).fetchall():
        mix.setdefault(action, {})[lab] = Tally(int(n), float(usd or 0.0))
    return BacktestReport(
        total, outcomes, stats, mix, _change(con, ruleset), _decisions(con, ruleset, keep_decisions)
    )


def _change(con: duckdb.DuckDBPyConnection, ruleset: Ruleset) -> Change:
    transitions = [
        (old, new, lab, Tally(int(n), float(usd or 0.0)))
        for old, new, lab, n, usd in con.execute(
            f"""SELECT coalesce(old_action, 'authorize'), coalesce(new_action, 'authorize'), label, count(*),
                       sum(usd)
                FROM {FLAGS} WHERE old_action IS DISTINCT FROM new_action GROUP BY ALL ORDER BY ALL"""
        ).fetchall()
    ]

    def total(pred: object) -> Tally:
        picked = [t for o, n, lab, t in transitions if pred(o, n, lab)]  # type: ignore[operator]
        return Tally(sum(t.count for t in picked), sum((t.usd for t in picked), 0.0))

    others = [f"n{i}" for i, r in enumerate(ruleset.rules) if r.action != "allow"]
    overrides: dict[str, Tally] = {}
    if others and any(r.action == "allow" for r in ruleset.rules):
        for lab, n, usd in con.execute(
            f"SELECT label, count(*), sum(usd) FROM {FLAGS} "
            f"WHERE new_action = 'allow' AND ({' OR '.join(others)}) GROUP BY ALL"
        ).fetchall():
            overrides[lab] = Tally(int(n), float(usd or 0.0))
    return Change(
        changed=sum(t.count for *_, t in transitions),
        fraud_newly_blocked=total(lambda o, n, lab: lab == "fraud" and n == "block"),
        fraud_no_longer_blocked=total(lambda o, n, lab: lab == "fraud" and o == "block"),
        good_newly_blocked=total(lambda o, n, lab: lab != "fraud" and n == "block"),
        good_no_longer_blocked=total(lambda o, n, lab: lab != "fraud" and o == "block"),
        allow_overrides=overrides,
        transitions=transitions,
    )


def _decisions(con: duckdb.DuckDBPyConnection, ruleset: Ruleset, keep: bool) -> pa.Table | None:
    if not keep:
        return None
    if ruleset.rules:
        names = " ".join(f"WHEN {i} THEN {sql_literal(r.name)}" for i, r in enumerate(ruleset.rules))
        name_sql = f"CASE new_rule {names} END"
    else:
        name_sql = "CAST(NULL AS VARCHAR)"
    return con.sql(
        f"SELECT charge_id, {name_sql} AS rule, new_action AS action FROM {FLAGS} ORDER BY charge_id"
    ).to_arrow_table()


def backtest(
    ws: Workspace,
    ruleset: Ruleset,
    fset: FeatureSet,
    *,
    baseline: Ruleset | None = None,
    scores: pa.Table | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    keep_decisions: bool = False,
) -> BacktestReport:
    """Backtest ``ruleset`` against ``baseline`` on the charges of ``ws`` created in [start, end)."""
    if start is not None and end is not None and start >= end:
        raise RuleError(
            f"The backtest window must end after it starts. Got --from {start.isoformat()} and --to "
            f"{end.isoformat()}."
        )
    attrs = ruleset.attributes() | (baseline.attributes() if baseline else set())
    readers = [r.name for r in ruleset.rules if ast.attributes(r.condition) & set(SCORE_ATTRIBUTES)]
    needs = f"Rule '{readers[0]}'" if readers else "The active ruleset"
    con = ws.connect()
    try:
        prepare(con, ws, attrs, fset, scores=scores, start=start, end=end, needs=needs)
        return evaluate_table(con, ruleset, baseline, keep_decisions=keep_decisions)
    finally:
        con.close()
