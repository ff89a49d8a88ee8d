"""A resumed study finds its MLflow experiment and parent run again, or logs itself anew when the
store lost them (file deleted, database reset, run deleted) or when ``--mlflow-uri`` moves it; a
resume or a named re-run with other study options is one clear error, not silently ignored.

Real MLflow sqlite stores; the end-to-end resume into an emptied store is in test_tune_interrupt.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from glintru import tracking
from glintru.cli import main
from glintru.errors import UserError
from glintru.tuning import study_run
from glintru.tuning.settings import STUDY_FILE, StudySettings, check_same_study, load_settings, save_settings
from glintru.tuning.space import load_search_space, resolve_profile


@pytest.fixture
def space():
    return load_search_space(resolve_profile("quick"))


def _study(tmp_path: Path, uri: str, space, reset: str | None = None) -> StudySettings:
    """Study ``kr`` as a new study records it: experiment 'e' and its parent run in ``uri``. With
    ``reset``, the settings name that store instead: an empty store where the recorded ids were
    (what a deleted mlflow.db or a reset server database looks like to the next resume; a deleted
    file cannot stand in for it here, as MLflow keeps its sqlite engine open within a process)."""
    exp_id, parent = study_run.open_parent(uri, "e", "kr")
    s = StudySettings(
        name="kr", storage_path=str(tmp_path / "rr"), data_dir=str(tmp_path / "data"), search_space=str(space.path),
        model=space.model, base_flat={"target_weight": "equal", **space.fixed, "max_len": 16}, num_samples=3, max_epochs=2,
        workers=1, cpus_per_worker=1.0, gpus_per_worker=0.0, grace_period=1, seed=0, metric="valid/full/ndcg@10",
        tracking_uri=reset or uri, mlflow_experiment="e", mlflow_experiment_id=exp_id, parent_run_id=parent,
        register_name="kr-best", max_concurrent=1, optuna_storage=f"sqlite:///{tmp_path}/optuna.db",
    )
    Path(s.experiment_path).mkdir(parents=True)
    save_settings(s)
    return s


def _saved(s: StudySettings) -> dict:
    return json.loads((Path(s.experiment_path) / STUDY_FILE).read_text())


def test_a_study_mlflow_still_has_is_left_as_recorded(tmp_path, mlflow_store, space, capsys):
    s = _study(tmp_path, mlflow_store("m.db"), space)
    before = _saved(s)
    tracking.end_run(s.tracking_uri, s.parent_run_id, "KILLED")  # as Ctrl+C leaves it
    assert study_run.reconnect(s, space) is s
    assert MlflowClient(s.tracking_uri).get_run(s.parent_run_id).info.status == "RUNNING"  # the study runs again
    assert study_run.reconnect(s, space, s.tracking_uri) is s  # --mlflow-uri naming the same store
    assert _saved(s) == before and capsys.readouterr().out == ""


def test_a_deleted_store_gets_the_study_anew_with_its_params(tmp_path, mlflow_store, space, capsys):
    uri = mlflow_store("m.db")
    s = _study(tmp_path, mlflow_store("before.db"), space, reset=uri)  # mlflow.db removed between two sessions
    new = study_run.reconnect(s, space)
    out = capsys.readouterr().out
    assert f"study kr is logged anew: MLflow at {uri} no longer has its experiment 'e' (id {s.mlflow_experiment_id})" in out
    assert "nothing is trained again" in out
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("e")
    parent = c.get_run(new.parent_run_id)
    assert new.mlflow_experiment_id == exp.experiment_id and parent.info.experiment_id == exp.experiment_id
    assert parent.data.tags[tracking.ROLE] == "study" and parent.data.tags[tracking.STUDY] == "kr"
    assert parent.data.params["num_samples"] == "3" and parent.data.params["fixed.max_len"] == "16"
    assert parent.data.tags["max_concurrent"] == "1"
    assert load_settings(s.experiment_path) == new  # the next resume and every trial log there
    assert study_run.reconnect(new, space) is new  # and find it again as recorded


def test_a_deleted_parent_run_is_opened_again_in_the_same_experiment(tmp_path, mlflow_store, space, capsys):
    uri = mlflow_store("m.db")
    s = _study(tmp_path, uri, space)
    MlflowClient(uri).delete_run(s.parent_run_id)  # deleted in the UI
    new = study_run.reconnect(s, space)
    assert f"no longer has its parent run {s.parent_run_id}" in capsys.readouterr().out
    assert new.mlflow_experiment_id == s.mlflow_experiment_id and new.parent_run_id != s.parent_run_id
    assert MlflowClient(uri).get_run(new.parent_run_id).info.lifecycle_stage == "active"


def test_an_experiment_id_reused_after_a_reset_is_not_taken_for_the_study(tmp_path, mlflow_store, space, capsys):
    uri = mlflow_store("m.db")
    s = _study(tmp_path, mlflow_store("before.db"), space, reset=uri)
    other = tracking.ensure_experiment(uri, "someone-else")  # the reset store gives the same id to another experiment
    assert other == s.mlflow_experiment_id
    new = study_run.reconnect(s, space)
    assert new.mlflow_experiment_id != other
    assert MlflowClient(uri).get_experiment(new.mlflow_experiment_id).name == "e"
    assert "no longer has its experiment 'e'" in capsys.readouterr().out


def test_a_deleted_experiment_is_one_error_naming_how_to_restore_it(tmp_path, mlflow_store, space):
    uri = mlflow_store("m.db")
    s = _study(tmp_path, uri, space)
    MlflowClient(uri).delete_experiment(s.mlflow_experiment_id)
    with pytest.raises(UserError) as err:
        study_run.reconnect(s, space)
    assert str(err.value) == (
        f"MLflow experiment 'e' (id {s.mlflow_experiment_id}), where study kr logs, is deleted at {uri}; restore it "
        f"(MLflow UI, or `mlflow experiments restore --experiment-id {s.mlflow_experiment_id}`) and resume again")
    assert load_settings(s.experiment_path) == s


def test_mlflow_uri_with_a_resume_moves_the_study(tmp_path, mlflow_store, space, capsys):
    s = _study(tmp_path, mlflow_store("old.db"), space)
    uri = mlflow_store("new.db")
    new = study_run.reconnect(s, space, uri)
    assert f"study kr moves to {uri}; experiment 'e'" in capsys.readouterr().out
    assert load_settings(s.experiment_path) == new and new.tracking_uri == uri
    assert MlflowClient(uri).get_run(new.parent_run_id).data.tags[tracking.STUDY] == "kr"
    # moving back finds the study's parent run there by its tags: no second parent
    back = study_run.reconnect(new, space, s.tracking_uri)
    assert back.parent_run_id == s.parent_run_id and back.mlflow_experiment_id == s.mlflow_experiment_id


def test_an_unreachable_mlflow_is_left_to_the_outage_handling_but_cannot_be_moved_to(tmp_path, mlflow_store, space, monkeypatch):
    from proc_helpers import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = f"http://127.0.0.1:{free_port()}"
    s = _study(tmp_path, mlflow_store("m.db"), space)
    with pytest.raises(UserError) as err:
        study_run.reconnect(s, space, dead)
    assert str(err.value).startswith(f"--mlflow-uri {dead}: MLflow is unavailable (")
    assert str(err.value).endswith(f"the study still logs to {s.tracking_uri}. Nothing was trained.")
    assert load_settings(s.experiment_path) == s
    down = StudySettings(**{**_saved(s), "tracking_uri": dead})
    assert study_run.reconnect(down, space) is down  # the recorded MLflow is down: trials train on without it


def test_resume_with_options_that_define_a_study_is_one_error(tmp_path, capsys):
    code = main(["tune", "--resume", str(tmp_path), "--num-samples", "7", "--set", "lr=0.1", "--cpus-per-worker", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err == ("error: --resume continues a study with the options it started with (recorded in its "
                   "glintru_study.json); --num-samples, --cpus-per-worker, --set cannot change them. With --resume "
                   "only --mlflow-uri, --address, --num-cpus, --out, --verbose apply; for other options start a new "
                   "study (another --experiment)")


def test_a_named_study_run_again_with_other_options_is_one_error_listing_them(tmp_path, mlflow_store, space):
    s = _study(tmp_path, mlflow_store("m.db"), space)
    opts = {"num_samples": 3, "max_epochs": 2, "workers": 1, "grace_period": 1, "seed": 0}
    check_same_study(s, space, s.data_dir, {"max_len": 16}, opts, 1.0, 0.0)  # as it started
    with pytest.raises(UserError) as err:
        check_same_study(s, space, s.data_dir, {"max_len": 16, "lr": 0.01}, {**opts, "num_samples": 20}, 1.0, 0.0)
    assert str(err.value) == (
        f"--experiment kr: that study exists in {s.experiment_path} and continues with the options it started with; "
        "this command differs: --num-samples 20 (the study: 3); lr=0.01 (the study: not set). Run it as it started to "
        f"continue it (or `glintru tune --resume {s.experiment_path}`), or name another --experiment for a new study")


def test_glintru_tune_checks_a_named_study_before_continuing_it(tmp_path, mlflow_store, space, capsys):
    """Through the command: other options -> the listing error; the same options go on to the
    resume (here: no Tune state to restore, since this study never ran)."""
    from glintru.tuning.smoke import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", n_users=8, n_items=12)
    s = _study(tmp_path, mlflow_store("m.db"), space)
    args = ["tune", "--data", str(data), "--profile", "quick", "--experiment", "kr", "--storage-path", s.storage_path,
            "--mlflow-uri", s.tracking_uri, "--set", "max_len=16", "--max-epochs", "2",
            "--grace-period", "1", "--workers", "1", "--seed", "0"]
    assert main([*args, "--num-samples", "5"]) == 2
    err = capsys.readouterr().err
    assert "--num-samples 5 (the study: 3)" in err and "--experiment kr: that study exists" in err
    assert main([*args, "--num-samples", "3"]) == 2
    assert capsys.readouterr().err.strip() == f"error: --resume {s.experiment_path}: no Ray Tune experiment state to restore there"
