"""Security properties, checked on the source and at run time.

* Checkpoints are read only with ``torch.load(..., weights_only=True)`` (no code runs on load).
* No pickle/marshal/eval of user files; YAML only through ``yaml.safe_load``.
* MLflow models are loaded only as glintru's own "models from code" pyfunc, in ``glintru.loading``,
  with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` forced to false (no MLflow flavour that unpickles).
* Servers the project starts (the local Ray dashboard) bind to 127.0.0.1.
* No credentials in tracked files; docs/operating.md says where they go.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from glintru.config import load_config_file
from glintru.errors import UserError
from glintru.loading import load_model

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("glintru", "pipelines", "benchmarks") for p in (ROOT / d).rglob("*.py")
                 if "work" not in p.relative_to(ROOT / d).parts[:1])  # benchmarks/work: run outputs, git-ignored


def calls(tree: ast.AST):
    """Every call as ``(dotted name, node)``, e.g. ``("torch.load", <Call>)``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts = []
            f = node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            parts.append(f.id if isinstance(f, ast.Name) else "<expr>")  # x().eval() is not eval()
            yield ".".join(reversed(parts)), node


def keyword(node: ast.Call, name: str):
    kw = next((k for k in node.keywords if k.arg == name), None)
    return kw.value.value if kw is not None and isinstance(kw.value, ast.Constant) else None


def all_calls() -> list[tuple[str, str, ast.Call]]:
    out = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        out += [(str(path.relative_to(ROOT)), name, node) for name, node in calls(tree)]
    return out


CALLS = all_calls()


def test_sources_were_scanned():
    names = {name for _, name, _ in CALLS}
    assert len(SOURCES) > 10 and "torch.load" in names and "yaml.safe_load" in names


def test_every_torch_load_is_weights_only():
    bad = [f"{f}:{n.lineno}" for f, name, n in CALLS if name == "torch.load" and keyword(n, "weights_only") is not True]
    assert not bad, f"torch.load without weights_only=True: {bad}"


FORBIDDEN = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "cloudpickle.load", "cloudpickle.loads", "marshal.load",
    "marshal.loads", "dill.load", "dill.loads", "joblib.load", "shelve.open", "pandas.read_pickle", "pd.read_pickle",
    "yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all", "yaml.full_load_all",
    "eval", "exec", "compile", "__import__", "mlflow.pytorch.load_model", "torch.jit.load",
}


def test_no_unsafe_deserialisation_or_eval():
    bad = [f"{f}:{n.lineno} {name}" for f, name, n in CALLS if name in FORBIDDEN]
    bad += [f"{f}:{n.lineno} {name}" for f, name, n in CALLS
            if name in ("np.load", "numpy.load") and keyword(n, "allow_pickle") is not False]
    assert not bad, f"unsafe loaders or eval: {bad}"


def test_mlflow_models_load_only_through_the_loader_with_pickle_refused():
    where = {f for f, name, _ in CALLS if name == "mlflow.pyfunc.load_model"}
    assert where == {"glintru/loading.py"}
    text = (ROOT / "glintru" / "loading.py").read_text()
    assert 'os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"' in text


def test_yaml_python_tags_are_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"lr: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{marker}']]\n")
    with pytest.raises(UserError, match="not a valid YAML file"):
        load_config_file(evil)
    assert not marker.exists()


class _Touch:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_checkpoint_carrying_code_is_refused_and_nothing_runs(tmp_path):
    from glintru.engine.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"
    run = tmp_path / "run" / "checkpoints" / "epoch_0001"
    run.mkdir(parents=True)
    torch.save({"model": {}, "config": {"model": "glintru"}, "x": _Touch(str(marker))}, run / "checkpoint.pt")
    with pytest.raises(UserError):
        load_checkpoint(run)
    with pytest.raises(UserError):
        load_model(run / "checkpoint.pt")
    assert not marker.exists()


def test_local_ray_dashboard_binds_to_localhost_and_workers_run_at_normal_priority(ray_local):
    """The session's local Ray, started by ``start_local_ray`` as `glintru train` and `glintru tune`
    start theirs, with no RAY_worker_niceness of the caller's (conftest's ``ray_local``)."""
    import os

    url = ray_local._private.worker._global_node.address_info["webui_url"]
    assert url.split("//")[-1].startswith("127.0.0.1:"), url
    # Ray's default is nice 15: a trial then starves whenever anything else runs on the machine
    assert ray_local.get(ray_local.remote(lambda: os.nice(0)).remote()) == os.nice(0)


def test_a_worker_niceness_the_user_set_is_kept(monkeypatch):
    import ray

    from glintru.distributed import trainer

    seen = {}
    monkeypatch.setenv("RAY_worker_niceness", "7")
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "unset")  # start_local_ray sets it: restored after the test
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(env=__import__("os").environ["RAY_worker_niceness"]))
    trainer.start_local_ray(1)
    assert seen["env"] == "7"


def test_no_server_binds_all_interfaces_in_code_or_cluster_config():
    texts = {p: p.read_text(encoding="utf-8") for p in [*SOURCES, ROOT / "cluster.yaml"] if p.exists()}
    bad = [str(p.relative_to(ROOT)) for p, t in texts.items() if "0.0.0.0" in t]
    assert not bad, f"0.0.0.0 in {bad}"
    head = " ".join(yaml.safe_load((ROOT / "cluster.yaml").read_text())["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head


SECRET_PATTERNS = [
    r"AKIA[0-9A-Z]{16}",  # AWS access key id
    r"(?i)aws_secret_access_key\s*[:=]\s*\S{20,}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"(?i)(password|passwd|api[_-]?key|secret|token)\s*[:=]\s*['\"][^'\"\s]{8,}['\"]",
    r"https?://[^/\s:@]+:[^/\s:@]+@",  # credentials inside a URL
    r"ghp_[0-9A-Za-z]{36}",
]


def test_no_credentials_in_tracked_files():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for name in files:
        p = ROOT / name
        if not p.is_file() or p.suffix in (".png", ".parquet", ".pt", ".db") or p.stat().st_size > 2_000_000:
            continue
        text = p.read_text(encoding="utf-8", errors="ignore")
        hits += [f"{name}: {pat}" for pat in SECRET_PATTERNS if re.search(pat, text)]
    assert not hits, hits


def test_operating_doc_says_where_credentials_go():
    text = (ROOT / "docs" / "operating.md").read_text(encoding="utf-8")
    section = text[text.lower().index("credentials") :]
    for where in ("~/.aws", "MLFLOW_TRACKING_USERNAME", "environment"):
        assert where in section, where
