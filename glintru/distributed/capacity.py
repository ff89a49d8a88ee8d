"""What a Ray cluster can hold at most, and whether a trial's request fits at all.

On a cluster launched with ``ray up`` the head node holds the autoscaler's configuration
(``~/ray_bootstrap_config.yaml``): the most the cluster can grow to is the head plus every worker
type at its ``max_workers`` (within the global ``max_workers``). Sizing trial concurrency from the
resources present at the start would give one trial at a time on a cluster whose GPU nodes
autoscale from zero. Without that file (a local Ray, ``ray start`` nodes, KubeRay) the nodes
alive now are the capacity; pass ``--max-concurrent`` to override.

A request that can never be placed (a worker needing more GPUs than any node type has, or a trial
needing more than the whole cluster can grow to) would wait forever in Ray's queue; it is refused
with a message naming the option instead (:func:`check_placeable`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glintru.errors import UserError

BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
TRIAL_DRIVER_CPU = 0.01  # what a Ray Train trial's Tune driver reserves


@dataclass(frozen=True)
class Capacity:
    cpus: float  # the most the cluster can have at once
    gpus: float
    node_cpus: float  # the largest single node (what one worker can get)
    node_gpus: float
    source: str  # where the figures come from, for messages


def from_autoscaler_config(config: dict[str, Any], source: str) -> Capacity:
    """Capacity from an autoscaler config (``available_node_types`` with ``resources`` and ``max_workers``)."""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    budget = int(config.get("max_workers", 0) or 0)
    cpus = gpus = node_cpus = node_gpus = 0.0
    # The largest GPU types first, so a global max_workers is spent as the autoscaler could spend it.
    order = sorted(types.items(), key=lambda kv: -float((kv[1].get("resources") or {}).get("GPU", 0)))
    for name, spec in order:
        res = spec.get("resources") or {}
        c, g = float(res.get("CPU", 0)), float(res.get("GPU", 0))
        count = 1 if name == head else int(spec.get("max_workers", 0) or 0)
        if name != head:
            count = min(count, budget) if budget else count
            budget = max(0, budget - count) if budget else budget
        if count:
            node_cpus, node_gpus = max(node_cpus, c), max(node_gpus, g)
        cpus += c * count
        gpus += g * count
    return Capacity(cpus, gpus, node_cpus, node_gpus, source)


def cluster_capacity(config_path: str | None = None) -> Capacity:
    """The autoscaler's maximum (``GLINTRU_CLUSTER_CONFIG`` or ``~/ray_bootstrap_config.yaml``) if
    that file exists, else the Ray nodes alive now (Ray must be initialised)."""
    import yaml

    path = Path(os.path.expanduser(config_path or os.environ.get("GLINTRU_CLUSTER_CONFIG") or BOOTSTRAP_CONFIG))
    if path.is_file():
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not a valid autoscaler config ({exc})") from None
        cap = from_autoscaler_config(config, f"autoscaler config {path}")
        if cap.cpus > 0:
            return cap
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = [n.get("Resources", {}) for n in nodes]
    return Capacity(
        sum(r.get("CPU", 0.0) for r in res), sum(r.get("GPU", 0.0) for r in res),
        max((r.get("CPU", 0.0) for r in res), default=0.0), max((r.get("GPU", 0.0) for r in res), default=0.0),
        "the nodes alive now",
    )


def trial_request(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> tuple[float, float]:
    """``(CPUs, GPUs)`` one trial holds: a single-worker trial trains in its Tune process; a
    multi-worker trial's Tune process reserves a sliver and its Ray Train workers the rest."""
    if workers == 1:
        return cpus_per_worker, gpus_per_worker
    return workers * cpus_per_worker + TRIAL_DRIVER_CPU, workers * gpus_per_worker


def check_placeable(workers: int, cpus_per_worker: float, gpus_per_worker: float, cap: Capacity) -> None:
    """A UserError naming the option if a trial can never be placed on ``cap``."""
    if gpus_per_worker > 0 and cap.gpus <= 0:
        raise UserError(f"--gpu: the cluster has no GPU and cannot add one ({cap.source}); drop --gpu or add GPU nodes")
    if gpus_per_worker > cap.node_gpus + 1e-9:
        raise UserError(f"--gpus-per-worker {gpus_per_worker:g}: no node has that many GPUs (largest: {cap.node_gpus:g}; {cap.source})")
    if cpus_per_worker > cap.node_cpus + 1e-9:
        raise UserError(f"--cpus-per-worker {cpus_per_worker:g}: no node has that many CPUs (largest: {cap.node_cpus:g}; {cap.source})")
    cpu, gpu = trial_request(workers, cpus_per_worker, gpus_per_worker)
    if gpu > cap.gpus + 1e-9:
        raise UserError(f"--workers {workers} x --gpus-per-worker {gpus_per_worker:g} = {gpu:g} GPUs per trial, but the "
                        f"cluster can have at most {cap.gpus:g} ({cap.source}); lower --workers or --gpus-per-worker")
    if cpu > cap.cpus + 1e-9:
        raise UserError(f"--workers {workers} x --cpus-per-worker {cpus_per_worker:g} = {cpu:g} CPUs per trial, but the "
                        f"cluster can have at most {cap.cpus:g} ({cap.source}); lower --workers or --cpus-per-worker")


def max_concurrent_trials(workers: int, cpus_per_worker: float, gpus_per_worker: float, cap: Capacity) -> int:
    """Trials that fit at once in the cluster's maximum; at least 1."""
    cpu, gpu = trial_request(workers, cpus_per_worker, gpus_per_worker)
    n = math.floor(cap.cpus / cpu + 1e-9) if cpu > 0 else 1 << 20
    if gpu > 0:
        n = min(n, math.floor(cap.gpus / gpu + 1e-9))
    return max(1, n)
