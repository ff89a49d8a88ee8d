"""Readers for interaction logs: one function per input format, all vectorised (pyarrow / numpy).

Every reader returns :class:`Interactions` in file order: ``user`` and ``item`` as pyarrow string
arrays, ``timestamp`` (int64 or float64 numpy array) and ``rating`` (float64) when the format has
them. Formats without timestamps (``seq-per-line``, ``pair-per-line``) keep file order, which the
preprocessing then treats as chronological order.

Parsing runs in C++ (``pyarrow.csv``, ``pyarrow.compute``); only when that fails do we scan the
file line by line in Python, to find and name the first bad line in the error message.

Formats (``FORMATS``):
  movielens      ``UserID::MovieID::Rating::Timestamp`` (``ratings.dat``), also inside ``ml-1m.zip``;
                 the zips of 100K (``u.data``) and 20M/25M/32M (``ratings.csv``) too
  amazon-csv     ``user,item,rating,timestamp`` without a header (McAuley 2014/2018 ratings-only files)
  recbole        RecBole atomic ``.inter``: tab-separated, typed header ``user_id:token\titem_id:token...``
  seq-per-line   ``user item1 item2 ...`` oldest first (S3-Rec / ICLRec / DiffuRec text files)
  pair-per-line  ``user item`` oldest first per user (original SASRec repository)
  csv            generic delimited file with a header; column names from :class:`ReadOptions`
  parquet        generic Parquet file; column names from :class:`ReadOptions`
  json           JSON lines, one object per interaction (McAuley's Amazon review files
                 ``reviews_Beauty_5.json``: ``reviewerID``, ``asin``, ``overall``, ``unixReviewTime``;
                 the 2023 files: ``user_id``, ``asin``, ``rating``, ``timestamp``); keys as csv columns

Text files may be compressed with gzip, bzip2 or xz (``.json.gz``, ``.csv.gz``, ...): recognised by
their first bytes and decompressed in memory.

The generic formats take the columns from the header when no ``--user-col``/``--item-col`` is given
and exactly one column has a well-known name for each role (``COLUMN_NAMES``: ``user_id``,
``userId``, ``item_id``, ``movieId``, ``asin``, ``timestamp``, ...); ``auto`` recognises such a
header in a comma-, semicolon- or tab-separated file. A header it does not recognise is never read
as data: it asks for the columns.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from glintru.errors import UserError

FORMATS = ("movielens", "amazon-csv", "recbole", "seq-per-line", "pair-per-line", "csv", "parquet", "json")
ML_ZIP_MEMBER = "ml-1m/ratings.dat"


@dataclass(frozen=True)
class ReadOptions:
    """Column names for the generic ``csv`` / ``parquet`` formats (and to override ``recbole``'s)."""

    user_col: str | None = None
    item_col: str | None = None
    time_col: str | None = None
    rating_col: str | None = None
    sep: str = ","


@dataclass(frozen=True)
class Interactions:
    """One row per interaction, in file order.

    user, item: pyarrow string arrays [n]; timestamp: int64/float64 [n] or None;
    rating: float64 [n] or None; fmt: the format that was read; member: zip member read, if any.
    """

    user: pa.Array
    item: pa.Array
    timestamp: np.ndarray | None
    rating: np.ndarray | None
    fmt: str
    member: str | None = None
    columns: dict[str, str] | None = None  # csv / parquet: role -> the column read (user, item, timestamp, rating)
    sep: str | None = None  # csv: the delimiter read

    def __len__(self) -> int:
        return len(self.user)


# ----------------------------------------------------------------------------- raw bytes


def _read_bytes(path: Path) -> tuple[bytes, str | None]:
    """The file's bytes (the ratings member for a zip) and the member name, or a UserError."""
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")
    member = None
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                candidates = [n for n in names if n == ML_ZIP_MEMBER] or [
                    n for n in names if n.rsplit("/", 1)[-1] in ("ratings.dat", "ratings.csv", "u.data")
                ]
                if not candidates:
                    raise UserError(f"{path}: zip archive has no MovieLens ratings file (ratings.dat, ratings.csv or "
                                    f"u.data; members: {', '.join(names[:10])})")
                member = candidates[0]
                data = as_utf8(zf.read(member), path)
        else:
            data = decompress(path, path.read_bytes())
    except (OSError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    if not data.strip():
        raise UserError(f"{path}{':' + member if member else ''}: file is empty")
    return data, member


# first bytes -> (name, module): compressed text files are read whole, decompressed in memory
_COMPRESSION = {b"\x1f\x8b": ("gzip", "gzip"), b"BZh": ("bzip2", "bz2"), b"\xfd7zXZ\x00": ("xz", "lzma")}


def _compression(head: bytes) -> tuple[str, str] | None:
    return next((v for magic, v in _COMPRESSION.items() if head.startswith(magic)), None)


UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # little- and big-endian


def as_utf8(text: bytes, path: Path | None = None) -> bytes:
    """Text as UTF-8 without a byte order mark: a UTF-8 BOM (Excel's "CSV UTF-8") is dropped and
    UTF-16 text that starts with its BOM (Excel's "Unicode Text") is converted; left as they were,
    the BOM would be part of the first column's name or the first user's id, and UTF-16 would not
    read at all. ``path`` None: a window of the file (to tell its format), where a character cut at
    the window's end is replaced; else invalid UTF-16 is a UserError naming ``path``."""
    if text.startswith(UTF8_BOM):
        return text[len(UTF8_BOM):]
    if text[:2] in UTF16_BOMS:
        try:
            return text.decode("utf-16", "replace" if path is None else "strict").encode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not valid UTF-16 text ({exc.reason} at byte {exc.start})") from None
    return text


def decompress(path: Path, data: bytes) -> bytes:
    """``data`` decompressed when its first bytes say gzip, bzip2 or xz; else as it is; as UTF-8
    without a byte order mark either way (:func:`as_utf8`)."""
    kind = _compression(data[:6])
    return as_utf8(data if kind is None else _with_codec(path, kind, lambda codec: codec.decompress(data)), path)


HEAD_BYTES = 1 << 16  # what format sniffing reads of a file


def _head(path: Path, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of the file's text, decompressed if it is compressed."""
    with open(path, "rb") as fh:
        head = fh.read(size)
    kind = _compression(head[:6])
    if kind is None:
        return head

    def first_bytes(codec) -> bytes:
        with codec.open(path, "rb") as fh:
            return fh.read(size)

    return _with_codec(path, kind, first_bytes)


def _with_codec(path: Path, kind: tuple[str, str], use: Callable) -> bytes:
    """``use(module)`` with the compression module of ``kind``; a corrupt or truncated archive is a
    UserError naming the file."""
    import importlib
    import lzma

    try:
        return use(importlib.import_module(kind[1]))
    except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:  # LZMAError: a truncated xz file
        raise UserError(f"{path}: cannot decompress ({kind[0]}: {exc})") from None


def _window_lines(head: bytes) -> list[str]:
    """The lines of a :data:`HEAD_BYTES` window of text (bytes that are not UTF-8 replaced), less the
    last when the window cut it."""
    lines = as_utf8(head).decode("utf-8", "replace").split("\n")
    return lines[:-1] if len(head) == HEAD_BYTES and len(lines) > 1 else lines


def head_lines(path: Path) -> list[str]:
    """The complete lines of the first :data:`HEAD_BYTES` of the file's text (decompressed): enough
    to recognise a format without reading the whole file."""
    try:
        return _window_lines(_head(path))
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{where}:{line}: not valid UTF-8 text ({exc.reason})") from None


# ----------------------------------------------------------------------------- diagnostics


def _is_number(tok: str, integer: bool) -> bool:
    try:
        (int if integer else float)(tok)
    except ValueError:
        return False
    return True


def _first_bad_line(
    text: str,
    split: Callable[[str], list[str]],
    names: list[str],
    numeric: dict[str, bool],
    skip: int,
    where: str,
) -> UserError | None:
    """Scan lines (error path only) for the first with a wrong field count, an empty id or a bad number.

    ``numeric`` maps field name -> True for integer, False for float. ``skip`` header lines.
    """
    for lineno, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1):  # line ends as pyarrow.csv sees them
        if lineno <= skip or not line.strip():
            continue
        parts = split(line)
        if len(parts) != len(names):
            return UserError(f"{where}:{lineno}: expected {len(names)} fields ({', '.join(names)}), got {len(parts)}")
        for name, tok in zip(names, parts):
            tok = tok.strip()
            if name in numeric and not _is_number(tok, numeric[name]):
                kind = "an integer" if numeric[name] else "a number"
                return UserError(f"{where}:{lineno}: field '{name}': expected {kind}, got {tok!r}")
            if name in ("user", "item") and not tok:
                return UserError(f"{where}:{lineno}: field '{name}': empty id")
    return None


def _read_delimited(
    data: bytes,
    where: str,
    delimiter: str,
    names: list[str],
    types: dict[str, pa.DataType],
    header_lines: int,
    split: Callable[[str], list[str]],
    original: bytes | None = None,
) -> pa.Table:
    """Parse a delimited text with pyarrow.csv; on any failure name the first bad line.

    ``original``: the bytes as in the file, when ``data`` was rewritten before parsing.
    """
    import pyarrow.csv as pacsv

    numeric = {n: pa.types.is_integer(t) for n, t in types.items() if not pa.types.is_string(t)}
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=header_lines, use_threads=True),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False, ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )
        if table.num_rows == 0:
            raise UserError(f"{where}: no data rows")
        ok = all(table.column(n).null_count == 0 for n in names) and all(
            pc.min(pc.utf8_length(table.column(n))).as_py() > 0 for n in names if pa.types.is_string(types[n])
        )
    except pa.ArrowException as exc:
        err = _first_bad_line(_decode(original or data, where), split, names, numeric, header_lines, where)
        raise (err or UserError(f"{where}: cannot parse ({exc})")) from None
    if not ok:
        err = _first_bad_line(_decode(original or data, where), split, names, numeric, header_lines, where)
        raise err or UserError(f"{where}: empty or missing values")
    return table


