"""MLflow helpers against a throwaway sqlite store: absolute URIs, runs found again by tag."""

import os

import pytest

from glintru.errors import UserError
from glintru.tuning import mlflow_log


def test_default_uri_is_absolute_sqlite_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = mlflow_log.resolve_tracking_uri(None)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert mlflow_log.default_artifact_location(uri) == (tmp_path.resolve() / "mlruns").as_uri()


def test_uri_precedence_and_relative_sqlite_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert mlflow_log.resolve_tracking_uri(None) == "http://127.0.0.1:5999"
    assert mlflow_log.resolve_tracking_uri("sqlite:///rel/m.db") == f"sqlite:///{tmp_path.resolve()}/rel/m.db"
    assert mlflow_log.default_artifact_location("http://127.0.0.1:5999") is None
    with pytest.raises(UserError, match="--mlflow-uri"):
        mlflow_log.resolve_tracking_uri("mlflow.db")


def test_metric_names_are_mlflow_safe():
    from mlflow.utils.validation import validate_param_and_metric_name

    name = mlflow_log.mlflow_metric_name("valid/full/ndcg@10")
    assert name == "valid/full/ndcg_at_10"
    assert validate_param_and_metric_name(name)


def test_run_is_found_again_by_tag_not_duplicated(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    exp = mlflow_log.ensure_experiment(uri, "e")
    assert mlflow_log.ensure_experiment(uri, "e") == exp
    tags = {mlflow_log.ROLE: "trial", mlflow_log.STUDY: "s", mlflow_log.TRIAL_ID: "abc_00001"}
    run_a, created_a = mlflow_log.get_or_create_run(uri, exp, tags, run_name="trial-abc")
    mlflow_log.end_run(uri, run_a, "KILLED")
    run_b, created_b = mlflow_log.get_or_create_run(uri, exp, tags, run_name="trial-abc")
    other, _ = mlflow_log.get_or_create_run(uri, exp, {**tags, mlflow_log.TRIAL_ID: "abc_00002"}, run_name="x")
    c = mlflow_log.client(uri)
    assert (created_a, created_b, run_b) == (True, False, run_a)
    assert other != run_a
    assert c.get_run(run_a).info.status == "RUNNING"  # re-opened on resume
    assert len(c.search_runs([exp])) == 2


def test_params_once_and_metrics_per_epoch(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    exp = mlflow_log.ensure_experiment(uri, "e")
    run, _ = mlflow_log.get_or_create_run(uri, exp, {mlflow_log.ROLE: "train"}, run_name="r")
    mlflow_log.log_params(uri, run, {"kernel_size": 5, "topk": [5, 10]})
    mlflow_log.log_params(uri, run, {"kernel_size": 5, "lr": 0.001})  # after a resume: no conflict
    for epoch, v in ((1, 0.1), (2, 0.2)):
        mlflow_log.log_metrics(uri, run, {"epoch": epoch, "valid/full/ndcg@10": v, "note": "x"}, step=epoch)
    c = mlflow_log.client(uri)
    assert c.get_run(run).data.params == {"kernel_size": "5", "topk": "[5, 10]", "lr": "0.001"}
    hist = c.get_metric_history(run, "valid/full/ndcg_at_10")
    assert [(m.step, m.value) for m in hist] == [(1, 0.1), (2, 0.2)]


def test_run_outputs_are_logged_as_artifacts(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    exp = mlflow_log.ensure_experiment(uri, "e")
    run, _ = mlflow_log.get_or_create_run(uri, exp, {mlflow_log.ROLE: "train"}, run_name="r")
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"weights")
    history = [{"epoch": 1, "train/loss": 2.0, "valid/full/ndcg@10": 0.1}, {"epoch": 2, "train/loss": 1.5, "valid/full/ndcg@10": 0.2}]
    mlflow_log.log_run_outputs(uri, run, {"model": "glintru", "lr": 0.1}, {"counts": {"n_items": 3}}, history,
                               {"test/full/ndcg@10": 0.25}, "valid/full/ndcg@10", ckpt)
    c = mlflow_log.client(uri)
    names = {a.path for a in c.list_artifacts(run)} | {a.path for a in c.list_artifacts(run, "checkpoint")}
    assert names >= {"config.yaml", "manifest.json", "learning_curve.png", "checkpoint/best.pt"}
    assert [(m.step, m.value) for m in c.get_metric_history(run, "test/full/ndcg_at_10")] == [(2, 0.25)]
    png = tmp_path / "lc.png"
    mlflow_log.learning_curve_png(history, png, "valid/full/ndcg@10")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.path.exists(tmp_path / "mlruns")


def test_run_outputs_complete_a_cut_off_upload_and_are_idempotent(tmp_path):
    """A kill after config.yaml and manifest.json (the symptom seen after a kill + resume): logging
    again adds the learning curve and checkpoint, keeps what is there, and logs no metric twice."""
    uri = f"sqlite:///{tmp_path}/m.db"
    exp = mlflow_log.ensure_experiment(uri, "e")
    run, _ = mlflow_log.get_or_create_run(uri, exp, {mlflow_log.ROLE: "trial"}, run_name="r")
    c = mlflow_log.client(uri)
    first = tmp_path / "first"
    first.mkdir()
    (first / "config.yaml").write_text("lr: 0.1\n")
    (first / "manifest.json").write_text("{}")
    c.log_artifact(run, str(first / "config.yaml"))
    c.log_artifact(run, str(first / "manifest.json"))
    mlflow_log.log_metrics(uri, run, {"test/full/ndcg@10": 0.25}, step=2)
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"weights")
    history = [{"epoch": 1, "train/loss": 2.0, "valid/full/ndcg@10": 0.1}, {"epoch": 2, "train/loss": 1.5, "valid/full/ndcg@10": 0.2}]
    for _ in range(2):
        mlflow_log.log_run_outputs(uri, run, {"model": "glintru", "lr": 0.1}, {"counts": {}}, history,
                                   {"test/full/ndcg@10": 0.25}, "valid/full/ndcg@10", ckpt)
    assert mlflow_log.artifact_names(uri, run) == set(mlflow_log.END_OF_RUN_ARTIFACTS)
    assert [a.path for a in c.list_artifacts(run, "checkpoint")] == ["checkpoint/best.pt"]
    assert [(m.step, m.value) for m in c.get_metric_history(run, "test/full/ndcg_at_10")] == [(2, 0.25)]
    local = c.download_artifacts(run, "config.yaml", str(tmp_path / "dl"))
    assert open(local).read() == "lr: 0.1\n"  # the first upload is kept, not overwritten


def test_study_driver_completes_a_stopped_trials_artifacts_from_its_work_dir(tmp_path):
    """ASHA's stop reaches the workers late: a trial stopped at epoch 1 may have trained epoch 2 and
    been killed in its upload. The study driver logs the missing artifacts from the work directory."""
    import json

    from glintru.tuning.smoke import write_synthetic_dataset
    from glintru.tuning.study import StudySettings, complete_trial_artifacts

    data = write_synthetic_dataset(tmp_path / "data", n_users=8, n_items=12)
    uri = f"sqlite:///{tmp_path}/m.db"
    exp = mlflow_log.ensure_experiment(uri, "e")
    run, _ = mlflow_log.get_or_create_run(uri, exp, {mlflow_log.ROLE: "trial"}, run_name="t")
    s = StudySettings(
        name="kr", storage_path=str(tmp_path / "rr"), data_dir=str(data), search_space="x.yaml", model="glintru",
        base_flat={"max_len": 8}, num_samples=1, max_epochs=2, workers=1, cpus_per_worker=1.0, use_gpu=False,
        grace_period=1, seed=0, metric="valid/full/ndcg@10", tracking_uri=uri, mlflow_experiment_id=exp,
        parent_run_id="p", max_concurrent=1,
    )
    work = tmp_path / "rr" / "kr" / "work" / "t1"
    assert not complete_trial_artifacts(s, "t1", run, {"hidden_size": 16})  # nothing trained: nothing logged
    work.mkdir(parents=True)
    history = [{"epoch": 1.0, "train/loss": 2.0, "valid/full/ndcg@10": 0.1}, {"epoch": 2.0, "train/loss": 1.5, "valid/full/ndcg@10": 0.2}]
    (work / "history.json").write_text(json.dumps(history))
    (work / "best.pt").write_bytes(b"weights")
    assert complete_trial_artifacts(s, "t1", run, {"hidden_size": 16})
    assert mlflow_log.artifact_names(uri, run) == set(mlflow_log.END_OF_RUN_ARTIFACTS)
    assert not complete_trial_artifacts(s, "t1", run, {"hidden_size": 16})  # complete: nothing to do
