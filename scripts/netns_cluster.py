"""A real multi-host Ray cluster on one Linux machine: each Ray node in its own network namespace.

    sudo python scripts/netns_cluster.py --out /tmp/netns      # needs root (ip netns), Ray installed

The script builds a private network: a bridge in its own namespace (``gr-br``) and one namespace per
Ray node (``gr-head``, ``gr-w1``..``gr-w3``), each joined to the bridge by a veth pair, with
addresses 10.231.0.1-4/24 that exist only inside these namespaces (nothing is routed to or from
the host's network). A Ray head (0 CPUs) starts in ``gr-head`` and three 1-CPU worker nodes in the
worker namespaces; every node has its own address, unlike ``ray.cluster_utils.Cluster`` whose
nodes share one.

First, without Ray, the reference: the engine's 2-rank data-parallel run of a tiny GLINT-RU
configuration (4 epochs) in two local processes (torch.distributed gloo, one thread each, as Ray
Train's 1-CPU workers run), exactly what a Ray Train worker runs (``run_engine``, DDP, the same
all-reduce). Then, from the head's namespace, the same run as a Ray Train run on 2 workers (a
checkpoint every epoch, storage on the shared local disk) whose two workers train on two different
hosts, and the link of one of these hosts is cut (its veth set down) while epoch 3 trains: Ray
declares that node dead, Ray Train restarts the worker group on the two nodes left and resumes from
the last checkpoint.

It checks that the run finished all epochs, that it resumed (a second attempt started from a
checkpoint), and that its final test metrics equal the reference's, bit for bit. Everything is
removed at the end (Ray stopped in every namespace, namespaces deleted), also on failure. Writes
``OUT/result.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# dropout off: each rank would draw its own masks, so only a run without it is the same run however it is split
CONFIG = {"hidden_size": 16, "max_len": 20, "batch_size": 32, "eval_batch_size": 128, "num_negatives": 10,
          "max_epochs": 4, "patience": 0, "seed": 5, "emb_dropout": 0.0, "attn_dropout": 0.0, "gate_dropout": 0.0,
          "dense_dropout": 0.0, "mlp_dropout": 0.0}

NODES = {"gr-head": "10.231.0.1", "gr-w1": "10.231.0.2", "gr-w2": "10.231.0.3", "gr-w3": "10.231.0.4"}
BRIDGE_NS = "gr-br"
RAY_ENV = {  # find a dead node in seconds, not the default 30+
    "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "4", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    "RAY_COLOR_PREFIX": "0", "RAY_AUTH_MODE": "disabled",
    # workers at the priority of this script, not Ray's default nice 15: at nice 15 on a machine
    # busy with other work, each Train actor took minutes to start and the runs never finished
    "RAY_worker_niceness": "0",
    "GLOO_SOCKET_IFNAME": "gr0",  # gloo binds the node's own address, not the hostname's 127.0.x.x
    # this cluster's State API (Ray Train's placement-group cleaner uses it); never one inherited
    # from a Ray that the calling process started outside the namespaces
    "RAY_API_SERVER_ADDRESS": "http://10.231.0.1:8265",
}


def ray_env() -> dict:
    """The environment of every Ray process and driver here: the caller's, without its Ray address."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    return {**env, **RAY_ENV}


def sh(*cmd: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, env=env)


def in_ns(ns: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *cmd, **kw)


def build_network() -> None:
    sh("ip", "netns", "add", BRIDGE_NS)
    in_ns(BRIDGE_NS, "ip", "link", "add", "br0", "type", "bridge")
    in_ns(BRIDGE_NS, "ip", "link", "set", "br0", "up")
    in_ns(BRIDGE_NS, "ip", "link", "set", "lo", "up")
    for i, (ns, ip) in enumerate(NODES.items()):
        sh("ip", "netns", "add", ns)
        host, peer = f"grv{i}a", f"grv{i}b"
        sh("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", host, "netns", ns)
        sh("ip", "link", "set", peer, "netns", BRIDGE_NS)
        in_ns(BRIDGE_NS, "ip", "link", "set", peer, "master", "br0")
        in_ns(BRIDGE_NS, "ip", "link", "set", peer, "up")
        in_ns(ns, "ip", "link", "set", host, "name", "gr0")  # the same name on every node (GLOO_SOCKET_IFNAME)
        in_ns(ns, "ip", "addr", "add", f"{ip}/24", "dev", "gr0")
        in_ns(ns, "ip", "link", "set", "gr0", "up")
        in_ns(ns, "ip", "link", "set", "lo", "up")


