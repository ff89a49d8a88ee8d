"""fit() under two data-parallel processes (torch.distributed gloo, no Ray): ranks agree, the
all-reduced validation metrics are those of the synchronised weights, and without dropout two ranks
train exactly as one process on the same global batches, under either target weighting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from engine_fixtures import cyclic_sequences, make_dataset
from proc_helpers import free_port

N_ITEMS = 20


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    out = t.clone()
    dist.all_reduce(out)
    return out


def _cfg(**overrides):
    from glintru.config import build_config

    return build_config("gru4rec", {"hidden_size": 8, "embedding_size": 8, "max_len": 6, "batch_size": 4,
                                    "eval_batch_size": 4, "num_negatives": 0, "topk": [5, 10], "max_epochs": 2,
                                    **overrides})


def _worker(rank: int, port: int, jobs: list[tuple[str, dict | None, list | None]]) -> None:
    """Rank ``rank`` of a 2-process gloo group: one fit per ``(out, overrides, sequences)`` job,
    one after the other in the same group (one process start for several runs)."""
    from torch.nn.parallel import DistributedDataParallel

    from glintru.engine import fit

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        for out, overrides, sequences in jobs:
            cfg = _cfg(**(overrides or {}))
            data = make_dataset(sequences or cyclic_sequences(9, N_ITEMS), N_ITEMS)
            result = fit(cfg, data, Path(out) / f"rank{rank}", rank=rank, world_size=2,
                         wrap_model=DistributedDataParallel, all_reduce_sum=_all_reduce_sum, progress=False)
            torch.save({"history": result.history, "test": result.test_metrics}, Path(out) / f"result{rank}.pt")
        # both ranks done before either tears the group down: without it gloo aborted a rank now and
        # then ("terminate called without an active exception"); skipped on an error, where it would hang
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_ranks_agree_and_cover_every_user(tmp_path):
    mp.spawn(_worker, args=(free_port(), [(str(tmp_path), None, None)]), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"result{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["test"] == r1["test"] and r0["test"]["test/n_users"] == 9.0  # users of both shards
    drop = ("train/targets_per_s", "train/s")
    assert [{k: v for k, v in h.items() if k not in drop} for h in r0["history"]] == \
        [{k: v for k, v in h.items() if k not in drop} for h in r1["history"]]
    # Rank 0 alone writes the run directory.
    assert (tmp_path / "rank0" / "best.pt").is_file() and not (tmp_path / "rank1").exists()


def test_two_ranks_train_exactly_as_one_process_under_either_weighting(tmp_path):
    """Rank r holds n_rk of step k's N_k targets (ranks split a length-sorted batch, so rank 1 holds the
    longer windows); scaling its mean loss by 2 n_rk / N_k (batch) or 2 n_rk / mean(N) (equal) makes the
    averaged gradient the one-process gradient of the global batch. Without dropout the two runs then
    agree epoch by epoch; weighing each rank by its own batches alone (the previous rule) does not."""
    import numpy as np

    from glintru.engine import fit
    from glintru.engine.batching import global_batches, shard, training_samples

    sequences = cyclic_sequences(13, N_ITEMS, min_len=4, max_len=20)
    data = make_dataset(sequences, N_ITEMS)
    samples = training_samples(data, "all_positions", 6)
    first = global_batches(samples, 4, seed=_cfg().train.seed, epoch=1, world_size=2)
    alone = global_batches(samples, 4, seed=_cfg().train.seed, epoch=1)  # one process: the same batches
    assert [b.tolist() for b in first] == [b.tolist() for b in alone]
    per_rank = [[samples.n_targets(b) for b in shard(first, r, 2)] for r in (0, 1)]
    assert np.mean(per_rank[1]) > np.mean(per_rank[0])  # the ranks' shares differ
    torch.set_num_threads(1)
    overrides = {w: {"emb_dropout": 0.0, "target_weight": w, "max_epochs": 3, "lr": 0.05}  # weights move
                 for w in ("batch", "equal")}
    (tmp_path / "batch").mkdir()
    (tmp_path / "equal").mkdir()
    mp.spawn(_worker, args=(free_port(), [(str(tmp_path / w), o, sequences) for w, o in overrides.items()]),
             nprocs=2, join=True)
    for weighting in ("batch", "equal"):
        one = fit(_cfg(**overrides[weighting]), data, tmp_path / f"one-{weighting}", progress=False)
        two = torch.load(tmp_path / weighting / "result0.pt", weights_only=True)
        keys = [k for k in one.history[0] if k.startswith(("train/loss", "valid/"))]
        for h1, h2 in zip(one.history, two["history"], strict=True):
            assert [h2[k] for k in keys] == pytest.approx([h1[k] for k in keys], rel=1e-5, abs=1e-7), weighting
        assert two["test"] == pytest.approx(one.test_metrics, rel=1e-5, abs=1e-7)
