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


# --- `glintru tune --grace-period`: from the command line to the scheduler --------------------------

def test_grace_period_reaches_the_study_and_bad_budgets_are_one_error_line(tmp_path, monkeypatch, capsys):
    from engine_fixtures import cyclic_sequences, write_prepared

    from glintru.cli import main
    from glintru.tuning import driver

    data = write_prepared(tmp_path / "data", cyclic_sequences(20, 30), 30)
    seen = {}
    monkeypatch.setattr(driver, "run_study", lambda **kw: seen.update(kw) or SimpleNamespace(
        n_trials=0, best_trial_id=None, best_config_path=None))
    base = ["tune", "--data", str(data), "--mlflow-uri", f"sqlite:///{tmp_path}/m.db"]
    assert main([*base, "--grace-period", "3"]) == 0 and seen["grace_period"] == 3
    seen.clear()
    for option in ("--grace-period", "--max-epochs", "--num-samples", "--workers", "--max-concurrent", "--num-cpus"):
        # 0 workers or trials at once was read as "not given" and replaced by the default
        assert main([*base, option, "0"]) == 2
        assert capsys.readouterr().err == f"error: {option}: must be >= 1, got 0\n"
    assert seen == {}  # no study started


def test_grace_period_names_its_own_study_and_holds_back_asha(tmp_path, monkeypatch):
    from engine_fixtures import cyclic_sequences, write_prepared

    from glintru.tuning import driver, scheduler
    from glintru.tuning.space import load_search_space

    space_file = tmp_path / "space.yaml"
    space_file.write_text("model: gru4rec\nfixed: {max_len: 6, num_negatives: 10}\nparams:\n  lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
                          "tune: {num_samples: 4, max_epochs: 6, grace_period: 1}\n")
    data = write_prepared(tmp_path / "data", cyclic_sequences(20, 30), 30)
    started = []
    monkeypatch.setattr(driver, "_new_study", lambda space, data_abs, base, metric, opts, name, *a: started.append(
        (opts["grace_period"], name)))
    for grace in (None, 3):
        driver.run_study(data_dir=str(data), search_space=str(space_file), storage_path=str(tmp_path / "rr"),
                         mlflow_uri=f"sqlite:///{tmp_path}/m.db", experiment=None, num_samples=None, max_epochs=None,
                         workers=None, overrides={}, grace_period=grace)
    (g_file, name_file), (g_cli, name_cli) = started
    assert (g_file, g_cli) == (1, 3) and name_file != name_cli  # a longer grace is another study, not a resume

    made = []

    class Recording(scheduler.LastEpochSafeASHA):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(scheduler, "LastEpochSafeASHA", Recording)
    s = _settings_for(tmp_path, grace_period=3, max_epochs=6)
    driver.build_tuner(s, load_search_space(space_file), verbose=True)
    (asha,) = made
    assert asha.set_search_properties("m", "max")  # what Tune does with TuneConfig's metric when the study runs
    assert _decisions(asha) == ["CONTINUE"] * 8  # epochs 1 and 2: under the grace, no trial is stopped
    at_grace = [asha.on_trial_result(None, SimpleNamespace(trial_id=f"t{i}"), {"epoch": 3, "m": 1.0 - 0.1 * i})
                for i in range(4)]
    assert at_grace == ["CONTINUE", "STOP", "STOP", "STOP"]  # the first rung is at the grace period
    # a grace beyond the epoch limit is the limit: every trial runs to the end, none is cut
    assert (s.asha_grace, _settings_for(tmp_path, grace_period=20, max_epochs=6).asha_grace) == (3, 6)


def _settings_for(tmp_path, **kw):
    from glintru.tuning.settings import StudySettings

    return StudySettings(**{
        "name": "g", "storage_path": str(tmp_path / "rr"), "data_dir": str(tmp_path / "data"), "search_space": "s.yaml",
        "model": "gru4rec", "base_flat": {"max_len": 6}, "num_samples": 4, "max_epochs": 6, "workers": 1,
        "cpus_per_worker": 1.0, "gpus_per_worker": 0.0, "grace_period": 1, "seed": 0, "metric": "valid/full/ndcg@10",
        "tracking_uri": f"sqlite:///{tmp_path}/m.db", "mlflow_experiment": "e", "mlflow_experiment_id": "1",
        "parent_run_id": "p", "register_name": "r", "max_concurrent": 1,
        "optuna_storage": f"sqlite:///{tmp_path}/o.db", **kw})


# --- trial processes: single-worker trials share their Tune actor -----------------------------------

def test_single_worker_trials_share_their_process_unless_turned_off(tmp_path, monkeypatch):
    """Tune's reuse_actors for single-worker trials (a new process costs ~15 s of imports a trial;
    benchmarks/trial_overhead.py --reuse 1 0 shows the same trials and metrics either way); Ray
    Train trials keep one driver process per trial; GLINTRU_REUSE_TRIAL_PROCESSES=0 turns it off."""
    from glintru.tuning import driver
    from glintru.tuning.space import load_search_space, resolve_profile

    space = load_search_space(resolve_profile("quick"))

    def reuse(**kw) -> bool:
        return driver.build_tuner(_settings_for(tmp_path, **kw), space, verbose=True)._local_tuner._tune_config.reuse_actors

    monkeypatch.delenv(driver.REUSE_ENV, raising=False)
    assert (reuse(workers=1), reuse(workers=2)) == (True, False)
    monkeypatch.setenv(driver.REUSE_ENV, "0")
    assert reuse(workers=1) is False
