"""MLflow helpers against a throwaway sqlite store: absolute URIs, runs found again by tag."""

import os

import pytest
from proc_helpers import free_port

from glintru import tracking
from glintru.errors import UserError


def test_default_uri_is_absolute_sqlite_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.resolve_tracking_uri(None)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.default_artifact_location(uri) == (tmp_path.resolve() / "mlruns").as_uri()


def test_uri_precedence_and_relative_sqlite_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.resolve_tracking_uri(None) == "http://127.0.0.1:5999"
    assert tracking.resolve_tracking_uri("sqlite:///rel/m.db") == f"sqlite:///{tmp_path.resolve()}/rel/m.db"
    assert tracking.default_artifact_location("http://127.0.0.1:5999") is None
    with pytest.raises(UserError, match="--mlflow-uri"):
        tracking.resolve_tracking_uri("mlflow.db")


def test_metric_names_are_mlflow_safe():
    from mlflow.utils.validation import validate_param_and_metric_name

    name = tracking.mlflow_metric_name("valid/full/ndcg@10")
    assert name == "valid/full/ndcg_at_10"
    assert validate_param_and_metric_name(name)


def test_run_is_found_again_by_tag_not_duplicated(tmp_path, mlflow_store):
    uri = mlflow_store()
    exp = tracking.ensure_experiment(uri, "e")
    assert tracking.ensure_experiment(uri, "e") == exp
    tags = {tracking.ROLE: "trial", tracking.STUDY: "s", tracking.TRIAL_ID: "abc_00001"}
    run_a, created_a = tracking.get_or_create_run(uri, exp, tags, run_name="trial-abc")
    tracking.end_run(uri, run_a, "KILLED")
    run_b, created_b = tracking.get_or_create_run(uri, exp, tags, run_name="trial-abc")
    other, _ = tracking.get_or_create_run(uri, exp, {**tags, tracking.TRIAL_ID: "abc_00002"}, run_name="x")
    c = tracking.client(uri)
    assert (created_a, created_b, run_b) == (True, False, run_a)
    assert other != run_a
    assert c.get_run(run_a).info.status == "RUNNING"  # re-opened on resume
    assert len(c.search_runs([exp])) == 2


def test_params_once_and_metrics_per_epoch(tmp_path, mlflow_store):
    uri = mlflow_store()
    exp = tracking.ensure_experiment(uri, "e")
    run, _ = tracking.get_or_create_run(uri, exp, {tracking.ROLE: "train"}, run_name="r")
    tracking.log_params(uri, run, {"kernel_size": 5, "topk": [5, 10]})
    tracking.log_params(uri, run, {"kernel_size": 5, "lr": 0.001})  # after a resume: no conflict
    for epoch, v in ((1, 0.1), (2, 0.2)):
        tracking.log_metrics(uri, run, {"epoch": epoch, "valid/full/ndcg@10": v, "note": "x"}, step=epoch)
    c = tracking.client(uri)
    assert c.get_run(run).data.params == {"kernel_size": "5", "topk": "[5, 10]", "lr": "0.001"}
    hist = c.get_metric_history(run, "valid/full/ndcg_at_10")
    assert [(m.step, m.value) for m in hist] == [(1, 0.1), (2, 0.2)]


def test_run_outputs_are_logged_as_artifacts(tmp_path, mlflow_store):
    uri = mlflow_store()
    exp = tracking.ensure_experiment(uri, "e")
    run, _ = tracking.get_or_create_run(uri, exp, {tracking.ROLE: "train"}, run_name="r")
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"weights")
    history = [{"epoch": 1, "train/loss": 2.0, "valid/full/ndcg@10": 0.1}, {"epoch": 2, "train/loss": 1.5, "valid/full/ndcg@10": 0.2}]
    tracking.log_run_outputs(uri, run, tracking.RunRecord({"model": "glintru", "lr": 0.1}, {"counts": {"n_items": 3}},
                                                          history, {"test/full/ndcg@10": 0.25}, "valid/full/ndcg@10", ckpt))
    c = tracking.client(uri)
    names = {a.path for a in c.list_artifacts(run)} | {a.path for a in c.list_artifacts(run, "checkpoint")}
    assert names >= {"config.yaml", "manifest.json", "learning_curve.png", "checkpoint/best.pt"}
    assert [(m.step, m.value) for m in c.get_metric_history(run, "test/full/ndcg_at_10")] == [(2, 0.25)]
    png = tmp_path / "lc.png"
    tracking.learning_curve_png(history, png, "valid/full/ndcg@10")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.path.exists(tmp_path / "mlruns")