def _np(col: pa.ChunkedArray | pa.Array, dtype: type) -> np.ndarray:
    return np.asarray(col.to_numpy(), dtype=dtype)


def _str(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return col.cast(pa.string()) if not pa.types.is_string(col.type) else col


# ----------------------------------------------------------------------------- readers


def read_movielens(path: Path, opts: ReadOptions | None = None) -> Interactions:
    """``UserID::MovieID::Rating::Timestamp`` (MovieLens 1M/10M ``ratings.dat``), or that member of a
    zip; also the zips of MovieLens 100K (``u.data``: the same fields tab-separated) and of
    20M/25M/32M/latest (``ratings.csv``: a header ``userId,movieId,rating,timestamp``)."""
    data, member = _read_bytes(path)
    where = f"{path}:{member}" if member else str(path)
    names = ["user", "item", "rating", "timestamp"]
    first = data.lstrip().split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    if "::" not in first and header_sep(first) == ",":
        return replace(read_csv(path, replace(opts or ReadOptions(), sep=",")), fmt="movielens", member=member)
    types = {"user": pa.string(), "item": pa.string(), "rating": pa.float64(), "timestamp": pa.int64()}
    if member is not None and member.rsplit("/", 1)[-1] == "u.data":
        table = _read_delimited(data, where, "\t", names, types, 0, lambda line: line.split("\t"))
        return Interactions(user=_str(table.column("user")), item=_str(table.column("item")),
                            timestamp=_np(table.column("timestamp"), np.int64),
                            rating=_np(table.column("rating"), np.float64), fmt="movielens", member=member)
    if b"\t" in data:
        line = data.count(b"\n", 0, data.index(b"\t")) + 1
        raise UserError(f"{where}:{line}: unexpected tab in a '::'-separated file")
    # pyarrow.csv takes a one-character delimiter: turn '::' into a tab (ids are numeric, so no clash)
    table = _read_delimited(
        data.replace(b"::", b"\t"),
        where,
        "\t",
        names,
        types,
        0,
        lambda line: line.split("::"),
        original=data,
    )
    return Interactions(
        user=_str(table.column("user")),
        item=_str(table.column("item")),
        timestamp=_np(table.column("timestamp"), np.int64),
        rating=_np(table.column("rating"), np.float64),
        fmt="movielens",
        member=member,
    )


def read_amazon_csv(path: Path, opts: ReadOptions | None = None) -> Interactions:
    """``user,item,rating,timestamp`` without a header (Amazon 2014/2018 ratings-only CSV)."""
    data, _ = _read_bytes(path)
    names = ["user", "item", "rating", "timestamp"]
    table = _read_delimited(
        data,
        str(path),
        ",",
        names,
        {"user": pa.string(), "item": pa.string(), "rating": pa.float64(), "timestamp": pa.int64()},
        0,
        lambda line: line.split(","),
    )
    return Interactions(
        user=_str(table.column("user")),
        item=_str(table.column("item")),
        timestamp=_np(table.column("timestamp"), np.int64),
        rating=_np(table.column("rating"), np.float64),
        fmt="amazon-csv",
    )


_RECBOLE_TYPES = {"token": pa.string(), "float": pa.float64()}


def read_recbole(path: Path, opts: ReadOptions | None = None) -> Interactions:
    """RecBole atomic ``.inter``: tab-separated, header ``name:type`` (token, float, token_seq, float_seq).

    Columns used: ``user_id``, ``item_id``, optional ``timestamp`` and ``rating`` (names overridable
    with :class:`ReadOptions`). Other columns are read as strings and ignored.
    """
    opts = opts or ReadOptions()
    data, _ = _read_bytes(path)
    where = str(path)
    first = data.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")
    header = first.split("\t")
    names, types = [], {}
    for i, field in enumerate(header):
        name, sep, kind = field.partition(":")
        if not sep or kind not in ("token", "float", "token_seq", "float_seq"):
            raise UserError(f"{where}:1: field {i + 1} {field!r}: expected a typed header 'name:token' or 'name:float'")
        names.append(name)
        types[name] = _RECBOLE_TYPES.get(kind, pa.string())
    cols = {
        "user": opts.user_col or "user_id",
        "item": opts.item_col or "item_id",
        "timestamp": opts.time_col or "timestamp",
        "rating": opts.rating_col or "rating",
    }
    for role in ("user", "item"):
        if cols[role] not in names:
            raise UserError(f"{where}:1: header has no column '{cols[role]}' (columns: {', '.join(names)})")
        types[cols[role]] = pa.string()
    for role in ("timestamp", "rating"):
        if cols[role] in names:
            types[cols[role]] = pa.float64()
    table = _read_delimited(data, where, "\t", names, types, 1, lambda line: line.split("\t"))
    ts = _np(table.column(cols["timestamp"]), np.float64) if cols["timestamp"] in names else None
    if ts is not None and np.all(ts == np.floor(ts)) and np.all(np.abs(ts) < 2**53):
        ts = ts.astype(np.int64)
    return Interactions(
        user=_str(table.column(cols["user"])),
        item=_str(table.column(cols["item"])),
        timestamp=ts,
        rating=_np(table.column(cols["rating"]), np.float64) if cols["rating"] in names else None,
        fmt="recbole",
    )


def _token_lines(path: Path) -> tuple[pa.ListArray, np.ndarray, str]:
    """Whitespace-split every non-blank line: (list<string> tokens per line, 1-based line numbers, where)."""
    data, _ = _read_bytes(path)
    where = str(path)
    text = _decode(data, where)
    lines = pa.array(text.split("\n"), type=pa.large_string())
    lines = pc.utf8_trim_whitespace(lines)
    keep = pc.greater(pc.utf8_length(lines), 0)
    lineno = np.flatnonzero(keep.to_numpy(zero_copy_only=False)) + 1
    if len(lineno) == 0:
        raise UserError(f"{where}: file is empty (no non-blank lines)")
    tokens = pc.utf8_split_whitespace(lines.filter(keep))
    return tokens, lineno, where


def read_seq_per_line(path: Path, opts: ReadOptions | None = None) -> Interactions:
    """``user item1 item2 ...`` per line, oldest first; a user with no items contributes nothing."""
    tokens, _, _ = _token_lines(path)
    n_tok = pc.list_value_length(tokens).to_numpy().astype(np.int64)
    flat = pc.list_flatten(tokens)
    starts = np.concatenate([[0], np.cumsum(n_tok)[:-1]])
    is_user = np.zeros(len(flat), dtype=bool)
    is_user[starts] = True
    users = flat.take(pa.array(starts))
    item = flat.filter(pa.array(~is_user))
    user = users.take(pa.array(np.repeat(np.arange(len(n_tok)), n_tok - 1)))
    return Interactions(user=_str(user), item=_str(item), timestamp=None, rating=None, fmt="seq-per-line")


def read_pair_per_line(path: Path, opts: ReadOptions | None = None) -> Interactions:
    """``user item`` per line, oldest first per user."""
    tokens, lineno, where = _token_lines(path)
    n_tok = pc.list_value_length(tokens).to_numpy()
    bad = np.flatnonzero(n_tok != 2)
    if len(bad):
        raise UserError(f"{where}:{lineno[bad[0]]}: expected 2 fields (user, item), got {n_tok[bad[0]]}")
    flat = pc.list_flatten(tokens)
    idx = np.arange(len(flat))
    return Interactions(
        user=_str(flat.take(pa.array(idx[0::2]))),
        item=_str(flat.take(pa.array(idx[1::2]))),
        timestamp=None,
        rating=None,
        fmt="pair-per-line",
    )


# Header names taken for a role when no --user-col/--item-col is given, compared lower-case without
# '_', '-', '.' or spaces ("user_id", "userId" and "User ID" are one name).
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "user": ("userid", "user", "uid", "customerid", "reviewerid", "visitorid", "sessionid"),
    "item": ("itemid", "item", "iid", "movieid", "productid", "asin", "trackid", "articleid"),
    "timestamp": ("timestamp", "time", "ts", "unixreviewtime", "eventtime", "datetime"),
    "rating": ("rating", "score", "stars", "overall"),
}


