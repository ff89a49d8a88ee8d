"""Download a public dataset archive into a cache directory and verify its SHA-256.

Only ``ml-1m`` (the official GroupLens MovieLens 1M zip) is known. The URL and the expected
checksum can be overridden (arguments, or the environment variables ``GLINTRU_ML1M_URL`` and
``GLINTRU_ML1M_SHA256``) so tests can serve a fixture from a local HTTP server.
The file is streamed to a temporary file in the cache directory and renamed only when its
checksum matches; a mismatch deletes the temporary file and raises a UserError.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from glintru.errors import UserError
from glintru.storage import new_sibling


@dataclass(frozen=True)
class RemoteDataset:
    filename: str
    url: str
    sha256: str
    fmt: str
    env: str  # prefix of the override variables: {env}_URL, {env}_SHA256


# SHA-256 of the GroupLens archive as pinned by several independent public projects (the archive's
# published MD5 is c4d9eecfca2ab87c1945afe126590906); not recomputed here (no network access).
DATASETS: dict[str, RemoteDataset] = {
    "ml-1m": RemoteDataset(
        filename="ml-1m.zip",
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        fmt="movielens",
        env="GLINTRU_ML1M",
    )
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("GLINTRU_CACHE_DIR", Path.home() / ".cache" / "glintru"))


def resolve(name: str, url: str | None = None, sha256: str | None = None) -> tuple[RemoteDataset, str, str]:
    """The dataset entry and the effective (url, sha256) after argument and environment overrides."""
    if name not in DATASETS:
        raise UserError(f"--dataset: unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    ds = DATASETS[name]
    url = url or os.environ.get(f"{ds.env}_URL") or ds.url
    sha = (sha256 or os.environ.get(f"{ds.env}_SHA256") or ds.sha256).lower()
    return ds, url, sha


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(
    name: str,
    cache_dir: str | Path | None = None,
    url: str | None = None,
    sha256: str | None = None,
    timeout_s: float = 60.0,
) -> Path:
    """Path of the verified archive in the cache, downloading it first when absent."""
    ds, url, expected = resolve(name, url, sha256)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / ds.filename
    if target.is_file():
        got = sha256_file(target)
        if got != expected:
            raise UserError(
                f"{target}: cached file has sha256 {got}, expected {expected}; delete it to download again"
            )
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = new_sibling(target, "part")
    except OSError as exc:
        raise UserError(f"{cache}: cannot create the cache directory ({exc.strerror or exc})") from None
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as fh, urllib.request.urlopen(url, timeout=timeout_s) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                fh.write(chunk)
        if h.hexdigest() != expected:
            raise UserError(f"{url}: downloaded file has sha256 {h.hexdigest()}, expected {expected}")
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise UserError(
            f"{url}: download failed ({reason}); offline, copy the file to {target} (its checksum is "
            f"verified) or give prepare --source FILE"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
