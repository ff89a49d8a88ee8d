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
from pathlib import Path
from typing import Any, Callable, Sequence

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
    from glintru.tuning import mlflow_log

    hist_path, best = final_dir / HISTORY, final_dir / "best.pt"
    history = json.loads(hist_path.read_text(encoding="utf-8")) if hist_path.exists() else []
    mlflow_log.log_run_outputs(
        uri, run_id, run_cfg.to_flat(), manifest, history,
        {k: v for k, v in final.items() if k.startswith("test/")}, run_cfg.train.valid_metric,
        best if best.exists() else None,
    )


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


def _engine_fit() -> Callable[..., Any]:
    """``glintru.engine.fit``, or the ``module:function`` named by ``GLINTRU_FIT_TARGET`` (a test seam
    that lets the Ray plumbing be exercised with a stand-in with the same signature)."""
    import importlib

    target = os.environ.get("GLINTRU_FIT_TARGET", "glintru.engine:fit")
    module, fn = target.split(":")
    return getattr(importlib.import_module(module), fn)


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """Run the engine's ``fit`` on this worker's shard of users under Ray Train."""
    import ray.train
    import ray.train.torch

    from glintru.data.dataset import load_prepared
    from glintru.tuning import mlflow_log

    fit = _engine_fit()

    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    run_cfg = config_from_flat(config["flat"], source="train loop config")
    data = load_prepared(config["data_dir"])
    device = ray.train.torch.get_device() if config.get("use_gpu") else torch.device("cpu")
    mlf = config.get("mlflow") if rank == 0 else None
    tracker = None
    if mlf:
        tracker = mlflow_log.BestEffort(mlf["uri"], mlf["run_id"], f"run {mlf['run_id']} (rank 0)")
    _quiet_report_log()

    def on_epoch_end(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        numbers = _report_metrics(metrics)
        if tracker is not None:
            tracker.call(mlflow_log.log_metrics, numbers, int(numbers["epoch"]))
        if rank == 0 and checkpoint_dir is not None:
            ray.train.report(numbers, checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint_dir)))
        else:
            ray.train.report(numbers)

    with tempfile.TemporaryDirectory(prefix="glintru-worker-") as tmp:
        work = Path(config.get("work_dir") or Path(tmp) / "run")
        if config.get("work_dir"):
            work = work / f"rank{rank}" if rank else work
        resume_from = None
        ckpt = ray.train.get_checkpoint()
        if ckpt is not None:
            resume_from = Path(ckpt.to_directory(str(Path(tmp) / "resume")))
            if (resume_from / FINAL_METRICS).exists():
                # The run had already finished (e.g. its Tune driver was killed after the final
                # report): report the same final result again instead of training anything.
                final = json.loads((resume_from / FINAL_METRICS).read_text(encoding="utf-8"))
                if tracker is not None:  # the kill may have landed during the end-of-run upload: finish it (idempotent)
                    tracker.call(_log_end_of_run, run_cfg, data.manifest, resume_from, final)
                if rank == 0:
                    ray.train.report(final, checkpoint=ray.train.Checkpoint.from_directory(str(resume_from)))
                else:
                    ray.train.report(final)
                return
        result = fit(
            run_cfg, data, work, device=device, rank=rank, world_size=world_size,
            wrap_model=ray.train.torch.prepare_model, all_reduce_sum=all_reduce_sum,
            on_epoch_end=on_epoch_end, resume_from=resume_from, progress=bool(config.get("progress", False)),
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
            best = work / "best.pt"
            tracker.call(
                mlflow_log.log_run_outputs, run_cfg.to_flat(), data.manifest, list(result.history),
                dict(result.test_metrics), run_cfg.train.valid_metric, best if best.exists() else None,
            )
            tracker.call(
                mlflow_log.log_metrics,
                {"best_epoch": result.best_epoch, "wall_s": result.wall_s, "train_s": result.train_s},
                int(final.get("epoch", 0)),
            )
        if rank == 0:
            # Ray Train V2 keeps only metrics that come with a checkpoint in Result.metrics, so the
            # final report carries a small checkpoint: the best weights and the final metrics.
            final_dir = Path(tmp) / "final"
            final_dir.mkdir()
            (final_dir / FINAL_METRICS).write_text(json.dumps(final, indent=2), encoding="utf-8")
            (final_dir / HISTORY).write_text(json.dumps(list(result.history), indent=2), encoding="utf-8")
            if (work / "best.pt").exists():
                shutil.copy2(work / "best.pt", final_dir / "best.pt")
            ray.train.report(final, checkpoint=ray.train.Checkpoint.from_directory(str(final_dir)))
        else:
            ray.train.report(final)


def run_trainer(
    flat: dict[str, Any],
    data_dir: str | Path,
    *,
    name: str,
    storage_path: str,
    workers: int,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
    work_dir: str | Path | None = None,
    mlflow: dict[str, str] | None = None,
    callbacks: Sequence[Any] = (),
    max_failures: int = 1,
    progress: bool = False,
    log_level: str = "WARNING",
    worker_fn: Callable[[dict[str, Any]], None] = train_fn_per_worker,
) -> Any:
    """Build and fit a ``TorchTrainer`` (gloo on CPU, nccl on GPU); returns the ``ray.train.Result``.

    ``name`` must be deterministic (``train-<trial_id>`` in a study): re-running with the same
    ``name`` and ``storage_path`` resumes from that run's latest checkpoint. ``log_level`` is Ray
    Train's console level (its INFO lines repeat what glintru prints; failures are warnings).
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    for key, value in RAY_TRAIN_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)  # set here, Ray Train passes it on to the controller and workers
    resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        worker_fn,
        train_loop_config={
            "flat": dict(flat),
            "data_dir": str(Path(data_dir).resolve()),
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
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level=log_level),
        ),
    )
    return trainer.fit()


def init_ray(address: str | None, num_cpus: int | None, min_cpus: float = 0) -> None:
    """Connect to a cluster or start a private local Ray.

    With ``address`` (``--address auto`` under ``ray submit``, or ``RAY_ADDRESS``) this connects and
    never passes ``num_cpus`` (ray-stack-notes P5). Otherwise it starts a new local Ray
    (``address="local"``, so a ``ray start`` cluster elsewhere on the machine is left alone) with
    ``num_cpus`` logical CPUs, default ``max(cores, min_cpus + 1)``: one trial's workers plus the
    Tune driver then fit even on a 2-core machine (oversubscription is fine for small models).
    """
    import ray

    from glintru.errors import UserError

    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        if num_cpus is not None:
            raise UserError("--num-cpus applies to a local Ray only; drop it when connecting with --address")
        ray.init(address=address)
        return
    cpus = num_cpus if num_cpus is not None else max(os.cpu_count() or 1, math.ceil(min_cpus) + 1)
    start_local_ray(cpus)


def start_local_ray(num_cpus: int, **kwargs: Any) -> None:
    """Start a private local Ray whose own processes can always find its State API.

    Train V2's ``PlacementGroupCleaner`` (the actor that frees a finished or stopped trial's worker
    placement group) looks the cluster up through the State API. With no address it auto-detects,
    which fails when another Ray instance runs on the same machine ("Found multiple active Ray
    instances") or before the dashboard has registered; the placement group then leaks and the next
    trial waits forever for CPUs (ray-stack-notes P1). So the dashboard gets a known free port and
    ``RAY_API_SERVER_ADDRESS`` points at it in the environment every Ray process inherits.
    """
    import socket

    import ray

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(address="local", num_cpus=num_cpus, dashboard_host="127.0.0.1", dashboard_port=port, **kwargs)
