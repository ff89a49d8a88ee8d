"""End to end: a tiny study logged to a real `mlflow server`, SIGKILLed mid-way and resumed.

Checks through MlflowClient: one study parent run, exactly N trial runs (none duplicated by the
resume, ray-stack-notes P10), config params, per-epoch metrics (step = epoch), test metrics and
artifacts; the trial that finished before the kill was not trained again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from glintru.tuning.smoke import write_synthetic_dataset

PY = sys.executable
N_TRIALS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """All processes below ``pid`` (read from /proc), so they can be killed by PID later."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _kill(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.time() + timeout_s  # ~7-15 s idle; far more on a loaded machine
    while True:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).read() == b"OK":
                return
        except OSError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            raise RuntimeError(f"mlflow server did not become healthy within {timeout_s:.0f} s (exit code {proc.poll()})")
        time.sleep(0.2)


@pytest.fixture()
def mlflow_server(tmp_path):
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [PY, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # Not waited for here: the study starts while the server boots (both take ~1 min under load);
        # the test waits with _wait_healthy before its own first request.
        yield url, proc
    finally:
        tree = _descendants(proc.pid)
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _kill(tree)


def test_tune_killed_and_resumed_logs_one_study_with_exactly_n_trials(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    mlflow_server, server_proc = mlflow_server
    data = write_synthetic_dataset(tmp_path / "data", n_users=16, n_items=24)  # smallest that trains and ranks
    storage = tmp_path / "ray_results"
    # The study may send its first MLflow request before the server is up: retry connections with a
    # short backoff (1, 2, 4, ... s; 10 tries) instead of the default 2, 4, 8, ... s.
    env = {**os.environ, "RAY_COLOR_PREFIX": "0", "PYTHONUNBUFFERED": "1",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "10", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    cmd = [PY, "-m", "glintru.cli", "tune", "--data", str(data), "--profile", "quick",
           "--num-samples", str(N_TRIALS), "--max-epochs", "2", "--workers", "2", "--storage-path", str(storage),
           "--mlflow-uri", mlflow_server, "--experiment", "kr", "--max-concurrent", "1",
           "--set", "max_len=16", "--set", "batch_size=16", "--set", "num_negatives=10"]
    client = MlflowClient(mlflow_server)
    log1 = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(cmd, env=env, stdout=log1, stderr=subprocess.STDOUT, cwd=tmp_path)
    finished_before_kill: list[str] = []
    tree: set[int] = set()
    try:
        _wait_healthy(mlflow_server, server_proc)
        deadline = time.time() + 300
        while time.time() < deadline and first.poll() is None:
            tree |= _descendants(first.pid)
            exp = client.get_experiment_by_name("kr")
            if exp is not None:
                runs = client.search_runs([exp.experiment_id], "tags.`glintru.role` = 'trial' and attributes.status = 'FINISHED'")
                if runs:
                    finished_before_kill = [r.data.tags["glintru.trial_id"] for r in runs]
                    break
            time.sleep(0.5)  # the one-worker server also serves the trials' logging
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert finished_before_kill, "no trial finished within 300 s: " + (tmp_path / "first.log").read_text()[-3000:]
        tree |= _descendants(first.pid)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:  # a failed wait above: stop the study too
            tree |= _descendants(first.pid)
            first.kill()
            first.wait()
        _kill(tree)  # orphaned raylet, GCS, dashboard and workers (ray-stack-notes P6)
        log1.close()

    exp_dir = storage / "kr"
    log2 = open(tmp_path / "second.log", "w")
    second = subprocess.Popen([PY, "-m", "glintru.cli", "tune", "--resume", str(exp_dir)], env=env, cwd=tmp_path,
                              stdout=log2, stderr=subprocess.STDOUT)
    tree = set()
    try:
        deadline = time.time() + 420
        while second.poll() is None and time.time() < deadline:
            tree |= _descendants(second.pid)
            time.sleep(0.5)
        timed_out = second.poll() is None
    finally:
        if second.poll() is None:  # timed out or interrupted: stop the whole tree (a clean exit shuts Ray down)
            tree |= _descendants(second.pid)
            second.kill()
            second.wait()
            _kill(tree)
        log2.close()
    tail = (tmp_path / "second.log").read_text()[-3000:]
    assert not timed_out, "resumed study did not finish within 420 s:\n" + tail
    assert second.returncode == 0, tail

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
    rows = (exp_dir / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + N_TRIALS
    # The best config is a file `glintru train --config` accepts.
    from glintru.config import config_from_flat, load_config_file

    model, flat = load_config_file(exp_dir / "best_config.yaml")
    assert config_from_flat({"model": model, **flat}).train.max_len == 16
