"""Inference latency per user of finished runs, measured side by side in one process.

    python benchmarks/latency.py --work-dir benchmarks/work --rounds 5 \\
        --runs benchmarks/results/runs/ml-1m/glintru__seed1.json benchmarks/results/runs/ml-1m/sasrec__seed1.json \\
        --out benchmarks/results/latency.json

Every run JSON of ``reproduce.py`` records a latency measured once, at the end of its own training,
on the CPU that trained it and while another run may have shared the machine; such figures compare
poorly between runs. This loads each run's best weights and measures them round-robin in one
process, one thread: in every round each run scores the same first ``--users`` test users one at a
time (its input window, ``last_hidden``, scores over the whole catalogue, top 10: the measurement
of ``reproduce.latency_ms_per_user``) and gives the median over those users. A run's figure is the
median over rounds (and the fastest round); a warm-up round is not counted. Interleaving the runs
spreads any change of the machine's load over all of them alike. Rows of an existing ``--out`` file
for other runs are kept.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchinfo import machine, with_earlier_rows, write_result
from reproduce import latency_ms_per_user
from user_ranks import load_run, run_record


def measure(runs: list[Path], work_dir: Path, rounds: int, users: int) -> list[dict[str, object]]:
    """One row per run: the median and fastest of ``rounds`` per-round medians (ms per user)."""
    loaded = [load_run(p, work_dir) for p in runs]
    times: list[list[float]] = [[] for _ in runs]
    for r in range(rounds + 1):
        for i, (_, model, data, train) in enumerate(loaded):
            ms = latency_ms_per_user(model, data, train.max_len, users)
            if r:  # round 0 warms caches and allocators
                times[i].append(ms)
    return [{"dataset": rec["dataset"], "run": p.stem, "model": rec["model"], "window": train.max_len,
             "users": min(users, len(data.eval_examples("test")[0])), "median_ms": round(statistics.median(t), 3),
             "min_ms": round(min(t), 3), "rounds_ms": [round(x, 3) for x in t],
             "recorded_ms": rec.get("latency_ms_per_user")}
            for p, (rec, _, data, train), t in zip(runs, loaded, times)]


def main(argv: list[str] | None = None) -> int:
    from glintru.errors import UserError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", required=True, help="run JSON files of benchmarks/reproduce.py")
    ap.add_argument("--work-dir", required=True, help="reproduce.py's --work-dir (prepared data and run dirs)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds over every run (default 5)")
    ap.add_argument("--users", type=int, default=200, help="test users scored per run and round (default 200)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    for flag in ("rounds", "users", "threads"):
        if getattr(args, flag) < 1:
            print(f"error: --{flag} must be at least 1, got {getattr(args, flag)}", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    info = machine(args.threads)
    runs = [Path(p) for p in args.runs]
    try:
        for p in runs:  # every input checked before the first (slow) load
            run_record(p, Path(args.work_dir))
        rows = [{**row, "cpu": info["cpu"], "date_utc": info["date_utc"]}
                for row in measure(runs, Path(args.work_dir), args.rounds, args.users)]
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    rows = with_earlier_rows(out, rows, ("dataset", "run"))
    write_result(out, {"benchmark": "latency", "split": "test", "batch": 1, "rows": rows}, info,
                 ["dataset", "run", "window", "users", "median_ms", "min_ms", "recorded_ms"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
