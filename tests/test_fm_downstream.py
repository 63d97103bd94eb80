"""Downstream evaluation: GBDT vs GBDT + embeddings on the later window, and its time-cut guard."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from payfm.errors import ConfigError
from payfm.events.workspace import Workspace
from payfm.fm.cardtesting import US_PER_HOUR, attack_labels, merchant_hours
from payfm.fm.downstream import DownstreamConfig, evaluate_embeddings, incidents
from payfm.fm.pretrain import PretrainConfig, pretrain
from payfm.fm.sequences import time_cut
from payfm.synth import WorldConfig
from payfm.synth.generator import generate_world

SMALL = PretrainConfig(seq_len=4, n_layer=1, n_head=2, n_embd=8, batch_size=64, steps=5)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    torch.set_num_threads(1)
    w = Workspace.open(Path(tmp_path_factory.mktemp("fmdown")), create=True)
    w.write_stream(generate_world(WorldConfig(charges=8_000, days=20, seed=8, fraud_rate=0.03)), "replace")
    return w


def _features(ws: Workspace) -> tuple[pa.Table, list[str]]:
    con = ws.connect()
    try:
        table = con.sql(
            "SELECT charge_id, created, amount_usd::DOUBLE AS amount FROM charges"
        ).to_arrow_table()
    finally:
        con.close()
    return table, ["amount"]


def test_evaluation_compares_on_the_later_window(ws: Workspace, tmp_path: Path) -> None:
    cfg = DownstreamConfig(
        train_frac=0.6, n_estimators=20, resamples=5, finetune_steps=3, detector_steps=3, gbdt_seeds=2
    )
    ckpt = pretrain(
        ws, SMALL.__class__(**{**SMALL.__dict__, "until_us": time_cut(ws, 0.6)}), out=tmp_path / "m"
    )
    seen: dict[str, list[tuple[int, int]]] = {}

    def progress(stage: str, done: int, total: int) -> None:
        seen.setdefault(stage, []).append((done, total))

    report = evaluate_embeddings(ws, ckpt.path, cfg, features=_features(ws), progress=progress)
    # progress: every stage ends complete; 3 models x 2 seeds of GBDT fits; head, detector and its control
    assert {st: v[-1] for st, v in seen.items()} == {
        "foundation-model outputs": (2, 2),
        "GBDT fits": (6, 6),
        "fine-tuned models": (3, 3),
    }
    assert [d for d, _ in seen["GBDT fits"]] == list(range(7))
    assert report.train_rows + report.test_rows == ws.count("charges")
    assert report.embedding_dims == 16 and report.hand_features == 1
    slices = {
        "overall",
        "card_testing",
        "account_takeover",
        "account_takeover_no_cred_change",
        "card_testing_declined",
        "card_testing_authorized",
        "card_testing_attacks",
        "merchant_hours",
    }
    for model in ("gbdt", "gbdt+fm", "gbdt+surprise", "fm-head", "ct-detector", "ct-hand"):
        assert set(report.scores[model]) == slices
        overall = report.scores[model]["overall"]
        assert 0.0 <= overall.low <= overall.high <= 1.0 and overall.positives > 0
    # the detector's control learns the attack labels (tests are small amounts, other fraud large ones):
    # on the one hand-made feature it ranks attacks above a GBDT fitted on fraud labels
    control, fraud_gbdt = (report.scores[m]["card_testing_attacks"].ap for m in ("ct-hand", "gbdt"))
    assert control > fraud_gbdt + 0.1, (control, fraud_gbdt)
    attacks = report.scores["gbdt"]["card_testing_attacks"].positives
    assert 0 < attacks <= report.scores["gbdt"]["card_testing"].positives
    for part, whole in (
        ("account_takeover_no_cred_change", "account_takeover"),
        ("card_testing_declined", "card_testing"),
    ):
        assert 0 < report.scores["gbdt"][part].positives < report.scores["gbdt"][whole].positives, part
    parts = [report.scores["gbdt"][f"card_testing_{k}"].positives for k in ("declined", "authorized")]
    assert sum(parts) == report.scores["gbdt"]["card_testing"].positives  # the two halves of the slice
    assert set(report.gain_intervals) == {"gbdt+fm", "gbdt+surprise"}
    for model in report.gain_intervals:
        # (5 resamples: a percentile interval of 5 gains need not hold the point; test_paired_gain_* below)
        low, high = report.gain_intervals[model]["overall"]
        assert np.isfinite([low, high]).all() and low <= high
    # the two GBDT + FM models differ: they take different inputs
    assert report.scores["gbdt+fm"]["overall"].ap != report.scores["gbdt+surprise"]["overall"].ap
    saved = json.loads((tmp_path / "m.evaluation.json").read_text())
    assert set(saved["relative_gain"]) == set(saved["gain_intervals"]) == {"gbdt+fm", "gbdt+surprise"}
    assert set(saved["relative_gain"]["gbdt+surprise"]) == set(saved["gain_intervals"]["gbdt+fm"]) == slices


def test_pretraining_on_the_test_window_is_refused(ws: Workspace, tmp_path: Path) -> None:
    ckpt = pretrain(ws, SMALL, out=tmp_path / "leaky")  # no until: saw the test period
    with pytest.raises(ConfigError, match="before the test cut"):
        evaluate_embeddings(ws, ckpt.path, DownstreamConfig(train_frac=0.6), features=_features(ws))


def test_attack_labels_and_merchant_hours_against_brute_force() -> None:
    rng = np.random.default_rng(3)
    n = 400
    merchant = rng.integers(0, 5, n)
    created = np.sort(rng.integers(0, 30 * US_PER_HOUR, n))
    is_ct = rng.random(n) < 0.3
    got = attack_labels(merchant, created, is_ct, window=timedelta(hours=2), min_charges=3)
    w = 2 * US_PER_HOUR
    for i in range(n):
        near = is_ct & (merchant == merchant[i]) & (np.abs(created - created[i]) <= w)
        assert got[i] == (is_ct[i] and near.sum() >= 3)
    assert got.any() and not got.all()
    scores = rng.random(n)
    best, hit = merchant_hours(merchant, created, scores, got)
    pairs = sorted({(int(m), int(t // US_PER_HOUR)) for m, t in zip(merchant, created, strict=True)})
    assert len(best) == len(pairs)
    for j, (m, h) in enumerate(pairs):
        sel = (merchant == m) & (created // US_PER_HOUR == h)
        assert best[j] == scores[sel].max() and hit[j] == got[sel].any()


def test_incidents_group_bursts_by_merchant_and_sprees_by_card() -> None:
    h = US_PER_HOUR
    scenario = np.array(
        [None, None, "card_testing", "card_testing", "card_testing", "card_testing", "account_takeover",
         "account_takeover", "stolen_card", "account_takeover"],
        dtype=object,
    )  # fmt: skip
    card = np.array([1, 1, 2, 3, 4, 5, 6, 6, 6, 6])
    merchant = np.array([9, 9, 7, 7, 7, 7, 8, 8, 8, 8])
    created = np.array([0, 0, 0, 1 * h, 9 * h, 2 * h, 0, 1 * h, 1 * h, 20 * h])
    attack = np.array([0, 0, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    got = incidents(scenario, card, merchant, created, attack)
    assert got[0] != got[1]  # genuine charges are their own incidents, even on one card at one time
    assert got[2] == got[3]  # one burst: other cards, the same merchant within 6 hours
    assert got[4] != got[3]  # 8 hours later: another burst
    assert got[5] not in got[2:5]  # a cash-out is not part of the burst
    assert got[6] == got[7] != got[8]  # a takeover's spree on one card; another scenario on it is not
    assert got[9] != got[7]  # the same card 19 hours later: another incident
    assert len(set(got[:2]) & set(got[2:])) == 0


def test_an_imports_frauds_without_a_scenario_are_grouped_by_card() -> None:
    """Found on an imported export (no scenario column): each fraud was its own incident, so the interval
    resampled a card's 30 frauds one by one, narrower than the evidence allows."""
    h = US_PER_HOUR
    scenario = np.array([None] * 6, dtype=object)
    card, merchant = np.array([1, 1, 2, 1, 3, 3]), np.array([9, 8, 9, 7, 9, 9])
    created = np.array([0, 1 * h, 0, 2 * h, 0, 0])
    labels = np.array([1, 1, 1, 1, 0, 0])
    attack = np.zeros(6, dtype=bool)
    got = incidents(scenario, card, merchant, created, attack, labels)
    assert got[0] == got[1] == got[3] != got[2]  # card 1's frauds together, card 2's apart
    assert got[4] != got[5] and not {got[4], got[5]} & {got[0], got[2]}  # genuine: each alone
    assert len(set(incidents(scenario, card, merchant, created, attack))) == 6  # (without labels: as before)


