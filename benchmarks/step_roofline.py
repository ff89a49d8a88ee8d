"""How far the GLINT-RU training step is from this CPU's matrix-product rate (ML-1M shape).

    python benchmarks/step_roofline.py --data benchmarks/work/data/ml-1m --out benchmarks/results/step_roofline.json

The step is the engine's default one (as ``benchmarks/step_speed.py`` times it): the longest
all-position batch of ML-1M (128 windows of 200 items), d = 128, model forward, full-softmax loss,
backward, Adam, fp32, one thread. This script

1. counts the step's floating-point operations with ``torch.utils.flop_counter.FlopCounterMode``
   (matrix products and convolutions, forward and backward; elementwise work is not counted), per
   operator, and the full-softmax loss's share (3 products of the [targets x d] hidden states with
   the [n_items x d] table: logits, their gradient towards the hidden states and towards the table);
2. measures the rate of plain ``torch.mm`` at the step's two dominant shapes, in the same process,
   interleaved with the step (so machine load hits both alike): the hidden-layer product
   [25,600 x 128] @ [128 x 128] and the loss's cache-sized logit block [282 x 128] @ [128 x n_items];
3. times the model's parts alone, forward + backward on the same batch (the GRU expert, its
   ``nn.GRU`` alone, the linear attention expert, everything after the experts, the loss), to show
   where the time above the floor goes;
4. reports the floor those rates put under the step (counted FLOPs at the matmul rate) and the
   step's measured time against it: a step at 1.1x its floor cannot get 1.5x faster without fewer
   FLOPs or faster arithmetic (bf16 on a CPU with AMX / AVX512-BF16).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchinfo import machine, write_result


def mm_rate(m: int, k: int, n: int, min_s: float = 0.5) -> float:
    """GFLOP/s of ``[m, k] @ [k, n]`` in fp32, repeated for at least ``min_s`` seconds."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b  # warm-up
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_s:
        a @ b
        reps += 1
    return 2.0 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


def part_timings(model, batch, seq_loss, rounds: int) -> dict[str, float]:
    """Median ms of forward + backward of each part of GLINT-RU alone, on the batch's shapes."""
    from glintru.engine.loss import full_softmax_ce

    items = batch["items"]
    x, mask = model._embed(items)
    x = x.detach().requires_grad_(True)
    g = torch.randn_like(x)
    y = model.gru_expert(x, mask).detach().requires_grad_(True)
    a = model.attention(x, mask).detach().requires_grad_(True)
    c = torch.randn_like(x, requires_grad=True)
    real = batch["targets"] > 0
    h = model(items).detach()[real].requires_grad_(True)
    emb = model.item_embeddings().detach().requires_grad_(True)
    parts = {
        "whole model (no loss)": lambda: model(items).backward(g),
        "GRU expert (Eq. 5-9)": lambda: model.gru_expert(x, mask).backward(g),
        "its nn.GRU alone": lambda: model.gru_expert.gru(c)[0].backward(g),
        "linear attention expert (Eq. 2)": lambda: model.attention(x, mask).backward(g),
        "mix, gate, MLP, norms (Eq. 10-12)": lambda: model._head(x, y, a).backward(g),
        "full-softmax loss": lambda: full_softmax_ce(h, emb, batch["targets"][real], seq_loss.chunk).backward(),
    }
    out = {}
    for name, fn in parts.items():
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = 1000 * statistics.median(times)
    model.zero_grad(set_to_none=True)
    return out


def main(argv: list[str] | None = None) -> int:
    from step_speed import longest_batch
    from torch.utils.flop_counter import FlopCounterMode

    from glintru.engine import loss as loss_mod
    from glintru.models import build_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="prepared ML-1M directory (glintru prepare)")
    ap.add_argument("--out", required=True, help="JSON result path")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of (step, matmul rates)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine(args.threads)

    data, cfg, batch = longest_batch(args.data)
    torch.manual_seed(0)
    model = build_model(cfg, data.n_items).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    seq_loss = loss_mod.make_sequence_loss(model, cfg.train, data.n_items, None)

    def step() -> None:
        value = seq_loss(batch)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()

    step()  # warm-up
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    total = counter.get_total_flops()
    by_op = {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}

    parts = part_timings(model, batch, seq_loss, args.rounds)

    chunk = loss_mod.cache_rows(cfg.train.loss_chunk, data.n_items)
    shapes = {"hidden [25600x128]@[128x128]": (25_600, 128, 128), f"logits [{chunk}x128]@[128x{data.n_items}]":
              (chunk, 128, data.n_items)}
    step_s: list[float] = []
    rates: dict[str, list[float]] = {k: [] for k in shapes}
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        step()
        step_s.append(time.perf_counter() - t0)
        for name, (m, k, n) in shapes.items():
            rates[name].append(mm_rate(m, k, n))
    med_step = statistics.median(step_s)
    med_rate = {k: statistics.median(v) for k, v in rates.items()}
    best_rate = max(med_rate.values())
    floor_s = total / (best_rate * 1e9)
    targets = int((batch["targets"] > 0).sum())
    loss_flop = 3 * 2 * targets * cfg.model_cfg.hidden_size * data.n_items
    rows = [{"quantity": "step (ms)", "value": round(1000 * med_step, 1)},
            {"quantity": "counted GFLOP per step", "value": round(total / 1e9, 2)},
            {"quantity": "of which the loss's 3 products", "value": round(loss_flop / 1e9, 2)},
            {"quantity": "step's achieved GFLOP/s", "value": round(total / 1e9 / med_step, 1)}]
    rows += [{"quantity": f"torch.mm GFLOP/s, {k}", "value": round(v, 1)} for k, v in med_rate.items()]
    rows += [{"quantity": f"part alone, forward + backward (ms): {k}", "value": round(v, 1)} for k, v in parts.items()]
    rows += [{"quantity": "floor at the best mm rate (ms)", "value": round(1000 * floor_s, 1)},
             {"quantity": "step / floor", "value": round(med_step / floor_s, 2)},
             {"quantity": "targets/s", "value": round(targets / med_step)},
             {"quantity": "targets/s at the floor", "value": round(targets / floor_s)}]
    result = {"benchmark": "step_roofline", "shape": {"batch": 128, "window": 200, "d": 128, "n_items": data.n_items},
              "targets_per_step": targets, "rounds": args.rounds, "step_ms_all": [1000 * s for s in step_s],
              "gflop_per_step": total / 1e9, "gflop_by_op": {k: v / 1e9 for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
              "gflop_loss": loss_flop / 1e9, "gflop_model": (total - loss_flop) / 1e9,
              "mm_gflops": med_rate, "part_ms": parts, "rows": rows}
    write_result(args.out, result, info, ["quantity", "value"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
