"""Backtest counts against a hand-computed example, scores, windows, and parity on a synthetic world."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from factories import T0, charges, disputes
from payfm.cli.main import cli
from payfm.events.schema import SCHEMAS
from payfm.events.workspace import Workspace
from payfm.features.catalog import tiny_set
from payfm.features.training_set import load_backfill
from payfm.rules.backtest import Tally, backtest
from payfm.rules.catalog import AttributeCatalog, charge_values, check_types
from payfm.rules.compiler import Ruleset, compile_rules
from payfm.rules.grammar import parse_rules
from payfm.rules.limits import RuleError
from payfm.synth import WorldConfig, generate_world

FSET = tiny_set()
CATALOG = AttributeCatalog.for_feature_set(FSET)


def compile_(text: str) -> Ruleset:
    rules = parse_rules(text)
    check_types(rules, CATALOG)
    return compile_rules(rules, None, CATALOG.types)


@pytest.fixture(scope="module")
def hand_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """10 charges, $100 x (i + 1); ip_country NG for 1, 3, 5 and missing for 7.

    Outcomes: fraud = {1, 2} (fraudulent disputes) + {3} (EFW); refunded = {5} (1 is refunded too, but fraud
    wins); 4 has a non-fraud dispute and stays legit. So legit = {0, 4, 6, 7, 8, 9}.
    """
    rows = charges(10).to_pylist()
    for i, row in enumerate(rows):
        row["amount_usd"] = row["amount"] = 10_000 * (i + 1)
        row["ip_country"] = "NG" if i in (1, 3, 5) else None if i == 7 else "US"
    ids = [r["charge_id"] for r in rows]
    later = T0 + timedelta(days=10)
    efw = pa.Table.from_pylist(
        [{"efw_id": "efw_0", "charge_id": ids[3], "created": later, "fraud_type": "misc"}],
        schema=SCHEMAS["early_fraud_warnings"],
    )
    refunds = pa.Table.from_pylist(
        [
            {
                "refund_id": f"re_{i}",
                "charge_id": ids[i],
                "created": later,
                "amount": 1,
                "currency": "usd",
                "reason": "requested_by_customer",
            }
            for i in (1, 5)
        ],
        schema=SCHEMAS["refunds"],
    )
    general = disputes([ids[4]], later, reason="general").to_pylist()
    general[0]["dispute_id"] = "dp_general"
    ws = Workspace.open(tmp_path_factory.mktemp("hand") / "ws", create=True)
    ws.write_stream(
        [
            ("charges", pa.Table.from_pylist(rows, schema=SCHEMAS["charges"])),
            (
                "disputes",
                pa.concat_tables(
                    [
                        disputes([ids[1], ids[2]], later),
                        pa.Table.from_pylist(general, schema=SCHEMAS["disputes"]),
                    ]
                ),
            ),
            ("early_fraud_warnings", efw),
            ("refunds", refunds),
        ],
        "replace",
    )
    return ws


# Every label of the hand example final: 20 days after each charge, as known 30 days after the first one.
SETTLED = {"horizon": timedelta(days=20), "as_of": T0 + timedelta(days=30)}
# The hand example's last event is 10 days after its first charge: an as_of after it decides every label
# that horizon makes final in between, which a backtest warns of (a review: a typo of --as-of did it
# silently); the example is complete up to it.
AFTER_THE_LOG = (
    "--as-of 2026-01-31T00:00:00 is after the log's last event (2026-01-11T00:00:00): the log holds no "
    "outcome after it, so 10 charges whose label horizon ends in between read final"
)

NEW = """geo: block if :ip_country: = 'NG'
big: review if :amount_usd: >= 700
vip: allow if :amount_usd: = 600
"""
OLD = "old: block if :amount_usd: >= 900"


def test_backtest_counts_match_the_hand_computed_example(hand_ws: Workspace) -> None:
    rep = backtest(hand_ws, compile_(NEW), FSET, baseline=compile_(OLD), keep_decisions=True, **SETTLED)
    assert rep.charges == 10 and rep.pending == 0
    [warning] = rep.warnings
    assert warning.startswith(AFTER_THE_LOG)
    assert rep.outcomes == {
        "fraud": Tally(3, 900.0),
        "refunded": Tally(1, 600.0),
        "legit": Tally(6, 4000.0),
        "pending": Tally(0, 0.0),
        "declined": Tally(0, 0.0),  # every charge of the hand example was authorized
    }
    geo, big, vip = rep.rules
    assert (geo.matched, geo.decided) == (3, 2)  # 1, 3, 5; 5 is decided by the allow rule
    assert geo.outcomes == {
        "fraud": Tally(2, 600.0),
        "refunded": Tally(1, 600.0),
        "legit": Tally(0, 0.0),
        "pending": Tally(0, 0.0),
        "declined": Tally(0, 0.0),  # every charge of the hand example was authorized
    }
    assert geo.precision == 2 / 3
    assert (big.matched, big.decided, big.outcomes["legit"]) == (4, 4, Tally(4, 3400.0))  # 6..9, 7 has no ip
    assert (vip.matched, vip.decided, vip.outcomes["refunded"]) == (1, 1, Tally(1, 600.0))
    assert rep.mix == {
        "block": {"fraud": Tally(2, 600.0)},
        "allow": {"refunded": Tally(1, 600.0)},
        "review": {"legit": Tally(4, 3400.0)},
        "authorize": {"fraud": Tally(1, 300.0), "legit": Tally(2, 600.0)},
    }
    c = rep.change
    assert c.changed == 7  # 1, 3 newly blocked; 5 allowed; 6, 7 reviewed; 8, 9 block -> review
    assert c.outcome_changed == 6  # 5 is authorized either way: now by the allow rule, before by no rule
    assert c.fraud_newly_blocked == Tally(2, 600.0)
    assert c.fraud_no_longer_blocked == Tally(0, 0.0)
    assert c.good_newly_blocked == Tally(0, 0.0)
    assert c.good_no_longer_blocked == Tally(2, 1900.0)
    assert c.allow_overrides == {"refunded": Tally(1, 600.0)}
    assert rep.decisions is not None
    assert rep.decisions.column("action").to_pylist() == [
        None,
        "block",
        None,
        "block",
        None,
        "allow",
        "review",
        "review",
        "review",
        "review",
    ]


def test_rules_that_match_nothing_everything_or_decide_nothing_are_warned_of(hand_ws: Workspace) -> None:
    """Found by a fraud analyst's audit: a rule on a risk level the model never gives matched nothing and
    said nothing; a rule always true and one shadowed by an allow rule passed silently too."""
    text = (
        "never: block if :amount_usd: > 1000000\n"
        "always: review if :amount_usd: is not missing\n"
        "shadowed: block if :amount_usd: = 600\n"
        "vip: allow if :amount_usd: = 600\n"
        "geo: block if :ip_country: = 'NG'\n"
    )
    rep = backtest(hand_ws, compile_(text), FSET, **SETTLED)
    three_ds = backtest(hand_ws, compile_("t: request_3ds if :amount_usd: > 1000000\n"), FSET, **SETTLED)
    assert three_ds.warnings[0].startswith(AFTER_THE_LOG)
    assert three_ds.warnings[1].endswith("; it matches only charges not through 3-D Secure yet)")
    assert rep.warnings[0].startswith(AFTER_THE_LOG) and rep.warnings[1:] == (
        "rule 'never' matched none of the window's 10 charges: check its thresholds and values (a risk level "
        "the model never gives, a value no charge holds)",
        "rule 'always' matched every one of the window's 10 charges",
        "rule 'shadowed' matched 1 charge and decided none: rules of an action tried before 'block' "
        "(request_3ds, allow, block, review), or before it in the file, took them all",
    )


def test_window_is_half_open_on_created(hand_ws: Workspace) -> None:
    start = T0 + timedelta(hours=1)  # charges are 7 hours apart: drops charge 0
    end = T0 + timedelta(hours=7 * 5)  # keeps 1..4
    rep = backtest(hand_ws, compile_(NEW), FSET, start=start, end=end, **SETTLED)
    assert rep.charges == 4 and rep.rules[0].matched == 2
    # Per-day rates (a review rule's load) divide by the window's length within the log: 34 hours here;
    # the whole log runs from charge 0 to charge 9, 63 hours.
    assert rep.days == pytest.approx(34 / 24) and rep.per_day(17) == pytest.approx(12.0)
    whole = backtest(hand_ws, compile_(NEW), FSET, start=T0 - timedelta(days=9), **SETTLED)
    assert whole.days == pytest.approx(63 / 24)
    with pytest.raises(RuleError, match=r"must end after it starts\. Got --from"):  # not 0 charges, silently
        backtest(hand_ws, compile_(NEW), FSET, start=end, end=start)


def test_risk_score_needs_scores_and_reads_them(hand_ws: Workspace) -> None:
    rs = compile_("hi: block if :risk_score: >= 80 and :risk_level: = 'highest'")
    with pytest.raises(
        RuleError, match=r"Rule 'hi' read :risk_score: or :risk_level:, but no scores were given\. Give --m"
    ):
        backtest(hand_ws, rs, FSET)
    ids = hand_ws.read("charges", ["charge_id"]).column(0).to_pylist()
    scores = pa.table(
        {
            "charge_id": ids,
            "risk_score": [float(10 * i) for i in range(10)],
            "risk_level": ["highest" if i >= 9 else "normal" for i in range(10)],
        }
    )
    rep = backtest(hand_ws, rs, FSET, scores=scores, **SETTLED)
    assert rep.rules[0].matched == 1 and rep.rules[0].outcomes["legit"] == Tally(1, 1000.0)
    with pytest.raises(RuleError, match="Missing: risk_level"):
        backtest(hand_ws, rs, FSET, scores=scores.drop_columns(["risk_level"]))


def test_backtest_and_one_charge_evaluator_agree_on_a_synthetic_world(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=20_000, days=20, seed=3)), "replace")
    text = (
        "v: request_3ds if :card.count_charges_1h: > 1\n"
        "g: review if :card_country: != :ip_country: and :amount_usd: > 200\n"
        "b: block if :ip_country: in ('NG', 'RU') or :amount_usd: / :card.sum_amount_usd_1d: > 3\n"
        "a: allow if :card_brand: = 'amex' and :ip_country: is not missing\n"
        "f: block if :card.count_fraud_disputes_all: > 0\n"
    )
    rs = compile_(text)
    rep = backtest(ws, rs, FSET, keep_decisions=True)
    assert rep.decisions is not None
    sql = {r["charge_id"]: (r["action"], r["rule"]) for r in rep.decisions.to_pylist()}
    feats = {r["charge_id"]: r for r in load_backfill(ws, FSET).to_pylist()}
    mismatches = 0
    for c in ws.read("charges").to_pylist():
        d = rs.decide(charge_values(c, feats[c["charge_id"]]))
        mismatches += (d.action, d.rule) != sql[c["charge_id"]]
    assert mismatches == 0 and len(sql) == rep.charges
    assert {a for a, _ in sql.values()} >= {"review", "block", "allow", None}  # the rules do fire


def test_a_review_closed_as_refunded_as_fraud_counts_as_fraud(hand_ws: Workspace, tmp_path: Path) -> None:
    import shutil

    ws = Workspace.open(shutil.copytree(hand_ws.root, tmp_path / "ws"))
    ids = ws.read("charges")["charge_id"].to_pylist()
    closure = {
        "charge_id": ids[6],  # legit in the hand example
        "created": T0 + timedelta(days=12),
        "opened": T0 + timedelta(days=2),
        "closed_as": "refunded_as_fraud",
        "rule": "big",
        "risk_score": None,
        "reviewer": "analyst",
        "note": None,
    }
    approved = {**closure, "charge_id": ids[8], "closed_as": "approved"}
    with ws.writer() as w:
        w.write("reviews", pa.Table.from_pylist([closure, approved], schema=SCHEMAS["reviews"]))
    rep = backtest(ws, compile_(NEW), FSET, **SETTLED)
    assert rep.outcomes["fraud"] == Tally(4, 1600.0)  # 1, 2, 3 and now 6 ($700)
    assert rep.outcomes["legit"] == Tally(5, 3300.0)  # 8 stays legit: an approval is not a label


def test_an_outcome_written_long_after_the_last_charge_warns_that_every_label_reads_final(
    hand_ws: Workspace, tmp_path: Path
) -> None:
    """A review closed today on a log of past charges moves the log's end (the labels' "now") past every
    horizon: the backtest says so instead of silently reading the last charges' labels as final."""
    import shutil

    ws = Workspace.open(shutil.copytree(hand_ws.root, tmp_path / "ws"))
    at_end = backtest(ws, compile_(NEW), FSET, horizon=timedelta(days=20))
    assert not any("latest event" in w for w in at_end.warnings)  # the EFW 10 days after: within 20 days
    closure = {
        "charge_id": ws.read("charges")["charge_id"].to_pylist()[8],
        "created": T0 + timedelta(days=200),  # closed "now", long after the log's charges
        "opened": T0 + timedelta(days=1),
        "closed_as": "approved",
        "rule": "big",
        "risk_score": None,
        "reviewer": "analyst",
        "note": None,
    }
    with ws.writer() as w:
        w.write("reviews", pa.Table.from_pylist([closure], schema=SCHEMAS["reviews"]))
    rep = backtest(ws, compile_(NEW), FSET, horizon=timedelta(days=20))
    assert rep.as_of == T0 + timedelta(days=200) and rep.pending == 0
    [warning] = [w for w in rep.warnings if "latest event" in w]
    assert "197 days after its latest charge (2026-01-03T15:00:00)" in warning  # 10 charges, 6 h apart
    assert "every label reads final" in warning
    assert backtest(ws, compile_(NEW), FSET, **SETTLED).warnings == ()  # an as_of chosen: no warning
    # --as-of reads the labels as known then (the warning pointed at Python only: an analyst's audit)
    cmd = ["-w", str(ws.root), "rules", "backtest", "--set", "tiny", "--rule", "review if :amount_usd: > 1"]
    end = CliRunner(env={"COLUMNS": "200"}).invoke(cli, [*cmd, "--horizon-days", "20"])
    assert end.exit_code == 0 and "every label reads final" in end.output and "--as-of TIME" in end.output
    early = (T0 + timedelta(days=4)).date().isoformat()  # 4 days after the first charge: all pending
    then = CliRunner(env={"COLUMNS": "200"}).invoke(cli, [*cmd, "--horizon-days", "20", "--as-of", early])
    assert then.exit_code == 0 and "every label reads final" not in then.output, then.output
    flat = " ".join(then.output.split())  # all pending as of then: the warning says it cannot judge
    assert f"Labels as of {early}T00:00:00 (--as-of)" in flat
    assert f"its oldest charge is 4.0 days old at {early}T00:00:00 (--as-of)" in flat
    assert "is before the window's end" not in then.output  # (the charges end 2.6 days in)
    before = CliRunner(env={"COLUMNS": "200"}).invoke(
        cli, [*cmd, "--horizon-days", "2", "--as-of", "2025-12-25"]
    )
    said = " ".join(before.output.split())  # labels read before the window: no negative age, a later --as-of
    assert "before the window's first charge, when nothing of it was known; give a later --as-of" in said
    assert "days old" not in said
    cut = (T0 + timedelta(days=1)).date().isoformat()  # within the window: said so
    mid = CliRunner(env={"COLUMNS": "200"}).invoke(cli, [*cmd, "--horizon-days", "20", "--as-of", cut])
    assert f"--as-of {cut}T00:00:00 is before the window's end (2026-01-03T15:00:00)" in mid.output
    assert (
        "10 charges: 0 ($0) fraudulent, 0 ($0) refunded, 0 ($0) legitimate; 10 ($5,500) pending"
        in then.output
    )


