"""Downstream use of the embeddings: GBDT on hand-made features vs GBDT + embeddings vs a fine-tuned head.

Protocol (:func:`evaluate_embeddings`): charges are split in time at ``train_frac`` of the log's charges; the
foundation model must have been pretrained on charges before that cut (``PretrainConfig.until_us``); both
GBDTs train on the earlier window (its last ``val_frac`` early-stops and calibrates them) and are compared on
the later one. Labels are the fraud labels (fraudulent dispute or EFW) known at the end of the log, the same
for both models. Per scenario the positives are the test charges of that scenario (``scenario`` ground truth
of synthetic worlds) and the negatives the genuine test charges, so card testing, whose declined attempts
are rarely disputed, is measured as detection. Every AP comes with a 95% bootstrap interval.

Example::

    report = evaluate_embeddings(ws, checkpoint_dir(ws))
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from payfm.errors import ConfigError
from payfm.evaluation.bootstrap import bootstrap
from payfm.evaluation.metrics import average_precision, average_precision_from
from payfm.events.workspace import Workspace
from payfm.fm.embed import embed_sequences
from payfm.fm.finetune import FinetuneConfig, finetune, predict
from payfm.fm.pretrain import load_checkpoint
from payfm.fm.sequences import build_sequences, read_charges, time_cut
from payfm.training.labels import fraud_labels

SCENARIOS = ("card_testing", "account_takeover")


@dataclass(frozen=True)
class DownstreamConfig:
    train_frac: float = 0.7  # share of charges (time order) in the training window
    val_frac: float = 0.15  # last share of the training window used for early stopping and calibration
    n_estimators: int = 400
    resamples: int = 100  # bootstrap resamples per AP interval
    seed: int = 0
    scenarios: tuple[str, ...] = SCENARIOS
    finetune_steps: int = 300  # steps of the fine-tuned classification head ("fm-head"); 0 skips it


@dataclass
class Score:
    ap: float
    low: float
    high: float
    positives: int


@dataclass
class DownstreamReport:
    cut: str  # ISO time of the train/test cut
    train_rows: int
    test_rows: int
    embedding_dims: int
    hand_features: int
    scores: dict[str, dict[str, Score]] = field(default_factory=dict)  # model -> slice -> score

    def relative_gain(self, slice_: str) -> float:
        base, fm = self.scores["gbdt"][slice_].ap, self.scores["gbdt+fm"][slice_].ap
        return fm / base - 1.0 if base > 0 else float("nan")

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["relative_gain"] = {s: self.relative_gain(s) for s in self.scores["gbdt"]}
        return doc


def _score(y: np.ndarray, s: np.ndarray, resamples: int, seed: int) -> Score:
    if y.sum() == 0 or y.sum() == len(y):
        return Score(float("nan"), float("nan"), float("nan"), int(y.sum()))
    iv = bootstrap({"ap": average_precision_from}, y, s, resamples=resamples, seed=seed)["ap"]
    return Score(float(average_precision(y, s)), iv.low, iv.high, int(y.sum()))


def _hand_features(ws: Workspace) -> tuple[pa.Table, list[str]]:
    from payfm.features.catalog import default_set
    from payfm.features.training_set import load_backfill

    fset = default_set()
    return load_backfill(ws, fset), [f.name for f in fset.features]


def evaluate_embeddings(
    ws: Workspace,
    checkpoint: str | os.PathLike[str],
    config: DownstreamConfig | None = None,
    *,
    features: tuple[pa.Table, list[str]] | None = None,
) -> DownstreamReport:
    """Train and compare the two GBDTs (see the module docstring); the report holds APs with intervals.

    ``features`` is (table with ``charge_id``, ``created`` and the named columns, names); by default the
    backfill of the default feature set.
    """
    from payfm.training.models.gbdt import GBDTModel

    cfg = config or DownstreamConfig()
    model, tokenizer, meta = load_checkpoint(checkpoint)
    charges = read_charges(ws)
    n = charges.num_rows
    created = charges["created_us"].to_numpy()
    cut_us = time_cut(ws, cfg.train_frac)
    cut_row = int(np.searchsorted(created, cut_us, side="left"))
    until = meta.get("pretrain", {}).get("until_us")
    if until is None or until > cut_us:
        raise ConfigError(
            f"Checkpoint '{checkpoint}': expected pretraining on charges before the test cut "
            f"({_iso(cut_us)}). Got until {_iso(until) if until else 'the end of the log'}; pretrain with "
            "`payfm fm pretrain --until-frac` at most the evaluation's train fraction."
        )
    seqs = build_sequences(charges, tokenizer, model.config.seq_len)
    emb = embed_sequences(model, seqs)  # (n, D), rows in (created, charge_id) order

    feats, names = features if features is not None else _hand_features(ws)
    con = ws.connect()
    try:
        con.register("ids", pa.table({"charge_id": seqs.charge_id, "row": np.arange(n)}))
        con.register("f", feats)
        con.register("l", fraud_labels(con))
        joined = con.sql(
            "SELECT ids.row, l.is_fraud, c.scenario, f.* EXCLUDE (charge_id, created) FROM ids "
            "JOIN f USING (charge_id) JOIN l USING (charge_id) JOIN charges c USING (charge_id) "
            "ORDER BY ids.row"
        ).to_arrow_table()
    finally:
        con.close()
    rows = joined["row"].to_numpy()
    X_hand = np.column_stack([joined[c].cast(pa.float64()).to_numpy(zero_copy_only=False) for c in names])
    X_both = np.hstack([X_hand, emb[rows].astype(np.float64)])
    y = joined["is_fraud"].to_numpy().astype(np.int64)
    scenario = np.array(joined["scenario"].to_pylist(), dtype=object)
    train = rows < cut_row
    fit_end = int(train.sum() * (1 - cfg.val_frac))
    tr, va, te = np.where(train)[0][:fit_end], np.where(train)[0][fit_end:], np.where(~train)[0]
    report = DownstreamReport(
        cut=_iso(cut_us),
        train_rows=int(train.sum()),
        test_rows=len(te),
        embedding_dims=emb.shape[1],
        hand_features=len(names),
    )
    genuine = np.array([s is None for s in scenario[te]])

    def scores_of(p: np.ndarray) -> dict[str, Score]:
        scores = {"overall": _score(y[te], p, cfg.resamples, cfg.seed)}
        for s in cfg.scenarios:
            is_s = scenario[te] == s
            keep = genuine | is_s
            scores[s] = _score(is_s[keep].astype(np.int64), p[keep], cfg.resamples, cfg.seed)
        return scores

    for label, X in (("gbdt", X_hand), ("gbdt+fm", X_both)):
        gbdt = GBDTModel(n_estimators=cfg.n_estimators, seed=cfg.seed, num_threads=0)
        gbdt.fit(X[tr], y[tr], X_val=X[va], y_val=y[va])
        report.scores[label] = scores_of(gbdt.predict_proba(X[te]))
    if cfg.finetune_steps > 0:
        fit_rows = np.concatenate([tr, va])
        head = finetune(model, seqs, rows[fit_rows], y[fit_rows], FinetuneConfig(steps=cfg.finetune_steps))
        report.scores["fm-head"] = scores_of(predict(head, seqs, rows[te]))
    out = Path(checkpoint).with_name(f"{Path(checkpoint).name}.evaluation.json")
    out.write_text(json.dumps(report.to_json(), indent=1))
    return report


def _iso(us: int) -> str:
    return str(np.datetime64(int(us), "us")) + "Z"
