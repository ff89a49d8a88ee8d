"""A tuning study: Ray Tune + OptunaSearch (TPE, seeded) + ASHA over Ray Train trials, in MLflow.

Pattern (Train V2; ``Tuner(TorchTrainer)`` is not supported, ray-stack-notes P3): each Tune trial is
a function trainable that builds and fits a ``TorchTrainer`` named ``train-<trial_id>`` (stable, so
a restored trial's Train run resumes from its own checkpoint); ``TuneReportCallback`` forwards rank
0's per-epoch reports to Tune. The trainable reserves ``{"cpu": 0.01}`` (P2), the workers reserve
the rest. ASHA uses the 1-based ``epoch`` as its clock (P9), because Tune's ``training_iteration``
restarts at 1 after a restore while Train resumes at the saved epoch.

One metric name (``TrainConfig.valid_metric``, e.g. ``valid/full/ndcg@10``) is optimised by Tune,
Optuna and ASHA and logged to MLflow (as ``..._at_10``, MLflow forbids ``@``).

Everything needed to resume is saved next to Tune's state: ``<storage>/<name>/glintru_study.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glintru.config import build_config
from glintru.errors import MlflowUnavailable, UserError
from glintru.tuning import mlflow_log
from glintru.tuning.space import SearchSpace, load_search_space

STUDY_FILE = "glintru_study.json"


@dataclass(frozen=True)
class StudySettings:
    """Everything a study (and its resume) needs; saved as JSON in the experiment directory."""

    name: str
    storage_path: str  # local absolute directory or a pyarrow URI (s3://, gs://, ...)
    data_dir: str  # absolute path of the prepared dataset, the same on every node
    search_space: str  # absolute path of the search-space file
    model: str
    base_flat: dict[str, Any]  # fixed keys of the search space + CLI overrides
    num_samples: int
    max_epochs: int
    workers: int
    cpus_per_worker: float
    use_gpu: bool
    grace_period: int
    seed: int
    metric: str
    tracking_uri: str
    mlflow_experiment_id: str
    parent_run_id: str
    max_concurrent: int

    @property
    def experiment_path(self) -> str:
        return f"{self.storage_path.rstrip('/')}/{self.name}"

    @property
    def is_local(self) -> bool:
        return "://" not in self.storage_path


def experiment_name(space: SearchSpace, data_dir: str, options: dict[str, Any]) -> str:
    """``<model>-<12 hex>``: a hash of the search space, the dataset and the study options."""
    blob = json.dumps({"space": space.fingerprint(), "data": data_dir, **options}, sort_keys=True, default=str)
    return f"{space.model}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def resolve_storage(storage_path: str | None) -> str:
    """Local directory (made absolute; default ``./ray_results``) or a URI passed through."""
    if storage_path and "://" in storage_path:
        return storage_path.rstrip("/")
    return str(Path(storage_path or "ray_results").resolve())


def _write_text(uri_or_path: str, text: str) -> None:
    if "://" in uri_or_path:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(uri_or_path)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(text.encode())
    else:
        Path(uri_or_path).parent.mkdir(parents=True, exist_ok=True)
        Path(uri_or_path).write_text(text, encoding="utf-8")


def _read_text(uri_or_path: str) -> str:
    if "://" in uri_or_path:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(uri_or_path)
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    return Path(uri_or_path).read_text(encoding="utf-8")


def save_settings(s: StudySettings) -> None:
    _write_text(f"{s.experiment_path}/{STUDY_FILE}", json.dumps(dataclasses.asdict(s), indent=2))


def load_settings(experiment_path: str) -> StudySettings:
    """Read ``glintru_study.json`` of an experiment directory (``--resume PATH``)."""
    path = f"{experiment_path.rstrip('/')}/{STUDY_FILE}"
    try:
        data = json.loads(_read_text(path))
    except (OSError, FileNotFoundError):
        raise UserError(f"--resume {experiment_path}: no {STUDY_FILE} there; is it a glintru tune experiment directory?") from None
    return StudySettings(**data)


def max_concurrent_trials(workers: int, cpus_per_worker: float, use_gpu: bool, resources: dict[str, float]) -> int:
    """Trials that fit at once: each needs ``workers x cpus_per_worker`` CPUs (+ 0.01 for the Tune
    driver) and ``workers`` GPUs when ``use_gpu``; at least 1 (an autoscaler adds nodes later)."""
    per_cpu = workers * cpus_per_worker + 0.01
    n = math.floor(resources.get("CPU", 0.0) / per_cpu + 1e-9)
    if use_gpu:
        n = min(n, math.floor(resources.get("GPU", 0.0) / workers + 1e-9))
    return max(1, n)


TIMING_FILE = "trial_timing.json"


def trial_timing(started: float, fit_started: float, ended: float, final: dict[str, Any]) -> dict[str, float]:
    """Where a trial's wall time went (seconds): ``ray/trial_s`` from the trial function's start to
    the end of its Ray Train run, ``ray/fit_s`` inside the engine's ``fit`` on rank 0 (data, model,
    epochs, evaluation), ``ray/train_s`` in its training loop, and ``ray/overhead_s`` = trial - fit:
    Tune, MLflow set-up and Ray Train's controller, worker processes and process group."""
    trial_s = ended - started
    fit_s = float(final.get("wall_s", 0.0))
    return {
        "ray/trial_s": trial_s,
        "ray/setup_s": fit_started - started,
        "ray/fit_s": fit_s,
        "ray/train_s": float(final.get("train_s", 0.0)),
        "ray/overhead_s": max(0.0, trial_s - fit_s),
    }


