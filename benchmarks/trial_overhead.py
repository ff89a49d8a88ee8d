"""Ray's cost per tuning trial: trial wall time vs time inside the engine's training loop.

    python benchmarks/trial_overhead.py --data data/ml-1m                       # the README's main job
    python benchmarks/trial_overhead.py --data data/ml-1m --modes 1 2 --num-samples 2 --max-epochs 1
        # single-worker trials in the Tune process vs 2-worker Ray Train trials, one run, side by side
    python benchmarks/trial_overhead.py --data data/ml-1m --niceness 15 0 --num-samples 1 --max-epochs 1 \
        --out benchmarks/results/trial_overhead_niceness.json
        # Ray's default worker priority (nice 15) vs glintru's (0), one study each, side by side:
        # run it while something else keeps the cores busy, which is when the priority matters
    python benchmarks/trial_overhead.py --synthetic --reuse 1 0 --num-samples 6 --max-epochs 4 --workers 1 \
        --max-concurrent 1 --set max_len=16 --set batch_size=16 --set num_negatives=10 \
        --out benchmarks/results/trial_overhead_reuse.json
        # single-worker trials sharing their process (the default) vs a new process per trial
    python benchmarks/trial_overhead.py --data data/ml-1m --profile quick --workers 2 --num-samples 4
    python benchmarks/trial_overhead.py --data data/ml-1m --num-samples 1 --max-epochs 1 --set max_train_samples=0 \
        --out benchmarks/results/trial_overhead_full_epoch.json          # one trial, one full epoch

Runs the real `glintru tune` command (local Ray, a fresh sqlite MLflow store and storage path in a
temporary directory) and reads back what every trial recorded about itself
(``<storage>/<study>/work/<trial>/trial_timing.json``, also logged to MLflow as ``ray/*``):
  trial_s     the trial function's start to its Ray Train run's end (MLflow set-up, Train controller,
              worker processes, process group, the run itself, teardown)
  fit_s       inside the engine's ``fit`` on rank 0 (data, model, every epoch, evaluation, checkpoints)
  train_s     inside the training loop (batches only)
  overhead_s  trial_s - fit_s
Trials stopped early by ASHA are killed before they can time themselves: for them ``trial_s`` is
Tune's wall time up to their last report and ``train_s`` their epochs' training-loop time (columns
of the study's ``trials.csv``). Writes ``benchmarks/results/trial_overhead.json`` (with the load average: the
machine may be shared) and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "trial_overhead.json"
TIMING = ("trial_s", "fit_s", "train_s", "overhead_s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="prepared dataset directory (glintru prepare)")
    ap.add_argument("--synthetic", action="store_true",
                    help="instead of --data: the smoke test's tiny synthetic dataset (a trial is almost all overhead)")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--modes", type=int, nargs="+", help="worker counts to compare, one study each, in one run")
    ap.add_argument("--niceness", type=int, nargs="+",
                    help="RAY_worker_niceness values to compare (0-19), one study each, in one run")
    ap.add_argument("--reuse", type=int, nargs="+", choices=(0, 1),
                    help="GLINTRU_REUSE_TRIAL_PROCESSES values to compare (1: single-worker trials share their "
                         "process, glintru's default; 0: a new process per trial), one study each, in one run")
    ap.add_argument("--num-samples", type=int)
    ap.add_argument("--max-concurrent", type=int, help="trials at once (1: the searcher's suggestions do not depend "
                    "on which trial ends first, so two studies run the same trials)")
    ap.add_argument("--max-epochs", type=int)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fixed config override (glintru tune --set)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    if bool(args.data) == args.synthetic:
        ap.error("give --data DIR or --synthetic")
    if sum(bool(x) for x in (args.modes, args.niceness, args.reuse)) > 1:
        ap.error("--modes, --niceness, --reuse: compare one thing at a time")
    if any(not 0 <= n <= 19 for n in args.niceness or []):
        ap.error(f"--niceness: values from 0 to 19, got {args.niceness}")
    if args.modes or args.niceness or args.reuse:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from benchinfo import cpu_model

        key = "workers" if args.modes else "worker_niceness" if args.niceness else "reuse_trial_processes"
        results = []
        for value in args.modes or args.niceness or args.reuse:
            env = None
            if args.modes:
                args.workers = value
            elif args.niceness:
                env = {**os.environ, "RAY_worker_niceness": str(value)}
            else:
                env = {**os.environ, "GLINTRU_REUSE_TRIAL_PROCESSES": str(value)}
            results.append({key: value, **run_study(args, env)})
        same = len({json.dumps(sorted(json.dumps(t["result"], sort_keys=True) for t in r["trials"])) for r in results}) == 1
        out = {"benchmark": "trial_overhead", "cpu": cpu_model(), "cpus": os.cpu_count(), "modes": results,
               "same_trials_in_every_study": same,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        tmp_out = Path(args.out).with_suffix(".json.tmp")
        tmp_out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp_out, args.out)
        print(f"{key:>21} {'study_s':>8} {'trial_s':>8} {'fit_s':>7} {'overhead_s':>10}  load")
        for r in results:
            med = r["median"]
            print(f"{r[key]:>21} {r['study_wall_s']:>8.1f} {med.get('trial_s', float('nan')):>8.1f} "
                  f"{med.get('fit_s', float('nan')):>7.1f} {med.get('overhead_s', float('nan')):>10.1f}  "
                  f"{r['load_avg_before'][0]} -> {r['load_avg_after'][0]}")
        print(f"the same trials (searched values, epochs, metrics) in every study: {'yes' if same else 'NO'}")
        print(f"cpu {out['cpu']}; written to {args.out}")
        return
    out = run_study(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp_out = Path(args.out).with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_out, args.out)
    print(f"study wall time {out['study_wall_s']:.1f} s ({len(out['trials'])} trials); load average before {out['load_avg_before']}")
    print(f"{'trial':<10} {'epochs':>6} {'trial_s':>8} {'fit_s':>7} {'train_s':>8} {'overhead_s':>10}")
    for t in out["trials"]:
        cells = [f"{t[k]:.1f}" if k in t else "-" for k in ("trial_s", "fit_s", "train_s", "overhead_s")]
        print(f"{t['trial_id']:<10} {t['epochs']:>6} {cells[0]:>8} {cells[1]:>7} {cells[2]:>8} {cells[3]:>10}")
    if out["summary"]:
        print(out["summary"])
    print(f"written to {args.out}")


def run_study(args: argparse.Namespace, env: dict[str, str] | None = None) -> dict:
    """One `glintru tune` study in a temporary directory (``env``: its environment, default this
    process's); what its trials recorded about their time."""
    import statistics

    with tempfile.TemporaryDirectory(prefix="glintru-overhead-") as tmp:
        data = args.data
        if args.synthetic:
            from glintru.tuning.smoke import write_synthetic_dataset

            data = str(write_synthetic_dataset(f"{tmp}/data"))
        cmd = [sys.executable, "-m", "glintru.cli", "tune", "--data", data, "--profile", args.profile,
               "--storage-path", f"{tmp}/ray_results", "--mlflow-uri", f"sqlite:///{tmp}/mlflow.db", "--experiment", "overhead"]
        for flag, value in (("--workers", args.workers), ("--num-samples", args.num_samples), ("--max-epochs", args.max_epochs),
                            ("--max-concurrent", args.max_concurrent)):
            if value is not None:
                cmd += [flag, str(value)]
        for kv in args.set:
            cmd += ["--set", kv]
        load_before = os.getloadavg()
        t0 = time.time()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        wall = time.time() - t0
        if proc.returncode != 0:
            sys.exit(f"glintru tune failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
        exp = Path(tmp) / "ray_results" / "overhead"
        trials = []
        for row in csv.DictReader((exp / "trials.csv").read_text().splitlines()):
            hist = exp / "work" / row["trial_id"] / "history.json"
            timing = exp / "work" / row["trial_id"] / "trial_timing.json"
            trials.append({"trial_id": row["trial_id"], "epochs": len(json.loads(hist.read_text())) if hist.exists() else 0,
                           **{k: float(row[k]) for k in ("trial_s", "fit_s", "train_s", "overhead_s") if row.get(k)},
                           # the n-th trial its process ran (1: a new process); absent for ASHA-stopped trials
                           **({"process_trial": json.loads(timing.read_text()).get("ray/process_trial")}
                              if timing.exists() else {}),
                           # what the trial searched and reached, to compare two studies trial by trial
                           "result": {k: v for k, v in row.items() if k != "trial_id" and k not in TIMING}})
        summary = next((line for line in proc.stdout.splitlines() if line.startswith("time per trial")), None)
    timed = [t for t in trials if "overhead_s" in t]
    return {
        "command": " ".join(cmd[1:]).replace(tmp, "$TMP"),
        "study_wall_s": round(wall, 1),
        "trials": trials,
        "median": {k: statistics.median(t[k] for t in timed) for k in ("trial_s", "fit_s", "train_s", "overhead_s")} if timed else {},
        "summary": summary,
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


if __name__ == "__main__":
    main()
