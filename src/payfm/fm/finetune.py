"""A fraud classification head fine-tuned with the pretrained encoder (issue 7, 5b).

The head is a linear layer over the charge embedding (B, V * C) -> (B,) logit, or over one view's part of
it (B, C) (the card-testing detector reads the merchant view, :mod:`payfm.fm.cardtesting`); the encoder is
fine-tuned with it at a lower learning rate. Batches are balanced (half positives, half negatives, drawn with
replacement from a seeded generator: deterministic on CPU), so the scores rank charges but are not
calibrated probabilities.

Example::

    head = finetune(model, sequences, train_rows, y_train, FinetuneConfig(steps=200))
    p = predict(head, sequences, test_rows)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from payfm.fm.model import FoundationModel
from payfm.fm.sequences import Sequences


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 300
    batch_size: int = 256
    lr: float = 3e-3  # head; the encoder gets lr * encoder_lr_scale
    encoder_lr_scale: float = 0.1
    seed: int = 0
    view: int | None = None  # None: the whole embedding; v: only view v's channels (1 = merchant view)


class FraudHead(nn.Module):
    """The pretrained encoder (a copy) and a linear logit over its embedding (or over view ``view`` of it)."""

    def __init__(self, encoder: FoundationModel, view: int | None = None) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder)
        c = encoder.config.n_embd
        self.view = view
        self.out = nn.Linear(c if view is not None else encoder.config.n_views * c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.encoder.embed(x)  # (B, V * C)
        if self.view is not None:
            c = self.encoder.config.n_embd
            emb = emb[:, self.view * c : (self.view + 1) * c]  # (B, C)
        logit: torch.Tensor = self.out(emb).squeeze(-1)  # (B,)
        return logit


def finetune(
    encoder: FoundationModel, sequences: Sequences, rows: np.ndarray, y: np.ndarray, config: FinetuneConfig
) -> FraudHead:
    """Fine-tune a :class:`FraudHead` on charges ``rows`` of ``sequences`` with 0/1 labels ``y``."""
    rng = np.random.default_rng(config.seed)
    pos, neg = rows[y == 1], rows[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"finetune: expected both classes. Got {len(pos)} positives, {len(neg)} negatives.")
    half = config.batch_size // 2
    torch.manual_seed(config.seed)
    head = FraudHead(encoder, config.view).train()
    optimizer = torch.optim.AdamW(
        [
            {"params": head.out.parameters(), "lr": config.lr},
            {"params": head.encoder.parameters(), "lr": config.lr * config.encoder_lr_scale},
        ]
    )
    for _ in range(config.steps):
        pick = np.concatenate([pos[rng.integers(0, len(pos), half)], neg[rng.integers(0, len(neg), half)]])
        x = torch.from_numpy(sequences.batch(pick))
        target = torch.from_numpy(np.repeat(np.array([1.0, 0.0], dtype=np.float32), half))
        loss: torch.Tensor = F.binary_cross_entropy_with_logits(head(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # Tensor.backward is unannotated in torch
        optimizer.step()
    return head.eval()


def predict(head: FraudHead, sequences: Sequences, rows: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Fraud probabilities (uncalibrated, ranking only) of charges ``rows``."""
    out = np.empty(len(rows), dtype=np.float64)
    with torch.inference_mode():
        for i in range(0, len(rows), batch_size):
            x = torch.from_numpy(sequences.batch(rows[i : i + batch_size]))
            out[i : i + batch_size] = torch.sigmoid(head(x)).numpy()
    return out
