"""Property-based: any input gives either a valid prepared dataset or a UserError, never another
exception and never a partial output directory."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from glintru.data.dataset import load_prepared
from glintru.data.prepare import FilterOptions, prepare
from glintru.data.readers import ReadOptions
from glintru.errors import UserError

SEPS: dict[str, str] = {
    "movielens": "::", "amazon-csv": ",", "recbole": "\t", "seq-per-line": " ", "pair-per-line": " ", "csv": ","
}
HEADERS = {"recbole": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n", "csv": "u,i,t\n"}

small = st.integers(0, 30).map(str)  # small ids, so users and items repeat
huge = st.integers(-(10**20), 10**20).map(str)
word = st.text(alphabet="abcé€中😀_-0", min_size=1, max_size=4)  # unicode ids
weird = st.text(alphabet="a ,:\t;\r", min_size=0, max_size=3)  # separators, empty
clean_ids = st.one_of(small, small, huge, word)
ids = st.one_of(small, small, small, huge, word, word, weird)
ints = st.integers(0, 2**40).map(str)
clean_numbers = st.one_of(small, ints)
numbers = st.one_of(small, ints, huge, st.floats(allow_nan=False).map(str), weird)


def row_fields(fmt: str, clean: bool) -> list[st.SearchStrategy[str]]:
    """The fields of one well-formed row of ``fmt``; ``clean=False`` lets ids and numbers go wrong."""
    i, n = (clean_ids, clean_numbers) if clean else (ids, numbers)
    return {"movielens": [i, i, n, n], "amazon-csv": [i, i, n, n], "recbole": [i, i, n, n], "csv": [i, i, n]}.get(
        fmt, [i, i]
    )


@st.composite
def rows(draw: st.DrawFn, fmt: str, clean: bool) -> list[str]:
    if fmt == "seq-per-line":
        return draw(st.lists(clean_ids if clean else ids, min_size=0, max_size=6))
    if clean or draw(st.integers(0, 9)) > 0:
        return [draw(f) for f in row_fields(fmt, clean)]
    return draw(st.lists(ids, min_size=0, max_size=6))  # a malformed row


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, bytes]:
    fmt = draw(st.sampled_from(["auto", "parquet", *SEPS]))
    if draw(st.integers(0, 4)) == 0 or fmt == "parquet":
        return fmt, draw(st.binary(max_size=200))  # random bytes
    row_fmt = fmt if fmt != "auto" else draw(st.sampled_from(list(SEPS)))
    sep = SEPS[row_fmt] if draw(st.integers(0, 4)) else draw(st.sampled_from([",", "\t", " ", ";", "::"]))
    clean = draw(st.integers(0, 2)) > 0
    lines = draw(st.lists(rows(row_fmt, clean), min_size=0, max_size=8))
    text = HEADERS.get(row_fmt, "") + "\n".join(sep.join(f) for f in lines)
    if draw(st.integers(0, 4)) == 0:
        text = text[: draw(st.integers(0, len(text)))]  # truncated
    return fmt, text.encode("utf-8")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents(), dedup=st.booleans(), core=st.integers(0, 2))
def test_any_input_gives_dataset_or_user_error(doc: tuple[str, bytes], dedup: bool, core: int) -> None:
    fmt, data = doc
    root = Path(tempfile.mkdtemp(prefix="glintru-prop-"))
    try:
        src = root / "input.txt"
        src.write_bytes(data)
        out = root / "out"
        opts = ReadOptions(user_col="u", item_col="i", time_col="t") if fmt in ("csv", "parquet") else ReadOptions()
        try:
            filters = FilterOptions(dedup=dedup, user_core=core, item_core=core)
            m = prepare(src, out, fmt=fmt, read_opts=opts, filters=filters)
        except UserError as exc:
            event(f"{fmt}: UserError")
            assert str(exc)
            assert sorted(p.name for p in root.iterdir()) == ["input.txt"]
            return
        event(f"{fmt}: dataset")
        assert sorted(p.name for p in root.iterdir()) == ["input.txt", "out"]
        ds = load_prepared(out)
        assert ds.n_users == m["n_users"] >= 1 and len(ds.items) == m["n_interactions"] >= 1
        assert np.all(ds.lengths >= 1)
        assert set(np.unique(ds.items)) == set(range(1, m["n_items"] + 1))
        vocab = pq.read_table(out / "items.parquet").column("item_id").to_pylist()
        assert len(vocab) == len(set(vocab)) == m["n_items"]
    finally:
        shutil.rmtree(root)


def test_list_column_arrays_of_a_sliced_chunked_column_are_its_rows():
    import pyarrow as pa

    from glintru.data.dataset import list_column_arrays

    rows = [[1, 2], [3], [4, 5, 6], [7]]
    chunked = pa.chunked_array([pa.array(rows[:2], pa.list_(pa.int32())), pa.array(rows[2:], pa.list_(pa.int32()))])
    for column, want in ((chunked, rows), (chunked.slice(1, 2), rows[1:3]), (pa.array(rows).slice(2), rows[2:])):
        offsets, values = list_column_arrays(column)
        assert offsets[0] == 0 and len(values) == offsets[-1]
        assert [values[offsets[r]:offsets[r + 1]].tolist() for r in range(len(want))] == want
