"""glintru.engine: windowing, prefixes, sharding, length-aware batches, chunked loss, the loop,
checkpoints and resume, on tiny in-memory datasets with the real causal models."""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_fixtures import cyclic_sequences, make_dataset

from glintru.config import build_config
from glintru.engine import fit
from glintru.engine.batching import Samples, epoch_batches, make_batch, step_weights, training_samples
from glintru.engine.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from glintru.engine.loop import FitResult, epoch_seed
from glintru.engine.loss import SequenceLoss, full_softmax_ce
from glintru.errors import UserError
from glintru.models import build_model

torch.set_num_threads(1)

N_ITEMS = 20
TINY_MODEL = {
    "glintru": {"hidden_size": 8, "n_heads": 2},
    "gru4rec": {"hidden_size": 8, "embedding_size": 8},
    "sasrec": {"hidden_size": 8, "n_heads": 2, "inner_size": 16},
    "narm": {"hidden_size": 8, "embedding_size": 8},
}
TINY_TRAIN = {"max_len": 6, "batch_size": 4, "eval_batch_size": 4, "num_negatives": 0, "topk": [5, 10],
              "max_epochs": 2, "lr": 0.01}


def tiny_cfg(model: str = "gru4rec", **overrides):
    return build_config(model, {**TINY_MODEL.get(model, {}), **TINY_TRAIN, **overrides})


def dataset():
    return make_dataset(cyclic_sequences(8, N_ITEMS), N_ITEMS)


# ------------------------------------------------------------------ batching


def rows(batch: dict[str, torch.Tensor]) -> list[tuple[list[int], list[int] | int]]:
    out = []
    for x, n, y in zip(batch["items"].tolist(), batch["lengths"].tolist(), batch["targets"].tolist()):
        out.append((x[:n], y[:n] if isinstance(y, list) else y))
    return out


def test_all_positions_windows_hand_checked():
    # One user with 10 items: training sequence s = 1..8 (the last two are valid/test targets).
    data = make_dataset([list(range(1, 11))], n_items=10)
    samples = training_samples(data, "all_positions", max_len=3)
    batch = make_batch(data.items, samples, np.arange(len(samples)))
    # Cut from the end; consecutive inputs overlap by one item; targets 2..8 each exactly once.
    assert sorted(rows(batch)) == sorted([
        ([5, 6, 7], [6, 7, 8]),
        ([2, 3, 4], [3, 4, 5]),
        ([1], [2]),
    ])
    assert batch["items"].shape == (3, 3) and batch["items"][2].tolist() == [1, 0, 0]  # right padding
    assert batch["targets"][2].tolist() == [2, 0, 0]


def test_all_positions_every_training_item_but_the_first_is_a_target_once():
    seqs = cyclic_sequences(30, 50, min_len=1, max_len=40)
    data = make_dataset(seqs, 50)
    for max_len in (1, 4, 7, 200):
        samples = training_samples(data, "all_positions", max_len)
        assert samples.n.max() <= max_len and samples.n.min() >= 1
        # absolute positions of targets: start + 1 .. start + n
        pos = np.concatenate([np.arange(s + 1, s + n + 1) for s, n in zip(samples.start, samples.n)])
        t_len = data.train_lengths()
        expected = np.concatenate([np.arange(o + 1, o + t) for o, t in zip(data.offsets[:-1], t_len) if t >= 2])
        assert np.array_equal(np.sort(pos), expected)
        assert samples.n_targets() == sum(t - 1 for t in t_len if t >= 2)


def test_overlapping_windows_hand_checked():
    # s = 1..12 (14 items, the last two held out), L = 4, overlap 2: windows after the user's first
    # hold 2 targets and re-read the 2 items before them as context (target 0 = no loss there).
    data = make_dataset([list(range(1, 15))], n_items=14)
    samples = training_samples(data, "all_positions", max_len=4, overlap=2)
    batch = make_batch(data.items, samples, np.arange(len(samples)))
    assert sorted(rows(batch)) == sorted([
        ([8, 9, 10, 11], [0, 0, 11, 12]),
        ([6, 7, 8, 9], [0, 0, 9, 10]),
        ([4, 5, 6, 7], [0, 0, 7, 8]),
        ([2, 3, 4, 5], [0, 0, 5, 6]),
        ([1, 2, 3], [2, 3, 4]),  # the user's first window: every earlier item is in it
    ])
    assert samples.n_targets() == 11 == int((batch["targets"] > 0).sum())
    # A history that fits in one window gives one window whatever the overlap.
    short = make_dataset([[1, 2, 3, 4, 5, 6]], n_items=6)
    one = training_samples(short, "all_positions", max_len=4, overlap=3)
    assert rows(make_batch(short.items, one, np.arange(len(one)))) == [([1, 2, 3], [2, 3, 4])]


@pytest.mark.parametrize("max_len,overlap", [(1, 0), (4, 1), (7, 3), (7, 6), (200, 150)])
def test_overlapping_windows_keep_every_target_once_and_give_it_context(max_len, overlap):
    seqs = cyclic_sequences(30, 50, min_len=1, max_len=40)
    data = make_dataset(seqs, 50)
    samples = training_samples(data, "all_positions", max_len, overlap)
    assert samples.n.max() <= max_len and samples.n.min() >= 1
    batch = make_batch(data.items, samples, np.arange(len(samples)))
    y, n = batch["targets"].numpy(), batch["lengths"].numpy()
    tgt_pos, context = [], []  # each target's absolute position and the inputs before it in its window
    for i, (s, k) in enumerate(zip(samples.start, samples.skip if overlap else np.zeros_like(samples.n))):
        for p in range(k, n[i]):
            assert y[i, p] == data.items[s + p + 1]
            tgt_pos.append(s + p + 1)
            context.append(p + 1)
        assert (y[i, :k] == 0).all() and (y[i, n[i]:] == 0).all()
    t_len = data.train_lengths()
    expected = np.concatenate([np.arange(o + 1, o + t) for o, t in zip(data.offsets[:-1], t_len) if t >= 2])
    assert np.array_equal(np.sort(tgt_pos), expected)
    assert samples.n_targets() == len(expected)
    # A target at index i of its user's training sequence sees min(i, overlap + 1) items at least.
    first = np.repeat(data.offsets[:-1], np.diff(data.offsets))  # each item's user's first index
    assert all(c >= min(t - first[t], overlap + 1) for t, c in zip(tgt_pos, context))
    if overlap == 0:
        assert samples.skip is None


