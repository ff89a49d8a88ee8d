"""Reading a prepared dataset from object storage: the first read on a machine (download into the
cache) against a cached read and a local directory, against moto's S3 server on 127.0.0.1.

    python benchmarks/object_store_data.py --data benchmarks/work/data/ml-1m --out benchmarks/results/object_store_data.json

Every Ray worker calls ``load_prepared(uri)``; the first one on a machine downloads the three
files into ``~/.cache/glintru/datasets/<manifest digest>``, the others (and later trials) read the
cache. This measures what that costs for one dataset.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from benchinfo import machine, write_result
from proc_helpers import free_port, stop_tree, wait_for_http


def main(argv: list[str] | None = None) -> int:
    import pyarrow.fs as pafs

    from glintru.data.dataset import ITEMS, MANIFEST, SEQUENCES, load_prepared

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a local prepared dataset")
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    info = machine()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        wait_for_http(f"http://127.0.0.1:{port}/moto-api/", server, "moto server", timeout_s=60)
        os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "x",
                           "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"})
        fs = pafs.S3FileSystem(endpoint_override=f"http://127.0.0.1:{port}", access_key="x", secret_key="x",
                               region="us-east-1", allow_bucket_creation=True)
        fs.create_dir("bench")
        for name in (SEQUENCES, ITEMS, MANIFEST):
            pafs.copy_files(str(Path(args.data) / name), f"bench/d/{name}", destination_filesystem=fs)
        size = sum((Path(args.data) / n).stat().st_size for n in (SEQUENCES, ITEMS, MANIFEST))
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache:
                os.environ["GLINTRU_CACHE_DIR"] = cache
                for kind, spec in (("s3, first read (download)", "s3://bench/d"), ("s3, cached", "s3://bench/d"),
                                   ("local directory", args.data)):
                    t0 = time.perf_counter()
                    load_prepared(spec)
                    rows.append({"read": kind, "s": time.perf_counter() - t0})
    finally:
        stop_tree(server)
    summary = []
    for kind in dict.fromkeys(r["read"] for r in rows):
        times = sorted(r["s"] for r in rows if r["read"] == kind)
        summary.append({"read": kind, "median_s": times[len(times) // 2], "runs": len(times)})
    write_result(args.out, {"benchmark": "object_store_data", "dataset_bytes": size, "rows": summary}, info,
                 ["read", "median_s", "runs"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
