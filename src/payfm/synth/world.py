"""The entities of the synthetic world: merchants, customers, cards, devices, IPs, addresses, subscriptions.

Everything here is built once per world, vectorised, and held as numpy attribute arrays plus pyarrow string
pools. Charges refer to entities by integer index; the string columns of a day's table are gathered from the
pools with ``pc.take`` (see :mod:`payfm.synth.rows`). Each pool ends with a *reserve* of never-used entries
(fresh devices, IPs, addresses, cards, fraudster accounts) handed out in order by :class:`Fresh`, so "a new
device" is really new and the world stays deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.events.currency import exponent, usd_per_unit
from payfm.synth.config import WorldConfig

I32 = np.int32
F64 = np.float64

# Countries: customer share, currency, UTC offset in minutes (one zone per country, a simplification).
COUNTRIES = (
    "US", "GB", "DE", "FR", "CA", "JP", "AU", "ES", "IT", "NL", "BR", "MX", "IN", "SE", "IE",
    # Countries that host no customers here but appear as IP origins of fraud and of travel.
    "NG", "RU", "RO", "UA", "VN", "ID", "CN", "PK", "TR",
)  # fmt: skip
CUSTOMER_SHARE = np.array(
    [45, 10, 7, 6, 6, 5, 4, 3, 3, 2, 3, 2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], dtype=F64
)
CURRENCIES = ("usd", "eur", "gbp", "cad", "jpy", "aud", "brl", "mxn", "inr", "sek")
# Minor units of each currency per US cent, from the project's fixed reference rates (jpy has no minor unit).
MINOR_PER_USD_CENT = np.array([10 ** exponent(c) / (100 * usd_per_unit(c)) for c in CURRENCIES])
COUNTRY_CURRENCY = np.array([0, 2, 1, 1, 3, 4, 5, 1, 1, 1, 6, 7, 8, 9, 1] + [0] * 9, dtype=np.int8)
TZ_MINUTES = np.array(
    [-300, 0, 60, 60, -300, 540, 600, 60, 60, 60, -180, -360, 330, 60, 0, 60, 180, 120, 120, 420, 420, 480,
     300, 180],
    dtype=np.int64,
)  # fmt: skip
HOME_COUNTRIES = int(np.count_nonzero(CUSTOMER_SHARE))
# Where stolen-card and takeover traffic comes from when it is foreign (indices into COUNTRIES).
FRAUD_IP_COUNTRIES = np.array([15, 16, 17, 18, 19, 20, 21, 22, 23, 0, 1, 10], dtype=np.int16)

# Merchant categories: code, kind (0 online, 1 physical, 2 subscription), median USD, log-sd, shipped goods,
# high value (what stolen-card fraud prefers: electronics, gift cards, jewellery, travel).
KIND_ONLINE, KIND_PHYSICAL, KIND_SUBSCRIPTION = 0, 1, 2
MCCS = (
    ("5732", 0, 250.0, 0.8, True, True),  # electronics
    ("5947", 0, 60.0, 0.6, False, True),  # gift cards, novelty
    ("5944", 0, 300.0, 0.9, True, True),  # jewellery
    ("4722", 0, 450.0, 0.7, False, True),  # travel agencies
    ("5999", 0, 40.0, 0.9, True, False),  # miscellaneous retail
    ("5691", 0, 70.0, 0.7, True, False),  # clothing
    ("5945", 0, 45.0, 0.7, True, False),  # toys and games
    ("5815", 0, 12.0, 0.7, False, False),  # digital media
    ("5816", 0, 20.0, 0.9, False, True),  # digital games (in-game currency)
    ("5942", 0, 25.0, 0.6, True, False),  # books
    ("5311", 0, 80.0, 0.8, True, False),  # department store (online)
    ("5411", 1, 45.0, 0.8, False, False),  # grocery
    ("5812", 1, 35.0, 0.7, False, False),  # restaurants
    ("5814", 1, 12.0, 0.5, False, False),  # fast food
    ("5541", 1, 40.0, 0.5, False, False),  # fuel
    ("5912", 1, 25.0, 0.7, False, False),  # pharmacy
    ("5732", 1, 200.0, 0.9, False, True),  # electronics store
    ("4899", 2, 15.0, 0.5, False, False),  # cable and streaming
    ("5968", 2, 30.0, 0.6, False, False),  # subscription merchants
    ("7997", 2, 45.0, 0.4, False, False),  # clubs and gyms
)
MCC_CODE = pa.array([m[0] for m in MCCS], pa.string())
MCC_KIND = np.array([m[1] for m in MCCS], dtype=np.int8)
MCC_MEDIAN_CENTS = np.array([m[2] * 100 for m in MCCS])
MCC_SIGMA = np.array([m[3] for m in MCCS])
MCC_SHIPPED = np.array([m[4] for m in MCCS])
MCC_HIGH_VALUE = np.array([m[5] for m in MCCS])

EMAIL_DOMAINS = (
    "gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "aol.com", "proton.me",
    "gmx.de", "orange.fr", "yahoo.co.jp", "web.de", "comcast.net",
    "mail.ru", "yandex.com", "guerrillamail.com", "tutanota.com", "mailinator.com",
)  # fmt: skip
# Genuine customers use every domain, the mainstream Russian ones and the privacy and disposable ones
# included, only rarely: fraud prefers them, so they carry lift, but never a label on their own.
GENUINE_EMAIL_P = np.array([40, 12, 10, 8, 10, 3, 2, 3, 3, 3, 3, 3, 0.4, 0.4, 0.03, 0.15, 0.03], dtype=F64)
FRAUD_EMAIL_P = np.array([35, 6, 8, 6, 4, 1, 8, 1, 1, 1, 1, 1, 8, 8, 5, 3, 3], dtype=F64)

CARD_BRAND_P = np.array([0.50, 0.33, 0.08, 0.04, 0.02, 0.02, 0.01])  # visa..diners (CARD_BRANDS order)
FUNDING_P = np.array([0.55, 0.38, 0.07])  # credit, debit, prepaid
N_BINS = 600


def hex_ids(rng: np.random.Generator, n: int, nbytes: int, prefix: str) -> pa.Array:
    """``n`` strings ``prefix`` + ``2 * nbytes`` random hex digits, built without a Python loop."""
    lut = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    raw = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    chars = np.empty((n, 2 * nbytes), dtype=np.uint8)
    chars[:, 0::2] = lut[raw >> 4]
    chars[:, 1::2] = lut[raw & 15]
    # An all-digit id could read as a card number (13-19 digits passing Luhn): start those with a letter.
    chars[(chars < ord("a")).all(axis=1), 0] = ord("a")
    return _fixed_width(prefix, chars)


def counter_ids(prefix: str, values: np.ndarray, width: int) -> pa.Array:
    """Strings ``prefix`` + zero-padded decimal ``values`` (``width`` digits), so ids sort like counters."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    chars = ((values.astype(np.int64)[:, None] // powers) % 10 + 48).astype(np.uint8)
    return _fixed_width(prefix, chars)