def test_window_overlap_config_errors():
    with pytest.raises(UserError, match="window_overlap.*must be in \\[0, max_len=6\\)"):
        tiny_cfg(window_overlap=6)
    with pytest.raises(UserError, match="window_overlap.*must be in"):
        tiny_cfg(window_overlap=-1)
    with pytest.raises(UserError, match="window_overlap.*only applies to objective=all_positions"):
        tiny_cfg(objective="last_position", window_overlap=2)
    assert tiny_cfg(window_overlap=5).train.window_overlap == 5


def test_last_position_one_sample_per_prefix_hand_checked():
    data = make_dataset([[1, 2, 3, 4, 5, 6, 7], [8, 9]], n_items=9)  # user 0 trains on 1..5; user 1 on 8, 9
    samples = training_samples(data, "last_position", max_len=2)
    batch = make_batch(data.items, samples, np.arange(len(samples)))
    assert sorted(rows(batch)) == sorted([([1], 2), ([1, 2], 3), ([2, 3], 4), ([3, 4], 5), ([8], 9)])
    assert samples.n_targets() == 5


def test_full_window_padding_width():
    data = make_dataset([[1, 2, 3, 4, 5]], n_items=5)
    samples = training_samples(data, "last_position", max_len=4)
    batch = make_batch(data.items, samples, np.arange(len(samples)), width=4)
    assert batch["items"].tolist() == [[1, 0, 0, 0], [1, 2, 0, 0]]
    assert batch["targets"].tolist() == [2, 3]


def test_sharding_is_disjoint_complete_and_in_step():
    data = make_dataset(cyclic_sequences(23, 40, max_len=30), 40)
    samples = training_samples(data, "last_position", max_len=5)
    world = 3
    shards = [epoch_batches(samples, 7, seed=1, epoch=2, rank=r, world_size=world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    assert all(len(b) >= 1 for s in shards for b in s)
    assert all(len(b) <= 7 // world + world for s in shards for b in s)  # merged tail batch at most
    flat = np.concatenate([b for s in shards for b in s])
    assert len(flat) == len(samples) and np.array_equal(np.sort(flat), np.arange(len(samples)))


def test_a_rank_outside_the_world_is_refused_before_any_batch():
    samples = training_samples(make_dataset(cyclic_sequences(5, 20), 20), "all_positions", max_len=5)
    for rank in (-1, 2):
        with pytest.raises(ValueError, match=f"rank must be in \\[0, world_size\\), got rank={rank}, world_size=2"):
            epoch_batches(samples, 4, seed=1, epoch=1, rank=rank, world_size=2)
        with pytest.raises(ValueError, match="rank must be in"):
            step_weights(samples, [np.arange(4)], "equal", rank=rank, world_size=2)


def test_batches_are_length_aware_and_seeded():
    data = make_dataset(cyclic_sequences(40, 60, min_len=3, max_len=60), 60)
    samples = training_samples(data, "all_positions", max_len=50)
    batches = epoch_batches(samples, 8, seed=5, epoch=1)
    spans = sorted((samples.n[b].min(), samples.n[b].max()) for b in batches)
    for (_, hi1), (lo2, _) in zip(spans, spans[1:]):
        assert hi1 <= lo2  # batches are consecutive buckets of the length order: no overlap
    again = epoch_batches(samples, 8, seed=5, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    other = epoch_batches(samples, 8, seed=5, epoch=2)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other))


def test_max_samples_draws_a_subset():
    samples = Samples("last_position", np.arange(50, dtype=np.int64), np.ones(50, dtype=np.int64))
    batches = epoch_batches(samples, 4, seed=0, epoch=1, max_samples=10)
    flat = np.concatenate(batches)
    assert len(flat) == 10 and len(set(flat.tolist())) == 10


# ------------------------------------------------------------------ loss


def test_chunked_loss_equals_unchunked_loss_and_gradients():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(37, 6, generator=g, requires_grad=True)
    emb = torch.randn(12, 6, generator=g, requires_grad=True)
    targets = torch.randint(1, 12, (37,), generator=g)
    ref = torch.nn.functional.cross_entropy(h @ emb[1:].T, targets - 1)
    ref_grads = torch.autograd.grad(ref, (h, emb))
    for method, chunk in itertools.product(("fused", "checkpoint"), (1, 5, 37, 100)):
        loss = full_softmax_ce(h, emb, targets, chunk, method=method)
        grads = torch.autograd.grad(loss, (h, emb))
        torch.testing.assert_close(loss, ref)
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b)
    assert ref_grads[1][0].abs().sum() == 0  # padding row is never a class


def test_fused_loss_gradients_pass_gradcheck():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    emb = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, 7, (9,), generator=g)
    assert torch.autograd.gradcheck(lambda a, b: full_softmax_ce(a, b, targets, 4), (h, emb))


