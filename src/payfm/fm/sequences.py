"""Point-in-time charge sequences: for each charge, the preceding charges of its card and of its merchant.

A charge's sequence in view ``v`` (card or merchant) is the last ``K`` charges of its key, in the total order
(created, charge_id), ending with the charge itself, left-padded with PAD rows. Point-in-time rule: it holds
only charges strictly before the target in that order, plus the target's own pre-authorization fields; the
target's outcome token is always MASK (see :func:`Sequences.batch`). The merchant view is what exposes card
testing (a burst of small declined charges at one merchant from many new cards).

Built in batch with numpy over the charges sorted by (key, created, charge_id): no per-charge Python loop.
Each charge is tokenized once; only its ``dt`` and ``rel`` tokens differ by view (the gap to the key's
previous charge, and whether that charge had the same IP, device and other key). The count tokens (earlier
charges of the card, device, IP, address) come from the same sort, per key column.

Example:
    >>> import numpy as np
    >>> window_index(np.array([0, 0, 0, 1]), k=2).tolist()
    [[-1, 0], [0, 1], [1, 2], [-1, 3]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace, opened
from payfm.fm.tokenizer import (
    COLUMNS,
    COUNT_FIELDS,
    DT_FIELD,
    MASK,
    OUTCOME_FIELD,
    PAD,
    REL_FIELD,
    Tokenizer,
    dt_tokens,
    rel_codes,
    rel_tokens,
)

VIEWS = ("card_fingerprint", "merchant_id")  # the key of each view, in model order
OTHER = {"card_fingerprint": "merchant_id", "merchant_id": "card_fingerprint"}  # the ``rel`` "same other key"
REL_KEYS = ("ip_address", "device_id")  # the ``rel`` "same IP", "same device" bits
KEY_COLUMNS = tuple(sorted({*VIEWS, *REL_KEYS, *COUNT_FIELDS.values()}))


def read_charges(ws: Workspace, *, until_us: int | None = None, limit: int | None = None) -> pa.Table:
    """The charges the tokenizer needs, ordered by (created, charge_id), with ``created_us`` (int64).

    ``until_us`` keeps charges created before that instant; ``limit`` the first ``limit`` of them.
    """
    ws = opened(ws, "read_charges")
    cols = ", ".join(sorted({*COLUMNS, *KEY_COLUMNS, "charge_id"}))
    where = f"WHERE epoch_us(created) < {int(until_us)}" if until_us is not None else ""
    lim = f"LIMIT {int(limit)}" if limit is not None else ""
    con = ws.connect()
    try:
        table: pa.Table = con.sql(
            f"SELECT {cols}, epoch_us(created) AS created_us, "
            "coalesce(epoch_us(credential_changed_at), -1) AS credential_changed_us FROM charges "
            f"{where} "
            f"ORDER BY created, charge_id {lim}"
        ).to_arrow_table()
    finally:
        con.close()
    return table


def time_cut(ws: Workspace, frac: float) -> int:
    """``created_us`` of the charge at fraction ``frac`` of the log in (created, charge_id) order.

    The train/test cut shared by pretraining (``until_us``) and the downstream evaluation."""
    con = ws.connect()
    try:
        row = con.execute(
            "SELECT epoch_us(created) FROM charges ORDER BY created, charge_id LIMIT 1 "
            f"OFFSET (SELECT CAST(floor(count(*) * {float(frac)}) AS BIGINT) FROM charges)"
        ).fetchone()
    finally:
        con.close()
    if row is None:
        if not 0 < frac < 1:
            raise ConfigError(f"The time cut must be a fraction in (0, 1) of the charges. Got {frac}.")
        raise ConfigError(
            f"The workspace '{ws.root}' holds no charges: generate or import some first (payfm generate, "
            "payfm import)."
        )
    return int(row[0])


def window_index(key: np.ndarray, k: int) -> np.ndarray:
    """(n, k) positions of the last ``k`` rows of each row's key, ending with the row; -1 pads.

    ``key`` must be sorted (rows grouped by key, in time order within a key).
    """
    n = len(key)
    pos: np.ndarray = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)  # int32: half the traffic
    new = np.ones(n, dtype=bool)
    new[1:] = key[1:] != key[:-1]
    start = np.maximum.accumulate(np.where(new, pos, 0))
    back: np.ndarray = np.arange(k - 1, -1, -1, dtype=pos.dtype)
    out: np.ndarray = pos[:, None] - back[None, :]  # (n, k)
    out[out < start[:, None]] = -1
    return out


@dataclass(frozen=True)
class Sequences:
    """Tokenized charges and, per charge and view, the rows of its sequence.

    ``tokens`` is (V, N + 1, F): row r of view v is charge r's tokens with its view-v ``dt``; row N is all
    PAD. ``index`` is (N, V, K) int32 rows into ``tokens[v]`` (N for padding), the target last.
    Charges are in (created, charge_id) order, as ``charge_id`` and ``created_us``.
    """

    charge_id: pa.Array
    created_us: np.ndarray
    tokens: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.created_us)

    def batch(self, rows: np.ndarray, *, mask_outcome: bool = True) -> np.ndarray:
        """(B, V, K, F) int64 model input for charges ``rows``, the target's outcome masked.

        ``mask_outcome=False`` leaves the target's outcome in: pretraining's targets need it
        (``pretrain.mask_batch`` masks the input itself), nothing else may see it.
        """
        views = [self.tokens[v][self.index[rows, v]] for v in range(self.index.shape[1])]  # V x (B, K, F)
        x = np.stack(views, axis=1)  # (B, V, K, F)
        if mask_outcome:
            x[:, :, -1, OUTCOME_FIELD] = MASK
        return x

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        """(B, V) number of charges (target included, padding not) in the sequences of charges ``rows``."""
        out = np.empty((len(rows), self.index.shape[1]), dtype=np.int64)
        for i in range(0, len(rows), 65_536):  # chunks: no (B, V, K) copy of the index at once
            out[i : i + 65_536] = (self.index[rows[i : i + 65_536]] < len(self)).sum(axis=2)  # padding: N
        return out

    def windows(self, rows: np.ndarray, views: np.ndarray, length: int) -> np.ndarray:
        """(S, length, F) int64: the last ``length`` charges of the sequence of charge ``rows[s]`` in view
        ``views[s]``, the target's outcome masked: :meth:`batch`'s rows without the left padding when
        ``length`` is the sequence's length (:meth:`lengths`)."""
        k = self.index.shape[2]
        flat = self.tokens.reshape(-1, self.tokens.shape[2])  # (V * (N + 1), F), a view
        at = self.index[rows, views, k - length :] + (views * self.tokens.shape[1])[:, None]  # (S, length)
        x: np.ndarray = flat[at]  # (S, length, F)
        x[:, -1, OUTCOME_FIELD] = MASK
        return x


