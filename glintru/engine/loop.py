"""The training loop: ``fit`` (docs/architecture.md, "Engine entry point").

Per epoch: seed torch with ``(seed, epoch, rank)``, train on this rank's batches
(:mod:`glintru.engine.batching`), evaluate validation on this rank's users with exact all-reduced
sums (:mod:`glintru.engine.evaluate`), checkpoint on rank 0, call ``on_epoch_end`` on every rank,
then stop early on ``train.valid_metric`` (higher is better) after ``train.patience`` epochs
without improvement, or when ``train.max_time_s`` of training time is spent. Test metrics are
computed at the end with the best epoch's weights.

Determinism: model init is seeded by ``seed``; data order by ``(seed, epoch)`` and dropout by
``torch.manual_seed`` of a function of ``(seed, epoch, rank)`` at every epoch start, so resuming from
a checkpoint (model + Adam state) continues exactly like an uninterrupted run, with no RNG state saved.
With several data-parallel ranks each rank's loss is its own mean over its target positions times
its share of the global batch's targets (``batching.step_weights``), so the gradient DDP averages
is the one-process gradient of the global batch under either ``target_weight``.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from glintru.config import RunConfig, TrainConfig, build_config, values_before_new_keys
from glintru.data.dataset import PreparedDataset
from glintru.engine.batching import global_batches, make_batch, shard, step_weights, training_samples
from glintru.engine.checkpoint import FORMAT_VERSION, load_checkpoint, save_best, save_checkpoint
from glintru.engine.loss import make_sequence_loss
from glintru.engine.optim import make_optimizer
from glintru.engine.precision import autocast_for, bf16_reason, emulated_bf16_warning, resolve_precision
from glintru.errors import UserError

# Settings a resumed run may change: they do not affect the numbers of the epochs already done.
DIAG_SAMPLES = 256  # training windows the per-epoch model diagnostics are computed on
RESUMABLE_CHANGES = frozenset({"max_epochs", "patience", "max_time_s", "eval_batch_size", "compile"})


@dataclass
class FitResult:
    """What :func:`fit` returns. ``best_metrics``: validation metrics of ``best_epoch``."""

    best_epoch: int
    best_metrics: dict[str, float]
    test_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    train_s: float = 0.0
    stopped: str = ""  # "max_epochs" | "patience" | "max_time_s"
    # ``also_select``: {metric: {"best_epoch": int, "valid": {...}, "test": {...}}}, each metric's own best epoch
    selected: dict[str, dict[str, Any]] = field(default_factory=dict)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Torch seed for the dropout masks of ``epoch`` (1-based) on ``rank``: a pure function."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(getattr(model, "module", None), nn.Module) else model


def _state_on_cpu(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().cpu().clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in state.items()}


class _Progress:
    """stderr output: an in-place bar while training when stderr is a TTY, one line per epoch."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.last = 0.0

    def step(self, epoch: int, done: int, total: int, loss: float, targets_per_s: float) -> None:
        now = time.perf_counter()
        if not self.tty or (now - self.last < 0.2 and done < total):
            return
        self.last = now
        width = 30
        fill = int(width * done / max(total, 1))
        sys.stderr.write(
            f"\repoch {epoch} [{'#' * fill}{'.' * (width - fill)}] {done}/{total} "
            f"loss {loss:.4f} {targets_per_s:,.0f} targets/s"
        )
        sys.stderr.flush()

    def epoch(self, metrics: dict[str, float], valid_metric: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write("\r\033[K")
        extra = [k for k in ("valid/full/ndcg@10", "valid/pop100/ndcg@10", valid_metric) if k in metrics]
        shown = " ".join(f"{k} {metrics[k]:.4f}" for k in dict.fromkeys(extra))
        offset = f"score offset {metrics['train/score_offset']:.3f} " if "train/score_offset" in metrics else ""
        print(
            f"epoch {int(metrics['epoch'])} loss {metrics['train/loss']:.4f} {offset}"
            f"{metrics['train/targets_per_s']:,.0f} targets/s {metrics['train/s']:.1f}s {shown}",
            file=sys.stderr,
            flush=True,
        )


def _catalogue_of(data: PreparedDataset) -> str | None:
    """The dataset's catalogue digest, stored with the weights; None when its item table cannot be
    read (training does not need it: only scoring with the weights later does)."""
    try:
        return data.catalogue_sha256()
    except UserError:
        return None


def check_resumable(run_cfg: RunConfig, checkpoint: Path) -> None:
    """The UserError :func:`fit` would raise for resuming ``checkpoint`` with ``run_cfg``, raised
    before anything is written (its ``config.json`` read, else the checkpoint itself)."""
    checkpoint = Path(checkpoint)
    sidecar = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "config.json"
    try:
        saved = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        saved = load_checkpoint(checkpoint)["config"]
    _check_resume_config(run_cfg, saved, checkpoint)


def _check_resume_config(run_cfg: RunConfig, saved: dict[str, Any], where: Path) -> None:
    now = run_cfg.to_flat()
    # a key newer than the checkpoint: its default matches, unless the old behaviour was another value
    was = {**build_config(run_cfg.model).to_flat(), **values_before_new_keys(saved), **saved}
    diff = sorted(k for k in set(now) | set(was) if now.get(k) != was.get(k) and k not in RESUMABLE_CHANGES)
    if diff:
        detail = ", ".join(f"{k}: {was.get(k)!r} -> {now.get(k)!r}" for k in diff)
        raise UserError(f"{where}: cannot resume with a different configuration ({detail})")


def fit(
    run_cfg: RunConfig,
    data: PreparedDataset,
    out_dir: Path,
    *,
    device: str | torch.device = "cpu",
    rank: int = 0,
    world_size: int = 1,
    wrap_model: Callable[[nn.Module], nn.Module] | None = None,
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    on_epoch_end: Callable[[dict[str, float], Path | None], None] | None = None,
    resume_from: Path | None = None,
    progress: bool = True,
    also_select: tuple[str, ...] = (),
) -> FitResult:
    """Train ``run_cfg`` on ``data``, evaluate, checkpoint into ``out_dir``; see the module docstring.

    ``wrap_model`` wraps the loss module (model + loss, e.g. with DDP) and may move it to its device.
    ``all_reduce_sum`` sums float64 tensors over ranks (exact metric and loss reduction).
    Rank 0 writes ``out_dir/checkpoints/epoch_NNNN/``, ``out_dir/best.pt``, ``out_dir/history.json``
    and, at the end, ``out_dir/metrics.json`` (best validation + test metrics, best_epoch, wall_s).
    ``wall_s`` and ``train_s`` add up every segment of a run resumed from its checkpoints (a checkpoint
    written before ``wall_s`` was kept counts its earlier segments' wall time as 0).
    ``also_select``: further validation metrics (e.g. ``valid/pop100/ndcg@10``) that each select
    their own best epoch, whose weights are tested at the end (``FitResult.selected``), so every
    protocol is reported at the epoch its own validation metric picks.
    """
    from glintru.engine.evaluate import evaluate, negatives_for
    from glintru.models import build_model

    t0 = time.perf_counter()
    device = torch.device(device)
    # "auto" precision is decided once here (training steps and evaluation use the decision); with
    # several ranks, bf16 only if every rank measured it fast, so no two ranks train differently
    precision = resolve_precision(run_cfg.train.precision, device)
    if run_cfg.train.precision == "auto" and world_size > 1 and all_reduce_sum is not None:
        votes = all_reduce_sum(torch.tensor([float(precision == "bf16")], dtype=torch.float64, device=device))
        precision = "bf16" if round(float(votes.item())) == world_size else "fp32"
    cfg = replace(run_cfg.train, precision=precision)
    out_dir = Path(out_dir)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    flat = run_cfg.to_flat()

    torch.manual_seed(cfg.seed)
    model = build_model(run_cfg, data.n_items).to(device)
    encoder = torch.compile(model) if cfg.compile else model
    seq_loss = make_sequence_loss(model, cfg, data.n_items, data.train_item_counts(), encoder=encoder)
    own = seq_loss.own_parameters()  # the loss's own parameters (gBCE's score offset) train with the model
    optimizer = make_optimizer(model, cfg, data.n_items, world_size, extra=own)
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"epoch": 0, "value": -math.inf, "metrics": {}}
    best_state: dict[str, Any] | None = None
    start_epoch, train_s, stopped = 1, 0.0, ""
    wall_before = 0.0  # wall time of the segments before a resume (checkpoints keep the running total)
    side = {m: {"epoch": 0, "value": -math.inf, "metrics": {}, "state": None}
            for m in dict.fromkeys(also_select) if m != cfg.valid_metric}
    catalogue = _catalogue_of(data)
    if resume_from is not None:
        ckpt = load_checkpoint(Path(resume_from), map_location=device)
        _check_resume_config(run_cfg, ckpt["config"], Path(resume_from))
        if ckpt.get("catalogue_sha256") not in (None, catalogue):
            raise UserError(f"{resume_from}: cannot resume on {data.path}: the checkpoint was trained on another "
                            "catalogue (other item ids at some indices)")
        model.load_state_dict(ckpt["model"])
        _load_loss_state(seq_loss, ckpt, Path(resume_from))
        optimizer.load_state_dict(ckpt["optimizer"])
        history = list(ckpt["history"])
        best = dict(ckpt["best"])
        best_state = _state_on_cpu(ckpt["best_model"] if ckpt.get("best_model") is not None else ckpt["model"])
        start_epoch = int(ckpt["epoch"]) + 1
        train_s = float(ckpt.get("train_s", 0.0))
        wall_before = float(ckpt.get("wall_s", 0.0))  # absent in checkpoints older than the key: 0
        stopped = _stop_reason(cfg, int(ckpt["epoch"]), int(best["epoch"]), train_s)  # limits may have changed
        for m, saved in (ckpt.get("also_best") or {}).items():
            if m in side:
                side[m] = dict(saved)

    loss_module: nn.Module = seq_loss if wrap_model is None else wrap_model(seq_loss)
    samples = training_samples(data, cfg.objective, cfg.max_len, cfg.window_overlap)
    if len(samples) == 0:
        raise UserError(f"{data.path}: no training samples (every user has fewer than 2 training items)")
    width = cfg.max_len if model.needs_full_window else None
    items = data.items
    negatives = negatives_for(data, "valid", cfg)
    meter = _Progress(progress and rank == 0)
    if meter.enabled and optimizer.sparse and cfg.embedding_update == "auto":
        print(f"item table: sparse updates (lazy Adam on the rows each step touches; embedding_update=auto, "
              f"{data.n_items:,} items, loss {cfg.loss}); embedding_update=dense keeps Adam", file=sys.stderr, flush=True)
    diag_batch = make_batch(items, samples, np.arange(min(DIAG_SAMPLES, len(samples))), width=width)["items"]
    if meter.enabled and run_cfg.train.precision == "auto":
        print(f"precision=auto: {cfg.precision} ({bf16_reason(device)}); precision=fp32 or bf16 forces one",
              file=sys.stderr, flush=True)
    slow_bf16 = emulated_bf16_warning(run_cfg.train.precision, device)
    if meter.enabled and slow_bf16:
        print(slow_bf16, file=sys.stderr, flush=True)

    epoch = start_epoch
    while not stopped and epoch <= cfg.max_epochs:
        torch.manual_seed(epoch_seed(cfg.seed, epoch, rank))
        every_rank = global_batches(samples, cfg.batch_size, seed=cfg.seed, epoch=epoch, world_size=world_size,
                                    max_samples=cfg.max_train_samples)
        batches = shard(every_rank, rank, world_size)
        weights = step_weights(samples, every_rank, cfg.target_weight, rank=rank, world_size=world_size)
        loss_module.train()
        t_epoch = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        n_targets = 0
        for step, idx in enumerate(batches, 1):
            batch = {k: v.to(device, non_blocking=True) for k, v in make_batch(items, samples, idx, width=width).items()}
            n = samples.n_targets(idx)
            with autocast_for(cfg.precision, device):
                loss = loss_module(batch)
            optimizer.zero_grad(set_to_none=True)
            (loss if weights is None else loss * float(weights[step - 1])).backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([*model.parameters(), *own], cfg.grad_clip)
            optimizer.step()
            loss_sum += loss.detach().double() * n
            n_targets += n
            if meter.tty:
                el = time.perf_counter() - t_epoch
                meter.step(epoch, step, len(batches), float(loss_sum) / n_targets, n_targets / max(el, 1e-9))
        epoch_s = time.perf_counter() - t_epoch
        train_s += epoch_s
        totals = torch.stack([loss_sum, torch.tensor(float(n_targets), dtype=torch.float64, device=device)])
        if all_reduce_sum is not None:
            reduced = all_reduce_sum(totals)
            totals = reduced if reduced is not None else totals
        totals = totals.cpu()
        metrics: dict[str, float] = {
            "epoch": float(epoch),
            "train/loss": float(totals[0] / totals[1]) if totals[1] > 0 else math.nan,
            "train/targets_per_s": float(totals[1]) / max(epoch_s, 1e-9),
            "train/s": epoch_s,
            **{f"train/{name}": float(v) for name, v in seq_loss.own_state().items()},
        }
        metrics.update(
            evaluate(model, data, "valid", cfg, negatives=negatives, rank=rank, world_size=world_size,
                     device=device, all_reduce_sum=all_reduce_sum)
        )
        metrics.update(_diagnostics(model, diag_batch, device))
        history.append(metrics)
        value = metrics[cfg.valid_metric]
        if value > best["value"]:
            best = {"epoch": epoch, "value": value, "metrics": dict(metrics)}
            best_state = _state_on_cpu(model.state_dict())
            if rank == 0:
                save_best(out_dir, best_state, flat, epoch, dict(metrics), catalogue)
        for m, sel in side.items():
            if metrics[m] > sel["value"]:
                side[m] = {"epoch": epoch, "value": metrics[m], "metrics": dict(metrics),
                           "state": _state_on_cpu(model.state_dict())}
        stopped = _stop_reason(cfg, epoch, best["epoch"], train_s)
        ckpt_dir = None
        if rank == 0:
            ckpt_dir = save_checkpoint(out_dir, {
                "format_version": FORMAT_VERSION, "epoch": epoch, "config": flat,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "loss": seq_loss.own_state(),
                "metrics": metrics, "history": history, "best": best,
                "best_model": None if best["epoch"] == epoch else best_state,
                "stopped": stopped, "train_s": train_s, "also_best": side,
                "wall_s": wall_before + time.perf_counter() - t0, "catalogue_sha256": catalogue,
            })
            _write_json(out_dir / "history.json", history)
        meter.epoch(metrics, cfg.valid_metric)
        if on_epoch_end is not None:
            on_epoch_end(dict(metrics), ckpt_dir)
        epoch += 1

    if best_state is None:  # resumed from a run that had already finished no epoch: nothing to test
        raise UserError(f"{out_dir}: no finished epoch to evaluate")
    model.load_state_dict(best_state)
    if rank == 0:  # also when resumed in a fresh directory (a Ray worker's) after the best epoch
        save_best(out_dir, best_state, flat, best["epoch"], dict(best["metrics"]), catalogue)
    test = evaluate(model, data, "test", cfg, negatives=negatives_for(data, "test", cfg), rank=rank,
                    world_size=world_size, device=device, all_reduce_sum=all_reduce_sum)
    selected = {}
    for m, sel in side.items():  # each further metric's own best epoch, tested with its weights
        model.load_state_dict(sel["state"])
        selected[m] = {
            "best_epoch": sel["epoch"],
            "valid": {k: v for k, v in sel["metrics"].items() if k.startswith("valid/")},
            "test": evaluate(model, data, "test", cfg, negatives=negatives_for(data, "test", cfg), rank=rank,
                             world_size=world_size, device=device, all_reduce_sum=all_reduce_sum),
        }
    if side:
        model.load_state_dict(best_state)
    wall_s = wall_before + time.perf_counter() - t0  # every segment of a resumed run
    result = FitResult(best["epoch"], {k: v for k, v in best["metrics"].items() if k.startswith("valid/")},
                       test, history, wall_s, train_s, stopped or "max_epochs", selected)
    if rank == 0:
        _write_json(out_dir / "metrics.json", final_metrics(result))
    return result


