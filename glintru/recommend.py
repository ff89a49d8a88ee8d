"""Batch top-K recommendations for every user of a prepared dataset (``glintru recommend``).

Each user's input is the last ``max_len`` items of their *whole* history (training, validation and
test items: at serving time everything is known), scored exactly as the engine scores
(docs/architecture.md): ``scores = model.last_hidden(window) @ model.item_embeddings()[1:].T``,
column ``j`` = item index ``j + 1``. Items the user has already interacted with are excluded by
default (their score becomes ``-inf``); a user who has seen all but fewer than ``k`` items gets a
shorter list. Ties are broken by :func:`torch.topk` (unspecified order among equal scores).

Scale-out: the users of ``sequences.parquet`` are read as a Ray Dataset and scored with
``map_batches`` by a pool of actors (:class:`RecommendActor`), each of which builds the model once
from an object-store copy of the weights and keeps it on its CPU or GPU. Batches come back in user
order and are streamed by the driver into one parquet file, written to a temporary name and renamed,
so ``--out`` is either the complete result or absent.

Model sources (:func:`load_model`):

* a checkpoint file (``best.pt`` or ``checkpoints/epoch_NNNN/checkpoint.pt``): read with
  ``torch.load(weights_only=True)``, which cannot execute code; the flat config stored in it (or in
  ``config.json`` next to it) rebuilds the model;
* a run directory of ``glintru train``: its ``best.pt``, else its latest epoch checkpoint;
* an MLflow model URI (``models:/name/version``, ``runs:/<run id>/model``): loaded with
  ``mlflow.pytorch.load_model``, which *unpickles* the model. Only load MLflow models from a
  tracking server you trust.

Output parquet schema: ``user_id: string`` (original id), ``item_ids: list<string>`` (original item
ids, best first), ``scores: list<float32>``; one row per user, in the order of ``sequences.parquet``.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from glintru.config import config_from_flat
from glintru.engine.scoring import history_mask_coords, score_blocks
from glintru.errors import UserError

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
CHECKPOINT_STATE_KEYS = ("model", "model_state", "state_dict")
CHECKPOINT_CONFIG_KEYS = ("config", "flat_config")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to score: in eval mode on the CPU, with the window length it was trained with."""

    model: nn.Module
    max_len: int
    n_items: int
    source: str


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def is_mlflow_uri(spec: str) -> bool:
    return spec.startswith(MLFLOW_SCHEMES)


