"""An analyst's views of a backtest, from the table it already computes: a series by UTC day or ISO week,
rule overlap (what only one rule catches; what two rules both match), rates, and the report as JSON.

The backtest (:mod:`payfm.rules.backtest`) keeps one row per charge of the window in a DuckDB table
(``FLAGS``: charge_id, label, usd, ``n{i}`` whether rule i matched, ``new_rule`` the rule that decided it:
the first match in action order, ``new_action`` its action, ``old_action`` the baseline's). Each view is one
grouped query over it, with the same labels and the same "decided" as the rules table, so its figures add up
to the table's: a rule's matches over the periods are its ``matched``, the periods' decision mixes the
report's ``mix``, the overlap's diagonal each rule's ``matched``.

"Caught" is decided by a request_3ds, block or review rule (an allow rule lets a charge through); a "false
positive" a genuine charge (final label refunded or legit) so decided. "Only this rule": the charges a rule
matches and no other rule of the ruleset does, the charges that removing it leaves to no rule (authorized).

Example (see docs/rules.md)::

    report = backtest(ws, ruleset, fset, by="week", overlap=True)
    report.series.periods[0].mix["block"]["fraud"]   # Tally(count, usd): fraud blocked in the first week
    report.overlap.only[0]["fraud"]                  # fraud only the first rule matches
    json.dumps(report.to_json())
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal

import duckdb
import numpy as np

from payfm.rules.compiler import Ruleset
from payfm.rules.limits import RuleError

if TYPE_CHECKING:
    from payfm.rules.backtest import BacktestReport, Tally

Period = Literal["day", "week"]
PERIODS: tuple[Period, ...] = ("day", "week")
ACTIONS = ("request_3ds", "allow", "block", "review", "authorize")  # "authorize": no rule decided
CAUGHT = ("request_3ds", "block", "review")  # the actions that act on a charge (allow lets it through)
GENUINE = ("refunded", "legit")
_BITS = 62  # rules per match mask (a BIGINT, its sign bit unused)


@dataclass(frozen=True)
class RulePeriod:
    """One rule in one period: its matches and the charges it decided, by label (as :class:`RuleStats`)."""

    matched: dict[str, Tally]
    decided: dict[str, Tally]


@dataclass(frozen=True)
class PeriodStats:
    start: date  # the UTC day, or the Monday of the ISO week
    name: str  # "2026-03-02", or "2026-W10"
    mix: dict[str, dict[str, Tally]]  # action ("authorize": no rule) -> label -> tally, as the report's mix
    rules: list[RulePeriod]  # in the ruleset's order (the report's rules)

    @property
    def charges(self) -> int:
        return sum(t.count for by_label in self.mix.values() for t in by_label.values())

    def caught(self, labels: tuple[str, ...]) -> Tally:
        """Charges of ``labels`` decided by a request_3ds, block or review rule."""
        return _sum(self.mix.get(a, {}).get(lab) for a in CAUGHT for lab in labels)


@dataclass(frozen=True)
class Series:
    by: Period
    periods: list[PeriodStats]  # those with charges, in time order


@dataclass(frozen=True)
class Overlap:
    """Rule i against rule j (the ruleset's order): ``matched[i][j]`` charges both match (the diagonal: rule
    i's matches), ``fraud[i][j]`` of them with a final fraud label; ``only[i]``: label -> the charges rule i
    matches and no other rule does."""

    matched: list[list[int]]
    fraud: list[list[int]]
    only: list[dict[str, Tally]]


@dataclass(frozen=True)
class Rates:
    """Shares of the window's charges (None for a window of none). The authorization rate is the share the
    rules let through (not blocked: authorized, allowed, sent to review or to 3-D Secure), by the baseline
    (before) and by the ruleset (after)."""

    charges: int
    blocked: int
    reviewed: int
    request_3ds: int
    blocked_before: int

    def share(self, n: int) -> float | None:
        return n / self.charges if self.charges else None

    @property
    def authorization_before(self) -> float | None:
        return self.share(self.charges - self.blocked_before)

    @property
    def authorization_after(self) -> float | None:
        return self.share(self.charges - self.blocked)


def _tally(n: object, usd: object) -> Tally:
    from payfm.rules.backtest import Tally

    return Tally(int(n or 0), float(usd or 0.0))  # type: ignore[call-overload, arg-type]


def _sum(tallies: Any) -> Tally:
    picked = [t for t in tallies if t is not None]
    return _tally(sum(t.count for t in picked), sum((t.usd for t in picked), 0.0))


def _add(into: dict[str, Tally], label: str, n: object, usd: object) -> None:
    if n:
        had = into.get(label)
        into[label] = _sum([had, _tally(n, usd)])


def period_name(start: date, by: Period) -> str:
    if by == "day":
        return start.isoformat()
    year, week, _ = start.isocalendar()
    return f"{year}-W{week:02d}"


def series(con: duckdb.DuckDBPyConnection, ruleset: Ruleset, by: Period, flags: str, charges: str) -> Series:
    """The backtest by UTC day or ISO week of each charge's ``created`` (read from ``charges``, joined on
    charge_id): the decision mix, and each rule's matches and decisions, by label. Two grouped queries."""
    if by not in PERIODS:
        raise RuleError(f"A backtest series is by one of {', '.join(PERIODS)}. Got {by!r}.")
    period = f"CAST(date_trunc('{by}', timezone('UTC', c.created)) AS DATE)"
    source = f"{flags} f JOIN (SELECT charge_id, created FROM {charges}) c USING (charge_id)"
    decided: dict[date, dict[int | None, dict[str, Tally]]] = {}
    for start, label, rule, n, usd in con.execute(
        f"SELECT {period}, f.label, f.new_rule, count(*), sum(f.usd) FROM {source} GROUP BY ALL"
    ).fetchall():
        _add(decided.setdefault(start, {}).setdefault(rule, {}), label, n, usd)
    aggs = "".join(
        f", count_if(f.n{i}), sum(CASE WHEN f.n{i} THEN f.usd ELSE 0 END)" for i in range(len(ruleset.rules))
    )
    matched: dict[date, list[dict[str, Tally]]] = {}
    for row in con.execute(f"SELECT {period}, f.label{aggs} FROM {source} GROUP BY ALL").fetchall():
        per_rule = matched.setdefault(row[0], [{} for _ in ruleset.rules])
        for i, into in enumerate(per_rule):
            _add(into, row[1], row[2 + 2 * i], row[3 + 2 * i])
    periods = []
    for start in sorted(decided):
        mix: dict[str, dict[str, Tally]] = {}
        for rule, by_label in decided[start].items():
            action = ruleset.rules[rule].action if rule is not None else "authorize"
            for label, t in by_label.items():
                _add(mix.setdefault(action, {}), label, t.count, t.usd)
        rules = [RulePeriod(m, decided[start].get(i, {})) for i, m in enumerate(matched[start])]
        periods.append(PeriodStats(start, period_name(start, by), mix, rules))
    return Series(by, periods)


