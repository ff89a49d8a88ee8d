"""``glintru recommend``: top-K from the engine's own scoring, seen items excluded, ids mapped back,
in this process or with Ray Data actors (the same file), atomic output, and one clear error per bad
input."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from glintru.cli import main
from glintru.config import build_config
from glintru.errors import UserError
from glintru.loading import load_model
from glintru.models import build_model
from glintru.recommend import top_k_from_histories

N_ITEMS = 12
MAX_LEN = 6


def write_dataset(root: Path, seqs: list[list[int]], n_items: int = N_ITEMS) -> Path:
    """A prepared directory whose original ids differ from the indices: user 'u-<3u+1>', item 'movie-<7i>'."""
    root.mkdir(parents=True)
    pq.write_table(
        pa.table({
            "user_id": pa.array([f"u-{3 * u + 1}" for u in range(len(seqs))], pa.string()),
            "items": pa.array(seqs, pa.list_(pa.int32())),
            "timestamps": pa.array([list(range(len(s))) for s in seqs], pa.list_(pa.int64())),
        }),
        root / "sequences.parquet",
    )
    order = np.arange(n_items, 0, -1)  # rows deliberately not in index order
    pq.write_table(
        pa.table({"item_idx": pa.array(order, pa.int32()), "item_id": pa.array([f"movie-{7 * i}" for i in order])}),
        root / "items.parquet",
    )
    n = sum(len(s) for s in seqs)
    manifest = {"format_version": 1, "counts": {"n_users": len(seqs), "n_items": n_items, "n_interactions": n}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def sequences(n_users: int = 20, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    seqs = [[int(v) for v in rng.integers(1, N_ITEMS + 1, size=int(rng.integers(1, 10)))] for _ in range(n_users)]
    seqs[0] = list(range(1, N_ITEMS)) + [3]  # saw 11 of 12 items: 1 candidate left
    seqs[1] = [5, 6, 7, 8, 9, 10, 11, 12, 1, 2]  # longer than MAX_LEN
    return seqs


def tiny_cfg(model: str = "glintru", **overrides):
    base = {"hidden_size": 8, "n_heads": 2, "max_len": MAX_LEN, "seed": 1}
    if model == "glintru_official":
        base["objective"] = "last_position"
    return build_config(model, {**base, **overrides})


def save_best(run_dir: Path, model: torch.nn.Module, run_cfg) -> Path:
    """The engine's ``best.pt`` layout: {"model", "config", "epoch", "metrics"}."""
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": run_cfg.to_flat(), "epoch": 1, "metrics": {}}, run_dir / "best.pt")
    return run_dir / "best.pt"


def reference_top_k(model, seq: list[int], k: int, max_len: int, include_seen: bool) -> tuple[list[int], np.ndarray]:
    """The engine's scoring for one user, unbatched: last_hidden(window) @ item_embeddings()[1:].T."""
    window = seq[-max_len:]
    width = max_len if model.needs_full_window else len(window)
    x = torch.tensor([window + [0] * (width - len(window))])
    with torch.no_grad():
        scores = (model.last_hidden(x, torch.tensor([len(window)])) @ model.item_embeddings()[1:].T)[0]
    if not include_seen:
        scores[torch.tensor(sorted(set(seq))) - 1] = -torch.inf
    order = torch.argsort(scores, descending=True, stable=True)[:k]
    keep = [int(j) for j in order if torch.isfinite(scores[j])]
    return [j + 1 for j in keep], scores[keep].numpy()


@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(0)
    run_cfg = tiny_cfg()
    model = build_model(run_cfg, N_ITEMS).eval()
    seqs = sequences()
    data = write_dataset(tmp_path / "data", seqs)
    return model, run_cfg, seqs, data, save_best(tmp_path / "run", model, run_cfg)


@pytest.mark.parametrize("model_name", ["glintru", "glintru_official", "sasrec"])
@pytest.mark.parametrize("include_seen", [False, True])
def test_batched_top_k_equals_the_engines_scoring_per_user(model_name, include_seen):
    torch.manual_seed(0)
    run_cfg = tiny_cfg(model_name)
    model = build_model(run_cfg, N_ITEMS).eval()
    seqs = sequences()
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
    values = np.concatenate(seqs)
    items, scores = top_k_from_histories(model, offsets, values, k=4, max_len=MAX_LEN, include_seen=include_seen, chunk=7)
    assert items.shape == scores.shape == (len(seqs), 4)
    for u, seq in enumerate(seqs):
        ref_items, ref_scores = reference_top_k(model, seq, 4, MAX_LEN, include_seen)
        got = [int(i) for i in items[u] if i > 0]
        assert got == ref_items, f"user {u}"
        np.testing.assert_allclose(scores[u, : len(got)], ref_scores, rtol=1e-5, atol=1e-6)
        if not include_seen:
            assert not set(got) & set(seq)
    # User 0 saw 11 of the 12 items: exactly one candidate, the tail is padding (item 0, -inf).
    if not include_seen:
        assert items[0].tolist() == [12, 0, 0, 0] and np.isneginf(scores[0, 1:]).all()


