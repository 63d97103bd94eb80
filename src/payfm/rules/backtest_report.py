"""The backtest's report: what :func:`payfm.rules.backtest.backtest` returns, as plain frozen values.

Each charge of the window has one outcome (``LABELS``): a final label (fraud, refunded, legit), *pending* (its
label horizon has not passed) or *declined* (declined by its issuer or blocked: no label can come). A
:class:`Tally` counts charges and their dollars; :class:`RuleStats` is one rule's matches and decisions by
outcome, :class:`Change` the candidate ruleset against the baseline, and :class:`BacktestReport` the whole
window with its warnings. Precision and recall read final labels only. The figures are computed in
:mod:`payfm.rules.backtest`; the analyst's views (series, overlap, JSON) in :mod:`payfm.rules.backtest_views`.

Example:
    >>> outcomes = {"fraud": Tally(3, 420.0), "refunded": Tally(1, 80.0), "legit": Tally(),
    ...             "pending": Tally(2, 150.0), "declined": Tally()}
    >>> rule = RuleStats("velocity", "block", 1, matched=6, decided=6, outcomes=outcomes)
    >>> rule.precision, rule.pending
    (0.75, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from payfm.rules.backtest_views import Overlap, Series, report_json
from payfm.training.labels import DEFAULT_HORIZON

# Outcomes of a charge: the three final labels, then "pending" (its label horizon has not passed yet) and
# "declined" (declined by the issuer or blocked: it moved no money, so no label can come).
LABELS = ("fraud", "refunded", "legit", "pending", "declined")
FINAL = LABELS[:3]


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
    outcomes: dict[str, Tally]  # label -> matched charges with that outcome ("pending": label not final)
    pending_fraud: int = 0  # of the pending ones, those already reported as fraud (a dispute or EFW so far)

    @property
    def pending(self) -> int:
        """Matched charges whose labels are not final yet (left out of :attr:`precision`)."""
        return self.outcomes["pending"].count

    @property
    def declined(self) -> int:
        """Matched charges declined by the issuer or blocked: no label can come (left out of
        :attr:`precision`)."""
        return self.outcomes["declined"].count

    @property
    def precision(self) -> float | None:
        """The fraud share of the matched charges with mature labels (None when there are none)."""
        mature = sum(self.outcomes[lab].count for lab in FINAL)
        return self.outcomes["fraud"].count / mature if mature else None


@dataclass(frozen=True)
class Change:
    """The new ruleset against the baseline. "Good" charges are mature ones not fraudulent; charges with
    pending labels and declined (or blocked) charges are counted apart."""

    changed: int
    fraud_newly_blocked: Tally
    fraud_no_longer_blocked: Tally
    good_newly_blocked: Tally
    good_no_longer_blocked: Tally
    pending_newly_blocked: Tally
    pending_no_longer_blocked: Tally
    declined_newly_blocked: Tally
    declined_no_longer_blocked: Tally
    allow_overrides: dict[str, Tally]  # label -> charges an allow rule let through that another rule caught
    transitions: list[tuple[str, str, str, Tally]]  # (old action, new action, label, tally)

    @property
    def outcome_changed(self) -> int:
        """Of ``changed``, the charges whose outcome changes: not those authorized either way (an allow rule
        now deciding, or no longer deciding, a charge that no other rule caught)."""
        return sum(t.count for old, new, _, t in self.transitions if {old, new} != {"authorize", "allow"})


@dataclass(frozen=True)
class BacktestReport:
    charges: int
    outcomes: dict[str, Tally]
    rules: list[RuleStats]
    mix: dict[str, dict[str, Tally]]  # action ("authorize" for none) -> label -> tally
    change: Change
    decisions: pa.Table | None = field(default=None, repr=False)  # charge_id, rule, action when kept
    horizon: timedelta = DEFAULT_HORIZON  # the label horizon
    as_of: datetime | None = None  # labels as known then: the log's end (None: an empty log)
    as_of_given: bool = False  # as_of is the caller's (--as-of), not the log's end
    pending_fraud: int = 0  # charges with pending labels already reported as fraud
    days: float | None = None  # the window's length, within the log (what per-day rates divide by)
    warnings: tuple[str, ...] = ()  # what a reader must know before trusting the figures
    # With ``matches``: the charges that rule matched on its own (backtest.py: :func:`_matched_charges`)
    matched: pa.Table | None = field(default=None, repr=False)
    start: datetime | None = None  # the window asked for, [start, end) (None: the log's first or last)
    end: datetime | None = None
    series: Series | None = None  # with ``by`` (:mod:`payfm.rules.backtest_views`)
    overlap: Overlap | None = None  # with ``overlap=True``

    @property
    def pending(self) -> int:
        """Charges of the window whose labels are not final yet."""
        return self.outcomes["pending"].count

    @property
    def declined(self) -> int:
        """Charges of the window declined by the issuer or blocked (no label can come)."""
        return self.outcomes["declined"].count

    def per_day(self, count: int) -> float | None:
        """``count`` charges of the window as a daily rate (a review rule's load on the review team)."""
        return count / self.days if self.days else None

    def to_json(self) -> dict[str, Any]:
        """The whole report as JSON values (:func:`payfm.rules.backtest_views.report_json`)."""
        return report_json(self)

    def recall(self, rule: RuleStats) -> float | None:
        """The share of the window's fraud (final labels) that ``rule`` matches on its own; None when the
        window has no final fraud."""
        fraud = self.outcomes["fraud"].count
        return rule.outcomes["fraud"].count / fraud if fraud else None
