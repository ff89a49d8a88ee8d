"""Full-softmax next-item cross-entropy (paper Eq. 13), chunked so the logits never all exist at once.

Scores are ``h @ E[1:].T`` over items 1..n (the padding row is dropped; target t is class t-1).
Rows are processed ``chunk`` at a time; each chunk runs under activation checkpointing, so its
[chunk, n_items] logits are freed after the forward pass and recomputed in the backward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def _chunk_ce_sum(h: torch.Tensor, emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed CE of rows ``h`` [R, d] against catalogue ``emb`` [n_items, d]; ``targets`` [R] in 0..n-1."""
    logits = h @ emb.T  # [R, n_items]
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def full_softmax_ce(h: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """Mean cross-entropy over rows.

    Args:
        h: [R, d] hidden states.
        item_emb: [n_items + 1, d] output embeddings, row 0 = padding (never a class).
        targets: [R] item indices in 1..n_items.
        chunk: rows of logits computed at once.
    """
    emb = item_emb[1:]
    cls = targets - 1
    rows = h.size(0)
    if rows <= chunk:
        return _chunk_ce_sum(h, emb, cls) / rows
    total = h.new_zeros((), dtype=torch.float32)
    for lo in range(0, rows, chunk):
        part = checkpoint(_chunk_ce_sum, h[lo : lo + chunk], emb, cls[lo : lo + chunk], use_reentrant=False)
        total = total + part
    return total / rows


class SequenceLoss(nn.Module):
    """``forward(batch) -> loss``: the model plus its training loss in one module, so DDP can wrap it.

    ``batch`` comes from :func:`glintru.engine.batching.make_batch`: ``targets`` [B, N] means the
    all-position objective (hidden states from ``model.forward``, loss averaged over real target
    positions); ``targets`` [B] means the last-position objective (``model.last_hidden``).
    ``encoder`` is the module that computes hidden states (the model itself or its
    ``torch.compile`` wrapper); ``model`` holds the parameters and ``item_embeddings``.
    """

    def __init__(self, model: nn.Module, chunk: int, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.encoder = encoder if encoder is not None else model
        self.chunk = chunk

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items, targets = batch["items"], batch["targets"]  # [B, N], [B, N] or [B]
        if targets.dim() == 2:
            h = self.encoder(items)  # [B, N, d]
            real = targets > 0  # [B, N]
            rows, tgt = h[real], targets[real]  # [R, d], [R]
        else:
            rows, tgt = self.model.last_hidden(items, batch["lengths"]), targets  # [B, d], [B]
        return full_softmax_ce(rows, self.model.item_embeddings(), tgt, self.chunk)
