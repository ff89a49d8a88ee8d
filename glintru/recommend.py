"""Batch top-K recommendations for every user of a prepared dataset (``glintru recommend``).

Each user's input is the last ``max_len`` items of their *whole* history (training, validation and
test items: at serving time everything is known), scored exactly as the engine scores
(docs/architecture.md): ``scores = model.last_hidden(window) @ model.item_embeddings()[1:].T``,
column ``j`` = item index ``j + 1``. Items the user has already interacted with are excluded by
default (their score becomes ``-inf``); a user who has seen all but fewer than ``k`` items gets a
shorter list. Ties are broken by :func:`torch.topk` (unspecified order among equal scores).

Two ways to run, one scoring path (:class:`BatchScorer`):

- in this process (``--workers 0``, and the default on a single machine): batches of users straight
  from the prepared arrays, no Ray started. On one machine this is the fast way: a local Ray costs
  its start-up and the object-store copies (``benchmarks/recommend.py`` measures both);
- scale-out (``--workers N``, and the default when a cluster is addressed with ``--address`` or
  ``RAY_ADDRESS``, as under ``ray job submit``): the users of ``sequences.parquet`` are read as a
  Ray Dataset and scored with ``map_batches`` by a pool of actors (:class:`RecommendActor`), each of
  which builds the model once from an object-store copy of the weights and keeps it on its CPU or GPU.

Either way batches come in user order and are streamed into one parquet file, written to a
temporary name and renamed, so ``--out`` is either the complete result or absent.

Another snapshot: ``prepare`` numbers the items of each dataset it writes, so a model scores only
the dataset it was trained on (checked: same item count, same item ids at every index). To score a
newer snapshot with an older model, ``--trained-on`` names the dataset the model was trained on:
the snapshot's histories are translated to the model's item indices by item id, items the model
never saw are left out of the windows (they have no embedding), and a user none of whose items the
model knows is left out of the output (counted in :class:`RecommendResult`).

Model sources: a checkpoint file, a run directory or an MLflow model URI, all read without
unpickling code (:func:`glintru.loading.load_model`).

Output parquet schema: ``user_id: string`` (original id), ``item_ids: list<string>`` (original item
ids, best first), ``scores: list<float32>``; one row per user, in the order of ``sequences.parquet``
(with ``--trained-on``, less the users none of whose items the model knows).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from glintru.data.dataset import PreparedDataset, catalogue_sha256, list_column_arrays, load_catalogue
from glintru.engine.scoring import history_mask_coords, score_blocks
from glintru.errors import UserError, require_positive
from glintru.loading import load_model

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


def actor_threads() -> int:
    """Torch threads of a scoring actor: OMP_NUM_THREADS as Ray sets it per actor; 1 if unset, empty
    or not a positive integer."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return max(1, int(value)) if value.isdigit() else 1


class BatchScorer:
    """Scores a batch of users: a ``pyarrow.Table`` with ``user_id`` and ``items`` (list<int32>) in
    (``__call__``; or the arrays, :meth:`score`), the output schema (:func:`recs_table`) out. The one
    scoring path of both modes: in this process, or as a Ray actor (:class:`RecommendActor`)."""

    def __init__(self, model: nn.Module, item_ids: np.ndarray, k: int, max_len: int, include_seen: bool,
                 device: str | torch.device = "cpu", to_model: np.ndarray | None = None) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.item_ids = np.asarray(item_ids, dtype=object)  # [n_items + 1], index 0 = padding
        self.k, self.max_len, self.include_seen = k, max_len, include_seen
        self.to_model = to_model  # [n_data_items + 1]: the data's item index -> the model's, 0 unknown (--trained-on)

    def __call__(self, batch: Any) -> Any:
        offsets, values = list_column_arrays(batch.column("items"))
        return self.score(batch.column("user_id"), offsets, values)

    def score(self, user_ids: Any, offsets: np.ndarray, values: np.ndarray) -> Any:
        """The output table for users ``user_ids`` with histories ``values[offsets[u]:offsets[u + 1]]``."""
        if self.to_model is not None:
            user_ids, offsets, values = in_model_indices(user_ids, offsets, values, self.to_model)
        items, scores = top_k_from_histories(
            self.model, offsets, values, k=self.k, max_len=self.max_len, include_seen=self.include_seen, device=self.device
        )
        return recs_table(user_ids, items, scores, self.item_ids)


