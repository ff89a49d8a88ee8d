"""How much removing a user's own history from the full ranking lifts the metrics of a trained run.

    python benchmarks/history_masking.py --work-dir benchmarks/work \
        --runs benchmarks/results/runs/ml-1m/glintru__tuned__from-amazon-beauty__seed1.json \
        --out benchmarks/results/history_masking.json

Our protocol keeps every item a candidate (as RecBole's full-sort evaluation of sequential models
does); some published evaluations remove the items a user already interacted with before ranking.
In data where no user repeats an item, a target is never a history item, so masking only shrinks
the candidate set: every metric rises, the model unchanged. This script takes finished runs of
``benchmarks/reproduce.py`` (their JSON and their ``best.pt`` under ``--work-dir``), scores the test
split both ways with the run's own settings, and checks that the unmasked figure equals the one
the run recorded. Rows of an existing ``--out`` file for other runs are kept, so runs can be added
as they finish.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchinfo import machine, write_result


def run_record(result_json: Path, work_dir: Path) -> tuple[dict, Path]:
    """A run JSON of ``reproduce.py`` and the best weights it was written from, both checked to exist
    (a JSON in git is not enough: the weights stay in the ``--work-dir`` of the machine that trained)."""
    from glintru.errors import UserError

    try:
        rec = json.loads(result_json.read_text())
        dataset = rec["dataset"]
    except FileNotFoundError:
        raise UserError(f"{result_json}: no such run JSON") from None
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise UserError(f"{result_json}: not a run JSON of benchmarks/reproduce.py (no \"dataset\" field)") from None
    stem = rec.get("same_run_as", result_json.name).removesuffix(".json")  # a twin's weights are its original's
    weights = work_dir / "runs" / dataset / stem / "best.pt"
    if not weights.is_file():
        raise UserError(f"{result_json}: its weights {weights} are missing (--work-dir must be the one the run "
                        "trained in)")
    return rec, weights


def load_run(result_json: Path, work_dir: Path) -> tuple[dict, object, object, object]:
    """A finished run of ``reproduce.py``: its record, best weights, prepared data and train config."""
    from glintru.config import build_config
    from glintru.data.dataset import load_prepared
    from glintru.loading import load_model

    rec, weights = run_record(result_json, work_dir)
    data = load_prepared(work_dir / "data" / rec["dataset"])
    model = load_model(weights).model
    return rec, model, data, build_config(rec["model"], rec["config"]).train


def with_earlier_rows(out: Path, rows: list[dict], key: tuple[str, ...]) -> list[dict]:
    """``rows`` after the rows of an existing ``out`` file that none of them replaces (same ``key``
    fields), so results can be added to the file as runs finish."""
    if not out.is_file():
        return rows
    done = {tuple(r[k] for k in key) for r in rows}
    return [r for r in json.loads(out.read_text())["rows"] if tuple(r[k] for k in key) not in done] + rows


def rescore(result_json: Path, work_dir: Path) -> dict[str, object]:
    from dataclasses import replace

    from glintru.engine.evaluate import evaluate

    rec, model, data, train = load_run(result_json, work_dir)
    row: dict[str, object] = {"dataset": rec["dataset"], "run": result_json.stem,
                              "recorded_ndcg@10": rec["metrics"]["test/full/ndcg@10"]}
    for masked in (False, True):
        m = evaluate(model, data, "test", replace(train, exclude_history=masked), negatives=None)
        tag = "masked" if masked else "kept"
        row[f"{tag}_hr@10"], row[f"{tag}_ndcg@10"] = m["test/full/hr@10"], m["test/full/ndcg@10"]
    row["ndcg_lift"] = row["masked_ndcg@10"] / row["kept_ndcg@10"]
    return row


def main(argv: list[str] | None = None) -> int:
    from glintru.errors import UserError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", required=True, help="run JSON files of benchmarks/reproduce.py")
    ap.add_argument("--work-dir", required=True, help="reproduce.py's --work-dir (prepared data and run dirs)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine(args.threads)
    try:
        for p in args.runs:  # every input checked before the first (slow) rescoring
            run_record(Path(p), Path(args.work_dir))
        rows = [{**rescore(Path(p), Path(args.work_dir)), "cpu": info["cpu"], "date_utc": info["date_utc"]}
                for p in args.runs]
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in rows:  # the unmasked score is the run's own test figure (same weights, same settings)
        if abs(r["kept_ndcg@10"] - r["recorded_ndcg@10"]) > 1e-6:
            print(f"warning: {r['run']}: unmasked NDCG@10 {r['kept_ndcg@10']:.6f} differs from the recorded "
                  f"{r['recorded_ndcg@10']:.6f}", file=sys.stderr)
    out = Path(args.out)
    rows = with_earlier_rows(out, rows, ("dataset", "run"))  # each row names its CPU and date
    write_result(out, {"benchmark": "history_masking", "split": "test", "rows": rows}, info,
                 ["dataset", "run", "kept_hr@10", "kept_ndcg@10", "masked_hr@10", "masked_ndcg@10", "ndcg_lift"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
