"""``glintru train``: train and evaluate one model on a prepared dataset, in one process.

    glintru train --data data/ml-1m --model glintru --max-epochs 20
    glintru train --data data/ml-1m --model sasrec --set hidden_size=64 --set lr=3e-4 --out runs/sasrec64
    glintru train --data data/ml-1m --config runs/glintru-1a2b3c4d5e/config.yaml
    glintru train --data data/ml-1m --resume runs/glintru-1a2b3c4d5e --max-epochs 40

Outputs in the run directory (default ``runs/<model>-<hash of config and data>``): ``config.yaml``
(the resolved flat config, usable with ``--config``), ``metrics.json`` (best validation and test
metrics, ``best_epoch``, ``wall_s``), ``history.json``, ``checkpoints/epoch_NNNN/`` and ``best.pt``.
Re-running the same command in the same run directory resumes from its latest checkpoint.
Progress goes to stderr (one line per epoch); the final metrics table to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from glintru.config import (
    build_config,
    config_keys,
    load_config_file,
    model_names,
    parse_set_args,
    values_before_new_keys,
)
from glintru.errors import Terminated, UserError, require_positive


def config_help() -> str:
    """The epilog of ``glintru train --help``: every config key with its default."""
    from dataclasses import fields

    from glintru.config import MODELS, TrainConfig

    def keys(cls: type) -> str:
        return ", ".join(f"{f.name}={f.default!r}" if not isinstance(f.default, tuple) else f"{f.name}={list(f.default)}"
                         for f in fields(cls))

    seen: dict[type, list[str]] = {}
    for name, spec in MODELS.items():
        seen.setdefault(spec.config_cls, []).append(name)
    parts = [f"model keys ({'/'.join(names)}): {keys(cls)}" for cls, names in seen.items()]
    return ("config keys for --set KEY=VALUE and --config files (docs/model.md explains them). "
            f"training keys (every model): {keys(TrainConfig)}. " + ". ".join(parts)
            + ". Losses: loss=ce (full softmax), sampled_softmax (num_negatives_train shared negatives, "
            "log-Q corrected; the one to use for large catalogues), gbce (gSASRec, with a learnable score "
            "offset that keeps GLINT-RU from collapsing; gbce_offset=false is the published form, "
            "docs/model.md section 6).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = config_help()
    p.add_argument("--data", help="prepared dataset directory or s3://BUCKET/PATH (glintru prepare); required unless --smoke-test")
    p.add_argument("--model", help=f"one of: {', '.join(model_names())} (default: the --config file's model)")
    p.add_argument("--config", help="flat YAML/JSON config file (e.g. a run's config.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--max-epochs", type=int, help="shorthand for --set max_epochs=E")
    p.add_argument("--out", help="run directory (default: runs/<model>-<hash of config and data>)")
    p.add_argument("--gpu", action="store_true", help="train on a GPU (with --workers: one per worker, or --gpus-per-worker)")
    p.add_argument("--device", choices=("cpu", "cuda"), help=argparse.SUPPRESS)  # old spelling: --device cuda = --gpu
    p.add_argument("--gpus-per-worker", type=float, help="--workers with --gpu: GPUs per worker (default 1; fractions share a GPU)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 is best on a busy machine)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint (its config)")
    p.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    # ---- Ray Train and MLflow ----
    p.add_argument("--workers", type=int, help="N >= 1: train with N Ray Train workers instead of in this process")
    p.add_argument("--mlflow-uri", help="log the run to this MLflow tracking URI")
    p.add_argument("--experiment", help="MLflow experiment name")
    p.add_argument("--address", help="--workers: Ray cluster address (e.g. auto under `ray submit`); default: a local Ray")
    p.add_argument("--num-cpus", type=int, help="--workers: logical CPUs of a local Ray (never sent to a cluster)")
    p.add_argument("--storage-path", help="--workers: Ray Train storage (default RUN_DIR/ray; s3://... on a cluster)")
    p.add_argument("--smoke-test", action="store_true", help="2 epochs of a tiny model on a tiny synthetic dataset")


def run(args: argparse.Namespace) -> int:
    import torch

    from glintru.data.dataset import load_prepared

    require_positive(("--threads", args.threads), ("--workers", args.workers), ("--num-cpus", args.num_cpus))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.gpu = bool(args.gpu or args.device == "cuda")
    if args.gpus_per_worker is not None and (args.workers is None or not args.gpu or args.gpus_per_worker <= 0):
        raise UserError("--gpus-per-worker: needs --workers and --gpu, and must be > 0")
    if args.gpu and args.workers is None and not torch.cuda.is_available():
        # Only for a run in this process: with --workers the workers may be on other (GPU) nodes,
        # and the cluster check happens once Ray is up.
        raise UserError("--gpu: no CUDA device is available on this machine (use --workers to train on a cluster's GPUs)")
    if args.smoke_test:
        return _smoke_test(args)
    if args.data is None:
        raise UserError("--data: required (a prepared dataset directory), unless --smoke-test")
    run_cfg, out, resume_from = resolve_run(args)
    data = load_prepared(args.data)
    if args.out is None and args.resume is None:
        out = Path("runs") / f"{run_cfg.model}-{run_hash(run_cfg.to_flat(), data.manifest)}"
    args.out = str(out)
    created = not out.exists()
    make_run_dir(out)  # an unwritable --out fails here, before any training or Ray
    from glintru.storage import DirectoryLock

    with DirectoryLock(out, "glintru train"):  # two commands on one run directory: the second refuses
        try:
            return _train(args, run_cfg, data, out, resume_from)
        except UserError:
            if created:
                remove_untrained_run_dir(out)
            raise
        except KeyboardInterrupt as exc:
            return _interrupted(args, out, 143 if isinstance(exc, Terminated) else 130)


def _interrupted(args: argparse.Namespace, out: Path, rc: int) -> int:
    """One line on what the interrupted run keeps and how to continue it; the exit code (130 / 143)."""
    last = latest_checkpoint(out)  # epoch_NNNN: its name holds the epoch, no need to load it
    kept = "no finished epoch yet" if last is None else f"its checkpoint of epoch {int(last.name.split('_')[1])}"
    word = "terminated" if rc == 143 else "interrupted"
    print(f"{word}: {out} keeps {kept}; `glintru train --data {args.data} --resume {out}` (or the same "
          "command again) continues it", file=sys.stderr)
    return rc


def remove_untrained_run_dir(out: Path) -> None:
    """Remove a run directory this command created when a bad input stopped it before anything trained.

    Only ``config.yaml`` and the lock file may be in it; a directory holding anything else (a
    checkpoint, a history, a metrics file) is kept whatever went wrong.
    """
    import shutil

    from glintru.storage import LOCK_FILE

    if all(p.name in ("config.yaml", LOCK_FILE) for p in out.iterdir()):
        shutil.rmtree(out, ignore_errors=True)


def _train(args: argparse.Namespace, run_cfg: Any, data: Any, out: Path, resume_from: Path | None) -> int:
    from glintru.engine import check_resumable, final_metrics, fit

    existing = resume_from or latest_checkpoint(out)
    if existing is not None:  # a refused resume leaves the run's config.yaml as it was
        check_resumable(run_cfg, existing)
    if args.workers is not None:
        write_config(out / "config.yaml", run_cfg.to_flat())
        print_table(train_with_ray(args, run_cfg, out), out)
        return 0

    if resume_from is None:
        resume_from = existing
        if resume_from is not None and not args.quiet:
            print(f"resuming from {resume_from}", file=sys.stderr)
    write_config(out / "config.yaml", run_cfg.to_flat())
    result = fit(run_cfg, data, out, device="cuda" if args.gpu else "cpu", resume_from=resume_from, progress=not args.quiet)
    if args.mlflow_uri is not None or args.experiment is not None:
        from glintru.tracking import log_train_run, unavailable_after_run, unavailable_errors

        extra = {"experiment": args.experiment} if args.experiment is not None else {}
        try:
            log_train_run(args.mlflow_uri, run_cfg, result, data, out, **extra)
        except unavailable_errors() as exc:
            print_table(final_metrics(result), out)
            raise unavailable_after_run(exc, out) from None
    print_table(final_metrics(result), out)
    return 0


def train_with_ray(args: argparse.Namespace, run_cfg: Any, out: Path) -> dict[str, float]:
    """``--workers N``: the run on N Ray Train workers (:func:`glintru.distributed.trainer.run_trainer`);
    returns the final metrics. The Train run is named after the run directory, so re-running the
    same command resumes from its latest checkpoint. With ``--mlflow-uri`` / ``--experiment`` the
    MLflow run is opened before Ray starts (a dead server fails at once), rank 0 logs every epoch,
    and whatever an outage made it miss is logged at the end."""
    import ray

    from glintru import storage, tracking
    from glintru.data.dataset import load_prepared
    from glintru.distributed.capacity import check_placeable, cluster_capacity
    from glintru.distributed.trainer import init_ray, run_trainer

    gpus = (args.gpus_per_worker or 1.0) if args.gpu else 0.0
    mlf = None
    if args.mlflow_uri is not None or args.experiment is not None:
        uri = tracking.resolve_tracking_uri(args.mlflow_uri)
        try:
            exp_id = tracking.ensure_experiment(uri, args.experiment or tracking.DEFAULT_EXPERIMENT)
            run_id, _ = tracking.get_or_create_run(
                uri, exp_id, {tracking.ROLE: "train", tracking.RUN_NAME: out.name}, run_name=out.name,
                extra_tags={"glintru.workers": str(args.workers)},
            )
            tracking.log_params(uri, run_id, run_cfg.to_flat())
        except tracking.unavailable_errors() as exc:
            raise tracking.unavailable_at_start(uri, exc) from None
        mlf = {"uri": uri, "run_id": run_id}
    started = init_ray(args.address, args.num_cpus, min_cpus=args.workers)
    try:
        check_placeable(args.workers, 1.0, gpus, cluster_capacity())
        result = run_trainer(
            run_cfg.to_flat(), storage.absolute(args.data), name=f"train-{out.name}",
            storage_path=args.storage_path or str(out / "ray"), workers=args.workers, gpus_per_worker=gpus,
            work_dir=out, mlflow=mlf, progress=not args.quiet,
        )
    except Exception:
        if mlf:
            tracking.end_run(mlf["uri"], mlf["run_id"], "FAILED")
        raise
    finally:
        if started:
            ray.shutdown()
    final = dict(result.metrics or {})
    if mlf:
        try:
            record = tracking.RunRecord.from_run_dir(out, run_cfg, load_prepared(args.data).manifest, final)
            tracking.sync_run(mlf["uri"], mlf["run_id"], record)
            tracking.end_run(mlf["uri"], mlf["run_id"])
        except tracking.unavailable_errors() as exc:
            raise tracking.unavailable_after_run(exc, out) from None
    return final


SMOKE_SETTINGS = {"hidden_size": 16, "n_heads": 2, "max_len": 16, "batch_size": 16, "eval_batch_size": 64,
                  "num_negatives": 10, "max_epochs": 2}


def _smoke_test(args: argparse.Namespace) -> int:
    """The real command end to end on a tiny synthetic dataset in a temporary directory."""
    import tempfile

    from glintru.tuning.smoke import write_synthetic_dataset

    with tempfile.TemporaryDirectory(prefix="glintru-train-smoke-") as tmp:
        args.data = str(write_synthetic_dataset(f"{tmp}/data"))
        args.model = args.model or "glintru"
        keys = config_keys(args.model)
        args.set = [f"{k}={v}" for k, v in SMOKE_SETTINGS.items() if k in keys] + list(args.set or [])
        args.out = args.out or f"{tmp}/run"
        args.smoke_test = False
        return run(args)


def resolve_run(args: argparse.Namespace) -> tuple[Any, Path | None, Path | None]:
    """``(run_cfg, out_dir or None, checkpoint to resume or None)`` from the command line."""
    overrides: dict[str, Any] = {}
    model = args.model
    sources: list[str] = []  # where the values came from, for error messages
    if args.resume is not None:
        run_dir = Path(args.resume)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise UserError(f"{saved}: not found; --resume expects a run directory written by `glintru train`")
        saved_model, overrides = load_config_file(saved)
        overrides = {**values_before_new_keys(overrides), **overrides}  # an older run resumes as it trained
        if model is not None and model != saved_model:
            raise UserError(f"--model {model}: the run in {run_dir} trains '{saved_model}'")
        model = saved_model
        sources.append(str(saved))
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise UserError(f"{run_dir}: no checkpoint to resume from (checkpoints/epoch_NNNN)")
        if args.out is not None and Path(args.out).resolve() != run_dir.resolve():
            raise UserError("--out: a resumed run keeps its directory; leave --out out or give the same path")
    if args.config is not None:
        file_model, file_overrides = load_config_file(args.config)
        if model is not None and file_model is not None and model != file_model:
            raise UserError(f"{args.config}: field 'model': '{file_model}' contradicts --model {model}")
        model = model or file_model
        overrides.update(file_overrides)
        sources.append(str(args.config))
    if model is None:
        raise UserError("--model: required (or a --config file with a 'model' field)")
    sets = parse_set_args(args.set)
    if args.set:
        sources.append("--set")
    if args.max_epochs is not None:
        sets["max_epochs"] = args.max_epochs
        sources.append("--max-epochs")
    overrides.update(sets)
    run_cfg = build_config(model, overrides, source=" / ".join(sources) or "--model")
    if args.resume is not None:
        return run_cfg, Path(args.resume), ckpt
    return run_cfg, Path(args.out) if args.out else None, None


def make_run_dir(out: Path) -> None:
    """Create the run directory and check it is writable, or raise a UserError naming it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create or write the run directory ({exc.strerror or exc})") from None


