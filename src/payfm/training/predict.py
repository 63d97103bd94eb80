"""Scoring with a registered model: a time window of the workspace, as a table for evaluation.

Example:
    >>> # table = score_window(ws, "fraud-gbdt", start=datetime(2026, 3, 1, tzinfo=UTC))
    >>> # table.column_names[:3] == ["charge_id", "created", "score"]
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from payfm.errors import ConfigError
from payfm.events.schema import time_bound
from payfm.events.workspace import Workspace, opened
from payfm.features.catalog import feature_set
from payfm.features.definitions import FeatureSet
from payfm.features.training_set import load_backfill
from payfm.registry.store import Registry
from payfm.training.data import feature_matrix
from payfm.training.tasks import label_horizon, task

SCORE_COLUMNS = (
    "charge_id",
    "created",
    "score",
    "is_fraud",
    "mature",
    "scenario",
    "amount_usd",
    "channel",
    "merchant_id",
    "merchant_country",
    "card_fingerprint",
)
_CHUNK = 200_000  # rows scored at a time, to bound memory on big windows


def _utc(t: datetime | date | str | None, who: str) -> datetime | None:
    """A bound of the scoring window, read as ``payfm evaluate`` reads its window (:func:`time_bound`)."""
    return time_bound(t, f"The '{who}' of the scoring window", ConfigError)


def score_window(
    ws: Workspace,
    model_ref: str,
    start: datetime | date | str | None = None,
    end: datetime | date | str | None = None,
    *,
    fset: FeatureSet | None = None,
    as_of: datetime | None = None,
    horizon: timedelta | None = None,
) -> pa.Table:
    """Score every labelled entity of the model's task created in [start, end) with a registered model.

    ``start`` and ``end`` are aware datetimes, dates (their midnight UTC) or ISO text (UTC when it names no
    zone), as ``payfm evaluate`` reads its window.

    ``model_ref`` is ``name`` (its production version, else the latest), ``name@<version>`` or
    ``name@<stage>``. The model's content hash and feature set are checked at load. ``fset`` defaults to the
    bundled feature set of the model's name. Labels (``is_fraud``: the task's label; ``mature``) are read
    ``as_of`` the end of the log over ``horizon``, by default the one the model was trained with (models
    compared side by side share one: :func:`payfm.evaluation.pipeline.evaluate_models`). A model trained on
    a foundation model's outputs (``payfm train --fm``) takes them after its features, from its registered
    checkpoint (content hash checked), as in training; refused when that checkpoint was pretrained on charges
    of the window (its outputs would carry what the window measures).

    Columns: charge_id, created, score (calibrated probability, float64), is_fraud (int32 0/1), mature (bool),
    scenario (null for genuine charges), amount_usd (int64 US cents, as in the charges table), channel,
    merchant_id, merchant_country, card_fingerprint. Sorted by (created, charge_id).
    """
    ws = opened(ws, "score_window")
    start, end = _utc(start, "start"), _utc(end, "end")
    if start is not None and end is not None and start >= end:  # (it held no charge: 0 rows, silently)
        raise ConfigError(
            f"The scoring window must end after it starts. Got {start.isoformat()} .. {end.isoformat()}."
        )
    if horizon is not None and not (isinstance(horizon, timedelta) and horizon > timedelta(0)):
        raise ConfigError(f"The 'horizon' of score_window must be a positive timedelta. Got {horizon!r}.")
    reg = Registry(ws)
    mv = reg.get(model_ref)
    fs = fset if fset is not None else feature_set(mv.feature_set, ws.root)
    mv, model = reg.load(mv.ref, fs)
    t = task(mv.task)
    horizon = horizon if horizon is not None else label_horizon(mv.task, mv.entry)
    window: list[tuple[str, str, Any]] = []
    if start is not None:
        window.append(("created", ">=", start))
    if end is not None:
        window.append(("created", "<", end))
    feats = load_backfill(ws, fs, filters=window or None)
    labels = t.labels(ws, as_of, horizon)
    con = ws.connect()
    try:
        keys = ["charge_id"] if t.key == "charge_id" else ["charge_id", t.key]
        # the row number travels as a column: DuckDB does not promise scan order to a window function
        f = feats.select(keys).append_column("rownum", pa.array(np.arange(feats.num_rows, dtype=np.int64)))
        con.register("f", f)
        con.register("l", labels)
        meta = con.sql(
            f"""SELECT f.charge_id, c.created, l.label::INT AS is_fraud, l.mature, c.scenario, c.amount_usd,
                       c.channel, c.merchant_id, c.merchant_country, c.card_fingerprint, f.rownum
                FROM f
                JOIN l ON f."{t.key}" = l.key JOIN charges c ON c.charge_id = f.charge_id
                ORDER BY c.created, f.charge_id"""
        ).to_arrow_table()
    finally:
        con.close()
    rows = meta["rownum"].to_numpy(zero_copy_only=False).astype(np.int64)
    extra = _fm_inputs(ws, reg, mv, meta)
    scores = np.empty(len(rows), dtype=np.float64)
    for lo in range(0, len(rows), _CHUNK):
        part = feats.take(pa.array(rows[lo : lo + _CHUNK]))
        X = feature_matrix(part, fs.names)
        if extra is not None:
            X = np.hstack([X, extra[lo : lo + _CHUNK]])
        scores[lo : lo + _CHUNK] = model.predict_proba(X)
    out = meta.drop_columns(["rownum"])
    return out.add_column(2, "score", pa.array(scores, pa.float64())).select(list(SCORE_COLUMNS))


def _fm_inputs(ws: Workspace, reg: Registry, mv: Any, meta: pa.Table) -> np.ndarray | None:
    """The foundation-model outputs ``mv`` was trained on, for the charges of ``meta`` in its order (float32,
    as training took them); None for a model on features alone."""
    ckpt = reg.check_foundation_model(mv)
    if ckpt is None or meta.num_rows == 0:
        return None
    from payfm.fm.embed import outputs_for
    from payfm.fm.identity import checkpoint_meta, seen_until
    from payfm.registry.store import fm_outputs

    until = seen_until(checkpoint_meta(ckpt))
    first = meta["created"][0].as_py()
    first_us = int(first.timestamp() * 1_000_000)
    if until is None or until > first_us:
        upto = "the end of the log" if until is None else datetime.fromtimestamp(until / 1e6, UTC).isoformat()
        raise ConfigError(
            f"Model {mv.ref} takes the outputs of the foundation model '{ckpt}', pretrained on charges up to "
            f"{upto}; the window starts at {first.isoformat()}: those outputs would carry what it measures. "
            "Evaluate from the checkpoint's end on (--from), or pretrain on earlier charges and retrain."
        )
    extra = outputs_for(ws, ckpt, meta["charge_id"].combine_chunks(), fm_outputs(mv.entry))
    out: np.ndarray = extra.astype(np.float32)
    return out


def model_scores(ws: Workspace, ref: str, start: datetime | None, end: datetime | None) -> pa.Table:
    """``charge_id, risk_score, risk_level`` of the window's charges as model ``ref`` scores them, with the
    decision service's score scale and default level thresholds."""
    from payfm.training.scores import ScoreLevels, risk_scores

    scored = score_window(ws, ref, start=start, end=end)
    score = np.floor(risk_scores(scored["score"].to_numpy(zero_copy_only=False))).astype(np.int64)
    levels = ScoreLevels()
    return pa.table(
        {
            "charge_id": scored["charge_id"],
            "risk_score": pa.array(score),
            "risk_level": pa.array([levels.level(float(v)) for v in score]),
        }
    )
