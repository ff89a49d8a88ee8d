"""fit() under two data-parallel processes (torch.distributed gloo, no Ray): ranks agree and the
all-reduced validation metrics are those of the synchronised weights."""

from __future__ import annotations

from pathlib import Path

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


def _worker(rank: int, port: int, out: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    from glintru.config import build_config
    from glintru.engine import fit

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        cfg = build_config("gru4rec", {"hidden_size": 8, "embedding_size": 8, "max_len": 6, "batch_size": 4,
                                       "eval_batch_size": 4, "num_negatives": 0, "topk": [5, 10], "max_epochs": 2})
        data = make_dataset(cyclic_sequences(9, N_ITEMS), N_ITEMS)
        result = fit(cfg, data, Path(out) / f"rank{rank}", rank=rank, world_size=2, wrap_model=DistributedDataParallel,
                     all_reduce_sum=_all_reduce_sum, progress=False)
        torch.save({"history": result.history, "test": result.test_metrics}, Path(out) / f"result{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_agree_and_cover_every_user(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"result{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["test"] == r1["test"] and r0["test"]["test/n_users"] == 9.0  # users of both shards
    drop = ("train/targets_per_s", "train/s")
    assert [{k: v for k, v in h.items() if k not in drop} for h in r0["history"]] == \
        [{k: v for k, v in h.items() if k not in drop} for h in r1["history"]]
    # Rank 0 alone writes the run directory.
    assert (tmp_path / "rank0" / "best.pt").is_file() and not (tmp_path / "rank1").exists()