@pytest.mark.parametrize("name", ["glintru", "gru4rec", "sasrec", "narm"])
def test_all_position_loss_equals_mean_of_prefix_losses_for_causal_models(name):
    data = make_dataset(cyclic_sequences(5, N_ITEMS, min_len=4, max_len=11), N_ITEMS)
    cfg = tiny_cfg(name, max_len=20)
    torch.manual_seed(0)
    model = build_model(cfg, N_ITEMS).eval()
    loss = SequenceLoss(model, chunk=7)
    allpos = training_samples(data, "all_positions", 20)
    prefix = training_samples(data, "last_position", 20)
    l_all = loss(make_batch(data.items, allpos, np.arange(len(allpos))))
    l_pre = loss(make_batch(data.items, prefix, np.arange(len(prefix))))
    assert len(prefix) == allpos.n_targets() > len(allpos)
    torch.testing.assert_close(l_all, l_pre, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss_name", ["ce", "gbce"])
def test_narm_reads_only_target_queries_with_the_same_loss_and_gradients(monkeypatch, loss_name):
    """The loss passes NARM its targets' positions (``takes_queries``): overlapping windows' context-only
    positions skip the local encoder, and the loss and every gradient stay those of the full forward."""
    from glintru.engine.loss import make_sequence_loss
    from glintru.models.narm import NARM

    monkeypatch.setattr(NARM, "TILE_ELEMENTS", 1)  # a tile per row and query: context-only ones are skipped
    data = make_dataset(cyclic_sequences(6, N_ITEMS, min_len=9, max_len=15), N_ITEMS)
    cfg = tiny_cfg("narm", objective="all_positions", max_len=6, window_overlap=4, loss=loss_name,
                   num_negatives_train=5)
    samples = training_samples(data, "all_positions", 6, overlap=4)
    batch = make_batch(data.items, samples, np.arange(len(samples)))
    assert ((batch["items"] > 0) & (batch["targets"] == 0)).any()  # context-only positions exist
    results = []
    for reads_targets in (True, False):
        monkeypatch.setattr(NARM, "takes_queries", reads_targets)
        torch.manual_seed(0)
        model = build_model(cfg, N_ITEMS).train()
        loss_mod = make_sequence_loss(model, cfg.train, N_ITEMS, np.ones(N_ITEMS + 1))
        calls: list = []

        def spy(items, queries=None, f=model.forward, seen=calls):
            out = f(items, queries)
            seen.append((queries, out.detach()))
            return out

        monkeypatch.setattr(model, "forward", spy)
        torch.manual_seed(1)  # the same dropout draws and negatives
        loss = loss_mod(batch)
        loss.backward()
        assert (calls[0][0] is not None) == reads_targets
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, calls[0][1]))
    (l_q, g_q, out_q), (l_all, g_all, out_all) = results
    context = (batch["items"] > 0) & (batch["targets"] == 0)
    assert not torch.allclose(out_q[context], out_all[context])  # their tiles were skipped
    torch.testing.assert_close(l_q, l_all, rtol=1e-6, atol=1e-7)
    for n in g_all:
        torch.testing.assert_close(g_q[n], g_all[n], rtol=1e-5, atol=1e-7, msg=n)


