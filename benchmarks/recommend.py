"""Benchmark ``glintru recommend`` (top-K for every user, Ray Data actors) on ML-1M: users per second.

    python benchmarks/recommend.py DATA/ml-1m/ml-1m.seq.txt
    python benchmarks/recommend.py DATA/ml-1m/ml-1m.seq.txt --model runs/ml-1m/glintru --workers 1 2

The sequence file is prepared into a temporary directory (never copied into the repository). Without
``--model`` a GLINT-RU with the default configuration (d=128, 8 heads, max_len=200) and seeded random
weights is scored: throughput depends on the architecture and sizes, not on the weights' values.
Figures per worker count:
  users_per_s  users scored and written per second, from the first batch requested to the last written
  score_s      that interval; wall_s: the whole call (Ray start, model broadcast, scoring, writing)
  inproc_users_per_s  the same scoring in this process without Ray (--threads torch threads, default 1)
Results go to ``benchmarks/results/recommend.json`` together with the load average, because the
machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from glintru.config import build_config
from glintru.data.dataset import load_prepared
from glintru.data.prepare import prepare
from glintru.models import build_model
from glintru.recommend import load_model, recommend, top_k_from_histories

OUT = Path(__file__).parent / "results" / "recommend.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="ML-1M sequence file, e.g. DATA/ml-1m/ml-1m.seq.txt")
    ap.add_argument("--model", help="trained model (run dir, checkpoint, MLflow URI); default: random default GLINT-RU")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--use-gpu", action="store_true")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the in-process reference (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="glintru-bench-rec-") as tmp:
        t = Path(tmp)
        prepare(args.source, t / "data")
        data = load_prepared(t / "data")
        if args.model:
            spec = args.model
        else:
            run_cfg = build_config("glintru", {"seed": 0})
            torch.manual_seed(0)
            model = build_model(run_cfg, data.n_items)
            (t / "run").mkdir()
            torch.save({"model": model.state_dict(), "config": run_cfg.to_flat()}, t / "run" / "best.pt")
            spec = str(t / "run")
        loaded = load_model(spec)

        t0 = time.perf_counter()
        top_k_from_histories(loaded.model, data.offsets, data.items, k=args.k, max_len=loaded.max_len)
        inproc = data.n_users / (time.perf_counter() - t0)
        print(f"in-process: {inproc:.0f} users/s ({torch.get_num_threads()} torch threads)")

        runs = []
        for workers in args.workers:
            res = recommend(spec, t / "data", t / f"recs{workers}.parquet", k=args.k, workers=workers,
                            batch_size=args.batch_size, use_gpu=args.use_gpu)
            runs.append({"workers": workers, "users_per_s": round(res.users_per_s, 1),
                         "score_s": round(res.score_s, 2), "wall_s": round(res.wall_s, 2)})
            print(f"workers={workers}: {res.users_per_s:.0f} users/s, scoring {res.score_s:.1f} s, whole call {res.wall_s:.1f} s")

    result = {
        "dataset": "ml-1m", "source": Path(args.source).name, "n_users": data.n_users, "n_items": data.n_items,
        "k": args.k, "batch_size": args.batch_size, "use_gpu": args.use_gpu,
        "model": args.model or "glintru default config (d=128, 8 heads, max_len=200), random weights",
        "max_len": loaded.max_len, "inproc_users_per_s": round(inproc, 1), "inproc_torch_threads": torch.get_num_threads(),
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "load_average_1_5_15": [round(x, 1) for x in os.getloadavg()],
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "note": "load average above the CPU count means the figures are contended (shared machine)",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