class RecommendActor(BatchScorer):
    """Ray Data ``map_batches`` callable: a :class:`BatchScorer` whose model is built once per actor
    from the object store, with the actor's CPU threads (or its GPU)."""

    def __init__(self, model_ref: list[Any], item_ids: np.ndarray, k: int, max_len: int, include_seen: bool, use_gpu: bool,
                 to_model: np.ndarray | None = None) -> None:
        import ray

        torch.set_num_threads(actor_threads())
        model = ray.get(model_ref[0])  # a list, so Ray passes the reference instead of resolving it
        super().__init__(model, item_ids, k, max_len, include_seen, "cuda" if use_gpu else "cpu", to_model)


def in_model_indices(user_ids: Any, offsets: np.ndarray, values: np.ndarray,
                     to_model: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
    """Histories in another dataset's item indices translated with ``to_model`` (0: an item the model
    does not know, left out); users left with no item are dropped (their ids too)."""
    import pyarrow as pa

    mapped = to_model[np.asarray(values, dtype=np.int64)]
    known = mapped > 0
    ends = np.concatenate([[0], np.cumsum(known)])[np.asarray(offsets, dtype=np.int64)]  # [U + 1]
    has = np.diff(ends) > 0  # [U]
    if not has.all():
        ids = user_ids if isinstance(user_ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(user_ids), pa.string())
        user_ids = ids.filter(pa.array(has))
        ends = np.append(ends[:-1][has], ends[-1])  # dropped users hold no item: the others stay contiguous
    return user_ids, ends - ends[0], mapped[known]


def model_index_map(data_item_ids: np.ndarray, model_item_ids: np.ndarray) -> np.ndarray:
    """``[n_data_items + 1]`` int64: each item index of a dataset -> the model's index of the same
    item id, 0 where the model does not know the item (and for padding)."""
    index = {item: i for i, item in enumerate(model_item_ids[1:], 1)}
    out = np.fromiter((index.get(item, 0) for item in data_item_ids[1:]), dtype=np.int64, count=len(data_item_ids) - 1)
    return np.concatenate([[0], out])


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
    wall_s: float  # whole call: model loading, (Ray start, model broadcast,) scoring, writing
    score_s: float  # from the first batch requested to the last written
    users_per_s: float  # n_users / score_s
    workers: int  # Ray scoring actors; 0 = scored in this process
    unknown_users: int = 0  # --trained-on: users left out, none of their items in the model's catalogue


def scoring_workers(workers: int | None, address: str | None, num_cpus: int | None, use_gpu: bool = False) -> int:
    """How many Ray actors score (0: this process, no Ray). ``None`` picks: one actor when a cluster
    is addressed (``address`` or ``RAY_ADDRESS``, as under ``ray job submit``), else this process.
    Contradictory options are a UserError naming them."""
    cluster = address or os.environ.get("RAY_ADDRESS")
    if workers is None:
        workers = 1 if cluster or num_cpus is not None else 0
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UserError(f"--workers: must be an integer >= 0 (0 scores in this process, without Ray), got {workers!r}")
    if workers == 0 and address:
        raise UserError("--workers 0 scores in this process; --address connects to a Ray cluster: drop one of them")
    if workers == 0 and num_cpus is not None:
        raise UserError("--num-cpus sizes a local Ray; --workers 0 scores in this process without Ray: drop one of them")
    require_positive(("--num-cpus", num_cpus))
    if num_cpus is not None and not cluster and not use_gpu and num_cpus < workers + 1:
        # each actor holds a CPU for the whole run and Ray Data's read tasks need one more: fewer waits forever
        raise UserError(f"--num-cpus {num_cpus}: {workers} scoring actor{'s' if workers > 1 else ''} hold one CPU each and "
                        f"reading the data needs one more; give --num-cpus >= {workers + 1} or fewer --workers")
    return workers


TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".jsonl")  # --out names that promise another format


