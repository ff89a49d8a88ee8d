"""SASRec: Self-Attentive Sequential Recommendation (Kang & McAuley, ICDM 2018, arXiv 1808.09781).

Item embedding + learned positional embedding (Sec. III-B) -> ``n_layers`` blocks of causal
multi-head self-attention (Sec. III-C, "Causality") and a point-wise feed-forward network
(Sec. III-C), each wrapped as residual + dropout + LayerNorm (Sec. III-D) -> scores with the tied
item embedding (Sec. III-E, "shared item embedding"). The engine trains it with full-softmax
cross-entropy at every position.

Choices (the configuration RecBole uses for its SASRec baseline, re-implemented from the paper):

1. Post-LN blocks: ``x = LayerNorm(x + Dropout(Sublayer(x)))``. The paper writes the LayerNorm
   inside the residual, on the sublayer input (pre-LN, Sec. III-D); RecBole and the
   original Transformer use post-LN. The embedding sum is normalised by its own LayerNorm, then
   dropped out, before the first block.
2. Feed-forward activation is GELU (erf form) with width ``inner_size``; the paper uses ReLU with
   width d. Attention uses a 1/sqrt(d_h) scale and an output Linear per block (standard multi-head
   attention; the paper's single head has neither the heads nor the output projection).
3. The loss is full-softmax cross-entropy (engine), not the paper's binary cross-entropy with one
   sampled negative.
4. Init: normal(0, 0.02) for embeddings and Linear weights, zero biases, LayerNorm (1, 0); the
   padding row of the item embedding is then reset to zero (``padding_idx=0`` keeps it there).
5. Padding (id 0) keys are masked out of every attention row. A padding query attends only to
   itself, so a fully padded prefix (left padding) gives finite values instead of NaN.
6. Positions are counted from the first real item of the row (``position = cumsum(mask) - 1``,
   clamped at 0 on leading padding), not from the first column. Hence the output at a real position
   is unchanged by right OR left padding; with right padding (the engine's layout) this equals the
   paper's absolute positions. A row may hold at most ``max_len`` real items.
7. ``block="pre_ln"`` (model ``sasrec_preln``) is the form of the strongest public SASRec code and
   of the paper's Sec. III-D: ``x + Drop(Sublayer(LN(x)))`` with a final LayerNorm, item embeddings
   scaled by sqrt(d) and no embedding LayerNorm, ReLU in the feed-forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glintru.config import SASRecConfig, check_model_config
from glintru.models import SequentialRecommender

INIT_STD = 0.02  # RecBole's initializer_range for SASRec


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention over allowed keys (Sec. III-C): [B, N, d] -> [B, N, d]."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(d, 3 * d)  # W^Q, W^K, W^V (Sec. III-C), all heads at once
        self.out = nn.Linear(d, d)
        self.attn_dropout = cfg.attn_dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, x_q: torch.Tensor | None = None) -> torch.Tensor:
        """Keys/values from ``x`` [B, N, d]; queries from ``x_q`` [B, T, d] (default: ``x``, T = N).

        ``allowed`` [B, 1, T, N] bool: query i may attend to key j. Returns [B, T, d].
        """
        B, N, d = x.shape
        h, d_h = self.n_heads, d // self.n_heads
        if x_q is None:
            q, k, v = self.qkv(x).view(B, N, 3, h, d_h).permute(2, 0, 3, 1, 4)  # [B, h, N, d_h]
        else:  # only some query positions (read-out): project queries there, keys/values everywhere
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x_q, w[:d], b[:d]).view(B, -1, h, d_h).transpose(1, 2)  # [B, h, T, d_h]
            k, v = F.linear(x, w[d:], b[d:]).view(B, N, 2, h, d_h).permute(2, 0, 3, 1, 4)
        p = self.attn_dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)  # softmax(QK^T / sqrt(d_h)) V
        return self.out(a.transpose(1, 2).reshape(B, -1, d))


class FeedForward(nn.Module):
    """Point-wise feed-forward network (Sec. III-C; GELU, choice 2): [B, N, d] -> [B, N, d]."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.inner_size)
        self.fc2 = nn.Linear(cfg.inner_size, cfg.hidden_size)
        self.act = F.relu if cfg.block == "pre_ln" else F.gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Self-attention block (Sec. III-C/D): post-LN LN(x + Drop(Attn(x))), LN(h + Drop(FFN(h))), or
    pre-LN x + Drop(Attn(LN(x))), h + Drop(FFN(LN(h)))."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.pre_ln = cfg.block == "pre_ln"
        self.attn = CausalSelfAttention(cfg)
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, x_q: torch.Tensor | None = None) -> torch.Tensor:
        """[B, N, d] -> [B, N, d], or [B, T, d] at the query positions ``x_q`` (see CausalSelfAttention)."""
        residual = x if x_q is None else x_q
        if self.pre_ln:
            q = None if x_q is None else self.attn_norm(x_q)
            h = residual + self.dropout(self.attn(self.attn_norm(x), allowed, q))
            return h + self.dropout(self.ffn(self.ffn_norm(h)))
        h = self.attn_norm(residual + self.dropout(self.attn(x, allowed, x_q)))
        return self.ffn_norm(h + self.dropout(self.ffn(h)))


