"""The Optuna searcher behind Tune (states it reports, start-up size, first point), the signal
handling of a study, and the console reporter, driven directly (no Ray cluster)."""

from __future__ import annotations

import signal

import optuna
import pytest

from glintru.tuning import search
from glintru.tuning.space import load_search_space, search_space_dir


def _searcher(tmp_path, num_samples=8, points=()):
    s = search.make_searcher("st", f"sqlite:///{tmp_path}/o.db", 0, num_samples, list(points))
    from ray import tune

    s.set_search_properties("valid/full/ndcg@10", "max", {"lr": tune.loguniform(1e-4, 1e-2)})
    return s


def test_asha_stopped_trials_are_pruned_finished_ones_complete_failed_ones_fail(tmp_path):
    s = _searcher(tmp_path)
    for tid in ("a", "b", "c"):
        assert "lr" in s.suggest(tid)
    for epoch, value in ((1, 0.1), (2, 0.2)):
        s.on_trial_result("a", {"epoch": epoch, "valid/full/ndcg@10": value, "training_iteration": 9})
        s.on_trial_result("b", {"epoch": epoch, "valid/full/ndcg@10": value / 2})
    s.on_trial_result("b", {"epoch": 2, "valid/full/ndcg@10": 0.1})  # a restored trial re-reports: ignored
    s.on_trial_complete("a", {"epoch": 2, "valid/full/ndcg@10": 0.2, "test/full/ndcg@10": 0.3})  # ran to its end
    s.on_trial_complete("b", {"epoch": 2, "valid/full/ndcg@10": 0.1})  # stopped by ASHA: no final report
    s.on_trial_complete("c", {"epoch": 1, "valid/full/ndcg@10": 0.5}, error=True)
    study = search.load_study("st", f"sqlite:///{tmp_path}/o.db")
    a, b, c = study.trials
    assert (a.state, a.value, a.intermediate_values) == (optuna.trial.TrialState.COMPLETE, 0.2, {1: 0.1, 2: 0.2})
    assert b.state == optuna.trial.TrialState.PRUNED and b.intermediate_values == {1: 0.05, 2: 0.1}
    assert c.state == optuna.trial.TrialState.FAIL


def test_a_trial_told_before_a_kill_completes_again_on_resume_quietly(tmp_path, caplog):
    s = _searcher(tmp_path)
    s.suggest("a")
    s.on_trial_complete("a", {"epoch": 2, "valid/full/ndcg@10": 0.2, "test/full/ndcg@10": 0.3})
    # the searcher state Tune restores was saved before "a" was told: it completes "a" again
    s._completed_trials.discard("a")
    with caplog.at_level("WARNING", logger="glintru.tuning.search"):
        s.on_trial_complete("a", {"epoch": 2, "valid/full/ndcg@10": 0.2, "test/full/ndcg@10": 0.3})
    assert not caplog.records
    (a,) = search.load_study("st", f"sqlite:///{tmp_path}/o.db").trials
    assert (a.state, a.value) == (optuna.trial.TrialState.COMPLETE, 0.2)


@pytest.mark.parametrize("n, startup", [(1, 1), (4, 1), (8, 2), (20, 5), (100, 10)])
def test_startup_trials_follow_the_budget(n, startup):
    assert search.startup_trials(n) == startup


def test_the_paper_configuration_is_the_first_point_and_stays_inside_the_space(tmp_path):
    space = load_search_space(search_space_dir() / "glintru.yaml")
    point = search.paper_point(space, dict(space.fixed))
    assert point["kernel_size"] == 3 and point["hidden_size"] == 128 and point["mixing_init"] == 0.5
    assert point["lr"] == pytest.approx(1e-3)
    quick = load_search_space(search_space_dir() / "quick.yaml")  # hidden_size choices 32, 64: 128 is not one
    assert search.paper_point(quick, dict(quick.fixed))["hidden_size"] in (32, 64)


