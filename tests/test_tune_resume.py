"""End to end: a tiny study logged to a real `mlflow server`, SIGKILLed mid-way, resumed while the
server is stopped, and resumed again once it is back.

Checks through MlflowClient: one study parent run, exactly N trial runs (none duplicated by the
resumes), config params, per-epoch metrics (step = epoch) equal to what each
trial trained, test metrics, timing and artifacts; no trial trained twice; the study stopped by the
MLflow outage kept every result and said how to continue; the best model registered and loadable.
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
from proc_helpers import descendants, free_port, kill_all, run_until_exit, stop_tree, wait_for_http

from glintru.tuning.smoke import write_synthetic_dataset

pytestmark = [pytest.mark.slow, pytest.mark.beside_units]  # subprocess studies: minutes

PY = sys.executable
N_TRIALS = 3


def _start_server(root: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:``port`` over ``root``'s sqlite store and artifact directory
    (a restart on the same port and store is the same server again)."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(
        [PY, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/server.db",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def test_tune_killed_mlflow_stopped_and_resumed_logs_one_study_with_exactly_n_trials(tmp_path, mlflow_store):
    """Three faults in one study (sharing its start-up cost): the driver SIGKILLed after a trial has
    finished; the MLflow server stopped while the resumed study trains (trials go on, the study
    ends with exit 1 and a clear message, results kept); the server back and `--resume` again: every
    trial's run complete (no re-training), the best model registered."""
    port = free_port()
    mlflow_store("server.db")  # the server's store, already migrated: it starts sooner
    server_box = [_start_server(tmp_path, port)]  # the running server is the last one
    try:
        _check_study_survives_kill_and_mlflow_outage(tmp_path, f"http://127.0.0.1:{port}", port, server_box)
    finally:
        stop_tree(server_box[-1])


