"""Small tensor helpers shared by the model tests (GLINT-RU and the baselines)."""

from __future__ import annotations

import torch

N_ITEMS = 30  # catalogue size of the tiny test models


def random_items(B: int, N: int, seed: int = 1) -> torch.Tensor:
    """[B, N] random item ids in 1..N_ITEMS (no padding)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, N_ITEMS + 1, (B, N), generator=g)


def right_pad(items: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Zero (pad) every position of row r at or after ``lengths[r]``."""
    out = items.clone()
    for row, n in enumerate(lengths):
        out[row, n:] = 0
    return out


def gather_last(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, N, d] states -> [B, d] at position ``lengths - 1``."""
    return h[torch.arange(h.size(0)), lengths - 1]


def assert_causal_and_right_padding_invariant(model, items: torch.Tensor, t: int, n_items: int) -> torch.Tensor:
    """Outputs before ``t`` ignore every later item, and trailing padding changes no real position.
    Returns ``model(items)``."""
    full = model(items)
    changed = items.clone()
    changed[:, t:] = items[:, t:] % n_items + 1  # every item from t on differs
    torch.testing.assert_close(model(changed)[:, :t], full[:, :t], rtol=0, atol=1e-5)
    padded = torch.cat([items, torch.zeros(items.size(0), 4, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(padded)[:, : items.size(1)], full, rtol=0, atol=1e-5)
    return full


def assert_overfits(model, opt: torch.optim.Optimizer, loss_fn, steps: int = 60) -> None:
    """Train ``steps`` steps on one batch: the loss must fall below half its start, and the padding
    embedding row must stay zero (it is never a prediction target)."""
    first = loss_fn().item()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    assert loss_fn().item() < 0.5 * first
    assert torch.count_nonzero(model.item_embeddings()[0]) == 0  # padding row never trained