@pytest.mark.parametrize("name", ["glintru", "gru4rec", "sasrec"])
def test_one_batch_overfit_drives_loss_down(name):
    data = dataset()
    cfg = tiny_cfg(name)
    torch.manual_seed(0)
    model = build_model(cfg, N_ITEMS)
    loss_mod = SequenceLoss(model, chunk=16)
    samples = training_samples(data, "all_positions", 6)
    batch = make_batch(data.items, samples, np.arange(8))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(60):
        loss = loss_mod(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


# ------------------------------------------------------------------ fit, checkpoints, resume


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_same_run(a: FitResult, b: FitResult, dir_a: Path, dir_b: Path) -> None:
    strip = lambda h: [{k: v for k, v in e.items() if k not in ("train/targets_per_s", "train/s")} for e in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert a.test_metrics == b.test_metrics and a.best_epoch == b.best_epoch
    wa, wb = weights(dir_a / "best.pt"), weights(dir_b / "best.pt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_fit_outputs_and_seeded_runs_are_identical(tmp_path):
    data = dataset()
    cfg = tiny_cfg("glintru")
    seen = []
    r1 = fit(cfg, data, tmp_path / "a", progress=False, on_epoch_end=lambda m, d: seen.append((m["epoch"], d)))
    r2 = fit(cfg, data, tmp_path / "b", progress=False)
    assert_same_run(r1, r2, tmp_path / "a", tmp_path / "b")
    assert [e for e, _ in seen] == [1.0, 2.0]
    assert seen[-1][1] == tmp_path / "a" / "checkpoints" / "epoch_0002"
    assert (seen[-1][1] / "checkpoint.pt").is_file() and json.loads((seen[-1][1] / "config.json").read_text())["model"] == "glintru"
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert {"valid/full/ndcg@10", "test/full/ndcg@10", "best_epoch", "wall_s"} <= set(metrics)
    assert len(json.loads((tmp_path / "a" / "history.json").read_text())) == 2
    assert r1.history[0]["train/loss"] > r1.history[1]["train/loss"]
    assert r1.best_metrics[cfg.train.valid_metric] == max(h[cfg.train.valid_metric] for h in r1.history)
    state = torch.load(seen[-1][1] / "checkpoint.pt", weights_only=True)  # only safe types inside
    assert state["epoch"] == 2 and state["config"] == cfg.to_flat() and "optimizer" in state


def test_fit_trains_on_overlapping_windows(tmp_path):
    data = make_dataset(cyclic_sequences(8, N_ITEMS, min_len=10, max_len=20), N_ITEMS)  # all longer than max_len 6
    plain = fit(tiny_cfg("gru4rec", max_epochs=3), data, tmp_path / "plain", progress=False)
    over = fit(tiny_cfg("gru4rec", max_epochs=3, window_overlap=4), data, tmp_path / "over", progress=False)
    assert over.history[0]["train/loss"] > over.history[-1]["train/loss"]
    assert [h["train/loss"] for h in over.history] != [h["train/loss"] for h in plain.history]
    # Histories that fit in one window give the same windows, so the same run, whatever the overlap.
    short = dataset()
    assert max(np.diff(short.offsets)) - 2 <= 16
    a = fit(tiny_cfg("gru4rec", max_len=16), short, tmp_path / "a", progress=False)
    b = fit(tiny_cfg("gru4rec", max_len=16, window_overlap=9), short, tmp_path / "b", progress=False)
    assert_same_run(a, b, tmp_path / "a", tmp_path / "b")


def test_step_weights_hand_checked():
    # Three users, training sequences of 4, 2 and 3 items: windows of 3, 1 and 2 targets.
    data = make_dataset([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4], [1, 2, 3, 4, 5]], n_items=6)
    samples = training_samples(data, "all_positions", max_len=8)
    assert samples.n.tolist() == [3, 1, 2]
    batches = [np.array([0]), np.array([1, 2]), np.array([1])]  # 3, 3 and 1 targets: mean 7/3
    assert np.allclose(step_weights(samples, batches, "equal"), [9 / 7, 9 / 7, 3 / 7])
    assert step_weights(samples, batches, "batch") is None
    prefixes = training_samples(data, "last_position", max_len=8)  # one target per sample
    assert np.allclose(step_weights(prefixes, [np.arange(4), np.arange(4, 6)], "equal"), [4 / 3, 2 / 3])
    # Two ranks: global batches [1, 2] and [0, 2] (3 and 5 targets, mean 4); rank 0 takes samples 1 and 0
    # (1 and 3 targets), rank 1 takes 2 and 2 (2 and 2). Each weight is 2 n_rk / N_k or 2 n_rk / mean(N).
    two = [np.array([1, 2]), np.array([0, 2])]
    assert np.allclose(step_weights(samples, two, "batch", rank=0, world_size=2), [2 / 3, 6 / 5])
    assert np.allclose(step_weights(samples, two, "batch", rank=1, world_size=2), [4 / 3, 4 / 5])
    assert np.allclose(step_weights(samples, two, "equal", rank=0, world_size=2), [1 / 2, 3 / 2])
    assert np.allclose(step_weights(samples, two, "equal", rank=1, world_size=2), [1, 1])
    with pytest.raises(ValueError, match="target_weight must be one of"):
        step_weights(samples, batches, "users")


def test_target_weight_config_error():
    with pytest.raises(UserError, match="field 'target_weight': must be one of batch, equal, got 'user'"):
        tiny_cfg(target_weight="user")


def _first_grads(monkeypatch, cfg, data, out):
    """Fit ``cfg`` and return a copy of every step's item-embedding gradient, and the result."""
    from glintru.engine import loop

    grads, real = [], loop.make_optimizer

    def recording(model, *args, **kwargs):
        opt = real(model, *args, **kwargs)
        step = opt.step
        emb = next(p for n, p in model.named_parameters() if "item" in n and p.dim() == 2)

        def stepped():
            grads.append(emb.grad.detach().clone())
            step()
        opt.step = stepped
        return opt

    monkeypatch.setattr(loop, "make_optimizer", recording)
    result = fit(cfg, data, out, progress=False)
    return grads, result


def test_target_weight_equal_scales_each_step_by_its_targets(monkeypatch, tmp_path):
    # Histories of 3..9 training items in windows of 6: batches of 4 windows hold different numbers
    # of targets. Step k of "equal" is step k of "batch" times n_k / mean(n); the first step starts
    # from the same weights, so its gradient is exactly that multiple.
    data = make_dataset(cyclic_sequences(12, N_ITEMS, min_len=5, max_len=11), N_ITEMS)
    base, _ = _first_grads(monkeypatch, tiny_cfg("gru4rec", max_epochs=1, target_weight="batch"), data, tmp_path / "b")
    equal, res = _first_grads(monkeypatch, tiny_cfg("gru4rec", max_epochs=1), data, tmp_path / "e")  # the default
    samples = training_samples(data, "all_positions", 6)
    batches = epoch_batches(samples, 4, seed=tiny_cfg().train.seed, epoch=1)
    w = step_weights(samples, batches, "equal")
    assert len(equal) == len(batches) and not np.allclose(w, 1.0)
    torch.testing.assert_close(equal[0], base[0] * float(w[0]))
    assert math.isfinite(res.history[0]["train/loss"])


def test_target_weight_is_a_no_op_on_equal_prefix_batches(tmp_path):
    data = dataset()
    n = len(training_samples(data, "last_position", 6))
    bs = next(b for b in range(4, n) if n % b == 0)  # every batch the same size
    a = fit(tiny_cfg("gru4rec", objective="last_position", batch_size=bs, target_weight="batch"), data,
            tmp_path / "a", progress=False)
    b = fit(tiny_cfg("gru4rec", objective="last_position", batch_size=bs), data, tmp_path / "b", progress=False)
    assert_same_run(a, b, tmp_path / "a", tmp_path / "b")


def test_a_checkpoint_from_before_target_weight_resumes_only_as_batch(tmp_path):
    # Checkpoints written before the key existed trained with per-batch means: resuming one under the
    # new default would change the weighting mid-run, so the error names the key; "batch" resumes it.
    data = dataset()
    fit(tiny_cfg("gru4rec", max_epochs=1, target_weight="batch"), data, tmp_path / "old", progress=False)
    f = tmp_path / "old" / "checkpoints" / "epoch_0001" / "checkpoint.pt"
    state = torch.load(f, weights_only=True)
    del state["config"]["target_weight"]
    torch.save(state, f)
    with pytest.raises(UserError, match=r"different configuration \(target_weight: 'batch' -> 'equal'\)"):
        fit(tiny_cfg("gru4rec", max_epochs=2), data, tmp_path / "old", progress=False, resume_from=f.parent)
    resumed = fit(tiny_cfg("gru4rec", max_epochs=2, target_weight="batch"), data, tmp_path / "old", progress=False,
                  resume_from=f.parent)
    assert [h["epoch"] for h in resumed.history] == [1.0, 2.0]


def test_checkpoint_round_trip_gives_the_same_next_step(tmp_path):
    data = dataset()
    cfg = tiny_cfg("glintru")
    samples = training_samples(data, "all_positions", 6)
    b1, b2 = (make_batch(data.items, samples, np.arange(i, i + 4)) for i in (0, 4))

    def make():
        torch.manual_seed(3)
        m = build_model(cfg, N_ITEMS)
        return m, torch.optim.Adam(m.parameters(), lr=0.01)

    model, opt = make()
    loss_mod = SequenceLoss(model, chunk=8)
    for _ in range(3):
        opt.zero_grad()
        loss_mod(b1).backward()
        opt.step()
    state = {"format_version": 1, "epoch": 1, "config": cfg.to_flat(), "model": model.state_dict(),
             "optimizer": opt.state_dict(), "metrics": {}, "history": [], "best": {"epoch": 1, "value": 0.0, "metrics": {}}}
    ckpt = load_checkpoint(save_checkpoint(tmp_path, state))
    model2, opt2 = make()
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["optimizer"])
    out = []
    for m, o in ((model, opt), (model2, opt2)):
        torch.manual_seed(9)  # same dropout masks
        lm = SequenceLoss(m, chunk=8)
        o.zero_grad()
        lm(b2).backward()
        o.step()
        out.append(lm(b1).detach())
    assert torch.equal(out[0], out[1])


@pytest.mark.parametrize("model, over", [("glintru", {}), ("narm", {"objective": "all_positions", "precision": "bf16"}),
                                         ("sasrec", {"precision": "bf16"})])
def test_resume_continues_identically(tmp_path, model, over):
    data = dataset()
    full = fit(tiny_cfg(model, max_epochs=3, **over), data, tmp_path / "full", progress=False)
    fit(tiny_cfg(model, max_epochs=1, **over), data, tmp_path / "part", progress=False)
    ckpt = tmp_path / "part" / "checkpoints" / "epoch_0001"
    first = load_checkpoint(ckpt)["wall_s"]  # the first segment's wall time up to its checkpoint
    t0 = time.perf_counter()
    resumed = fit(tiny_cfg(model, max_epochs=3, **over), data, tmp_path / "part", progress=False, resume_from=ckpt)
    segment = time.perf_counter() - t0
    assert_same_run(full, resumed, tmp_path / "full", tmp_path / "part")
    assert 0 < first and first + segment / 2 < resumed.wall_s <= first + segment  # both segments counted
    assert [p.name for p in list_checkpoints(tmp_path / "part")] == ["epoch_0002", "epoch_0003"]  # newest two kept


def test_resume_refuses_a_different_configuration(tmp_path):
    data = dataset()
    fit(tiny_cfg(max_epochs=1), data, tmp_path, progress=False)
    with pytest.raises(UserError, match=r"different configuration \(lr: 0.01 -> 0.02\)"):
        fit(tiny_cfg(max_epochs=2, lr=0.02), data, tmp_path, progress=False,
            resume_from=tmp_path / "checkpoints" / "epoch_0001")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_corrupt_checkpoint_gives_a_clear_error(tmp_path, damage):
    data = dataset()
    fit(tiny_cfg(max_epochs=1), data, tmp_path, progress=False)
    ckpt = tmp_path / "checkpoints" / "epoch_0001"
    f = ckpt / "checkpoint.pt"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        match = "corrupt or truncated checkpoint"
    elif damage == "garbage":
        f.write_bytes(b"not a checkpoint at all")
        match = "corrupt or truncated checkpoint"
    else:
        f.unlink()
        match = "checkpoint not found"
    with pytest.raises(UserError, match=match) as exc:
        fit(tiny_cfg(max_epochs=2), data, tmp_path, progress=False, resume_from=ckpt)
    assert str(f) in str(exc.value)


def test_time_budget_and_patience_stop_training(tmp_path):
    data = dataset()
    r = fit(tiny_cfg(max_epochs=5, max_time_s=1e-9), data, tmp_path / "t", progress=False)
    assert r.stopped == "max_time_s" and len(r.history) == 1
    # lr so small the metric cannot change: no improvement after epoch 1, patience 2 stops after epoch 3.
    r = fit(tiny_cfg(max_epochs=9, patience=2, lr=1e-12), data, tmp_path / "p", progress=False)
    assert r.stopped == "patience" and len(r.history) == 3 and r.best_epoch == 1


def test_epoch_seed_is_a_pure_function_of_seed_epoch_rank():
    assert epoch_seed(1, 2, 0) == epoch_seed(1, 2, 0)
    assert len({epoch_seed(1, 2, 0), epoch_seed(1, 3, 0), epoch_seed(1, 2, 1), epoch_seed(2, 2, 0)}) == 4


def test_bf16_autocast_trains_on_cpu(tmp_path):
    r = fit(tiny_cfg(max_epochs=1, precision="bf16"), dataset(), tmp_path, progress=False)
    assert np.isfinite(r.history[0]["train/loss"]) and 0 <= r.test_metrics["test/full/ndcg@10"] <= 1


def test_last_position_objective_with_full_window_model(tmp_path):
    cfg = build_config("glintru_official", {**TINY_MODEL["glintru"], **TINY_TRAIN, "max_epochs": 1})
    assert cfg.train.objective == "last_position"
    r = fit(cfg, dataset(), tmp_path, progress=False)
    assert r.best_epoch == 1 and "test/full/ndcg@10" in r.test_metrics


def test_progress_lines_on_stderr(tmp_path, capsys):
    fit(tiny_cfg(max_epochs=1), dataset(), tmp_path, progress=True)
    err = capsys.readouterr().err
    assert err.startswith("epoch 1 loss ") and "targets/s" in err and "valid/full/ndcg@10" in err
    assert "score offset" not in err
    fit(tiny_cfg("glintru", max_epochs=1, loss="gbce", num_negatives_train=4), dataset(), tmp_path / "g", progress=True)
    line = capsys.readouterr().err.splitlines()[0]
    assert re.match(r"epoch 1 loss \d+\.\d{4} score offset -\d+\.\d{3} ", line), line  # gBCE shows its offset



def test_also_select_tests_each_metric_at_its_own_best_epoch_and_survives_resume(tmp_path):
    data = dataset()
    cfg = tiny_cfg("glintru", max_epochs=4, num_negatives=5, patience=0)
    pop = "valid/pop5/ndcg@10"
    full = fit(cfg, data, tmp_path / "full", progress=False, also_select=(pop,))
    sel = full.selected[pop]
    assert sel["best_epoch"] == 1 + int(np.argmax([h[pop] for h in full.history]))
    assert sel["valid"][pop] == max(h[pop] for h in full.history)
    # equivalent: a run that selects on that metric alone tests the same epoch's weights
    alone = fit(tiny_cfg("glintru", max_epochs=4, num_negatives=5, patience=0, valid_metric=pop), data,
                tmp_path / "alone", progress=False)
    assert alone.best_epoch == sel["best_epoch"] and alone.test_metrics == sel["test"]
    # a run resumed mid-way selects the same epoch with the same numbers
    fit(tiny_cfg("glintru", max_epochs=2, num_negatives=5, patience=0), data, tmp_path / "part", progress=False,
        also_select=(pop,))
    resumed = fit(cfg, data, tmp_path / "part", progress=False, also_select=(pop,),
                  resume_from=tmp_path / "part" / "checkpoints" / "epoch_0002")
    assert resumed.selected[pop] == sel
    assert resumed.test_metrics == full.test_metrics


# ------------------------------------------------------------------ sampled training losses


def test_sampled_softmax_with_every_item_as_negative_equals_full_softmax_under_uniform_q():
    """Uniform q cancels; with each other item drawn exactly once the loss is the full softmax."""
    from glintru.engine.loss import sampled_softmax_ce

    g = torch.Generator().manual_seed(0)
    emb = torch.randn(N_ITEMS + 1, 8, generator=g)
    h = torch.randn(5, 8, generator=g)
    targets = torch.tensor([1, 4, 7, 20, 3])
    negatives = torch.arange(1, N_ITEMS + 1)  # every item once; the target column is masked
    log_q = torch.full((N_ITEMS,), -math.log(N_ITEMS))
    full = full_softmax_ce(h, emb, targets, chunk=64)
    torch.testing.assert_close(sampled_softmax_ce(h, emb, targets, negatives, log_q), full)


def test_log_q_correction_by_hand():
    from glintru.engine.loss import sampled_softmax_ce

    h = torch.tensor([[1.0, 0.0]])
    emb = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [0.0, 3.0]])  # items 1..3
    log_q = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    loss = sampled_softmax_ce(h, emb, torch.tensor([1]), torch.tensor([2, 2, 1]), log_q)
    pos = 2.0 - math.log(0.5)
    neg = 1.0 - math.log(0.25)  # item 2 drawn twice; item 1 (the target) masked
    expected = math.log(math.exp(pos) + 2 * math.exp(neg)) - pos
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("t,beta,offset", [(0.0, 1.0, None), (1.0, 2 / 19, None), (0.75, 0.75 * 2 / 19 + 0.25, -1.5)])
def test_gbce_by_hand(t, beta, offset):
    from glintru.engine.loss import gbce_loss

    g = torch.Generator().manual_seed(1)
    emb = torch.randn(N_ITEMS + 1, 4, generator=g)
    h = torch.randn(2, 3, 4, generator=g)  # two sequences, three positions
    targets = torch.tensor([[2, 5, 0], [9, 11, 3]])  # 0: padding, no target
    negatives = torch.tensor([[5, 11], [7, 7]])  # alpha = 2 / 19; each sequence its own; 5 is a target of row 0
    b0 = None if offset is None else torch.tensor(offset, requires_grad=True)
    got = gbce_loss(h, emb, targets, negatives, N_ITEMS, t, offset=b0)
    shift = offset or 0.0
    total, d_offset, n = 0.0, 0.0, 0
    for b in range(2):
        for p in range(3):
            if targets[b, p] == 0:
                continue
            n += 1
            s_pos = float(h[b, p] @ emb[targets[b, p]]) + shift
            total += -beta * math.log(1 / (1 + math.exp(-s_pos)))
            d_offset += -beta * (1 - 1 / (1 + math.exp(-s_pos)))  # d/ds of -beta log sigmoid(s)
            for j in negatives[b].tolist():
                if j != int(targets[b, p]):  # an accidental hit is dropped at that position only
                    s_neg = float(h[b, p] @ emb[j]) + shift
                    total += -math.log(1 - 1 / (1 + math.exp(-s_neg)))
                    d_offset += 1 / (1 + math.exp(-s_neg))  # d/ds of -log(1 - sigmoid(s))
    assert got.item() == pytest.approx(total / n, rel=1e-5)
    if b0 is not None:  # the offset's gradient: every score's derivative, summed, over the real targets
        got.backward()
        assert b0.grad.item() == pytest.approx(d_offset / n, rel=1e-5)
    # One target per sequence ([B, d] rows, last-position training) is the one-position case.
    one = gbce_loss(h[:, 1], emb, targets[:, 1], negatives, N_ITEMS, t)
    assert one.item() == pytest.approx(gbce_loss(h[:, 1:2], emb, targets[:, 1:2], negatives, N_ITEMS, t).item())


