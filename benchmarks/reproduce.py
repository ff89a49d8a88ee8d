"""Reproduction at convergence: GLINT-RU, its ablation and the baselines under one protocol.

    python benchmarks/reproduce.py --data-root DATA --plan ablation --datasets amazon-beauty
    python benchmarks/reproduce.py --data-root DATA --plan models --datasets amazon-beauty --seeds 1 2 3
    python benchmarks/tune_models.py --data-root DATA --datasets amazon-beauty   # writes benchmarks/tuned/
    python benchmarks/reproduce.py --data-root DATA --plan models --tuned benchmarks/tuned --seeds 1 2 3
    python benchmarks/report.py                        # the tables and plots of docs/results.md
    nohup python benchmarks/reproduce.py ... > benchmarks/work/reproduce.log 2>&1 &

Your own data: ``--prepared NAME=DIR`` runs the same plans on a directory ``glintru prepare --out DIR``
wrote, filed under NAME (``--datasets`` defaults to it; no ``--data-root``), with the Amazon window
of 50 unless ``--set max_len=N``; ``report.py --datasets NAME --doc FILE.md`` reports it:

    python benchmarks/reproduce.py --prepared shop=data/shop --plan models --seeds 1 2 3

``DATA`` holds ``ml-1m/ml-1m.seq.txt``, ``amazon-beauty/Beauty.txt`` and
``amazon-video-games/Video_Games.txt``; they are read, prepared once into ``--work-dir`` (outside
git) and never copied into the repository. ``ml-1m-5core`` is ML-1M's file filtered as RecBole
filters it (users and items with at least 5 interactions: 3,416 items, the catalogue of the
published ML-1M figures), to compare with those on their own catalogue.

Protocol (every run, every model): d = 128, window 50 on the Amazon datasets and 200 on ML-1M,
batch 128, Adam at lr 1e-3 unless a tuned configuration says otherwise, early stopping on
validation full-ranking NDCG@10 with patience 10, at most 200 epochs, no wall-time cap. The pop100
protocol selects its own epoch on validation pop100 NDCG@10 (``fit(also_select=...)``). Each run
writes ``benchmarks/results/runs/<dataset>/<name>__seed<k>.json`` (contract fields: ``dataset``,
``model``, ``seed``, ``config``, ``stopped``, ``best_epoch``, ``epochs``, ``metrics``,
``train_s``, ``wall_s``; plus the per-epoch history with the GLINT-RU diagnostics, the pop100
selection, the inference latency per user and the machine). A run whose JSON exists is skipped; an
interrupted run resumes from its last epoch checkpoint. Ctrl+C, ``kill -INT`` or ``kill`` (SIGTERM)
sent to the grid's process alone stops its run processes too (exit 130, or 143 for SIGTERM). A run
whose configuration (model, seed, every flat key) equals a finished run's is not trained again: its
JSON is that run's record under its own name, with ``"same_run_as"`` naming the file (the
ablation's ``glintru-norm_kernel`` and the losses' ``glintru-loss_ce`` are both GLINT-RU at its
defaults).

Plans: ``ablation`` (GLINT-RU variants: attention normaliser none / count / kernel, the GRU
expert alone, the attention expert alone, kernel size 1), ``losses`` (GLINT-RU trained with the
full softmax, the sampled softmax and gBCE: ML-1M and ``amazon-beauty-54k``, the BERT4Rec
preprocessing of Beauty with 54,542 items, ``amazon-beauty/alternates/bert4rec/beauty.txt``) and ``models`` (GLINT-RU and the
baselines, with ``--tuned DIR`` holding ``<dataset>__<model>.yaml`` files of tuned flat keys,
e.g. ``best_config.yaml`` of a ``glintru tune`` study, as ``benchmarks/tune_models.py`` writes them;
a tuned run is ``<name>__tuned__seed<k>.json`` with ``"setting": "tuned"``, and a model without a
tuned file is skipped (a variant of the ``ablation`` and ``losses`` plans takes its model's file,
its own keys on top); ``--tuned-from DATASET`` trains with the configurations tuned on another
dataset, each dataset keeping its own window, recorded as ``"tuned_from"`` and written as
``<name>__tuned__from-<source>__seed<k>.json``). ``--set KEY=VALUE
--tag T`` runs a variant of every run (e.g. ``--set precision=bf16 --tag bf16``): its setting is
``<setting>-T``, so the main tables never mix it in.
Each run uses ``--threads`` torch threads and at most ``--jobs`` runs go at once, one process each;
``--device cuda`` trains them on the GPU (they share it; e.g. ``--jobs 6`` on one large GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchinfo import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DATASETS: dict[str, str] = {
    "ml-1m": "ml-1m/ml-1m.seq.txt",
    "amazon-beauty": "amazon-beauty/Beauty.txt",
    "amazon-video-games": "amazon-video-games/Video_Games.txt",
    # BERT4Rec's preprocessing of Beauty (not 5-core): 54,542 items, for the training-loss comparison
    "amazon-beauty-54k": "amazon-beauty/alternates/bert4rec/beauty.txt",
    # ML-1M as RecBole filters it (users and items with at least 5 interactions, iteratively):
    # 3,416 items, the catalogue of the published ML-1M figures, for the anchor comparison
    "ml-1m-5core": "ml-1m/ml-1m.seq.txt",
}
CORES: dict[str, int] = {"ml-1m-5core": 5}  # k-core filter (users and items) applied when preparing
PROTOCOL: dict[str, dict[str, Any]] = {
    # target_weight=batch: every table so far trained so (it was the engine's only behaviour until the
    # default became "equal"); runs with equal weights are variants (--set target_weight=equal --tag ...).
    "*": {"hidden_size": 128, "embedding_size": 128, "batch_size": 128, "lr": 1e-3, "max_epochs": 200,
          "patience": 10, "valid_metric": "valid/full/ndcg@10", "eval_batch_size": 512, "target_weight": "batch"},
    "ml-1m": {"max_len": 200},
    "amazon-beauty": {"max_len": 50},
    "amazon-video-games": {"max_len": 50},
    "amazon-beauty-54k": {"max_len": 50},
    "ml-1m-5core": {"max_len": 200},
}
# A dataset of the user's own (--prepared NAME=DIR) trains with the Amazon window, which the tuning
# spaces fix too; --set max_len=N (in both scripts) for long histories, as ML-1M's 200.
OWN_DATA_PROTOCOL: dict[str, Any] = {"max_len": 50}
DATASET_NAME = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
# name -> (model, overrides). Baselines train on every position unless said.
MODEL_RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "glintru": ("glintru", {}),
    "sasrec": ("sasrec", {}),
    "sasrec_1block": ("sasrec_1block", {}),
    "sasrec_preln": ("sasrec_preln", {}),
    "narm": ("narm", {"objective": "all_positions"}),
    "gru4rec": ("gru4rec", {}),
}
ABLATION_RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "glintru-norm_none": ("glintru", {"attn_norm": "none"}),
    "glintru-norm_count": ("glintru", {"attn_norm": "count"}),
    "glintru-norm_kernel": ("glintru", {"attn_norm": "kernel"}),
    "glintru-gru_only": ("glintru", {"experts": "gru"}),
    "glintru-attn_only": ("glintru", {"experts": "attention"}),
    "glintru-kernel1": ("glintru", {"kernel_size": 1}),
}
# Training losses (glintru.engine.loss) against the full softmax, everything else at the protocol.
LOSS_RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "glintru-loss_ce": ("glintru", {"loss": "ce"}),
    "glintru-loss_sampled": ("glintru", {"loss": "sampled_softmax"}),
    "glintru-loss_gbce": ("glintru", {"loss": "gbce", "gbce_offset": False}),  # the published gBCE
    "glintru-loss_gbce_offset": ("glintru", {"loss": "gbce", "gbce_offset": True}),  # with the learnable offset
}
PLANS = {"models": MODEL_RUNS, "ablation": ABLATION_RUNS, "losses": LOSS_RUNS}


def device_name(device: str) -> str:
    """``cpu``, or the GPU's name (``cuda: NVIDIA H200``)."""
    if device == "cpu":
        return "cpu"
    import torch

    return f"cuda: {torch.cuda.get_device_name(0)}"