def test_importances_need_enough_finished_trials_and_name_their_method(tmp_path):
    study = optuna.create_study(direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1), "y": optuna.distributions.FloatDistribution(0, 1)}
    for i in range(search.MIN_IMPORTANCE_TRIALS - 1):
        study.add_trial(optuna.trial.create_trial(params={"x": i / 10, "y": 0.5}, distributions=dist, value=i / 10))
    assert search.importances(study) is None
    study.add_trial(optuna.trial.create_trial(params={"x": 0.9, "y": 0.1}, distributions=dist, value=0.9))
    values, method = search.importances(study)
    assert method == "PED-ANOVA" and set(values) == {"x", "y"}
    paths = search.write_plots(study, "m", tmp_path)
    assert [p.name for p in paths] == ["optimization_history.png", "parallel_coordinate.png", "param_importance.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_first_signal_asks_tune_to_stop_second_stops_at_once(monkeypatch):
    from glintru.tuning import driver

    sent = []
    monkeypatch.setattr(driver.os, "kill", lambda pid, sig: sent.append(sig))
    monkeypatch.setenv("TUNE_DISABLE_SIGINT_HANDLER", "0")  # restored after the test
    with driver._Signals() as signals:
        handler = signal.getsignal(signal.SIGINT)
        assert signal.getsignal(signal.SIGTERM) == handler
        handler(signal.SIGTERM, None)
        assert signals.received == signal.SIGTERM and sent == [signal.SIGUSR1]
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGINT) != handler  # restored


def test_console_reporter_lines_and_table():
    from glintru.tuning.driver import ConsoleReporter

    class T:
        def __init__(self, tid, status, config):
            self.trial_id, self.status, self.config = tid, status, config

    r = ConsoleReporter("valid/full/ndcg@10", ["lr"], 3)
    a, b = T("a", "RUNNING", {"lr": 0.001}), T("b", "TERMINATED", {"lr": 0.01})
    line = r.line(a, {"epoch": 1, "valid/full/ndcg@10": 0.25, "train/loss": 6.5, "train/s": 1.5})
    assert line.endswith("trial a epoch 1/3  valid/full/ndcg@10 0.2500  loss 6.5000  1.5s")
    r.line(b, {"epoch": 1, "valid/full/ndcg@10": 0.1})
    table = r.table([a, b]).splitlines()
    assert table[0].split() == ["trial", "lr", "epoch", "valid/full/ndcg@10", "state"]
    assert table[1].split() == ["a", "0.001", "1", "0.2500", "RUNNING"]
    assert table[2].endswith("STOPPED (ASHA)")  # ended without its final report


def test_console_tables_show_a_trial_starting_or_ending_in_its_new_state_though_tune_sets_it_after(capsys):
    """Tune calls ``on_trial_start`` before it sets the trial RUNNING and ``on_trial_complete``
    before it sets it TERMINATED (its ``_actor_started`` and ``stop_trial``): the tables printed
    then show the starting trial RUNNING (not PENDING) and the ending one finished, or stopped by
    ASHA when it ended without its final report (not RUNNING)."""
    from ray.tune.experiment import Trial

    from glintru.tuning.driver import console_callback

    m = "valid/full/ndcg@10"
    a = Trial("g", stub=True, config={"lr": 0.001}, trial_id="a")
    b = Trial("g", stub=True, config={"lr": 0.01}, trial_id="b")
    cb = console_callback(m, ["lr"], 2)

    def table() -> list[list[str]]:
        return [row.split() for row in capsys.readouterr().out.splitlines()[1:]]

    cb.on_trial_start(0, [a, b], a)
    assert table() == [["a", "0.001", "RUNNING"], ["b", "0.01", "PENDING"]]
    a.set_status(Trial.RUNNING)
    cb.on_trial_start(0, [a, b], b)
    assert table() == [["a", "0.001", "RUNNING"], ["b", "0.01", "RUNNING"]]
    b.set_status(Trial.RUNNING)
    cb.on_trial_result(0, [a, b], a, {"epoch": 1, m: 0.02})
    cb.on_trial_result(0, [a, b], b, {"epoch": 1, m: 0.01})
    cb.on_trial_result(0, [a, b], a, {"epoch": 2, m: 0.05, "test/full/ndcg@10": 0.04})
    capsys.readouterr()
    cb.on_trial_complete(0, [a, b], a)  # a finished; b still trains
    assert table() == [["a", "0.001", "2", "0.0500", "TERMINATED"], ["b", "0.01", "1", "0.0100", "RUNNING"]]
    a.set_status(Trial.TERMINATED)
    cb.on_trial_complete(0, [a, b], b)  # ASHA stopped b after its first epoch
    assert table() == [["a", "0.001", "2", "0.0500", "TERMINATED"], ["b", "0.01", "1", "0.0100", "STOPPED", "(ASHA)"]]


