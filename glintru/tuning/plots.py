"""Study summaries: a CSV of trials and an Optuna parameter-importance plot (PNG, matplotlib Agg).

The Optuna study is rebuilt from Tune's results (params + the objective value), so the summary is
the same after a resume, whatever happened to the searcher object in between.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any, Sequence

from glintru.tuning.space import ParamSpec, SearchSpace


def _value(r: Any, metric: str) -> float:
    return float(r.metrics[metric])


TIMING_COLUMNS = ("trial_s", "fit_s", "train_s", "overhead_s")


def trials_table(
    results: Sequence[Any], keys: list[str], metric: str, timings: dict[str, dict[str, float]] | None = None
) -> str:
    """CSV: trial_id, the searched keys, the epoch reached, ``metric`` and where each trial's wall
    time went (``timings[trial_id]``: the ``ray/*`` values of :func:`glintru.tuning.study.trial_timing`;
    for a trial stopped by ASHA only ``trial_s`` to its last report and ``train_s``; empty cells
    when unknown); best first."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial_id", *keys, "epoch", metric, *TIMING_COLUMNS])
    for r in sorted(results, key=lambda r: -_value(r, metric)):
        t = (timings or {}).get(str(r.metrics.get("trial_id")), {})
        cells = [f"{t[f'ray/{c}']:.1f}" if f"ray/{c}" in t else "" for c in TIMING_COLUMNS]
        w.writerow([r.metrics.get("trial_id"), *[r.config.get(k) for k in keys], r.metrics.get("epoch"), _value(r, metric), *cells])
    return buf.getvalue()


def _distribution(p: ParamSpec) -> Any:
    import optuna.distributions as od

    if p.kind == "choice":
        return od.CategoricalDistribution(list(p.values))
    if p.kind == "randint":
        return od.IntDistribution(int(p.low), int(p.high) - 1)
    return od.FloatDistribution(p.low, p.high, log=p.kind == "loguniform")


def optuna_study(results: Sequence[Any], space: SearchSpace, metric: str) -> Any:
    """An in-memory Optuna study holding one COMPLETE trial per Tune result (maximised ``metric``)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    dists = {k: _distribution(p) for k, p in space.params.items()}
    for r in results:
        params = {k: r.config[k] for k in space.params if k in r.config}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=_value(r, metric)))
    return study


def importance_png(results: Sequence[Any], space: SearchSpace, metric: str, path: str | Path) -> Path | None:
    """fANOVA importance bar chart when >= 2 trials differ in value, else a parallel-coordinate plot;
    None with fewer than 2 trials (nothing to compare)."""
    if len(results) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    study = optuna_study(results, space, metric)
    out = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = {_value(r, metric) for r in results}
        if len(values) > 1:
            imp = optuna.importance.get_param_importances(study)
            fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(imp)))
            names = list(imp)[::-1]
            ax.barh(names, [imp[n] for n in names])
            ax.set_xlabel(f"importance for {metric} (fANOVA)")
            fig.tight_layout()
        else:
            ax = optuna.visualization.matplotlib.plot_parallel_coordinate(study)
            fig = ax.figure
        fig.savefig(out, dpi=100)
        plt.close(fig)
    return out
