"""The cluster path checked offline: cluster.yaml through Ray's own config preparation, the KubeRay
manifests against a schema of KubeRay's fields, the Dockerfile through BuildKit's parser and
hadolint, and every command they run parsed by glintru's own command line."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import glintru
from glintru.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = yaml.safe_load((ROOT / "cluster.yaml").read_text())
MANIFESTS = sorted((ROOT / "k8s").glob("*.yaml"))
SCHEMA = json.loads((ROOT / "k8s" / "schema" / "kuberay.schema.json").read_text())


def _prepared(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(json.loads(json.dumps(cfg)))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_boots_a_cpu_head_with_boto3_and_autoscaling_gpu_workers_with_a_profile():
    cfg = _prepared(CLUSTER)
    assert cfg["provider"]["type"] == "aws"
    nodes = cfg["available_node_types"]
    head = nodes[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] > 0
    assert any("boto3" in c for c in cfg["head_setup_commands"])  # the AWS autoscaler needs it on the head
    workers = {name: n for name, n in nodes.items() if name != cfg["head_node_type"]}
    assert workers
    for name, n in workers.items():
        assert n["resources"]["GPU"] >= 1 and n["resources"]["CPU"] >= 1, name
        assert n["min_workers"] == 0 < n["max_workers"], name  # GPUs autoscale from zero
        assert n["node_config"]["IamInstanceProfile"], name  # S3 access for data and checkpoints
    assert cfg["docker"]["image"].endswith(f"/glintru:{glintru.__version__}")
    assert ".gitignore" in cfg["rsync_filter"]
    for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        if "ray start" in cmd:
            assert cmd.startswith("ulimit -n 65536;"), cmd
    assert all(k.startswith("/") for k in cfg["file_mounts"])


def test_the_capacity_of_cluster_yaml_sizes_trial_concurrency():
    from glintru.distributed.capacity import from_autoscaler_config, max_concurrent_trials

    cap = from_autoscaler_config(_prepared(CLUSTER), "cluster.yaml")
    assert cap.gpus == 4 and cap.node_gpus == 1
    assert max_concurrent_trials(1, 1.0, 0.5, cap) == 8  # two trials per GPU on four GPU nodes


def test_a_typo_in_cluster_yaml_is_rejected_by_rays_schema():
    import jsonschema

    cfg = json.loads(json.dumps(CLUSTER))
    cfg["head_start_ray_commandz"] = cfg.pop("head_start_ray_commands")
    with pytest.raises(jsonschema.ValidationError, match="head_start_ray_commandz"):
        _prepared(cfg)


def test_cluster_yaml_holds_no_credentials():
    text = (ROOT / "cluster.yaml").read_text().lower()
    for word in ("aws_access_key_id", "aws_secret_access_key", "secret_key", "password", "ssh_private_key"):
        assert word not in text


def _glintru_commands(text: str) -> list[list[str]]:
    """Every `glintru ...` command line in a block of shell text (continuation lines joined)."""
    joined = re.sub(r"\\\s*\n\s*#?\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.lstrip("# ").strip()
        m = re.search(r"(?:^|\s)glintru ((?:prepare|train|tune|recommend) .*)$", line)
        if m:
            out.append(shlex.split(m.group(1).split(" #")[0].split(" && ")[0]))
    return out


@pytest.mark.parametrize("path", [ROOT / "cluster.yaml", *MANIFESTS], ids=lambda p: p.name)
def test_every_glintru_command_in_the_cluster_files_parses(path):
    commands = _glintru_commands(path.read_text())
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict) and doc.get("kind") == "RayJob":
            commands.append(shlex.split(doc["spec"]["entrypoint"])[1:])
    assert commands, path
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)  # SystemExit (argparse) on an unknown or malformed option


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kuberay_manifests_match_the_schema_and_the_image(path):
    import jsonschema

    doc = yaml.safe_load(path.read_text())
    jsonschema.validate(doc, SCHEMA)
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    assert spec["rayVersion"] == "2.60.0" and spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 < gpu["maxReplicas"]
    (container,) = gpu["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    images = {c["image"] for g in [head, gpu] for c in g["template"]["spec"]["containers"]}
    assert images == {CLUSTER["docker"]["image"]}


def test_a_typo_in_a_manifest_is_rejected():
    import jsonschema

    doc = yaml.safe_load((ROOT / "k8s" / "rayjob-tune.yaml").read_text())
    doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplica"] = 4
    with pytest.raises(jsonschema.ValidationError, match="maxReplica"):
        jsonschema.validate(doc, SCHEMA)


def test_dockerfile_parses_pins_ray_and_torch_and_passes_hadolint():
    import dockerfile

    cmds = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    base = next(c for c in cmds if c.cmd == "FROM").value[0]
    ray_pin = re.search(r'ray\[[^\]]+\]>=([\d.]+)', (ROOT / "pyproject.toml").read_text()).group(1)
    assert base.startswith(f"rayproject/ray:{ray_pin}") and "-cu" in base  # the pinned Ray, a CUDA build
    torch_arg = next(c for c in cmds if c.cmd == "ARG" and c.value[0].startswith("TORCH_VERSION")).value[0]
    assert torch_arg.split("=")[1] in (ROOT / "scripts" / "bootstrap.sh").read_text()
    copied = {c.value[0] for c in cmds if c.cmd == "COPY"}
    assert {"glintru", "search_spaces"} <= copied
    lint = subprocess.run([str(Path(sys.executable).parent / "hadolint"), str(ROOT / "Dockerfile")],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
