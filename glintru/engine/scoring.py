"""The one scoring kernel: hidden states against the whole catalogue, in bounded memory.

Evaluation (:mod:`glintru.engine.evaluate`) and recommendation (:mod:`glintru.recommend`) both
score ``h @ E[1:].T`` (Eq. 13 of the GLINT-RU paper; column j is item j + 1, the padding row is
dropped) through :func:`score_blocks`. A score block never holds more than :data:`SCORE_BUDGET`
floats: with a catalogue of 10^6 items, 16 rows are scored at a time (64 MiB) instead of the
evaluation batch of 512 (2 GB). Splitting rows does not change any number: each row's scores come
from the same matrix product.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from glintru.data.dataset import ragged_arange

SCORE_BUDGET = 1 << 24  # floats in one [rows, n_items] score block (64 MiB in fp32)


def rows_per_block(n_items: int, budget: int | None = None) -> int:
    """Rows of scores computed at once for a catalogue of ``n_items`` (at least 1);
    ``budget`` defaults to :data:`SCORE_BUDGET`."""
    return max(1, (SCORE_BUDGET if budget is None else budget) // max(1, n_items))


def history_mask_coords(
    items: torch.Tensor, starts: np.ndarray, ends: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, columns)`` of every item in ``items[starts[r]:ends[r]]`` (row r's history) as
    score-matrix coordinates (column = item - 1)."""
    lens = np.asarray(ends, dtype=np.int64) - np.asarray(starts, dtype=np.int64)
    rows = torch.repeat_interleave(torch.arange(len(lens), device=device), torch.from_numpy(lens).to(device))
    flat = torch.from_numpy(ragged_arange(starts, lens)).to(device)
    return rows, items[flat].long() - 1


def score_blocks(
    h: torch.Tensor,
    emb: torch.Tensor,
    mask: tuple[torch.Tensor, torch.Tensor] | None = None,
    keep: torch.Tensor | None = None,
    budget: int | None = None,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(row slice, scores [rows, n_items] fp32)`` blocks of ``h [B, d] @ emb [n_items, d].T``.

    ``mask``: ``(rows, cols)`` coordinates (rows index ``h``) set to ``-inf``, e.g. a user's
    history; ``keep`` [B] int64 columns never masked (each row's evaluation target).
    """
    step = rows_per_block(emb.shape[0], budget)
    emb_t = emb.float().T
    for lo in range(0, h.shape[0], step):
        hi = min(lo + step, h.shape[0])
        scores = h[lo:hi].float() @ emb_t  # [rows, n_items], fp32 so bf16 rounding makes no ties
        if mask is not None:
            r, c = mask
            sel = (r >= lo) & (r < hi)
            kept = None
            if keep is not None:
                kept = scores.gather(1, keep[lo:hi].view(-1, 1)).clone()
            scores[r[sel] - lo, c[sel]] = -torch.inf
            if kept is not None:
                scores.scatter_(1, keep[lo:hi].view(-1, 1), kept)
        yield slice(lo, hi), scores