def prepare_dataset(data_root: Path, dataset: str, work_dir: Path) -> Path:
    """Prepare ``dataset`` into ``work_dir/data/<dataset>`` once (reused when its manifest exists)."""
    from glintru.data.prepare import FilterOptions, prepare
    from glintru.errors import UserError

    out = work_dir / "data" / dataset
    if (out / "manifest.json").is_file():
        return out
    source = data_root / DATASETS[dataset]
    if not source.is_file():
        raise UserError(f"{source}: dataset file not found (expected under --data-root {data_root})")
    out.parent.mkdir(parents=True, exist_ok=True)
    core = CORES.get(dataset, 0)
    prepare(source, out, filters=FilterOptions(user_core=core, item_core=core),
            source_label=f"<data-root>/{DATASETS[dataset]}")
    return out


def parse_prepared(items: list[str] | None) -> dict[str, Path]:
    """``--prepared NAME=DIR`` options (here and in tune_models.py): the user's own datasets, each a
    directory written by ``glintru prepare --out DIR``, by the name their results are filed under."""
    from glintru.errors import UserError
    from glintru.storage import is_remote

    out: dict[str, Path] = {}
    for item in items or []:
        name, sep, where = item.partition("=")
        if not sep or not name or not where:
            raise UserError(f"--prepared {item!r}: expected NAME=DIR (a name for the dataset, and the directory "
                            "`glintru prepare --out DIR` wrote)")
        if not DATASET_NAME.fullmatch(name):
            raise UserError(f"--prepared {item!r}: {name!r} is not a dataset name (lower-case letters and digits, "
                            "single '-', '_' or '.' between them)")
        if name in DATASETS:
            raise UserError(f"--prepared {item!r}: {name} is one of the reproduction's own datasets "
                            f"({', '.join(DATASETS)}); give yours another name")
        if name in out:
            raise UserError(f"--prepared {item!r}: {name} is named twice")
        if is_remote(where):
            raise UserError(f"--prepared {item!r}: the benchmark scripts read a local directory; prepare the "
                            f"dataset locally too (`glintru prepare --source LOG --out DIR`)")
        path = Path(where).expanduser()
        if not (path / "manifest.json").is_file():
            what = "no such directory" if not path.exists() else "no manifest.json in it"
            raise UserError(f"--prepared {item!r}: {path} is not a prepared dataset ({what}); make one with "
                            f"`glintru prepare --source LOG --out {path}`")
        out[name] = path.resolve()
    return out


