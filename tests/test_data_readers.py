"""Each reader on a tiny fixture written in its exact format, plus format auto-detection."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from glintru.data.readers import ReadOptions, detect_format, read_interactions
from glintru.errors import UserError

ML = "1::1193::5::978300760\n1::661::3::978302109\n2::1357::4::978298709\n"


def _cols(inter) -> tuple[list[str], list[str]]:
    return inter.user.to_pylist(), inter.item.to_pylist()


def test_movielens_ratings_dat(tmp_path: Path) -> None:
    p = tmp_path / "ratings.dat"
    p.write_text(ML)
    inter = read_interactions(p, "movielens")
    assert _cols(inter) == (["1", "1", "2"], ["1193", "661", "1357"])
    np.testing.assert_array_equal(inter.timestamp, [978300760, 978302109, 978298709])
    np.testing.assert_array_equal(inter.rating, [5.0, 3.0, 4.0])
    assert inter.timestamp.dtype == np.int64


def test_movielens_inside_zip(tmp_path: Path) -> None:
    p = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("ml-1m/movies.dat", "1::Toy Story (1995)::Animation\n")
        zf.writestr("ml-1m/ratings.dat", ML)
    inter = read_interactions(p)  # auto: a zip is MovieLens
    assert inter.fmt == "movielens" and inter.member == "ml-1m/ratings.dat"
    assert _cols(inter) == (["1", "1", "2"], ["1193", "661", "1357"])


@pytest.mark.parametrize("zip_name, member, text", [
    ("ml-100k.zip", "ml-100k/u.data", "1\t1193\t5\t978300760\n1\t661\t3\t978302109\n2\t1357\t4\t978298709\n"),
    ("ml-20m.zip", "ml-20m/ratings.csv",
     "userId,movieId,rating,timestamp\n1,1193,5.0,978300760\n1,661,3.0,978302109\n2,1357,4.0,978298709\n"),
])
def test_other_movielens_zips_read_like_ml_1m(tmp_path: Path, zip_name: str, member: str, text: str) -> None:
    """MovieLens 100K (tab-separated u.data) and 20M/25M/32M (ratings.csv with a header) zips read as
    the same interactions as ML-1M's ratings.dat holding the same ratings."""
    p = tmp_path / zip_name
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr(member.split("/")[0] + "/movies.csv", "movieId,title\n1,Toy Story\n")
        zf.writestr(member, text)
    (tmp_path / "ratings.dat").write_text(ML)
    inter, ref = read_interactions(p), read_interactions(tmp_path / "ratings.dat")
    assert inter.fmt == "movielens" and inter.member == member
    assert _cols(inter) == _cols(ref)
    np.testing.assert_array_equal(inter.timestamp, ref.timestamp)
    np.testing.assert_array_equal(inter.rating, ref.rating)


def test_amazon_csv(tmp_path: Path) -> None:
    p = tmp_path / "ratings_Beauty.csv"
    p.write_text("A39HTATAQ9V7YF,0205616461,5.0,1369699200\nA3JM6GV9MNOF9X,0558925278,3.0,1355443200\n")
    inter = read_interactions(p)
    assert inter.fmt == "amazon-csv"
    assert _cols(inter) == (["A39HTATAQ9V7YF", "A3JM6GV9MNOF9X"], ["0205616461", "0558925278"])
    np.testing.assert_array_equal(inter.rating, [5.0, 3.0])
    np.testing.assert_array_equal(inter.timestamp, [1369699200, 1355443200])