def _check_study_survives_kill_and_mlflow_outage(tmp_path: Path, mlflow_server: str, port: int,
                                                server_box: list[subprocess.Popen]) -> None:
    from mlflow.tracking import MlflowClient

    server_proc = server_box[0]
    data = write_synthetic_dataset(tmp_path / "data", n_users=16, n_items=24)  # smallest that trains and ranks
    storage = tmp_path / "ray_results"
    # The study may send its first MLflow request before the server is up: retry connections with a
    # short backoff (1, 2, 4, ... s; 10 tries) instead of the default 2, 4, 8, ... s.
    env = {**os.environ, "RAY_COLOR_PREFIX": "0", "PYTHONUNBUFFERED": "1",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "10", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    cmd = [PY, "-m", "glintru.cli", "tune", "--data", str(data), "--profile", "quick",
           "--num-samples", str(N_TRIALS), "--max-epochs", "2", "--workers", "1", "--storage-path", str(storage),
           "--mlflow-uri", mlflow_server, "--experiment", "kr", "--mlflow-experiment", "kr", "--register-name", "kr-best",
           "--max-concurrent", "1",
           "--set", "max_len=16", "--set", "batch_size=16", "--set", "num_negatives=10"]
    client = MlflowClient(mlflow_server)
    log1 = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(cmd, env=env, stdout=log1, stderr=subprocess.STDOUT, cwd=tmp_path)
    finished_before_kill: list[str] = []
    tree: set[int] = set()
    try:
        wait_for_http(f"{mlflow_server}/health", server_proc, "mlflow server", expect=b"OK")
        deadline = time.time() + 300
        while time.time() < deadline and first.poll() is None:
            tree |= descendants(first.pid)
            exp = client.get_experiment_by_name("kr")
            if exp is not None:
                runs = client.search_runs([exp.experiment_id], "tags.`glintru.role` = 'trial' and attributes.status = 'FINISHED'")
                if runs:
                    finished_before_kill = [r.data.tags["glintru.trial_id"] for r in runs]
                    break
            time.sleep(0.5)  # the one-worker server also serves the trials' logging
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert finished_before_kill, "no trial finished within 300 s: " + (tmp_path / "first.log").read_text()[-3000:]
        # the study recorded today's weighting, so a resume after the default changes trains as it began
        (study_file,) = storage.glob("*/glintru_study.json")
        assert json.loads(study_file.read_text())["base_flat"]["target_weight"] == "equal"
        tree |= descendants(first.pid)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:  # a failed wait above: stop the study too
            tree |= descendants(first.pid)
            first.kill()
            first.wait()
        kill_all(tree)  # orphaned raylet, GCS, dashboard and workers (a SIGKILLed driver cannot stop them)
        log1.close()

    # 2. Resume; stop the MLflow server as soon as the resumed study has opened a new trial run (the
    # trial then trains on; later trials start with MLflow down). Short client retries: a dead server
    # costs each process one retry budget.
    exp_dir = storage / "kr"
    down_env = {**env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    stopped: list[float] = []

    def stop_when_a_new_trial_runs(proc: subprocess.Popen) -> None:
        if stopped:
            return
        running = client.search_runs([client.get_experiment_by_name("kr").experiment_id],
                                     "tags.`glintru.role` = 'trial' and attributes.status = 'RUNNING'")
        if any(r.data.tags["glintru.trial_id"] not in finished_before_kill for r in running):
            stop_tree(server_box[-1])
            stopped.append(time.time())

    code, tail = run_until_exit([PY, "-m", "glintru.cli", "tune", "--resume", str(exp_dir)], down_env,
                                 tmp_path / "second.log", tmp_path, 420, stop_when_a_new_trial_runs)
    assert code is not None, "resumed study did not finish within 420 s:\n" + tail
    assert stopped, "the MLflow server was never stopped:\n" + tail
    last = tail.strip().splitlines()[-1]
    assert code == 1, tail
    assert last.startswith(f"error: MLflow at {mlflow_server} is unavailable ("), tail
    assert f"their results are kept in {exp_dir}" in last and f"glintru tune --resume {exp_dir}" in last
    second = (tmp_path / "second.log").read_text()
    assert "training continues" in second  # the trials' one warning each
    # The trial that finished before the kill completes again quietly: no Tune checkpoint error, no
    # second Optuna answer.
    assert "Error handling checkpoint" not in second and "Cannot tell" not in second
    assert "View run" not in second  # MLflow's per-run links, printed by the trials' drivers too: off
    # Nothing was lost: every trial trained and its work directory has its epochs; the local summary is written.
    histories = {d.name: (d / "history.json").read_text() for d in (exp_dir / "work").iterdir()}
    assert len(histories) == N_TRIALS and all(histories.values())
    assert (exp_dir / "best_config.yaml").exists()
    assert len((exp_dir / "trials.csv").read_text().strip().splitlines()) == 1 + N_TRIALS

    # 3. MLflow back (same store, same address): --resume logs what it missed, trains nothing again.
    server_box.append(_start_server(tmp_path, port))
    wait_for_http(f"{mlflow_server}/health", server_box[-1], "mlflow server", expect=b"OK")
    code, tail = run_until_exit([PY, "-m", "glintru.cli", "tune", "--resume", str(exp_dir)],
                                 env, tmp_path / "third.log", tmp_path, 300)
    assert code == 0, tail
    assert {d.name: (d / "history.json").read_text() for d in (exp_dir / "work").iterdir()} == histories
    third = (tmp_path / "third.log").read_text()  # every trial had ended: summarised without starting Ray
    assert f"study kr: all {N_TRIALS} trials have ended; summarising it from {exp_dir} (nothing to train)" in third
    assert "Started a local Ray instance" not in third
    assert "View run" not in third and "View experiment" not in third  # MLflow's per-run links: off

    exp = client.get_experiment_by_name("kr")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("glintru.role") == "study"]
    trials = [r for r in runs if r.data.tags.get("glintru.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == N_TRIALS
    assert len({r.data.tags["glintru.trial_id"] for r in trials}) == N_TRIALS
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    for r in trials:
        assert r.info.status == "FINISHED"
        assert {"kernel_size", "hidden_size", "mixing_init", "lr", "max_len"} <= set(r.data.params)
        assert r.data.params["max_len"] == "16"
    # The trial that had finished before the kill: trained once (one value per epoch), test metrics, artifacts.
    done = next(r for r in trials if r.data.tags["glintru.trial_id"] == finished_before_kill[0])
    steps = [m.step for m in client.get_metric_history(done.info.run_id, "valid/full/ndcg_at_10")]
    assert steps == [1, 2]
    assert "test/full/ndcg_at_10" in done.data.metrics
    for r in trials:  # every trial that trained to the last epoch (not stopped by ASHA) has its artifacts
        if r.data.metrics.get("epoch") == 2.0:
            arts = {a.path for a in client.list_artifacts(r.info.run_id)}
            assert {"config.yaml", "manifest.json", "learning_curve.png", "checkpoint"} <= arts, (r.data.tags, arts)
    parent_arts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"best_config.yaml", "trials.csv"} <= parent_arts
    # Optuna: no trial left RUNNING (one suggested just before the kill, if any, was marked FAIL)
    import optuna

    ot = optuna.load_study(study_name="kr", storage=f"sqlite:///{exp_dir / 'optuna.db'}").trials
    assert optuna.trial.TrialState.RUNNING not in {t.state for t in ot}
    assert sum(t.state != optuna.trial.TrialState.FAIL for t in ot) == N_TRIALS
    rows = (exp_dir / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + N_TRIALS
    # The best config is a file `glintru train --config` accepts.
    from glintru.config import config_from_flat, load_config_file

    model, flat = load_config_file(exp_dir / "best_config.yaml")
    assert config_from_flat({"model": model, **flat}).train.max_len == 16
    # Every trial's run has exactly the epochs it trained (caught up from its work directory) and its timing.
    timed, process_trials = 0, []
    for r in trials:
        tid = r.data.tags["glintru.trial_id"]
        epochs = [int(h["epoch"]) for h in json.loads(histories[tid])]
        assert [m.step for m in client.get_metric_history(r.info.run_id, "epoch")] == epochs, tid
        timing_file = exp_dir / "work" / tid / "trial_timing.json"  # ASHA kills a stopped trial before it times itself
        if timing_file.exists():
            timing = json.loads(timing_file.read_text())
            assert float(r.data.tags["ray.trial_s"]) == pytest.approx(timing["ray/trial_s"], abs=0.05)
            assert timing["ray/trial_s"] >= timing["ray/fit_s"] > 0
            assert r.data.tags["ray.process_trial"] == str(timing["ray/process_trial"])
            process_trials.append(timing["ray/process_trial"])
            timed += 1
    assert timed >= 1  # at least the trial that finished before the kill
    # the resumed study ran its trials one at a time in one reused process: a trial that ran to its
    # end after the first one of that process counts 2 or more
    assert max(process_trials) >= 2, process_trials
    # The best trial's model is registered (alias champion) and loads, with MLflow's pickle loading
    # refused, as the same weights as its best checkpoint.
    import mlflow.artifacts
    import torch

    from glintru.loading import load_model

    best_id = parents[0].data.tags["best.trial_id"]
    (version,) = client.search_model_versions("name='kr-best'")
    assert version.run_id == next(r.info.run_id for r in trials if r.data.tags["glintru.trial_id"] == best_id)
    assert str(client.get_model_version_by_alias("kr-best", "champion").version) == str(version.version)
    local = mlflow.artifacts.download_artifacts(  # explicit tracking URI: other tests may have set a global one
        artifact_uri=client.get_model_version_download_uri("kr-best", version.version),
        dst_path=str(tmp_path / "registered"), tracking_uri=mlflow_server,
    )
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    try:
        loaded = load_model("models:/kr-best@champion", tracking_uri=mlflow_server).model
    finally:
        del os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"]
    state = torch.load(exp_dir / "work" / best_id / "best.pt", map_location="cpu", weights_only=True)["model"]
    assert loaded.state_dict().keys() == state.keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    assert (Path(local) / "MLmodel").is_file() and not list(Path(local).rglob("*.pkl"))  # code + weights, no pickle
