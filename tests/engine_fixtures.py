"""Tiny datasets for the engine and ``glintru train`` tests (built in memory or written as a prepared dir)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from glintru.data.dataset import PreparedDataset


def cyclic_sequences(n_users: int, n_items: int, min_len: int = 3, max_len: int = 14) -> list[list[int]]:
    """User u walks the catalogue in steps of 1 + u % 2 from item 1 + u % n_items: learnable, varied lengths."""
    out = []
    for u in range(n_users):
        length = min_len + (u * 5) % (max_len - min_len + 1)
        step = 1 + u % 2
        out.append([1 + (u + step * i) % n_items for i in range(length)])
    return out


def make_dataset(sequences: list[list[int]], n_items: int) -> PreparedDataset:
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sequences])]).astype(np.int64)
    return PreparedDataset(
        path=Path("in-memory"),
        manifest={"counts": {"n_items": n_items}},
        user_ids=np.array([str(u) for u in range(len(sequences))], dtype=object),
        offsets=offsets,
        items=np.array([i for s in sequences for i in s], dtype=np.int32),
    )


def write_prepared(root: Path, sequences: list[list[int]], n_items: int) -> Path:
    """A prepared dataset directory as docs/architecture.md describes it (manifest + parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    lengths = [len(s) for s in sequences]
    manifest = {
        "format_version": 1,
        "source": {"path": "synthetic", "sha256": "0" * 64, "format": "synthetic"},
        "options": {},
        "counts": {"n_users": len(sequences), "n_items": n_items, "n_interactions": sum(lengths)},
        "split": {"rule": "leave-one-out"},
    }
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    table = pa.table({
        "user_id": pa.array([f"u{u}" for u in range(len(sequences))], pa.string()),
        "items": pa.array(sequences, pa.list_(pa.int32())),
        "timestamps": pa.array([None] * len(sequences), pa.list_(pa.int64())),
    })
    pq.write_table(table, root / "sequences.parquet")
    items = pa.table({"item_idx": pa.array(range(1, n_items + 1), pa.int32()),
                      "item_id": pa.array([str(i) for i in range(1, n_items + 1)], pa.string())})
    pq.write_table(items, root / "items.parquet")
    return root
