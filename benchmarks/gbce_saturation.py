"""Does gBCE saturate GLINT-RU's GRU expert, and which setting keeps it out of saturation? The same
GLINT-RU trained a few epochs per variant (each a set of config overrides on one base), one run.

    python benchmarks/gbce_saturation.py --data benchmarks/work/data/ml-1m \\
        --config benchmarks/tuned/amazon-beauty__glintru.yaml --set max_len=200 --set window_overlap=150 \\
        --set precision=bf16 --epochs 1 --variant loss=ce --variant loss=gbce \\
        --variant loss=gbce,grad_clip=1.0 --out benchmarks/results/gbce_saturation.json

After every epoch, on a fixed batch of training windows (eval mode): the share of the GRU's hidden
units at |h| > 0.99 over real positions (1.0 = every unit pinned at +-1, where a GRU passes almost
no gradient), the mean norm of the GRU's input and of the expert's output, the training loss and
validation full NDCG@10; and, at each window's last position, how far the model has collapsed onto
one shared offset: the mean pairwise cosine of the users' final hidden states (1.0 = one vector for
everyone), the share of the item embeddings' energy in their common (mean) vector, and the mean
score over the catalogue (BCE-type losses are not shift-invariant: lowering every score together
lowers all negative terms at once).

A variant may also hold ``bench.logit_bias=1``: a learnable scalar added to every score in the
gBCE loss only (a common shift changes no ranking, so evaluation is unaffected), starting at
``bench.logit_bias_init`` (default 0). If the collapse is the model buying that common shift with
its hidden state, the scalar should take it over. (Adam moves one scalar by about the learning rate
per step, so from 0 it cannot reach a shift of several units within an epoch; a start near the
shift the collapsed model settles at tests the same idea without that limit.) The engine now has
that scalar (``gbce_offset=true``, started at log(1 / (n_items - 1))); this benchmark runs the
published gBCE (``gbce_offset=false``) unless a variant or ``--set`` says otherwise, as its recorded
results were measured, so ``--variant loss=gbce,gbce_offset=true`` is the engine's default gBCE.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchinfo import finish, machine, print_table

PROBE_WINDOWS = 256


def saturation(model: Any, items: Any) -> dict[str, float]:
    """GRU saturation and norms of GLINT-RU's GRU expert on ``items`` [B, N], and the collapse probes."""
    import torch

    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            x, mask = model._embed(items)
            real = items != 0
            c, h = model.gru_expert.recurrent(x, mask)
            y = model.gru_expert(x, mask)
            last = model.last_hidden(items, real.sum(1)).float()  # [B, d]
            emb = model.item_embeddings().detach().float()[1:]
            unit = torch.nn.functional.normalize(last, dim=1)
            off_diagonal = ~torch.eye(len(last), dtype=torch.bool)
            common = emb.mean(0)
            scores = last @ emb.T
    finally:
        model.train(was)
    return {"gru_saturated": float((h[real].abs() > 0.99).float().mean()),
            "gru_in_norm": float(c[real].norm(dim=-1).mean()), "gru_out_norm": float(y[real].norm(dim=-1).mean()),
            "hidden_pairwise_cos": float((unit @ unit.T)[off_diagonal].mean()),
            "item_common_share": float(common.norm() ** 2 / (emb.norm(dim=1) ** 2).mean()),
            "mean_score": float(scores.mean()), "score_std_per_user": float(scores.std(1).mean())}


