"""How much removing a user's own history from the full ranking lifts the metrics of a trained run.

    python benchmarks/history_masking.py --work-dir benchmarks/work \
        --runs benchmarks/results/runs/ml-1m/glintru__tuned__from-amazon-beauty__seed1.json \
        --out benchmarks/results/history_masking.json

Our protocol keeps every item a candidate (as RecBole's full-sort evaluation of sequential models
does); some published evaluations remove the items a user already interacted with before ranking.
In data where no user repeats an item, a target is never a history item, so masking only shrinks
the candidate set: every metric rises, the model unchanged. This script takes finished runs of
``benchmarks/reproduce.py`` and their test ranks both ways (``benchmarks/user_ranks.py``: the run's
ranks file, else computed from its ``best.pt`` under ``--work-dir`` with the run's own settings and
written for next time), and checks that the unmasked figure equals the one the run recorded. Rows
of an existing ``--out`` file for other runs are kept, so runs can be added as they finish.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchinfo import machine, with_earlier_rows, write_result
from user_ranks import KINDS, check_available, metrics, run_ranks


def rescore(result_json: Path, work_dir: Path | None) -> dict[str, object]:
    rec, ranks = run_ranks(result_json, work_dir)
    row: dict[str, object] = {"dataset": rec["dataset"], "run": result_json.stem,
                              "recorded_ndcg@10": rec["metrics"]["test/full/ndcg@10"]}
    for kind in KINDS:
        m = metrics(ranks[kind])
        row[f"{kind}_hr@10"], row[f"{kind}_ndcg@10"] = m["hr@10"], m["ndcg@10"]
    row["ndcg_lift"] = row["masked_ndcg@10"] / row["kept_ndcg@10"]
    return {**row, "cpu": ranks["cpu"], "date_utc": ranks["date_utc"]}  # where and when the ranks were computed


def main(argv: list[str] | None = None) -> int:
    from glintru.errors import UserError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", required=True, help="run JSON files of benchmarks/reproduce.py")
    ap.add_argument("--work-dir", help="reproduce.py's --work-dir (prepared data and run dirs), for runs without a "
                                        "ranks file")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine(args.threads)
    try:
        work_dir = Path(args.work_dir) if args.work_dir else None
        for p in args.runs:  # every input checked before the first (slow) rescoring
            check_available(Path(p), work_dir)
        rows = [rescore(Path(p), work_dir) for p in args.runs]
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    rows = with_earlier_rows(out, rows, ("dataset", "run"))  # each row names its CPU and date
    write_result(out, {"benchmark": "history_masking", "split": "test", "rows": rows}, info,
                 ["dataset", "run", "kept_hr@10", "kept_ndcg@10", "masked_hr@10", "masked_ndcg@10", "ndcg_lift"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
