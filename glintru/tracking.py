"""MLflow tracking for `glintru train` (one process or Ray Train) and `glintru tune` (one study
parent, one child run per trial). It sits beside the engine: commands, the Ray Train worker and the
Tune driver all log through it, and a run's outputs reach it as one :class:`RunRecord`.

Runs are found again by tag, never by an in-memory map, so a resumed study reuses its parent run
and every trial's run instead of opening duplicates:

* study parent: ``glintru.role=study``, ``glintru.study=<experiment name>``
* trial child:  ``glintru.role=trial``, ``glintru.study=<name>``, ``glintru.trial_id=<Tune trial id>``,
  ``mlflow.parentRunId=<parent run id>``
* single training: ``glintru.role=train``, ``glintru.run_name=<name>``

Tracking URIs are always absolute (Tune runs each trial in its own working directory, so a relative
URI would scatter one store per trial): the default is ``sqlite:///<abs cwd>/mlflow.db`` with
artifacts in ``<abs cwd>/mlruns``, created on the driver with an explicit artifact location (an
experiment created by a remote worker would otherwise point its artifacts at that worker's disk), so
``mlflow ui`` started in that directory shows everything with no extra set-up.

MLflow outages never stop training. Inside a trial every call goes through :class:`BestEffort`:
MLflow's HTTP client retries each request with exponential back-off (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``); if it still fails, the trial prints one warning and trains
on without MLflow. Its results stay in the Ray storage path and its work directory, and the study
driver logs what is missing when the trials end (:func:`sync_run`), or, if MLflow is still down
then, on ``glintru tune --resume`` (nothing is trained again).

MLflow forbids ``@`` in metric names, so the engine's ``valid/full/ndcg@10`` is logged as
``valid/full/ndcg_at_10`` (:func:`mlflow_metric_name`); Ray Tune and Optuna use the engine's name.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glintru.errors import UserError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from glintru.errors import MlflowUnavailable

ROLE = "glintru.role"
STUDY = "glintru.study"
TRIAL_ID = "glintru.trial_id"
RUN_NAME = "glintru.run_name"
PARENT = "mlflow.parentRunId"
DEFAULT_EXPERIMENT = "glintru"

# MLflow's client prints two links ("View run ...", "View experiment ...") to stdout each time a run
# logged to a tracking server ends: two lines per trial in the middle of the study's console table.
# glintru prints the UI's address once at the end instead; set the variable to false to get them back.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "MLflow could not be reached or refused the request"."""
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.exceptions.RequestException, OSError)


class BestEffort:
    """MLflow calls for one run that must never stop training (a trial's driver and rank 0).

    ``call(fn, *args)`` runs ``fn(uri, run_id, *args)``. The first failure (after MLflow's own
    retries with back-off) prints one warning to stderr and turns the logger off for the rest of
    the run, so a dead server costs one retry budget, not one per epoch; the study driver catches
    the logs up later (:func:`sync_run`).
    """

    def __init__(self, tracking_uri: str, run_id: str | None, label: str) -> None:
        self.uri, self.run_id, self.label = tracking_uri, run_id, label
        self.offline = run_id is None
        self.error: str | None = None

    def attach(self, run_id: str) -> None:
        """Log to ``run_id`` from now on (a run created after the logger)."""
        self.run_id, self.offline = run_id, False

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> bool:
        """True if the call went through; False if MLflow is (or has been) unavailable."""
        if self.offline:
            return False
        try:
            fn(self.uri, self.run_id, *args, **kwargs)
            return True
        except unavailable_errors() as exc:
            self.go_offline(exc)
            return False

    def go_offline(self, exc: BaseException) -> None:
        import sys

        self.offline = True
        self.error = first_line(exc)
        print(
            f"warning: {self.label}: MLflow at {self.uri} is unavailable ({self.error}); training continues, "
            "results are kept in the Ray storage path and logged to MLflow when the study ends "
            "(or on `glintru tune --resume`)",
            file=sys.stderr, flush=True,
        )


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def unavailable_at_start(uri: str, exc: BaseException) -> MlflowUnavailable:
    """The error for an MLflow that is down before anything was trained (`train --workers`, `tune`)."""
    from glintru.errors import MlflowUnavailable

    return MlflowUnavailable(
        f"--mlflow-uri {uri}: MLflow is unavailable ({first_line(exc)}); start the tracking server "
        "or choose another --mlflow-uri. Nothing was trained."
    )