def make_trainable(s: StudySettings) -> Any:
    """The Tune trainable (wrapped with its resources). Rebuilt identically for ``Tuner.restore``."""
    from ray import tune

    def train_driver(config: dict[str, Any]) -> None:
        import time

        from ray.tune.integration.ray_train import TuneReportCallback

        from glintru.distributed.trainer import run_trainer

        started = time.time()
        trial_id = tune.get_context().get_trial_id()
        run_cfg = build_config(s.model, {**s.base_flat, **config, "max_epochs": s.max_epochs}, source=f"trial {trial_id}")
        tracker = mlflow_log.BestEffort(s.tracking_uri, None, f"trial {trial_id}")
        try:
            tracker.attach(mlflow_log.get_or_create_run(
                s.tracking_uri, s.mlflow_experiment_id,
                {mlflow_log.ROLE: "trial", mlflow_log.STUDY: s.name, mlflow_log.TRIAL_ID: trial_id},
                run_name=f"trial-{trial_id}", extra_tags={mlflow_log.PARENT: s.parent_run_id},
            )[0])
        except mlflow_log.unavailable_errors() as exc:
            tracker.go_offline(exc)
        tracker.call(mlflow_log.log_params, run_cfg.to_flat())
        work_dir = f"{s.experiment_path}/work/{trial_id}" if s.is_local else None
        fit_started = time.time()
        result = run_trainer(
            run_cfg.to_flat(), s.data_dir, name=f"train-{trial_id}", storage_path=f"{s.experiment_path}/train_runs",
            workers=s.workers, use_gpu=s.use_gpu, cpus_per_worker=s.cpus_per_worker, work_dir=work_dir,
            mlflow=None if tracker.offline else {"uri": s.tracking_uri, "run_id": tracker.run_id},
            callbacks=[TuneReportCallback()],
        )
        timing = trial_timing(started, fit_started, time.time(), result.metrics or {})
        _write_text(timing_path(s, trial_id), json.dumps(timing, indent=2))  # local or remote storage
        tracker.call(mlflow_log.log_metrics, timing, int((result.metrics or {}).get("epoch", 0)))
        tracker.call(mlflow_log.end_run)

    resources: dict[str, float] = {"cpu": 0.01}
    return tune.with_resources(train_driver, resources)


def build_tuner(s: StudySettings, space: SearchSpace) -> Any:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from glintru.tuning.scheduler import LastEpochSafeASHA

    from glintru.tuning.space import to_tune_space

    searched = {k: v for k, v in to_tune_space(space).items() if k in space.params}
    return tune.Tuner(
        make_trainable(s),
        param_space=searched,
        tune_config=tune.TuneConfig(
            metric=s.metric,
            mode="max",
            num_samples=s.num_samples,
            max_concurrent_trials=s.max_concurrent,
            search_alg=OptunaSearch(seed=s.seed),
            # max_t = max_epochs + 1 and LastEpochSafeASHA: a trial is never stopped on its last epoch,
            # so its final report (test metrics) and MLflow artifacts are not cut off.
            scheduler=LastEpochSafeASHA(
                s.max_epochs, time_attr="epoch", max_t=s.max_epochs + 1,
                grace_period=min(s.grace_period, s.max_epochs), reduction_factor=2,
            ),
        ),
        run_config=tune.RunConfig(
            name=s.name, storage_path=s.storage_path, verbose=1, failure_config=tune.FailureConfig(max_failures=1)
        ),
    )


