"""Micro-benchmark of the GLINT-RU model alone (no data pipeline), at ML-1M's shape by default.

    python benchmarks/model_speed.py                      # threads 1 and 2, causal model
    python benchmarks/model_speed.py --official --threads 1
    python benchmarks/model_speed.py --profile            # torch.profiler table of one training step

Training: all-position next-item full-softmax cross-entropy over ``--items`` items, Adam, batches of
``--batch`` random sequences x ``--len`` positions (every position real): target items/s.
Evaluation: ``last_hidden`` + full-ranking scores for ``--users`` users with windows of ``--len``
items (worst case: every window full): users/s and seconds for all of them.
Random item ids stand in for real sequences; the engine's benchmark uses real ML-1M data.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from glintru.config import GlintRUConfig
from glintru.models.glintru import GlintRU


def train_step(model: GlintRU, opt: torch.optim.Optimizer, items: torch.Tensor, targets: torch.Tensor) -> float:
    """One Adam step of full-softmax CE at every position; ``items``/``targets`` [B, N]."""
    hidden = model(items)  # [B, N, d]
    logits = hidden.flatten(0, 1) @ model.item_embeddings()[1:].T  # [B*N, n_items]
    loss = F.cross_entropy(logits, targets.flatten() - 1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def bench_model(model: GlintRU, n_items: int, batch: int, length: int, steps: int) -> float:
    """Target positions per second of the model's forward + backward alone (no loss, no optimiser)."""
    model.train()
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(1, n_items + 1, (batch, length), generator=g) for _ in range(steps + 1)]
    grad = torch.randn(batch, length, model.cfg.hidden_size, generator=g)
    model(data[0]).backward(grad)
    t0 = time.perf_counter()
    for items in data[1:]:
        model(items).backward(grad)
    return steps * batch * length / (time.perf_counter() - t0)


def bench_train(model: GlintRU, n_items: int, batch: int, length: int, steps: int) -> float:
    """Target items per second of training (after one warm-up step)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(1, n_items + 1, (batch, length + 1), generator=g) for _ in range(steps + 1)]
    train_step(model, opt, data[0][:, :-1], data[0][:, 1:])
    t0 = time.perf_counter()
    for seq in data[1:]:
        train_step(model, opt, seq[:, :-1], seq[:, 1:])
    return steps * batch * length / (time.perf_counter() - t0)


@torch.no_grad()
def bench_eval(model: GlintRU, n_items: int, users: int, length: int, batch: int) -> float:
    """Seconds to score all ``users`` (last position, full ranking, top-10 taken)."""
    model.eval()
    g = torch.Generator().manual_seed(1)
    items = torch.randint(1, n_items + 1, (users, length), generator=g)
    lengths = torch.full((users,), length)
    t0 = time.perf_counter()
    for s in range(0, users, batch):
        h = model.last_hidden(items[s : s + batch], lengths[s : s + batch])  # [b, d]
        scores = h @ model.item_embeddings()[1:].T
        scores.topk(10, dim=1)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=3706)
    ap.add_argument("--batch", type=int, default=32, help="training sequences per step")
    ap.add_argument("--len", type=int, default=200)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--users", type=int, default=6040)
    ap.add_argument("--eval-batch", type=int, default=256)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--official", action="store_true", help="causal=False (official mode)")
    ap.add_argument("--light", action="store_true")
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step")
    args = ap.parse_args()

    cfg = GlintRUConfig(causal=not args.official, light=args.light)
    for threads in args.threads:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = GlintRU(cfg, n_items=args.items, max_len=args.len)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            seq = torch.randint(1, args.items + 1, (args.batch, args.len + 1))
            train_step(model, opt, seq[:, :-1], seq[:, 1:])
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                train_step(model, opt, seq[:, :-1], seq[:, 1:])
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
            continue
        mps = bench_model(model, args.items, args.batch, args.len, args.steps)
        tps = bench_train(model, args.items, args.batch, args.len, args.steps)
        secs = bench_eval(model, args.items, args.users, args.len, args.eval_batch)
        print(
            f"threads={threads} causal={cfg.causal} light={cfg.light} batch={args.batch}x{args.len}: "
            f"train {tps:,.0f} targets/s (model fwd+bwd alone {mps:,.0f}/s) | eval {args.users / secs:,.0f} users/s "
            f"({secs:.1f} s for {args.users} users, windows of {args.len})"
        )


if __name__ == "__main__":
    main()
