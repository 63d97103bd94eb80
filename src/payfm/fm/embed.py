"""Charge embeddings from a pretrained foundation model: offline in batch, online one charge at a time.

Offline, :func:`embed` builds every charge's point-in-time sequences from the event log and writes
``charge_id``, ``created`` and ``embedding`` (fixed-size list of float32) to Parquet. Online,
:class:`OnlineEmbedder` keeps the last K-1 tokenized charges of every card and merchant (a deque per key) and
embeds a charge from that state and the charge's pre-authorization fields; after the decision, ``learn_one``
adds the charge with its outcome, or without it when the charge was decided before authorization, as a live
charge is: ``set_outcome`` then sets it when the processor's result comes. Fed the charges in (created,
charge_id) order, it returns the offline embedding of every charge (within float rounding;
tests/test_fm_embed.py checks 1e-5).

Example::

    path = embed(Workspace.open("payfm-workspace"), checkpoint_dir(ws))
"""

from __future__ import annotations

import difflib
import functools
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from payfm.errors import ConfigError, shown_url
from payfm.events.outputs import output_file, write_parquet
from payfm.events.workspace import Workspace, opened
from payfm.fm.identity import check_outputs, checkpoint_hash, provenance_metadata
from payfm.fm.model import FoundationModel
from payfm.fm.online_state import EmbedderState, KeyState, Learned, MemoryState, RedisState
from payfm.fm.pretrain import load_checkpoint, load_identified
from payfm.fm.sequences import (
    OTHER,
    REL_KEYS,
    VIEWS,
    Sequences,
    build_sequences,
    key_codes,
    read_charges,
)
from payfm.fm.tokenizer import (
    COLUMNS,
    COUNT_FIELDS,
    DT_FIELD,
    FIELDS,
    MASK,
    OUTCOME_FIELD,
    PAD,
    REL_FIELD,
    Tokenizer,
    dt_tokens,
    outcome_values,
    rel_codes,
    rel_tokens,
)
from payfm.inputs import arrow_table
from payfm.redis_load import is_redis_url

SURPRISE_FIELDS = tuple(i for i, name in enumerate(FIELDS) if name != "outcome")  # pre-authorization


