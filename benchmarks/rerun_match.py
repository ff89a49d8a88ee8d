"""Does a run trained again from the same command reproduce the recorded one? Epoch by epoch.

    python benchmarks/reproduce.py ... --results-dir /tmp/rerun       # the recorded run's command, elsewhere
    python benchmarks/rerun_match.py --recorded benchmarks/results/runs --rerun /tmp/rerun/runs \
        --out benchmarks/results/rerun_match.json

Every run JSON under ``--rerun`` is paired with the run of the same dataset and name under
``--recorded``. A pair matches when the configurations are equal (a field that one record
predates, absent from its configuration, is listed apart and not counted) and, at every epoch,
the training loss, each validation metric and GLINT-RU's diagnostics (mixing weights, expert
output norms) are equal, as are the best and last epochs, the stopping reason and every test
metric. The table gives the largest absolute difference found, so a pair that does not match
shows by how much and from which epoch. Runs are seeded and deterministic on one kind of machine
(same torch, same CPU instructions, same thread count); a rerun on another kind is expected to
differ in the last digits from the first epoch on and then to drift. Rows of an existing
``--out`` file for other pairs are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchinfo import machine, write_result

SAME_MACHINE_KEYS = ("cpu", "cpu_isa", "torch", "torch_threads", "device")


def _read(path: Path) -> dict[str, Any]:
    from glintru.errors import UserError

    try:
        rec = json.loads(path.read_text())
        rec["dataset"], rec["history"], rec["metrics"]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: not a readable JSON file") from None
    except (KeyError, TypeError):
        raise UserError(f"{path}: not a run JSON of benchmarks/reproduce.py (needs dataset, history, metrics)") from None
    return rec


def compare(recorded: dict[str, Any], rerun: dict[str, Any], run: str) -> dict[str, Any]:
    """The differences between two records of the run ``run`` (its file name without ``.json``)."""
    a, b = recorded["config"], rerun["config"]
    config_diff = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    config_one_side = sorted(set(a) ^ set(b))  # a field one record predates: listed, not a difference
    first_diff, max_epoch_diff = None, 0.0
    for x, y in zip(recorded["history"], rerun["history"]):
        keys = [k for k in x if (k == "train/loss" or k.startswith(("valid/", "diag/"))) and k in y]
        d = max((abs(float(x[k]) - float(y[k])) for k in keys), default=0.0)
        if d > 0 and first_diff is None:
            first_diff = int(x["epoch"])
        max_epoch_diff = max(max_epoch_diff, d)
    test_keys = sorted(k for k in recorded["metrics"] if k.startswith("test/") and k in rerun["metrics"])
    max_test_diff = max((abs(recorded["metrics"][k] - rerun["metrics"][k]) for k in test_keys), default=0.0)
    same_course = all(recorded.get(k) == rerun.get(k) for k in ("best_epoch", "epochs", "stopped"))
    rm, nm = recorded.get("machine", {}), rerun.get("machine", {})
    return {
        "dataset": recorded["dataset"], "run": run,
        "config_diff": config_diff, "config_one_side": config_one_side, "epochs": f"{recorded.get('epochs')} / {rerun.get('epochs')}",
        "best_epoch": f"{recorded.get('best_epoch')} / {rerun.get('best_epoch')}",
        "first_epoch_differing": first_diff, "max_epoch_diff": max_epoch_diff, "max_test_diff": max_test_diff,
        "recorded_ndcg@10": recorded["metrics"].get("test/full/ndcg@10"),
        "rerun_ndcg@10": rerun["metrics"].get("test/full/ndcg@10"),
        "match": not config_diff and same_course and max_epoch_diff == 0.0 and max_test_diff == 0.0
        and len(recorded["history"]) == len(rerun["history"]),
        "same_kind_of_machine": all(rm.get(k) == nm.get(k) for k in SAME_MACHINE_KEYS),
        "recorded_finished_utc": recorded.get("finished_utc"), "rerun_finished_utc": rerun.get("finished_utc"),
        "recorded_machine": {k: rm.get(k) for k in SAME_MACHINE_KEYS},
        "rerun_machine": {k: nm.get(k) for k in SAME_MACHINE_KEYS},
    }


def main(argv: list[str] | None = None) -> int:
    from glintru.errors import UserError

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recorded", type=Path, default=Path("benchmarks/results/runs"),
                   help="directory of the recorded run JSONs, <dataset>/<name>.json")
    p.add_argument("--rerun", type=Path, required=True, help="the --results-dir the runs were trained again into")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/rerun_match.json"))
    args = p.parse_args(argv)
    try:
        reruns = sorted(args.rerun.glob("*/*.json"))
        if not reruns:
            raise UserError(f"--rerun {args.rerun}: no run JSONs (<dataset>/<name>.json) in it")
        info = machine()
        rows = []
        for path in reruns:
            twin = args.recorded / path.parent.name / path.name
            if not twin.is_file():
                raise UserError(f"{path}: no recorded run {twin} to compare it with")
            rows.append(compare(_read(twin), _read(path), path.stem))
        kept = []
        if args.out.is_file():
            new = {(r["dataset"], r["run"]) for r in rows}
            kept = [r for r in json.loads(args.out.read_text()).get("rows", []) if (r["dataset"], r["run"]) not in new]
        result = {"benchmark": "rerun_match", "rows": sorted(kept + rows, key=lambda r: (r["dataset"], r["run"]))}
        write_result(args.out, result, info, ["dataset", "run", "epochs", "best_epoch", "first_epoch_differing",
                                              "max_epoch_diff", "max_test_diff", "match", "same_kind_of_machine"])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
