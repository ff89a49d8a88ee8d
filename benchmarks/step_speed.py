"""GLINT-RU training step speed at ML-1M's shape: each change to the step, side by side in one run.

    python benchmarks/step_speed.py --data benchmarks/work/data/ml-1m --out benchmarks/results/step_speed.json

A step is the engine's: the longest all-position batch of ML-1M (128 windows of 200 items, 25,600
targets), d = 128, model forward, loss, backward, Adam. Variants, measured in interleaved rounds
(round r runs every variant once, so a change in machine load hits all of them alike):

* ``previous``: the loss kernel before this change: logsumexp, then exp(logits - lse) again for the
  gradient (two exponentials per logit), 4,096-row chunks;
* ``one-pass``: one exponential per logit, computed in place (``glintru.engine.loss``), 4,096 rows;
* ``one-pass + cache rows`` (the engine's default now): chunks sized to stay in cache
  (:func:`glintru.engine.loss.cache_rows`, 282 rows at 3,706 items);
* ``bf16``: the default step under bf16 autocast (``precision=bf16``);
* ``compile`` (with ``--compile``): the default step with the model under ``torch.compile``
  (``compile=true``; its compilation happens in the warm-up step, which is not timed).

Also checks that the variants compute the same loss (fp32 ones to 1e-5, bf16 to 2e-2).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchinfo import machine, write_result


class _PreviousFusedCE(torch.autograd.Function):
    """The loss kernel as it was before the one-pass change (reference for the speed comparison)."""

    @staticmethod
    def forward(ctx, h, emb, cls, chunk):  # type: ignore[override]
        rows = h.size(0)
        grad_h = torch.empty_like(h)
        grad_e = torch.zeros(emb.shape, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32)
        for lo in range(0, rows, chunk):
            hc, yc = h[lo : lo + chunk], cls[lo : lo + chunk]
            logits = (hc @ emb.T).float()
            lse = torch.logsumexp(logits, dim=1)
            total += (lse - logits.gather(1, yc.view(-1, 1)).squeeze(1)).sum()
            p = torch.exp(logits.sub_(lse.view(-1, 1)))
            p[torch.arange(len(yc)), yc] -= 1.0
            grad_h[lo : lo + chunk] = p @ emb
            grad_e += p.T @ hc
        ctx.save_for_backward(grad_h, grad_e)
        ctx.rows = rows
        return total / rows

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        grad_h, grad_e = ctx.saved_tensors
        return grad_h * grad_out / ctx.rows, grad_e * grad_out / ctx.rows, None, None


def longest_batch(data_dir: str):
    """``(data, cfg, batch)``: the prepared dataset, GLINT-RU's default config at window 200 and the
    dataset's longest all-position batch (128 windows of 200 items on ML-1M)."""
    from glintru.config import build_config
    from glintru.data.dataset import load_prepared
    from glintru.engine.batching import make_batch, training_samples

    data = load_prepared(data_dir)
    cfg = build_config("glintru", {"max_len": 200})
    samples = training_samples(data, "all_positions", 200)
    idx = np.argsort(-samples.n, kind="stable")[:128]  # the longest windows: a full [128, 200] batch
    return data, cfg, make_batch(data.items, samples, idx)


def main(argv: list[str] | None = None) -> int:
    from glintru.engine import loss as loss_mod
    from glintru.engine.precision import autocast_for
    from glintru.models import build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="prepared ML-1M directory")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="also time the step with torch.compile")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine(args.threads)
    data, cfg, batch = longest_batch(args.data)

    def make_step(kind: str):
        torch.manual_seed(0)
        model = build_model(cfg, data.n_items).train()
        encoder = torch.compile(model) if kind == "compile" else model
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        precision = "bf16" if kind == "bf16" else "fp32"

        def loss_fn() -> torch.Tensor:
            h = encoder(batch["items"])
            real = batch["targets"] > 0
            rows, tgt = h[real], batch["targets"][real]
            emb = model.item_embeddings()
            if kind == "previous":
                return _PreviousFusedCE.apply(rows, emb[1:], tgt - 1, 4096)
            if kind == "one-pass":
                return loss_mod._FusedChunkedCE.apply(rows, emb[1:], tgt - 1, 4096)
            return loss_mod.full_softmax_ce(rows, emb, tgt, cfg.train.loss_chunk)

        def step() -> float:
            torch.manual_seed(1)
            with autocast_for(precision, torch.device("cpu")):
                value = loss_fn()
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            return float(value.detach())

        return step

    kinds = ["previous", "one-pass", "one-pass + cache rows", "bf16"] + (["compile"] if args.compile else [])
    steps = {k: make_step(k) for k in kinds}
    first = {k: steps[k]() for k in kinds}  # warm-up; the first step's loss (same init, same batch)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for k in kinds:
            t0 = time.perf_counter()
            steps[k]()
            times[k].append(time.perf_counter() - t0)
    targets = int((batch["targets"] > 0).sum())
    base = statistics.median(times["previous"])
    rows = []
    for k in kinds:
        med = statistics.median(times[k])
        tol = {"bf16": 2e-2, "compile": 1e-3}.get(k, 1e-5)  # compiled dropout draws its own masks
        rows.append({"variant": k, "step_ms": 1000 * med, "targets_per_s": targets / med, "speedup": base / med,
                     "first_loss": first[k], "same_loss": abs(first[k] - first["previous"]) <= tol * abs(first["previous"])})
    result = {"benchmark": "step_speed", "shape": {"batch": 128, "window": 200, "d": 128, "n_items": data.n_items},
              "targets_per_step": targets, "rounds": args.rounds, "rows": rows,
              "cache_rows": loss_mod.cache_rows(cfg.train.loss_chunk, data.n_items)}
    write_result(args.out, result, info, ["variant", "step_ms", "targets_per_s", "speedup", "first_loss", "same_loss"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
