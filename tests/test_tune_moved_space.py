"""A study whose search-space file has moved since it started (another checkout, another node):
`glintru tune` run again with the same file at its new place continues it; `--resume` alone says
which recorded file is missing and how to continue. No Ray: the restore itself is replaced."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from ray import tune

from glintru.errors import UserError
from glintru.tuning import driver
from glintru.tuning.settings import StudySettings, save_settings
from glintru.tuning.space import load_search_space

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"


def _study(tmp_path: Path, space_file: Path, uri: str | None = None) -> str:
    s = StudySettings(
        name="glintru-0123456789ab", storage_path=str(tmp_path / "store"), data_dir=str(tmp_path / "data"),
        search_space=str(space_file), model="glintru", base_flat={}, num_samples=2, max_epochs=1, workers=1,
        cpus_per_worker=1.0, gpus_per_worker=0.0, grace_period=1, seed=0, metric="valid/full/ndcg@10",
        tracking_uri=uri or f"sqlite:///{tmp_path / 'mlflow.db'}", mlflow_experiment="e", mlflow_experiment_id="1",
        parent_run_id="p", register_name="r", max_concurrent=1, optuna_storage=f"sqlite:///{tmp_path / 'o.db'}")
    Path(s.experiment_path).mkdir(parents=True)
    save_settings(s)
    return s.experiment_path


@pytest.fixture
def restored(monkeypatch):
    seen = []
    monkeypatch.setattr(tune.Tuner, "can_restore", staticmethod(lambda path, **kw: True))
    monkeypatch.setattr(driver, "_resume", lambda s, space, *a, **kw: seen.append((s.name, space)) or "outcome")
    return seen


def test_the_space_given_again_continues_a_study_whose_file_moved(tmp_path, restored, mlflow_store):
    old = tmp_path / "checkout-1" / "quick.yaml"
    old.parent.mkdir()
    shutil.copyfile(SPACES / "quick.yaml", old)
    exp = _study(tmp_path, old, mlflow_store())
    shutil.move(old.parent, tmp_path / "checkout-2")  # the first checkout is gone
    space = load_search_space(tmp_path / "checkout-2" / "quick.yaml")
    assert driver.resume_study(exp, space=space) == "outcome"
    assert restored == [("glintru-0123456789ab", space)]


def test_resume_names_the_missing_recorded_file_and_the_way_on(tmp_path, restored, mlflow_store):
    old = tmp_path / "checkout-1" / "quick.yaml"
    old.parent.mkdir()
    shutil.copyfile(SPACES / "quick.yaml", old)
    exp = _study(tmp_path, old, mlflow_store())
    assert driver.resume_study(exp) == "outcome"  # the recorded file is still there: it is read
    assert restored[0][1].model == load_search_space(SPACES / "quick.yaml").model
    old.unlink()
    with pytest.raises(UserError) as err:
        driver.resume_study(exp)
    msg = str(err.value)
    assert str(old) in msg and "not found" in msg and "recorded when study glintru-0123456789ab started" in msg
    assert "\n" not in msg and len(restored) == 1


@pytest.mark.parametrize("experiment", [None, "my-study"])
def test_tune_run_again_hands_its_space_to_the_resume_only_under_the_derived_name(tmp_path, monkeypatch, experiment):
    from engine_fixtures import cyclic_sequences, write_prepared

    data = write_prepared(tmp_path / "data", cyclic_sequences(8, 12), 12)
    calls = []
    monkeypatch.setattr(driver, "study_exists", lambda path: True)
    monkeypatch.setattr(driver, "resume_study", lambda path, **kw: calls.append((path, kw)) or "outcome")
    checked = []  # a named study is first compared with the options it recorded (tests/test_study_run.py)
    monkeypatch.setattr(driver, "load_settings", lambda path: path)
    monkeypatch.setattr(driver, "check_same_study", lambda recorded, *a: checked.append(recorded))
    space_file = tmp_path / "moved" / "quick.yaml"
    space_file.parent.mkdir()
    shutil.copyfile(SPACES / "quick.yaml", space_file)
    out = driver.run_study(data_dir=str(data), search_space=str(space_file), storage_path=str(tmp_path / "store"),
                           mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment=experiment, num_samples=None,
                           max_epochs=None, workers=None, overrides={})
    assert out == "outcome" and len(calls) == 1
    assert checked == ([] if experiment is None else [calls[0][0]])
    given = calls[0][1]["space"]
    if experiment is None:  # the derived name fingerprints this very space
        assert given.fingerprint() == load_search_space(space_file).fingerprint()
    else:  # a name the user chose may hold another space: the recorded file decides
        assert given is None


def test_a_study_saved_before_target_weight_resumes_with_per_batch_means(tmp_path):
    # Studies started before the key have no target_weight in base_flat: their trials trained with
    # per-batch means, so a resume keeps them; a study that recorded the key keeps its value.
    from glintru.tuning.settings import load_settings, pinned_defaults

    exp = _study(tmp_path, SPACES / "quick.yaml")
    s = load_settings(exp)
    assert s.base_flat == {"target_weight": "batch"}
    assert s.trial_config({"lr": 1e-3}, "t").train.target_weight == "batch"
    assert pinned_defaults() == {"target_weight": "equal"}
    save_settings(dataclasses.replace(s, base_flat={"target_weight": "equal", "max_len": 16}))
    assert load_settings(exp).trial_config({}, "t").train.target_weight == "equal"