def test_backtest_scores_the_window_with_a_registered_model(tmp_path: Path) -> None:
    import numpy as np
    from click.testing import CliRunner

    from payfm.cli.main import cli
    from payfm.registry import Registry
    from payfm.training.models import model_class
    from payfm.training.predict import model_scores, score_window
    from payfm.training.scores import ScoreLevels, risk_score

    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=3_000, days=5, seed=3)), "replace")
    feats = load_backfill(ws, FSET)
    X = np.column_stack([feats[n].to_numpy(zero_copy_only=False) for n in FSET.names])
    y = (X[:, FSET.names.index("amount_usd")] > np.nanmedian(X[:, FSET.names.index("amount_usd")])).astype(
        int
    )
    model = model_class("lr")(calibration="none").fit(np.nan_to_num(X), y, feature_names=FSET.names)
    mv = Registry(ws).register(model, name="fraud-lr", task="fraud", fset=FSET)
    got = model_scores(ws, mv.ref, None, None)
    probs = dict(zip(*(score_window(ws, mv.ref)[c].to_pylist() for c in ("charge_id", "score")), strict=True))
    want = {cid: risk_score(p) for cid, p in probs.items()}  # as the decision service scores one charge
    assert dict(zip(got["charge_id"].to_pylist(), got["risk_score"].to_pylist(), strict=True)) == want
    assert got["risk_level"].to_pylist() == [ScoreLevels().level(s) for s in got["risk_score"].to_pylist()]
    cut = int(np.median(list(want.values())))
    high = sum(s >= cut for s in want.values())
    assert 0 < high < len(want)
    rule = f"hi: block if :risk_score: >= {cut}"
    base = ["-w", str(ws.root), "rules", "backtest", "--set", "tiny", "--rule", rule]
    r = CliRunner(env={"COLUMNS": "200"}).invoke(cli, [*base, "--model", mv.ref], catch_exceptions=False)
    assert r.exit_code == 0 and "│ hi " in r.output
    [row] = [line for line in r.output.splitlines() if line.startswith("│ hi ")]
    assert [c.strip() for c in row.split("│")][4] == f"{high:,}"  # matched
    both = CliRunner().invoke(cli, [*base, "--model", mv.ref, "--scores", str(tmp_path / "x.parquet")])
    assert both.exit_code == 1 and "not both" in both.output


