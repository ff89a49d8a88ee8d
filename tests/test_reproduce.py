"""benchmarks/reproduce.py end to end on a tiny Beauty-format file: one run trains in its own process
and writes the contract JSON, a run of the same configuration under another plan's name is recorded
from it without training, a finished run is skipped, and the scripts that rescore saved weights
(history_masking.py, paired_users.py) agree with the recorded figures and name each bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import reproduce

CONTRACT = {"dataset", "model", "seed", "config", "stopped", "best_epoch", "epochs", "metrics", "train_s", "wall_s"}


def beauty_like(root: Path, users: int = 120, items: int = 150) -> None:
    """``user item item ...`` lines (the Beauty.txt format): each user walks the catalogue in steps of 1."""
    rng = np.random.default_rng(0)
    lines = []
    for u in range(1, users + 1):
        start, n = int(rng.integers(1, items + 1)), int(rng.integers(6, 12))
        lines.append(" ".join(str(x) for x in [u] + [(start + i - 1) % items + 1 for i in range(n)]))
    (root / "amazon-beauty").mkdir(parents=True)
    (root / "amazon-beauty" / "Beauty.txt").write_text("\n".join(lines) + "\n")


def test_a_run_writes_the_contract_json_and_its_twin_is_recorded_not_trained(tmp_path, capsys):
    beauty_like(tmp_path / "data")
    common = ["--data-root", str(tmp_path / "data"), "--datasets", "amazon-beauty", "--seeds", "3",
              "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path / "res"), "--jobs", "1",
              "--set", "max_epochs=3", "--set", "hidden_size=16"]
    assert reproduce.main(["--plan", "ablation", "--runs", "glintru-norm_kernel", *common]) == 0
    assert "done amazon-beauty glintru-norm_kernel seed 3: test full NDCG@10" in capsys.readouterr().out
    path = tmp_path / "res" / "runs" / "amazon-beauty" / "glintru-norm_kernel__seed3.json"
    rec = json.loads(path.read_text())
    assert CONTRACT <= set(rec)
    assert (rec["dataset"], rec["model"], rec["seed"], rec["epochs"]) == ("amazon-beauty", "glintru", 3, 3)
    assert rec["config"]["max_epochs"] == 3 and rec["config"]["hidden_size"] == 16 and rec["config"]["max_len"] == 50
    assert rec["stopped"] == "max_epochs" and 1 <= rec["best_epoch"] <= 3
    assert {"test/full/ndcg@10", "test/full/hr@10", "test/pop100/ndcg@10"} <= set(rec["metrics"])
    assert 0.0 < rec["train_s"] <= rec["wall_s"] and rec["machine"]["device"] == "cpu"
    assert [h["epoch"] for h in rec["history"]] == [1, 2, 3]
    run_dir = tmp_path / "work" / "runs" / "amazon-beauty" / "glintru-norm_kernel__seed3"
    assert (run_dir / "best.pt").is_file() and not (run_dir / "checkpoints").exists()
    # every test user's rank, kept and masked, beside the JSON: they give the recorded figures
    import user_ranks

    ranks_npz = tmp_path / "res" / "ranks" / "amazon-beauty" / "glintru-norm_kernel__seed3.npz"
    saved_ranks = user_ranks.load(ranks_npz)
    assert saved_ranks["kept"].shape == saved_ranks["masked"].shape == (120,)
    assert (saved_ranks["masked"] <= saved_ranks["kept"]).all() and (saved_ranks["masked"] >= 0).all()
    kept = user_ranks.metrics(saved_ranks["kept"])
    assert kept["ndcg@10"] == pytest.approx(rec["metrics"]["test/full/ndcg@10"], abs=1e-9)
    assert kept["hr@10"] == pytest.approx(rec["metrics"]["test/full/hr@10"], abs=1e-9)
    # the losses' full softmax is the same configuration: recorded from the run above, not trained
    assert reproduce.main(["--plan", "losses", "--runs", "glintru-loss_ce", *common]) == 0
    out = capsys.readouterr().out
    assert "the same configuration as glintru-norm_kernel__seed3.json, recorded as glintru-loss_ce__seed3.json" in out
    assert "started" not in out
    twin = json.loads((path.parent / "glintru-loss_ce__seed3.json").read_text())
    assert (twin["name"], twin["same_run_as"], twin["metrics"]) == ("glintru-loss_ce", path.name, rec["metrics"])
    # a result written before target_weight existed trained with per-batch means (the protocol's
    # weighting): it is a twin of a "batch" configuration, never of an "equal" one
    saved = json.loads(path.read_text())
    del saved["config"]["target_weight"]
    path.write_text(json.dumps(saved))
    flat = reproduce.run_spec("amazon-beauty", "glintru-norm_kernel", "glintru", {"max_epochs": 3, "hidden_size": 16}, 3)
    assert flat.train.target_weight == "batch"
    assert reproduce.twin_run(tmp_path / "res", "amazon-beauty", "glintru", flat.to_flat()) == path
    equal = reproduce.run_spec("amazon-beauty", "glintru-norm_kernel", "glintru",
                               {"max_epochs": 3, "hidden_size": 16, "target_weight": "equal"}, 3)
    assert reproduce.twin_run(tmp_path / "res", "amazon-beauty", "glintru", equal.to_flat()) is None
    # and a finished run is skipped
    assert reproduce.main(["--plan", "ablation", "--runs", "glintru-norm_kernel", *common]) == 0
    assert "glintru-norm_kernel__seed3.json exists" in capsys.readouterr().out
    # the same command trained again elsewhere reproduces it epoch by epoch (rerun_match.py), and a
    # record that differs at one epoch is reported from that epoch on
    import rerun_match

    again = [*common]
    again[again.index("--work-dir") + 1] = str(tmp_path / "work2")
    again[again.index("--results-dir") + 1] = str(tmp_path / "res2")
    assert reproduce.main(["--plan", "ablation", "--runs", "glintru-norm_kernel", *again]) == 0
    recorded_dir, match_json = tmp_path / "res" / "runs", tmp_path / "match.json"
    args = ["--recorded", str(recorded_dir), "--rerun", str(tmp_path / "res2" / "runs"), "--out", str(match_json)]
    assert rerun_match.main(args) == 0
    (row,) = json.loads(match_json.read_text())["rows"]
    assert (row["run"], row["match"], row["same_kind_of_machine"]) == ("glintru-norm_kernel__seed3", True, True)
    assert (row["first_epoch_differing"], row["max_epoch_diff"], row["max_test_diff"]) == (None, 0.0, 0.0)
    assert row["config_one_side"] == ["target_weight"]  # deleted from the record above, as if it predated it
    rerun_path = tmp_path / "res2" / "runs" / "amazon-beauty" / "glintru-norm_kernel__seed3.json"
    changed = json.loads(rerun_path.read_text())
    changed["history"][1]["valid/full/ndcg@10"] += 0.25
    rerun_path.write_text(json.dumps(changed))
    assert rerun_match.main(args) == 0
    (row,) = json.loads(match_json.read_text())["rows"]
    assert (row["match"], row["first_epoch_differing"], row["max_epoch_diff"]) == (False, 2, pytest.approx(0.25))
    rerun_path.rename(rerun_path.with_name("glintru-norm_none__seed3.json"))  # nothing recorded to compare with
    capsys.readouterr()
    assert rerun_match.main(args) == 2
    assert capsys.readouterr().err.startswith(f"error: {rerun_path.with_name('glintru-norm_none__seed3.json')}: "
                                              "no recorded run ")
    # history_masking.py (from the ranks files here): unmasked it gives the recorded figure, and masking
    # the users' own items (never a target: no user repeats an item here) can only raise it
    import history_masking

    out_json = tmp_path / "masking.json"
    work = ["--work-dir", str(tmp_path / "work"), "--out", str(out_json)]
    assert history_masking.main(["--runs", str(path), *work]) == 0
    # a second call adds its runs to the file; the first call's row stays
    assert history_masking.main(["--runs", str(path.parent / "glintru-loss_ce__seed3.json"), *work]) == 0
    assert "warning" not in capsys.readouterr().err
    rows = json.loads(out_json.read_text())["rows"]
    assert [r["run"] for r in rows] == ["glintru-norm_kernel__seed3", "glintru-loss_ce__seed3"]
    for r in rows:
        assert abs(r["kept_ndcg@10"] - rec["metrics"]["test/full/ndcg@10"]) < 1e-6
        assert r["masked_ndcg@10"] >= r["kept_ndcg@10"] and r["masked_hr@10"] >= r["kept_hr@10"]
    # without the weights (another machine), both scripts read the ranks files; the twin's are its original's
    import shutil

    shutil.move(tmp_path / "work", tmp_path / "work-away")
    from_files = tmp_path / "masking-files.json"
    assert history_masking.main(["--runs", str(path), str(path.parent / "glintru-loss_ce__seed3.json"),
                                 "--out", str(from_files)]) == 0
    strip = [{k: v for k, v in r.items() if k not in ("cpu", "date_utc")} for r in rows]
    assert [{k: v for k, v in r.items() if k not in ("cpu", "date_utc")}
            for r in json.loads(from_files.read_text())["rows"]] == strip
    ranks_npz.unlink()  # neither ranks nor weights: one line naming both ways out
    capsys.readouterr()
    assert history_masking.main(["--runs", str(path), "--out", str(tmp_path / "m3.json")]) == 2
    assert capsys.readouterr().err == f"error: {path}: no ranks file {ranks_npz}; give --work-dir with the run's weights\n"
    shutil.move(tmp_path / "work-away", tmp_path / "work")
    # a run recorded before ranks files: computed from its weights once, and the file written
    assert history_masking.main(["--runs", str(path), "--work-dir", str(tmp_path / "work"),
                                 "--out", str(tmp_path / "m3.json")]) == 0
    again = user_ranks.load(ranks_npz)
    assert (again["kept"] == saved_ranks["kept"]).all() and (again["masked"] == saved_ranks["masked"]).all()
    # paired_users.py: a run against its twin (the same weights) differs for no user
    import paired_users

    paired_json = tmp_path / "paired.json"
    work = ["--work-dir", str(tmp_path / "work"), "--out", str(paired_json)]
    assert paired_users.main(["--base", str(path), "--against", str(path.parent / "glintru-loss_ce__seed3.json"),
                              *work]) == 0
    (row,) = json.loads(paired_json.read_text())["rows"]
    assert (row["base_better"], row["other_better"], row["diff_ndcg@10"], row["users"]) == (0, 0, 0.0, 120)
    # latency.py: both runs timed round-robin in one process, every round kept, the recorded figure beside
    import latency

    lat_json = tmp_path / "latency.json"
    lat = ["--work-dir", str(tmp_path / "work"), "--out", str(lat_json), "--users", "5", "--rounds", "2"]
    assert latency.main(["--runs", str(path), str(path.parent / "glintru-loss_ce__seed3.json"), *lat]) == 0
    rows = json.loads(lat_json.read_text())["rows"]
    assert [r["run"] for r in rows] == ["glintru-norm_kernel__seed3", "glintru-loss_ce__seed3"]
    for r in rows:
        assert (r["users"], r["window"], len(r["rounds_ms"]), r["recorded_ms"]) == (5, 50, 2, rec["latency_ms_per_user"])
        assert 0 < r["min_ms"] <= r["median_ms"] == pytest.approx(sum(r["rounds_ms"]) / 2, abs=1e-3)
    capsys.readouterr()
    assert latency.main(["--runs", str(path), *lat[:-1], "0"]) == 2
    assert capsys.readouterr().err == "error: --rounds must be at least 1, got 0\n"
    # each bad input is one message naming its file, before any evaluation, and the output is untouched
    before = paired_json.read_bytes()
    capsys.readouterr()
    gone = path.parent / "glintru-norm_none__seed3.json"
    assert paired_users.main(["--base", str(path), "--against", str(gone), *work]) == 2
    assert capsys.readouterr().err == f"error: {gone}: no such run JSON\n"
    assert latency.main(["--runs", str(path), str(gone), *lat]) == 2
    assert capsys.readouterr().err == f"error: {gone}: no such run JSON\n"
    assert len(json.loads(lat_json.read_text())["rows"]) == 2
    other_machine = tmp_path / "elsewhere.json"  # a run JSON from git whose weights are on another machine
    other_machine.write_text(json.dumps({**rec, "name": "glintru-norm_none"}))
    assert history_masking.main(["--runs", str(other_machine), "--work-dir", str(tmp_path / "work"),
                                 "--out", str(tmp_path / "m2.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {other_machine}: its weights ") and "elsewhere/best.pt are missing" in err
    ml = tmp_path / "work" / "runs" / "ml-1m" / "glintru-norm_kernel__seed3"
    ml.mkdir(parents=True)
    (ml / "best.pt").write_bytes((run_dir / "best.pt").read_bytes())
    ml_json = tmp_path / "glintru-norm_kernel__seed3.json"
    ml_json.write_text(json.dumps({**rec, "dataset": "ml-1m"}))
    assert paired_users.main(["--base", str(path), "--against", str(ml_json), *work]) == 2
    assert "dataset ml-1m, not the same test users as" in capsys.readouterr().err
    assert paired_json.read_bytes() == before and not (tmp_path / "m2.json").exists()


@pytest.mark.parametrize("extra, message", [
    (["--runs", "glintru-kernel7"], "--runs: unknown run(s) glintru-kernel7 in plan ablation; choose from glintru-norm_none,"),
    (["--tag", "Fast Run"], "--tag: 'Fast Run' is not a short lower-case name"),
    (["--jobs", "0"], "--jobs: 0 is not a positive count"),
    (["--threads", "-1"], "--threads: -1 is not a positive count"),
    (["--tuned-from", "amazon-beauty"], "--tuned-from: needs --tuned DIR"),
    (["--set", "hidden_size=abc"], "hidden_size"),
    (["--device", "cuda"], "--device cuda: torch sees no CUDA GPU here"),
    (["--prepared", "shop"], "--prepared 'shop': expected NAME=DIR"),
    (["--prepared", "Shop Data=x"], "'Shop Data' is not a dataset name"),
    (["--prepared", "ml-1m=x"], "ml-1m is one of the reproduction's own datasets"),
    (["--prepared", "shop=nowhere"], "nowhere is not a prepared dataset (no such directory); make one with "
                                     "`glintru prepare --source LOG --out "),
    (["--prepared", "shop=s3://bucket/shop"], "--prepared 'shop=s3://bucket/shop': the benchmark scripts read a "
                                              "local directory"),
    (["--datasets", "shop"], "--datasets: unknown dataset shop; choose from ml-1m, amazon-beauty,"),
    (["--tuned", "t", "--tuned-from", "Beauty Data"], "--tuned-from: 'Beauty Data' is not a dataset name"),
])
def test_each_bad_option_is_one_error_line_and_nothing_is_written(tmp_path, capsys, monkeypatch, extra, message):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a machine with a GPU
    beauty_like(tmp_path / "data")
    argv = ["--data-root", str(tmp_path / "data"), "--plan", "ablation", "--work-dir", str(tmp_path / "work"),
            "--results-dir", str(tmp_path / "res"), *extra]
    assert reproduce.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "res").exists() and not (tmp_path / "work").exists()


def test_an_interrupted_grid_is_one_line_and_exit_130_not_a_traceback(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "prepare_dataset", lambda root, ds, work: tmp_path / ds)
    monkeypatch.setattr(reproduce, "ProcessPoolExecutor", interrupted)
    argv = ["--data-root", str(tmp_path), "--datasets", "ml-1m", "--runs", "gru4rec", "--results-dir",
            str(tmp_path / "res"), "--work-dir", str(tmp_path / "work")]
    assert reproduce.main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted: finished runs keep their JSON" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_the_5core_ml1m_drops_rare_items_from_the_same_source_and_keeps_ml1m_whole(tmp_path):
    """``ml-1m-5core`` prepares ML-1M's file as RecBole filters it (users and items with >= 5
    interactions); ``ml-1m`` keeps every item of the same file."""
    root = tmp_path / "data" / "ml-1m"
    root.mkdir(parents=True)
    # items 1-6 are seen by all 8 users; item 7 by 4 users (below 5), item 8 by one
    lines = [" ".join(str(x) for x in [u, *range(1, 7), *([7] if u <= 4 else []), *([8] if u == 1 else [])])
             for u in range(1, 9)]
    (root / "ml-1m.seq.txt").write_text("\n".join(lines) + "\n")
    full = json.loads((reproduce.prepare_dataset(tmp_path / "data", "ml-1m", tmp_path / "w") / "manifest.json").read_text())
    core = reproduce.prepare_dataset(tmp_path / "data", "ml-1m-5core", tmp_path / "w")
    manifest = json.loads((core / "manifest.json").read_text())
    assert core == tmp_path / "w" / "data" / "ml-1m-5core"
    assert (full["n_items"], full["n_interactions"]) == (8, 8 * 6 + 4 + 1)
    assert (manifest["n_users"], manifest["n_items"], manifest["n_interactions"]) == (8, 6, 8 * 6)
    assert reproduce.PROTOCOL["ml-1m-5core"]["max_len"] == reproduce.PROTOCOL["ml-1m"]["max_len"] == 200


@pytest.mark.parametrize("sig, rc, word", [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")])
def test_a_signal_to_the_grid_alone_stops_its_runs_too_and_keeps_their_checkpoints(tmp_path, sig, rc, word):
    """`kill PID` (or `kill -INT PID` to a grid a background shell started, SIGINT ignored) reaches the
    grid's process only: it stops its run processes instead of leaving them training as orphans,
    says how to resume, and the run's last epoch checkpoint stays."""
    import os
    import signal
    import subprocess
    import time

    beauty_like(tmp_path / "data")
    script = Path(reproduce.__file__)
    cmd = [sys.executable, str(script), "--data-root", str(tmp_path / "data"), "--datasets", "amazon-beauty",
           "--runs", "gru4rec", "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path / "res"),
           "--jobs", "1", "--set", "max_epochs=200", "--set", "patience=200", "--set", "hidden_size=16"]
    grid = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(script.parent.parent)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # a background shell's
    ckpts = tmp_path / "work" / "runs" / "amazon-beauty" / "gru4rec__seed1" / "checkpoints"
    try:
        deadline = time.monotonic() + 120
        while not (ckpts.is_dir() and any(ckpts.iterdir())):
            assert grid.poll() is None and time.monotonic() < deadline, grid.communicate()
            time.sleep(0.05)
        children = [int(p) for p in Path(f"/proc/{grid.pid}/task/{grid.pid}/children").read_text().split()]
        runs = [p for p in children if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
        assert runs, children  # the run's own process
        os.kill(grid.pid, getattr(signal, sig))
        out, err = grid.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{p}").exists() and "spawn_main" in Path(f"/proc/{p}/cmdline").read_text() for p in runs):
            assert time.monotonic() < deadline, "a run process outlived its grid"
            time.sleep(0.05)
    finally:  # neither a hung grid nor an orphaned run may outlive the test (its session is the group)
        try:
            os.killpg(grid.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        grid.wait()
    assert grid.returncode == rc, err
    assert f"{word}: finished runs keep their JSON; the same command resumes" in err and "Traceback" not in err
    assert any(ckpts.iterdir()) and not (tmp_path / "res" / "runs" / "amazon-beauty").exists()


def test_a_dataset_of_your_own_runs_under_its_name_without_the_data_root_and_gets_its_report(tmp_path, capsys):
    """``--prepared NAME=DIR``: a directory ``glintru prepare`` wrote trains under the protocol with the
    Amazon window, is filed under NAME, and report.py makes a document of its own for it, the plots
    in the folder beside it; the reproduction's own datasets still need ``--data-root``."""
    import report

    from glintru.cli import main as glintru_main

    beauty_like(tmp_path / "raw")
    shop = tmp_path / "shop-data"
    assert glintru_main(["prepare", "--source", str(tmp_path / "raw" / "amazon-beauty" / "Beauty.txt"),
                         "--out", str(shop)]) == 0
    res = tmp_path / "res"
    common = ["--prepared", f"shop={shop}", "--work-dir", str(tmp_path / "work"), "--results-dir", str(res),
              "--jobs", "1", "--set", "max_epochs=2", "--set", "hidden_size=16"]
    assert reproduce.main(["--runs", "gru4rec", "--seeds", "2", *common]) == 0  # --datasets: the prepared one
    out = capsys.readouterr().out
    assert f"started 1 run, 1 at once; each run's epochs go to {tmp_path / 'work' / 'logs'}/" in out
    assert "done shop gru4rec seed 2: test full NDCG@10" in out
    epochs = (tmp_path / "work" / "logs" / "shop__gru4rec__seed2.log").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in epochs] == [1, 2]
    rec = json.loads((res / "runs" / "shop" / "gru4rec__seed2.json").read_text())
    assert (rec["dataset"], rec["model"], rec["seed"], rec["epochs"]) == ("shop", "gru4rec", 2, 2)
    assert (rec["config"]["max_len"], rec["config"]["lr"], rec["config"]["target_weight"]) == (50, 1e-3, "batch")
    assert rec["metrics"]["test/n_users"] == 120
    assert not (tmp_path / "work" / "data").exists()  # the user's directory is read where it is, not copied
    assert rec["data_dir"] == str(shop.resolve())  # and recorded, for the scripts that rescore the run
    import latency

    lat = tmp_path / "latency.json"
    run_json = res / "runs" / "shop" / "gru4rec__seed2.json"
    assert latency.main(["--runs", str(run_json), "--work-dir", str(tmp_path / "work"), "--out", str(lat),
                         "--rounds", "1", "--users", "5"]) == 0
    (row,) = json.loads(lat.read_text())["rows"]
    assert (row["dataset"], row["run"]) == ("shop", "gru4rec__seed2") and row["median_ms"] > 0
    shop.rename(tmp_path / "moved")
    capsys.readouterr()
    assert latency.main(["--runs", str(run_json), "--work-dir", str(tmp_path / "work"), "--out", str(lat)]) == 2
    assert capsys.readouterr().err == f"error: {run_json}: its prepared dataset {shop.resolve()} is missing (no manifest.json there)\n"
    (tmp_path / "moved").rename(shop)
    # a catalogue too small for 100 negatives takes another sampled protocol (its own epoch selected on
    # it), or none: the run and the report go on without pop100
    assert reproduce.main(["--runs", "gru4rec", "--seeds", "2", *common, "--set", "num_negatives=20", "--tag", "n20"]) == 0
    assert reproduce.main(["--runs", "gru4rec", "--seeds", "2", *common, "--set", "num_negatives=0", "--tag", "n0"]) == 0
    out = capsys.readouterr().out
    assert "done shop gru4rec__default-n20 seed 2: test full NDCG@10 " in out and ", pop20 NDCG@10 " in out
    assert "done shop gru4rec__default-n0 seed 2: test full NDCG@10 " in out and out.count("NDCG@10") == 3
    n20 = json.loads((res / "runs" / "shop" / "gru4rec__default-n20__seed2.json").read_text())
    n0 = json.loads((res / "runs" / "shop" / "gru4rec__default-n0__seed2.json").read_text())
    assert "test/pop20/ndcg@10" in n20["metrics"] and "test/pop100/ndcg@10" not in n20["metrics"]
    assert n20["metrics"]["test/pop20/ndcg@10"] == n20["metrics_pop100_selected"]["test/pop20/ndcg@10"]
    assert n20["best_epoch_pop100"] in (1, 2) and n0["best_epoch_pop100"] is None
    assert not [k for k in n0["metrics"] if k.startswith("test/") and "/full/" not in k and k != "test/n_users"]
    row = report.model_table("shop", {"gru4rec (default-n0)": [n0]}, {})[2].split(" | ")
    assert row[4:6] == ["n/a", "n/a"]  # the pop100 columns
    # one of the reproduction's own datasets beside it needs --data-root
    assert reproduce.main(["--datasets", "shop", "amazon-beauty", *common]) == 2
    assert capsys.readouterr().err.startswith("error: --data-root: required for the reproduction's own datasets")
    doc = tmp_path / "reports" / "shop.md"
    assert report.main(["--results", str(res), "--doc", str(doc), "--datasets", "shop"]) == 0
    text = doc.read_text()
    assert text.startswith("# Results: shop\n") and "### shop" in text and "### amazon-beauty" not in text
    assert "; one torch thread per run, one run at a time on a CPU." in text  # as recorded: --jobs 1 --threads 1
    assert "| `gru4rec` | 2 | " in text and "published" not in text  # no published figures for your data
    assert "![learning curves](shop/curves_shop.png)" in text and (doc.parent / "shop" / "curves_shop.png").is_file()
    assert report.report_datasets([rec]) == [*report.DATASETS, "shop"]  # the default: the project's, then yours