def load_model(spec: str | Path, *, max_len: int | None = None, tracking_uri: str | None = None) -> LoadedModel:
    """Load a trained model from a checkpoint file, a run directory or an MLflow model URI.

    ``max_len`` overrides the window length (needed only for an MLflow model whose run has no
    ``max_len`` param). Every failure a user can cause is a :class:`UserError` naming the source.
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


def _latest_epoch_checkpoint(run_dir: Path) -> Path | None:
    epochs = sorted((run_dir / "checkpoints").glob("epoch_*/checkpoint.pt"))
    return epochs[-1] if epochs else None


def _load_run_dir(run_dir: Path, max_len: int | None) -> LoadedModel:
    best = run_dir / "best.pt"
    if best.is_file():
        return load_checkpoint_file(best, max_len=max_len)
    latest = _latest_epoch_checkpoint(run_dir)
    if latest is None:
        raise UserError(f"--model {run_dir}: no best.pt and no checkpoints/epoch_*/checkpoint.pt; is it a glintru run directory?")
    return load_checkpoint_file(latest, max_len=max_len)


def _strip_prefixes(state: dict[str, Any]) -> dict[str, Any]:
    """Drop the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes a wrapper adds."""
    out = dict(state)
    for prefix in ("module.", "_orig_mod."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def _checkpoint_parts(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """``(state_dict, flat config or None)`` of a loaded checkpoint object."""
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a glintru checkpoint (expected a dict, got {type(obj).__name__})")
    state = next((obj[k] for k in CHECKPOINT_STATE_KEYS if isinstance(obj.get(k), dict)), None)
    if state is None:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            state = obj  # a bare state_dict
        else:
            raise UserError(f"{path}: no model weights in the checkpoint (looked for keys {', '.join(CHECKPOINT_STATE_KEYS)})")
    flat = next((obj[k] for k in CHECKPOINT_CONFIG_KEYS if isinstance(obj.get(k), dict)), None)
    return _strip_prefixes(state), flat


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


def _n_items_from_state(state: dict[str, torch.Tensor]) -> int | None:
    """Catalogue size from the item embedding table ``[n_items + 1, d]`` (row 0 = padding)."""
    for key, value in state.items():
        if re.search(r"(^|\.)item_embedding\.weight$", key) and isinstance(value, torch.Tensor) and value.dim() == 2:
            return int(value.shape[0]) - 1
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
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        # Truncated or corrupt zip: RuntimeError/EOFError; garbage, or a pickle holding anything but
        # tensors and plain containers (weights_only refuses to build it): UnpicklingError.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty file"
        raise UserError(f"{p}: cannot read the checkpoint (corrupt, truncated or not a weights-only torch file): {first}") from None
    state, flat = _checkpoint_parts(obj, p)
    flat = flat or _sidecar_config(p)
    if flat is None:
        raise UserError(f"{p}: the checkpoint holds no config and there is no config.json beside it; cannot rebuild the model")
    if max_len is not None:
        flat = {**flat, "max_len": max_len}
    run_cfg = config_from_flat(flat, source=f"{p}: config")
    n_items = obj.get("n_items") if isinstance(obj.get("n_items"), int) else _n_items_from_state(state)
    if n_items is None:
        raise UserError(f"{p}: cannot tell the catalogue size (no n_items and no item_embedding.weight)")
    model = build_model(run_cfg, int(n_items))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"{p}: the weights do not fit a '{run_cfg.model}' model with this config: {first}") from None
    model.eval()
    return LoadedModel(model=model, max_len=run_cfg.train.max_len, n_items=int(n_items), source=str(p))


def _load_mlflow(uri: str, max_len: int | None, tracking_uri: str | None) -> LoadedModel:
    """``mlflow.pytorch.load_model`` (pickle: trusted stores only); ``max_len`` from the run's params."""
    import mlflow
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        model = mlflow.pytorch.load_model(uri, map_location="cpu")
    except (MlflowException, OSError) as exc:
        raise UserError(f"--model {uri}: cannot load the MLflow model: {str(exc).splitlines()[0]}") from None
    if not isinstance(model, nn.Module) or not hasattr(model, "item_embeddings") or not hasattr(model, "last_hidden"):
        raise UserError(f"--model {uri}: not a glintru sequential recommender (got {type(model).__name__})")
    if max_len is None:
        try:
            run_id = mlflow.models.get_model_info(uri).run_id
            raw = mlflow.tracking.MlflowClient().get_run(run_id).data.params.get("max_len") if run_id else None
        except MlflowException:
            raw = None
        if raw is None:
            raise UserError(f"--model {uri}: the model's run has no max_len param; pass --max-len")
        max_len = int(raw)
    model.eval()
    n_items = int(model.item_embeddings().shape[0]) - 1
    return LoadedModel(model=model.cpu(), max_len=int(max_len), n_items=n_items, source=uri)


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def check_k(k: int, n_items: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_items:
        raise UserError(f"--k: must be an integer in 1..{n_items} (the number of items), got {k!r}")


def top_k_from_histories(
    model: nn.Module,
    offsets: np.ndarray,
    values: np.ndarray,
    *,
    k: int,
    max_len: int,
    include_seen: bool = False,
    device: str | torch.device = "cpu",
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` item indices and scores for users given as a ragged array of histories.

    Args:
        model: a SequentialRecommender in eval mode on ``device``.
        offsets: [U + 1] int64; user u's history is ``values[offsets[u]:offsets[u + 1]]``
            (chronological item indices in 1..n_items).
        values: [total] int item indices.
        k: items per user.
        max_len: the model's window; the last ``max_len`` items are its input.
        include_seen: keep items of the user's history among the candidates.
        chunk: users scored at once (peak memory ~ chunk x n_items floats).

    Returns:
        ``(items [U, k] int32, scores [U, k] float32)``: item indices 1..n_items, best first. Where
        fewer than ``k`` unseen items exist, the tail holds item 0 and score ``-inf``.
    """
    device = torch.device(device)
    offsets = np.asarray(offsets, dtype=np.int64)
    values_t = torch.from_numpy(np.asarray(values, dtype=np.int64)).to(device)
    lens = np.diff(offsets)  # [U]
    if len(lens) and lens.min() < 1:
        raise ValueError("every user needs at least one item in their history")
    n_users = len(lens)
    out_items = np.zeros((n_users, k), dtype=np.int32)
    out_scores = np.full((n_users, k), -np.inf, dtype=np.float32)
    win = np.minimum(lens, max_len)  # [U] window lengths
    order = np.argsort(win, kind="stable")  # similar lengths together: less padding
    full_window = bool(getattr(model, "needs_full_window", False))
    with torch.inference_mode():
        emb = model.item_embeddings()[1:].float()  # [n_items, d]
        for lo in range(0, n_users, chunk):
            rows = order[lo : lo + chunk]  # [B]
            w = torch.from_numpy(win[rows]).to(device)  # [B]
            start = torch.from_numpy(offsets[rows + 1] - win[rows]).to(device)  # [B]
            width = max_len if full_window else int(win[rows].max())
            pos = torch.arange(width, device=device)  # [W]
            idx = (start.view(-1, 1) + pos).clamp(max=len(values_t) - 1)  # [B, W]
            x = torch.where(pos < w.view(-1, 1), values_t[idx], 0)  # [B, W] right-padded
            h = model.last_hidden(x, w)  # [B, d]
            seen = None
            if not include_seen:
                seen = history_mask_coords(values_t, offsets[rows], offsets[rows + 1], device)
            for part, scores in score_blocks(h, emb, mask=seen):  # [rows, n_items], seen items at -inf
                top = torch.topk(scores, k, dim=1)  # [rows, k]
                top_items = (top.indices + 1).to(torch.int32)
                top_items[torch.isneginf(top.values)] = 0
                out_items[rows[part]] = top_items.cpu().numpy()
                out_scores[rows[part]] = top.values.cpu().numpy()
    return out_items, out_scores


class RecommendActor:
    """Ray Data ``map_batches`` callable: builds the model once per actor, then scores batches.

    A batch is a ``pyarrow.Table`` with ``user_id`` and ``items`` (list<int32>); the result has
    ``user_id``, ``item_ids`` (list<string>) and ``scores`` (list<float32>).
    """

    def __init__(self, model_ref: list[Any], item_ids: np.ndarray, k: int, max_len: int, include_seen: bool, use_gpu: bool) -> None:
        import ray

        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.device = torch.device("cuda" if use_gpu else "cpu")
        model = ray.get(model_ref[0])  # a list, so Ray passes the reference instead of resolving it
        self.model = model.to(self.device).eval()
        self.item_ids = np.asarray(item_ids, dtype=object)  # [n_items + 1], index 0 = padding
        self.k, self.max_len, self.include_seen = k, max_len, include_seen

    def __call__(self, batch: Any) -> Any:
        col = batch.column("items").combine_chunks()
        offsets = col.offsets.to_numpy().astype(np.int64)
        values = col.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
        offsets = offsets - offsets[0]
        items, scores = top_k_from_histories(
            self.model, offsets, values, k=self.k, max_len=self.max_len, include_seen=self.include_seen, device=self.device
        )
        return recs_table(batch.column("user_id"), items, scores, self.item_ids)


def recs_table(user_ids: Any, items: np.ndarray, scores: np.ndarray, item_ids: np.ndarray) -> Any:
    """The output schema: ``user_id``, ``item_ids`` (original ids, best first), ``scores``; item 0
    (fewer unseen items than k) is dropped, so such a list is shorter."""
    import pyarrow as pa

    n_valid = (items > 0).sum(axis=1)  # [B]
    list_offsets = np.concatenate([[0], np.cumsum(n_valid)]).astype(np.int32)
    keep = items > 0
    ids = pa.array(item_ids[items[keep]].tolist(), pa.string())
    return pa.table(
        {
            "user_id": user_ids if isinstance(user_ids, (pa.Array, pa.ChunkedArray)) else pa.array(user_ids, pa.string()),
            "item_ids": pa.ListArray.from_arrays(pa.array(list_offsets), ids),
            "scores": pa.ListArray.from_arrays(pa.array(list_offsets), pa.array(scores[keep], pa.float32())),
        }
    )


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecommendResult:
    out: Path
    n_users: int
    wall_s: float  # whole call: Ray start, model broadcast, scoring, writing
    score_s: float  # from the first batch requested to the last written
    users_per_s: float  # n_users / score_s


def check_output_path(out: str | Path) -> Path:
    """Fail early, before any work, if ``out`` cannot be written: a UserError naming it."""
    p = Path(out)
    if p.is_dir():
        raise UserError(f"--out {p}: is a directory; give a file name such as recs.parquet")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UserError(f"--out {p}: {parent} is not a directory")
    if not parent.is_dir():
        raise UserError(f"--out {p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {p}: directory {parent} is not writable")
    return p


def item_id_table(data_dir: Path, n_items: int) -> np.ndarray:
    """``[n_items + 1]`` original item ids indexed by item index (index 0 = padding, '')."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = data_dir / "items.parquet"
    try:
        t = pq.read_table(path, columns=["item_idx", "item_id"])
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    idx = t.column("item_idx").to_numpy()
    if len(idx) != n_items or sorted(idx.tolist()) != list(range(1, n_items + 1)):
        raise UserError(f"{path}: item_idx must be exactly 1..{n_items} (manifest n_items)")
    out = np.empty(n_items + 1, dtype=object)
    out[0] = ""
    out[idx] = np.asarray(t.column("item_id").to_pylist(), dtype=object)
    return out


def recommend(
    model_spec: str,
    data_dir: str | Path,
    out: str | Path,
    *,
    k: int = 10,
    workers: int = 1,
    include_seen: bool = False,
    batch_size: int = 1024,
    use_gpu: bool = False,
    max_len: int | None = None,
    tracking_uri: str | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
) -> RecommendResult:
    """Score every user of ``data_dir`` with Ray Data and write ``out`` atomically; see the module doc."""
    import pyarrow.parquet as pq

    from glintru.data.dataset import SEQUENCES, load_prepared

    t0 = time.perf_counter()
    out_path = check_output_path(out)
    if workers < 1:
        raise UserError(f"--workers: must be >= 1, got {workers}")
    if batch_size < 1:
        raise UserError(f"--batch-size: must be >= 1, got {batch_size}")
    data = load_prepared(data_dir)  # validates the manifest and the sequences
    loaded = load_model(model_spec, max_len=max_len, tracking_uri=tracking_uri)
    if loaded.n_items != data.n_items:
        raise UserError(
            f"--model {loaded.source}: trained on {loaded.n_items} items but {data.path} has {data.n_items}; "
            "recommend needs the dataset the model was trained on"
        )
    check_k(k, data.n_items)
    if data.n_users == 0:
        raise UserError(f"{data.path}: no users")
    if int(data.lengths.min()) < 1:
        raise UserError(f"{data.path / SEQUENCES}: a user has an empty history")
    item_ids = item_id_table(data.path, data.n_items)

    import ray

    from glintru.distributed.trainer import init_ray

    started = not ray.is_initialized()
    init_ray(address, num_cpus, min_cpus=workers)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        model_ref = ray.put(loaded.model)
        blocks = max(workers * 4, (data.n_users + batch_size - 1) // batch_size)
        ds = ray.data.read_parquet(str(data.path / SEQUENCES)).select_columns(["user_id", "items"]).repartition(blocks)
        resources = {"num_gpus": 1} if use_gpu else {"num_cpus": 1}
        ds = ds.map_batches(
            RecommendActor,
            fn_constructor_kwargs={
                "model_ref": [model_ref], "item_ids": item_ids, "k": k, "max_len": loaded.max_len,
                "include_seen": include_seen, "use_gpu": use_gpu,
            },
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            **resources,
        )
        t1 = time.perf_counter()
        n = 0
        writer = None
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                if writer is None:
                    writer = pq.ParquetWriter(tmp, batch.schema)
                writer.write_table(batch)
                n += batch.num_rows
        finally:
            if writer is not None:
                writer.close()
        score_s = time.perf_counter() - t1
        if n != data.n_users:
            raise RuntimeError(f"recommend wrote {n} rows for {data.n_users} users")
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
        if started and address is None:
            ray.shutdown()
    return RecommendResult(out_path, n, time.perf_counter() - t0, score_s, n / score_s if score_s > 0 else float("inf"))