def _plain(name: str) -> str:
    return re.sub(r"[\s_.\-]", "", name.strip().strip('"').lower())


def infer_columns(header: list[str]) -> dict[str, str] | None:
    """role -> column read off a header, or None unless one column names the user and one the item.

    Two columns with names for one role (``time`` and ``timestamp``) make the header ambiguous: None.
    """
    cols: dict[str, str] = {}
    for role, names in COLUMN_NAMES.items():
        hits = [h for h in header if _plain(h) in names]
        if len(hits) > 1:
            return None
        if hits:
            cols[role] = hits[0]
    return cols if "user" in cols and "item" in cols else None


def header_sep(line: str) -> str | None:
    """The delimiter (',', tab or ';') of ``line`` read as a header :func:`infer_columns`
    recognises, or None when it is not such a header."""
    for sep in (",", "\t", ";"):
        if sep in line and infer_columns([h.strip().strip('"') for h in line.split(sep)]) is not None:
            return sep
    return None


def _generic_columns(opts: ReadOptions, where: str, header: list[str], names: str = "the header") -> dict[str, str]:
    """role -> column to read: the options', or the header's names when neither --user-col nor --item-col is given."""
    if not opts.user_col and not opts.item_col:
        cols = infer_columns(header)
        if cols is None:
            raise UserError(
                f"{where}: give --user-col and --item-col (and optionally --time-col): {names} "
                f"({', '.join(header)}) has no single column named like a user id and one like an item id "
                "(such as user_id, userId, user / item_id, itemId, movieId, asin)"
            )
        for role, opt in (("timestamp", opts.time_col), ("rating", opts.rating_col)):
            if opt:
                cols[role] = opt
        return cols
    if not opts.user_col or not opts.item_col:
        raise UserError(f"{where}: the generic formats need --user-col and --item-col (and optionally --time-col)")
    cols = {"user": opts.user_col, "item": opts.item_col}
    if opts.time_col:
        cols["timestamp"] = opts.time_col
    if opts.rating_col:
        cols["rating"] = opts.rating_col
    return cols


