"""Tune every model of the reproduction with the same budget, using the project's own ``glintru tune``.

    python benchmarks/tune_models.py --data-root DATA --datasets amazon-beauty
    python benchmarks/tune_models.py --data-root DATA --models glintru sasrec --max-concurrent 2
    python benchmarks/tune_models.py --data-root DATA --datasets amazon-video-games --set precision=bf16
    python benchmarks/reproduce.py --data-root DATA --plan models --tuned benchmarks/tuned --seeds 1 2 3

Each model's search space is ``benchmarks/spaces/<model>.yaml``: the same number of trials (8), the
same ASHA settings (grace 5 epochs, at most 30 epochs a trial; ``--grace-period N`` for a family of
studies with a longer grace), d = 128 fixed, learning rate and the
model's dropouts searched, plus GLINT-RU's kernel size and mixing initialisation. The study is an
ordinary ``glintru tune`` study (Ray Tune + Optuna, MLflow in ``<work-dir>/mlflow.db``), so an
interrupted call resumes when run again. When a study finishes, its best configuration is copied to
``benchmarks/tuned/<dataset>__<model>.yaml`` (what ``reproduce.py --tuned`` reads) and its trials to
``benchmarks/results/tuning/<dataset>__<model>.json``. A model whose tuned YAML exists is skipped.
``--set KEY=VALUE`` fixes a value in every trial and so in the tuned YAML (``precision=bf16`` on a
CPU with fast bf16: use it for every model of a dataset, so their runs stay comparable).
``--tag NAME`` keeps such a second family of studies apart from the first (e.g. training on
prefixes): its tuned YAMLs go to ``benchmarks/tuned-NAME/`` (the same file names, so
``reproduce.py --tuned benchmarks/tuned-NAME --tag NAME`` reads them) and its trials to
``tuning/<dataset>__<model>__NAME.json``:

    python benchmarks/tune_models.py --data-root DATA --set objective=last_position --set batch_size=2048 --tag prefix
    python benchmarks/tune_models.py --data-root DATA --set target_weight=equal --grace-period 15 --tag equal_grace15

Your own data: ``--prepared NAME=DIR`` (a directory ``glintru prepare --out DIR`` wrote) tunes under
NAME, as ``reproduce.py --prepared`` then trains; the window is the space files' 50 unless ``--set
max_len=N`` (give reproduce.py the same).

Ctrl+C (or ``timeout -s INT``, ``kill -INT`` of this process) stops the study under way: ``glintru
tune`` gets the interrupt once, saves the study and exits, and this script exits 130; ``kill``
(SIGTERM) likewise, forwarded as SIGTERM, exit 143. The same command resumes the study.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from reproduce import (  # noqa: E402
    DATASETS,
    OWN_DATA_PROTOCOL,
    Terminated,
    check_tag,
    dataset_dir,
    handle_signals,
    machine,
    parse_prepared,
    protocol,
    select_datasets,
)

from glintru.errors import UserError  # noqa: E402

SPACES = ROOT / "benchmarks" / "spaces"
SPACE_WINDOW = OWN_DATA_PROTOCOL["max_len"]  # every space file's fixed max_len (a test checks them)
MODELS = ("glintru", "sasrec_preln", "narm", "gru4rec", "sasrec_1block", "sasrec")


def first_trial(model: str, trials: list[dict[str, str]]) -> str | None:
    """The id of the study's first trial: every searched key at its config default (``paper_point``)."""
    from glintru.tuning.search import paper_point
    from glintru.tuning.space import load_search_space

    space = load_search_space(SPACES / f"{model}.yaml")
    t = matching_trial(trials, paper_point(space, dict(space.fixed)))
    return t["trial_id"] if t else None


def space_grace(model: str) -> int:
    """The ASHA grace period of ``model``'s search-space file (what a study without ``--grace-period`` uses)."""
    from glintru.tuning.space import load_search_space

    return load_search_space(SPACES / f"{model}.yaml").tune.get("grace_period", 1)


def matching_trial(trials: list[dict[str, str]], point: dict[str, object]) -> dict[str, str] | None:
    """The first row of a study's trials whose searched values are ``point``'s, or None."""
    for t in trials:
        if all(abs(float(t[k]) - float(v)) < 1e-9 for k, v in point.items()):
            return t
    return None


def study_log(work_dir: Path, key: str) -> Path:
    """The log of study ``key`` (:func:`study_key`): glintru tune's output, every invocation appended."""
    return work_dir / "logs" / f"tune__{key}.log"


