"""Data-parallel training with Ray Train (V2): see :mod:`glintru.distributed.trainer`.

``glintru train --workers N`` calls :func:`train_with_ray`; a Tune trial calls
:func:`glintru.distributed.trainer.run_trainer` directly. Ray is imported lazily.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from glintru.config import RunConfig


def _arg(args: argparse.Namespace, *names: str, default: Any = None) -> Any:
    for n in names:
        if getattr(args, n, None) is not None:
            return getattr(args, n)
    return default


def train_with_ray(args: argparse.Namespace, run_cfg: RunConfig) -> dict[str, float]:
    """One training run on ``args.workers`` Ray Train workers; returns the final metrics
    (last epoch, best validation, test). Logs to MLflow (role=train) when ``args.mlflow_uri`` is set.

    Reads from ``args``: ``data``, ``workers``, ``out`` (run directory; its name is the Train run's
    name, so re-running the same command resumes from the latest checkpoint), and optionally
    ``mlflow_uri``, ``experiment``, ``device`` (``cuda`` = one GPU per worker), ``address``
    (else ``RAY_ADDRESS``, else a private local Ray), ``num_cpus``, ``storage_path``.
    """
    import ray

    from glintru.distributed.trainer import init_ray, run_trainer
    from glintru import tracking

    workers = int(args.workers)
    use_gpu = bool(_arg(args, "gpu", "use_gpu", default=False)) or _arg(args, "device") == "cuda"
    out = Path(_arg(args, "out", "out_dir", "run_dir", default="runs/train")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    storage = str(_arg(args, "storage_path", default=str(out / "ray")))
    name = f"train-{out.name}"
    mlf = None
    uri = _arg(args, "mlflow_uri")
    if uri is not None or _arg(args, "experiment") is not None:  # before Ray starts: a dead MLflow fails fast
        uri = tracking.resolve_tracking_uri(uri)
        try:
            exp_id = tracking.ensure_experiment(uri, _arg(args, "experiment", default=tracking.DEFAULT_EXPERIMENT))
            run_id, _ = tracking.get_or_create_run(
                uri, exp_id, {tracking.ROLE: "train", tracking.RUN_NAME: out.name}, run_name=out.name,
                extra_tags={"glintru.workers": str(workers)},
            )
            tracking.log_params(uri, run_id, run_cfg.to_flat())
        except tracking.unavailable_errors() as exc:
            raise tracking.unavailable_at_start(uri, exc) from None
        mlf = {"uri": uri, "run_id": run_id}
    init_ray(_arg(args, "address"), _arg(args, "num_cpus"), min_cpus=workers)
    try:
        result = run_trainer(
            run_cfg.to_flat(), args.data, name=name, storage_path=storage, workers=workers, use_gpu=use_gpu,
            work_dir=out, mlflow=mlf, progress=True,
        )
    except Exception:
        if mlf:
            tracking.end_run(mlf["uri"], mlf["run_id"], "FAILED")
        raise
    finally:
        if ray.is_initialized() and _arg(args, "address") is None:
            ray.shutdown()
    final = dict(result.metrics or {})
    if mlf:  # rank 0 logged as it went; log whatever an MLflow outage made it miss, then close the run
        from glintru.data.dataset import load_prepared

        try:
            record = tracking.RunRecord.from_run_dir(out, run_cfg, load_prepared(args.data).manifest, final)
            tracking.sync_run(mlf["uri"], mlf["run_id"], record)
            tracking.end_run(mlf["uri"], mlf["run_id"])
        except tracking.unavailable_errors() as exc:
            raise tracking.unavailable_after_run(exc, out) from None
    return final
