"""Preprocessing rules, the written layout, the leave-one-out split through the loader, determinism, atomicity."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from glintru.cli import main
from glintru.data import prepare as prep_mod
from glintru.data.dataset import load_prepared
from glintru.errors import UserError


def _prepare(tmp_path: Path, name: str, text: str, *extra: str, out: str = "out") -> Path:
    src = tmp_path / name
    src.write_text(text)
    dest = tmp_path / out
    assert main(["prepare", "--source", str(src), "--out", str(dest), *extra]) == 0
    return dest


def _sequences(dest: Path) -> dict[str, list[str]]:
    """Original user id -> original item ids, read back through items.parquet (the vocabulary)."""
    vocab = pq.read_table(dest / "items.parquet").to_pydict()
    id_of = dict(zip(vocab["item_idx"], vocab["item_id"]))
    seq = pq.read_table(dest / "sequences.parquet").to_pydict()
    return {u: [id_of[i] for i in items] for u, items in zip(seq["user_id"], seq["items"])}


def test_layout_and_leave_one_out_through_loader(tmp_path: Path) -> None:
    dest = _prepare(tmp_path, "s.txt", "1 a b c d\n2 a b\n3 c b a\n")
    table = pq.read_table(dest / "sequences.parquet")
    assert str(table.schema.field("items").type) == "list<element: int32>"
    assert table.column("user_id").to_pylist() == ["1", "2", "3"]
    # items sorted by original id: a=1, b=2, c=3, d=4
    assert table.column("items").to_pylist() == [[1, 2, 3, 4], [1, 2], [3, 2, 1]]
    assert table.column("timestamps").to_pylist() == [None, None, None]
    data = load_prepared(dest)
    assert data.n_users == 3 and data.n_items == 4
    np.testing.assert_array_equal(data.offsets, [0, 4, 6, 9])
    users, end, target = data.eval_examples("valid")
    np.testing.assert_array_equal(users, [0, 2])  # user "2" has L = 2 < 3: training only
    np.testing.assert_array_equal(end, [4 - 2, 9 - 2])
    np.testing.assert_array_equal(target, [3, 2])  # second-to-last: c, b
    users, end, target = data.eval_examples("test")
    np.testing.assert_array_equal(end, [4 - 1, 9 - 1])
    np.testing.assert_array_equal(target, [4, 1])  # last: d, a
    np.testing.assert_array_equal(data.train_lengths(), [2, 2, 1])
    m = json.loads((dest / "manifest.json").read_text())
    assert (m["n_users"], m["n_items"], m["n_interactions"]) == (3, 4, 9)
    assert m["counts"] == {
        "n_users": 3, "n_items": 4, "n_interactions": 9, "min_length": 2, "median_length": 3.0,
        "mean_length": 3.0, "max_length": 4, "sparsity": round(1 - 9 / (3 * 4), 8),
    }
    assert m["split"]["n_valid"] == m["split"]["n_test"] == 2
    assert m["source"]["format"] == "seq-per-line" and m["source"]["path"] == str(tmp_path / "s.txt")


def test_vocabulary_round_trip_and_numeric_order(tmp_path: Path) -> None:
    text = "u10 100 9 10\nu9 9 x7\n"
    dest = _prepare(tmp_path, "s.txt", text, "--format", "seq-per-line")
    assert _sequences(dest) == {"u10": ["100", "9", "10"], "u9": ["9", "x7"]}
    vocab = pq.read_table(dest / "items.parquet").to_pydict()
    # "x7" is not an integer, so all ids sort as strings: "10" < "100" < "9" < "x7"
    assert vocab == {"item_idx": [1, 2, 3, 4], "item_id": ["10", "100", "9", "x7"]}
    dest = _prepare(tmp_path, "t.txt", "2 100 9 10\n1 9\n", "--format", "seq-per-line", out="out2")
    assert pq.read_table(dest / "items.parquet").column("item_id").to_pylist() == ["9", "10", "100"]
    assert pq.read_table(dest / "sequences.parquet").column("user_id").to_pylist() == ["1", "2"]


def test_chronological_sort_ties_keep_file_order(tmp_path: Path) -> None:
    ml = "1::30::5::5\n1::10::5::5\n1::20::5::1\n2::10::5::9\n1::40::5::5\n"
    dest = _prepare(tmp_path, "ratings.dat", ml)
    seq = pq.read_table(dest / "sequences.parquet").to_pydict()
    # user 1: 20 (t=1), then the t=5 ties in file order 30, 10, 40; items 10,20,30,40 -> 1,2,3,4
    assert seq["items"] == [[2, 3, 1, 4], [1]]
    assert seq["timestamps"] == [[1, 5, 5, 5], [9]]


def test_min_rating(tmp_path: Path) -> None:
    ml = "1::1::5::1\n1::2::3::2\n1::3::4::3\n2::2::2::1\n"
    dest = _prepare(tmp_path, "ratings.dat", ml, "--min-rating", "4")
    assert _sequences(dest) == {"1": ["1", "3"]}
    m = json.loads((dest / "manifest.json").read_text())
    assert (m["n_users"], m["n_items"], m["n_interactions"]) == (1, 2, 2)
    assert m["options"]["min_rating"] == 4.0


def test_dedup_keeps_first_occurrence(tmp_path: Path) -> None:
    dest = _prepare(tmp_path, "s.txt", "u a b a c b\nv a a\n", "--dedup", "--format", "seq-per-line")
    assert _sequences(dest) == {"u": ["a", "b", "c"], "v": ["a"]}
    dest = _prepare(tmp_path, "s2.txt", "u a b a c b\nv a a\n", "--format", "seq-per-line", out="o2")
    assert _sequences(dest) == {"u": ["a", "b", "a", "c", "b"], "v": ["a", "a"]}


def test_k_core_iterates_to_fixed_point(tmp_path: Path) -> None:
    # pass 1 (2-core): item c has 1 user -> dropped; then user w has only [a] -> dropped in pass 2;
    # then item a has 2 users (u, v) -> stays. A single pass would keep w's "a" (w had 2 items).
    text = "u a b\nv a b\nw c a\n"
    dest = _prepare(tmp_path, "s.txt", text, "--user-core", "2", "--item-core", "2", "--format", "seq-per-line")
    assert _sequences(dest) == {"u": ["a", "b"], "v": ["a", "b"]}
    # chain of three passes: z's only other item e is rare; dropping z makes d rare; dropping d's users...
    text = "u a b\nv a b\nw a d\nx d e\nz e\n"
    core = ["--user-core", "2", "--item-core", "2", "--format", "seq-per-line"]
    dest = _prepare(tmp_path, "t.txt", text, *core, out="o2")
    # pass 1: z (1 item) goes; pass 2: e has 1 user -> x has [d] -> x goes; pass 3: d has 1 user -> w has [a] -> w goes
    assert _sequences(dest) == {"u": ["a", "b"], "v": ["a", "b"]}


def test_manifest_is_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "ratings.dat"
    src.write_text("1::1::5::1\n1::2::3::2\n2::1::4::3\n")
    outs = []
    for name in ("a", "b"):
        assert main(["prepare", "--source", str(src), "--out", str(tmp_path / name), "--dedup"]) == 0
        outs.append((tmp_path / name / "manifest.json").read_bytes())
    assert outs[0] == outs[1]
    assert json.loads(outs[0])["source"]["sha256"] == prep_mod.sha256_file(src)


def test_refuses_non_empty_output_unless_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dest = _prepare(tmp_path, "s.txt", "1 a b c\n")
    src = tmp_path / "s2.txt"
    src.write_text("1 x y z w\n")
    assert main(["prepare", "--source", str(src), "--out", str(dest)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads((dest / "manifest.json").read_text())["n_items"] == 3
    assert main(["prepare", "--source", str(src), "--out", str(dest), "--overwrite"]) == 0
    assert json.loads((dest / "manifest.json").read_text())["n_items"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.txt", "s2.txt"]  # no temp dirs left


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), RuntimeError("bug")])
def test_atomic_on_write_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    src = tmp_path / "s.txt"
    src.write_text("1 a b c\n")
    real = pq.write_table
    calls = []

    def failing(table, where, *a, **k):  # first file written, second fails
        calls.append(where)
        if len(calls) == 2:
            raise exc
        return real(table, where, *a, **k)

    monkeypatch.setattr(pq, "write_table", failing)
    with pytest.raises(UserError if isinstance(exc, OSError) else RuntimeError):
        prep_mod.prepare(src, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.txt"]


def test_overwrite_failure_keeps_old_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = _prepare(tmp_path, "s.txt", "1 a b c\n")
    before = (dest / "manifest.json").read_bytes()
    monkeypatch.setattr(pq, "write_table", lambda *a, **k: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(UserError, match="cannot write"):
        prep_mod.prepare(tmp_path / "s.txt", dest, overwrite=True)
    assert (dest / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.txt"]


def test_an_interrupt_while_overwriting_keeps_the_old_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl+C (or SIGTERM, handled alike) between moving the old dataset aside and renaming the new
    one into place: the old dataset is put back, nothing temporary is left."""
    from glintru.errors import Terminated

    dest = _prepare(tmp_path, "s.txt", "1 a b c\n")
    before = (dest / "manifest.json").read_bytes()
    real_replace = prep_mod.os.replace

    def interrupted(src, dst):
        if Path(dst) == dest and ".tmp-" in Path(src).name:  # the new dataset's rename: the old one is aside
            raise Terminated()
        return real_replace(src, dst)

    monkeypatch.setattr(prep_mod.os, "replace", interrupted)
    with pytest.raises(Terminated):
        prep_mod.prepare(tmp_path / "s.txt", dest, overwrite=True)
    assert (dest / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.txt"]


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_outputs_written_atomically_have_the_modes_the_umask_gives(tmp_path: Path, mask: int) -> None:
    """The temporary sibling renamed into place must not leave the output private (tempfile's 0o700
    directories and 0o600 files): a worker running as another user, as in a container, reads it."""
    from glintru.storage import atomic_write_text

    old = os.umask(mask)
    try:
        dest = _prepare(tmp_path, "s.txt", "1 a b c\n")
        _prepare(tmp_path, "s.txt", "1 a b c d\n", "--overwrite")  # the old dataset set aside, then replaced
        atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o777 & ~mask
    files = [*dest.iterdir(), tmp_path / "r.json"]
    assert sorted(p.name for p in files) == ["items.parquet", "manifest.json", "r.json", "sequences.parquet"]
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o666 & ~mask for p in files}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r.json", "s.txt"]  # nothing temporary left


