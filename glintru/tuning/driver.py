"""The study driver: Ray Tune + Optuna (TPE) + ASHA over GLINT-RU trials, tracked in MLflow.

Each Tune trial is a function trainable. A single-worker trial trains in its own process with the
engine (:func:`glintru.distributed.trainer.run_engine`, reporting to Tune every epoch with a
checkpoint): no Ray Train controller, worker group or process group to start, which is most of a
short trial's fixed cost. A multi-worker trial builds and fits a ``TorchTrainer`` named
``train-<trial_id>`` (stable, so a restored trial's Train run resumes from its own checkpoint) and
forwards rank 0's reports to Tune. ASHA uses the 1-based ``epoch`` as its clock, because Tune's
``training_iteration`` restarts at 1 after a restore while the engine resumes at the saved epoch.

One metric name (``TrainConfig.valid_metric``, e.g. ``valid/full/ndcg@10``) is optimised by Tune,
Optuna and ASHA and logged to MLflow (as ``..._at_10``: MLflow forbids ``@``).

Interrupts: SIGINT (Ctrl+C) or SIGTERM stop the study gracefully: Tune saves its state, nothing is
summarised or registered, the MLflow parent run is marked KILLED, and the command prints how to
resume and exits 130 (SIGINT) or 143 (SIGTERM). A second signal stops at once. Re-running the same
command, or ``glintru tune --resume DIR``, continues the study on any storage.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from glintru import storage, tracking
from glintru.errors import UserError
from glintru.tuning import search, study_run
from glintru.tuning.settings import (
    StudySettings,
    check_same_study,
    check_writable_paths,
    dataset_name,
    default_optuna_storage,
    experiment_name,
    load_settings,
    pinned_defaults,
    resolve_storage,
    save_settings,
    study_exists,
)
from glintru.tuning.space import SearchSpace, load_search_space
from glintru.tuning.summary import StudyOutcome, summarise, timing_path, trial_timing


class StudyInterrupted(UserError):
    """The study was stopped by a signal; its state is saved and ``--resume`` continues it."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


_process_trials = [0]  # trials this process has run (a Tune actor reused across trials counts up)


def make_trainable(s: StudySettings, verbose: bool = False) -> Any:
    """The Tune trainable (wrapped with its resources). Rebuilt identically for ``Tuner.restore``."""
    from ray import tune

    def train_driver(config: dict[str, Any]) -> None:
        if not verbose:
            _quiet_ray(False)  # this trial's process: no per-checkpoint INFO lines
        trial_id = tune.get_context().get_trial_id()
        started = time.time()
        _process_trials[0] += 1
        run_cfg = s.trial_config(config, source=f"trial {trial_id}")
        tracker = tracking.BestEffort(s.tracking_uri, None, f"trial {trial_id}")
        try:
            tracker.attach(tracking.get_or_create_run(
                s.tracking_uri, s.mlflow_experiment_id,
                {tracking.ROLE: "trial", tracking.STUDY: s.name, tracking.TRIAL_ID: trial_id},
                run_name=f"trial-{trial_id}", extra_tags={tracking.PARENT: s.parent_run_id},
            )[0])
        except tracking.unavailable_errors() as exc:
            tracker.go_offline(exc)
        tracker.call(tracking.log_params, run_cfg.to_flat())
        work_dir = storage.join(s.experiment_path, "work", trial_id) if s.is_local else None
        mlf = None if tracker.offline else {"uri": s.tracking_uri, "run_id": tracker.run_id}
        fit_started = time.time()
        if s.workers == 1:
            final = _train_in_process(s, run_cfg, work_dir, mlf)
        else:
            from ray.tune.integration.ray_train import TuneReportCallback

            from glintru.distributed.trainer import run_trainer

            result = run_trainer(
                run_cfg.to_flat(), s.data_dir, name=f"train-{trial_id}", storage_path=f"{s.experiment_path}/train_runs",
                workers=s.workers, gpus_per_worker=s.gpus_per_worker, cpus_per_worker=s.cpus_per_worker,
                work_dir=work_dir, mlflow=mlf, callbacks=[TuneReportCallback()],
            )
            final = dict(result.metrics or {})
        timing = {**trial_timing(started, fit_started, time.time(), final), "ray/process_trial": _process_trials[0]}
        storage.write_text(timing_path(s, trial_id), json.dumps(timing, indent=2))
        tracker.call(tracking.log_timing, timing)
        tracker.call(tracking.end_run)

    if s.workers == 1:
        resources: dict[str, float] = {"cpu": s.cpus_per_worker, **({"gpu": s.gpus_per_worker} if s.use_gpu else {})}
    else:
        resources = {"cpu": 0.01}
    return tune.with_resources(train_driver, resources)


