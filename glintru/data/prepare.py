"""Interactions -> prepared dataset directory (docs/architecture.md, "Prepared dataset directory").

Steps, all vectorised with numpy/pyarrow (loops only over k-core passes, never over rows):
  1. ``min_rating``: keep interactions with rating >= threshold (needs a format with ratings).
  2. Order: users and items are numbered by their sorted original id -- numerically when every id is
     an integer, else by UTF-8 string order. Users get 0..n_users-1 (row order of
     sequences.parquet), items 1..n_items (0 = padding). Each user's interactions are sorted by
     timestamp with a *stable* sort, so ties (and formats without timestamps) keep file order.
  3. ``dedup``: keep the first (oldest, then earliest in the file) interaction of each user-item pair.
  4. Iterative k-core: drop users with < ``user_core`` and items with < ``item_core`` interactions,
     repeated until nothing changes (one pass can create new low-count users or items).
  5. Ids are renumbered after filtering, so items are exactly 1..n_items.
Leave-one-out split (derived by the loader, recorded in the manifest): L >= 3 -> test = last item,
validation = second-to-last; users with L < 3 are training-only.
The directory is written atomically: a temporary sibling directory, then a rename.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from glintru.data.dataset import FORMAT_VERSION, ITEMS, MANIFEST, SEQUENCES
from glintru.data.download import sha256_file
from glintru.data.readers import Interactions, ReadOptions, read_interactions
from glintru.errors import UserError
from glintru.storage import new_sibling_dir

# the manifest's option name for each column role of a generic (csv / parquet) source
ROLE_OPTION = {"user": "user_col", "item": "item_col", "timestamp": "time_col", "rating": "rating_col"}

SPLIT_RULE = (
    "leave-one-out: for L >= 3, test target = last item, validation target = second-to-last, "
    "training = the rest; users with L < 3 are training-only"
)
ORDER_RULE = (
    "users 0..n-1 and items 1..n by sorted original id (numeric when all ids are integers); "
    "per user stable sort by timestamp, ties and formats without timestamps keep file order"
)


@dataclass(frozen=True)
class FilterOptions:
    """Preprocessing options; the defaults change nothing."""

    min_rating: float | None = None
    dedup: bool = False
    user_core: int = 0
    item_core: int = 0


@dataclass(frozen=True)
class Prepared:
    """The result of preprocessing, before writing.

    user_ids: [n_users] str; item_ids: [n_items] str (item index i+1 -> item_ids[i]);
    offsets: [n_users + 1] int64; items: [n_interactions] int32 in 1..n_items;
    timestamps: [n_interactions] int64 or None.
    """

    user_ids: pa.Array
    item_ids: pa.Array
    offsets: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None


def _sorted_codes(values: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Codes [n] int64 numbering the distinct values in sorted-id order, and the distinct values sorted."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    enc = pc.dictionary_encode(values)
    uniq = enc.dictionary
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    str_rank = np.asarray(pc.sort_indices(uniq).to_numpy(), dtype=np.int64)
    order = str_rank
    numeric = pc.all(pc.match_substring_regex(uniq, r"^-?[0-9]{1,18}$")).as_py()
    if numeric:
        as_int = np.asarray(pc.cast(uniq, pa.int64()).to_numpy(), dtype=np.int64)
        by_str = np.empty(len(uniq), dtype=np.int64)
        by_str[str_rank] = np.arange(len(uniq))
        order = np.lexsort((by_str, as_int))  # "007" and "7": numeric tie broken by string order
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq))
    return rank[codes], uniq.take(pa.array(order))


def _compact(codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the used subset of 0..n-1 to 0..m-1 keeping order; returns (new codes, used old codes)."""
    used = np.zeros(n, dtype=bool)
    used[codes] = True
    new = np.cumsum(used) - 1
    return new[codes], np.flatnonzero(used)


