"""A study's settings: what it searches, where its state lives, and how a trial's config is built.

Everything needed to resume is saved next to Ray Tune's state in
``<storage>/<name>/glintru_study.json`` (local directory or object store): ``glintru tune --resume``
and re-running the same command both read it back.

Names. The study (its Tune experiment directory) is ``<model>-<12 hex>``, a hash of the search
space, the dataset and the options, so the same command finds the same study. MLflow groups
studies by dataset: the experiment and the registered model default to ``<dataset>-<model>``
(``dataset`` = the prepared directory's name), so two studies on one dataset share one table; the
study name stays on every run as the tag ``glintru.study``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glintru import storage
from glintru.config import RunConfig, build_config
from glintru.errors import UserError
from glintru.tuning.space import SearchSpace

STUDY_FILE = "glintru_study.json"
OPTUNA_DB = "optuna.db"


@dataclass(frozen=True)
class StudySettings:
    """Everything a study (and its resume) needs; saved as JSON in the experiment directory."""

    name: str
    storage_path: str  # local absolute directory or a pyarrow URI (s3://, gs://, ...)
    data_dir: str  # absolute path or URI of the prepared dataset, readable from every node
    search_space: str  # absolute path of the search-space file
    model: str
    base_flat: dict[str, Any]  # fixed keys of the search space + CLI overrides
    num_samples: int
    max_epochs: int
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float  # 0 = CPU training; fractions let trials share a GPU
    grace_period: int
    seed: int
    metric: str
    tracking_uri: str
    mlflow_experiment: str
    mlflow_experiment_id: str
    parent_run_id: str
    register_name: str
    max_concurrent: int
    optuna_storage: str  # RDB URL of the Optuna study (default: sqlite file in the experiment dir)

    @property
    def experiment_path(self) -> str:
        return storage.join(self.storage_path, self.name)

    @property
    def is_local(self) -> bool:
        return not storage.is_remote(self.storage_path)

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    @property
    def asha_grace(self) -> int:
        """Epochs every trial runs before ASHA may stop it: the grace period, at most the epoch limit."""
        return min(self.grace_period, self.max_epochs)

    def trial_config(self, params: dict[str, Any], source: str) -> RunConfig:
        """The one place a trial's configuration is made: fixed keys, then the sampled ``params``,
        then the study's epoch limit."""
        return build_config(self.model, {**self.base_flat, **params, "max_epochs": self.max_epochs}, source=source)


def experiment_name(space: SearchSpace, data_dir: str, options: dict[str, Any]) -> str:
    """``<model>-<12 hex>``: a hash of the search space, the dataset and the study options."""
    blob = json.dumps({"space": space.fingerprint(), "data": data_dir, **options}, sort_keys=True, default=str)
    return f"{space.model}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def dataset_name(data_dir: str) -> str:
    """The prepared dataset's directory name (``data/ml-1m`` -> ``ml-1m``), safe for MLflow names."""
    name = str(data_dir).rstrip("/").rsplit("/", 1)[-1] or "data"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def resolve_storage(storage_path: str | None) -> str:
    """Local directory (made absolute; default ``./ray_results``) or a URI passed through."""
    if storage_path and storage.is_remote(storage_path):
        return storage_path.rstrip("/")
    return str(Path(storage_path or "ray_results").resolve())


def default_optuna_storage(experiment_path: str, study_name: str) -> str:
    """``sqlite:///<experiment dir>/optuna.db`` for local storage; for an object store the sqlite
    file lives in this machine's cache (a database cannot live in a bucket): pass
    ``--optuna-storage`` (an RDB URL) to share it."""
    if not storage.is_remote(experiment_path):
        return f"sqlite:///{Path(experiment_path) / OPTUNA_DB}"
    local = storage.cache_root() / "optuna" / f"{study_name}.db"
    local.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{local}"


def save_settings(s: StudySettings) -> None:
    storage.write_text(storage.join(s.experiment_path, STUDY_FILE), json.dumps(dataclasses.asdict(s), indent=2))


def study_exists(experiment_path: str) -> bool:
    return storage.exists(storage.join(experiment_path, STUDY_FILE))


def load_settings(experiment_path: str) -> StudySettings:
    """Read ``glintru_study.json`` of an experiment directory (``--resume PATH``)."""
    path = storage.join(experiment_path, STUDY_FILE)
    try:
        data = json.loads(storage.read_text(path, "--resume"))
    except (OSError, FileNotFoundError, ValueError):
        raise UserError(f"--resume {experiment_path}: no {STUDY_FILE} there; is it a glintru tune experiment directory?") from None
    known = {f.name for f in dataclasses.fields(StudySettings)}
    missing = known - set(data)
    if missing:
        raise UserError(f"--resume {experiment_path}: {STUDY_FILE} was written by an older glintru "
                        f"(missing {', '.join(sorted(missing))}); start a new study")
    base = data.get("base_flat")
    if isinstance(base, dict) and "target_weight" not in base:
        data["base_flat"] = {"target_weight": "batch", **base}  # started before the key: per-batch means
    return StudySettings(**{k: v for k, v in data.items() if k in known})


def pinned_defaults() -> dict[str, Any]:
    """Training defaults a new study records in its ``base_flat``, so a resume after the default
    changes trains its later trials as it trained the first ones (``load_settings`` reads a study
    without the key as the value it trained with before the key existed)."""
    from glintru.config import TrainConfig

    return {"target_weight": TrainConfig().target_weight}


def check_writable_paths(storage_path: str, tracking_uri: str) -> None:
    """A UserError naming the option if the local storage path or the sqlite db's directory cannot be written."""
    checks = []
    if not storage.is_remote(storage_path):
        checks.append(("--storage-path", Path(storage_path)))
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


def check_same_study(s: StudySettings, space: SearchSpace, data_dir: str, fixed: dict[str, Any],
                     options: dict[str, Any], cpus_per_worker: float, gpus_per_worker: float) -> None:
    """A UserError listing each option that differs from the study ``s`` records, for a command
    that names an existing study (``--experiment``) to continue it: a study keeps the options it
    started with, so another ``--num-samples`` (say) would otherwise be silently ignored."""
    asked = {
        "--data": (data_dir, s.data_dir), "model": (space.model, s.model),
        "--num-samples": (options["num_samples"], s.num_samples), "--max-epochs": (options["max_epochs"], s.max_epochs),
        "--workers": (options["workers"], s.workers), "--grace-period": (options["grace_period"], s.grace_period),
        "--seed": (options["seed"], s.seed), "--cpus-per-worker": (cpus_per_worker, s.cpus_per_worker),
        "--gpus-per-worker": (gpus_per_worker, s.gpus_per_worker),
    }
    diffs = [f"{opt} {new} (the study: {old})" for opt, (new, old) in asked.items() if new != old]
    diffs += [f"{k}={v} (the study: {s.base_flat.get(k, 'not set')})" for k, v in fixed.items()
              if _as_saved(v) != _as_saved(s.base_flat.get(k))]
    if diffs:
        raise UserError(
            f"--experiment {s.name}: that study exists in {s.experiment_path} and continues with the options it "
            f"started with; this command differs: {'; '.join(diffs)}. Run it as it started to continue it (or "
            f"`glintru tune --resume {s.experiment_path}`), or name another --experiment for a new study")


def _as_saved(value: Any) -> Any:
    """``value`` as it reads back from the settings file (a tuple becomes a list)."""
    return json.loads(json.dumps(value, default=str))