def test_several_rule_options_are_backtested_together_in_order(hand_ws: Workspace) -> None:
    """`--rule A --rule B` adds both candidates (an analyst's block rule and its review fallback); Click's
    plain option kept the last one only, and the report read as the effect of both."""
    base = ["-w", str(hand_ws.root), "rules", "backtest", "--set", "tiny", "--horizon-days", "20"]
    rules = ["--rule", "geo: block if :ip_country: = 'NG'", "--rule", "review if :amount_usd: > 800"]
    r = CliRunner(env={"COLUMNS": "200"}).invoke(cli, [*base, *rules], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = {c[1]: c for c in (line.split("│") for line in r.output.splitlines()) if len(c) > 5}
    names = [n.strip() for n in rows]
    assert names.index("geo") < names.index("candidate")
    matched = {n.strip(): int(c[4].strip()) for n, c in rows.items() if n.strip() in ("geo", "candidate")}
    assert matched == {"geo": 3, "candidate": 2}  # charges 1, 3, 5 (NG); 8 and 9 ($900, $1,000)
    bad = CliRunner().invoke(
        cli, [*base, "--rule", "block if :amount_usd: > 1", "--rule", "block if :nope: > 1"]
    )
    assert bad.exit_code == 1 and "--rule 2 of 2: " in bad.output and "nope" in bad.output
    twice = CliRunner().invoke(
        cli, [*base, "--rule", "a: block if :amount_usd: > 1", "--rule", "a: review if :amount_usd: > 2"]
    )
    assert (
        twice.exit_code == 1
        and "--rule 2 of 2: Rule name 'a' is already used by another --rule" in twice.output
    )


def test_each_rules_recall_is_its_share_of_the_windows_final_fraud(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=4_000, days=20, seed=3, fraud_rate=0.05)), "replace")
    rs = compile_(
        "all: review if :amount_usd: > 0\nbig: block if :amount_usd: > 300\nnone: block if :amount_usd: < 0\n"
    )
    report = backtest(ws, rs, FSET, horizon=timedelta(days=5))
    fraud = report.outcomes["fraud"].count
    assert fraud > 0
    recalls = [report.recall(r) for r in report.rules]
    assert recalls == [r.outcomes["fraud"].count / fraud for r in report.rules]
    assert recalls[0] == 1.0 and recalls[2] == 0.0 and 0 < recalls[1] < 1  # type: ignore[operator]
    later = backtest(ws, rs, FSET, horizon=timedelta(days=40))  # nothing final: no recall
    assert later.outcomes["fraud"].count == 0 and later.recall(later.rules[0]) is None


def test_a_rules_pending_matches_say_how_many_are_reported_as_fraud_already(tmp_path: Path) -> None:
    """A fresh rule is judged by the fraud reported so far: its pending matches count those apart."""
    ws = Workspace.open(tmp_path / "ws", create=True)
    ws.write_stream(generate_world(WorldConfig(charges=4_000, days=20, seed=3, fraud_rate=0.05)), "replace")
    rs = compile_("all: review if :amount_usd: > 0\nnone: block if :amount_usd: < 0\n")
    report = backtest(ws, rs, FSET, horizon=timedelta(days=40))  # nothing final: every label pending
    everything, nothing = report.rules
    assert everything.pending == report.pending > 0 and everything.pending_fraud == report.pending_fraud > 0
    assert nothing.pending_fraud == 0
    r = CliRunner(env={"COLUMNS": "250"}).invoke(
        cli,
        ["-w", str(ws.root), "rules", "backtest", "--set", "tiny", "--rule", "b: block if :amount_usd: > 0"],
    )
    assert r.exit_code == 0 and f"; {report.pending_fraud:,} fraud so far" in r.output, r.output
