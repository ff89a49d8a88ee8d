"""glintru.metrics: hand-built score rows, expected values written as the arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glintru.errors import UserError
from glintru.metrics import (
    full_ranks,
    hr_at_k,
    metric_sums,
    metric_sums_from_histogram,
    mrr_at_k,
    ndcg_at_k,
    rank_histogram,
    sample_negatives,
    sampled_ranks,
    target_ranks,
)


def test_ranks_count_higher_scores_and_ties_against_the_target():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.5, 0.3],  # target col 0: best -> rank 0
            [0.2, 0.7, 0.7, 0.1],  # target col 1 ties with col 2 -> rank 1 (pessimistic)
            [0.4, 0.4, 0.4, 0.4],  # constant row: everything ties -> worst rank 3
            [0.5, 0.6, 0.7, 0.1],  # target col 3 is last -> rank 3
        ]
    )
    ranks = target_ranks(scores, torch.tensor([0, 1, 2, 3]))
    assert ranks.tolist() == [0, 1, 3, 3]
    assert ranks.dtype == torch.int64


def test_nan_scores_count_against_the_target():
    scores = torch.tensor([[float("nan"), 0.5, 0.1], [0.3, float("nan"), 0.1]])
    assert target_ranks(scores, torch.tensor([0, 0])).tolist() == [2, 1]


def test_valid_mask_removes_candidates_but_never_the_target():
    scores = torch.tensor([[0.1, 0.9, 0.8, 0.5]])
    valid = torch.tensor([[False, False, True, True]])  # col 1 masked; the target (col 0) too
    assert target_ranks(scores, torch.tensor([0]), valid).tolist() == [2]


def test_per_row_metrics_follow_their_formulas():
    ranks = torch.tensor([0, 1, 3, 9, 10])
    k = 10
    assert hr_at_k(ranks, k).tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]
    expected_ndcg = [1 / math.log2(0 + 2), 1 / math.log2(1 + 2), 1 / math.log2(3 + 2), 1 / math.log2(9 + 2), 0.0]
    assert ndcg_at_k(ranks, k).tolist() == pytest.approx(expected_ndcg, abs=1e-15)
    assert mrr_at_k(ranks, k).tolist() == pytest.approx([1 / 1, 1 / 2, 1 / 4, 1 / 10, 0.0], abs=1e-15)


def test_metric_sums_on_a_hand_built_batch_with_a_tie():
    # Three users, four candidates each; targets: col 0, col 2, col 1.
    scores = torch.tensor(
        [
            [0.9, 0.2, 0.3, 0.1],  # rank 0
            [0.5, 0.6, 0.5, 0.8],  # target 0.5 ties with col 0, below cols 1 and 3 -> rank 3
            [0.7, 0.4, 0.9, 0.1],  # rank 2
        ]
    )
    ranks = target_ranks(scores, torch.tensor([0, 2, 1]))
    assert ranks.tolist() == [0, 3, 2]
    sums = metric_sums(ranks, [1, 3])
    assert sums["hr@1"] == 1.0
    assert sums["hr@3"] == 1.0 + 0 + 1.0
    assert sums["ndcg@3"] == pytest.approx(1 / math.log2(0 + 2) + 0 + 1 / math.log2(2 + 2))
    assert sums["mrr@3"] == pytest.approx(1 / 1 + 0 + 1 / 3)
    assert sums["ndcg@1"] == pytest.approx(1.0)
    expected_mean_ndcg = (1 / math.log2(0 + 2) + 0 + 1 / math.log2(2 + 2)) / 3
    assert sums["ndcg@3"] / 3 == pytest.approx(expected_mean_ndcg)
    assert set(sums) == {"hr@1", "hr@3", "ndcg@1", "ndcg@3", "mrr@1", "mrr@3"}


def test_k_larger_than_the_candidate_count_counts_every_target():
    scores = torch.tensor([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    ranks = target_ranks(scores, torch.tensor([0, 0]))  # ranks 2 and 0 among 3 candidates
    sums = metric_sums(ranks, [50])
    assert sums["hr@50"] == 2.0
    assert sums["ndcg@50"] == pytest.approx(1 / math.log2(2 + 2) + 1 / math.log2(0 + 2))
    assert sums["mrr@50"] == pytest.approx(1 / 3 + 1 / 1)


def test_histogram_gives_the_same_sums_as_per_row_metrics():
    ranks = torch.tensor([0, 0, 1, 4, 7, 19, 20, 300, 2])
    ks = [1, 5, 10, 20]
    hist = rank_histogram(ranks, max(ks))
    assert hist[:5].tolist() == [2, 1, 1, 0, 1]
    assert hist.sum() == 7  # ranks 20 and 300 are beyond every K
    direct, via_hist = metric_sums(ranks, ks), metric_sums_from_histogram(hist, ks)
    assert direct.keys() == via_hist.keys()
    for key in direct:
        assert via_hist[key] == pytest.approx(direct[key], rel=1e-15)


def test_full_ranking_drops_padding_and_maps_column_j_to_item_j_plus_1():
    # 4 items; scores[:, j] is item j + 1.
    scores = torch.tensor([[0.4, 0.9, 0.1, 0.6], [0.4, 0.9, 0.1, 0.6]])
    targets = torch.tensor([4, 3])  # item 4 -> col 3 (0.6): only 0.9 above -> rank 1; item 3 -> col 2: rank 3
    assert full_ranks(scores, targets).tolist() == [1, 3]


def test_full_ranking_history_exclusion_masks_history_but_not_the_target():
    scores = torch.tensor([[0.4, 0.9, 0.1, 0.6], [0.4, 0.9, 0.1, 0.6]])
    targets = torch.tensor([4, 3])
    # Row 0 history {2}: item 2 (0.9) removed -> rank 0. Row 1 history {1, 3}: the target (3) is
    # kept, item 1 (0.4) removed -> only 0.9 and 0.6 above -> rank 2.
    exclude = (torch.tensor([0, 1, 1]), torch.tensor([2, 1, 3]))
    assert full_ranks(scores, targets, exclude).tolist() == [0, 2]


def test_sampled_ranking_uses_only_target_and_negatives():
    scores = torch.tensor([[0.4, 0.9, 0.1, 0.6, 0.5], [0.3, 0.2, 0.8, 0.8, 0.0]])
    targets = torch.tensor([4, 3])  # scores 0.6 and 0.8
    negatives = torch.tensor([[1, 3], [4, 5]])  # row 0: 0.4, 0.1 -> rank 0; row 1: 0.8 (tie), 0.0 -> rank 1
    ranks = sampled_ranks(scores, targets, negatives)
    assert ranks.tolist() == [0, 1]
    sums = metric_sums(ranks, [1, 5])
    assert sums["hr@1"] == 1.0
    assert sums["ndcg@5"] == pytest.approx(1 / math.log2(0 + 2) + 1 / math.log2(1 + 2))
    assert sums["mrr@5"] == pytest.approx(1 / 1 + 1 / 2)
    # Full ranking of the same rows is worse: item 2 (0.9) beats row 0's target.
    assert full_ranks(scores, targets).tolist() == [1, 1]


# ------------------------------------------------------------------------------------------
# Negative sampling
# ------------------------------------------------------------------------------------------


def _ragged(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    items = np.array([i for r in rows for i in r], dtype=np.int64)
    return offsets, items


def _random_histories(n_users: int, n_items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return _ragged([list(rng.integers(1, n_items + 1, size=rng.integers(1, 40))) for _ in range(n_users)])


@pytest.mark.parametrize("mode", ["popularity", "uniform"])
def test_negatives_are_distinct_never_own_items_and_seeded(mode):
    n_items, n = 300, 50
    offsets, items = _random_histories(200, n_items, seed=1)
    counts = np.bincount(items, minlength=n_items + 1)
    counts[1:] += 1  # every item has a positive weight
    neg = sample_negatives(n_items, counts, (offsets, items), n, mode, seed=7)
    assert neg.shape == (200, n) and neg.dtype == np.int64
    assert neg.min() >= 1 and neg.max() <= n_items
    for u in range(200):
        row = neg[u]
        assert len(set(row.tolist())) == n
        assert not set(row.tolist()) & set(items[offsets[u] : offsets[u + 1]].tolist())
    again = sample_negatives(n_items, counts, (offsets, items), n, mode, seed=7)
    other = sample_negatives(n_items, counts, (offsets, items), n, mode, seed=8)
    assert np.array_equal(neg, again)
    assert not np.array_equal(neg, other)


def test_popularity_sampling_frequencies_follow_counts():
    # One draw per user, from users with empty histories: frequencies estimate p_i = c_i / sum c.
    n_items, n_users = 5, 200_000
    counts = np.array([0, 1, 2, 3, 4, 10])
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    neg = sample_negatives(n_items, counts, (offsets, np.zeros(0, dtype=np.int64)), 1, "popularity", seed=3)
    freq = np.bincount(neg[:, 0], minlength=n_items + 1) / n_users
    expected = counts / counts.sum()
    assert np.abs(freq - expected).max() < 0.005  # std of each frequency <= 0.0012


def test_popularity_never_draws_zero_count_items_and_uniform_is_flat():
    n_items, n_users = 6, 60_000
    counts = np.array([0, 5, 0, 5, 5, 0, 5])
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    empty = (offsets, np.zeros(0, dtype=np.int64))
    pop = sample_negatives(n_items, counts, empty, 2, "popularity", seed=0)
    assert set(np.unique(pop).tolist()) == {1, 3, 4, 6}
    uni = sample_negatives(n_items, None, empty, 1, "uniform", seed=0)
    freq = np.bincount(uni[:, 0], minlength=n_items + 1)[1:] / n_users
    assert np.abs(freq - 1 / 6).max() < 0.01  # std 0.0015


def test_without_replacement_second_draw_follows_successive_sampling():
    # Items with weights 1, 1, 8: P(first = 3) = 8/10; the second is then item 1 or 2 with 1/2 each,
    # while P(second = 3) = P(first = 1) * 8/9 + P(first = 2) * 8/9 = 2 * (1/10) * (8/9).
    n_users = 100_000
    counts = np.array([0, 1, 1, 8])
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    neg = sample_negatives(3, counts, (offsets, np.zeros(0, dtype=np.int64)), 2, "popularity", seed=5)
    assert (neg[:, 0] != neg[:, 1]).all()
    assert np.mean(neg[:, 0] == 3) == pytest.approx(8 / 10, abs=0.006)
    assert np.mean(neg[:, 1] == 3) == pytest.approx(2 * (1 / 10) * (8 / 9), abs=0.006)


def test_user_owning_almost_all_weight_gets_the_remaining_items():
    # User 0 owns the only popular item, leaving 0.1% of the weight spread over 3 items.
    counts = np.array([0, 9997, 1, 1, 1])
    offsets, items = _ragged([[1], [2]])
    neg = sample_negatives(4, counts, (offsets, items), 3, "popularity", seed=0)
    assert sorted(neg[0].tolist()) == [2, 3, 4]
    assert sorted(neg[1].tolist()) == [1, 3, 4]


def test_too_few_items_left_is_a_user_error_naming_num_negatives():
    offsets, items = _ragged([[1, 2], [1, 2, 3]])
    with pytest.raises(UserError, match="num_negatives"):
        sample_negatives(5, None, (offsets, items), 3, "uniform", seed=0)  # user 1 has only 2 left
    counts = np.array([0, 1, 1, 1, 0, 0])  # items 4 and 5 have zero popularity
    with pytest.raises(UserError, match="num_negatives"):
        sample_negatives(5, counts, (offsets, items), 1, "popularity", seed=0)
    with pytest.raises(UserError, match=r"--set num_negatives=N"):  # the check alone, as tune runs it
        sample_negatives(5, None, (offsets, items), 3, "uniform", check_only=True)
    assert sample_negatives(5, None, (offsets, items), 2, "uniform", check_only=True).shape == (2, 0)


def test_zero_negatives_and_bad_arguments():
    offsets, items = _ragged([[1]])
    assert sample_negatives(5, None, (offsets, items), 0, "uniform").shape == (1, 0)
    with pytest.raises(ValueError, match="mode"):
        sample_negatives(5, None, (offsets, items), 1, "zipf")
    with pytest.raises(ValueError, match="counts"):
        sample_negatives(5, None, (offsets, items), 1, "popularity")
    with pytest.raises(ValueError, match="1..5"):
        sample_negatives(5, None, _ragged([[6]]), 1, "uniform")
    with pytest.raises(ValueError, match="offsets"):
        sample_negatives(5, None, (np.zeros(0, dtype=np.int64), items), 1, "uniform")
