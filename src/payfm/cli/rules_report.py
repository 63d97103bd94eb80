"""How `payfm rules backtest`, `apply`, `activate` and `rollback` print a backtest: per rule, the decision
mix, the change against the baseline, and the charges a rule matched."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
from rich.table import Table
from rich.text import Text

from payfm.cli.render import console, err_console, plural
from payfm.errors import ConfigError
from payfm.events.cards import shown_text
from payfm.events.workspace import atomic_write_bytes
from payfm.rules.backtest import LABELS, BacktestReport, RuleStats, Tally
from payfm.rules.backtest_views import rates

DAY = timedelta(days=1)
MATCHES_SHOWN = 20  # matched charges printed by --matches (--matches-out writes them all)


def per_day(rate: float) -> str:
    """A daily rate as the reports print it: one decimal, none from 100 on, and two significant digits
    below 0.1 (a rule that sent one charge in a 60-day window to review read "0.0 a day").

    >>> per_day(120.5), per_day(2.34), per_day(0.0167), per_day(0.0)
    ('120', '2.3', '0.017', '0.0')
    """
    if rate >= 100:
        return f"{rate:,.0f}"
    return f"{rate:.2g}" if 0 < rate < 0.1 else f"{rate:,.1f}"


def _money(t: Tally) -> str:
    return f"{t.count:,} (${t.usd:,.0f})"


def warn(message: str) -> None:
    err_console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)


def _reported(r: RuleStats, label: str) -> str:
    """A rule's pending cell adds the charges already reported as fraud (a fresh rule is judged by them)."""
    return f"; {r.pending_fraud:,} fraud so far" if label == "pending" and r.pending_fraud else ""


