"""benchmarks/target_weights.py and window_context.py: hand-counted target weights and contexts on a
tiny prepared dataset, and one error line for each bad option."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from engine_fixtures import write_prepared

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import target_weights
import window_context


def tiny(tmp_path: Path) -> Path:
    # training sequences drop the last two items: user 0 trains on 4 items (3 targets), user 1 on 2 (1)
    return write_prepared(tmp_path / "data", [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10]], 10)


def test_batch_weights_by_hand(tmp_path):
    """One window per user, one window a step: each step weighs 1/2, so user 0's three targets get
    1/6 each and user 1's one target 1/2; Kish's effective share (sum w)^2 / (N sum w^2) = 0.75."""
    r = target_weights.weight_shares(str(tiny(tmp_path)), 8, 0, batch_size=1, seed=1, epochs=2)
    assert (r["targets"], r["windows"], r["steps"]) == (4, 2, 2)
    assert r["effective_share_batch"] == pytest.approx(1 / (4 * (3 / 36 + 1 / 4)))
    assert r["max_over_min_weight"] == pytest.approx(3.0)
    # user 0 (3 targets) is the longest quarter: 3 of 4 targets, half the batch weight
    assert r["groups"]["users with the longest quarter of histories"] == pytest.approx(
        {"targets": 0.75, "batch_weight": 0.5})
    # max_len // 4 = 2: targets at sequence index 1 and 2 (user 0's first two, user 1's only one)
    assert r["groups"]["first 2 of each history"] == pytest.approx({"targets": 0.75, "batch_weight": 2 / 6 + 1 / 2})


def test_one_batch_weighs_every_target_the_same(tmp_path):
    r = target_weights.weight_shares(str(tiny(tmp_path)), 8, 0, batch_size=128, seed=1, epochs=1)
    assert r["steps"] == 1 and r["effective_share_batch"] == pytest.approx(1.0)
    for g in r["groups"].values():
        assert g["batch_weight"] == pytest.approx(g["targets"])


def test_window_context_by_hand(tmp_path):
    """Windows of 2 over user 0's targets s[1..3]: the first window holds s[1] (context 1 = full),
    the last s[2], s[3] with contexts 1 and 2 where the evaluation would give 2 and 2: one cut
    target of four, one item short; an overlap of 1 re-reads s[1] and cuts none."""
    data = str(tiny(tmp_path))
    r = window_context.context_loss(data, 2, 0)
    assert (r["targets"], r["windows"]) == (4, 3)
    assert r["share_cut"] == pytest.approx(1 / 4) and r["mean_items_cut"] == pytest.approx(1 / 4)
    r = window_context.context_loss(data, 2, 1)
    assert r["share_cut"] == 0 and r["input_positions"] == 5


def test_cli_writes_json_and_rejects_bad_options(tmp_path, capsys):
    data = tiny(tmp_path)
    out = tmp_path / "w.json"
    assert target_weights.main(["--data", f"{data}:8", "--batch-size", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["dataset"] == "data" and rows[0]["effective_share_batch"] == pytest.approx(0.75)
    assert "effective share" in capsys.readouterr().out
    for bad, needle in ((["--data", str(data)], "expected PREPARED_DIR:MAX_LEN"),
                        (["--data", f"{data}:8", "--overlap-shares", "1"], "must be in [0, 1)"),
                        (["--data", f"{data}:8", "--epochs", "0"], "--epochs 0: must be a positive count")):
        with pytest.raises(SystemExit) as e:
            target_weights.main(bad + ["--out", str(tmp_path / "bad.json")])
        assert e.value.code == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists()
