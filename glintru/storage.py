"""Local paths and object-store URIs (``s3://``, ``gs://``, ...) behind one small interface.

Everything that reads or writes a file the user names goes through here: the prepared dataset
(``glintru prepare --out s3://...``, ``--data s3://...``), the study's settings and timing files
next to Ray Tune's state, and local outputs written atomically (a temporary name, then a rename, so
a reader never sees half a file). Object stores are reached with pyarrow's filesystems, which
take their credentials and endpoint from the usual places (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``, an instance profile,
``GOOGLE_APPLICATION_CREDENTIALS``).

A remote prepared dataset is copied once per machine into a cache keyed by its manifest's digest
(:func:`local_copy`): every Ray worker then reads local parquet files, and a node that hosts several
workers or trials downloads the dataset once.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from glintru.errors import UserError

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_remote(path: str | Path) -> bool:
    """True for a URI with a scheme other than ``file://`` (``s3://bucket/key``, ``gs://...``)."""
    m = _SCHEME.match(str(path))
    return bool(m) and m.group(1).lower() != "file"


def absolute(path: str | Path) -> str:
    """A URI unchanged; a local path made absolute (Ray workers and Tune trials run elsewhere)."""
    return str(path) if is_remote(path) else str(Path(path).resolve())


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local path or a URI (no trailing slash doubling)."""
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])


def filesystem(uri: str, option: str) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path inside it)`` for ``uri``; a UserError naming ``option`` if the
    scheme is unknown or the filesystem cannot be set up."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(str(uri))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        scheme = _SCHEME.match(str(uri))
        name = scheme.group(1) if scheme else "?"
        raise UserError(f"{option} {uri}: unknown or unsupported filesystem '{name}' ({_first(exc)}); "
                        "use a local path, s3://BUCKET/PATH or gs://BUCKET/PATH") from None
    except OSError as exc:
        raise UserError(f"{option} {uri}: cannot open the filesystem ({_first(exc)})") from None


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def read_bytes(uri_or_path: str | Path, option: str = "--data") -> bytes:
    """The whole file; FileNotFoundError if it does not exist, a UserError if it cannot be read."""
    if not is_remote(uri_or_path):
        return Path(uri_or_path).read_bytes()
    import pyarrow.fs as pafs

    fs, path = filesystem(str(uri_or_path), option)
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise UserError(f"{option} {uri_or_path}: cannot reach the object store ({_first(exc)})") from None
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(str(uri_or_path))
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except OSError as exc:
        raise UserError(f"{option} {uri_or_path}: cannot read ({_first(exc)})") from None


def read_text(uri_or_path: str | Path, option: str = "--data") -> str:
    return read_bytes(uri_or_path, option).decode("utf-8")


def write_error(path: str | Path, exc: BaseException) -> UserError:
    """One line for a failed write: names the file, says "no space left on device" for a full disk
    (torch.save reports that as a RuntimeError from its zip writer), and how to go on."""
    import errno

    text = str(exc)
    full = getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in text
    if not full:  # torch.save reports a full disk as a RuntimeError of its stream writer
        try:
            full = shutil.disk_usage(Path(path).parent).free < (1 << 20)
        except OSError:
            pass
    why = "no space left on device" if full else (getattr(exc, "strerror", None) or _first(exc))
    return UserError(f"{path}: cannot write ({why}); nothing half-written was kept. Free space (or fix the path) "
                     "and run the same command again: it continues from the last complete checkpoint")


def _sibling_name(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(6)}")


def new_sibling(path: Path, kind: str = "tmp") -> tuple[int, Path]:
    """Create a new, empty hidden sibling of ``path`` (``.<name>.<kind>-<pid>-<random>``) and return
    its descriptor, open for writing, and its path. Its mode is the one a plain ``open()`` would give
    (0o666 less the umask), so the file renamed over ``path`` is as readable as any other output;
    ``tempfile.mkstemp`` would make it private (0o600) whatever the umask."""
    tmp = _sibling_name(path, kind)
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp


def new_sibling_dir(path: Path, kind: str = "tmp") -> Path:
    """Create a new, empty hidden sibling directory of ``path``, with the mode a plain ``mkdir``
    gives (0o777 less the umask; ``tempfile.mkdtemp`` would make it 0o700): a dataset prepared into
    it and renamed into place is readable by a worker that runs as another user, as in a container."""
    tmp = _sibling_name(path, kind)
    os.mkdir(tmp, 0o777)
    return tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a local file under a temporary sibling name (:func:`new_sibling`), then rename it over
    ``path``; a failed write (e.g. a full disk) removes the temporary file and raises a UserError
    naming ``path``."""
    p = Path(path)
    tmp = None
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = new_sibling(p)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    except OSError as exc:
        raise write_error(p, exc) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary sibling, then rename: ``path`` is the complete file or the old
    one; a failed write removes the partial file and raises a UserError naming ``path``."""
    import torch

    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, p)
    except (OSError, RuntimeError) as exc:  # torch.save's stream writer fails with RuntimeError
        raise write_error(p, exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_text(uri_or_path: str | Path, text: str, option: str = "--storage-path") -> None:
    """Write a small text file locally (atomically) or to an object store (one PUT, atomic there)."""
    if not is_remote(uri_or_path):
        atomic_write_text(uri_or_path, text)
        return
    fs, path = filesystem(str(uri_or_path), option)
    try:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(text.encode("utf-8"))
    except OSError as exc:
        raise UserError(f"{option} {uri_or_path}: cannot write ({_first(exc)})") from None


def exists(uri_or_path: str | Path, option: str = "--storage-path") -> bool:
    if not is_remote(uri_or_path):
        return Path(uri_or_path).exists()
    import pyarrow.fs as pafs

    fs, path = filesystem(str(uri_or_path), option)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as exc:
        raise UserError(f"{option} {uri_or_path}: cannot reach the object store ({_first(exc)})") from None


def upload_dir(local_dir: Path, uri: str, names: list[str], option: str = "--out") -> None:
    """Copy the files ``names`` of ``local_dir`` to ``uri/<name>``, in the given order (put the
    file that marks completeness, e.g. the manifest, last)."""
    fs, path = filesystem(uri, option)
    try:
        fs.create_dir(path, recursive=True)
        for name in names:
            with open(local_dir / name, "rb") as src, fs.open_output_stream(f"{path.rstrip('/')}/{name}") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
    except OSError as exc:
        raise UserError(f"{option} {uri}: cannot write ({_first(exc)})") from None


def list_names(uri: str, option: str) -> list[str]:
    """Names directly under a remote directory ([] if it does not exist)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri, option)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as exc:
        raise UserError(f"{option} {uri}: cannot reach the object store ({_first(exc)})") from None
    return [i.base_name for i in infos]