def test_run_outputs_complete_a_cut_off_upload_and_are_idempotent(tmp_path, mlflow_store):
    """A kill after config.yaml and manifest.json (the symptom seen after a kill + resume): logging
    again adds the learning curve and checkpoint, keeps what is there, and logs no metric twice."""
    uri = mlflow_store()
    exp = tracking.ensure_experiment(uri, "e")
    run, _ = tracking.get_or_create_run(uri, exp, {tracking.ROLE: "trial"}, run_name="r")
    c = tracking.client(uri)
    first = tmp_path / "first"
    first.mkdir()
    (first / "config.yaml").write_text("lr: 0.1\n")
    (first / "manifest.json").write_text("{}")
    c.log_artifact(run, str(first / "config.yaml"))
    c.log_artifact(run, str(first / "manifest.json"))
    tracking.log_metrics(uri, run, {"test/full/ndcg@10": 0.25}, step=2)
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"weights")
    history = [{"epoch": 1, "train/loss": 2.0, "valid/full/ndcg@10": 0.1}, {"epoch": 2, "train/loss": 1.5, "valid/full/ndcg@10": 0.2}]
    for _ in range(2):
        tracking.log_run_outputs(uri, run, tracking.RunRecord({"model": "glintru", "lr": 0.1}, {"counts": {}}, history,
                                                              {"test/full/ndcg@10": 0.25}, "valid/full/ndcg@10", ckpt))
    assert tracking.artifact_names(uri, run) == set(tracking.END_OF_RUN_ARTIFACTS)
    assert [a.path for a in c.list_artifacts(run, "checkpoint")] == ["checkpoint/best.pt"]
    assert [(m.step, m.value) for m in c.get_metric_history(run, "test/full/ndcg_at_10")] == [(2, 0.25)]
    local = c.download_artifacts(run, "config.yaml", str(tmp_path / "dl"))
    assert open(local).read() == "lr: 0.1\n"  # the first upload is kept, not overwritten


class _Result:
    """The parts of a ``ray.tune.Result`` that the study driver reads."""

    def __init__(self, config, metrics, error=None, metrics_dataframe=None):
        self.config, self.metrics, self.error, self.metrics_dataframe = config, metrics, error, metrics_dataframe


def _settings(tmp_path, uri, exp, data):
    from glintru.tuning.settings import StudySettings

    return StudySettings(
        name="kr", storage_path=str(tmp_path / "rr"), data_dir=str(data), search_space="x.yaml", model="glintru",
        base_flat={"max_len": 8}, num_samples=1, max_epochs=2, workers=1, cpus_per_worker=1.0, gpus_per_worker=0.0,
        grace_period=1, seed=0, metric="valid/full/ndcg@10", tracking_uri=uri, mlflow_experiment="e",
        mlflow_experiment_id=exp, parent_run_id="p", register_name="data-glintru", max_concurrent=1,
        optuna_storage=f"sqlite:///{tmp_path}/optuna.db",
    )


def _study_with_work_dir(tmp_path, mlflow_store, trial_id):
    """Settings of study ``kr`` (storage ``tmp_path/rr``, a sqlite store) and trial ``trial_id``'s
    empty work directory: (settings, tracking uri, experiment id, work dir)."""
    from glintru.tuning.smoke import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", n_users=8, n_items=12)
    uri = mlflow_store()
    exp = tracking.ensure_experiment(uri, "e")
    work = tmp_path / "rr" / "kr" / "work" / trial_id
    work.mkdir(parents=True)
    return _settings(tmp_path, uri, exp, data), uri, exp, work


