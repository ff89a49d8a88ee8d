"""Benchmark ``glintru recommend`` (top-K for every user) on ML-1M: in this process against Ray Data actors.

    python benchmarks/recommend.py DATA/ml-1m/ml-1m.seq.txt
    python benchmarks/recommend.py DATA/ml-1m/ml-1m.seq.txt --model runs/ml-1m/glintru --workers 0 1 2

The sequence file is prepared into a temporary directory (never copied into the repository). Without
``--model`` a GLINT-RU with the default configuration (d=128, max_len=200) and seeded random
weights is scored: throughput depends on the architecture and sizes, not on the weights' values.
Each worker count is one ``recommend()`` call, side by side in one run (0 = in this process, with
``--threads`` torch threads, no Ray; N = N Ray Data actors of one thread each on a local Ray):
  users_per_s  users scored and written per second, from the first batch requested to the last written
  score_s      that interval; wall_s: the whole call (model loading, Ray start and model broadcast
               for actors, scoring, writing)
Results go to ``benchmarks/results/recommend.json`` with the machine (CPU model, threads, load
average), because the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from benchinfo import finish, machine, print_table

from glintru.config import build_config
from glintru.data.dataset import load_prepared
from glintru.data.prepare import prepare
from glintru.models import build_model
from glintru.recommend import load_model, recommend

OUT = Path(__file__).parent / "results" / "recommend.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="ML-1M sequence file, e.g. DATA/ml-1m/ml-1m.seq.txt")
    ap.add_argument("--model", help="trained model (run dir, checkpoint, MLflow URI); default: random default GLINT-RU")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="0 = in this process (default 0 1 2)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--use-gpu", action="store_true")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--threads", type=int, default=1, help="torch threads of in-process scoring (default 1, like an actor)")
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

        info = machine(threads=args.threads)
        runs = []
        for workers in args.workers:
            res = recommend(spec, t / "data", t / f"recs{workers}.parquet", k=args.k, workers=workers,
                            batch_size=args.batch_size, use_gpu=args.use_gpu)
            runs.append({"workers": workers, "where": "in this process" if workers == 0 else f"{workers} Ray actor{'s' if workers > 1 else ''}",
                         "users_per_s": round(res.users_per_s, 1), "score_s": round(res.score_s, 2),
                         "wall_s": round(res.wall_s, 2)})
        finish(info)
    base = next((r for r in runs if r["workers"] == 0), None)
    for r in runs:
        r["wall_vs_in_process"] = round(r["wall_s"] / base["wall_s"], 2) if base else None
    print_table(runs, ["workers", "where", "users_per_s", "score_s", "wall_s", "wall_vs_in_process"])

    result = {
        "dataset": "ml-1m", "source": Path(args.source).name, "n_users": data.n_users, "n_items": data.n_items,
        "k": args.k, "batch_size": args.batch_size, "use_gpu": args.use_gpu,
        "model": args.model or "glintru default config (d=128, max_len=200), random weights",
        "max_len": loaded.max_len, "in_process_torch_threads": args.threads, "runs": runs, "machine": info,
        "note": "load average above the CPU count means the figures are contended (shared machine)",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