def key_codes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(n,) int64 codes of a key column: equal values, equal codes; -1 for null."""
    flat = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    indices = pc.dictionary_encode(flat).indices
    out: np.ndarray = pc.fill_null(indices, -1).to_numpy().astype(np.int64)
    return out


def prior_counts(codes: np.ndarray) -> np.ndarray:
    """Per row, the number of earlier rows (in row order) with the same code; -1 where the code is -1."""
    n = len(codes)
    order = np.lexsort((np.arange(n), codes))  # stable: rows of a key in time order
    skey = codes[order]
    new = np.ones(n, dtype=bool)
    new[1:] = skey[1:] != skey[:-1]
    start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    out = np.empty(n, dtype=np.int64)
    out[order] = np.arange(n) - start
    return np.where(codes < 0, -1, out)


def build_sequences(charges: pa.Table, tokenizer: Tokenizer, k: int) -> Sequences:
    """Sequences of ``k`` charges per view for every charge of ``charges`` (as from :func:`read_charges`)."""
    created = charges["created_us"].to_numpy().astype(np.int64)
    n = len(created)
    codes = {c: key_codes(charges[c]) for c in KEY_COLUMNS}
    history = {name: prior_counts(codes[col]) for name, col in COUNT_FIELDS.items()}
    history["credential_changed_us"] = charges["credential_changed_us"].to_numpy().astype(np.int64)
    base = tokenizer.encode(
        {c: charges[c] for c in COLUMNS}, created, np.full(n, -1, dtype=np.int64), history
    )  # (N, F), dt and rel filled per view below
    order_global = np.arange(n)  # the table is already in (created, charge_id) order
    tokens = np.empty((len(VIEWS), n + 1, base.shape[1]), dtype=np.int64)
    tokens[:, n] = PAD
    index = np.empty((n, len(VIEWS), k), dtype=np.int32)
    for v, key_col in enumerate(VIEWS):
        order = np.lexsort((order_global, codes[key_col]))  # (key, created, charge_id)
        skey, screated = codes[key_col][order], created[order]
        prev = np.full(n, -1, dtype=np.int64)
        same = np.zeros(n, dtype=bool)
        same[1:] = skey[1:] == skey[:-1]
        prev[1:] = np.where(same[1:], screated[:-1], -1)
        bits = []
        for col in (*REL_KEYS, OTHER[key_col]):
            c = codes[col][order]
            eq = np.zeros(n, dtype=bool)
            eq[1:] = (c[1:] == c[:-1]) & (c[1:] >= 0)
            bits.append(eq)
        rel = np.where(same, rel_codes(*bits), -1)
        view = tokens[v]  # (N + 1, F), a view: written in place, no copy of base per view
        view[:n] = base
        view[order, DT_FIELD] = dt_tokens(screated, prev)
        view[order, REL_FIELD] = rel_tokens(rel)
        win = window_index(skey, k)  # (N, K) sorted positions, -1 pads
        # sorted position -> row; position -1 takes the appended N, the all-PAD row
        index[order, v] = np.append(order, n).astype(np.int32)[win]
    return Sequences(
        charge_id=charges["charge_id"].combine_chunks(), created_us=created, tokens=tokens, index=index
    )
