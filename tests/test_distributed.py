"""Ray Train (V2) data parallelism: exact metric reduction, gradients averaged across replicas."""
# Every test here starts Ray: all slow (see conftest.py).

from __future__ import annotations

from pathlib import Path

import pytest
from ray_fixtures import ddp_step_fn_per_worker, eval_fn_per_worker, tiny_run_cfg

from glintru.tuning.smoke import write_synthetic_dataset

pytestmark = pytest.mark.slow


def test_two_workers_give_the_single_process_validation_metrics(ray_local, tmp_path):
    import torch

    from glintru.data.dataset import load_prepared
    from glintru.distributed.trainer import run_trainer
    from glintru.engine.evaluate import evaluate, negatives_for
    from glintru.models import build_model

    data_dir = write_synthetic_dataset(tmp_path / "data", n_users=47)  # odd: shards of 24 and 23 users
    run_cfg = tiny_run_cfg()
    data = load_prepared(data_dir)
    torch.manual_seed(0)
    model = build_model(run_cfg, data.n_items)
    single = evaluate(model, data, "valid", run_cfg.train, negatives=negatives_for(data, "valid", run_cfg.train))
    result = run_trainer(
        run_cfg.to_flat(), data_dir, name="eval-eq", storage_path=str(tmp_path / "ray"), workers=2,
        worker_fn=eval_fn_per_worker,
    )
    reduced = {k: v for k, v in result.metrics.items() if k.startswith("valid/")}
    assert reduced["valid/n_users"] == 47.0
    assert reduced == single  # bit-identical: sums of integer rank counts


def test_a_ddp_step_leaves_both_replicas_with_the_same_weights(ray_local, tmp_path):
    """Each rank takes one step on its own users (different gradients); DDP averages them, so both
    replicas end with the same weights, the gBCE loss's own score offset included (it moved).
    (Workers on different hosts: test_netns_cluster.py.)"""
    import math

    from glintru.data.dataset import load_prepared
    from glintru.distributed.trainer import run_trainer

    data_dir = write_synthetic_dataset(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    flat = tiny_run_cfg(loss="gbce", num_negatives_train=4).to_flat()
    run_trainer(flat, data_dir, name="ddp-step", storage_path=str(tmp_path / "ray"), workers=2,
                worker_fn=_with_out(out))
    (_, w0, b0), (_, w1, b1) = ((out / f"rank{r}.txt").read_text().split() for r in (0, 1))
    assert w0 == w1 and b0 == b1
    assert float(b0) != -math.log(load_prepared(data_dir).n_items - 1)  # the offset took the averaged step


def _with_out(out: Path):
    def fn(config: dict) -> None:
        ddp_step_fn_per_worker({**config, "out": str(out)})

    return fn


def test_glintru_train_workers_contract_logs_one_complete_mlflow_run(ray_local, tmp_path, mlflow_store, capsys):
    """`glintru train --data DIR --model NAME --workers W --max-epochs E --mlflow-uri URI` (the
    issue's contract): exit 0 and one MLflow run (role=train) with the config as params, one value
    per epoch, test metrics and the end-of-run artifacts. Called from Python in a process that has
    Ray already (this session's), the command trains there and leaves that Ray running."""
    import json

    from glintru import tracking
    from glintru.cli import main

    data = write_synthetic_dataset(tmp_path / "data", n_users=16, n_items=24)
    uri = mlflow_store("mlflow.db")
    out = tmp_path / "run"
    rc = main(["train", "--data", str(data), "--model", "glintru", "--workers", "2", "--max-epochs", "2",
               "--mlflow-uri", uri, "--out", str(out), "--set", "max_len=16", "--set", "hidden_size=16",
               "--set", "num_negatives=10"])
    assert rc == 0, capsys.readouterr().err[-2000:]
    assert ray_local.is_initialized()  # the caller's Ray: not shut down by the command
    c = tracking.client(uri)
    (run,) = c.search_runs([c.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags[tracking.ROLE] == "train"
    assert {"kernel_size", "hidden_size", "mixing_init"} <= set(run.data.params) and run.data.params["hidden_size"] == "16"
    assert [m.step for m in c.get_metric_history(run.info.run_id, "epoch")] == [1, 2]
    assert "test/full/ndcg_at_10" in run.data.metrics
    assert set(tracking.END_OF_RUN_ARTIFACTS) <= tracking.artifact_names(uri, run.info.run_id)
    assert (out / "best.pt").exists() and len(json.loads((out / "history.json").read_text())) == 2
