"""The thin entry scripts in pipelines/ run end to end in their --smoke-test mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocess studies, Ray clusters or servers: minutes

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_COLOR_PREFIX": "0"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_train_pipeline_smoke_test_trains_and_reports_test_metrics(tmp_path):
    out = tmp_path / "run"
    proc = _run(str(ROOT / "pipelines" / "train.py"), "--smoke-test", "--out", str(out), "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_epoch"] in (1, 2)
    for key in ("test/full/ndcg@10", "valid/full/ndcg@10", "test/pop10/hr@10"):
        assert 0.0 <= metrics[key] <= 1.0
    assert "test/full" in proc.stdout and (out / "best.pt").is_file()


def test_train_pipeline_without_data_is_one_clear_error(tmp_path):
    proc = _run(str(ROOT / "pipelines" / "train.py"), "--model", "glintru", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --data: required (a prepared dataset directory), unless --smoke-test"
