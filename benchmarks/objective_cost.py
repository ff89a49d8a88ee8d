"""Training cost of one epoch: windows with equal target weights against RecBole's prefixes.

    python benchmarks/objective_cost.py --data benchmarks/work/data/amazon-beauty --max-len 50 \\
        --models glintru sasrec gru4rec --set sasrec.hidden_size=64 --set gru4rec.embedding_size=64 \\
        --out benchmarks/results/objective_cost.json

Both objectives train on the same targets each epoch (every training item but a user's first), so
the ratio of their epoch times is the ratio of their cost per target:

* ``windows``: ``objective=all_positions``, ``target_weight=equal``, 128 windows a batch (the
  engine's defaults): every position of a window is a target;
* ``prefixes``: ``objective=last_position``, 2,048 prefixes a batch (RecBole's and the official
  GLINT-RU runner's batches): one target per prefix, each read with its whole window.

Each (model, objective) is one epoch of the engine's ``fit`` (seed 1, fp32, ``--threads`` torch
threads); the timed figure is the epoch's training seconds (``train/s``: batches, forward, loss,
backward, Adam; evaluation is not in it). Rounds interleave the runs, so a change in machine load
hits every run alike; the table gives each one's median over the rounds and the prefixes / windows
ratio. ``--set [MODEL.]KEY=VALUE`` sets a config key (for one model with the prefix).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchinfo import machine, write_result

from glintru.config import MODELS, build_config, config_keys, parse_set_args
from glintru.errors import UserError

OBJECTIVES: dict[str, dict[str, Any]] = {
    "windows": {"objective": "all_positions", "target_weight": "equal", "batch_size": 128},
    "prefixes": {"objective": "last_position", "batch_size": 2048},
}
COLUMNS = ["model", "windows_s", "prefixes_s", "ratio", "targets", "windows_positions", "prefixes_positions"]


def model_overrides(sets: list[str] | None, models: list[str]) -> dict[str, dict[str, Any]]:
    """``--set`` items per model: ``KEY=VALUE`` for every model that has the key, ``MODEL.KEY=VALUE``
    for that model only (an unknown model or key is an error naming the item)."""
    out: dict[str, dict[str, Any]] = {m: {} for m in models}
    for item in sets or []:
        ((key, value),) = parse_set_args([item]).items()
        target, dot, name = key.partition(".")
        if not dot:
            name = key
        elif target not in MODELS:
            raise UserError(f"--set {item}: unknown model {target!r}; choose one of: {', '.join(MODELS)}")
        for m in [target] if dot else models:
            if m not in out:  # a model this call does not time
                continue
            if name in config_keys(m):
                out[m][name] = value
            elif dot:
                raise UserError(f"--set {item}: {m} has no config key {name!r}")
    return out


def input_positions(data: Any, objective: str, max_len: int) -> int:
    """Input items the model reads in one epoch of ``objective`` (padding not counted)."""
    from glintru.engine.batching import training_samples

    return int(training_samples(data, objective, max_len).n.sum())


def measure(model: str, objective: str, flat: dict[str, Any], data: Any, threads: int) -> dict[str, float]:
    """One epoch of ``fit``: its training seconds and targets."""
    import torch

    from glintru.engine import fit

    torch.set_num_threads(threads)
    cfg = build_config(model, {**flat, **OBJECTIVES[objective], "max_epochs": 1, "patience": 0, "seed": 1,
                               "precision": "fp32"}, source=f"{model}/{objective}")
    with tempfile.TemporaryDirectory() as tmp:
        h = fit(cfg, data, Path(tmp), progress=False).history[0]
    return {"train_s": h["train/s"], "targets": round(h["train/targets_per_s"] * h["train/s"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="prepared dataset directory (glintru prepare)")
    ap.add_argument("--max-len", type=int, default=50, help="window: the last N items are the input")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=["glintru", "sasrec", "gru4rec"])
    ap.add_argument("--set", action="append", metavar="[MODEL.]KEY=VALUE", help="config value (repeatable)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", required=True, help="result JSON path")
    args = ap.parse_args(argv)
    try:
        if args.rounds < 1 or args.threads < 1:
            raise UserError("--rounds and --threads must be >= 1")
        from glintru.data.dataset import load_prepared

        if not Path(args.data).is_dir():
            raise UserError(f"--data {args.data}: not a prepared dataset directory")
        data = load_prepared(args.data)
        sets = model_overrides(args.set, args.models)
        flat = {m: {"max_len": args.max_len, **sets[m]} for m in args.models}
        for m in args.models:  # validate every configuration before timing anything
            for obj in OBJECTIVES:
                build_config(m, {**flat[m], **OBJECTIVES[obj]}, source=f"{m}/{obj}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = machine(args.threads)
    times: dict[tuple[str, str], list[float]] = {}
    targets: dict[tuple[str, str], int] = {}
    for r in range(args.rounds):
        for m in args.models:
            for obj in OBJECTIVES:
                got = measure(m, obj, flat[m], data, args.threads)
                times.setdefault((m, obj), []).append(got["train_s"])
                targets[(m, obj)] = got["targets"]
                print(f"round {r + 1} {m} {obj}: {got['train_s']:.1f} s, {got['targets']:,} targets", flush=True)
    positions = {obj: input_positions(data, OBJECTIVES[obj]["objective"], args.max_len) for obj in OBJECTIVES}
    rows = []
    for m in args.models:
        w, p = statistics.median(times[(m, "windows")]), statistics.median(times[(m, "prefixes")])
        if targets[(m, "windows")] != targets[(m, "prefixes")]:
            print(f"warning: {m}: the objectives trained {targets[(m, 'windows')]:,} and "
                  f"{targets[(m, 'prefixes')]:,} targets", file=sys.stderr)
        rows.append({"model": m, "windows_s": round(w, 4), "prefixes_s": round(p, 4), "ratio": round(p / w, 3),
                     "targets": targets[(m, "windows")], "windows_positions": positions["windows"],
                     "prefixes_positions": positions["prefixes"], "config": flat[m],
                     "rounds_s": {obj: [round(t, 4) for t in times[(m, obj)]] for obj in OBJECTIVES}})
    result = {"data": str(args.data), "max_len": args.max_len, "objectives": OBJECTIVES, "rounds": args.rounds,
              "rows": rows}
    write_result(args.out, result, info, COLUMNS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