def _load_loss_state(seq_loss: nn.Module, ckpt: dict[str, Any], where: Path) -> None:
    """Restore the loss's own parameters from a checkpoint (absent in checkpoints older than the key:
    none)."""
    try:
        seq_loss.load_own_state(ckpt.get("loss") or {})
    except ValueError as e:
        raise UserError(f"{where}: cannot resume: {e}") from None


def _diagnostics(model: nn.Module, items: torch.Tensor, device: torch.device) -> dict[str, float]:
    """``diag/*`` values of models that have a ``diagnostics(items)`` method (GLINT-RU: its expert
    mix), computed in eval mode on a fixed batch of training windows; {} for other models."""
    probe = getattr(model, "diagnostics", None)
    if probe is None:
        return {}
    was_training = model.training
    model.eval()
    try:
        return {f"diag/{k}": v for k, v in probe(items.to(device)).items()}
    finally:
        model.train(was_training)


def _stop_reason(cfg: TrainConfig, epoch: int, best_epoch: int, train_s: float) -> str:
    """Why training ends after ``epoch`` ("" if it goes on): patience, time budget or epoch limit."""
    if cfg.patience and epoch - best_epoch >= cfg.patience:
        return "patience"
    if cfg.max_time_s and train_s >= cfg.max_time_s:
        return "max_time_s"
    if epoch >= cfg.max_epochs:
        return "max_epochs"
    return ""


def final_metrics(result: FitResult) -> dict[str, float]:
    """The content of ``metrics.json``: best validation metrics, test metrics, best_epoch, wall_s, train_s."""
    return {
        **result.best_metrics, **result.test_metrics,
        "best_epoch": result.best_epoch, "epochs": len(result.history),
        "wall_s": round(result.wall_s, 3), "train_s": round(result.train_s, 3),
    }


def _write_json(path: Path, obj: Any) -> None:
    from glintru.storage import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")