def _from_table(
    table: pa.Table, cols: dict[str, str], where: str, at: Callable[[int], str], fmt: str, sep: str | None = None
) -> Interactions:
    """Take the named columns from a generic table; null or non-numeric values name the row/line.

    ``at(row)`` formats the location of 0-based table row ``row`` (a file line, or a Parquet row).
    """
    for name in cols.values():
        col = table.column(name)
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise UserError(f"{at(row)}: field '{name}': missing value")
    out: dict[str, object] = {"timestamp": None, "rating": None}
    for role in ("user", "item"):
        out[role] = _str(table.column(cols[role]))
        if len(out[role]) and pc.min(pc.utf8_length(out[role])).as_py() == 0:
            row = int(np.flatnonzero(pc.equal(pc.utf8_length(out[role]), 0).to_numpy(zero_copy_only=False))[0])
            raise UserError(f"{at(row)}: field '{cols[role]}': empty id")
    for role in ("timestamp", "rating"):
        if role not in cols:
            continue
        col = table.column(cols[role]).combine_chunks()
        if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
            col = col.cast(pa.int64())
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
            try:
                col = pc.cast(col, pa.float64())
            except pa.ArrowInvalid:
                vals = col.cast(pa.string()).to_numpy(zero_copy_only=False)  # error path only
                row = next((i for i, v in enumerate(vals) if not _is_number(str(v), False)), None)
                if row is None:
                    raise UserError(f"{where}: field '{cols[role]}': expected numbers") from None
                raise UserError(
                    f"{at(row)}: field '{cols[role]}': expected a number, got {vals[row]!r}"
                ) from None
        dtype = np.int64 if role == "timestamp" and pa.types.is_integer(col.type) else np.float64
        out[role] = _np(col, dtype)
    return Interactions(fmt=fmt, columns=dict(cols), sep=sep, **out)  # type: ignore[arg-type]