def _fixed_width(prefix: str, chars: np.ndarray) -> pa.Array:
    n = chars.shape[0]
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    full = np.concatenate([np.broadcast_to(head, (n, head.size)), chars], axis=1)
    offsets = np.arange(n + 1, dtype=np.int32) * full.shape[1]
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(full.tobytes())])


def _ip_strings(rng: np.random.Generator, n: int) -> pa.Array:
    """Random public-looking IPv4 addresses as strings."""
    octets = [
        rng.integers(11, 224, n),
        rng.integers(0, 256, n),
        rng.integers(0, 256, n),
        rng.integers(1, 255, n),
    ]
    parts = [pc.cast(pa.array(o), pa.string()) for o in octets]
    return pc.binary_join_element_wise(*parts, ".")


def _bin_strings(rng: np.random.Generator, brands: np.ndarray) -> pa.Array:
    """Six-digit BINs consistent with the brand (visa 4, mastercard 51-55, amex 34/37, ...)."""
    heads = {
        0: ["4"], 1: ["51", "52", "53", "54", "55"], 2: ["34", "37"], 3: ["6011", "65"],
        4: ["3528", "3530", "3566"], 5: ["62"], 6: ["36", "38"],
    }  # fmt: skip
    out = []
    for b in brands.tolist():  # a few hundred BINs: a loop is fine here
        head = heads[b][int(rng.integers(len(heads[b])))]
        tail = "".join(str(d) for d in rng.integers(0, 10, 6 - len(head)))
        out.append(head + tail)
    return pa.array(out, pa.string())


