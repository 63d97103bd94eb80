"""Normal traffic: one day of genuine charges, monthly subscriptions, issuer decisions and retries.

Genuine customers follow habits (preferred merchants, amounts per MCC scaled by their own spending level,
their usual hour in local time, their own cards, devices, IPs and e-mail domain) but are not perfectly
regular: some charges come from a new device, a mobile or foreign IP (travel), ship elsewhere (gifts) or
are large. That overlap with fraud is deliberate: no single rule separates the two.
"""

from __future__ import annotations

import numpy as np

from payfm.synth.rows import (
    AUTHORIZED,
    BLOCKED,
    CARD_PRESENT,
    CHECK,
    DECLINE,
    ECOMMERCE,
    ISSUER_DECLINED,
    RECURRING,
    THREE_DS,
    Rows,
    empty,
)
from payfm.synth.world import (
    COUNTRIES,
    CUSTOMER_SHARE,
    KIND_ONLINE,
    KIND_PHYSICAL,
    MCC_MEDIAN_CENTS,
    MCC_SHIPPED,
    MCC_SIGMA,
    TZ_MINUTES,
    World,
    cdf,
    draw,
    draw_sorted,
)

SHIP_TO_CDF = cdf(CUSTOMER_SHARE.astype(np.float64))  # a gift abroad goes where customers live
US_PER_DAY = 86_400_000_000
US_PER_MINUTE = 60_000_000
# Relative volume by local hour of day (quiet at night, peaks at lunch and in the evening).
DIURNAL = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 4, 4.5, 5, 5.5, 5, 4.8, 4.8, 5, 5.5, 6, 6.2, 6, 5, 3.5, 2],
    dtype=float,
)
DIURNAL_CDF = cdf(DIURNAL)
# Relative volume by weekday, Monday first (Friday and Saturday busiest).
WEEKLY = np.array([0.96, 0.97, 0.98, 1.0, 1.07, 1.08, 0.94])
# Countries where strong customer authentication makes 3-D Secure the norm (GB, DE, FR, ES, IT, NL, SE, IE).
SCA_COUNTRIES = np.zeros(len(COUNTRIES), dtype=bool)
SCA_COUNTRIES[[1, 2, 3, 7, 8, 9, 13, 14]] = True

# Issuer decline codes of genuine declines, and their probabilities.
GENUINE_DECLINES = np.array(
    [DECLINE[c] for c in ("insufficient_funds", "do_not_honor", "generic_decline", "expired_card",
                          "transaction_not_allowed", "try_again_later", "processing_error",
                          "card_velocity_exceeded", "fraudulent", "lost_card", "stolen_card")],
    dtype=np.int8,
)  # fmt: skip
GENUINE_DECLINE_CDF = cdf(np.array([35, 22, 14, 7, 5, 5, 3, 3, 2, 2, 2], dtype=float))
# Retry behaviour by decline code: probability that a declined charge is retried, and that the retry succeeds.
RETRY_P = np.zeros(len(DECLINE), dtype=float)
RETRY_SUCCESS = np.zeros(len(DECLINE), dtype=float)
for _code, _retry, _success in (
    ("insufficient_funds", 0.6, 0.15),  # success rises to 0.55 when retried on a later pay day
    ("do_not_honor", 0.3, 0.08),
    ("generic_decline", 0.35, 0.25),
    ("try_again_later", 0.8, 0.85),
    ("processing_error", 0.8, 0.85),
    ("incorrect_cvc", 0.5, 0.7),
    ("card_velocity_exceeded", 0.3, 0.3),
    ("expired_card", 0.2, 0.05),
    ("transaction_not_allowed", 0.15, 0.05),
    ("fraudulent", 0.05, 0.0),
    ("lost_card", 0.05, 0.0),
    ("stolen_card", 0.05, 0.0),
):
    RETRY_P[DECLINE[_code]] = _retry
    RETRY_SUCCESS[DECLINE[_code]] = _success
