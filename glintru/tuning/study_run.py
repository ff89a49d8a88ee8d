"""A study's place in MLflow: its experiment and parent run, opened when the study starts and found
again when it resumes.

The ids are recorded in the study's settings (``glintru_study.json``), so every resume and every
trial logs to the same runs. A resume checks them first. If the store no longer has them (the sqlite
file was deleted, the server's database reset, the parent run deleted in the UI), the study is logged
anew: the experiment is found by name or created, a parent run is opened, the settings are updated,
and the end of the study logs every trial from its work directory (nothing is trained again). With
``glintru tune --resume PATH --mlflow-uri URI`` the study moves to another MLflow the same way.
An MLflow that cannot be reached is left to the outage handling of :mod:`glintru.tracking`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from glintru import tracking
from glintru.errors import UserError
from glintru.tuning import search
from glintru.tuning.settings import StudySettings, save_settings
from glintru.tuning.space import SearchSpace


def study_tags(name: str) -> dict[str, str]:
    """The tags that find a study's parent run again."""
    return {tracking.ROLE: "study", tracking.STUDY: name}


def open_parent(uri: str, mlflow_experiment: str, name: str) -> tuple[str, str]:
    """``(experiment id, parent run id)`` for a study named ``name``: created, or found by tags."""
    exp_id = tracking.ensure_experiment(uri, mlflow_experiment)
    parent, _ = tracking.get_or_create_run(uri, exp_id, study_tags(name), run_name=name)
    return exp_id, parent


def log_study(s: StudySettings, space: SearchSpace) -> None:
    """The study's options as params of its parent run, and the tags that may change on a resume."""
    uri, parent = s.tracking_uri, s.parent_run_id
    tracking.BestEffort(uri, parent, f"study {s.name}").call(tracking.log_params, {
        "model": s.model, "search_space": Path(s.search_space).name, "num_samples": s.num_samples,
        "max_epochs": s.max_epochs, "grace_period": s.grace_period, "workers": s.workers, "seed": s.seed,
        "metric": s.metric, "gpus_per_worker": s.gpus_per_worker, **{f"fixed.{k}": v for k, v in s.base_flat.items()},
        **{f"space.{k}": f"{p.kind}{list(p.values) if p.values else [p.low, p.high]}" for k, p in space.params.items()},
    })
    tracking.BestEffort(uri, parent, f"study {s.name}").call(tracking.set_tags, {
        "max_concurrent": s.max_concurrent, "optuna_storage": s.optuna_storage,
        "tpe_startup_trials": search.startup_trials(s.num_samples)})


def _get(fetch: Any) -> Any:
    """``fetch()``, or None if MLflow answers that the object does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return fetch()
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def reconnect(s: StudySettings, space: SearchSpace, mlflow_uri: str | None = None) -> StudySettings:
    """The settings a resumed study logs with, its parent run RUNNING again: ``s`` itself when MLflow
    still has its experiment and parent run (or cannot be reached: the outage handling takes over,
    one retry budget spent here), otherwise updated, saved and announced on stdout.
    ``mlflow_uri``: ``--mlflow-uri`` given with the resume; the study logs there from now on (that
    MLflow must be reachable)."""
    uri = tracking.resolve_tracking_uri(mlflow_uri) if mlflow_uri else s.tracking_uri
    moved = uri != s.tracking_uri
    try:
        exp_id, parent, lost = _find(s, uri, moved)
    except tracking.unavailable_errors() as exc:
        if moved:
            raise UserError(f"--mlflow-uri {uri}: MLflow is unavailable ({tracking.first_line(exc)}); the study "
                            f"still logs to {s.tracking_uri}. Nothing was trained.") from None
        return s
    if not moved and not lost:
        return s
    new = dataclasses.replace(s, tracking_uri=uri, mlflow_experiment_id=exp_id, parent_run_id=parent)
    save_settings(new)
    log_study(new, space)
    why = f"moves to {uri}" if moved else f"is logged anew: MLflow at {uri} no longer has its {lost}"
    print(f"study {s.name} {why}; experiment '{s.mlflow_experiment}' (id {exp_id}), parent run {parent}. "
          "Its trials are logged from their work directories when the study ends; nothing is trained again",
          flush=True)
    return new


def _find(s: StudySettings, uri: str, moved: bool) -> tuple[str, str, str]:
    """``(experiment id, parent run id, what was lost)``; ``what`` is empty when both were found as
    recorded. Raises MLflow's errors when it cannot be reached."""
    c = tracking.client(uri)
    exp = None if moved else _get(lambda: c.get_experiment(s.mlflow_experiment_id))
    if exp is not None and exp.name != s.mlflow_experiment:
        exp = None  # the id now names another experiment (a reset store counts from the start again)
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise UserError(
            f"MLflow experiment '{exp.name}' (id {exp.experiment_id}), where study {s.name} logs, is deleted "
            f"at {uri}; restore it (MLflow UI, or `mlflow experiments restore --experiment-id {exp.experiment_id}`) "
            "and resume again")
    if exp is None:
        exp_id, parent = open_parent(uri, s.mlflow_experiment, s.name)
        return exp_id, parent, f"experiment '{s.mlflow_experiment}' (id {s.mlflow_experiment_id})"
    run = _get(lambda: c.get_run(s.parent_run_id))
    if run is not None and run.info.lifecycle_stage == "active" and run.info.experiment_id == exp.experiment_id:
        c.update_run(s.parent_run_id, status="RUNNING")  # the study runs again
        return exp.experiment_id, s.parent_run_id, ""
    _, parent = open_parent(uri, s.mlflow_experiment, s.name)
    return exp.experiment_id, parent, f"parent run {s.parent_run_id}"
