"""Faults without a cluster: a corrupted latest checkpoint, unwritable output and storage paths.

Each case ends in one ``error: ...`` line and exit code 2, before any training (or Ray) starts, and
the documented recovery (docs/operating.md) works: delete the damaged epoch directory and re-run.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from glintru.cli import main
from glintru.tuning.smoke import write_synthetic_dataset

torch.set_num_threads(1)

TINY = ["--model", "glintru", "--set", "hidden_size=8", "--set", "n_heads=2", "--set", "max_len=8",
        "--set", "batch_size=16", "--set", "eval_batch_size=64", "--set", "num_negatives=10",
        "--set", "valid_metric=valid/full/ndcg@10", "--threads", "1", "--quiet"]


@pytest.fixture()
def data_dir(tmp_path):
    return write_synthetic_dataset(tmp_path / "data")


@pytest.fixture()
def no_ray(monkeypatch):
    """Fail the test if Ray is started: bad paths must be rejected before that."""
    from glintru.distributed import trainer

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started before the bad path was reported")

    monkeypatch.setattr(trainer, "init_ray", refuse)


def one_line_error(argv: list[str], capsys) -> str:
    capsys.readouterr()  # drop the output of earlier steps
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def epochs_of(run: Path) -> list[int]:
    return [int(h["epoch"]) for h in json.loads((run / "history.json").read_text())]


def test_corrupt_latest_checkpoint_is_a_clear_error_then_resume_from_the_previous(tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), *TINY, "--max-epochs", "2", "--out", str(run)]) == 0
    latest = run / "checkpoints" / "epoch_0002" / "checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 3])  # truncated, e.g. a full disk

    err = one_line_error(["train", "--data", str(data_dir), "--resume", str(run), "--max-epochs", "4", "--quiet"], capsys)
    assert str(latest) in err and "corrupt or truncated checkpoint" in err
    assert epochs_of(run) == [1, 2]  # nothing was trained or overwritten
    good = latest.read_bytes()
    latest.write_text("epoch,loss\n1,0.5\n")  # another kind of file in its place (a bad copy): the same line
    err = one_line_error(["train", "--data", str(data_dir), "--resume", str(run), "--max-epochs", "4", "--quiet"], capsys)
    assert str(latest) in err and "corrupt or truncated checkpoint" in err
    latest.write_bytes(good)

    # Recovery (docs/operating.md): remove the damaged epoch; the run resumes from epoch 1's checkpoint
    # and the epoch counter continues from there.
    for f in latest.parent.iterdir():
        f.unlink()
    latest.parent.rmdir()
    assert main(["train", "--data", str(data_dir), "--resume", str(run), "--max-epochs", "4", "--quiet"]) == 0
    assert epochs_of(run) == [1, 2, 3, 4]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_0003", "epoch_0004"]


def test_corrupt_best_model_is_a_clear_error_for_recommend(tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), *TINY, "--max-epochs", "1", "--out", str(run)]) == 0
    (run / "best.pt").write_bytes(b"PK\x03\x04 truncated zip")
    err = one_line_error(["recommend", "--model", str(run), "--data", str(data_dir), "--out", str(tmp_path / "r.parquet")], capsys)
    assert f"{run / 'best.pt'}: cannot read the checkpoint" in err


def test_unwritable_train_output_fails_before_training(tmp_path, data_dir, capsys, no_ray):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for extra in ([], ["--workers", "2"]):
        err = one_line_error(["train", "--data", str(data_dir), *TINY, "--max-epochs", "1", "--out", str(blocker / "run"), *extra], capsys)
        assert str(blocker / "run") in err and "--out" in err


def test_unwritable_tune_storage_or_mlflow_path_fails_before_ray_starts(tmp_path, data_dir, capsys, no_ray):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    ok_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = ["tune", "--data", str(data_dir), "--profile", "quick", "--num-samples", "1", "--max-epochs", "1",
            "--set", "num_negatives=10"]  # the fixture's catalogue is too small for pop100 (refused first)
    err = one_line_error(base + ["--storage-path", str(blocker / "ray"), "--mlflow-uri", ok_uri], capsys)
    assert "--storage-path" in err and str(blocker / "ray") in err
    err = one_line_error(base + ["--storage-path", str(tmp_path / "ray"), "--mlflow-uri", f"sqlite:///{blocker / 'm.db'}"], capsys)
    assert "--mlflow-uri" in err and str(blocker) in err
    assert not (tmp_path / "mlflow.db").exists()  # no orphan MLflow parent run was opened


def test_unwritable_recommend_output_fails_before_scoring(tmp_path, data_dir, capsys, no_ray):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    run = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), *TINY, "--max-epochs", "1", "--out", str(run)]) == 0
    err = one_line_error(["recommend", "--model", str(run), "--data", str(data_dir), "--out", str(blocker / "r.parquet")], capsys)
    assert "--out" in err and str(blocker) in err


# ------------------------------------------------------------------ a full disk, and two commands on one directory


@pytest.fixture()
def small_disk(tmp_path):
    """A 3 MB tmpfs (the machine's tests run as root, as CI does); unmounted afterwards."""
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_one_error_line_leaves_no_partial_file_and_the_run_resumes(tmp_path, small_disk, capsys):
    import subprocess

    data = write_synthetic_dataset(tmp_path / "data", n_users=40, n_items=3000)
    run = small_disk / "run"
    # d = 256: best.pt (about 9 MB) cannot fit on the 3 MB disk.
    argv = ["train", "--data", str(data), "--model", "glintru", "--set", "hidden_size=256", "--set", "max_len=8",
            "--set", "batch_size=16", "--set", "num_negatives=10", "--max-epochs", "2", "--out", str(run),
            "--threads", "1", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {run / 'best.pt'}: cannot write (no space left on device)"), err
    assert "\n" not in err and "Traceback" not in err
    leftovers = [p.name for p in run.rglob("*") if "tmp" in p.name]
    assert leftovers == []  # the partial file was removed: the disk is as free as before the write
    subprocess.run(["mount", "-o", "remount,size=512m", str(small_disk)], check=True)  # space freed
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2


def test_a_second_command_on_a_run_directory_in_use_refuses_at_once(tmp_path, data_dir, capsys):
    import os
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom glintru.storage import DirectoryLock\n"
         "DirectoryLock(sys.argv[1], 'glintru train').__enter__()\nprint('locked', flush=True)\ntime.sleep(120)\n",
         str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", "--data", str(data_dir), *TINY, "--max-epochs", "1", "--out", str(run)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"error: {run}: in use by another glintru train (pid {holder.pid} on {os.uname().nodename}); "
                       "wait for it to end, or give another directory")
        assert not (run / "checkpoints").exists()
        os.kill(holder.pid, signal.SIGKILL)  # a killed holder leaves no stuck lock
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
    assert main(["train", "--data", str(data_dir), *TINY, "--max-epochs", "1", "--out", str(run)]) == 0


@pytest.mark.parametrize("sig, rc, word", [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")])
def test_a_signal_during_training_is_one_line_naming_the_kept_epoch_and_the_run_resumes(tmp_path, data_dir, sig, rc, word):
    """SIGTERM (a cancelled job) or Ctrl+C in the middle of `glintru train`: one line saying which
    epoch the run directory keeps and how to continue, exit 143 / 130; the resume goes on from there."""

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "glintru", "train", "--data", str(data_dir), *TINY, "--max-epochs", "400",
           "--set", "patience=400", "--out", str(run)]
    # a shell's background job starts with SIGINT ignored, and Python then installs no Ctrl+C handler
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "epoch_0002").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == rc, err
    last = err.strip().splitlines()[-1]
    kept = int(re.fullmatch(rf"{word}: .* keeps its checkpoint of epoch (\d+); .*", last).group(1))
    assert last == (
        f"{word}: {run} keeps its checkpoint of epoch {kept}; `glintru train --data {data_dir} --resume {run}` "
        "(or the same command again) continues it")
    assert "Traceback" not in err and 2 <= kept < 400
    assert main(["train", "--data", str(data_dir), "--resume", str(run), "--max-epochs", str(kept + 2), "--quiet"]) == 0
    assert epochs_of(run) == list(range(1, kept + 3))