def run_hash(flat: dict[str, Any], manifest: dict[str, Any]) -> str:
    """10 hex digits from the resolved config and the dataset's manifest: same inputs, same run dir."""
    blob = json.dumps({"config": flat, "data": manifest}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def latest_checkpoint(run_dir: Path) -> Path | None:
    from glintru.engine.checkpoint import list_checkpoints

    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def write_config(path: Path, flat: dict[str, Any]) -> None:
    import yaml

    from glintru.storage import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(flat, sort_keys=False))


def print_table(metrics: dict[str, Any], out: Path) -> None:
    """Final metrics on stdout: one row per split/protocol, columns HR/NDCG/MRR@K."""
    rows: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and "@" in parts[2]:
            rows.setdefault(f"{parts[0]}/{parts[1]}", {})[parts[2]] = float(value)
    cols = sorted({c for r in rows.values() for c in r}, key=lambda c: (c.split("@")[0], int(c.split("@")[1])))
    print(f"{'':14}" + "".join(f"{c:>10}" for c in cols))
    for name, r in rows.items():
        print(f"{name:14}" + "".join(f"{r[c]:10.4f}" if c in r else f"{'':>10}" for c in cols))
    extras = {k: metrics[k] for k in ("best_epoch", "epochs", "wall_s", "train_s") if k in metrics}
    print(" ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in extras.items()))
    print(f"run directory: {out}")
