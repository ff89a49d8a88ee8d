"""Faults under Ray: a Train worker SIGKILLed mid-epoch, a node removed from a simulated cluster.

Both run the production worker (``glintru.distributed.trainer.train_fn_per_worker`` -> engine
``fit``) with two instruments around ``fit``: a log of where each attempt started and which epochs
it finished, and a wrapper around the loss module that injects the fault during epoch 3's training.
Expected (docs/operating.md): Ray Train restarts the worker group (``FailureConfig(max_failures=1)``),
``ray.train.get_checkpoint()`` hands back epoch 2's checkpoint, and the engine continues at epoch 3.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
import ray.cloudpickle
import torch

from glintru.config import build_config
from glintru.tuning.smoke import write_synthetic_dataset

pytestmark = pytest.mark.slow  # Ray clusters and killed workers: minutes

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this file

EPOCHS = 4
# The Train controller polls workers every 2 s (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S); a report made
# less than that before a worker dies may not be registered, and the run then resumes from the
# checkpoint before it (the epoch is recomputed, identically). The faults here strike later.
REGISTERED_S = 3.0


def tiny_flat() -> dict:
    return build_config("glintru", {
        "hidden_size": 8, "n_heads": 2, "max_len": 8, "batch_size": 16, "eval_batch_size": 64,
        "num_negatives": 10, "max_epochs": EPOCHS, "patience": 0, "seed": 5,
    }).to_flat()


class _Fault(torch.nn.Module):
    """Wraps the loss module; calls ``hook()`` before every training step."""

    def __init__(self, inner: torch.nn.Module, hook) -> None:
        super().__init__()
        self.inner = inner
        self.hook = hook

    def forward(self, batch):
        self.hook()
        return self.inner(batch)


def instrumented_worker(marks: Path, fault: str):
    """A Train worker function: the production one, with ``fit`` instrumented.

    ``fault="kill"``: rank 1 SIGKILLs itself 3 s into its first training step of epoch 3 (once).
    ``fault="slow"``: epoch 3 of the first attempt never finishes (every rank holds its first step
    until the group is torn down), so the test removes a node while it trains; every rank writes
    ``rank<r>.node`` (its node id) after each epoch.
    """

    def worker(config: dict) -> None:
        import os
        import signal

        import ray
        import ray.train

        from glintru import engine
        from glintru.distributed import trainer
        from glintru.engine import fit as real_fit

        rank = ray.train.get_context().get_world_rank()
        log = marks / f"rank{rank}.log"
        done = {"epoch": 0}

        def fit(run_cfg, data, out_dir, *, wrap_model=None, on_epoch_end=None, resume_from=None, **kw):
            with log.open("a") as f:
                f.write(f"start {'resume' if resume_from is not None else 'fresh'}\n")

            def hook() -> None:
                if done["epoch"] != 2:
                    return
                once = marks / "fault-injected"
                if fault == "kill" and rank == 1 and not once.exists():
                    once.write_text(str(os.getpid()))
                    time.sleep(REGISTERED_S)  # epoch 2's checkpoint is registered by now
                    os.kill(os.getpid(), signal.SIGKILL)  # mid-epoch 3: the process just dies
                if fault == "slow":
                    # Hold epoch 3 of this attempt until Ray Train tears the group down (at most 180 s):
                    # a worker on a surviving node must not finish epochs while the controller has yet
                    # to notice the lost node, nor may a worker whose node was removed but whose
                    # process outlives its raylet for a moment.
                    deadline = time.time() + 180
                    while time.time() < deadline:
                        time.sleep(0.2)

            def on_end(metrics, ckpt_dir):
                on_epoch_end(metrics, ckpt_dir)  # report (and checkpoint) first, as in production
                done["epoch"] = int(metrics["epoch"])
                with log.open("a") as f:
                    f.write(f"epoch {done['epoch']}\n")
                (marks / f"rank{rank}.node").write_text(f"{ray.get_runtime_context().get_node_id()} {done['epoch']}")

            return real_fit(run_cfg, data, out_dir, wrap_model=lambda m: wrap_model(_Fault(m, hook)),
                            on_epoch_end=on_end, resume_from=resume_from, **kw)

        engine.fit = fit  # run_engine looks fit up when it runs: this worker process trains through the wrapper
        trainer.train_fn_per_worker(config)

    return worker


def attempts(marks: Path, rank: int) -> list[list[str]]:
    """Per attempt: ``[start kind, finished epochs...]``."""
    out: list[list[str]] = []
    for line in (marks / f"rank{rank}.log").read_text().split("\n"):
        if line.startswith("start"):
            out.append([line.split()[1]])
        elif line:
            out[-1].append(line.split()[1])
    return out


def last_epoch_checkpoint(run_storage: Path) -> int:
    """Epoch of the newest engine checkpoint Ray Train kept in the run's storage."""
    from glintru.engine.checkpoint import load_checkpoint

    found = sorted(run_storage.glob("checkpoint_*/checkpoint.pt"))
    return int(load_checkpoint(found[-1])["epoch"])