def test_a_dataset_no_user_can_be_tested_on_is_written_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dest = _prepare(tmp_path, "s.txt", "1 a b\n2 a\n3 b c\n", "--format", "seq-per-line")
    out, err = capsys.readouterr()
    assert out.startswith(f"{dest}: 3 users, 3 items, 5 interactions")
    assert err.strip() == (f"warning: {dest}: no user has the 3 interactions a leave-one-out split needs (at most 2 each): "
                           "train and tune will refuse it; check the source and --format")
    _prepare(tmp_path, "t.txt", "1 a b c\n", out="o2")
    assert capsys.readouterr().err == ""  # one testable user: no warning


@pytest.mark.parametrize("sep", ["tab", "\\t"])
def test_a_tab_separated_log_with_a_header(tmp_path: Path, capsys: pytest.CaptureFixture, sep: str) -> None:
    text = "user_id\titem_id\ttimestamp\n1\t8\t3\n1\t9\t1\n1\t7\t2\n2\t8\t5\n"
    dest = _prepare(tmp_path, "log.tsv", text)  # auto: the header names the columns
    assert _sequences(dest) == {"1": ["9", "7", "8"], "2": ["8"]}  # by timestamp
    m = json.loads((dest / "manifest.json").read_text())
    assert m["source"]["format"] == "csv"
    assert {k: m["options"][k] for k in ("user_col", "item_col", "time_col", "sep")} == {
        "user_col": "user_id", "item_col": "item_id", "time_col": "timestamp", "sep": "\t"}
    out = capsys.readouterr().out
    assert "columns read: user=user_id, item=item_id, timestamp=timestamp (taken from the header's names" in out
    explicit = _prepare(tmp_path, "log2.tsv", text, "--format", "csv", "--sep", sep, "--user-col", "user_id",
                        "--item-col", "item_id", "--time-col", "timestamp", out="out2")
    assert _sequences(explicit) == _sequences(dest)
    assert "columns read: user=user_id, item=item_id, timestamp=timestamp\n" in capsys.readouterr().out


