"""``glintru recommend``: top-K items for every user of a prepared dataset, from a trained model.

    glintru recommend --model runs/glintru --data data/ml-1m --k 10 --out recs.parquet --workers 2
    glintru recommend --model runs/glintru/checkpoints/epoch_0007/checkpoint.pt --data DIR --out recs.parquet
    glintru recommend --model models:/glintru/1 --mlflow-uri http://127.0.0.1:5000 --data DIR --out recs.parquet

See :mod:`glintru.recommend` for the model sources, the scoring and the output schema.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint file, run directory, or MLflow model URI (models:/NAME/VERSION, runs:/ID/model)")
    p.add_argument("--data", required=True, help="prepared dataset directory the model was trained on")
    p.add_argument("--out", required=True, help="output parquet file (written atomically)")
    p.add_argument("--k", type=int, default=10, help="items per user (default 10)")
    p.add_argument("--workers", type=int, default=1, help="Ray Data scoring actors (default 1)")
    p.add_argument("--batch-size", type=int, default=1024, help="users per scoring batch (default 1024)")
    p.add_argument("--include-seen", action="store_true", help="keep items the user already interacted with")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per scoring actor")
    p.add_argument("--max-len", type=int, help="input window (default: the model's max_len)")
    p.add_argument("--mlflow-uri", help="tracking URI for an MLflow model URI (default MLFLOW_TRACKING_URI)")
    p.add_argument("--address", help="Ray cluster address (e.g. auto); default: a local Ray")
    p.add_argument("--num-cpus", type=int, help="logical CPUs of a local Ray (never sent to a cluster)")


def run(args: argparse.Namespace) -> int:
    from glintru.recommend import recommend

    res = recommend(
        args.model, args.data, args.out, k=args.k, workers=args.workers, include_seen=args.include_seen,
        batch_size=args.batch_size, use_gpu=args.use_gpu, max_len=args.max_len, tracking_uri=args.mlflow_uri,
        address=args.address, num_cpus=args.num_cpus,
    )
    print(f"{res.n_users} users -> {res.out} ({res.users_per_s:.0f} users/s scoring, {res.wall_s:.1f} s in all)")
    return 0
