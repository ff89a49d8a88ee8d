"""Training cost against catalogue size: full softmax versus sampled softmax and gBCE.

    python benchmarks/catalogue_scaling.py --out benchmarks/results/catalogue_scaling.json
    python benchmarks/catalogue_scaling.py --out /tmp/c.json --items 10000 100000 --seconds 5

A synthetic dataset with power-law (Zipf, exponent 1.1) item popularity, GLINT-RU at d = 128,
windows of 50 items, 64 sequences per step (3,200 targets), Adam. For each catalogue size (10^4,
10^5, 10^6 items) and loss (``ce``, ``sampled_softmax`` with 256 popularity negatives and log-Q
correction, ``gbce`` with 256 uniform negatives) and, for the sampled losses, each way of updating
the item-embedding table (``dense`` Adam over every row, ``sparse`` lazy Adam over the rows a step
touched; ``embedding_update`` in the config), one fresh process measures training targets/s (timed
steps after one warm-up step, at least two, for ``--seconds``) and its peak RSS. With the sparse
update the cost per target of the sampled losses should stay nearly flat; the full softmax's grows
with the catalogue, and so does a dense update's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchinfo import machine, write_result

LOSSES = ("ce", "sampled_softmax", "gbce")
BATCH, WINDOW = 64, 50


def child(n_items: int, loss: str, update: str, seconds: float, threads: int) -> dict:
    import numpy as np
    import torch

    from glintru.config import build_config
    from glintru.engine.loss import make_sequence_loss
    from glintru.engine.optim import make_optimizer
    from glintru.models import build_model

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, n_items + 1) ** 1.1
    p /= p.sum()
    counts = np.concatenate([[0], np.round(p * 50 * n_items)]).astype(np.int64)
    cfg = build_config("glintru", {"max_len": WINDOW, "loss": loss, "num_negatives_train": 256,
                                   "embedding_update": update})
    torch.manual_seed(0)
    model = build_model(cfg, n_items)
    loss_mod = make_sequence_loss(model, cfg.train, n_items, counts)
    opt = make_optimizer(model, cfg.train, n_items, extra=loss_mod.own_parameters())  # the engine's optimiser

    def batch():
        seq = torch.from_numpy(rng.choice(n_items, size=(BATCH, WINDOW + 1), p=p) + 1)
        return {"items": seq[:, :-1], "targets": seq[:, 1:], "lengths": torch.full((BATCH,), WINDOW)}

    def step(b):
        value = loss_mod(b)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        return float(value)

    step(batch())  # warm-up
    times, losses = [], []
    t_end = time.perf_counter() + seconds
    while len(times) < 2 or time.perf_counter() < t_end:
        b = batch()
        t0 = time.perf_counter()
        losses.append(step(b))
        times.append(time.perf_counter() - t0)
    targets = BATCH * WINDOW
    return {"n_items": n_items, "loss": loss, "embedding_update": update, "steps": len(times), "targets_per_s": targets * len(times) / sum(times),
            "ms_per_target": 1000 * sum(times) / (targets * len(times)),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "last_loss": losses[-1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out")
    ap.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
    ap.add_argument("--seconds", type=float, default=20.0, help="timed seconds per configuration (at least 2 steps)")
    ap.add_argument("--updates", nargs="+", choices=("dense", "sparse"), default=["dense", "sparse"],
                    help="item-table updates measured for the sampled losses (full CE is always dense)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], args.child[2], args.seconds, args.threads)))
        return 0
    if not args.out:
        ap.error("--out is required")
    info = machine(args.threads)
    rows = []
    for n in args.items:
        for loss in args.losses:
            for update in (["dense"] if loss == "ce" else args.updates):
                cmd = [sys.executable, __file__, "--child", str(n), loss, update, "--seconds", str(args.seconds),
                       "--threads", str(args.threads)]
                res = subprocess.run(cmd, capture_output=True, text=True, check=True)
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
                print(f"{n:>9,} items {loss:<16} {update:<6} {rows[-1]['targets_per_s']:>9,.0f} targets/s  "
                      f"{rows[-1]['peak_rss_mb']:,.0f} MB", flush=True)
    result = {"benchmark": "catalogue_scaling", "d": 128, "batch": BATCH, "window": WINDOW, "num_negatives_train": 256,
              "rows": rows}
    write_result(args.out, result, info, ["n_items", "loss", "embedding_update", "targets_per_s", "ms_per_target",
                                          "peak_rss_mb", "steps"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