def check_output_path(out: str | Path) -> Path:
    """Fail early, before any work, if ``out`` cannot be written: a UserError naming it."""
    p = Path(out)
    if p.is_dir():
        raise UserError(f"--out {p}: is a directory; give a file name such as recs.parquet")
    if p.suffix.lower() in TEXT_SUFFIXES:
        raise UserError(f"--out {p}: recommendations are written as Parquet (columns user_id, item_ids, scores: "
                        "lists, best first); give a name ending in .parquet")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UserError(f"--out {p}: {parent} is not a directory")
    if not parent.is_dir():
        raise UserError(f"--out {p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {p}: directory {parent} is not writable")
    return p


def check_catalogue(loaded: Any, path: Path, item_ids: np.ndarray, snapshots: bool = True) -> np.ndarray:
    """``item_ids`` (the item id table of the dataset at ``path``), once the model is known to score
    this catalogue: the same number of items and, for models that recorded it, the same items at the
    same indices (a UserError otherwise: the lists would name the wrong items; ``snapshots``: it
    points at ``--trained-on``)."""
    n_items = len(item_ids) - 1
    other = " (to score another snapshot, name that dataset with --trained-on)" if snapshots else ""
    if loaded.n_items != n_items:
        raise UserError(
            f"--model {loaded.source}: trained on {loaded.n_items} items but {path} has {n_items}; "
            f"recommend needs the dataset the model was trained on{other}"
        )
    if loaded.catalogue_sha256 is not None and loaded.catalogue_sha256 != catalogue_sha256(item_ids):
        raise UserError(
            f"--model {loaded.source}: trained on another catalogue than {path} (the same number of items, "
            f"{n_items:,}, but other item ids at some indices); recommend needs the dataset the model was trained on{other}"
        )
    return item_ids


def recommend(
    model_spec: str,
    data_dir: str | Path,
    out: str | Path,
    *,
    k: int = 10,
    workers: int | None = None,
    include_seen: bool = False,
    batch_size: int = 1024,
    use_gpu: bool = False,
    max_len: int | None = None,
    tracking_uri: str | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    trained_on: str | Path | None = None,
) -> RecommendResult:
    """Score every user of ``data_dir`` and write ``out`` atomically; see the module doc.

    ``workers``: Ray scoring actors, 0 for this process (:func:`scoring_workers` picks when None).
    ``progress(done, total)`` is called after each batch written in this process (users).
    ``trained_on``: the dataset the model was trained on, when ``data_dir`` is another snapshot.
    """
    from glintru.data.dataset import SEQUENCES, load_prepared

    t0 = time.perf_counter()
    out_path = check_output_path(out)
    workers = scoring_workers(workers, address, num_cpus, use_gpu)
    require_positive(("--batch-size", batch_size))
    if use_gpu and workers == 0 and not torch.cuda.is_available():
        raise UserError("--gpu: this process sees no CUDA device (in-process scoring runs here; "
                        "--workers N scores on the GPUs of a Ray cluster)")
    data = load_prepared(data_dir)  # validates the manifest and the sequences
    loaded = load_model(model_spec, max_len=max_len, tracking_uri=tracking_uri)
    to_model, unknown_users = None, 0
    if trained_on is None:
        item_ids = check_catalogue(loaded, data.path, data.item_id_table())
    else:
        item_ids = check_catalogue(loaded, *load_catalogue(trained_on), snapshots=False)
        to_model = model_index_map(data.item_id_table(), item_ids)
        if not to_model.any():
            raise UserError(f"--trained-on {trained_on}: none of the {data.n_items:,} items of {data.path} is in the "
                            "model's catalogue; is it the dataset the model was trained on?")
        known = np.concatenate([[0], np.cumsum(to_model[data.items] > 0)])[data.offsets]
        unknown_users = int((np.diff(known) == 0).sum())
    check_k(k, len(item_ids) - 1)
    if data.n_users == 0:
        raise UserError(f"{data.path}: no users")
    if int(data.lengths.min()) < 1:
        raise UserError(f"{data.path / SEQUENCES}: a user has an empty history")
    if unknown_users == data.n_users:
        raise UserError(f"--trained-on {trained_on}: no user of {data.path} has an item the model knows")
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    try:
        if workers == 0:
            scorer = BatchScorer(loaded.model, item_ids, k, loaded.max_len, include_seen, "cuda" if use_gpu else "cpu",
                                 to_model)
            n, score_s = write_batches(tmp, in_process_batches(scorer, data, batch_size), data.n_users, progress)
        else:
            n, score_s = score_with_ray(tmp, data.path / SEQUENCES, data.n_users, loaded, item_ids, k=k, workers=workers,
                                        include_seen=include_seen, batch_size=batch_size, use_gpu=use_gpu,
                                        address=address, num_cpus=num_cpus, to_model=to_model)
        if n != data.n_users - unknown_users:
            raise RuntimeError(f"recommend wrote {n} rows for {data.n_users - unknown_users} users")
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return RecommendResult(out_path, n, time.perf_counter() - t0, score_s, n / score_s if score_s > 0 else float("inf"), workers,
                           unknown_users)


