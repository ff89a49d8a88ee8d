"""The reproduction report (benchmarks/report.py): which runs form a table row, mean ± std over
seeds computed by hand, tuned runs kept apart from default ones, the tuning table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import report
from reproduce import result_path, run_spec


def run(name: str, seed: int, ndcg: float, setting: str = "default", dataset: str = "amazon-beauty", **over):
    model = "glintru" if name.startswith("glintru") else name
    cfg = run_spec(dataset, name, model, over, seed).to_flat()
    return {"dataset": dataset, "name": name, "model": model, "seed": seed, "setting": setting, "config": cfg,
            "metrics": {"test/full/ndcg@10": ndcg, "test/full/hr@10": 2 * ndcg, "test/pop100/hr@10": 0.3,
                        "test/pop100/ndcg@10": 0.2},
            "epochs": 20, "best_epoch": 10, "train_s": 600.0, "latency_ms_per_user": 1.0, "history": []}


def test_groups_split_tuned_from_default_and_count_the_default_ablation_run_as_a_seed():
    runs = [run("glintru", 2, 0.0379), run("glintru-norm_kernel", 1, 0.0397),
            run("glintru", 1, 0.05, setting="tuned", lr=0.002), run("sasrec", 1, 0.03),
            run("glintru", 3, 0.1, dataset="ml-1m")]
    groups = report.model_groups(runs, "amazon-beauty")
    assert list(groups) == ["glintru (tuned)", "glintru", "sasrec"]
    assert sorted(r["seed"] for r in groups["glintru"]) == [1, 2]
    assert [r["seed"] for r in groups["glintru (tuned)"]] == [1]


def test_a_changed_ablation_run_is_not_a_seed_of_the_default():
    runs = [run("glintru", 2, 0.0379), run("glintru-norm_kernel", 1, 0.0397, kernel_size=1)]
    assert [r["seed"] for r in report.model_groups(runs, "amazon-beauty")["glintru"]] == [2]


def test_table_row_mean_and_sample_std_by_hand_and_the_anchor_ratio():
    groups = {"sasrec": [run("sasrec", 1, 0.03), run("sasrec", 2, 0.04)]}
    row = report.model_table("amazon-beauty", groups)[2].split(" | ")
    # mean 3.50 %, sample std sqrt(((3-3.5)^2 + (4-3.5)^2) / 1) = 0.71 %; HR is twice NDCG here
    assert row[1:4] == ["1,2", "7.00 ± 1.41", "3.50 ± 0.71"]
    assert row[-1].rstrip(" |") == f"{0.035 / 0.0409:.0%}"
    assert row[-3] == "fp32"  # the precision the group trained in


def test_tuned_runs_have_their_own_result_file():
    root = Path("/r")
    assert result_path(root, "amazon-beauty", "sasrec", 2).name == "sasrec__seed2.json"
    assert result_path(root, "amazon-beauty", "sasrec", 2, "tuned").name == "sasrec__tuned__seed2.json"


def test_tuning_table_chosen_trial_and_first_trial():
    trials = [{"trial_id": "a", "lr": "0.001", "kernel_size": "3", "epoch": "30", "valid/full/ndcg@10": "0.045",
               "trial_s": "900.0"},
              {"trial_id": "b", "lr": "0.0021", "kernel_size": "5", "epoch": "10", "valid/full/ndcg@10": "0.048",
               "trial_s": "300.0"}]
    study = {"dataset": "amazon-beauty", "model": "glintru", "trials": trials, "first_trial": "a", "wall_s": 17.0}
    row = report.tuning_table([study], "amazon-beauty")[2].split(" | ")
    assert row == ["| `glintru`", "2", "5", "40", "4.50", "4.80", "lr=0.0021, kernel_size=5", "20 |"]  # (900 + 300) s
    # the study chose trial a (its best epoch beat b's, though its last report is lower): the row is a's
    study["best_config"] = "model: glintru\nlr: 0.001\nkernel_size: 3\nhidden_size: 128\n"
    row = report.tuning_table([study], "amazon-beauty")[2].split(" | ")
    assert row[5:7] == ["4.50", "lr=0.001, kernel_size=3"]
    study.update(grace_period=15, tag="grace15")  # a family of studies with a longer grace says so
    assert report.tuning_table([study], "amazon-beauty")[2].split(" | ")[:3] == ["| `glintru` (grace15)", "2", "15"]


@pytest.mark.parametrize("values, text", [([], "n/a"), ([0.0397], "3.97"), ([0.02, 0.04], "3.00 ± 1.41")])
def test_mean_std_format(values, text):
    assert report.mean_std(values) == text


def test_losses_table_row_by_hand():
    r = run("glintru-loss_sampled", 1, 0.05, loss="sampled_softmax")
    r["name"] = "glintru-loss_sampled"
    r["history"] = [{"train/targets_per_s": v} for v in (100.0, 300.0, 200.0)]
    r["machine"] = {"cpu": "AMD EPYC", "cpu_isa": "AVX2"}
    row = report.losses_table([r], "amazon-beauty")[2].split(" | ")
    assert row == ["| `sampled_softmax`", "256", "10.00", "5.00", "20.00", "20 (10)", "10.0", "200", "fp32",
                   "EPYC (AVX2) |"]


def test_ablation_row_by_hand_names_each_runs_precision_and_cpu():
    # one table may mix runs of two CPUs and precisions (ML-1M's): each row says which
    r = run("glintru-attn_only", 1, 0.1, experts="attention", precision="bf16")
    r["history"] = [{"diag/mix_gru": 0.9}, {"diag/mix_gru": 0.0}] + [{"diag/mix_gru": 0.5}] * 18
    r["best_epoch"], r["machine"] = 2, {"cpu": "AMD EPYC", "cpu_isa": "AVX512_BF16"}
    bare = run("glintru-kernel1", 1, 0.09, kernel_size=1)  # an older JSON: no machine record, no mix diagnostic
    bare["history"] = [{}] * 20
    rows = [line.split(" | ") for line in report.ablation_table([bare, r], "amazon-beauty")[2:]]
    assert rows[0] == ["| `glintru-attn_only`", "kernel", "attention", "3", "20.00", "10.00", "20.00", "20 (2)",
                       "0.00", "10.0", "bf16", "EPYC (AVX512_BF16) |"]
    assert rows[1] == ["| `glintru-kernel1`", "kernel", "both", "1", "18.00", "9.00", "20.00", "20 (10)", "",
                       "10.0", "fp32", "n/a |"]


def test_a_run_older_than_a_config_key_still_counts_as_a_default_seed():
    old = run("glintru-norm_kernel", 1, 0.0397)
    del old["config"]["embedding_update"]  # written before the key existed
    groups = report.model_groups([run("glintru", 2, 0.0379), old], "amazon-beauty")
    assert sorted(r["seed"] for r in groups["glintru"]) == [1, 2]


def test_table_rows_are_named_by_model_and_setting():
    groups = report.model_groups([run("glintru-norm_kernel", 1, 0.04), run("sasrec", 1, 0.03, setting="tuned")],
                                 "amazon-beauty")
    names = [line.split(" | ")[0] for line in report.model_table("amazon-beauty", groups)[2:]]
    assert names == ["| `glintru`", "| `sasrec` (tuned)"]


def test_variants_table_puts_a_tagged_run_next_to_its_base_by_hand():
    base = [run("glintru", k, v, setting="tuned") for k, v in ((1, 0.04), (2, 0.042), (3, 0.038))]
    bf16 = run("glintru", 1, 0.041, setting="tuned-bf16", precision="bf16")
    for r, secs in zip(base + [bf16], (30.0, 34.0, 32.0, 20.0)):
        r["history"] = [{"train/s": secs}]
        r["machine"] = {"cpu": "B" if r is bf16 else "A"}
    tagged_loss = run("glintru-loss_ce", 1, 0.04, setting="tuned-bf16", precision="bf16")  # the losses' table's
    lines = report.variants_table(base + [bf16, run("sasrec", 1, 0.03), tagged_loss], "amazon-beauty")
    assert len(lines) == 3  # header, rule, one variant; untagged runs and training losses are not variants
    row = lines[2].split(" | ")
    # base mean 4.00 %, sample std 0.20 %; (4.10 - 4.00) / 0.20 = +0.5
    assert row == ["| `glintru` (tuned-bf16)", "precision=bf16", "1", "4.10", "4.10", "4.00 ± 0.20 (1,2,3)", "+0.5",
                   "20 / 32", "B / A |"]
    assert report.model_groups(base + [bf16], "amazon-beauty")["glintru (tuned)"] == base  # main table: base only


@pytest.mark.parametrize("cpu, short", [("Intel(R) Xeon(R) Processor @ 2.60GHz", "Xeon @ 2.60GHz"),
                                        ("AMD EPYC", "EPYC"), ("Intel(R) Xeon(R) Processor", "Xeon")])
def test_cpu_names_are_shortened_for_the_table(cpu, short):
    assert report.cpu_short(cpu) == short


def test_a_configuration_tuned_on_another_dataset_is_its_own_row():
    own = run("glintru", 1, 0.05, setting="tuned", dataset="ml-1m")
    moved = [run("glintru", s, 0.06, setting="tuned", dataset="ml-1m") for s in (1, 2)]
    for r in moved:
        r["tuned_from"] = "amazon-beauty"
    same = run("sasrec", 1, 0.04, setting="tuned", dataset="ml-1m")
    same["tuned_from"] = "ml-1m"  # tuned on its own dataset: an ordinary tuned row
    groups = report.model_groups([own, *moved, same, run("glintru", 3, 0.03, dataset="ml-1m")], "ml-1m")
    assert list(groups) == ["glintru (tuned)", "glintru (tuned on amazon-beauty)", "glintru", "sasrec (tuned)"]
    assert [r["seed"] for r in groups["glintru (tuned on amazon-beauty)"]] == [1, 2]
    assert report.anchor_of("ml-1m", "sasrec (tuned)") == report.ANCHORS["ml-1m"]["sasrec"]


def test_tuned_from_keeps_the_target_datasets_window(tmp_path, capsys):
    import json

    import reproduce

    tuned = tmp_path / "tuned"
    tuned.mkdir()
    (tuned / "amazon-beauty__glintru.yaml").write_text(
        "model: glintru\nlr: 0.0007\nkernel_size: 1\nmax_len: 50\nmax_epochs: 30\nseed: 666\n")
    argv = ["--data-root", str(tmp_path), "--plan", "models", "--datasets", "ml-1m", "--runs", "glintru",
            "--tuned", str(tuned), "--seeds", "4", "--results-dir", str(tmp_path / "res"), "--dry-run"]
    assert reproduce.main(argv + ["--tuned-from", "amazon-beauty"]) == 0
    ds, name, seed, flat = capsys.readouterr().out.strip().split(" ", 3)
    cfg = json.loads(flat)
    assert (ds, name, seed) == ("ml-1m", "glintru", "4")
    assert (cfg["lr"], cfg["kernel_size"], cfg["max_len"], cfg["max_epochs"], cfg["seed"]) == (0.0007, 1, 200, 200, 4)
    # a run tuned on ML-1M itself does not stand in for one tuned on Beauty, nor the other way round
    own = reproduce.result_path(tmp_path / "res", "ml-1m", "glintru", 4, "tuned")
    moved = reproduce.result_path(tmp_path / "res", "ml-1m", "glintru", 4, "tuned", "amazon-beauty")
    assert (own.name, moved.name) == ("glintru__tuned__seed4.json", "glintru__tuned__from-amazon-beauty__seed4.json")
    assert reproduce.result_path(tmp_path / "res", "ml-1m", "glintru", 4, "tuned", "ml-1m") == own
    own.parent.mkdir(parents=True)
    own.write_text("{}")
    assert reproduce.main(argv + ["--tuned-from", "amazon-beauty"]) == 0
    assert capsys.readouterr().out.startswith("ml-1m glintru 4 ")
    moved.write_text("{}")
    assert reproduce.main(argv + ["--tuned-from", "amazon-beauty"]) == 0
    assert "skip ml-1m glintru (tuned) seed 4: glintru__tuned__from-amazon-beauty__seed4.json exists" in capsys.readouterr().out
    # without --tuned-from, ML-1M looks for its own tuned file and skips the model
    assert reproduce.main(argv) == 0
    assert "skip ml-1m glintru: no" in capsys.readouterr().out
    assert reproduce.main(["--data-root", str(tmp_path), "--tuned-from", "amazon-beauty", "--dry-run"]) == 2
    assert "--tuned-from: needs --tuned" in capsys.readouterr().err


def test_a_plan_variant_takes_its_models_tuned_configuration_with_its_own_keys_on_top(tmp_path, capsys):
    import json

    import reproduce

    tuned = tmp_path / "tuned"
    tuned.mkdir()
    (tuned / "amazon-beauty__glintru.yaml").write_text("model: glintru\nlr: 0.0007\nloss: ce\nkernel_size: 1\n")
    argv = ["--data-root", str(tmp_path), "--plan", "losses", "--datasets", "ml-1m", "--runs", "glintru-loss_gbce",
            "--tuned", str(tuned), "--tuned-from", "amazon-beauty", "--seeds", "1", "--results-dir", str(tmp_path / "res"),
            "--dry-run"]
    assert reproduce.main(argv) == 0
    ds, name, seed, flat = capsys.readouterr().out.strip().split(" ", 3)
    cfg = json.loads(flat)
    assert (name, cfg["lr"], cfg["kernel_size"], cfg["loss"]) == ("glintru-loss_gbce", 0.0007, 1, "gbce")
    # a file of the variant's own wins over its model's
    (tuned / "amazon-beauty__glintru-loss_gbce.yaml").write_text("model: glintru\nlr: 0.002\n")
    assert reproduce.main(argv) == 0
    cfg = json.loads(capsys.readouterr().out.strip().split(" ", 3)[3])
    assert (cfg["lr"], cfg["kernel_size"], cfg["loss"]) == (0.002, 3, "gbce")
    # neither file: skipped, naming the model's file it looked for
    assert reproduce.main([*argv[:-1], "--runs", "glintru-loss_sampled", "--tuned-from", "amazon-video-games",
                           "--dry-run"]) == 0
    assert f"skip ml-1m glintru-loss_sampled: no {tuned / 'amazon-video-games__glintru.yaml'}" in capsys.readouterr().out


def test_a_key_newer_than_the_base_run_is_not_listed_as_changed():
    base = run("gru4rec", 1, 0.0268)
    del base["config"]["embedding_update"]  # the base run predates this key: it trained at its default
    variant = run("gru4rec", 1, 0.0256, setting="default-recbole", embedding_size=64)
    for r in (base, variant):
        r["history"], r["machine"] = [{"train/s": 20.0}], {"cpu": "A"}
    row = report.variants_table([base, variant], "amazon-beauty")[2].split(" | ")
    assert row[:2] == ["| `gru4rec` (default-recbole)", "embedding_size=64"]


def test_a_run_without_a_machine_record_is_named_n_a_not_an_error():
    base = run("gru4rec", 1, 0.0268)  # written before runs recorded their machine
    variant = run("gru4rec", 1, 0.0256, setting="default-recbole", embedding_size=64)
    variant["machine"] = {"cpu": "AMD EPYC", "cpu_isa": "AVX2"}
    row = report.variants_table([base, variant], "amazon-beauty")[2].split(" | ")
    assert row[-1] == "EPYC (AVX2) / n/a |"
    assert report.runs_cpus([base, variant, base]) == ["EPYC (AVX2)", "n/a"]


def test_a_variant_without_a_base_run_lists_what_set_changed_beyond_its_plan():
    variant = run("narm", 1, 0.0288, setting="default-recbole", embedding_size=64)
    variant["overrides"] = {"objective": "all_positions", "embedding_size": 64}  # the plan's key and --set's
    variant["history"], variant["machine"] = [{"train/s": 24.0}], {"cpu": "A"}
    row = report.variants_table([variant], "amazon-beauty")[2].split(" | ")
    assert row[:2] == ["| `narm` (default-recbole)", "embedding_size=64"]
    assert row[5] == "none"



def test_a_configuration_already_trained_under_another_name_is_recorded_not_trained_again(tmp_path, capsys):
    import json

    import reproduce

    res = tmp_path / "res"
    kernel = run("glintru-norm_kernel", 1, 0.0397, dataset="ml-1m", attn_norm="kernel")
    kernel.update(stopped="patience", wall_s=700.0)
    path = result_path(res, "ml-1m", "glintru-norm_kernel", 1)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(kernel))
    argv = ["--data-root", str(tmp_path), "--plan", "losses", "--datasets", "ml-1m", "--results-dir", str(res)]
    assert reproduce.main(argv + ["--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "skip ml-1m glintru-loss_ce (default) seed 1: the same configuration as glintru-norm_kernel__seed1.json"
    # the sampled losses differ from it: they would train (their configs are printed)
    assert [line.split(" ", 3)[1] for line in out[1:]] == ["glintru-loss_sampled", "glintru-loss_gbce", "glintru-loss_gbce_offset"]
    ce = result_path(res, "ml-1m", "glintru-loss_ce", 1)
    assert not ce.exists()  # a dry run writes nothing
    # another seed is another run
    assert reproduce.main(argv + ["--runs", "glintru-loss_ce", "--seeds", "2", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("ml-1m glintru-loss_ce 2 ")
    assert reproduce.main(argv + ["--runs", "glintru-loss_ce"]) == 0
    assert "recorded as glintru-loss_ce__seed1.json" in capsys.readouterr().out
    rec = json.loads(ce.read_text())
    assert (rec["name"], rec["same_run_as"], rec["metrics"]) == ("glintru-loss_ce", path.name, kernel["metrics"])
    # the losses table finds its full-softmax row; the default model group counts the training once
    rec["history"] = [{"train/targets_per_s": 9000.0}]
    assert report.losses_table([rec], "ml-1m")[2].startswith("| `ce` | all items | 7.94 | 3.97 |")
    assert [r["name"] for r in report.model_groups([kernel, rec], "ml-1m")["glintru"]] == ["glintru-norm_kernel"]
    # a record of a record is never the twin another run is matched to
    assert reproduce.twin_run(res, "ml-1m", "glintru", {**rec["config"], "seed": 1}) == path


def test_device_cuda_without_a_gpu_is_one_clear_error(tmp_path, capsys, monkeypatch):
    import reproduce
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["--data-root", str(tmp_path), "--datasets", "ml-1m", "--results-dir", str(tmp_path / "res"), "--device", "cuda"]
    assert reproduce.main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False)")
    assert not (tmp_path / "res").exists()
    assert reproduce.device_name("cpu") == "cpu"


def test_an_anchor_measured_without_the_users_own_items_is_compared_with_our_runs_rescored_so():
    sasrec = run("sasrec", 1, 0.13, setting="tuned", dataset="ml-1m")
    sasrec["tuned_from"] = "amazon-beauty"
    label = "sasrec (tuned on amazon-beauty)"
    assert report.run_stem(sasrec) == "sasrec__tuned__from-amazon-beauty__seed1"
    published = "31.50 / 18.20 (own items removed)"
    assert report.anchor_cells("ml-1m", label, [sasrec], {}) == [published, "not rescored yet"]
    masking = {("ml-1m", "sasrec__tuned__from-amazon-beauty__seed1"): {"masked_ndcg@10": 0.1729}}
    # 0.1729 / 0.182 = 0.95; the unmasked 13% is never divided by the masked anchor
    assert report.anchor_cells("ml-1m", label, [sasrec], masking) == [published, "95% (ours rescored so: 17.29)"]
    # a seed whose weights are gone (trained elsewhere) is left out, and the cell says how many were rescored
    sasrec2 = {**run("sasrec", 2, 0.13, setting="tuned", dataset="ml-1m"), "tuned_from": "amazon-beauty"}
    assert report.anchor_cells("ml-1m", label, [sasrec, sasrec2], masking) == [
        published, "95% (ours rescored so, 1 of 2 seeds: 17.29)"]
    assert report.anchor_cells("ml-1m", label, [sasrec2], masking) == [published, "not rescored yet"]
    # RecBole's anchors keep the users' items, as our protocol does: a plain ratio, 0.03 / 0.0332 = 90%
    gru = run("gru4rec", 1, 0.03)
    assert report.anchor_cells("amazon-beauty", "gru4rec", [gru], masking) == ["6.06 / 3.32", "90%"]
    rows = {("ml-1m", f"glintru__seed{k}"): {"kept_hr@10": 0.245, "kept_ndcg@10": kept, "masked_hr@10": 0.315,
                                             "masked_ndcg@10": masked, "ndcg_lift": masked / kept}
            for k, kept, masked in ((1, 0.12, 0.18), (2, 0.13, 0.19))}
    groups = {"glintru": [run("glintru", 1, 0.12, dataset="ml-1m"), run("glintru", 2, 0.13, dataset="ml-1m"),
                          run("glintru", 3, 0.13, dataset="ml-1m")], "narm": [run("narm", 1, 0.1, dataset="ml-1m")]}
    # seeds 1 and 2 rescored, NARM not at all: one row; lifts 1.5 and 1.4615 average to 1.48
    assert report.masking_table("ml-1m", rows, groups)[2:] == [
        "| `glintru` | 2 of 3 | 24.50 ± 0.00 | 12.50 ± 0.71 | 31.50 ± 0.00 | 18.50 ± 0.71 | 1.48x |"]
    assert report.masking_table("ml-1m", {}, groups) == []


def test_variant_groups_follow_their_base_model():
    runs = [run("sasrec", 1, 0.03, setting="tuned"), run("glintru", 1, 0.04, setting="tuned"),
            run("glintru", 1, 0.039, setting="tuned-bf16", precision="bf16"),
            run("glintru", 2, 0.04, setting="tuned-bf16", precision="bf16")]
    groups = report.with_variants(report.model_groups(runs, "amazon-beauty"), runs, "amazon-beauty")
    assert list(groups) == ["glintru (tuned)", "glintru (tuned-bf16)", "sasrec (tuned)"]
    assert [r["seed"] for r in groups["glintru (tuned-bf16)"]] == [1, 2]


def test_losses_are_captioned_by_the_configuration_they_trained_one_table_per_setting():
    plain = [run(n, 1, 0.02, loss=loss) for n, loss in (("glintru-loss_ce", "ce"), ("glintru-loss_gbce", "gbce"))]
    del plain[1]["config"]["gbce_offset"]  # recorded before the key existed: gBCE had no offset then
    plain.append(run("glintru-loss_gbce_offset", 1, 0.03, loss="gbce", gbce_offset=True))
    moved = run("glintru-loss_sampled", 1, 0.05, setting="tuned-overlap150", loss="sampled_softmax",
                window_overlap=30, precision="bf16")
    moved["tuned_from"] = "ml-1m"
    slower = run("glintru-loss_gbce_offset", 1, 0.035, setting="default-lr0.0003", loss="gbce", lr=0.0003)
    slower["overrides"] = {"loss": "gbce", "gbce_offset": True, "precision": "fp32", "lr": 0.0003}
    for r in (*plain, moved, slower):
        r["history"] = [{"train/targets_per_s": 1.0}]
    lines = report.losses_section([*plain, moved, slower], "amazon-beauty")
    captions = [line for line in lines if line.startswith("Training losses")]
    assert captions[1].startswith("Training losses (GLINT-RU at the protocol's settings, lr=0.0003, seed 1;")
    del captions[1]
    assert captions[0].startswith("Training losses (GLINT-RU at the protocol's settings, seed 1;")
    assert captions[1].startswith("Training losses (GLINT-RU with its configuration tuned on ml-1m, training "
                                  "windows overlapping by 30 items, seed 1;")
    rows = [line.split(" | ") for line in lines if line.startswith("| `")]
    assert [row[0] for row in rows] == ["| `ce`", "| `gbce`", "| `gbce + offset`", "| `gbce + offset`",
                                        "| `sampled_softmax`"]
    assert [row[-2] for row in rows] == ["fp32", "fp32", "fp32", "fp32", "bf16"]  # each row's precision


def test_the_cost_figure_places_the_losses_where_a_dataset_has_no_model_runs():
    losses = [run("glintru-loss_ce", 1, 0.02, loss="ce", dataset="amazon-beauty-54k"),
              run("glintru-loss_gbce", 1, 0.02, loss="gbce", gbce_offset=False, dataset="amazon-beauty-54k")]
    assert report.efficiency_points(losses, "amazon-beauty-54k", {}) == {"loss ce": [losses[0]],
                                                                         "loss gbce": [losses[1]]}
    groups = {"sasrec": [run("sasrec", 1, 0.03)]}
    assert report.efficiency_points([*losses, *groups["sasrec"]], "amazon-beauty", groups) == groups
    assert report.efficiency_points([], "amazon-beauty", {}) == {}


def test_the_cost_figure_leaves_gpu_training_times_out_and_keeps_their_latency():
    cpu_run = run("sasrec", 1, 0.03)
    cpu_run["machine"] = {"cpu": "AMD EPYC", "cpu_isa": "AVX2", "device": "cpu"}
    gpu_run = run("sasrec", 2, 0.04)
    gpu_run["machine"] = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_isa": "AMX_BF16", "device": "cuda: NVIDIA H200"}
    gpu_run["latency_ms_per_user"] = 2.5
    left, right, shared = report.cost_coordinates({"sasrec": [cpu_run, gpu_run]})
    assert left == [("sasrec", "EPYC (AVX2)", 10.0, 3.0)]  # 600 s of training, 3 % NDCG@10
    assert right == [("sasrec", "EPYC (AVX2)", 1.0, 3.0), ("sasrec", "H200 GPU", 2.5, 4.0)] and not shared


def test_the_cost_figure_takes_side_by_side_latencies_only_when_every_run_has_one_on_one_cpu():
    a, b = run("sasrec", 1, 0.03), run("sasrec", 2, 0.04)
    twin = {**run("sasrec", 3, 0.05, setting="tuned"), "same_run_as": "sasrec__seed3.json"}  # its twin's weights
    rows = {("amazon-beauty", "sasrec__seed1"): {"median_ms": 0.7, "min_ms": 0.6, "cpu": "AMD EPYC"},
            ("amazon-beauty", "sasrec__seed2"): {"median_ms": 0.9, "min_ms": 0.8, "cpu": "AMD EPYC"},
            ("amazon-beauty", "sasrec__seed3"): {"median_ms": 1.1, "min_ms": 1.0, "cpu": "AMD EPYC"}}
    _, right, shared = report.cost_coordinates({"sasrec": [a, b, twin]}, rows)
    assert shared and [x for _, _, x, _ in right] == [0.7, 0.9, 1.1]
    _, right, shared = report.cost_coordinates({"sasrec": [a, b]}, {k: rows[k] for k in list(rows)[:1]})
    assert not shared and [x for _, _, x, _ in right] == [1.0, 1.0]  # one run unmeasured: each run's own
    other_cpu = {**rows, ("amazon-beauty", "sasrec__seed2"): {**rows[("amazon-beauty", "sasrec__seed2")], "cpu": "x"}}
    assert not report.cost_coordinates({"sasrec": [a, b]}, other_cpu)[2]
    lines = report.latency_table("amazon-beauty", {k: {**v, "run": k[1], "window": 50, "recorded_ms": None}
                                                   for k, v in rows.items()})
    assert lines[2] == "| `sasrec__seed1` | 50 | 0.70 | 0.60 |  | EPYC |"  # fastest median first
    assert report.latency_table("ml-1m", rows) == []


def test_each_family_gets_its_own_cost_figure_and_a_dropped_familys_figure_goes(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "DOC", tmp_path / "results.md")
    monkeypatch.setattr(report, "PLOTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    stale = tmp_path / "results" / "efficiency_amazon-beauty__tuned-old.png"
    other = tmp_path / "results" / "efficiency_amazon-beauty-54k__tuned-equal.png"  # another dataset's
    stale.write_bytes(b"png")
    other.write_bytes(b"png")
    main = {"sasrec": [run("sasrec", 1, 0.03)]}
    fam = {("tuned-equal", "amazon-video-games"): {"glintru": [run("glintru", 1, 0.05, setting="tuned-equal")]}}
    lines = report.plots([*main["sasrec"], *fam[("tuned-equal", "amazon-video-games")]["glintru"]],
                         "amazon-beauty", main, fam)
    family_png = "efficiency_amazon-beauty__tuned-equal__from-amazon-video-games.png"
    assert lines[1:] == ["![amazon-beauty: accuracy against cost](results/efficiency_amazon-beauty.png)",
                         "![amazon-beauty, tuned-equal (tuned on amazon-video-games): accuracy against cost]"
                         f"(results/{family_png})"]
    assert (tmp_path / "results" / family_png).read_bytes()[:4] == b"\x89PNG"
    assert not stale.exists() and other.exists()


def test_paired_users_per_user_metrics_and_interval_by_hand():
    import numpy as np
    import paired_users

    u = paired_users.per_user(np.array([0, 1, 9, 10]))  # 0-based ranks; 10 is outside the top 10
    np.testing.assert_allclose(u["ndcg@10"], [1.0, 1 / np.log2(3), 1 / np.log2(11), 0.0])
    np.testing.assert_array_equal(u["hr@10"], [1, 1, 1, 0])
    b = np.array([0.2, 0.0, 0.5, 0.1])
    same = paired_users.paired(b + 0.1, b)  # every user 0.1 better: no spread at all
    assert same["diff"] == pytest.approx(0.1) and same["se"] == pytest.approx(0.0, abs=1e-12)
    assert same["ci95_lo"] == pytest.approx(0.1) and same["ci95_hi"] == pytest.approx(0.1)
    d = np.array([1.0, -1.0] * 50)  # mean 0, sd 1.005: the interval straddles 0 at about +-1.96 se
    r = paired_users.paired(d, np.zeros_like(d))
    assert r["diff"] == 0.0 and r["se"] == pytest.approx(np.std(d, ddof=1) / 10)
    assert r["ci95_lo"] < 0 < r["ci95_hi"] and abs(r["ci95_hi"] - 1.96 * r["se"]) < 0.3 * r["se"]


def test_paired_table_row_by_hand():
    row = {"dataset": "ml-1m", "base": "glintru__seed1", "other": "sasrec__seed1", "diff_ndcg@10": 0.0072,
           "ci95_lo_ndcg@10": 0.00253, "ci95_hi_ndcg@10": 0.0118, "diff_hr@10": -0.001, "ci95_lo_hr@10": -0.0102,
           "ci95_hi_hr@10": 0.0081, "base_better": 3021, "other_better": 2713}
    assert report.paired_table("amazon-beauty", [row]) == []
    lines = report.paired_table("ml-1m", [row])
    assert lines[2] == ("| `glintru__seed1` | `sasrec__seed1` | +0.72 [+0.25, +1.18] | -0.10 [-1.02, +0.81] "
                        "| 3,021 / 2,713 |")


def test_runs_record_the_cpus_matmul_instructions_and_tables_name_them():
    import benchinfo

    text = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx fma avx2\n\nprocessor\t: 1\nmodel name\t: other\n"
    assert benchinfo.cpu_info(text) == ("AMD EPYC", "AVX2")
    assert benchinfo.cpu_info(text.replace("avx2", "avx2 avx512f avx512_bf16")) == ("AMD EPYC", "AVX512_BF16")
    assert benchinfo.cpu_info("flags : fpu sse2\n") == ("", "")
    assert report.cpu_label({"cpu": "AMD EPYC", "cpu_isa": "AVX2"}) == "EPYC (AVX2)"
    assert report.cpu_label({"cpu": "AMD EPYC", "cpu_isa": "AVX2"}, short=False) == "AMD EPYC (AVX2)"
    assert report.cpu_label({"cpu": "Intel(R) Xeon(R) Processor @ 2.60GHz"}) == "Xeon @ 2.60GHz"  # recorded before


def test_a_variant_of_the_default_takes_the_main_tables_seeds_as_its_base():
    """A tagged default GLINT-RU is compared with every seed the model table counts as the default,
    the ablation run with the default configuration included."""
    runs = [run("glintru", 2, 0.0379), run("glintru-norm_kernel", 1, 0.0397),
            run("glintru", 1, 0.0443, setting="default-prefix", objective="last_position", batch_size=2048)]
    for r in runs:
        r["history"] = [{"train/s": 30.0}]
    (row,) = [line.split(" | ") for line in report.variants_table(runs, "amazon-beauty")[2:]]
    # base seeds 1 and 2: mean 3.88 %, sample std 0.127 %; (4.43 - 3.88) / 0.127 = +4.3
    assert row[:7] == ["| `glintru` (default-prefix)", "batch_size=2048, objective=last_position", "1", "4.43",
                       "4.43", "3.88 ± 0.13 (1,2)", "+4.3"]


def test_a_run_trained_on_a_gpu_is_named_by_its_gpu_and_the_header_says_runs_shared_it(monkeypatch):
    cpu_run = run("sasrec", 1, 0.0399)
    cpu_run["machine"] = {"cpu": "AMD EPYC", "cpu_isa": "AVX2", "device": "cpu", "parallel_runs": 2}
    gpu_run = run("sasrec", 2, 0.0401)
    gpu_run["machine"] = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_isa": "AMX_BF16", "device": "cuda: NVIDIA H200",
                          "parallel_runs": 14}
    assert report.run_cpu(gpu_run) == "H200 GPU"
    assert report.run_cpu(gpu_run, short=False) == "NVIDIA H200 GPU (host Intel(R) Xeon(R) Processor (AMX_BF16))"
    assert report.runs_cpus([cpu_run, gpu_run]) == ["EPYC (AVX2)", "H200 GPU"]
    row = report.model_table("amazon-beauty", {"sasrec": [cpu_run, gpu_run]}, masking={})[2].split(" | ")
    assert row[9] == "EPYC (AVX2), H200 GPU"
    monkeypatch.setattr(report, "plots", lambda *args: [])  # the figures under docs/ stay as they are
    text = report.report([cpu_run, gpu_run], studies=[], masking={}, paired=[], latency={})
    assert ("Measured on: AMD EPYC (AVX2), NVIDIA H200 GPU (host Intel(R) Xeon(R) Processor (AMX_BF16)); one torch "
            "thread per run, two runs at a time on a CPU; on a GPU, up to 14 runs of one call shared it") in text


def test_a_variant_trained_on_a_gpu_and_a_cpu_gives_each_machines_epoch_time_apart():
    """Seeds of one variant split between a lent GPU and the CPU: one median over both would be
    neither machine's figure, so each gets its own; the machines of one side are listed with commas,
    the two sides split by the slash."""
    base = run("glintru", 1, 0.049, setting="tuned")
    cpu_seed = run("glintru", 1, 0.057, setting="tuned-equal", target_weight="equal")
    gpu_seeds = [run("glintru", k, 0.059, setting="tuned-equal", target_weight="equal") for k in (2, 3)]
    base["history"], base["machine"] = [{"train/s": 18.0}], {"cpu": "AMD EPYC"}
    cpu_seed["history"], cpu_seed["machine"] = [{"train/s": 40.0}, {"train/s": 44.0}], {"cpu": "AMD EPYC", "cpu_isa": "AVX2"}
    for r, secs in zip(gpu_seeds, (5.0, 7.0)):
        r["history"], r["machine"] = [{"train/s": secs}], {"cpu": "Intel(R) Xeon(R) Processor", "device": "cuda: NVIDIA H200"}
    row = report.variants_table([base, cpu_seed, *gpu_seeds], "amazon-beauty")[2].split(" | ")
    assert row[7:] == ["42 (EPYC (AVX2)), 6 (H200 GPU) / 18", "EPYC (AVX2), H200 GPU / EPYC |"]


def test_a_tagged_setting_of_three_models_is_a_family_of_its_own_best_first():
    """Three models under one tag form a family table ordered by mean test NDCG@10; a tag with two
    models, untagged runs and ablation runs do not; the caption names what changed for all alike."""
    eq = {"target_weight": "equal", "window_overlap": 10}
    runs = [run("glintru", 1, 0.040, setting="default-eq", **eq), run("glintru", 2, 0.044, setting="default-eq", **eq),
            run("sasrec", 1, 0.043, setting="default-eq", **eq),
            run("gru4rec", 1, 0.030, setting="default-eq", embedding_size=64, **eq),
            run("glintru-norm_none", 1, 0.05, setting="default-eq", attn_norm="none", **eq),
            run("glintru", 1, 0.05, setting="default-bf16", precision="bf16"),
            run("sasrec", 1, 0.05, setting="default-bf16", precision="bf16"),
            run("narm", 1, 0.06), run("gru4rec", 2, 0.07), run("sasrec_1block", 1, 0.08)]
    fam = report.families(runs, "amazon-beauty")
    assert list(fam) == [("default-eq", None)]
    groups = fam[("default-eq", None)]
    # means: sasrec 4.30, glintru (4.0 + 4.4) / 2 = 4.20, gru4rec 3.00
    assert list(groups) == ["sasrec", "glintru", "gru4rec"]
    assert [r["seed"] for r in groups["glintru"]] == [1, 2]
    alike, own = report.family_changes(groups, "amazon-beauty")
    assert alike == {"target_weight": "equal", "window_overlap": 10}
    assert own == {"sasrec": {}, "glintru": {}, "gru4rec": {"embedding_size": 64}}
    caption = report.family_caption("default-eq", None, groups, "amazon-beauty")
    assert caption == ("Models trained alike, `default-eq` (each model at the protocol's defaults, except gru4rec: "
                       "embedding_size=64; every model with target_weight=equal, window_overlap=10), best test full "
                       "NDCG@10 first (in %):")
    rows = [line.split(" | ")[:4] for line in report.model_table("amazon-beauty", groups)[2:]]
    assert rows == [["| `sasrec`", "1", "8.60", "4.30"], ["| `glintru`", "1,2", "8.40 ± 0.57", "4.20 ± 0.28"],
                    ["| `gru4rec`", "1", "6.00", "3.00"]]


def test_seeds_trained_in_two_precisions_name_each_in_the_variant_row_and_not_in_the_family_caption():
    """One seed in bf16 on a CPU with fast bf16, another in fp32 elsewhere: the variants row names
    each seed's precision, and the family caption leaves the precision to the models table's column
    instead of listing it as a change of every model but one."""
    eq = {"target_weight": "equal", "window_overlap": 150}
    runs = [run("sasrec", 1, 0.1305, setting="default-eq", dataset="ml-1m", precision="bf16", **eq),
            run("sasrec", 3, 0.1308, setting="default-eq", dataset="ml-1m", precision="fp32", **eq),
            run("glintru", 1, 0.1279, setting="default-eq", dataset="ml-1m", precision="bf16", **eq),
            run("gru4rec", 1, 0.1315, setting="default-eq", dataset="ml-1m", precision="bf16", **eq)]
    for r in runs:  # no base run: the row lists what --set changed (each run's overrides)
        r["history"], r["machine"] = [{"train/s": 100.0}], {"cpu": "A"}
        r["overrides"] = {"precision": r["config"]["precision"], **eq}
    runs[1].update(machine={"cpu": "B"}, train_s=1200.0, latency_ms_per_user=3.0)  # the fp32 seed's machine
    rows = {line.split(" | ")[0]: line.split(" | ") for line in report.variants_table(runs, "ml-1m")[2:]}
    assert rows["| `sasrec` (default-eq)"][1:3] == [
        "precision=bf16 (1), fp32 (3), target_weight=equal, window_overlap=150", "1,3"]
    assert rows["| `glintru` (default-eq)"][1] == "precision=bf16, target_weight=equal, window_overlap=150"
    groups = report.families(runs, "ml-1m")[("default-eq", None)]
    assert report.family_changes(groups, "ml-1m") == ({"target_weight": "equal", "window_overlap": 150},
                                                      {"gru4rec": {}, "sasrec": {}, "glintru": {}})
    table = report.model_table("ml-1m", groups)
    # training minutes and latency per machine (a mean over two machines would describe neither)
    assert table[3].split(" | ")[7:11] == ["10.0 (A), 20.0 (B)", "1.00 (A), 3.00 (B)", "A, B", "bf16/fp32"]  # sasrec
    assert table[4].split(" | ")[7:9] == ["10.0", "1.00"]  # glintru, one machine: one figure


def test_a_tuned_family_says_where_it_was_tuned_and_not_each_models_tuned_values():
    runs = [run(name, 1, v, setting="tuned-equal", dataset="ml-1m", target_weight="equal", lr=lr)
            for name, v, lr in (("glintru", 0.12, 8e-4), ("sasrec", 0.11, 6e-4), ("narm", 0.10, 3e-3))]
    for r in runs:
        r["tuned_from"] = "amazon-beauty"
    (key, groups), = report.families(runs, "ml-1m").items()
    assert key == ("tuned-equal", "amazon-beauty")
    assert report.family_caption(*key, groups, "ml-1m") == (
        "Models trained alike, `tuned-equal` (each model's configuration tuned on amazon-beauty; every model "
        "with target_weight=equal), best test full NDCG@10 first (in %):")


def test_a_recorded_twin_takes_its_originals_rescoring_and_is_not_a_variant_of_its_own():
    """A tuned configuration equal to a default run is recorded as that run (``same_run_as``): in its
    family it shows the original's masked NDCG against the anchor, the caption says whose run it is,
    and the variants and masking tables do not repeat it."""
    eq = {"target_weight": "equal"}
    orig = run("sasrec", 1, 0.13, setting="default-eq", dataset="ml-1m", **eq)
    twin = {**run("sasrec", 1, 0.13, setting="tuned-eq", dataset="ml-1m", **eq), "tuned_from": "amazon-beauty",
            "same_run_as": "sasrec__default-eq__seed1.json"}
    others = [{**run(n, 1, v, setting="tuned-eq", dataset="ml-1m", lr=3e-3, **eq), "tuned_from": "amazon-beauty"}
              for n, v in (("glintru", 0.14), ("narm", 0.11))]
    runs = [orig, twin, *others]
    assert report.run_stem(twin) == "sasrec__tuned-eq__from-amazon-beauty__seed1"
    assert report.weights_stem(twin) == "sasrec__default-eq__seed1"
    masking = {("ml-1m", "sasrec__default-eq__seed1"): {"kept_hr@10": 0.25, "kept_ndcg@10": 0.13,
                                                       "masked_hr@10": 0.32, "masked_ndcg@10": 0.1911,
                                                       "ndcg_lift": 1.47}}
    groups = report.families(runs, "ml-1m")[("tuned-eq", "amazon-beauty")]
    assert list(groups) == ["glintru", "sasrec", "narm"]
    sasrec_row = report.model_table("ml-1m", groups, masking)[3].split(" | ")
    assert sasrec_row[-1].rstrip(" |") == "105% (ours rescored so: 19.11)"  # 0.1911 / 0.182
    assert report.family_caption("tuned-eq", "amazon-beauty", groups, "ml-1m") == (
        "Models trained alike, `tuned-eq` (each model's configuration tuned on amazon-beauty; every model with "
        "target_weight=equal; sasrec: the `default-eq` run, the same configuration), best test full NDCG@10 "
        "first (in %):")
    variants = report.variants_table(runs, "ml-1m")
    # the tuned runs without a base run are their family's rows only (as variants they would list every
    # tuned value as a change); the default-eq run stays a variant of its own
    assert [line.split(" | ")[0] for line in variants[2:]] == ["| `sasrec` (default-eq)"]
    base = {**run("glintru", 1, 0.12, setting="tuned", dataset="ml-1m", lr=3e-3), "tuned_from": "amazon-beauty"}
    assert [line.split(" | ")[0] for line in report.variants_table([*runs, base], "ml-1m")[2:]] == [
        "| `glintru` (tuned-eq)", "| `sasrec` (default-eq)"]  # with its base run (tuned, no tag): a variant
    mask_groups = report.with_variants(report.model_groups(runs, "ml-1m"), runs, "ml-1m")
    assert "sasrec (tuned-eq on amazon-beauty)" not in mask_groups
    assert [line.split(" | ")[0] for line in report.masking_table("ml-1m", masking, mask_groups)[2:]] == [
        "| `sasrec` (default-eq)"]
    # several twins of one setting are named together
    gru_twin = {**run("gru4rec", 1, 0.12, setting="tuned-eq", dataset="ml-1m", **eq), "tuned_from": "amazon-beauty",
                "same_run_as": "gru4rec__default-eq__seed1.json"}
    groups2 = report.families([*runs, gru_twin], "ml-1m")[("tuned-eq", "amazon-beauty")]
    assert "; gru4rec and sasrec: the `default-eq` runs, the same configurations)" in report.family_caption(
        "tuned-eq", "amazon-beauty", groups2, "ml-1m")


def test_the_5core_ml1m_is_compared_with_the_ml1m_anchors_sasrec_rescored():
    gru = run("gru4rec", 1, 0.1476, dataset="ml-1m-5core")
    assert report.anchor_cells("ml-1m-5core", "gru4rec", [gru], {}) == ["29.40 / 16.40", "90%"]  # 0.1476 / 0.164
    sasrec = run("sasrec", 1, 0.13, dataset="ml-1m-5core")
    assert report.anchor_cells("ml-1m-5core", "sasrec", [sasrec], {}) == ["31.50 / 18.20 (own items removed)",
                                                                           "not rescored yet"]


def test_one_published_table_for_all_baselines_by_hand_kept_and_removed():
    """ML-1M's anchors come from two papers; the same-table comparison puts each of RecBLR's three
    baselines (not their variants, not GLINT-RU) against that one table, kept and rescored."""
    sasrec = [run("sasrec", k, ndcg, setting="default-eq", dataset="ml-1m") for k, ndcg in ((1, 0.13), (2, 0.14))]
    groups = {"glintru": [run("glintru", 1, 0.13, dataset="ml-1m")],
              "sasrec (default-eq)": sasrec,
              "sasrec_1block (default-eq)": [run("sasrec_1block", 1, 0.12, setting="default-eq", dataset="ml-1m")],
              "narm": [run("narm", 1, 0.12, dataset="ml-1m")]}
    masking = {("ml-1m", "sasrec__default-eq__seed1"): {"masked_ndcg@10": 0.18}}
    table = report.same_table("ml-1m", groups, masking)
    assert table[0].startswith("| model | seeds | published HR@10 / NDCG@10 |")
    # SASRec: HR@10 2 x NDCG@10 (the helper's runs), mean 0.135 / 0.1692 = 79.8%; seed 1 alone rescored,
    # 0.18 / 0.1692 = 106%. NARM: 0.12 / 0.1597 = 75%, no weights rescored
    assert table[2:] == [
        "| `sasrec` (default-eq) | 1,2 | 29.93 / 16.92 | 27.00 ± 1.41 / 13.50 ± 0.71 | 80% | 18.00 (1 of 2 seeds) | 106% |",
        "| `narm` | 1 | 28.36 / 15.97 | 24.00 / 12.00 | 75% | not rescored yet |  |"]
    assert report.same_table("ml-1m-5core", {"gru4rec": [run("gru4rec", 1, 0.1638, dataset="ml-1m-5core")]},
                             {})[2] == "| `gru4rec` | 1 | 29.37 / 16.38 | 32.76 / 16.38 | 100% | not rescored yet |  |"
    assert report.same_table("amazon-beauty", {"sasrec": [run("sasrec", 1, 0.04)]}, {}) == []  # one paper already