def select_datasets(requested: list[str] | None, prepared: dict[str, Path], data_root: str | None) -> list[str]:
    """The datasets of a call: ``--datasets`` (default: the ``--prepared`` ones, else amazon-beauty),
    each one of the reproduction's own or a ``--prepared`` name; ``--data-root`` is needed only for the
    former."""
    from glintru.errors import UserError

    names = requested or list(prepared) or ["amazon-beauty"]
    unknown = [d for d in names if d not in DATASETS and d not in prepared]
    if unknown:
        raise UserError(f"--datasets: unknown dataset {', '.join(unknown)}; choose from {', '.join(DATASETS)}, "
                        "or name a dataset of your own with --prepared NAME=DIR")
    if not data_root and any(d not in prepared for d in names):
        raise UserError("--data-root: required for the reproduction's own datasets (a directory with ml-1m/, "
                        "amazon-beauty/, amazon-video-games/); your own are named with --prepared NAME=DIR")
    return names


def dataset_dir(dataset: str, data_root: str | None, work_dir: Path, prepared: dict[str, Path]) -> Path:
    """A prepared dataset directory: the user's own as given, or one of the reproduction's, prepared once."""
    return prepared[dataset] if dataset in prepared else prepare_dataset(Path(data_root), dataset, work_dir)


def tuned_file(tuned_dir: Path, dataset: str, name: str, model: str | None = None) -> Path:
    """``<tuned_dir>/<dataset>__<name>.yaml``; for a plan's variant of a model (``glintru-loss_gbce``)
    without a file of its own, the model's (``<dataset>__glintru.yaml``): the variant changes its
    own keys on top of the model's tuned configuration."""
    own = tuned_dir / f"{dataset}__{name}.yaml"
    if own.is_file() or model is None or model == name:
        return own
    return tuned_dir / f"{dataset}__{model}.yaml"