def test_gbce_reads_negatives_from_the_given_table_so_only_their_gradient_path_changes():
    from glintru.engine.loss import gbce_loss

    g = torch.Generator().manual_seed(2)
    h = torch.randn(2, 3, 4, generator=g)
    targets, negatives = torch.tensor([[2, 5, 0], [9, 11, 3]]), torch.tensor([[6, 8], [7, 10]])  # no overlap
    grads = []
    for neg_scale in (1.0, 3.0):
        emb = torch.randn(N_ITEMS + 1, 4, generator=torch.Generator().manual_seed(3), requires_grad=True)
        table = emb * neg_scale + emb.detach() * (1 - neg_scale)  # same values, gradient times neg_scale
        loss = gbce_loss(h, emb, targets, negatives, N_ITEMS, 0.75, neg_table=table)
        loss.backward()
        grads.append((loss.item(), emb.grad))
    (v1, g1), (v3, g3) = grads
    assert v3 == pytest.approx(v1)
    neg_rows, pos_rows = negatives.flatten(), targets[targets > 0]
    torch.testing.assert_close(g3[neg_rows], 3 * g1[neg_rows])
    torch.testing.assert_close(g3[pos_rows], g1[pos_rows])

def test_gbce_draws_negatives_per_sequence():
    from glintru.engine.loss import make_sequence_loss

    cfg = tiny_cfg("glintru", loss="gbce", num_negatives_train=3).train
    model = build_model(tiny_cfg("glintru"), N_ITEMS)
    loss_mod = make_sequence_loss(model, cfg, N_ITEMS, torch.ones(N_ITEMS + 1))
    seen = []
    real_draw = loss_mod.sampler.draw
    loss_mod.sampler.draw = lambda m, device: seen.append(m) or real_draw(m, device)
    batch = make_batch(dataset().items, training_samples(dataset(), "all_positions", 6), np.arange(4))
    loss_mod(batch).backward()
    assert seen == [4 * 3]  # four sequences, three negatives each