def rule_overlap(con: duckdb.DuckDBPyConnection, ruleset: Ruleset, flags: str) -> Overlap:
    """Rule overlap from one query grouped by which rules match (a bit mask per 62 rules) and label: the
    pairwise counts are a product of the groups' match matrix, "only" the groups of a single match."""
    n_rules = len(ruleset.rules)
    if not n_rules:
        return Overlap([], [], [])
    chunks = [range(k, min(k + _BITS, n_rules)) for k in range(0, n_rules, _BITS)]
    masks = [" | ".join(f"(CAST(n{i} AS BIGINT) << {i - r.start})" for i in r) for r in chunks]
    cols = ", ".join(f"{m} AS m{k}" for k, m in enumerate(masks))
    grouped = con.sql(
        f"SELECT {cols}, label, count(*) AS n, sum(usd) AS usd FROM {flags} GROUP BY ALL"
    ).to_arrow_table()
    # (G, R): whether rule r matches the charges of group g; one row per (rules matched, label)
    bits = np.concatenate(
        [(grouped[f"m{k}"].to_numpy()[:, None] >> np.arange(len(r))) & 1 for k, r in enumerate(chunks)],
        axis=1,
    ).astype(np.float64)  # (float: a BLAS product; counts stay exact below 2**53)
    n = grouped["n"].to_numpy().astype(np.float64)  # (G,)
    usd = np.nan_to_num(grouped["usd"].to_numpy(zero_copy_only=False).astype(np.float64))  # (G,)
    labels = np.array(grouped["label"].to_pylist())  # (G,)
    fraud = labels == "fraud"
    both = bits.T @ (bits * n[:, None])  # (R, R)
    both_fraud = bits.T @ (bits * (n * fraud)[:, None])  # (R, R)
    single = bits.sum(axis=1) == 1
    which = bits.argmax(axis=1)
    only: list[dict[str, Tally]] = [{} for _ in range(n_rules)]
    for label in sorted(set(labels[single])):
        pick = single & (labels == label)
        counts = np.bincount(which[pick], weights=n[pick], minlength=n_rules)
        dollars = np.bincount(which[pick], weights=usd[pick], minlength=n_rules)
        for i in np.flatnonzero(counts):
            only[i][str(label)] = _tally(int(counts[i]), float(dollars[i]))
    return Overlap(both.astype(np.int64).tolist(), both_fraud.astype(np.int64).tolist(), only)


