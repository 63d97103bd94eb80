"""What `rules apply`, `activate`, `rollback` and `backtest` tell an analyst (a fraud analyst's audit): the
active rules a new version turns off, the production model's scores by default, a window with no final label,
review and 3DS changes, each rule's recall, and the charges a rule matched. On the small world of
tests/test_rules_activate.py (its fixtures and helpers)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from payfm.cli.main import cli
from payfm.events.workspace import Workspace
from payfm.features.catalog import feature_set
from payfm.rules import rulesets
from payfm.rules.backtest import BacktestReport, backtest
from test_rules_activate import count, one_line_error, run, two, world

__all__ = ["two", "world"]  # fixtures, used by name


def test_cli_apply_names_the_active_rules_a_file_leaves_out(two: tuple[Workspace, Path]) -> None:
    """A version replaces the active one whole: a file holding one new rule turns the others off, which the
    change (counting only what it decides) does not show. The apply names them, and still applies."""
    ws, files = two
    (files / "one.rules").write_text("vel: block if :card.count_charges_1h: > 2\n")
    code, out = run(ws, "rules", "apply", str(files / "one.rules"), "--set", "tiny", "--horizon-days", "2")
    assert code == 0, out
    flat = " ".join(out.split())
    assert (
        f"warning: '{files / 'one.rules'}' leaves out 1 rule of the active ruleset v2, which it replaces "
        "whole: big (turned off)." in flat
    )
    assert rulesets.active(ws).version == 3  # type: ignore[union-attr]
    (files / "two.rules").write_text(
        "vel: block if :card.count_charges_1h: > 2\nbig: review if :amount_usd: > 900\n"
    )
    code, out = run(ws, "rules", "apply", str(files / "two.rules"), "--set", "tiny", "--horizon-days", "2")
    assert code == 0 and "leaves out" not in out, out  # every active rule kept (by name)
    # unnamed rules are named by their line: a file that shifts them keeps them (`rules show` + a rule on top)
    (files / "unnamed.rules").write_text("block if :amount_usd: > 5000\nreview if :amount_usd: > 3000\n")
    assert (
        run(ws, "rules", "apply", str(files / "unnamed.rules"), "--set", "tiny", "--horizon-days", "2")[0]
        == 0
    )
    (files / "more.rules").write_text(
        "# ruleset v5 by someone\nvel: review if :card.count_charges_1h: > 3\nblock if :amount_usd: > 5000\n"
        "review if :amount_usd: > 3000\n"
    )
    code, out = run(ws, "rules", "apply", str(files / "more.rules"), "--set", "tiny", "--horizon-days", "2")
    assert code == 0 and "leaves out" not in out, out
    (files / "less.rules").write_text(
        "vel: review if :card.count_charges_1h: > 3\nblock if :amount_usd: > 5000\n"
    )
    code, out = run(ws, "rules", "apply", str(files / "less.rules"), "--set", "tiny", "--horizon-days", "2")
    assert (
        code == 0
        and "leaves out 1 rule of the active ruleset v6, which it replaces whole: review_line_4"
        in (" ".join(out.split()))
    ), out
    (files / "respaced.rules").write_text(  # v8: the same unnamed rules, other spacing; `= 1` is not `= true`
        "vel: review if :card.count_charges_1h: > 3\nblock if   :amount_usd:>5000\n"
    )
    code, out = run(
        ws, "rules", "apply", str(files / "respaced.rules"), "--set", "tiny", "--horizon-days", "2"
    )
    assert code == 0 and "leaves out" not in out, out
    (files / "mine.rules").write_text("review_line_9: review if :amount_usd: > 1000\n")  # v9: a user's name
    assert (
        run(ws, "rules", "apply", str(files / "mine.rules"), "--set", "tiny", "--horizon-days", "2")[0] == 0
    )
    (files / "mine2.rules").write_text("review_line_9: review if :amount_usd: > 2000\n")  # same name, edited
    code, out = run(ws, "rules", "apply", str(files / "mine2.rules"), "--set", "tiny", "--horizon-days", "2")
    assert code == 0 and "leaves out" not in out, out
    switch = CliRunner(env={"COLUMNS": "250"}).invoke(
        cli, ["-w", str(ws.root), "rules", "activate", "8", "--no-backtest"]
    )
    out = " ".join(switch.output.split())  # v10 -> v8 at once: the switch says it too
    assert "The version made active leaves out 1 rule of the active ruleset v10" in out, out
    code, out = run(ws, "rules", "activate", "5")  # a switch replaces the active version whole too
    assert code == 0 and "The version made active leaves out 1 rule of the active ruleset v8" in " ".join(
        out.split()
    ), out


def test_cli_backtest_scores_with_the_production_model_by_default(two: tuple[Workspace, Path]) -> None:
    """Rules reading :risk_score: without --model or --scores: the production model scores the window, as the
    decision service would, and the output says which; with none in production, the error as before."""
    import numpy as np

    from payfm.registry import Registry
    from payfm.training.models import model_class

    ws, _ = two
    code, out = run(ws, "rules", "backtest", "--rule", "top: block if :risk_score: >= 90")
    one_line_error(code, out, "read :risk_score: or :risk_level:, but no scores were given")
    fs = feature_set("tiny", ws.root)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, len(fs.names)))
    y = (X[:, 0] > 1).astype(int)
    model = model_class("lr")(seed=0).fit(X[:300], y[:300], None, X[300:], y[300:], feature_names=fs.names)
    reg = Registry(ws)
    reg.promote(reg.register(model, name="fraud-lr", task="fraud", fset=fs).ref)  # type: ignore[arg-type]
    code, out = run(ws, "rules", "backtest", "--rule", "top: block if :risk_score: >= 90")
    assert code == 0, out
    assert "Scores: the production model fraud-lr@1, as the decision service scores" in out
    code, out = run(ws, "rules", "backtest", "--rule", "vel2: block if :card.count_charges_1h: > 3")
    assert code == 0 and "Scores:" not in out, out  # rules that read no score are not scored


def test_cli_backtest_says_when_no_label_is_final(two: tuple[Workspace, Path]) -> None:
    """A label horizon longer than the window's age leaves every label pending: the tables are all zeros,
    and the warning says the backtest cannot judge, with the age to stay under."""
    ws, _ = two
    args = ["-w", str(ws.root), "rules", "backtest", "--rule", "v: block if :card.count_charges_1h: > 3"]
    result = CliRunner(env={"COLUMNS": "250"}).invoke(cli, [*args, "--horizon-days", "30"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    m = re.search(
        r"warning: no charge of the window has a final label: the label horizon is 30 days and its oldest "
        r"charge is ([\d.]+) days old at .* this backtest cannot judge the rules",
        flat,
    )
    assert m and 11 < float(m.group(1)) < 30, flat
    assert "0 ($0) fraudulent, 0 ($0) refunded, 0 ($0) legitimate" in flat
    result = CliRunner(env={"COLUMNS": "250"}).invoke(cli, [*args, "--horizon-days", "2"])
    assert result.exit_code == 0 and "no charge of the window has a final label" not in result.output


def test_cli_backtest_says_review_changes_and_each_rules_recall(two: tuple[Workspace, Path]) -> None:
    """A review rule changed no block, so the change's block lines read zero: the charges newly sent to (or
    no longer sent to) review are counted by label. Each rule's recall is its share of the window's fraud."""
    ws, _ = two  # v2 active: big (review, amount_usd > 300) and vel (block)
    code, out = run(ws, "rules", "backtest", "--rule", "all: review if :amount_usd: > 1")
    assert code == 0, out

    def report_of(days: float) -> BacktestReport:
        return backtest(
            ws,
            rulesets.with_candidate(ws, "all: review if :amount_usd: > 1", "tiny"),
            feature_set("tiny", ws.root),
            baseline=rulesets.baseline(ws).ruleset,
            horizon=timedelta(days=days),
        )

    report = report_of(2)  # as the CLI ran it
    moved = [t for o, n, _, t in report.change.transitions if n == "review" and o != "review"]
    assert moved and count(out, "newly sent to review") == sum(t.count for t in moved)
    assert "no longer sent to review" not in out and "sent to 3DS" not in out
    [row] = [line for line in out.splitlines() if line.startswith("│ all ")]
    shown = report.recall(report.rules[-1])
    assert row.split("│")[-2].strip() == (f"{shown:.1%}" if shown is not None else "-")


def test_cli_backtest_lists_the_charges_a_rule_matched(two: tuple[Workspace, Path], tmp_path: Path) -> None:
    """An analyst checks a rule's false positives: --matches lists the charges it matched (good customers
    first, whole ids, the values it read), --matches-out writes every one as CSV."""
    import pyarrow.csv as pacsv

    ws, _ = two
    rule = "vel2: block if :card.count_charges_1h: >= 1 and :amount_usd: > 20"
    out_csv = tmp_path / "out" / "vel2.csv"  # its folder is made, as --out's are
    code, out = run(
        ws, "rules", "backtest", "--rule", rule, "--matches", "vel2", "--matches-out", str(out_csv)
    )
    assert code == 0, out
    report = backtest(
        ws,
        rulesets.with_candidate(ws, rule, "tiny"),
        feature_set("tiny", ws.root),
        baseline=rulesets.baseline(ws).ruleset,
        horizon=timedelta(days=2),
        matches="vel2",
    )
    matched = report.matched
    assert matched is not None and matched.num_rows == report.rules[-1].matched > 0
    assert matched.column_names == [
        "charge_id", "created", "merchant_id", "card_fingerprint", "amount_usd", "label", "decided",
        "card.count_charges_1h",
    ]  # fmt: skip
    rows = matched.to_pylist()
    assert all(r["card.count_charges_1h"] >= 1 and r["amount_usd"] > 20 for r in rows)
    order = ["legit", "refunded", "fraud", "pending", "declined"]
    keys = [(order.index(r["label"]), r["created"]) for r in rows]
    assert keys == sorted(keys)  # false positives first, then by time
    assert sum(r["decided"] for r in rows) == report.rules[-1].decided
    written = pacsv.read_csv(out_csv)
    assert written.num_rows == matched.num_rows
    assert written["charge_id"].to_pylist() == matched["charge_id"].to_pylist()
    assert f"Charges rule 'vel2' matched: {matched.num_rows:,}, legitimate and refunded first" in out
    assert f"charge_id              {rows[0]['charge_id']}" in out
    code, out = run(ws, "rules", "backtest", "--rule", rule, "--matches", "nope")
    one_line_error(
        code, out, "--matches (matches=) must name a rule of the backtested ruleset: one of 'big',"
    )
    code, out = run(ws, "rules", "backtest", "--rule", rule, "--matches-out", str(out_csv))
    one_line_error(code, out, "--matches-out writes the charges --matches lists: give --matches RULE too.")
    (tmp_path / "afile").write_text("")
    nowhere = tmp_path / "afile" / "x.csv"  # refused before the backtest, not after it
    code, out = run(
        ws, "rules", "backtest", "--rule", rule, "--matches", "vel2", "--matches-out", str(nowhere)
    )
    said = f"--matches-out: the folder of '{nowhere}' cannot be created: '{tmp_path / 'afile'}' is a file."
    one_line_error(code, out, said)
    code, out = run(
        ws, "rules", "backtest", "--rule", rule, "--matches", "vel2", "--matches-out", str(tmp_path / "out")
    )
    assert code == 2 and f"Invalid value for '--matches-out': File '{tmp_path / 'out'}' is a directory" in out
