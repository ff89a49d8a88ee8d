"""A real multi-host Ray cluster (one network namespace per node, its own address on a private
bridge): a 2-worker Ray Train run whose workers train on two different hosts, one of which loses its
link mid-epoch; the run finishes from the last checkpoint on the remaining hosts with the test
metrics of the same run undisturbed (the engine's 2-rank reference run, without Ray). The test runs
scripts/netns_cluster.py (root, as CI and the development machine run tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # four Ray nodes and a Train run that loses a host: minutes


def test_link_cut_mid_epoch_finishes_from_the_last_checkpoint_with_the_same_metrics(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "netns_cluster.py"), "--out", str(tmp_path / "netns")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "netns" / "result.json").read_text())
    cut = result["cut"]
    assert cut["alive_before_cut"] == ["10.231.0.1", "10.231.0.2", "10.231.0.3", "10.231.0.4"]
    # data parallelism across hosts: the two Train workers ran on two different worker hosts (the
    # head has 0 CPUs, each worker host 1), and one of them lost its link
    assert len(cut["worker_hosts"]) == 2 and "10.231.0.1" not in cut["worker_hosts"]
    assert cut["cut"] in cut["worker_hosts"] and cut["cut"] not in cut["alive_nodes"]
    assert result["epochs_cut_run"] == [1, 2, 3, 4] and result["same_test_metrics"]
    # resumed from a checkpoint, not started again: the epochs trained before the cut are kept as they were
    assert result["epochs_before_cut"] >= 2 and result["resumed_from_checkpoint"]
    assert result["reference"]["test/full/ndcg@10"] == cut["metrics"]["test/full/ndcg@10"]
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.count("gr-") == 0  # cleaned up