@pytest.mark.parametrize("include_seen", [False, True])
def test_top_k_in_small_score_blocks_equals_one_block(monkeypatch, include_seen):
    """Bounded memory for large catalogues: scoring 2 rows at a time gives the same lists."""
    from glintru.engine import scoring

    torch.manual_seed(0)
    model = build_model(tiny_cfg("glintru"), N_ITEMS).eval()
    seqs = sequences()
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
    values = np.concatenate(seqs)
    whole = top_k_from_histories(model, offsets, values, k=4, max_len=MAX_LEN, include_seen=include_seen)
    monkeypatch.setattr(scoring, "SCORE_BUDGET", 2 * N_ITEMS)  # 2 rows per block
    blocks = top_k_from_histories(model, offsets, values, k=4, max_len=MAX_LEN, include_seen=include_seen)
    np.testing.assert_array_equal(blocks[0], whole[0])
    # scores to float rounding: a BLAS may pick another kernel for a 2-row block (seen on AMD EPYC)
    np.testing.assert_allclose(blocks[1], whole[1], rtol=1e-5, atol=1e-6)


def test_window_is_the_last_max_len_items():
    torch.manual_seed(0)
    model = build_model(tiny_cfg(), N_ITEMS).eval()
    long_seq = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    tail_only = long_seq[-MAX_LEN:]
    a, sa = top_k_from_histories(model, np.array([0, 9]), np.array(long_seq), k=3, max_len=MAX_LEN, include_seen=True)
    b, sb = top_k_from_histories(model, np.array([0, MAX_LEN]), np.array(tail_only), k=3, max_len=MAX_LEN, include_seen=True)
    assert a.tolist() == b.tolist()
    np.testing.assert_array_equal(sa, sb)


def test_recommend_command_maps_ids_back_and_matches_the_engine(ray_local, trained, tmp_path, capsys):
    model, run_cfg, seqs, data, best = trained
    out = tmp_path / "recs.parquet"
    rc = main(["recommend", "--model", str(best.parent), "--data", str(data), "--k", "3", "--out", str(out),
               "--workers", "2", "--batch-size", "4"])
    assert rc == 0, capsys.readouterr().err
    table = pq.read_table(out)
    assert table.column_names == ["user_id", "item_ids", "scores"]
    assert table.column("user_id").to_pylist() == [f"u-{3 * u + 1}" for u in range(len(seqs))]  # file order kept
    rec_ids, rec_scores = table.column("item_ids").to_pylist(), table.column("scores").to_pylist()
    for u, seq in enumerate(seqs):
        ref_items, ref_scores = reference_top_k(model, seq, 3, MAX_LEN, include_seen=False)
        assert rec_ids[u] == [f"movie-{7 * i}" for i in ref_items]
        np.testing.assert_allclose(rec_scores[u], ref_scores, rtol=1e-5, atol=1e-6)
        assert not {f"movie-{7 * i}" for i in seq} & set(rec_ids[u])
    assert rec_ids[0] == ["movie-84"]  # only item 12 unseen
    assert not list(tmp_path.glob(".recs.parquet.tmp-*"))
    assert "2 Ray actors" in capsys.readouterr().out

    # The same file from this process, without Ray, in batches of a different size.
    inproc = tmp_path / "inproc.parquet"
    assert main(["recommend", "--model", str(best.parent), "--data", str(data), "--k", "3", "--out", str(inproc),
                 "--workers", "0", "--batch-size", "3"]) == 0
    assert "in this process" in capsys.readouterr().out
    other = pq.read_table(inproc)
    assert other.schema == table.schema
    assert other.column("user_id").to_pylist() == table.column("user_id").to_pylist()
    assert other.column("item_ids").to_pylist() == rec_ids
    for a, b in zip(other.column("scores").to_pylist(), rec_scores):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def write_snapshot(root: Path, seqs: list[list[int]]) -> dict[str, list[int]]:
    """A later snapshot of the ``trained`` fixture's data, as prepare would number it afresh: the 12
    items under other indices plus a new item 'movie-999'; u-7's history gains the new item in the
    middle, a user 'u-new' has only the new item. Returns each user's history in the model's indices
    (the new item left out; u-new absent)."""
    perm = [5, 12, 1, 9, 3, 7, 11, 2, 8, 10, 4, 6]  # snapshot index j + 1 holds the model's item perm[j]
    to_snapshot = {m: j + 1 for j, m in enumerate(perm)}
    ids = [f"movie-{7 * m}" for m in perm] + ["movie-999"]
    users = [f"u-{3 * u + 1}" for u in range(len(seqs))] + ["u-new"]
    hists = [[to_snapshot[i] for i in seq] for seq in seqs] + [[13, 13]]
    hists[2] = hists[2][:1] + [13] + hists[2][1:]  # u-7
    root.mkdir(parents=True)
    pq.write_table(pa.table({"user_id": users, "items": pa.array(hists, pa.list_(pa.int32())),
                             "timestamps": pa.array([list(range(len(h))) for h in hists], pa.list_(pa.int64()))}),
                   root / "sequences.parquet")
    pq.write_table(pa.table({"item_idx": pa.array(range(1, 14), pa.int32()), "item_id": ids}), root / "items.parquet")
    counts = {"n_users": len(users), "n_items": 13, "n_interactions": sum(map(len, hists))}
    (root / "manifest.json").write_text(json.dumps({"format_version": 1, "counts": counts}))
    return {f"u-{3 * u + 1}": seq for u, seq in enumerate(seqs)}


