"""``glintru recommend``: top-K items for every user of a prepared dataset, from a trained model.

    glintru recommend --model runs/glintru --data data/ml-1m --k 10 --out recs.parquet          # in this process
    glintru recommend --model runs/glintru --data data/ml-1m --out recs.parquet --workers 2    # 2 Ray Data actors
    glintru recommend --model runs/glintru/checkpoints/epoch_0007/checkpoint.pt --data DIR --out recs.parquet
    glintru recommend --model models:/glintru/1 --mlflow-uri http://127.0.0.1:5000 --data DIR --out recs.parquet
    glintru recommend --model runs/glintru --data data/ml-1m-june --trained-on data/ml-1m --out recs.parquet  # newer snapshot

Incremental mode (causal GLINT-RU only; :mod:`glintru.streaming`):

    glintru recommend --model RUN --data DIR --out recs.parquet --save-state states.pt
    glintru recommend --model RUN --data DIR --state states.pt --events new.csv --out new.parquet --save-state states.pt

See :mod:`glintru.recommend` for the model sources, the scoring and the output schema.
"""

from __future__ import annotations

import argparse
import sys
import time

INCREMENTAL_HELP = (
    "incremental mode (causal GLINT-RU): --save-state FILE stores every user's recurrent state "
    "(GRU state, convolution inputs, attention sums); --state FILE --events FILE then applies new "
    "events in O(d^2) per event, without re-reading histories, and writes the new top-K of the users "
    "they touched"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint file, run directory, or MLflow model URI (models:/NAME/VERSION, models:/NAME@ALIAS, runs:/ID/model)")
    p.add_argument("--data", required=True, help="prepared dataset directory (or s3:// URI) whose users are scored: "
                                                 "the one the model was trained on, or another snapshot with --trained-on")
    p.add_argument("--trained-on", metavar="DIR",
                   help="the prepared dataset the model was trained on, when --data is another snapshot (items are "
                        "matched by id; items the model never saw are left out of the histories, and users with "
                        "no item it knows are left out of --out and counted)")
    p.add_argument("--out", required=True, help="output parquet file (written atomically)")
    p.add_argument("--k", type=int, default=10, help="items per user (default 10)")
    p.add_argument("--workers", type=int,
                   help="Ray Data scoring actors; 0 scores in this process without starting Ray. Default: 0 on "
                        "a single machine, 1 when a cluster is addressed (--address or RAY_ADDRESS)")
    p.add_argument("--batch-size", type=int, default=1024, help="users per scoring batch (default 1024)")
    p.add_argument("--include-seen", action="store_true", help="keep items the user already interacted with")
    p.add_argument("--gpu", "--use-gpu", dest="gpu", action="store_true",
                   help="score on GPUs: one per scoring actor (--use-gpu is an old spelling)")
    p.add_argument("--max-len", type=int, help="score each user's last N items (default: the model's training "
                                               "window; a SASRec allows at most that)")
    p.add_argument("--mlflow-uri", help="tracking URI for an MLflow model URI (default MLFLOW_TRACKING_URI)")
    p.add_argument("--address", help="Ray cluster address (e.g. auto) to score on with Ray Data actors; default: "
                                      "RAY_ADDRESS, else no cluster")
    p.add_argument("--num-cpus", type=int, help="logical CPUs of a local Ray (never sent to a cluster; implies Ray scoring)")
    inc = p.add_argument_group("incremental mode", INCREMENTAL_HELP)
    inc.add_argument("--save-state", metavar="FILE", help="write every user's streaming state to FILE (after --events if given)")
    inc.add_argument("--state", metavar="FILE", help="streaming states written by an earlier --save-state")
    inc.add_argument("--events", metavar="FILE",
                     help="new events: header-less 'user_id,item_id[,timestamp]' lines, or a CSV/TSV/JSON-lines/"
                          "Parquet file whose header or keys name user_id, item_id and optionally timestamp (as "
                          "prepare recognises them; text may be compressed); applied in timestamp order if "
                          "given, else oldest first as written")
    inc.add_argument("--skip-unknown-items", action="store_true",
                     help="leave out events whose item is not in the model's catalogue (default: an error "
                          "naming the line); the count is printed")


def run(args: argparse.Namespace) -> int:
    if args.save_state or args.state or args.events:
        from glintru.errors import UserError
        from glintru.streaming import recommend_incremental

        if args.skip_unknown_items and not args.events:
            raise UserError("--skip-unknown-items applies to --events")
        if args.trained_on:
            raise UserError("--trained-on applies to batch mode; incremental mode scores the dataset the model "
                            "was trained on (--events may name items it does not know: --skip-unknown-items)")

        if args.gpu or args.workers is not None:
            raise UserError("--gpu and --workers apply to batch mode; incremental mode runs in this process on CPU")
        res = recommend_incremental(
            args.model, args.data, args.out, state=args.state, events=args.events, save_state=args.save_state,
            k=args.k, include_seen=args.include_seen, max_len=args.max_len, tracking_uri=args.mlflow_uri,
            skip_unknown=args.skip_unknown_items,
        )
        if res.skipped:
            print(f"left out {res.skipped} event{'s' if res.skipped > 1 else ''} whose item is not in the "
                  "model's catalogue (--skip-unknown-items)", file=sys.stderr)
        rate = f", {res.n_events / res.step_s:,.0f} events/s" if res.n_events and res.step_s > 0 else ""
        print(f"{_count(res.n_events, 'event')}, {_count(res.n_users, 'user')} -> {res.out}{rate}, {res.wall_s:.1f} s in all"
              + (f"; states saved to {args.save_state}" if args.save_state else ""))
        return 0
    from glintru.recommend import recommend

    res = recommend(
        args.model, args.data, args.out, k=args.k, workers=args.workers, include_seen=args.include_seen,
        batch_size=args.batch_size, use_gpu=args.gpu, max_len=args.max_len, tracking_uri=args.mlflow_uri,
        address=args.address, num_cpus=args.num_cpus, progress=ProgressLine(), trained_on=args.trained_on,
    )
    if res.unknown_users:
        print(f"left out {_count(res.unknown_users, 'user')} none of whose items is in the catalogue of "
              f"--trained-on {args.trained_on}", file=sys.stderr)
    where = f"{res.workers} Ray actor{'s' if res.workers > 1 else ''}" if res.workers else "in this process"
    print(f"{res.n_users} users -> {res.out} ({res.users_per_s:.0f} users/s scoring {where}, {res.wall_s:.1f} s in all)")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


class ProgressLine:
    """``progress(done, total)`` for in-process scoring: one stderr line at most every ``every_s``
    seconds (none for a run shorter than that)."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self.t0 = self.last = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every_s and done < total:
            self.last = now
            rate = done / (now - self.t0)
            print(f"scored {done:,} / {total:,} users ({rate:,.0f} users/s, about {(total - done) / rate:.0f} s left)",
                  file=sys.stderr, flush=True)
