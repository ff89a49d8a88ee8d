"""GRU4Rec: Session-based Recommendations with Recurrent Neural Networks (Hidasi et al., ICLR 2016,
arXiv 1511.06939), in the form RecBole uses as a sequential baseline.

item embedding -> dropout -> GRU (``n_layers``) -> Linear to ``embedding_size`` -> scores
with the tied item embedding. The state at position t summarises items 0..t, so the model is causal
and the engine trains it at every position with full-softmax cross-entropy.

Deviations from the paper (RecBole's configuration, re-implemented):

1. Input is an item embedding, not a one-hot vector (the paper reports one-hot input worked better),
   and the output is a Linear to the embedding space scored against the tied input embedding
   instead of a separate output layer.
2. Loss: full-softmax cross-entropy (engine), not the paper's session-parallel mini-batches with
   BPR/TOP1 ranking losses over in-batch negatives.
3. The GRU has no biases by default (``gru_bias=False``, as RecBole's ``nn.GRU(bias=False)``;
   ``gru_bias=True`` adds PyTorch's).
   Padding inputs are zeroed (padding row of the embedding and an explicit mask), and a bias-free GRU
   fed zeros from a zero state stays exactly at zero (r = z = 1/2, candidate tanh(0) = 0). Hence
   leading (left) padding does not change the outputs at real positions; trailing (right) padding,
   the engine's layout, cannot, by causality, with or without biases.
4. Init: xavier-normal item embedding (padding row reset to zero), xavier-uniform GRU weight
   matrices of every layer (RecBole's init touches the first layer only), PyTorch's default for the
   output Linear (and for the GRU biases with ``gru_bias=True``).
"""

from __future__ import annotations

import torch
from torch import nn

from glintru.config import GRU4RecConfig, check_model_config
from glintru.models import SequentialRecommender


class GRU4Rec(SequentialRecommender):
    """GRU4Rec: ``forward(items [B, N]) -> [B, N, embedding_size]``; scores = hidden @ item_embeddings()[1:].T."""

    causal = True
    needs_full_window = False

    def __init__(self, cfg: GRU4RecConfig, n_items: int, max_len: int) -> None:
        super().__init__()
        check_model_config(cfg, "GRU4RecConfig", n_items=n_items, max_len=max_len)
        self.cfg = cfg
        self.item_embedding = nn.Embedding(n_items + 1, cfg.embedding_size, padding_idx=0)
        self.emb_dropout = nn.Dropout(cfg.emb_dropout)
        self.gru = nn.GRU(cfg.embedding_size, cfg.hidden_size, cfg.n_layers, bias=cfg.gru_bias, batch_first=True)
        self.dense = nn.Linear(cfg.hidden_size, cfg.embedding_size)  # hidden state -> embedding space
        nn.init.xavier_normal_(self.item_embedding.weight)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        for name, w in self.gru.named_parameters():
            if name.startswith("weight_"):  # weight_ih_l*, weight_hh_l*; biases keep PyTorch's init
                nn.init.xavier_uniform_(w)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """``items`` [B, N] item ids, 0 = padding -> hidden states [B, N, embedding_size]."""
        mask = (items != 0).unsqueeze(-1)  # [B, N, 1]
        x = self.emb_dropout(self.item_embedding(items)) * mask  # deviation 3: padding inputs are zero
        h, _ = self.gru(x)  # [B, N, hidden_size]
        return self.dense(h)

    def last_hidden(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """State at position ``lengths - 1``: [B, N], [B] -> [B, embedding_size].

        Causal and right-padded: the columns after the longest row cannot change it, so they are dropped.
        """
        span = max(1, int(lengths.max()))
        return super().last_hidden(items[:, :span], lengths)

    def item_embeddings(self) -> torch.Tensor:
        """Tied output embeddings [n_items + 1, embedding_size]; row 0 (padding) is zero, never scored."""
        return self.item_embedding.weight
