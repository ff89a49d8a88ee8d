"""Process helpers for tests that start real servers and drivers (mlflow server, `ray start`,
`glintru tune`) and must leave nothing behind, even when they kill them (a killed Ray driver leaves its raylet, GCS and workers running)."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from glintru.distributed.processes import descendants, kill_all
from glintru.distributed.trainer import os_free_port as free_port  # noqa: F401 (the tests' port picker)


def stop_tree(proc: subprocess.Popen, grace_s: float = 15) -> None:
    """SIGTERM ``proc``, SIGKILL it after ``grace_s``, then SIGKILL everything it had started."""
    tree = descendants(proc.pid)
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    kill_all(tree | descendants(proc.pid))


def run_until_exit(
    cmd: list[str],
    env: dict[str, str],
    log: Path,
    cwd: Path,
    timeout_s: float,
    on_poll: Callable[[subprocess.Popen], None] | None = None,
) -> tuple[int | None, str]:
    """Run ``cmd`` to its end (``on_poll(proc)`` every 0.5 s); on timeout kill its whole tree.
    Returns (exit code, or None on timeout; the last 3,000 characters of its output)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        tree: set[int] = set()
        timed_out = True
        try:
            deadline = time.time() + timeout_s
            while time.time() < deadline:
                tree |= descendants(proc.pid)
                if proc.poll() is not None:
                    timed_out = False
                    break
                if on_poll is not None:
                    on_poll(proc)
                time.sleep(0.5)
        finally:
            if proc.poll() is None:  # timed out or interrupted: stop the whole tree (a clean exit shuts Ray down)
                tree |= descendants(proc.pid)
                proc.kill()
                proc.wait()
                kill_all(tree)
    return (None if timed_out else proc.returncode), log.read_text()[-3000:]


def wait_for_http(url: str, proc: subprocess.Popen, what: str, timeout_s: float = 180,
                  expect: bytes | None = None, any_status: bool = False) -> None:
    """Poll ``url`` until it answers (with body ``expect`` if given; any HTTP status if
    ``any_status``, e.g. 401 from an authenticated server); raise if ``proc`` exits or time runs out."""
    deadline = time.time() + timeout_s  # servers start in ~7-15 s idle; far more on a loaded machine
    while True:
        try:
            body = urllib.request.urlopen(url, timeout=2).read()
            if expect is None or body == expect:
                return
        except urllib.error.HTTPError:
            if any_status:
                return
        except OSError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{what} did not serve {url} within {timeout_s:.0f} s (exit code {proc.poll()})")
        time.sleep(0.2)
