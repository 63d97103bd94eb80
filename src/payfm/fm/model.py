"""The payments foundation model: a small transformer encoder over sequences of tokenized charges.

Input ``x`` is (B, V, K, F) token ids: V views (card, merchant), K charges per view (the target charge last,
left-padded), F fields per charge. A charge's vector is the sum of its field embeddings plus a position and a
view embedding. Each view is encoded on its own (shared weights); the embedding of the target charge is the
concatenation of its final hidden state in every view, (B, V * C).

Pretraining is self-supervised (see :mod:`payfm.fm.pretrain`): ``targets`` has the same shape as ``x``, holds
the true token where the input was masked and -1 elsewhere; the loss is the cross-entropy of every field's
prediction at masked places, which covers masked field modeling and next-charge prediction alike.

Example:
    >>> import torch
    >>> m = FoundationModel(FMConfig(vocab_sizes=(8, 9), seq_len=4))
    >>> logits, loss = m(torch.full((2, 2, 4, 2), 5))
    >>> tuple(logits.shape), loss is None, tuple(m.embed(torch.full((2, 2, 4, 2), 5)).shape)
    ((2, 2, 4, 17), True, (2, 64))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from payfm.errors import ConfigError

PAD = 0  # the padding token id of every field (payfm.fm.tokenizer.PAD)


@dataclass(frozen=True)
class FMConfig:
    vocab_sizes: tuple[int, ...] = field(default_factory=tuple)  # token ids per field, from the tokenizer
    n_views: int = 2  # card view, merchant view
    seq_len: int = 16  # K charges per view, the target charge last
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 32  # embedding size of one view; the charge embedding is n_views * n_embd
    dropout: float = 0.0  # 0 keeps training deterministic and DDP-equal

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"vocab_sizes": list(self.vocab_sizes)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FMConfig:
        return cls(**(data | {"vocab_sizes": tuple(data["vocab_sizes"])}))


class SelfAttention(nn.Module):
    def __init__(self, config: FMConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None, last_only: bool = False) -> torch.Tensor:
        N, T, C = x.size()  # N sequences (batch x views), T charges, C channels
        if last_only:  # only the target charge's output is needed (embedding): one query per sequence
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, -1:, :], w[:C], b[:C])  # (N, 1, C): no queries for the other charges
            kv = F.linear(x, w[C:], b[C:])  # (N, T, 2C)
            k, v = kv[..., :C], kv[..., C:]  # 2 x (N, T, C)
            T = 1
        else:
            q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (N, T, C)
        q = q.view(N, T, self.n_head, C // self.n_head).transpose(1, 2)  # (N, nh, T, hs)
        k = k.view(N, -1, self.n_head, C // self.n_head).transpose(1, 2)  # (N, nh, T, hs)
        v = v.view(N, -1, self.n_head, C // self.n_head).transpose(1, 2)  # (N, nh, T, hs)
        # (N, 1, 1, T): attend to real charges only; None when there is no padding (a faster kernel)
        mask = None if keep is None else keep[:, None, None, :]
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (N, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(N, T, C)  # (N, T, C)
        out: torch.Tensor = self.proj(y)
        return out


class MLP(nn.Module):
    def __init__(self, config: FMConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.dropout(self.proj(F.gelu(self.fc(x))))
        return out


class Block(nn.Module):
    def __init__(self, config: FMConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None, last_only: bool = False) -> torch.Tensor:
        y = self.attn(self.ln_1(x), keep, last_only)  # (N, T, C), or (N, 1, C) when last_only
        x = (x[:, -1:, :] if last_only else x) + y
        x = x + self.mlp(self.ln_2(x))
        return x


class ChargeEmbedding(nn.Module):
    """Sum of a charge's field embeddings: one table, each field's ids shifted by its offset."""

    def __init__(self, config: FMConfig) -> None:
        super().__init__()
        sizes = torch.tensor((0, *config.vocab_sizes))
        self.register_buffer("offsets", torch.cumsum(sizes, 0)[:-1], persistent=False)  # (F,)
        self.table = nn.EmbeddingBag(int(sizes.sum()), config.n_embd, mode="sum")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offsets: torch.Tensor = self.offsets  # type: ignore[assignment]  # a registered buffer
        ids = (x + offsets).view(-1, x.size(-1))  # (n charges, F): one bag per charge
        out: torch.Tensor = self.table(ids).view(*x.shape[:-1], -1)  # (..., C)
        return out


class FoundationModel(nn.Module):
    """The transformer encoder of the module docstring (its shape in :class:`FMConfig`): ``forward`` gives
    every field's logits (and the masked-field loss with ``targets``), :meth:`embed` a charge's embedding,
    the final hidden state of the charge in each view (card, merchant) concatenated."""

    def __init__(self, config: FMConfig) -> None:
        super().__init__()
        if not config.vocab_sizes or config.n_embd % config.n_head:
            raise ConfigError(
                "FMConfig: expected vocab_sizes from a tokenizer and n_embd divisible by n_head. "
                f"Got {len(config.vocab_sizes)} fields, n_embd {config.n_embd}, n_head {config.n_head}."
            )
        self.config = config
        self.charge = ChargeEmbedding(config)
        self.pos = nn.Embedding(config.seq_len, config.n_embd)
        self.view = nn.Embedding(config.n_views, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, sum(config.vocab_sizes))  # every field's logits, side by side
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def encode(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Final hidden states (B, V, K, C) of token ids (B, V, K, F); (B, V, 1, C) with ``last_only``."""
        B, V, K, F_ = x.size()
        keep = (x != PAD).any(dim=-1).view(B * V, K)  # (B*V, K): False on padding rows
        views = torch.arange(V, device=x.device).repeat(B)  # (B*V,): the view of each sequence
        h = self._encode(x.reshape(B * V, K, F_), views, keep, last_only)  # (B*V, K or 1, C)
        return h.view(B, V, h.size(1), -1)  # (B, V, K or 1, C)

    def embed_windows(self, x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """The last charge's embedding (N, C) of N single-view windows ``x`` (N, T, F), T <= K.

        A window is the last T charges of a sequence of K (positions K-T .. K-1) in view ``views`` (N,): the
        same numbers as :meth:`embed`'s part for that view, without computing the padding rows that a short
        history leaves in a K-charge sequence (the batch path groups windows by length; see
        :func:`payfm.fm.embed.embed_sequences`). Padding rows left in ``x`` are masked, as in :meth:`encode`.
        """
        keep = (x != PAD).any(dim=-1)  # (N, T)
        h = self._encode(x, views, None if bool(keep.all()) else keep, last_only=True)  # (N, 1, C)
        return h[:, -1, :]

    def _encode(
        self, x: torch.Tensor, views: torch.Tensor, keep: torch.Tensor | None, last_only: bool
    ) -> torch.Tensor:
        """Final hidden states (N, T, C), or (N, 1, C) with ``last_only``, of N single-view sequences
        (N, T, F) at positions K-T .. K-1; ``keep`` (N, T) is False on padding rows (None: no padding)."""
        T = x.size(1)
        pos = torch.arange(self.config.seq_len - T, self.config.seq_len, device=x.device)  # (T,)
        h = self.charge(x) + self.pos(pos)[None] + self.view(views)[:, None]  # (N, T, C)
        h = self.drop(h)
        for i, block in enumerate(self.blocks):
            h = block(h, keep, last_only and i == len(self.blocks) - 1)
        out: torch.Tensor = self.ln_f(h)  # (N, T or 1, C)
        return out

    def surprise_windows(
        self, x: torch.Tensor, views: torch.Tensor, fields: Sequence[int], mask_id: int
    ) -> torch.Tensor:
        """(N, len(fields)) surprise of the last charge of N single-view windows ``x`` (N, T, F), T <= K:
        ``-log p(value | the charges before it)`` of each of its ``fields``, predicted with the whole charge
        masked (``mask_id`` in every field), as the next-charge objective trains the model to. A high value
        is a field the history did not lead the model to expect (a new device on a card that always used
        one, a large amount at 3 am for a daytime customer). Padding rows left in ``x`` are masked."""
        truth = x[:, -1, list(fields)]  # (N, S): the values to score
        masked = x.clone()
        masked[:, -1, :] = mask_id
        keep = (masked != PAD).any(dim=-1)  # (N, T)
        h = self._encode(masked, views, None if bool(keep.all()) else keep, last_only=True)[:, -1]  # (N, C)
        logits = self.head(h).split(list(self.config.vocab_sizes), dim=-1)  # F x (N, vocab_f)
        out = [
            -F.log_softmax(logits[f].float(), dim=-1).gather(1, truth[:, i : i + 1]).squeeze(1)
            for i, f in enumerate(fields)
        ]
        return torch.stack(out, dim=1)  # (N, S)

    def surprise(self, x: torch.Tensor, fields: Sequence[int], mask_id: int) -> torch.Tensor:
        """The target charge's surprise (B, V * len(fields)) in every view (view-major) of ``x`` (B, V, K, F):
        :meth:`surprise_windows` of each view's whole (left-padded) sequence."""
        B, V, K, F_ = x.size()
        views = torch.arange(V, device=x.device).repeat(B)  # (B*V,)
        s = self.surprise_windows(x.reshape(B * V, K, F_), views, fields, mask_id)  # (B*V, S)
        return s.reshape(B, -1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The target charge's embedding (B, V * C): its last-position state in every view."""
        h = self.encode(x, last_only=True)[:, :, -1, :]  # (B, V, C)
        return h.reshape(h.size(0), -1)  # (B, V*C)

    def forward(
        self, x: torch.Tensor, targets: torch.Tensor | None = None, loss_norm: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits, loss)``: logits (B, V, K, sum(vocab)); loss = summed CE / ``loss_norm`` (default: the
        number of targets). DDP passes the global count over the world size so ranks average exactly."""
        logits = self.head(self.encode(x))  # (B, V, K, sum(vocab))
        if targets is None:
            return logits, None
        total = logits.new_zeros((), dtype=torch.float32)
        # split, not slicing: its backward is one concatenation instead of a zero-filled tensor per field
        for f, field_logits in enumerate(logits.split(list(self.config.vocab_sizes), dim=-1)):
            total = total + F.cross_entropy(
                field_logits.reshape(-1, field_logits.size(-1)).float(),  # (B*V*K, vocab_f)
                targets[..., f].reshape(-1),
                ignore_index=-1,
                reduction="sum",
            )
        norm = loss_norm if loss_norm is not None else max(int((targets >= 0).sum()), 1)
        return logits, total / norm
