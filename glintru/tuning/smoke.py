"""A tiny synthetic prepared dataset for ``--smoke-test`` runs (any machine, a few seconds).

Writes the prepared-directory layout of docs/architecture.md: ``manifest.json``,
``sequences.parquet`` (one row per user) and ``items.parquet``. Sequences follow a noisy cycle
(item i is mostly followed by item i+1), so a model can learn something in one or two epochs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_synthetic_dataset(out: str | Path, n_users: int = 48, n_items: int = 30, seed: int = 0) -> Path:
    """Write a prepared dataset with ``n_users`` sequences of 4..16 items over ``n_items`` items."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    seqs: list[list[int]] = []
    for _ in range(n_users):
        length = int(rng.integers(4, 17))
        start = int(rng.integers(0, n_items))
        steps = np.where(rng.random(length) < 0.8, 1, rng.integers(2, n_items, size=length))
        seqs.append([int(v) + 1 for v in (start + np.cumsum(steps) - steps[0]) % n_items])
    lengths = np.array([len(s) for s in seqs])
    table = pa.table(
        {
            "user_id": pa.array([f"u{u}" for u in range(n_users)], pa.string()),
            "items": pa.array(seqs, pa.list_(pa.int32())),
            "timestamps": pa.array([list(range(len(s))) for s in seqs], pa.list_(pa.int64())),
        }
    )
    pq.write_table(table, root / "sequences.parquet")
    items = pa.table(
        {
            "item_idx": pa.array(np.arange(1, n_items + 1), pa.int32()),
            "item_id": pa.array([f"i{i}" for i in range(1, n_items + 1)], pa.string()),
        }
    )
    pq.write_table(items, root / "items.parquet")
    n_eval = int((lengths >= 3).sum())
    manifest = {
        "format_version": 1,
        "source": {"path": "synthetic", "sha256": None, "format": "synthetic"},
        "options": {"seed": seed},
        "counts": {
            "n_users": n_users,
            "n_items": n_items,
            "n_interactions": int(lengths.sum()),
            "min_length": int(lengths.min()),
            "median_length": float(np.median(lengths)),
            "mean_length": float(lengths.mean()),
            "max_length": int(lengths.max()),
            "sparsity": float(1 - lengths.sum() / (n_users * n_items)),
        },
        "split": {"rule": "leave-one-out", "n_valid": n_eval, "n_test": n_eval},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return root