def read_csv(path: Path, opts: ReadOptions | None = None) -> Interactions:
    """Generic delimited file with a header row; columns named by ``opts`` (``--user-col`` etc.)."""
    import pyarrow.csv as pacsv

    opts = opts or ReadOptions()
    data, _ = _read_bytes(path)
    where = str(path)
    header = data.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r").split(opts.sep)
    header = [h.strip().strip('"') for h in header]
    cols = _generic_columns(opts, where, header)
    for name in cols.values():
        if name not in header:
            raise UserError(f"{where}:1: header has no column '{name}' (columns: {', '.join(header)})")
    types = {cols["user"]: pa.string(), cols["item"]: pa.string()}
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            parse_options=pacsv.ParseOptions(delimiter=opts.sep),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=list(dict.fromkeys(cols.values())), strings_can_be_null=False
            ),
        )
    except pa.ArrowException as exc:
        text = _decode(data, where)
        err = _first_bad_line(text, lambda line: line.split(opts.sep), header, {}, 1, where)
        raise (err or UserError(f"{where}: cannot parse ({exc})")) from None
    if table.num_rows == 0:
        raise UserError(f"{where}: no data rows")
    return _from_table(table, cols, where, lambda row: f"{where}:{row + 2}", "csv", opts.sep)  # line 1: header