PAYDAY_SUCCESS = 0.55


def _pick(rng: np.random.Generator, choices: np.ndarray, p: list[float], n: int) -> np.ndarray:
    out: np.ndarray = choices[draw(rng, cdf(np.array(p)), n)]
    return out


def local_time(
    rng: np.random.Generator, day_start: int, n: int, tz: np.ndarray, hour: np.ndarray
) -> np.ndarray:
    """Timestamps (us) within the UTC day: local time of day from habits (``hour``) or the diurnal curve."""
    habitual = rng.random(n) < 0.5
    local_min = np.where(
        habitual,
        (hour + rng.normal(0.0, 2.0, n)) * 60.0,
        (draw(rng, DIURNAL_CDF, n) + rng.random(n)) * 60.0,
    )
    utc_min = np.mod(local_min - tz, 1440.0)
    created: np.ndarray = day_start + np.minimum((utc_min * US_PER_MINUTE).astype(np.int64), US_PER_DAY - 1)
    return created


def genuine_day(
    world: World, rng: np.random.Generator, day_start: int, n: int, cred: np.ndarray, shoppers: np.ndarray
) -> Rows:
    """``n`` one-off genuine charges (about 2/3 ecommerce, 1/3 card present) on the day at ``day_start``.

    ``cred`` holds each customer's last credential change (us, -1 never), copied onto ecommerce charges;
    ``shoppers`` is the day's ``world.customer_cdf(day)`` (the customers signed up by then).
    """
    r = empty(n)
    cust = draw_sorted(rng, shoppers, n)  # row order is irrelevant: rows are sorted by time later
    ecom = rng.random(n) < 2 / 3
    r.channel[:] = np.where(ecom, ECOMMERCE, CARD_PRESENT)
    nc = world.n_cards[cust]
    off = np.where(rng.random(n) < 0.7, 0, (rng.random(n) * nc).astype(np.int32))
    r.card[:] = world.card_start[cust] + off
    travel = rng.random(n) < world.customer_travel[cust]
    slot = rng.integers(0, 3, n)
    usual = rng.random(n) < np.where(travel, 0.0, np.where(ecom, 0.7, 0.85))
    pref = np.where(ecom, world.pref_online[cust, slot], world.pref_physical[cust, slot])
    on_idx = world.kind_members[KIND_ONLINE][draw(rng, world.kind_cdf[KIND_ONLINE], n)]
    ph_idx = world.kind_members[KIND_PHYSICAL][draw(rng, world.kind_cdf[KIND_PHYSICAL], n)]
    merchant = np.where(usual, pref, np.where(ecom, on_idx, ph_idx)).astype(np.int32)
    r.merchant[:] = merchant
    mcc = world.merchant_mcc[merchant]
    r.amount_usd[:] = MCC_MEDIAN_CENTS[mcc] * world.customer_scale[cust] * rng.lognormal(0.0, MCC_SIGMA[mcc])
    home = world.customer_country[cust]
    tz = np.where(ecom, TZ_MINUTES[home], TZ_MINUTES[world.merchant_country[merchant]])
    r.created[:] = local_time(rng, day_start, n, tz, world.customer_hour[cust])
    r.three_ds[:] = THREE_DS["not_requested"]

    e = np.flatnonzero(ecom)
    ce, he, k = cust[e], home[e], e.size
    guest = rng.random(k) < 0.10
    r.customer[e] = np.where(guest, -1, ce)
    new_device = rng.random(k) < 0.04
    dev = 2 * ce + (rng.random(k) < 0.25)
    dev[new_device] = world.fresh.take("device", int(new_device.sum()))
    r.device[e] = dev
    # IP: home broadband 65%, mobile 31%, other 4%; abroad when travelling (a foreign IP country).
    u = rng.random(k)
    ip = np.where(u < 0.65, 2 * ce, 2 * ce + 1)
    other = (u >= 0.96) | travel[e]
    ip[other] = world.fresh.take("ip", int(other.sum()))
    r.ip[e] = ip
    abroad = (he + rng.integers(1, len(COUNTRIES), k)) % len(COUNTRIES)
    r.ip_country[e] = np.where(travel[e], abroad, he)
    # 3% without an e-mail: wallets and in-app checkouts that do not pass one on (card testers often omit it)
    r.email[e] = np.where(rng.random(k) < 0.03, -1, world.customer_email[ce])
    r.billing[e] = world.card_country[r.card[e]]
    # Goods are shipped, but 6% of orders at merchants that ship are not: digital delivery, gift cards,
    # pick-up in store. A quarter of gifts (4% of orders) go abroad: mostly where customers live, a fifth
    # to any country (family and friends abroad), so no destination is fraud's alone.
    shipped = MCC_SHIPPED[mcc[e]] & (rng.random(k) >= 0.06)
    gift = rng.random(k) < 0.04
    abroad_to = np.where(rng.random(k) < 0.8, draw(rng, SHIP_TO_CDF, k), rng.integers(0, len(COUNTRIES), k))
    ship_country = np.where(gift & (rng.random(k) < 0.25), abroad_to, he)
    r.shipping[e] = np.where(shipped, ship_country, -1)
    addr = ce.copy()
    addr[gift] = world.fresh.take("address", int(gift.sum()))
    r.address[e] = np.where(shipped, addr, -1)
    r.credential_changed[e] = np.where(guest, -1, cred[ce])
    sca = SCA_COUNTRIES[world.merchant_country[merchant[e]]]
    three = np.array(
        [THREE_DS[t] for t in ("authenticated", "attempted", "not_requested", "failed")], np.int8
    )
    r.three_ds[e] = np.where(sca, _pick(rng, three, [80, 8, 10, 2], k), _pick(rng, three, [11, 3, 85, 1], k))
    checks = np.array([CHECK[c] for c in ("pass", "fail", "unavailable", "unchecked")], np.int8)
    r.cvc[e] = _pick(rng, checks, [95.5, 1, 2, 1.5], k)
    r.avs[e] = _pick(rng, checks, [84, 5, 8, 3], k)
    decide(world, rng, r, extra_risk=0.0, blocked_p=0.003)
    return r