def study_key(dataset: str, model: str, tag: str | None = None) -> str:
    """``<dataset>__<model>``, with ``__<tag>`` for a tagged family of studies: names its output
    directory, log and trials file."""
    return f"{dataset}__{model}" + (f"__{tag}" if tag else "")


class StudyInterrupted(KeyboardInterrupt):
    """Raised by :func:`run_study` once the interrupted ``glintru tune`` has exited (``rc``: its status)."""

    def __init__(self, rc: int | None, study: str = "", terminated: bool = False) -> None:
        super().__init__(rc)
        self.rc, self.study, self.terminated = rc, study, terminated


def run_study(cmd: list[str], log, env: dict[str, str], cwd: Path) -> int:
    """Run ``glintru tune`` (``cmd``, output to the open file ``log``) to its end; return its exit status.

    The child runs in a session of its own, so an interrupt reaches it exactly once, forwarded from
    here, whether it came from the terminal (which signals this process group) or was sent to this
    process alone: ``glintru tune`` then saves the study and exits, and :class:`StudyInterrupted` is
    raised after it has. A second interrupt while it saves is forwarded too. SIGTERM to this process
    (:class:`reproduce.Terminated`) is forwarded as SIGTERM, which ``glintru tune`` handles alike."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    interrupted = terminated = False
    while proc.poll() is None:
        try:
            proc.wait()
        except KeyboardInterrupt as exc:
            interrupted, terminated = True, terminated or isinstance(exc, Terminated)
            proc.send_signal(signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
    if interrupted:
        raise StudyInterrupted(proc.returncode, terminated=terminated)
    return proc.returncode


def last_error(log: Path) -> str | None:
    """The last ``error: ...`` line ``glintru tune`` wrote to ``log`` (its one-line message for bad
    input, e.g. a catalogue too small for the sampled protocol), or None."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("error: ")]
    return lines[-1] if lines else None


