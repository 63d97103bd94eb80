"""The backtest's baseline runs on its own feature set, and declined or blocked charges are not "legit".

Two defects an audit found: the active ruleset (the baseline) was evaluated on the command's --set, not on
the feature set it was saved with (which the decision service runs it on), so "Change against active
ruleset" was computed on values the service never sees; and a charge declined by its issuer or blocked, which
moved no money and so can never get a dispute, read as a good customer once mature. A refund after the label
horizon also made a charge "refunded". Every figure is checked against a count made here, in Python, from the
backfills and the event tables directly.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner

from factories import T0, charges, disputes
from payfm.cli.main import cli
from payfm.events.schema import SCHEMAS
from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set, feature_set
from payfm.features.definitions import Aggregate, FeatureSet
from payfm.features.training_set import load_backfill
from payfm.rules import rulesets
from payfm.rules.backtest import LABELS, Tally, backtest
from payfm.rules.limits import RuleError
from payfm.synth import WorldConfig, generate_world

NUM = "card.count_charges_1h"
# A workspace's set whose `card.count_charges_1h` counts a card's charges over a day, not an hour: the name
# is the default set's, the values are not.
COARSE = FeatureSet(
    "coarse",
    (
        Aggregate("card", "count", window=timedelta(days=1), name=NUM),
        Aggregate("card", "sum", "amount_usd", window=timedelta(days=1)),
    ),
)
TEXT = f"velocity: block if :{NUM}: >= 2\n"


def run(ws: Workspace, *args: str) -> tuple[int, str]:
    result = CliRunner(env={"COLUMNS": "250"}).invoke(cli, ["-w", str(ws.root), *args])
    return result.exit_code, result.output


def blocks(value: object, at_least: float = 2) -> bool:
    """``:card.count_charges_1h: >= at_least`` on one backfilled value (missing or NaN: no match)."""
    return value is not None and not math.isnan(float(value)) and float(value) >= at_least  # type: ignore[arg-type]


def values(ws: Workspace, fset: FeatureSet) -> dict[str, Any]:
    table = load_backfill(ws, fset, columns=["charge_id", NUM])
    return dict(zip(table["charge_id"].to_pylist(), table[NUM].to_pylist(), strict=True))


# ---- an independent reading of the labels, from the event tables ------------------------------------------


def labels_of(ws: Workspace, as_of: datetime, horizon: timedelta) -> dict[str, str]:
    """Each charge's label, as docs/rules.md defines it, computed row by row from the event tables."""
    fraud: dict[str, list[datetime]] = {}
    for d in ws.read("disputes").to_pylist():
        if d["reason"] == "fraudulent":
            fraud.setdefault(d["charge_id"], []).append(d["created"])
    for e in ws.read("early_fraud_warnings").to_pylist():
        fraud.setdefault(e["charge_id"], []).append(e["created"])
    for r in ws.read("reviews").to_pylist():
        if r["closed_as"] == "refunded_as_fraud":
            fraud.setdefault(r["charge_id"], []).append(r["created"])
    refunds: dict[str, list[datetime]] = {}
    for r in ws.read("refunds").to_pylist():
        refunds.setdefault(r["charge_id"], []).append(r["created"])
    out = {}
    for c in ws.read("charges").to_pylist():
        cid, until = c["charge_id"], min(c["created"] + horizon, as_of)
        mature = c["created"] + horizon <= as_of
        if mature and any(t <= until for t in fraud.get(cid, [])):
            out[cid] = "fraud"
        elif c["outcome"] in ("issuer_declined", "blocked"):
            out[cid] = "declined"  # moved no money: no dispute can come
        elif not mature:
            out[cid] = "pending"
        elif any(t <= until for t in refunds.get(cid, [])):
            out[cid] = "refunded"
        else:
            out[cid] = "legit"
    return out


def tallies(
    ws: Workspace, labels: dict[str, str], picked: Callable[[dict[str, Any]], bool]
) -> dict[str, Tally]:
    counts: Counter[str] = Counter()
    usd: Counter[str] = Counter()
    for c in ws.read("charges").to_pylist():
        if picked(c):
            counts[labels[c["charge_id"]]] += 1
            usd[labels[c["charge_id"]]] += c["amount_usd"] / 100
    return {lab: Tally(counts[lab], pytest.approx(usd[lab])) for lab in LABELS}  # type: ignore[arg-type]