def recurring_day(world: World, rng: np.random.Generator, day_index: int, day_start: int) -> Rows:
    """Subscriptions billing today: same card, merchant and amount every 30 days, merchant-initiated."""
    subs = np.flatnonzero(world.sub_phase == day_index % 30)
    n = subs.size
    r = empty(n)
    r.channel[:] = RECURRING
    r.merchant[:] = world.sub_merchant[subs]
    r.customer[:] = world.sub_customer[subs]
    r.card[:] = world.sub_card[subs]
    r.amount_usd[:] = world.sub_amount[subs]
    jitter = rng.integers(0, US_PER_MINUTE, n)  # billing runs are scheduled, a minute of jitter
    r.created[:] = day_start + world.sub_minute[subs] * US_PER_MINUTE + jitter
    r.email[:] = world.customer_email[r.customer]
    r.billing[:] = world.card_country[r.card]
    r.three_ds[:] = THREE_DS["not_requested"]
    decide(world, rng, r, extra_risk=0.02, blocked_p=0.0005)  # stored cards expire: more declines
    return r


def decide(
    world: World,
    rng: np.random.Generator,
    r: Rows,
    extra_risk: float | np.ndarray,
    blocked_p: float | np.ndarray,
    codes: np.ndarray = GENUINE_DECLINES,
    code_cdf: np.ndarray = GENUINE_DECLINE_CDF,
) -> None:
    """Set outcome and decline code in place: merchant rules block some, the issuer declines some.

    The issuer's decline probability grows with prepaid/debit funding, cross-border use, large amounts and a
    failed CVC (then the code is ``incorrect_cvc``); ``extra_risk`` adds to it (fraud is declined more).
    """
    n = len(r)
    funding = world.card_funding[r.card]
    p = 0.026 + np.where(funding == 2, 0.05, np.where(funding == 1, 0.01, 0.0))
    p = p + 0.03 * (world.card_country[r.card] != world.merchant_country[r.merchant])
    p = p + 0.04 * (r.amount_usd > 50_000) + extra_risk
    cvc_fail = r.cvc == CHECK["fail"]
    p = np.where(cvc_fail, 0.85, p)
    declined = rng.random(n) < p
    code = codes[draw(rng, code_cdf, n)]
    code = np.where(cvc_fail, DECLINE["incorrect_cvc"], code)
    blocked = rng.random(n) < blocked_p
    r.outcome[:] = np.where(blocked, BLOCKED, np.where(declined, ISSUER_DECLINED, AUTHORIZED))
    r.decline[:] = np.where(r.outcome == ISSUER_DECLINED, code, -1)


