"""benchmarks/tune_models.py: what it asks of `glintru tune` and where it files the answer."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def fake_study(calls: list[list[str]], trials: str, best: str | Callable[[list[str]], str],
               codes: Iterator[int] | None = None) -> Callable[..., int]:
    """Stands in for `glintru tune` (tested on its own): records each command, exits with the next of
    ``codes`` (default 0) and, when it exits 0, writes the two files tune_models.py reads from --out."""
    def run(cmd: list[str], log: object, env: object, cwd: object) -> int:
        calls.append(cmd)
        rc = next(codes) if codes is not None else 0
        if rc == 0:
            out = Path(cmd[cmd.index("--out") + 1])
            out.mkdir(parents=True)
            (out / "trials.csv").write_text(trials)
            (out / "best_config.yaml").write_text(best(cmd) if callable(best) else best)
        return rc

    return run


def test_tune_models_writes_the_trials_under_results_tuning_and_the_best_config_to_tuned(tmp_path, monkeypatch):
    """The study itself is `glintru tune` (tested on its own); here its outputs are stood in for, so
    the test checks what tune_models.py asks of it and where it files the answer."""
    import tune_models

    calls = []
    trials = "trial_id,lr,emb_dropout,valid/full/ndcg@10\na1,0.001,0.3,0.03\nb2,0.002,0.4,0.04\n"
    monkeypatch.setattr(tune_models, "run_study",
                        fake_study(calls, trials, "model: gru4rec\nlr: 0.002\nemb_dropout: 0.4\n"))
    monkeypatch.setattr(tune_models, "dataset_dir", lambda ds, root, work, prepared: tmp_path / "data" / ds)
    argv = ["--data-root", str(tmp_path), "--datasets", "ml-1m", "--models", "gru4rec", "--work-dir",
            str(tmp_path / "work"), "--tuned-dir", str(tmp_path / "tuned"), "--results-dir", str(tmp_path / "res"),
            "--max-concurrent", "1", "--set", "precision=bf16"]
    assert tune_models.main(argv) == 0
    (cmd,) = calls
    assert cmd[cmd.index("--search-space") + 1].endswith("benchmarks/spaces/gru4rec.yaml")
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"] == ["max_len=200", "precision=bf16"]
    import json

    rec = json.loads((tmp_path / "res" / "tuning" / "ml-1m__gru4rec.json").read_text())
    assert ([t["trial_id"] for t in rec["trials"]], rec["first_trial"], rec["overrides"]) == (
        ["a1", "b2"], "a1", ["precision=bf16"])  # a1 is the space's starting point (its defaults)
    assert (tmp_path / "tuned" / "ml-1m__gru4rec.yaml").read_text() == "model: gru4rec\nlr: 0.002\nemb_dropout: 0.4\n"
    assert sorted(p.name for p in (tmp_path / "res").rglob("*") if p.is_file()) == ["ml-1m__gru4rec.json"]
    # run again: the tuned file exists, so the model is skipped and no study starts
    assert tune_models.main(argv) == 0 and len(calls) == 1


def test_a_tagged_family_of_studies_is_filed_apart_from_the_first(tmp_path, monkeypatch, capsys):
    import json

    import report
    import tune_models

    calls = []

    def best(cmd: list[str]) -> str:  # the objective the study was given
        fixed = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
        objective = next((f.split("=")[1] for f in fixed if f.startswith("objective=")), "all_positions")
        return f"model: gru4rec\nlr: 0.001\nobjective: {objective}\n"

    trials = "trial_id,lr,emb_dropout,epoch,trial_s,valid/full/ndcg@10\na1,0.001,0.3,5,60,0.05\n"
    monkeypatch.setattr(tune_models, "run_study", fake_study(calls, trials, best))
    monkeypatch.setattr(tune_models, "dataset_dir", lambda ds, root, work, prepared: tmp_path / "data" / ds)
    monkeypatch.setattr(tune_models, "ROOT", tmp_path)  # where the default tuned directories live
    argv = ["--data-root", str(tmp_path), "--models", "gru4rec", "--work-dir", str(tmp_path / "work"),
            "--results-dir", str(tmp_path / "res"), "--max-concurrent", "1"]
    assert tune_models.main(argv) == 0
    assert tune_models.main([*argv, "--set", "objective=last_position", "--tag", "last_position", "--grace-period", "12"]) == 0
    assert [c[c.index("--out") + 1].rsplit("/", 1)[1] for c in calls] == [
        "amazon-beauty__gru4rec", "amazon-beauty__gru4rec__last_position"]
    assert ["--grace-period" in c for c in calls] == [False, True] and calls[1][calls[1].index("--grace-period") + 1] == "12"
    first = (tmp_path / "benchmarks" / "tuned" / "amazon-beauty__gru4rec.yaml").read_text()
    tagged = (tmp_path / "benchmarks" / "tuned-last_position" / "amazon-beauty__gru4rec.yaml").read_text()
    assert (first.splitlines()[-1], tagged.splitlines()[-1]) == ("objective: all_positions", "objective: last_position")
    files = sorted(p.name for p in (tmp_path / "res" / "tuning").iterdir())
    assert files == ["amazon-beauty__gru4rec.json", "amazon-beauty__gru4rec__last_position.json"]
    studies = [json.loads((tmp_path / "res" / "tuning" / f).read_text()) for f in files]
    assert [s["tag"] for s in studies] == [None, "last_position"]
    rows = [line.split(" | ")[0] for line in report.tuning_table(studies, "amazon-beauty")[2:]]
    assert rows == ["| `gru4rec`", "| `gru4rec` (last_position)"]
    # the tagged family has its own "already tuned" check, and a bad tag is one error line
    assert tune_models.main([*argv, "--tag", "last_position"]) == 0 and len(calls) == 2
    assert "tuned-last_position/amazon-beauty__gru4rec.yaml exists" in capsys.readouterr().out
    assert tune_models.main([*argv, "--tag", "Prefix Runs"]) == 2
    assert capsys.readouterr().err == "error: --tag: 'Prefix Runs' is not a short lower-case name (letters, digits, '_', '.')\n"
    graces = [json.loads((tmp_path / "res" / "tuning" / f).read_text())["grace_period"] for f in files]
    assert graces == [5, 12]  # the space file's grace, then the call's
    assert tune_models.main([*argv, "--tag", "g0", "--grace-period", "0"]) == 2
    assert capsys.readouterr().err == "error: --grace-period: must be >= 1, got 0\n" and len(calls) == 2


def test_a_dataset_of_your_own_is_tuned_where_it_is_under_its_name(tmp_path, monkeypatch, capsys):
    """``--prepared NAME=DIR`` needs no --data-root: the study reads DIR itself, with the space files'
    window unless ``--set max_len=N``, and its files are named after NAME."""
    import tune_models

    calls = []
    monkeypatch.setattr(tune_models, "run_study", fake_study(
        calls, "trial_id,lr,emb_dropout,valid/full/ndcg@10\na1,0.001,0.3,0.03\n", "model: gru4rec\nlr: 0.001\n"))
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "manifest.json").write_text("{}")
    argv = ["--prepared", f"shop={shop}", "--models", "gru4rec", "--work-dir", str(tmp_path / "work"),
            "--results-dir", str(tmp_path / "res"), "--max-concurrent", "1"]
    assert tune_models.main([*argv, "--tuned-dir", str(tmp_path / "t1")]) == 0
    assert tune_models.main([*argv, "--tuned-dir", str(tmp_path / "t2"), "--tag", "long", "--set", "max_len=200"]) == 0
    assert [c[c.index("--data") + 1] for c in calls] == [str(shop.resolve())] * 2
    assert [[c[i + 1] for i, a in enumerate(c) if a == "--set"] for c in calls] == [[], ["max_len=200"]]
    assert (tmp_path / "t1" / "shop__gru4rec.yaml").is_file() and (tmp_path / "t2" / "shop__gru4rec.yaml").is_file()
    assert sorted(p.name for p in (tmp_path / "res" / "tuning").iterdir()) == ["shop__gru4rec.json",
                                                                               "shop__gru4rec__long.json"]
    assert not (tmp_path / "work" / "data").exists()
    out = capsys.readouterr().out
    assert f"tuning shop gru4rec (the study's progress: {tmp_path / 'work' / 'logs' / 'tune__shop__gru4rec.log'})" in out
    assert tune_models.main(["--datasets", "ml-1m", *argv]) == 2  # the project's own data: --data-root
    assert capsys.readouterr().err.startswith("error: --data-root: required for the reproduction's own datasets")
    assert tune_models.main([*argv[:1], "shop=" + str(tmp_path / "nowhere"), *argv[2:]]) == 2
    assert "nowhere is not a prepared dataset (no such directory)" in capsys.readouterr().err and len(calls) == 2

    def refused(cmd: list[str], log, env: object, cwd: object) -> int:  # bad input: glintru tune's one line
        log.write("error: field 'num_negatives': 100 needs ...\n")
        return 2

    monkeypatch.setattr(tune_models, "run_study", refused)
    assert tune_models.main([*argv, "--tuned-dir", str(tmp_path / "t3"), "--models", "glintru"]) == 1
    log = tmp_path / "work" / "logs" / "tune__shop__glintru.log"
    assert (f"FAILED shop glintru: glintru tune exited 2 (error: field 'num_negatives': 100 needs ...); see {log}"
            in capsys.readouterr().out)


def test_every_benchmark_space_fixes_the_protocols_keys_at_the_protocols_values():
    # The studies tune under reproduce.py's protocol (d, batch, patience and the per-batch weighting its
    # tables used); a space that drifted would tune one configuration and reproduce another.
    import tune_models
    from reproduce import PROTOCOL

    from glintru.tuning.space import load_search_space

    for model in tune_models.MODELS:
        space = load_search_space(tune_models.SPACES / f"{model}.yaml")
        shared = set(space.fixed) & set(PROTOCOL["*"])
        assert {"target_weight", "batch_size", "patience"} <= shared, model
        assert {k: space.fixed[k] for k in shared} == {k: PROTOCOL["*"][k] for k in shared}, model
        assert space.fixed["max_len"] == PROTOCOL["amazon-beauty"]["max_len"] == tune_models.SPACE_WINDOW


def test_a_study_resumed_over_invocations_records_their_summed_wall_time(tmp_path, monkeypatch):
    """The first invocation is interrupted (glintru tune exits 130), the second finishes the study:
    the record's wall time is the sum of both, each listed with its exit status."""
    import json

    import tune_models

    codes = iter([130, 0])
    clock = iter([0.0, 40.0, 100.0, 125.5])  # start/end of each invocation

    monkeypatch.setattr(tune_models, "run_study", fake_study(
        [], "trial_id,lr,emb_dropout\na1,0.001,0.3\n", "model: gru4rec\nlr: 0.001\n", codes))
    monkeypatch.setattr(tune_models.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(tune_models, "dataset_dir", lambda ds, root, work, prepared: tmp_path / "data" / ds)
    argv = ["--data-root", str(tmp_path), "--datasets", "ml-1m", "--models", "gru4rec", "--work-dir",
            str(tmp_path / "work"), "--tuned-dir", str(tmp_path / "tuned"), "--results-dir", str(tmp_path / "res")]
    assert tune_models.main(argv) != 0  # the interrupted study: no record, no tuned file
    assert not (tmp_path / "tuned" / "ml-1m__gru4rec.yaml").exists()
    assert tune_models.main(argv) == 0
    rec = json.loads((tmp_path / "res" / "tuning" / "ml-1m__gru4rec.json").read_text())
    assert rec["wall_s"] == 40.0 + 25.5
    assert [(w["wall_s"], w["rc"]) for w in rec["invocations"]] == [(40.0, 130), (25.5, 0)]



CHILD = """
import signal, sys, time
from pathlib import Path
seen = []
signal.signal(signal.SIGINT, lambda *a: seen.append("INT"))
signal.signal(signal.SIGTERM, lambda *a: seen.append("TERM"))
Path(sys.argv[1]).write_text("ready")
deadline = time.monotonic() + 90  # never outlive a failed test (this process has a session of its own)
while not seen and time.monotonic() < deadline:
    time.sleep(0.02)
time.sleep(0.5)  # saving the study: a duplicate interrupt would arrive now
Path(sys.argv[2]).write_text(",".join(seen))
sys.exit(143 if seen == ["TERM"] else 130)
"""

DRIVER = """
import signal, sys
sys.path.insert(0, {bench!r})
import tune_models
# as __main__ does: a test run from a background shell inherits SIGINT ignored
tune_models.handle_signals()
try:
    tune_models.run_study([sys.executable, "-c", {child!r}, {ready!r}, {count!r}], sys.stdout, None, {cwd!r})
except tune_models.StudyInterrupted as exc:
    print("interrupted", exc.rc, exc.terminated)
    sys.exit(7)
"""


@pytest.mark.parametrize("how, sig", [("this process alone", "SIGINT"), ("its process group (a terminal's Ctrl+C)", "SIGINT"),
                                      ("this process alone", "SIGTERM")])
def test_an_interrupt_reaches_glintru_tune_once_and_is_raised_after_it_exits(tmp_path, how, sig):
    """`timeout -s INT` signals the driver alone, a terminal's Ctrl+C its whole process group, `kill`
    the driver alone with SIGTERM: each way the study process gets exactly one signal, the same one (a
    second would force it to quit unsaved), and the driver raises StudyInterrupted with its exit
    status only once it has exited."""
    import os
    import signal
    import subprocess
    import time

    bench = str(Path(__file__).resolve().parent.parent / "benchmarks")
    ready, count = tmp_path / "ready", tmp_path / "count"
    code = DRIVER.format(bench=bench, child=CHILD, ready=str(ready), count=str(count), cwd=str(tmp_path))
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
            time.sleep(0.02)
        if how == "this process alone":
            os.kill(driver.pid, getattr(signal, sig))
        else:
            os.killpg(driver.pid, getattr(signal, sig))
        out, err = driver.communicate(timeout=60)
    finally:  # a hung driver must not outlive the test
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    expected = "interrupted 143 True" if sig == "SIGTERM" else "interrupted 130 False"
    assert (driver.returncode, out.strip(), count.read_text()) == (7, expected, sig.removeprefix("SIG")), err


@pytest.mark.parametrize("rc, word", [(130, "interrupted"), (143, "terminated")])
def test_an_interrupted_study_exits_130_naming_it_and_records_the_invocation(tmp_path, monkeypatch, capsys, rc, word):
    """Ctrl+C: exit 130; SIGTERM (forwarded as SIGTERM, glintru tune exits 143): exit 143."""
    import json

    import tune_models

    def interrupted(cmd, log, env, cwd):
        raise tune_models.StudyInterrupted(rc, terminated=rc == 143)

    monkeypatch.setattr(tune_models, "run_study", interrupted)
    monkeypatch.setattr(tune_models, "dataset_dir", lambda ds, root, work, prepared: tmp_path / "data" / ds)
    argv = ["--data-root", str(tmp_path), "--datasets", "ml-1m", "--models", "gru4rec", "narm", "--work-dir",
            str(tmp_path / "work"), "--tuned-dir", str(tmp_path / "tuned"), "--results-dir", str(tmp_path / "res")]
    assert tune_models.main(argv) == rc
    out, err = capsys.readouterr()
    assert f"{word}: study ml-1m__gru4rec stopped (glintru tune exited {rc})" in err and "resumes" in err
    assert "Traceback" not in err and "narm" not in out  # the next study does not start
    walls = json.loads((tmp_path / "work" / "logs" / "tune__ml-1m__gru4rec.walls.json").read_text())
    assert [w["rc"] for w in walls] == [rc]
    assert not (tmp_path / "tuned").exists() and not (tmp_path / "res").exists()
