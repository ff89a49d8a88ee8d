"""Sequential recommenders with one interface, chosen by name: see docs/architecture.md.

``build_model(run_cfg, n_items)`` returns a :class:`SequentialRecommender`; the model table
(:data:`glintru.config.MODELS`) maps each name to its class (``glintru`` and ``glintru_official``
share one, as do ``sasrec`` and ``sasrec_1block``).
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from glintru.config import MODELS, RunConfig


class SequentialRecommender(nn.Module):
    """Base class. Inputs are right-padded item ids (0 = padding), shape [B, N]."""

    causal: bool = True
    needs_full_window: bool = False
    # forward(items, queries=mask [B, N] bool) computes only the positions the caller reads (the
    # training targets); the others' outputs are then unspecified. The engine passes it when True.
    takes_queries: bool = False

    def forward(self, items: torch.Tensor) -> torch.Tensor:  # [B, N] -> [B, N, d]
        raise NotImplementedError

    def last_hidden(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Hidden state at the last real item, position ``lengths - 1``: [B, N], [B] -> [B, d]."""
        h = self.forward(items)  # [B, N, d]
        idx = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, h.size(-1))
        return h.gather(1, idx).squeeze(1)

    def item_embeddings(self) -> torch.Tensor:  # [n_items + 1, d]; row 0 = padding
        raise NotImplementedError


def build_model(run_cfg: RunConfig, n_items: int) -> SequentialRecommender:
    """Instantiate the model named by ``run_cfg.model`` for a catalogue of ``n_items`` items.

    The class comes from the model table (:data:`glintru.config.MODELS`). Model classes take
    ``(cfg, n_items, max_len)``; ``max_len`` sizes positional embeddings.
    """
    module_name, cls_name = MODELS[run_cfg.model].impl.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(run_cfg.model_cfg, n_items=n_items, max_len=run_cfg.train.max_len)