def record_invocation(path: Path, wall_s: float, rc: int | None) -> list[dict]:
    """Append one invocation of a study (seconds, exit status; None if interrupted before it
    returned) to ``path`` and return them all: a study resumed over several invocations records the
    sum as its wall time."""
    walls = json.loads(path.read_text()) if path.is_file() else []
    walls.append({"wall_s": round(wall_s, 1), "rc": rc, "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(walls, indent=1) + "\n")
    tmp.replace(path)
    return walls


def tune_one(dataset: str, model: str, data_dir: Path, work_dir: Path, tuned_dir: Path, results_dir: Path,
             max_concurrent: int, overrides: list[str] = (), tag: str | None = None,
             grace_period: int | None = None) -> dict:
    key = study_key(dataset, model, tag)
    out = work_dir / "tune-out" / key
    cmd = [sys.executable, "-m", "glintru", "tune", "--search-space", str(SPACES / f"{model}.yaml"),
           "--data", str(data_dir), "--storage-path", str(work_dir / "tune"),
           "--mlflow-uri", f"sqlite:///{work_dir / 'mlflow.db'}", "--max-concurrent", str(max_concurrent),
           "--num-cpus", str(max_concurrent), "--out", str(out)]
    if grace_period is not None:  # else the space file's (the same for every model)
        cmd += ["--grace-period", str(grace_period)]
    window = protocol(dataset)["max_len"]
    if window != SPACE_WINDOW:  # ML-1M's 200; the space files fix the Amazon window
        cmd += ["--set", f"max_len={window}"]
    for item in overrides:  # e.g. precision=bf16, the same for every model of a dataset
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per trial
    log = study_log(work_dir, key)
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rc = None
    try:
        with log.open("a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            rc = run_study(cmd, fh, env, work_dir)
    except StudyInterrupted as exc:
        rc, exc.study = exc.rc, key
        raise
    finally:  # an interrupted invocation's time counts too: the study resumes from it
        walls = record_invocation(log.with_suffix(".walls.json"), time.perf_counter() - t0, rc)
    if rc != 0:
        said = last_error(log)
        raise RuntimeError(f"glintru tune exited {rc}" + (f" ({said})" if said else "") + f"; see {log}")
    tuned_dir.mkdir(parents=True, exist_ok=True)
    with (out / "trials.csv").open() as fh:
        trials = list(csv.DictReader(fh))
    record_first = first_trial(model, trials)
    record = {"dataset": dataset, "model": model, "tag": tag, "search_space": f"benchmarks/spaces/{model}.yaml",
              "trials": trials, "first_trial": record_first, "overrides": list(overrides),
              "grace_period": grace_period or space_grace(model),
              "wall_s": round(sum(w["wall_s"] for w in walls), 1), "invocations": walls, "max_concurrent": max_concurrent,
              "best_config": (out / "best_config.yaml").read_text(), "machine": machine(),
              "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    results_dir.mkdir(parents=True, exist_ok=True)
    tmp = results_dir / f"{key}.json.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(results_dir / f"{key}.json")
    shutil.copyfile(out / "best_config.yaml", tuned_dir / f"{dataset}__{model}.yaml.tmp")
    (tuned_dir / f"{dataset}__{model}.yaml.tmp").replace(tuned_dir / f"{dataset}__{model}.yaml")
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", help="directory holding ml-1m/, amazon-beauty/, amazon-video-games/ "
                    "(for the reproduction's own datasets)")
    ap.add_argument("--prepared", action="append", metavar="NAME=DIR",
                    help="a dataset of your own, prepared with `glintru prepare --out DIR`, tuned under NAME "
                         f"(window {SPACE_WINDOW} unless --set max_len=N); repeatable")
    ap.add_argument("--datasets", nargs="+", metavar="DATASET",
                    help=f"{', '.join(DATASETS)} or --prepared names (default: the --prepared ones, else amazon-beauty)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "work"))
    ap.add_argument("--tuned-dir", help="where the best configurations go (default: benchmarks/tuned, "
                    "benchmarks/tuned-TAG with --tag)")
    ap.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"),
                    help="the results directory, as for reproduce.py; each study's trials go to its tuning/")
    ap.add_argument("--max-concurrent", type=int, default=2, help="trials at once (one CPU and one thread each)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a config value fixed for every trial of every study of this call, e.g. precision=bf16 "
                         "(use the same for every model of a dataset); repeatable")
    ap.add_argument("--tag", help="name a second family of studies (with --set), kept apart from the first")
    ap.add_argument("--grace-period", type=int, help="epochs before ASHA may stop a trial, for every study of the "
                    "call (default: the space files' 5); name the family with --tag")
    args = ap.parse_args(argv)
    try:
        args.prepared = parse_prepared(args.prepared)
        args.datasets = select_datasets(args.datasets, args.prepared, args.data_root)
        check_tag(args.tag)
        if args.grace_period is not None and args.grace_period < 1:
            raise UserError(f"--grace-period: must be >= 1, got {args.grace_period}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    work_dir = Path(args.work_dir).resolve()
    default_tuned = ROOT / "benchmarks" / ("tuned" if args.tag is None else f"tuned-{args.tag}")
    tuned_dir = Path(args.tuned_dir) if args.tuned_dir else default_tuned
    results_dir = Path(args.results_dir) / "tuning"
    try:
        failed = tune_all(args, work_dir, tuned_dir, results_dir)
    except StudyInterrupted as exc:
        print(f"{time.strftime('%H:%M:%S')} {'terminated' if exc.terminated else 'interrupted'}: study {exc.study} "
              f"stopped (glintru tune exited {exc.rc}) with its trials saved; the same command resumes it",
              file=sys.stderr, flush=True)
        return 143 if exc.terminated else 130
    return 1 if failed else 0


def tune_all(args: argparse.Namespace, work_dir: Path, tuned_dir: Path, results_dir: Path) -> int:
    """Every study of the call in turn (a model whose tuned file exists is skipped); the number that failed."""
    failed = 0
    for ds in args.datasets:
        data_dir = dataset_dir(ds, args.data_root, work_dir, args.prepared).resolve()
        for model in args.models:
            if (tuned_dir / f"{ds}__{model}.yaml").is_file():
                print(f"skip {ds} {model}: {tuned_dir / f'{ds}__{model}.yaml'} exists", flush=True)
                continue
            print(f"{time.strftime('%H:%M:%S')} tuning {ds} {model} (the study's progress: "
                  f"{study_log(work_dir, study_key(ds, model, args.tag))})", flush=True)
            try:
                rec = tune_one(ds, model, data_dir, work_dir, tuned_dir, results_dir, args.max_concurrent,
                               args.overrides, args.tag, args.grace_period)
            except RuntimeError as exc:
                failed += 1
                print(f"{time.strftime('%H:%M:%S')} FAILED {ds} {model}: {exc}", flush=True)
                continue
            print(f"{time.strftime('%H:%M:%S')} done {ds} {model}: {len(rec['trials'])} trials, "
                  f"{rec['wall_s']:.0f} s", flush=True)
    return failed


if __name__ == "__main__":
    # Ctrl+C, `kill -INT` and `kill` stop the study under way even when a non-interactive shell started
    # this in the background, which leaves SIGINT ignored (glintru tune sets its own handlers likewise)
    handle_signals()
    sys.exit(main())
