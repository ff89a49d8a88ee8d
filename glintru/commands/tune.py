"""``glintru tune``: Ray Tune + Optuna search over a search-space file, trials on Ray Train, MLflow.

    glintru tune --profile quick --data data/ml-1m
    glintru tune --data DIR --search-space search_spaces/glintru.yaml --num-samples 4 --workers 2 \\
        --max-epochs 3 --storage-path ray_results --mlflow-uri sqlite:///$PWD/mlflow.db
    glintru tune --resume ray_results/<experiment>
    glintru tune --smoke-test
    glintru tune --data s3://bucket/data/ml-1m --storage-path s3://bucket/studies --gpu --gpus-per-worker 0.5 \
        --workers 1 --address auto --mlflow-uri http://mlflow:5000

Ctrl+C (or SIGTERM) stops a study and keeps it resumable: exit 130 (143), and the line to resume.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile

from glintru.config import parse_set_args
from glintru.errors import UserError, require_positive


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="prepared dataset directory (glintru prepare)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--search-space", help="search-space YAML file (see search_spaces/)")
    src.add_argument("--profile", help="a file of search_spaces/ by name, e.g. quick")
    p.add_argument("--num-samples", type=int, help="number of trials (default: the file's tune.num_samples)")
    p.add_argument("--max-epochs", type=int, help="epochs per trial at most (ASHA max_t)")
    p.add_argument("--grace-period", type=int, help="epochs every trial runs before ASHA may stop it (default: the "
                   "file's tune.grace_period, else 1); longer lets slowly converging configurations catch up")
    p.add_argument("--workers", type=int, help="workers per trial (default: the file's tune.workers, else 1); "
                   "1 trains in the trial's own process, N > 1 with Ray Train (DDP)")
    p.add_argument("--cpus-per-worker", type=float, help="CPUs per worker (default 1)")
    p.add_argument("--gpu", action="store_true", help="train on GPUs (nccl across workers); --gpus-per-worker sets the share")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per worker with --gpu (default 1); a fraction such as "
                   "0.5 lets trials share a GPU")
    p.add_argument("--storage-path", help="Tune/Train results: local directory (default ./ray_results) or s3://...")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db); "
                   "with --resume, the study logs there from now on")
    p.add_argument("--experiment", help="study name (default: a hash of the search space, data and options)")
    p.add_argument("--resume", metavar="PATH", help="continue an interrupted study: its experiment directory (the "
                   "study keeps its options; only --mlflow-uri, --address, --num-cpus, --out, --verbose apply)")
    p.add_argument("--seed", type=int, help="Optuna TPE seed")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: from cluster resources)")
    p.add_argument("--address", help="Ray cluster address (e.g. auto under `ray submit`); default: a local Ray")
    p.add_argument("--num-cpus", type=int, help="logical CPUs of a local Ray (never sent to a cluster)")
    p.add_argument("--register-name", help="registered model name in MLflow (default: <dataset>-<model>)")
    p.add_argument("--mlflow-experiment", help="MLflow experiment (default: <dataset>-<model>, shared by studies on one dataset)")
    p.add_argument("--optuna-storage", help="Optuna RDB URL (default: sqlite optuna.db in the experiment directory)")
    p.add_argument("--verbose", action="store_true", help="Ray's own console output (status tables, internal logs)")
    p.add_argument("--out", help="where best_config.yaml, trials.csv and the plot go (default: the experiment dir)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="fixed config override for every trial")
    p.add_argument("--smoke-test", action="store_true", help="2 trials x 2 epochs on a tiny synthetic dataset")


# What defines a study (saved when it starts), and what a resume may choose (where it runs, where it logs).
STUDY_OPTIONS = ("--data", "--search-space", "--profile", "--num-samples", "--max-epochs", "--grace-period", "--workers",
                 "--cpus-per-worker", "--gpu", "--gpus-per-worker", "--storage-path", "--experiment", "--seed",
                 "--max-concurrent", "--register-name", "--mlflow-experiment", "--optuna-storage", "--set",
                 "--smoke-test")
RESUME_OPTIONS = ("--mlflow-uri", "--address", "--num-cpus", "--out", "--verbose")


def run(args: argparse.Namespace) -> int:
    """Run or resume a study; an unreachable MLflow becomes one clear error (results stay in storage)."""
    from mlflow.exceptions import MlflowException

    from glintru.tracking import first_line

    if args.gpus_per_worker is not None and not args.gpu:
        raise UserError("--gpus-per-worker: needs --gpu")
    require_positive(("--num-samples", args.num_samples), ("--max-epochs", args.max_epochs),
                     ("--grace-period", args.grace_period), ("--workers", args.workers),
                     ("--max-concurrent", args.max_concurrent), ("--num-cpus", args.num_cpus))
    if args.gpus_per_worker is not None and not 0 < args.gpus_per_worker:
        raise UserError(f"--gpus-per-worker: must be > 0, got {args.gpus_per_worker:g}")
    if args.resume:
        fixed = [opt for opt in STUDY_OPTIONS if getattr(args, opt[2:].replace("-", "_")) not in (None, False)]
        if fixed:
            raise UserError(
                f"--resume continues a study with the options it started with (recorded in its glintru_study.json); "
                f"{', '.join(fixed)} cannot change them. With --resume only {', '.join(RESUME_OPTIONS)} apply; "
                "for other options start a new study (another --experiment)")
    try:
        return _run(args)
    except MlflowException as exc:  # a call outside the study's own handling (which names the study directory)
        first = first_line(exc)
        where = args.resume or args.storage_path or "ray_results/<study>"
        raise UserError(
            f"MLflow ({args.mlflow_uri or os.environ.get('MLFLOW_TRACKING_URI') or 'default store'}) failed: {first}. "
            f"Trial results and checkpoints are kept in the Ray storage path; once MLflow is back, continue with "
            f"`glintru tune --resume {where}` (the study directory printed at the start)"
        ) from None


def _run(args: argparse.Namespace) -> int:
    from glintru.tuning import driver
    from glintru.tuning.settings import load_settings, resolve_storage
    from glintru.tuning.space import resolve_profile

    if args.resume:
        driver.resume_study(args.resume, address=args.address, num_cpus=args.num_cpus, out_dir=args.out,
                            verbose=args.verbose, mlflow_uri=args.mlflow_uri)
        print(driver.mlflow_ui_hint(load_settings(resolve_storage(args.resume)).tracking_uri))
        return 0
    overrides = parse_set_args(args.set)
    space = args.search_space or str(resolve_profile(args.profile or "quick"))
    # Only a smoke test needs a scratch directory (its data, Ray storage and MLflow store).
    scratch = tempfile.TemporaryDirectory(prefix="glintru-smoke-") if args.smoke_test else contextlib.nullcontext()
    with scratch as tmp:
        data = args.data
        if args.smoke_test:
            from glintru.tuning.smoke import write_synthetic_dataset

            data = data or str(write_synthetic_dataset(f"{tmp}/data"))
            overrides = {"max_len": 16, "batch_size": 16, "eval_batch_size": 64, "num_negatives": 10, **overrides}
            args.num_samples = args.num_samples or 2
            args.max_epochs = args.max_epochs or 2
            args.workers = args.workers or 1
            args.storage_path = args.storage_path or f"{tmp}/ray_results"
            if not (args.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")):
                args.mlflow_uri = f"sqlite:///{tmp}/mlflow.db"
        if not data:
            raise UserError("--data: required (a prepared dataset directory), unless --smoke-test or --resume")
        out = driver.run_study(
            data_dir=data, search_space=space, storage_path=args.storage_path, mlflow_uri=args.mlflow_uri,
            experiment=args.experiment, num_samples=args.num_samples, max_epochs=args.max_epochs, workers=args.workers,
            grace_period=args.grace_period, overrides=overrides,
            cpus_per_worker=1.0 if args.cpus_per_worker is None else args.cpus_per_worker,
            gpus_per_worker=(args.gpus_per_worker or 1.0) if args.gpu else 0.0, seed=args.seed,
            max_concurrent=args.max_concurrent, address=args.address, num_cpus=args.num_cpus,
            register_name=args.register_name, mlflow_experiment=args.mlflow_experiment,
            optuna_storage=args.optuna_storage, out_dir=args.out, verbose=args.verbose,
        )
    from glintru import tracking

    print(f"{out.n_trials} trials; best {out.best_trial_id}; config {out.best_config_path}")
    if not args.smoke_test:
        print(driver.mlflow_ui_hint(tracking.resolve_tracking_uri(args.mlflow_uri)))
    return 0
