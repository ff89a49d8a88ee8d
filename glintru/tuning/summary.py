"""The end of a study: the best trial, ``best_config.yaml`` and ``trials.csv``, then MLflow.

Local outputs are written first (they need nothing else). Then every trial's MLflow run is brought
up to date from what was trained (:func:`sync_trial`, idempotent: MLflow may have been down while
trials ran), the parent run gets the study's summary as tags and metrics (never params, which MLflow
never lets change: a resumed study may find a better trial), the Optuna plots as artifacts, and
the best model is registered (:mod:`glintru.tuning.registry`).

Where a trial's time went is kept as tags ``ray.*`` and a ``trial_timing.json`` artifact: one value
per run, so the run page opens on the per-epoch validation curves.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glintru import storage, tracking
from glintru.errors import MlflowUnavailable, UserError
from glintru.tuning import search
from glintru.tuning.settings import StudySettings
from glintru.tuning.space import SearchSpace

TIMING_FILE = "trial_timing.json"
TIMING_COLUMNS = ("trial_s", "fit_s", "train_s", "overhead_s")
RESUMED_MIN_S = 0.5  # a fit this much longer than this call's: the trial resumed from earlier segments


@dataclass
class StudyOutcome:
    best_trial_id: str
    best_config_path: Path
    best_params: dict[str, Any]
    best_metrics: dict[str, float]
    n_trials: int
    parent_run_id: str


def trial_timing(started: float, fit_started: float, ended: float, final: dict[str, Any]) -> dict[str, float]:
    """Where a trial's wall time went (seconds): ``ray/trial_s`` from the trial function's start to
    the end of its training, ``ray/fit_s`` inside the engine's ``fit`` (data, model, epochs,
    evaluation), ``ray/train_s`` in its training loop, and ``ray/overhead_s`` = trial - fit
    (Tune, MLflow set-up and, for Ray Train trials, the controller, workers and process group).

    A trial resumed from its checkpoint after the study was interrupted reports the engine's time
    over every segment in ``wall_s`` but runs this function once: the earlier segments' fit time
    (``ray/resumed_s``, the engine's total less this call's) is added to ``ray/trial_s`` so that the
    trial's time is never below its fit time; their Ray overhead is unknown and counts as 0."""
    fit_s = float(final.get("wall_s", 0.0))
    resumed_s = fit_s - (ended - fit_started)
    resumed_s = resumed_s if resumed_s > RESUMED_MIN_S else 0.0  # not a clock's jitter (two clocks)
    trial_s = ended - started + resumed_s
    out = {
        "ray/trial_s": trial_s,
        "ray/setup_s": fit_started - started,
        "ray/fit_s": fit_s,
        "ray/train_s": float(final.get("train_s", 0.0)),
        "ray/overhead_s": max(0.0, trial_s - fit_s),
    }
    if resumed_s > 0:
        out["ray/resumed_s"] = resumed_s
    return out


def timing_path(s: StudySettings, trial_id: str) -> str:
    return storage.join(s.experiment_path, "work", trial_id, TIMING_FILE)


def read_timing(s: StudySettings, trial_id: str) -> dict[str, float]:
    """The trial's own timing (``trial_timing.json`` in the storage path), or {} if it has none."""
    try:
        return json.loads(storage.read_text(timing_path(s, trial_id), "--storage-path"))
    except (OSError, ValueError, UserError):
        return {}


def partial_timing(result: Any, history: list[dict[str, float]]) -> dict[str, float]:
    """What is known of a trial that did not time itself (stopped by ASHA): Tune's wall time up to
    its last report and the training-loop time of its epochs."""
    out: dict[str, float] = {}
    total = (result.metrics or {}).get("time_total_s")
    if isinstance(total, (int, float)):
        out["ray/trial_s"] = float(total)
    if history and all("train/s" in h for h in history):
        out["ray/train_s"] = float(sum(h["train/s"] for h in history))
    return out


def trial_history(s: StudySettings, trial_id: str, result: Any) -> list[dict[str, float]]:
    """Per-epoch metrics of a trial: its work directory's ``history.json`` (written by rank 0 every
    epoch), else the epochs Tune recorded (remote storage)."""
    hist = Path(s.experiment_path) / "work" / trial_id / "history.json"
    if s.is_local and hist.exists():
        return json.loads(hist.read_text(encoding="utf-8"))
    rows: dict[int, dict[str, float]] = {}
    df = getattr(result, "metrics_dataframe", None)
    if df is not None and "epoch" in df:
        for row in df.to_dict("records"):
            keep = {k: float(v) for k, v in row.items() if k == "epoch" or k.startswith(("train/", "valid/", "diag/"))}
            if keep.get("epoch") is not None and math.isfinite(keep["epoch"]):
                rows[int(keep["epoch"])] = keep
    return [rows[e] for e in sorted(rows)]