# ---- 1. the baseline runs on the feature set it was saved with -------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A small generated world with the workspace set `coarse`, defined before `features define` refused a
    generated-form name its definition does not generate (the file written as it wrote it): such sets
    still load, and serve the rules saved with them."""
    root = tmp_path_factory.mktemp("sets")
    ws = Workspace.open(root / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=4_000, days=12, seed=11)), "replace")
    spec = root / "coarse.json"
    spec.write_text(json.dumps(COARSE.to_json()))
    code, out = run(ws, "features", "define", str(spec))
    assert code == 1 and "its name has the form of a generated name" in out  # refused today
    (ws.root / "features" / "sets").mkdir(parents=True, exist_ok=True)
    (ws.root / "features" / "sets" / "coarse.json").write_text(json.dumps(COARSE.to_json(), indent=2))
    assert feature_set("coarse", ws.root) == COARSE
    return ws


@pytest.fixture
def active_on_coarse(world: Workspace, tmp_path: Path) -> Workspace:
    """The world (copied) with TEXT saved on `coarse` and active, as `rules apply --set coarse` saves it."""
    import shutil

    ws = Workspace.open(shutil.copytree(world.root, tmp_path / "ws"))
    v = rulesets.save(ws, TEXT, activate=True, set_name="coarse", author="test")
    assert v.feature_set == "coarse"
    return ws


def test_the_active_ruleset_is_evaluated_on_the_set_it_was_saved_with(active_on_coarse: Workspace) -> None:
    ws = active_on_coarse
    served, candidate = values(ws, COARSE), values(ws, default_set())
    assert sum(blocks(v) for v in served.values()) > sum(blocks(v) for v in candidate.values()) > 0
    # Independent: the decisions differ where the two sets' values fall on either side of 2.
    unblocked = {cid for cid, v in served.items() if blocks(v) and not blocks(candidate[cid])}
    newly = {cid for cid, v in served.items() if not blocks(v) and blocks(candidate[cid])}
    assert unblocked

    # The CLI: `rules backtest FILE` (on default) compares with v1 as served, on `coarse`.
    f = ws.root.parent / "same.rules"
    f.write_text(TEXT)
    code, out = run(ws, "rules", "backtest", str(f))
    assert code == 0, out
    assert (
        f"Change against active ruleset v1 (on its feature set 'coarse'): {len(unblocked) + len(newly):,} "
        "charges decided differently" in out
    )
    code, out = run(ws, "rules", "backtest", str(f), "--set", "coarse")  # the same set: nothing changes
    assert code == 0 and "Change against active ruleset v1: 0 charges decided differently" in out

    # The library: each transition counted, by label.
    rs = rulesets.compile_text(ws, TEXT, "default")
    base = rulesets.load_active(ws)
    three_days = timedelta(days=3)  # labels of every kind on a 12-day world
    rep = backtest(
        ws, rs, default_set(), baseline=base, baseline_fset=COARSE, keep_decisions=True, horizon=three_days
    )
    c = rep.change
    assert c.changed == len(unblocked) + len(newly)
    assert sum(t.count for old, new, _, t in c.transitions if old == "block" and new == "authorize") == len(
        unblocked
    )
    assert sum(t.count for old, new, _, t in c.transitions if new == "block") == len(newly)
    assert rep.decisions is not None  # the candidate's own decisions read the default set
    decided = {r["charge_id"] for r in rep.decisions.to_pylist() if r["action"] == "block"}
    assert decided == {cid for cid, v in candidate.items() if blocks(v)}
    # The labels of each transition: the change figures split `unblocked` by label.
    labels = labels_of(ws, rep.as_of or T0, rep.horizon)
    by_label = Counter(labels[cid] for cid in unblocked)
    assert all(by_label[lab] for lab in ("legit", "pending", "declined")), by_label
    assert c.fraud_no_longer_blocked.count == by_label["fraud"]
    assert c.good_no_longer_blocked.count == by_label["refunded"] + by_label["legit"]
    assert c.pending_no_longer_blocked.count == by_label["pending"]
    assert c.declined_no_longer_blocked.count == by_label["declined"]
    # Without baseline_fset the baseline reads the candidate's set: the same text then changes nothing.
    assert backtest(ws, rs, default_set(), baseline=base, horizon=three_days).change.changed == 0


def test_a_candidate_rule_runs_on_the_active_versions_set(active_on_coarse: Workspace) -> None:
    ws = active_on_coarse
    served, other = values(ws, COARSE), values(ws, default_set())
    want = sum(blocks(v, 1) for v in served.values())
    assert want != sum(blocks(v, 1) for v in other.values())
    rule = f"wide: review if :{NUM}: >= 1"
    for given in ((), ("--set", "coarse")):  # --set left out: the active version's set
        code, out = run(ws, "rules", "backtest", "--rule", rule, *given)
        assert code == 0, out
        [row] = [line for line in out.splitlines() if line.startswith("│ wide ")]
        assert [c.strip() for c in row.split("│")][4] == f"{want:,}"  # matched, on `coarse`
        assert "Change against active ruleset v1: " in out  # the same set: no note
    # A feature the default set has and `coarse` has not: unknown where the rule runs.
    code, out = run(ws, "rules", "backtest", "--rule", "block if :card.count_declined_1h: >= 3")
    assert code == 1 and "Unknown attribute ':card.count_declined_1h:'" in out
    # Another set named explicitly: refused in one line, naming both sets and what to do.
    code, out = run(ws, "rules", "backtest", "--rule", rule, "--set", "default")
    assert code == 1 and out.count("\n") == 1 and "Traceback" not in out
    assert out.startswith(
        "Error: A candidate rule is added to the active ruleset v1, which runs on feature set"
    )
    assert "'coarse'" in out and "Got feature set 'default' (--set)" in out
    assert "backtest a whole ruleset FILE with --set default" in out
    # The library alike.
    with pytest.raises(RuleError, match=r"runs on feature set 'coarse' .* Got feature set 'default'"):
        rulesets.with_candidate(ws, rule, "default")
    combined = rulesets.with_candidate(ws, rule)
    assert [r.name for r in combined.rules] == ["velocity", "wide"]
    assert rulesets.candidate_set(ws) == "coarse" and rulesets.candidate_set(ws, "coarse") == "coarse"


def test_without_an_active_ruleset_a_candidate_takes_the_set_given(world: Workspace) -> None:
    assert rulesets.active(world) is None
    assert rulesets.candidate_set(world) == "default" and rulesets.candidate_set(world, "coarse") == "coarse"


# ---- 2. declined and blocked charges are neither good nor fraud -------------------------------------------

H = timedelta(days=20)
AS_OF = T0 + timedelta(days=30)
LATE = T0 + timedelta(days=15)  # charges created then are within the horizon of AS_OF
DAY10 = T0 + timedelta(days=10)


def _refund(i: int, charge_id: str, at: datetime) -> dict[str, Any]:
    return {
        "refund_id": f"re_{i}",
        "charge_id": charge_id,
        "created": at,
        "amount": 1,
        "currency": "usd",
        "reason": "requested_by_customer",
    }


@pytest.fixture(scope="module")
def hand_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """13 charges, $100 x (i + 1), 7 hours apart (10 to 12 on day 15: not mature on day 30, 20-day horizon).

    0 legit; 1 fraud (dispute); 2 issuer-declined; 3 blocked; 4 issuer-declined with an EFW: fraud (a fraud
    outcome known and final); 5 refunded (day 10); 6 refunded on day 25, after its horizon: legit; 7 legit;
    8 blocked; 9 legit; 10 issuer-declined, not mature: declined, not pending; 11 pending; 12 issuer-declined
    with an EFW, not mature: declined.
    """
    rows = charges(13).to_pylist()
    for i, row in enumerate(rows):
        row["amount_usd"] = row["amount"] = 10_000 * (i + 1)
        if i in (2, 4, 10, 12):
            row["outcome"], row["decline_code"] = "issuer_declined", "do_not_honor"
        elif i in (3, 8):
            row["outcome"] = "blocked"
        if i >= 10:
            row["created"] = LATE + timedelta(hours=i)
    ids = [r["charge_id"] for r in rows]
    efws = [
        {"efw_id": f"efw_{i}", "charge_id": ids[i], "created": at, "fraud_type": "misc"}
        for i, at in ((4, DAY10), (12, LATE + timedelta(days=1)))
    ]
    refunds = [_refund(5, ids[5], DAY10), _refund(6, ids[6], T0 + timedelta(days=25))]
    ws = Workspace.open(tmp_path_factory.mktemp("declined") / "ws", create=True)
    ws.write_stream(
        [
            ("charges", pa.Table.from_pylist(rows, schema=SCHEMAS["charges"])),
            ("disputes", disputes([ids[1]], DAY10)),
            ("early_fraud_warnings", pa.Table.from_pylist(efws, schema=SCHEMAS["early_fraud_warnings"])),
            ("refunds", pa.Table.from_pylist(refunds, schema=SCHEMAS["refunds"])),
        ],
        "replace",
    )
    return ws


def _compile(text: str) -> Any:
    return rulesets.compile_text(None, text, "tiny")


def test_declined_and_blocked_charges_are_counted_apart(hand_ws: Workspace) -> None:
    rule = "mid: block if :amount_usd: >= 200 and :amount_usd: <= 900"  # charges 1..8
    rep = backtest(hand_ws, _compile(rule), feature_set("tiny"), horizon=H, as_of=AS_OF)
    assert rep.outcomes == {
        "fraud": Tally(2, 700.0),  # 1, 4
        "refunded": Tally(1, 600.0),  # 5
        "legit": Tally(4, 2600.0),  # 0, 6 (its refund came after the horizon), 7, 9
        "pending": Tally(1, 1200.0),  # 11
        "declined": Tally(5, 4000.0),  # 2, 3, 8, 10, 12
    }
    assert rep.outcomes == tallies(hand_ws, labels_of(hand_ws, AS_OF, H), lambda c: True)
    assert rep.declined == 5 and rep.pending == 1 and rep.pending_fraud == 0  # 12 is declined, not pending
    [mid] = rep.rules
    assert mid.outcomes == tallies(
        hand_ws, labels_of(hand_ws, AS_OF, H), lambda c: 200 <= c["amount_usd"] / 100 <= 900
    )
    assert (mid.matched, mid.declined, mid.pending) == (8, 3, 0)
    assert mid.precision == pytest.approx(2 / 5)  # fraud 1, 4 of 1, 4, 5, 6, 7: not 2 / 8 with 2, 3, 8
    c = rep.change  # against no baseline
    assert c.fraud_newly_blocked == Tally(2, 700.0)
    assert c.good_newly_blocked == Tally(3, 2100.0)  # 5, 6, 7: not the declined ones
    assert c.declined_newly_blocked == Tally(3, 1600.0)  # 2, 3, 8
    assert c.pending_newly_blocked == Tally(0, 0.0) and c.changed == 8
    # Against a baseline that blocked them all, each unblocked charge is counted under its own label.
    everything = _compile("block if :amount_usd: > 0")
    rep = backtest(hand_ws, _compile(rule), feature_set("tiny"), baseline=everything, horizon=H, as_of=AS_OF)
    assert rep.change.declined_no_longer_blocked == Tally(2, 2400.0)  # 10, 12
    assert rep.change.good_no_longer_blocked == Tally(2, 1100.0)  # 0, 9
    assert rep.change.pending_no_longer_blocked == Tally(1, 1200.0)  # 11


def test_a_refund_after_the_horizon_leaves_the_charge_legit(hand_ws: Workspace) -> None:
    rule = "six: review if :amount_usd: = 700"
    rep = backtest(hand_ws, _compile(rule), feature_set("tiny"), horizon=H, as_of=AS_OF)
    assert rep.rules[0].outcomes["legit"] == Tally(1, 700.0) and rep.rules[0].outcomes["refunded"].count == 0
    longer = backtest(hand_ws, _compile(rule), feature_set("tiny"), horizon=timedelta(days=24), as_of=AS_OF)
    assert longer.rules[0].outcomes["refunded"] == Tally(1, 700.0)  # day 25 is within 24 days of day 1.75


def test_the_report_shows_the_declined_charges(hand_ws: Workspace) -> None:
    code, out = run(
        hand_ws,
        "rules",
        "backtest",
        "--set",
        "tiny",
        "--rule",
        "mid: block if :amount_usd: >= 200 and :amount_usd: <= 900",
        "--horizon-days",
        "20",
    )
    assert code == 0, out
    # as of the log's end (the refund on day 25): charges 10..12 (day 15) are within the horizon
    assert "1 ($1,200) pending (labels not final yet); 5 ($4,000) declined (declined or blocked" in out
    assert "declined charges newly blocked: 3 ($1,600)" in out
    [row] = [line for line in out.splitlines() if line.startswith("│ mid ")]
    cells = [c.strip() for c in row.split("│")][1:-1]
    assert cells[5:] == ["2 ($700)", "1 ($600)", "2 ($1,500)", "0 ($0)", "3 ($1,600)", "40.0%", "100.0%"]
    assert "charges: 2 ($700) fraudulent" in out  # the recall: both of the window's frauds matched


def test_labels_on_a_generated_world_match_the_event_tables(world: Workspace) -> None:
    """On a world with declines and blocks (card testing), each label's count is the tables' own."""
    horizon = timedelta(days=3)
    rule = "card_testing: block if :card.count_declined_1h: >= 1"
    rep = backtest(world, rulesets.compile_text(world, rule), default_set(), horizon=horizon)
    labels = labels_of(world, rep.as_of or T0, horizon)
    assert rep.outcomes == tallies(world, labels, lambda c: True)
    no_money = sum(c["outcome"] != "authorized" for c in world.read("charges", ["outcome"]).to_pylist())
    assert 0 < rep.declined <= no_money
    [r] = rep.rules
    assert r.declined > 0
    fraud, good = r.outcomes["fraud"].count, r.outcomes["refunded"].count + r.outcomes["legit"].count
    assert r.precision == (fraud / (fraud + good) if fraud + good else None)
