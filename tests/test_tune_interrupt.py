"""Study lifecycle: Ctrl+C leaves a resumable study, the search tells Optuna the truth, the
registry holds a model that loads without unpickling.

The end-to-end test sends a real SIGINT to `glintru tune`'s process group while its first trial
trains (as a terminal's Ctrl+C does), then resumes. The unit tests drive the Optuna searcher and
the signal handler directly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from proc_helpers import descendants, kill_all

from glintru.tuning.smoke import write_synthetic_dataset

PY = sys.executable
N_TRIALS = 2

pytestmark = [pytest.mark.slow, pytest.mark.beside_units]  # a subprocess study: minutes


def _tune(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_COLOR_PREFIX": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([PY, "-m", "glintru", "tune", *args], cwd=cwd, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # its own process group, like a shell job


def _wait(proc: subprocess.Popen, timeout: float, log: Path) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        tree = descendants(proc.pid)
        proc.kill()
        kill_all(tree)
        raise AssertionError(f"glintru tune did not end within {timeout} s:\n{log.read_text()[-3000:]}") from None


def _tables(text: str) -> list[list[list[str]]]:
    """The trial tables ``glintru tune`` printed: each a list of rows, a row its words."""
    tables: list[list[list[str]]] = []
    rows: list[list[str]] | None = None
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["trial"] and words[-1:] == ["state"]:
            rows = []
            tables.append(rows)
        elif rows is not None and words and len(words[0]) == 8 and words[-1] in (
                "PENDING", "RUNNING", "TERMINATED", "ERROR", "PAUSED", "(ASHA)"):
            rows.append(words)
        else:
            rows = None
    return tables


def test_sigint_leaves_a_resumable_study_and_resume_finishes_it(tmp_path, capsys, monkeypatch, mlflow_store):
    import mlflow
    import optuna
    from mlflow.tracking import MlflowClient

    data = write_synthetic_dataset(tmp_path / "data", n_users=16, n_items=24)
    uri = mlflow_store("mlflow.db")
    args = ["--data", str(data), "--profile", "quick", "--num-samples", str(N_TRIALS), "--max-epochs", "3",
            "--workers", "1", "--storage-path", str(tmp_path / "rr"), "--mlflow-uri", uri, "--experiment", "ir",
            "--max-concurrent", "1", "--set", "max_len=16", "--set", "batch_size=16", "--set", "num_negatives=10"]
    log = tmp_path / "first.log"
    proc = _tune(args, tmp_path, log)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and "epoch 1/" not in log.read_text():
        time.sleep(0.2)
    assert proc.poll() is None, log.read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl+C reaches every process of the job
    code = _wait(proc, 180, log)
    text = log.read_text()
    exp_dir = tmp_path / "rr" / "ir"
    assert code == 130, text[-3000:]
    assert text.strip().splitlines()[-1] == (
        f"error: study ir interrupted; its state is saved in {exp_dir}. Continue it with:  glintru tune --resume {exp_dir}")
    assert "Best trial" not in text and "registered" not in text
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("data-glintru")  # default MLflow experiment: <dataset>-<model>
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (parent,) = c.search_runs([exp.experiment_id], "tags.`glintru.role` = 'study'")
    assert parent.info.status == "KILLED"
    assert not c.search_model_versions("name='data-glintru'")
    assert not (exp_dir / "best_config.yaml").exists()

    log2 = tmp_path / "second.log"
    assert _wait(_tune(["--resume", str(exp_dir)], tmp_path, log2), 420, log2) == 0, log2.read_text()[-3000:]
    # The console tables show a trial in the state it enters (Tune sets it only after its callbacks):
    # the first study's first table has its first trial RUNNING; after the resumed study's last
    # trial ends, no trial is left RUNNING.
    first, last = _tables(text)[0], _tables(log2.read_text())[-1]
    assert [row[-1] for row in first].count("RUNNING") == 1, first
    assert len(last) == N_TRIALS and all(row[-1] in ("TERMINATED", "(ASHA)") for row in last), last
    runs = c.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("glintru.role") == "study"]
    trials = [r for r in runs if r.data.tags.get("glintru.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == N_TRIALS and {r.info.status for r in trials} == {"FINISHED"}
    assert "best.trial_id" in parents[0].data.tags and "best.trial_id" not in parents[0].data.params
    for r in trials:  # the prepared dataset is each run's MLflow dataset input
        (ds,) = c.get_run(r.info.run_id).inputs.dataset_inputs
        assert ds.dataset.name == "data"

    # The Optuna study persisted next to the Tune state, named after the experiment; the paper's
    # configuration was the first trial; every trial that ran to its end is COMPLETE, ASHA's are PRUNED.
    study = optuna.load_study(study_name="ir", storage=f"sqlite:///{exp_dir / 'optuna.db'}")
    assert len(study.trials) == N_TRIALS
    assert study.trials[0].params["kernel_size"] == 3 and study.trials[0].params["mixing_init"] == 0.5
    finished = sum((exp_dir / "work" / d / "metrics.json").exists() for d in os.listdir(exp_dir / "work"))
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == finished
    assert set(states) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}

    # The registered model: alias champion, loads as a pyfunc with pickle deserialisation refused.
    assert str(c.get_model_version_by_alias("data-glintru", "champion").version) == "1"
    old = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    try:
        mlflow.set_tracking_uri(uri)
        model = mlflow.pyfunc.load_model("models:/data-glintru@champion")
        import pandas as pd

        out = model.predict(pd.DataFrame({"items": [[1, 2, 3], [5]]}))
        assert list(out.columns) == ["items", "scores"] and len(out) == 2 and len(out["items"][0]) == 10
    finally:
        if old is None:
            os.environ.pop("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", None)
        else:
            os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = old

    # The finished study moved to another MLflow (`--resume --mlflow-uri`, as after losing mlflow.db):
    # logged anew there from its directories, in this process and without Ray (nothing to train):
    # one parent, every trial with the epochs it trained, the best model registered.
    from ray.train._internal import checkpoint_manager

    from glintru.cli import main

    # the resume patches Ray's checkpoint deletion in its process (driver._tolerate_checkpoints_already_deleted):
    # restored after this test, as other tests check Ray as installed
    monkeypatch.setattr(checkpoint_manager, "_delete_fs_path", checkpoint_manager._delete_fs_path)
    capsys.readouterr()
    new_uri = mlflow_store("again.db")
    assert main(["tune", "--resume", str(exp_dir), "--mlflow-uri", new_uri]) == 0
    out = capsys.readouterr().out
    assert f"study ir moves to {new_uri}; experiment 'data-glintru'" in out and "(nothing to train)" in out
    c2 = MlflowClient(new_uri)
    runs2 = c2.search_runs([c2.get_experiment_by_name("data-glintru").experiment_id])
    (parent2,) = [r for r in runs2 if r.data.tags.get("glintru.role") == "study"]
    trials2 = {r.data.tags["glintru.trial_id"]: r for r in runs2 if r.data.tags.get("glintru.role") == "trial"}
    assert parent2.info.status == "FINISHED" and len(trials2) == N_TRIALS
    for tid, r in trials2.items():
        history = json.loads((exp_dir / "work" / tid / "history.json").read_text())
        assert [m.step for m in c2.get_metric_history(r.info.run_id, "epoch")] == [int(h["epoch"]) for h in history]
        assert r.data.tags["mlflow.parentRunId"] == parent2.info.run_id
    assert str(c2.get_model_version_by_alias("data-glintru", "champion").version) == "1"
    assert json.loads((exp_dir / "glintru_study.json").read_text())["tracking_uri"] == new_uri