def test_gzipped_amazon_reviews_json_prepare_like_the_csv(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`prepare --source reviews_Beauty_5.json.gz` (McAuley's distribution) needs no option: the
    format, compression and keys are found, --min-rating filters on 'overall', and the dataset
    equals the one prepared from the same reviews as a CSV."""
    import gzip

    reviews = [("A1", "B3", 5, 30), ("A1", "B1", 4, 10), ("A1", "B2", 1, 20), ("A2", "B1", 5, 5), ("A2", "B3", 3, 6)]
    lines = "".join(json.dumps({"reviewerID": u, "asin": i, "overall": float(r), "unixReviewTime": t,
                                "reviewText": "a, b", "helpful": [0, 1]}) + "\n" for u, i, r, t in reviews)
    src = tmp_path / "reviews_Beauty_5.json.gz"
    src.write_bytes(gzip.compress(lines.encode()))
    dest = tmp_path / "out"
    assert main(["prepare", "--source", str(src), "--out", str(dest), "--min-rating", "3"]) == 0
    out = capsys.readouterr().out
    assert "(format json," in out
    assert "columns read: user=reviewerID, item=asin, timestamp=unixReviewTime, rating=overall (taken from the keys" in out
    assert _sequences(dest) == {"A1": ["B1", "B3"], "A2": ["B1", "B3"]}  # by time, the 1-star review filtered out
    csv = "reviewerID,asin,overall,unixReviewTime\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in reviews)
    same = _prepare(tmp_path, "reviews.csv", csv, "--min-rating", "3", out="out_csv")
    assert (same / "sequences.parquet").read_bytes() == (dest / "sequences.parquet").read_bytes()
