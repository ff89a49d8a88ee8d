"""Full-softmax next-item cross-entropy (paper Eq. 13), chunked so the logits never all exist at once.

Scores are ``h @ E[1:].T`` over items 1..n (the padding row is dropped; target t is class t-1).
Rows are processed ``chunk`` at a time, so at most [chunk, n_items] logits exist at once. Two
equivalent implementations (tested to agree with the unchunked loss and its gradients):

- ``"fused"`` (used by the engine): the forward pass also computes the gradients of each chunk
  analytically, d loss / d logits = softmax - onehot, so ``grad_h = (P - Y) @ E`` and
  ``grad_E = (P - Y).T @ h``; the backward pass only scales them. Three matrix products per chunk,
  as in an ordinary forward + backward, and nothing is recomputed.
- ``"checkpoint"``: activation checkpointing per chunk; the chunk's logits are freed after the
  forward pass and recomputed in the backward pass (four matrix products per chunk).

With ~3,700 items and d=128 these products are most of a GLINT-RU training step, so the fused
form saves about a quarter of the step's arithmetic.
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


class _FusedChunkedCE(torch.autograd.Function):
    """Mean CE of ``h`` [R, d] against ``emb`` [n, d] with gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, emb: torch.Tensor, cls: torch.Tensor, chunk: int) -> torch.Tensor:  # type: ignore[override]
        rows = h.size(0)
        want_h, want_e = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if want_h else None
        acc = torch.promote_types(h.dtype, torch.float32)  # fp32 softmax and sums (fp64 stays fp64)
        grad_e = torch.zeros(emb.shape, dtype=acc, device=emb.device) if want_e else None
        total = torch.zeros((), dtype=acc, device=h.device)
        for lo in range(0, rows, chunk):
            hc, yc = h[lo : lo + chunk], cls[lo : lo + chunk]  # [C, d], [C]
            logits = (hc @ emb.T).to(acc)  # [C, n]
            lse = torch.logsumexp(logits, dim=1)  # [C]
            total += (lse - logits.gather(1, yc.view(-1, 1)).squeeze(1)).sum()
            if want_h or want_e:
                p = torch.exp(logits.sub_(lse.view(-1, 1)))  # softmax, in place of the logits
                p[torch.arange(len(yc), device=p.device), yc] -= 1.0  # d CE / d logits
                p = p.to(hc.dtype)
                if want_h:
                    grad_h[lo : lo + chunk] = p @ emb.to(hc.dtype)
                if want_e:
                    grad_e += (p.T @ hc).to(acc)
        ctx.save_for_backward(
            grad_h if want_h else torch.empty(0, device=h.device),
            grad_e.to(emb.dtype) if want_e else torch.empty(0, device=h.device),
        )
        ctx.rows = rows
        return total / rows

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        grad_h, grad_e = ctx.saved_tensors
        scale = grad_out / ctx.rows
        gh = grad_h * scale.to(grad_h.dtype) if ctx.needs_input_grad[0] else None
        ge = grad_e * scale.to(grad_e.dtype) if ctx.needs_input_grad[1] else None
        return gh, ge, None, None


def full_softmax_ce(
    h: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor, chunk: int, method: str = "fused"
) -> torch.Tensor:
    """Mean cross-entropy over rows.

    Args:
        h: [R, d] hidden states.
        item_emb: [n_items + 1, d] output embeddings, row 0 = padding (never a class).
        targets: [R] item indices in 1..n_items.
        chunk: rows of logits computed at once.
        method: ``"fused"`` or ``"checkpoint"`` (module docstring).
    """
    emb = item_emb[1:]
    cls = targets - 1
    rows = h.size(0)
    if method == "fused":
        if torch.is_autocast_enabled(h.device.type):  # matmuls in the autocast dtype, like nn.Linear
            dtype = torch.get_autocast_dtype(h.device.type)
            h, emb = h.to(dtype), emb.to(dtype)
        else:
            emb = emb.to(h.dtype)
        return _FusedChunkedCE.apply(h, emb, cls, chunk)
    if method != "checkpoint":
        raise ValueError(f"method must be 'fused' or 'checkpoint', got {method!r}")
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