def read_parquet(path: Path, opts: ReadOptions | None = None) -> Interactions:
    """Generic Parquet file; columns named by ``opts``."""
    import pyarrow.parquet as pq

    opts = opts or ReadOptions()
    where = str(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"{where}: cannot read as Parquet ({exc})") from None
    cols = _generic_columns(opts, where, list(schema.names))
    try:
        for name in cols.values():
            if name not in schema.names:
                raise UserError(f"{where}: no column '{name}' (columns: {', '.join(schema.names)})")
        table = pq.read_table(path, columns=list(dict.fromkeys(cols.values())))
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"{where}: cannot read as Parquet ({exc})") from None
    if table.num_rows == 0:
        raise UserError(f"{where}: file is empty (no rows)")
    return _from_table(table, cols, where, lambda row: f"{where}: row {row + 1}", "parquet")


def read_json_lines(path: Path, opts: ReadOptions | None = None) -> Interactions:
    """JSON lines: one object per interaction; its keys play the csv header's part (the columns
    named by ``opts``, or recognised by their names); other keys are ignored. Ids may be strings or
    numbers. pyarrow parses the file; when it cannot (ids of mixed types, a bad line), Python reads
    it line by line and names the first bad line."""
    import json

    import pyarrow.json as pajson

    opts = opts or ReadOptions()
    data, _ = _read_bytes(path)
    where = str(path)
    stripped = data.lstrip()
    first, first_line = stripped.split(b"\n", 1)[0], data[: len(data) - len(stripped)].count(b"\n") + 1
    try:
        obj = json.loads(first)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        raise UserError(f"{where}:{first_line}: expected one JSON object per line, got "
                        f"{first[:60].decode('utf-8', 'replace')!r}")
    cols = _generic_columns(opts, where, list(obj), "the first object's keys")
    for name in cols.values():
        if name not in obj:
            raise UserError(f"{where}:{first_line}: no key '{name}' (keys: {', '.join(obj)})")
    types = {name: pa.string() if role in ("user", "item") else pa.float64() for role, name in cols.items()}
    try:
        table = pajson.read_json(
            io.BytesIO(data),
            read_options=pajson.ReadOptions(block_size=max(1 << 20, 2 * len(first))),
            parse_options=pajson.ParseOptions(explicit_schema=pa.schema(list(types.items())),
                                              unexpected_field_behavior="ignore"),
        )
    except pa.ArrowException:
        table = _json_lines_in_python(_decode(data, where), cols, where)
    if table.num_rows == 0:
        raise UserError(f"{where}: no data rows")
    lines = None

    def at(row: int) -> str:  # error path only: the file line of table row ``row`` (blank lines skipped)
        nonlocal lines
        if lines is None:
            lines = [i + 1 for i, ln in enumerate(_decode(data, where).split("\n")) if ln.strip()]
        return f"{where}:{lines[row]}"

    inter = _from_table(table, cols, where, at, "json")
    ts = inter.timestamp
    if ts is not None and np.all(ts == np.floor(ts)) and np.all(np.abs(ts) < 2**53):
        inter = replace(inter, timestamp=ts.astype(np.int64))  # JSON numbers are read as floats
    return inter


