"""How much context the training windows cut: for each dataset, the share of training targets that
see fewer earlier items in their window than the evaluation gives a target (``min(position,
max_len)``), and how many fewer on average, for disjoint windows and for ``window_overlap`` values.

    python benchmarks/window_context.py --data benchmarks/work/data/ml-1m:200 \\
        benchmarks/work/data/amazon-beauty:50 --overlap-shares 0 0.5 0.75 --out benchmarks/results/window_context.json

Counting only (no training): a target's context in a window is its input position + 1; its full
context is ``min(i, max_len)`` for the target ``s[i]`` of a user's training sequence. Overlaps are
given as shares of each dataset's ``max_len`` (0.75 of 200 = ``window_overlap=150``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glintru.data.dataset import load_prepared
from glintru.engine.batching import make_batch, training_samples
from glintru.storage import atomic_write_text


def window_targets(data, s) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every training target of the ``all_positions`` samples ``s``: its window [n], its input
    position in that window [n], its user [n] and its index in that user's sequence [n]."""
    batch = make_batch(data.items, s, np.arange(len(s)))  # the windows training reads; target 0 = none
    win, pos = np.nonzero(batch["targets"].numpy())  # each target's window and input position
    target = s.start[win] + pos + 1  # index into data.items
    user = np.repeat(np.arange(len(data.offsets) - 1), np.diff(data.offsets))[target]
    return win, pos, user, target - data.offsets[user]


def context_loss(data_dir: str, max_len: int, overlap: int) -> dict:
    """Targets, the share whose window context is shorter than the evaluation's, and the mean items cut."""
    data = load_prepared(data_dir)
    s = training_samples(data, "all_positions", max_len, overlap)
    win, pos, _, i = window_targets(data, s)
    have, full = pos + 1, np.minimum(i, max_len)
    short = have < full
    return {"dataset": Path(data_dir).name, "max_len": max_len, "window_overlap": overlap,
            "targets": int(len(i)), "windows": int(len(s)), "input_positions": int(s.n.sum()),
            "share_cut": float(short.mean()), "mean_items_cut": float((full - have).mean())}


def add_window_options(ap: argparse.ArgumentParser) -> None:
    """``--data PREPARED_DIR:MAX_LEN ...`` and ``--overlap-shares``, read back by :func:`window_specs`."""
    ap.add_argument("--data", nargs="+", required=True, help="PREPARED_DIR:MAX_LEN, one per dataset")
    ap.add_argument("--overlap-shares", type=float, nargs="+", default=[0.0],
                    help="window_overlap as a share of each dataset's max_len, in [0, 1)")


def window_specs(ap: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """``(prepared dir, max_len, window_overlap)`` for every dataset and overlap share; a bad value is
    one ``ap.error`` line naming the option."""
    specs = []
    for spec in args.data:
        path, _, length = spec.rpartition(":")
        if not path or not length.isdigit():
            ap.error(f"--data {spec!r}: expected PREPARED_DIR:MAX_LEN")
        for share in args.overlap_shares:
            if not 0 <= share < 1:
                ap.error(f"--overlap-shares {share}: must be in [0, 1)")
            specs.append((path, int(length), int(share * int(length))))
    return specs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_window_options(ap)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    rows = [context_loss(*spec) for spec in window_specs(ap, args)]
    print(f"{'dataset':<20} {'max_len':>7} {'overlap':>7} {'targets':>9} {'cut %':>6} {'items cut':>9} {'positions / target':>18}")
    for r in rows:
        print(f"{r['dataset']:<20} {r['max_len']:>7} {r['window_overlap']:>7} {r['targets']:>9,} "
              f"{100 * r['share_cut']:>6.1f} {r['mean_items_cut']:>9.1f} {r['input_positions'] / r['targets']:>18.2f}")
    if args.out:
        atomic_write_text(Path(args.out), json.dumps({"benchmark": "window_context", "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