def plan_retries(rng: np.random.Generator, r: Rows) -> tuple[Rows, np.ndarray]:
    """Retries of today's declined genuine ecommerce and recurring charges: (retry rows, index of originals).

    Ecommerce customers mostly retry within minutes; recurring billing retries insufficient funds on the
    next pay day (the 1st or 15th) and other codes one to three days later. Success depends on the code.
    The rows' ``retry_of`` is left for the caller, which knows the originals' serial numbers.
    """
    code = r.decline.astype(np.int64)
    cand = (r.outcome == ISSUER_DECLINED) & (r.channel != CARD_PRESENT) & (r.scenario < 0) & (r.retry_of < 0)
    idx = np.flatnonzero(cand)
    idx = idx[rng.random(idx.size) < RETRY_P[code[idx]]]
    out = r.take(idx)
    k = idx.size
    code = code[idx]
    recurring = out.channel == RECURRING
    soon = ~recurring & (rng.random(k) < 0.8)
    minutes = np.exp(rng.normal(np.log(2.0), 0.8, k)) * US_PER_MINUTE  # lognormal, median 2 minutes
    days = rng.integers(1, 4, k) * US_PER_DAY + rng.integers(0, US_PER_DAY // 4, k)
    delay = np.where(soon, minutes, days).astype(np.int64)
    # Pay-day retries for recurring insufficient funds: 1st or 15th of the month, 6-10 am UTC.
    payday_retry = recurring & (code == DECLINE["insufficient_funds"])
    day = out.created.astype("datetime64[us]").astype("datetime64[D]")
    month = day.astype("datetime64[M]")
    dom = (day - month.astype("datetime64[D]")).astype(np.int64) + 1
    first = month.astype("datetime64[D]")
    nxt = np.where(
        dom < 15, first + np.timedelta64(14, "D"), (month + np.timedelta64(1, "M")).astype("datetime64[D]")
    )
    payday = nxt.astype("datetime64[us]").astype(np.int64) + rng.integers(6 * 60, 10 * 60, k) * US_PER_MINUTE
    created = np.where(payday_retry, payday, out.created + delay)
    later = (created - out.created) >= US_PER_DAY // 2
    p_ok = np.where((code == DECLINE["insufficient_funds"]) & later, PAYDAY_SUCCESS, RETRY_SUCCESS[code])
    ok = rng.random(k) < p_ok
    same_code = rng.random(k) < 0.8
    out.created[:] = created
    out.outcome[:] = np.where(ok, AUTHORIZED, ISSUER_DECLINED)
    out.decline[:] = np.where(ok, -1, np.where(same_code, code, DECLINE["do_not_honor"]))
    out.cvc[:] = np.where(ok & (code == DECLINE["incorrect_cvc"]), CHECK["pass"], out.cvc)
    return out, idx
