"""Datasets in object storage: `glintru prepare --out s3://...`, then train, recommend and the
loader reading `--data s3://...`, against a real S3-compatible server (moto) on 127.0.0.1; and one
clear error for each bad object-store input."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from proc_helpers import free_port, stop_tree, wait_for_http

from glintru.cli import main


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on 127.0.0.1 with bucket ``glintru-data``; yields the endpoint URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/moto-api/", proc, "moto server", timeout_s=60)
        yield url
    finally:
        stop_tree(proc)


@pytest.fixture()
def s3_env(s3_server, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("GLINTRU_CACHE_DIR", str(tmp_path / "cache"))
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=s3_server, access_key="testing", secret_key="testing", region="us-east-1",
                           allow_bucket_creation=True)
    fs.create_dir("glintru-data")
    return fs


def _log(tmp_path, n_users=40, n_items=30):
    """A small interaction log: user, item, timestamp (tab-separated)."""
    import random

    rng = random.Random(0)
    lines = []
    for u in range(n_users):
        for t in range(rng.randint(4, 12)):
            lines.append(f"u{u}\ti{rng.randint(1, n_items)}\t{t}")
    path = tmp_path / "log.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_prepare_to_s3_then_train_and_recommend_from_s3(s3_env, tmp_path, capsys):
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    log = _log(tmp_path)
    uri = "s3://glintru-data/datasets/small"
    assert main(["prepare", "--source", str(log), "--out", uri]) == 0, capsys.readouterr().err
    names = {i.base_name for i in s3_env.get_file_info(pafs.FileSelector("glintru-data/datasets/small"))}
    assert names == {"manifest.json", "sequences.parquet", "items.parquet"}
    local = tmp_path / "local"
    assert main(["prepare", "--source", str(log), "--out", str(local)]) == 0
    from glintru.data.dataset import load_prepared

    remote, here = load_prepared(uri), load_prepared(local)
    assert remote.manifest["counts"] == here.manifest["counts"]
    assert (remote.items == here.items).all() and (remote.offsets == here.offsets).all()
    # A second load reads the machine's cache, not the bucket; a second prepare to it is refused.
    assert load_prepared(uri).path == remote.path
    mask = os.umask(0)
    os.umask(mask)  # the cached copy is as readable as a plain mkdir makes it (workers may run as other users)
    assert stat.S_IMODE(Path(remote.path).stat().st_mode) == 0o777 & ~mask
    assert main(["prepare", "--source", str(log), "--out", uri]) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err

    run = tmp_path / "run"
    tiny = ["--set", "hidden_size=8", "--set", "max_len=6", "--set", "batch_size=32", "--set", "num_negatives=5",
            "--threads", "1", "--quiet"]
    assert main(["train", "--data", uri, "--model", "glintru", "--max-epochs", "1", "--out", str(run), *tiny]) == 0
    ref = tmp_path / "ref"
    assert main(["train", "--data", str(local), "--model", "glintru", "--max-epochs", "1", "--out", str(ref), *tiny]) == 0
    import json

    assert json.loads((run / "metrics.json").read_text())["test/full/ndcg@10"] == \
        json.loads((ref / "metrics.json").read_text())["test/full/ndcg@10"]  # the same data, the same run
    out = tmp_path / "recs.parquet"
    assert main(["recommend", "--model", str(run), "--data", uri, "--out", str(out), "--k", "3",
                 "--save-state", str(tmp_path / "st.pt")]) == 0
    assert pq.read_table(out).num_rows == remote.n_users
    # the training catalogue from the bucket (--trained-on), the users from the local copy: the same lists
    again = tmp_path / "again.parquet"
    assert main(["recommend", "--model", str(run), "--data", str(local), "--trained-on", uri, "--out", str(again),
                 "--k", "3"]) == 0, capsys.readouterr().err
    assert pq.read_table(again).column("item_ids").to_pylist() == pq.read_table(out).column("item_ids").to_pylist()
    assert main(["recommend", "--model", str(run), "--data", str(local), "--trained-on", "s3://glintru-data/not-there",
                 "--out", str(again)]) == 2
    assert "--trained-on s3://glintru-data/not-there: no manifest.json there" in capsys.readouterr().err


@pytest.mark.parametrize("spec, message", [
    ("nosuch://bucket/x", "--data nosuch://bucket/x: unknown or unsupported filesystem 'nosuch'"),
    ("s3://glintru-data/not-there", "--data s3://glintru-data/not-there: no manifest.json there; create the dataset"),
])
def test_bad_object_store_data_is_one_error_line(s3_env, tmp_path, capsys, spec, message):
    code = main(["train", "--data", spec, "--model", "glintru", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert message in err, err


def test_unreachable_endpoint_and_wrong_credentials_are_one_error_line(s3_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GLINTRU_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    code = main(["prepare", "--source", str(_log(tmp_path)), "--out", "s3://glintru-data/x"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --out s3://glintru-data/x: ") and "\n" not in err, err
    assert not os.path.exists(tmp_path / "cache" / "datasets")