def test_worker_killed_mid_epoch_restarts_from_the_last_checkpoint(ray_local, tmp_path):
    from glintru.distributed.trainer import run_trainer

    data = write_synthetic_dataset(tmp_path / "data")
    marks = tmp_path / "marks"
    marks.mkdir()
    t0 = time.perf_counter()
    result = run_trainer(
        tiny_flat(), data, name="kill", storage_path=str(tmp_path / "ray"), workers=2, work_dir=tmp_path / "work",
        max_failures=1, worker_fn=instrumented_worker(marks, "kill"),
    )
    wall = time.perf_counter() - t0
    assert (marks / "fault-injected").exists()
    for rank in (0, 1):  # the second attempt resumed from epoch 2's checkpoint and went on at epoch 3
        assert attempts(marks, rank) == [["fresh", "1", "2"], ["resume", "3", "4"]], rank
    assert result.metrics["epoch"] == EPOCHS and "test/full/ndcg@10" in result.metrics  # the final report
    history = json.loads((tmp_path / "work" / "history.json").read_text())
    assert [int(h["epoch"]) for h in history] == [1, 2, 3, 4]
    assert last_epoch_checkpoint(tmp_path / "ray" / "kill") == EPOCHS
    print(f"worker kill: fit {wall:.1f} s")


def test_node_removed_mid_run_the_run_finishes_on_the_remaining_nodes(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    from glintru.distributed.trainer import run_trainer

    if ray.is_initialized():
        ray.shutdown()  # this test needs its own simulated multi-node cluster
    marks = tmp_path / "marks"
    marks.mkdir()
    removed: list[str] = []
    cluster = None

    def remove_a_worker_node_during_epoch_3(nodes) -> None:
        deadline = time.time() + 240
        while time.time() < deadline:
            for rank in (1, 0):
                f = marks / f"rank{rank}.node"
                text = f.read_text().split() if f.exists() else []
                victim = next((n for n in nodes if text[1:] == ["2"] and n.node_id == text[0]), None)
                if victim is not None:
                    time.sleep(REGISTERED_S)  # into epoch 3's training, which this attempt holds
                    cluster.remove_node(victim, allow_graceful=False)
                    removed.append(victim.node_id)
                    (marks / "node-removed").write_text(victim.node_id)
                    return
            time.sleep(0.1)

    try:
        # Head (1 CPU) + 2 worker nodes (1 CPU each): the 2 Train workers use 2 of the 3 CPUs; after
        # a worker node is removed, the 2 that remain take the restarted group.
        cluster = Cluster()
        cluster.add_node(num_cpus=1)  # the head, created inside the try so a failed start is cleaned up
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        data = write_synthetic_dataset(tmp_path / "data")
        watcher = threading.Thread(target=remove_a_worker_node_during_epoch_3, args=(nodes,), daemon=True)
        watcher.start()
        t0 = time.perf_counter()
        result = run_trainer(
            tiny_flat(), data, name="node-loss", storage_path=str(tmp_path / "ray"), workers=2,
            work_dir=tmp_path / "work", max_failures=1, worker_fn=instrumented_worker(marks, "slow"),
        )
        wall = time.perf_counter() - t0
        watcher.join(timeout=5)
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    assert len(removed) == 1
    assert result.metrics["epoch"] == EPOCHS and "test/full/ndcg@10" in result.metrics  # the final report
    for rank in (0, 1):
        runs = attempts(marks, rank)
        assert runs[0][:3] == ["fresh", "1", "2"] and runs[-1] == ["resume", "3", "4"], (rank, runs)
    # No checkpoint lost: every epoch was checkpointed once, in order, and the last one is the result's.
    history = json.loads((tmp_path / "work" / "history.json").read_text())
    assert [int(h["epoch"]) for h in history] == [1, 2, 3, 4]
    assert last_epoch_checkpoint(tmp_path / "ray" / "node-loss") == EPOCHS
    final_nodes = {(marks / f"rank{r}.node").read_text().split()[0] for r in (0, 1)}
    assert removed[0] not in final_nodes  # the restarted group ran on the surviving nodes
    print(f"node removal: fit {wall:.1f} s")