def _train_in_process(s: StudySettings, run_cfg: Any, work_dir: str | None, mlf: dict[str, str] | None) -> dict[str, float]:
    """A single-worker trial: the engine in the trial's own process, reporting to Tune."""
    import torch
    from ray import tune

    from glintru.distributed.trainer import Hooks, run_engine

    final: dict[str, float] = {}

    def report(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        final.clear()
        final.update(metrics)
        if checkpoint_dir is not None:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
        else:
            tune.report(metrics)

    device = torch.device("cuda") if s.use_gpu else torch.device("cpu")
    config = {"flat": run_cfg.to_flat(), "data_dir": s.data_dir, "work_dir": work_dir, "use_gpu": s.use_gpu, "mlflow": mlf}
    run_engine(config, Hooks(report, tune.get_checkpoint), device=device)
    return final


class ConsoleReporter:
    """Compact console output instead of Tune's full result table: one line per epoch, and one
    small table (trial, its searched values, epoch, the optimised metric, state) when a trial
    starts or ends. Built as a ``ray.tune.Callback`` by :func:`console_callback`."""

    def __init__(self, metric: str, params: list[str], max_epochs: int) -> None:
        self.metric, self.params, self.max_epochs = metric, params, max_epochs
        self.best: dict[str, float] = {}
        self.epoch: dict[str, int] = {}
        self.finished: set[str] = set()

    def recall(self, trial: Any) -> None:
        """Learn a trial this reporter has not seen report from the results Tune saved and restored
        with it: in a resumed study, the trials that ran before the interruption keep their epoch,
        best value and finished state (a finished trial is not shown as stopped by ASHA)."""
        meta = getattr(trial, "run_metadata", None)
        last = getattr(meta, "last_result", None) or {}
        tid = trial.trial_id
        if tid in self.epoch or "epoch" not in last:
            return
        self.epoch[tid] = int(last["epoch"])
        best = meta.metric_analysis.get(self.metric, {}).get("max")
        if best is not None:
            self.best[tid] = float(best)
        if any(k.startswith("test/") for k in last):
            self.finished.add(tid)

    def line(self, trial: Any, result: dict[str, Any]) -> str:
        tid = trial.trial_id
        self.recall(trial)  # a resumed trial's best includes the epochs before the interruption
        epoch = int(result.get("epoch", 0))
        self.epoch[tid] = epoch
        value = result.get(self.metric)
        if value is not None:
            self.best[tid] = max(self.best.get(tid, float("-inf")), float(value))
        if any(k.startswith("test/") for k in result):
            self.finished.add(tid)
            return f"{time.strftime('%H:%M:%S')} trial {tid} done: best {self.metric} {self.best.get(tid, float('nan')):.4f}"
        loss = result.get("train/loss")
        secs = result.get("train/s")
        return (f"{time.strftime('%H:%M:%S')} trial {tid} epoch {epoch}/{self.max_epochs}  {self.metric} "
                f"{float(value):.4f}" + (f"  loss {loss:.4f}" if loss is not None else "")
                + (f"  {secs:.1f}s" if secs is not None else ""))

    def table(self, trials: list[Any], trial: Any = None, status: str | None = None) -> str:
        """The trials' table, ``trial`` shown with the ``status`` it is entering: Tune calls
        ``on_trial_start`` while the starting trial is still PENDING and ``on_trial_complete`` while
        the ending one is still RUNNING (whether it finished or ASHA stopped it), and sets the new
        status after its callbacks."""
        def state(t: Any) -> str:
            now = status if t is trial and status else str(t.status)
            if now == "TERMINATED" and t.trial_id not in self.finished:
                return "STOPPED (ASHA)"
            return now

        def fmt(v: Any) -> str:
            return f"{v:.4g}" if isinstance(v, float) else str(v)

        for t in trials:
            self.recall(t)
        head = ["trial", *self.params, "epoch", self.metric, "state"]
        rows = [[t.trial_id, *[fmt(t.config.get(p, "")) for p in self.params], str(self.epoch.get(t.trial_id, "")),
                 f"{self.best[t.trial_id]:.4f}" if t.trial_id in self.best else "", state(t)] for t in trials]
        width = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
        out = ["  ".join(h.ljust(w) for h, w in zip(head, width))]
        out += ["  ".join(c.ljust(w) for c, w in zip(r, width)) for r in rows]
        return "\n".join(out)


def console_callback(metric: str, params: list[str], max_epochs: int) -> Any:
    from ray.tune import Callback

    class _Console(Callback):
        def __init__(self) -> None:
            self.reporter = ConsoleReporter(metric, params, max_epochs)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            print(self.reporter.line(trial, result), flush=True)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            print(self.reporter.table(trials, trial, "RUNNING"), flush=True)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            print(self.reporter.table(trials, trial, "TERMINATED"), flush=True)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            print(f"trial {trial.trial_id} failed; see its error above", file=sys.stderr, flush=True)
            print(self.reporter.table(trials), flush=True)

    return _Console()


REUSE_ENV = "GLINTRU_REUSE_TRIAL_PROCESSES"


def reuse_trial_processes(s: StudySettings) -> bool:
    """Whether a finished trial's process runs the next trial (Tune's ``reuse_actors``).

    A single-worker trial trains in its own Ray actor; a new process per trial pays Python, torch,
    MLflow and the first optimizer's ``torch._dynamo`` import again, about 15 s a trial on a 2-core
    machine, most of a short trial's time (``benchmarks/trial_overhead.py --reuse 1 0``: a median
    trial of 17.8 s in a new process, 2.7 s in a reused one). Trials share nothing through the
    process: each builds its data, model and RNG state from its config and logs to its own MLflow
    run by id, so the results are those of fresh processes (the benchmark compares them trial by
    trial). Trials on Ray Train workers (``workers > 1``)
    start their worker group per trial either way, and keep one process per trial.
    ``GLINTRU_REUSE_TRIAL_PROCESSES=0`` turns it off when a study starts (a resumed study keeps the
    choice it started with: Tune saves it)."""
    return s.workers == 1 and os.environ.get(REUSE_ENV, "1") != "0"


def build_tuner(s: StudySettings, space: SearchSpace, verbose: bool) -> Any:
    from ray import tune

    from glintru.tuning.scheduler import LastEpochSafeASHA
    from glintru.tuning.space import to_tune_space

    searched = {k: v for k, v in to_tune_space(space).items() if k in space.params}
    searcher = search.make_searcher(s.name, s.optuna_storage, s.seed, s.num_samples,
                                    [search.paper_point(space, s.base_flat)])
    return tune.Tuner(
        make_trainable(s, verbose),
        param_space=searched,
        tune_config=tune.TuneConfig(
            metric=s.metric, mode="max", num_samples=s.num_samples, max_concurrent_trials=s.max_concurrent,
            search_alg=searcher, reuse_actors=reuse_trial_processes(s),
            # max_t = max_epochs + 1 and LastEpochSafeASHA: a trial is never stopped on its last epoch,
            # so its final report (test metrics) and MLflow artifacts are not cut off.
            scheduler=LastEpochSafeASHA(
                s.max_epochs, time_attr="epoch", max_t=s.max_epochs + 1,
                grace_period=s.asha_grace, reduction_factor=2,
            ),
        ),
        run_config=tune.RunConfig(
            name=s.name, storage_path=s.storage_path, verbose=1 if verbose else 0,
            failure_config=tune.FailureConfig(max_failures=1),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[] if verbose else [console_callback(s.metric, list(space.params), s.max_epochs)],
        ),
    )


class _Signals:
    """SIGINT / SIGTERM during ``Tuner.fit``: the first asks Tune to stop and save (through its
    SIGUSR1 handler), the second stops at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # this handler forwards the first SIGINT itself
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
            print(f"\n{signal.Signals(signum).name}: stopping the study and saving its state "
                  "(send it again to stop at once)", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGUSR1)  # Tune's own graceful stop
            return
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _fit(s: StudySettings, tuner: Any) -> Any:
    """``tuner.fit()`` under :class:`_Signals`; a signal becomes :class:`StudyInterrupted` after
    Tune has saved its state (or at once on the second signal), with the parent run KILLED."""
    with _Signals() as signals:
        try:
            grid = tuner.fit()
        except KeyboardInterrupt:
            signals.received = signals.received or signal.SIGINT
            grid = None
    if signals.received is None:
        return grid
    try:
        tracking.end_run(s.tracking_uri, s.parent_run_id, "KILLED")
    except tracking.unavailable_errors():
        pass
    raise StudyInterrupted(
        f"study {s.name} interrupted; its state is saved in {s.experiment_path}. Continue it with:  "
        f"glintru tune --resume {s.experiment_path}", signals.received)


def _quiet_ray(verbose: bool) -> None:
    """Ray's internal console noise off unless ``--verbose`` (set before Ray starts)."""
    import logging

    if verbose:
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter is silent at verbose=0
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("ray", "ray.tune", "ray.train", "ray.data", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)  # its interrupt lines name Tuner.restore, not --resume
    controller = logging.getLogger("ray.tune.execution.tune_controller")
    if not any(isinstance(f, TrialUserErrors) for f in controller.filters):
        controller.addFilter(TrialUserErrors())


class TrialUserErrors:
    """Logging filter: a trial stopped by a UserError (bad input its configuration met: a catalogue
    too small for a sampled ``num_negatives``, a head count that does not divide the hidden size)
    is logged as its one-line message instead of Ray's traceback through Tune's internals.
    Other trial errors keep their traceback."""

    def filter(self, record: Any) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        cause = getattr(exc, "cause", exc)  # Ray's RayTaskError holds the trial's own exception
        if isinstance(cause, UserError):
            record.msg, record.args = f"{record.getMessage()}: error: {cause}", ()
            record.exc_info = record.exc_text = None
        return True


def run_study(
    *,
    data_dir: str,
    search_space: str,
    storage_path: str | None,
    mlflow_uri: str | None,
    experiment: str | None,
    num_samples: int | None,
    max_epochs: int | None,
    workers: int | None,
    overrides: dict[str, Any],
    grace_period: int | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    seed: int | None = None,
    max_concurrent: int | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    register_name: str | None = None,
    mlflow_experiment: str | None = None,
    optuna_storage: str | None = None,
    out_dir: str | None = None,
    verbose: bool = False,
) -> StudyOutcome:
    """Start a new study (or continue the one with the same deterministic name) and summarise it."""
    from glintru.config import build_config
    from glintru.data.dataset import load_prepared

    _quiet_ray(verbose)
    space = load_search_space(search_space)
    data_abs = storage.absolute(data_dir)
    data = load_prepared(data_abs)  # a bad --data fails here, before Ray or MLflow
    base = {**space.fixed, **overrides}
    train_cfg = build_config(space.model, base, source="--set").train
    metric = train_cfg.valid_metric
    opts = {
        "num_samples": num_samples or space.tune.get("num_samples", 4),
        "max_epochs": max_epochs or space.tune.get("max_epochs", 3),
        "workers": workers or space.tune.get("workers", 1),
        "seed": seed if seed is not None else space.tune.get("seed", 0),
        "grace_period": grace_period or space.tune.get("grace_period", 1),
    }
    if cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise UserError("--cpus-per-worker must be > 0 and --gpus-per-worker >= 0")
    from glintru.engine.optim import check_sparse_workers  # torch: imported when a study starts

    sparse = base.get("embedding_update") == "sparse" or "sparse" in getattr(space.params.get("embedding_update"), "values", ())
    check_sparse_workers("sparse" if sparse else "auto", opts["workers"], f"--workers {opts['workers']} per trial")
    name = experiment or experiment_name(space, data_abs, {**opts, "overrides": base, "gpu": gpus_per_worker > 0})
    store = resolve_storage(storage_path)
    uri = tracking.resolve_tracking_uri(mlflow_uri)
    exp_path = storage.join(store, name)
    check_writable_paths(store, uri)  # before Ray starts or an MLflow run is opened
    if study_exists(exp_path):
        if experiment is not None:  # a derived name already differs when any of these does
            check_same_study(load_settings(exp_path), space, data_abs, base, opts, cpus_per_worker, gpus_per_worker)
        print(f"experiment {exp_path} exists; continuing it (same as --resume {exp_path})")
        # a derived name fingerprints the search space: the file given now is the study's own space,
        # wherever the file recorded at the start has gone since (another checkout, another node)
        return resume_study(exp_path, address=address, num_cpus=num_cpus, out_dir=out_dir, verbose=verbose,
                            space=space if experiment is None else None, mlflow_uri=mlflow_uri)
    if not {"num_negatives", "negative_sampling"} & set(space.params):
        from glintru.engine.evaluate import negatives_for

        for split in ("valid", "test"):  # a catalogue too small for the sampled protocol: here, not in every trial
            negatives_for(data, split, train_cfg, check_only=True)
    with _study_lock(exp_path):
        return _new_study(space, data_abs, base, metric, opts, name, store, uri, exp_path, cpus_per_worker,
                          gpus_per_worker, max_concurrent, address, num_cpus, register_name, mlflow_experiment,
                          optuna_storage, out_dir, search_space, verbose)


def _study_lock(exp_path: str) -> Any:
    """Two `glintru tune` commands on one (local) experiment directory: the second refuses at once."""
    import contextlib

    if storage.is_remote(exp_path):
        return contextlib.nullcontext()
    return storage.DirectoryLock(exp_path, "glintru tune")


def _new_study(space: SearchSpace, data_abs: str, base: dict[str, Any], metric: str, opts: dict[str, Any], name: str,
               store: str, uri: str, exp_path: str, cpus_per_worker: float, gpus_per_worker: float,
               max_concurrent: int | None, address: str | None, num_cpus: int | None, register_name: str | None,
               mlflow_experiment: str | None, optuna_storage: str | None, out_dir: str | None, search_space: str,
               verbose: bool) -> StudyOutcome:
    import ray

    from glintru.distributed.capacity import check_placeable, cluster_capacity, max_concurrent_trials
    from glintru.distributed.trainer import init_ray

    base = {**pinned_defaults(), **base}  # a resume after an upgrade trains as the study started

    default_name = f"{dataset_name(data_abs)}-{space.model}"
    mlflow_exp = mlflow_experiment or default_name
    try:  # MLflow must be up to start a study (its parent run id is part of the study's settings)
        exp_id, parent = study_run.open_parent(uri, mlflow_exp, name)
    except tracking.unavailable_errors() as exc:
        raise tracking.unavailable_at_start(uri, exc) from None
    started = init_ray(address, num_cpus, min_cpus=opts["workers"] * cpus_per_worker)
    try:
        cap = cluster_capacity()
        try:
            check_placeable(opts["workers"], cpus_per_worker, gpus_per_worker, cap)
        except UserError:
            tracking.end_run(uri, parent, "FAILED")
            raise
        mc = max_concurrent or max_concurrent_trials(opts["workers"], cpus_per_worker, gpus_per_worker, cap)
        s = StudySettings(
            name=name, storage_path=store, data_dir=data_abs, search_space=str(Path(search_space).resolve()),
            model=space.model, base_flat=base, num_samples=opts["num_samples"], max_epochs=opts["max_epochs"],
            workers=opts["workers"], cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
            grace_period=opts["grace_period"], seed=opts["seed"], metric=metric, tracking_uri=uri,
            mlflow_experiment=mlflow_exp, mlflow_experiment_id=exp_id, parent_run_id=parent,
            register_name=register_name or default_name, max_concurrent=mc,
            optuna_storage=optuna_storage or default_optuna_storage(exp_path, name),
        )
        if s.is_local:
            Path(exp_path).mkdir(parents=True, exist_ok=True)
        save_settings(s)
        study_run.log_study(s, space)
        print(f"study {name}: {s.num_samples} trials x <= {s.max_epochs} epochs (ASHA grace "
              f"{s.asha_grace}), {s.workers} worker(s) each, "
              f"{mc} at a time ({cap.source}); Tune state in {exp_path}; Optuna study in {s.optuna_storage}")
        grid = _fit(s, build_tuner(s, space, verbose))
        return summarise(s, space, grid, Path(out_dir or (exp_path if s.is_local else name)))
    finally:
        if started:
            ray.shutdown()


def resume_study(
    experiment_path: str,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    out_dir: str | None = None,
    verbose: bool = False,
    space: SearchSpace | None = None,
    mlflow_uri: str | None = None,
) -> StudyOutcome:
    """``--resume PATH``: restore Tune (finished trials kept, unfinished/errored resumed, searcher
    state restored) with the same trainable, the same MLflow parent run and the same trial runs.

    ``space``: the study's search space when the caller already holds it (``glintru tune`` run
    again with the same file); otherwise it is read from the path recorded when the study started.
    ``mlflow_uri``: log the study to this MLflow from now on (see :func:`study_run.reconnect`)."""
    from ray import tune

    exp_path = resolve_storage(experiment_path)
    s = load_settings(exp_path)
    if space is None:
        try:
            space = load_search_space(s.search_space)
        except UserError as exc:
            raise UserError(f"{exc} (recorded when study {s.name} started); to continue it, run the same "
                            f"`glintru tune --search-space FILE ...` command with the file at its new place") from None
    if not tune.Tuner.can_restore(s.experiment_path):
        raise UserError(f"--resume {s.experiment_path}: no Ray Tune experiment state to restore there")
    _quiet_ray(verbose)
    with _study_lock(s.experiment_path):
        # the parent run found again (back to RUNNING) or made anew, before the trainable captures the settings
        s = study_run.reconnect(s, space, mlflow_uri)
        return _resume(s, space, exp_path, address, num_cpus, out_dir, verbose)


def _tolerate_checkpoints_already_deleted() -> None:
    """Make Tune's checkpoint clean-up treat a checkpoint that is already gone as deleted.

    A restored trial's checkpoint list comes from the last experiment snapshot. When the driver was
    killed after a trial had deleted an older checkpoint (``num_to_keep``) but before the next
    snapshot, the list still names it, and Ray 2.60 raises ``FileNotFoundError`` when it deletes it
    again: a Tune ERROR with a traceback on the console, and the trial's checkpoint bookkeeping
    cut short. Patched in the driver process only (where Tune keeps the list); a Ray without the
    function is left alone.
    """
    from ray.train._internal import checkpoint_manager

    delete = getattr(checkpoint_manager, "_delete_fs_path", None)
    if delete is None or getattr(delete, "glintru_tolerant", False):
        return

    def delete_if_present(fs: Any, fs_path: str) -> None:
        try:
            delete(fs=fs, fs_path=fs_path)
        except FileNotFoundError:
            pass

    delete_if_present.glintru_tolerant = True  # type: ignore[attr-defined]
    checkpoint_manager._delete_fs_path = delete_if_present


def _resume(s: StudySettings, space: SearchSpace, exp_path: str, address: str | None, num_cpus: int | None,
            out_dir: str | None, verbose: bool) -> StudyOutcome:
    import ray
    from ray import tune

    from glintru.distributed.trainer import init_ray

    out = Path(out_dir or (exp_path if s.is_local else s.name))
    # Tune's saved state is read once, before any Ray: a study whose trials have all ended has
    # nothing left to run, so it is summarised (MLflow catch-up, summary, registry) without a cluster.
    _tolerate_checkpoints_already_deleted()
    tuner = tune.Tuner.restore(s.experiment_path, trainable=make_trainable(s, verbose), resume_unfinished=True,
                               resume_errored=True)
    saved = tuner.get_results()
    ended = len(saved) == s.num_samples and saved.num_terminated == len(saved)  # none pending, running or errored
    if ended:
        print(f"study {s.name}: all {len(saved)} trials have ended; summarising it from {exp_path} (nothing to train)")
        return summarise(s, space, saved, out)
    started = init_ray(address, num_cpus, min_cpus=s.workers * s.cpus_per_worker)
    try:
        print(f"resuming study {s.name} from {exp_path}")
        return summarise(s, space, _fit(s, tuner), out)
    finally:
        if started:
            ray.shutdown()


def mlflow_ui_hint(uri: str) -> str:
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return f"open the MLflow UI with:  cd {db.parent} && mlflow ui --backend-store-uri {uri}   (then http://127.0.0.1:5000)"
    return f"open the MLflow UI at {uri}"
