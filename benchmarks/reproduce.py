"""Accuracy comparison: GLINT-RU against SASRec, NARM and GRU4Rec under one data split and protocol.

    python benchmarks/reproduce.py --data-root /work/shared/data                 # the whole grid
    python benchmarks/reproduce.py --data-root DIR --datasets amazon-beauty --models glintru sasrec
    python benchmarks/reproduce.py --data-root DIR --budget-file my_budget.yaml --jobs 2
    python benchmarks/reproduce.py --table-only                                   # rebuild accuracy.md
    nohup python benchmarks/reproduce.py --data-root DIR > benchmarks/work/reproduce.log 2>&1 &

For each dataset (the files under ``--data-root``: ``ml-1m/ml-1m.seq.txt``,
``amazon-beauty/Beauty.txt``, ``amazon-video-games/Video_Games.txt``; read, never copied) the
script prepares it once into ``--work-dir`` (outside git), then trains every model with the
engine (:func:`glintru.engine.fit`: early stopping on validation full-ranking NDCG@10, best
epoch's weights tested) and writes one JSON per run to ``--results-dir``
(``<dataset>__<model>.json``). A run whose JSON exists is skipped, so an interrupted grid resumes
where it stopped. ``accuracy.md`` is regenerated from all JSON files at the end.

Models: ``glintru`` (causal, every position a target), ``glintru_official`` (official, non-causal
mode, last-position objective), ``sasrec`` (causal, every position, full-softmax cross-entropy),
``narm`` (last position: it is not causal), ``gru4rec`` (causal, every position).

Budget: every model on a dataset gets the same settings (:data:`DEFAULT_BUDGET`, changed with
``--budget-file`` or ``--set``): the same d, window, batch size, learning rate, epoch limit,
patience and training-time cap (``max_time_s``: training time, checked after each epoch, so a run
may overshoot by one epoch), and for last-position objectives a cap on prefixes per epoch
(``max_train_samples``; the engine applies it to all-position windows too, but the default caps
exceed every dataset's window count) so that an epoch stays short enough to validate often. Each run uses
``--threads`` torch threads (1 by default: see /work/shared/docs/perf-notes.md on threading) and at
most ``--jobs`` runs go at once, each in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATASETS: dict[str, str] = {
    "ml-1m": "ml-1m/ml-1m.seq.txt",
    "amazon-beauty": "amazon-beauty/Beauty.txt",
    "amazon-video-games": "amazon-video-games/Video_Games.txt",
}
MODELS = ("glintru", "glintru_official", "sasrec", "narm", "gru4rec")
# Objective each model trains with (the config presets of glintru/config.py).
OBJECTIVES = {
    "glintru": "all positions (causal)",
    "glintru_official": "last position (official, non-causal)",
    "sasrec": "all positions (causal)",
    "narm": "last position",
    "gru4rec": "all positions (causal)",
}

# Budget per dataset: flat config keys (glintru/config.py). "*" applies to every dataset. A key is
# given to a model only where it is one of that model's keys (embedding_size: NARM and GRU4Rec).
DEFAULT_BUDGET: dict[str, dict[str, Any]] = {
    "*": {
        "hidden_size": 64, "embedding_size": 64, "batch_size": 128, "lr": 1e-3,
        "max_epochs": 30, "patience": 3, "eval_batch_size": 512, "seed": 666,
    },
    "ml-1m": {"max_len": 200, "max_time_s": 480.0, "max_train_samples": 16384},
    "amazon-beauty": {"max_len": 50, "max_time_s": 240.0, "max_train_samples": 32768},
    "amazon-video-games": {"max_len": 50, "max_time_s": 240.0, "max_train_samples": 32768},
}
METRIC_COLUMNS = [(p, m) for p in ("full", "pop100") for m in ("hr", "ndcg", "mrr")]


# ---------------------------------------------------------------------------------------------
# Budget and configuration
# ---------------------------------------------------------------------------------------------


def load_budget(path: str | None, sets: list[str] | None) -> dict[str, dict[str, Any]]:
    """The default budget, updated by a YAML/JSON file (same shape) and then by ``--set KEY=VALUE``.

    ``--set`` items may be prefixed with a dataset (``ml-1m:max_time_s=600``); unprefixed ones
    apply to every dataset.
    """
    from glintru.config import parse_set_args
    from glintru.errors import UserError

    budget = {k: dict(v) for k, v in DEFAULT_BUDGET.items()}
    if path:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise UserError(f"{p}: budget file not found")
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
            raise UserError(f"{p}: expected a mapping of dataset name (or '*') to a mapping of config keys")
        for ds, over in raw.items():
            if ds != "*" and ds not in DATASETS:
                raise UserError(f"{p}: unknown dataset {ds!r}; choose '*' or one of {', '.join(DATASETS)}")
            budget.setdefault(ds, {}).update(over)
    for item in sets or []:
        ds, _, kv = item.rpartition(":") if ":" in item.split("=", 1)[0] else ("*", "", item)
        if ds != "*" and ds not in DATASETS:
            raise UserError(f"--set {item!r}: unknown dataset {ds!r}")
        for name in ([ds] if ds != "*" else list(budget)):  # unprefixed: every dataset, over its own value
            budget.setdefault(name, {}).update(parse_set_args([kv]))
    known = set().union(*(_keys(m) for m in MODELS))
    for ds, over in budget.items():
        unknown = sorted(set(over) - known)
        if unknown:
            raise UserError(f"budget for {ds!r}: unknown config key(s) {', '.join(unknown)}")
    return budget


def _keys(model: str) -> set[str]:
    from glintru.config import config_keys

    return config_keys(model)


def dataset_budget(budget: dict[str, dict[str, Any]], dataset: str) -> dict[str, Any]:
    """The flat keys that hold for ``dataset`` (``*`` then the dataset's own)."""
    return {**budget.get("*", {}), **budget.get(dataset, {})}


def run_config(model: str, ds_budget: dict[str, Any]) -> Any:
    """The validated :class:`~glintru.config.RunConfig` of ``model`` under a dataset budget."""
    from glintru.config import build_config

    keys = _keys(model)
    return build_config(model, {k: v for k, v in ds_budget.items() if k in keys}, source="budget")


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def prepare_dataset(data_root: Path, dataset: str, work_dir: Path) -> Path:
    """Prepare ``dataset`` into ``work_dir/data/<dataset>`` once (reused when its manifest exists)."""
    from glintru.data.prepare import prepare
    from glintru.errors import UserError

    out = work_dir / "data" / dataset
    if (out / "manifest.json").is_file():
        return out
    source = data_root / DATASETS[dataset]
    if not source.is_file():
        raise UserError(f"{source}: dataset file not found (expected under --data-root {data_root})")
    out.parent.mkdir(parents=True, exist_ok=True)
    prepare(source, out, source_label=f"<data-root>/{DATASETS[dataset]}")
    return out


def result_path(results_dir: Path, dataset: str, model: str, variant: str = "") -> Path:
    return results_dir / f"{dataset}__{model}{variant}.json"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "os": platform.platform()}