def chosen_metrics(last: dict[str, Any], history: list[dict[str, float]], metric: str) -> tuple[dict[str, float], int | None]:
    """The chosen trial's validation and test metrics at its best epoch, and that epoch.

    Tune chooses the trial whose best epoch reported the highest ``metric`` (scope "all"), but its
    result holds its last report: for a trial ASHA stopped some epochs after its peak that is lower,
    and neither the summary nor the registry's score should show it. A trial that ran to its end
    reported its best epoch's validation metrics last (the engine's final report), so it is unchanged."""
    out = {k: float(v) for k, v in last.items() if k.startswith(("valid/", "test/")) or k == metric}
    rows = [h for h in history if metric in h and "epoch" in h]
    if not rows:
        return out, None
    peak = max(rows, key=lambda h: h[metric])
    if peak[metric] > out.get(metric, -math.inf):
        out.update({k: float(v) for k, v in peak.items() if k.startswith("valid/") or k == metric})
    return out, int(peak["epoch"])


# Tune names a trial's directory "<trainable>_<8-hex trial id>_<index>_<params>_<date>"
TRIAL_DIR_ID = re.compile(r"_([0-9a-f]{8})_\d")


def trial_id_of(result: Any) -> str:
    """The trial's id: from its reports, else (a trial that failed before its first report) from
    the name of its Tune directory, so that its work directory and MLflow run are known as its own."""
    reported = (result.metrics or {}).get("trial_id")
    if reported:
        return str(reported)
    name = Path(result.path).name
    found = TRIAL_DIR_ID.search(name)
    return found.group(1) if found else name


def trials_table(results: list[Any], keys: list[str], metric: str, timings: dict[str, dict[str, float]],
                 histories: dict[str, list[dict[str, float]]] | None = None) -> str:
    """CSV: trial_id, the searched keys, the epoch reached and ``metric`` as last reported, the best
    epoch and its ``metric`` (what the study chooses by), and where each trial's wall time went
    (empty cells when unknown); the study's choice first."""
    histories = histories or {}
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial_id", *keys, "epoch", metric, "best_epoch", f"best {metric}", *TIMING_COLUMNS])
    rows = []
    for r in results:
        peak, epoch = chosen_metrics(r.metrics, histories.get(trial_id_of(r), []), metric)
        rows.append((peak[metric], epoch, r))
    for best, epoch, r in sorted(rows, key=lambda row: -row[0]):
        t = timings.get(trial_id_of(r), {})
        cells = [f"{t[f'ray/{c}']:.1f}" if f"ray/{c}" in t else "" for c in TIMING_COLUMNS]
        w.writerow([trial_id_of(r), *[r.config.get(k) for k in keys], r.metrics.get("epoch"), r.metrics[metric],
                    "" if epoch is None else epoch, best, *cells])
    return buf.getvalue()


def overhead_line(timings: list[dict[str, float]]) -> str | None:
    """Medians of trial wall time, time in ``fit`` and in training, over the trials that timed
    themselves (those that ran to their end)."""
    rows = [t for t in timings if {"ray/trial_s", "ray/fit_s", "ray/train_s", "ray/overhead_s"} <= set(t)]
    if not rows:
        return None

    def med(key: str) -> float:
        v = sorted(t[key] for t in rows)
        return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2

    return (
        f"time per trial (median of the {len(rows)} that ran to their end): {med('ray/trial_s'):.1f} s wall, "
        f"{med('ray/fit_s'):.1f} s inside the engine's fit ({med('ray/train_s'):.1f} s training loop); "
        f"Ray/Tune/MLflow overhead {med('ray/overhead_s'):.1f} s"
    )


def print_table(rows: list[tuple[str, Any]], title: str) -> None:
    width = max(len(k) for k, _ in rows) if rows else 10
    print(title)
    print("-" * (width + 16))
    for k, v in rows:
        print(f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}")


def trial_keys(s: StudySettings, trial_id: str) -> dict[str, str]:
    return {tracking.ROLE: "trial", tracking.STUDY: s.name, tracking.TRIAL_ID: trial_id}


