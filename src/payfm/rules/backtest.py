"""Backtest a ruleset (or one candidate rule) on history: what each rule matches and what changes.

The charges of a window are joined with their backfilled features (only those the rules read), the model's
scores if given, and their outcomes, labelled by the platform's one definition
(:func:`payfm.training.labels.fraud_labels`): a charge declined by its issuer or blocked moved no money, so
no dispute or early fraud warning can ever come for it: it is *declined* (its label is unknown, not genuine;
``--train-on authorized`` in docs/models.md), unless a fraud outcome is known and its horizon has passed
(then *fraud*). Any other charge whose label horizon (default 120 days) has not passed by the log's end is
*pending* (a dispute may still come: it is not evidence of a good charge); a mature one is *fraud* (a
fraudulent dispute, an early fraud warning or a manual review closed as ``refunded_as_fraud`` within the
horizon), else *refunded* (a refund within the horizon), else *legit*. Counts of charges (matched, decided,
the decision mix) cover every charge; fraud, refunded, legit and precision only the mature ones with a label,
and the pending and declined ones are counted beside them.

Every rule compiles to one SQL condition (:mod:`payfm.rules.compiler`); the whole backtest is a handful of
DuckDB queries over the table, with no per-row Python. They run in a worker thread, so Ctrl-C or a SIGTERM
interrupts them (see :func:`_interruptible`).

The report (:class:`BacktestReport`, with :class:`RuleStats`, :class:`Change` and :class:`Tally`) is defined
in :mod:`payfm.rules.backtest_report` and importable from here too.

Dollar amounts are ``amount_usd / 100``. The baseline is the active ruleset (or none: everything authorized;
or a stored version or another file: ``rules backtest --against``), a version evaluated on the feature set it
was saved with, as the decision service runs it: when that is not the candidate's set, its attributes come
from a second table of the same charges, built from its own backfill.

Example (see docs/rules.md)::

    v = active(ws)
    report = backtest(
        ws, compile_text(ws, text), feature_set("default"), baseline=load_active(ws),
        baseline_fset=feature_set(v.feature_set, ws.root),
    )
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import TypeVar

import duckdb
import pyarrow as pa

from payfm import interrupts
from payfm.errors import ConfigError
from payfm.events.schema import time_bound
from payfm.events.workspace import Workspace, opened
from payfm.features.catalog import feature_set_arg
from payfm.features.definitions import FeatureSet
from payfm.inputs import arrow_table, kind
from payfm.rules import ast
from payfm.rules.backtest_report import LABELS as LABELS  # (re-exported, as the report's types)
from payfm.rules.backtest_report import BacktestReport as BacktestReport
from payfm.rules.backtest_report import Change
from payfm.rules.backtest_report import RuleStats as RuleStats
from payfm.rules.backtest_report import Tally as Tally
from payfm.rules.backtest_views import PERIODS, Period, with_views
from payfm.rules.catalog import CHARGE_STRING_FIELDS, SCORE_ATTRIBUTES
from payfm.rules.compiler import Ruleset, effective, list_table, quote_ident, sql_literal
from payfm.rules.limits import RuleError
from payfm.rules.scores import check_scores, in_sample_warning
from payfm.training.labels import DEFAULT_HORIZON, fraud_labels, label_horizon_arg, log_end

# Charge outcomes that moved no money (charges.outcome): no dispute or early fraud warning can follow them.
NO_MONEY_OUTCOMES = ("issuer_declined", "blocked")
# A share of pending charges (in the window, or among a rule's matches) worth a warning.
PENDING_WARNING_SHARE = 0.05
BASE = "__payfm_bt"
BASELINE = "__payfm_bt_base"  # the baseline's attributes, when it runs on another feature set
FLAGS = "__payfm_bt_m"
_NAN = "CAST('nan' AS DOUBLE)"
T = TypeVar("T")


def _window_days(
    con: duckdb.DuckDBPyConnection, start: datetime | None, end: datetime | None
) -> float | None:
    """The length in days of [start, end) within the log's charges (a bound not given, or beyond the log,
    is the log's first or last charge); None for a window without charges."""
    [(first, last)] = con.execute("SELECT min(created), max(created) FROM charges").fetchall()
    if first is None:
        return None
    lo = max(start, first) if start is not None else first
    hi = min(end, last) if end is not None else last
    days = (hi - lo).total_seconds() / 86_400
    return days if days > 0 else None


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
    as_of: datetime | None = None,
    horizon: timedelta = DEFAULT_HORIZON,
    scores_source: str = "the scores table",
    table: str = BASE,
    labelled: bool = True,
) -> None:
    """Create the backtest table ``table``: charge_id, label (one of LABELS), reported (a fraud outcome known
    as of ``as_of``, mature or not), scored (the charge has a scores row), usd and one column per attribute.

    ``labelled=False`` makes charge_id and the attribute columns only (the baseline's table when it runs on
    another feature set: the charges of the same window, its features read from ``fset``'s backfill).
    """
    features = (attributes & set(fset.names)) - set(CHARGE_STRING_FIELDS) - {"amount", "amount_usd"}
    features -= set(SCORE_ATTRIBUTES)
    joins = ""
    scored = "true"
    if features:
        from payfm.features.training_set import load_backfill

        feats = load_backfill(ws, fset, columns=["charge_id", *sorted(features)])
        con.register(f"{table}_features", feats)
        joins += f" LEFT JOIN {table}_features f ON f.charge_id = c.charge_id"
    if attributes & set(SCORE_ATTRIBUTES):
        if scores is None:
            raise RuleError(
                f"{needs or 'The rules'} read :risk_score: or :risk_level:, but no scores were given. "
                "Give --model NAME (a registered model scores the window) or --scores FILE (Parquet with "
                "columns charge_id, risk_score, risk_level); `rules apply` and `rules rollback` take "
                "--no-backtest in an incident."
            )
        check_scores(scores, scores_source)
        con.register(f"{table}_scores", scores.select(["charge_id", "risk_score", "risk_level"]))
        joins += f" LEFT JOIN {table}_scores s ON s.charge_id = c.charge_id"
        scored = "s.charge_id IS NOT NULL"
    where = []
    if start is not None:
        where.append(f"c.created >= {_ts(start)}")
    if end is not None:
        where.append(f"c.created < {_ts(end)}")
    cols = "".join(f", {_attr_sql(a, features)} AS {quote_ident(a)}" for a in sorted(attributes))
    window = f"WHERE {' AND '.join(where)}" if where else ""
    if not labelled:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT c.charge_id{cols} FROM charges c{joins} {window}"
        )
        return
    labels = fraud_labels(con, as_of, horizon).select(["charge_id", "is_fraud", "mature"])
    con.register(f"{table}_labels", labels)
    # A refund counts within the label horizon of its charge (and by as_of), as the fraud outcomes do.
    micros = int(horizon.total_seconds() * 1_000_000)
    refunds_until = f"AND r.created <= {_ts(as_of)}" if as_of is not None else ""
    no_money = ", ".join(sql_literal(o) for o in NO_MONEY_OUTCOMES)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        WITH refunded AS (
            SELECT DISTINCT r.charge_id FROM refunds r JOIN charges rc ON rc.charge_id = r.charge_id
            WHERE r.created <= rc.created + to_microseconds({micros}) {refunds_until}
        )
        SELECT c.charge_id,
               -- a declined or blocked charge moved no money: no dispute can come, so its label is unknown
               -- (a fraud outcome known for it and final still makes it fraud)
               CASE WHEN l.mature AND l.is_fraud = 1 THEN 'fraud'
                    WHEN c.outcome IN ({no_money}) THEN 'declined'
                    WHEN NOT l.mature THEN 'pending'
                    WHEN c.charge_id IN (SELECT charge_id FROM refunded) THEN 'refunded'
                    ELSE 'legit' END AS label,
               l.is_fraud = 1 AS reported,
               {scored} AS scored,
               CAST(c.amount_usd AS DOUBLE) / 100 AS usd{cols}
        FROM charges c JOIN {table}_labels l ON l.charge_id = c.charge_id{joins}
        {window}
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
    baseline_table: str | None = None,
    keep_decisions: bool = False,
) -> BacktestReport:
    """The backtest over ``table`` (columns charge_id, label, usd and the attributes the rulesets read).

    With ``baseline_table`` (charge_id and the baseline's attributes: those of the feature set it runs on),
    the baseline's conditions read that table, joined by charge_id; else they read ``table`` too.
    """
    base = baseline or Ruleset([])
    _register_lists(con, ruleset, base)
    # (a table of the backtest has `reported`: fraud known already; a table made by hand may not)
    columns = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
    reported = "reported" if "reported" in columns else "false"
    new_idx, new_act = ruleset.decision_sql(lambda i: f"n{i}")
    old_idx, old_act = base.decision_sql(lambda i: f"o{i}")
    new_conds = "".join(f", {c} AS n{i}" for i, c in enumerate(ruleset.sql_conditions))
    old_conds = "".join(f", {c} AS o{i}" for i, c in enumerate(base.sql_conditions))
    if baseline_table is None:
        source = f"SELECT charge_id, label, usd, {reported} AS reported{new_conds}{old_conds} FROM {table}"
    else:  # each ruleset's conditions over its own table: the same attribute name may differ between them
        source = (
            f"SELECT * FROM (SELECT charge_id, label, usd, {reported} AS reported{new_conds} FROM {table}) "
            f"LEFT JOIN (SELECT charge_id{old_conds} FROM {baseline_table}) USING (charge_id)"
        )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {FLAGS} AS
        SELECT *, {new_idx} AS new_rule, {new_act} AS new_action, {old_act} AS old_action
        FROM ({source})"""
    )
    del old_idx
    # One pass grouped by outcome; per rule: matched, matched dollars, decided, matched and reported as fraud
    # (no FILTER: faster in DuckDB).
    aggs = ["count(*)", "sum(usd)"]
    for i in range(len(ruleset.rules)):
        aggs += [f"count_if(n{i})", f"sum(CASE WHEN n{i} THEN usd ELSE 0 END)", f"count_if(new_rule = {i})"]
        aggs += [f"count_if(n{i} AND reported)"]
    by_label = {
        str(row[0]): row[1:]
        for row in con.execute(f"SELECT label, {', '.join(aggs)} FROM {FLAGS} GROUP BY label").fetchall()
    }
    empty: tuple[object, ...] = (0, 0.0) + (0, 0.0, 0, 0) * len(ruleset.rules)
    rows = {lab: by_label.get(lab, empty) for lab in LABELS}
    outcomes = {lab: _tally(rows[lab], 0) for lab in LABELS}
    total = sum(t.count for t in outcomes.values())
    stats = []
    for i, r in enumerate(ruleset.rules):
        outs = {lab: _tally(rows[lab], 2 + 4 * i) for lab in LABELS}
        decided = sum(int(rows[lab][4 + 4 * i] or 0) for lab in LABELS)
        known = int(rows["pending"][5 + 4 * i] or 0)
        matched = sum(t.count for t in outs.values())
        stats.append(RuleStats(r.name, r.action, r.line, matched, decided, outs, pending_fraud=known))
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
        good_newly_blocked=total(lambda o, n, lab: lab in ("refunded", "legit") and n == "block"),
        good_no_longer_blocked=total(lambda o, n, lab: lab in ("refunded", "legit") and o == "block"),
        pending_newly_blocked=total(lambda o, n, lab: lab == "pending" and n == "block"),
        pending_no_longer_blocked=total(lambda o, n, lab: lab == "pending" and o == "block"),
        declined_newly_blocked=total(lambda o, n, lab: lab == "declined" and n == "block"),
        declined_no_longer_blocked=total(lambda o, n, lab: lab == "declined" and o == "block"),
        allow_overrides=overrides,
        transitions=transitions,
    )


# Where an analyst looks for false positives first: good customers, then fraud, then the rest.
_MATCH_ORDER = ("legit", "refunded", "fraud", "pending", "declined")


def _matched_charges(con: duckdb.DuckDBPyConnection, ruleset: Ruleset, name: str) -> pa.Table:
    """The charges rule ``name`` matched on its own: charge_id, created, merchant_id, card_fingerprint,
    amount_usd (dollars), label, decided (by this rule: the first match in action order) and each value the
    rule read, legitimate and refunded charges first (false positives), then by time."""
    i, rule = next((i, r) for i, r in enumerate(ruleset.rules) if r.name == name)
    fixed = ("charge_id", "created", "merchant_id", "card_fingerprint", "amount_usd", "label", "decided")
    read = sorted(ast.attributes(effective(rule)) - set(fixed))
    cols = "".join(f", b.{quote_ident(a)}" for a in read)
    order = " ".join(f"WHEN {sql_literal(lab)} THEN {k}" for k, lab in enumerate(_MATCH_ORDER))
    return con.sql(
        f"""SELECT f.charge_id, c.created, c.merchant_id, c.card_fingerprint, f.usd AS amount_usd, f.label,
                   coalesce(f.new_rule = {i}, false) AS decided{cols}
            FROM {FLAGS} f JOIN {BASE} b USING (charge_id) JOIN charges c ON c.charge_id = f.charge_id
            WHERE f.n{i} ORDER BY CASE f.label {order} END, c.created, f.charge_id"""
    ).to_arrow_table()


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


def _interruptible(con: duckdb.DuckDBPyConnection, work: Callable[[], T]) -> T:
    """``work()`` (DuckDB queries on ``con``) stopped by a Ctrl-C or SIGTERM: the signal's exception
    interrupts the queries and propagates (:func:`payfm.interrupts.interruptible`)."""
    return interrupts.interruptible(work, con.interrupt, "the backtest's query")


def _window_text(start: datetime | None, end: datetime | None) -> str:
    return f"{start.isoformat() if start else 'the start'} .. {end.isoformat() if end else 'the end'}"


def _warnings(
    con: duckdb.DuckDBPyConnection,
    report: BacktestReport,
    start: datetime | None,
    end: datetime | None,
    scored: bool,
    scores_source: str,
    at_log_end: bool = True,
    absent: dict[str, str] | None = None,
) -> list[str]:
    out = []
    if report.charges == 0:
        [(first, last)] = con.execute("SELECT min(created), max(created) FROM charges").fetchall()
        if first is None:
            out.append("the event log holds no charges: there is nothing to replay")
        elif start is not None or end is not None:
            raise RuleError(
                f"The backtest window {_window_text(start, end)} holds no charges. The event log's charges "
                f"run from {first.isoformat()} to {last.isoformat()}."
            )
        return out
    [(last_charge,)] = con.execute("SELECT max(created) FROM charges").fetchall()
    as_of = report.as_of
    if at_log_end and as_of is not None and last_charge is not None and as_of - last_charge > report.horizon:
        # An outcome dated now on a log of past charges (a review closed today on a replayed world) moves the
        # log's end past every horizon: all labels read final, though the later disputes never came.
        out.append(
            f"the log's latest event ({as_of.isoformat()[:19]}) is "
            f"{(as_of - last_charge) / timedelta(days=1):,.0f} days after its latest charge "
            f"({last_charge.isoformat()[:19]}), more than the label horizon: every label reads final. If the "
            "log's charges stop earlier than its outcomes (an export of the past, with outcomes written "
            "since), the labels of its last charges may not be final: backtest an earlier window (--to), or "
            "read labels as of the export (--as-of TIME; as_of= in Python)."
        )
    window_end = end if end is not None else last_charge
    if not at_log_end and as_of is not None and window_end is not None and as_of < window_end:
        out.append(
            f"--as-of {as_of.isoformat()[:19]} is before the window's end ({window_end.isoformat()[:19]}): "
            "its later charges have no outcome known then (pending), and no later outcome counts"
        )
    pending = report.pending
    final = sum(report.outcomes[lab].count for lab in ("fraud", "refunded", "legit"))
    if pending and not final and report.as_of is not None:
        # Nothing to judge by: every precision reads "-" and every fraud count 0. Say it, and what would do.
        since = f" WHERE created >= {_ts(start)}" if start is not None else ""
        [(first,)] = con.execute(f"SELECT min(created) FROM charges{since}").fetchall()
        days = report.horizon / timedelta(days=1)
        age = (report.as_of - first) / timedelta(days=1) if first is not None else 0.0
        if age <= 0:  # labels read before the window began: nothing of it can be known
            out.append(
                f"no charge of the window has a final label: the labels are read as of "
                f"{report.as_of.isoformat()[:19]} (--as-of), before the window's first charge, when nothing "
                "of it was known; give a later --as-of"
            )
        else:
            out.append(
                f"no charge of the window has a final label: the label horizon is {days:g} days and its "
                f"oldest charge is {age:.1f} days old at {report.as_of.isoformat()[:19]} ("
                + ("the log's end" if at_log_end else "--as-of")
                + "), so fraud, refunded, legit and precision are all 0 or '-' and this backtest cannot "
                f"judge the rules ({report.pending_fraud:,} of the pending charges already reported as "
                "fraud). "
                "Give --horizon-days below that age (disputes in this log may arrive sooner), or an earlier "
                "window"
            )
    elif pending and pending >= PENDING_WARNING_SHARE * report.charges:
        cutoff = (report.as_of - report.horizon).isoformat() if report.as_of else "?"
        days = report.horizon / timedelta(days=1)
        when = "the log's end" if at_log_end else "--as-of"
        out.append(
            f"{pending:,} of the {report.charges:,} charges ({pending / report.charges:.0%}) have labels not "
            f"final yet (created after {cutoff}, within the {days:g}-day label horizon of "
            f"{when}): disputes can still arrive, so they are left out of fraud, refunded, legit and "
            f"precision ({report.pending_fraud:,} of them already reported as fraud). Choose an earlier "
            "window (--to), or a shorter --horizon-days if disputes arrive sooner."
        )
    else:
        for r in report.rules:
            if r.pending and r.pending >= PENDING_WARNING_SHARE * r.matched:
                out.append(
                    f"rule '{r.name}': {r.pending:,} of its {r.matched:,} matches have labels not final yet "
                    "(left out of its fraud, refunded, legit and precision)"
                )
    if scored:
        [(missing,)] = con.execute(f"SELECT count_if(NOT scored) FROM {BASE}").fetchall()
        n = int(missing or 0)
        if n:
            out.append(
                f"{scores_source[:1].upper()}{scores_source[1:]} has no scores for {n:,} of the window's "
                f"{report.charges:,} charges "
                f"({n / report.charges:.0%}): their :risk_score: and :risk_level: are missing, so rules "
                "reading them do not match those charges"
            )
    return out + _rule_warnings(report, absent or {})


def _late_as_of(con: duckdb.DuckDBPyConnection, as_of: datetime, end: datetime, horizon: timedelta) -> str:
    """The warning for an ``as_of`` after the log's last event (``end``): the log holds no outcome after it,
    so the charges whose horizon ends in between read final only because of ``as_of``; it says how many."""
    micros = int(horizon.total_seconds() * 1_000_000)
    [(n,)] = con.execute(
        f"SELECT count(*) FROM {BASE} b JOIN charges c USING (charge_id) WHERE "
        f"c.created + to_microseconds({micros}) > {_ts(end)} "
        f"AND c.created + to_microseconds({micros}) <= {_ts(as_of)}"
    ).fetchall()
    n = int(n or 0)
    if not n:  # (no charge reads final only because of it)
        return ""
    return (
        f"--as-of {as_of.isoformat()[:19]} is after the log's last event ({end.isoformat()[:19]}): the log "
        f"holds no outcome after it, so {n:,} charge{'s' if n != 1 else ''} whose label horizon ends in "
        f"between read{'s' if n == 1 else ''} final, legitimate unless a dispute or warning is recorded. "
        "Give --as-of only when the log is complete up to it (an export taken then); without it they are "
        "pending"
    )


def _never_present(
    con: duckdb.DuckDBPyConnection, ruleset: Ruleset, report: BacktestReport, attributes: set[str]
) -> dict[str, str]:
    """Rule name -> why it matched nothing, for the rules that read an attribute no charge of the window has
    (an import that fills no IP address: `:ip_country: = 'NG'` can match nothing, whatever its values)."""
    idle = {r.name for r in report.rules if r.matched == 0}
    if not idle or not report.charges or not attributes:
        return {}
    names = sorted(attributes)
    counts = con.execute(
        f"SELECT {', '.join(f'count({quote_ident(a)})' for a in names)} FROM {BASE}"
    ).fetchone()
    absent = {a for a, n in zip(names, counts or (), strict=True) if not n}
    out = {}
    for rule in ruleset.rules:
        missing = sorted(ast.attributes(rule.condition) & absent) if rule.name in idle else []
        if missing:
            shown = ", ".join(f":{a}:" for a in missing)
            out[rule.name] = (
                f"rule '{rule.name}' matched none of the window's {report.charges:,} charges: it reads "
                f"{shown}, missing on every one of them (the log fills no field it comes from)"
            )
    return out


def _rule_warnings(report: BacktestReport, absent: dict[str, str]) -> list[str]:
    """Rules a reader should look at again: one that matches no charge of the window (a threshold no charge
    reaches: a risk level the model never gives, a value no charge holds), one that matches every charge (a
    condition always true), one whose matches other actions decide, all of them (a request_3ds or allow
    rule before it in the order of actions takes them). ``absent``: why rules matched nothing, where an
    attribute they read is missing on every charge (:func:`_never_present`)."""
    out = []
    for r in report.rules:
        if r.matched == 0 and r.name in absent:  # (why, rather than thresholds to check)
            out.append(absent[r.name])
        elif r.matched == 0:
            out.append(
                f"rule '{r.name}' matched none of the window's {report.charges:,} charges: check its "
                "thresholds and values (a risk level the model never gives, a value no charge holds"
                + (
                    "; it matches only charges not through 3-D Secure yet)"
                    if r.action == "request_3ds"
                    else ")"
                )
            )
        elif r.matched == report.charges and report.charges > 1:
            out.append(f"rule '{r.name}' matched every one of the window's {report.charges:,} charges")
        elif r.decided == 0:
            out.append(
                f"rule '{r.name}' matched {r.matched:,} charge{'s' if r.matched != 1 else ''} and decided "
                "none: rules of an action tried "
                f"before '{r.action}' (request_3ds, allow, block, review), or before it in the file, took "
                "them all"
            )
    return out


def _ruleset_arg(ruleset: object, param: str) -> Ruleset:
    """``ruleset`` if it is a compiled :class:`Ruleset`; else a ConfigError naming ``param`` of backtest, and
    for rule text, how to compile it (``'str' object has no attribute 'rules'``, before)."""
    if isinstance(ruleset, Ruleset):
        return ruleset
    how = "rulesets.compile_text(ws, text) gives one (payfm.rules.rulesets; a file's text: path.read_text())"
    if isinstance(ruleset, str):
        raise ConfigError(
            f"The '{param}' of backtest must be a compiled Ruleset. Got a str (rule text?): compile it "
            f"first, {how}."
        )
    raise ConfigError(f"The '{param}' of backtest must be a compiled Ruleset: {how}. Got {kind(ruleset)}.")


def backtest(
    ws: Workspace,
    ruleset: Ruleset,
    fset: FeatureSet,
    *,
    baseline: Ruleset | None = None,
    baseline_fset: FeatureSet | None = None,
    scores: pa.Table | None = None,
    start: datetime | date | str | None = None,
    end: datetime | date | str | None = None,
    keep_decisions: bool = False,
    horizon: timedelta = DEFAULT_HORIZON,
    as_of: datetime | date | str | None = None,
    scores_source: str = "the scores table",
    baseline_name: str = "The active ruleset",
    model: str | None = None,
    matches: str | None = None,
    by: Period | None = None,
    overlap: bool = False,
) -> BacktestReport:
    """Backtest ``ruleset`` (on feature set ``fset``) against ``baseline`` on the charges of ``ws`` created in
    [start, end).

    ``matches`` names a rule of ``ruleset`` whose matched charges the report keeps (``matched``): each with
    its time, merchant, card, dollars, label, whether the rule decided it, and the values the rule read.

    The baseline runs on ``baseline_fset`` (default: ``fset``), the set it was saved with: two sets may define
    a feature of one name differently, and the decision service reads the baseline's own. Labels are those
    known ``as_of`` (default: the log's end; one after it is warned of: the log knows no later outcome), final
    once ``horizon`` has passed since the charge;
    ``scores_source`` names the scores in error messages (the --scores file), ``baseline_name`` the baseline
    (``rules backtest --against``: "Ruleset v2").

    ``:risk_score:`` and ``:risk_level:`` come from ``scores`` (a table: :mod:`payfm.rules.scores`) or from
    ``model``, a registered model reference that scores the window as the decision service would
    (:func:`payfm.training.predict.model_scores`; give one of the two). A window overlapping that model's
    training or validation period is the report's first warning
    (:func:`payfm.rules.scores.in_sample_warning`): its figures are in-sample. ``start``, ``end`` and
    ``as_of`` are aware datetimes, dates or ISO texts, as ``--from`` and ``--to`` take them. ``by``
    ("day", "week") adds the report's ``series``, ``overlap=True`` its ``overlap``
    (:mod:`payfm.rules.backtest_views`).
    """
    ws = opened(ws, "backtest")
    ruleset = _ruleset_arg(ruleset, "ruleset")
    baseline = None if baseline is None else _ruleset_arg(baseline, "baseline")
    fset = feature_set_arg(fset, "backtest")
    if baseline_fset is not None:
        baseline_fset = feature_set_arg(baseline_fset, "backtest", "baseline_fset")
    scores = None if scores is None else arrow_table(scores, "scores", "backtest")
    label_horizon_arg(horizon, "backtest")
    if by is not None and by not in PERIODS:  # (before the work, not after)
        raise RuleError(f"A backtest series is by one of {', '.join(PERIODS)}. Got {by!r}.")
    start, end = (
        time_bound(start, "The backtest start", RuleError),
        time_bound(end, "The backtest end", RuleError),
    )
    as_of = time_bound(as_of, "The labels' time (--as-of, as_of=)", RuleError)
    if start is not None and end is not None and start >= end:
        raise RuleError(
            f"The backtest window must end after it starts. Got --from {start.isoformat()} and --to "
            f"{end.isoformat()}."
        )
    if horizon <= timedelta(0):
        raise RuleError(f"The label horizon must be positive. Got {horizon}.")
    if matches is not None and matches not in (names := [r.name for r in ruleset.rules]):
        raise RuleError(
            f"--matches (matches=) must name a rule of the backtested ruleset: one of "
            f"{', '.join(repr(n) for n in names) or 'none (it has no rule)'}. Got {matches!r}."
        )
    learned: list[str] = []  # the in-sample warning of ``model``
    if model is not None:
        if not isinstance(model, str) or scores is not None:
            raise RuleError(
                "The backtest takes scores or a model reference to compute them (--scores or --model), not "
                f"both. Got {'both' if scores is not None else f'model={model!r}'}."
            )
        from payfm.training.predict import model_scores

        warning = in_sample_warning(ws, model, start, end)
        learned = [warning] if warning is not None else []
        scores = model_scores(ws, model, start, end)
        if scores_source == "the scores table":
            scores_source = f"model {model}"
    base_attrs = baseline.attributes() if baseline is not None else set()
    # The baseline's own set, when it is not the candidate's (told apart by name: a workspace's set of one
    # name has one definition at a time).
    apart = (
        baseline_fset if baseline is not None and baseline_fset and baseline_fset.name != fset.name else None
    )
    attrs = ruleset.attributes() | base_attrs
    # Apart, the candidate's table holds the baseline's score attributes too: its `scored` column (the
    # missing-scores warning) and the no-scores error then cover both rulesets.
    own_attrs = attrs if apart is None else ruleset.attributes() | (base_attrs & set(SCORE_ATTRIBUTES))
    readers = [r.name for r in ruleset.rules if ast.attributes(r.condition) & set(SCORE_ATTRIBUTES)]
    needs = f"Rule '{readers[0]}'" if readers else baseline_name
    if readers and baseline is not None and any(r.name == readers[0] for r in baseline.rules):
        # a rule the baseline has too (backtest --rule: one of the active ruleset, not the one typed)
        needs += f" ({baseline_name[:1].lower()}{baseline_name[1:]} has it too)"
    scored = bool(attrs & set(SCORE_ATTRIBUTES))
    con = ws.connect()

    def work() -> BacktestReport:
        end_of_log = log_end(con)
        # The log holds no outcome after its last event: a later --as-of counts every charge whose horizon
        # ends in between as final (legitimate without a dispute), right only when the log is complete up to
        # it (an export taken then): warned of, with how many charges it decides.
        late = end_of_log if as_of is not None and end_of_log is not None and as_of > end_of_log else None
        labels_as_of = as_of if as_of is not None else end_of_log
        prepare(
            con,
            ws,
            own_attrs,
            fset,
            scores=scores,
            start=start,
            end=end,
            needs=needs,
            as_of=labels_as_of,
            horizon=horizon,
            scores_source=scores_source,
        )
        if apart is not None:
            prepare(
                con,
                ws,
                base_attrs,
                apart,
                scores=scores,
                start=start,
                end=end,
                needs=baseline_name,
                scores_source=scores_source,
                table=BASELINE,
                labelled=False,
            )
        report = evaluate_table(
            con,
            ruleset,
            baseline,
            baseline_table=None if apart is None else BASELINE,
            keep_decisions=keep_decisions,
        )
        [(reported,)] = con.execute(f"SELECT count_if(label = 'pending' AND reported) FROM {BASE}").fetchall()
        report = replace(
            report,
            horizon=horizon,
            as_of=labels_as_of,
            as_of_given=as_of is not None,
            pending_fraud=int(reported or 0),
            days=_window_days(con, start, end),
            start=start,
            end=end,
        )
        if by is not None or overlap:  # (one grouped query per view over FLAGS)
            report = with_views(con, ruleset, report, FLAGS, by=by, overlap=overlap)
        if matches is not None:
            report = replace(report, matched=_matched_charges(con, ruleset, matches))
        absent = _never_present(con, ruleset, report, own_attrs)
        warnings = _warnings(con, report, start, end, scored, scores_source, as_of is None, absent)
        if late is not None and as_of is not None and (said := _late_as_of(con, as_of, late, horizon)):
            warnings = [said, *warnings]
        return replace(report, warnings=(*learned, *warnings))

    abandoned = False
    try:
        return _interruptible(con, work)
    except interrupts.Abandoned:
        abandoned = True
        raise
    finally:
        if not abandoned:  # (DuckDB refuses to close a connection its thread still uses)
            con.close()
