"""The tuning pipeline submitted as a Ray job to an existing cluster, as the README documents:

    ray start --head ...                      (the cluster; here on this machine, 127.0.0.1)
    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:<dashboard> -- \\
        python pipelines/tune.py --smoke-test --address auto

The cluster runs with Ray's token authentication and a token of its own (`RAY_AUTH_TOKEN_PATH`), so
the test behaves the same on a fresh machine and on one where `~/.ray/auth_token` exists: Ray 2.60's
`ray start --head` turns token authentication on only when a token already exists (a local
`ray.init()` writes one), while a client with `RAY_AUTH_MODE=token` always needs one.

This is also CI's run of `pipelines/tune.py --smoke-test`: the real entry script, joining a running
cluster with `--address auto` (it must not pass num_cpus there: Ray refuses resource arguments when connecting), a trial on 2
Ray Train workers, and the job's exit status reported back by `ray job submit`.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from proc_helpers import free_port, run_until_exit, stop_tree, wait_for_http

pytestmark = pytest.mark.slow  # subprocess studies, Ray clusters or servers: minutes

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_tune_pipeline_smoke_test_runs_as_a_ray_job_on_a_running_cluster(tmp_path):
    # the job agent's HTTP port too: Ray's default (52365) is taken when another Ray runs on this
    # machine, and that agent then never accepts the job ("No available agent to submit job")
    gcs, dashboard, agent = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}  # the smoke test's own store
    token = tmp_path / "ray_auth_token"  # this cluster's own token, whatever ~/.ray holds
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**env, "RAY_COLOR_PREFIX": "0", "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
           # Train V2 finds the cluster's State API here, even if another Ray runs on this machine.
           "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard}",
           # head, job driver (it inherits the head's environment) and client share one token
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_AUTH_TOKEN", None)
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--port", str(gcs), "--num-cpus", "3",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--dashboard-agent-listen-port", str(agent),
         "--disable-usage-stats"],
        env=env, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT,
    )
    try:
        # 401 without a token means the server is up.
        wait_for_http(f"http://127.0.0.1:{dashboard}/api/version", head, "`ray start --head`", any_status=True)
        # the head enforces the token: a request without it is refused
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/api/version", timeout=10)
        assert refused.value.code == 401
        agent_deadline = time.time() + 180  # the head's job agent may start after its HTTP server answers
        while True:  # (on a loaded machine, a minute or more later)
            code, tail = run_until_exit(
                [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--",
                 sys.executable, str(ROOT / "pipelines" / "tune.py"), "--smoke-test", "--address", "auto",
                 "--num-samples", "1", "--workers", "2"],  # one trial, on 2 Ray Train workers: CI's time budget
                env, tmp_path / "job.log", tmp_path, 420,
            )
            if code == 0 or "No available agent to submit job" not in tail or time.time() > agent_deadline:
                break
            time.sleep(5)
    finally:
        stop_tree(head)
    assert code is not None, "the job did not end within 420 s:\n" + tail
    log = (tmp_path / "job.log").read_text()
    assert code == 0, tail
    assert "succeeded" in tail
    # The job joined the running cluster (3 CPUs: one trial of 2 workers at a time) and ran both trials.
    assert "1 trials x <= 2 epochs (ASHA grace 1), 2 worker(s) each, 1 at a time (the nodes alive now)" in log
    assert "Best trial of study glintru-" in log
    assert "1 trials; best " in log