def cache_root() -> Path:
    return Path(os.environ.get("GLINTRU_CACHE_DIR") or Path.home() / ".cache" / "glintru")


def local_copy(uri: str, files: list[str], manifest_name: str, option: str = "--data") -> Path:
    """A local directory holding ``files`` of the remote directory ``uri``, downloaded once per
    machine into ``<cache>/datasets/<digest of the manifest>``; concurrent callers on one machine
    each download into a temporary directory and the first rename wins."""
    filesystem(uri, option)  # an unknown scheme is named as the user wrote it
    manifest = read_bytes(join(uri, manifest_name), option)
    digest = hashlib.sha256(manifest).hexdigest()[:16]
    final = cache_root() / "datasets" / digest
    if (final / manifest_name).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_sibling_dir(final)
    try:
        for name in files:
            if name == manifest_name:
                continue
            try:
                (tmp / name).write_bytes(read_bytes(join(uri, name), option))
            except FileNotFoundError:
                raise UserError(f"{option} {uri}: {name} is missing; re-run `glintru prepare --out {uri}`") from None
        (tmp / manifest_name).write_bytes(manifest)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / manifest_name).is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


LOCK_FILE = ".glintru.lock"


class DirectoryLock:
    """An exclusive lock on a local directory for the life of one command (``with`` block).

    ``flock`` on ``DIR/.glintru.lock``: the kernel releases it when the process ends, however it
    ends, so a killed command never leaves it stuck. The holder writes its pid and host into the
    file; a second command on the same directory fails at once with a UserError naming both.
    """

    def __init__(self, directory: str | Path, what: str) -> None:
        self.directory, self.what, self.fd = Path(directory), what, None

    def __enter__(self) -> DirectoryLock:
        import fcntl
        import socket

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_error(self.directory / LOCK_FILE, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"{self.directory}: in use by another {self.what} ({holder}); wait for it to end, "
                            "or give another directory") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None
