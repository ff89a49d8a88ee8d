"""``glintru prepare --dataset ml-1m`` against an HTTP server on 127.0.0.1 serving a fixture zip."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import stat
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from glintru.cli import main

RATINGS = "1::10::5::3\n1::20::4::1\n2::10::3::2\n2::30::3::2\n2::20::3::1\n"


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", RATINGS)
    return buf.getvalue()


@pytest.fixture()
def server() -> Iterator[tuple[str, str, list[str]]]:
    """(url, sha256, request log) of a loopback server returning the fixture zip."""
    payload, hits = _zip_bytes(), []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/ml-1m.zip", hashlib.sha256(payload).hexdigest(), hits
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_download_verify_cache_and_prepare(tmp_path: Path, server: tuple[str, str, list[str]]) -> None:
    url, sha, hits = server
    cache = tmp_path / "cache"
    args = ["prepare", "--dataset", "ml-1m", "--cache-dir", str(cache), "--url", url, "--sha256", sha]
    mask = os.umask(0o022)
    try:
        assert main([*args, "--out", str(tmp_path / "a")]) == 0
    finally:
        os.umask(mask)
    assert hits == ["/ml-1m.zip"]
    assert sorted(p.name for p in cache.iterdir()) == ["ml-1m.zip"]
    assert stat.S_IMODE((cache / "ml-1m.zip").stat().st_mode) == 0o644  # as the umask gives, not private
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert (m["n_users"], m["n_items"], m["n_interactions"]) == (2, 3, 5)
    assert m["source"] == {"path": url, "sha256": sha, "format": "movielens", "member": "ml-1m/ratings.dat"}
    # second run: served from the cache, no request
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert hits == ["/ml-1m.zip"]


def test_env_overrides(tmp_path: Path, server: tuple[str, str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    url, sha, hits = server
    monkeypatch.setenv("GLINTRU_ML1M_URL", url)
    monkeypatch.setenv("GLINTRU_ML1M_SHA256", sha)
    args = ["prepare", "--dataset", "ml-1m", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o")]
    assert main(args) == 0
    assert hits == ["/ml-1m.zip"]


def test_bad_checksum_deletes_temp_file(tmp_path: Path, server: tuple[str, str, list[str]],
                                        capsys: pytest.CaptureFixture) -> None:
    url, _, _ = server
    cache = tmp_path / "cache"
    args = ["prepare", "--dataset", "ml-1m", "--cache-dir", str(cache), "--url", url, "--sha256", "0" * 64]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert url in err and "expected " + "0" * 64 in err
    assert list(cache.iterdir()) == []
    assert not (tmp_path / "o").exists()


def test_unreachable_url(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with socket_port() as port:  # a port nobody listens on
        url = f"http://127.0.0.1:{port}/ml-1m.zip"
    args = ["prepare", "--dataset", "ml-1m", "--cache-dir", str(tmp_path / "c"), "--url", url]
    args += ["--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "download failed" in err
    # the offline routes: where a copy of the archive goes, and --source
    assert str(tmp_path / "c" / "ml-1m.zip") in err and "--source FILE" in err
    assert list((tmp_path / "c").iterdir()) == []


class socket_port:  # noqa: N801 (context manager used like a function)
    def __enter__(self) -> int:
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return self.s.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self.s.close()
