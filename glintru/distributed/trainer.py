"""Ray Train (V2) glue: the per-worker function and the driver that builds and fits a TorchTrainer.

Data sharding: each worker reads the prepared parquet itself and the engine takes its shard of users
by ``rank``/``world_size`` (a distributed sampler), not Ray Data: a dataset is one row of a few
hundred int32 item ids per user (ML-1M: ~6k rows, ~4 MB), training windows are cut with vectorised
numpy, and a Ray Data pipeline would add an object-store copy and a per-batch Python hop for no gain.
The global ``batch_size`` is split across workers by the engine (``batch_size // world_size``).
Validation sums are all-reduced exactly (:func:`all_reduce_sum`), so N workers report the numbers
a single process gets for the same weights.

Checkpoints: the engine writes one directory per epoch on rank 0; it is reported with
``ray.train.report`` (other ranks report metrics only). A restarted worker group (``FailureConfig``)
or a re-run with the same ``RunConfig(name, storage_path)`` gets it back from
``ray.train.get_checkpoint()`` and the engine resumes from it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from glintru.config import config_from_flat

# Keys of the train loop config (a plain dict so it pickles to every worker).
#   flat:        RunConfig.to_flat() of the run
#   data_dir:    absolute path of the prepared dataset (same path on every node)
#   work_dir:    local directory for the engine's run directory (rank 0 writes it); None = temp dir
#   use_gpu:     bool
#   mlflow:      {"uri": str, "run_id": str} or None: rank 0 logs per-epoch metrics and final artifacts
#   progress:    bool, engine progress output


# Ray Train settings glintru changes unless the user set them (environment wins). The controller
# polls the worker group every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (Ray's default 2 s), and it notices
# that training has ended only at a poll, so each trial paid up to 2 s per poll cycle in its end
# phase: measured on this 2-core machine, a tiny 2-worker trial's fit() returned 6.5 s after the
# workers finished with the default and 1.1 s with 0.5 s (trial wall time 26 s -> 20 s).
RAY_TRAIN_ENV_DEFAULTS = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}

FINAL_METRICS = "final_metrics.json"  # marks the checkpoint of a finished run
HISTORY = "history.json"  # per-epoch metrics, next to FINAL_METRICS (for the learning curve)


def _log_end_of_run(uri: str, run_id: str, run_cfg: Any, manifest: Any, final_dir: Path, final: dict[str, float]) -> None:
    """Log (again, idempotently) the end-of-run MLflow artifacts of a finished run from its final
    checkpoint directory: learning curve from ``history.json``, ``best.pt``, config, manifest, test metrics."""
    from glintru import tracking

    tracking.log_run_outputs(uri, run_id, tracking.RunRecord.from_run_dir(final_dir, run_cfg, manifest, final))


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all workers (in place on a copy); exact for the engine's integer-valued sums."""
    import torch.distributed as dist

    out = t.clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def _report_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Keep numbers only (Ray metrics must be serialisable scalars)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _quiet_report_log() -> None:
    """Drop Ray Train's per-report INFO line on workers ("Reporting training result N: TrainingReport(
    ...every metric...)"): it is logged under the module's file path, not ``ray.train``, so
    ``LoggingConfig(log_level=...)`` does not reach it (Ray 2.60). The metrics are in MLflow and Tune."""
    import logging

    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray version: keep its logging as it is
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


@dataclass(frozen=True)
class Hooks:
    """How :func:`run_engine` talks to the Ray library it runs under (Ray Train or Ray Tune).

    ``report(metrics, checkpoint_dir or None)``; ``get_checkpoint() -> a Ray Checkpoint or None``.
    """

    report: Callable[[dict[str, float], Path | None], None]
    get_checkpoint: Callable[[], Any]