def tuned_overrides(tuned_dir: Path | None, dataset: str, name: str, window: bool = True,
                    model: str | None = None) -> dict[str, Any]:
    """Flat keys of :func:`tuned_file` (``model`` and epoch limits dropped), or {}.

    ``window=False`` also drops ``max_len``: a configuration tuned on one dataset and trained on
    another keeps the other dataset's window (ML-1M's 200, not Beauty's 50).
    """
    if tuned_dir is None:
        return {}
    from glintru.config import load_config_file

    p = tuned_file(tuned_dir, dataset, name, model)
    if not p.is_file():
        return {}
    _, flat = load_config_file(p)
    for k in ("max_epochs", "patience", "max_time_s", "max_train_samples", "seed") + (() if window else ("max_len",)):
        flat.pop(k, None)
    return flat


def protocol(dataset: str) -> dict[str, Any]:
    """The protocol's keys on ``dataset``, one of the reproduction's or the user's own (each model
    takes the keys it has)."""
    return {**PROTOCOL["*"], **PROTOCOL.get(dataset, OWN_DATA_PROTOCOL)}


def run_spec(dataset: str, name: str, model: str, overrides: dict[str, Any], seed: int) -> Any:
    """The validated RunConfig of one run: protocol, then the run's overrides, then the seed."""
    from glintru.config import build_config, config_keys

    keys = config_keys(model)
    flat = {k: v for k, v in protocol(dataset).items() if k in keys}
    flat.update(overrides)
    flat["seed"] = seed
    return build_config(model, flat, source=f"{dataset}/{name}")


def run_label(name: str, setting: str, dataset: str | None = None, tuned_from: str | None = None) -> str:
    """File stem of a run: ``<name>`` at the protocol's defaults, ``<name>__tuned`` with a config tuned
    on its own dataset, ``<name>__tuned__from-<source>`` with one tuned on another dataset (so the two
    kinds of tuned run of one dataset never share a file)."""
    stem = name if setting == "default" else f"{name}__{setting}"
    return f"{stem}__from-{tuned_from}" if tuned_from and tuned_from != dataset else stem


def result_path(results_dir: Path, dataset: str, name: str, seed: int, setting: str = "default",
                tuned_from: str | None = None) -> Path:
    return results_dir / "runs" / dataset / f"{run_label(name, setting, dataset, tuned_from)}__seed{seed}.json"


def check_tag(tag: str | None) -> None:
    """A ``--tag`` (here and in tune_models.py) names files: a short lower-case name, or None."""
    from glintru.errors import UserError

    if tag is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_.]*", tag):
        raise UserError(f"--tag: {tag!r} is not a short lower-case name (letters, digits, '_', '.')")


