"""``glintru train`` through ``glintru.cli.main``: outputs, run directory, resume, --config, errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from engine_fixtures import cyclic_sequences, write_prepared

from glintru.cli import main

torch.set_num_threads(1)

N_ITEMS = 120  # enough items for 100 popularity negatives per user (pop100)
TINY = ["--set", "hidden_size=8", "--set", "embedding_size=8", "--set", "max_len=6", "--set", "batch_size=64",
        "--set", "eval_batch_size=64", "--threads", "1", "--quiet"]


@pytest.fixture()
def data_dir(tmp_path):
    return write_prepared(tmp_path / "data", cyclic_sequences(130, N_ITEMS), N_ITEMS)


def test_train_writes_metrics_config_history_and_checkpoints(tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), "--model", "gru4rec", "--max-epochs", "2", "--out", str(run), *TINY]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test/full/ndcg@10", "test/pop100/ndcg@10", "valid/full/ndcg@10", "valid/pop100/ndcg@10"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["best_epoch"] in (1, 2) and metrics["wall_s"] > 0
    assert len(json.loads((run / "history.json").read_text())) == 2
    assert (run / "best.pt").is_file() and (run / "checkpoints" / "epoch_0002" / "checkpoint.pt").is_file()
    flat = yaml.safe_load((run / "config.yaml").read_text())
    assert flat["model"] == "gru4rec" and flat["max_epochs"] == 2 and flat["hidden_size"] == 8
    out = capsys.readouterr().out
    assert "test/full" in out and "ndcg@10" in out and f"{metrics['test/full/ndcg@10']:.4f}" in out

    # The saved config reproduces the run: same metrics from --config alone in a new directory.
    run2 = tmp_path / "run2"
    assert main(["train", "--data", str(data_dir), "--config", str(run / "config.yaml"), "--out", str(run2), "--quiet"]) == 0
    metrics2 = json.loads((run2 / "metrics.json").read_text())
    assert {k: v for k, v in metrics2.items() if "/" in k} == {k: v for k, v in metrics.items() if "/" in k}

    # --resume continues the run in its directory up to the new epoch limit.
    assert main(["train", "--data", str(data_dir), "--resume", str(run), "--max-epochs", "3", "--quiet"]) == 0
    assert len(json.loads((run / "history.json").read_text())) == 3


def test_a_refused_resume_leaves_the_runs_config_as_it_was(tmp_path, data_dir, capsys):
    """--resume (or the same --out again) with a changed setting is refused before anything is
    written: config.yaml still describes the checkpoints, so the next plain resume works."""
    run = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), "--model", "gru4rec", "--max-epochs", "1", "--out", str(run), *TINY]) == 0
    before = (run / "config.yaml").read_bytes()
    capsys.readouterr()
    for argv in (["--resume", str(run)], ["--model", "gru4rec", "--out", str(run), *TINY]):
        assert main(["train", "--data", str(data_dir), *argv, "--set", "lr=0.5", "--max-epochs", "2"]) == 2
        err = capsys.readouterr().err
        assert "checkpoints/epoch_0001: cannot resume with a different configuration (lr: 0.001 -> 0.5)" in err
        assert (run / "config.yaml").read_bytes() == before
    assert main(["train", "--data", str(data_dir), "--resume", str(run), "--max-epochs", "2", "--quiet"]) == 0
    assert len(json.loads((run / "history.json").read_text())) == 2


def test_weights_are_refused_on_another_catalogue_of_the_same_size(tmp_path, data_dir, capsys):
    """best.pt records the training catalogue: recommend and resume on a dataset whose item index i
    names another item (same count: a re-prepared snapshot) are one error line, not wrong lists."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    run = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), "--model", "gru4rec", "--max-epochs", "1", "--out", str(run), *TINY]) == 0
    assert len(torch.load(run / "best.pt", weights_only=True)["catalogue_sha256"]) == 64
    other = tmp_path / "other"
    shutil.copytree(data_dir, other)
    ids = [str(i) for i in range(1, N_ITEMS + 1)]
    ids[0], ids[1] = ids[1], ids[0]  # items 1 and 2 swap names
    pq.write_table(pa.table({"item_idx": pa.array(range(1, N_ITEMS + 1), pa.int32()), "item_id": pa.array(ids)}),
                   other / "items.parquet")
    capsys.readouterr()
    out = tmp_path / "recs.parquet"
    assert main(["recommend", "--model", str(run), "--data", str(data_dir), "--out", str(out)]) == 0
    assert main(["recommend", "--model", str(run), "--data", str(other), "--out", str(tmp_path / "x.parquet")]) == 2
    err = capsys.readouterr().err
    assert f"trained on another catalogue than {other} (the same number of items, {N_ITEMS}" in err
    assert main(["train", "--data", str(other), "--resume", str(run), "--max-epochs", "2", "--quiet"]) == 2
    assert "the checkpoint was trained on another catalogue" in capsys.readouterr().err
    assert len(json.loads((run / "history.json").read_text())) == 1