def run_engine(config: dict[str, Any], hooks: Hooks, *, rank: int = 0, world_size: int = 1,
               device: torch.device | None = None, wrap_model: Callable[..., Any] | None = None,
               reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
    """The engine's ``fit`` on this process's shard, reporting every epoch (with rank 0's
    checkpoint) and a final report carrying the test metrics and a small checkpoint (best weights,
    history, final metrics). Shared by the Ray Train worker and the single-process Tune trial.

    A restored run resumes from its latest checkpoint; a run whose final checkpoint exists reports
    the same final result again without training (its driver was killed after the final report).
    """
    from glintru import tracking
    from glintru.data.dataset import load_prepared
    from glintru.engine import fit

    run_cfg = config_from_flat(config["flat"], source="train loop config")
    data = load_prepared(config["data_dir"])
    device = device or torch.device("cpu")
    mlf = config.get("mlflow") if rank == 0 else None
    tracker = tracking.BestEffort(mlf["uri"], mlf["run_id"], f"run {mlf['run_id']} (rank 0)") if mlf else None

    def on_epoch_end(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        numbers = _report_metrics(metrics)
        if tracker is not None:
            tracker.call(tracking.log_metrics, numbers, int(numbers["epoch"]))
        hooks.report(numbers, checkpoint_dir if rank == 0 else None)

    with tempfile.TemporaryDirectory(prefix="glintru-worker-") as tmp:
        work = Path(config.get("work_dir") or Path(tmp) / "run")
        if config.get("work_dir"):
            work = work / f"rank{rank}" if rank else work
        resume_from = None
        ckpt = hooks.get_checkpoint()
        if ckpt is not None:
            resume_from = Path(ckpt.to_directory(str(Path(tmp) / "resume")))
            if (resume_from / FINAL_METRICS).exists():
                final = json.loads((resume_from / FINAL_METRICS).read_text(encoding="utf-8"))
                if tracker is not None:  # the kill may have landed during the end-of-run upload: finish it (idempotent)
                    tracker.call(_log_end_of_run, run_cfg, data.manifest, resume_from, final)
                hooks.report(final, resume_from if rank == 0 else None)
                return
        result = fit(
            run_cfg, data, work, device=device, rank=rank, world_size=world_size, wrap_model=wrap_model,
            all_reduce_sum=reduce, on_epoch_end=on_epoch_end, resume_from=resume_from,
            progress=bool(config.get("progress", False)),
        )
        final = {
            **_report_metrics(result.history[-1] if result.history else {}),
            **_report_metrics(result.best_metrics),
            **_report_metrics(result.test_metrics),
            "best_epoch": float(result.best_epoch),
            "wall_s": float(result.wall_s),
            "train_s": float(result.train_s),
        }  # no "done" key: Tune reserves it and would end the trial before its driver closes the MLflow run
        if tracker is not None:
            tracker.call(tracking.log_run_outputs, tracking.RunRecord.from_run_dir(work, run_cfg, data.manifest, final))
            tracker.call(
                tracking.log_metrics,
                {"best_epoch": result.best_epoch, "wall_s": result.wall_s, "train_s": result.train_s},
                int(final.get("epoch", 0)),
            )
        if rank == 0:
            # Ray keeps only metrics that come with a checkpoint in Result.metrics, so the final
            # report carries a small checkpoint: the best weights and the final metrics.
            final_dir = Path(tmp) / "final"
            final_dir.mkdir()
            (final_dir / FINAL_METRICS).write_text(json.dumps(final, indent=2), encoding="utf-8")
            (final_dir / HISTORY).write_text(json.dumps(list(result.history), indent=2), encoding="utf-8")
            if (work / "best.pt").exists():
                shutil.copy2(work / "best.pt", final_dir / "best.pt")
            hooks.report(final, final_dir)
        else:
            hooks.report(final, None)


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: :func:`run_engine` on this worker's shard of users."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    _quiet_report_log()

    def report(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        if checkpoint_dir is not None:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint_dir)))
        else:
            ray.train.report(metrics)

    run_engine(
        config, Hooks(report, ray.train.get_checkpoint), rank=ctx.get_world_rank(), world_size=ctx.get_world_size(),
        device=ray.train.torch.get_device() if config.get("use_gpu") else torch.device("cpu"),
        wrap_model=ray.train.torch.prepare_model, reduce=all_reduce_sum,
    )


