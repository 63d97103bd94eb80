"""Foundation-model embeddings in the decision service, for models registered with ``foundation_model=``.

Such a model takes ``fset.names + fm.emb_0..D-1``: the online features, then the charge's embedding from an
:class:`~payfm.fm.embed.OnlineEmbedder` of the exact checkpoint it was trained on (the registry checks the
checkpoint's content hash at load). The scorer keeps one embedder per checkpoint hash (a shadow model on the
same checkpoint shares it), embeds each charge before its decision and learns it after, under the same lock
and in the same order as the online features. At start-up (and when a reload brings a new checkpoint) an
embedder is warmed in batch from the event log's charges plus the decided charges the log does not hold yet,
in (created, charge_id) order: the history the offline embedding of the next charge would see. A charge
decided before its authorization is learned without its outcome; the processor's result, when it comes
(``POST /v1/charges/{id}/authorization``), sets it in the histories that keep the charge, as a result logged
before a restart is learned with the charge.

Nothing here imports torch: a scorer without such a model pays nothing.

Example::

    table = history(ws, decided=[], use_event_log=True)
    embedder.warm(table)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from payfm.events.schema import SCHEMAS
from payfm.events.workspace import Workspace
from payfm.features.definitions import AUTHORIZATION
from payfm.fm.identity import EMBEDDING_PREFIX, SURPRISE_PREFIX, VIEW_NAMES
from payfm.fm.online_state import CHARGE_TTL_S
from payfm.fm.sequences import KEY_COLUMNS, read_charges
from payfm.fm.tokenizer import COLUMNS
from payfm.redis_load import LoadLock, load_lock_of, redis_errors
from payfm.registry.store import ModelVersion, Registry, fm_outputs
from payfm.serving.decision_log import STALE_CHECK, DecisionLog
from payfm.training.explain import GENERIC, Reason
from payfm.training.models import Model

if TYPE_CHECKING:
    from payfm.fm.embed import OnlineEmbedder
    from payfm.fm.online_state import EmbedderState

log = logging.getLogger("payfm.serving")
EMBEDDING_REASON = "foundation-model embedding"
EMBEDDING_TEXT = (
    "foundation-model embedding: the card's and merchant's recent charges, as the foundation model "
    "reads them, raise the score (all {dims} embedding dimensions together)"
)
_COLUMNS = sorted({*COLUMNS, *KEY_COLUMNS, "charge_id"})


def fm_hash(mv: ModelVersion | None) -> str | None:
    """Content hash of the checkpoint whose embeddings ``mv`` takes (None for a model without one)."""
    fm = mv.entry.get("foundation_model") if mv is not None else None
    return str(fm["content_hash"]) if fm else None


def describe_fm(mv: ModelVersion) -> str | None:
    """One line naming the checkpoint a model's embeddings come from (None for a model without one)."""
    fm = mv.entry.get("foundation_model")
    if not fm:
        return None
    return (
        f"{fm['checkpoint']} (content hash {str(fm['content_hash'])[:12]}, "
        f"{' + '.join(fm_outputs(mv.entry))}, {fm.get('input_dims', fm['embedding_dims'])} inputs)"
    )


def fm_needs(versions: Sequence[ModelVersion | None]) -> dict[str, tuple[str, ...]]:
    """Checkpoint hash -> the outputs (``embedding``, ``surprise``) the ``versions`` on it take together:
    what the scorer computes once per charge for a model and a shadow sharing an embedder."""
    out: dict[str, list[str]] = {}
    for mv in versions:
        h = fm_hash(mv)
        if mv is None or h is None:
            continue
        needed = out.setdefault(h, [])
        needed += [o for o in fm_outputs(mv.entry) if o not in needed]
    return {h: tuple(v) for h, v in out.items()}


