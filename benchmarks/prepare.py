"""Benchmark ``glintru prepare`` on the real sequence files and check their counts.

    python benchmarks/prepare.py --data-root DATA
    python benchmarks/prepare.py --data-root DATA --only ml-1m --repeat 3

Each dataset is prepared in a fresh child process (``python -m glintru.cli prepare``) into a
temporary directory. Figures per dataset:
  wall_s       wall time of the whole child process (interpreter start, imports, read, write)
  prepare_s    wall time of the ``prepare()`` call alone, measured inside the child
  peak_rss_mb  peak resident memory of the child: ``ru_maxrss`` from ``os.wait4`` (KiB on Linux)
With ``--repeat N`` the fastest run is kept. The results go to ``benchmarks/results/prepare.json``.
The input files are read from ``--data-root`` and never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATASETS = {
    # name: (path under the data root, expected (users, items, interactions))
    "ml-1m": ("ml-1m/ml-1m.seq.txt", (6040, 3706, 1000209)),
    "amazon-beauty": ("amazon-beauty/Beauty.txt", (22363, 12101, 198502)),
    "amazon-video-games": ("amazon-video-games/Video_Games.txt", (24303, 10672, 231780)),
}
TARGETS = {"ml-1m": {"wall_s": 10.0, "peak_rss_mb": 1024.0}}

CHILD = """
import json, sys, time
from glintru.data.prepare import prepare
t0 = time.perf_counter()
m = prepare(sys.argv[1], sys.argv[2])
print(json.dumps({"prepare_s": time.perf_counter() - t0, "counts": m["counts"]}))
"""


def run_child(source: Path, out: Path) -> dict:
    """Prepare ``source`` into ``out`` in a child process; wall time, peak RSS and the counts."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(source), str(out)], stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{source}: prepare failed with exit code {proc.returncode}")
    child = json.loads(stdout.strip().splitlines()[-1])
    peak_mb = usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux
    return {"wall_s": wall, "prepare_s": child["prepare_s"], "peak_rss_mb": peak_mb, "counts": child["counts"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--only", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "prepare.json")
    args = ap.parse_args()

    results, ok = {}, True
    with tempfile.TemporaryDirectory(prefix="glintru-bench-") as tmp:
        for name in args.only:
            rel, expected = DATASETS[name]
            runs = [run_child(args.data_root / rel, Path(tmp) / f"{name}-{i}") for i in range(args.repeat)]
            best = min(runs, key=lambda r: r["wall_s"])
            c = best["counts"]
            got = (c["n_users"], c["n_items"], c["n_interactions"])
            counts_ok = got == expected
            ok &= counts_ok
            target = TARGETS.get(name, {})
            meets = all(best[k] < v for k, v in target.items())
            ok &= meets
            results[name] = {
                "source": rel,
                "wall_s": round(best["wall_s"], 3),
                "prepare_s": round(best["prepare_s"], 3),
                "peak_rss_mb": round(best["peak_rss_mb"], 1),
                "n_users": got[0],
                "n_items": got[1],
                "n_interactions": got[2],
                "expected": dict(zip(("n_users", "n_items", "n_interactions"), expected)),
                "counts_ok": counts_ok,
                "targets": target,
                "meets_targets": meets,
                "runs": args.repeat,
            }
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1min_at_end": round(os.getloadavg()[0], 2),  # > cpus means the figures are contended
        },
        "memory_measure": "ru_maxrss of the child process (os.wait4), whole process incl. interpreter and imports",
        "datasets": results,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n")

    print(f"{'dataset':20} {'users':>7} {'items':>7} {'inter.':>9} {'counts':>6} {'wall s':>7} {'prep s':>7} "
          f"{'peak MB':>8}  target")
    for name, r in results.items():
        t = r["targets"]
        tgt = f"wall < {t['wall_s']:.0f} s, peak < {t['peak_rss_mb']:.0f} MB" if t else "-"
        print(f"{name:20} {r['n_users']:>7} {r['n_items']:>7} {r['n_interactions']:>9} "
              f"{'ok' if r['counts_ok'] else 'WRONG':>6} {r['wall_s']:>7.2f} {r['prepare_s']:>7.2f} "
              f"{r['peak_rss_mb']:>8.0f}  {tgt}{'' if not t else (' (met)' if r['meets_targets'] else ' (MISSED)')}")
    print(f"written {args.results}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