def _json_lines_in_python(text: str, cols: dict[str, str], where: str) -> pa.Table:
    """The named keys of every line, parsed one line at a time: ids of any JSON scalar type become
    strings; a line that is not an object, or lacks a key, is a UserError naming it."""
    import json

    values: dict[str, list] = {name: [] for name in cols.values()}
    ids = {cols["user"], cols["item"]}
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise UserError(f"{where}:{n}: not valid JSON ({exc.args[0] if exc.args else exc})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{where}:{n}: expected a JSON object, got {type(obj).__name__}")
        for name, out in values.items():
            v = obj.get(name)
            if v is None:
                raise UserError(f"{where}:{n}: field '{name}': missing value")
            if name in ids:
                if isinstance(v, (dict, list)):
                    raise UserError(f"{where}:{n}: field '{name}': expected a string or number id, got {type(v).__name__}")
                v = v if isinstance(v, str) else json.dumps(v)
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                raise UserError(f"{where}:{n}: field '{name}': expected a number, got {v!r}")
            out.append(v)
    return pa.table({name: pa.array(v, type=pa.string() if name in ids else pa.float64()) for name, v in values.items()})


READERS: dict[str, Callable[[Path, ReadOptions | None], Interactions]] = {
    "movielens": read_movielens,
    "amazon-csv": read_amazon_csv,
    "recbole": read_recbole,
    "seq-per-line": read_seq_per_line,
    "pair-per-line": read_pair_per_line,
    "csv": read_csv,
    "parquet": read_parquet,
    "json": read_json_lines,
}


# ----------------------------------------------------------------------------- detection


