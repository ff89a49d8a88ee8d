"""Ranking metrics for next-item recommendation with one target per user, and negative sampling.

Every metric is a function of the target's 0-based *rank* r among the candidates
(r = 0: the target scored highest). With one relevant item per user:

* HR@K   = 1[r < K]                      (Hit Ratio; equals Recall@K when there is one target)
* NDCG@K = 1[r < K] / log2(r + 2)        (the ideal DCG of a single relevant item is 1)
* MRR@K  = 1[r < K] / (r + 1)

A K larger than the number of candidates is allowed: every target then counts as a hit.

Two candidate sets are used (docs/model.md, "Evaluation protocol"):

* **full ranking**: every item 1..n_items is a candidate (index 0, padding, never is). A score row
  has n_items columns and column j holds item j + 1. Items the user has already interacted with
  stay candidates by default (``exclude_history=False``), as in RecBole's full-sort evaluation of
  sequential models (it masks history only for general, non-sequential models) and in the
  official GLINT-RU protocol. Masking them is available. In the ML-1M, Beauty and Video Games
  sequence files this project benchmarks on, no user repeats an item (checked: 0 repeated
  user-item pairs), so there a target is never a history item and masking merely shrinks the
  candidate set, which raises every metric without changing the model.
* **sampled ranking**: the target plus N negatives per user, drawn by :func:`sample_negatives`
  (the official protocol, "pop100", uses 100 popularity-sampled negatives).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from glintru.errors import UserError

METRIC_NAMES = ("hr", "ndcg", "mrr")


def target_ranks(
    scores: torch.Tensor, target_col: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """0-based rank of the target among the valid candidates, ties ranked against the target.

    ``rank_b = #{j : valid[b, j], j != target_col[b], scores[b, j] >= scores[b, target_col[b]]}``

    Ties are *pessimistic*: a candidate scoring exactly as high as the target is ranked above
    it. Otherwise a degenerate model (constant scores, or a collapsed embedding) would put every
    target first and score HR = NDCG = MRR = 1. For the same reason a NaN anywhere in the row,
    target included, counts as beating the target. The target is always a candidate, whatever
    ``valid`` says at its own column.

    Args:
        scores: [B, C] float scores, higher is better.
        target_col: [B] int64 column of each row's target.
        valid: optional [B, C] bool mask of candidate columns (default: every column).

    Returns:
        [B] int64 ranks in 0..C-1.
    """
    if scores.dim() != 2 or target_col.shape != scores.shape[:1]:
        raise ValueError(
            f"expected scores [B, C] and target_col [B], got {tuple(scores.shape)} and {tuple(target_col.shape)}"
        )
    col = target_col.long().view(-1, 1)  # [B, 1]
    s_t = scores.gather(1, col)  # [B, 1]
    beats = (scores >= s_t) | scores.isnan() | s_t.isnan()  # [B, C]
    if valid is not None:
        beats &= valid
    beats.scatter_(1, col, False)  # the target does not rank against itself
    return beats.sum(dim=1)


def hr_at_k(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """HR@K per row: ``1[r < K]`` as float64 [B] (= Recall@K with one target)."""
    return (ranks < k).to(torch.float64)


def ndcg_at_k(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """NDCG@K per row: ``1[r < K] / log2(r + 2)`` as float64 [B]."""
    r = ranks.to(torch.float64)
    return torch.where(ranks < k, 1.0 / torch.log2(r + 2.0), torch.zeros_like(r))


def mrr_at_k(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """MRR@K per row: ``1[r < K] / (r + 1)`` as float64 [B]."""
    r = ranks.to(torch.float64)
    return torch.where(ranks < k, 1.0 / (r + 1.0), torch.zeros_like(r))


_METRIC_FNS = {"hr": hr_at_k, "ndcg": ndcg_at_k, "mrr": mrr_at_k}


def metric_sums(ranks: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Sums over rows of HR@K, NDCG@K and MRR@K, keyed ``hr@K``, ``ndcg@K``, ``mrr@K``.

    ``sum_b metric(ranks_b, K)`` for every K in ``ks``: sums, not means, so shards can be added
    before dividing by the total number of rows. (The engine reduces a histogram of ranks
    instead, see :func:`rank_histogram`, which makes the sharded result bit-identical.)
    """
    return {f"{name}@{k}": float(_METRIC_FNS[name](ranks, k).sum()) for name in METRIC_NAMES for k in ks}


