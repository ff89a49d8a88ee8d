"""Streaming inference: GLINT-RU stepping one event versus re-encoding a window (GLINT-RU, SASRec).

    python benchmarks/streaming.py --out benchmarks/results/streaming.json
    python benchmarks/streaming.py --out /tmp/s.json --quick

For each new event a recommender must turn the user's history into scores over the catalogue.
GLINT-RU (causal) keeps a state and applies the event in O(d^2) (:meth:`GlintRU.step`); a
Transformer such as SASRec re-encodes the last L items (O(L^2 d) attention plus O(L d^2)). Both then
score every item and take the top 10 (the shared scoring kernel). Measured per configuration:
latency per event for one user (median over ``--events`` events) and events/s for a batch of 256
users stepping together. Models have random weights (speed does not depend on training), d = 128,
ML-1M's 3,706 items; windows of 50, 200 and 1,000 items.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchinfo import machine, write_result

N_ITEMS = 3706


def build(model: str, max_len: int) -> torch.nn.Module:
    from glintru.config import build_config
    from glintru.models import build_model

    torch.manual_seed(0)
    cfg = build_config(model, {"max_len": max_len})
    return build_model(cfg, N_ITEMS).eval()


def topk(model: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    from glintru.engine.scoring import score_blocks

    out = []
    for _, scores in score_blocks(h, model.item_embeddings()[1:]):
        out.append(scores.topk(10).indices)
    return torch.cat(out)


def time_calls(fn, n: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--events", type=int, default=200, help="timed single-user events per configuration")
    ap.add_argument("--batch", type=int, default=256, help="users per batched step")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine(args.threads)
    n = 20 if args.quick else args.events
    windows = [50, 200] if args.quick else [50, 200, 1000]
    rng = np.random.default_rng(0)
    rows = []
    with torch.inference_mode():
        glint = build("glintru", max(windows))
        for L in windows:
            hist = torch.from_numpy(rng.integers(1, N_ITEMS + 1, size=(args.batch, L)))
            nxt = torch.from_numpy(rng.integers(1, N_ITEMS + 1, size=args.batch))
            state1 = glint.init_state(hist[:1], torch.tensor([L]))
            stateB = glint.init_state(hist, torch.full((args.batch,), L))
            one = time_calls(lambda: topk(glint, glint.step(state1, nxt[:1])[1]), n)
            many = time_calls(lambda: topk(glint, glint.step(stateB, nxt)[1]), max(3, n // 20))
            rows.append({"model": "glintru", "mode": "step", "history": L, "latency_ms": 1000 * float(np.median(one)),
                         "events_per_s": args.batch / float(np.median(many))})
            for name in ("glintru", "sasrec"):
                m = glint if name == "glintru" else build("sasrec", L)
                win1, winB = hist[:1], hist
                lens1, lensB = torch.tensor([L]), torch.full((args.batch,), L)
                one = time_calls(lambda: topk(m, m.last_hidden(win1, lens1)), n)
                many = time_calls(lambda: topk(m, m.last_hidden(winB, lensB)), max(3, n // 20))
                rows.append({"model": name, "mode": "re-encode", "history": L,
                             "latency_ms": 1000 * float(np.median(one)), "events_per_s": args.batch / float(np.median(many))})
    base = {r["history"]: r for r in rows if r["model"] == "sasrec"}
    for r in rows:
        r["speedup_vs_sasrec"] = base[r["history"]]["latency_ms"] / r["latency_ms"]
    result = {"benchmark": "streaming", "d": 128, "n_items": N_ITEMS, "batch": args.batch, "timed_events": n,
              "rows": rows}
    write_result(args.out, result, info, ["model", "mode", "history", "latency_ms", "events_per_s", "speedup_vs_sasrec"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
