"""Is the difference between two trained runs larger than what the test users alone make it vary?
Each run's per-user test ranks (its ranks file, ``benchmarks/user_ranks.py``; for a run recorded
before those, its best weights under ``--work-dir`` with its own settings), paired user by user:
the mean difference of NDCG@10 and HR@10 with a bootstrap 95% interval over users.

    python benchmarks/paired_users.py --work-dir benchmarks/work \\
        --base benchmarks/results/runs/ml-1m/glintru__tuned__from-amazon-beauty__seed1.json \\
        --against benchmarks/results/runs/ml-1m/sasrec__tuned__from-amazon-beauty__seed1.json \\
        --out benchmarks/results/paired_users.json

A one-seed comparison carries two kinds of noise: the training seed's and that of the users who
happen to form the test set. This measures the second only, paired (both runs rank the same users'
targets, so what users have in common cancels): an interval that excludes 0 says the two sets of
weights differ on this population beyond user sampling; whether another seed would keep the order
is a question for the seed spread (on the Amazon datasets, measured with 3 seeds). Rows of an
existing ``--out`` file for other pairs are kept, so pairs can be added as runs finish.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchinfo import machine, with_earlier_rows, write_result
from user_ranks import check_available, per_user, run_ranks

BOOTSTRAP = 10_000


def user_ranks(result_json: Path, work_dir: Path | None) -> np.ndarray:
    """The 0-based full-ranking rank of every test user's target (in ``data.eval_examples("test")``
    order): the run's ranks file, else computed from its weights (``benchmarks/user_ranks.py``)."""
    return run_ranks(result_json, work_dir)[1]["kept"]


def paired(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Mean of ``a - b`` (per user), its standard error and a percentile bootstrap 95% interval."""
    d = a - b
    n = len(d)
    rng = np.random.default_rng(seed)
    means = np.concatenate([d[rng.integers(0, n, size=(1000, n))].mean(axis=1) for _ in range(BOOTSTRAP // 1000)])
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"diff": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(n)), "ci95_lo": float(lo),
            "ci95_hi": float(hi)}


def compare(base: Path, against: list[Path], work_dir: Path | None) -> list[dict[str, object]]:
    from glintru.errors import UserError

    dataset = check_available(base, work_dir)["dataset"]
    for other in against:  # every input checked before the first (slow) evaluation
        if (other_ds := check_available(other, work_dir)["dataset"]) != dataset:
            raise UserError(f"{other}: dataset {other_ds}, not the same test users as {base} (dataset {dataset})")
    ranks_a = user_ranks(base, work_dir)
    ua = per_user(ranks_a)
    rows = []
    for other in against:
        ranks_b = user_ranks(other, work_dir)
        if len(ranks_b) != len(ranks_a):
            raise UserError(f"{other}: {len(ranks_b)} test users, not the same as {base}'s {len(ranks_a)}")
        ub = per_user(ranks_b)
        row: dict[str, object] = {"dataset": dataset, "base": base.stem, "other": other.stem,
                                  "users": len(ranks_a), "base_better": int((ranks_a < ranks_b).sum()),
                                  "other_better": int((ranks_b < ranks_a).sum())}
        for metric in ("ndcg@10", "hr@10"):
            row[f"base_{metric}"], row[f"other_{metric}"] = float(ua[metric].mean()), float(ub[metric].mean())
            row.update({f"{k}_{metric}": v for k, v in paired(ua[metric], ub[metric]).items()})
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    from glintru.errors import UserError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="a run JSON of benchmarks/reproduce.py")
    ap.add_argument("--against", nargs="+", required=True, help="run JSONs of the same dataset to compare with")
    ap.add_argument("--work-dir", help="reproduce.py's --work-dir (prepared data and run dirs), for runs without a "
                                        "ranks file")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine(args.threads)
    try:
        rows = compare(Path(args.base), [Path(p) for p in args.against], Path(args.work_dir) if args.work_dir else None)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    rows = with_earlier_rows(out, rows, ("dataset", "base", "other"))
    write_result(out, {"benchmark": "paired_users", "split": "test", "bootstrap": BOOTSTRAP, "rows": rows}, info,
                 ["dataset", "base", "other", "diff_ndcg@10", "ci95_lo_ndcg@10", "ci95_hi_ndcg@10", "diff_hr@10",
                  "ci95_lo_hr@10", "ci95_hi_hr@10", "base_better", "other_better"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