def parse_variant(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``K=V,K=V``: (config overrides, benchmark options ``bench.*``)."""
    from glintru.config import parse_set_args

    pairs = [kv for kv in text.split(",") if kv]
    bench = parse_set_args([kv[len("bench."):] for kv in pairs if kv.startswith("bench.")])
    unknown = set(bench) - {"logit_bias", "logit_bias_init"}
    if unknown:
        raise SystemExit(f"--variant {text}: unknown benchmark option(s) {', '.join('bench.' + k for k in sorted(unknown))} "
                         "(known: bench.logit_bias, bench.logit_bias_init)")
    return parse_set_args([kv for kv in pairs if not kv.startswith("bench.")]), bench


def gbce_with_bias(original: Any, bias: Any) -> Any:
    """``gbce_loss`` with the learnable scalar ``bias`` added to every score (positive and negatives):
    an extra feature 1 on the hidden states against an extra column ``bias`` on the item table."""
    import torch

    def loss(h, item_emb, targets, negatives, n_items, t, sparse=False, neg_table=None):
        h1 = torch.cat([h.float(), torch.ones_like(h[..., :1], dtype=torch.float32)], -1)
        table = torch.cat([item_emb.float(), bias.expand(item_emb.shape[0], 1)], -1)
        return original(h1, table, targets, negatives, n_items, t, sparse=False)

    return loss


def run_variant(base: dict[str, Any], variant: str, data_dir: str, epochs: int) -> dict[str, Any]:
    from glintru.config import build_config
    from glintru.data.dataset import load_prepared
    from glintru.engine import fit

    overrides, bench = parse_variant(variant)
    over = {"gbce_offset": False, **base, **overrides, "max_epochs": epochs, "patience": epochs + 1}
    if bench.get("logit_bias") and over["gbce_offset"]:
        raise SystemExit(f"--variant {variant}: bench.logit_bias is a second offset on top of gbce_offset=true; "
                         "use one of them")
    cfg = build_config("glintru", over)
    data = load_prepared(data_dir)
    probe_items = probe_windows(cfg.train, data)
    epochs_out: list[dict[str, float]] = []
    holder: dict[str, Any] = {}

    import torch

    from glintru.engine import loop
    from glintru.engine import loss as loss_module

    original, original_optimizer, original_gbce = loop.make_sequence_loss, loop.make_optimizer, loss_module.gbce_loss

    def capture(model, *a, **kw):  # the engine's model, to probe it after each epoch
        holder["model"] = model
        return original(model, *a, **kw)

    def optimizer_with_bias(model, *a, **kw):  # the bias joins the model before its optimiser is made
        init = float(bench.get("logit_bias_init", 0.0))
        model.register_parameter("bench_logit_bias", torch.nn.Parameter(torch.full((1,), init)))
        loss_module.gbce_loss = gbce_with_bias(original_gbce, model.bench_logit_bias)
        return original_optimizer(model, *a, **kw)

    def on_epoch_end(metrics: dict[str, float], _ckpt: Any) -> None:
        bias = getattr(holder["model"], "bench_logit_bias", None)
        epochs_out.append({"epoch": metrics["epoch"], "train_loss": metrics["train/loss"],
                           "valid_ndcg10": metrics["valid/full/ndcg@10"], **saturation(holder["model"], probe_items),
                           **({"logit_bias": float(bias.detach())} if bias is not None else {}),
                           **({"score_offset": metrics["train/score_offset"]} if "train/score_offset" in metrics else {})})

    loop.make_sequence_loss = capture
    if bench.get("logit_bias"):
        loop.make_optimizer = optimizer_with_bias
    try:
        with tempfile.TemporaryDirectory(prefix="gbce-saturation-") as tmp:
            result = fit(cfg, data, Path(tmp), progress=False, on_epoch_end=on_epoch_end)
    finally:
        loop.make_sequence_loss, loop.make_optimizer, loss_module.gbce_loss = original, original_optimizer, original_gbce
    return {"variant": variant, "epochs": epochs_out, "train_s": round(result.train_s, 1)}


def probe_windows(cfg: Any, data: Any) -> Any:
    """The first :data:`PROBE_WINDOWS` training windows of ``data`` under train config ``cfg``."""
    import numpy as np

    from glintru.engine.batching import make_batch, training_samples

    samples = training_samples(data, cfg.objective, cfg.max_len, cfg.window_overlap)
    return make_batch(data.items, samples, np.arange(min(PROBE_WINDOWS, len(samples))))["items"]


def probe_run(base: dict[str, Any], run_dir: str, data_dir: str) -> dict[str, Any]:
    """The probes on a trained run's best weights (windows as the base configuration cuts them)."""
    from glintru.config import build_config
    from glintru.data.dataset import load_prepared
    from glintru.loading import load_model

    loaded = load_model(run_dir)
    items = probe_windows(build_config("glintru", base).train, load_prepared(data_dir))
    return {"run": Path(run_dir).name, **saturation(loaded.model, items)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a prepared dataset directory")
    ap.add_argument("--config", help="a flat config file for GLINT-RU (e.g. a tuned one); --set goes on top")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides for every variant")
    ap.add_argument("--variant", action="append", default=[], metavar="K=V[,K=V...]",
                    help="one variant's overrides on top of the base (repeat for each variant)")
    ap.add_argument("--probe-run", action="append", default=[], metavar="RUN_DIR",
                    help="also probe a trained run's best weights (a glintru run directory; repeatable)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/gbce_saturation.json")
    args = ap.parse_args(argv)

    import torch

    from glintru.config import load_config_file, parse_set_args
    from glintru.storage import atomic_write_text

    torch.set_num_threads(args.threads)
    info = machine(args.threads)
    base = load_config_file(args.config)[1] if args.config else {}
    base.update(parse_set_args(args.set))
    base.pop("model", None)
    if not args.variant and not args.probe_run:
        ap.error("give at least one --variant or --probe-run")
    trained = [probe_run(base, run_dir, args.data) for run_dir in args.probe_run]
    if trained:
        print_table([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in trained], list(trained[0]))
    rows = []
    for v in args.variant:
        rows.append(run_variant(base, v, args.data, args.epochs))
        print(f"{v}: {rows[-1]['epochs'][-1]}", file=sys.stderr)
    out = {"benchmark": "gbce_saturation", "data": Path(args.data).name, "config": args.config, "set": args.set,
           "epochs": args.epochs, "probe_windows": PROBE_WINDOWS, "machine": finish(info), "trained_runs": trained,
           "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps(out, indent=1) + "\n")
    if not rows:
        return 0
    table = [{"variant": r["variant"], **{k: round(v, 4) for k, v in r["epochs"][-1].items()}, "train s": r["train_s"]}
             for r in rows]
    print_table(table, list(table[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
