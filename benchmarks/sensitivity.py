"""Sensitivity of GLINT-RU to kernel size, hidden dim and mixing init: a `glintru tune` study + plots.

    python benchmarks/sensitivity.py run --data benchmarks/work/data/amazon-beauty   # the study (~35 min here)
    python benchmarks/sensitivity.py plot                                            # JSON, table, PNGs

``run`` is exactly this `glintru tune` command (printed before it starts; 16 trials, ASHA, Optuna
TPE, one Ray Train worker per trial, two trials at a time, search space ``benchmarks/sensitivity.yaml``):

    glintru tune --data DIR --search-space benchmarks/sensitivity.yaml --max-concurrent 2 --num-cpus 2 \\
        --storage-path benchmarks/work/ray_results --mlflow-uri sqlite:///<abs>/benchmarks/work/mlflow.db \\
        --out benchmarks/work/sensitivity --experiment glintru-beauty-sensitivity-8k

``plot`` reads the study's trial runs from that MLflow store (tags ``glintru.role=trial`` and
``glintru.study=<experiment>``): each trial's searched values, the validation full-ranking NDCG@10
of every epoch it ran (its best is the trial's score: ASHA stops weak trials after epoch 1, so
scores of stopped trials are 1-epoch scores, marked in the plots) and writes

* ``benchmarks/results/sensitivity.json``: one record per trial, the best trial;
* ``benchmarks/results/sensitivity.md``: the trials table (best first) and the best configuration;
* ``docs/results/sensitivity_{kernel_size,hidden_size,mixing_init}.png``: validation NDCG@10 against each.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "glintru-beauty-sensitivity-8k"
SEARCHED = ("kernel_size", "hidden_size", "mixing_init")
METRIC = "valid/full/ndcg_at_10"  # MLflow's name of the engine's valid/full/ndcg@10
DEFAULT_URI = f"sqlite:///{ROOT / 'benchmarks' / 'work' / 'mlflow.db'}"


def tune_command(data: str, uri: str, experiment: str) -> list[str]:
    """The `glintru tune` command line of the study."""
    work = ROOT / "benchmarks" / "work"
    return [
        str(Path(sys.executable).parent / "glintru"), "tune", "--data", data,
        "--search-space", str(ROOT / "benchmarks" / "sensitivity.yaml"), "--max-concurrent", "2", "--num-cpus", "2",
        "--storage-path", str(work / "ray_results"), "--mlflow-uri", uri, "--out", str(work / "sensitivity"),
        "--experiment", experiment,
    ]


def collect(uri: str, experiment: str) -> list[dict[str, Any]]:
    """One record per finished trial run of the study: searched values, per-epoch NDCG@10, its best."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"error: no MLflow experiment {experiment!r} in {uri}")
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.`glintru.role` = 'trial' and tags.`glintru.study` = '{experiment}'",
                         max_results=1000)
    out = []
    for r in runs:
        hist = sorted(c.get_metric_history(r.info.run_id, METRIC), key=lambda m: m.step)
        if not hist:
            continue
        by_epoch = {int(m.step): float(m.value) for m in hist}
        p = r.data.params
        out.append({
            "trial_id": r.data.tags.get("glintru.trial_id"),
            "kernel_size": int(p["kernel_size"]), "hidden_size": int(p["hidden_size"]),
            "mixing_init": float(p["mixing_init"]),
            "epochs": max(by_epoch), "valid_ndcg10_by_epoch": [by_epoch[e] for e in sorted(by_epoch)],
            "valid/full/ndcg@10": max(by_epoch.values()),
            "test/full/ndcg@10": r.data.metrics.get("test/full/ndcg_at_10"),
            "status": r.info.status,
        })
    return sorted(out, key=lambda t: -t["valid/full/ndcg@10"])


