"""Checkpoint directories ``RUN_DIR/checkpoints/epoch_NNNN/{checkpoint.pt, config.json}`` and ``best.pt``.

A checkpoint holds only tensors, dicts, lists, tuples, str, int, float, bool and None, so it loads
with ``torch.load(weights_only=True)``. Keys of ``checkpoint.pt``:
``format_version``, ``epoch`` (1-based, last finished), ``config`` (``RunConfig.to_flat()``),
``model`` and ``optimizer`` (state dicts), ``metrics`` (this epoch's), ``history`` (all epochs),
``best`` (``{"epoch", "value", "metrics"}``), ``best_model`` (state dict of the best epoch, or
None when that is this epoch), ``stopped`` (why training ended, "" while it goes on), ``train_s``,
``catalogue_sha256`` (the training dataset's item ids, :func:`glintru.data.dataset.catalogue_sha256`).
Directories are written under a temporary name and renamed, so a crash never leaves a
half-written ``epoch_NNNN``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from glintru.errors import UserError

FORMAT_VERSION = 1
CHECKPOINT_FILE = "checkpoint.pt"
REQUIRED_KEYS = ("format_version", "epoch", "config", "model", "optimizer", "metrics", "history", "best")
_EPOCH_DIR = re.compile(r"epoch_(\d{4,})")


def epoch_dir(out_dir: Path, epoch: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"epoch_{epoch:04d}"


def save_checkpoint(out_dir: Path, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as the checkpoint of ``state["epoch"]``; keep the newest ``keep`` epochs."""
    from glintru.storage import write_error

    final = epoch_dir(out_dir, int(state["epoch"]))
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        torch.save(state, tmp / CHECKPOINT_FILE)
        (tmp / "config.json").write_text(json.dumps(state["config"], indent=1, sort_keys=True) + "\n", encoding="utf-8")
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk stays as free as it was
        raise write_error(final / CHECKPOINT_FILE, exc) from None
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _EPOCH_DIR.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint directory (or its ``checkpoint.pt``); a clear UserError if it is unusable."""
    path = Path(path)
    file = path / CHECKPOINT_FILE if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{file}: checkpoint not found")
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- arbitrary bytes fail the weights-only unpickler in many ways
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{file}: corrupt or truncated checkpoint ({msg}); use an earlier epoch's checkpoint") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
        raise UserError(f"{file}: not a glintru checkpoint (missing {', '.join(missing)})")
    if state["format_version"] != FORMAT_VERSION:
        raise UserError(f"{file}: checkpoint format {state['format_version']} is not supported (expected {FORMAT_VERSION})")
    return state


def save_best(out_dir: Path, model_state: dict[str, Any], config: dict[str, Any], epoch: int, metrics: dict,
              catalogue_sha256: str | None = None) -> Path:
    """``out_dir/best.pt``: ``{"model", "config", "epoch", "metrics", "catalogue_sha256"}``
    (weights_only-loadable; the last: the training dataset's item ids, see
    :func:`glintru.data.dataset.catalogue_sha256`, or None)."""
    from glintru.storage import atomic_torch_save

    path = Path(out_dir) / "best.pt"
    atomic_torch_save({"model": model_state, "config": config, "epoch": epoch, "metrics": metrics,
                       "catalogue_sha256": catalogue_sha256}, path)
    return path