def test_incident_bootstrap_is_wider_than_the_charge_bootstrap() -> None:
    from payfm.evaluation.bootstrap import bootstrap
    from payfm.evaluation.metrics import average_precision_from

    rng = np.random.default_rng(0)
    n_gen, bursts, size = 3_000, 8, 25
    y = np.r_[np.zeros(n_gen), np.ones(bursts * size)].astype(int)
    burst_level = rng.normal(0, 1.5, bursts)  # each burst scored alike: its charges are not independent
    s = np.r_[rng.normal(0, 1, n_gen), np.repeat(burst_level, size) + 2 + rng.normal(0, 0.1, bursts * size)]
    groups = np.r_[np.arange(n_gen), n_gen + np.repeat(np.arange(bursts), size)]
    metric = {"ap": average_precision_from}
    charges = bootstrap(metric, y, s, resamples=200, seed=1)["ap"]
    by_incident = bootstrap(metric, y, s, resamples=200, seed=1, groups=groups)["ap"]
    assert by_incident.high - by_incident.low > 2 * (charges.high - charges.low)


def test_paired_gain_resamples_both_models_together() -> None:
    from payfm.evaluation.metrics import average_precision
    from payfm.fm.downstream import _paired_gain

    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.05).astype(np.int64)
    base = rng.normal(size=y.size) + 1.0 * y
    groups = np.arange(y.size)
    # the same model: every paired resample gains exactly 0 (two independent draws would spread around it)
    assert _paired_gain(y, base, base.copy(), groups, 200, 0) == (0.0, 0.0)
    other = base + 0.6 * y + rng.normal(scale=0.3, size=y.size)
    low, high = _paired_gain(y, base, other, groups, 400, 0)
    point = average_precision(y, other) / average_precision(y, base) - 1.0
    assert 0.0 < low < point < high  # with a few hundred resamples the interval holds a real gain
    # frauds drawn together, as a burst's attempts are (incidents of 10), widen the interval
    incident = np.where(y == 1, y.size + np.cumsum(y) // 10, groups)
    wide = _paired_gain(y, base, other, incident, 400, 0)
    assert wide[1] - wide[0] > high - low