def plot(trials: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One scatter per searched key: validation NDCG@10 (best epoch) against the value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    max_ep = max(t["epochs"] for t in trials)
    paths = []
    for key in SEARCHED:
        fig, ax = plt.subplots(figsize=(4.2, 3.2))
        for full, marker, label in ((True, "o", f"ran {max_ep} epochs"), (False, "x", "stopped by ASHA")):
            pts = [t for t in trials if (t["epochs"] == max_ep) == full]
            if pts:
                ax.scatter([t[key] for t in pts], [100 * t["valid/full/ndcg@10"] for t in pts], marker=marker,
                           label=label, c=["C0" if full else "C3"] * len(pts))
        full_runs = [t for t in trials if t["epochs"] == max_ep]
        if key != "mixing_init" and full_runs:  # mean of the trials that ran every epoch, at each value
            vals = sorted({t[key] for t in full_runs})
            means = [100 * sum(t["valid/full/ndcg@10"] for t in full_runs if t[key] == v) / sum(t[key] == v for t in full_runs)
                     for v in vals]
            ax.plot(vals, means, color="gray", lw=1, label=f"mean of {max_ep}-epoch trials")
            ax.set_xticks(sorted({t[key] for t in trials}))
        ax.set_xlabel({"kernel_size": "kernel size k", "hidden_size": "hidden dim d", "mixing_init": "mixing init p (GRU share)"}[key])
        ax.set_ylabel("valid NDCG@10 (%), full ranking")
        ax.set_title(f"GLINT-RU on Amazon Beauty: {key}", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"sensitivity_{key}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def table(trials: list[dict[str, Any]], space: dict[str, Any]) -> str:
    best = trials[0]
    lines = [
        "# Sensitivity (generated by `python benchmarks/sensitivity.py plot` from sensitivity.json)",
        "",
        f"GLINT-RU (causal, all positions) on Amazon Beauty, {len(trials)} trials of a `glintru tune` study",
        f"(Optuna TPE + ASHA, grace 1 epoch, at most {max(t['epochs'] for t in trials)} epochs); fixed: "
        + ", ".join(f"{k}={v}" for k, v in space.get("fixed", {}).items()) + ".",
        "Score = best validation full-ranking NDCG@10 over the epochs the trial ran.",
        "",
        f"Best: kernel_size={best['kernel_size']}, hidden_size={best['hidden_size']}, "
        f"mixing_init={best['mixing_init']:.3f}: valid NDCG@10 {100 * best['valid/full/ndcg@10']:.2f}%",
        "",
        "| trial | kernel_size | hidden_size | mixing_init | epochs | valid NDCG@10 (%) per epoch | best (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in trials:
        per = ", ".join(f"{100 * v:.2f}" for v in t["valid_ndcg10_by_epoch"])
        lines.append(f"| {t['trial_id']} | {t['kernel_size']} | {t['hidden_size']} | {t['mixing_init']:.3f} | "
                     f"{t['epochs']} | {per} | {100 * t['valid/full/ndcg@10']:.2f} |")
    max_ep = max(t["epochs"] for t in trials)
    for key in ("kernel_size", "hidden_size"):
        lines += ["", f"By {key}: trials, how many ran all {max_ep} epochs (ASHA stops weak trials after epoch 1,",
                  "so only those compare like for like) and their mean, and the best of all trials:", "",
                  f"| {key} | trials | ran {max_ep} epochs | mean of those (%) | max of all (%) |", "|---|---|---|---|---|"]
        for v in sorted({t[key] for t in trials}):
            s = [t["valid/full/ndcg@10"] for t in trials if t[key] == v]
            f = [t["valid/full/ndcg@10"] for t in trials if t[key] == v and t["epochs"] == max_ep]
            mean = f"{100 * sum(f) / len(f):.2f}" if f else "n/a"
            lines.append(f"| {v} | {len(s)} | {len(f)} | {mean} | {100 * max(s):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the study with glintru tune")
    r.add_argument("--data", required=True, help="prepared Amazon Beauty directory (benchmarks/reproduce.py makes one)")
    for p in (r, sub.add_parser("plot", help="JSON, markdown table and PNGs from the MLflow store")):
        p.add_argument("--mlflow-uri", default=DEFAULT_URI)
        p.add_argument("--experiment", default=EXPERIMENT)
    args = ap.parse_args(argv)
    if args.cmd == "run":
        cmd = tune_command(args.data, args.mlflow_uri, args.experiment)
        print(shlex.join(cmd), flush=True)
        return subprocess.call(cmd)
    trials = collect(args.mlflow_uri, args.experiment)
    if not trials:
        raise SystemExit(f"error: no finished trial in experiment {args.experiment!r}")
    space = yaml.safe_load((ROOT / "benchmarks" / "sensitivity.yaml").read_text())
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "sensitivity.json").write_text(json.dumps(
        {"dataset": "amazon-beauty", "model": "glintru", "study": args.experiment, "search_space": space,
         "metric": "valid/full/ndcg@10", "best": trials[0], "trials": trials}, indent=1) + "\n")
    (results / "sensitivity.md").write_text(table(trials, space))
    for path in plot(trials, ROOT / "docs" / "results"):
        print(path)
    print(results / "sensitivity.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
