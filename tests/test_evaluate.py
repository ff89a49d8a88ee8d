"""glintru.engine.evaluate with small fake models whose scores can be computed by hand."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from glintru.config import TrainConfig
from glintru.data.dataset import PreparedDataset
from glintru.engine.evaluate import evaluate, metric_keys, negatives_for, sampled_key
from glintru.errors import UserError
from glintru.models import SequentialRecommender

torch.set_num_threads(1)


def make_dataset(sequences: list[list[int]], n_items: int) -> PreparedDataset:
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sequences])]).astype(np.int64)
    items = np.array([i for s in sequences for i in s], dtype=np.int32)
    return PreparedDataset(
        path=Path("in-memory"),
        manifest={"counts": {"n_items": n_items}},
        user_ids=np.array([str(u) for u in range(len(sequences))], dtype=object),
        offsets=offsets,
        items=items,
    )


class LookupModel(SequentialRecommender):
    """Scores depend only on the last input item: score(item j | last item l) = table[l, j]."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table.clone(), requires_grad=False)  # [n_items + 1, n_items + 1]

    def last_hidden(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        last = items.gather(1, (lengths - 1).view(-1, 1)).squeeze(1)  # [B]
        return self.table[last]  # [B, n_items + 1]

    def item_embeddings(self) -> torch.Tensor:
        return torch.eye(self.table.size(0))  # hidden @ eye[1:].T = hidden[:, 1:]


class IntegerBagModel(SequentialRecommender):
    """h = Linear(sum of the real items' embeddings) + pad_weight * (#padding positions).

    All weights are small integers, so every score is an exact integer in fp32 and in bf16,
    whatever the batch composition or summation order. ``pad_weight != 0`` makes the output depend on
    the padded width, like official-mode GLINT-RU (set ``needs_full_window`` accordingly).
    """

    def __init__(self, n_items: int, d: int = 6, pad_weight: float = 0.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Embedding(n_items + 1, d)
        self.proj = nn.Linear(d, d, bias=False)
        with torch.no_grad():
            self.emb.weight.copy_(torch.randint(-3, 4, (n_items + 1, d), generator=g).float())
            self.proj.weight.copy_(torch.randint(-2, 3, (d, d), generator=g).float())
        self.pad_weight = pad_weight
        self.widths: list[int] = []
        self.hidden_dtypes: list[torch.dtype] = []

    def last_hidden(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        B, N = items.shape
        self.widths.append(N)
        real = (torch.arange(N) < lengths.view(-1, 1)).float()  # [B, N]
        bag = (self.emb(items) * real.unsqueeze(-1)).sum(1)  # [B, d]
        z = self.proj(bag)  # [B, d]; bf16 under autocast
        self.hidden_dtypes.append(z.dtype)
        return z + self.pad_weight * (N - lengths).float().view(-1, 1)

    def item_embeddings(self) -> torch.Tensor:
        return self.emb.weight


# Four users over 6 items; user 2 (two items) is too short to be evaluated.
SEQUENCES = [[1, 2, 3, 4, 5], [2, 6, 1], [3, 4], [6, 5, 4, 3]]


def lookup_table() -> torch.Tensor:
    table = torch.arange(7).float().repeat(7, 1) / 10  # default: score(j) = j / 10
    table[5] = torch.tensor([0.0, 0.9, 0.1, 0.1, 0.4, 0.0, 0.4])  # after item 5: item 6 ties item 4
    return table


def test_full_ranking_metrics_on_a_hand_made_dataset():
    data = make_dataset(SEQUENCES, n_items=6)
    cfg = TrainConfig(topk=(1, 3), num_negatives=0, eval_batch_size=2)
    out = evaluate(LookupModel(lookup_table()), data, "valid", cfg, negatives=None)
    # Validation examples (input -> target): u0 [1,2,3] -> 4 (last 3: items 5, 6 score higher: rank 2);
    # u1 [2] -> 6 (rank 0); u3 [6,5] -> 4 (last 5: item 1 = 0.9 above, item 6 = 0.4 ties: rank 2).
    assert out["valid/full/hr@1"] == pytest.approx((0 + 1 + 0) / 3)
    assert out["valid/full/hr@3"] == pytest.approx((1 + 1 + 1) / 3)
    expected_ndcg = (1 / math.log2(2 + 2) + 1 / math.log2(0 + 2) + 1 / math.log2(2 + 2)) / 3
    assert out["valid/full/ndcg@3"] == pytest.approx(expected_ndcg)
    assert out["valid/full/mrr@3"] == pytest.approx((1 / 3 + 1 / 1 + 1 / 3) / 3)
    assert out["valid/n_users"] == 3
    assert list(out) == metric_keys("valid", cfg)

    test = evaluate(LookupModel(lookup_table()), data, "test", cfg, negatives=None)
    # Test: u0 [1,2,3,4] -> 5 (last 4: item 6 above: rank 1); u1 [2,6] -> 1 (last 6: 5 items above: rank 5);
    # u3 [6,5,4] -> 3 (last 4: items 4, 5, 6 above: rank 3).
    assert test["test/full/hr@3"] == pytest.approx((1 + 0 + 0) / 3)
    assert test["test/full/ndcg@3"] == pytest.approx((1 / math.log2(1 + 2) + 0 + 0) / 3)
    assert test["test/full/mrr@1"] == 0.0


def test_history_exclusion_removes_items_already_seen():
    data = make_dataset(SEQUENCES, n_items=6)
    cfg = TrainConfig(topk=(1, 3), num_negatives=0, exclude_history=True)
    out = evaluate(LookupModel(lookup_table()), data, "valid", cfg, negatives=None)
    # u3's history {6, 5} removes the tying item 6: ranks become [2, 0, 1].
    assert out["valid/full/mrr@3"] == pytest.approx((1 / 3 + 1 / 1 + 1 / 2) / 3)
    assert out["valid/full/hr@1"] == pytest.approx(1 / 3)


def test_sampled_metrics_use_the_given_negatives():
    data = make_dataset(SEQUENCES, n_items=6)
    cfg = TrainConfig(topk=(1, 3), num_negatives=2, negative_sampling="popularity")
    negatives = np.array([[1, 6], [3, 4], [3, 1]])  # rows follow data.eval_users() = [0, 1, 3]
    out = evaluate(LookupModel(lookup_table()), data, "valid", cfg, negatives=negatives)
    # u0 target 0.4 vs 0.1, 0.6 -> rank 1; u1 0.6 vs 0.3, 0.4 -> rank 0; u3 0.4 vs 0.1, 0.9 -> rank 1.
    assert sampled_key(cfg) == "pop2"
    assert out["valid/pop2/hr@1"] == pytest.approx((0 + 1 + 0) / 3)
    assert out["valid/pop2/ndcg@3"] == pytest.approx((1 / math.log2(1 + 2) + 1 + 1 / math.log2(1 + 2)) / 3)
    assert out["valid/pop2/mrr@3"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert out["valid/full/hr@1"] == pytest.approx(1 / 3)  # full ranking is reported alongside
    with pytest.raises(ValueError, match="negatives"):
        evaluate(LookupModel(lookup_table()), data, "valid", cfg, negatives=negatives[:2])


def test_sampled_key_names_the_protocol():
    assert sampled_key(TrainConfig()) == "pop100"
    assert sampled_key(TrainConfig(num_negatives=50, negative_sampling="uniform")) == "uni50"
    assert sampled_key(TrainConfig(num_negatives=0)) is None
    assert "valid/pop100/ndcg@10" in metric_keys("valid", TrainConfig())


def random_dataset(n_users: int = 37, n_items: int = 25, seed: int = 0) -> PreparedDataset:
    rng = np.random.default_rng(seed)
    catalogue = np.arange(1, n_items + 1)
    seqs = [list(rng.choice(catalogue, size=rng.integers(2, 15), replace=False)) for _ in range(n_users)]
    return make_dataset(seqs, n_items)


def reference_evaluate(
    model: SequentialRecommender, data: PreparedDataset, split: str, cfg: TrainConfig, pad_to: int | None
) -> dict[str, float]:
    """One user at a time with plain Python: the definition the batched code must match."""
    users, end, targets = data.eval_examples(split)
    totals = {f"{m}@{k}": 0.0 for m in ("hr", "ndcg", "mrr") for k in cfg.topk}
    for u, e, t in zip(users, end, targets):
        window = data.items[data.offsets[u] : e][-cfg.max_len :].tolist()
        x = torch.tensor([window + [0] * ((pad_to or len(window)) - len(window))])
        with torch.no_grad():
            scores = (model.last_hidden(x, torch.tensor([len(window)])) @ model.item_embeddings()[1:].T)[0]
        r = int((scores >= scores[t - 1]).sum()) - 1
        for k in cfg.topk:
            totals[f"hr@{k}"] += float(r < k)
            totals[f"ndcg@{k}"] += 1 / math.log2(r + 2) if r < k else 0.0
            totals[f"mrr@{k}"] += 1 / (r + 1) if r < k else 0.0
    return {f"{split}/full/{key}": v / len(users) for key, v in totals.items()}


@pytest.mark.parametrize("split", ["valid", "test"])
def test_batched_evaluation_matches_one_user_at_a_time_with_truncated_window(split):
    data = random_dataset()
    cfg = TrainConfig(topk=(1, 5, 10), num_negatives=0, max_len=7, eval_batch_size=5)
    users, end, _ = data.eval_examples(split)
    assert (end - data.offsets[users]).max() > cfg.max_len  # some inputs are truncated
    model = IntegerBagModel(data.n_items)
    out = evaluate(model, data, split, cfg, negatives=None)
    widths = list(model.widths)
    expected = reference_evaluate(model, data, split, cfg, pad_to=None)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, rel=1e-12), key
    assert 0 < out[f"{split}/full/hr@10"] < 1  # a non-degenerate case
    # Batches are sorted by input length: widths never decrease and short batches are not padded to max_len.
    assert widths == sorted(widths) and min(widths) < cfg.max_len


def test_ranks_out_gives_each_users_own_rank_in_any_batch_order(monkeypatch):
    from glintru.engine import scoring

    data = random_dataset()
    cfg = TrainConfig(topk=(1, 5, 10), num_negatives=0, max_len=7, eval_batch_size=4)
    model = IntegerBagModel(data.n_items)
    monkeypatch.setattr(scoring, "SCORE_BUDGET", 3 * data.n_items)  # several blocks per batch
    got: list = []
    out = evaluate(model, data, "test", cfg, negatives=None, ranks_out=got)
    rows = np.concatenate([r for r, _ in got])
    ranks = torch.cat([k for _, k in got])
    users, end, targets = data.eval_examples("test")
    assert sorted(rows.tolist()) == list(range(len(users)))  # every user once
    for row, r in zip(rows.tolist(), ranks.tolist()):  # the rank computed for that very user, one at a time
        window = data.items[data.offsets[users[row]] : end[row]][-cfg.max_len :].tolist()
        with torch.no_grad():
            scores = (model.last_hidden(torch.tensor([window]), torch.tensor([len(window)]))
                      @ model.item_embeddings()[1:].T)[0]
        assert r == int((scores >= scores[targets[row] - 1]).sum()) - 1
    assert out["test/full/hr@10"] == pytest.approx(float((ranks < 10).double().mean()), rel=1e-12)

@pytest.mark.parametrize("exclude_history", [False, True])
def test_bounded_score_blocks_do_not_change_results(monkeypatch, exclude_history):
    """A score budget of a few rows (what a 10^6-item catalogue gets) gives the same numbers."""
    from glintru.engine import scoring

    data = random_dataset()
    cfg = TrainConfig(topk=(1, 5, 10), num_negatives=3, max_len=6, exclude_history=exclude_history)
    negatives = negatives_for(data, "test", cfg)
    model = IntegerBagModel(data.n_items)
    whole = evaluate(model, data, "test", cfg, negatives=negatives)
    monkeypatch.setattr(scoring, "SCORE_BUDGET", 3 * data.n_items)
    assert scoring.rows_per_block(data.n_items) == 3  # 3 rows per block
    assert evaluate(model, data, "test", cfg, negatives=negatives) == whole


def test_batch_size_does_not_change_results():
    data = random_dataset()
    cfg = TrainConfig(topk=(1, 5, 10), num_negatives=3, max_len=6)
    negatives = negatives_for(data, "test", cfg)
    model = IntegerBagModel(data.n_items)
    results = [
        evaluate(model, data, "test", dataclasses.replace(cfg, eval_batch_size=bs), negatives=negatives)
        for bs in (1, 4, 1000)
    ]
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize("world_size", [2, 3])
def test_sharded_evaluation_equals_single_process_exactly(world_size):
    data = random_dataset(n_users=41)
    cfg = TrainConfig(topk=(1, 5, 10), num_negatives=4, max_len=5, eval_batch_size=3)
    negatives = negatives_for(data, "valid", cfg)
    model = IntegerBagModel(data.n_items)
    single = evaluate(model, data, "valid", cfg, negatives=negatives)

    # Simulated all-reduce: a first pass collects each rank's local tensor, a second returns the sum.
    local: list[torch.Tensor] = []
    for r in range(world_size):
        evaluate(model, data, "valid", cfg, negatives=negatives, rank=r, world_size=world_size,
                 all_reduce_sum=lambda t: local.append(t.clone()) or t)
    total = torch.stack(local).sum(0)
    sharded = [
        evaluate(model, data, "valid", cfg, negatives=negatives, rank=r, world_size=world_size,
                 all_reduce_sum=lambda t: total.clone())
        for r in range(world_size)
    ]
    assert all(s == single for s in sharded)
    assert single["valid/n_users"] == len(data.eval_users())
    assert sum(int(t[-1]) for t in local) == len(data.eval_users())  # each user on exactly one shard


def test_full_window_models_get_every_batch_padded_to_max_len():
    data = random_dataset()
    cfg = TrainConfig(topk=(1, 5, 10), num_negatives=0, max_len=8, eval_batch_size=4)
    model = IntegerBagModel(data.n_items, pad_weight=1.0)
    model.needs_full_window = True
    out = evaluate(model, data, "valid", cfg, negatives=None)
    assert set(model.widths) == {cfg.max_len}
    expected = reference_evaluate(model, data, "valid", cfg, pad_to=cfg.max_len)
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, rel=1e-12), key
    # The same model without full windows sees less padding, and its scores change.
    model.needs_full_window = False
    assert evaluate(model, data, "valid", cfg, negatives=None) != out


def test_bf16_autocast_and_train_mode_is_restored():
    data = random_dataset()
    model = IntegerBagModel(data.n_items)
    model.train()
    fp32 = evaluate(model, data, "test", TrainConfig(topk=(5,), num_negatives=0), negatives=None)
    assert model.training
    model.hidden_dtypes.clear()
    bf16 = evaluate(model, data, "test", TrainConfig(topk=(5,), num_negatives=0, precision="bf16"), negatives=None)
    assert set(model.hidden_dtypes) == {torch.bfloat16}
    assert bf16 == fp32  # integer hidden states are exact in bf16; scores are computed in fp32


def test_negatives_exclude_what_the_user_has_seen_by_the_split_and_are_seeded():
    data = random_dataset(n_users=30, n_items=40)
    cfg = TrainConfig(num_negatives=10)
    users, end, _ = data.eval_examples("valid")
    valid = negatives_for(data, "valid", cfg)
    test = negatives_for(data, "test", cfg)
    assert valid.shape == test.shape == (len(users), 10)
    for i, (u, e) in enumerate(zip(users, end)):
        seen_by_valid = set(data.items[data.offsets[u] : e + 1].tolist())  # history + valid target
        assert not seen_by_valid & set(valid[i].tolist())
        assert not set(data.sequence(u).tolist()) & set(test[i].tolist())  # whole sequence
    assert np.array_equal(valid, negatives_for(data, "valid", cfg))
    assert not np.array_equal(valid, negatives_for(data, "valid", TrainConfig(num_negatives=10, seed=1)))
    assert negatives_for(data, "valid", TrainConfig(num_negatives=0)) is None
    with pytest.raises(UserError, match="num_negatives"):
        negatives_for(data, "test", TrainConfig(num_negatives=39))


def test_no_evaluable_user_is_a_user_error():
    data = make_dataset([[1, 2], [3]], n_items=3)
    with pytest.raises(UserError, match="nothing to evaluate"):
        evaluate(LookupModel(torch.zeros(4, 4)), data, "valid", TrainConfig(num_negatives=0), negatives=None)


def test_a_rank_outside_the_world_is_one_value_error_before_any_user():
    data = make_dataset(SEQUENCES, n_items=6)
    cfg = TrainConfig(topk=(1, 3), num_negatives=0, eval_batch_size=2)
    for rank in (-1, 2):
        with pytest.raises(ValueError, match=f"rank must be in \\[0, world_size\\), got rank={rank}, world_size=2"):
            evaluate(LookupModel(lookup_table()), data, "valid", cfg, negatives=None, rank=rank, world_size=2)
