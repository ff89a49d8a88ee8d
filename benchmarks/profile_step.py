"""Where one training step's time goes: torch.profiler over real batches of a prepared dataset.

    python benchmarks/profile_step.py --data benchmarks/work/data/ml-1m --tag before
    python benchmarks/profile_step.py --data benchmarks/work/data/ml-1m --tag checkpoint --loss-method checkpoint
    python benchmarks/profile_step.py --data DIR --model sasrec --set hidden_size=64 --steps 3

The step is the engine's: a batch from :mod:`glintru.engine.batching` (length-aware, the
configured objective), the computation of :class:`glintru.engine.loss.SequenceLoss` (hidden
states, then :func:`glintru.engine.loss.full_softmax_ce`, ``--loss-method`` fused as the engine
uses it or the earlier checkpointed one; under the configured precision's autocast),
``backward``, Adam. Under the profiler the two halves (model forward, loss forward) are separate
regions; the fused loss computes its gradients in the forward pass, so "loss forward" holds most
of the loss's cost and "backward" is then mostly the model's. One warm-up step, then ``--steps`` timed steps without the
profiler (median step time and target items/s), then ``--steps`` steps under the profiler.
Output: the top operators by self CPU time (printed, and in
``benchmarks/results/profile_<model>_<tag>.json``). Batches are the *longest* ones of the epoch
(every window full on ML-1M), so the figure is the worst case of a training step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    from glintru.config import build_config, parse_set_args
    from glintru.data.dataset import load_prepared
    from glintru.engine.batching import make_batch, training_samples
    from glintru.engine.loss import full_softmax_ce
    from glintru.engine.precision import autocast_for
    from glintru.models import build_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="prepared dataset directory")
    ap.add_argument("--model", default="glintru")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override (flat key)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="before")
    ap.add_argument("--loss-method", default="fused", choices=("fused", "checkpoint"),
                    help="full_softmax_ce implementation (the engine uses fused)")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    over = {"hidden_size": 64, "max_len": 200}
    if args.model in ("narm", "gru4rec"):
        over["embedding_size"] = 64
    over.update(parse_set_args(args.set))
    run_cfg = build_config(args.model, over, source="--set")
    cfg = run_cfg.train
    data = load_prepared(args.data)
    model = build_model(run_cfg, data.n_items)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    samples = training_samples(data, cfg.objective, cfg.max_len, cfg.window_overlap)
    longest = torch.from_numpy(samples.n).argsort(descending=True, stable=True).numpy()
    width = cfg.max_len if model.needs_full_window else None
    batches = [make_batch(data.items, samples, longest[i * cfg.batch_size:(i + 1) * cfg.batch_size], width=width)
               for i in range(2 * args.steps + 1)]
    n_targets = [int((b["targets"] > 0).sum()) for b in batches]

    def hidden(b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """SequenceLoss.forward's first half: rows [R, d] and their targets [R]."""
        if b["targets"].dim() == 2:
            real = b["targets"] > 0
            return model(b["items"])[real], b["targets"][real]
        return model.last_hidden(b["items"], b["lengths"]), b["targets"]

    def loss_of(rows: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return full_softmax_ce(rows, model.item_embeddings(), tgt, cfg.loss_chunk, method=args.loss_method)

    def step(batch: dict[str, torch.Tensor]) -> None:
        with autocast_for(cfg.precision, torch.device("cpu")):
            loss = loss_of(*hidden(batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    step(batches[0])
    times = []
    for b in batches[1:args.steps + 1]:
        t0 = time.perf_counter()
        step(b)
        times.append(time.perf_counter() - t0)
    timed = batches[args.steps + 1:]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        for b in timed:
            with autocast_for(cfg.precision, torch.device("cpu")):
                with torch.profiler.record_function("model forward"):
                    rows, tgt = hidden(b)
                with torch.profiler.record_function("loss forward"):
                    loss = loss_of(rows, tgt)
            opt.zero_grad(set_to_none=True)
            with torch.profiler.record_function("backward"):
                loss.backward()
            with torch.profiler.record_function("optimizer"):
                opt.step()
    events = prof.key_averages()
    total_self = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]
    regions = {e.key: e.cpu_time_total / len(timed) / 1e3 for e in events if e.key in ("model forward", "loss forward", "backward", "optimizer")}
    med = statistics.median(times)
    tps = statistics.median(n / t for n, t in zip(n_targets[1:args.steps + 1], times))
    out = {
        "model": args.model, "tag": args.tag, "loss_method": args.loss_method, "data": str(data.path.name), "threads": args.threads,
        "config": run_cfg.to_flat(), "batch_shape": list(batches[1]["items"].shape),
        "targets_per_step": n_targets[1], "step_s_median": round(med, 4), "targets_per_s": round(tps, 1),
        "regions_ms_per_step": {k: round(v, 1) for k, v in regions.items()},
        "top_ops": [
            {"op": e.key, "self_cpu_ms_per_step": round(e.self_cpu_time_total / len(timed) / 1e3, 1),
             "share": round(e.self_cpu_time_total / total_self, 4), "calls_per_step": e.count // len(timed)}
            for e in top
        ],
    }
    print(f"{args.model} [{args.tag}] batch {out['batch_shape']}, {n_targets[1]} targets/step: "
          f"median step {med * 1e3:.0f} ms, {tps:.0f} targets/s; regions (ms/step) {out['regions_ms_per_step']}")
    print(f"{'op':40s} {'self ms/step':>12s} {'share':>7s} {'calls':>6s}")
    for t in out["top_ops"]:
        print(f"{t['op'][:40]:40s} {t['self_cpu_ms_per_step']:12.1f} {100 * t['share']:6.1f}% {t['calls_per_step']:6d}")
    path = Path(args.out_dir) / f"profile_{args.model}_{args.tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