def test_study_driver_syncs_a_trial_mlflow_missed_from_its_work_dir(tmp_path, mlflow_store):
    """A trial that trained while MLflow was down (no run at all), or whose upload was cut off (ASHA's
    stop reaches the workers late): the study driver creates or completes its run from the work
    directory: params, every epoch, final metrics, timing, artifacts; a second sync adds nothing."""
    import json

    from glintru.tuning.summary import read_timing, sync_trial, trial_history

    s, uri, exp, work = _study_with_work_dir(tmp_path, mlflow_store, "t1")
    history = [{"epoch": 1.0, "train/loss": 2.0, "valid/full/ndcg@10": 0.1}, {"epoch": 2.0, "train/loss": 1.5, "valid/full/ndcg@10": 0.2}]
    (work / "history.json").write_text(json.dumps(history))
    (work / "best.pt").write_bytes(b"weights")
    (work / "trial_timing.json").write_text(json.dumps({"ray/trial_s": 30.0, "ray/fit_s": 20.0, "ray/overhead_s": 10.0}))
    result = _Result({"hidden_size": 16, "__trial_index__": 0}, {"epoch": 2.0, "test/full/ndcg@10": 0.3, "wall_s": 20.0, "trial_id": "t1"})
    c = tracking.client(uri)
    for _ in range(2):
        run = sync_trial(s, "t1", result, trial_history(s, "t1", result), {"counts": {"n_items": 12}},
                         read_timing(s, "t1"))
    (only,) = c.search_runs([exp])
    assert only.info.run_id == run and only.info.status == "FINISHED"
    assert only.data.tags[tracking.TRIAL_ID] == "t1" and only.data.tags[tracking.PARENT] == "p"
    assert only.data.params["hidden_size"] == "16" and only.data.params["max_len"] == "8"
    assert [(m.step, m.value) for m in c.get_metric_history(run, "valid/full/ndcg_at_10")] == [(1, 0.1), (2, 0.2)]
    assert [(m.step, m.value) for m in c.get_metric_history(run, "test/full/ndcg_at_10")] == [(2, 0.3)]
    assert only.data.tags["ray.overhead_s"] == "10.0"  # one value per run: a tag, not a metric chart
    assert "ray/overhead_s" not in only.data.metrics
    assert tracking.artifact_names(uri, run) == set(tracking.END_OF_RUN_ARTIFACTS) | {"trial_timing.json"}
    (ds,) = c.get_run(run).inputs.dataset_inputs  # the prepared dataset, logged once
    assert ds.dataset.name == "data" and ds.dataset.digest == tracking.manifest_digest({"counts": {"n_items": 12}})


def test_sync_of_an_errored_trial_logs_its_epochs_but_no_artifacts(tmp_path, mlflow_store):
    import json

    from glintru.tuning.summary import sync_trial, trial_history

    s, uri, exp, work = _study_with_work_dir(tmp_path, mlflow_store, "t2")
    (work / "history.json").write_text(json.dumps([{"epoch": 1.0, "train/loss": 2.0}]))
    errored = _Result({"hidden_size": 16}, {}, error=RuntimeError("worker died"))
    run = sync_trial(s, "t2", errored, trial_history(s, "t2", errored), None, {})
    c = tracking.client(uri)
    assert c.get_run(run).info.status == "FAILED"
    assert [m.step for m in c.get_metric_history(run, "train/loss")] == [1]
    assert tracking.artifact_names(uri, run) == set()


def test_best_effort_warns_once_then_stops_calling(capsys):
    """MLflow down: the first failing call (after MLflow's own retries) warns and turns the logger
    off, so training is not slowed by one retry budget per epoch."""
    from mlflow.exceptions import MlflowException

    calls = []

    def failing(uri, run_id, *args):
        calls.append((uri, run_id, args))
        raise MlflowException("API request to http://127.0.0.1:9/api/2.0/mlflow/runs/log-batch failed: Connection refused")

    t = tracking.BestEffort("http://127.0.0.1:9", "r1", "trial t1")
    assert t.call(failing, {"epoch": 1}, 1) is False
    assert t.call(failing, {"epoch": 2}, 2) is False
    assert calls == [("http://127.0.0.1:9", "r1", ({"epoch": 1}, 1))]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("warning: trial t1: MLflow at http://127.0.0.1:9 is unavailable (API request to")
    assert "training continues" in err[0] and "glintru tune --resume" in err[0]
    assert tracking.BestEffort("u", None, "x").call(failing) is False  # no run: never calls
    assert len(calls) == 1