def restore_tuner(s: StudySettings) -> Any:
    from ray import tune

    if not tune.Tuner.can_restore(s.experiment_path):
        raise UserError(f"--resume {s.experiment_path}: no Ray Tune experiment state to restore there")
    return tune.Tuner.restore(
        s.experiment_path, trainable=make_trainable(s), resume_unfinished=True, resume_errored=True
    )


def _stringify(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def print_table(rows: list[tuple[str, Any]], title: str) -> None:
    width = max(len(k) for k, _ in rows) if rows else 10
    print(title)
    print("-" * (width + 16))
    for k, v in rows:
        print(f"{k:<{width}}  {_stringify(v)}")


@dataclass
class StudyOutcome:
    best_trial_id: str
    best_config_path: Path
    best_params: dict[str, Any]
    best_metrics: dict[str, float]
    n_trials: int
    parent_run_id: str


def trial_history(s: StudySettings, trial_id: str, result: Any) -> list[dict[str, float]]:
    """Per-epoch metrics of a trial: its work directory's ``history.json`` (written by rank 0 every
    epoch), else the epochs Tune recorded (remote storage)."""
    hist = Path(s.experiment_path) / "work" / trial_id / "history.json"
    if s.is_local and hist.exists():
        return json.loads(hist.read_text(encoding="utf-8"))
    rows: dict[int, dict[str, float]] = {}
    df = getattr(result, "metrics_dataframe", None)
    if df is not None and "epoch" in df:
        for row in df.to_dict("records"):
            keep = {k: float(v) for k, v in row.items() if k == "epoch" or k.startswith(("train/", "valid/"))}
            if keep.get("epoch") is not None and math.isfinite(keep["epoch"]):
                rows[int(keep["epoch"])] = keep
    return [rows[e] for e in sorted(rows)]


def timing_path(s: StudySettings, trial_id: str) -> str:
    return f"{s.experiment_path}/work/{trial_id}/{TIMING_FILE}"


def read_timing(s: StudySettings, trial_id: str) -> dict[str, float]:
    """The trial's own timing (``trial_timing.json`` in the storage path), or {} if it has none."""
    try:
        return json.loads(_read_text(timing_path(s, trial_id)))
    except (OSError, ValueError):
        return {}


def partial_timing(result: Any, history: list[dict[str, float]]) -> dict[str, float]:
    """What is known of a trial that did not time itself (stopped by ASHA, or remote storage):
    Tune's wall time up to its last report and the training-loop time of its epochs."""
    out: dict[str, float] = {}
    total = (result.metrics or {}).get("time_total_s")
    if isinstance(total, (int, float)):
        out["ray/trial_s"] = float(total)
    if history and all("train/s" in h for h in history):
        out["ray/train_s"] = float(sum(h["train/s"] for h in history))
    return out


def sync_trial(
    s: StudySettings, trial_id: str, result: Any, history: list[dict[str, float]], manifest: dict[str, Any] | None
) -> str:
    """Bring trial ``trial_id``'s MLflow run up to date from what was trained (its run is created if
    MLflow was down when the trial started), close it, and return its run id. Idempotent."""
    uri = s.tracking_uri
    run_id, _ = mlflow_log.get_or_create_run(
        uri, s.mlflow_experiment_id, {mlflow_log.ROLE: "trial", mlflow_log.STUDY: s.name, mlflow_log.TRIAL_ID: trial_id},
        run_name=f"trial-{trial_id}", extra_tags={mlflow_log.PARENT: s.parent_run_id},
    )
    params = {k: v for k, v in dict(result.config or {}).items() if not k.startswith("_")}
    run_cfg = build_config(s.model, {**s.base_flat, **params, "max_epochs": s.max_epochs}, source=f"trial {trial_id}")
    finished = result.error is None and bool(history)
    best = Path(s.experiment_path) / "work" / trial_id / "best.pt"
    mlflow_log.sync_run(
        uri, run_id, run_cfg.to_flat(), manifest, history,
        {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        run_cfg.train.valid_metric, best if s.is_local and best.exists() else None, finished,
    )
    timing = read_timing(s, trial_id)
    logged = mlflow_log.client(uri).get_run(run_id).data.metrics
    if timing and not set(map(mlflow_log.mlflow_metric_name, timing)) <= set(logged):
        mlflow_log.log_metrics(uri, run_id, timing, int(history[-1]["epoch"]) if history else 0)
    mlflow_log.end_run(uri, run_id, "FINISHED" if result.error is None else "FAILED")
    return run_id


def overhead_line(timings: list[dict[str, float]]) -> str | None:
    """One line on Ray's per-trial cost: medians of trial wall time, time in ``fit`` and in training,
    over the trials that timed themselves (those that ran to their end: ASHA kills a stopped trial)."""
    rows = [t for t in timings if {"ray/trial_s", "ray/fit_s", "ray/train_s", "ray/overhead_s"} <= set(t)]
    if not rows:
        return None

    def med(key: str) -> float:
        v = sorted(t[key] for t in rows)
        return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2

    return (
        f"time per trial (median of the {len(rows)} that ran to their end): {med('ray/trial_s'):.1f} s wall, {med('ray/fit_s'):.1f} s inside "
        f"the engine's fit ({med('ray/train_s'):.1f} s training loop); Ray/Tune/MLflow overhead "
        f"{med('ray/overhead_s'):.1f} s"
    )


def summarise(s: StudySettings, space: SearchSpace, grid: Any, out_dir: Path, register_name: str | None) -> StudyOutcome:
    """Best trial table, best config file and trials.csv (local, first), then MLflow: every trial's
    run brought up to date, the parent's summary, the best model logged and registered.

    If MLflow is unavailable the local outputs are already written and the error says how to log
    the rest (``--resume`` on the finished study syncs MLflow without training anything)."""
    import yaml

    from glintru.data.dataset import load_prepared
    from glintru.tuning import plots

    results = [r for r in grid]
    ok = [r for r in results if r.error is None and r.metrics and s.metric in r.metrics]
    ids = [str((r.metrics or {}).get("trial_id") or Path(r.path).name) for r in results]
    histories = {tid: trial_history(s, tid, r) for r, tid in zip(results, ids)}
    timings = {tid: read_timing(s, tid) or partial_timing(r, histories[tid]) for r, tid in zip(results, ids)}
    best_cfg = cfg_path = None
    params: dict[str, Any] = {}
    best_metrics: dict[str, float] = {}
    best_id = ""
    if ok:
        best = grid.get_best_result(metric=s.metric, mode="max", scope="all")
        best_id = str(best.metrics.get("trial_id"))
        params = {k: best.config[k] for k in space.params}
        best_cfg = build_config(s.model, {**s.base_flat, **params, "max_epochs": s.max_epochs}, source="best trial")
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = out_dir / "best_config.yaml"
        _atomic_write(cfg_path, yaml.safe_dump(best_cfg.to_flat(), sort_keys=False))
        metric_keys = [k for k in sorted(best.metrics) if k.startswith(("valid/", "test/"))]
        best_metrics = {k: float(best.metrics[k]) for k in metric_keys}
        k = s.metric.rsplit("@", 1)[-1]
        shown = {m: v for m, v in best_metrics.items() if m.endswith(f"@{k}") and "/mrr@" not in m}
        print_table([("trial", best_id), *params.items(), *shown.items()], f"Best trial of study {s.name} ({s.metric})")
        print(f"best config written to {cfg_path}  (glintru train --config {cfg_path} --data {s.data_dir})")
        _atomic_write(out_dir / "trials.csv", plots.trials_table(ok, list(space.params), s.metric, timings))
        line = overhead_line(list(timings.values()))
        if line:
            print(line)
    manifest = load_prepared(s.data_dir).manifest
    try:
        for r, tid in zip(results, ids):
            sync_trial(s, tid, r, histories[tid], manifest)
        uri, parent = s.tracking_uri, s.parent_run_id
        if not ok:
            mlflow_log.end_run(uri, parent, "FAILED")
            raise UserError(f"study {s.name}: no trial reported {s.metric}; see the trial errors above")
        mlflow_log.log_params(uri, parent, {f"best.{k}": v for k, v in params.items()} | {"best.trial_id": best_id})
        mlflow_log.log_metrics(uri, parent, {f"best.{k}": v for k, v in best_metrics.items()}, step=0)
        for name in ("best_config.yaml", "trials.csv"):
            if name not in mlflow_log.artifact_names(uri, parent):
                mlflow_log.log_artifact(uri, parent, out_dir / name)
        png = plots.importance_png(ok, space, s.metric, out_dir / "param_importance.png")
        if png is not None:
            mlflow_log.log_artifact(uri, parent, png)
        best_run = mlflow_log.find_run(uri, s.mlflow_experiment_id, {mlflow_log.ROLE: "trial", mlflow_log.STUDY: s.name, mlflow_log.TRIAL_ID: best_id})
        name = register_name or s.name
        if best_run is not None and "checkpoint" in mlflow_log.artifact_names(uri, best_run):
            version, new = register_best_model(uri, best_run, best_cfg, s.data_dir, name)
            print(f"best model {'registered' if new else 'already registered'} in MLflow as '{name}' version {version}"
                  f"  (glintru recommend --model models:/{name}/{version} ...)")
        mlflow_log.end_run(uri, parent)
    except mlflow_log.unavailable_errors() as exc:
        raise MlflowUnavailable(
            f"MLflow at {s.tracking_uri} is unavailable ({mlflow_log.first_line(exc)}). The study's {len(results)} trials "
            f"have ended and their results are kept in {s.experiment_path}"
            + (f" (best config: {cfg_path})" if cfg_path else "")
            + f"; once MLflow is back, `glintru tune --resume {s.experiment_path}` logs what is missing "
            "without training anything again"
        ) from None
    assert cfg_path is not None
    return StudyOutcome(best_id, cfg_path, params, best_metrics, len(results), s.parent_run_id)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def register_best_model(uri: str, run_id: str, run_cfg: Any, data_dir: str, name: str) -> tuple[str, bool]:
    """Log the best trial's final checkpoint as an MLflow PyTorch model in its run and register it
    as ``name``; returns (version, newly registered). Idempotent: a version of ``name`` from this
    run is reused (a resumed study does not register the same model twice)."""
    import tempfile

    import mlflow
    import mlflow.pytorch
    import torch

    import glintru
    from glintru.data.dataset import load_prepared
    from glintru.models import build_model

    c = mlflow_log.client(uri)
    try:
        existing = c.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except mlflow_log.unavailable_errors():
        existing = []  # an unknown registered model name raises on some stores: nothing registered yet
    if existing:
        return str(existing[0].version), False
    with tempfile.TemporaryDirectory() as tmp:
        local = c.download_artifacts(run_id, "checkpoint", tmp)
        files = sorted(Path(local).rglob("*.pt"))
        if not files:
            raise UserError(f"MLflow run {run_id}: no checkpoint artifact to register")
        state = torch.load(files[0], map_location="cpu", weights_only=True)
        model = build_model(run_cfg, load_prepared(data_dir).n_items)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        model.load_state_dict(state)
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run(run_id=run_id):
            # "pickle": `glintru recommend` needs the model object (last_hidden, item_embeddings), which
            # the default traced "pt2" format does not keep; load such models only from trusted stores.
            # Explicit requirements: MLflow's inference of them took ~10 s per call here.
            info = mlflow.pytorch.log_model(
                model, name="model", registered_model_name=name, serialization_format="pickle",
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"glintru=={glintru.__version__}"],
            )
        return str(getattr(info, "registered_model_version", "") or "1"), True


def mlflow_ui_hint(uri: str) -> str:
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return f"open the MLflow UI with:  cd {db.parent} && mlflow ui --backend-store-uri {uri}   (then http://127.0.0.1:5000)"
    return f"open the MLflow UI at {uri}"


def default_num_cpus() -> int | None:
    env = os.environ.get("GLINTRU_NUM_CPUS")
    return int(env) if env else None


def check_writable_paths(storage: str, tracking_uri: str) -> None:
    """A UserError naming the option if the local storage path or the sqlite db's directory cannot be written."""
    checks = []
    if "://" not in storage:
        checks.append(("--storage-path", Path(storage)))
    if tracking_uri.startswith("sqlite:///"):
        checks.append(("--mlflow-uri", Path(tracking_uri[len("sqlite:///") :]).parent))
    for flag, directory in checks:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / f".glintru-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"{flag}: cannot create or write {directory} ({exc.strerror or exc})") from None


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
    cpus_per_worker: float = 1.0,
    use_gpu: bool = False,
    seed: int | None = None,
    max_concurrent: int | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    register_name: str | None = None,
    out_dir: str | None = None,
) -> StudyOutcome:
    """Start a new study (or continue the one with the same deterministic name) and summarise it."""
    import ray

    from glintru.data.dataset import load_prepared
    from glintru.distributed.trainer import init_ray

    space = load_search_space(search_space)
    data_abs = str(Path(data_dir).resolve())
    load_prepared(data_abs)
    base = {**space.fixed, **overrides}
    build_config(space.model, base, source="--set")
    opts = {
        "num_samples": num_samples or space.tune.get("num_samples", 4),
        "max_epochs": max_epochs or space.tune.get("max_epochs", 3),
        "workers": workers or space.tune.get("workers", 2),
        "seed": seed if seed is not None else space.tune.get("seed", 0),
        "grace_period": space.tune.get("grace_period", 1),
    }
    metric = build_config(space.model, base).train.valid_metric
    name = experiment or experiment_name(space, data_abs, {**opts, "overrides": base, "gpu": use_gpu})
    storage = resolve_storage(storage_path)
    uri = mlflow_log.resolve_tracking_uri(mlflow_uri)
    exp_path = f"{storage}/{name}"
    check_writable_paths(storage, uri)  # before Ray starts or an MLflow run is opened
    if "://" not in storage and (Path(exp_path) / STUDY_FILE).exists():
        print(f"experiment {exp_path} exists; continuing it (same as --resume {exp_path})")
        return resume_study(exp_path, address=address, num_cpus=num_cpus, register_name=register_name, out_dir=out_dir)
    try:  # MLflow must be up to start a study (its parent run id is part of the study's settings)
        exp_id = mlflow_log.ensure_experiment(uri, name)
        parent, _ = mlflow_log.get_or_create_run(uri, exp_id, {mlflow_log.ROLE: "study", mlflow_log.STUDY: name}, run_name=name)
    except mlflow_log.unavailable_errors() as exc:
        raise mlflow_log.unavailable_at_start(uri, exc) from None
    init_ray(address, num_cpus, min_cpus=opts["workers"] * cpus_per_worker)
    try:
        mc = max_concurrent or max_concurrent_trials(opts["workers"], cpus_per_worker, use_gpu, ray.cluster_resources())
        s = StudySettings(
            name=name, storage_path=storage, data_dir=data_abs, search_space=str(Path(search_space).resolve()),
            model=space.model, base_flat=base, num_samples=opts["num_samples"], max_epochs=opts["max_epochs"],
            workers=opts["workers"], cpus_per_worker=cpus_per_worker, use_gpu=use_gpu, grace_period=opts["grace_period"],
            seed=opts["seed"], metric=metric, tracking_uri=uri, mlflow_experiment_id=exp_id, parent_run_id=parent,
            max_concurrent=mc,
        )
        save_settings(s)
        mlflow_log.BestEffort(uri, parent, f"study {name}").call(mlflow_log.log_params, {
            "model": s.model, "search_space": Path(search_space).name, "num_samples": s.num_samples,
            "max_epochs": s.max_epochs, "workers": s.workers, "seed": s.seed, "metric": s.metric,
            "max_concurrent": mc, **{f"fixed.{k}": v for k, v in base.items()},
            **{f"space.{k}": f"{p.kind}{list(p.values) if p.values else [p.low, p.high]}" for k, p in space.params.items()},
        })
        print(f"study {name}: {s.num_samples} trials x <= {s.max_epochs} epochs, {s.workers} workers each, "
              f"{mc} at a time; Tune state in {exp_path}")
        grid = build_tuner(s, space).fit()
        return summarise(s, space, grid, Path(out_dir or (exp_path if s.is_local else name)), register_name)
    finally:
        ray.shutdown()


def _reopen(uri: str, run_id: str) -> None:
    mlflow_log.client(uri).update_run(run_id, status="RUNNING")


def resume_study(
    experiment_path: str,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    register_name: str | None = None,
    out_dir: str | None = None,
) -> StudyOutcome:
    """``--resume PATH``: restore Tune (finished trials kept, unfinished/errored resumed, searcher
    state restored) with the same trainable, the same MLflow parent run and the same trial runs."""
    import ray

    from glintru.distributed.trainer import init_ray

    exp_path = resolve_storage(experiment_path)
    s = load_settings(exp_path)
    space = load_search_space(s.search_space)
    init_ray(address, num_cpus, min_cpus=s.workers * s.cpus_per_worker)
    try:
        mlflow_log.BestEffort(s.tracking_uri, s.parent_run_id, f"study {s.name}").call(_reopen)
        print(f"resuming study {s.name} from {exp_path}")
        grid = restore_tuner(s).fit()
        return summarise(s, space, grid, Path(out_dir or (exp_path if s.is_local else s.name)), register_name)
    finally:
        ray.shutdown()