def unavailable_after_run(exc: BaseException, out: str | Path) -> MlflowUnavailable:
    """The error for an MLflow that is down when a finished `glintru train` run is logged."""
    from glintru.errors import MlflowUnavailable

    return MlflowUnavailable(
        f"--mlflow-uri: MLflow is unavailable ({first_line(exc)}); the run finished and is saved in {out}. "
        "Once MLflow is back, the same command logs it (the run resumes from its final checkpoint)"
    )


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """``sqlite:///<abs cwd>/mlflow.db`` (absolute: a relative URI scatters one db per trial)."""
    return f"sqlite:///{Path(cwd or os.getcwd()).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None) -> str:
    """``--mlflow-uri`` if given, else ``MLFLOW_TRACKING_URI``, else the default; made absolute.

    A relative sqlite path (``sqlite:///mlflow.db``) or a bare directory path is resolved against the
    current directory, because Tune runs each trial in its own working directory.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        rest = uri[len("sqlite:///") :]
        if not rest.startswith("/"):
            uri = f"sqlite:///{Path(rest).resolve()}"
        return uri
    if "://" in uri:
        return uri
    if uri.startswith("file:"):
        return uri
    raise UserError(
        f"--mlflow-uri {uri!r}: expected a URI such as sqlite:////abs/path/mlflow.db or http://host:5000"
    )


def default_artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment's artifacts go: ``<dir of the sqlite db>/mlruns`` for sqlite;
    None (the server's ``--artifacts-destination``) for a tracking server."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        return (db.parent / "mlruns").resolve().as_uri()
    return None


def mlflow_metric_name(key: str) -> str:
    """``valid/full/ndcg@10`` -> ``valid/full/ndcg_at_10`` (MLflow rejects ``@``)."""
    return key.replace("@", "_at_")


def client(tracking_uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """Id of experiment ``name``, created (on the driver) with an explicit artifact location."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise UserError(f"MLflow experiment '{name}' is deleted; restore it in the UI or choose --experiment")
        return exp.experiment_id
    return c.create_experiment(name, artifact_location=default_artifact_location(tracking_uri),
                               tags={EXPERIMENT_KIND[0]: EXPERIMENT_KIND[1]})


def tag_filter(tags: Mapping[str, str]) -> str:
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in sorted(tags.items()))


def find_run(tracking_uri: str, experiment_id: str, tags: Mapping[str, str]) -> str | None:
    """Run id of the oldest run of the experiment carrying all ``tags``, or None."""
    runs = client(tracking_uri).search_runs(
        [experiment_id], filter_string=tag_filter(tags), order_by=["attributes.start_time ASC"], max_results=5
    )
    return runs[0].info.run_id if runs else None


def get_or_create_run(
    tracking_uri: str,
    experiment_id: str,
    key_tags: Mapping[str, str],
    run_name: str,
    extra_tags: Mapping[str, str] | None = None,
) -> tuple[str, bool]:
    """``(run_id, created)``: the run found by ``key_tags`` (re-opened as RUNNING) or a new one."""
    c = client(tracking_uri)
    run_id = find_run(tracking_uri, experiment_id, key_tags)
    if run_id is not None:
        c.update_run(run_id, status="RUNNING")
        return run_id, False
    run = c.create_run(experiment_id, run_name=run_name, tags={**key_tags, **(extra_tags or {})})
    return run.info.run_id, True


def _param_value(v: Any) -> str:
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v)
    return str(v)


def log_params(tracking_uri: str, run_id: str, params: Mapping[str, Any]) -> None:
    """Log every config value as a param; values already logged (after a resume) are skipped."""
    from mlflow.entities import Param

    c = client(tracking_uri)
    have = c.get_run(run_id).data.params
    new = [Param(k, _param_value(v)) for k, v in params.items() if k not in have]
    for i in range(0, len(new), 100):
        c.log_batch(run_id, params=new[i : i + 100])


