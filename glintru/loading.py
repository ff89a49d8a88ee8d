"""The one model loader: a checkpoint file, a run directory or an MLflow model URI -> model + window.

Used by ``glintru recommend``, the MLflow registry's pyfunc model (:mod:`glintru.serving`), the
reproduction benchmark and the tests. Every source is read without unpickling code:

* a checkpoint file (``best.pt`` or ``checkpoints/epoch_NNNN/checkpoint.pt``) with
  ``torch.load(weights_only=True)``; the flat config stored in it (or in ``config.json`` beside it)
  rebuilds the model;
* a run directory of ``glintru train``: its ``best.pt``, else its latest epoch checkpoint;
* an MLflow model URI (``models:/NAME/VERSION``, ``models:/NAME@champion``, ``runs:/ID/model``) of
  a model registered by ``glintru tune``: a "models from code" pyfunc whose loader is this module,
  loaded with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``.

Every failure a user can cause is a :class:`~glintru.errors.UserError` naming the source.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glintru.config import config_from_flat
from glintru.errors import UserError, require_positive

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to score: in eval mode on the CPU, with the window length it was trained with."""

    model: nn.Module
    max_len: int
    n_items: int
    source: str
    catalogue_sha256: str | None = None  # the training dataset's item ids (glintru.data.dataset.catalogue_sha256)


def is_mlflow_uri(spec: str) -> bool:
    return spec.startswith(MLFLOW_SCHEMES)


def load_model(spec: str | Path, *, max_len: int | None = None, tracking_uri: str | None = None) -> LoadedModel:
    """Load a trained model from a checkpoint file, a run directory or an MLflow model URI.

    ``max_len`` scores windows of the last ``max_len`` items instead of the training window
    (:func:`with_window`). Every failure a user can cause is a :class:`UserError` naming the source.
    """
    text = str(spec)
    if is_mlflow_uri(text):
        return _load_mlflow(text, max_len, tracking_uri)
    path = Path(text)
    if path.is_dir():
        return _load_run_dir(path, max_len)
    if path.is_file():
        return load_checkpoint_file(path, max_len=max_len)
    raise UserError(
        f"--model {text}: no such file or directory (expected a checkpoint file, a run directory or an "
        f"MLflow model URI starting with {', '.join(MLFLOW_SCHEMES)})"
    )


def _load_run_dir(run_dir: Path, max_len: int | None) -> LoadedModel:
    best = run_dir / "best.pt"
    if best.is_file():
        return load_checkpoint_file(best, max_len=max_len)
    from glintru.engine.checkpoint import CHECKPOINT_FILE, list_checkpoints

    found = list_checkpoints(run_dir)
    if not found:
        raise UserError(f"--model {run_dir}: no best.pt and no checkpoints/epoch_*/checkpoint.pt; is it a glintru run directory?")
    return load_checkpoint_file(found[-1] / CHECKPOINT_FILE, max_len=max_len)


def _checkpoint_parts(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """``(state_dict, flat config or None)`` of a loaded checkpoint: the engine writes
    ``{"model": state_dict, "config": flat config, ...}`` (``best.pt`` and epoch checkpoints)."""
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a glintru checkpoint (expected a dict, got {type(obj).__name__})")
    state = obj.get("model")
    if not isinstance(state, dict):
        raise UserError(f"{path}: no model weights in the checkpoint (no 'model' state dict); is it a glintru checkpoint?")
    flat = obj.get("config") if isinstance(obj.get("config"), dict) else None
    return state, flat


def _sidecar_config(path: Path) -> dict[str, Any] | None:
    """``config.json`` next to the checkpoint, or in the run directory above ``checkpoints/``."""
    for cand in (path.parent / "config.json", path.parent.parent.parent / "config.json"):
        if cand.is_file():
            try:
                data = json.loads(cand.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UserError(f"{cand}: not a valid JSON config ({exc})") from None
            if isinstance(data, dict):
                return data
    return None


def load_checkpoint_file(path: str | Path, *, max_len: int | None = None) -> LoadedModel:
    """Build a model from a checkpoint file read with ``torch.load(weights_only=True)``."""
    from glintru.models import build_model

    p = Path(path)
    try:
        with warnings.catch_warnings():  # garbage input makes the unpickler warn before it fails
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{p}: checkpoint file not found") from None
    except Exception as exc:  # noqa: BLE001 -- arbitrary bytes fail the unpickler in many ways
        # Truncated or corrupt zip: RuntimeError/EOFError; a pickle holding anything but tensors and
        # plain containers (weights_only refuses to build it): UnpicklingError; other files (a CSV
        # given as --model): IndexError, UnicodeDecodeError, ... from the weights-only unpickler.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty file"
        raise UserError(f"{p}: cannot read the checkpoint (corrupt, truncated or not a weights-only torch file): {first}") from None
    state, flat = _checkpoint_parts(obj, p)
    flat = flat or _sidecar_config(p)
    if flat is None:
        raise UserError(f"{p}: the checkpoint holds no config and there is no config.json beside it; cannot rebuild the model")
    run_cfg = config_from_flat(flat, source=f"{p}: config")
    table = state.get("item_embedding.weight")  # [n_items + 1, d], row 0 = padding (every model)
    if not isinstance(table, torch.Tensor) or table.dim() != 2:
        raise UserError(f"{p}: cannot tell the catalogue size (no item_embedding.weight in the weights)")
    n_items = int(table.shape[0]) - 1
    model = build_model(run_cfg, int(n_items))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{p}: the weights do not fit a '{run_cfg.model}' model with this config: {first}") from None
    model.eval()
    digest = obj.get("catalogue_sha256")
    return with_window(LoadedModel(model=model, max_len=run_cfg.train.max_len, n_items=int(n_items), source=str(p),
                                   catalogue_sha256=digest if isinstance(digest, str) else None), max_len)


def with_window(loaded: LoadedModel, max_len: int | None) -> LoadedModel:
    """``loaded`` scoring windows of the last ``max_len`` items instead of its training window
    (None: unchanged). The model keeps the shape it was trained with; a model with learned positions
    (the SASRecs) has none beyond its training window, so a longer window is a UserError."""
    if max_len is None:
        return loaded
    require_positive(("--max-len", max_len))
    positions = getattr(loaded.model, "position_embedding", None)
    if isinstance(positions, nn.Embedding) and max_len > positions.num_embeddings:
        raise UserError(f"--max-len {max_len}: {loaded.source} learned positions for windows of at most "
                        f"{positions.num_embeddings} items; give --max-len <= {positions.num_embeddings}")
    return replace(loaded, max_len=int(max_len))


def _load_mlflow(uri: str, max_len: int | None, tracking_uri: str | None) -> LoadedModel:
    """A model registered by ``glintru tune`` (an MLflow "models from code" pyfunc holding the
    weights-only ``best.pt``): loaded with MLflow's pickle deserialisation switched off, so nothing
    but the project's own code runs; the window comes from the checkpoint's config."""
    import mlflow
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    saved = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as exc:
        raise UserError(f"--model {uri}: cannot load the MLflow model: {str(exc).strip().splitlines()[0]}") from None
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", None)
        else:
            os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = saved
    try:
        inner = pyfunc.unwrap_python_model()
    except MlflowException:
        inner = None
    loaded = getattr(inner, "loaded", None)
    if not isinstance(loaded, LoadedModel):
        raise UserError(f"--model {uri}: not a model registered by glintru (expected its pyfunc recommender)")
    return with_window(replace(loaded, source=uri), max_len)
