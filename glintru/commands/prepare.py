"""``glintru prepare``: an interaction log -> a prepared parquet dataset (docs/architecture.md).

    glintru prepare --source ratings.dat --out data/ml-1m
    glintru prepare --dataset ml-1m --out data/ml-1m --user-core 5 --item-core 5
    glintru prepare --source log.csv --format csv --user-col uid --item-col iid --time-col ts --out DIR
    glintru prepare --source log.tsv --out DIR     # a header naming user_id, item_id, timestamp: read as csv
"""

from __future__ import annotations

import argparse
import sys

from glintru.data.readers import FORMATS


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--source", metavar="PATH", help="local interaction file (or ml-1m.zip); gzip, bzip2 or xz compressed text is read as it is")
    src.add_argument("--dataset", choices=["ml-1m"], help="download a known dataset into the cache")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory or s3://BUCKET/PATH, gs://... (must be absent or empty)")
    p.add_argument("--format", default="auto", metavar="NAME", help=f"auto (default) or one of: {', '.join(FORMATS)}")
    p.add_argument("--user-col", help="csv/parquet/json: user column name (default: the header's user_id/userId/user/... column; recbole: override user_id)")
    p.add_argument("--item-col", help="csv/parquet/json: item column name (default: the header's item_id/itemId/movieId/asin/... column; recbole: override item_id)")
    p.add_argument("--time-col", help="csv/parquet/json: timestamp column name (optional; default with neither --user-col nor --item-col: the header's timestamp/time/ts column)")
    p.add_argument("--rating-col", help="csv/parquet/json: rating column name (optional; default as for --time-col: rating/score/stars/overall)")
    p.add_argument("--sep", default=",", help="csv: field delimiter, one character or 'tab' (default ','; --format auto finds ',', tab or ';' from a recognised header)")
    p.add_argument("--min-rating", type=float, help="keep interactions with rating >= this")
    p.add_argument("--dedup", action="store_true", help="keep only the first interaction of each user-item pair")
    p.add_argument("--user-core", type=int, default=0, metavar="K", help="iterative k-core: users need >= K items")
    p.add_argument("--item-core", type=int, default=0, metavar="K", help="iterative k-core: items need >= K users")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    p.add_argument("--cache-dir", help="download cache (default ~/.cache/glintru or $GLINTRU_CACHE_DIR)")
    p.add_argument("--url", help="--dataset: override the download URL (or $GLINTRU_ML1M_URL)")
    p.add_argument("--sha256", help="--dataset: override the expected checksum (or $GLINTRU_ML1M_SHA256)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from glintru.data.download import fetch, resolve
    from glintru.data.prepare import ROLE_OPTION, FilterOptions, check_output, prepare
    from glintru.data.readers import ReadOptions
    from glintru.errors import UserError

    args.sep = {"tab": "\t", "\\t": "\t"}.get(args.sep, args.sep)  # what a shell lets one type for a tab
    if len(args.sep) != 1:
        raise UserError(f"--sep: expected one character (or tab), got {args.sep!r}")
    check_output(args.out, args.overwrite)
    if args.dataset:
        _, url, _ = resolve(args.dataset, args.url, args.sha256)
        source = fetch(args.dataset, args.cache_dir, args.url, args.sha256)
        label = url
    else:
        source, label = Path(args.source), args.source
    manifest = prepare(
        source,
        args.out,
        fmt=args.format,
        read_opts=ReadOptions(args.user_col, args.item_col, args.time_col, args.rating_col, args.sep),
        filters=FilterOptions(args.min_rating, args.dedup, args.user_core, args.item_core),
        overwrite=args.overwrite,
        source_label=label,
    )
    c = manifest["counts"]
    print(
        f"{args.out}: {c['n_users']} users, {c['n_items']} items, {c['n_interactions']} interactions "
        f"(format {manifest['source']['format']}, lengths {c['min_length']}..{c['max_length']}, "
        f"mean {c['mean_length']:.1f})"
    )
    opts = manifest["options"]
    if "user_col" in opts and manifest["source"]["format"] in ("csv", "parquet", "json"):
        read = ", ".join(f"{role}={opts[key]}" for role, key in ROLE_OPTION.items() if key in opts)
        given = args.user_col or args.item_col
        names = "keys" if manifest["source"]["format"] == "json" else "header's names"
        print(f"columns read: {read}" + ("" if given else f" (taken from the {names}; --user-col etc. choose others)"))
    if manifest["split"]["n_test"] == 0:  # written, but every later command refuses it: say so now
        print(f"warning: {args.out}: no user has the 3 interactions a leave-one-out split needs (at most "
              f"{c['max_length']} each): train and tune will refuse it; check the source and --format",
              file=sys.stderr)
    return 0
