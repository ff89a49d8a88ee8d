"""Faults under Ray: a Train worker SIGKILLed mid-epoch. (A host lost mid-run: test_netns_cluster.py,
on a real multi-host cluster, where the run resumes from its checkpoint on the hosts left.)

The test runs the production worker (``glintru.distributed.trainer.train_fn_per_worker`` -> engine
``fit``) with two instruments around ``fit``: a log of where each attempt started and which epochs
it finished, and a wrapper around the loss module that injects the fault during epoch 3's training.
Expected (docs/operating.md): Ray Train restarts the worker group (``FailureConfig(max_failures=1)``),
``ray.train.get_checkpoint()`` hands back epoch 2's checkpoint, and the engine continues at epoch 3.
"""

from __future__ import annotations

import json
import sys
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

            def on_end(metrics, ckpt_dir):
                on_epoch_end(metrics, ckpt_dir)  # report (and checkpoint) first, as in production
                done["epoch"] = int(metrics["epoch"])
                with log.open("a") as f:
                    f.write(f"epoch {done['epoch']}\n")

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
