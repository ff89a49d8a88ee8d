"""Sparse item-embedding updates (glintru.engine.optim): the same gradients as the dense path, lazy
Adam that moves only the rows a step touched, the ``auto`` rule, resume, and clear config errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from engine_fixtures import cyclic_sequences, make_dataset

from glintru.config import build_config
from glintru.engine import fit
from glintru.engine.checkpoint import load_checkpoint
from glintru.engine.loss import make_sequence_loss
from glintru.engine.optim import SPARSE_MIN_ITEMS, make_optimizer, resolve_embedding_update
from glintru.errors import UserError
from glintru.models import build_model

torch.set_num_threads(1)

N_ITEMS = 30
TINY = {
    "glintru": {"hidden_size": 8, "n_heads": 2},
    "sasrec": {"hidden_size": 8, "n_heads": 2, "inner_size": 16},
    "gru4rec": {"hidden_size": 8, "embedding_size": 8},
    "narm": {"hidden_size": 8, "embedding_size": 8},
}
TRAIN = {"max_len": 6, "batch_size": 4, "eval_batch_size": 4, "num_negatives": 0, "topk": [5, 10],
         "max_epochs": 2, "lr": 0.01, "num_negatives_train": 5}


def cfg(model: str = "glintru", **over):
    return build_config(model, {**TINY[model], **TRAIN, **over})


def a_batch(objective: str) -> dict[str, torch.Tensor]:
    items = torch.tensor([[3, 4, 5, 6, 0, 0], [7, 8, 9, 10, 11, 12]])
    lengths = torch.tensor([4, 6])
    if objective == "last_position":
        return {"items": items, "targets": torch.tensor([7, 13]), "lengths": lengths}
    targets = torch.tensor([[4, 5, 6, 7, 0, 0], [8, 9, 10, 11, 12, 13]])
    return {"items": items, "targets": targets, "lengths": lengths}


def loss_and_grads(run_cfg, mode: str):
    torch.manual_seed(0)
    model = build_model(run_cfg, N_ITEMS)
    model.train()
    opt = make_optimizer(model, SimpleNamespace(**{**vars(run_cfg.train), "embedding_update": mode}), N_ITEMS)
    counts = torch.arange(N_ITEMS + 1)
    lm = make_sequence_loss(model, run_cfg.train, N_ITEMS, counts)
    torch.manual_seed(1)  # the same dropout masks and negatives on both paths
    loss = lm(a_batch(run_cfg.train.objective))
    opt.zero_grad()
    loss.backward()
    return model, opt, loss.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("model", list(TINY))
@pytest.mark.parametrize("loss", ["sampled_softmax", "gbce"])
def test_sparse_table_gradient_equals_the_dense_one(model, loss):
    objective = "last_position" if model == "narm" else "all_positions"
    run_cfg = cfg(model, loss=loss, objective=objective)
    _, _, loss_d, g_d = loss_and_grads(run_cfg, "dense")
    _, _, loss_s, g_s = loss_and_grads(run_cfg, "sparse")
    torch.testing.assert_close(loss_s, loss_d)
    table = "item_embedding.weight"
    assert g_s[table].is_sparse and not g_d[table].is_sparse
    torch.testing.assert_close(g_s[table].to_dense(), g_d[table])
    for name in g_d:
        if name != table:
            torch.testing.assert_close(g_s[name], g_d[name], msg=name)


def test_lazy_adam_moves_only_touched_rows_and_its_first_step_is_adams():
    run_cfg = cfg("glintru", loss="sampled_softmax")
    dense_model, dense_opt, _, _ = loss_and_grads(run_cfg, "dense")
    sparse_model, sparse_opt, _, g = loss_and_grads(run_cfg, "sparse")
    before = sparse_model.item_embedding.weight.detach().clone()
    dense_opt.step()
    sparse_opt.step()
    touched = g["item_embedding.weight"].coalesce().indices()[0]
    after = sparse_model.item_embedding.weight.detach()
    moved = (after != before).any(1).nonzero().flatten()
    assert set(moved.tolist()) <= set(touched.tolist()) and len(moved) > 0
    untouched = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    untouched[touched] = False
    assert torch.equal(after[untouched], before[untouched])
    # Adam's first step is zero where the gradient is zero, so one lazy step equals one dense step.
    for (name, p_s), p_d in zip(sparse_model.named_parameters(), dense_model.parameters()):
        torch.testing.assert_close(p_s, p_d, msg=name)


@pytest.mark.parametrize("loss", ["sampled_softmax", "gbce"])
def test_sparse_runs_train_seeded_and_resume_identically(tmp_path, loss):
    data = make_dataset(cyclic_sequences(8, N_ITEMS), N_ITEMS)
    full_cfg = cfg("glintru", max_epochs=6, loss=loss, embedding_update="sparse", num_negatives_train=8)
    full = fit(full_cfg, data, tmp_path / "full", progress=False)
    assert full.history[-1]["train/loss"] < full.history[0]["train/loss"]
    again = fit(full_cfg, data, tmp_path / "again", progress=False)
    assert [h["train/loss"] for h in again.history] == [h["train/loss"] for h in full.history]
    fit(full_cfg.replace(max_epochs=1), data, tmp_path / "part", progress=False)
    ckpt = tmp_path / "part" / "checkpoints" / "epoch_0001"
    assert set(load_checkpoint(ckpt)["optimizer"]) == {"adam", "sparse_adam"}
    resumed = fit(full_cfg, data, tmp_path / "part", progress=False, resume_from=ckpt)
    assert [h["train/loss"] for h in resumed.history] == [h["train/loss"] for h in full.history]
    assert resumed.test_metrics == full.test_metrics


def test_a_checkpoint_older_than_the_key_resumes_with_its_default(tmp_path):
    data = make_dataset(cyclic_sequences(8, N_ITEMS), N_ITEMS)
    fit(cfg("glintru", max_epochs=1), data, tmp_path, progress=False)
    f = tmp_path / "checkpoints" / "epoch_0001" / "checkpoint.pt"
    state = torch.load(f, weights_only=True)
    del state["config"]["embedding_update"]  # as written before the key existed
    torch.save(state, f)
    result = fit(cfg("glintru", max_epochs=2), data, tmp_path, progress=False, resume_from=f.parent)
    assert len(result.history) == 2


def test_auto_is_sparse_only_for_sampled_losses_on_large_single_worker_catalogues():
    def t(**over):
        return build_config("glintru", over).train

    big = SPARSE_MIN_ITEMS
    assert resolve_embedding_update(t(loss="sampled_softmax"), big) == "sparse"
    assert resolve_embedding_update(t(loss="gbce"), big) == "sparse"
    assert resolve_embedding_update(t(loss="sampled_softmax"), big - 1) == "dense"
    assert resolve_embedding_update(t(loss="ce"), 10 * big) == "dense"
    assert resolve_embedding_update(t(loss="sampled_softmax"), big, world_size=2) == "dense"
    assert resolve_embedding_update(t(loss="sampled_softmax", weight_decay=1e-4), big) == "dense"
    assert resolve_embedding_update(t(loss="sampled_softmax", grad_clip=1.0), big) == "dense"
    assert resolve_embedding_update(t(loss="sampled_softmax", embedding_update="dense"), big) == "dense"
    assert resolve_embedding_update(t(loss="sampled_softmax", embedding_update="sparse"), 10) == "sparse"
    with pytest.raises(UserError, match=r"embedding_update: 'sparse' runs on one worker \(this run has 2\)"):
        resolve_embedding_update(t(loss="sampled_softmax", embedding_update="sparse"), big, world_size=2)


@pytest.mark.parametrize("over, match", [
    ({"loss": "ce"}, "needs a sampled loss"),
    ({"loss": "gbce", "weight_decay": 0.01}, "does not support weight_decay > 0"),
    ({"loss": "gbce", "grad_clip": 1.0}, "does not support grad_clip > 0"),
    ({"loss": "gbce", "compile": True}, "does not work with compile=true"),
    ({"loss": "gbce", "embedding_update": "lazy"}, "must be one of auto, dense, sparse"),
])
def test_impossible_sparse_settings_are_refused_by_name(over, match):
    with pytest.raises(UserError, match=match) as exc:
        build_config("glintru", {"embedding_update": "sparse", **over}, source="run.yaml")
    assert "run.yaml: field 'embedding_update'" in str(exc.value)


def test_a_dense_optimizer_state_does_not_load_into_a_sparse_run():
    run_cfg = cfg("glintru", loss="gbce")
    _, dense_opt, _, _ = loss_and_grads(run_cfg, "dense")
    _, sparse_opt, _, _ = loss_and_grads(run_cfg, "sparse")
    with pytest.raises(ValueError, match="optimizer state is dense, this run's embedding update is sparse"):
        sparse_opt.load_state_dict(dense_opt.state_dict())


def test_multi_worker_sparse_runs_are_refused_before_any_worker_starts(tmp_path):
    from glintru.distributed.trainer import run_trainer

    flat = cfg("glintru", loss="gbce", embedding_update="sparse").to_flat()
    with pytest.raises(UserError, match=r"embedding_update: 'sparse' runs on one worker \(--workers 2\)"):
        run_trainer(flat, tmp_path, name="x", storage_path=str(tmp_path), workers=2)


def test_a_study_with_sparse_multi_worker_trials_is_refused_before_ray_starts(tmp_path):
    from engine_fixtures import write_prepared

    from glintru.tuning.driver import run_study

    data = write_prepared(tmp_path / "data", cyclic_sequences(8, N_ITEMS), N_ITEMS)
    space = tmp_path / "space.yaml"
    space.write_text("model: glintru\nfixed: {loss: gbce, embedding_update: sparse}\n"
                     "params: {lr: {loguniform: [1.0e-4, 1.0e-2]}}\n")
    with pytest.raises(UserError, match=r"'sparse' runs on one worker \(--workers 2 per trial\)"):
        run_study(data_dir=str(data), search_space=str(space), storage_path=str(tmp_path / "ray"),
                  mlflow_uri=f"sqlite:///{tmp_path / 'm.db'}", experiment=None, num_samples=2, max_epochs=1,
                  workers=2, overrides={})


def test_auto_says_when_it_chose_sparse_updates(tmp_path, capsys, monkeypatch):
    from glintru.engine import optim

    monkeypatch.setattr(optim, "SPARSE_MIN_ITEMS", N_ITEMS)  # this tiny catalogue counts as large
    data = make_dataset(cyclic_sequences(8, N_ITEMS), N_ITEMS)
    fit(cfg("glintru", max_epochs=1, loss="gbce"), data, tmp_path / "a", progress=True)
    assert "item table: sparse updates" in capsys.readouterr().err
    assert set(load_checkpoint(tmp_path / "a" / "checkpoints" / "epoch_0001")["optimizer"]) == {"adam", "sparse_adam"}
    fit(cfg("glintru", max_epochs=1, loss="ce"), data, tmp_path / "b", progress=True)
    assert "item table" not in capsys.readouterr().err