@pytest.mark.parametrize("loss,gbce_offset,has_offset", [
    ("gbce", True, True), ("gbce", False, False), ("sampled_softmax", True, False), ("ce", True, False)])
def test_only_gbce_owns_a_score_offset_which_starts_at_one_items_log_odds(loss, gbce_offset, has_offset):
    from glintru.engine.loss import make_sequence_loss
    from glintru.engine.optim import make_optimizer

    cfg = tiny_cfg("glintru", loss=loss, gbce_offset=gbce_offset, num_negatives_train=3).train
    model = build_model(tiny_cfg("glintru"), N_ITEMS)
    loss_mod = make_sequence_loss(model, cfg, N_ITEMS, torch.ones(N_ITEMS + 1))
    own = loss_mod.own_parameters()
    assert len(own) == int(has_offset)
    if not has_offset:
        assert loss_mod.own_state() == {}
        return
    assert own[0].item() == pytest.approx(-math.log(N_ITEMS - 1))
    opt = make_optimizer(model, cfg, N_ITEMS, extra=own)
    (group_model, group_own) = opt.parts["adam"].param_groups
    assert group_own["params"] == own and group_own["weight_decay"] == 0.0
    assert len(group_model["params"]) == len(list(model.parameters()))
    batch = make_batch(dataset().items, training_samples(dataset(), "all_positions", 6), np.arange(4))
    loss_mod(batch).backward()
    assert own[0].grad is not None and own[0].grad.item() != 0.0
    loss_mod.load_own_state({"score_offset": torch.tensor(-3.0)})
    assert loss_mod.own_state()["score_offset"].item() == -3.0
    with pytest.raises(ValueError, match="the saved loss parameters are none, this loss has"):
        loss_mod.load_own_state({})