def test_console_reporter_of_a_resumed_study_shows_the_trials_restored_from_before_it():
    """A resumed study's reporter starts empty: trials that had finished before the interruption
    keep their epoch, best value and state (a finished trial is not shown as stopped by ASHA), and
    a trial that resumes keeps the best of its earlier epochs. Trials restored as Tune restores them
    (their saved JSON state and run metadata)."""
    from ray.tune.experiment import Trial

    from glintru.tuning.driver import ConsoleReporter

    m = "valid/full/ndcg@10"

    def saved(tid, results, status):
        t = Trial("g", stub=True, config={"lr": 0.001}, trial_id=tid)
        t.create_placement_group_factory()
        for i, r in enumerate(results, 1):
            t.update_last_result({**r, "training_iteration": i})
        t.set_status(status)
        state, meta = t.get_json_state()
        restored = Trial.from_json_state(state, stub=True)
        restored.restore_run_metadata(meta)
        return restored

    done = saved("done", [{"epoch": 1, m: 0.02}, {"epoch": 2, m: 0.05}, {"epoch": 2, m: 0.05, "test/full/ndcg@10": 0.04}],
                 Trial.TERMINATED)
    cut = saved("cut", [{"epoch": 1, m: 0.01}, {"epoch": 2, m: 0.03}], Trial.TERMINATED)  # ASHA stopped it
    back = saved("back", [{"epoch": 1, m: 0.06}, {"epoch": 2, m: 0.04}], Trial.RUNNING)  # saved as PENDING
    new = saved("new", [], Trial.PENDING)
    r = ConsoleReporter(m, ["lr"], 3)
    rows = [row.split() for row in r.table([done, cut, back, new]).splitlines()[1:]]
    assert rows == [["done", "0.001", "2", "0.0500", "TERMINATED"], ["cut", "0.001", "2", "0.0300", "STOPPED", "(ASHA)"],
                    ["back", "0.001", "2", "0.0600", "PENDING"], ["new", "0.001", "PENDING"]]
    r2 = ConsoleReporter(m, ["lr"], 3)  # a reporter that meets the resumed trial at its next result:
    # Tune calls the callback before it records the result on the trial, so only the restored epochs are there
    assert r2.line(back, {"epoch": 3, m: 0.05}).endswith("trial back epoch 3/3  valid/full/ndcg@10 0.0500")
    assert r2.best["back"] == 0.06  # its best epoch came before the interruption


def test_resume_treats_a_checkpoint_already_deleted_as_deleted(tmp_path, monkeypatch):
    import pyarrow.fs
    from ray.train._internal import checkpoint_manager

    from glintru.tuning import driver

    monkeypatch.setattr(checkpoint_manager, "_delete_fs_path", checkpoint_manager._delete_fs_path)  # undone after
    fs = pyarrow.fs.LocalFileSystem()
    with pytest.raises(FileNotFoundError):  # Ray as installed
        checkpoint_manager._delete_fs_path(fs=fs, fs_path=str(tmp_path / "checkpoint_000000"))
    driver._tolerate_checkpoints_already_deleted()
    patched = checkpoint_manager._delete_fs_path
    driver._tolerate_checkpoints_already_deleted()
    assert checkpoint_manager._delete_fs_path is patched  # a second resume in one process: not wrapped twice
    checkpoint_manager._delete_fs_path(fs=fs, fs_path=str(tmp_path / "checkpoint_000000"))  # gone: no error
    (tmp_path / "checkpoint_000001").mkdir()
    (tmp_path / "checkpoint_000001" / "model.pt").write_bytes(b"x")
    checkpoint_manager._delete_fs_path(fs=fs, fs_path=str(tmp_path / "checkpoint_000001"))
    assert not (tmp_path / "checkpoint_000001").exists()  # present: deleted as before


def test_a_trial_stopped_by_a_user_error_is_logged_as_its_message_not_rays_traceback():
    import logging

    from ray.exceptions import RayTaskError

    from glintru.errors import UserError
    from glintru.tuning.driver import TrialUserErrors

    def record_of(exc: Exception) -> logging.LogRecord:  # as logger.error(..., exc_info=exception) makes it
        return logging.LogRecord("ray.tune.execution.tune_controller", logging.ERROR, "x.py", 1,
                                 "Trial task failed for trial %s", ("train_driver_ab12cd34",), (type(exc), exc, None))

    cause = UserError("field 'num_negatives': 100 negatives requested but 30 user(s) have fewer items left")
    remote = RayTaskError("train_driver", "Traceback ...", cause).as_instanceof_cause()  # what Tune logs
    rec = record_of(remote)
    assert TrialUserErrors().filter(rec)
    assert rec.exc_info is None and rec.getMessage() == (
        "Trial task failed for trial train_driver_ab12cd34: error: field 'num_negatives': 100 negatives "
        "requested but 30 user(s) have fewer items left")
    other = record_of(RayTaskError("train_driver", "Traceback ...", ValueError("a bug")).as_instanceof_cause())
    assert TrialUserErrors().filter(other) and other.exc_info is not None  # a bug keeps its traceback
