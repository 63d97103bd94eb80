"""`payfm rules backtest --by day|week`, `--rule-detail`, `--overlap` and `--json PATH`: the analyst's views
of a backtest (:mod:`payfm.rules.backtest_views`), printed or written as one JSON file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table
from rich.text import Text

from payfm.cli.render import console, ending_path
from payfm.errors import ConfigError
from payfm.events.cards import shown_text
from payfm.events.outputs import output_file
from payfm.events.workspace import atomic_write_bytes
from payfm.rules.backtest import BacktestReport, Tally
from payfm.rules.backtest_views import CAUGHT, GENUINE, PERIODS, Overlap, Period, Series

F = TypeVar("F", bound=Callable[..., Any])
PAIRS_SHOWN = 20  # pairs of rules printed by --overlap (--json holds the whole matrix)


VIEW_OPTIONS = [
    click.option(
        "--by",
        type=click.Choice(PERIODS),
        help="Also print the backtest by UTC day or ISO week of the charges: the decisions, fraud caught and "
        "false positives (genuine charges decided by a request_3ds, block or review rule), review load.",
    ),
    click.option("--rule-detail", is_flag=True, help="With --by: a row per rule and period too."),
    click.option(
        "--overlap",
        is_flag=True,
        help="Add what only each rule matches (what removing it loses) to the rules table, and print the "
        "pairs of rules that match the same charges.",
    ),
    click.option(
        "--json",
        "json_out",
        metavar="FILE.json",
        type=click.Path(dir_okay=False),
        callback=ending_path(".json"),
        help="Write the whole report (rules, mix, change, warnings, rates, the series by --by or by day, the "
        "overlap) to this JSON file, outside the workspace's folders (replaced whole, never half-written).",
    ),
]


def view_options(f: F) -> F:
    for opt in reversed(VIEW_OPTIONS):
        f = opt(f)
    return f


@dataclass(frozen=True)
class Views:
    """What the options ask for: the backtest computes the series (``by``) and the ``overlap``."""

    by: Period | None = None  # the series printed
    rule_detail: bool = False
    overlap: bool = False  # the pairs printed, the only-columns of the rules table
    json_out: Path | None = None  # every view: the series by day without --by

    @property
    def series_by(self) -> Period | None:
        return self.by or ("day" if self.json_out is not None else None)

    @property
    def with_overlap(self) -> bool:
        return self.overlap or self.json_out is not None


def requested(
    workspace: str | os.PathLike[str],
    by: Period | None,
    rule_detail: bool,
    overlap: bool,
    json_out: str | None,
) -> Views:
    """The views the options ask for; the --json path checked before the backtest, as --matches-out is (a
    path in the workspace's folders is refused)."""
    if rule_detail and by is None:
        raise ConfigError("--rule-detail prints the --by series per rule: give --by day or --by week too.")
    if json_out is None:
        return Views(by, rule_detail, overlap)
    output_file(json_out, "--json", workspace=workspace)
    return Views(by, rule_detail, overlap, Path(json_out))


def _money(t: Tally) -> str:
    return f"{t.count:,} (${t.usd:,.0f})"


def _sum(tallies: list[Tally]) -> Tally:
    return Tally(sum(t.count for t in tallies), sum((t.usd for t in tallies), 0.0))


def print_views(report: BacktestReport, views: Views) -> None:
    """The series and pairs the options asked for, then the --json file."""
    if views.by is not None and report.series is not None:
        _print_series(report, report.series, views.rule_detail)
    if views.overlap and report.overlap is not None:
        _print_pairs(report, report.overlap)
    if views.json_out is not None:
        write_json(report, views.json_out)


def _print_series(report: BacktestReport, series: Series, rule_detail: bool) -> None:
    by = series.by
    table = Table(
        title=f"By {'UTC day' if by == 'day' else 'ISO week (UTC)'}: charges of the window; caught = decided "
        "by a request_3ds, block or review rule; false positives = genuine (refunded, legit) charges caught"
    )
    for col in ("period", "charges", "matched", "block", "block %", "review", "3DS", "allow"):
        table.add_column(col, justify="left" if col == "period" else "right")
    for col in ("fraud caught", "false positives", "pending caught"):
        table.add_column(col, justify="right")
    for p in series.periods:
        n = {a: sum(t.count for t in p.mix.get(a, {}).values()) for a in (*CAUGHT, "allow", "authorize")}
        table.add_row(
            p.name,
            f"{p.charges:,}",
            f"{p.charges - n['authorize']:,}",
            f"{n['block']:,}",
            f"{n['block'] / p.charges:.1%}",
            f"{n['review']:,}",
            f"{n['request_3ds']:,}",
            f"{n['allow']:,}",
            _money(p.caught(("fraud",))),
            _money(p.caught(GENUINE)),
            _money(p.caught(("pending",))),
        )
    console.print(table)
    if not rule_detail:
        return
    detail = Table(
        title=f"By {by} and rule (decided: first match in action order; a review rule's: its load)"
    )
    detail.add_column("period")
    detail.add_column("rule", overflow="fold", min_width=8)
    detail.add_column("action")
    for col in ("matched", "decided", "fraud decided", "genuine decided", "pending decided"):
        detail.add_column(col, justify="right")
    for p in series.periods:
        for r, rp in zip(report.rules, p.rules, strict=True):
            if not rp.matched:
                continue
            d = rp.decided
            detail.add_row(
                p.name,
                Text(r.name),
                r.action,
                f"{sum(t.count for t in rp.matched.values()):,}",
                f"{sum(t.count for t in d.values()):,}",
                _money(d.get("fraud", Tally())),
                _money(_sum([d[lab] for lab in GENUINE if lab in d])),
                _money(d.get("pending", Tally())),
            )
    console.print(detail)


def _print_pairs(report: BacktestReport, overlap: Overlap) -> None:
    """The pairs of rules matching the most charges in common, with each one's share of the other's."""
    both = overlap.matched
    pairs = sorted(
        ((both[i][j], i, j) for i in range(len(both)) for j in range(i + 1, len(both)) if both[i][j]),
        key=lambda x: (-x[0], x[1], x[2]),
    )
    if not pairs:
        console.print("Overlap: no two rules match a charge in common.", markup=False, highlight=False)
        return
    table = Table(
        title=f"Overlap: pairs of rules matching the same charges ({min(len(pairs), PAIRS_SHOWN):,} of "
        f"{len(pairs):,} pairs; --json for the matrix)"
    )
    for col in ("rule", "other rule", "both match", "share of rule's", "share of other's", "fraud both"):
        table.add_column(col, justify="left" if "rule" in col and "share" not in col else "right")
    for n, i, j in pairs[:PAIRS_SHOWN]:
        table.add_row(
            Text(report.rules[i].name),
            Text(report.rules[j].name),
            f"{n:,}",
            f"{n / both[i][i]:.0%}",
            f"{n / both[j][j]:.0%}",
            f"{overlap.fraud[i][j]:,}",
        )
    console.print(table)


def write_json(report: BacktestReport, out: Path) -> None:
    """``report.to_json()`` into ``out`` (checked before the backtest), whole or not at all."""
    data = json.dumps(report.to_json(), indent=1, allow_nan=False).encode() + b"\n"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, data)
    except OSError as e:
        said = shown_text(str(e.strerror or e), 400)
        raise ConfigError(f"--json: '{shown_text(str(out))}' cannot be written: {said}.") from None
    console.print(f"Report written to {shown_text(str(out), 4096)}", markup=False, highlight=False)
