"""Bad input: one clear UserError naming file and line/field, exit code 2, no output directory left."""

from __future__ import annotations

from pathlib import Path

import pytest

from glintru.cli import main


def _fails(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], *expected: str) -> str:
    out = tmp_path / "out"
    assert main(["prepare", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line, no traceback
    for text in expected:
        assert text in err, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp dirs
    return err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _fails(tmp_path, capsys, ["--source", str(tmp_path / "nope.dat")], "nope.dat", "not found")


@pytest.mark.parametrize("fmt", ["auto", "movielens", "amazon-csv", "seq-per-line", "pair-per-line", "recbole"])
def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture, fmt: str) -> None:
    src = tmp_path / "empty.txt"
    src.write_text("\n  \n")
    _fails(tmp_path, capsys, ["--source", str(src), "--format", fmt], "empty.txt", "empty")


@pytest.mark.parametrize(
    "fmt, text, where",
    [
        ("movielens", "1::2::5::100\n1::3::5\n", "r.txt:2: expected 4 fields"),
        ("amazon-csv", "a,b,5.0,1\na,c,5.0,2,9\n", "r.txt:2: expected 4 fields"),
        ("pair-per-line", "u a\nu b c\n", "r.txt:2: expected 2 fields"),
        ("recbole", "user_id:token\titem_id:token\nu\ta\nu\n", "r.txt:3: expected 2 fields"),
    ],
)
def test_wrong_column_count(tmp_path: Path, capsys: pytest.CaptureFixture, fmt: str, text: str, where: str) -> None:
    src = tmp_path / "r.txt"
    src.write_text(text)
    _fails(tmp_path, capsys, ["--source", str(src), "--format", fmt], where)


@pytest.mark.parametrize(
    "fmt, text, where",
    [
        ("movielens", "1::2::5::100\n1::3::5::100\n1::4::five::100\n", "r.txt:3: field 'rating'"),
        ("amazon-csv", "a,b,5.0,1\na,c,5.0,yesterday\n", "r.txt:2: field 'timestamp'"),
        ("recbole", "user_id:token\titem_id:token\ttimestamp:float\nu\ta\tx1\n", "r.txt:2: field 'timestamp'"),
    ],
)
def test_non_numeric_value(tmp_path: Path, capsys: pytest.CaptureFixture, fmt: str, text: str, where: str) -> None:
    src = tmp_path / "r.txt"
    src.write_text(text)
    _fails(tmp_path, capsys, ["--source", str(src), "--format", fmt], where, "expected")


def test_non_numeric_in_generic_csv(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "log.csv"
    src.write_text("u,i,t\na,b,1\na,c,soon\n")
    args = ["--source", str(src), "--format", "csv", "--user-col", "u", "--item-col", "i", "--time-col", "t"]
    _fails(tmp_path, capsys, args, "log.csv:3: field 't'", "expected a number")


def test_unknown_format(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "r.txt"
    src.write_text("1 2 3\n")
    _fails(tmp_path, capsys, ["--source", str(src), "--format", "excel"], "--format", "excel")


def test_missing_generic_column(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "log.csv"
    src.write_text("u,i\na,b\n")
    _fails(tmp_path, capsys, ["--source", str(src), "--format", "csv", "--user-col", "user", "--item-col", "i"],
           "log.csv:1", "'user'")


@pytest.mark.parametrize(
    "extra",
    [["--user-core", "5"], ["--min-rating", "6"], ["--item-core", "3", "--user-core", "3"]],
)
def test_filters_remove_everything(tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str]) -> None:
    src = tmp_path / "ratings.dat"
    src.write_text("1::1::5::1\n1::2::4::2\n2::1::3::3\n")
    _fails(tmp_path, capsys, ["--source", str(src), *extra], "ratings.dat", "removed every interaction")


def test_min_rating_without_ratings(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "s.txt"
    src.write_text("1 2 3 4\n")
    _fails(tmp_path, capsys, ["--source", str(src), "--min-rating", "4"], "--min-rating", "no ratings")


def test_unwritable_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # a path below a regular file can never be created (works for root too, unlike chmod)
    src = tmp_path / "s.txt"
    src.write_text("1 2 3 4\n")
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    out = blocker / "sub" / "out"
    assert main(["prepare", "--source", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "not a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "s.txt"]


def test_output_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "s.txt"
    src.write_text("1 2 3 4\n")
    out = tmp_path / "out"
    out.write_text("x")
    assert main(["prepare", "--source", str(src), "--out", str(out)]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert out.read_text() == "x"


def test_non_finite_timestamp(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "r.inter"
    src.write_text("user_id:token\titem_id:token\ttimestamp:float\nu\ta\t1.5\nu\tb\tinf\n")
    _fails(tmp_path, capsys, ["--source", str(src)], "r.inter", "interaction 2: timestamp inf")


def test_parquet_missing_value_names_row(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "log.parquet"
    pq.write_table(pa.table({"u": ["a", "a", None], "i": ["x", "y", "z"]}), src)
    _fails(tmp_path, capsys, ["--source", str(src), "--user-col", "u", "--item-col", "i"],
           "log.parquet: row 3: field 'u': missing value")


def test_generic_header_without_known_names_asks_for_the_columns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "log.csv"
    src.write_text("who,what\na,b\n")
    _fails(tmp_path, capsys, ["--source", str(src), "--format", "csv"], "log.csv", "--user-col", "(who, what)")


def test_sep_takes_one_character_or_tab(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "log.csv"
    src.write_text("u,i\na,b\n")
    _fails(tmp_path, capsys, ["--source", str(src), "--format", "csv", "--sep", "::"], "--sep", "'::'")
