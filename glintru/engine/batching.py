"""Training samples and batches, cut from the prepared dataset's flat arrays with vectorised numpy.

A *sample* is a run of consecutive items of one user's training sequence, described by two
integers: ``start`` (index of its first input item in ``PreparedDataset.items``) and ``n`` (number
of input items, 1..max_len). The model reads ``items[start:start + n]`` (right-padded with 0).

- ``all_positions``: the target of input position p is ``items[start + p + 1]`` (next item). Each
  user's training sequence ``s`` of length T (``PreparedDataset.train_lengths``) is cut from the
  end into windows: the last window predicts ``s[T-L:T]`` from ``s[T-L-1:T-1]``, the one before
  predicts ``s[T-2L:T-L]`` from ``s[T-2L-1:T-L-1]`` and so on, the first window possibly shorter.
  Consecutive windows' inputs overlap by one item, and every item except ``s[0]`` is a target
  exactly once. With an overlap ``C`` > 0 (``TrainConfig.window_overlap``) every window but a
  user's first re-reads the ``C`` items before its targets as context only (``skip`` = C leading
  positions carry no target), so it holds ``L - C`` targets and a target cut from a long history
  still sees at least ``C`` earlier items (disjoint windows give the first targets of a window
  almost none). A user's first window holds up to ``L`` targets: every item before them is in it.
  Every item except ``s[0]`` is still a target exactly once; the work per target grows by up to
  ``L / (L - C)``.
- ``last_position`` (RecBole's data augmentation, used by the official code): one sample per prefix,
  input = the last L items before ``s[i]``, target = ``s[i]`` = ``items[start + n]``, i = 1..T-1.

Step weights (``TrainConfig.target_weight``): ``batch`` leaves each step's loss the mean over its
targets, so every step weighs the same; ``equal`` scales step k by ``N_k / mean(N)`` (its targets
over the epoch's mean targets per batch), which makes every target of the epoch weigh the same.
``last_position`` batches hold ``batch_size`` targets each, so there the two differ only in a short
last batch; ``all_positions`` batches of short windows hold few targets, so ``batch`` gives those
targets (short histories' and the first ones of long histories) more weight than ``equal``.
Counts are those of the *global* batch: with ``world_size`` ranks, rank r holding ``n_rk`` of step k's
``N_k`` targets scales its own mean loss by ``world_size * n_rk / N_k`` (``batch``) or
``world_size * n_rk / mean(N)`` (``equal``), so the gradient that data-parallel training averages
over ranks is exactly the one-process gradient of the global batch (ranks' shares of a batch differ:
they split a length-sorted batch, so rank r gets the longer of each run of ``world_size``).

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
    """All training samples of an objective: ``start`` [S] int64, ``n`` [S] int64 (input lengths),
    ``skip`` [S] int64 (``all_positions``: leading input positions that are context only, no target;
    None = 0 everywhere)."""

    objective: str
    start: np.ndarray
    n: np.ndarray
    skip: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.start)

    def n_targets(self, idx: np.ndarray | None = None) -> int:
        """Target items in the samples ``idx`` (all when None)."""
        if self.objective == "last_position":
            return len(self.start) if idx is None else len(idx)
        per = self.n if self.skip is None else self.n - self.skip
        return int(per.sum() if idx is None else per[idx].sum())


def training_samples(data: PreparedDataset, objective: str, max_len: int, overlap: int = 0) -> Samples:
    """Every training sample of ``objective`` with windows of at most ``max_len`` input items;
    ``overlap`` context-only items re-read by each ``all_positions`` window (module docstring)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if not 0 <= overlap < max_len:
        raise ValueError(f"overlap must be in [0, max_len={max_len}), got {overlap}")
    first = data.offsets[:-1].astype(np.int64)  # [U]
    t_len = data.train_lengths().astype(np.int64)  # [U] training sequence lengths T
    n_targets = np.maximum(t_len - 1, 0)  # [U] items s[1..T-1] are targets
    if objective == "all_positions":
        step = max_len - overlap  # targets per window after a user's first
        # A user's first window holds up to max_len targets, each later one `step` more.
        n_win = np.where(n_targets > 0, 1 + -(-np.maximum(n_targets - max_len, 0) // step), 0)
        user = np.repeat(np.arange(len(t_len)), n_win)
        j = ragged_arange(np.zeros_like(n_win), n_win)  # window number counted from the end
        t_end = t_len[user] - j * step  # exclusive end of the window's targets (in s coordinates)
        is_first = j == n_win[user] - 1
        t_begin = np.where(is_first, 1, t_end - step)
        in_begin = np.where(is_first, 0, t_begin - 1 - overlap)  # first input item (in s coordinates)
        skip = t_begin - 1 - in_begin
        return Samples(objective, first[user] + in_begin, t_end - 1 - in_begin, skip if overlap else None)
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
    """This rank's batches for ``epoch``: a list of sample-index arrays, ``batch_size // world_size`` each,
    ``shard(global_batches(...), rank, world_size)``."""
    return shard(global_batches(samples, batch_size, seed=seed, epoch=epoch, world_size=world_size,
                                max_samples=max_samples), rank, world_size)


def global_batches(
    samples: Samples, batch_size: int, *, seed: int, epoch: int, world_size: int = 1, max_samples: int = 0
) -> list[np.ndarray]:
    """Every rank's samples of each step of ``epoch``, in step order: ``(batch_size // world_size) *
    world_size`` each, the same list on every rank.

    ``max_samples`` > 0 draws that many samples at random for the epoch (same draw on every rank).
    A final global batch with fewer than ``world_size`` samples is merged into the one before, so
    every rank gets a non-empty batch at every step (data-parallel ranks must step together).
    """
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
    return [batches[b] for b in order]


def check_rank(rank: int, world_size: int) -> None:
    """A ValueError unless ``0 <= rank < world_size`` (training batches and evaluation shards alike)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")


def shard(batches: list[np.ndarray], rank: int, world_size: int) -> list[np.ndarray]:
    """Rank ``rank``'s part of each global batch: ``batch[rank::world_size]``."""
    check_rank(rank, world_size)
    return [b[rank::world_size] for b in batches]


TARGET_WEIGHTS = ("batch", "equal")


def step_weights(
    samples: Samples, batches: list[np.ndarray], how: str, *, rank: int = 0, world_size: int = 1
) -> np.ndarray | None:
    """Loss multipliers [len(batches)] float64 for rank ``rank``'s shard of the *global* ``batches``
    (module docstring); None where every multiplier is 1 (``"batch"`` on one process)."""
    if how not in TARGET_WEIGHTS:
        raise ValueError(f"target_weight must be one of {TARGET_WEIGHTS}, got {how!r}")
    if not batches or (how == "batch" and world_size == 1):
        return None
    total = np.array([samples.n_targets(idx) for idx in batches], dtype=np.float64)
    mine = total if world_size == 1 else np.array(
        [samples.n_targets(idx) for idx in shard(batches, rank, world_size)], dtype=np.float64)
    return world_size * mine / (total if how == "batch" else total.mean())


def make_batch(
    items: np.ndarray, samples: Samples, idx: np.ndarray, *, width: int | None = None
) -> dict[str, torch.Tensor]:
    """Tensors for the samples ``idx``, right-padded with 0 to ``width`` (default: longest input).

    Returns ``{"items": [B, W] int64, "lengths": [B] int64, "targets": ...}`` where targets are
    [B, W] int64 (0 at padding and at context-only positions) for ``all_positions`` and [B] int64 for ``last_position``.
    """
    start, n = samples.start[idx], samples.n[idx]
    w = int(n.max()) if width is None else width
    pos = np.arange(w)
    real = pos < n[:, None]  # [B, W]
    src = np.minimum(start[:, None] + pos, len(items) - 1)  # [B, W]; clipped reads are masked
    x = np.where(real, items[src], 0).astype(np.int64)
    if samples.objective == "all_positions":
        nxt = np.minimum(src + 1, len(items) - 1)
        target = real if samples.skip is None else real & (pos >= samples.skip[idx][:, None])
        y = np.where(target, items[nxt], 0).astype(np.int64)
    else:
        y = items[start + n].astype(np.int64)
    return {"items": torch.from_numpy(x), "lengths": torch.from_numpy(n.astype(np.int64)), "targets": torch.from_numpy(y)}
