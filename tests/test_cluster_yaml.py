"""cluster.yaml validates offline against Ray's own launcher schema (no cloud call is made)."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _validate(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(cfg)
    validate_config(prepared)
    return prepared


def test_cluster_yaml_is_valid_with_cpu_head_and_autoscaling_gpu_workers():
    cfg = _validate(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    assert cfg["provider"]["type"] == "aws"
    nodes = cfg["available_node_types"]
    head = nodes[cfg["head_node_type"]]
    assert "GPU" not in head["resources"]
    gpu = [n for name, n in nodes.items() if name != cfg["head_node_type"]]
    assert gpu and all(n["resources"].get("GPU", 0) >= 1 and n["min_workers"] == 0 < n["max_workers"] for n in gpu)


def test_setup_installs_torch_before_the_project():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cmds = cfg["setup_commands"]
    torch_at = next(i for i, c in enumerate(cmds) if "torch" in c)
    project_at = next(i for i, c in enumerate(cmds) if "install -e" in c)
    assert torch_at < project_at
    assert "/home/ubuntu/glintru" in cfg["file_mounts"]


def test_cluster_yaml_holds_no_credentials():
    text = (ROOT / "cluster.yaml").read_text().lower()
    for word in ("aws_access_key_id", "aws_secret_access_key", "secret_key", "password", "ssh_private_key"):
        assert word not in text


def test_a_typo_is_rejected_by_the_schema():
    import jsonschema

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg["head_start_ray_commandz"] = cfg.pop("head_start_ray_commands")
    with pytest.raises(jsonschema.ValidationError, match="head_start_ray_commandz"):
        _validate(cfg)
