"""Online vs offline parity of the foundation model's outputs on a workspace (``payfm fm parity``).

The decision service builds each charge's model input from its online state (:class:`OnlineEmbedder`: the
card's and merchant's last K-1 charges, entity counts) one charge at a time; training and batch embedding
build it from the whole log at once (:func:`build_sequences`, :func:`embed_sequences`). The design promises
the two agree, as features do (``payfm features parity``); this measures it on any workspace.

The replay is the decision service's: the embedder learns every charge before the replayed ones in batch
(:meth:`OnlineEmbedder.warm`, as a server starts), then each replayed charge in time order builds its input
from the state and is learned with its outcome (:meth:`OnlineEmbedder.inputs_then_learn`), or, with
``authorize_after``, as production sends it: learned without its outcome, which the processor's result sets
``authorize_after`` charges later (:meth:`OnlineEmbedder.set_outcome`; 0: before the next charge, which then
reads the offline history; more: the charges decided while a result was outstanding read it as null, and the
input mismatches count them). Three checks:

1. inputs: every replayed charge's (V, K, F) token input equals the offline window exactly (integers);
2. outputs: the outputs computed from the online inputs (batched forward passes) equal the batch job's
   (:func:`embed_sequences`, which skips padding) within ``tolerance``;
3. the one-charge path: every ``single_every``-th charge also runs :meth:`OnlineEmbedder.fm_inputs` on
   its own, the call a decision makes, against the batch job's value.

Example::

    report = fm_parity(ws, "ws/fm/default", charges=100_000, outputs=("embedding", "surprise"))
    assert report.ok, report.summary()
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.fm.embed import SURPRISE_FIELDS, OnlineEmbedder, embed_sequences
from payfm.fm.identity import VIEW_NAMES, check_outputs
from payfm.fm.online_state import RedisState
from payfm.fm.sequences import build_sequences, read_charges
from payfm.fm.tokenizer import FIELDS, MASK

CHUNK = 2_048  # replayed charges per comparison (their inputs: CHUNK * V * K * F int64, ~1.4 MB at K = 16)


@dataclass
class FMParityReport:
    checkpoint: str
    outputs: tuple[str, ...]
    warmed: int  # charges learned in batch before the replay
    charges: int  # charges replayed one by one and compared
    tolerance: float
    input_mismatches: int = 0  # replayed charges whose online input differs from the offline window
    # the first differing input: charge id, view, position in the window (K-1 = the charge), field
    first_input_mismatch: dict[str, Any] | None = None
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # output -> max |online - offline|
    over_tolerance: dict[str, int] = field(default_factory=dict)  # output -> charges beyond tolerance
    single_checked: int = 0  # charges also run through the one-charge call
    single_max_abs_diff: float = 0.0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.input_mismatches == 0
            and not any(self.over_tolerance.values())
            and self.single_max_abs_diff <= self.tolerance
        )

    def summary(self) -> str:
        worst = ", ".join(f"{o} max |diff| {self.max_abs_diff.get(o, 0.0):.2e}" for o in self.outputs)
        return (
            f"{self.charges:,} charges replayed after {self.warmed:,} warmed: "
            f"{self.input_mismatches:,} input mismatches; {worst}; "
            f"one-charge path on {self.single_checked:,} charges max |diff| "
            f"{self.single_max_abs_diff:.2e} (tolerance {self.tolerance:g})"
        )


def fm_parity(
    ws: Workspace,
    checkpoint: str | os.PathLike[str],
    *,
    charges: int = 100_000,
    outputs: Sequence[str] = ("embedding",),
    tolerance: float = 1e-5,
    single_every: int = 100,
    progress: Callable[[int, int], None] | None = None,
    state: str = "memory",
    authorize_after: int | None = None,
) -> FMParityReport:
    """Replay the last ``charges`` charges of ``ws`` through a fresh :class:`OnlineEmbedder` of
    ``checkpoint`` and compare its inputs and ``outputs`` with the batch job's (see the module docstring).

    ``state`` "memory" or a redis:// URL: the embedder's state, in Redis under a namespace of this run's
    own (``parity-<random>``), deleted at the end. ``authorize_after``: None, each charge learned with its
    outcome; N >= 0, without it, its result reported N charges later."""
    outs = check_outputs(outputs)
    if isinstance(charges, bool) or not isinstance(charges, int) or charges < 1:
        raise ConfigError(f"The number of charges to replay must be an integer >= 1. Got {charges!r}.")
    if single_every < 1:
        raise ConfigError(f"'single_every' must be an integer >= 1. Got {single_every!r}.")
    if authorize_after is not None and authorize_after < 0:
        raise ConfigError(f"'authorize_after' must be None or an integer >= 0. Got {authorize_after!r}.")
    t0 = time.perf_counter()
    embedder = OnlineEmbedder.load(checkpoint, state, namespace=f"parity-{uuid.uuid4().hex[:12]}")
    try:
        return _replay(
            ws, embedder, checkpoint, charges, outs, tolerance, single_every, progress, t0, authorize_after
        )
    finally:
        if isinstance(embedder.store, RedisState):
            embedder.store.clear()


def _replay(
    ws: Workspace,
    embedder: OnlineEmbedder,
    checkpoint: str | os.PathLike[str],
    charges: int,
    outs: tuple[str, ...],
    tolerance: float,
    single_every: int,
    progress: Callable[[int, int], None] | None,
    t0: float,
    authorize_after: int | None = None,
) -> FMParityReport:
    model = embedder.model
    table = read_charges(ws)
    n = table.num_rows
    if n == 0:
        raise ConfigError(f"Workspace '{ws.root}' has no charges to replay.")
    m = min(charges, n)
    start = n - m
    seqs = build_sequences(table, embedder.tokenizer, model.config.seq_len)
    rows = np.arange(start, n)
    offline = {o: embed_sequences(model, seqs, rows, output=o) for o in outs}  # (m, D) each
    embedder.warm(table.slice(0, start), seqs)  # the tokens of the first rows are the prefix's
    report = FMParityReport(str(checkpoint), outs, warmed=start, charges=m, tolerance=tolerance)
    report.max_abs_diff = dict.fromkeys(outs, 0.0)
    report.over_tolerance = dict.fromkeys(outs, 0)
    replay = table.slice(start)
    waiting: deque[dict[str, Any]] = deque()  # charges learned without outcome, their results not reported

    def step(charge: dict[str, Any]) -> np.ndarray:
        if authorize_after is None:
            return embedder.inputs_then_learn(charge)
        x = embedder.inputs_then_learn({**charge, "outcome": None, "decline_code": None})
        waiting.append(charge)
        if len(waiting) > authorize_after:
            embedder.set_outcome(waiting.popleft())
        return x

    for lo in range(0, m, CHUNK):
        batch = replay.slice(lo, CHUNK).to_pylist()
        xs = np.concatenate([step(c) for c in batch])  # (B, V, K, F)
        want = seqs.batch(rows[lo : lo + len(batch)])
        differ = np.flatnonzero((xs != want).reshape(len(batch), -1).any(axis=1))
        report.input_mismatches += int(differ.size)
        if differ.size and report.first_input_mismatch is None:
            i = int(differ[0])
            v, k, f = (int(a[0]) for a in np.nonzero(xs[i] != want[i]))
            report.first_input_mismatch = {
                "charge_id": batch[i]["charge_id"],
                "view": VIEW_NAMES[v],
                "position": k,
                "field": FIELDS[f],
                "offline": int(want[i, v, k, f]),
                "online": int(xs[i, v, k, f]),
            }
        for o in outs:
            with torch.inference_mode():
                x = torch.from_numpy(xs)
                got = model.embed(x) if o == "embedding" else model.surprise(x, SURPRISE_FIELDS, MASK)
            diff = np.abs(got.numpy() - offline[o][lo : lo + len(batch)]).max(axis=1)
            report.max_abs_diff[o] = max(report.max_abs_diff[o], float(diff.max()))
            report.over_tolerance[o] += int((diff > tolerance).sum())
        for i in range(-lo % single_every, len(batch), single_every):
            single = embedder.fm_inputs(xs[i : i + 1], outs)
            expect = np.concatenate([offline[o][lo + i] for o in outs])
            report.single_max_abs_diff = max(report.single_max_abs_diff, float(np.abs(single - expect).max()))
            report.single_checked += 1
        if progress is not None:
            progress(lo + len(batch), m)
    report.seconds = time.perf_counter() - t0
    return report