def log_metrics(tracking_uri: str, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """Log numeric metrics at ``step`` (the 1-based epoch); names made MLflow-safe."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [
        Metric(mlflow_metric_name(k), float(v), now, int(step))
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    ]
    if items:
        client(tracking_uri).log_batch(run_id, metrics=items)


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    client(tracking_uri).set_terminated(run_id, status)


def log_artifact(tracking_uri: str, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    p = Path(path)
    c = client(tracking_uri)
    if p.is_dir():
        c.log_artifacts(run_id, str(p), artifact_path)
    else:
        c.log_artifact(run_id, str(p), artifact_path)


def learning_curve_png(history: list[Mapping[str, float]], path: str | Path, valid_metric: str) -> Path:
    """Plot ``train/loss`` and ``valid_metric`` per epoch (two panels) into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(h["epoch"]) for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [h.get("train/loss", math.nan) for h in history], marker="o")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train/loss")
    ax2.plot(epochs, [h.get(valid_metric, math.nan) for h in history], marker="o", color="tab:green")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(valid_metric)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def artifact_names(tracking_uri: str, run_id: str) -> set[str]:
    """Top-level artifact paths of a run (``config.yaml``, ``checkpoint``, ...)."""
    return {a.path for a in client(tracking_uri).list_artifacts(run_id)}


END_OF_RUN_ARTIFACTS = ("config.yaml", "manifest.json", "learning_curve.png", "checkpoint")
FINAL_EXTRA_METRICS = ("best_epoch", "wall_s", "train_s")


@dataclass(frozen=True)
class RunRecord:
    """What a trained run left behind, in the form MLflow logging needs; built once per run.

    ``final_metrics``: test metrics plus ``best_epoch``, ``wall_s``, ``train_s`` (other keys are
    ignored); ``checkpoint``: the best weights (``best.pt``) or None; ``finished``: the run ended
    (only then are its end-of-run artifacts and test metrics logged).
    """

    flat_config: Mapping[str, Any]
    manifest: Mapping[str, Any] | None
    history: list[Mapping[str, float]]
    final_metrics: Mapping[str, float]
    valid_metric: str
    checkpoint: Path | None = None
    finished: bool = True

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, run_cfg: Any, manifest: Mapping[str, Any] | None,
                     final_metrics: Mapping[str, float] | None = None, finished: bool = True) -> RunRecord:
        """From a run directory of the engine (``history.json``, ``best.pt``, ``metrics.json``);
        ``final_metrics`` defaults to its ``metrics.json``."""
        d = Path(run_dir)
        history = json.loads((d / "history.json").read_text(encoding="utf-8")) if (d / "history.json").exists() else []
        if final_metrics is None:
            m = d / "metrics.json"
            final_metrics = json.loads(m.read_text(encoding="utf-8")) if m.exists() else {}
        best = d / "best.pt"
        return cls(run_cfg.to_flat(), manifest, history, dict(final_metrics), run_cfg.train.valid_metric,
                   best if best.exists() else None, finished)

    @property
    def step(self) -> int:
        """The last epoch (the step of the end-of-run metrics)."""
        return int(self.history[-1]["epoch"]) if self.history else 0

    @property
    def test_metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.final_metrics.items() if k.startswith("test/")}


def log_run_outputs(tracking_uri: str, run_id: str, record: RunRecord) -> None:
    """End-of-run artifacts: resolved config, dataset manifest, learning curve, best checkpoint,
    and the test metrics (logged at the last epoch's step).

    Idempotent, so it can run again after a kill, a restart or a re-reported finished run: an
    artifact already in the run and a test metric already logged are not logged again. The
    learning curve and the checkpoint go first (the costly, most useful ones)."""
    import yaml

    have = artifact_names(tracking_uri, run_id)
    logged = client(tracking_uri).get_run(run_id).data.metrics
    log_metrics(tracking_uri, run_id, {k: v for k, v in record.test_metrics.items() if mlflow_metric_name(k) not in logged},
                record.step)
    if record.checkpoint is not None and Path(record.checkpoint).exists() and "checkpoint" not in have:
        log_artifact(tracking_uri, run_id, record.checkpoint, "checkpoint")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        if record.history and "learning_curve.png" not in have:
            learning_curve_png(record.history, t / "learning_curve.png", record.valid_metric)
            log_artifact(tracking_uri, run_id, t / "learning_curve.png")
        if "config.yaml" not in have:
            (t / "config.yaml").write_text(yaml.safe_dump(dict(record.flat_config), sort_keys=False), encoding="utf-8")
            log_artifact(tracking_uri, run_id, t / "config.yaml")
        if record.manifest is not None and "manifest.json" not in have:
            (t / "manifest.json").write_text(json.dumps(record.manifest, indent=2), encoding="utf-8")
            log_artifact(tracking_uri, run_id, t / "manifest.json")