def in_process_batches(scorer: BatchScorer, data: PreparedDataset, batch_size: int) -> Iterator[Any]:
    """Output tables of ``batch_size`` users each, in user order, scored in this process."""
    offsets = data.offsets  # [U + 1]
    for lo in range(0, data.n_users, batch_size):
        hi = min(lo + batch_size, data.n_users)
        values = data.items[offsets[lo] : offsets[hi]]
        yield scorer.score(data.user_ids[lo:hi], offsets[lo : hi + 1] - offsets[lo], values)


def write_batches(path: Path, batches: Iterable[Any], total: int,
                  progress: Callable[[int, int], None] | None = None) -> tuple[int, float]:
    """Stream output tables into one parquet file at ``path``: ``(rows written, seconds)``."""
    import pyarrow.parquet as pq

    t1 = time.perf_counter()
    n = 0
    writer = None
    try:
        for batch in batches:
            if writer is None:
                writer = pq.ParquetWriter(path, batch.schema)
            writer.write_table(batch)
            n += batch.num_rows
            if progress is not None:
                progress(n, total)
    finally:
        if writer is not None:
            writer.close()
    return n, time.perf_counter() - t1


def score_with_ray(path: Path, sequences: Path, n_users: int, loaded: Any, item_ids: np.ndarray, *, k: int,
                   workers: int, include_seen: bool, batch_size: int, use_gpu: bool, address: str | None,
                   num_cpus: int | None, to_model: np.ndarray | None = None) -> tuple[int, float]:
    """Score with a pool of ``workers`` Ray Data actors (a local Ray started and stopped here unless
    one is running or a cluster is addressed) and write ``path``: ``(rows written, seconds)``."""
    import ray

    from glintru.distributed.trainer import init_ray

    started = init_ray(address, num_cpus, min_cpus=workers)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        model_ref = ray.put(loaded.model)
        blocks = max(workers * 4, (n_users + batch_size - 1) // batch_size)
        ds = ray.data.read_parquet(str(sequences)).select_columns(["user_id", "items"]).repartition(blocks)
        resources = {"num_gpus": 1} if use_gpu else {"num_cpus": 1}
        ds = ds.map_batches(
            RecommendActor,
            fn_constructor_kwargs={
                "model_ref": [model_ref], "item_ids": item_ids, "k": k, "max_len": loaded.max_len,
                "include_seen": include_seen, "use_gpu": use_gpu, "to_model": to_model,
            },
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            **resources,
        )
        return write_batches(path, ds.iter_batches(batch_size=None, batch_format="pyarrow"), n_users)
    finally:
        if started:
            ray.shutdown()