def twin_run(results_dir: Path, dataset: str, model: str, flat: dict[str, Any]) -> Path | None:
    """A finished run of ``dataset`` that trained exactly ``flat`` (same model, seed and every flat key;
    keys newer than that run count as what it trained with: ``values_before_new_keys``), or None.

    Plans overlap: the ablation's ``glintru-norm_kernel`` and the losses' ``glintru-loss_ce`` are both
    GLINT-RU at its defaults. Training one configuration twice would cost a converged run (two hours
    on ML-1M here) and give the same numbers, so the second name records the first one's result.
    """
    from glintru.config import build_config, values_before_new_keys

    defaults = build_config(model, {}).to_flat()
    for p in sorted((results_dir / "runs" / dataset).glob("*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        saved = rec.get("config", {})
        if (rec.get("model") == model and "same_run_as" not in rec
                and {**defaults, **values_before_new_keys(saved), **saved} == flat):
            return p
    return None


def record_twin(twin: Path, path: Path, name: str, setting: str, overrides: dict[str, Any],
                tuned_from: str | None) -> None:
    """Write ``path`` as the result of ``twin`` under this run's name (``same_run_as`` names the file)."""
    rec = json.loads(twin.read_text())
    rec.update(name=name, setting=setting, overrides=overrides, tuned_from=tuned_from, same_run_as=twin.name)
    from glintru.storage import atomic_write_text

    atomic_write_text(path, json.dumps(rec, indent=1) + "\n")


def latency_ms_per_user(model: Any, data: Any, max_len: int, users: int = 200) -> float:
    """Median wall time (ms) to encode one user's test input window and rank the whole catalogue
    (top-10), one user at a time, over the first ``users`` test users."""
    import numpy as np
    import torch

    model.eval()
    emb = model.item_embeddings()[1:]
    u, end, _ = data.eval_examples("test")
    times = []
    with torch.inference_mode():
        for i in range(min(users, len(u))):
            start = max(int(data.offsets[u[i]]), int(end[i]) - max_len)
            x = torch.from_numpy(data.items[start : end[i]].astype(np.int64)).view(1, -1)
            width = max_len if model.needs_full_window else x.shape[1]
            x = torch.nn.functional.pad(x, (0, width - x.shape[1]))
            t0 = time.perf_counter()
            h = model.last_hidden(x, torch.tensor([end[i] - start]))
            (h @ emb.T).topk(10)
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000.0)


def run_one(dataset: str, name: str, model: str, overrides: dict[str, Any], seed: int, data_dir: str,
            work_dir: str, results_dir: str, threads: int, jobs: int, setting: str = "default",
            tuned_from: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Train one run (resuming from its last checkpoint) on ``device`` and write its JSON; runs in a
    child process. The latency per user is always measured on the CPU, one thread at a time."""
    import torch

    from glintru.data.dataset import load_prepared
    from glintru.engine import fit
    from glintru.engine.checkpoint import list_checkpoints
    from glintru.engine.evaluate import sampled_key

    torch.set_num_threads(threads)
    run_cfg = run_spec(dataset, name, model, overrides, seed)
    # the sampled protocol (the official pop100 unless num_negatives / negative_sampling say otherwise, as
    # a small catalogue of the user's own may need) selects its own epoch; none with num_negatives=0
    sampled = sampled_key(run_cfg.train)
    pop_metric = f"valid/{sampled}/ndcg@10" if sampled else None
    data = load_prepared(data_dir)
    label = run_label(name, setting, dataset, tuned_from)
    out_dir = Path(work_dir) / "runs" / dataset / f"{label}__seed{seed}"
    ckpts = list_checkpoints(out_dir)
    log = Path(work_dir) / "logs" / f"{dataset}__{label}__seed{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with log.open("a") as fh:

        def on_epoch_end(metrics: dict[str, float], _ckpt: Path | None) -> None:
            fh.write(json.dumps({"elapsed_s": round(time.perf_counter() - t0, 1), **metrics}) + "\n")
            fh.flush()

        result = fit(run_cfg, data, out_dir, device=device, on_epoch_end=on_epoch_end, progress=False,
                     resume_from=ckpts[-1] if ckpts else None, also_select=(pop_metric,) if pop_metric else ())
    from glintru.loading import load_model

    best_model = load_model(out_dir / "best.pt").model
    params = sum(p.numel() for p in best_model.parameters())
    latency = latency_ms_per_user(best_model, data, run_cfg.train.max_len)
    pop = result.selected.get(pop_metric, {}) if pop_metric else {}
    metrics = dict(result.test_metrics)
    for k, v in pop.get("test", {}).items():  # the sampled protocol's numbers at its own best epoch
        if f"/{sampled}/" in k:
            metrics[k] = v
    record = {
        "dataset": dataset, "model": model, "name": name, "seed": seed, "setting": setting, "tuned_from": tuned_from,
        # a dataset of the user's own (--prepared) stays where it is: the scripts that rescore the run read it there
        **({} if dataset in DATASETS else {"data_dir": str(Path(data_dir).resolve())}),
        "config": run_cfg.to_flat(), "overrides": overrides,
        "stopped": result.stopped, "best_epoch": result.best_epoch, "epochs": len(result.history),
        "best_epoch_pop100": pop.get("best_epoch"),
        "metrics": metrics,
        "metrics_full_selected": {**result.best_metrics, **result.test_metrics},
        "metrics_pop100_selected": {**pop.get("valid", {}), **pop.get("test", {})},
        "train_s": round(result.train_s, 2), "wall_s": round(result.wall_s, 2),
        "resumed": bool(ckpts),
        "latency_ms_per_user": round(latency, 3), "params": int(params),
        "history": result.history,
        "machine": {**machine(), "device": device_name(device), "parallel_runs": jobs,
                    "loadavg_1min_start": round(load0, 2),
                    "loadavg_1min_end": round(os.getloadavg()[0], 2)},
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    from user_ranks import ranks_file, save, test_ranks

    from glintru.storage import atomic_write_text

    path = result_path(Path(results_dir), dataset, name, seed, setting, tuned_from)
    ranks = ranks_file(path, record)  # every test user's rank, for per-user analyses without the weights
    if ranks is not None:
        save(ranks, test_ranks(best_model.to(device), data, run_cfg.train, device))
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # best.pt stays
    return record


def main(argv: list[str] | None = None) -> int:
    from glintru.errors import UserError

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", help="directory holding ml-1m/, amazon-beauty/, amazon-video-games/ "
                    "(for the reproduction's own datasets)")
    ap.add_argument("--prepared", action="append", metavar="NAME=DIR",
                    help="a dataset of your own, prepared with `glintru prepare --out DIR`, run under NAME "
                         f"(window {OWN_DATA_PROTOCOL['max_len']} unless --set max_len=N); repeatable")
    ap.add_argument("--plan", choices=list(PLANS), default="models")
    ap.add_argument("--datasets", nargs="+", metavar="DATASET",
                    help=f"{', '.join(DATASETS)} or --prepared names (default: the --prepared ones, else amazon-beauty)")
    ap.add_argument("--runs", nargs="+", help="run names of the plan (default: all of it)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1])
    ap.add_argument("--tuned", help="directory of <dataset>__<name>.yaml tuned configurations")
    ap.add_argument("--tuned-from", metavar="DATASET",
                    help="with --tuned: train every dataset of this call with the configurations tuned on DATASET "
                         "(e.g. ML-1M with Beauty's; each dataset keeps its own window); recorded as tuned_from")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="override for every run of this call")
    ap.add_argument("--tag", help="name a variant of the plan's runs (with --set), e.g. --set precision=bf16 --tag bf16: "
                    "its runs are <name>__<setting>-<tag>__seed<k>.json, kept apart from the main tables")
    ap.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "work"), help="prepared data, run dirs, logs")
    ap.add_argument("--results-dir", default=str(RESULTS))
    ap.add_argument("--jobs", type=int, default=2, help="runs at once, one process each")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="where runs train (cuda: every run of this call shares the one visible GPU, --jobs at once)")
    ap.add_argument("--dry-run", action="store_true", help="print the runs and their configs, train nothing")
    args = ap.parse_args(argv)
    try:
        results_dir = Path(args.results_dir)
        prepared = parse_prepared(args.prepared)
        datasets = select_datasets(args.datasets, prepared, args.data_root)
        if args.tuned_from is not None and not DATASET_NAME.fullmatch(args.tuned_from):
            raise UserError(f"--tuned-from: {args.tuned_from!r} is not a dataset name")
        for opt, n in (("--jobs", args.jobs), ("--threads", args.threads)):
            if n < 1:
                raise UserError(f"{opt}: {n} is not a positive count")
        from glintru.config import parse_set_args

        plan = PLANS[args.plan]
        names = args.runs or list(plan)
        unknown = [n for n in names if n not in plan]
        if unknown:
            raise UserError(f"--runs: unknown run(s) {', '.join(unknown)} in plan {args.plan}; choose from {', '.join(plan)}")
        extra = parse_set_args(args.set)
        check_tag(args.tag)
        if args.device == "cuda" and not args.dry_run:
            import torch

            if not torch.cuda.is_available():
                raise UserError("--device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False)")
        tuned = Path(args.tuned) if args.tuned else None
        if args.tuned_from and tuned is None:
            raise UserError("--tuned-from: needs --tuned DIR (the directory of the tuned configurations)")
        todo = []
        for ds in datasets:
            source = args.tuned_from or ds
            for name in names:
                model, over = plan[name]
                tuned_flat = tuned_overrides(tuned, source, name, window=source == ds, model=model)
                if tuned is not None and not tuned_flat:
                    print(f"skip {ds} {name}: no {tuned_file(tuned, source, name, model)}", flush=True)
                    continue
                setting = "tuned" if tuned_flat else "default"
                if args.tag:
                    setting = f"{setting}-{args.tag}"
                over = {**tuned_flat, **over, **extra}
                for seed in args.seeds:
                    cfg = run_spec(ds, name, model, over, seed)  # validate before training anything
                    src = source if tuned_flat else None
                    done = result_path(results_dir, ds, name, seed, setting, src)
                    if done.is_file():
                        print(f"skip {ds} {name} ({setting}) seed {seed}: {done.name} exists", flush=True)
                        continue
                    twin = twin_run(results_dir, ds, model, cfg.to_flat())
                    if twin is not None:
                        print(f"skip {ds} {name} ({setting}) seed {seed}: the same configuration as {twin.name}"
                              + ("" if args.dry_run else f", recorded as {done.name}"), flush=True)
                        if not args.dry_run:
                            record_twin(twin, done, name, setting, over, src)
                        continue
                    todo.append((ds, name, model, over, seed, setting, src))
                    if args.dry_run:
                        print(ds, name, seed, json.dumps(cfg.to_flat()))
        if args.dry_run or not todo:
            return 0
        work_dir = Path(args.work_dir)
        data_dirs = {ds: str(dataset_dir(ds, args.data_root, work_dir, prepared)) for ds in {t[0] for t in todo}}
        ctx = get_context("spawn")
        failed = 0
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx, max_tasks_per_child=1,
                                 initializer=_quiet_interrupt) as pool, _workers_end_with(pool):
            futs = {pool.submit(run_one, ds, name, model, over, seed, data_dirs[ds], str(work_dir), str(results_dir),
                                args.threads, args.jobs, setting, src, args.device):
                    (ds, run_label(name, setting, ds, src), seed)
                    for ds, name, model, over, seed, setting, src in todo}
            print(f"{time.strftime('%H:%M:%S')} started {len(futs)} run{'s' if len(futs) > 1 else ''}, {args.jobs} at once; each run's epochs go to "
                  f"{work_dir / 'logs'}/<dataset>__<run>__seed<k>.log as they end", flush=True)
            for fut in as_completed(futs):
                ds, name, seed = futs[fut]
                try:
                    rec = fut.result()
                except Exception as exc:  # noqa: BLE001 -- one failed run must not stop the grid
                    failed += 1
                    print(f"{time.strftime('%H:%M:%S')} FAILED {ds} {name} seed {seed}: {type(exc).__name__}: {exc}", flush=True)
                    continue
                m = rec["metrics"]
                sampled = next((f", {k.split('/')[1]} NDCG@10 {v:.4f}" for k, v in m.items()
                                if k.startswith("test/") and k.endswith("/ndcg@10") and "/full/" not in k), "")
                print(f"{time.strftime('%H:%M:%S')} done {ds} {name} seed {seed}: test full NDCG@10 "
                      f"{m['test/full/ndcg@10']:.4f} HR@10 {m['test/full/hr@10']:.4f}{sampled}; {rec['epochs']} epochs "
                      f"(best {rec['best_epoch']}, {rec['stopped']}), {rec['wall_s']:.0f} s", flush=True)
        return 1 if failed else 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl+C, `kill -INT`, `kill` (SIGTERM), or `timeout` at a deadline
        print(f"{time.strftime('%H:%M:%S')} {'terminated' if isinstance(exc, Terminated) else 'interrupted'}: "
              "finished runs keep their JSON; the same command resumes the others from their last epoch "
              "checkpoint", file=sys.stderr, flush=True)
        return 143 if isinstance(exc, Terminated) else 130


class Terminated(KeyboardInterrupt):
    """SIGTERM to the grid's process, handled as Ctrl+C is (:func:`handle_signals`)."""


@contextmanager
def _workers_end_with(pool: ProcessPoolExecutor) -> Iterator[None]:
    """Stop the pool's run processes when the grid stops early (an interrupt, SIGTERM, an error), so
    that a signal sent to the grid's process alone (`kill PID`) does not leave its runs training on
    as orphans; each run keeps its last epoch checkpoint. Ctrl+C in a terminal reaches them anyway."""
    try:
        yield
    except BaseException:
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            if proc.is_alive():
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise


def _quiet_interrupt() -> None:
    """A run's process ends at Ctrl+C or SIGTERM without a traceback (its last epoch checkpoint stays)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def handle_signals() -> None:
    """Ctrl+C and `kill -INT` interrupt the script even when a non-interactive shell started it in the
    background (which leaves SIGINT ignored); SIGTERM raises :class:`Terminated`, a KeyboardInterrupt."""
    import signal

    def terminated(signum: int, frame: Any) -> None:
        raise Terminated

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, terminated)


if __name__ == "__main__":
    handle_signals()
    sys.exit(main())