def test_best_effort_passes_through_a_working_call_and_real_bugs():
    seen = []
    t = tracking.BestEffort("u", "r", "x")
    assert t.call(lambda uri, run_id, v: seen.append((uri, run_id, v)), 3) is True
    assert seen == [("u", "r", 3)] and not t.offline
    with pytest.raises(KeyError):  # not an MLflow/connection error: a bug, not swallowed
        t.call(lambda uri, run_id: {}["missing"])


def test_single_train_with_mlflow_down_keeps_the_run_and_exits_1(tmp_path, monkeypatch, capsys):
    """`glintru train --mlflow-uri` against a server that is not there: the run trains and is saved,
    then one clear error (exit 1) says where it is and how to log it later."""
    from glintru.cli import main
    from glintru.tuning.smoke import write_synthetic_dataset

    port = free_port()  # nothing listens on it once its probe socket is closed
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    data = write_synthetic_dataset(tmp_path / "data", n_users=16, n_items=24)
    out = tmp_path / "run"
    code = main(["train", "--data", str(data), "--model", "gru4rec", "--out", str(out), "--quiet",
                 "--mlflow-uri", f"http://127.0.0.1:{port}", "--set", "max_epochs=1", "--set", "max_len=8",
                 "--set", "hidden_size=8", "--set", "num_negatives=10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: --mlflow-uri: MLflow is unavailable (")
    assert f"the run finished and is saved in {out}" in err[-1]
    assert (out / "best.pt").exists() and (out / "history.json").exists()


def test_distributed_train_with_mlflow_down_stops_before_ray_starts(tmp_path, monkeypatch, capsys):
    """`glintru train --workers 2 --mlflow-uri <dead>`: one error line, exit 1, and no Ray started."""
    import ray

    from glintru.cli import main
    from glintru.tuning.smoke import write_synthetic_dataset

    port = free_port()  # nothing listens on it once its probe socket is closed
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    data = write_synthetic_dataset(tmp_path / "data", n_users=16, n_items=24)
    was_running = ray.is_initialized()
    code = main(["train", "--data", str(data), "--model", "gru4rec", "--workers", "2", "--out", str(tmp_path / "run"),
                 "--mlflow-uri", f"http://127.0.0.1:{port}", "--set", "num_negatives=10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith(f"error: --mlflow-uri http://127.0.0.1:{port}: MLflow is unavailable (")
    assert err[-1].endswith("Nothing was trained.")
    assert ray.is_initialized() == was_running  # failed before Ray


def test_trials_table_shows_where_the_time_went_and_the_overhead_line():
    from glintru.tuning.summary import overhead_line, trial_timing, trials_table

    t = trial_timing(started=100.0, fit_started=102.5, ended=130.0, final={"wall_s": 21.0, "train_s": 15.0})
    assert t == {"ray/trial_s": 30.0, "ray/setup_s": 2.5, "ray/fit_s": 21.0, "ray/train_s": 15.0, "ray/overhead_s": 9.0}
    results = [_Result({"kernel_size": 3}, {"trial_id": "a", "epoch": 2.0, "m": 0.1}),
               _Result({"kernel_size": 5}, {"trial_id": "b", "epoch": 1.0, "m": 0.3})]
    csv_text = trials_table(results, ["kernel_size"], "m", {"a": t})
    assert csv_text.splitlines() == [
        "trial_id,kernel_size,epoch,m,best_epoch,best m,trial_s,fit_s,train_s,overhead_s",
        "b,5,1.0,0.3,,0.3,,,,",  # best first; no timing known, no history kept
        "a,3,2.0,0.1,,0.1,30.0,21.0,15.0,9.0",
    ]
    # a's first epoch beat b: a trial is ranked, as the study chooses, by its best epoch
    histories = {"a": [{"epoch": 1.0, "m": 0.35}, {"epoch": 2.0, "m": 0.1}], "b": [{"epoch": 1.0, "m": 0.3}]}
    assert trials_table(results, ["kernel_size"], "m", {"a": t}, histories).splitlines()[1:] == [
        "a,3,2.0,0.1,1,0.35,30.0,21.0,15.0,9.0", "b,5,1.0,0.3,1,0.3,,,,"]
    u = trial_timing(0.0, 1.0, 50.0, {"wall_s": 30.0, "train_s": 20.0})  # 50 s wall, 20 s overhead
    v = trial_timing(0.0, 1.0, 40.0, {"wall_s": 30.0, "train_s": 24.0})  # 40 s wall, 10 s overhead
    # medians of (30, 50, 40) = 40 s wall, (21, 30, 30) = 30 s fit, (15, 20, 24) = 20 s train, (9, 20, 10) = 10 s
    assert overhead_line([t, u, v, {}]) == (
        "time per trial (median of the 3 that ran to their end): 40.0 s wall, 30.0 s inside the engine's fit (20.0 s training loop); "
        "Ray/Tune/MLflow overhead 10.0 s"
    )
    assert overhead_line([{}, {"ray/trial_s": 9.0, "ray/train_s": 3.0}]) is None  # no trial timed itself


def test_a_resumed_trial_counts_its_earlier_segments_in_its_wall_time():
    from glintru.tuning.summary import trial_timing

    # the engine's fit resumed from a checkpoint: 100 s over both segments, 40 s of them in this call
    t = trial_timing(started=0.0, fit_started=1.0, ended=41.0, final={"wall_s": 100.0, "train_s": 90.0})
    assert t == {"ray/trial_s": 101.0, "ray/setup_s": 1.0, "ray/fit_s": 100.0, "ray/train_s": 90.0,
                 "ray/overhead_s": 1.0, "ray/resumed_s": 60.0}
    assert t["ray/trial_s"] >= t["ray/fit_s"]  # before: a 41 s trial with a 100 s fit
    # a fit a few milliseconds longer than this call's window (two clocks) is not a resumed trial
    u = trial_timing(started=0.0, fit_started=1.0, ended=41.0, final={"wall_s": 40.004, "train_s": 30.0})
    assert "ray/resumed_s" not in u and u["ray/trial_s"] == 41.0


def test_a_stopped_trial_gets_tunes_wall_time_and_its_training_loop_time():
    from glintru.tuning.summary import partial_timing

    history = [{"epoch": 1.0, "train/s": 2.5}, {"epoch": 2.0, "train/s": 3.0}]
    stopped = _Result({}, {"time_total_s": 21.0, "epoch": 2.0})
    assert partial_timing(stopped, history) == {"ray/trial_s": 21.0, "ray/train_s": 5.5}  # 2.5 + 3.0
    assert partial_timing(_Result({}, {}), [{"epoch": 1.0}]) == {}


def test_the_chosen_trial_shows_its_best_epochs_metrics_not_its_last_report():
    """Tune chose the trial by its best epoch (scope "all"); ASHA stopped it 3 epochs later, so its
    result's last report is lower. The summary and the registry's score take the peak's validation
    metrics (test metrics, had it any, stay); a trial that ran to its end already reported its best
    epoch's values last and is unchanged."""
    from glintru.tuning.summary import chosen_metrics

    history = [{"epoch": 1.0, "valid/m": 0.03, "valid/hr": 0.06, "train/loss": 9.0},
               {"epoch": 2.0, "valid/m": 0.05, "valid/hr": 0.09, "train/loss": 8.0},
               {"epoch": 5.0, "valid/m": 0.04, "valid/hr": 0.10, "train/loss": 7.0}]
    stopped = {"trial_id": "a", "epoch": 5.0, "valid/m": 0.04, "valid/hr": 0.10, "train/loss": 7.0}
    assert chosen_metrics(stopped, history, "valid/m") == ({"valid/m": 0.05, "valid/hr": 0.09}, 2)
    finished = {"epoch": 5.0, "valid/m": 0.05, "valid/hr": 0.09, "test/m": 0.045}  # the engine's final report
    assert chosen_metrics(finished, history, "valid/m") == ({"valid/m": 0.05, "valid/hr": 0.09, "test/m": 0.045}, 2)
    assert chosen_metrics(stopped, [], "valid/m") == ({"valid/m": 0.04, "valid/hr": 0.10}, None)  # no history kept


def test_runs_and_optuna_trials_of_trials_a_killed_driver_lost_are_retired(tmp_path, mlflow_store):
    """A trial that opened its MLflow run (and got its Optuna suggestion) just before the driver was
    SIGKILLed, and before Tune saved its state, is not restored: at the study's end its work and Tune
    trial directories are removed, its run is deleted (MLflow's trash keeps it) and its Optuna trial
    marked FAIL; the study's own trials stay."""
    import optuna

    from glintru.tuning import search
    from glintru.tuning.summary import delete_lost_trial_runs, remove_lost_trial_dirs

    s, uri, exp, work = _study_with_work_dir(tmp_path, mlflow_store, "t1")
    exp_dir = work.parent.parent
    for tid in ("t2", "lost"):
        (work.parent / tid / "checkpoints").mkdir(parents=True)
        (work.parent / tid / "history.json").write_text("[]")
        (exp_dir / f"train_driver_{tid}_2_lr=0.001_2026-12-06").mkdir()
    (exp_dir / "train_driver_t1_1_lr=0.01_2026-12-06").mkdir()
    assert remove_lost_trial_dirs(s, {"t1", "t2"}) == ["lost"]
    assert sorted(d.name for d in work.parent.iterdir()) == ["t1", "t2"]
    assert sorted(d.name for d in exp_dir.glob("train_driver_*")) == [
        "train_driver_t1_1_lr=0.01_2026-12-06", "train_driver_t2_2_lr=0.001_2026-12-06"]
    assert remove_lost_trial_dirs(s, {"t1", "t2"}) == []  # idempotent
    # a trial that failed before its first report is known by its Tune directory's name, so its
    # work directory is its own, not a lost trial's
    from types import SimpleNamespace

    from glintru.tuning.summary import trial_id_of

    failed = SimpleNamespace(metrics={}, path=str(exp_dir / "train_driver_0a1b2c3d_3_lr=0.0010_2026-12-06_07-15-13"))
    assert trial_id_of(failed) == "0a1b2c3d"
    assert trial_id_of(SimpleNamespace(metrics={"trial_id": "t9"}, path=failed.path)) == "t9"
    runs = {tid: tracking.get_or_create_run(uri, exp, {tracking.ROLE: "trial", tracking.STUDY: "kr", tracking.TRIAL_ID: tid},
                                            run_name=tid)[0] for tid in ("t1", "t2", "lost")}
    other_study, _ = tracking.get_or_create_run(uri, exp, {tracking.ROLE: "trial", tracking.STUDY: "other",
                                                           tracking.TRIAL_ID: "x"}, run_name="x")
    assert delete_lost_trial_runs(s, {"t1", "t2"}) == ["lost"]
    c = tracking.client(uri)
    assert c.get_run(runs["lost"]).info.lifecycle_stage == "deleted" and c.get_run(runs["lost"]).info.status == "KILLED"
    assert {c.get_run(runs[t]).info.lifecycle_stage for t in ("t1", "t2")} == {"active"}
    assert c.get_run(other_study).info.lifecycle_stage == "active"  # another study's trial is not this one's to judge
    assert delete_lost_trial_runs(s, {"t1", "t2"}) == []  # idempotent

    study = optuna.create_study(study_name="kr", storage=f"sqlite:///{tmp_path}/o.db", direction="maximize")
    done = study.ask()
    study.tell(done, 0.5)
    study.ask()  # suggested, never reported
    assert search.fail_running(study) == [1]
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert search.fail_running(study) == []
