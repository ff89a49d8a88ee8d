#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with torch (CPU wheel 2.13.0 first, so pip never
# pulls a multi-GB CUDA build on a CPU machine) and this project with its test extra.
# Usage: bash scripts/bootstrap.sh            (GLINTRU_VENV=path to use another location)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${GLINTRU_VENV:-.venv}"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[bootstrap] creating $venv"
  "$py" -m venv "$venv"
fi
stamp="$venv/.glintru-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[bootstrap] installing torch==2.13.0 and glintru[test] into $venv (a few minutes the first time)"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