def print_report(report: BacktestReport, baseline: str) -> None:
    """Render a backtest: per rule, the decision mix and the change against the baseline.

    Fraud, refunded, legit and precision count charges with final labels; "pending" those whose labels may
    still come, "declined" those declined by the issuer or blocked, which moved no money, so no label can
    come (see :mod:`payfm.rules.backtest`). Every value a user wrote (rule names) is shown as text, never as
    markup.
    """
    for message in report.warnings:
        warn(message)
    out = report.outcomes
    console.print(
        f"{report.charges:,} charges: {_money(out['fraud'])} fraudulent, {_money(out['refunded'])} refunded, "
        f"{_money(out['legit'])} legitimate; {_money(out['pending'])} pending (labels not final yet); "
        f"{_money(out['declined'])} declined (declined or blocked: moved no money, so no label can come)",
        markup=False,
        highlight=False,
    )
    if report.as_of is not None:
        days = report.horizon / DAY
        when = "--as-of" if report.as_of_given else "the log's end"
        console.print(
            f"Labels as of {report.as_of.isoformat()[:19]} ({when}), final {days:g} "
            f"day{'s' if days != 1 else ''} after the charge; fraud, refunded, legit and precision count "
            "final labels only (not pending or declined charges).",
            markup=False,
            highlight=False,
        )
    table = Table(
        title="Rules (matched on their own; decided = first match in action order; "
        "precision over final labels: fraud / (fraud + refunded + legit); recall: share of the window's "
        "final fraud matched; pending: labels not final, of which 'N fraud so far' disputed or warned"
        + ("; only: matched by no other rule, what removing it loses)" if report.overlap else ")")
    )
    table.add_column("rule", overflow="fold", min_width=8)
    only = report.overlap.only if report.overlap is not None else None  # (--overlap)
    for col in ("action", "line", "matched", "decided", *LABELS, "precision", "recall"):
        table.add_column(col, justify="left" if col == "action" else "right")
    for col in ("only", "only fraud") if only is not None else ():  # (matched by no other rule)
        table.add_column(col, justify="right")
    for i, r in enumerate(report.rules):
        alone = (
            (f"{sum(t.count for t in only[i].values()):,}", _money(only[i].get("fraud", Tally())))
            if only
            else ()
        )
        table.add_row(
            Text(r.name),
            r.action,
            str(r.line) if r.line else "--rule",
            f"{r.matched:,}",
            f"{r.decided:,}",
            *(_money(r.outcomes[lab]) + _reported(r, lab) for lab in LABELS),
            f"{r.precision:.1%}" if r.precision is not None else "-",
            f"{recall:.1%}" if (recall := report.recall(r)) is not None else "-",
            *alone,
        )
    console.print(table)
    # a day: the review team's load of a review rule, the customers a day asked for 3DS or blocked
    span = f" over {report.days:,.1f} days" if report.days else ""
    mix = Table(title=f"Decision mix{span}")
    for col in ("decision", "charges", "a day", *LABELS):
        mix.add_column(col, justify="left" if col == "decision" else "right")
    for action in ("request_3ds", "allow", "block", "review", "authorize"):
        if action in report.mix:
            row = report.mix[action]
            n = sum(t.count for t in row.values())
            rate = report.per_day(n)
            daily = "-" if rate is None else per_day(rate)
            mix.add_row(action, f"{n:,}", daily, *(_money(row.get(lab, Tally())) for lab in LABELS))
    console.print(mix)
    c = report.change
    same = c.changed - c.outcome_changed  # authorized either way: an allow rule's now, or no longer
    console.print(
        Text.assemble(
            (f"Change against {baseline}", "bold"),
            f": {plural(c.changed, 'charge')} decided differently"
            + (
                f", {c.outcome_changed:,} with another outcome ({same:,} authorized either way, by an allow "
                "rule or by no rule)"
                if same
                else ""
            ),
        )
    )
    lines = [
        ("fraud newly blocked:", c.fraud_newly_blocked),
        ("fraud no longer blocked:", c.fraud_no_longer_blocked),
        ("good customers newly blocked:", c.good_newly_blocked),
        ("good customers unblocked:", c.good_no_longer_blocked),
        ("pending labels newly blocked:", c.pending_newly_blocked),
        ("pending labels unblocked:", c.pending_no_longer_blocked),
        ("declined charges newly blocked:", c.declined_newly_blocked),
        ("declined charges unblocked:", c.declined_no_longer_blocked),
    ]
    for what, t in lines:
        console.print(f"  {what:<32}{_money(t)}", markup=False, highlight=False)
    for what, action in (("review", "review"), ("3DS", "request_3ds")):  # said when they change
        for moved, into in ((f"newly sent to {what}:", True), (f"no longer sent to {what}:", False)):
            by_label: dict[str, Tally] = {}
            for old, new, lab, t in c.transitions:
                if (new == action and old != action) if into else (old == action and new != action):
                    had = by_label.get(lab, Tally())
                    by_label[lab] = Tally(had.count + t.count, had.usd + t.usd)
            if by_label:
                n_all = Tally(sum(t.count for t in by_label.values()), sum(t.usd for t in by_label.values()))
                parts = ", ".join(f"{lab} {_money(by_label[lab])}" for lab in LABELS if lab in by_label)
                rate = report.per_day(n_all.count)
                daily = f" ({per_day(rate)} a day)" if rate is not None else ""
                console.print(f"  {moved:<32}{_money(n_all)}{daily}: {parts}", markup=False, highlight=False)
    for lab, t in sorted(c.allow_overrides.items()):
        console.print(
            f"  allowed by an allow rule over another matching rule ({lab}): {_money(t)}", markup=False
        )
    if report.charges:  # (from the mix and the change: nothing more to compute)
        rt = rates(report)
        pct = {
            a: share(n, rt.charges) for a, n in (("b", rt.blocked), ("r", rt.reviewed), ("3", rt.request_3ds))
        }
        console.print(
            f"Rates of the window's {rt.charges:,} charges: block {pct['b']}, review {pct['r']}, 3DS "
            f"{pct['3']}; authorization rate (let through: not blocked) {rt.authorization_before:.2%} before "
            f"({baseline}) -> {rt.authorization_after:.2%} after",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def share(n: int, total: int) -> str:
    """``n`` of ``total`` as a percentage and a count; a share that two decimals would print as 0.00% is
    said to be under 0.01% (a walkthrough read '3DS 0.00%' for 2 charges of 99,112).

    >>> share(7, 3306), share(2, 99112), share(0, 99112)
    ('0.21% (7)', '<0.01% (2)', '0.00% (0)')
    """
    rate = n / total
    return f"{'<0.01%' if 0 < rate < 0.00005 else f'{rate:.2%}'} ({n:,})"


def print_matches(matched: pa.Table, rule: str, out: Path | None) -> None:
    """The charges ``rule`` matched (:func:`payfm.rules.backtest._matched_charges`): the first
    ``MATCHES_SHOWN`` as records (whole ids, to copy into a list), every one into ``out`` as CSV."""
    n = matched.num_rows
    shown = min(n, MATCHES_SHOWN)
    said = (
        f"; all {n:,} in {shown_text(str(out), 4096)}"
        if out is not None
        else ("; --matches-out FILE.csv for all" if n > shown else "")
    )
    console.print(
        Text.assemble(
            (f"Charges rule '{rule}' matched", "bold"),
            f": {n:,}, legitimate and refunded first (false positives), then by time ({shown:,} shown{said})",
        )
    )
    names = matched.column_names
    pad = max((len(c) for c in names), default=0)
    for i, row in enumerate(matched.slice(0, shown).to_pylist(), start=1):
        console.print(f"-[ {i} ]" + "-" * 24, markup=False, highlight=False)
        for name in names:
            v = row[name]
            text = "NULL" if v is None else f"{v:.2f}" if name == "amount_usd" else str(v)
            console.print(f"{name:<{pad}}  {text}", markup=False, highlight=False, soft_wrap=True)
    if out is not None:
        buf = io.BytesIO()
        pacsv.write_csv(matched, buf)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(out, buf.getvalue())
        except OSError as e:
            said = shown_text(str(e.strerror or e), 400)
            raise ConfigError(f"--matches-out: '{shown_text(str(out))}' cannot be written: {said}.") from None
