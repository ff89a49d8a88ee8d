"""Training losses: full-softmax next-item cross-entropy (paper Eq. 13), chunked so the logits never
all exist at once, and two sampled losses for large catalogues (``TrainConfig.loss``).

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

import math
from typing import Any

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
            target = logits.gather(1, yc.view(-1, 1)).squeeze(1)  # [C]
            # One pass of exp, in place: p = exp(logits - max) / sum, lse = max + log(sum).
            # (logsumexp followed by exp(logits - lse) computed every exponential twice.)
            top = logits.amax(dim=1, keepdim=True)  # [C, 1]
            p = logits.sub_(top).exp_()  # unnormalised softmax, in place of the logits
            norm = p.sum(dim=1, keepdim=True)  # [C, 1]
            total += (top.squeeze(1) + norm.log().squeeze(1) - target).sum()
            if want_h or want_e:
                p.mul_(norm.reciprocal_())  # softmax
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


LOSS_BLOCK_FLOATS = 1 << 20  # logits per chunk at most: 4 MiB in fp32, about one core's L2 cache


def cache_rows(chunk: int, n_items: int) -> int:
    """Rows of logits per chunk: at most ``chunk``, and few enough that a [rows, n_items] block
    stays in cache while its max, exp, sum and scale passes run over it (at ML-1M's 3,706 items,
    282 rows; see benchmarks/step_speed.py for the measured gain);
    at least 256 rows (capped by ``chunk``): with fewer the matrix products lose more than the
    cache gains (10^5 items, 1,600 rows: 16-row chunks 5.7 s, 64 2.6 s, 256 2.2 s, 1,024 2.0 s)."""
    return min(chunk, max(256, LOSS_BLOCK_FLOATS // max(1, n_items)))


def full_softmax_ce(
    h: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor, chunk: int, method: str = "fused"
) -> torch.Tensor:
    """Mean cross-entropy over rows.

    Args:
        h: [R, d] hidden states.
        item_emb: [n_items + 1, d] output embeddings, row 0 = padding (never a class).
        targets: [R] item indices in 1..n_items.
        chunk: rows of logits computed at once, at most (:func:`cache_rows` may take fewer).
        method: ``"fused"`` or ``"checkpoint"`` (module docstring).
    """
    emb = item_emb[1:]
    cls = targets - 1
    rows = h.size(0)
    chunk = cache_rows(chunk, emb.size(0))
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


class NegativeSampler:
    """Draws negatives: items 1..n with probability q (training popularity, or
    uniform), i.i.d. with replacement through a CDF search (O(M log n) for M draws, any catalogue).

    Draws use torch's global generator, which the engine seeds per epoch, so runs stay reproducible
    and resumable.
    """

    def __init__(self, n_items: int, counts: torch.Tensor | None, mode: str) -> None:
        if mode == "uniform" or counts is None:
            w = torch.ones(n_items, dtype=torch.float64)
        else:
            w = counts[1:].to(torch.float64) + 1.0  # add-one: items unseen in training stay drawable
        self.log_q = torch.log(w / w.sum()).float()  # [n_items], log draw probability of item i + 1
        self.cdf = torch.cumsum(w / w.sum(), 0)
        self.cdf[-1] = 1.0
        self.n_items = n_items

    def draw(self, m: int, device: torch.device) -> torch.Tensor:
        """[m] int64 items in 1..n_items."""
        u = torch.rand(m, dtype=torch.float64)
        return (torch.searchsorted(self.cdf, u, right=True).clamp(max=self.n_items - 1) + 1).to(device)


def sampled_softmax_ce(h: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor,
                       log_q: torch.Tensor, sparse: bool = False) -> torch.Tensor:
    """Mean cross-entropy of each row's target against the batch's shared negatives, log-Q corrected.

    logit(i) = h . e_i - log q_i for the target and every negative (Bengio & Senecal 2008; Yi et al.,
    RecSys 2019); a negative equal to the row's target is masked out. With uniform q the correction
    is a constant and cancels.

    Args:
        h: [R, d] hidden states; item_emb: [n_items + 1, d]; targets: [R] in 1..n_items;
        negatives: [M] in 1..n_items; log_q: [n_items] log draw probabilities (item i + 1 at i);
        sparse: the table's gradient as a sparse tensor (rows gathered with ``sparse=True``).
    """
    h = h.float()
    pos = (h * F.embedding(targets, item_emb, sparse=sparse).float()).sum(-1) - log_q[targets - 1]  # [R]
    neg = h @ F.embedding(negatives, item_emb, sparse=sparse).float().T - log_q[negatives - 1]  # [R, M]
    neg = neg.masked_fill(negatives.view(1, -1) == targets.view(-1, 1), -torch.inf)
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)  # [R, 1 + M]
    return (torch.logsumexp(logits, dim=1) - pos).mean()


def gbce_loss(h: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor,
              n_items: int, t: float, sparse: bool = False, neg_table: torch.Tensor | None = None,
              offset: torch.Tensor | None = None) -> torch.Tensor:
    """gBCE (Petrov & Macdonald, "gSASRec", RecSys 2023, Eq. 7-10), mean over real targets.

    loss = -beta * log sigmoid(s+) - sum_j log(1 - sigmoid(s-_j)), with the sampling rate
    alpha = M / (n_items - 1) and beta = alpha * (t * (1 - 1/alpha) + 1/alpha): t = 0 is plain BCE
    (beta = 1), t = 1 fully calibrates the positive for the negatives it was not compared with.

    Each sequence has its own uniform negatives, shared by its positions; one equal to a position's
    target is dropped there. Not one set for the whole batch: each negative is a sigmoid of its own
    (not a share of a softmax), and a batch-wide set left GLINT-RU ranking at random (54,542-item
    Beauty, 256 negatives, 2 epochs: validation NDCG@10 0.002% against 0.54% with a set per
    sequence; its loss stayed high while the catalogue's scores came down; docs/model.md section 6,
    ``benchmarks/gbce_negatives.py``).

    Args:
        h: [B, N, d] hidden states (or [B, d], one target per sequence); targets: [B, N] (or [B]),
        0 = no target; negatives: [B, M] in 1..n_items; sparse: as in :func:`sampled_softmax_ce`;
        neg_table: the table the negatives' rows are read from (default ``item_emb``): the same values
        with another gradient path, e.g. ``benchmarks/gbce_negatives.py``'s rescaled one;
        offset: a scalar added to every score, the positive's and the negatives' (``gbce_offset``).
    """
    if h.dim() == 2:
        h, targets = h.unsqueeze(1), targets.unsqueeze(1)
    h = h.float()
    m = negatives.shape[1]
    alpha = m / max(1, n_items - 1)
    beta = alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)
    real = targets > 0  # [B, N]
    pos = (h * F.embedding(targets, item_emb, sparse=sparse).float()).sum(-1)  # [B, N]
    table = item_emb if neg_table is None else neg_table
    neg = torch.bmm(h, F.embedding(negatives, table, sparse=sparse).float().transpose(1, 2))  # [B, N, M]
    if offset is not None:  # one common shift: changes no ranking, only where the sigmoids sit
        pos, neg = pos + offset.float(), neg + offset.float()
    hit = negatives.unsqueeze(1) == targets.unsqueeze(2)  # [B, N, M]
    neg_term = F.logsigmoid(-neg).masked_fill(hit, 0.0).sum(2)  # log(1 - sigmoid(s)) = logsigmoid(-s)
    return (-beta * F.logsigmoid(pos) - neg_term)[real].mean()


class SequenceLoss(nn.Module):
    """``forward(batch) -> loss``: the model plus its training loss in one module, so DDP can wrap it.

    ``batch`` comes from :func:`glintru.engine.batching.make_batch`: ``targets`` [B, N] means the
    all-position objective (hidden states from ``model.forward``, loss averaged over real target
    positions); ``targets`` [B] means the last-position objective (``model.last_hidden``).
    ``encoder`` is the module that computes hidden states (the model itself or its
    ``torch.compile`` wrapper); ``model`` holds the parameters and ``item_embeddings``.

    With ``gbce_offset`` (gBCE only) the loss owns one parameter of its own, ``score_offset``: a
    scalar added to every score, started at log(1 / (n_items - 1)), the log-odds of one item
    against the rest. A sum of sigmoids is not shift-invariant: hundreds of negatives per sequence
    against one positive pull every score down together, and a model without a free offset builds
    one out of its hidden states and item table (docs/model.md, "Training losses"). The engine
    trains it with the model (:meth:`own_parameters`) and checkpoints it (:meth:`own_state`).
    """

    def __init__(self, model: nn.Module, chunk: int, encoder: nn.Module | None = None, loss: str = "ce",
                 sampler: NegativeSampler | None = None, num_negatives: int = 0, gbce_t: float = 0.75,
                 gbce_offset: bool = False) -> None:
        super().__init__()
        self.model = model
        self.encoder = encoder if encoder is not None else model
        self.chunk = chunk
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if loss != "ce" and (sampler is None or num_negatives < 1):
            raise ValueError(f"loss {loss!r} needs a sampler and num_negatives >= 1")
        self.loss, self.sampler, self.num_negatives, self.gbce_t = loss, sampler, num_negatives, gbce_t
        self.score_offset: nn.Parameter | None = None
        if loss == "gbce" and gbce_offset:
            start = -math.log(max(1, sampler.n_items - 1))
            self.score_offset = nn.Parameter(torch.full((), start, device=model.item_embeddings().device))

    def own_parameters(self) -> list[nn.Parameter]:
        """The loss's own trainable parameters (not the model's): ``[score_offset]`` or ``[]``."""
        return [] if self.score_offset is None else [self.score_offset]

    def own_state(self) -> dict[str, torch.Tensor]:
        """The loss's own parameters by name, detached on the CPU (for a checkpoint)."""
        return {} if self.score_offset is None else {"score_offset": self.score_offset.detach().cpu().clone()}

    def load_own_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`own_state`; its keys must be exactly this loss's."""
        if set(state) != set(self.own_state()):
            raise ValueError(f"the saved loss parameters are {sorted(state) or 'none'}, "
                             f"this loss has {sorted(self.own_state()) or 'none'}")
        if self.score_offset is not None:
            with torch.no_grad():
                self.score_offset.copy_(state["score_offset"])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items, targets = batch["items"], batch["targets"]  # [B, N], [B, N] or [B]
        one_target = targets.dim() == 1
        if one_target:
            h = self.model.last_hidden(items, batch["lengths"])  # [B, d]
        elif getattr(self.model, "takes_queries", False):  # every loss reads the targets' positions only
            h = self.encoder(items, queries=targets > 0)  # [B, N, d], exact at the targets' positions
        else:
            h = self.encoder(items)  # [B, N, d]
        emb = self.model.item_embeddings()
        # A sparse table gradient when the model's embedding is sparse (glintru.engine.optim).
        sparse = bool(getattr(getattr(self.model, "item_embedding", None), "sparse", False))
        if self.loss == "gbce":  # negatives per sequence (see gbce_loss)
            negatives = self.sampler.draw(len(items) * self.num_negatives, h.device).view(len(items), -1)
            return gbce_loss(h, emb, targets, negatives, self.sampler.n_items, self.gbce_t, sparse=sparse,
                             offset=self.score_offset)
        real = targets > 0
        rows, tgt = (h, targets) if one_target else (h[real], targets[real])  # [R, d], [R]
        if self.loss == "ce":
            return full_softmax_ce(rows, emb, tgt, self.chunk)
        negatives = self.sampler.draw(self.num_negatives, rows.device)  # [M], shared by the batch
        return sampled_softmax_ce(rows, emb, tgt, negatives, self.sampler.log_q.to(rows.device), sparse=sparse)


LOSSES = ("ce", "sampled_softmax", "gbce")


def make_sequence_loss(model: nn.Module, train_cfg: Any, n_items: int, train_counts: Any,
                       encoder: nn.Module | None = None) -> SequenceLoss:
    """The engine's loss module for ``train_cfg.loss``: ``train_counts`` [n_items + 1] (training
    interactions per item) feed the popularity sampler of ``sampled_softmax``; gBCE samples uniformly."""
    sampler = None
    if train_cfg.loss != "ce":
        mode = train_cfg.loss_sampling if train_cfg.loss == "sampled_softmax" else "uniform"
        counts = torch.as_tensor(train_counts) if train_counts is not None else None
        sampler = NegativeSampler(n_items, counts, mode)
    return SequenceLoss(model, train_cfg.loss_chunk, encoder=encoder, loss=train_cfg.loss, sampler=sampler,
                        num_negatives=train_cfg.num_negatives_train, gbce_t=train_cfg.gbce_t,
                        gbce_offset=train_cfg.gbce_offset)