def test_a_gbce_run_trains_its_offset_and_an_offsetless_checkpoint_says_how_to_resume(tmp_path):
    data = dataset()
    cfg = tiny_cfg("glintru", max_epochs=1, loss="gbce", num_negatives_train=8)
    result = fit(cfg, data, tmp_path / "run", progress=False)
    start = -math.log(N_ITEMS - 1)
    assert result.history[0]["train/score_offset"] != pytest.approx(start, abs=1e-6)  # it moved
    ckpt = tmp_path / "run" / "checkpoints" / "epoch_0001"
    saved = load_checkpoint(ckpt)
    assert saved["loss"]["score_offset"].item() == pytest.approx(result.history[0]["train/score_offset"])
    del saved["loss"]  # a checkpoint that lost its loss state does not resume with a fresh offset
    torch.save(saved, ckpt / "checkpoint.pt")
    with pytest.raises(UserError, match="cannot resume: the saved loss parameters are none, this loss has"):
        fit(cfg.replace(max_epochs=2), data, tmp_path / "run", progress=False, resume_from=ckpt)
    plain = fit(tiny_cfg("glintru", max_epochs=1, loss="gbce", gbce_offset=False, num_negatives_train=8), data,
                tmp_path / "plain", progress=False)
    assert "train/score_offset" not in plain.history[0]
    # A checkpoint written before the offset existed (no "loss" entry, no gbce_offset key) resumes
    # only as what it was: the error names the setting.
    f = tmp_path / "plain" / "checkpoints" / "epoch_0001" / "checkpoint.pt"
    state = torch.load(f, weights_only=True)
    del state["loss"], state["config"]["gbce_offset"]
    torch.save(state, f)
    with pytest.raises(UserError, match=r"cannot resume with a different configuration \(gbce_offset: False -> True\)"):
        fit(cfg.replace(max_epochs=2), data, tmp_path / "plain", progress=False, resume_from=f.parent)
    resumed = fit(tiny_cfg("glintru", max_epochs=2, loss="gbce", gbce_offset=False, num_negatives_train=8), data,
                  tmp_path / "plain", progress=False, resume_from=f.parent)
    assert len(resumed.history) == 2
    # Other losses never had an offset: their checkpoints without the key resume at the default.
    fit(tiny_cfg("glintru", max_epochs=1), data, tmp_path / "ce", progress=False)
    f = tmp_path / "ce" / "checkpoints" / "epoch_0001" / "checkpoint.pt"
    state = torch.load(f, weights_only=True)
    del state["loss"], state["config"]["gbce_offset"]
    torch.save(state, f)
    assert len(fit(tiny_cfg("glintru", max_epochs=2), data, tmp_path / "ce", progress=False,
                   resume_from=f.parent).history) == 2


def test_popularity_sampler_follows_training_counts():
    from glintru.engine.loss import NegativeSampler

    counts = torch.tensor([0, 97, 1, 1, 1])  # index 0 = padding; add-one smoothing: 98, 2, 2, 2
    sampler = NegativeSampler(4, counts, "popularity")
    torch.manual_seed(0)
    draws = sampler.draw(20000, torch.device("cpu"))
    assert draws.min() >= 1 and draws.max() <= 4
    share = (draws == 1).float().mean().item()
    assert abs(share - 98 / 104) < 0.01
    torch.testing.assert_close(sampler.log_q.exp().sum(), torch.tensor(1.0))


@pytest.mark.parametrize("loss", ["sampled_softmax", "gbce"])
def test_sampled_losses_train_seeded_and_resume_identically(tmp_path, loss):
    data = dataset()
    cfg = tiny_cfg("glintru", max_epochs=3, loss=loss, num_negatives_train=8)
    full = fit(cfg, data, tmp_path / "full", progress=False)
    assert full.history[-1]["train/loss"] < full.history[0]["train/loss"]
    fit(tiny_cfg("glintru", max_epochs=1, loss=loss, num_negatives_train=8), data, tmp_path / "part", progress=False)
    resumed = fit(cfg, data, tmp_path / "part", progress=False, resume_from=tmp_path / "part" / "checkpoints" / "epoch_0001")
    assert_same_run(full, resumed, tmp_path / "full", tmp_path / "part")


def test_train_item_counts_exclude_validation_and_test_items():
    data = make_dataset([[1, 2, 3, 4], [2, 5, 6]], n_items=6)
    # training parts: [1, 2] and [2]; 3, 4, 5, 6 are validation / test items
    assert data.train_item_counts().tolist() == [0, 1, 2, 0, 0, 0, 0]


def test_forced_bf16_on_a_cpu_without_bf16_instructions_is_warned(monkeypatch, tmp_path, capsys):
    from glintru.engine import precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert "emulated" in precision.emulated_bf16_warning("bf16", cpu)
    assert precision.emulated_bf16_warning("fp32", cpu) == precision.emulated_bf16_warning("auto", cpu) == ""
    fit(tiny_cfg(max_epochs=1, precision="bf16"), dataset(), tmp_path, progress=True)
    assert capsys.readouterr().err.startswith("warning: precision=bf16 on a CPU without bf16 instructions")
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert precision.emulated_bf16_warning("bf16", cpu) == ""
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset())  # flags unreadable: no guess
    assert precision.emulated_bf16_warning("bf16", cpu) == ""


