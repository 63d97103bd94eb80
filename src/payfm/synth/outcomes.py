"""Outcomes that arrive after the charge: disputes, early fraud warnings (EFWs) and refunds.

Only authorized charges get outcomes. Each outcome's time is the charge's time plus a delay drawn from a
clipped log-normal distribution (:data:`DELAYS`, documented in docs/synth.md); outcomes at or after the
world's end have not happened yet and are dropped, which is what leaves recent labels immature.
Outcomes are a few percent of charges, so they are accumulated in memory and emitted at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from payfm.events.schema import DISPUTE_REASONS, EFW_FRAUD_TYPES, REFUND_REASONS, SCHEMAS, TIMESTAMP
from payfm.synth.rows import AUTHORIZED, RECURRING, SCENARIO, Rows, charge_ids, gather, local_amounts
from payfm.synth.world import CURRENCIES, World, counter_ids

US_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class Delay:
    """Log-normal delay in days: ``median * exp(sigma * Z)``, clipped to ``[low, high]`` days."""

    median: float
    sigma: float
    low: float
    high: float

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` delays in microseconds."""
        days = np.clip(self.median * np.exp(self.sigma * rng.standard_normal(n)), self.low, self.high)
        return (days * US_PER_DAY).astype(np.int64)


DELAYS: dict[str, Delay] = {
    "fraud_dispute": Delay(21.0, 0.6, 1.0, 90.0),  # disputes of fraud (and label-noise fraud disputes)
    "efw": Delay(4.0, 0.6, 1.0, 14.0),  # early fraud warnings come sooner
    "other_dispute": Delay(25.0, 0.5, 3.0, 120.0),  # non-fraud disputes of genuine charges
    "refund": Delay(2.0, 1.0, 1 / 24, 60.0),  # genuine refunds
    "bust_out_refund": Delay(1.0, 0.8, 1 / 24, 30.0),  # refunds pushed through by a busting merchant
}
# Per scenario (SCENARIOS order): probability a fraud charge is disputed, and that it gets an EFW.
DISPUTE_P = np.array([0.85, 0.75, 0.85, 0.85, 0.95, 0.80])
EFW_P = np.array([0.60, 0.50, 0.55, 0.60, 0.35, 0.50])
# Per scenario: the issuer's two most likely fraud types (70% / 30%).
_FT = {name: i for i, name in enumerate(EFW_FRAUD_TYPES)}
EFW_TYPES = np.array(
    [
        [_FT["made_with_stolen_card"], _FT["unauthorized_use_of_card"]],
        [_FT["unauthorized_use_of_card"], _FT["misc"]],
        [_FT["unauthorized_use_of_card"], _FT["misc"]],
        [_FT["made_with_counterfeit_card"], _FT["unauthorized_use_of_card"]],
        [_FT["unauthorized_use_of_card"], _FT["card_never_received"]],
        [_FT["misc"], _FT["fraudulent_card_application"]],
    ]
)
GENUINE_REFUND_P = 0.02
BUST_REFUND_P = 0.25  # fraud charges of a busting merchant (genuine ones there: 0.10)
OTHER_DISPUTE_P = 0.001
NOISE_DISPUTE_P = 0.0002  # genuine charges disputed as fraudulent: label noise
NOISE_EFW_P = 0.00005
_DR = {name: i for i, name in enumerate(DISPUTE_REASONS)}
OTHER_REASONS = np.array([_DR[r] for r in ("product_not_received", "product_unacceptable", "duplicate",
                                           "credit_not_processed", "general")])  # fmt: skip


@dataclass
class _Chunk:
    serial: np.ndarray
    created: np.ndarray
    code: np.ndarray  # reason or fraud type index
    amount: np.ndarray
    currency: np.ndarray


