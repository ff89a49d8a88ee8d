"""The code passes the project's lint rules (pyproject.toml's ``[tool.ruff]``), and those rules do
catch what they are there for: a lint failure names the file, line and rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_repository_passes_its_lint_rules():
    out = ruff(".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_rules_flag_import_order_an_unused_import_a_blind_except_and_a_stray_noqa(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\nprint(sys.argv)\ntry:\n    x = 1\nexcept Exception:  # noqa: E731\n    pass\n")
    out = ruff("--config", str(ROOT / "pyproject.toml"), str(bad))
    assert out.returncode == 1
    found = {line.split(" ", 2)[1] for line in out.stdout.splitlines() if line.startswith(str(bad))}
    assert found == {"I001", "F401", "BLE001", "RUF100"}, out.stdout
