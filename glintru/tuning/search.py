"""The search: Optuna's TPE behind Ray Tune, told the truth about trials that ASHA stops.

* **Persisted study.** The Optuna study lives in an RDB storage (default: ``optuna.db``, a sqlite
  file in the experiment directory; study name = the experiment name), so ``optuna-dashboard
  sqlite:///.../optuna.db`` opens it, ``optuna.load_study`` reads it, and it survives ``--resume``.
* **Honest states.** Intermediate values are reported on the epoch clock (Tune's
  ``training_iteration`` restarts after a restore; the epoch does not). A trial that ASHA stops
  never sends its final report (which carries the test metrics), and Optuna is told it was
  ``PRUNED``, with its intermediate values, instead of ``COMPLETE`` with an early-epoch value that
  would bias TPE toward configurations that start fast. A failed trial is ``FAIL``.
* **Start-up trials sized to the budget.** TPE samples at random for its first ``n_startup``
  trials: :func:`startup_trials` = ``num_samples // 4`` clamped to 1..10 (Optuna's fixed 10 would
  turn any study of up to 10 trials into pure random search).
* **The paper's configuration first.** :func:`paper_point` is the first trial: every searched key at
  its configuration default (the official GLINT-RU settings), or, where a default lies outside the
  searched range, the range's middle.
"""

from __future__ import annotations

import math
from typing import Any

from glintru.config import build_config
from glintru.tuning.space import SearchSpace

MIN_IMPORTANCE_TRIALS = 5  # finished trials needed before parameter importances mean anything


def startup_trials(num_samples: int) -> int:
    """TPE's random start-up trials for a study of ``num_samples`` trials: ``num_samples // 4`` in 1..10."""
    return max(1, min(10, num_samples // 4))


def paper_point(space: SearchSpace, base_flat: dict[str, Any]) -> dict[str, Any]:
    """The first point to evaluate: each searched key at its config default, clipped to the space."""
    cfg = build_config(space.model, base_flat)
    defaults = {**vars(cfg.train), **vars(cfg.model_cfg)}
    point: dict[str, Any] = {}
    for key, p in space.params.items():
        v = defaults.get(key)
        if p.kind == "choice":
            point[key] = v if v in p.values else p.values[len(p.values) // 2]
        elif p.kind == "randint":
            point[key] = int(v) if isinstance(v, int) and p.low <= v < p.high else int((p.low + p.high - 1) // 2)
        else:
            inside = isinstance(v, (int, float)) and p.low <= v <= p.high
            if inside:
                point[key] = float(v)
            elif p.kind == "loguniform":
                point[key] = math.sqrt(p.low * p.high)
            else:
                point[key] = (p.low + p.high) / 2
    return point


def make_searcher(study_name: str, storage_url: str, seed: int, num_samples: int, points: list[dict[str, Any]]) -> Any:
    """A :class:`GlintruOptunaSearch` on the persisted study ``study_name``."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    class GlintruOptunaSearch(OptunaSearch):
        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            value, epoch = result.get(self.metric), result.get("epoch")
            if value is None or epoch is None:
                return
            trial = self._ot_trials[trial_id]
            done = self._ot_study._storage.get_trial(trial._trial_id).intermediate_values
            if int(epoch) not in done:  # a restored trial re-reports its last epoch
                trial.report(float(value), int(epoch))

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            trial = self._ot_trials[trial_id]
            if self._ot_study._storage.get_trial(trial._trial_id).state.is_finished():
                # told before the driver was killed; its restored Tune trial completes again on --resume
                self._completed_trials.add(trial_id)
                return
            finished = bool(result) and any(k.startswith("test/") for k in result)
            try:
                if error:
                    self._ot_study.tell(trial, state=optuna.trial.TrialState.FAIL)
                elif finished and result.get(self.metric) is not None:
                    self._ot_study.tell(trial, float(result[self.metric]))
                else:  # stopped by ASHA before its end: pruned, valued by its last intermediate value
                    self._ot_study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            except (ValueError, RuntimeError) as exc:  # e.g. a NaN value
                import logging

                logging.getLogger(__name__).warning("optuna: trial %s: %s", trial_id, exc)
            self._completed_trials.add(trial_id)

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(num_samples))
    return GlintruOptunaSearch(
        sampler=sampler, study_name=study_name, storage=optuna.storages.RDBStorage(storage_url),
        points_to_evaluate=points or None,
    )


def load_study(study_name: str, storage_url: str) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study_name, storage=storage_url)


def fail_running(study: Any) -> list[int]:
    """Mark the Optuna trials still RUNNING as FAIL, once every Tune trial of the study has ended;
    their numbers. Such a trial was suggested just before the study's driver was killed (SIGKILL)
    and Tune's saved state does not have it: the resumed study ran another trial in its place, and
    nothing will ever report it."""
    import optuna

    stale = [t.number for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    for number in stale:
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    return stale


def importances(study: Any) -> tuple[dict[str, float], str] | None:
    """``(importance per parameter, method name)`` from the study's finished trials, or None when
    fewer than :data:`MIN_IMPORTANCE_TRIALS` finished or their values do not differ."""
    import warnings

    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < MIN_IMPORTANCE_TRIALS or len({t.value for t in done}) < 2:
        return None
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return dict(imp), "PED-ANOVA"


def write_plots(study: Any, metric: str, out_dir: Any) -> list[Any]:
    """PNG plots of the study into ``out_dir``: optimisation history, parallel coordinates (>= 2
    finished trials) and parameter importances (enough finished trials); returns the paths."""
    import warnings
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    out = Path(out_dir)
    paths = []
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        def save(fig: Any, name: str, size: tuple[float, float]) -> None:
            fig.set_size_inches(*size)
            fig.tight_layout()
            fig.savefig(out / name, dpi=100)
            plt.close(fig)
            paths.append(out / name)

        if done:
            save(ovm.plot_optimization_history(study, target_name=metric).figure, "optimization_history.png", (7, 4))
        if len(done) >= 2:
            save(ovm.plot_parallel_coordinate(study, target_name=metric).figure, "parallel_coordinate.png", (8, 4))
        imp = importances(study)
        if imp is not None:
            values, method = imp
            fig, ax = plt.subplots()
            names = list(values)[::-1]
            ax.barh(names, [values[n] for n in names])
            ax.set_xlabel(f"importance for {metric} ({method}, {len(done)} finished trials)")
            save(fig, "param_importance.png", (6, 0.5 + 0.45 * len(values)))
    return paths