def preprocess(inter: Interactions, opts: FilterOptions, where: str = "input") -> Prepared:
    """Filter, order and renumber interactions (see the module docstring for the rules)."""
    n = len(inter)
    keep = np.ones(n, dtype=bool)
    if opts.min_rating is not None:
        if inter.rating is None:
            raise UserError(f"--min-rating: format '{inter.fmt}' of {where} has no ratings")
        keep &= inter.rating >= opts.min_rating
    if opts.user_core < 0 or opts.item_core < 0:
        raise UserError("--user-core/--item-core: must be >= 0")

    user, user_vals = _sorted_codes(inter.user)
    item, item_vals = _sorted_codes(inter.item)
    ts = inter.timestamp
    if ts is not None and ts.dtype.kind == "f" and not np.all(np.abs(ts) < 2.0**62):
        bad = int(np.flatnonzero(~(np.abs(ts) < 2.0**62))[0])
        raise UserError(f"{where}: interaction {bad + 1}: timestamp {ts[bad]} is not a finite number in range")
    # chronological per user, stable: np.lexsort is stable, so equal keys keep file order
    order = np.lexsort((ts, user)) if ts is not None else np.argsort(user, kind="stable")
    order = order[keep[order]]
    user, item = user[order], item[order]
    ts = ts[order] if ts is not None else None

    if opts.dedup and len(user):
        key = user * len(item_vals) + item
        _, first = np.unique(key, return_index=True)
        mask = np.zeros(len(key), dtype=bool)
        mask[first] = True
        user, item = user[mask], item[mask]
        ts = ts[mask] if ts is not None else None

    if opts.user_core > 1 or opts.item_core > 1:
        mask = np.ones(len(user), dtype=bool)
        while True:  # iterate to the fixed point: each pass may create new under-count users/items
            ucount = np.bincount(user[mask], minlength=len(user_vals))
            icount = np.bincount(item[mask], minlength=len(item_vals))
            new_mask = mask & (ucount[user] >= opts.user_core) & (icount[item] >= opts.item_core)
            if np.array_equal(new_mask, mask):
                break
            mask = new_mask
        user, item = user[mask], item[mask]
        ts = ts[mask] if ts is not None else None

    if len(user) == 0:
        raise UserError(f"{where}: the filters removed every interaction ({_describe(opts)}); relax them")

    user, used_users = _compact(user, len(user_vals))
    item, used_items = _compact(item, len(item_vals))
    counts = np.bincount(user, minlength=len(used_users))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if ts is not None:
        ts = np.floor(ts).astype(np.int64) if ts.dtype.kind == "f" else ts.astype(np.int64)
    return Prepared(
        user_ids=user_vals.take(pa.array(used_users)),
        item_ids=item_vals.take(pa.array(used_items)),
        offsets=offsets,
        items=(item + 1).astype(np.int32),
        timestamps=ts,
    )


def _describe(opts: FilterOptions) -> str:
    parts = [f"{k}={v}" for k, v in vars(opts).items() if v not in (None, False, 0)]
    return ", ".join(parts) or "no filters"


