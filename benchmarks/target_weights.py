"""How the step weighting spreads an epoch's loss over the training targets: for each dataset, the
share of the epoch's total weight that ``target_weight=batch`` gives to groups of targets (the first
``max_len / 4`` items of every history, the users with the longest quarter of histories) next to
their share of the targets, which is what ``target_weight=equal`` gives them.

    python benchmarks/target_weights.py --data benchmarks/work/data/ml-1m:200 \\
        benchmarks/work/data/amazon-beauty:50 --overlap-shares 0 0.75 --out benchmarks/results/target_weights.json

Counting only (no training). The batches are the engine's own (``global_batches``: length-sorted
windows, ``--batch-size`` a batch, seeded by ``(seed, epoch)``); with ``batch`` a target of step k
weighs ``1 / (K n_k)`` (K steps, n_k targets in step k), with ``equal`` every target weighs
``1 / N``. ``effective share`` is Kish's effective sample size over N, ``(sum w)^2 / (N sum w^2)``:
1 when every target weighs the same. Shares are averaged over ``--epochs`` epochs' batches.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from window_context import add_window_options, window_specs, window_targets

from glintru.data.dataset import load_prepared
from glintru.engine.batching import global_batches, training_samples
from glintru.storage import atomic_write_text


def batch_weights(s, win: np.ndarray, batch_size: int, seed: int, epochs: int) -> np.ndarray:
    """Each target's share [n] of an epoch's total loss weight under ``target_weight=batch``,
    averaged over ``epochs`` epochs of the engine's batches; the shares sum to 1."""
    w = np.zeros(len(s))
    for epoch in range(epochs):
        batches = global_batches(s, batch_size, seed=seed, epoch=epoch)
        for idx in batches:  # every target of the step weighs 1 / (K n_k)
            w[idx] += 1.0 / (len(batches) * s.n_targets(idx))
    return w[win] / epochs


def weight_shares(data_dir: str, max_len: int, overlap: int, batch_size: int, seed: int, epochs: int) -> dict:
    """Target and ``batch``-weight shares of the groups named in the module docstring."""
    data = load_prepared(data_dir)
    s = training_samples(data, "all_positions", max_len, overlap)
    win, _, t_user, i = window_targets(data, s)
    w = batch_weights(s, win, batch_size, seed, epochs)
    n_targets = data.train_lengths().astype(np.int64) - 1  # targets of each user, s[1..T-1]
    long_users = n_targets >= np.quantile(n_targets[n_targets > 0], 0.75)
    groups = {
        f"first {max_len // 4} of each history": i <= max_len // 4,
        "users with the longest quarter of histories": long_users[t_user],
    }
    rows = {name: {"targets": float(m.mean()), "batch_weight": float(w[m].sum())} for name, m in groups.items()}
    return {"dataset": Path(data_dir).name, "max_len": max_len, "window_overlap": overlap,
            "batch_size": batch_size, "targets": int(len(w)), "windows": int(len(s)),
            "steps": int(-(-len(s) // batch_size)), "epochs": epochs,
            "effective_share_batch": float(w.sum() ** 2 / (len(w) * (w ** 2).sum())),
            "max_over_min_weight": float(w.max() / w.min()), "groups": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_window_options(ap)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=3, help="epochs of batches to average over")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    for opt, n in (("--batch-size", args.batch_size), ("--epochs", args.epochs)):
        if n < 1:
            ap.error(f"{opt} {n}: must be a positive count")
    rows = [weight_shares(*spec, args.batch_size, args.seed, args.epochs) for spec in window_specs(ap, args)]
    print(f"{'dataset':<20} {'overlap':>7} {'steps':>6} {'effective share':>15}  group: targets % -> batch weight %")
    for r in rows:
        groups = "; ".join(f"{name}: {100 * g['targets']:.1f} -> {100 * g['batch_weight']:.1f}"
                           for name, g in r["groups"].items())
        print(f"{r['dataset']:<20} {r['window_overlap']:>7} {r['steps']:>6} {r['effective_share_batch']:>15.2f}  {groups}")
    if args.out:
        atomic_write_text(Path(args.out), json.dumps({"benchmark": "target_weights", "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