def test_another_snapshot_is_scored_with_trained_on_in_the_models_indices(ray_local, trained, tmp_path, capsys):
    """--trained-on: the snapshot's histories are translated by item id (the new item left out of the
    windows), the lists are the engine's for those histories, a user with only unknown items is left
    out and counted; in this process and with Ray actors alike. Without it the snapshot is refused
    with a message that names the option."""
    model, run_cfg, seqs, data, best = trained
    expected = write_snapshot(tmp_path / "snapshot", seqs)
    base = ["recommend", "--model", str(best), "--data", str(tmp_path / "snapshot"), "--k", "3"]
    err = _error_of(base + ["--out", str(tmp_path / "r.parquet")], capsys)
    assert "trained on 12 items but" in err and "name that dataset with --trained-on" in err
    outs = {}
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}.parquet"
        rc = main(base + ["--trained-on", str(data), "--out", str(out), "--workers", workers, "--batch-size", "4"])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        assert "left out 1 user none of whose items is in the catalogue of --trained-on" in captured.err
        assert f"{len(seqs)} users -> {out}" in captured.out
        outs[workers] = _recs(out)
    assert outs["0"] == outs["2"]
    assert list(outs["0"]) == list(expected)  # file order, u-new left out
    for user, hist in expected.items():
        assert outs["0"][user] == [f"movie-{7 * i}" for i in reference_top_k(model, hist, 3, MAX_LEN, False)[0]], user


def test_trained_on_errors(no_ray, trained, tmp_path, capsys):
    model, run_cfg, seqs, data, best = trained
    write_snapshot(tmp_path / "snapshot", seqs)
    out = tmp_path / "r.parquet"
    base = ["recommend", "--model", str(best), "--data", str(tmp_path / "snapshot"), "--out", str(out)]
    other = write_dataset(tmp_path / "other", seqs, n_items=N_ITEMS + 1)
    err = _error_of(base + ["--trained-on", str(other)], capsys)
    assert f"trained on 12 items but {other} has 13; recommend needs the dataset the model was trained on" in err
    assert "name that dataset with --trained-on" not in err  # it was named: the wrong one
    assert "prepared dataset directory not found" in _error_of(base + ["--trained-on", str(tmp_path / "nowhere")], capsys)
    unrelated = tmp_path / "unrelated"
    write_snapshot(unrelated, seqs)
    pq.write_table(pa.table({"item_idx": pa.array(range(1, 14), pa.int32()), "item_id": [f"book-{i}" for i in range(13)]}),
                   unrelated / "items.parquet")
    err = _error_of(["recommend", "--model", str(best), "--data", str(unrelated), "--out", str(out),
                     "--trained-on", str(data)], capsys)
    assert f"none of the 13 items of {unrelated} is in the model's catalogue" in err
    assert "--trained-on applies to batch mode" in _error_of(base + ["--trained-on", str(data), "--save-state",
                                                                      str(tmp_path / "s.pt")], capsys)
    assert not out.exists()
    # --trained-on reads the catalogue only (manifest and items.parquet), not the training histories
    import shutil

    catalogue_only = tmp_path / "catalogue-only"
    shutil.copytree(data, catalogue_only)
    (catalogue_only / "sequences.parquet").write_bytes(b"not parquet")
    assert main(base + ["--trained-on", str(catalogue_only)]) == 0, capsys.readouterr().err
    assert pq.read_table(out).num_rows == len(seqs)


@pytest.fixture
def no_ray(monkeypatch):
    from glintru.distributed import trainer

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(trainer, "init_ray", refuse)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def test_include_seen_and_a_checkpoint_file_source_in_this_process_by_default(no_ray, trained, tmp_path):
    model, run_cfg, seqs, data, best = trained
    out = tmp_path / "recs.parquet"
    assert main(["recommend", "--model", str(best), "--data", str(data), "--k", "5", "--out", str(out), "--include-seen"]) == 0
    rec_ids = pq.read_table(out).column("item_ids").to_pylist()
    assert all(len(r) == 5 for r in rec_ids)
    for u in (0, 1, 5):
        ref_items, _ = reference_top_k(model, seqs[u], 5, MAX_LEN, include_seen=True)
        assert rec_ids[u] == [f"movie-{7 * i}" for i in ref_items]


