"""A real package: the wheel carries the search spaces, and `glintru tune --profile quick
--smoke-test` runs from a fresh virtual environment that has the wheel, outside the source tree.

The fresh environment gets the wheel with `pip install --no-deps` and reaches the already
installed dependencies (torch, Ray, MLflow...) through a `.pth` line naming this environment's
site-packages, so the test needs no network; glintru itself comes only from the wheel (the
editable install's finder lives in a `.pth` file, which a path added this way does not run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # builds a wheel, makes a venv and runs a study: minutes


def test_wheel_has_the_search_spaces_and_a_study_runs_from_a_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist)], check=True, capture_output=True, text=True)
    (wheel,) = dist.glob("glintru-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"glintru/search_spaces/{n}.yaml" for n in ("quick", "glintru", "sasrec", "narm", "gru4rec")} <= names
    assert "glintru/__main__.py" in names and "glintru/serving.py" in names

    # The fresh environment sees nothing of the caller's PYTHONPATH (a source tree there would make
    # pip take glintru as installed already) nor its MLflow settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHONPATH"))}
    venv = tmp_path / "venv"
    # No pip of its own (5 s to install one): this pip installs into it (`pip --python`).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, env=env)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, env=env).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, env=env)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(py), "-c", "import glintru; print(glintru.__file__)"], cwd=work, env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    assert where.startswith(site), where  # the wheel's copy, not the source tree
    assert subprocess.run([str(py), "-m", "glintru", "--help"], cwd=work, env=env, capture_output=True).returncode == 0
    run = subprocess.run([str(py), "-m", "glintru", "tune", "--profile", "quick", "--smoke-test", "--num-samples", "1"],
                         cwd=work, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "1 trials; best " in run.stdout
