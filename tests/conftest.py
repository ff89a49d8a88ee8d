"""Shared fixtures and test selection.

``ray_local``: one private local Ray per test session (5 logical CPUs: two Ray Train workers and the
trial drivers fit on a 2-core machine), started again if a test shut it down. Tests that use it,
and modules marked ``pytestmark = pytest.mark.slow`` (real servers, subprocess studies, Ray
clusters), are *slow*: ``pytest -m "not slow"`` runs the rest in about three minutes; CI runs all.
Helpers shared by several test files live in plain modules beside this file (``model_helpers``,
``engine_fixtures``, ``proc_helpers``, ``ray_fixtures``), imported by name.
"""

from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("RAY_COLOR_PREFIX", "0")
# Ray clusters the tests start with `ray start` (their subprocesses inherit this) run their workers at
# the tests' priority, as glintru's own local Ray does; Ray's default, nice 15, lets every other
# process of a test (drivers, servers, Ray's own services) starve them while they start.
os.environ.setdefault("RAY_worker_niceness", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")

SLOW_FIXTURES = {"ray_local"}


@pytest.fixture()
def ray_local():
    import ray

    from glintru.distributed.trainer import start_local_ray

    if not ray.is_initialized():
        # the priority start_local_ray gives workers by itself, not this file's setting above
        # (test_local_ray_dashboard_binds_to_localhost_and_workers_run_at_normal_priority)
        os.environ.pop("RAY_worker_niceness", None)
        start_local_ray(5, log_to_driver=False)
    return ray


@pytest.fixture(scope="session")
def blank_mlflow_db(tmp_path_factory):
    """An empty MLflow sqlite store, made once per session: creating one runs MLflow's schema
    migrations, seconds each time."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "blank.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture()
def mlflow_store(tmp_path, blank_mlflow_db):
    """``mlflow_store(name="m.db")``: the URI of a new, empty MLflow sqlite store ``tmp_path/name``
    (a copy of the session's blank one; artifacts of experiments made by glintru go to ``tmp_path/mlruns``)."""

    def make(name: str = "m.db") -> str:
        shutil.copyfile(blank_mlflow_db, tmp_path / name)
        return f"sqlite:///{tmp_path / name}"

    return make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