def test_run_dir_without_best_uses_latest_epoch_checkpoint_and_sidecar_config(tmp_path):
    torch.manual_seed(0)
    run_cfg = tiny_cfg()
    older, newer = build_model(run_cfg, N_ITEMS), build_model(run_cfg, N_ITEMS)
    for epoch, m in ((1, older), (2, newer)):
        d = tmp_path / "run" / "checkpoints" / f"epoch_{epoch:04d}"
        d.mkdir(parents=True)
        torch.save({"model": m.state_dict(), "epoch": epoch}, d / "checkpoint.pt")  # no config inside
        (d / "config.json").write_text(json.dumps(run_cfg.to_flat()))
    loaded = load_model(tmp_path / "run")
    assert loaded.source.endswith("epoch_0002/checkpoint.pt") and loaded.max_len == MAX_LEN and loaded.n_items == N_ITEMS
    for a, b in zip(loaded.model.state_dict().values(), newer.state_dict().values()):
        assert torch.equal(a, b)


def _error_of(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs_are_one_line_errors_before_any_work(trained, tmp_path, capsys, monkeypatch):
    from glintru.distributed import trainer

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for an input that should have been rejected first")

    monkeypatch.setattr(trainer, "init_ray", no_ray)
    model, run_cfg, seqs, data, best = trained
    out = str(tmp_path / "recs.parquet")
    base = ["recommend", "--data", str(data), "--out", out]
    assert "no such file or directory" in _error_of(base + ["--model", str(tmp_path / "nope")], capsys)
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    assert "trunc.pt: cannot read the checkpoint" in _error_of(base + ["--model", str(truncated)], capsys)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x04not a checkpoint" * 10)
    assert "garbage.pt: cannot read the checkpoint" in _error_of(base + ["--model", str(garbage)], capsys)
    text = tmp_path / "log.csv"
    text.write_text("user_id,item_id\nu1,i1\n")  # a file of another kind: the unpickler fails its own way
    assert "log.csv: cannot read the checkpoint" in _error_of(base + ["--model", str(text)], capsys)
    other = save_best(tmp_path / "other", build_model(run_cfg, N_ITEMS + 3), run_cfg)
    assert f"trained on {N_ITEMS + 3} items but" in _error_of(base + ["--model", str(other)], capsys)
    for k in ("0", str(N_ITEMS + 1)):
        assert f"--k: must be an integer in 1..{N_ITEMS}" in _error_of(base + ["--model", str(best), "--k", k], capsys)
    missing_dir = str(tmp_path / "no" / "recs.parquet")
    err = _error_of(["recommend", "--model", str(best), "--data", str(data), "--out", missing_dir], capsys)
    assert "does not exist" in err
    assert "is a directory" in _error_of(["recommend", "--model", str(best), "--data", str(data), "--out", str(tmp_path)], capsys)
    as_csv = tmp_path / "recs.csv"
    assert f"--out {as_csv}: recommendations are written as Parquet" in \
        _error_of(["recommend", "--model", str(best), "--data", str(data), "--out", str(as_csv)], capsys)
    assert not Path(out).exists() and not as_csv.exists()


def test_max_len_scores_shorter_windows_and_refuses_positions_a_sasrec_never_learned(tmp_path, capsys):
    """--max-len 3 scores every user's last 3 items with the trained weights (the SASRec keeps its
    6 learned positions); a window beyond them, or below 1, is one error line naming --max-len."""
    torch.manual_seed(0)
    run_cfg = tiny_cfg("sasrec")
    model = build_model(run_cfg, N_ITEMS).eval()
    seqs = sequences()
    data = write_dataset(tmp_path / "data", seqs)
    best = save_best(tmp_path / "run", model, run_cfg)
    out = tmp_path / "r.parquet"
    base = ["recommend", "--model", str(best), "--data", str(data), "--k", "3", "--out", str(out)]
    assert main(base + ["--max-len", "3"]) == 0, capsys.readouterr().err
    got = _recs(out)
    for u, seq in enumerate(seqs):
        assert got[f"u-{3 * u + 1}"] == [f"movie-{7 * i}" for i in reference_top_k(model, seq, 3, 3, False)[0]], u
    assert any(reference_top_k(model, s, 3, 3, False)[0] != reference_top_k(model, s, 3, MAX_LEN, False)[0] for s in seqs)
    out.unlink()
    assert f"--max-len {MAX_LEN + 1}: {best} learned positions for windows of at most {MAX_LEN} items" in \
        _error_of(base + ["--max-len", str(MAX_LEN + 1)], capsys)
    assert "--max-len: must be >= 1, got 0" in _error_of(base + ["--max-len", "0"], capsys)
    assert not out.exists()


def test_unsafe_pickle_in_a_checkpoint_is_refused(tmp_path):
    """weights_only=True refuses to build arbitrary objects: nothing in the file runs."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {"model": "glintru"}, "hook": _Exploit(str(marker))}, evil)
    with pytest.raises(UserError, match="evil.pt: cannot read the checkpoint"):
        load_model(evil)
    assert not marker.exists()


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_run_trained_by_the_engine_is_scored_like_the_engine_scores_it(tmp_path):
    from glintru.data.dataset import load_prepared

    seqs = sequences(30, seed=3)
    data = write_dataset(tmp_path / "data", seqs)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "glintru", "--set", "hidden_size=8", "--set", "n_heads=2",
                 "--set", f"max_len={MAX_LEN}", "--set", "batch_size=8", "--set", "num_negatives=0",
                 "--max-epochs", "1", "--out", str(run), "--threads", "1", "--quiet"]) == 0
    saved = torch.load(run / "best.pt", weights_only=True)  # the engine's own file, rebuilt by hand
    engine_model = build_model(build_config(saved["config"].pop("model"), saved["config"]), load_prepared(data).n_items)
    engine_model.load_state_dict(saved["model"])
    engine_model.eval()
    loaded = load_model(run)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
    items, scores = top_k_from_histories(loaded.model, offsets, np.concatenate(seqs), k=3, max_len=loaded.max_len)
    for u in (0, 2, 7, 29):
        ref_items, ref_scores = reference_top_k(engine_model, seqs[u], 3, MAX_LEN, include_seen=False)
        assert [int(i) for i in items[u] if i > 0] == ref_items
        np.testing.assert_allclose(scores[u, : len(ref_items)], ref_scores, rtol=1e-5, atol=1e-6)


def test_a_registered_model_loads_by_alias_with_pickle_refused_and_scores_like_the_checkpoint(tmp_path, monkeypatch, mlflow_store):
    """The registry's pyfunc (weights-only best.pt + code): `models:/NAME@champion` and
    `runs:/ID/model` load with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false; a pickled MLflow PyTorch
    model is refused with one clear error."""
    import mlflow
    import mlflow.pytorch

    from glintru.tuning.registry import register_best_model

    torch.manual_seed(0)
    run_cfg = tiny_cfg()
    model = build_model(run_cfg, N_ITEMS).eval()
    best = save_best(tmp_path / "run", model, run_cfg)
    uri = mlflow_store("mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # set_tracking_uri writes the variable too; pytest restores it
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("rec", artifact_location=(tmp_path / "mlruns").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:
        pass
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        version, new, champion = register_best_model(uri, run.info.run_id, best, "rec", "valid/full/ndcg@10", 0.2, "s")
    assert (version, new, champion) == ("1", True, True)
    assert not [w for w in caught if "type hint" in str(w.message)]
    assert register_best_model(uri, run.info.run_id, best, "rec", "valid/full/ndcg@10", 0.2, "s") == ("1", False, True)
    seqs = sequences()
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
    want, _ = top_k_from_histories(model, offsets, np.concatenate(seqs), k=3, max_len=MAX_LEN)
    for spec in ("models:/rec@champion", "models:/rec/1", f"runs:/{run.info.run_id}/model"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = load_model(spec, tracking_uri=uri)
        # no MLflow advice about predict()'s type hints for someone who only scores users
        assert not [w for w in caught if "type hint" in str(w.message)], spec
        assert loaded.max_len == MAX_LEN and loaded.n_items == N_ITEMS
        got, _ = top_k_from_histories(loaded.model, offsets, np.concatenate(seqs), k=3, max_len=loaded.max_len)
        assert np.array_equal(got, want), spec
    # the pyfunc itself (what `mlflow models serve` runs): a DataFrame of histories in, top 10 out
    import pandas as pd
    from mlflow.exceptions import MlflowException

    pyfunc = mlflow.pyfunc.load_model("models:/rec@champion")
    top10, _ = top_k_from_histories(model, offsets, np.concatenate(seqs), k=10, max_len=MAX_LEN)
    out = pyfunc.predict(pd.DataFrame({"items": seqs}))
    assert list(out.columns) == ["items", "scores"]
    assert [list(r) for r in out["items"]] == [r[r > 0].tolist() for r in top10]
    out = pyfunc.predict(pd.DataFrame({"items": seqs}), params={"k": 3})  # the signature's parameter
    assert [list(r) for r in out["items"]] == [r[r > 0].tolist() for r in want]
    with pytest.raises(MlflowException, match="items"):  # the signature's input column
        pyfunc.predict(pd.DataFrame({"history": seqs}))
    with mlflow.start_run(experiment_id=exp) as pickled:
        mlflow.pytorch.log_model(model, name="model", serialization_format="pickle")
    with pytest.raises(UserError, match="not a model registered by glintru|cannot load the MLflow model"):
        load_model(f"runs:/{pickled.info.run_id}/model", tracking_uri=uri)
    with pytest.raises(UserError, match="cannot load the MLflow model"):
        load_model("runs:/0123456789abcdef/model", tracking_uri=uri)


# ------------------------------------------------------------------ incremental mode (streaming states)


def _recs(path: Path) -> dict[str, list[str]]:
    t = pq.read_table(path)
    return dict(zip(t.column("user_id").to_pylist(), t.column("item_ids").to_pylist()))


def test_incremental_mode_equals_batch_scoring_of_the_extended_histories(trained, tmp_path, capsys):
    """--save-state, then --state + --events: the new lists are those of the histories with the
    events appended, scored from scratch (histories short enough to stay inside the window)."""
    model, run_cfg, seqs, data, best = trained
    states = tmp_path / "states.pt"
    base = ["recommend", "--model", str(best), "--data", str(data), "--k", "3"]
    assert main(base + ["--out", str(tmp_path / "all.parquet"), "--save-state", str(states)]) == 0, capsys.readouterr().err
    before = _recs(tmp_path / "all.parquet")
    for u in (2, 3, 7):  # within the window, the initial lists equal the batch mode's
        assert before[f"u-{3 * u + 1}"] == [f"movie-{7 * i}" for i in reference_top_k(model, seqs[u], 3, MAX_LEN, False)[0]]
    events = tmp_path / "new.csv"
    events.write_text("user_id,item_id\nu-13,movie-21\nu-16,movie-14\nu-13,movie-7\nnewcomer,movie-84\n")
    out = tmp_path / "new.parquet"
    rc = main(base + ["--state", str(states), "--events", str(events), "--out", str(out), "--save-state", str(states)])
    assert rc == 0, capsys.readouterr().err
    assert "4 events, 3 users" in capsys.readouterr().out
    after = _recs(out)
    assert set(after) == {"u-13", "u-16", "newcomer"}
    extended = {"u-13": seqs[4] + [3, 1], "u-16": seqs[5] + [2], "newcomer": [12]}  # all within the window
    for user, hist in extended.items():
        ref = reference_top_k(model, hist, 3, MAX_LEN, include_seen=False)[0]
        assert after[user] == [f"movie-{7 * i}" for i in ref], user
    # the saved states continue: one more event for u-13 equals scoring its history from scratch
    events.write_text("u-13 movie-35\n")
    assert main(base + ["--state", str(states), "--events", str(events), "--out", str(out)]) == 0
    hist = extended["u-13"] + [5]
    assert _recs(out)["u-13"] == [f"movie-{7 * i}" for i in reference_top_k(model, hist, 3, MAX_LEN, False)[0]]


def test_events_files_with_headers_timestamps_or_parquet_give_the_same_lists(trained, tmp_path, capsys):
    """One set of events written eight ways (header-less; header-less with timestamps out of file
    order; a header with other names and an extra column, plain and gzipped; TSV; JSON lines;
    Parquet) gives the same lists, and
    those are the extended histories scored from scratch; --skip-unknown-items leaves an unknown item
    out and counts it."""
    model, run_cfg, seqs, data, best = trained
    states = tmp_path / "states.pt"
    base = ["recommend", "--model", str(best), "--data", str(data), "--k", "3"]
    assert main(base + ["--out", str(tmp_path / "all.parquet"), "--save-state", str(states)]) == 0, capsys.readouterr().err
    users, items, stamps = ["u-16", "u-13", "u-13", "newcomer"], ["movie-14", "movie-7", "movie-21", "movie-84"], [20, 31, 30, 10]
    order = sorted(range(4), key=stamps.__getitem__)  # u-13 gets movie-21, then movie-7
    files = {
        "plain.csv": "".join(f"{users[i]},{items[i]}\n" for i in order),
        "stamped.csv": "".join(f"{u} {it} {t}\n" for u, it, t in zip(users, items, stamps)),
        "header.csv": "rating,userId,movieId,ts\n" + "".join(f"5,{u},{it},{t}\n" for u, it, t in zip(users, items, stamps)),
        "header.tsv": "user\titem\ttime\n" + "".join(f"{u}\t{it}\t{t}\n" for u, it, t in zip(users, items, stamps)),
        "skip.csv": "".join(f"{users[i]},{items[i]}\n" for i in order) + "u-13,never-seen\n",
    }
    files["events.jsonl"] = "".join(json.dumps({"userId": u, "asin": it, "ts": t, "extra": [1]}) + "\n"
                                    for u, it, t in zip(users, items, stamps))
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "header.csv.gz").write_bytes(gzip.compress(files["header.csv"].encode()))
    pq.write_table(pa.table({"user_id": users, "item_id": items, "timestamp": stamps}), tmp_path / "events.parquet")
    lists = {}
    for name in [*files, "header.csv.gz", "events.parquet"]:
        out = tmp_path / f"{name}.out.parquet"
        extra = ["--skip-unknown-items"] if name == "skip.csv" else []
        rc = main(base + ["--state", str(states), "--events", str(tmp_path / name), "--out", str(out), *extra])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        assert "4 events, 3 users" in captured.out, name
        assert ("left out 1 event whose item is not in the model's catalogue" in captured.err) == (name == "skip.csv")
        lists[name] = _recs(out)
    assert all(v == lists["plain.csv"] for v in lists.values())
    extended = {"u-13": seqs[4] + [3, 1], "u-16": seqs[5] + [2], "newcomer": [12]}  # movie-21, movie-7 in time order
    for user, hist in extended.items():
        assert lists["plain.csv"][user] == [f"movie-{7 * i}" for i in reference_top_k(model, hist, 3, MAX_LEN, False)[0]]


def test_an_events_file_with_a_header_or_json_lines_is_decompressed_once(tmp_path, monkeypatch):
    """The format is told from the first 64 KiB: a gzipped file with a header or of JSON lines is
    read (and decompressed) once, by prepare's readers; a header-less one once, line by line; a
    file whose comments fill the first 64 KiB is still told apart correctly."""
    from glintru.data import readers
    from glintru.streaming import read_events

    index = {"movie-7": 0, "movie-14": 1}
    calls = []
    real = readers.decompress
    monkeypatch.setattr(readers, "decompress", lambda path, data: calls.append(path) or real(path, data))
    body = "u-1,movie-7,2\nu-2,movie-14,1\nu-1,movie-14,3\n"
    texts = {"header.csv.gz": "user_id,item_id,timestamp\n" + body, "bare.csv.gz": body,
             "events.jsonl.gz": "".join(json.dumps({"user_id": u, "item_id": i, "timestamp": int(t)}) + "\n"
                                        for u, i, t in (line.split(",") for line in body.splitlines()))}
    for name, text in texts.items():
        path = tmp_path / name
        path.write_bytes(gzip.compress(text.encode()))
        calls.clear()
        events = read_events(path, index)
        assert (events.users, events.items.tolist()) == (["u-2", "u-1", "u-1"], [1, 0, 1]), name  # time order
        assert calls == [path], name
    comments = "# an export note\n" * 5000  # 85 KB: the first 64 KiB hold comments only
    (tmp_path / "noted.csv").write_text(comments + body)
    assert read_events(tmp_path / "noted.csv", index).users == ["u-2", "u-1", "u-1"]
    (tmp_path / "noted_header.csv").write_text(comments + "user_id,item_id\nu-1,movie-7\n")
    with pytest.raises(UserError, match="the header must be the first line \\(it is line 5001\\)"):
        read_events(tmp_path / "noted_header.csv", index)
    for name, text in (("bom_bare.csv", body), ("bom_header.csv", "user_id,item_id,timestamp\n" + body)):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode())  # a UTF-8 BOM first (Excel's "CSV UTF-8")
        assert read_events(tmp_path / name, index).users == ["u-2", "u-1", "u-1"], name


def test_incremental_mode_bad_inputs(trained, tmp_path, capsys):
    model, run_cfg, seqs, data, best = trained
    out = str(tmp_path / "r.parquet")
    base = ["recommend", "--model", str(best), "--data", str(data), "--out", out]
    events = tmp_path / "e.csv"
    events.write_text("u-1,movie-7\nu-1,no-such-item\n")
    err = _error_of(base + ["--events", str(events)], capsys)
    assert f"{events}:2: item 'no-such-item' is not in the model's catalogue (--skip-unknown-items" in err
    events.write_text("user,item\nu-1,no-such-item\n")  # a recognised header: lines count from it
    assert f"{events}:2: item 'no-such-item'" in _error_of(base + ["--events", str(events)], capsys)
    events.write_text("person,thing\nu-1,movie-7\n")  # an unrecognised header is read as an event: the error says so
    assert "a header line must name its columns" in _error_of(base + ["--events", str(events)], capsys)
    events.write_text("u-1 movie-7 extra\n")
    assert f"{events}:1: timestamp 'extra' is not a number" in _error_of(base + ["--events", str(events)], capsys)
    events.write_text("u-1,movie-7,5\nu-1,movie-14\n")
    assert f"{events}:2: expected 'user_id,item_id' or 'user_id,item_id,timestamp' (the same on every line)" in \
        _error_of(base + ["--events", str(events)], capsys)
    events.write_text("user_id,item_id,timestamp\nu-1,movie-7,noon\n")
    assert f"{events}:2: field 'timestamp': expected a number, got 'noon'" in _error_of(base + ["--events", str(events)], capsys)
    events.write_text("u-1,movie-7\n")
    assert f"--save-state {tmp_path}: is a directory" in _error_of(base + ["--events", str(events), "--save-state", str(tmp_path)], capsys)
    assert not Path(out).exists()  # refused before any list was written
    events.write_text("# new events\n\n")
    assert f"--events {events}: no events" in _error_of(base + ["--events", str(events)], capsys)
    assert "--skip-unknown-items applies to --events" in _error_of(base + ["--save-state", str(tmp_path / "s.pt"),
                                                                          "--skip-unknown-items"], capsys)
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not torch")
    events.write_text("u-1,movie-7\n")
    assert "not a glintru state file" in _error_of(base + ["--state", str(bogus), "--events", str(events)], capsys)
    official = save_best(tmp_path / "official", build_model(tiny_cfg("glintru_official"), N_ITEMS), tiny_cfg("glintru_official"))
    assert "needs a causal GLINT-RU" in _error_of(["recommend", "--model", str(official), "--data", str(data), "--out", out,
                                                    "--events", str(events)], capsys)
    assert not Path(out).exists()


def test_progress_is_reported_after_every_batch_written(no_ray, trained, tmp_path):
    from glintru.recommend import recommend

    model, run_cfg, seqs, data, best = trained
    calls = []
    res = recommend(str(best), data, tmp_path / "r.parquet", k=2, batch_size=6, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(6, 20), (12, 20), (18, 20), (20, 20)]  # 20 users in batches of 6
    assert (res.n_users, res.workers) == (20, 0)
    assert pq.read_table(tmp_path / "r.parquet").num_rows == 20
    for kw, message in (({"batch_size": 0}, "--batch-size: must be >= 1, got 0"),
                        ({"num_cpus": 0, "workers": 1}, "--num-cpus: must be >= 1, got 0")):
        with pytest.raises(UserError, match=f"^{message}$"):  # a Python caller gets the CLI's checks
            recommend(str(best), data, tmp_path / "bad.parquet", k=2, **kw)
    assert not (tmp_path / "bad.parquet").exists()


def test_progress_line_prints_at_most_every_interval_and_not_at_the_end(monkeypatch, capsys):
    from glintru.commands import recommend as command

    clock = iter([0.0, 5.0, 12.0, 15.0, 30.0])  # construction, then one reading per call
    monkeypatch.setattr(command.time, "perf_counter", lambda: next(clock))
    line = command.ProgressLine(every_s=10.0)
    for done in (100, 200, 300, 400):
        line(done, 400)
    err = capsys.readouterr().err.splitlines()
    assert err == ["scored 200 / 400 users (17 users/s, about 12 s left)"]  # 200 / 12 s; 200 left at that rate


@pytest.mark.parametrize("workers, address, env, num_cpus, want", [
    (None, None, None, None, 0),      # one machine: this process
    (None, "auto", None, None, 1),    # a cluster addressed: one actor
    (None, None, "ray://head:10001", None, 1),
    (None, None, None, 4, 1),         # --num-cpus sizes a local Ray: Ray it is
    (3, None, None, None, 3),
    (0, None, "ray://head:10001", None, 0),
])
def test_scoring_workers_default_follows_the_cluster(monkeypatch, workers, address, env, num_cpus, want):
    from glintru.recommend import scoring_workers

    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    assert scoring_workers(workers, address, num_cpus) == want


def test_contradictory_scoring_options_are_one_line_errors_before_any_work(no_ray, trained, tmp_path, capsys, monkeypatch):
    model, run_cfg, seqs, data, best = trained
    out = str(tmp_path / "recs.parquet")
    base = ["recommend", "--model", str(best), "--data", str(data), "--out", out]
    assert "--workers: must be an integer >= 0" in _error_of(base + ["--workers", "-1"], capsys)
    assert "--workers 0 scores in this process; --address" in _error_of(base + ["--workers", "0", "--address", "auto"], capsys)
    assert "--num-cpus sizes a local Ray; --workers 0" in _error_of(base + ["--workers", "0", "--num-cpus", "2"], capsys)
    # a local Ray too small for its actors and Ray Data's reads waited forever
    assert "--num-cpus 2: 2 scoring actors hold one CPU each and reading the data needs one more; give --num-cpus >= 3" in \
        _error_of(base + ["--workers", "2", "--num-cpus", "2"], capsys)
    assert "--num-cpus: must be >= 1, got 0" in _error_of(base + ["--num-cpus", "0"], capsys)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "--gpu: this process sees no CUDA device" in _error_of(base + ["--gpu"], capsys)
    assert not Path(out).exists()


@pytest.mark.parametrize("value, threads", [(None, 1), ("", 1), ("3", 3), ("0", 1), ("two", 1), (" 2 ", 2)])
def test_scoring_actor_threads_from_omp_num_threads(monkeypatch, value, threads):
    from glintru.recommend import actor_threads

    if value is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert actor_threads() == threads
