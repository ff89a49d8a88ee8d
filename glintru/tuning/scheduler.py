"""ASHA that never stops a trial on its last epoch.

A trial's last epoch report is followed, on rank 0, by the test evaluation and the upload of its
MLflow artifacts (learning curve, checkpoint). If ASHA stopped the trial at a rung that coincides
with the last epoch, Tune would kill the trial in the middle of that upload, and stopping it there
saves no training anyway. So results with ``epoch >= last_epoch`` always CONTINUE (the rung is
still recorded by ASHA for later comparisons).

A stop at an earlier rung reaches the Train workers asynchronously: on tiny data a trial stopped
at epoch ``k`` may already have trained (and logged to MLflow) later epochs and be killed during
its upload. ``glintru.tuning.summary.sync_trial`` completes such runs at the end.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler


class LastEpochSafeASHA(ASHAScheduler):
    def __init__(self, last_epoch: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._last_epoch = last_epoch

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if result.get("epoch", 0) >= self._last_epoch:
            return TrialScheduler.CONTINUE
        return decision