def embed_sequences(
    model: FoundationModel,
    sequences: Sequences,
    rows: np.ndarray | None = None,
    batch_size: int = 128,
    workers: int = 1,
    output: str = "embedding",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """(n, D) float32 ``output`` (``embedding`` or ``surprise``) of the charges ``rows`` (default all) of
    ``sequences``: their embeddings (D = V * C) or their surprise (D = V * len(SURPRISE_FIELDS)), view-major.

    The (charge, view) sequences are grouped by length and each group runs without its left padding
    (:meth:`FoundationModel.embed_windows`, :meth:`FoundationModel.surprise_windows`): a card's sequence is
    mostly padding when the card is new, and padding rows are masked anyway, so this is
    :meth:`FoundationModel.embed` (:meth:`FoundationModel.surprise`) minus the padding's compute (equal
    within float rounding). A forward pass holds at most ``batch_size * V * K`` charge tokens, what a
    padded batch of ``batch_size`` charges holds: 4,096 tokens by default, whose activations stay in cache
    (4,096-charge padded batches ran at half the speed, memory-bound). ``workers`` > 1 runs the passes in
    that many threads, each running torch single-threaded (torch releases the GIL inside ops); the result
    is the same as with one worker (bit for bit: the same passes). ``progress(done, total)`` is told the
    (charge, view) sequences done after each pass (from the workers' threads).
    """
    check_outputs([output])
    rows = np.arange(len(sequences)) if rows is None else np.asarray(rows)
    device = next(model.parameters()).device
    n_views, k = model.config.n_views, model.config.seq_len
    width = model.config.n_embd if output == "embedding" else len(SURPRISE_FIELDS)  # per view
    out = np.empty((len(rows), n_views * width), dtype=np.float32)
    if len(rows) == 0:
        return out
    flat_out = out.reshape(-1, width)  # (n * V, width): row s is charge s // V in view s % V
    lengths = sequences.lengths(rows).reshape(-1)  # (n * V,)
    order = np.argsort(lengths, kind="stable")  # windows grouped by length
    cuts = np.flatnonzero(np.diff(lengths[order])) + 1
    budget = batch_size * n_views * k  # tokens per forward pass
    passes: list[tuple[int, np.ndarray]] = []  # (length, windows) of each forward pass
    for group in np.split(order, cuts):
        t = int(lengths[group[0]])
        step = max(1, budget // t)
        passes += [(t, group[i : i + step]) for i in range(0, len(group), step)]

    lock, done = threading.Lock(), [0]

    def work(todo: list[tuple[int, np.ndarray]]) -> None:
        with torch.inference_mode():
            for t, windows in todo:
                charge, view = np.divmod(windows, n_views)
                x = torch.from_numpy(sequences.windows(rows[charge], view, t)).to(device)  # (S, t, F)
                v = torch.from_numpy(view).to(device)
                if output == "embedding":
                    h = model.embed_windows(x, v)  # (S, C)
                else:
                    h = model.surprise_windows(x, v, SURPRISE_FIELDS, MASK)  # (S, len(SURPRISE_FIELDS))
                flat_out[windows] = h.float().cpu().numpy()
                if progress is not None:
                    with lock:
                        done[0] += len(windows)
                        progress(done[0], len(lengths))

    if workers <= 1 or device.type != "cpu" or len(passes) < 2:
        work(passes)
        return out
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # parallel across passes, not inside each small op
    try:
        with ThreadPoolExecutor(workers) as pool:  # interleaved: every worker gets long and short windows
            list(pool.map(work, [passes[w::workers] for w in range(workers)]))
    finally:
        torch.set_num_threads(threads)
    return out


def embed(
    ws: Workspace,
    checkpoint: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    workers: int = 1,
    outputs: Sequence[str] = ("embedding",),
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[Path, pa.Table]:
    """Embed all charges of ``ws``; write Parquet (default ``fm/<checkpoint name>.embeddings.parquet``):
    ``charge_id``, ``created`` and one fixed-size list column of float32 per output (``embedding``,
    ``surprise``). ``progress(output, done, total)`` counts each output's (charge, view) sequences done.
    The schema's metadata names the checkpoint the file was made from (its name, content hash, step and
    tokenizer version: :func:`payfm.fm.identity.provenance_metadata`), so that a file older than the
    checkpoint's last pretraining can be told from a current one.
    The file is written to a temporary beside it and renamed: an interrupted run leaves the old file (or
    none), and no temporary."""
    ws = opened(ws, "embed")
    outs = check_outputs(outputs)
    default = ws.root / "fm" / f"{Path(checkpoint).name}.embeddings.parquet"
    # before the work, not after; in the workspace only under fm/ (not over its manifest or event log)
    # (in the workspace: only under fm/, and only this checkpoint's file, not another's)
    path = output_file(out if out else default, "--out", workspace=ws.root, within=f"fm/{default.name}")
    model, tokenizer, _, source = load_identified(checkpoint)
    charges = read_charges(ws)
    if charges.num_rows == 0:  # (an empty file reported as a success told nothing was wrong)
        raise ConfigError(
            f"The workspace '{ws.root}' holds no charges: generate or import some first (payfm generate, "
            "payfm import)."
        )
    seqs = build_sequences(charges, tokenizer, model.config.seq_len)
    columns: dict[str, Any] = {
        "charge_id": seqs.charge_id,
        "created": pa.array(seqs.created_us, type=pa.timestamp("us", tz="UTC")),
    }
    for output in outs:
        report = None if progress is None else functools.partial(progress, output)
        vectors = embed_sequences(model, seqs, workers=workers, output=output, progress=report)
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        columns[output] = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    table = pa.table(columns).replace_schema_metadata(provenance_metadata(source))
    write_parquet(table, path, "--out")
    return path, table


def outputs_for(
    ws: Workspace,
    checkpoint: str | os.PathLike[str],
    charge_ids: Sequence[str] | pa.Array,
    outputs: Sequence[str] = ("embedding",),
    *,
    workers: int = 1,
) -> np.ndarray:
    """(len(charge_ids), D) float32: the ``outputs`` of ``checkpoint`` (side by side, in that order) for
    the given charges of ``ws``, from the whole log's point-in-time sequences (each charge sees only the
    charges before it): the columns a model registered with those outputs takes after its features.
    Raises ConfigError naming the first id that is not a charge of the log. ``outputs`` are taken in the
    order given (a model's registry entry records its own; new ones record :func:`check_outputs`'s)."""
    ws = opened(ws, "outputs_for")
    check_outputs(outputs)
    outs = (outputs,) if isinstance(outputs, str) else tuple(outputs)  # (check_outputs takes a lone name too)
    model, tokenizer, _ = load_checkpoint(checkpoint)
    charges = read_charges(ws)
    ids = pa.array(charge_ids, type=pa.string()) if not isinstance(charge_ids, pa.Array) else charge_ids
    rows = pc.index_in(
        ids.cast(pa.string()), value_set=charges["charge_id"].combine_chunks().cast(pa.string())
    )
    if rows.null_count:
        first = ids[pc.index(pc.is_null(rows), True).as_py()].as_py()
        raise ConfigError(
            f"Foundation-model outputs: charge {first!r} is not in the event log of '{ws.root}'."
        )
    seqs = build_sequences(charges, tokenizer, model.config.seq_len)
    at = rows.to_numpy(zero_copy_only=False).astype(np.int64)
    parts = [embed_sequences(model, seqs, at, workers=workers, output=o) for o in outs]
    return parts[0] if len(parts) == 1 else np.hstack(parts)


def embedding_matrix(table: pa.Table, column: str = "embedding") -> np.ndarray:
    """(n, D) float32 of an embeddings table's ``embedding`` (or ``surprise``) column (what :func:`embed`
    gives; a pandas or Polars DataFrame of it is converted). A ConfigError names a column the table does not
    hold, with the one meant when it is close.

    >>> values = pa.array([1, 2, 3, 4], pa.float32())
    >>> t = pa.table({"embedding": pa.FixedSizeListArray.from_arrays(values, 2)})
    >>> embedding_matrix(t).tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    >>> embedding_matrix(t, "embeddings")
    Traceback (most recent call last):
    ...
    payfm.errors.ConfigError: The 'column' of embedding_matrix must be a list column of the table \
(embedding). Got 'embeddings': did you mean 'embedding'?
    """
    table = arrow_table(table, "table", "embedding_matrix")
    # (a DataFrame's round trip gives a list column: each row's vector, of one length)
    lists = (pa.types.is_fixed_size_list, pa.types.is_list, pa.types.is_large_list)
    vectors = [f.name for f in table.schema if any(is_list(f.type) for is_list in lists)]
    if not isinstance(column, str) or column not in vectors:
        close = difflib.get_close_matches(column, vectors, n=1) if isinstance(column, str) else []
        hint = f": did you mean {close[0]!r}?" if close else "."
        raise ConfigError(
            f"The 'column' of embedding_matrix must be a list column of the table "
            f"({', '.join(vectors) or 'it holds none'}). Got {column!r}{hint}"
        )
    col = table[column].combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        out: np.ndarray = col.values.to_numpy().reshape(len(col), col.type.list_size)
        return out
    widths = pc.unique(pc.list_value_length(col)).to_pylist()
    if col.null_count or len(widths) > 1:
        raise ConfigError(
            f"The '{column}' column of the table of embedding_matrix must hold one vector of one length per "
            f"row. Got {col.null_count} null and lengths {sorted(w for w in widths if w is not None)}."
        )
    flat: np.ndarray = pc.list_flatten(col).cast(pa.float32()).to_numpy(zero_copy_only=False)
    return flat.reshape(len(col), widths[0] if widths else 0)


def _time_us(charge: Mapping[str, Any], name: str, us_name: str, *, required: bool) -> int:
    """A charge's time ``us_name`` (microseconds) or ``name`` (timezone-aware datetime); -1 when absent."""
    if charge.get(us_name) is not None:
        return int(charge[us_name])
    value = charge.get(name)
    if value is None and not required:
        return -1
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"OnlineEmbedder: expected {name!r} as a timezone-aware datetime. Got {value!r}.")
    return int(pa.scalar(value, type=pa.timestamp("us", tz="UTC")).cast(pa.int64()).as_py())


class OnlineEmbedder:
    """Single-charge embedding from an online state (last K-1 charges per card and per merchant, charge counts
    per card, device, IP and address): in process by default, or any :class:`EmbedderState` (Redis for more
    than one serving process, :mod:`payfm.fm.online_state`)."""

    def __init__(
        self, model: FoundationModel, tokenizer: Tokenizer, state: EmbedderState | None = None
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.k = model.config.seq_len
        self.store: EmbedderState = state or MemoryState(len(VIEWS), self.k - 1, tuple(COUNT_FIELDS))

    @classmethod
    def load(
        cls, checkpoint: str | os.PathLike[str], state: str = "memory", namespace: str | None = None
    ) -> OnlineEmbedder:
        """The embedder of a checkpoint, its state in this process (``state`` "memory") or in Redis (a
        redis:// URL; ``namespace``, default the first 16 hex digits of the checkpoint's content hash, keeps
        checkpoints apart)."""
        model, tokenizer, _ = load_checkpoint(checkpoint)
        if state == "memory":
            return cls(model, tokenizer)
        if not is_redis_url(state):
            raise ConfigError(
                f"The embedder state must be 'memory' or a redis://, rediss:// or unix:// URL. Got "
                f"{shown_url(state)!r}."
            )
        shared = RedisState(
            state,
            namespace or checkpoint_hash(checkpoint)[:16],
            keep=model.config.seq_len - 1,
            n_fields=len(FIELDS),
            n_views=len(VIEWS),
            count_fields=tuple(COUNT_FIELDS),
        )
        return cls(model, tokenizer, shared)

    @property
    def counts(self) -> dict[str, dict[Any, int]]:
        """The in-process state's counts per field (value -> earlier charges)."""
        if not isinstance(self.store, MemoryState):
            raise TypeError(
                f"OnlineEmbedder: this embedder's state is {type(self.store).__name__}, not in memory."
            )
        return self.store.counts

    def _read(self, charge: Mapping[str, Any]) -> tuple[list[KeyState | None], dict[str, int]]:
        keys = [str(charge[col]) for col in VIEWS]
        return self.store.read(keys, {name: charge.get(col) for name, col in COUNT_FIELDS.items()})

    def _tokens(self, charge: Mapping[str, Any], counts: Mapping[str, int]) -> tuple[int, np.ndarray]:
        created = _time_us(charge, "created", "created_us", required=True)
        cols = {c: [charge.get(c)] for c in COLUMNS}
        history = {
            name: np.array([counts[name] if charge.get(col) is not None else -1])
            for name, col in COUNT_FIELDS.items()
        }
        history["credential_changed_us"] = np.array(
            [_time_us(charge, "credential_changed_at", "credential_changed_us", required=False)]
        )
        base = self.tokenizer.encode(cols, np.array([created]), np.array([-1]), history)[0]  # (F,)
        return created, base

    def _view_row(
        self, charge: Mapping[str, Any], base: np.ndarray, created: int, v: int, entry: KeyState | None
    ) -> np.ndarray:
        row = base.copy()
        if entry is None:
            row[DT_FIELD] = dt_tokens(np.array([created]), np.array([-1]))[0]
            row[REL_FIELD] = rel_tokens(np.array([-1]))[0]
            return row
        row[DT_FIELD] = dt_tokens(np.array([created]), np.array([entry.created_us]))[0]
        same = [
            np.array([value is not None and value == charge.get(col)])
            for value, col in (
                (entry.ip, REL_KEYS[0]),
                (entry.device, REL_KEYS[1]),
                (entry.other, OTHER[VIEWS[v]]),
            )
        ]
        row[REL_FIELD] = rel_tokens(rel_codes(*same))[0]
        return row

    def _rows(self, charge: Mapping[str, Any]) -> tuple[int, list[np.ndarray], list[KeyState | None]]:
        """A charge's ``created_us``, its token row (F,) in each view and each view's history, from one read
        of the state."""
        entries, counts = self._read(charge)
        created, base = self._tokens(charge, counts)
        rows = [self._view_row(charge, base, created, v, entries[v]) for v in range(len(VIEWS))]
        return created, rows, entries

    def _inputs(self, rows: list[np.ndarray], entries: list[KeyState | None]) -> np.ndarray:
        x = np.full((1, len(VIEWS), self.k, len(rows[0])), PAD, dtype=np.int64)  # (1, V, K, F)
        for v, entry in enumerate(entries):
            if entry is not None and entry.rows:
                x[0, v, self.k - 1 - len(entry.rows) : self.k - 1] = np.stack(list(entry.rows))
            x[0, v, -1] = rows[v]
        x[:, :, -1, OUTCOME_FIELD] = MASK
        return x

    def _learn(self, charge: Mapping[str, Any], created: int, rows: list[np.ndarray]) -> None:
        cid = charge.get("charge_id")
        self.store.learn(
            Learned(
                charge_id=None if cid is None else str(cid),
                keys=tuple(str(charge[col]) for col in VIEWS),
                rows=tuple(rows),
                created_us=created,
                ip=charge.get(REL_KEYS[0]),
                device=charge.get(REL_KEYS[1]),
                others=tuple(charge.get(OTHER[col]) for col in VIEWS),
                values={name: charge.get(col) for name, col in COUNT_FIELDS.items()},
                pending=charge.get("outcome") is None,
            )
        )

    def inputs_one(self, charge: Mapping[str, Any]) -> np.ndarray:
        """(1, V, K, F) int64 model input of a charge about to be decided: its views' histories from the
        state, then its own pre-authorization tokens (outcome masked). Reads the state, never changes it."""
        _, rows, entries = self._rows(charge)
        return self._inputs(rows, entries)

    def inputs_then_learn(self, charge: Mapping[str, Any], learn: bool = True) -> np.ndarray:
        """:meth:`inputs_one`, then (if ``learn``) :meth:`learn_one` of the same charge, tokenized once: the
        step a decision service takes under its state lock (the forward pass, :meth:`embed_inputs`, can
        run outside it). ``charge`` carries its outcome if known; the input masks it either way."""
        created, rows, entries = self._rows(charge)
        x = self._inputs(rows, entries)
        if learn:
            self._learn(charge, created, rows)
        return x

    def embed_inputs(self, x: np.ndarray) -> np.ndarray:
        """The embedding (D,) of :meth:`inputs_one`'s ``x``; reads no state (callers may run it unlocked)."""
        with torch.inference_mode():
            out: np.ndarray = self.model.embed(torch.from_numpy(x)).numpy()[0]
        return out

    def fm_inputs(self, x: np.ndarray, outputs: Sequence[str] = ("embedding",)) -> np.ndarray:
        """The ``outputs`` (``embedding``, ``surprise``) of :meth:`inputs_one`'s ``x`` side by side: what a
        model registered with them takes after its features, equal to :func:`embed_sequences` of each output.
        Reads no state. ``outputs`` are taken in the order given, as :func:`outputs_for` takes them."""
        check_outputs(outputs)
        parts = []
        for output in (outputs,) if isinstance(outputs, str) else outputs:  # (a lone name: one output)
            if output == "embedding":
                parts.append(self.embed_inputs(x))
            else:
                with torch.inference_mode():
                    parts.append(self.model.surprise(torch.from_numpy(x), SURPRISE_FIELDS, MASK).numpy()[0])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def embed_one(self, charge: Mapping[str, Any]) -> np.ndarray:
        """The embedding (D,) of a charge about to be decided (its outcome, if given, is ignored)."""
        return self.embed_inputs(self.inputs_one(charge))

    def learn_one(self, charge: Mapping[str, Any]) -> None:
        """Add a decided charge (with ``outcome`` and ``decline_code``) to its card's and merchant's state."""
        created, rows, _ = self._rows(charge)
        self._learn(charge, created, rows)

    def set_outcome(self, charge: Mapping[str, Any]) -> int:
        """The processor's result of a charge learned without its outcome (decided before authorization):
        ``charge`` with ``charge_id``, its card and merchant keys, ``outcome`` and ``decline_code``. The
        outcome token of the charge's rows that its card's and merchant's histories still keep is set, so
        that later charges read it as the offline embedding does. Returns how many rows changed (0: the
        charge was learned with its outcome, was never learned, or left both histories already)."""
        token = self.tokenizer.encode_field(
            "outcome", outcome_values([charge.get("outcome")], [charge.get("decline_code")])
        )[0]
        keys = [str(charge[col]) for col in VIEWS]
        return self.store.set_token(str(charge["charge_id"]), keys, OUTCOME_FIELD, int(token))

    def warm(
        self,
        charges: pa.Table,
        sequences: Sequences | None = None,
        claims: Sequence[str] = (),
        results: Sequence[str] = (),
    ) -> int:
        """Learn all ``charges`` at once: the state :meth:`learn_one` reaches fed them one by one.

        ``sequences``: :func:`build_sequences` of ``charges``, or of a longer table whose first rows are
        ``charges`` (a charge's tokens depend only on the charges before it), when the caller has them
        already; built here otherwise. ``claims``: ids among ``charges`` to mark learned in a shared state
        (the decided charges: a late copy of one is then not learned twice); ``results``: ids of charges
        whose outcome ``charges`` holds already (a shared state marks their result set, see
        :meth:`set_outcome`). A charge without ``outcome`` is learned pending: its result may set it.

        ``charges`` as from :func:`payfm.fm.sequences.read_charges` (in (created, charge_id) order, with
        ``created_us``, ``credential_changed_us`` and the outcomes). The tokens come from the batch path
        (:func:`build_sequences`, the one the offline embedding uses), so a start-up over millions of charges
        costs seconds, not a Python call per charge. Only on a fresh embedder; on a Redis state shared by
        several processes the first one loads it and the others find it loaded (they return 0). Returns the
        number learned.
        """
        if not self.store.begin_load():  # a shared state another process loaded already
            return 0
        try:
            return self._load(charges, sequences, claims, results)
        except BaseException:
            self.store.abort_load()  # another process may load it
            raise

    def _load(
        self, charges: pa.Table, sequences: Sequences | None, claims: Sequence[str], results: Sequence[str]
    ) -> int:
        n = int(charges.num_rows)
        views: list[dict[str, KeyState]] = [{} for _ in VIEWS]
        counts: dict[str, dict[Any, int]] = {}
        if n == 0:
            self.store.load(views, counts, claims, results)
            return 0
        seqs = sequences if sequences is not None else build_sequences(charges, self.tokenizer, self.k)
        if len(seqs) < n:
            raise ValueError(f"OnlineEmbedder.warm: sequences of {len(seqs):,} charges for {n:,} charges.")
        created = seqs.created_us
        # the charges learned without their outcome (decided, no result yet): a result may set it later
        unknown = pc.is_null(charges["outcome"]).to_numpy(zero_copy_only=False)
        ids = charges["charge_id"]
        keep = self.k - 1  # the state holds a key's last K-1 charges; the K-th is the charge being embedded
        for v, key_col in enumerate(VIEWS):
            codes = key_codes(charges[key_col])
            order = np.lexsort((np.arange(n), codes))  # (key, created, charge_id), as build_sequences
            skey = codes[order]
            last = np.flatnonzero(np.append(skey[1:] != skey[:-1], True))  # each key's last, sorted position
            first = np.concatenate(([0], last[:-1] + 1))
            start = np.maximum(first, last - keep + 1)
            kept_n = last - start + 1
            # The kept rows of all keys, copied compactly (views into tokens would pin all of it).
            before = np.cumsum(kept_n) - kept_n  # kept rows of earlier keys
            pos = np.repeat(start - before, kept_n) + np.arange(int(kept_n.sum()))  # sorted positions kept
            kept = seqs.tokens[v][order[pos]]  # (sum(kept_n), F)
            ends = order[last]
            keys = charges[key_col].take(pa.array(ends)).to_pylist()
            values = [charges[c].take(pa.array(ends)).to_pylist() for c in (*REL_KEYS, OTHER[key_col])]
            kept_charge = order[pos]  # the charge of each kept row
            pending = np.flatnonzero(unknown[kept_charge])  # kept rows of pending charges
            pending_ids = dict(
                zip(pending.tolist(), ids.take(pa.array(kept_charge[pending])).to_pylist(), strict=True)
            )
            offset = 0
            state = views[v]
            for i, key in enumerate(keys):
                m = int(kept_n[i])
                rows: deque[np.ndarray] = deque(kept[offset : offset + m], maxlen=keep)
                marks = None
                if pending_ids and any(j in pending_ids for j in range(offset, offset + m)):
                    marks = [pending_ids.get(j) for j in range(offset, offset + m)]
                offset += m
                state[str(key)] = KeyState(
                    rows, int(created[ends[i]]), values[0][i], values[1][i], values[2][i], marks
                )
        for name, col in COUNT_FIELDS.items():
            vc = pc.value_counts(charges[col].combine_chunks()).to_pylist()
            counts[name] = {d["values"]: int(d["counts"]) for d in vc if d["values"] is not None}
        self.store.load(views, counts, claims, results)
        return n
