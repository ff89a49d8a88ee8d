"""The processes below this one, read from ``/proc``: what a Ray start that failed half-way leaves
running (its GCS, raylet, dashboard and log monitor are children of the process that called
``ray.init``), so they can be stopped by PID. Linux only; elsewhere nothing is found."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children...); empty without ``/proc``."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return set()
    for d in proc.iterdir():
        if d.name.isdigit():
            try:  # /proc/PID/stat: "pid (comm) state ppid ...", comm may hold spaces and ")"
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def kill_all(pids: set[int]) -> None:
    """SIGKILL each of ``pids`` that still exists."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