def cdf(weights: np.ndarray) -> np.ndarray:
    """Cumulative distribution of non-negative ``weights`` (last value exactly 1), for :func:`draw`."""
    c: np.ndarray = np.cumsum(weights, dtype=F64)
    out: np.ndarray = c / c[-1]
    return out


def draw(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """``n`` indices drawn with the probabilities encoded by ``cdf`` (searchsorted: O(n log k))."""
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), cdf.size - 1).astype(I32)


def draw_sorted(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """Like :func:`draw` but in increasing order: 5x faster on large pools (cache-friendly searchsorted).

    Only for draws whose order carries no meaning, e.g. the customers of a day's charges.
    """
    u = np.sort(rng.random(n))
    return np.minimum(np.searchsorted(cdf, u, side="right"), cdf.size - 1).astype(I32)


@dataclass
class Fresh:
    """Hands out never-used reserve entries of each pool in order (wrapping if a reserve runs out)."""

    start: dict[str, int]
    size: dict[str, int]
    used: dict[str, int] = field(default_factory=dict)

    def take(self, pool: str, n: int) -> np.ndarray:
        u = self.used.get(pool, 0)
        self.used[pool] = u + n
        return (self.start[pool] + (u + np.arange(n, dtype=np.int64)) % self.size[pool]).astype(I32)


@dataclass
class World:
    """All entity attributes (numpy, by index) and string pools (pyarrow), built by :func:`build_world`."""

    # merchants
    merchant_ids: pa.Array
    merchant_mcc: np.ndarray
    merchant_country: np.ndarray
    merchant_kind: np.ndarray
    merchant_weight: np.ndarray
    kind_members: list[np.ndarray]
    kind_cdf: list[np.ndarray]
    # customers (the first n_customers are real; the rest are fraudster accounts in reserve)
    n_customers: int
    customer_ids: pa.Array
    customer_country: np.ndarray
    customer_activity: np.ndarray  # relative shopping rate
    customer_join: np.ndarray  # the day index of the customer's sign-up (0: there from the start)
    customer_email: np.ndarray
    customer_scale: np.ndarray
    customer_hour: np.ndarray
    customer_travel: np.ndarray
    pref_online: np.ndarray
    pref_physical: np.ndarray
    card_start: np.ndarray
    n_cards: np.ndarray
    # cards (owner -1 for reserve cards that no customer ever used)
    card_fingerprint: pa.Array
    card_bin: pa.Array
    card_last4: pa.Array
    card_brand: np.ndarray
    card_funding: np.ndarray
    card_country: np.ndarray
    card_owner: np.ndarray
    card_bin_index: np.ndarray
    bin_brand: np.ndarray
    # pools: 2 devices and 2 IPs (home, mobile) per customer, 1 address per customer, then reserves
    devices: pa.Array
    ips: pa.Array
    addresses: pa.Array
    # subscriptions (recurring charges): every 30 days (day index % 30 == sub_phase)
    sub_customer: np.ndarray
    sub_card: np.ndarray
    sub_merchant: np.ndarray
    sub_amount: np.ndarray
    sub_phase: np.ndarray
    sub_minute: np.ndarray
    fresh: Fresh

    def customer_cdf(self, day: int) -> np.ndarray:
        """The :func:`cdf` of who shops on day ``day``: the customers signed up by then, by activity."""
        return cdf(self.customer_activity * (self.customer_join <= day))


# Customers who sign up during the world (the rest are there from its first day): without them every
# customer met late in the world would be a fraudster's account.
JOINING_P = 0.2


def build_world(config: WorldConfig, rng: np.random.Generator, genuine_per_day: float) -> World:
    """Create every entity of the world; sizes scale with ``config.charges``."""
    fraud = config.fraud_rate * config.charges
    mix = config.scenario_mix
    n_merchants = int(np.clip(config.charges / 1000, 60, 20_000))
    # A customer shops every 5 days on average; in worlds shorter than 5 days that would mean more customers
    # than charges (1M charges in 1 day: 5M customers, 2.6 GB), so the pool is capped at one per charge.
    n_customers = int(max(300, min(genuine_per_day / 0.2, config.charges)))

    # Merchants: kind 45% online, 45% physical, 10% subscription; Zipf-sized (weight ~ 1 / rank^1.1).
    kind = rng.choice(3, size=n_merchants, p=[0.45, 0.45, 0.10]).astype(np.int8)
    kind[:3] = [0, 1, 2]  # every kind exists even in a tiny world
    mcc = np.empty(n_merchants, dtype=I32)
    for k in range(3):
        options = np.flatnonzero(k == MCC_KIND)
        members = np.flatnonzero(kind == k)
        mcc[members] = rng.choice(options, size=members.size)
    m_country = draw(rng, cdf(CUSTOMER_SHARE), n_merchants).astype(np.int16)
    weight = 1.0 / (rng.permutation(n_merchants) + 1.0) ** 1.1
    kind_members = [np.flatnonzero(kind == k).astype(I32) for k in range(3)]
    kind_cdf = [cdf(weight[m]) for m in kind_members]

    # Customers: home country, e-mail domain, spending scale, preferred hour (local), travel propensity.
    n_res_customers = int(fraud + 100)
    c_country = draw(rng, cdf(CUSTOMER_SHARE), n_customers).astype(np.int16)
    activity = rng.lognormal(0.0, 1.0, n_customers)
    joins = rng.random(n_customers) < JOINING_P
    join = np.where(joins, rng.integers(1, max(config.days, 2), n_customers), 0).astype(np.int32)
    email = draw(rng, cdf(GENUINE_EMAIL_P), n_customers).astype(np.int16)
    scale = rng.lognormal(0.0, 0.4, n_customers)
    hour = np.clip(rng.normal(15.0, 3.5, n_customers), 6.0, 23.5)
    travel = rng.beta(0.5, 12.0, n_customers)  # mean ~4% of ecommerce charges made abroad
    pref_online = np.empty((n_customers, 3), dtype=I32)
    pref_physical = np.empty((n_customers, 3), dtype=I32)
    on, ph = kind_members[KIND_ONLINE], kind_members[KIND_PHYSICAL]
    for c in range(HOME_COUNTRIES):
        who = np.flatnonzero(c_country == c)
        local_on = on[m_country[on] == c]
        local_ph = ph[m_country[ph] == c]
        local_ph = local_ph if local_ph.size else ph
        pref_physical[who] = local_ph[draw(rng, cdf(weight[local_ph]), who.size * 3)].reshape(-1, 3)
        pool = np.concatenate([local_on, on]) if local_on.size else on
        pref_online[who] = pool[draw(rng, cdf(weight[pool]), who.size * 3)].reshape(-1, 3)

    # Cards: 1-3 per customer, issued in the home country (3% abroad), then a reserve of unseen cards.
    n_cards = rng.choice([1, 2, 3], size=n_customers, p=[0.5, 0.35, 0.15]).astype(np.int8)
    card_start = np.concatenate([[0], np.cumsum(n_cards)[:-1]]).astype(I32)
    n_owned = int(n_cards.sum())
    n_res_cards = int(fraud * (1.3 * mix["card_testing"] + 0.6 * mix["merchant_bust_out"]) + 100)
    n_all_cards = n_owned + n_res_cards
    owner = np.concatenate(
        [np.repeat(np.arange(n_customers, dtype=I32), n_cards), np.full(n_res_cards, -1, I32)]
    )
    card_country = np.zeros(n_all_cards, dtype=np.int16)
    card_country[:n_owned] = c_country[owner[:n_owned]]
    abroad = rng.random(n_owned) < 0.03
    card_country[:n_owned][abroad] = draw(rng, cdf(CUSTOMER_SHARE), int(abroad.sum()))
    bin_brand = draw(rng, cdf(CARD_BRAND_P), N_BINS).astype(np.int8)
    bin_funding = draw(rng, cdf(FUNDING_P), N_BINS).astype(np.int8)
    bin_country = draw(rng, cdf(CUSTOMER_SHARE), N_BINS).astype(np.int16)
    bin_strings = _bin_strings(rng, bin_brand)
    # A card's BIN is drawn among BINs of its country (any BIN when the country has none).
    card_bin = rng.integers(0, N_BINS, n_all_cards).astype(I32)
    for c in range(len(COUNTRIES)):
        who = np.flatnonzero(card_country == c)
        local = np.flatnonzero(bin_country == c)
        if who.size and local.size:
            card_bin[who] = local[rng.integers(0, local.size, who.size)]
    # Reserve cards (the ones card testers try) come in blocks of 64 sharing two BINs: few BINs per burst.
    blocks = rng.integers(0, N_BINS, size=(n_res_cards // 64 + 1, 2))
    res = np.arange(n_res_cards)
    card_bin[n_owned:] = blocks[res // 64, rng.integers(0, 2, n_res_cards)]
    card_country = bin_country[card_bin].copy()
    card_country[:n_owned][~abroad] = c_country[owner[:n_owned][~abroad]]

    # Subscriptions bill every 30 days; sized so recurring charges are ~10% of genuine charges.
    n_subs = round(0.1 * genuine_per_day * 30)
    present = np.flatnonzero(join == 0)  # subscribers from the start (a subscription bills from day 0)
    sub_customer = present[rng.integers(0, present.size, n_subs)].astype(I32)
    sub_merchant = kind_members[KIND_SUBSCRIPTION][draw(rng, kind_cdf[KIND_SUBSCRIPTION], n_subs)]
    sub_mcc = mcc[sub_merchant]
    sub_amount = np.round(MCC_MEDIAN_CENTS[sub_mcc] * rng.lognormal(0.0, MCC_SIGMA[sub_mcc]) / 100) * 100 - 1

    # Reserves sized above expected use (genuine: 2.4% of charges on a new device, ~8% on another IP, ~1.2%
    # to a new address; fraud: about 1-2 of each per charge) so that "new" stays new; they wrap if exceeded.
    n_dev = int(0.04 * config.charges + 2 * fraud + 100)
    n_ip = int(0.10 * config.charges + 2 * fraud + 100)
    n_addr = int(0.03 * config.charges + 2 * fraud + 100)
    return World(
        merchant_ids=counter_ids("acct_", np.arange(n_merchants), 8),
        merchant_mcc=mcc,
        merchant_country=m_country,
        merchant_kind=kind,
        merchant_weight=weight,
        kind_members=kind_members,
        kind_cdf=kind_cdf,
        n_customers=n_customers,
        # ids in no order: numbered in order, the fraudsters' reserve accounts came after every customer's
        customer_ids=counter_ids("cus_", rng.permutation(n_customers + n_res_customers), 9),
        customer_country=c_country,
        customer_activity=activity,
        customer_join=join,
        customer_email=email,
        customer_scale=scale,
        customer_hour=hour,
        customer_travel=travel,
        pref_online=pref_online,
        pref_physical=pref_physical,
        card_start=card_start,
        n_cards=n_cards,
        card_fingerprint=hex_ids(rng, n_all_cards, 8, "fp_"),
        card_bin=pc.take(bin_strings, pa.array(card_bin)),
        card_last4=counter_ids("", rng.integers(0, 10_000, n_all_cards), 4),
        card_brand=bin_brand[card_bin],
        card_funding=bin_funding[card_bin],
        card_country=card_country,
        card_owner=owner,
        card_bin_index=card_bin,
        bin_brand=bin_brand,
        devices=hex_ids(rng, 2 * n_customers + n_dev, 10, "dev_"),
        ips=_ip_strings(rng, 2 * n_customers + n_ip),
        addresses=hex_ids(rng, n_customers + n_addr, 8, "addr_"),
        sub_customer=sub_customer,
        sub_card=card_start[sub_customer],
        sub_merchant=sub_merchant,
        sub_amount=np.maximum(sub_amount, 99.0),
        sub_phase=rng.integers(0, 30, n_subs).astype(np.int8),
        sub_minute=rng.integers(0, 24 * 60, n_subs),
        fresh=Fresh(
            start={
                "device": 2 * n_customers,
                "ip": 2 * n_customers,
                "address": n_customers,
                "card": n_owned,
                "customer": n_customers,
            },
            size={
                "device": n_dev,
                "ip": n_ip,
                "address": n_addr,
                "card": n_res_cards,
                "customer": n_res_customers,
            },
        ),
    )
