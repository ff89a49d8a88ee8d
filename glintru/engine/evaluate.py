"""Batched leave-one-out evaluation: full ranking and sampled ranking (pop100) of each target.

Each evaluated user contributes one example: the last ``max_len`` items before the split's target
(validation target = second-to-last item, test target = last; see docs/architecture.md) are the
input, ``scores = model.last_hidden(input) @ model.item_embeddings()[1:].T`` rank every item, and
the target's pessimistic rank (:func:`glintru.metrics.target_ranks`) gives HR/NDCG/MRR@K.

Sharding: rank ``r`` of ``world_size`` processes evaluates ``eval_users[r::world_size]``. Each
process keeps a histogram of the ranks below max(K) plus its user count; these are integer
counts held in float64, so summing them across processes (``all_reduce_sum``) is exact and the
metrics computed from the sum are bit-identical to a single-process evaluation.

Metric keys: ``{split}/full/{hr,ndcg,mrr}@K``, ``{split}/{sampled}/{hr,ndcg,mrr}@K`` where
``sampled`` is :func:`sampled_key` (``pop100`` for the official protocol: 100 negatives by
popularity; otherwise ``pop{N}`` or ``uni{N}``), and ``{split}/n_users``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from glintru.config import TrainConfig
from glintru.data.dataset import PreparedDataset, ragged_arange
from glintru.engine.batching import check_rank
from glintru.engine.precision import autocast_for
from glintru.engine.scoring import history_mask_coords, score_blocks
from glintru.errors import UserError
from glintru.metrics import (
    METRIC_NAMES,
    full_ranks,
    metric_sums_from_histogram,
    rank_histogram,
    sample_negatives,
    sampled_ranks,
)

SPLITS = ("valid", "test")
_SPLIT_SEED = {"valid": 1, "test": 2}  # second word of the negative sampler's seed


def sampled_key(train_cfg: TrainConfig) -> str | None:
    """Name of the sampled protocol in metric keys: ``pop100``, ``pop50``, ``uni100``, ...; None if N = 0."""
    n = train_cfg.num_negatives
    if n == 0:
        return None
    return ("pop" if train_cfg.negative_sampling == "popularity" else "uni") + str(n)


def metric_keys(split: str, train_cfg: TrainConfig, sampled: bool = True) -> list[str]:
    """Keys :func:`evaluate` returns, in order (``sampled=False``: without the sampled protocol)."""
    protocols = ["full"]
    key = sampled_key(train_cfg)
    if sampled and key is not None:
        protocols.append(key)
    ks = sorted(set(train_cfg.topk))
    keys = [f"{split}/{p}/{m}@{k}" for p in protocols for m in METRIC_NAMES for k in ks]
    return keys + [f"{split}/n_users"]


def negatives_for(
    data: PreparedDataset, split: str, train_cfg: TrainConfig, check_only: bool = False
) -> np.ndarray | None:
    """Sampled negatives for every evaluated user of ``split``: [n_eval_users, num_negatives] or None.

    Computed once per split and reused every epoch. Follows RecBole's sampler (the official
    protocol): popularity = interaction counts over the whole prepared dataset (training,
    validation and test interactions), and a user's excluded items are those known at the
    split's time, target included: for ``valid`` the history and the validation target (the
    test item may be drawn), for ``test`` the whole sequence. Negatives are distinct
    (:func:`glintru.metrics.sample_negatives`); the seed is ``[train_cfg.seed, 1 (valid) | 2 (test)]``.
    ``check_only``: only raise the UserError of a catalogue too small for ``num_negatives``
    (what ``glintru tune`` checks before any trial starts).
    """
    _check_split(split)
    if train_cfg.num_negatives == 0:
        return None
    users, end, _ = data.eval_examples(split)
    starts = data.offsets[users]
    lens = end - starts + 1  # history + target
    ex_offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    ex_items = data.items[ragged_arange(starts, lens)]
    popularity = train_cfg.negative_sampling == "popularity"
    return sample_negatives(
        data.n_items,
        data.item_counts() if popularity else None,
        (ex_offsets, ex_items),
        train_cfg.num_negatives,
        train_cfg.negative_sampling,
        seed=[train_cfg.seed, _SPLIT_SEED[split]],
        check_only=check_only,
    )


def evaluate(
    model: nn.Module,
    data: PreparedDataset,
    split: str,
    train_cfg: TrainConfig,
    *,
    negatives: np.ndarray | None,
    rank: int = 0,
    world_size: int = 1,
    device: str | torch.device = "cpu",
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ranks_out: list[tuple[np.ndarray, torch.Tensor]] | None = None,
) -> dict[str, float]:
    """Mean HR/NDCG/MRR@K of ``split`` over all evaluated users (all shards when reduced).

    Args:
        model: a SequentialRecommender (or a wrapper with ``.module``, e.g. DDP) on ``device``.
        data: the prepared dataset.
        split: ``"valid"`` or ``"test"``.
        train_cfg: uses ``max_len``, ``eval_batch_size`` (users per batch on this process),
            ``topk``, ``exclude_history``, ``precision``, ``num_negatives``, ``negative_sampling``.
        negatives: [n_eval_users, N] from :func:`negatives_for` (row i = i-th user of
            ``data.eval_users()``), or None to skip sampled ranking.
        rank, world_size: this process evaluates ``eval_users[rank::world_size]``.
        device: where the model runs.
        all_reduce_sum: sums a float64 tensor over processes (in place or returned); required
            for the result to cover every user when ``world_size > 1``.
        ranks_out: if given, each block's full-ranking ranks are appended to it as
            ``(rows, ranks)``: ``rows`` index ``data.eval_examples(split)``, ``ranks`` 0-based
            (per-user analyses, e.g. ``benchmarks/paired_users.py``).

    Returns:
        ``{key: mean}`` for the keys of :func:`metric_keys`, plus ``{split}/n_users`` (a count).
    """
    _check_split(split)
    check_rank(rank, world_size)
    device = torch.device(device)
    inner = model.module if isinstance(getattr(model, "module", None), nn.Module) else model
    users, end, targets = data.eval_examples(split)
    key = sampled_key(train_cfg) if negatives is not None else None
    if negatives is not None and (negatives.ndim != 2 or len(negatives) != len(users)):
        raise ValueError(f"negatives must be [{len(users)}, N] for split '{split}', got {negatives.shape}")
    ks = sorted(set(train_cfg.topk))
    max_k = ks[-1]

    # This shard's examples, sorted by input length so a batch pads only to its longest input.
    mine = np.arange(rank, len(users), world_size)
    u, e = users[mine], end[mine]
    first = data.offsets[u]
    start = np.maximum(first, e - train_cfg.max_len)  # input window: the last max_len items
    order = np.argsort(e - start, kind="stable")
    mine, first, start, e = mine[order], first[order], start[order], e[order]

    items_t = torch.from_numpy(data.items).to(device)
    start_t = torch.from_numpy(start).to(device)
    lens_np = e - start  # [U] ascending
    len_t = torch.from_numpy(lens_np).to(device)
    target_t = torch.from_numpy(targets[mine]).to(device)
    neg_t = torch.from_numpy(negatives[mine]).to(device) if key is not None else None
    hist_full = torch.zeros(max_k, dtype=torch.float64, device=device)
    hist_sampled = torch.zeros(max_k, dtype=torch.float64, device=device)
    autocast = autocast_for(train_cfg.precision, device)

    was_training = inner.training
    inner.eval()
    try:
        with torch.inference_mode():
            emb = inner.item_embeddings()[1:].float()  # [n_items, d]; padding row dropped
            for lo in range(0, len(mine), train_cfg.eval_batch_size):
                hi = min(lo + train_cfg.eval_batch_size, len(mine))
                lens = len_t[lo:hi]  # [B]
                width = train_cfg.max_len if inner.needs_full_window else int(lens_np[hi - 1])  # sorted: longest last
                x = _window_batch(items_t, start_t[lo:hi], lens, width)  # [B, width]
                with autocast:
                    h = inner.last_hidden(x, lens)  # [B, d]
                target = target_t[lo:hi]
                exclude = None
                if train_cfg.exclude_history:
                    exclude = history_mask_coords(items_t, first[lo:hi], e[lo:hi], device)
                for part, scores in score_blocks(h, emb):  # [rows, n_items] blocks of bounded size
                    ex = None
                    if exclude is not None:
                        sel = (exclude[0] >= part.start) & (exclude[0] < part.stop)
                        ex = (exclude[0][sel] - part.start, exclude[1][sel] + 1)
                    ranks = full_ranks(scores, target[part], ex)
                    hist_full += rank_histogram(ranks, max_k)
                    if ranks_out is not None:
                        ranks_out.append((mine[lo:hi][part], ranks.cpu()))
                    if neg_t is not None:
                        hist_sampled += rank_histogram(sampled_ranks(scores, target[part], neg_t[lo:hi][part]), max_k)
    finally:
        inner.train(was_training)

    totals = torch.cat([hist_full, hist_sampled, torch.tensor([float(len(mine))], dtype=torch.float64, device=device)])
    if all_reduce_sum is not None:
        reduced = all_reduce_sum(totals)
        totals = reduced if reduced is not None else totals
    totals = totals.cpu()
    n_users = int(totals[-1])
    if n_users == 0:
        raise UserError(f"{data.path}: no user has the 3 interactions needed for a {split} target; nothing to evaluate")
    out: dict[str, float] = {}
    protocols = [("full", totals[:max_k])] + ([(key, totals[max_k : 2 * max_k])] if key is not None else [])
    for name, hist in protocols:
        sums = metric_sums_from_histogram(hist, ks)
        for metric in METRIC_NAMES:
            for k in ks:
                out[f"{split}/{name}/{metric}@{k}"] = sums[f"{metric}@{k}"] / n_users
    out[f"{split}/n_users"] = float(n_users)
    return out


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")


def _window_batch(items: torch.Tensor, start: torch.Tensor, lens: torch.Tensor, width: int) -> torch.Tensor:
    """Right-padded input batch: row b = ``items[start[b]:start[b] + lens[b]]`` then zeros. [B, width] int64."""
    pos = torch.arange(width, device=items.device)  # [W]
    idx = (start.view(-1, 1) + pos).clamp(max=len(items) - 1)  # [B, W]
    real = pos < lens.view(-1, 1)  # [B, W]
    return torch.where(real, items[idx].long(), 0)