class OutcomeLog:
    """Draws each day's outcomes and keeps those before ``end_us``; emits the three tables at the end.

    ``bust_start`` and ``gone`` give, per merchant, the time (us) its bust-out starts and the time it
    disappears (int64 max for merchants that never bust): its charges from ``bust_start`` on get the
    bust-out's refunds and disputes, and no refund of any of its charges is dated at or after ``gone``.
    """

    def __init__(
        self,
        world: World,
        rng: np.random.Generator,
        end_us: int,
        bust_start: np.ndarray,
        gone: np.ndarray,
    ):
        self.world, self.rng, self.end_us = world, rng, end_us
        self.bust_start, self.gone = bust_start, gone
        self.chunks: dict[str, list[_Chunk]] = {"disputes": [], "early_fraud_warnings": [], "refunds": []}

    def _add(
        self,
        table: str,
        r: Rows,
        serial: np.ndarray,
        idx: np.ndarray,
        delay: np.ndarray,
        code: np.ndarray,
        until: np.ndarray | None = None,
    ) -> None:
        """Record outcomes of charges ``idx`` ``delay`` us after them, those before the world's end (and
        before ``until``, one time per outcome, where given)."""
        amount, currency = local_amounts(self.world, r.merchant[idx], r.amount_usd[idx])
        created = r.created[idx] + delay
        keep = created < self.end_us
        if until is not None:
            keep &= created < until
        self.chunks[table].append(
            _Chunk(
                serial[idx][keep], created[keep], code[keep], amount[keep], currency[keep].astype(np.int64)
            )
        )

    def add_day(self, r: Rows, serial: np.ndarray) -> None:
        """Draw outcomes for one day's charges ``r`` (with their serial numbers)."""
        rng = self.rng
        n = len(r)
        auth = r.outcome == AUTHORIZED
        fraud = r.scenario >= 0
        sc = np.maximum(r.scenario, 0)
        u = rng.random((4, n))
        small_test = (r.scenario == SCENARIO["card_testing"]) & (r.amount_usd < 1000)  # $1 tests go unnoticed
        p_dispute = np.where(small_test, 0.3, DISPUTE_P[sc])
        busting = r.created >= self.bust_start[r.merchant]  # at a merchant that has begun its bust-out
        bust_fraud = fraud & (r.scenario == SCENARIO["merchant_bust_out"])
        p_refund = np.where(
            bust_fraud, BUST_REFUND_P, np.where(busting, 0.10, np.where(fraud, 0.0, GENUINE_REFUND_P))
        )
        refund = auth & (u[3] < p_refund)
        fraud_dispute = auth & fraud & (u[0] < p_dispute) & ~refund  # a refunded charge is not disputed
        noise = auth & ~fraud & (u[0] < NOISE_DISPUTE_P)
        other = auth & ~fraud & (u[0] >= NOISE_DISPUTE_P) & (u[0] < NOISE_DISPUTE_P + OTHER_DISPUTE_P)

        idx = np.flatnonzero(fraud_dispute | noise)
        # Bust-out customers mostly say "fraudulent", a third say the goods never came.
        pnr = bust_fraud[idx] & (rng.random(idx.size) < 0.35)
        code = np.where(pnr, _DR["product_not_received"], _DR["fraudulent"])
        self._add("disputes", r, serial, idx, DELAYS["fraud_dispute"].sample(rng, idx.size), code)
        idx = np.flatnonzero(other | (auth & ~fraud & ~noise & busting & (u[1] < 0.05)))
        code = np.where(
            r.channel[idx] == RECURRING,
            _DR["subscription_canceled"],
            OTHER_REASONS[rng.integers(0, OTHER_REASONS.size, idx.size)],
        )
        code = np.where(busting[idx], _DR["product_not_received"], code)
        self._add("disputes", r, serial, idx, DELAYS["other_dispute"].sample(rng, idx.size), code)

        efw = auth & ((fraud & (u[2] < EFW_P[sc])) | (~fraud & (u[2] < NOISE_EFW_P)))
        idx = np.flatnonzero(efw)
        types = EFW_TYPES[sc[idx], (rng.random(idx.size) < 0.3).astype(np.int64)]
        self._add("early_fraud_warnings", r, serial, idx, DELAYS["efw"].sample(rng, idx.size), types)

        idx = np.flatnonzero(refund)
        quick = busting[idx]
        delay = np.where(
            quick, DELAYS["bust_out_refund"].sample(rng, idx.size), DELAYS["refund"].sample(rng, idx.size)
        )
        code = np.where(rng.random(idx.size) < 0.05, 1, 0)  # duplicate 5%, else requested_by_customer
        code = np.where(quick & (rng.random(idx.size) < 0.3), 2, code)  # busting merchants "refund fraud"
        self._add("refunds", r, serial, idx, delay, code, until=self.gone[r.merchant[idx]])  # none once gone
        # Partial refunds: 15% of refunds return 20-90% of the amount.
        added = self.chunks["refunds"][-1]
        partial = rng.random(added.amount.size) < 0.15
        share = rng.uniform(0.2, 0.9, int(partial.sum()))
        added.amount[partial] = np.maximum(1, added.amount[partial] * share).astype(np.int64)

    def tables(self) -> Iterator[tuple[str, pa.Table]]:
        """The three outcome tables, each sorted by (created, charge), with ids in that order."""
        prefix = {"disputes": "dp_", "early_fraud_warnings": "efw_", "refunds": "re_"}
        for name, chunks in self.chunks.items():
            serial = np.concatenate([c.serial for c in chunks]) if chunks else np.zeros(0, np.int64)
            created = np.concatenate([c.created for c in chunks]) if chunks else np.zeros(0, np.int64)
            code = np.concatenate([c.code for c in chunks]) if chunks else np.zeros(0, np.int64)
            amount = np.concatenate([c.amount for c in chunks]) if chunks else np.zeros(0, np.int64)
            currency = np.concatenate([c.currency for c in chunks]) if chunks else np.zeros(0, np.int64)
            order = np.lexsort((serial, created))
            ids = counter_ids(prefix[name], np.arange(order.size), 10)
            head = [ids, charge_ids(serial[order]), pa.array(created[order], TIMESTAMP)]
            if name == "early_fraud_warnings":
                arrays = [*head, gather(pa.array(EFW_FRAUD_TYPES), code[order])]
            else:
                vocab = DISPUTE_REASONS if name == "disputes" else REFUND_REASONS
                money = [
                    pa.array(amount[order].astype(np.int64)),
                    gather(pa.array(CURRENCIES), currency[order]),
                ]
                if name == "disputes":
                    arrays = [*head, gather(pa.array(vocab), code[order]), *money]
                else:
                    arrays = [*head, *money, gather(pa.array(vocab), code[order])]
            yield name, pa.Table.from_arrays(arrays, schema=SCHEMAS[name])