def run_trainer(
    flat: dict[str, Any],
    data_dir: str | Path,
    *,
    name: str,
    storage_path: str,
    workers: int,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    work_dir: str | Path | None = None,
    mlflow: dict[str, str] | None = None,
    callbacks: Sequence[Any] = (),
    max_failures: int = 1,
    max_preemption_failures: int = 3,
    progress: bool = False,
    log_level: str = "WARNING",
    worker_fn: Callable[[dict[str, Any]], None] = train_fn_per_worker,
) -> Any:
    """The one Ray Train driver: build and fit a ``TorchTrainer`` (gloo on CPU, nccl on GPU);
    returns the ``ray.train.Result``. Used by ``glintru train --workers N`` and by every
    multi-worker Tune trial.

    ``name`` must be deterministic (``train-<trial_id>`` in a study): re-running with the same
    ``name`` and ``storage_path`` resumes from that run's latest checkpoint. ``gpus_per_worker``
    may be a fraction (several workers or trials share a GPU). ``max_preemption_failures``: node
    preemptions (spot instances) tolerated on top of ``max_failures``. ``log_level`` is Ray
    Train's console level (its INFO lines repeat what glintru prints; failures are warnings).
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from glintru import storage
    from glintru.engine.optim import check_sparse_workers

    check_sparse_workers(flat.get("embedding_update", "auto"), workers, f"--workers {workers}")  # before workers start
    for key, value in RAY_TRAIN_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)  # set here, Ray Train passes it on to the controller and workers
    use_gpu = gpus_per_worker > 0
    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        worker_fn,
        train_loop_config={
            "flat": dict(flat),
            "data_dir": storage.absolute(data_dir),
            "work_dir": str(work_dir) if work_dir else None,
            "use_gpu": use_gpu,
            "mlflow": mlflow,
            "progress": progress,
        },
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            callbacks=list(callbacks),
            failure_config=ray.train.FailureConfig(max_failures=max_failures, max_preemption_failures=max_preemption_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level=log_level),
        ),
    )
    return trainer.fit()


def init_ray(address: str | None, num_cpus: int | None, min_cpus: float = 0) -> bool:
    """Connect to a cluster or start a private local Ray; whether this call did (False when this
    process already had Ray: a notebook's, a test session's). A command shuts down only the Ray it
    initialised, so calling it from Python leaves the caller's Ray running.

    With ``address`` (``--address auto`` under ``ray submit``, or ``RAY_ADDRESS``) this connects and
    never passes ``num_cpus`` (Ray refuses resource arguments when connecting). Otherwise it starts a new local Ray
    (``address="local"``, so a ``ray start`` cluster elsewhere on the machine is left alone) with
    ``num_cpus`` logical CPUs, default ``max(cores, min_cpus + 1)``: one trial's workers plus the
    Tune driver then fit even on a 2-core machine (oversubscription is fine for small models).
    """
    import ray

    from glintru.errors import UserError, require_positive

    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        if num_cpus is not None:
            raise UserError("--num-cpus applies to a local Ray only; drop it when connecting with --address")
        ray.init(address=address)
        return True
    require_positive(("--num-cpus", num_cpus))
    cpus = num_cpus if num_cpus is not None else max(os.cpu_count() or 1, math.ceil(min_cpus) + 1)
    start_local_ray(cpus)
    return True


# Ray's own message when the raylet of a node it starts has not registered with the GCS within a
# fixed 30 s (ray/_private/node.py, not configurable): seen on a 2-core machine running other Ray
# clusters at the same time. The processes it had started are stopped and Ray is started again.
RAY_START_TIMEOUT = "timed out during startup"
RAY_NODE_WAIT_S = 30
RAY_START_ATTEMPTS = 2
# Ray's fixed default ports that lie in Linux's ephemeral range (32768-60999), where the OS picks the
# free port for the dashboard: the dashboard agent's HTTP port. Given the same port, Ray refuses to
# start ("Ray component dashboard_agent_http is trying to use a port number 52365 that is used by
# other components"), seen once in a CI run.
RAY_FIXED_PORTS = frozenset({52365})


def os_free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS reports free now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_for_ray(attempts: int = 100) -> int:
    """A free local port that is none of Ray's fixed default ports (:data:`RAY_FIXED_PORTS`)."""
    for _ in range(attempts):
        if (port := os_free_port()) not in RAY_FIXED_PORTS:
            return port
    raise RuntimeError(f"no free local port outside Ray's fixed ports {sorted(RAY_FIXED_PORTS)} in {attempts} tries")


def start_local_ray(num_cpus: int, **kwargs: Any) -> None:
    """Start a private local Ray whose own processes can always find its State API.

    Train V2's ``PlacementGroupCleaner`` (the actor that frees a finished or stopped trial's worker
    placement group) looks the cluster up through the State API. With no address it auto-detects,
    which fails when another Ray instance runs on the same machine ("Found multiple active Ray
    instances") or before the dashboard has registered; the placement group then leaks and the next
    trial waits forever for CPUs. So the dashboard gets a known free port (never one of Ray's fixed
    default ports: :func:`free_port_for_ray`) and ``RAY_API_SERVER_ADDRESS`` points at it in the
    environment every Ray process inherits.

    Ray starts its worker processes at nice 15 (``RAY_worker_niceness``), so that its own services
    stay responsive on a busy node. In a private local Ray the workers *are* the job: at nice 15 a
    trial gets almost no CPU while any other program is busy (``benchmarks/trial_overhead.py
    --niceness 15 0``, 2 cores busy with two other jobs: a one-epoch trial took 162.8 s, and 7.6 s
    at nice 0). So the workers run at the priority of the command that started them, unless
    ``RAY_worker_niceness`` is already set.

    On a busy machine Ray's node may not come up within Ray's fixed 30 s: the processes that start
    left are stopped and Ray is started once more; a second timeout is one clear error.
    """
    import sys

    import ray

    from glintru.distributed.processes import descendants, kill_all
    from glintru.errors import UserError

    os.environ.setdefault("RAY_worker_niceness", "0")
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        port = free_port_for_ray()
        os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        before = descendants(os.getpid())
        try:
            ray.init(address="local", num_cpus=num_cpus, dashboard_host="127.0.0.1", dashboard_port=port, **kwargs)
            return
        except Exception as e:  # Ray raises a bare Exception when its node does not come up in time
            if RAY_START_TIMEOUT not in str(e):
                raise
            kill_all(descendants(os.getpid()) - before)  # the half-started GCS, raylet, dashboard...
        if attempt < RAY_START_ATTEMPTS:
            print(f"the local Ray did not start: its node did not register within Ray's {RAY_NODE_WAIT_S} s "
                  "(a busy machine?); starting it again", file=sys.stderr, flush=True)
    raise UserError(f"the local Ray did not start: its node did not register within Ray's {RAY_NODE_WAIT_S} s, "
                    f"{RAY_START_ATTEMPTS} times (the machine is too busy?). Run the command again when other "
                    "programs have finished, or connect to a running Ray with --address")