def fm_parts(embedder: OnlineEmbedder, x: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """Each of ``outputs`` of :meth:`OnlineEmbedder.inputs_then_learn`'s ``x`` (no state read: callers run it
    outside the state lock)."""
    return {o: embedder.fm_inputs(x, (o,)) for o in outputs}


def load_embedders(
    reg: Registry,
    versions: Sequence[ModelVersion | None],
    have: Mapping[str, OnlineEmbedder],
    fm_state: str = "memory",
) -> dict[str, OnlineEmbedder]:
    """One embedder per checkpoint the ``versions`` take: reused from ``have`` (same hash: same state), else
    loaded fresh (not warmed) from the checkpoint, after checking its hash, its state in this process
    (``fm_state`` "memory") or in Redis under the checkpoint's content hash (a redis:// URL)."""
    out: dict[str, OnlineEmbedder] = {}
    for mv in versions:
        h = fm_hash(mv)
        if mv is None or h is None or h in out:
            continue
        if h in have:
            out[h] = have[h]
            continue
        import torch

        from payfm.fm.embed import OnlineEmbedder

        # One charge's forward pass is a few small ops: intra-op threads only add hand-offs, which cost
        # milliseconds each on a busy machine (13 ms p50 a decision with torch's default 2 threads here,
        # under load; see docs/serving.md). Concurrent requests run their forward passes in parallel anyway.
        torch.set_num_threads(1)
        path = reg.check_foundation_model(mv)
        assert path is not None  # mv has a foundation model (fm_hash is not None)
        out[h] = OnlineEmbedder.load(path, fm_state, namespace=h[:16])
    return out


def embedder_charge(charge: Mapping[str, Any]) -> dict[str, Any]:
    """A normalized charge (:func:`payfm.serving.charges.normalize_charge`, or one from the decision log) as
    the embedder reads it: times as microseconds, no credential change as -1 (as offline)."""
    changed = charge.get("credential_changed_at_us")
    return {**charge, "credential_changed_us": -1 if changed is None else int(changed)}


def _schema() -> pa.Schema:
    charges = SCHEMAS["charges"]
    fields = [pa.field(c, charges.field(c).type) for c in _COLUMNS]
    return pa.schema(
        [*fields, pa.field("created_us", pa.int64()), pa.field("credential_changed_us", pa.int64())]
    )


def history(ws: Workspace, decided: Sequence[Mapping[str, Any]], use_event_log: bool) -> pa.Table:
    """The charges an embedder starts from, in (created, charge_id) order: the event log's (when
    ``use_event_log``) and the ``decided`` ones (decision-log payloads) whose id the event log lacks."""
    schema = _schema()
    parts: list[pa.Table] = []
    if use_event_log and ws.files("charges"):
        parts.append(read_charges(ws).select(schema.names).cast(schema))
    if decided:
        live = pa.Table.from_pylist([embedder_charge(c) for c in decided], schema=schema)
        if parts:
            live = live.filter(pc.invert(pc.is_in(live["charge_id"], value_set=parts[0]["charge_id"])))
        parts.append(live)
    table = pa.concat_tables(parts) if parts else schema.empty_table()
    return table.sort_by([("created_us", "ascending"), ("charge_id", "ascending")])


def warm(
    embedders: Mapping[str, OnlineEmbedder],
    events: Workspace,
    decisions: DecisionLog,
    upto: int | None,
    use_event_log: bool,
) -> pa.Table:
    """Warm fresh ``embedders`` (hash -> embedder) from the charges of ``events``' log (when
    ``use_event_log``) and those of ``decisions`` up to sequence number ``upto`` (all: None); returns the
    charges they learned (:func:`history`)."""
    t0 = time.perf_counter()
    recent, latest = decisions.recent_charges(STALE_CHECK, upto)  # ids only: the payloads are read if needed
    reported = recent_results(decisions, latest)
    todo: dict[str, OnlineEmbedder] = {}
    for h, embedder in embedders.items():
        lock = load_lock_of(embedder.store)  # a shared state's (Redis)
        with redis_errors(
            lock.url if lock else "", f"The Redis state of foundation model {h[:12]}", "checking it"
        ):
            if _up_to_date(h, embedder.store, lock, events, recent, reported):
                continue
        todo[h] = embedder
    if not todo:
        return _schema().empty_table()
    # a charge decided without its outcome comes with its reported result; without one, it is pending
    decided = [p for _, p in decisions.decided(upto=upto)]
    table = history(events, decided, use_event_log)
    claims = [str(p["charge_id"]) for p in decided]  # a late copy of a decided charge is then learned once
    known = [str(p["charge_id"]) for p in decided if p.get("outcome") is not None]  # no result can change
    for h, embedder in todo.items():
        lock = load_lock_of(embedder.store)
        doing = "loading it from the logs (or waiting for another process's load)"
        with redis_errors(lock.url if lock else "", f"The Redis state of foundation model {h[:12]}", doing):
            learned = embedder.warm(table, claims=claims, results=known)
        log.info(
            "foundation model %s: online embedder warmed from %d charges (%d decided here) in %.1f s",
            h[:12],
            learned,
            len(decided),
            time.perf_counter() - t0,
        )
    return table


def _up_to_date(
    h: str,
    store: EmbedderState,
    lock: LoadLock | None,
    events: Workspace | None,
    recent: list[str],
    reported: list[str],
) -> bool:
    """Whether the embedder state of checkpoint ``h`` is loaded and up to date with the decision log (its
    ``recent`` charges learned, their ``reported`` results set); a stale one is unmarked, to be loaded again.
    A shared one (``lock``) loaded from another event log than ``events``' is refused, as the features' are
    (:func:`payfm.serving.shared_state.check_owner`); one this process loads records this log."""
    # Read once: another server may finish loading it between two reads, and a state loaded since the
    # first is not stale (a second read then unmarked it, and this server loaded it again)
    loaded = store.is_loaded()
    if lock is not None and events is not None:
        from payfm.serving.shared_state import Owner, check_owner, drop_command, other_servers

        mine = Owner.of(events)
        lock.owner = mine.encoded()
        if loaded:
            check_owner(
                lock,
                mine,
                verified=lambda: bool(recent) and store.learned_all(recent, reported),
                others=lambda: other_servers(lock.client, lock.ns, None),
                drop=drop_command(events, lock.ns, lock.url, force=True),  # (a served model's checkpoint)
            )
    if loaded and store.learned_all(recent, reported):
        log.info("foundation model %s: online embedder state loaded already (shared, up to date)", h[:12])
        return True
    if loaded:  # shared, not fed the charges or results since: nobody served this checkpoint
        log.info("foundation model %s: shared online embedder state is stale; loading it again", h[:12])
        store.unmark()  # the load empties it, under the lock (a process reloading it already goes on)
    return False


def recent_results(decisions: DecisionLog, latest_us: int | None, ttl_s: int = CHARGE_TTL_S) -> list[str]:
    """Ids of the charges among the last :data:`STALE_CHECK` outcomes of ``decisions`` whose authorization
    result was counted, created within ``ttl_s`` (the claims' life) of ``latest_us``: what a shared embedder
    state must have set to be up to date."""
    since = -(2**62) if latest_us is None else latest_us - ttl_s * 1_000_000
    recent = decisions.recent_outcomes(STALE_CHECK)
    return [cid for source, _, cid, t in recent if source == AUTHORIZATION and t >= since]


def unseen(decided: Sequence[Mapping[str, Any]], learned: pa.Table) -> list[Mapping[str, Any]]:
    """The ``decided`` charges whose id is not among the ``learned`` ones (a warm's :func:`history`)."""
    if not decided:
        return []
    ids = pa.array([str(c["charge_id"]) for c in decided], type=pa.string())
    known = pc.is_in(ids, value_set=learned["charge_id"].combine_chunks().cast(pa.string())).to_pylist()
    return [c for c, k in zip(decided, known, strict=True) if not k]


def model_vector(
    vector: list[float | None], mv: ModelVersion | None, parts: Mapping[str, np.ndarray] | None
) -> list[float | None]:
    """The input of model ``mv``: the feature vector, then the foundation-model outputs it was registered
    with (:func:`fm_parts` of its checkpoint), in their order; the vector alone for a model without."""
    if parts is None or mv is None:
        return vector
    out = list(vector)
    for output in fm_outputs(mv.entry):
        out += parts[output].tolist()
    return out


def explain(model: Model, x: list[float | None], top_k: int) -> list[dict[str, Any]]:
    """The ``top_k`` reasons of a model taking foundation-model inputs: hand-made features as usual, the
    embedding dimensions together as one reason (:data:`EMBEDDING_REASON`, their net contribution), since
    one dimension alone means nothing to a reader, and each surprise as its own reason (one field of the
    charge the card's or the merchant's recent charges did not lead the model to expect)."""
    names = model.feature_names_
    m = np.array([[math.nan if v is None else v for v in x]], dtype=np.float64)
    contrib = model._contributions(m)[0]  # (n_features,) in log-odds, as Model.explain uses them
    emb = np.array([n.startswith(EMBEDDING_PREFIX) for n in names])
    # (contribution, feature index; -1 for the embedding as a whole), then texts for the top_k only
    candidates = [(float(contrib[j]), int(j)) for j in np.flatnonzero(~emb) if contrib[j] > 0]
    net = float(contrib[emb].sum())
    if net > 0:
        candidates.append((net, -1))
    candidates.sort(key=lambda t: -t[0])  # stable: ties keep feature order, the embedding last
    out: list[dict[str, Any]] = []
    for c, j in candidates[:top_k]:
        if j < 0:
            text = EMBEDDING_TEXT.format(dims=int(emb.sum()))
            out.append({"feature": EMBEDDING_REASON, "value": None, "contribution": c, "text": text})
            continue
        v = None if math.isnan(m[0, j]) else float(m[0, j])
        r = Reason(names[j], v, float(model.medians_[j]), c, model.templates_.get(names[j], GENERIC))
        reason = r.to_json()
        if names[j].startswith(SURPRISE_PREFIX):
            reason["text"] = surprise_text(names[j], v, float(model.medians_[j]))
        out.append({k: reason[k] for k in ("feature", "value", "contribution", "text")})
    return out


def surprise_text(name: str, value: float | None, typical: float) -> str:
    """The reason text of a surprise input, e.g. ``fm.surprise_card_device_n`` -> "device_n unexpected for
    this card's recent charges: surprise 6.2 nats; typical: 0.4" (surprise: -log p under the model); "as
    usual" instead of "unexpected" when the surprise is no higher than the typical one.

    >>> surprise_text("fm.surprise_merchant_cred", 1.1, 1.12)
    "foundation model: cred as usual for this merchant's recent charges (surprise 1.1 nats; typical: 1.1)"
    """
    view, _, field_name = name.removeprefix(SURPRISE_PREFIX).partition("_")
    assert view in VIEW_NAMES, name
    shown = "no value" if value is None else f"surprise {value:.1f} nats"
    # (a surprise at or below the typical one adds to the risk only with the model's other inputs: called
    # unexpected, a reviewer read "1.1 nats; typical: 1.1" as a contradiction)
    said = "as usual" if value is not None and round(value, 1) <= round(typical, 1) else "unexpected"
    return (
        f"foundation model: {field_name} {said} for this {view}'s recent charges ({shown}; "
        f"typical: {typical:.1f})"
    )
