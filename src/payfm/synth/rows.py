"""A batch of charges in index form (:class:`Rows`) and its conversion to an Arrow ``charges`` table.

Generators of genuine traffic, fraud scenarios and retries all produce :class:`Rows`: one numpy array per
field, entities as integer indices into the world's pools and categorical fields as vocabulary codes (the
position in the tuples of :mod:`payfm.events.schema`; ``-1`` means null). Keeping the day in this form makes
every step a vectorised numpy operation; strings are only materialised once, in :func:`to_table`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.events.schema import (
    CARD_BRANDS,
    CARD_FUNDING,
    CHANNELS,
    CHECK_RESULTS,
    DECLINE_CODES,
    OUTCOMES,
    SCENARIOS,
    SCHEMAS,
    THREE_DS_RESULTS,
    TIMESTAMP,
)
from payfm.synth.world import (
    COUNTRIES,
    COUNTRY_CURRENCY,
    CURRENCIES,
    EMAIL_DOMAINS,
    MCC_CODE,
    MINOR_PER_USD_CENT,
    World,
    counter_ids,
)

ECOMMERCE, CARD_PRESENT, RECURRING = 0, 1, 2
AUTHORIZED, ISSUER_DECLINED, BLOCKED = 0, 1, 2
DECLINE = {name: i for i, name in enumerate(DECLINE_CODES)}
SCENARIO = {name: i for i, name in enumerate(SCENARIOS)}
THREE_DS = {name: i for i, name in enumerate(THREE_DS_RESULTS)}
CHECK = {name: i for i, name in enumerate(CHECK_RESULTS)}
CHARGE_ID_DIGITS = 10


@dataclass
class Rows:
    """Charges as parallel numpy arrays (length n). ``-1`` is null for every index or code field."""

    created: np.ndarray  # int64, microseconds since the epoch, UTC
    merchant: np.ndarray  # int32 merchant index
    customer: np.ndarray  # int32 customer index, -1 guest checkout
    card: np.ndarray  # int32 card index
    amount_usd: np.ndarray  # float64 intended amount in US cents (converted to the merchant's currency)
    channel: np.ndarray  # int8 CHANNELS code
    ip: np.ndarray  # int32 IP pool index
    ip_country: np.ndarray  # int16 COUNTRIES index
    device: np.ndarray  # int32 device pool index
    email: np.ndarray  # int16 EMAIL_DOMAINS index
    billing: np.ndarray  # int16 COUNTRIES index
    shipping: np.ndarray  # int16 COUNTRIES index
    address: np.ndarray  # int32 address pool index (shipping address)
    credential_changed: np.ndarray  # int64 microseconds, -1 unknown
    three_ds: np.ndarray  # int8 THREE_DS_RESULTS code
    cvc: np.ndarray  # int8 CHECK_RESULTS code
    avs: np.ndarray  # int8 CHECK_RESULTS code
    outcome: np.ndarray  # int8 OUTCOMES code
    decline: np.ndarray  # int8 DECLINE_CODES code
    retry_of: np.ndarray  # int64 serial number of the retried charge, -1 none
    scenario: np.ndarray  # int8 SCENARIOS code, -1 genuine

    def __len__(self) -> int:
        return int(self.created.size)

    def take(self, index: np.ndarray) -> Rows:
        """The rows at ``index`` (a new batch; the input is not modified)."""
        return Rows(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def with_(self, **changes: np.ndarray) -> Rows:
        """A copy with some fields replaced."""
        return replace(self, **changes)


def empty(n: int) -> Rows:
    """A batch of ``n`` rows with every nullable field null and every code at its first value."""
    i32 = np.full(n, -1, np.int32)
    return Rows(
        created=np.zeros(n, np.int64),
        merchant=np.zeros(n, np.int32),
        customer=i32.copy(),
        card=np.zeros(n, np.int32),
        amount_usd=np.zeros(n, np.float64),
        channel=np.zeros(n, np.int8),
        ip=i32.copy(),
        ip_country=np.full(n, -1, np.int16),
        device=i32.copy(),
        email=np.full(n, -1, np.int16),
        billing=np.full(n, -1, np.int16),
        shipping=np.full(n, -1, np.int16),
        address=i32,
        credential_changed=np.full(n, -1, np.int64),
        three_ds=np.zeros(n, np.int8),
        cvc=np.full(n, CHECK["unchecked"], np.int8),
        avs=np.full(n, CHECK["unchecked"], np.int8),
        outcome=np.zeros(n, np.int8),
        decline=np.full(n, -1, np.int8),
        retry_of=np.full(n, -1, np.int64),
        scenario=np.full(n, -1, np.int8),
    )


def concat(batches: list[Rows]) -> Rows:
    """All batches one after the other."""
    return Rows(**{f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(Rows)})


def _vocab(values: tuple[str, ...]) -> pa.Array:
    return pa.array(values, pa.string())


_COUNTRY = _vocab(COUNTRIES)
_CURRENCY = _vocab(CURRENCIES)
_EMAIL = _vocab(EMAIL_DOMAINS)
_BRAND = _vocab(CARD_BRANDS)
_FUNDING = _vocab(CARD_FUNDING)
_CHANNEL = _vocab(CHANNELS)
_THREE_DS = _vocab(THREE_DS_RESULTS)
_CHECK = _vocab(CHECK_RESULTS)
_OUTCOME = _vocab(OUTCOMES)
_DECLINE = _vocab(DECLINE_CODES)
_SCENARIO = _vocab(SCENARIOS)


def gather(pool: pa.Array, index: np.ndarray) -> pa.Array:
    """``pool[index]`` with null where ``index`` is negative."""
    if index.size and index.min() < 0:
        return pc.take(pool, pa.array(np.maximum(index, 0), mask=index < 0))
    return pc.take(pool, pa.array(index))


def local_amounts(
    world: World, merchant: np.ndarray, amount_usd: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(amount in minor units of the merchant's currency, currency code index) for intended US cents."""
    currency = COUNTRY_CURRENCY[world.merchant_country[merchant]]
    amount = np.maximum(np.rint(amount_usd * MINOR_PER_USD_CENT[currency]), 1).astype(np.int64)
    return amount, currency