def rank_histogram(ranks: torch.Tensor, max_k: int) -> torch.Tensor:
    """``hist[r] = #{b : ranks_b = r}`` for r < max_k, as float64 [max_k] (exact integer counts).

    Every metric@K with K <= max_k is a function of this histogram alone
    (:func:`metric_sums_from_histogram`), so adding the histograms of several shards gives the
    single-process metrics exactly, independent of the order of floating-point additions.
    """
    hit = ranks[ranks < max_k]
    return torch.bincount(hit, minlength=max_k).to(torch.float64)


def metric_sums_from_histogram(hist: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Same sums as :func:`metric_sums`, computed from :func:`rank_histogram` (``len(hist) >= max(ks)``).

    ``sum_b metric(r_b, K) = sum_{r < K} hist[r] * metric(r, K)``.
    """
    if len(hist) < max(ks):
        raise ValueError(f"histogram of length {len(hist)} cannot give metrics at K = {max(ks)}")
    r = torch.arange(len(hist), dtype=torch.int64, device=hist.device)
    h = hist.to(torch.float64)
    return {f"{name}@{k}": float((h * _METRIC_FNS[name](r, k)).sum()) for name in METRIC_NAMES for k in ks}


def full_ranks(
    scores: torch.Tensor, targets: torch.Tensor, exclude: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """Ranks of the targets among all items (full ranking).

    Args:
        scores: [B, n_items] scores; column j is item j + 1 (padding column already dropped).
        targets: [B] int64 target item indices in 1..n_items.
        exclude: optional ``(rows, items)`` int64 coordinate lists: item ``items[i]`` (1..n_items)
            is removed from the candidates of row ``rows[i]`` (the user's history). The target
            itself is never removed.

    Returns:
        [B] int64 ranks (see :func:`target_ranks`).
    """
    target_col = targets.long() - 1
    valid = None
    if exclude is not None:
        rows, items = exclude
        valid = torch.ones_like(scores, dtype=torch.bool)
        valid[rows.long(), items.long() - 1] = False
    return target_ranks(scores, target_col, valid)


def sampled_ranks(scores: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Ranks of the targets among themselves plus sampled negatives.

    Args:
        scores: [B, n_items] full score rows (column j is item j + 1).
        targets: [B] int64 target items (1..n_items).
        negatives: [B, N] int64 negative items (1..n_items), none equal to the row's target.

    Returns:
        [B] int64 ranks in 0..N.
    """
    cand = torch.cat([targets.long().view(-1, 1), negatives.long()], dim=1) - 1  # [B, 1 + N] columns
    cand_scores = scores.gather(1, cand)  # [B, 1 + N]; the target is column 0
    return target_ranks(cand_scores, torch.zeros_like(targets, dtype=torch.long))


# ----------------------------------------------------------------------------------------------
# Negative sampling
# ----------------------------------------------------------------------------------------------

SAMPLING_MODES = ("popularity", "uniform")


def sample_negatives(
    n_items: int,
    counts: np.ndarray | None,
    exclude: tuple[np.ndarray, np.ndarray],
    n: int,
    mode: str = "popularity",
    seed: int | Sequence[int] = 0,
    check_only: bool = False,
) -> np.ndarray:
    """Draw ``n`` distinct negative items per user, never one of the user's own items.

    Sampling is *successive sampling without replacement*: items are drawn one after another
    with probability ``w_i / sum of w over the items still allowed``, where ``w_i = counts[i]``
    (``mode="popularity"``: proportional to the number of interactions, RecBole's "popularity"
    distribution that the official pop100 protocol uses) or ``w_i = 1`` (``mode="uniform"``).
    Items with zero weight (no interactions, in popularity mode) are never drawn.

    Implementation: vectorised rejection sampling. Each round draws, with replacement, a
    [users, width] matrix of candidates for the unfinished users (width about
    ``need / acceptance``, rounded up to a power of two, the acceptance being the weight share
    of the items still allowed to that user), rejects the user's own items, items taken in
    earlier rounds and repeats of an item within the row, and keeps the first ``need``
    survivors of each row in draw order. Keeping draws in order makes this exactly successive
    sampling. A user whose allowed weight is so small that rejection would need more than
    ``8 * n_items`` draws is finished by an exact draw over their remaining items.

    Args:
        n_items: catalogue size; items are 1..n_items.
        counts: [n_items + 1] interaction counts (index 0, padding, is ignored); required for
            ``mode="popularity"``, ignored for ``"uniform"``.
        exclude: ``(offsets [U + 1] int64, items int)``: user u's own items are
            ``items[offsets[u]:offsets[u + 1]]`` (repeats allowed).
        n: negatives per user.
        mode: ``"popularity"`` or ``"uniform"``.
        seed: seed for ``numpy.random.default_rng`` (an int or a sequence of ints); the same
            inputs and seed give the same array.
        check_only: only check that every user has ``n`` items to draw (the UserError below);
            returns an empty [U, 0] array.

    Returns:
        [U, n] int64 item indices; each row holds n distinct items in draw order.

    Raises:
        UserError: a user has fewer than ``n`` items left to draw (names the field
            ``num_negatives``).
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"mode must be one of {SAMPLING_MODES}, got {mode!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    offsets = np.asarray(exclude[0], dtype=np.int64)
    ex_items = np.asarray(exclude[1], dtype=np.int64)
    n_users = len(offsets) - 1
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] > len(ex_items) or (np.diff(offsets) < 0).any():
        raise ValueError("exclude offsets must start at 0, not decrease, and end within the items array")
    out = np.zeros((n_users, n), dtype=np.int64)
    if n == 0 or n_users == 0:
        return out
    ex_items = ex_items[: offsets[-1]]
    if len(ex_items) and (ex_items.min() < 1 or ex_items.max() > n_items):
        raise ValueError(f"excluded items must lie in 1..{n_items}")

    rng = np.random.default_rng(seed)
    draw, p = _item_sampler(n_items, counts, mode, rng)
    stride = n_items + 1

    # Sorted unique keys row * stride + item of each user's own items.
    rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(offsets))
    own = np.sort(rows * stride + ex_items)
    own = own[np.r_[True, own[1:] != own[:-1]]] if len(own) else own
    own_rows, own_items = np.divmod(own, stride)
    n_allowed = np.count_nonzero(p) - np.bincount(own_rows, weights=p[own_items] > 0, minlength=n_users)
    short = np.flatnonzero(n_allowed < n)
    if len(short):
        u = int(short[0])
        raise UserError(
            f"field 'num_negatives': {n} negatives requested but {len(short)} user(s) have fewer items left "
            f"to sample (e.g. user row {u}: {int(n_allowed[u])} of {n_items} items are neither their own "
            f"nor of zero {'popularity' if mode == 'popularity' else 'weight'}); lower num_negatives "
            "(--set num_negatives=N; 0 evaluates on the full ranking only)"
        )
    if check_only:
        return out[:, :0]
    # Probability mass each user may still draw (decreases as items are taken).
    allowed_mass = 1.0 - np.bincount(own_rows, weights=p[own_items], minlength=n_users)
    filled = np.zeros(n_users, dtype=np.int64)
    max_draws = 8 * stride
    while True:
        need = n - filled
        active = np.flatnonzero(need > 0)
        if len(active) == 0:
            return out
        req = need[active] / np.clip(allowed_mass[active], 1e-300, 1.0) * 1.1 + 4
        exact = req > max_draws
        for u in active[exact]:  # rare: users whose own items hold almost all the weight
            _finish_exactly(int(u), out, filled, own, stride, p, rng)
        active, req = active[~exact], req[~exact]
        if len(active) == 0:
            continue
        taken = _taken_keys(out, filled, active, stride)
        width = 1 << np.ceil(np.log2(req)).astype(np.int64)  # buckets of equal width
        for w in np.unique(width):
            _draw_round(active[width == w], int(w), draw, own, taken, need, out, filled, allowed_mass, p, stride)


def _item_sampler(
    n_items: int, counts: np.ndarray | None, mode: str, rng: np.random.Generator
) -> tuple[Callable[[tuple[int, int]], np.ndarray], np.ndarray]:
    """``(draw(shape) -> int64 items, p [n_items + 1])``: i.i.d. items with probability p (p[0] = 0)."""
    if mode == "uniform":
        p = np.full(n_items + 1, 1.0 / n_items)
        p[0] = 0.0
        return (lambda shape: rng.integers(1, n_items + 1, size=shape)), p
    if counts is None or len(counts) != n_items + 1:
        raise ValueError(f"popularity sampling needs counts of length n_items + 1 = {n_items + 1}")
    w = np.asarray(counts, dtype=np.float64).copy()
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("counts must be finite and >= 0")
    w[0] = 0.0
    if w.sum() <= 0:
        raise ValueError("popularity sampling needs at least one item with a positive count")
    p = w / w.sum()
    integral = (w == np.round(w)).all()
    if integral and w.sum() <= 1 << 26:
        # Drawing a uniformly random interaction and taking its item is exactly proportional to
        # the counts, and a table gather is several times faster than a CDF binary search.
        table = np.repeat(np.arange(n_items + 1, dtype=np.int32), w.astype(np.int64))
        return (lambda shape: table[rng.integers(0, len(table), size=shape)].astype(np.int64)), p
    cdf = np.cumsum(p)
    cdf[-1] = 1.0
    return (lambda shape: np.minimum(np.searchsorted(cdf, rng.random(shape), side="right"), n_items)), p


def _taken_keys(out: np.ndarray, filled: np.ndarray, rows: np.ndarray, stride: int) -> np.ndarray:
    """Sorted keys ``row * stride + item`` of the negatives already drawn for ``rows``."""
    part = out[rows]  # [A, n]
    keep = np.arange(out.shape[1]) < filled[rows][:, None]
    return np.sort((rows[:, None] * stride + part)[keep])


def _in_sorted(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Membership of ``queries`` in ``sorted_keys`` (fast when ``queries`` is sorted too)."""
    if len(sorted_keys) == 0:
        return np.zeros(queries.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return sorted_keys[pos] == queries


def _draw_round(
    rows: np.ndarray,
    width: int,
    draw: Callable[[tuple[int, int]], np.ndarray],
    own: np.ndarray,
    taken: np.ndarray,
    need: np.ndarray,
    out: np.ndarray,
    filled: np.ndarray,
    allowed_mass: np.ndarray,
    p: np.ndarray,
    stride: int,
) -> None:
    """One rejection round for ``rows`` (ascending) with ``width`` draws each; updates in place."""
    a = len(rows)
    items = draw((a, width))  # [A, W] in draw order
    j = np.arange(width, dtype=np.int64)
    # Sort each row by (item, draw position): repeats become adjacent, the earliest first, and
    # the keys row * stride + item become globally sorted, which makes lookups cache-friendly.
    s = np.sort(items * width + j, axis=1)
    s_items, s_j = np.divmod(s, width)
    first = np.ones((a, width), dtype=bool)
    first[:, 1:] = s_items[:, 1:] != s_items[:, :-1]
    keys = (rows[:, None] * stride + s_items).ravel()
    ok_sorted = first.ravel() & ~_in_sorted(own, keys) & ~_in_sorted(taken, keys)
    ok = np.zeros((a, width), dtype=bool)
    np.put_along_axis(ok, s_j, ok_sorted.reshape(a, width), axis=1)  # back to draw order
    rank = np.cumsum(ok, axis=1) - 1  # [A, W] index among the row's survivors
    take = ok & (rank < need[rows][:, None])
    r_idx, c_idx = np.nonzero(take)
    got = items[r_idx, c_idx]
    out[rows[r_idx], filled[rows[r_idx]] + rank[r_idx, c_idx]] = got
    filled[rows] += take.sum(axis=1)
    allowed_mass[rows] -= np.bincount(r_idx, weights=p[got], minlength=a)


def _finish_exactly(
    u: int, out: np.ndarray, filled: np.ndarray, own: np.ndarray, stride: int, p: np.ndarray, rng: np.random.Generator
) -> None:
    """Fill row ``u`` of ``out`` by successive sampling over its remaining allowed items."""
    lo, hi = np.searchsorted(own, [u * stride, (u + 1) * stride])
    allowed = p > 0
    allowed[own[lo:hi] - u * stride] = False
    allowed[out[u, : filled[u]]] = False
    cand = np.flatnonzero(allowed)
    need = out.shape[1] - filled[u]
    out[u, filled[u] :] = rng.choice(cand, size=need, replace=False, p=p[cand] / p[cand].sum())
    filled[u] += need
