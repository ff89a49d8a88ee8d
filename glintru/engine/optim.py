"""The optimiser: Adam, with the item-embedding table updated sparsely when that pays.

With a sampled loss (``sampled_softmax``, ``gbce``) a training step touches only the rows of the
item-embedding table that are inputs, targets or the batch's negatives: a few thousand rows out of
a catalogue that may hold 10^6. Dense Adam still reads and writes every row, its two moments and
a zero-filled dense gradient at every step, so its cost grows with the catalogue while the loss's
does not. ``embedding_update=sparse`` gives the table a sparse gradient (``nn.Embedding(sparse=True)``
and sparse row gathers in the loss) and updates it with ``torch.optim.SparseAdam``: only the rows a
step touched move, and only their moments are updated ("lazy Adam"; a row's moments do not decay
on steps that skip it). Every other parameter keeps ``torch.optim.Adam``.

``auto`` picks sparse when the loss is sampled, the run has one worker, ``weight_decay`` and
``grad_clip`` are 0, ``compile`` is off, and the catalogue has at least :data:`SPARSE_MIN_ITEMS`
items; below that the dense update is cheap and exact Adam is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from glintru.errors import UserError

SPARSE_MIN_ITEMS = 100_000


def check_sparse_workers(embedding_update: str, workers: int, where: str) -> None:
    """Refuse ``embedding_update=sparse`` on more than one worker (a sparse gradient is not all-reduced).

    Called by the engine and, before any worker starts, by ``glintru train`` and ``glintru tune``;
    ``where`` names the setting at fault (e.g. ``"--workers 2"``).
    """
    if embedding_update == "sparse" and workers > 1:
        raise UserError(f"embedding_update: 'sparse' runs on one worker ({where}); use embedding_update=dense or auto")


def resolve_embedding_update(cfg: Any, n_items: int, world_size: int = 1) -> str:
    """``"dense"`` or ``"sparse"`` for the train config ``cfg`` on ``n_items`` items and ``world_size`` workers."""
    check_sparse_workers(cfg.embedding_update, world_size, f"this run has {world_size}")
    if cfg.embedding_update == "sparse":
        return "sparse"
    if cfg.embedding_update == "dense":
        return "dense"
    sparse_ok = (cfg.loss != "ce" and world_size == 1 and cfg.weight_decay == 0 and cfg.grad_clip == 0
                 and not cfg.compile and n_items >= SPARSE_MIN_ITEMS)
    return "sparse" if sparse_ok else "dense"


class ModelOptimizer:
    """Adam on the model, or Adam on every parameter but the item table plus SparseAdam on the table.

    Has the optimizer methods the engine uses (``zero_grad``, ``step``, ``state_dict``,
    ``load_state_dict``). The dense form's state dict is plain Adam's, as in every checkpoint before
    this class; the sparse form's is ``{"adam": ..., "sparse_adam": ...}``. Parameters outside the
    model (``extra``: the loss's own) are a second Adam group, without weight decay.
    """

    def __init__(self, model: nn.Module, lr: float, weight_decay: float, mode: str,
                 extra: Sequence[nn.Parameter] = ()) -> None:
        self.mode = mode
        table = model.item_embedding.weight
        if mode == "sparse":
            model.item_embedding.sparse = True
            rest = [p for p in model.parameters() if p is not table]
        else:
            model.item_embedding.sparse = False
            rest = list(model.parameters())
        groups: list[dict[str, Any]] = [{"params": rest}]
        if extra:  # the loss's own parameters (gBCE's score offset): Adam without weight decay
            groups.append({"params": list(extra), "weight_decay": 0.0})
        self.parts = {"adam": torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)}
        if mode == "sparse":
            self.parts["sparse_adam"] = torch.optim.SparseAdam([table], lr=lr)

    @property
    def sparse(self) -> bool:
        return self.mode == "sparse"

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.parts.values():
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.parts.values():
            opt.step()

    def state_dict(self) -> dict[str, Any]:
        if not self.sparse:
            return self.parts["adam"].state_dict()
        return {name: opt.state_dict() for name, opt in self.parts.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved_sparse = set(state) == set(self.parts) and "sparse_adam" in state
        if saved_sparse != self.sparse:
            raise ValueError(f"the checkpoint's optimizer state is {'sparse' if saved_sparse else 'dense'}, "
                             f"this run's embedding update is {self.mode}")
        if not self.sparse:
            self.parts["adam"].load_state_dict(state)
            return
        for name, opt in self.parts.items():
            opt.load_state_dict(state[name])


def make_optimizer(model: nn.Module, cfg: Any, n_items: int, world_size: int = 1,
                   extra: Sequence[nn.Parameter] = ()) -> ModelOptimizer:
    """The engine's optimiser for train config ``cfg`` (``lr``, ``weight_decay``, ``embedding_update``);
    ``extra``: parameters outside the model that train with it (the loss's ``own_parameters()``)."""
    return ModelOptimizer(model, cfg.lr, cfg.weight_decay, resolve_embedding_update(cfg, n_items, world_size),
                          extra=extra)