class SASRec(SequentialRecommender):
    """SASRec: ``forward(items [B, N]) -> [B, N, d]``; scores = hidden @ item_embeddings()[1:].T."""

    causal = True
    needs_full_window = False

    def __init__(self, cfg: SASRecConfig, n_items: int, max_len: int) -> None:
        super().__init__()
        check_model_config(cfg, "SASRecConfig", n_items=n_items, max_len=max_len)
        d = cfg.hidden_size
        self.cfg = cfg
        self.max_len = max_len
        self.item_embedding = nn.Embedding(n_items + 1, d, padding_idx=0)  # M, shared with the output
        self.position_embedding = nn.Embedding(max_len, d)  # P (Sec. III-B)
        self.pre_ln = cfg.block == "pre_ln"
        # post-LN: a LayerNorm on the embedding sum; pre-LN: a LayerNorm after the last block instead
        self.emb_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.emb_scale = d**0.5 if self.pre_ln else 1.0
        self.emb_dropout = nn.Dropout(cfg.hidden_dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """Choice 4: normal(0, 0.02) weights, zero biases, padding row kept at zero."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def _input(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded input [B, N, d] and the attention mask ``allowed`` [B, 1, N, N] (query i, key j)."""
        B, N = items.shape
        real = items != 0  # [B, N]
        pos = (real.cumsum(1) - 1).clamp(min=0)  # choice 6: counted from the first real item
        x = self.item_embedding(items) * self.emb_scale + self.position_embedding(pos)  # M_s + P
        x = self.emb_dropout(x if self.pre_ln else self.emb_norm(x))
        eye = torch.eye(N, dtype=torch.bool, device=items.device)
        causal = torch.ones(N, N, dtype=torch.bool, device=items.device).tril()  # key j <= query i
        return x, (causal & (real[:, None, :] | eye)).unsqueeze(1)  # choice 5

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """``items`` [B, N] item ids, 0 = padding -> hidden states [B, N, d]."""
        x, allowed = self._input(items)
        for block in self.blocks:
            x = block(x, allowed)
        return self.emb_norm(x) if self.pre_ln else x  # pre-LN: the final LayerNorm

    def last_hidden(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Hidden state at position ``lengths - 1``: [B, N], [B] -> [B, d].

        Equals gathering ``forward``, cheaper: the columns after the longest row are dropped (causal,
        right-padded input), and the last block computes queries, feed-forward and norms only at the
        read-out position (keys and values everywhere).
        """
        span = max(1, int(lengths.max()))
        x, allowed = self._input(items[:, :span])
        for block in self.blocks[:-1]:
            x = block(x, allowed)
        rows, pos = torch.arange(x.size(0), device=x.device), (lengths - 1).clamp(min=0)
        x_t = x[rows, pos].unsqueeze(1)  # [B, 1, d]
        h = self.blocks[-1](x, allowed[rows, :, pos].unsqueeze(2), x_t).squeeze(1)  # mask row [B, 1, 1, N]
        return self.emb_norm(h) if self.pre_ln else h

    def item_embeddings(self) -> torch.Tensor:
        """Tied output embeddings [n_items + 1, d] (Sec. III-E); row 0 (padding) is zero, never scored."""
        return self.item_embedding.weight