def build_manifest(prep: Prepared, source: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The manifest dict: deterministic (no clocks, no temporary paths)."""
    lengths = np.diff(prep.offsets)
    n_users, n_items, n_inter = len(lengths), len(prep.item_ids), int(prep.offsets[-1])
    n_eval = int(np.count_nonzero(lengths >= 3))
    counts = {
        "n_users": n_users,
        "n_items": n_items,
        "n_interactions": n_inter,
        "min_length": int(lengths.min()),
        "median_length": float(np.median(lengths)),
        "mean_length": round(float(lengths.mean()), 6),
        "max_length": int(lengths.max()),
        "sparsity": round(1.0 - n_inter / (n_users * n_items), 8),
    }
    return {
        "format_version": FORMAT_VERSION,
        "n_users": n_users,
        "n_items": n_items,
        "n_interactions": n_inter,
        "source": source,
        "options": options,
        "counts": counts,
        "order": ORDER_RULE,
        "split": {"rule": SPLIT_RULE, "n_valid": n_eval, "n_test": n_eval},
    }


def _tables(prep: Prepared) -> tuple[pa.Table, pa.Table]:
    offsets = pa.array(prep.offsets.astype(np.int32))
    items = pa.ListArray.from_arrays(offsets, pa.array(prep.items, type=pa.int32()))
    if prep.timestamps is not None:
        ts = pa.ListArray.from_arrays(offsets, pa.array(prep.timestamps, type=pa.int64()))
    else:
        ts = pa.nulls(len(prep.user_ids), type=pa.list_(pa.int64()))
    seq = pa.table({"user_id": prep.user_ids.cast(pa.string()), "items": items, "timestamps": ts})
    vocab = pa.table(
        {
            "item_idx": pa.array(np.arange(1, len(prep.item_ids) + 1, dtype=np.int32)),
            "item_id": prep.item_ids.cast(pa.string()),
        }
    )
    return seq, vocab


def write_prepared(prep: Prepared, manifest: dict[str, Any], out: Path, overwrite: bool = False) -> None:
    """Write the directory atomically: a temporary sibling directory, then a rename."""
    import pyarrow.parquet as pq

    out = Path(out)
    check_output(out, overwrite)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_sibling_dir(out)
    except OSError as exc:
        raise UserError(f"{out}: cannot create the output directory ({exc.strerror or exc})") from None
    old = None
    try:
        seq, vocab = _tables(prep)
        pq.write_table(seq, tmp / SEQUENCES)
        pq.write_table(vocab, tmp / ITEMS)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if out.exists() and any(out.iterdir()):
            old = new_sibling_dir(out, "old")
            os.replace(out, old / "d")
        elif out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            os.replace(old / "d", out)
        raise UserError(f"{out}: cannot write the prepared dataset ({exc.strerror or exc})") from None
    except BaseException:  # Ctrl+C, SIGTERM: the previous dataset stays, as after a write error
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            os.replace(old / "d", out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def check_output(out: str | Path, overwrite: bool) -> None:
    """Refuse a file, or a non-empty directory unless ``overwrite`` (local path or object-store URI)."""
    from glintru import storage

    if storage.is_remote(out):
        names = storage.list_names(str(out), "--out")
        if names and not overwrite:
            raise UserError(f"--out {out}: exists and is not empty; pass --overwrite to replace it")
        return
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: exists and is not empty; pass --overwrite to replace it")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{out}: cannot create the output directory ({parent} is not a directory)")
            break


def prepare(
    source: str | Path,
    out: str | Path,
    fmt: str = "auto",
    read_opts: ReadOptions | None = None,
    filters: FilterOptions | None = None,
    overwrite: bool = False,
    source_label: str | None = None,
) -> dict[str, Any]:
    """Read ``source``, preprocess, write ``out`` atomically; returns the manifest.

    ``source_label`` is recorded as the source path (default: ``source`` as given).
    """
    from glintru import storage

    read_opts = read_opts or ReadOptions()
    filters = filters or FilterOptions()
    check_output(out, overwrite)
    inter = read_interactions(source, fmt, read_opts)
    prep = preprocess(inter, filters, where=str(source))
    src = {"path": source_label or str(source), "sha256": sha256_file(Path(source)), "format": inter.fmt}
    if inter.member:
        src["member"] = inter.member
    options: dict[str, Any] = {
        "min_rating": filters.min_rating,
        "dedup": filters.dedup,
        "user_core": filters.user_core,
        "item_core": filters.item_core,
    }
    if inter.columns is not None:  # csv / parquet / json: the columns read, given or taken from the header's names
        options.update({ROLE_OPTION[role]: col for role, col in inter.columns.items()})
        if inter.sep is not None:
            options["sep"] = inter.sep
    elif inter.fmt == "recbole":
        options.update({k: v for k, v in vars(read_opts).items() if v is not None and k != "sep"})
    manifest = build_manifest(prep, src, options)
    if storage.is_remote(out):  # written locally, then uploaded with the manifest last
        with tempfile.TemporaryDirectory(prefix="glintru-prepare-") as tmp:
            write_prepared(prep, manifest, Path(tmp) / "d")
            storage.upload_dir(Path(tmp) / "d", str(out), [SEQUENCES, ITEMS, MANIFEST])
        return manifest
    write_prepared(prep, manifest, Path(out), overwrite)
    return manifest
