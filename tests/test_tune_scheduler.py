"""LastEpochSafeASHA: ASHA's decisions, except that the last epoch is never stopped."""

from types import SimpleNamespace

from ray.tune.schedulers import ASHAScheduler

from glintru.tuning.scheduler import LastEpochSafeASHA

KW = dict(time_attr="epoch", metric="m", mode="max", max_t=3, grace_period=1, reduction_factor=2)


def _decisions(scheduler) -> list[str]:
    trials = [SimpleNamespace(trial_id=f"t{i}") for i in range(4)]
    for t in trials:
        scheduler.on_trial_add(None, t)
    # Trial i scores 1.0 - 0.1 i at every epoch: t0 is best, each later trial is worse than all before it.
    return [scheduler.on_trial_result(None, t, {"epoch": e, "m": 1.0 - 0.1 * i}) for e in (1, 2) for i, t in enumerate(trials)]


def test_stops_like_asha_before_the_last_epoch_and_never_on_it():
    plain = _decisions(ASHAScheduler(**KW))
    safe = _decisions(LastEpochSafeASHA(2, **KW))
    assert plain == ["CONTINUE", "STOP", "STOP", "STOP", "CONTINUE", "STOP", "STOP", "STOP"]
    assert safe[:4] == plain[:4]  # epoch 1: ASHA's own rung decisions
    assert safe[4:] == ["CONTINUE"] * 4  # epoch 2 = last epoch: never stopped
