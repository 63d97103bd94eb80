"""A rule that matched nothing because the log has no value of what it reads (an imported export without IP
addresses): the warning said to check its thresholds (found by an ML engineer backtesting on Sparkov)."""

from __future__ import annotations

from pathlib import Path

from payfm.events.importer import import_file
from payfm.events.workspace import Workspace
from payfm.features.catalog import default_set
from payfm.rules.backtest import backtest
from payfm.rules.rulesets import compile_text

SAMPLE = Path(__file__).parent / "data" / "sparkov_sample.parquet"


def test_a_rule_reading_an_attribute_no_charge_has_is_told_why_it_matched_nothing(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws", create=True)
    import_file(ws, SAMPLE, "sparkov")
    text = (
        "ng: block if :ip_country: = 'NG'\nhuge: block if :amount_usd: > 1000000\n"
        "big: review if :amount_usd: > 100"
    )
    report = backtest(ws, compile_text(ws, text), default_set())
    assert (
        "rule 'ng' matched none of the window's 384 charges: it reads :ip_country:, missing on every one"
        in (" ".join(report.warnings))
    )
    huge = [w for w in report.warnings if w.startswith("rule 'huge'")]
    assert huge and "check its thresholds" in huge[0]  # (a value no charge reaches: the generic warning)
    assert not any(w.startswith("rule 'big'") for w in report.warnings)  # (it matched: nothing to say)
