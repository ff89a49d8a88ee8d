"""benchmarks/objective_cost.py: both objectives train the same targets per epoch, prefixes read more
input positions, and each bad ``--set`` is one error line with nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from engine_fixtures import cyclic_sequences, write_prepared

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import objective_cost

torch.set_num_threads(1)
TINY = ["--set", "hidden_size=8", "--set", "gru4rec.embedding_size=8", "--set", "eval_batch_size=64",
        "--set", "num_negatives=0", "--threads", "1"]


def test_both_objectives_train_every_target_once_prefixes_read_more_positions(tmp_path, capsys):
    seqs = cyclic_sequences(20, 30, min_len=4, max_len=12)
    data = write_prepared(tmp_path / "data", seqs, 30)
    out = tmp_path / "cost.json"
    assert objective_cost.main(["--data", str(data), "--max-len", "5", "--models", "gru4rec", "sasrec",
                                "--set", "sasrec.n_heads=2", "--set", "sasrec.inner_size=16", *TINY,
                                "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    # training sequences drop each user's last two items; every item but the first is a target once
    targets = sum(len(s) - 3 for s in seqs)
    # windows of 5 cut from the end read each target's input once (plus one item per extra window);
    # a prefix of target i reads min(i, 5) items
    prefixes = sum(min(i, 5) for s in seqs for i in range(1, len(s) - 2))
    for r in rows:
        assert r["targets"] == targets and r["prefixes_positions"] == prefixes
        assert targets <= r["windows_positions"] < prefixes
        assert r["ratio"] == pytest.approx(r["prefixes_s"] / r["windows_s"], rel=0.05)
    assert [r["model"] for r in rows] == ["gru4rec", "sasrec"] and rows[1]["config"]["n_heads"] == 2
    assert "embedding_size" not in rows[1]["config"]  # a model's own key stays with that model
    assert "gru4rec" in capsys.readouterr().out


@pytest.mark.parametrize(("item", "message"), [
    ("bert.hidden_size=8", "--set bert.hidden_size=8: unknown model 'bert'"),
    ("sasrec.embedding_size=8", "--set sasrec.embedding_size=8: sasrec has no config key 'embedding_size'"),
    ("gru4rec.hidden_size=-3", "field 'hidden_size'"),
])
def test_a_bad_set_is_one_error_line_and_writes_nothing(tmp_path, capsys, item, message):
    data = write_prepared(tmp_path / "data", cyclic_sequences(6, 30), 30)
    out = tmp_path / "cost.json"
    assert objective_cost.main(["--data", str(data), "--models", "gru4rec", "sasrec", "--set", item,
                                "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists()
