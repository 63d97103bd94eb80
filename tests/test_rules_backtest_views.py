"""The backtest's views (series by day or week, rule overlap, rates, the JSON report), each recomputed charge
by charge from the one-charge evaluator and the window's labels, on a small generated world; and the CLI."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.features.training_set import load_backfill
from payfm.rules.backtest import FLAGS, BacktestReport, Tally, backtest, evaluate_table
from payfm.rules.backtest_views import period_name, with_views
from payfm.rules.catalog import AttributeCatalog, charge_values, check_types
from payfm.rules.compiler import Ruleset, compile_rules
from payfm.rules.grammar import parse_rules
from payfm.rules.limits import RuleError
from payfm.synth import WorldConfig, generate_world

FSET = tiny_set()
CATALOG = AttributeCatalog.for_feature_set(FSET)
HORIZON = timedelta(days=4)  # some labels final, the last days' pending
RULES = """\
t3: request_3ds if :amount_usd: > 250 and :channel: = 'ecommerce'
big: block if :amount_usd: > 300
mid: review if :amount_usd: > 200
ng: block if :ip_country: = 'NG' or :card.count_charges_1h: > 2
al: allow if :amount_usd: < 5
"""
OLD = "old: block if :amount_usd: > 400\nold_ng: review if :ip_country: = 'NG'\n"


def compile_(text: str) -> Ruleset:
    rules = parse_rules(text)
    check_types(rules, CATALOG)
    return compile_rules(rules, None, CATALOG.types)


@dataclass(frozen=True)
class Charge:
    """One charge as the tests recompute it: its UTC day, label, dollars, the rules matching it (each rule
    evaluated alone), the rule deciding it and the baseline's action (the one-charge evaluator)."""

    day: date
    label: str
    usd: float
    matched: frozenset[str]
    rule: str | None
    action: str
    old_action: str


@dataclass(frozen=True)
class World:
    ws: Workspace
    report: BacktestReport
    charges: list[Charge]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    ws = Workspace.open(tmp_path_factory.mktemp("views") / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=3_000, days=16, seed=5, fraud_rate=0.05)), "replace")
    rs, old = compile_(RULES), compile_(OLD)
    report = backtest(ws, rs, FSET, baseline=old, horizon=HORIZON, by="day", overlap=True)
    # each charge's label, as the backtest labels it: the matches of a rule matching every charge
    every = backtest(ws, compile_("all: review if :amount_usd: >= 0"), FSET, horizon=HORIZON, matches="all")
    assert every.matched is not None and every.matched.num_rows == report.charges
    labels = {r["charge_id"]: r for r in every.matched.to_pylist()}
    alone = {r.name: compile_rules([r], None, CATALOG.types) for r in rs.rules}
    feats = {r["charge_id"]: r for r in load_backfill(ws, FSET).to_pylist()}
    out = []
    for c in ws.read("charges").to_pylist():
        values = charge_values(c, feats[c["charge_id"]])
        d = rs.decide(values)
        lab = labels[c["charge_id"]]
        out.append(
            Charge(
                lab["created"].date(),
                lab["label"],
                lab["amount_usd"],
                frozenset(n for n, one in alone.items() if one.decide(values).rule is not None),
                d.rule,
                d.action or "authorize",
                old.decide(values).action or "authorize",
            )
        )
    return World(ws, report, out)


def _tally(charges: list[Charge]) -> Tally:
    return Tally(len(charges), sum(c.usd for c in charges))


def _by_label(charges: list[Charge]) -> dict[str, Tally]:
    groups: dict[str, list[Charge]] = defaultdict(list)
    for c in charges:
        groups[c.label].append(c)
    return {lab: _tally(cs) for lab, cs in groups.items()}


def _approx(tallies: dict[str, Tally]) -> dict[str, tuple[int, Any]]:
    return {lab: (t.count, pytest.approx(t.usd, abs=1e-6)) for lab, t in tallies.items()}


def _tuples(tallies: dict[str, Tally]) -> dict[str, tuple[int, float]]:
    return {lab: (t.count, t.usd) for lab, t in tallies.items()}


