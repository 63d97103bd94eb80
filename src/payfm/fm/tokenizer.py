"""The charge tokenizer: each field of a charge becomes one token id in that field's own vocabulary.

Every field has the same reserved ids: 0 = padding (no charge), 1 = mask (hidden from the model), 2 = null
(the field is missing, or there is no previous event), 3 = out of vocabulary; values start at 4.

- categorical fields keep their ``max_vocab`` most frequent training values (ties by value, so the fit is
  deterministic); anything else maps to OOV;
- ``amount``: the USD amount in quantile bins fitted on training data;
- ``dt``: time since the previous charge of the sequence's key (card or merchant) in log2-second bins;
- ``rel``: how the charge relates to the previous charge of the sequence's key: same IP, same device, same
  card (merchant view) or same merchant (card view), three bits;
- ``hour`` and ``weekday`` (local: UTC + the merchant country's offset);
- ``card_n``, ``device_n``, ``ip_n``, ``address_n``: how many earlier charges the charge's card, device, IP
  and shipping address have, in log2 bins (0 = never seen: a burst of new cards at one merchant is card
  testing, a new device and address on an old card is account takeover);
- ``cred``: time since the account's last credential change, log2-hour bins;
- ``outcome``: authorized, blocked or the issuer's decline code. It is not a pre-authorization field: the
  charge being embedded always has it masked (see :mod:`payfm.fm.sequences`).

The fitted tokenizer is a JSON document; its ``version`` is a hash of that document, stored with the model.

Example:
    >>> import pyarrow as pa
    >>> t = Tokenizer.fit({"amount_usd": pa.array([100, 200, 300]), "card_brand": pa.array(["visa"] * 3)})
    >>> int(t.encode_field("card_brand", pa.array(["visa", "amex", None]))[1])
    3
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.errors import ConfigError
from payfm.features.request import COUNTRY_UTC_OFFSET_H

PAD, MASK, NULL, OOV = 0, 1, 2, 3
N_SPECIAL = 4
CATEGORICAL = (
    "merchant_mcc",
    "merchant_country",
    "card_country",
    "card_brand",
    "card_funding",
    "currency",
    "channel",
    "ip_country",
    "three_ds",
    "cvc_check",
    "address_check",
)
# Count fields: the key column whose earlier charges are counted (point-in-time, see payfm.fm.sequences).
COUNT_FIELDS = {
    "card_n": "card_fingerprint",
    "device_n": "device_id",
    "ip_n": "ip_address",
    "address_n": "shipping_address_id",
}
# Token fields in model order. "outcome" is last; the columns it is derived from are OUTCOME_COLUMNS.
FIELDS = (*CATEGORICAL, "amount", "dt", "rel", "hour", "weekday", *COUNT_FIELDS, "cred", "outcome")
OUTCOME_FIELD = FIELDS.index("outcome")
DT_FIELD = FIELDS.index("dt")
REL_FIELD = FIELDS.index("rel")
OUTCOME_COLUMNS = ("outcome", "decline_code")
# Raw charge columns the tokenizer reads (besides ``created`` and ``credential_changed``, as microseconds).
COLUMNS = (*CATEGORICAL, "amount_usd", "merchant_country", *OUTCOME_COLUMNS)
DT_BINS = 26  # log2 seconds: 0 (< 1 s) ... 25 (>= 2^24 s, ~194 days)
COUNT_BINS = 12  # log2(count + 1): 0 (first charge) ... 11 (>= 2047 earlier charges)
CRED_BINS = 14  # log2(hours + 1): 0 (< 1 h) ... 13 (>= 8191 h, ~11 months)
REL_VALUES = 8  # 3 bits: same IP, same device, same other key (card or merchant) as the previous charge
# Fixed amount edges below the quantiles (USD cents): micro-amounts are what card testers charge.
MICRO_EDGES = (100.0, 200.0, 500.0)
_US_PER_HOUR = 3_600_000_000
_US_PER_DAY = 86_400_000_000


def outcome_values(outcome: Any, decline: Any) -> list[str | None]:
    """'authorized', 'blocked' or 'issuer_declined:<code>' (the code carries the fraud signal)."""
    return [
        f"{o}:{d or 'none'}" if o == "issuer_declined" else o
        for o, d in zip(_as_list(outcome), _as_list(decline), strict=True)
    ]


_DISTINCT_FROM = 256  # Arrow columns longer than this are tokenized by their distinct values


def _as_list(values: Any) -> list[Any]:
    if isinstance(values, pa.ChunkedArray | pa.Array | np.ndarray):
        out: list[Any] = values.tolist() if isinstance(values, np.ndarray) else values.to_pylist()
        return out
    return list(values)


def _as_array(values: Any) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    return pa.array(values)


def _columns(columns: Mapping[str, Any] | pa.Table) -> Mapping[str, Any]:
    if isinstance(columns, pa.Table):
        return {name: columns[name] for name in columns.column_names}
    return columns


@dataclass(frozen=True)
class Tokenizer:
    """A fitted tokenizer: per-field vocabularies and amount quantile edges (see the module docstring)."""

    vocab: dict[str, list[str]]  # field -> values; value i has token id N_SPECIAL + i
    amount_edges: list[float]  # increasing USD-cent edges; bin = number of edges <= amount
    # the weekday in the merchant's zone, as the hour is; tokenizers fitted before 2026-12-06 coded the UTC
    # weekday, and keep doing so (their checkpoints learned it): their JSON has no "weekday" key
    local_weekday: bool = True
    _lookup: dict[str, dict[Any, int]] = field(default_factory=dict, compare=False, repr=False)

    # ---- fitting -------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls, columns: Mapping[str, Any] | pa.Table, *, max_vocab: int = 256, amount_bins: int = 32
    ) -> Tokenizer:
        """Learn the vocabularies and amount bins from training charges (a table or a mapping of columns)."""
        if max_vocab < 1 or amount_bins < 2:
            raise ConfigError(
                "Tokenizer.fit: expected max_vocab >= 1 and amount_bins >= 2. "
                f"Got {max_vocab}, {amount_bins}."
            )
        columns = _columns(columns)
        vocab: dict[str, list[str]] = {}
        for name in (*CATEGORICAL, "outcome"):
            if name == "outcome":
                if "outcome" not in columns:
                    vocab[name] = []
                    continue
                arr = pa.array(outcome_values(columns["outcome"], columns["decline_code"]), pa.string())
            elif name in columns:
                arr = _as_array(columns[name]).cast(pa.string())
            else:
                vocab[name] = []
                continue
            counts = pc.value_counts(pc.drop_null(arr)).to_pylist()
            ranked = sorted((-c["counts"], c["values"]) for c in counts)
            vocab[name] = [v for _, v in ranked[:max_vocab]]
        amounts = _as_array(columns["amount_usd"]).to_numpy(zero_copy_only=False).astype(np.float64)
        qs = np.quantile(amounts, np.linspace(0, 1, amount_bins + 1)[1:-1]) if len(amounts) else []
        edges = sorted({float(q) for q in qs} | set(MICRO_EDGES))
        return cls(vocab=vocab, amount_edges=edges)

    # ---- sizes and identity --------------------------------------------------------------------------
    def vocab_size(self, name: str) -> int:
        """Number of token ids of field ``name`` (specials included)."""
        if name in self.vocab:
            return N_SPECIAL + len(self.vocab[name])
        if name == "amount":
            return N_SPECIAL + len(self.amount_edges) + 1
        if name == "dt":
            return N_SPECIAL + DT_BINS
        if name == "rel":
            return N_SPECIAL + REL_VALUES
        if name in COUNT_FIELDS:
            return N_SPECIAL + COUNT_BINS
        if name == "cred":
            return N_SPECIAL + CRED_BINS
        if name == "hour":
            return N_SPECIAL + 24
        if name == "weekday":
            return N_SPECIAL + 7
        raise ConfigError(f"Tokenizer: unknown field {name!r}. Expected one of {', '.join(FIELDS)}.")

    def vocab_sizes(self) -> list[int]:
        return [self.vocab_size(f) for f in FIELDS]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fields": list(FIELDS), "vocab": self.vocab, "amount_edges": self.amount_edges}
        if self.local_weekday:  # (absent: an older tokenizer, whose version hash stays what it was)
            out["weekday"] = "local"
        return out

    @property
    def version(self) -> str:
        """Content hash of the fitted tokenizer (first 12 hex digits of a SHA-256)."""
        blob = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "Tokenizer") -> Tokenizer:
        """The tokenizer ``to_json`` wrote; ``source`` names where it comes from in errors (a checkpoint's
        tokenizer.json)."""
        if list(data.get("fields", [])) != list(FIELDS):
            raise ConfigError(
                f"{source}: expected fields {list(FIELDS)}. Got {data.get('fields')!r} (a tokenizer from "
                "another payfm version?): pretrain it again with this version (`payfm fm pretrain --fresh`)."
            )
        weekday = data.get("weekday", "utc")
        if weekday not in ("utc", "local"):
            raise ConfigError(
                f"{source}: expected 'weekday' to be 'local' or 'utc' (absent: 'utc'). Got {weekday!r}."
            )
        return cls(
            vocab={k: list(v) for k, v in data["vocab"].items()},
            amount_edges=list(data["amount_edges"]),
            local_weekday=weekday == "local",
        )

    # ---- encoding ------------------------------------------------------------------------------------
    def encode_field(self, name: str, values: Any) -> np.ndarray:
        """Token ids (int64) of one categorical field (or 'outcome' given its derived values).

        A dict lookup per value: the same code for one charge online (microseconds) and a batch offline;
        a large Arrow column looks up each distinct value once (``dictionary_encode``), then gathers.
        """
        lookup = self._lookup.get(name)
        if lookup is None:
            lookup = {v: N_SPECIAL + i for i, v in enumerate(self.vocab[name])} | {None: NULL}
            self._lookup[name] = lookup
        get = lookup.get
        if isinstance(values, pa.ChunkedArray | pa.Array) and len(values) > _DISTINCT_FROM:
            encoded = _as_array(values).dictionary_encode()
            distinct = encoded.dictionary.to_pylist()
            # one slot more for nulls (index -1 after fill_null): the NULL token
            table = np.fromiter(
                (get(v, OOV) for v in [*distinct, None]), dtype=np.int64, count=len(distinct) + 1
            )
            codes = np.asarray(pc.fill_null(encoded.indices.cast(pa.int64()), -1).to_numpy())
            tokens: np.ndarray = table[codes]
            return tokens
        items = _as_list(values)
        return np.fromiter((get(v, OOV) for v in items), dtype=np.int64, count=len(items))

    def encode(
        self,
        columns: Mapping[str, Any] | pa.Table,
        created_us: np.ndarray,
        prev_us: np.ndarray,
        history: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """(n, F) int64 tokens of n charges. ``prev_us`` is the time of the previous event of the key, or -1.

        ``history`` holds what the charges' past says, all (n,) int64: per count field the number of earlier
        charges of its key (-1: the key is missing), ``rel`` (:func:`rel_codes`, -1: no previous charge) and
        ``credential_changed_us`` (-1: none). Missing entries give NULL tokens. The one implementation
        behind batch and single-charge (online) tokenization.
        """
        history = history or {}
        columns = _columns(columns)
        n = len(created_us)
        out = np.empty((n, len(FIELDS)), dtype=np.int64)
        for j, name in enumerate(CATEGORICAL):
            out[:, j] = self.encode_field(name, columns[name]) if name in columns else NULL
        amounts = np.asarray(_as_list(columns["amount_usd"]), dtype=np.float64)
        out[:, FIELDS.index("amount")] = N_SPECIAL + np.searchsorted(self.amount_edges, amounts, side="right")
        out[:, DT_FIELD] = dt_tokens(created_us, prev_us)
        out[:, REL_FIELD] = rel_tokens(history["rel"]) if "rel" in history else NULL
        for name in COUNT_FIELDS:
            out[:, FIELDS.index(name)] = count_tokens(history[name]) if name in history else NULL
        cred = history.get("credential_changed_us")
        out[:, FIELDS.index("cred")] = NULL if cred is None else cred_tokens(created_us, cred)
        country = _as_list(columns["merchant_country"])
        offset = np.array([COUNTRY_UTC_OFFSET_H.get(c or "", 0) for c in country], dtype=np.int64)
        local_hours = created_us // _US_PER_HOUR + offset
        out[:, FIELDS.index("hour")] = N_SPECIAL + local_hours % 24
        days = local_hours // 24 if self.local_weekday else created_us // _US_PER_DAY
        out[:, FIELDS.index("weekday")] = N_SPECIAL + (days + 3) % 7  # Monday 0 (1970-01-01, a Thursday: 3)
        if "outcome" in columns:
            derived = outcome_values(columns["outcome"], columns["decline_code"])
            out[:, OUTCOME_FIELD] = self.encode_field("outcome", derived)
        else:
            out[:, OUTCOME_FIELD] = MASK
        return out


def dt_tokens(created_us: np.ndarray, prev_us: np.ndarray) -> np.ndarray:
    """Log2-second bins of the gap to the previous event (NULL where there is none)."""
    gap_s = np.maximum(created_us - prev_us, 0) / 1e6
    bins = np.clip(np.floor(np.log2(gap_s + 1.0)), 0, DT_BINS - 1).astype(np.int64)
    return np.where(prev_us < 0, NULL, N_SPECIAL + bins)


def count_tokens(counts: np.ndarray) -> np.ndarray:
    """Log2 bins of a key's number of earlier charges (NULL where the key is missing, count -1)."""
    bins = np.clip(np.floor(np.log2(np.maximum(counts, 0) + 1.0)), 0, COUNT_BINS - 1).astype(np.int64)
    return np.where(counts < 0, NULL, N_SPECIAL + bins)


def cred_tokens(created_us: np.ndarray, changed_us: np.ndarray) -> np.ndarray:
    """Log2-hour bins of the time since the last credential change (NULL where there is none, -1)."""
    hours = np.maximum(created_us - changed_us, 0) / _US_PER_HOUR
    bins = np.clip(np.floor(np.log2(hours + 1.0)), 0, CRED_BINS - 1).astype(np.int64)
    return np.where(changed_us < 0, NULL, N_SPECIAL + bins)


def rel_codes(same_ip: np.ndarray, same_device: np.ndarray, same_other: np.ndarray) -> np.ndarray:
    """3-bit code of a charge's relation to the previous charge of its key (booleans in, int64 out)."""
    return same_ip.astype(np.int64) + 2 * same_device.astype(np.int64) + 4 * same_other.astype(np.int64)


def rel_tokens(codes: np.ndarray) -> np.ndarray:
    """Tokens of :func:`rel_codes` (NULL where the key has no previous charge, code -1)."""
    return np.where(codes < 0, NULL, N_SPECIAL + codes)