def with_views(
    con: duckdb.DuckDBPyConnection,
    ruleset: Ruleset,
    report: BacktestReport,
    flags: str,
    *,
    by: Period | None,
    overlap: bool,
    charges: str = "charges",
) -> BacktestReport:
    """``report`` with its ``series`` (given ``by``) and ``overlap`` (given ``overlap``), from the backtest's
    table ``flags`` of ``ruleset`` on ``con`` (the charges' times from the table ``charges``)."""
    return replace(
        report,
        series=series(con, ruleset, by, flags, charges) if by is not None else None,
        overlap=rule_overlap(con, ruleset, flags) if overlap else None,
    )


def rates(report: BacktestReport) -> Rates:
    """Block, review and 3-D Secure counts from the report's decision mix; the baseline's blocks from it and
    the transitions of the change (every charge decided differently, from what to what)."""
    after = {a: sum(t.count for t in report.mix.get(a, {}).values()) for a in ACTIONS}
    into = sum(t.count for old, new, _, t in report.change.transitions if new == "block")
    out = sum(t.count for old, new, _, t in report.change.transitions if old == "block")
    return Rates(
        report.charges, after["block"], after["review"], after["request_3ds"], after["block"] - into + out
    )


def _tj(t: Tally) -> dict[str, Any]:
    # (to the cent: a float sum's last bits follow DuckDB's parallel order, and vary from run to run)
    return {"count": t.count, "usd": round(t.usd, 2)}


def _labels(by_label: dict[str, Tally]) -> dict[str, Any]:
    return {lab: _tj(t) for lab, t in by_label.items()}


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def report_json(report: BacktestReport) -> dict[str, Any]:
    """The whole report as JSON values (``json.dumps`` takes it): the window, labels' time and horizon, the
    rules (with what only each matches, given the overlap), the mix, the change against the baseline, the
    warnings, the rates, and the series and overlap when they were computed (else null). Dollars are
    rounded to the cent; a rate or precision of no charges is null."""
    from payfm.rules.backtest import LABELS

    r = rates(report)
    c = report.change
    names = [s.name for s in report.rules]
    rules = [
        {
            "name": s.name,
            "action": s.action,
            "line": s.line,
            "matched": s.matched,
            "decided": s.decided,
            "outcomes": _labels(s.outcomes),
            "pending_fraud": s.pending_fraud,
            "precision": s.precision,
            "recall": report.recall(s),
            "only": _labels(report.overlap.only[i]) if report.overlap is not None else None,
        }
        for i, s in enumerate(report.rules)
    ]
    change: dict[str, Any] = {
        k: _tj(getattr(c, k))
        for k in c.__dataclass_fields__
        if k not in ("changed", "allow_overrides", "transitions")
    }
    change |= {
        "changed": c.changed,
        "outcome_changed": c.outcome_changed,
        "allow_overrides": _labels(c.allow_overrides),
        "transitions": [{"from": o, "to": n, "label": lab, **_tj(t)} for o, n, lab, t in c.transitions],
    }
    series = None
    if report.series is not None:
        periods = [
            {
                "period": p.name,
                "start": p.start.isoformat(),
                "charges": p.charges,
                "mix": {a: _labels(m) for a, m in p.mix.items()},
                "rules": {  # (the rules that matched a charge of the period)
                    names[i]: {"matched": _labels(rp.matched), "decided": _labels(rp.decided)}
                    for i, rp in enumerate(p.rules)
                    if rp.matched
                },
            }
            for p in report.series.periods
        ]
        series = {"by": report.series.by, "periods": periods}
    o = report.overlap
    return {
        "window": {"from": _time(report.start), "to": _time(report.end), "days": report.days},
        "as_of": _time(report.as_of),
        "as_of_given": report.as_of_given,
        "horizon_days": report.horizon.total_seconds() / 86_400,
        "charges": report.charges,
        "outcomes": {lab: _tj(report.outcomes[lab]) for lab in LABELS},
        "pending_fraud": report.pending_fraud,
        "rates": {
            "block_rate": r.share(r.blocked),
            "review_rate": r.share(r.reviewed),
            "request_3ds_rate": r.share(r.request_3ds),
            "authorization_rate_before": r.authorization_before,
            "authorization_rate_after": r.authorization_after,
            "blocked_before": r.blocked_before,
            "blocked_after": r.blocked,
        },
        "rules": rules,
        "mix": {a: _labels(m) for a, m in report.mix.items()},
        "change": change,
        "warnings": list(report.warnings),
        "series": series,
        "overlap": None if o is None else {"rules": names, "matched": o.matched, "fraud": o.fraud},
    }