def test_recbole_inter(tmp_path: Path) -> None:
    p = tmp_path / "ml.inter"
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    p.write_text(header + "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    inter = read_interactions(p)
    assert inter.fmt == "recbole"
    assert _cols(inter) == (["196", "186"], ["242", "302"])
    np.testing.assert_array_equal(inter.timestamp, [881250949, 891717742])
    assert inter.timestamp.dtype == np.int64  # whole-number float timestamps become int64
    np.testing.assert_array_equal(inter.rating, [3.0, 3.0])


def test_recbole_without_timestamp_keeps_file_order(tmp_path: Path) -> None:
    p = tmp_path / "x.inter"
    p.write_text("user_id:token\titem_id:token\n7\tb\n7\ta\n")
    inter = read_interactions(p)
    assert inter.timestamp is None and inter.rating is None
    assert _cols(inter) == (["7", "7"], ["b", "a"])


def test_seq_per_line(tmp_path: Path) -> None:
    p = tmp_path / "Beauty.txt"
    p.write_text("1 1 2 3\n2 4   1\n\n3 5\n")
    inter = read_interactions(p)
    assert inter.fmt == "seq-per-line" and inter.timestamp is None
    assert _cols(inter) == (["1", "1", "1", "2", "2", "3"], ["1", "2", "3", "4", "1", "5"])


def test_pair_per_line(tmp_path: Path) -> None:
    p = tmp_path / "pairs.txt"
    p.write_text("u1 i3\nu1 i1\nu2 i2\n")
    inter = read_interactions(p)
    assert inter.fmt == "pair-per-line"
    assert _cols(inter) == (["u1", "u1", "u2"], ["i3", "i1", "i2"])


def test_generic_csv_with_named_columns(tmp_path: Path) -> None:
    p = tmp_path / "log.csv"
    p.write_text("ts;uid;iid;extra\n30;a;x;q\n10;a;y;q\n20;b;x;q\n")
    inter = read_interactions(p, "csv", ReadOptions(user_col="uid", item_col="iid", time_col="ts", sep=";"))
    assert _cols(inter) == (["a", "a", "b"], ["x", "y", "x"])
    np.testing.assert_array_equal(inter.timestamp, [30, 10, 20])
    assert inter.rating is None


def test_generic_parquet(tmp_path: Path) -> None:
    p = tmp_path / "log.parquet"
    pq.write_table(pa.table({"u": [3, 3, 4], "i": [10, 11, 10], "t": [1.5, 0.5, 2.0]}), p)
    inter = read_interactions(p, opts=ReadOptions(user_col="u", item_col="i", time_col="t"))
    assert inter.fmt == "parquet"
    assert _cols(inter) == (["3", "3", "4"], ["10", "11", "10"])  # integer ids become strings
    np.testing.assert_array_equal(inter.timestamp, [1.5, 0.5, 2.0])


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("r.dat", "1::2::3::4\n", "movielens"),
        ("r.txt", "1::2::3::4\n", "movielens"),
        ("r.inter", "user_id:token\titem_id:token\n1\t2\n", "recbole"),
        ("r.tsv", "user_id:token\titem_id:token\n1\t2\n", "recbole"),
        ("r.csv", "a,b,5.0,123\n", "amazon-csv"),
        ("s.txt", "1 2 3\n2 4\n", "seq-per-line"),
        ("s.txt", "1 2 3\n2\n3 4\n", "seq-per-line"),  # a user without items among users with some
        ("p.txt", "1 2\n1 3\n2 4\n", "pair-per-line"),
        ("l.csv", "user,item,time\na,b,1\n", "csv"),  # a header naming the columns (COLUMN_NAMES)
        ("l.tsv", "userId\tmovieId\trating\ttimestamp\n1\t2\t5\t9\n", "csv"),
        ("l.txt", "user_id;item_id\na;b\n", "csv"),
    ],
)
def test_auto_detection(tmp_path: Path, name: str, text: str, expected: str) -> None:
    p = tmp_path / name
    p.write_text(text)
    assert detect_format(p) == expected


# the last: a text file with spaces here and there (/etc/passwd's shape) is not a sequence file
@pytest.mark.parametrize("text", ["1 2\n2 3\n", "who,what,when\na,b,1\n",
                                  "user,item,time,timestamp\na,b,1,2\n",  # two time columns: ambiguous
                                  "root:x:0:0\nbin:x:2:2\ngnats:x:41:41:Gnats Bug-Reporting System (admin):/var\n"])
