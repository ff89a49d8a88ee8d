"""Why gBCE draws its negatives per sequence: the same GLINT-RU trained with gBCE for a few epochs
with four ways of giving its rows negatives, one run, one table.

    python benchmarks/gbce_negatives.py --data benchmarks/work/data/amazon-beauty-54k \\
        --epochs 1 --threads 1 --out benchmarks/results/gbce_negatives.json

The variants (M negatives, B sequences in a batch, every position of a sequence shares its set):

- ``per_sequence``: each sequence its own M uniform draws (what the engine does);
- ``batch``: one set of M for the whole batch, the form a sampled softmax uses;
- ``batch_item_grad_over_B``: the batch's set, with the gradient that reaches the negatives' item
  embeddings divided by B (the loss's value and the hidden states' gradient unchanged);
- ``per_sequence_item_grad_times_B``: per-sequence sets, with that gradient multiplied by B.

Under a batch-wide set each drawn item is a negative of every row of the batch, so the gradient
that pushes its embedding down is a sum over B sequences' rows, while a target's embedding is
pulled up by its own few rows (weighted by gBCE's beta, 0.25 at t = 0.75). The two rescaled
variants move only that ratio: if the batch form fails through it, dividing by B repairs the batch
form and multiplying by B breaks the per-sequence form, while the hidden states see the same
negatives as before. Each run records validation NDCG@10 after every epoch and, every
``--probe-every`` steps, the mean score of the batch's targets and of its negatives.

It studies the published gBCE, without the engine's learnable score offset (``gbce_offset=false``
unless ``--set gbce_offset=true``), as its recorded results were measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchinfo import finish, machine, print_table

VARIANTS = ("per_sequence", "batch", "batch_item_grad_over_B", "per_sequence_item_grad_times_B")


def scale_grad(x: Any, s: float) -> Any:
    """``x`` in the forward pass; its gradient multiplied by ``s`` in the backward pass."""
    return x if s == 1.0 else x * s + x.detach() * (1.0 - s)


def patched_forward(variant: str, probes: list[dict[str, float]], every: int):
    """A ``SequenceLoss.forward`` for the gBCE branch that draws negatives as ``variant`` says."""
    import torch

    from glintru.engine.loss import gbce_loss

    step = [0]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items, targets = batch["items"], batch["targets"]  # [B, N], [B, N]
        h = self.encoder(items)  # [B, N, d]
        emb = self.model.item_embeddings()
        b, m = len(items), self.num_negatives
        if variant.startswith("batch"):
            negatives = self.sampler.draw(m, h.device).view(1, m).expand(b, m)
        else:
            negatives = self.sampler.draw(b * m, h.device).view(b, m)
        scale = {"batch_item_grad_over_B": 1.0 / b, "per_sequence_item_grad_times_B": float(b)}.get(variant, 1.0)
        loss = gbce_loss(h, emb, targets, negatives, self.sampler.n_items, self.gbce_t,
                         neg_table=scale_grad(emb, scale), offset=self.score_offset)
        if step[0] % every == 0:
            with torch.no_grad():
                real = targets > 0
                hf, e = h.float(), emb.float()
                pos = (hf * e[targets]).sum(-1)[real]
                neg = torch.bmm(hf, e[negatives].transpose(1, 2))[real]
                probes.append({"step": step[0], "loss": float(loss), "pos_score": float(pos.mean()),
                               "neg_score": float(neg.mean())})
        step[0] += 1
        return loss

    return forward


def run_variant(variant: str, data_dir: str, epochs: int, seed: int, every: int,
                overrides: dict[str, Any]) -> dict[str, Any]:
    from glintru.config import build_config
    from glintru.data.dataset import load_prepared
    from glintru.engine import fit
    from glintru.engine import loss as loss_mod

    cfg = build_config("glintru", {"loss": "gbce", "gbce_offset": False, "max_epochs": epochs, "seed": seed,
                                   "patience": epochs + 1, **overrides})
    data = load_prepared(data_dir)
    probes: list[dict[str, float]] = []
    original = loss_mod.SequenceLoss.forward
    loss_mod.SequenceLoss.forward = patched_forward(variant, probes, every)
    try:
        with tempfile.TemporaryDirectory(prefix="gbce-negatives-") as tmp:
            t0 = time.perf_counter()
            result = fit(cfg, data, Path(tmp), progress=False)
    finally:
        loss_mod.SequenceLoss.forward = original
    return {
        "variant": variant, "epochs": len(result.history), "train_s": round(result.train_s, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "valid_ndcg10_per_epoch": [h["valid/full/ndcg@10"] for h in result.history],
        "test/full/ndcg@10": result.test_metrics["test/full/ndcg@10"],
        "test/full/hr@10": result.test_metrics["test/full/hr@10"], "probes": probes,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a prepared dataset directory")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--probe-every", type=int, default=50, help="steps between score probes")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config overrides for every variant (e.g. precision=bf16)")
    ap.add_argument("--out", default="benchmarks/results/gbce_negatives.json")
    args = ap.parse_args(argv)

    import torch

    from glintru.config import parse_set_args
    from glintru.storage import atomic_write_text

    torch.set_num_threads(args.threads)
    info = machine(args.threads)
    overrides = parse_set_args(args.set)
    rows = []
    for v in args.variants:
        rows.append(run_variant(v, args.data, args.epochs, args.seed, args.probe_every, overrides))
        last = rows[-1]["probes"][-1]
        print(f"{v}: valid NDCG@10 {rows[-1]['valid_ndcg10_per_epoch']}, last probe {last}", file=sys.stderr)
    out = {"benchmark": "gbce_negatives", "data": Path(args.data).name, "epochs": args.epochs, "seed": args.seed,
           "overrides": overrides, "machine": finish(info), "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps(out, indent=1) + "\n")
    table = [{"variant": r["variant"], "valid ndcg@10 %": round(100 * r["valid_ndcg10_per_epoch"][-1], 3),
              "test ndcg@10 %": round(100 * r["test/full/ndcg@10"], 3),
              "target score": round(r["probes"][-1]["pos_score"], 2),
              "negative score": round(r["probes"][-1]["neg_score"], 2), "train s": r["train_s"]} for r in rows]
    print_table(table, list(table[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