def detect_format(path: Path) -> str:
    """Guess the format from the file name and its first lines; a UserError when ambiguous.

    Rules: ``.zip`` / ``.dat`` / ``::`` -> movielens; ``.inter`` or a typed tab header -> recbole;
    ``.parquet`` -> parquet; 4 comma fields with numeric rating and timestamp -> amazon-csv;
    a comma-, tab- or semicolon-separated header naming a user and an item column
    (:func:`infer_columns`) -> csv; a first line of names above a column that is numeric on every
    other line asks for --format (a header is never read as a user); whitespace tokens with some line
    of 3+ tokens and at least half of the lines of 2+ -> seq-per-line (a line of one token is a user
    without items); all lines of exactly 2 tokens with a repeated user among the first lines ->
    pair-per-line. Anything else asks for --format.
    """
    return _sniff(path)[0]


def _sniff(path: Path) -> tuple[str, str | None]:
    """:func:`detect_format`'s format, and the delimiter of a recognised csv header (else None)."""
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet", None
    if name.endswith(".inter"):
        return "recbole", None
    if zipfile.is_zipfile(path):
        return "movielens", None
    try:
        head = _head(path)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    if not head.strip():
        raise UserError(f"{path}: file is empty")
    if head.startswith(b"PAR1"):
        return "parquet", None
    lines = [ln.strip() for ln in _window_lines(head) if ln.strip()][:1000]
    if not lines:
        raise UserError(f"{path}: file is empty")
    first = lines[0]
    if first.startswith("{"):
        return "json", None
    if name.endswith(".dat") or "::" in first:
        return "movielens", None
    if "\t" in first and all(":" in f for f in first.split("\t")):
        return "recbole", None
    if "," in first:
        parts = first.split(",")
        if len(parts) == 4 and _is_number(parts[2], False) and _is_number(parts[3], True):
            return "amazon-csv", None
    sep = header_sep(first)
    if sep is not None:
        return "csv", sep
    if "," in first:
        if all(_is_number(f, False) for f in first.split(",")):  # no names on line 1: not a header
            raise UserError(
                f"{path}:1: a CSV file without a header row; add one naming the columns (e.g. "
                "user_id,item_id,timestamp), or give --format amazon-csv for user,item,rating,timestamp"
            )
        raise UserError(
            f"{path}: looks like a CSV file with a header; give --format csv with --user-col/--item-col "
            "(and --time-col), or --format amazon-csv for header-less user,item,rating,timestamp"
        )
    rows = [ln.split() for ln in lines]
    if len(rows) > 1 and len({len(r) for r in rows}) == 1 and not any(_is_number(t, False) for t in rows[0]):
        numeric = [j for j in range(len(rows[0])) if all(_is_number(r[j], False) for r in rows[1:])]
        if numeric:  # names above a column of numbers: a header, not a user and its items
            raise UserError(
                f"{path}:1: looks like a header ({', '.join(rows[0])}); give --format csv with --sep (tab: "
                "--sep tab) and --user-col/--item-col (and --time-col)"
            )
    n_tokens = [len(r) for r in rows]
    if max(n_tokens) >= 3 and sum(n >= 2 for n in n_tokens) * 2 >= len(n_tokens):
        return "seq-per-line", None  # most lines carry a user and at least one item
    if min(n_tokens) == 2:
        users = [r[0] for r in rows]
        if len(set(users)) < len(users):
            return "pair-per-line", None
    raise UserError(
        f"{path}: cannot tell the format from the file; give --format (one of: {', '.join(FORMATS)})"
    )


def read_interactions(path: str | Path, fmt: str = "auto", opts: ReadOptions | None = None) -> Interactions:
    """Read ``path`` in format ``fmt`` (``auto`` = :func:`detect_format`)."""
    path = Path(path)
    opts = opts or ReadOptions()
    if fmt == "auto":
        fmt, sep = _sniff(path)
        if sep is not None:
            opts = replace(opts, sep=sep)
    if fmt not in READERS:
        raise UserError(f"--format: unknown format {fmt!r}; choose one of: auto, {', '.join(FORMATS)}")
    inter = READERS[fmt](path, opts)
    if len(inter) == 0:
        raise UserError(f"{path}: no interactions found (format {fmt})")
    return inter
