"""Per-worker functions that the Ray tests run under Ray Train (pickled by value so workers need not
import this file); the local Ray itself is the ``ray_local`` fixture of conftest.py."""

from __future__ import annotations

import sys
from pathlib import Path

from ray import cloudpickle

cloudpickle.register_pickle_by_value(sys.modules[__name__])

def tiny_run_cfg(**overrides):
    from glintru.config import build_config

    base = {"hidden_size": 16, "n_heads": 2, "max_len": 12, "batch_size": 8, "eval_batch_size": 5, "seed": 3, "num_negatives": 10}
    return build_config("glintru", {**base, **overrides})


def eval_fn_per_worker(config: dict) -> None:
    """Evaluate the seeded model on this rank's shard; all-reduce with the production reducer."""
    import ray.train
    import ray.train.torch
    import torch

    from glintru.config import config_from_flat
    from glintru.data.dataset import load_prepared
    from glintru.distributed.trainer import all_reduce_sum
    from glintru.engine.evaluate import evaluate, negatives_for
    from glintru.models import build_model

    ctx = ray.train.get_context()
    run_cfg = config_from_flat(config["flat"])
    data = load_prepared(config["data_dir"])
    torch.manual_seed(0)
    model = ray.train.torch.prepare_model(build_model(run_cfg, data.n_items))
    metrics = evaluate(
        model, data, "valid", run_cfg.train, negatives=negatives_for(data, "valid", run_cfg.train),
        rank=ctx.get_world_rank(), world_size=ctx.get_world_size(), all_reduce_sum=all_reduce_sum,
    )
    if ctx.get_world_rank() == 0:  # V2 keeps the metrics that come with a checkpoint in Result.metrics
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics)


def ddp_step_fn_per_worker(config: dict) -> None:
    """One DDP training step on this rank's own users through the engine's loss module, wrapped as
    the engine wraps it (gBCE, so the loss's own score offset is a DDP parameter too); report the
    node, a parameter checksum and the offset."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from glintru.config import config_from_flat
    from glintru.data.dataset import load_prepared
    from glintru.engine.loss import make_sequence_loss
    from glintru.models import build_model

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    run_cfg = config_from_flat(config["flat"])
    data = load_prepared(config["data_dir"])
    torch.manual_seed(0)
    model = build_model(run_cfg, data.n_items)
    seq_loss = make_sequence_loss(model, run_cfg.train, data.n_items, None)
    ddp = ray.train.torch.prepare_model(seq_loss)
    own = seq_loss.own_parameters()
    opt = torch.optim.SGD([*model.parameters(), *own], lr=0.5)
    users = range(rank, data.n_users, world)  # this rank's shard
    seqs = [data.sequence(u)[:4] for u in users]
    batch = {"items": torch.tensor([list(s[:3]) for s in seqs], dtype=torch.long),
             "targets": torch.tensor([int(s[3]) for s in seqs], dtype=torch.long),  # one target per sequence
             "lengths": torch.full((len(seqs),), 3, dtype=torch.long)}
    loss = ddp(batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    checksum = float(sum(p.double().sum() for p in model.parameters()))
    offset = float(own[0]) if own else float("nan")
    ray.train.report({"node": ray.get_runtime_context().get_node_id(), "checksum": checksum, "rank": rank})
    Path(config["out"], f"rank{rank}.txt").write_text(f"{ray.get_runtime_context().get_node_id()} {checksum!r} {offset!r}")
