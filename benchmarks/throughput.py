"""Training and evaluation throughput of every model at ML-1M's shape (issue 3, section 5).

    python benchmarks/throughput.py --data /path/to/ml-1m.seq.txt --out benchmarks/results/throughput.json
    python benchmarks/throughput.py --data data/ml-1m --out /tmp/quick.json --quick      # < 3 minutes

``--data`` is a prepared dataset directory or a raw interaction file (prepared into a temporary
directory with :func:`glintru.data.prepare.prepare`). Each model runs in a fresh subprocess so its
peak RSS is its own. Per model: training target items/s with the engine's batches and loss (timed
steps after warm-up; the objective is the model's default: all positions for glintru, sasrec,
gru4rec; one target per prefix for glintru_official and narm), full-ranking evaluation users/s of
the test split (all users, or the first ``--quick`` subset, extrapolated and labelled), peak RSS and
parameter count. d=128 and max length 200 for every model (config defaults).

Targets (issue 3): GLINT-RU all-position training >= 5,000 targets/s; full-ranking evaluation of
6,040 users <= 10 s. Reference, the official RecBole code on this kind of machine
(measured on this kind of machine): GLINT-RU ~64 samples/s and full-sort 21.5 s; SASRec 41/s, 27.5 s; NARM 273/s,
4.7 s; GRU4Rec 287/s, 3.3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODELS = ("glintru", "glintru_official", "sasrec", "narm", "gru4rec")
# Official RecBole code measured on a 2-core machine: samples/s, full-sort seconds for 6,040 users.
RECBOLE = {"glintru_official": (64, 21.5), "sasrec": (41, 27.5), "narm": (273, 4.7), "gru4rec": (287, 3.3)}
TARGET_TRAIN = 5000.0  # glintru all-position targets/s
TARGET_EVAL_S = 10.0  # full ranking of every ML-1M user


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="prepared dataset directory or raw interaction file")
    p.add_argument("--out", help="result JSON path")
    p.add_argument("--quick", action="store_true", help="short timings and an evaluation subset (< 3 minutes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per model process (default 1)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--train-seconds", type=float, help="timed training seconds per model (default 60, quick 6)")
    p.add_argument("--eval-users", type=int, help="evaluate only the first N users (default all, quick 600)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: measure this model, print JSON
    args = p.parse_args(argv)
    if args.out is None and args.child is None:
        p.error("--out is required")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def measure(name: str, data_dir: str, threads: int, device: str, train_seconds: float, eval_users: int | None) -> dict[str, Any]:
    """One model's figures, in this process (called in a fresh subprocess)."""
    import numpy as np
    import torch

    from glintru.config import build_config
    from glintru.data.dataset import PreparedDataset, load_prepared
    from glintru.engine.batching import epoch_batches, make_batch, training_samples
    from glintru.engine.evaluate import evaluate
    from glintru.engine.loss import SequenceLoss
    from glintru.models import build_model

    torch.set_num_threads(threads)
    dev = torch.device(device)
    data = load_prepared(data_dir)
    cfg = build_config(name, {"max_len": 200, "hidden_size": 128})
    t = cfg.train
    torch.manual_seed(t.seed)
    model = build_model(cfg, data.n_items).to(dev)
    params = sum(p.numel() for p in model.parameters())
    loss_mod = SequenceLoss(model, t.loss_chunk)
    opt = torch.optim.Adam(model.parameters(), lr=t.lr)
    samples = training_samples(data, t.objective, t.max_len, t.window_overlap)
    batches = epoch_batches(samples, t.batch_size, seed=t.seed, epoch=1)
    width = t.max_len if model.needs_full_window else None
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step(idx: np.ndarray) -> None:
        batch = {k: v.to(dev) for k, v in make_batch(data.items, samples, idx, width=width).items()}
        loss = loss_mod(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    warm = 2
    for idx in batches[:warm]:
        step(idx)
    sync()
    n_targets, steps, t0, c0 = 0, 0, time.perf_counter(), time.process_time()
    for idx in batches[warm:]:
        step(idx)
        n_targets += samples.n_targets(idx)
        steps += 1
        if time.perf_counter() - t0 >= train_seconds:
            break
    sync()
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0

    all_users = len(data.eval_users())
    sub = data
    if eval_users is not None and eval_users < data.n_users:
        cut = int(data.offsets[eval_users])
        sub = PreparedDataset(data.path, data.manifest, data.user_ids[:eval_users], data.offsets[: eval_users + 1], data.items[:cut])
    t1, c1 = time.perf_counter(), time.process_time()
    out = evaluate(model, sub, "test", t, negatives=None, device=dev)
    sync()
    eval_s, eval_cpu_s = time.perf_counter() - t1, time.process_time() - c1
    n_eval = int(out["test/n_users"])
    users_per_s = n_eval / eval_s
    return {
        "objective": t.objective,
        "batch_size": t.batch_size,
        "train_targets_per_s": n_targets / train_s,
        "train_steps_timed": steps,
        "train_s": train_s,
        "train_cpu_s": train_cpu_s,  # process CPU time: wall >> cpu * threads means the machine was contended
        "train_samples_per_epoch": len(samples),
        "train_targets_per_epoch": samples.n_targets(),
        "eval_users_per_s": users_per_s,
        "eval_users": n_eval,
        "eval_s": eval_s,
        "eval_cpu_s": eval_cpu_s,
        "eval_all_users": all_users,
        "eval_all_users_s": all_users / users_per_s,
        "eval_extrapolated": n_eval < all_users,
        "params": params,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "device": device,
    }


def machine(threads: int) -> dict[str, Any]:
    import torch

    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), "")
    except OSError:
        pass
    return {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "cpu": cpu, "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "threads": threads,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def prepared_dir(path: Path, tmp: Path) -> Path:
    if path.is_dir():
        return path
    from glintru.data.prepare import prepare

    out = tmp / "prepared"
    t0 = time.perf_counter()
    prepare(path, out)
    print(f"prepared {path} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return out


def print_table(result: dict[str, Any]) -> None:
    print(f"{'model':17}{'objective':>14}{'train tgt/s':>13}{'eval users/s':>14}{'eval all (s)':>14}"
          f"{'params':>10}{'RSS MB':>9}   target / RecBole reference")
    for name, r in result["models"].items():
        if "error" in r:
            print(f"{name:17} error: {r['error']}")
            continue
        note = ""
        if name == "glintru":
            ok_t = "ok" if r["train_targets_per_s"] >= TARGET_TRAIN else "MISSED"
            ok_e = "ok" if r["eval_all_users_s"] <= TARGET_EVAL_S else "MISSED"
            note = f">= {TARGET_TRAIN:,.0f} tgt/s ({ok_t}); <= {TARGET_EVAL_S:g} s eval ({ok_e})"
        elif name in RECBOLE:
            note = f"RecBole {RECBOLE[name][0]} samples/s, {RECBOLE[name][1]} s"
        est = "~" if r["eval_extrapolated"] else ""
        print(f"{name:17}{r['objective']:>14}{r['train_targets_per_s']:13,.0f}{r['eval_users_per_s']:14,.0f}"
              f"{est + format(r['eval_all_users_s'], '.1f'):>14}{r['params']:10,d}{r['peak_rss_mb']:9,.0f}   {note}")
    busy = [f"{n} {r['train_cpu_s'] / r['train_s']:.0%}" for n, r in result["models"].items() if "train_s" in r]
    print(f"CPU share of wall time while training ({result['threads']} thread(s); below ~90% = contended): {', '.join(busy)}")
    if any(r.get("eval_extrapolated") for r in result["models"].values()):
        print("~ = extrapolated from an evaluation subset (--quick)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    train_seconds = args.train_seconds if args.train_seconds is not None else (6.0 if args.quick else 60.0)
    eval_users = args.eval_users if args.eval_users is not None else (600 if args.quick else None)
    if args.child:
        print(json.dumps(measure(args.child, args.data, args.threads, args.device, train_seconds, eval_users)))
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    result: dict[str, Any] = {"models": {}, "machine": machine(args.threads), "threads": args.threads,
                              "quick": args.quick, "train_seconds": train_seconds, "eval_users": eval_users}
    with tempfile.TemporaryDirectory(prefix="glintru-bench-") as tmp:
        data = prepared_dir(Path(args.data), Path(tmp))
        for name in args.models:
            cmd = [sys.executable, __file__, "--child", name, "--data", str(data), "--threads", str(args.threads),
                   "--device", args.device, "--train-seconds", str(train_seconds)]
            if eval_users is not None:
                cmd += ["--eval-users", str(eval_users)]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                result["models"][name] = {"error": tail}
            else:
                result["models"][name] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{name}: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print_table(result)
    return 0 if all("error" not in r for r in result["models"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