def test_auto_detection_asks_when_ambiguous(tmp_path: Path, text: str) -> None:
    p = tmp_path / "x.txt"
    p.write_text(text)
    with pytest.raises(UserError, match="--format"):
        detect_format(p)


ENCODINGS = {  # text with a byte order mark first, as exporters write it
    "utf-8-bom": lambda t: b"\xef\xbb\xbf" + t.encode(),  # Excel's "CSV UTF-8"
    "utf-16-le": lambda t: b"\xff\xfe" + t.encode("utf-16-le"),  # Excel's "Unicode Text"
    "utf-16-be": lambda t: b"\xfe\xff" + t.encode("utf-16-be"),
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("compress", [None, "gzip"])
@pytest.mark.parametrize("text, fmt", [
    ("user_id,item_id,timestamp\r\nu1,i2,2\r\nu1,i1,1\r\nu2,i1,5\r\n", "csv"),
    ("u1 i1 i2\nu2 i1\n", "seq-per-line"),
    ('{"user_id": "u1", "item_id": "i2", "timestamp": 2}\n{"user_id": "u1", "item_id": "i1", "timestamp": 1}\n'
     '{"user_id": "u2", "item_id": "i1", "timestamp": 5}\n', "json"),
])
def test_a_byte_order_mark_is_not_part_of_the_first_name_or_id(tmp_path: Path, text: str, fmt: str, compress,
                                                                encoding: str) -> None:
    """A byte order mark first (UTF-8, or UTF-16 text, which is converted) must neither hide a
    header's first column nor become part of the first user's id, compressed or not."""
    import gzip

    data = ENCODINGS[encoding](text)
    p = tmp_path / ("log.txt.gz" if compress else "log.txt")
    p.write_bytes(gzip.compress(data) if compress else data)
    inter = read_interactions(p)
    assert inter.fmt == fmt
    users, items = _cols(inter)
    assert users[0] == "u1" and set(users) == {"u1", "u2"} and set(items) == {"i1", "i2"}


def test_text_that_is_not_utf16_after_its_utf16_mark_is_one_error_naming_the_file(tmp_path: Path) -> None:
    p = tmp_path / "log.csv"
    p.write_bytes(b"\xff\xfe" + "user_id,item_id\nu1,i1\n".encode("utf-16-le") + b"\x00")  # an odd byte last
    with pytest.raises(UserError, match=rf"^{re.escape(str(p))}: not valid UTF-16 text \(truncated data at byte"):
        read_interactions(p)


def test_a_byte_order_mark_in_a_movielens_zip_member(tmp_path: Path) -> None:
    p = tmp_path / "ml.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("ml/ratings.csv", b"\xef\xbb\xbfuserId,movieId,rating,timestamp\n1,7,5,2\n1,8,4,1\n2,7,3,5\n")
    assert _cols(read_interactions(p)) == (["1", "1", "2"], ["7", "8", "7"])


def test_auto_reads_a_header_it_recognises_with_its_delimiter(tmp_path: Path) -> None:
    # a tab-separated log with a header used to be taken for one sequence per line (the header a user)
    p = tmp_path / "log.tsv"
    p.write_text("User ID\tasin\tstars\tunixReviewTime\n7\tB2\t4\t20\n7\tB1\t5\t10\n8\tB1\t3\t30\n")
    inter = read_interactions(p)
    assert (inter.fmt, inter.sep) == ("csv", "\t")
    assert inter.columns == {"user": "User ID", "item": "asin", "timestamp": "unixReviewTime", "rating": "stars"}
    assert _cols(inter) == (["7", "7", "8"], ["B2", "B1", "B1"])
    np.testing.assert_array_equal(inter.timestamp, [20, 10, 30])
    np.testing.assert_array_equal(inter.rating, [4.0, 5.0, 3.0])


def test_given_user_and_item_columns_take_no_other_column_from_the_header(tmp_path: Path) -> None:
    p = tmp_path / "log.csv"
    p.write_text("uid,item_id,timestamp,order\na,x,2,5\na,y,1,6\n")
    inter = read_interactions(p, "csv", ReadOptions(user_col="uid", item_col="item_id"))
    assert inter.columns == {"user": "uid", "item": "item_id"} and inter.timestamp is None  # as before
    inter = read_interactions(p, "csv")  # no column options: all three from the header's names
    assert inter.columns == {"user": "uid", "item": "item_id", "timestamp": "timestamp"}
    np.testing.assert_array_equal(inter.timestamp, [2, 1])
    inter = read_interactions(p, "csv", ReadOptions(time_col="order"))  # a given --time-col wins over the name
    assert inter.columns["timestamp"] == "order"
    np.testing.assert_array_equal(inter.timestamp, [5, 6])


def test_parquet_columns_from_their_names(tmp_path: Path) -> None:
    p = tmp_path / "log.parquet"
    pq.write_table(pa.table({"session_id": [3, 3], "item_id": [10, 11], "ts": [1.5, 0.5], "x": [0, 0]}), p)
    inter = read_interactions(p)
    assert inter.columns == {"user": "session_id", "item": "item_id", "timestamp": "ts"} and inter.sep is None
    np.testing.assert_array_equal(inter.timestamp, [1.5, 0.5])


def test_an_unrecognised_header_over_numbers_is_not_read_as_data(tmp_path: Path) -> None:
    p = tmp_path / "log.txt"
    p.write_text("a\tb\tc\n1\t2\t3\n1\t3\t4\n")  # seq-per-line's shape, but line 1 names columns
    with pytest.raises(UserError, match=r"log.txt:1: looks like a header \(a, b, c\).*--format csv"):
        read_interactions(p)
    p.write_text("a b\n1 2\n1 3\n")  # pair-per-line's shape
    with pytest.raises(UserError, match="looks like a header"):
        read_interactions(p)
    p.write_text("u1 i1 i2\nu2 i3 i4\n")  # string ids throughout: still one sequence per line
    assert read_interactions(p).fmt == "seq-per-line"
    p.write_text("1,2,3\n1,3,4\n")  # numbers on line 1: a CSV without a header, said as such
    with pytest.raises(UserError, match="log.txt:1: a CSV file without a header row"):
        read_interactions(p)


AMAZON_REVIEWS = [  # McAuley's reviews_*_5.json shape: ids, a rating, a time and keys to ignore
    {"reviewerID": "A1", "asin": "B07", "overall": 5.0, "unixReviewTime": 1369699200, "helpful": [1, 2],
     "reviewText": 'fine, "really"', "summary": "ok"},
    {"reviewerID": "A2", "asin": "B08", "overall": 2.0, "unixReviewTime": 1355443200, "helpful": [0, 0],
     "reviewText": "no", "summary": "meh", "style": {"Size:": " 8oz"}},
    {"reviewerID": "A1", "asin": "B09", "overall": 4.0, "unixReviewTime": 1369699300, "helpful": [0, 0],
     "reviewText": "", "summary": ""},
]


@pytest.mark.parametrize("compression", [None, "gzip", "bz2", "lzma"])
def test_json_lines_of_amazon_reviews_equal_the_same_csv_whatever_the_compression(tmp_path: Path, compression) -> None:
    import importlib
    import json

    text = "\n".join(json.dumps(r) for r in AMAZON_REVIEWS) + "\n"
    csv = "reviewerID,asin,overall,unixReviewTime\n" + "".join(
        f"{r['reviewerID']},{r['asin']},{r['overall']},{r['unixReviewTime']}\n" for r in AMAZON_REVIEWS)
    files = {}
    for name, body in (("reviews.json", text), ("reviews.csv", csv)):
        p = tmp_path / (name + (f".{compression}" if compression else ""))
        data = body.encode()
        p.write_bytes(importlib.import_module(compression).compress(data) if compression else data)
        files[name] = p
    assert detect_format(files["reviews.json"]) == "json" and detect_format(files["reviews.csv"]) == "csv"
    js, cs = read_interactions(files["reviews.json"]), read_interactions(files["reviews.csv"])
    assert js.fmt == "json" and js.columns == cs.columns == {
        "user": "reviewerID", "item": "asin", "timestamp": "unixReviewTime", "rating": "overall"}
    assert _cols(js) == _cols(cs) == (["A1", "A2", "A1"], ["B07", "B08", "B09"])
    np.testing.assert_array_equal(js.timestamp, cs.timestamp)
    assert js.timestamp.dtype == np.int64
    np.testing.assert_array_equal(js.rating, [5.0, 2.0, 4.0])


def test_json_lines_with_numeric_ids_or_chosen_keys(tmp_path: Path) -> None:
    """Ids of mixed JSON types (pyarrow refuses them) are read line by line as strings; --user-col
    and --item-col pick keys the names would not."""
    p = tmp_path / "events.jsonl"
    p.write_text('{"user_id": 7, "item_id": "x", "ts": 3}\n\n{"user_id": "8", "item_id": 12, "ts": 1.5}\n')
    inter = read_interactions(p)
    assert _cols(inter) == (["7", "8"], ["x", "12"])
    np.testing.assert_array_equal(inter.timestamp, [3.0, 1.5])
    p.write_text('{"who": "a", "what": "b", "when": 2}\n')
    inter = read_interactions(p, "json", ReadOptions(user_col="who", item_col="what", time_col="when"))
    assert _cols(inter) == (["a"], ["b"]) and inter.timestamp.tolist() == [2]


@pytest.mark.parametrize("text, message", [
    ('{"user_id": "a", "item_id": "5"}\nnot json\n', "x.json:2: not valid JSON"),
    ('{"user_id": "a", "item_id": "5"}\n{"user_id": "a"}\n', "x.json:2: field 'item_id': missing value"),
    ('{"user_id": "a", "item_id": "5"}\n\n{"user_id": "a", "item_id": ["b"]}\n', "x.json:3: field 'item_id': expected a string or number id"),
    ('{"user_id": "a", "item_id": "5", "timestamp": "noon"}\n', "x.json:1: field 'timestamp': expected a number, got 'noon'"),
    ('{"user_id": "a", "item_id": "5"}\n[1, 2]\n', "x.json:2: expected a JSON object, got list"),
    ('{"user_id": "a", "item_id": ""}\n', "x.json:1: field 'item_id': empty id"),
    ('{"foo": "a", "bar": "5"}\n', "the first object's keys (foo, bar) has no single column named like a user id"),
])
def test_each_bad_json_line_is_one_error_naming_it(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "x.json"
    p.write_text(text)
    with pytest.raises(UserError, match=None) as err:
        read_interactions(p)
    assert message in str(err.value)


@pytest.mark.parametrize("module, name", [("gzip", "gzip"), ("bz2", "bzip2"), ("lzma", "xz")])
def test_a_truncated_compressed_file_is_one_error(tmp_path: Path, module: str, name: str) -> None:
    import importlib

    codec = importlib.import_module(module)
    p = tmp_path / "log.csv.z"
    rows = "".join(f"u{i},item{i * 7919 % 10007}\n" for i in range(5000))
    whole = codec.compress(f"user_id,item_id\n{rows}".encode())
    for cut in (whole[: len(whole) // 2], whole[:6]):  # half of it, or its magic bytes alone
        p.write_bytes(cut)
        with pytest.raises(UserError, match=rf"log.csv.z: cannot decompress \({name}: "):
            read_interactions(p)
