"""The card-testing detector (issue 7, 5c): a classifier over the merchant's recent charge sequence.

Card testers run bursts of small authorizations with many never-seen cards at one merchant, most of them
declined. The detector is the pretrained encoder with a logit over the *merchant view* of the charge (the
charge and its merchant's previous K-1 charges: amounts, card novelty, declines, shared IPs and devices),
fine-tuned (:func:`payfm.fm.finetune.finetune`, ``view=1``) on card-testing labels of the training window.

Labels (:func:`attack_labels`): a charge is part of a card-testing attack when it is a card-testing charge
and its merchant saw at least ``min_charges`` card-testing charges within ``window`` of it (itself included),
so the later cash-outs of tested cards, single charges at ordinary merchants, are not attacks on a merchant.
In a synthetic world the card-testing charges come from the ``scenario`` column; on real data from the
operator's card-testing investigations. Merchants are scored per hour (:func:`merchant_hours`): the highest
charge score of the merchant in that hour, an attack hour if any of its charges is an attack charge.

Example::

    y = attack_labels(merchant_codes, created_us, scenario == "card_testing")
    head = finetune(model, sequences, train_rows, y[train_rows], FinetuneConfig(view=1))
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

US_PER_HOUR = 3_600_000_000
MERCHANT_VIEW = 1  # index of the merchant view in payfm.fm.sequences.VIEWS


def attack_labels(
    merchant: np.ndarray,
    created_us: np.ndarray,
    is_card_testing: np.ndarray,
    *,
    window: timedelta = timedelta(hours=3),
    min_charges: int = 3,
) -> np.ndarray:
    """(n,) bool: card-testing charges with >= ``min_charges`` card-testing charges of their merchant
    within +-``window`` (itself included). ``merchant`` holds integer codes, ``created_us`` microseconds."""
    idx = np.flatnonzero(is_card_testing)
    out = np.zeros(len(merchant), dtype=bool)
    if idx.size == 0:
        return out
    w = int(window.total_seconds() * 1_000_000)
    t = created_us[idx] - created_us[idx].min()
    span = int(t.max()) + 2 * w + 1
    key = merchant[idx].astype(np.int64) * span + t  # sorted keys keep merchants apart by > 2 windows
    order = np.argsort(key, kind="stable")
    sk = key[order]
    count = np.searchsorted(sk, sk + w, side="right") - np.searchsorted(sk, sk - w, side="left")
    out[idx[order]] = count >= min_charges
    return out


def merchant_hours(
    merchant: np.ndarray, created_us: np.ndarray, scores: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per (merchant, hour) with charges: (max score, any label) — merchants scored for attacks by hour."""
    hour = created_us // US_PER_HOUR
    key = merchant.astype(np.int64) * (int(hour.max() - hour.min()) + 1) + (hour - hour.min())
    groups, inverse = np.unique(key, return_inverse=True)
    best = np.full(len(groups), -np.inf)
    np.maximum.at(best, inverse, scores)
    hit = np.zeros(len(groups), dtype=bool)
    np.logical_or.at(hit, inverse, labels.astype(bool))
    return best, hit