def test_the_series_by_day_is_each_days_charges_recomputed_one_by_one(world: World) -> None:
    report, series = world.report, world.report.series
    assert series is not None and series.by == "day"
    days = sorted({c.day for c in world.charges})
    assert [p.start for p in series.periods] == days and [p.name for p in series.periods] == [
        d.isoformat() for d in days
    ]
    names = [r.name for r in report.rules]
    for p in series.periods:
        of_day = [c for c in world.charges if c.day == p.start]
        assert p.charges == len(of_day)
        actions = {c.action for c in of_day}
        want = {a: _by_label([c for c in of_day if c.action == a]) for a in actions}
        assert {a: _tuples(m) for a, m in p.mix.items()} == {a: _approx(m) for a, m in want.items()}
        for name, rp in zip(names, p.rules, strict=True):
            assert _tuples(rp.matched) == _approx(_by_label([c for c in of_day if name in c.matched]))
            assert _tuples(rp.decided) == _approx(_by_label([c for c in of_day if c.rule == name]))
        caught = [c for c in of_day if c.action in ("request_3ds", "block", "review")]
        assert p.caught(("fraud",)) == _tally([c for c in caught if c.label == "fraud"])
    # the periods add up to the rules table and the decision mix
    for i, r in enumerate(report.rules):
        assert sum(sum(t.count for t in p.rules[i].matched.values()) for p in series.periods) == r.matched
        assert sum(sum(t.count for t in p.rules[i].decided.values()) for p in series.periods) == r.decided
        fraud = [p.rules[i].matched.get("fraud", Tally()) for p in series.periods]
        assert sum(t.count for t in fraud) == r.outcomes["fraud"].count
    for action, by_label in report.mix.items():
        for lab, t in by_label.items():
            assert sum(p.mix.get(action, {}).get(lab, Tally()).count for p in series.periods) == t.count
    assert {"block", "review", "request_3ds", "allow", "authorize"} <= set(report.mix)  # every action fires


def test_the_series_by_week_groups_the_days_into_iso_weeks(world: World) -> None:
    report = backtest(world.ws, compile_(RULES), FSET, horizon=HORIZON, by="week")
    days, weeks = world.report.series, report.series
    assert days is not None and weeks is not None and report.overlap is None
    for w in weeks.periods:
        assert (
            w.start.isoweekday() == 1
            and w.name == f"{w.start.isocalendar()[0]}-W{w.start.isocalendar()[1]:02d}"
        )
        inside = [d for d in days.periods if w.start <= d.start < w.start + timedelta(days=7)]
        assert inside and w.charges == sum(d.charges for d in inside)
        for i in range(len(report.rules)):
            decided = sum(sum(t.count for t in d.rules[i].decided.values()) for d in inside)
            assert sum(t.count for t in w.rules[i].decided.values()) == decided
    assert sum(w.charges for w in weeks.periods) == report.charges
    assert period_name(date(2026, 1, 1), "week") == "2026-W01" and period_name(
        date(2025, 12, 29), "week"
    ) == ("2026-W01")
    with pytest.raises(RuleError, match=r"by one of day, week\. Got 'month'"):
        backtest(world.ws, compile_(RULES), FSET, by="month")  # type: ignore[arg-type]


def test_overlap_and_what_only_each_rule_matches_recomputed_one_by_one(world: World) -> None:
    report, o = world.report, world.report.overlap
    assert o is not None
    names = [r.name for r in report.rules]
    for i, a in enumerate(names):
        assert o.matched[i][i] == report.rules[i].matched
        for j, b in enumerate(names):
            both = [c for c in world.charges if a in c.matched and b in c.matched]
            assert o.matched[i][j] == len(both)
            assert o.fraud[i][j] == sum(c.label == "fraud" for c in both)
        only = [c for c in world.charges if c.matched == {a}]
        assert _tuples(o.only[i]) == _approx(_by_label(only))
    big, mid = names.index("big"), names.index("mid")
    assert o.only[big] == {} and o.matched[big][mid] == o.matched[big][big] > 0  # > 300 is within > 200
    assert sum(t.count for t in o.only[mid].values()) > 0