def run_one(dataset: str, model: str, data_dir: str, ds_budget: dict[str, Any], work_dir: str,
            results_dir: str, threads: int, jobs: int, variant: str = "") -> dict[str, Any]:
    """Train one model on one prepared dataset and write its JSON; runs in a child process.

    ``variant`` (e.g. ``"_lastpos"``) is appended to the run's file and directory names.
    """
    import numpy as np
    import torch

    from glintru.data.dataset import load_prepared
    from glintru.engine import fit
    from glintru.models import build_model

    torch.set_num_threads(threads)
    run_cfg = run_config(model, ds_budget)
    data = load_prepared(data_dir)
    params = sum(p.numel() for p in build_model(run_cfg, data.n_items).parameters())
    out_dir = Path(work_dir) / "runs" / dataset / f"{model}{variant}"
    if out_dir.exists():  # a run interrupted before its JSON was written starts afresh
        import shutil

        shutil.rmtree(out_dir)
    t0 = time.perf_counter()
    elapsed: list[float] = []
    log = Path(work_dir) / "logs" / f"{dataset}__{model}{variant}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    with log.open("w") as fh:

        def on_epoch_end(metrics: dict[str, float], _ckpt: Path | None) -> None:
            elapsed.append(time.perf_counter() - t0)
            fh.write(json.dumps({"elapsed_s": round(elapsed[-1], 1), **metrics}) + "\n")
            fh.flush()

        result = fit(run_cfg, data, out_dir, on_epoch_end=on_epoch_end, progress=False)
    history = [{**h, "elapsed_s": e} for h, e in zip(result.history, elapsed)]
    n_train_targets = int(np.maximum(data.train_lengths() - 1, 0).sum())
    record = {
        "dataset": dataset,
        "model": model,
        "objective": run_cfg.train.objective,
        "metrics": {**result.best_metrics, **result.test_metrics},
        "budget": {**{k: v for k, v in ds_budget.items() if k in _keys(model)}, "torch_threads": threads,
                   "parallel_runs": jobs},
        "wall_s": round(result.wall_s, 2),
        "train_s": round(result.train_s, 2),
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "params": int(params),
        "config": run_cfg.to_flat(),
        "history": history,
        "dataset_counts": data.manifest["counts"],
        "train_targets_all_positions": n_train_targets,
        "machine": {**machine(), "loadavg_1min_start": round(load0, 2), "loadavg_1min_end": round(os.getloadavg()[0], 2)},
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = result_path(Path(results_dir), dataset, model, variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)
    return record


# ---------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every run JSON in ``results_dir`` (files named ``<dataset>__<model>.json``)."""
    out = []
    for p in sorted(results_dir.glob("*__*.json")):
        rec = json.loads(p.read_text())
        if rec.get("dataset") in DATASETS and rec.get("model") in MODELS:
            out.append(rec)
    return out


def _fmt_budget(b: dict[str, Any]) -> str:
    keys = ("hidden_size", "max_len", "batch_size", "lr", "max_epochs", "patience", "max_time_s",
            "max_train_samples", "torch_threads", "parallel_runs")
    return ", ".join(f"{k}={b[k]:g}" if isinstance(b[k], float) else f"{k}={b[k]}" for k in keys if k in b)


def accuracy_table(records: list[dict[str, Any]]) -> str:
    """Markdown: per dataset, test and validation HR/NDCG/MRR@10 (full, pop100) per model; best in bold."""
    lines = [
        "# Accuracy (generated by `python benchmarks/reproduce.py --table-only` from the JSON files here)",
        "",
        "Leave-one-out split; full ranking over every item and pop100 (target vs 100 negatives drawn by",
        "popularity); metrics @10 in %, best per column in bold. `wall s` = training + every validation",
        "+ test, on a shared 2-core CPU. The budget line is the same for every model on a dataset.",
        "`max_train_samples` caps the samples drawn per epoch: prefixes for last-position objectives,",
        "windows for all-position ones (ML-1M has 8,619 windows, Beauty 22,512, Video Games 24,631 at",
        "these lengths, so the cap only shortens last-position epochs). `stopped`: max_time_s = the",
        "training-time cap ended the run (checked after each epoch), patience = early stopping.",
    ]
    by_ds: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_ds.setdefault(r["dataset"], []).append(r)
    for ds in DATASETS:
        recs = sorted(by_ds.get(ds, []), key=lambda r: MODELS.index(r["model"]))
        if not recs:
            continue
        budgets = {_fmt_budget({k: v for k, v in r["budget"].items() if k != "embedding_size"}) for r in recs}
        lines += ["", f"## {ds}", "", "Budget: " + " | ".join(sorted(budgets)), ""]
        for split in ("test", "valid"):
            cols = [f"{split}/{p}/{m}@10" for p, m in METRIC_COLUMNS]
            best = {c: max(r["metrics"].get(c, float("-inf")) for r in recs) for c in cols}
            head = ["model", "objective"] + [f"{split} {p} {m.upper() if m == 'hr' else m.upper()}@10" for p, m in METRIC_COLUMNS]
            if split == "test":
                head += ["epochs (best)", "stopped", "wall s", "params"]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for r in recs:
                cells = [r["model"], OBJECTIVES[r["model"]]]
                for c in cols:
                    v = r["metrics"].get(c)
                    s = "n/a" if v is None else f"{100 * v:.2f}"
                    cells.append(f"**{s}**" if v is not None and v == best[c] else s)
                if split == "test":
                    cells += [f"{r['epochs']} ({r.get('best_epoch', '?')})", r.get("stopped", ""),
                              f"{r['wall_s']:.0f}", f"{r['params']:,}"]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_table(results_dir: Path) -> Path:
    path = results_dir / "accuracy.md"
    path.write_text(accuracy_table(load_results(results_dir)))
    return path


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from glintru.errors import UserError

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", help="directory holding ml-1m/, amazon-beauty/, amazon-video-games/")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--budget-file", help="YAML/JSON: {'*' | dataset: {flat config key: value}}")
    ap.add_argument("--set", action="append", metavar="[DATASET:]KEY=VALUE", help="budget override")
    ap.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "work"), help="prepared data, run dirs, logs")
    ap.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--jobs", type=int, default=2, help="runs at once, one process each")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--force", action="store_true", help="rerun runs whose JSON exists")
    ap.add_argument("--table-only", action="store_true", help="only regenerate accuracy.md from the JSON files")
    ap.add_argument("--dry-run", action="store_true", help="print the runs and their configs, train nothing")
    args = ap.parse_args(argv)
    try:
        results_dir = Path(args.results_dir)
        if args.table_only:
            print(write_table(results_dir))
            return 0
        if not args.data_root:
            raise UserError("--data-root: required (a directory with ml-1m/, amazon-beauty/, amazon-video-games/)")
        budget = load_budget(args.budget_file, args.set)
        work_dir = Path(args.work_dir)
        todo = []
        for ds in args.datasets:
            ds_budget = dataset_budget(budget, ds)
            for model in args.models:
                cfg = run_config(model, ds_budget)  # validate every config before training anything
                if result_path(results_dir, ds, model).is_file() and not args.force:
                    print(f"skip {ds} {model}: {result_path(results_dir, ds, model)} exists", flush=True)
                    continue
                todo.append((ds, model, ds_budget))
                if args.dry_run:
                    print(ds, model, json.dumps(cfg.to_flat()))
        if args.dry_run or not todo:
            write_table(results_dir)
            return 0
        data_dirs = {ds: str(prepare_dataset(Path(args.data_root), ds, work_dir)) for ds in {t[0] for t in todo}}
        # longest budgets first: the last runs to start are the short ones
        todo.sort(key=lambda t: -float(t[2].get("max_time_s", 0.0)))
        ctx = get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
            futs = {
                pool.submit(run_one, ds, model, data_dirs[ds], b, str(work_dir), str(results_dir), args.threads,
                            args.jobs): (ds, model)
                for ds, model, b in todo
            }
            print(f"{time.strftime('%H:%M:%S')} started {len(futs)} runs, {args.jobs} at once", flush=True)
            failed = 0
            for fut in as_completed(futs):
                ds, model = futs[fut]
                try:
                    rec = fut.result()
                except Exception as exc:  # noqa: BLE001 -- one failed run must not stop the grid
                    failed += 1
                    print(f"{time.strftime('%H:%M:%S')} FAILED {ds} {model}: {type(exc).__name__}: {exc}", flush=True)
                    continue
                m = rec["metrics"]
                print(f"{time.strftime('%H:%M:%S')} done {ds} {model}: test full NDCG@10 "
                      f"{m['test/full/ndcg@10']:.4f}, pop100 NDCG@10 {m['test/pop100/ndcg@10']:.4f}, "
                      f"{rec['epochs']} epochs ({rec['stopped']}), {rec['wall_s']:.0f} s", flush=True)
                write_table(results_dir)
        write_table(results_dir)
        return 1 if failed else 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