def sync_trial(s: StudySettings, trial_id: str, result: Any, history: list[dict[str, float]],
               manifest: dict[str, Any] | None, timing: dict[str, float]) -> str:
    """Bring trial ``trial_id``'s MLflow run up to date from what was trained (its run is created
    if MLflow was down when the trial started), close it, and return its run id. Idempotent."""
    uri = s.tracking_uri
    run_id, _ = tracking.get_or_create_run(uri, s.mlflow_experiment_id, trial_keys(s, trial_id),
                                           run_name=f"trial-{trial_id}", extra_tags={tracking.PARENT: s.parent_run_id})
    params = {k: v for k, v in dict(result.config or {}).items() if not k.startswith("_")}
    run_cfg = s.trial_config(params, source=f"trial {trial_id}")
    # A trial that ASHA stopped may still have trained its epochs (the stop reaches it late): its
    # history and best checkpoint are complete, so its end-of-run artifacts are logged too.
    finished = result.error is None and bool(history)
    best = Path(s.experiment_path) / "work" / trial_id / "best.pt"
    final = {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    tracking.sync_run(uri, run_id, tracking.RunRecord(
        run_cfg.to_flat(), manifest, history, final, run_cfg.train.valid_metric,
        best if s.is_local and best.exists() else None, finished,
    ))
    if manifest is not None:
        tracking.log_dataset_input(uri, run_id, manifest, s.data_dir)
    if timing:
        tracking.log_timing(uri, run_id, timing)
    state = "FAILED" if result.error is not None else "FINISHED"
    tracking.end_run(uri, run_id, state)
    return run_id


def best_checkpoint(s: StudySettings, trial_id: str, run_id: str, tmp: Path) -> Path | None:
    """The best trial's ``best.pt``: its local work directory, else its MLflow ``checkpoint`` artifact."""
    local = Path(s.experiment_path) / "work" / trial_id / "best.pt"
    if s.is_local and local.exists():
        return local
    if "checkpoint" not in tracking.artifact_names(s.tracking_uri, run_id):
        return None
    got = tracking.client(s.tracking_uri).download_artifacts(run_id, "checkpoint", str(tmp))
    found = sorted(Path(got).rglob("*.pt"))
    return found[0] if found else None


def delete_lost_trial_runs(s: StudySettings, trial_ids: set[str]) -> list[str]:
    """Delete (MLflow's soft delete) this study's trial runs whose trial is not one of ``trial_ids``,
    the study's trials; their trial ids. A trial that opened its run just before the driver was
    SIGKILLed, and before Tune saved its state, is not restored: the resumed study runs another in
    its place, so the study keeps exactly one run per trial."""
    c = tracking.client(s.tracking_uri)
    runs = c.search_runs([s.mlflow_experiment_id], tracking.tag_filter({tracking.ROLE: "trial", tracking.STUDY: s.name}))
    lost = [r for r in runs if r.data.tags.get(tracking.TRIAL_ID) not in trial_ids]
    for r in lost:
        if r.info.status == "RUNNING":
            c.set_terminated(r.info.run_id, "KILLED")
        c.delete_run(r.info.run_id)
    return sorted(r.data.tags.get(tracking.TRIAL_ID, "?") for r in lost)


def remove_lost_trial_dirs(s: StudySettings, trial_ids: set[str]) -> list[str]:
    """Remove the local directories of trials that are not among ``trial_ids``, the study's trials:
    the work directory ``work/<trial id>`` and Tune's trial directory. Such a trial had started (and
    maybe trained an epoch) just before the driver was SIGKILLed, before Tune saved its state; the
    resumed study ran another in its place. Nothing to do on remote storage (work directories are
    local). The removed trial ids."""
    import shutil

    work = Path(s.experiment_path) / "work"
    if not s.is_local or not work.is_dir():
        return []
    lost = sorted(d.name for d in work.iterdir() if d.is_dir() and d.name not in trial_ids)
    for tid in lost:
        for d in [work / tid, *Path(s.experiment_path).glob(f"*_{tid}_*")]:
            if d.is_dir():
                shutil.rmtree(d)
    return lost


def summarise(s: StudySettings, space: SearchSpace, grid: Any, out_dir: Path) -> StudyOutcome:
    """Local outputs first, then MLflow (trial runs, parent summary, plots, registry).

    If MLflow is unavailable the local outputs are already written and the error says how to log
    the rest (``--resume`` on the finished study syncs MLflow without training anything)."""
    import tempfile

    import yaml

    from glintru.data.dataset import load_prepared
    from glintru.tuning.registry import register_best_model

    results = list(grid)
    ok = [r for r in results if r.error is None and r.metrics and s.metric in r.metrics]
    ids = [trial_id_of(r) for r in results]
    histories = {tid: trial_history(s, tid, r) for r, tid in zip(results, ids)}
    timings = {tid: read_timing(s, tid) or partial_timing(r, histories[tid]) for r, tid in zip(results, ids)}
    if not ok:
        try:
            tracking.end_run(s.tracking_uri, s.parent_run_id, "FAILED")
        except tracking.unavailable_errors():
            pass
        raise UserError(f"study {s.name}: no trial reported {s.metric}; see the trial errors above")
    best = grid.get_best_result(metric=s.metric, mode="max", scope="all")
    best_id = trial_id_of(best)
    params = {k: best.config[k] for k in space.params}
    best_cfg = s.trial_config(params, source="best trial")
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = out_dir / "best_config.yaml"
    storage.atomic_write_text(cfg_path, yaml.safe_dump(best_cfg.to_flat(), sort_keys=False))
    best_metrics, best_epoch = chosen_metrics(best.metrics, histories[best_id], s.metric)
    best_metrics = dict(sorted(best_metrics.items()))
    k = s.metric.rsplit("@", 1)[-1]
    shown = {m: v for m, v in best_metrics.items() if m.endswith(f"@{k}") and "/mrr@" not in m}
    epoch_row = [("best epoch", best_epoch)] if best_epoch is not None else []
    print_table([("trial", best_id), *params.items(), *epoch_row, *shown.items()],
                f"Best trial of study {s.name} ({s.metric})")
    print(f"best config written to {cfg_path}  (glintru train --config {cfg_path} --data {s.data_dir})")
    storage.atomic_write_text(out_dir / "trials.csv", trials_table(ok, list(space.params), s.metric, timings, histories))
    line = overhead_line(list(timings.values()))
    if line:
        print(line)
    study = search.load_study(s.name, s.optuna_storage)
    stale = search.fail_running(study)
    if stale:
        print(f"Optuna trial(s) {', '.join(map(str, stale))} of a driver killed just after suggesting them: marked FAIL "
              "(the study ran other trials in their place)")
    removed = remove_lost_trial_dirs(s, set(ids))
    if removed:
        print(f"removed the work of trial(s) {', '.join(removed)}, started just before the driver was killed and not "
              "in Tune's saved state (the study ran other trials in their place)")
    plots = search.write_plots(study, s.metric, out_dir)
    manifest = load_prepared(s.data_dir).manifest
    uri, parent = s.tracking_uri, s.parent_run_id
    try:
        for r, tid in zip(results, ids):
            sync_trial(s, tid, r, histories[tid], manifest, timings[tid])
        lost = delete_lost_trial_runs(s, set(ids))
        if lost:
            print(f"MLflow: deleted the run(s) of trial(s) {', '.join(lost)}, started just before the driver was killed "
                  "and not in Tune's saved state (the study ran other trials in their place; MLflow's trash keeps them)")
        tracking.set_tags(uri, parent, {"best.trial_id": best_id, **{f"best.{k}": v for k, v in params.items()}})
        tracking.log_metrics(uri, parent, {f"best.{k}": v for k, v in best_metrics.items()}, step=0)
        tracking.log_dataset_input(uri, parent, manifest, s.data_dir)
        for path in (cfg_path, out_dir / "trials.csv", *plots):
            tracking.log_artifact(uri, parent, path)  # replaced on a resume: the latest summary wins
        best_run = tracking.find_run(uri, s.mlflow_experiment_id, trial_keys(s, best_id))
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = best_checkpoint(s, best_id, best_run, Path(tmp)) if best_run else None
            if ckpt is not None:
                version, new, champion = register_best_model(
                    uri, best_run, ckpt, s.register_name, s.metric, best_metrics[s.metric], s.name)
                print(f"best model {'registered' if new else 'already registered'} in MLflow as '{s.register_name}' "
                      f"version {version}{' (alias @champion)' if champion else ''}  "
                      f"(glintru recommend --model models:/{s.register_name}/{version} ...)")
        tracking.end_run(uri, parent)
    except tracking.unavailable_errors() as exc:
        raise MlflowUnavailable(
            f"MLflow at {s.tracking_uri} is unavailable ({tracking.first_line(exc)}). The study's {len(results)} trials "
            f"have ended and their results are kept in {s.experiment_path} (best config: {cfg_path}); once MLflow "
            f"is back, `glintru tune --resume {s.experiment_path}` logs what is missing without training anything again"
        ) from None
    return StudyOutcome(best_id, cfg_path, params, best_metrics, len(results), parent)
