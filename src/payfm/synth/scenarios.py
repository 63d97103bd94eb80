"""The six fraud scenarios. Each produces charges tagged with its ``scenario`` code.

Volumes follow the config: scenario ``s`` contributes about ``fraud_rate * charges * mix[s]`` charges over
the world, spread over the days as incidents. Loops run over incidents or breached merchants (hundreds to
thousands), never over charges. Rows created after the current day are returned too: the generator keeps them
until their day comes (card-testing cash-outs, breach victims defrauded weeks later).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from payfm.synth.config import WorldConfig
from payfm.synth.genuine import SCA_COUNTRIES, US_PER_DAY, US_PER_MINUTE, decide
from payfm.synth.rows import CARD_PRESENT, CHECK, DECLINE, ECOMMERCE, SCENARIO, THREE_DS, Rows, concat, empty
from payfm.synth.world import (
    FRAUD_EMAIL_P,
    FRAUD_IP_COUNTRIES,
    KIND_ONLINE,
    KIND_PHYSICAL,
    MCC_HIGH_VALUE,
    MCC_MEDIAN_CENTS,
    MCC_SHIPPED,
    MCC_SIGMA,
    World,
    cdf,
    draw,
)

US_PER_HOUR = 60 * US_PER_MINUTE
FRAUD_EMAIL_CDF = cdf(FRAUD_EMAIL_P)
_CHECKS = np.array([CHECK[c] for c in ("pass", "fail", "unavailable", "unchecked")], np.int8)
_THREE = np.array([THREE_DS[t] for t in ("authenticated", "attempted", "not_requested", "failed")], np.int8)
FRAUD_DECLINES = np.array(
    [DECLINE[c] for c in ("do_not_honor", "fraudulent", "stolen_card", "lost_card", "insufficient_funds",
                          "generic_decline", "transaction_not_allowed", "card_velocity_exceeded")],
    dtype=np.int8,
)  # fmt: skip
FRAUD_DECLINE_CDF = cdf(np.array([25, 20, 10, 5, 10, 15, 5, 10], dtype=float))
TESTING_DECLINES = np.array(
    [DECLINE[c] for c in ("card_velocity_exceeded", "do_not_honor", "expired_card", "generic_decline",
                          "insufficient_funds", "fraudulent", "stolen_card", "lost_card")],
    dtype=np.int8,
)  # fmt: skip
TESTING_DECLINE_CDF = cdf(np.array([20, 25, 20, 15, 10, 5, 3, 2], dtype=float))
# Share of card-testing bursts sent through rotating residential proxies with a fresh device fingerprint
# per attempt (per-IP and per-device velocity sees one charge each; the merchant's stream shows the burst).
TESTING_ROTATING_P = 0.6
# Share of account takeovers that change the password or e-mail first; the rest log in with a reused
# password or a stolen session and leave the credentials alone, so as not to alert the owner.
TAKEOVER_CHANGES_CREDENTIALS_P = 0.4


def _pick(rng: np.random.Generator, p: list[float], n: int, choices: np.ndarray = _CHECKS) -> np.ndarray:
    out: np.ndarray = choices[draw(rng, cdf(np.array(p)), n)]
    return out


def _poisson(rng: np.random.Generator, lam: float) -> int:
    return int(rng.poisson(max(lam, 0.0)))


class Scenarios:
    """State and daily output of every fraud scenario (incidents, breaches, bust-outs)."""

    def __init__(self, config: WorldConfig, world: World, rng: np.random.Generator, genuine_per_day: float):
        self.world = world
        self.rng = rng
        self.days = config.days
        self.start_us = (config.start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        fraud = config.fraud_rate * config.charges
        self.per_day = {s: fraud * w / config.days for s, w in config.scenario_mix.items()}
        online = world.kind_members[KIND_ONLINE]
        high = online[MCC_HIGH_VALUE[world.merchant_mcc[online]]]
        self.high_value = high if high.size else online
        self.high_cdf = cdf(world.merchant_weight[self.high_value])
        self.n_owned_cards = int(world.card_start[-1] + world.n_cards[-1])
        # Card testing: bursts of ~k attempts; about 20% more charges come later as cash-outs. A credit
        # accumulates the daily budget and pays for bursts, so the total tracks the config closely.
        total_testing = fraud * config.scenario_mix["card_testing"]
        self.burst = float(np.clip(total_testing / 30, 5, 250))
        self.testing_credit = 0.0
        # Merchant bust-out: merchants of middling size; each spikes for 10-18 days, then disappears.
        total_bust = fraud * config.scenario_mix["merchant_bust_out"]
        n_bust = 0 if total_bust < 1 else int(np.clip(round(total_bust / 400), 1, max(1, online.size // 10)))
        by_size = online[np.argsort(-world.merchant_weight[online], kind="stable")]
        middle = by_size[by_size.size // 4 :] if by_size.size >= 8 else by_size
        self.bust_merchant = rng.choice(middle, size=min(n_bust, middle.size), replace=False).astype(np.int32)
        first = rng.integers(
            int(0.2 * self.days), max(int(0.75 * self.days), int(0.2 * self.days) + 1), n_bust
        )
        length = rng.integers(10, 19, n_bust)
        self.bust_first_day = first
        self.bust_days = length
        self.bust_end = self.start_us + (first + length) * US_PER_DAY  # no charge at or after this time
        self.bust_budget = total_bust / max(n_bust, 1)
        never = np.iinfo(np.int64).max
        # Per merchant: when its bust-out starts (its window's first midnight) and when it disappears.
        self.bust_start = np.full(len(world.merchant_ids), never, np.int64)
        self.bust_start[self.bust_merchant] = self.start_us + first * US_PER_DAY
        self.gone = np.full(len(world.merchant_ids), never, np.int64)
        self.gone[self.bust_merchant] = self.bust_end
        tested = np.setdiff1d(online, self.bust_merchant)  # testers pick merchants that stay open
        self.test_merchants = tested if tested.size else online
        # Compromised merchants: breach windows of 14 days in the first 60% of the world.
        total_breach = fraud * config.scenario_mix["compromised_merchant"]
        n_breach = 0 if total_breach < 1 else max(1, round(total_breach / 300))
        kind = world.merchant_kind
        share = np.zeros(kind.size)
        for k, cdf_share in ((KIND_ONLINE, 0.6), (KIND_PHYSICAL, 0.3)):
            members = world.kind_members[k]
            share[members] = cdf_share * world.merchant_weight[members] / world.merchant_weight[members].sum()
        window_volume = share * genuine_per_day * 14
        need = total_breach / max(n_breach, 1)
        candidates = np.flatnonzero((window_volume >= 3 * need) & (self.gone == self.gone.max()))
        if candidates.size < n_breach:
            candidates = np.argsort(-window_volume, kind="stable")[: max(n_breach, 1)]
        self.breach_merchant = rng.choice(candidates, size=n_breach, replace=candidates.size < n_breach)
        b_first = rng.integers(0, max(1, int(0.6 * self.days)), n_breach)
        self.breach_start = self.start_us + b_first * US_PER_DAY
        self.breach_end = self.breach_start + 14 * US_PER_DAY
        # Probability a card seen in the window is defrauded; each such card is used 1-3 times (mean 2).
        self.breach_p = np.minimum(0.6, need / 2 / np.maximum(window_volume[self.breach_merchant], 1.0))

    # ----------------------------------------------------------------- shared building block
    def _card_not_present(
        self,
        card: np.ndarray,
        created: np.ndarray,
        merchant: np.ndarray,
        amount: np.ndarray,
        foreign_p: float,
    ) -> Rows:
        """Ecommerce fraud with a card the fraudster holds: new device, IP, e-mail, address (per charge)."""
        w, rng, n = self.world, self.rng, card.size
        r = empty(n)
        r.created[:], r.merchant[:], r.card[:], r.amount_usd[:] = created, merchant, card, amount
        r.channel[:] = ECOMMERCE
        r.customer[:] = np.where(rng.random(n) < 0.55, -1, w.fresh.take("customer", n))
        r.device[:] = w.fresh.take("device", n)
        r.ip[:] = w.fresh.take("ip", n)
        home = w.card_country[card]
        foreign = rng.random(n) < foreign_p
        r.ip_country[:] = np.where(
            foreign, FRAUD_IP_COUNTRIES[rng.integers(0, FRAUD_IP_COUNTRIES.size, n)], home
        )
        r.email[:] = draw(rng, FRAUD_EMAIL_CDF, n)
        r.billing[:] = home
        shipped = MCC_SHIPPED[w.merchant_mcc[merchant]]
        away = rng.random(n) < 0.45
        elsewhere = FRAUD_IP_COUNTRIES[rng.integers(0, FRAUD_IP_COUNTRIES.size, n)]
        r.shipping[:] = np.where(shipped, np.where(away, elsewhere, home), -1)
        r.address[:] = np.where(shipped, w.fresh.take("address", n), -1)
        sca = SCA_COUNTRIES[w.merchant_country[merchant]]
        r.three_ds[:] = np.where(
            sca, _pick(rng, [45, 10, 15, 30], n, _THREE), _pick(rng, [6, 7, 72, 15], n, _THREE)
        )
        r.cvc[:] = _pick(rng, [86, 6, 5, 3], n)
        r.avs[:] = _pick(rng, [55, 20, 20, 5], n)
        return r

    def _decide_fraud(self, r: Rows, scenario: str, extra_risk: float, blocked_p: float) -> Rows:
        decide(self.world, self.rng, r, extra_risk, blocked_p, FRAUD_DECLINES, FRAUD_DECLINE_CDF)
        r.scenario[:] = SCENARIO[scenario]
        return r

    def _high_value(self, n: int) -> np.ndarray:
        """Online merchants: 65% high-value categories (electronics, gift cards...), else any by size."""
        w, rng = self.world, self.rng
        high = self.high_value[draw(rng, self.high_cdf, n)]
        anyone = w.kind_members[KIND_ONLINE][draw(rng, w.kind_cdf[KIND_ONLINE], n)]
        merchant: np.ndarray = np.where(rng.random(n) < 0.65, high, anyone).astype(np.int32)
        return merchant

    def _amount(self, merchant: np.ndarray, boost: float) -> np.ndarray:
        mcc = self.world.merchant_mcc[merchant]
        cents: np.ndarray = MCC_MEDIAN_CENTS[mcc] * self.rng.lognormal(np.log(boost), MCC_SIGMA[mcc])
        return cents

    def _incidents(self, scenario: str, per_incident: float, day_start: int) -> tuple[np.ndarray, np.ndarray]:
        """(incident of each charge, time of each charge): Poisson incidents of 1 + Poisson charges each."""
        rng = self.rng
        n_inc = _poisson(rng, self.per_day[scenario] / per_incident)
        size = 1 + rng.poisson(per_incident - 1.0, n_inc)
        inc = np.repeat(np.arange(n_inc), size)
        t0 = day_start + rng.integers(0, US_PER_DAY, n_inc)
        gaps = rng.lognormal(np.log(20.0), 1.0, inc.size) * US_PER_MINUTE  # minutes between a spree's charges
        first = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
        cs = np.cumsum(gaps)
        elapsed = cs - np.repeat(cs[first], size) if inc.size else cs  # 0 for an incident's first charge
        return inc, t0[inc] + elapsed.astype(np.int64)

    # ----------------------------------------------------------------- the scenarios
    def stolen_card(self, day_start: int) -> Rows:
        """An existing customer's card used by someone else online, mostly for high-value goods."""
        inc, created = self._incidents("stolen_card", 2.0, day_start)
        victim = self.rng.integers(0, self.n_owned_cards, inc.max() + 1 if inc.size else 0)
        card = victim[inc].astype(np.int32)
        merchant = self._high_value(card.size)
        r = self._card_not_present(card, created, merchant, self._amount(merchant, 1.4), foreign_p=0.55)
        return self._decide_fraud(r, "stolen_card", 0.15, 0.03)

    def card_testing(self, day_start: int) -> Rows:
        """Bursts of small attempts with unseen cards at one merchant, then cash-outs on cards that passed.

        60% of bursts rotate the IP and the device on every attempt; the others come from 1-3 IPs and 1-2
        devices.
        """
        w, rng = self.world, self.rng
        out: list[Rows] = []
        self.testing_credit += self.per_day["card_testing"]
        while self.testing_credit >= 1.2 * self.burst * rng.uniform(0.3, 1.7):
            k = max(5, int(rng.poisson(self.burst)))
            cards = w.fresh.take("card", max(3, int(0.8 * k)))
            r = empty(k)
            r.card[:] = np.concatenate([cards, cards[rng.integers(0, cards.size, k - cards.size)]])[:k]
            r.merchant[:] = self.test_merchants[rng.integers(0, self.test_merchants.size)]
            t0 = day_start + int(rng.integers(0, US_PER_DAY))
            r.created[:] = np.sort(t0 + rng.integers(0, int(rng.integers(20, 180)) * US_PER_MINUTE, k))
            r.amount_usd[:] = rng.choice([50.0, 100.0, 100.0, 100.0, 200.0, 300.0, 500.0], k)
            r.channel[:] = ECOMMERCE
            if rng.random() < TESTING_ROTATING_P:  # a proxy network and an anti-detect browser
                r.ip[:] = w.fresh.take("ip", k)
                r.device[:] = w.fresh.take("device", k)
            else:
                ips = w.fresh.take("ip", int(rng.integers(1, 4)))
                r.ip[:] = ips[rng.integers(0, ips.size, k)]
                devices = w.fresh.take("device", int(rng.integers(1, 3)))
                r.device[:] = devices[rng.integers(0, devices.size, k)]
            foreign = rng.random() < 0.5
            country = FRAUD_IP_COUNTRIES[rng.integers(0, 9)] if foreign else w.merchant_country[r.merchant[0]]
            r.ip_country[:] = country
            r.email[:] = np.where(rng.random(k) < 0.5, -1, draw(rng, FRAUD_EMAIL_CDF, k))
            r.billing[:] = w.card_country[r.card]
            r.three_ds[:] = THREE_DS["not_requested"]
            r.cvc[:] = _pick(rng, [40, 35, 20, 5], k)
            r.avs[:] = _pick(rng, [20, 10, 60, 10], k)
            decide(w, rng, r, 0.75, 0.05, TESTING_DECLINES, TESTING_DECLINE_CDF)
            r.scenario[:] = SCENARIO["card_testing"]
            out.append(r)
            self.testing_credit -= k
            # Cash-outs: 60% of cards that passed are used for 1-3 larger charges 1 hour to ~3 weeks later.
            passed = np.unique(r.card[r.outcome == 0])
            passed = passed[rng.random(passed.size) < 0.6]
            if passed.size:
                card = np.repeat(passed, rng.integers(1, 4, passed.size)).astype(np.int32)
                delay = np.clip(rng.lognormal(np.log(3.0), 1.0, card.size), 1 / 24, 21) * US_PER_DAY
                created = r.created.max() + delay.astype(np.int64)
                merchant = self._high_value(card.size)
                c = self._card_not_present(card, created, merchant, self._amount(merchant, 1.2), 0.5)
                out.append(self._decide_fraud(c, "card_testing", 0.1, 0.03))
                self.testing_credit -= card.size
        return concat(out) if out else empty(0)

    def account_takeover(self, day_start: int, cred: np.ndarray, shoppers: np.ndarray) -> Rows:
        """A customer's account used from a new device, shipping somewhere new; 40% change credentials first.

        Updates ``cred`` (last credential change per customer) in place: the victim's later charges show a
        change the takeover made; a takeover that changed nothing carries the owner's last change, if any.
        ``shoppers`` is the day's ``world.customer_cdf(day)``: victims have signed up.
        """
        w, rng = self.world, self.rng
        inc, created = self._incidents("account_takeover", 2.0, day_start)
        n_inc = int(inc.max()) + 1 if inc.size else 0
        victim = draw(rng, shoppers, n_inc)
        t_inc = created[np.concatenate([[0], np.flatnonzero(np.diff(inc)) + 1])] if inc.size else created
        changed = t_inc - (rng.uniform(10 / 60, 36, n_inc) * US_PER_HOUR).astype(np.int64)
        changes = rng.random(n_inc) < TAKEOVER_CHANGES_CREDENTIALS_P
        changed = np.where(changes, changed, cred[victim])  # unchanged: the owner's last change, if any
        cust = victim[inc]
        n = inc.size
        own = rng.random(n) < 0.4
        merchant = np.where(own, w.pref_online[cust, rng.integers(0, 3, n)], self._high_value(n)).astype(
            np.int32
        )
        r = self._card_not_present(w.card_start[cust], created, merchant, self._amount(merchant, 1.5), 0.35)
        r.customer[:] = cust
        r.credential_changed[:] = changed[inc]
        device = w.fresh.take("device", n_inc)  # one new device per takeover
        r.device[:] = device[inc]
        r.email[:] = np.where(rng.random(n) < 0.5, w.customer_email[cust], r.email)
        home = w.customer_country[cust]
        shipped = r.shipping >= 0  # goods that are shipped: 70% to the victim's country, else where asked
        r.shipping[:] = np.where(shipped & (rng.random(n) < 0.7), home, r.shipping)
        r.address[:] = np.where(shipped, w.fresh.take("address", n_inc)[inc], -1)
        r.three_ds[:] = _pick(rng, [5, 5, 80, 10], n, _THREE)  # stored card: 3DS rarely asked
        r.cvc[:] = _pick(rng, [50, 0, 0, 50], n)
        r.avs[:] = _pick(rng, [70, 10, 20, 0], n)
        cred[victim] = np.maximum(cred[victim], changed)  # a no-op for takeovers that changed nothing
        return self._decide_fraud(r, "account_takeover", 0.05, 0.02)

    def friendly_fraud(self, genuine: Rows) -> None:
        """Tag some authorized ecommerce purchases by real customers (own device, IP) as friendly fraud."""
        rng = self.rng
        cand = np.flatnonzero(
            (genuine.outcome == 0)
            & (genuine.channel == ECOMMERCE)
            & (genuine.customer >= 0)
            & (genuine.device >= 0)
        )
        k = min(cand.size, _poisson(rng, self.per_day["friendly_fraud"]))
        genuine.scenario[rng.choice(cand, size=k, replace=False)] = SCENARIO["friendly_fraud"]

    def compromised_merchant(self, today: Rows) -> Rows:
        """Cards used at a breached merchant during its window are defrauded elsewhere days to weeks later."""
        w, rng = self.world, self.rng
        out = []
        for m, t0, t1, p in zip(
            self.breach_merchant, self.breach_start, self.breach_end, self.breach_p, strict=True
        ):
            seen = (today.merchant == m) & (today.created >= t0) & (today.created < t1)
            seen &= (today.outcome == 0) & (today.scenario < 0)  # genuine cards the breach exposed
            idx = np.flatnonzero(seen)
            idx = idx[rng.random(idx.size) < p]
            idx = np.repeat(idx, rng.integers(1, 4, idx.size))
            if not idx.size:
                continue
            card = today.card[idx]
            created = today.created[idx] + (
                np.clip(rng.lognormal(np.log(10.0), 0.7, idx.size), 2, 45) * US_PER_DAY
            )
            created = created.astype(np.int64)
            present = rng.random(idx.size) < 0.3  # counterfeit cards at shops, the rest online
            merchant = self._high_value(idx.size)
            physical = w.kind_members[KIND_PHYSICAL][draw(rng, w.kind_cdf[KIND_PHYSICAL], idx.size)]
            merchant = np.where(present, physical, merchant).astype(np.int32)
            r = self._card_not_present(card, created, merchant, self._amount(merchant, 1.3), foreign_p=0.3)
            pi = np.flatnonzero(present)
            r.channel[pi] = CARD_PRESENT
            for f in (r.ip, r.device, r.address, r.customer):
                f[pi] = -1
            r.ip_country[pi], r.email[pi], r.billing[pi], r.shipping[pi] = -1, -1, -1, -1
            r.three_ds[pi], r.cvc[pi], r.avs[pi] = (
                THREE_DS["not_requested"],
                CHECK["unchecked"],
                CHECK["unchecked"],
            )
            out.append(self._decide_fraud(r, "compromised_merchant", 0.08, 0.02))
        return concat(out) if out else empty(0)

    def merchant_bust_out(self, day_index: int, day_start: int) -> Rows:
        """Busting merchants' volume ramps up over their window (then :meth:`alive` drops them)."""
        w, rng = self.world, self.rng
        out = []
        for m, first, length in zip(self.bust_merchant, self.bust_first_day, self.bust_days, strict=True):
            step = day_index - int(first)
            if not 0 <= step < length:
                continue
            ramp = (step + 1) / (length * (length + 1) / 2)  # linear ramp, sums to 1 over the window
            n = _poisson(rng, self.bust_budget * ramp)
            if not n:
                continue
            fresh = rng.random(n) < 0.5
            card = np.where(fresh, w.fresh.take("card", n), rng.integers(0, self.n_owned_cards, n)).astype(
                np.int32
            )
            created = day_start + rng.integers(0, US_PER_DAY, n)
            merchant = np.full(n, m, np.int32)
            r = self._card_not_present(card, created, merchant, self._amount(merchant, 2.0), foreign_p=0.1)
            devices = w.fresh.take("device", 4)  # the merchant's own few devices and IPs push charges through
            r.device[:] = devices[rng.integers(0, 4, n)]
            r.ip[:] = w.fresh.take("ip", 3)[rng.integers(0, 3, n)]
            r.ip_country[:] = w.merchant_country[m]
            out.append(self._decide_fraud(r, "merchant_bust_out", 0.05, 0.0))
        return concat(out) if out else empty(0)

    def alive(self, r: Rows) -> np.ndarray:
        """Mask of rows whose merchant still exists (bust-out merchants vanish at the end of their window)."""
        mask: np.ndarray = r.created < self.gone[r.merchant]
        return mask