def teardown() -> None:
    """Kill every process inside the namespaces (never `ray stop`: it would stop any Ray on the
    machine, the namespaces share the process table) and delete them."""
    for ns in [*NODES, BRIDGE_NS]:
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            sh("kill", "-9", pid, check=False)
        sh("ip", "netns", "delete", ns, check=False)


def start_ray(temp_dir: Path) -> None:
    """``temp_dir`` holds Ray's unix sockets: it must be a short path (a socket path has at most
    107 characters), so not somewhere under a test's long temporary directory."""
    env = ray_env()
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    started = in_ns("gr-head", *ray, "start", "--head", "--node-ip-address", NODES["gr-head"], "--port", "6379",
                    "--num-cpus", "0", "--dashboard-host", NODES["gr-head"], "--disable-usage-stats",
                    "--temp-dir", str(temp_dir), env=env, check=False)
    if started.returncode != 0:
        raise SystemExit(f"ray start --head failed:\n{started.stdout[-2000:]}\n{started.stderr[-2000:]}")
    # One node at a time: three raylets starting together missed their registration deadline on a
    # busy 2-core machine ("The current node timed out during startup").
    for ns in ("gr-w1", "gr-w2", "gr-w3"):
        in_ns(ns, *ray, "start", "--address", f"{NODES['gr-head']}:6379", "--node-ip-address", NODES[ns],
              "--num-cpus", "1", "--disable-usage-stats", env=env)


DRIVER = r'''
import json, sys, threading, time, subprocess
from pathlib import Path
import ray
from glintru.distributed.trainer import run_trainer

out, data, flat = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
ray.init(address="10.231.0.1:6379", log_to_driver=False)

def train_worker_hosts():
    """The addresses of the nodes that host this cluster's live Ray Train workers."""
    from ray.util.state import list_actors
    hosts = {a.node_id for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10000)
             if "RayTrainWorker" in (a.class_name or "")}
    return sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"] and n["NodeID"] in hosts)

def cutter(name, done):
    # the history of the run grows one line per epoch; cut a worker host's link during epoch 3
    hist = out / name / "history.json"
    while True:
        try:
            before = json.loads(hist.read_text())
            if len(before) >= 2:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    done["before"] = before  # epochs as first trained: their timings differ if they are trained again
    # where the two workers train (each 1-CPU node can host one: two different hosts), and the victim
    for _ in range(20):  # the State API may not answer at once
        try:
            done["worker_hosts"] = train_worker_hosts()
        except Exception:
            done["worker_hosts"] = []
        if len(done["worker_hosts"]) == 2:
            break
        time.sleep(0.5)
    done["alive_before_cut"] = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
    victim = next(ip for ip in done["worker_hosts"] if ip != "10.231.0.1")
    time.sleep(1.0)
    subprocess.run(["ip", "link", "set", "grv%db" % (int(victim.rsplit(".", 1)[1]) - 1), "down"], check=True)
    done["cut"] = victim

done = {}
threading.Thread(target=cutter, args=("cut", done), daemon=True).start()
t0 = time.time()
result = run_trainer(flat, data, name="cut", storage_path=str(out / "ray"), workers=2, work_dir=str(out / "cut"),
                     max_failures=2)
alive = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
print("RESULT " + json.dumps({  # Ray Train prints to stdout as well
    "name": "cut", "cut": done.get("cut"), "before_cut": done.get("before"), "worker_hosts": done.get("worker_hosts"),
    "alive_before_cut": done.get("alive_before_cut"), "wall_s": time.time() - t0, "alive_nodes": alive,
    "metrics": {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}}), flush=True)
'''