def test_precision_auto_uses_bf16_only_where_it_is_fast(monkeypatch):
    from glintru.engine import precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "fast_bf16", lambda device: True)
    assert precision.resolve_precision("auto", cpu) == "bf16"
    with precision.autocast_for("auto", cpu):
        assert torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(precision, "fast_bf16", lambda device: False)
    assert precision.resolve_precision("auto", cpu) == "fp32"
    with precision.autocast_for("auto", cpu):
        assert not torch.is_autocast_enabled("cpu")
    assert precision.resolve_precision("bf16", cpu) == "bf16" and precision.resolve_precision("fp32", cpu) == "fp32"


@pytest.fixture
def fresh_precision_probe():
    from glintru.engine import precision

    precision.cpu_bf16_speedup.cache_clear()
    yield precision
    precision.cpu_bf16_speedup.cache_clear()


@pytest.mark.parametrize("flags, speedup, fast", [
    ({"amx_bf16", "avx512_bf16"}, None, True),   # AMX: bf16 without measuring
    ({"avx512_bf16"}, 2.4, True),                # AVX512-BF16 that measured fast (AMD EPYC here: 2-3x)
    ({"avx512_bf16"}, 1.1, False),               # AVX512-BF16 that did not pay off
    (set(), None, False),                        # no bf16 instructions: fp32, nothing measured
])
def test_auto_precision_on_cpu_follows_flags_and_the_measured_probe(fresh_precision_probe, monkeypatch, flags, speedup, fast):
    precision = fresh_precision_probe
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset(flags))
    real_probe, calls = precision.cpu_bf16_speedup, []

    def probe() -> float:  # a set speed-up, or the real probe (which measures nothing without bf16 flags)
        calls.append(1)
        return real_probe() if speedup is None else speedup

    monkeypatch.setattr(precision, "cpu_bf16_speedup", probe)
    cpu = torch.device("cpu")
    assert precision.fast_bf16(cpu) is fast
    assert precision.resolve_precision("auto", cpu) == ("bf16" if fast else "fp32")
    reason = precision.bf16_reason(cpu)  # what the run's log says about the decision
    assert ("AMX" in reason) if "amx_bf16" in flags else ("no bf16" in reason) if not flags else (f"{speedup:.1f}x" in reason)
    if "amx_bf16" in flags:
        assert not calls  # AMX decides (and explains itself) without measuring
    if not flags:
        assert real_probe() == 0.0


def test_bf16_probe_measures_once_per_process(fresh_precision_probe):
    precision = fresh_precision_probe
    has_bf16 = bool(precision._cpu_flags() & {"avx512_bf16", "amx_bf16"})
    first = precision.cpu_bf16_speedup()
    assert (first > 0.0) if has_bf16 else (first == 0.0)
    assert precision.cpu_bf16_speedup() == first  # cached: the same measurement, not a new one
    assert precision.cpu_bf16_speedup.cache_info().hits >= 1


def test_fit_decides_auto_precision_once_and_says_so(monkeypatch, tmp_path, capsys):
    from glintru.engine import loop, precision

    decisions, seen = [], []
    monkeypatch.setattr(precision, "fast_bf16", lambda device: decisions.append(device) or True)
    real = loop.autocast_for
    monkeypatch.setattr(loop, "autocast_for", lambda p, device: seen.append(p) or real(p, device))
    fit(tiny_cfg("gru4rec", max_epochs=1, precision="auto"), dataset(), tmp_path, progress=True)
    assert len(decisions) == 1  # resolved before the first step, not once per step
    assert seen and set(seen) == {"bf16"}  # every training step ran under the resolved precision
    assert "precision=auto: bf16" in capsys.readouterr().err


@pytest.mark.parametrize("other_ranks_fast, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_bf16_on_every_rank_or_on_none(monkeypatch, tmp_path, other_ranks_fast, expected):
    """Rank 0 of 2 measured bf16 fast; the other rank's vote (summed by the all-reduce) decides."""
    from glintru.engine import loop, precision

    monkeypatch.setattr(precision, "fast_bf16", lambda device: True)
    seen = []
    real = loop.autocast_for
    monkeypatch.setattr(loop, "autocast_for", lambda p, device: seen.append(p) or real(p, device))

    def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
        if t.numel() == 1:  # the precision vote: this rank's plus the other rank's
            return t + float(other_ranks_fast)
        return t * 2  # metric totals: as if the other rank had the same (unused by this check)

    fit(tiny_cfg("gru4rec", max_epochs=1, precision="auto"), dataset(), tmp_path, rank=0, world_size=2,
        all_reduce_sum=all_reduce_sum, progress=False)
    assert seen and set(seen) == {expected}


@pytest.mark.parametrize("n_items, rows", [(3706, 282), (12101, 256), (1_000_000, 256), (100, 4096)])
def test_loss_chunks_are_sized_to_the_cache(n_items, rows):
    from glintru.engine.loss import cache_rows

    assert cache_rows(4096, n_items) == rows  # 2^20 logits per chunk, at least 256 rows, at most the chunk
    assert cache_rows(64, 3706) == 64


def test_cache_sized_chunks_give_the_loss_and_gradients_of_one_chunk():
    torch.manual_seed(0)
    h = torch.randn(300, 8, dtype=torch.float64, requires_grad=True)
    emb = torch.randn(5001, 8, dtype=torch.float64, requires_grad=True)  # 5,000 items: 256-row chunks
    t = torch.randint(1, 5001, (300,))
    full_softmax_ce(h, emb, t, chunk=4096).backward()
    gh, ge = h.grad.clone(), emb.grad.clone()
    h.grad = emb.grad = None
    ref = torch.nn.functional.cross_entropy(h @ emb[1:].T, t - 1)
    ref.backward()
    torch.testing.assert_close(gh, h.grad)
    torch.testing.assert_close(ge, emb.grad)
