"""NARM: Neural Attentive Session-based Recommendation (Li et al., CIKM 2017, arXiv 1711.04725).

item embedding -> dropout -> GRU giving states h_1..h_t. Global encoder: c^g_t = h_t.
Local encoder: c^l_t = sum_j alpha_tj h_j with alpha_tj = v^T sigmoid(A_1 h_t + A_2 h_j)
(no softmax over j, as in the paper). Decoder: c_t = [c^g_t; c^l_t] -> dropout ->
bilinear scores S_i = emb_i^T B c_t, i.e. hidden = B c_t scored against the tied item
embedding. (Paper sections cited by name: "global encoder", "local encoder", "decoder".)

Read-out paths:

* ``last_hidden(items, lengths)``: one session state per row, read at the last real item,
  attention over the row's real items (padding masked). The ``last_position`` objective (one
  sample per prefix, the default) and evaluation use it.
* ``forward(items)`` returns, at every position t, the session state of the prefix items[:, :t+1]
  computed exactly (attention query from h_t, keys j <= t only): so ``forward(x)[:, t]`` equals
  ``last_hidden`` of the prefix ending at t. The model is therefore causal and may train with
  ``objective=all_positions`` (every prefix of a window in one pass). It costs O(N^2 * hidden_size)
  per row, element-wise (the sigmoid does not factor), so it is memory-bound: ``causal_local``
  computes it in tiles of a few rows and query positions small enough to stay in the CPU's L2
  cache (``TILE_ELEMENTS``; on a GPU, every row at once: ``TILE_ELEMENTS_GPU``); a tile of queries
  ending at position e reads the keys before e only, so the masked upper triangle of the [N, N]
  attention is never computed (about half the work).
  Only the [B, N, N] attention weights are kept for backward, which recomputes each tile's sigmoid
  and takes its gradients in place (``_CausalLocal``), instead of autograd's saved [B, T, N, H]
  blocks.

Choices and deviations:

1. The GRU has no biases by default (``gru_bias=False``, as RecBole's; ``gru_bias=True`` adds them)
   and padding inputs are zeroed, so without biases leading padding keeps the GRU state at exactly
   zero and padded keys carry h_j = 0. Padded positions are masked out of the local encoder either
   way, so right padding (the engine's layout) never changes ``last_hidden`` or ``forward``.
2. The loss is full-softmax cross-entropy (engine), as in the paper's learning section, over the whole
   catalogue; the paper's item embedding and output embedding are one matrix, as here.
3. Init: xavier-normal item embedding (padding row reset to zero) and Linear weights, PyTorch's
   default GRU init (weights and biases). The Linears A_1, A_2, v and B have no biases (the paper's
   formulas have none).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from glintru.config import NARMConfig, check_model_config
from glintru.models import SequentialRecommender

TILE_ELEMENTS = 1 << 18  # elements of one [rows, queries, keys, hidden] tile on a CPU (1 MiB in fp32: L2)
# on a GPU, tiles of every row: few kernel launches, and its memory bandwidth needs no cache blocking
TILE_ELEMENTS_GPU = 1 << 25
TILE_QUERIES = 8  # query positions per tile at most


def _tiles(B: int, N: int, H: int, tile: int, need: np.ndarray | None = None):
    """(b0, b1, t0, t1): row and query ranges of the tiles; a tile of queries ending at t1 reads keys < t1.

    ``need`` [B, N] bool (host memory): the queries whose context is wanted; tiles without one are skipped.
    """
    tq = max(1, min(N, TILE_QUERIES, tile // max(1, N * H)))  # query positions per tile
    for t0 in range(0, N, tq):
        t1 = min(N, t0 + tq)
        rows = max(1, tile // ((t1 - t0) * t1 * H))
        for b0 in range(0, B, rows):
            b1 = min(B, b0 + rows)
            if need is None or need[b0:b1, t0:t1].any():
                yield b0, b1, t0, t1


class _CausalLocal(torch.autograd.Function):
    """alpha_tj = allowed_tj * v . sigmoid(q_t + k_j) for j < t1 of each tile; returns alpha [B, N, N].

    Backward recomputes each tile's sigmoid s and takes, in place, ds = v * s * (1 - s) scaled by
    d alpha: dq_t = sum_j, dk_j = sum_t, dv = sum d alpha * s. Nothing of size [B, N, N, H] is kept.
    """

    @staticmethod
    def forward(ctx, q, k, v, allowed, tile, need):  # q, k [B, N, H], v [H], allowed [B, N, N]
        B, N, H = q.shape
        alpha = torch.zeros(B, N, N, dtype=q.dtype, device=q.device)
        for b0, b1, t0, t1 in _tiles(B, N, H, tile, need):
            s = torch.sigmoid_(q[b0:b1, t0:t1, None, :] + k[b0:b1, None, :t1, :])  # [b, t, j, H]
            alpha[b0:b1, t0:t1, :t1] = (s @ v) * allowed[b0:b1, t0:t1, :t1]
        ctx.save_for_backward(q, k, v, allowed)
        ctx.tile, ctx.need = tile, need
        return alpha

    @staticmethod
    def backward(ctx, d_alpha):
        q, k, v, allowed = ctx.saved_tensors
        B, N, H = q.shape
        d_alpha = (d_alpha * allowed).to(q.dtype)
        acc = torch.promote_types(q.dtype, torch.float32)  # sums over tiles in fp32 (bf16 tiles too)
        dq, dk = (torch.zeros(B, N, H, dtype=acc, device=q.device) for _ in range(2))
        dv = torch.zeros(H, dtype=acc, device=q.device)
        for b0, b1, t0, t1 in _tiles(B, N, H, ctx.tile, ctx.need):
            s = torch.sigmoid_(q[b0:b1, t0:t1, None, :] + k[b0:b1, None, :t1, :])  # [b, t, j, H]
            da = d_alpha[b0:b1, t0:t1, :t1]  # [b, t, j]
            dv += (da.reshape(1, -1) @ s.reshape(-1, H)).squeeze(0)
            s.addcmul_(s, s, value=-1)  # s * (1 - s): the sigmoid's derivative, in place
            dq[b0:b1, t0:t1] += (da.unsqueeze(-2) @ s).squeeze(-2)  # sum over keys j
            for i in range(t1 - t0):  # sum over queries t, one query row at a time (no temporary)
                dk[b0:b1, :t1].addcmul_(da[:, i].unsqueeze(-1), s[:, i])
        return (dq * v).to(q.dtype), (dk * v).to(k.dtype), dv.to(v.dtype), None, None, None


def causal_local(q: torch.Tensor, k: torch.Tensor, h: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor,
                 tile: int = TILE_ELEMENTS, queries: torch.Tensor | None = None) -> torch.Tensor:
    """NARM's local encoder at every query: c^l_t = sum_j allowed_tj (v . sigmoid(q_t + k_j)) h_j.

    q, k, h [B, N, H] (A_1 h, A_2 h, the GRU states), v [H], allowed [B, N, N] zero above the
    diagonal and at padded keys -> [B, N, H]. Equal to ``NARM._local`` over all queries at once.
    ``queries`` [B, N] bool: only these rows are needed; tiles holding none are skipped (their
    rows' context, and its gradient, are then zero instead of exact).
    """
    dtype = torch.promote_types(q.dtype, k.dtype)
    need = None if queries is None else queries.detach().to("cpu", torch.bool).numpy()
    alpha = _CausalLocal.apply(q.to(dtype), k.to(dtype), v.to(dtype), allowed.to(dtype), tile, need)
    return alpha.to(h.dtype) @ h


class NARM(SequentialRecommender):
    """NARM: ``last_hidden(items [B, N], lengths [B]) -> [B, embedding_size]`` (the real path)."""

    causal = True  # forward(x)[:, t] is exactly the state of the prefix ending at t
    takes_queries = True  # forward(x, queries=...) computes the local encoder at those positions only
    needs_full_window = False
    TILE_ELEMENTS = TILE_ELEMENTS  # forward: elements of one [rows, queries, keys, hidden] tile (CPU)
    TILE_ELEMENTS_GPU = TILE_ELEMENTS_GPU

    def __init__(self, cfg: NARMConfig, n_items: int, max_len: int) -> None:
        super().__init__()
        check_model_config(cfg, "NARMConfig", n_items=n_items, max_len=max_len)
        H, E = cfg.hidden_size, cfg.embedding_size
        self.cfg = cfg
        self.item_embedding = nn.Embedding(n_items + 1, E, padding_idx=0)
        self.emb_dropout = nn.Dropout(cfg.emb_dropout)
        self.gru = nn.GRU(E, H, cfg.n_layers, bias=cfg.gru_bias, batch_first=True)  # global encoder's GRU
        self.a1 = nn.Linear(H, H, bias=False)  # A_1, applied to the query state h_t (local encoder)
        self.a2 = nn.Linear(H, H, bias=False)  # A_2, applied to every state h_j
        self.v = nn.Linear(H, 1, bias=False)  # v
        self.ct_dropout = nn.Dropout(cfg.ct_dropout)
        self.b = nn.Linear(2 * H, E, bias=False)  # B of the bilinear decoder
        nn.init.xavier_normal_(self.item_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        for lin in (self.a1, self.a2, self.v, self.b):
            nn.init.xavier_normal_(lin.weight)

    def _states(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GRU states h [B, N, H] and the real-item mask [B, N] (float)."""
        mask = (items != 0).to(self.item_embedding.weight.dtype)
        x = self.emb_dropout(self.item_embedding(items)) * mask.unsqueeze(-1)  # choice 1
        h, _ = self.gru(x)
        return h, mask

    def _local(self, q: torch.Tensor, k: torch.Tensor, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Local encoder: q [B, T, H] (A_1 h_t), k [B, N, H] (A_2 h_j), h [B, N, H], allowed [B, T, N] -> [B, T, H]."""
        alpha = self.v(torch.sigmoid(q.unsqueeze(2) + k.unsqueeze(1))).squeeze(-1)  # [B, T, N], alpha_tj
        return (alpha * allowed) @ h  # c^l_t = sum_j alpha_tj h_j over allowed j

    def _decode(self, c_global: torch.Tensor, c_local: torch.Tensor) -> torch.Tensor:
        """[..., H], [..., H] -> B [c^g; c^l] [..., E] (decoder)."""
        return self.b(self.ct_dropout(torch.cat([c_global, c_local], dim=-1)))

    def last_hidden(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Session state at the last real item: items [B, N] right-padded, lengths [B] -> [B, E]."""
        span = max(1, int(lengths.max()))
        h, mask = self._states(items[:, :span])  # later columns are padding: drop them
        pos = (lengths - 1).clamp(min=0)
        h_t = h[torch.arange(h.size(0), device=h.device), pos]  # c^g_t = h_t, [B, H]
        c_local = self._local(self.a1(h_t).unsqueeze(1), self.a2(h), h, mask.unsqueeze(1)).squeeze(1)
        return self._decode(h_t, c_local)

    def forward(self, items: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
        """Session state of every prefix: items [B, N] -> [B, N, E]; row t sees items <= t only.

        ``queries`` [B, N] bool: the positions whose state the caller reads (the engine passes its
        training targets: with overlapping windows most positions are context only). The local
        encoder then skips tiles holding none of them, and the other positions' states are not exact.
        """
        N = items.size(1)
        h, mask = self._states(items)
        q, k = self.a1(h), self.a2(h)  # [B, N, H]
        causal = torch.ones(N, N, dtype=h.dtype, device=h.device).tril()  # key j <= query t
        allowed = causal * mask.unsqueeze(1)  # [B, N, N]
        tile = self.TILE_ELEMENTS if h.device.type == "cpu" else self.TILE_ELEMENTS_GPU
        return self._decode(h, causal_local(q, k, h, self.v.weight[0], allowed, tile, queries))

    def item_embeddings(self) -> torch.Tensor:
        """Tied item embeddings [n_items + 1, E]; row 0 (padding) is zero and never scored."""
        return self.item_embedding.weight
