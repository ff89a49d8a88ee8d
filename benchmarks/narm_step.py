"""NARM training step at ML-1M's shape: three forms of the causal local encoder.

    python benchmarks/narm_step.py --out benchmarks/results/narm_step_tiled.json --precision bf16 \
        --variants truncated tiled

NARM's local encoder (Li et al. 2017) scores every query position t against every key j <= t with
v^T sigmoid(A_1 h_t + A_2 h_j): an element-wise [B, T, N, H] block, O(N^2 H) per row. Variants,
measured in interleaved rounds (round r runs each once, so a change in machine load hits all alike):

* ``previous``: chunks of query positions (all rows), checkpointed; every chunk reads all N keys and
  the causal mask then zeroes the later ones;
* ``truncated``: the same, but a chunk of queries ending at e reads the keys before e only (the
  model until the tiles);
* ``tiled`` (the model now): tiles of a few rows and queries that fit in L2, keys before the tile's
  last query only, a hand-written backward that recomputes each tile's sigmoid in place.

A step: 128 windows of 200 items (ML-1M's longest all-position batch, 25,600 targets), d = 128,
forward, the engine's full-softmax cross-entropy over 3,706 items, backward, Adam; with ``--context
150`` the first 150 positions of each window are context only (ML-1M's later windows with
``window_overlap=150``: 50 targets each), which the tiled model skips (``takes_queries``). Also
checks that all give the same loss and gradients (1e-5; bf16 rounds each form differently).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchinfo import machine, write_result

from glintru.config import NARMConfig, TrainConfig
from glintru.engine.loss import SequenceLoss
from glintru.models.narm import NARM


class PreviousNARM(NARM):
    """The forward pass before key truncation (reference for the comparison)."""

    CHUNK_ELEMENTS = 1 << 22  # at most this many elements in one [B, T, N, hidden] chunk
    TRUNCATE = False
    takes_queries = False  # every position's state, whichever the loss reads

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        B, N = items.shape
        h, mask = self._states(items)
        q, k = self.a1(h), self.a2(h)
        allowed = torch.ones(N, N, dtype=h.dtype).tril() * mask.unsqueeze(1)
        step = max(1, self.CHUNK_ELEMENTS // max(1, B * N * h.size(-1)))
        parts = []
        for s in range(0, N, step):
            e = min(N, s + step) if self.TRUNCATE else N
            parts.append(checkpoint(self._local, q[:, s : s + step], k[:, :e], h[:, :e], allowed[:, s : s + step, :e],
                                    use_reentrant=False))
        return self._decode(h, torch.cat(parts, dim=1))


class TruncatedNARM(PreviousNARM):
    """Key truncation, checkpointed chunks of queries over all rows (the model before the tiles)."""

    TRUNCATE = True


VARIANTS = {"previous": PreviousNARM, "truncated": TruncatedNARM, "tiled": NARM}


def loss_of(model: NARM, items: torch.Tensor, targets: torch.Tensor, precision: str) -> torch.Tensor:
    """The engine's own loss module: full-softmax CE over the real targets in cache-sized chunks with
    fused gradients; a model that ``takes_queries`` computes the targets' positions only."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        return SequenceLoss(model, TrainConfig().loss_chunk)({"items": items, "targets": targets})


def make_step(model: NARM, items: torch.Tensor, targets: torch.Tensor, precision: str):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_of(model, items, targets, precision)
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
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: the step under CPU bf16 autocast, as the reproduction's ML-1M runs train")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--context", type=int, default=0,
                    help="the first C positions of every window are context only (no target), as in a window "
                         "that overlaps the previous one by C items (window_overlap)")
    args = ap.parse_args(argv)
    if len(args.variants) < 2:
        ap.error("--variants: name at least two to compare")
    torch.set_num_threads(args.threads)
    info = machine(args.threads)
    n_items, d = 3706, 128
    cfg = NARMConfig(hidden_size=d, embedding_size=d, emb_dropout=0.0, ct_dropout=0.0)
    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, n_items + 1, (args.batch, args.window + 1), generator=g)
    x, y = items[:, :-1], items[:, 1:].clone()
    if not 0 <= args.context < args.window:
        ap.error(f"--context must be in [0, --window), got {args.context}")
    y[:, : args.context] = 0  # context only: no target there
    models = {}
    for name in args.variants:
        torch.manual_seed(0)
        models[name] = VARIANTS[name](cfg, n_items, args.window).train()
    # the same loss and gradients from the same weights (one step's worth, before any update)
    grads = {}
    for name, m in models.items():
        loss_of(m, x, y, args.precision).backward()
        grads[name] = {n: p.grad.clone() for n, p in m.named_parameters()}
        m.zero_grad(set_to_none=True)
    first, *others = args.variants
    max_diff = max(float((grads[first][n] - grads[o][n]).abs().max()) for o in others for n in grads[first])
    steps = {name: make_step(m, x, y, args.precision) for name, m in models.items()}
    for s in steps.values():  # warm-up
        s()
    times: dict[str, list[float]] = {n: [] for n in steps}
    losses: dict[str, list[float]] = {n: [] for n in steps}
    for _ in range(args.rounds):
        for name, s in steps.items():
            t0 = time.perf_counter()
            losses[name].append(s())
            times[name].append(time.perf_counter() - t0)
    targets = args.batch * (args.window - args.context)
    rows = [{"variant": n, "step_s_median": statistics.median(t), "targets_per_s": targets / statistics.median(t),
             "step_s": t, "losses": losses[n]} for n, t in times.items()]
    for r in rows:
        r["speedup_vs_first"] = rows[0]["step_s_median"] / r["step_s_median"]
    speedup = rows[0]["step_s_median"] / rows[-1]["step_s_median"]
    tol = 1e-5 if args.precision == "fp32" else 2e-2  # bf16 rounds each form's products differently
    grad_tol = 1e-5 if args.precision == "fp32" else 5e-2
    same = all(abs(a - b) < tol * max(1.0, abs(a)) for o in others for a, b in zip(losses[first], losses[o]))
    result = {"shape": {"batch": args.batch, "window": args.window, "context": args.context, "d": d,
                        "n_items": n_items},
              "precision": args.precision, "rounds": args.rounds, "rows": rows,
              "speedup": speedup, "speedup_of": f"{args.variants[-1]} vs {first}",
              "max_grad_diff": max_diff, "same_losses": same}
    write_result(args.out, result, info, ["variant", "step_s_median", "targets_per_s", "speedup_vs_first"])
    print(f"{result['speedup_of']}: {speedup:.2f}x; max gradient difference {max_diff:.1e}; same losses: {same}")
    return 0 if same and max_diff < grad_tol else 1


if __name__ == "__main__":
    raise SystemExit(main())