def logged_epochs(tracking_uri: str, run_id: str) -> set[int]:
    """Steps at which the run has its per-epoch ``epoch`` metric (every report logs it)."""
    return {m.step for m in client(tracking_uri).get_metric_history(run_id, "epoch")}


def log_history(tracking_uri: str, run_id: str, history: list[Mapping[str, float]]) -> int:
    """Log the per-epoch metrics of every ``history`` entry whose epoch the run lacks; returns how many."""
    have = logged_epochs(tracking_uri, run_id)
    missing = [h for h in history if int(h["epoch"]) not in have]
    for h in missing:
        log_metrics(tracking_uri, run_id, h, int(h["epoch"]))
    return len(missing)


def sync_run(tracking_uri: str, run_id: str, record: RunRecord) -> None:
    """Bring a run up to date with what was trained, whatever MLflow missed: params, per-epoch
    metrics, the final (test, timing) metrics and, for a finished run, the end-of-run artifacts.
    Idempotent: nothing already in the run is logged again."""
    log_params(tracking_uri, run_id, record.flat_config)
    log_history(tracking_uri, run_id, record.history)
    if not record.finished:
        return
    logged = client(tracking_uri).get_run(run_id).data.metrics
    extra = {k: v for k, v in record.final_metrics.items() if k in FINAL_EXTRA_METRICS and k not in logged}
    if extra:
        log_metrics(tracking_uri, run_id, extra, record.step)
    log_run_outputs(tracking_uri, run_id, record)


def log_train_run(
    tracking_uri: str | None,
    run_cfg: Any,
    result: Any,
    data: Any,
    out_dir: str | Path,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
) -> str:
    """Log a finished single `glintru train` (role=train): params, per-epoch metrics, test metrics,
    artifacts. ``result`` is the engine's ``FitResult``; ``out_dir`` its run directory (``best.pt``).
    Returns the run id. Called once, from the driver process (rank 0's results)."""
    uri = resolve_tracking_uri(tracking_uri)
    exp_id = ensure_experiment(uri, experiment)
    name = run_name or Path(out_dir).resolve().name
    run_id, _ = get_or_create_run(uri, exp_id, {ROLE: "train", RUN_NAME: name}, run_name=name)
    best = Path(out_dir) / "best.pt"
    record = RunRecord(run_cfg.to_flat(), getattr(data, "manifest", None), list(result.history),
                       {**result.test_metrics, "best_epoch": result.best_epoch, "wall_s": result.wall_s,
                        "train_s": result.train_s}, run_cfg.train.valid_metric, best if best.exists() else None)
    sync_run(uri, run_id, record)  # only what is not logged yet: a re-run after an outage completes the run
    end_run(uri, run_id)
    return run_id


def set_tags(tracking_uri: str, run_id: str, tags: Mapping[str, Any]) -> None:
    """Tags hold values that may change between resumes (MLflow params never change)."""
    from mlflow.entities import RunTag

    items = [RunTag(k, str(v)) for k, v in tags.items()]
    if items:
        client(tracking_uri).log_batch(run_id, tags=items)


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()[:16]


def log_dataset_input(tracking_uri: str, run_id: str, manifest: Mapping[str, Any], source: str) -> None:
    """Record the prepared dataset as the run's MLflow dataset input (name = its directory's name,
    digest = of its manifest, profile = its counts), once per run."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    digest = manifest_digest(manifest)
    c = client(tracking_uri)
    have = c.get_run(run_id).inputs.dataset_inputs or []
    if any(d.dataset.digest == digest for d in have):
        return
    name = str(source).rstrip("/").rsplit("/", 1)[-1] or "data"
    dataset = Dataset(name=name, digest=digest, source_type="glintru-prepared", source=json.dumps({"uri": str(source)}),
                      profile=json.dumps(dict(manifest.get("counts", {})), default=str))
    c.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])])


def log_timing(tracking_uri: str, run_id: str, timing: Mapping[str, float | int]) -> None:
    """Where a trial's time went, as tags ``ray.trial_s`` ... (one value per run: not metric charts)
    and a ``trial_timing.json`` artifact."""
    set_tags(tracking_uri, run_id, {k.replace("/", "."): str(v) if isinstance(v, int) else f"{v:.1f}"
                                    for k, v in timing.items()})
    if "trial_timing.json" in artifact_names(tracking_uri, run_id):
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trial_timing.json"
        path.write_text(json.dumps(dict(timing), indent=2), encoding="utf-8")
        log_artifact(tracking_uri, run_id, path)


EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # the UI opens on training runs
