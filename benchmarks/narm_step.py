"""NARM training step at ML-1M's shape: the causal local encoder before and after key truncation.

    python benchmarks/narm_step.py --out benchmarks/results/narm_step.json

NARM's local encoder (Li et al. 2017) scores every query position t against every key j <= t with
v^T sigmoid(A_1 h_t + A_2 h_j): an element-wise [B, T, N, H] block, O(N^2 H) per row, computed in
chunks of query positions. Variants, measured in interleaved rounds (round r runs each once, so a
change in machine load hits both alike):

* ``previous``: every chunk of queries reads all N keys; the causal mask then zeroes the later ones;
* ``truncated`` (the model now): a chunk of queries ending at e reads the keys before e only.

A step: 128 windows of 200 items (ML-1M's longest all-position batch, 25,600 targets), d = 128,
forward, full-softmax cross-entropy over 3,706 items, backward, Adam. Also checks that both give
the same loss and gradients (1e-5).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchinfo import machine, write_result

from glintru.config import NARMConfig
from glintru.models.narm import NARM


class PreviousNARM(NARM):
    """The forward pass before key truncation (reference for the comparison)."""

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        B, N = items.shape
        h, mask = self._states(items)
        q, k = self.a1(h), self.a2(h)
        allowed = torch.ones(N, N, dtype=h.dtype).tril() * mask.unsqueeze(1)
        step = max(1, self.CHUNK_ELEMENTS // max(1, B * N * h.size(-1)))
        parts = [checkpoint(self._local, q[:, s : s + step], k, h, allowed[:, s : s + step], use_reentrant=False)
                 for s in range(0, N, step)]
        return self._decode(h, torch.cat(parts, dim=1))


def make_step(model: NARM, items: torch.Tensor, targets: torch.Tensor):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        h = model(items).reshape(-1, model.cfg.embedding_size)
        loss = F.cross_entropy(h @ model.item_embeddings()[1:].T, targets.reshape(-1) - 1)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--window", type=int, default=200)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine(args.threads)
    n_items, d = 3706, 128
    cfg = NARMConfig(hidden_size=d, embedding_size=d, emb_dropout=0.0, ct_dropout=0.0)
    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, n_items + 1, (args.batch, args.window + 1), generator=g)
    x, y = items[:, :-1], items[:, 1:]
    models = {}
    for name, cls in (("previous", PreviousNARM), ("truncated", NARM)):
        torch.manual_seed(0)
        models[name] = cls(cfg, n_items, args.window).train()
    # the same loss and gradients from the same weights (one step's worth, before any update)
    grads = {}
    for name, m in models.items():
        h = m(x).reshape(-1, d)
        F.cross_entropy(h @ m.item_embeddings()[1:].T, y.reshape(-1) - 1).backward()
        grads[name] = {n: p.grad.clone() for n, p in m.named_parameters()}
        m.zero_grad(set_to_none=True)
    max_diff = max(float((grads["previous"][n] - grads["truncated"][n]).abs().max()) for n in grads["previous"])
    steps = {name: make_step(m, x, y) for name, m in models.items()}
    for s in steps.values():  # warm-up
        s()
    times: dict[str, list[float]] = {n: [] for n in steps}
    losses: dict[str, list[float]] = {n: [] for n in steps}
    for _ in range(args.rounds):
        for name, s in steps.items():
            t0 = time.perf_counter()
            losses[name].append(s())
            times[name].append(time.perf_counter() - t0)
    targets = args.batch * args.window
    rows = [{"variant": n, "step_s_median": statistics.median(t), "targets_per_s": targets / statistics.median(t),
             "step_s": t, "losses": losses[n]} for n, t in times.items()]
    speedup = rows[0]["step_s_median"] / rows[1]["step_s_median"]
    same = all(abs(a - b) < 1e-5 * max(1.0, abs(a)) for a, b in zip(losses["previous"], losses["truncated"]))
    result = {"shape": {"batch": args.batch, "window": args.window, "d": d, "n_items": n_items},
              "rounds": args.rounds, "rows": rows, "speedup": speedup, "max_grad_diff": max_diff,
              "same_losses": same}
    write_result(args.out, result, info, ["variant", "step_s_median", "targets_per_s"])
    print(f"speed-up {speedup:.2f}x; max gradient difference {max_diff:.1e}; same losses: {same}")
    return 0 if same and max_diff < 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
