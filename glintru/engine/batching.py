"""Training samples and batches, cut from the prepared dataset's flat arrays with vectorised numpy.

A *sample* is a run of consecutive items of one user's training sequence, described by two
integers: ``start`` (index of its first input item in ``PreparedDataset.items``) and ``n`` (number
of input items, 1..max_len). The model reads ``items[start:start + n]`` (right-padded with 0).

- ``all_positions``: the target of input position p is ``items[start + p + 1]`` (next item). Each
  user's training sequence ``s`` of length T (``PreparedDataset.train_lengths``) is cut from the
  end into windows: the last window predicts ``s[T-L:T]`` from ``s[T-L-1:T-1]``, the one before
  predicts ``s[T-2L:T-L]`` from ``s[T-2L-1:T-L-1]`` and so on, the first window possibly shorter.
  Consecutive windows' inputs overlap by one item, and every item except ``s[0]`` is a target
  exactly once.
- ``last_position`` (RecBole's data augmentation, used by the official code): one sample per prefix,
  input = the last L items before ``s[i]``, target = ``s[i]`` = ``items[start + n]``, i = 1..T-1.

Batches are length-aware: samples are shuffled, stably sorted by ``n`` and chunked into global
batches, whose order is then shuffled; all of it seeded by ``(seed, epoch)``. Rank r of
``world_size`` takes ``global_batch[r::world_size]`` of every global batch, so shards are
disjoint, complete, the same number of steps on every rank, and each rank's batch holds
``batch_size // world_size`` samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from glintru.data.dataset import PreparedDataset, ragged_arange

OBJECTIVES = ("all_positions", "last_position")


@dataclass(frozen=True)
class Samples:
    """All training samples of an objective: ``start`` [S] int64, ``n`` [S] int64 (input lengths)."""

    objective: str
    start: np.ndarray
    n: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    def n_targets(self, idx: np.ndarray | None = None) -> int:
        """Target items in the samples ``idx`` (all when None)."""
        if self.objective == "last_position":
            return len(self.start) if idx is None else len(idx)
        return int(self.n.sum() if idx is None else self.n[idx].sum())


def training_samples(data: PreparedDataset, objective: str, max_len: int) -> Samples:
    """Every training sample of ``objective`` with windows of at most ``max_len`` input items."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    first = data.offsets[:-1].astype(np.int64)  # [U]
    t_len = data.train_lengths().astype(np.int64)  # [U] training sequence lengths T
    n_targets = np.maximum(t_len - 1, 0)  # [U] items s[1..T-1] are targets
    if objective == "all_positions":
        n_win = -(-n_targets // max_len)  # ceil: windows per user
        user = np.repeat(np.arange(len(t_len)), n_win)
        j = ragged_arange(np.zeros_like(n_win), n_win)  # window number counted from the end
        t_end = t_len[user] - j * max_len  # exclusive end of the window's targets (in s coordinates)
        t_begin = np.maximum(1, t_end - max_len)
        return Samples(objective, first[user] + t_begin - 1, t_end - t_begin)
    user = np.repeat(np.arange(len(t_len)), n_targets)
    i = ragged_arange(np.zeros_like(n_targets), n_targets) + 1  # target position in s, 1..T-1
    begin = np.maximum(0, i - max_len)
    return Samples(objective, first[user] + begin, i - begin)


def epoch_batches(
    samples: Samples,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    max_samples: int = 0,
) -> list[np.ndarray]:
    """This rank's batches for ``epoch``: a list of sample-index arrays, ``batch_size // world_size`` each.

    ``max_samples`` > 0 draws that many samples at random for the epoch (same draw on every rank).
    A final global batch with fewer than ``world_size`` samples is merged into the one before, so
    every rank gets a non-empty batch at every step (data-parallel ranks must step together).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    per_rank = batch_size // world_size
    if per_rank < 1:
        raise ValueError(f"batch_size {batch_size} is smaller than world_size {world_size}")
    rng = np.random.default_rng([seed, epoch])
    idx = rng.permutation(len(samples))
    if 0 < max_samples < len(idx):
        idx = idx[:max_samples]
    idx = idx[np.argsort(samples.n[idx], kind="stable")]  # length buckets, shuffled within a length
    g = per_rank * world_size
    bounds = list(range(0, len(idx), g)) + [len(idx)]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < world_size:
        bounds.pop(-2)
    batches = [idx[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:]) if hi - lo >= world_size]
    order = rng.permutation(len(batches))
    return [batches[b][rank::world_size] for b in order]


def make_batch(
    items: np.ndarray, samples: Samples, idx: np.ndarray, *, width: int | None = None
) -> dict[str, torch.Tensor]:
    """Tensors for the samples ``idx``, right-padded with 0 to ``width`` (default: longest input).

    Returns ``{"items": [B, W] int64, "lengths": [B] int64, "targets": ...}`` where targets are
    [B, W] int64 (0 at padding) for ``all_positions`` and [B] int64 for ``last_position``.
    """
    start, n = samples.start[idx], samples.n[idx]
    w = int(n.max()) if width is None else width
    pos = np.arange(w)
    real = pos < n[:, None]  # [B, W]
    src = np.minimum(start[:, None] + pos, len(items) - 1)  # [B, W]; clipped reads are masked
    x = np.where(real, items[src], 0).astype(np.int64)
    if samples.objective == "all_positions":
        nxt = np.minimum(src + 1, len(items) - 1)
        y = np.where(real, items[nxt], 0).astype(np.int64)
    else:
        y = items[start + n].astype(np.int64)
    return {"items": torch.from_numpy(x), "lengths": torch.from_numpy(n.astype(np.int64)), "targets": torch.from_numpy(y)}