def test_block_review_and_authorization_rates_recomputed_against_the_baseline(world: World) -> None:
    n = len(world.charges)
    rates = world.report.to_json()["rates"]
    assert rates["block_rate"] == sum(c.action == "block" for c in world.charges) / n
    assert rates["review_rate"] == sum(c.action == "review" for c in world.charges) / n
    assert rates["request_3ds_rate"] == sum(c.action == "request_3ds" for c in world.charges) / n
    assert rates["authorization_rate_after"] == sum(c.action != "block" for c in world.charges) / n
    assert rates["authorization_rate_before"] == sum(c.old_action != "block" for c in world.charges) / n
    assert rates["blocked_before"] == sum(c.old_action == "block" for c in world.charges) > 0
    assert rates["authorization_rate_before"] != rates["authorization_rate_after"]


def test_views_on_a_hand_made_table_and_none_unless_asked() -> None:
    """Four charges on two days: a matched by r1 and r2, b by r2 alone, c by r3 alone (fraud), d by none."""
    con = duckdb.connect()
    con.register(
        "t",
        pa.table(
            {
                "charge_id": ["a", "b", "c", "d"],
                "label": ["legit", "fraud", "fraud", "pending"],
                "usd": [10.0, 20.0, 30.0, 40.0],
                "amount_usd": [5.0, 2.0, 9.0, 0.0],
            }
        ),
    )
    con.execute(
        "CREATE TABLE charges AS SELECT * FROM (VALUES ('a', TIMESTAMPTZ '2026-03-01 23:59:59+00'), "
        "('b', TIMESTAMPTZ '2026-03-02 00:00:00+00'), ('c', TIMESTAMPTZ '2026-03-02 12:00:00+00'), "
        "('d', TIMESTAMPTZ '2026-03-01 00:00:00+00')) v(charge_id, created)"
    )
    rs = compile_("r1: block if :amount_usd: = 5\nr2: review if :amount_usd: < 6 and :amount_usd: > 1\n"
                  "r3: block if :amount_usd: > 8\n")  # fmt: skip
    report = evaluate_table(con, rs, table="t")
    assert report.series is None and report.overlap is None
    assert report.to_json()["series"] is None and report.to_json()["overlap"] is None
    report = with_views(con, rs, report, FLAGS, by="day", overlap=True)
    assert report.overlap is not None and report.series is not None
    assert report.overlap.matched == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    assert report.overlap.fraud == [[0, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert report.overlap.only == [{}, {"fraud": Tally(1, 20.0)}, {"fraud": Tally(1, 30.0)}]
    first, second = report.series.periods
    assert (first.name, first.charges, second.name, second.charges) == ("2026-03-01", 2, "2026-03-02", 2)
    assert first.mix == {"block": {"legit": Tally(1, 10.0)}, "authorize": {"pending": Tally(1, 40.0)}}
    assert (
        first.rules[1].matched == {"legit": Tally(1, 10.0)} and first.rules[1].decided == {}
    )  # r1 decided a
    assert second.caught(("fraud",)) == Tally(2, 50.0) and second.caught(("legit", "refunded")) == Tally()


def test_the_json_report_holds_every_figure_of_the_report(world: World) -> None:
    report = world.report
    data = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert data["charges"] == report.charges and data["horizon_days"] == 4.0
    assert data["as_of"] == report.as_of.isoformat() if report.as_of else False
    assert data["window"] == {"from": None, "to": None, "days": report.days}
    assert data["warnings"] == list(report.warnings)
    assert [r["name"] for r in data["rules"]] == [r.name for r in report.rules]
    for r, js in zip(report.rules, data["rules"], strict=True):
        assert (js["matched"], js["decided"], js["precision"]) == (r.matched, r.decided, r.precision)
        fraud = r.outcomes["fraud"]
        assert js["outcomes"]["fraud"] == {"count": fraud.count, "usd": round(fraud.usd, 2)}
        assert js["recall"] == report.recall(r) and js["only"] is not None
    assert data["mix"]["block"]["fraud"]["count"] == report.mix["block"]["fraud"].count
    c = report.change
    assert data["change"]["changed"] == c.changed and data["change"]["fraud_newly_blocked"] == {
        "count": c.fraud_newly_blocked.count,
        "usd": round(c.fraud_newly_blocked.usd, 2),
    }
    assert len(data["change"]["transitions"]) == len(c.transitions)
    assert report.series is not None and report.overlap is not None
    assert [p["period"] for p in data["series"]["periods"]] == [p.name for p in report.series.periods]
    assert sum(p["charges"] for p in data["series"]["periods"]) == report.charges
    assert data["overlap"]["matched"] == report.overlap.matched


def _run(ws: Workspace, *args: str) -> Any:
    return CliRunner(env={"COLUMNS": "250"}).invoke(
        cli, ["-w", str(ws.root), "rules", "backtest", "--set", "tiny", "--horizon-days", "4", *args]
    )


def test_cli_prints_the_series_overlap_and_rates_and_writes_the_json(world: World, tmp_path: Path) -> None:
    rules = tmp_path / "new.rules"
    rules.write_text(RULES)
    out = tmp_path / "out" / "report.json"  # (its folder is made)
    r = _run(world.ws, str(rules), "--by", "week", "--rule-detail", "--overlap", "--json", str(out))
    assert r.exit_code == 0, r.output
    report = backtest(world.ws, compile_(RULES), FSET, horizon=HORIZON, by="week", overlap=True)
    assert report.series is not None and report.overlap is not None
    n, blocked = report.charges, sum(t.count for t in report.mix["block"].values())
    reviewed = sum(t.count for t in report.mix["review"].values())
    assert (
        f"Rates of the window's {n:,} charges: block {blocked / n:.2%} ({blocked:,}), review "
        f"{reviewed / n:.2%} ({reviewed:,})" in r.output
    )
    assert "authorization rate (let through: not blocked) 100.00% before (" in r.output
    assert f"-> {(n - blocked) / n:.2%} after" in r.output
    assert (
        "By ISO week (UTC)" in r.output
        and "By week and rule" in r.output
        and "┃ only ┃ only fraud ┃" in r.output
    )
    first = report.series.periods[0]
    assert re.search(rf"│ {first.name} +│ +{first.charges:,} │", r.output)
    assert "Overlap: pairs of rules" in r.output
    # the file is the report, as Python gives it
    assert json.loads(out.read_text()) == json.loads(json.dumps(report.to_json()))
    assert not list(out.parent.glob(".*tmp"))
    # --json alone: every view in the file (the series by day, the overlap), none printed: the rules table
    # as without it (the only-columns are --overlap's)
    r = _run(world.ws, str(rules), "--json", str(out))
    assert r.exit_code == 0 and "By UTC day" not in r.output and "Overlap:" not in r.output, r.output
    assert "only fraud" not in r.output and "only: matched by no other rule" not in r.output, r.output
    written = json.loads(out.read_text())
    assert written["series"]["by"] == "day" and written["overlap"] is not None


def test_cli_refuses_a_json_path_in_the_workspace_before_the_backtest(world: World, tmp_path: Path) -> None:
    rules = tmp_path / "new.rules"
    rules.write_text(RULES)
    inside = world.ws.root / "charges" / "report.json"
    r = _run(world.ws, str(rules), "--json", str(inside))
    assert r.exit_code == 1 and "--json:" in r.output and "is inside the workspace" in r.output, r.output
    assert "charges:" not in r.output and not inside.exists()  # refused before the backtest ran
    top = _run(world.ws, str(rules), "--json", str(world.ws.root / "report.json"))
    assert top.exit_code == 1 and "is inside the workspace" in top.output
    r = _run(world.ws, str(rules), "--json", str(tmp_path / "report.txt"))
    assert r.exit_code == 2 and "expected a file path ending in .json" in r.output
    r = _run(world.ws, str(rules), "--rule-detail")
    assert r.exit_code == 1 and "--rule-detail prints the --by series per rule" in r.output