def test_resume_of_a_run_saved_before_target_weight_keeps_its_weighting(tmp_path, data_dir):
    run = tmp_path / "run"
    args = ["train", "--data", str(data_dir), "--model", "gru4rec", "--out", str(run), *TINY]
    assert main([*args, "--max-epochs", "1", "--set", "target_weight=batch"]) == 0
    for f in (run / "config.yaml", run / "checkpoints" / "epoch_0001" / "checkpoint.pt"):  # as an older version wrote them
        if f.suffix == ".yaml":
            flat = yaml.safe_load(f.read_text())
            del flat["target_weight"]
            f.write_text(yaml.safe_dump(flat))
        else:
            state = torch.load(f, weights_only=True)
            del state["config"]["target_weight"]
            torch.save(state, f)
    assert main(["train", "--data", str(data_dir), "--resume", str(run), "--max-epochs", "2", "--quiet"]) == 0
    assert len(json.loads((run / "history.json").read_text())) == 2
    assert yaml.safe_load((run / "config.yaml").read_text())["target_weight"] == "batch"


def test_default_run_dir_is_deterministic(tmp_path, data_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--data", str(data_dir), "--model", "gru4rec", "--max-epochs", "1", *TINY]
    assert main(args) == 0
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("gru4rec-") and len(runs[0].name) == len("gru4rec-") + 10
    assert main(args) == 0  # same command: same directory, resumed (already finished), nothing new
    assert list((tmp_path / "runs").iterdir()) == runs


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--model", "gru4rec", "--set", "lrr=0.1"], "unknown key(s) 'lrr'"),
        (["--model", "gru4rec", "--set", "lr=-1"], "error: --set: field 'lr': must be > 0"),
        (["--model", "gru4rec", "--max-epochs", "0"], "error: --max-epochs: field 'max_epochs': must be >= 1"),
        (["--model", "glintru_official", "--set", "objective=all_positions"], "field 'objective'"),
        (["--model", "gru4rec", "--threads", "0"], "--threads: must be >= 1"),
        (["--model", "gru4rec", "--workers", "2", "--num-cpus", "0"], "--num-cpus: must be >= 1, got 0"),
        (["--model", "gru4rec", "--resume", "nowhere"], "nowhere/config.yaml: not found"),
        ([], "--model: required"),
    ],
)
def test_bad_settings_exit_2_with_one_line(tmp_path, data_dir, capsys, argv, message):
    assert main(["train", "--data", str(data_dir), "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_a_run_stopped_by_bad_input_before_training_leaves_no_run_directory(tmp_path, data_dir, capsys):
    # 200 popularity negatives from 120 items: the evaluation's check refuses it once the run directory exists
    argv = ["train", "--data", str(data_dir), "--model", "gru4rec", "--max-epochs", "1", *TINY,
            "--set", "num_negatives=200"]
    assert main([*argv, "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: field 'num_negatives'") and err.count("\n") == 1
    assert not (tmp_path / "new").exists()  # not a directory with a config of a run that never trained
    (tmp_path / "mine").mkdir()  # a directory the user made stays
    assert main([*argv, "--out", str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine").is_dir()
    run = tmp_path / "trained"  # a run that trained keeps everything when a later command fails on it
    assert main(["train", "--data", str(data_dir), "--model", "gru4rec", "--max-epochs", "1", *TINY,
                 "--out", str(run)]) == 0
    assert main(["train", "--data", str(data_dir), "--resume", str(run), "--max-epochs", "2", "--quiet",
                 "--set", "num_negatives=200"]) == 2
    assert "num_negatives" in capsys.readouterr().err
    assert (run / "metrics.json").is_file() and (run / "checkpoints" / "epoch_0001").is_dir()


def test_missing_dataset_exits_2(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--model", "gru4rec"]) == 2
    assert "prepared dataset directory not found" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--model", "gru4rec", "--max-epochs", "abc"], ["--model", "gru4rec", "--device", "tpu"]])
def test_bad_arguments_exit_2_from_argparse(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", str(tmp_path), *argv])
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err


def test_missing_data_option_is_one_clear_error(capsys):
    assert main(["train", "--model", "gru4rec"]) == 2  # --data is optional only with --smoke-test
    assert capsys.readouterr().err == "error: --data: required (a prepared dataset directory), unless --smoke-test\n"


@pytest.mark.parametrize("argv, message", [
    (["--gpu"], "--gpu: no CUDA device is available on this machine (use --workers to train on a cluster's GPUs)"),
    (["--device", "cuda"], "--gpu: no CUDA device is available on this machine"),
    (["--workers", "1", "--gpus-per-worker", "0.5"], "--gpus-per-worker: needs --workers and --gpu, and must be > 0"),
])
def test_gpu_options_without_a_gpu_are_one_error_line(tmp_path, data_dir, capsys, argv, message):
    if torch.cuda.is_available():
        pytest.fail("this test expects a machine without CUDA (the project's CPU machines)")
    code = main(["train", "--data", str(data_dir), "--model", "gru4rec", "--out", str(tmp_path / "run"), *TINY, *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: {message}") and "\n" not in err


def test_every_command_has_one_gpu_flag(capsys):
    import re

    helps = {}
    for command in ("train", "tune", "recommend"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helps[command] = capsys.readouterr().out
        assert re.search(r"--gpu\b(?!-)", helps[command]), command
    assert "--gpus-per-worker" in helps["tune"]
    assert "incremental mode" in helps["recommend"] and "--events" in helps["recommend"]
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "glintru command line: prepare, train, tune, recommend." in top and "``" not in top  # no reST markup


@pytest.mark.parametrize("smoke", [False, True])
def test_tune_makes_a_scratch_directory_only_for_a_smoke_test(tmp_path, data_dir, monkeypatch, smoke):
    # A study killed by SIGKILL cannot remove its temporary directory; a study on the user's data has no
    # use for one, so it must not leave an empty glintru-smoke-* behind in /tmp.
    import tempfile
    from types import SimpleNamespace

    from glintru.tuning import driver

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    seen = {}

    def fake_run_study(**kw):
        seen.update(kw, dirs=sorted(p.name.startswith("glintru-smoke-") for p in scratch.iterdir()))
        return SimpleNamespace(n_trials=0, best_trial_id=None, best_config_path=None)

    monkeypatch.setattr(driver, "run_study", fake_run_study)
    argv = ["tune", "--smoke-test"] if smoke else ["tune", "--data", str(data_dir), "--mlflow-uri", f"sqlite:///{tmp_path}/m.db"]
    assert main(argv) == 0
    assert seen["dirs"] == ([True] if smoke else [])
    assert seen["data_dir"].startswith(str(scratch)) if smoke else seen["data_dir"] == str(data_dir)
    assert list(scratch.iterdir()) == []  # the smoke test's scratch directory is gone afterwards


def test_tune_refuses_a_catalogue_too_small_for_its_negatives_before_ray_or_mlflow(tmp_path, data_dir, capsys):
    # 120 items cannot give each user 200 popularity negatives: one line, before any trial (or Ray) starts
    argv = ["tune", "--data", str(data_dir), "--profile", "quick", "--storage-path", str(tmp_path / "ray"),
            "--mlflow-uri", f"sqlite:///{tmp_path}/m.db", "--set", "num_negatives=200"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: field 'num_negatives': 200 negatives requested") and err.count("\n") == 1
    assert not (tmp_path / "m.db").exists()  # no MLflow store (no parent run) and no study's Tune state:
    assert not (tmp_path / "ray").exists() or not any((tmp_path / "ray").iterdir())


def test_sigterm_in_prepare_or_recommend_runs_their_cleanup_and_exits_143(tmp_path, monkeypatch, capsys):
    """SIGTERM (a cancelled job) is handled as Ctrl+C: `finally` blocks run (a partial output is
    removed) and one word says so, exit 143; afterwards SIGTERM's previous handler is back."""
    import os
    import signal

    from glintru.commands import recommend

    partial = tmp_path / ".recs.parquet.tmp-1"

    def run(args):
        try:
            partial.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("SIGTERM did not interrupt the command")
        finally:
            partial.unlink()

    monkeypatch.setattr(recommend, "run", run)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["recommend", "--model", "m", "--data", "d", "--out", str(tmp_path / "recs.parquet")]) == 143
    assert capsys.readouterr().err == "terminated\n" and not partial.exists()
    assert signal.getsignal(signal.SIGTERM) is before