def charge_ids(serial: np.ndarray) -> pa.Array:
    """Charge ids ``ch_`` + zero-padded serial number: unique across the world, sortable like time."""
    return counter_ids("ch_", serial, CHARGE_ID_DIGITS)


def to_table(world: World, rows: Rows, serial: np.ndarray) -> pa.Table:
    """The Arrow ``charges`` table of ``rows`` (already in order) with charge ids from ``serial``."""
    amount, currency = local_amounts(world, rows.merchant, rows.amount_usd)
    # amount_usd is the local amount converted back at the fixed rate (jpy rounding shows here).
    amount_usd = np.rint(amount / MINOR_PER_USD_CENT[currency]).astype(np.int64)
    has_retry = rows.retry_of >= 0
    retry_pool = charge_ids(rows.retry_of[has_retry])
    retry_index = np.full(len(rows), -1, np.int64)
    retry_index[has_retry] = np.arange(int(has_retry.sum()))
    cred = rows.credential_changed
    card = rows.card
    arrays = [
        charge_ids(serial),
        pa.array(rows.created, TIMESTAMP),
        gather(world.merchant_ids, rows.merchant),
        gather(MCC_CODE, world.merchant_mcc[rows.merchant]),
        gather(_COUNTRY, world.merchant_country[rows.merchant]),
        gather(world.customer_ids, rows.customer),
        gather(world.card_fingerprint, card),
        gather(world.card_bin, card),
        gather(world.card_last4, card),
        gather(_BRAND, world.card_brand[card]),
        gather(_FUNDING, world.card_funding[card]),
        gather(_COUNTRY, world.card_country[card]),
        pa.array(amount),
        gather(_CURRENCY, currency),
        pa.array(amount_usd),
        gather(_CHANNEL, rows.channel),
        gather(world.ips, rows.ip),
        gather(_COUNTRY, rows.ip_country),
        gather(world.devices, rows.device),
        gather(_EMAIL, rows.email),
        gather(_COUNTRY, rows.billing),
        gather(_COUNTRY, rows.shipping),
        gather(world.addresses, rows.address),
        pa.array(np.maximum(cred, 0), TIMESTAMP, mask=cred < 0),
        gather(_THREE_DS, rows.three_ds),
        gather(_CHECK, rows.cvc),
        gather(_CHECK, rows.avs),
        gather(_OUTCOME, rows.outcome),
        gather(_DECLINE, rows.decline),
        gather(retry_pool, retry_index),
        gather(_SCENARIO, rows.scenario),
    ]
    return pa.Table.from_arrays(arrays, schema=SCHEMAS["charges"])