def _reference_rank(rank: int, port: int, flat: dict, data: str, out: str) -> None:
    """Rank ``rank`` of the reference run: a Ray Train worker's engine run (``run_engine``, DDP, the
    production all-reduce) in a 2-process gloo group on this machine, one torch thread."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from glintru.distributed.trainer import Hooks, all_reduce_sum, run_engine

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        reports: list[dict] = []
        run_engine({"flat": flat, "data_dir": data}, Hooks(lambda metrics, _: reports.append(metrics), lambda: None),
                   rank=rank, world_size=2, wrap_model=DistributedDataParallel, reduce=all_reduce_sum)
        if rank == 0:
            Path(out).write_text(json.dumps(reports[-1]))  # the final report: test metrics
        dist.barrier()  # both ranks done before the group is torn down (as tests/test_engine_ddp.py)
    finally:
        dist.destroy_process_group()


def reference_metrics(flat: dict, data: Path, out: Path) -> dict:
    """The final metrics of the 2-rank reference run (no Ray, no cluster)."""
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_reference_rank, args=(port, flat, str(data), str(out)), nprocs=2, join=True)
    return json.loads(out.read_text())


def run_driver(out: Path, data: Path, flat: dict) -> dict:
    """The Ray Train run whose worker host loses its link: its result."""
    env = ray_env()
    # the driver lives in the head's namespace; the cut runs `ip link` in the bridge's namespace
    cmd = ["ip", "netns", "exec", "gr-head", sys.executable, "-c", DRIVER.replace(
        '["ip", "link", "set"', '["ip", "netns", "exec", "gr-br", "ip", "link", "set"'), str(out), str(data),
        json.dumps(flat)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"driver failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    (cut,) = (json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return cut


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/glintru-netns")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("needs root: network namespaces are made with `ip netns`")
    # SIGTERM (`timeout`, a CI job cancelled) ends the script through the `finally` below, which
    # stops every Ray process in the namespaces and deletes them
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    from glintru.config import build_config
    from glintru.tuning.smoke import write_synthetic_dataset

    t0 = time.time()
    data = write_synthetic_dataset(out / "data", n_users=400, n_items=300)
    flat = build_config("glintru", CONFIG).to_flat()
    reference = reference_metrics(flat, data, out / "reference.json")
    reference_s = time.time() - t0
    teardown()  # a previous interrupted run's leftovers
    ray_tmp = Path(tempfile.mkdtemp(prefix="grn-", dir="/tmp"))
    try:
        build_network()
        start_ray(ray_tmp)
        started = time.time() - t0 - reference_s
        cut = run_driver(out, data, flat)
    finally:
        teardown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    history = json.loads((out / "cut" / "history.json").read_text())
    keys = [k for k in reference if k.startswith("test/")]
    same = bool(keys) and all(abs(reference[k] - cut["metrics"][k]) < 1e-9 for k in keys)
    # Resumed, not restarted: epochs finished before the cut come back from a checkpoint as they were
    # (a run started again from scratch trains epoch 1 again, with other timings). The last of them
    # may be trained again: a report made just before the cut may not be registered yet.
    before = cut.pop("before_cut") or []
    kept = next((i for i, (a, b) in enumerate(zip(before, history)) if a != b), min(len(before), len(history)))
    result = {"reference": {k: reference[k] for k in keys}, "cut": cut,
              "epochs_cut_run": [int(h["epoch"]) for h in history],
              "epochs_before_cut": len(before), "epochs_kept": kept, "resumed_from_checkpoint": kept >= 1,
              "same_test_metrics": same, "wall_s": time.time() - t0, "reference_s": reference_s,
              "cluster_start_s": started, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("epochs_cut_run", "resumed_from_checkpoint", "same_test_metrics", "wall_s")}))
    print(f"cut: {cut['cut']} (alive at the end: {', '.join(cut['alive_nodes'])}); test/full/ndcg@10 reference "
          f"{reference.get('test/full/ndcg@10')} cut {cut['metrics'].get('test/full/ndcg@10')}")
    ok = (cut["cut"] is not None and cut["cut"] not in cut["alive_nodes"] and same and kept >= 1
          and result["epochs_cut_run"] == [1, 2, 3, 4])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
