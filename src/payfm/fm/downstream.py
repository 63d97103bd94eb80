"""Downstream use of the foundation model: GBDT on hand-made features vs GBDT + the embedding vs GBDT + the
surprise (:mod:`payfm.fm.embed`) vs a fine-tuned head.

Protocol (:func:`evaluate_embeddings`): charges are split in time at ``train_frac`` of the log's charges; the
foundation model must have been pretrained on charges before that cut (``PretrainConfig.until_us``); both
GBDTs train on the earlier window (its last ``val_frac`` early-stops and calibrates them) and are compared on
the later one. Each GBDT is the average of ``gbdt_seeds`` LightGBM fits (seeds 0..n-1): a single fit's
feature sampling moves per-scenario AP by more than the effect measured. Labels are the fraud labels
(fraudulent dispute or EFW) known at the end of the log, the same for both models. Per scenario the
positives are the test charges of that scenario (``scenario`` ground truth of synthetic worlds) and the
negatives the genuine test charges, so card testing, whose declined attempts are rarely disputed, is
measured as detection. Every AP comes with a 95% bootstrap interval, and the relative gain of GBDT + FM
over GBDT with a *paired* one (both models scored on the same resample). The bootstrap resamples incidents
(:func:`incidents`: a card-testing burst, a takeover's spree, each genuine charge alone), not charges:
the charges of one burst stand or fall together.

Slices: ``overall`` (fraud labels), one per scenario, ``account_takeover_no_cred_change`` (takeovers with no
credential change in the 36 hours before), ``card_testing_declined`` (declined attempts) and
``card_testing_authorized`` (the rest: authorized attempts and cash-outs),
``card_testing_attacks`` (the charges of card-testing bursts on a merchant,
:func:`payfm.fm.cardtesting.attack_labels`, vs genuine charges) and ``merchant_hours``
(each merchant-hour scored by its highest charge score; positive when it holds an attack charge). Models:
``gbdt``, one GBDT + FM model per item of ``fm_inputs`` (``gbdt+fm``: the embedding; ``gbdt+surprise``;
``gbdt+fm+surprise``), ``fm-head`` (the encoder fine-tuned on fraud labels), ``ct-detector`` (the
card-testing detector over the merchant view, fine-tuned on the training window's attack labels) and
``ct-hand``, the detector's control: a GBDT on the hand-made features fitted on the same attack labels.

Example::

    report = evaluate_embeddings(ws, checkpoint_dir(ws))
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from payfm.errors import ConfigError
from payfm.evaluation.bootstrap import bootstrap, resampler
from payfm.evaluation.metrics import average_precision, average_precision_from
from payfm.events.workspace import Workspace, atomic_write_bytes, json_ready
from payfm.fm.cardtesting import MERCHANT_VIEW, US_PER_HOUR, attack_labels, merchant_hours
from payfm.fm.embed import embed_sequences
from payfm.fm.finetune import FinetuneConfig, finetune, predict
from payfm.fm.identity import OUTPUTS, check_outputs, embedding_dims, seen_until
from payfm.fm.pretrain import load_identified
from payfm.fm.sequences import build_sequences, key_codes, read_charges, time_cut
from payfm.training.labels import fraud_labels
from payfm.training.trainer import TRAIN_ON

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
    detector_steps: int = 300  # steps of the card-testing detector ("ct-detector"); 0 skips it
    gbdt_seeds: int = 3  # each GBDT is the mean prediction of this many fits (seeds 0..n-1)
    workers: int = 1  # threads for batch embedding (payfm.fm.embed.embed_sequences)
    # "authorized": fit on authorized charges only (declined and blocked charges never get a dispute or an
    # EFW, so their label is unknown, not genuine); "all": every charge, unlabelled ones as negatives
    train_on: str = "authorized"
    # the foundation-model inputs of each GBDT + FM model (payfm.fm.identity.OUTPUTS; see model_label)
    fm_inputs: tuple[tuple[str, ...], ...] = (("embedding",), ("surprise",))


@dataclass
class Score:
    ap: float
    low: float
    high: float
    positives: int
    incidents: int = 0  # what the bootstrap resamples (no interval below MIN_INCIDENTS)


@dataclass
class DownstreamReport:
    cut: str  # ISO time of the train/test cut
    train_rows: int  # charges of the training window (the GBDTs fit on the authorized ones by default)
    test_rows: int
    embedding_dims: int
    hand_features: int
    scores: dict[str, dict[str, Score]] = field(default_factory=dict)  # model -> slice -> score
    # GBDT + FM model -> slice -> paired 95% interval of its relative gain over "gbdt"
    gain_intervals: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    # whether the log names its frauds' scenarios (a generated world); an import's do not, and its
    # per-scenario slices hold no positive
    scenario_labels: bool = True
    skipped: tuple[str, ...] = ()  # what was not evaluated, and why (the card-testing detector on an import)
    # the checkpoint evaluated: name, content hash, step, tokenizer version (payfm.fm.identity.provenance),
    # so that a report older than the checkpoint's last pretraining can be told from a current one
    checkpoint: dict[str, Any] = field(default_factory=dict)

    def relative_gain(self, slice_: str, model: str = "gbdt+fm") -> float:
        base, fm = self.scores["gbdt"][slice_].ap, self.scores[model][slice_].ap
        return fm / base - 1.0 if base > 0 else float("nan")

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["relative_gain"] = {
            m: {s: self.relative_gain(s, m) for s in self.scores["gbdt"]} for m in self.gain_intervals
        }
        return doc


def model_label(outputs: tuple[str, ...]) -> str:
    """The report's name of the GBDT on the hand-made features + ``outputs``: ``gbdt+fm`` for the
    embedding (the issue's comparison), ``gbdt+surprise``, ``gbdt+fm+surprise``."""
    return "gbdt+" + "+".join("fm" if o == "embedding" else o for o in outputs)


def incidents(
    scenario: np.ndarray,
    card: np.ndarray,
    merchant: np.ndarray,
    created_us: np.ndarray,
    attack: np.ndarray,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """(n,) int64 incident id per charge, what the bootstrap resamples: a genuine charge is its own
    incident; fraud charges of one scenario on one key (the merchant for card-testing attack charges, the
    card otherwise) form one incident until a gap of more than 6 hours (a burst, a takeover's spree).
    ``card`` and ``merchant`` hold integer codes. A charge ``labels`` calls fraud without a scenario (an
    import's frauds) counts as one of scenario "fraud": a card's are resampled together, not each alone."""
    if labels is not None:
        scenario = np.array(
            [s if s is not None or not f else "fraud" for s, f in zip(scenario, labels, strict=True)],
            dtype=object,
        )
    n = len(scenario)
    out = np.arange(n, dtype=np.int64)
    fraud = np.flatnonzero(np.array([s is not None for s in scenario], dtype=bool))
    if fraud.size == 0:
        return out
    _, scen = np.unique(scenario[fraud].astype(str), return_inverse=True)
    key = np.where(attack[fraud], merchant[fraud], card[fraud]).astype(np.int64)
    kind = scen.astype(np.int64) * 2 + attack[fraud]  # merchant and card keys never mix
    order = np.lexsort((created_us[fraud], key, kind))
    k, c, t = kind[order], key[order], created_us[fraud][order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (k[1:] != k[:-1]) | (c[1:] != c[:-1]) | (t[1:] - t[:-1] > 6 * US_PER_HOUR)
    out[fraud[order]] = n + np.cumsum(new) - 1  # ids after the genuine charges' own
    return out


# Fewer incidents than this in a slice: no interval. Resampling 1 or 2 incidents varies the genuine charges
# only, and gave narrow intervals far from 0 (+733% [+282%, +1845%] on one account takeover).
MIN_INCIDENTS = 5


def incident_count(y: np.ndarray, groups: np.ndarray | None) -> int:
    """The incidents among the positives of ``y`` (``groups``: each charge's incident; None: one each)."""
    return int(y.sum()) if groups is None else len(np.unique(groups[y == 1]))


def _score(y: np.ndarray, s: np.ndarray, groups: np.ndarray | None, resamples: int, seed: int) -> Score:
    if y.sum() == 0 or y.sum() == len(y):
        return Score(float("nan"), float("nan"), float("nan"), int(y.sum()), incident_count(y, groups))
    if (n := incident_count(y, groups)) < MIN_INCIDENTS:
        return Score(float(average_precision(y, s)), float("nan"), float("nan"), int(y.sum()), n)
    metric = {"ap": average_precision_from}
    iv = bootstrap(metric, y, s, resamples=resamples, seed=seed, groups=groups)["ap"]
    return Score(float(average_precision(y, s)), iv.low, iv.high, int(y.sum()), n)


def _paired_gain(
    y: np.ndarray, base: np.ndarray, other: np.ndarray, groups: np.ndarray | None, resamples: int, seed: int
) -> tuple[float, float]:
    """95% interval of AP(other) / AP(base) - 1 over resamples of the same incidents for both models; none
    (NaN) with fewer than :data:`MIN_INCIDENTS` incidents."""
    if y.sum() == 0 or y.sum() == len(y) or incident_count(y, groups) < MIN_INCIDENTS:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draw = resampler(len(y), groups)
    gains = []
    for _ in range(resamples):
        w = draw(rng, None)
        if (w * y).sum() == 0 or (w * (1 - y)).sum() == 0:
            continue
        a = average_precision(y, base, sample_weight=w)
        if a > 0:
            gains.append(average_precision(y, other, sample_weight=w) / a - 1.0)
    if not gains:
        return float("nan"), float("nan")
    low, high = np.percentile(gains, [2.5, 97.5])
    return float(low), float(high)


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
    progress: Callable[[str, int, int], None] | None = None,
) -> DownstreamReport:
    """Train and compare the models (see the module docstring); the report holds APs with intervals.

    ``features`` is (table with ``charge_id``, ``created`` and the named columns, names); by default the
    backfill of the default feature set. ``progress(stage, done, total)`` reports the stages: the
    foundation model's outputs, the GBDT fits, the fine-tuned models (head, detector and its control).
    """
    from payfm.training.models.base import MAX_TRAIN_SEED
    from payfm.training.models.gbdt import GBDTModel

    report_to = progress or (lambda stage, done, total: None)

    cfg = config or DownstreamConfig()
    if cfg.train_on not in TRAIN_ON:
        raise ConfigError(
            f"The 'train_on' of the evaluation must be 'authorized' or 'all'. Got {cfg.train_on!r}."
        )
    n_seeds = max(cfg.gbdt_seeds, 1)  # (seeds seed .. seed + n_seeds - 1, LightGBM's at most MAX_TRAIN_SEED)
    top = MAX_TRAIN_SEED - n_seeds + 1
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not 0 <= cfg.seed <= top:
        raise ConfigError(
            f"The 'seed' of the evaluation must be an integer in [0, {top}] (its {n_seeds} GBDT fits take "
            f"the seeds from it on, each at most {MAX_TRAIN_SEED}). Got {cfg.seed!r}."
        )
    variants = [check_outputs(v) for v in cfg.fm_inputs]
    if len(set(variants)) != len(variants):
        twice = next(v for i, v in enumerate(variants) if v in variants[:i])
        raise ConfigError(
            f"The 'fm_inputs' of the evaluation (--fm-inputs): expected each once. Got {'+'.join(twice)} "
            "more than once."
        )
    wanted = sorted({o for v in variants for o in v}, key=OUTPUTS.index)
    model, tokenizer, meta, source = load_identified(checkpoint)
    charges = read_charges(ws)
    n = charges.num_rows
    created = charges["created_us"].to_numpy()
    cut_us = time_cut(ws, cfg.train_frac)
    cut_row = int(np.searchsorted(created, cut_us, side="left"))
    until = seen_until(meta)
    if until is None or until > cut_us:
        raise ConfigError(
            f"Checkpoint '{checkpoint}': expected pretraining on charges before the test cut "
            f"({_iso(cut_us)}). Got until {_iso(until) if until else 'the end of the log'}; pretrain with "
            "`payfm fm pretrain --until-frac` at most the evaluation's train fraction."
        )

    feats, names = features if features is not None else _hand_features(ws)
    con = ws.connect()
    try:
        # (the rows of read_charges: the sequences' order, built below once the windows are checked)
        con.register("ids", pa.table({"charge_id": charges["charge_id"], "row": np.arange(n)}))
        con.register("f", feats)
        con.register("l", fraud_labels(con))
        joined = con.sql(
            "SELECT ids.row, l.is_fraud, c.scenario, c.outcome AS _outcome, "
            "coalesce(c.credential_changed_at > c.created - INTERVAL 36 HOUR, false) AS _recent_change, "
            "f.* EXCLUDE (charge_id, created) FROM ids "
            "JOIN f USING (charge_id) JOIN l USING (charge_id) JOIN charges c USING (charge_id) "
            "ORDER BY ids.row"
        ).to_arrow_table()
    finally:
        con.close()
    rows = joined["row"].to_numpy()
    X_hand = np.column_stack([joined[c].cast(pa.float64()).to_numpy(zero_copy_only=False) for c in names])
    y = joined["is_fraud"].to_numpy().astype(np.int64)
    scenario = np.array(joined["scenario"].to_pylist(), dtype=object)
    train = rows < cut_row
    fit_end = int(train.sum() * (1 - cfg.val_frac))
    tr, va, te = np.where(train)[0][:fit_end], np.where(train)[0][fit_end:], np.where(~train)[0]
    window_rows = np.concatenate([tr, va])  # the detector's labels are known for every charge
    if cfg.train_on == "authorized":
        authorized = np.array(joined["_outcome"].to_pylist(), dtype=object) == "authorized"
        tr, va = tr[authorized[tr]], va[authorized[va]]
    report = DownstreamReport(
        cut=_iso(cut_us),
        train_rows=int(train.sum()),
        test_rows=len(te),
        embedding_dims=embedding_dims({"model": model.config.to_json()}),
        hand_features=len(names),
        checkpoint=source,
    )
    genuine = np.array([s is None for s in scenario[te]])
    merchant = key_codes(charges["merchant_id"])[rows]
    attack = attack_labels(merchant, created[rows], scenario == "card_testing")

    # Sub-slices of the scenarios where hand-made features and sequences differ most: takeovers without a
    # credential change in the 36 hours before (a new device on an old card is all the features see), and
    # declined card-testing attempts (never labelled: the GBDTs learn them from the authorized ones).
    recent_change = joined["_recent_change"].to_numpy(zero_copy_only=False)[te]
    declined = np.array(joined["_outcome"].to_pylist(), dtype=object)[te] != "authorized"
    sub = {
        "account_takeover_no_cred_change": ("account_takeover", ~recent_change),
        "card_testing_declined": ("card_testing", declined),
        # the authorized ones (attempts that went through, and cash-outs): where the training labels
        # (disputes, EFWs) can agree with the scenario under either label protocol
        "card_testing_authorized": ("card_testing", ~declined),
    }
    extra = [(k, (scenario[te] == s) & m) for k, (s, m) in sub.items() if s in cfg.scenarios]

    card = key_codes(charges["card_fingerprint"])[rows]
    incident = incidents(scenario[te], card[te], merchant[te], created[rows][te], attack[te], y[te])
    report.scenario_labels = any(s is not None for s in scenario)

    def slices(p: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """slice -> (labels, scores, incident ids: what the bootstrap resamples) of the test window."""
        out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {"overall": (y[te], p, incident)}
        for name, is_s in (
            [(s, scenario[te] == s) for s in cfg.scenarios] + extra + [("card_testing_attacks", attack[te])]
        ):
            keep = genuine | is_s
            out[name] = (is_s[keep].astype(np.int64), p[keep], incident[keep])
        best, hit = merchant_hours(merchant[te], created[rows][te], p, attack[te])
        out["merchant_hours"] = (hit.astype(np.int64), best, None)  # merchant-hours resampled one by one
        return out

    def scores_of(p: np.ndarray) -> dict[str, Score]:
        return {k: _score(yk, pk, g, cfg.resamples, cfg.seed) for k, (yk, pk, g) in slices(p).items()}

    # Both windows checked before any work on the sequences (tokens, embeddings, fits): the test window must
    # hold something to compare, the fitting part of the training window both classes for the GBDTs.
    if not any(labels.any() for labels, _, _ in slices(np.zeros(len(te))).values()):
        raise ConfigError(
            f"Evaluation: expected fraud or attack charges among the {len(te):,} test charges after "
            f"{_iso(cut_us)}. Got none on any slice: nothing to compare; take a smaller --train-frac "
            f"(now {cfg.train_frac:g}) or a longer log."
        )
    fraud = int(y[tr].sum())
    if fraud in (0, len(tr)):
        which = "authorized charges (--train-on authorized)" if cfg.train_on == "authorized" else "charges"
        got = "no fraud" if fraud == 0 else "only fraud"
        raise ConfigError(
            f"Evaluation: expected fraud and genuine charges among the {len(tr):,} {which} the GBDTs "
            f"are fitted on (the training window before {_iso(cut_us)}, less its last {cfg.val_frac:.0%} "
            f"kept for validation). Got {got}: nothing to learn from; take a larger --train-frac (now "
            f"{cfg.train_frac:g})."
        )
    seqs = build_sequences(charges, tokenizer, model.config.seq_len)
    # (n, D) per output, rows in (created, charge_id) order
    outputs = {}
    for i, o in enumerate(wanted):
        report_to("foundation-model outputs", i, len(wanted))
        outputs[o] = embed_sequences(model, seqs, workers=cfg.workers, output=o)
    report_to("foundation-model outputs", len(wanted), len(wanted))

    predictions = {}
    inputs = [("gbdt", X_hand)] + [
        (model_label(v), np.hstack([X_hand, *(outputs[o][rows].astype(np.float64) for o in v)]))
        for v in variants
    ]
    n_fits, fitted = len(inputs) * max(cfg.gbdt_seeds, 1), 0
    report_to("GBDT fits", 0, n_fits)
    # (a validation slice without both classes cannot calibrate: those fits are ranked uncalibrated)
    calibration = "isotonic" if len(np.unique(y[va])) == 2 else "none"
    for label, X in inputs:
        fits = []
        for seed in range(cfg.seed, cfg.seed + max(cfg.gbdt_seeds, 1)):
            gbdt = GBDTModel(n_estimators=cfg.n_estimators, seed=seed, num_threads=0, calibration=calibration)
            gbdt.fit(X[tr], y[tr], X_val=X[va], y_val=y[va])
            fits.append(gbdt.predict_proba(X[te]))
            fitted += 1
            report_to("GBDT fits", fitted, n_fits)
        predictions[label] = np.mean(fits, axis=0)
        report.scores[label] = scores_of(predictions[label])
    base = slices(predictions["gbdt"])
    for label, _ in inputs[1:]:
        other = slices(predictions[label])
        report.gain_intervals[label] = {
            k: _paired_gain(base[k][0], base[k][1], other[k][1], base[k][2], cfg.resamples, cfg.seed)
            for k in base
        }
    fit_rows = np.concatenate([tr, va])
    # The detector and its control learn attack labels from the training window (the control from the part
    # before its validation rows, as the GBDTs): without an attack there, neither can be fitted.
    fit_attacks = int(attack[window_rows[:fit_end]].sum())
    with_detector = cfg.detector_steps > 0 and fit_attacks > 0
    if cfg.detector_steps > 0 and not with_detector:
        tested = int((scenario == "card_testing").sum())
        report.skipped += (_no_attack_to_fit(cfg, cut_us, attack, window_rows, fit_end, te, tested),)
    n_tuned, tuned = (cfg.finetune_steps > 0) + 2 * with_detector, 0
    if n_tuned:
        report_to("fine-tuned models", 0, n_tuned)
    if cfg.finetune_steps > 0:
        head = finetune(model, seqs, rows[fit_rows], y[fit_rows], FinetuneConfig(steps=cfg.finetune_steps))
        report.scores["fm-head"] = scores_of(predict(head, seqs, rows[te]))
        tuned += 1
        report_to("fine-tuned models", tuned, n_tuned)
    if with_detector:
        detector = finetune(
            model,
            seqs,
            rows[window_rows],
            attack[window_rows].astype(np.int64),
            FinetuneConfig(steps=cfg.detector_steps, view=MERCHANT_VIEW),
        )
        report.scores["ct-detector"] = scores_of(predict(detector, seqs, rows[te]))
        tuned += 1
        report_to("fine-tuned models", tuned, n_tuned)
        # The detector's control: the same labels and rows, the hand-made features instead of the encoder.
        # Without it the detector would be compared with GBDTs that never saw a card-testing label.
        fit, val = window_rows[:fit_end], window_rows[fit_end:]  # the GBDTs' split, declined rows kept
        control = GBDTModel(
            n_estimators=cfg.n_estimators,
            seed=cfg.seed,
            num_threads=0,
            calibration="isotonic" if len(np.unique(attack[val])) == 2 else "none",  # (ranked only)
        )
        control.fit(X_hand[fit], attack[fit].astype(np.int64), X_val=X_hand[val], y_val=attack[val])
        report.scores["ct-hand"] = scores_of(control.predict_proba(X_hand[te]))
        tuned += 1
        report_to("fine-tuned models", tuned, n_tuned)
    out = Path(checkpoint).with_name(f"{Path(checkpoint).name}.evaluation.json")
    # NaN (an AP without positives, a gain over an AP of 0) as null: JSON has no NaN (as payfm evaluate)
    atomic_write_bytes(out, json.dumps(json_ready(report.to_json()), indent=1, allow_nan=False).encode())
    return report


def _no_attack_to_fit(
    cfg: DownstreamConfig,
    cut_us: int,
    attack: np.ndarray,
    window_rows: np.ndarray,
    fit_end: int,
    te: np.ndarray,
    tested: int,
) -> str:
    """Why the card-testing detector and its control were not evaluated, in the words of what holds no
    card-testing attack: the log, the training window (before the cut) or the part of it they are fitted on
    (before its last ``val_frac``, kept for validation)."""
    what = "the card-testing detector and its control ct-hand"
    if not attack.any():
        why = (
            f"its card-testing charges ({tested:,}) form no burst on a merchant"
            if tested
            else "its scenario labels name none"
        )
        return f"{what}: the log holds no card-testing attack ({why})"
    window = f"the training window (the charges before {_iso(cut_us)}, --train-frac {cfg.train_frac:g})"
    later = (
        f"the test window after it holds {int(attack[te].sum()):,} attack charges: take a larger --train-frac"
    )
    if not attack[window_rows].any():
        return f"{what}: {window} holds no card-testing attack to fit them on, while {later}"
    return (
        f"{what}: {window} holds card-testing attacks only in its last {cfg.val_frac:.0%}, kept for "
        f"validation, none among its first {fit_end:,} charges to fit them on, while {later}"
    )


def _iso(us: int) -> str:
    return str(np.datetime64(int(us), "us")) + "Z"
