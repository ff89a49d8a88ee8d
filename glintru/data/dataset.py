"""Load a prepared dataset directory (see docs/architecture.md) into flat numpy arrays.

Sequences are held as one flat ``int32`` array of item indices plus ``int64`` offsets, so a
user's history is ``items[offsets[u]:offsets[u + 1]]`` with no per-user Python objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glintru.errors import UserError

MANIFEST = "manifest.json"
SEQUENCES = "sequences.parquet"
ITEMS = "items.parquet"
FORMAT_VERSION = 1


def ragged_arange(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(starts[i], starts[i] + lens[i])`` over i, without a Python loop."""
    starts = np.asarray(starts, dtype=np.int64)
    lens = np.asarray(lens, dtype=np.int64)
    total = int(lens.sum())
    seg_begin = np.cumsum(lens) - lens  # where each segment starts in the output
    return np.repeat(starts - seg_begin, lens) + np.arange(total, dtype=np.int64)


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared dataset: per-user chronological item sequences, items remapped to 1..n_items."""

    path: Path
    manifest: dict
    user_ids: np.ndarray  # [n_users] original user ids (str objects)
    offsets: np.ndarray  # [n_users + 1] int64
    items: np.ndarray  # [n_interactions] int32, values in 1..n_items

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_items(self) -> int:
        return int(self.manifest["counts"]["n_items"])

    @property
    def lengths(self) -> np.ndarray:  # [n_users] int64
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def eval_users(self) -> np.ndarray:
        """Users with a validation and a test target (>= 3 interactions), ascending."""
        return np.flatnonzero(self.lengths >= 3)

    def train_lengths(self) -> np.ndarray:
        """Length of each user's training sequence: L - 2 for L >= 3, else L (training only)."""
        lengths = self.lengths
        return np.where(lengths >= 3, lengths - 2, lengths)

    def eval_examples(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(users, input_end, targets)`` for ``split`` in {"valid", "test"}.

        The input of user u is ``items[offsets[u]:input_end[u]]`` (its whole history before the
        target) and the target is ``items[input_end[u]]``.
        """
        users = self.eval_users()
        if split == "valid":
            end = self.offsets[users + 1] - 2
        elif split == "test":
            end = self.offsets[users + 1] - 1
        else:
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        return users, end, self.items[end].astype(np.int64)

    def train_item_counts(self) -> np.ndarray:
        """Interactions per item index in the training part only (validation and test items
        excluded): [n_items + 1], index 0 = 0. Feeds the training-loss negative sampler."""
        idx = ragged_arange(self.offsets[:-1], self.train_lengths())
        return np.bincount(self.items[idx], minlength=self.n_items + 1)

    def item_counts(self) -> np.ndarray:
        """Interactions per item index over the whole dataset: [n_items + 1], index 0 = 0."""
        return np.bincount(self.items, minlength=self.n_items + 1)

    def item_id_table(self) -> np.ndarray:
        """``[n_items + 1]`` original item ids indexed by item index (index 0 = padding, '')."""
        return read_item_ids(self.path, self.n_items)

    def catalogue_sha256(self) -> str:
        """:func:`catalogue_sha256` of this dataset's item ids."""
        return catalogue_sha256(self.item_id_table())


def read_item_ids(root: Path, n_items: int) -> np.ndarray:
    """``root/items.parquet`` as ``[n_items + 1]`` original item ids indexed by item index (index 0 =
    padding, ''); a UserError naming the file when it cannot be read or its indices are not 1..n_items."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = root / ITEMS
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


def catalogue_sha256(item_ids: np.ndarray) -> str:
    """SHA-256 of the item ids in index order (``item_ids[1:]``, one per line): two datasets whose
    item index i names the same item for every i have the same digest. A model stores the digest of
    the catalogue it was trained on, so scoring it on another catalogue of the same size is refused."""
    import hashlib

    h = hashlib.sha256()
    for item in item_ids[1:]:
        h.update(str(item).encode("utf-8") + b"\n")
    return h.hexdigest()


def list_column_arrays(column: Any) -> tuple[np.ndarray, np.ndarray]:
    """A list<int> Arrow column (chunked or not, possibly a slice) as ``(offsets [R + 1] int64 from 0,
    values [offsets[-1]])``: row r is ``values[offsets[r]:offsets[r + 1]]``."""
    col = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    offsets = col.offsets.to_numpy().astype(np.int64)
    values = col.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
    return offsets - offsets[0], values


def _read_manifest(root: Path) -> tuple[dict, int]:
    """``root/manifest.json`` and its item count; a UserError when ``root`` is not a prepared dataset."""
    if not root.is_dir():
        raise UserError(f"{root}: prepared dataset directory not found (create it with `glintru prepare`)")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise UserError(f"{mpath}: missing; {root} is not a prepared dataset (run `glintru prepare`)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        return manifest, int(manifest["counts"]["n_items"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{mpath}: not a valid manifest ({exc})") from None


def load_catalogue(path: str | Path, option: str = "--trained-on") -> tuple[Path, np.ndarray]:
    """A prepared dataset's item ids only (its manifest and ``items.parquet``, not its sequences):
    ``(local directory, [n_items + 1] ids by item index)``. ``path`` may be an object-store URI."""
    from glintru import storage

    if storage.is_remote(path):
        try:
            # the whole dataset, as load_prepared copies it: the cache directory is one per manifest
            path = storage.local_copy(str(path), [SEQUENCES, ITEMS, MANIFEST], MANIFEST, option)
        except FileNotFoundError:
            raise UserError(f"{option} {path}: no {MANIFEST} there; is it a prepared dataset?") from None
    root = Path(path)
    return root, read_item_ids(root, _read_manifest(root)[1])


def load_prepared(path: str | Path) -> PreparedDataset:
    """Read ``DIR/manifest.json`` and ``DIR/sequences.parquet``; clear errors if either is bad.

    ``path`` may be an object-store URI (``s3://bucket/prefix``): the dataset is then copied once
    per machine into a local cache (:func:`glintru.storage.local_copy`) and read from there.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from glintru import storage

    if storage.is_remote(path):
        try:
            path = storage.local_copy(str(path), [SEQUENCES, ITEMS, MANIFEST], MANIFEST)
        except FileNotFoundError:
            raise UserError(f"--data {path}: no {MANIFEST} there; create the dataset with `glintru prepare --out {path}`") from None
    root = Path(path)
    manifest, n_items = _read_manifest(root)
    spath = root / SEQUENCES
    try:
        table = pq.read_table(spath, columns=["user_id", "items"])
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"{spath}: cannot read ({exc})") from None
    offsets, values = list_column_arrays(table.column("items"))
    # A writable copy: Arrow buffers are read-only and torch.from_numpy warns on them.
    items = np.array(values, dtype=np.int32)
    if len(items) and (items.min() < 1 or items.max() > n_items):
        raise UserError(f"{spath}: item indices must lie in 1..{n_items} (manifest n_items)")
    user_ids = np.asarray(table.column("user_id").to_pylist(), dtype=object)
    return PreparedDataset(path=root, manifest=manifest, user_ids=user_ids, offsets=offsets, items=items)
